#!/usr/bin/env bash
# whole_process: `ovlsim run spec/` as a whole process on the model against the same command
# on the kernel backend (`--backend kernel`: a worker process per scenario, in a private mount
# namespace on a private tmpfs), timed from the shell: start-up, finding and reading the
# files, parsing, replay, output and exit all count. The runs alternate (model, kernel,
# model, kernel, ...) so that the machine's load falls on both alike; the script prints each
# run, the median of each side and the ratio kernel / model. Nothing is asserted about time.
#
# Run (as root, for the kernel backend): benches/whole_process.sh [RUNS] [PATHS...]
# RUNS defaults to 7 (at least 5 is what BENCHMARKS.md reports), PATHS to spec/. It builds the
# release binary first. Not root: the kernel side is SKIPPED (a failure with
# OVLSIM_REQUIRE_KERNEL=1). Every run must pass (exit 0), or the script stops.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-7}"
shift || true
paths=("$@")
[ ${#paths[@]} -gt 0 ] || paths=(spec/)
if ! [[ "$runs" =~ ^[0-9]+$ ]] || [ "$runs" -lt 1 ]; then
    echo "whole_process: RUNS must be a positive integer, not '$runs'" >&2
    exit 2
fi
cargo build --release --quiet
bin=target/release/ovlsim
kernel=1
if [ "$(id -u)" != 0 ]; then
    if [ "${OVLSIM_REQUIRE_KERNEL:-}" = 1 ]; then
        echo "whole_process: the kernel backend needs root (OVLSIM_REQUIRE_KERNEL=1)" >&2
        exit 1
    fi
    echo "whole_process: SKIPPED the kernel backend (not root); timing the model only" >&2
    kernel=0
fi

# One timed run of `ovlsim run ARGS...`: its wall time in microseconds on stdout.
timed() {
    local t0 t1
    t0=$(date +%s%N)
    if ! "$bin" run "$@" >/dev/null; then
        echo "whole_process: \`ovlsim run $*\` failed" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000))
}

# The median of the numbers on stdin (the mean of the two middle ones for an even count).
median() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

model=()
kern=()
for i in $(seq 1 "$runs"); do
    m=$(timed "${paths[@]}")
    model+=("$m")
    line="run $i: model $(awk -v u="$m" 'BEGIN { printf "%.1f ms", u / 1000 }')"
    if [ "$kernel" = 1 ]; then
        k=$(timed --backend kernel "${paths[@]}")
        kern+=("$k")
        line+=", kernel $(awk -v u="$k" 'BEGIN { printf "%.1f ms", u / 1000 }')"
    fi
    echo "$line"
done
mm=$(printf '%s\n' "${model[@]}" | median)
echo "command: $bin run ${paths[*]}   ($runs runs, alternating)"
awk -v u="$mm" 'BEGIN { printf "model  median: %.1f ms\n", u / 1000 }'
if [ "$kernel" = 1 ]; then
    km=$(printf '%s\n' "${kern[@]}" | median)
    awk -v u="$km" 'BEGIN { printf "kernel median: %.1f ms (--backend kernel)\n", u / 1000 }'
    awk -v m="$mm" -v k="$km" 'BEGIN { printf "kernel / model: %.1fx\n", k / m }'
fi
