#!/usr/bin/env python3
"""wire_large_file: the kernel tier's cost of moving file data, command by command.

Sends one kernel worker the data-moving commands of
`tests/kernel_backend.rs::large_and_sparse_files_agree_with_the_model`: a lower layer with a
10^12-byte sparse file, an empty upper, a mount, a write of 70,000,000 bytes
`(i % 251) + 1`, a write at 10^12, a truncate to 2^40, an unmount, then the dump of the
upper layer (142 MB of reply: the 70 MB in hex, and the copied-up sparse file). It times
each command from the request line written to the reply line read, and prints the sizes of
both. Nothing is asserted about time; every reply must be `Ok`, or the script stops with
exit status 1.

Run (as root: the worker mounts): benches/wire_large_file.py [WORKER]
WORKER defaults to target/debug/ovlsim, the binary `cargo test` builds and starts; any
program that speaks docs/worker-protocol.md and takes `kernel-worker` as its argument does.
BENCHMARKS.md, "The kernel tier's wire", has the figures.
"""
import json
import os
import subprocess
import sys
import time

worker = sys.argv[1] if len(sys.argv) > 1 else "target/debug/ovlsim"
if os.geteuid() != 0:
    print("wire_large_file: SKIPPED, the kernel worker needs root", file=sys.stderr)
    sys.exit(1 if os.environ.get("OVLSIM_REQUIRE_KERNEL") == "1" else 0)
p = subprocess.Popen([worker, "kernel-worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
hello = p.stdout.readline()
if "ovlsim-worker" not in hello:
    sys.exit(f"wire_large_file: {worker} did not say hello: {hello.strip()!r}")
root = {"kind": "dir", "mode": 0o755, "uid": 0, "gid": 0}


def file(data):
    return {"kind": "file", "mode": 0o644, "uid": 0, "gid": 0, "data": data}


sparse = {"len": 10**12, "extents": [[5 * 10**11, b"middle".hex()]]}
seventy = bytes((i % 251) + 1 for i in range(70_000_000))
options = {"redirect_dir": "off", "index": False, "metacopy": False, "xino": "off", "userxattr": False,
           "nfs_export": False, "volatile": False, "read_only": False, "workdir_without_upper": False}
commands = [
    ("layer L0", {"Layer": {"name": "L0", "content": {"root": root, "entries": [{"Node": {"path": "/big", "node": file(sparse)}}]}}}),
    ("layer U", {"Layer": {"name": "U", "content": {"root": root, "entries": []}}}),
    ("mount", {"Mount": {"lowers": ["L0"], "upper": "U", "options": options}}),
    ("write 70 MB", {"Op": {"Write": {"path": "/new", "at": {"Offset": 0}, "data": list(seventy)}}}),
    ("write at 10^12", {"Op": {"Write": {"path": "/big", "at": {"Offset": 10**12}, "data": list(b"end")}}}),
    ("truncate 2^40", {"Op": {"Truncate": {"path": "/new", "len": 1 << 40}}}),
    ("unmount", "Unmount"),
    ("dump U", {"DumpLayer": {"name": "U"}}),
]
for name, command in commands:
    line = json.dumps(command, separators=(",", ":")) + "\n"
    start = time.perf_counter()
    p.stdin.write(line)
    p.stdin.flush()
    reply = p.stdout.readline()
    spent = time.perf_counter() - start
    print(f"{name:16} {spent:7.3f} s   request {len(line) / 1e6:6.1f} MB   reply {len(reply) / 1e6:6.1f} MB")
    if not reply.startswith('{"Ok"'):
        p.kill()
        sys.exit(f"wire_large_file: {name}: {reply[:300].strip()!r}")
p.stdin.close()
p.wait()
