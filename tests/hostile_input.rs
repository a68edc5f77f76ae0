//! Hostile input to the `ovlsim` command line: every case ends in a located error, or in
//! agreement with the kernel, in bounded time, and nothing written is ever lost.
//!
//! Inputs are generated here (large ones are never committed). Each case runs the real
//! binary in a child process with a time limit ([`LIMIT`]); a case that runs past it is
//! killed and fails as a hang. As root, the cases that replay on a backend also run with
//! `--backend both` on a real overlay.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The most any one case may take, far above what it needs (a hang, not a timing bound).
const LIMIT: Duration = Duration::from_secs(120);

const BIN: &str = env!("CARGO_BIN_EXE_ovlsim");

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ovlsim-hostile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `ovlsim ARGS` to the end, killed past [`LIMIT`] (then the test fails as a hang).
fn ovlsim(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ovlsim");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let _ = out.read_to_end(&mut o);
        o
    });
    let err_reader = std::thread::spawn(move || {
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        e
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ovlsim {args:?} hung: still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output { status, stdout: reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Asserts that the run failed cleanly (exit 1 or 2, no panic, no signal) and that its
/// output names `file:line:column` and says `what`.
fn assert_located(o: &Output, file: &Path, line: usize, what: &str) {
    let t = text(o);
    assert!(matches!(o.status.code(), Some(1) | Some(2)), "exit {:?}:\n{t}", o.status);
    assert!(!t.contains("panicked"), "{t}");
    let at = format!("{}:{line}:", file.display());
    assert!(t.contains(&at), "no {at} in:\n{}", &t[..t.len().min(2000)]);
    assert!(t.contains(what), "no {what:?} in:\n{}", &t[..t.len().min(2000)]);
}

const HEAD: &str = "# r\nname: x\nrules: [r]\nlayers:\n  L0: {}\n  upper: {}\nmount: {lowers: [L0], upper: upper}\n";

#[test]
fn twenty_thousand_bad_steps_are_all_located() {
    let d = scratch("many-errors");
    let f = d.join("many.yaml");
    let steps: String = (0..20_000).map(|_| "- stat: /a\n  expect: EBOGUS\n").collect();
    std::fs::write(&f, format!("{HEAD}steps:\n{steps}")).unwrap();
    let o = ovlsim(&["run", f.to_str().unwrap()]);
    // Step i's expectation is on line 8 + 2i.
    let t = text(&o);
    assert_located(&o, &f, 10, "unknown errno \"EBOGUS\"");
    assert!(t.contains("and 19980 more failures"), "{t}");
    let o = ovlsim(&["record", "--backend", "model", "-o", "-", f.to_str().unwrap()]);
    assert_located(&o, &f, 40_008, "step 20000 (stat): unknown errno");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A scenario whose lower holds the file `key` (an explicit `?` key: a plain key may not be
/// over 1,024 characters), followed by `steps` (the text after `steps:`). The layer key is
/// on line 6.
fn deep_key_scenario(key: &str, steps: &str) -> String {
    format!(
        "# r\nname: x\nrules: [r]\nlayers:\n  L0:\n    ? {key}\n    : hi\n  upper: {{}}\n\
         mount: {{lowers: [L0], upper: upper}}\nsteps: {steps}"
    )
}

#[test]
fn a_layer_key_forty_thousand_components_deep_is_too_deep() {
    let d = scratch("deep-key");
    let f = d.join("deep.yaml");
    let key = vec!["a"; 40_000].join("/");
    std::fs::write(&f, deep_key_scenario(&key, "[]\n")).unwrap();
    for cmd in ["run", "show"] {
        let o = ovlsim(&[cmd, f.to_str().unwrap()]);
        assert_located(&o, &f, 6, "too deep: 40000 path components, more than the 1024");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// Trees as deep as steps can make them: a layer path at the depth limit, and two
/// 2,000-deep chains made by `mkdir`, one renamed to the bottom of the other (4,001 deep,
/// past what any absolute path can reach). The model replays it; as root, the kernel gives
/// the same (its layer read-back works past `PATH_MAX`).
#[test]
fn trees_deeper_than_path_max_replay_and_agree_with_the_kernel() {
    let d = scratch("deep-ops");
    let f = d.join("deep-ops.yaml");
    let key = vec!["a"; ovlsim::scenario::DEPTH_MAX].join("/");
    let mut steps = String::new();
    let (mut b, mut c) = (String::new(), String::new());
    for _ in 0..2000 {
        b.push_str("/b");
        c.push_str("/c");
        steps.push_str(&format!("- mkdir: {b}\n  expect: ok\n- mkdir: {c}\n  expect: ok\n"));
    }
    steps.push_str(&format!("- rename: /c\n  to: {b}/c\n  expect: ok\n- readdir: /\n  expect: [a, b]\n"));
    std::fs::write(&f, deep_key_scenario(&key, &format!("\n{steps}"))).unwrap();
    let o = ovlsim(&["run", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    if common::kernel_runs("deep trees on the kernel") {
        let o = ovlsim(&["run", "--backend", "both", f.to_str().unwrap()]);
        assert!(o.status.success(), "{}", &text(&o)[..text(&o).len().min(3000)]);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_fifo_named_like_a_scenario_is_refused_not_waited_on() {
    let d = scratch("fifo");
    let f = d.join("x.yaml");
    rustix::fs::mknodat(rustix::fs::CWD, &f, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o644), 0)
        .unwrap();
    for cmd in ["run", "show", "record"] {
        let o = ovlsim(&[cmd, f.to_str().unwrap()]);
        assert_located(&o, &f, 1, "not a regular file");
    }
    // And inside a directory walk, it is one failure among the rest.
    std::fs::copy("spec/examples/unlink-lower-file-whiteout.yaml", d.join("good.yaml")).unwrap();
    let o = ovlsim(&["run", d.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("1 passed, 1 failed"), "{t}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_directory_walk_names_loops_and_goes_on() {
    let d = scratch("loops");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::copy("spec/examples/unlink-lower-file-whiteout.yaml", d.join("sub/good.yaml")).unwrap();
    std::os::unix::fs::symlink("..", d.join("sub/up")).unwrap();
    std::os::unix::fs::symlink("self.yaml", d.join("self.yaml")).unwrap();
    std::os::unix::fs::symlink("nowhere", d.join("dangling.yaml")).unwrap();
    let o = ovlsim(&["run", d.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("FAIL {}", d.join("sub/up").display())), "{t}");
    assert!(t.contains("symlink loop"), "{t}");
    assert!(t.contains(&format!("FAIL {}", d.join("self.yaml").display())), "{t}");
    assert!(t.contains(&format!("FAIL {}", d.join("dangling.yaml").display())), "{t}");
    assert!(t.contains(&format!("ok   {}", d.join("sub/good.yaml").display())), "{t}");
    assert!(t.contains("1 passed, 3 failed"), "{t}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// An unreadable directory is one failure, named, and the walk goes on. Root reads every
/// directory, so as root the CLI runs as `nobody` (through `setpriv`) for this case.
#[test]
fn an_unreadable_directory_is_named_and_the_walk_goes_on() {
    let d = scratch("unreadable");
    std::fs::create_dir_all(d.join("closed")).unwrap();
    std::fs::copy("spec/examples/unlink-lower-file-whiteout.yaml", d.join("good.yaml")).unwrap();
    std::fs::copy("spec/examples/unlink-lower-file-whiteout.yaml", d.join("closed/hidden.yaml")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.join("closed"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN]);
        c
    } else {
        Command::new(BIN)
    };
    let o = cmd.args(["run", d.to_str().unwrap()]).current_dir(env!("CARGO_MANIFEST_DIR")).output();
    let o = match o {
        Ok(o) if !String::from_utf8_lossy(&o.stderr).contains("setpriv:") => o,
        other => {
            // setpriv is part of util-linux, on every Debian; its absence is a broken machine.
            panic!("cannot run the CLI as another user: {other:?}");
        }
    };
    let t = text(&o);
    std::fs::set_permissions(d.join("closed"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("FAIL {}", d.join("closed").display())), "{t}");
    assert!(t.contains("Permission denied"), "{t}");
    assert!(t.contains("1 passed, 1 failed"), "{t}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_directory_without_scenarios_is_an_error() {
    let d = scratch("empty");
    std::fs::write(d.join("notes.txt"), "not a scenario").unwrap();
    let o = ovlsim(&["run", d.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("no scenario files (*.yaml) found under"), "{t}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `ovlsim run spec/ | head -1`: the reader goes away after one line; ovlsim ends quietly
/// with 141 (as a tool killed by SIGPIPE), never a panic. The outputs are made larger than
/// a pipe's buffer, so that ovlsim is still writing when the reader leaves.
#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    let d = scratch("epipe");
    let example = std::fs::read_to_string("spec/examples/unlink-lower-file-whiteout.yaml").unwrap();
    for i in 0..3000 {
        std::fs::write(d.join(format!("s{i:04}.yaml")), &example).unwrap();
    }
    let steps: String = (0..3000).map(|i| format!("- mkdir: /d{i}\n  expect: ok\n")).collect();
    let long = d.join("long.yml");
    std::fs::write(&long, format!("{HEAD}steps:\n{steps}")).unwrap();
    for args in [&["run", d.to_str().unwrap()][..], &["show", long.to_str().unwrap()][..]] {
        let mut child =
            Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn ovlsim");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        // The pipe's read end is closed here, after one line.
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        assert!(!first.is_empty());
        assert_eq!(status.code(), Some(141), "{args:?}: {status:?}, stderr: {err}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_byte_order_mark_is_read_past() {
    let d = scratch("bom");
    let f = d.join("bom.yaml");
    let body = std::fs::read_to_string("spec/examples/unlink-lower-file-whiteout.yaml").unwrap();
    let body = body.split_once("\nname:").map(|(_, rest)| format!("name:{rest}")).unwrap();
    std::fs::write(&f, format!("\u{feff}{body}")).unwrap();
    let o = ovlsim(&["run", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_second_document_is_located_at_its_start() {
    let d = scratch("two-docs");
    let f = d.join("two.yaml");
    let body = std::fs::read_to_string("spec/examples/unlink-lower-file-whiteout.yaml").unwrap();
    let line = body.lines().count() + 1;
    std::fs::write(&f, format!("{body}---\nname: y\n")).unwrap();
    let o = ovlsim(&["run", f.to_str().unwrap()]);
    assert_located(&o, &f, line, "more than one document");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bytes_that_are_not_utf8_are_an_error_naming_the_file() {
    let d = scratch("binary");
    let f = d.join("bin.yaml");
    std::fs::write(&f, b"name: x\n\xff\xfe\x00garbage").unwrap();
    let o = ovlsim(&["run", f.to_str().unwrap()]);
    assert_located(&o, &f, 1, "not UTF-8");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `record` replaces the file only whole: killed at random points of its run (SIGKILL),
/// and stopped by a file-size limit in the middle of its write (SIGXFSZ), the scenario is
/// always either the original, byte for byte, or the complete recording.
#[test]
fn record_killed_mid_write_leaves_the_original_whole() {
    let d = scratch("record-kill");
    let f = d.join("s.yaml");
    // Big enough that writing it takes many write calls.
    let steps: String =
        (0..4000).map(|i| format!("- mkdir: /d{i}\n- stat: /d{i}\n- rmdir: /d{i}\n")).collect::<String>();
    let original = format!("{HEAD}steps:\n{steps}");
    std::fs::write(&f, &original).unwrap();
    // The complete recording, for comparison.
    let full = ovlsim(&["record", "--backend", "model", "-o", "-", f.to_str().unwrap()]);
    assert!(full.status.success(), "{}", text(&full));
    let recorded = full.stdout;
    assert!(recorded.len() > original.len());

    // A file-size limit below the recording's size: the write fails, or the process dies of
    // SIGXFSZ, part-way through.
    let limit = (original.len() as u64).min(recorded.len() as u64 / 2);
    let o = {
        let mut c = Command::new(BIN);
        c.args(["record", "--backend", "model", f.to_str().unwrap()]);
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let r = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &r) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        c.output().unwrap()
    };
    assert!(!o.status.success(), "the size limit did not stop the write: {}", text(&o));
    assert_eq!(std::fs::read(&f).unwrap(), original.as_bytes(), "the original changed under a failed write");

    // SIGKILL at spread-out moments of the run.
    for i in 0..30u64 {
        std::fs::write(&f, &original).unwrap();
        let mut child = Command::new(BIN)
            .args(["record", "--backend", "model", f.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(i * i * 40));
        let _ = child.kill();
        let _ = child.wait();
        let now = std::fs::read(&f).unwrap();
        assert!(
            now == recorded || now == original.as_bytes(),
            "killed after {} µs: the file is neither whole version ({} bytes)",
            i * i * 40,
            now.len()
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}
