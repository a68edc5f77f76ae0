//! The worker protocol (docs/worker-protocol.md) with programs other than ovlsim's own
//! worker: small shell stand-ins for the handshake and the refusals (no root needed), and
//! the Python stand-in in `examples/worker-python/` on the whole of `spec/` (root only:
//! SKIPPED loudly otherwise, a failure under `OVLSIM_REQUIRE_KERNEL=1`).

mod common;

use ovlsim::backend::{Backend, BackendError, Command};
use ovlsim::kernel::{KernelBackend, SystemUnderTest, WorkerCommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

/// The fewest spec/ scenarios the Python stand-in must pass. Measured on Linux 6.18: 217
/// of 287 pass, 70 are not applicable (it refuses a truncate and a write at offsets past
/// i64::MAX, option strings, handles, `drop_caches` and other callers), none fails.
const PYTHON_PASSES_AT_LEAST: usize = 217;

/// A worker that runs `script` with `sh -c` (the appended `--parent-pid PID` become `$0`
/// and `$1`).
fn sh(script: &str) -> WorkerCommand {
    WorkerCommand { program: "sh".into(), args: vec!["-c".into(), script.into()] }
}

const HELLO: &str = r#"echo '{"ovlsim-worker":2,"worker":"sh"}'"#;

fn start_error(w: WorkerCommand) -> String {
    match KernelBackend::with_program(w) {
        Ok(_) => panic!("the worker was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_worker_of_another_version_is_refused_by_name() {
    let e = start_error(sh(r#"echo '{"ovlsim-worker":3,"worker":"from the future"}'; cat >/dev/null"#));
    assert!(e.contains("from the future") && e.contains("version 3") && e.contains("speaks version 2"), "{e}");
    // A worker of version 1 knows neither `OpAs` through a handle nor `TryUnmount`.
    let e = start_error(sh(r#"echo '{"ovlsim-worker":1,"worker":"from the past"}'; cat >/dev/null"#));
    assert!(e.contains("from the past") && e.contains("version 1") && e.contains("speaks version 2"), "{e}");
}

#[test]
fn an_unversioned_worker_is_refused() {
    let e = start_error(sh(r#"echo '{"Ok":"Done"}'; cat >/dev/null"#));
    assert!(e.contains("unversioned"), "{e}");
    let e = start_error(sh("echo hello; cat >/dev/null"));
    assert!(e.contains("not a hello") && e.contains("\"hello\""), "{e}");
}

#[test]
fn a_worker_that_cannot_set_up_says_why() {
    let e = start_error(sh(r#"echo '{"Err":{"Failed":"no overlay here"}}'; echo 'some detail' >&2; exit 1"#));
    assert!(e.contains("could not set up") && e.contains("no overlay here"), "{e}");
    let e = start_error(sh("exit 3"));
    assert!(e.contains("died") && e.contains("exit status: 3"), "{e}");
}

#[test]
fn a_worker_that_refuses_everything_makes_scenarios_not_applicable() {
    // A hello, then NotModelled to every request.
    let w = sh(&format!(r#"{HELLO}; while read -r l; do echo '{{"Err":{{"NotModelled":"nothing at all"}}}}'; done"#));
    let mut b = KernelBackend::with_program(w.clone()).expect("the worker starts");
    assert_eq!(b.name(), "worker");
    assert_eq!(b.exec(&Command::Unmount), Err(BackendError::NotModelled("nothing at all".into())));
    let s = ovlsim::scenario::load(spec().join("copy_up/chmod-fifo-copies-up.yaml")).expect("loads");
    let why = ovlsim::conform::run_scenario_on(&s, &SystemUnderTest::Worker(w)).expect_err("not applicable");
    assert!(why.contains("nothing at all"), "{why}");
}

#[test]
fn a_worker_that_answers_nonsense_is_killed_with_the_reason() {
    let w = sh(&format!("{HELLO}; while read -r l; do echo 'not json'; done"));
    let mut b = KernelBackend::with_program(w).expect("the worker starts");
    let e = b.exec(&Command::Unmount).expect_err("nonsense is an error");
    assert!(matches!(&e, BackendError::Failed(m) if m.contains("unreadable reply") && m.contains("not json")), "{e}");
    assert!(!b.is_alive());
}

#[test]
fn a_missing_worker_program_is_named() {
    let e = start_error(WorkerCommand::parse("/nonexistent/my-worker --x").expect("splits"));
    assert!(e.contains("cannot start the worker `/nonexistent/my-worker --x`"), "{e}");
    // The hint about ovlsim's own worker binary is not for another program.
    assert!(!e.contains(ovlsim::kernel::WORKER_ENV), "{e}");
}

#[test]
fn worker_command_lines_split_without_a_shell() {
    let w = WorkerCommand::parse(r#"python3 'my worker.py' --flag "a b""#).expect("splits");
    assert_eq!(w.program, PathBuf::from("python3"));
    assert_eq!(w.args, ["my worker.py", "--flag", "a b"].map(std::ffi::OsString::from));
    assert_eq!(SystemUnderTest::Worker(w).label(), "my worker.py");
    assert!(WorkerCommand::parse("  ").is_err());
    assert!(WorkerCommand::parse("python3 'unclosed").is_err());
}

fn spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spec")
}

fn python_worker() -> WorkerCommand {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/worker-python/worker.py");
    WorkerCommand { program: "python3".into(), args: vec![script.into()] }
}

/// Whether the Python stand-in can run here: root and overlay (the kernel tier's gate), and
/// `python3`. Else SKIPPED loudly; a failure under `OVLSIM_REQUIRE_KERNEL=1`.
fn python_runs(what: &str) -> bool {
    if !common::kernel_runs(what) {
        return false;
    }
    if Process::new("python3").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    let required = std::env::var("OVLSIM_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
    assert!(!required, "OVLSIM_REQUIRE_KERNEL=1 but there is no python3 for {what}");
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}: no python3 on PATH");
    false
}

/// Overlay mounts and the stand-in's processes, as the host sees them.
fn host_traces() -> (Vec<String>, Vec<String>) {
    let mounts = std::fs::read_to_string("/proc/mounts")
        .expect("read /proc/mounts")
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("overlay") || l.contains("ovlsim-py"))
        .map(str::to_owned)
        .collect();
    let mut workers = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("worker-python/worker.py") {
                workers.push(cmd);
            }
        }
    }
    (mounts, workers)
}

/// The stand-in's scratch directories (`ovlsim-worker-*`) in the host's temp directory:
/// there must be none, its tmpfs is private to its namespace.
fn host_scratch() -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ovlsim-worker-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_python_stand_in_passes_spec_or_refuses_never_fails() {
    if !python_runs("the Python stand-in worker on spec/") {
        return;
    }
    let (mounts_before, _) = host_traces();
    let found = ovlsim::scenario::find_files(&[spec()]).expect("spec/ is there");
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    let sut = SystemUnderTest::Worker(python_worker());
    // Two threads: each scenario starts its own Python worker.
    let halves: Vec<&[PathBuf]> = found.files.chunks(found.files.len().div_ceil(2)).collect();
    let results: Vec<(String, Result<ovlsim::scenario::RunReport, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = halves
            .iter()
            .map(|files| {
                let sut = &sut;
                scope.spawn(move || {
                    files
                        .iter()
                        .map(|path| {
                            let s = ovlsim::scenario::load(path).expect("spec/ scenarios load");
                            (path.display().to_string(), ovlsim::conform::run_scenario_on(&s, sut))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("a runner thread")).collect()
    });
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut not_applicable = Vec::new();
    for (file, r) in results {
        match r {
            Ok(r) if r.passed() => passed += 1,
            Ok(r) => failed.push(format!("{file}:\n{}", r.details(5))),
            Err(why) => not_applicable.push(format!("{file}: {why}")),
        }
    }
    assert!(failed.is_empty(), "the Python stand-in failed {} scenario(s):\n{}", failed.len(), failed.join("\n"));
    // Not applicable only where the stand-in itself refused (never the harness guessing).
    for na in &not_applicable {
        assert!(na.contains("the worker refused it: "), "{na}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "the Python stand-in on spec/: {passed} passed, 0 failed, {} not applicable",
        not_applicable.len()
    );
    assert!(passed >= PYTHON_PASSES_AT_LEAST, "only {passed} passed (at least {PYTHON_PASSES_AT_LEAST} did)");
    // Nothing left on the host: no mount, no process, no scratch directory.
    let (mounts_after, workers) = host_traces();
    let leaked: Vec<&String> = mounts_after.iter().filter(|m| !mounts_before.contains(m)).collect();
    assert!(leaked.is_empty(), "mounts left on the host: {leaked:?}");
    assert!(workers.is_empty(), "Python workers still running: {workers:?}");
    assert!(host_scratch().is_empty(), "scratch directories on the host: {:?}", host_scratch());
}

#[test]
fn the_cli_replays_on_a_worker_and_fuzzes_against_it() {
    if !python_runs("ovlsim run/fuzz with the Python stand-in worker") {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/worker-python/worker.py");
    let backend = format!("worker:python3 '{}'", script.display());
    let out = Process::new(env!("CARGO_BIN_EXE_ovlsim"))
        .args(["run", "--backend", &backend])
        .arg(spec().join("copy_up"))
        .arg(spec().join("file_size/truncate-offset-limits.yaml"))
        .output()
        .expect("ovlsim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("[worker]") && stdout.contains(" 0 failed, 1 not applicable"), "{stdout}");
    assert!(stdout.contains("n/a  ") && stdout.contains("past i64::MAX"), "{stdout}");
    let dir = tempdir();
    let out = Process::new(env!("CARGO_BIN_EXE_ovlsim"))
        .args(["fuzz", "--cases", "20", "--seed", "7", "--against", &backend, "--out"])
        .arg(&dir)
        .output()
        .expect("ovlsim runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{stdout}{stderr}");
    // The system under test is named by its script, not called the kernel.
    assert!(stdout.contains("fuzz (model vs worker.py), seed 7: 20 cases"), "{stdout}");
    assert!(!stdout.contains("kernel"), "{stdout}");
}

/// A fresh directory for a fuzz run's output (named ovlsim-*, as CI's leak check expects).
fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ovlsim-fuzz-worker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}
