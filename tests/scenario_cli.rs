//! The scenario runner against a scripted fake backend (comparison logic, labels, record,
//! two backends), and the `ovlsim` command line (run, record, show, fuzz).

mod common;

use ovlsim::backend::{Backend, BackendError, Command, MergedEntry, MergedTree, Reply};
use ovlsim::layer::{FileType, FlatLayer, Layer};
use ovlsim::ops::FdOp;
use ovlsim::scenario::{self, Scenario};
use ovlsim::{Errno, Op, Outcome, Stat};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

// ---------------------------------------------------------------------------------------
// A fake backend.

type Script = Box<dyn FnMut(&Command) -> Option<Result<Reply, BackendError>>>;

/// Answers `Done` to everything, `ok` to operations, except what the script answers.
struct Fake {
    name: &'static str,
    log: Vec<Command>,
    script: Script,
}

impl Fake {
    fn new(name: &'static str, script: impl FnMut(&Command) -> Option<Result<Reply, BackendError>> + 'static) -> Fake {
        Fake { name, log: Vec::new(), script: Box::new(script) }
    }
}

impl Backend for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        self.log.push(cmd.clone());
        if let Some(r) = (self.script)(cmd) {
            return r;
        }
        Ok(match cmd {
            Command::Op(_) => Reply::Outcome(Outcome::Ok),
            Command::DumpMerged => Reply::Merged(merged(&[("/", dir_stat(1, 1))])),
            Command::DumpLayer { .. } => Reply::Layer(Layer::new().to_flat()),
            _ => Reply::Done,
        })
    }
}

fn stat(kind: FileType, ino: u64) -> Stat {
    Stat { kind, mode: 0o644, size: 5, nlink: 1, uid: 0, gid: 0, rdev: (0, 0), ino }
}

fn dir_stat(ino: u64, nlink: u32) -> Stat {
    Stat { kind: FileType::Dir, mode: 0o755, size: 60, nlink, uid: 0, gid: 0, rdev: (0, 0), ino }
}

fn merged(entries: &[(&str, Stat)]) -> MergedTree {
    entries
        .iter()
        .map(|(p, st)| {
            let data = (st.kind == FileType::File).then(|| b"hello".to_vec());
            (
                p.to_string(),
                MergedEntry { stat: Ok(st.clone()), data, digest: None, target: None, xattrs: BTreeMap::new() },
            )
        })
        .collect()
}

fn path_of(op: &Op) -> &str {
    op.paths()[0]
}

const HEAD: &str = "\
# The rule comment stays when the scenario is recorded.
# Source: nowhere.
name: fake
rules: [a rule]
layers:
  L0: {f: hello, g: hello}
  upper: {}
mount: {lowers: [L0], upper: upper}
steps:
";

fn scenario(steps: &str) -> Scenario {
    scenario::parse(&format!("{HEAD}{steps}"), "fake.yaml").unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------
// The runner's comparisons.

#[test]
fn a_mismatch_names_the_step_its_line_and_both_results() {
    let s = scenario("  - unlink: /f\n    expect: ok\n  - stat: /f\n    expect: ENOENT\n");
    let mut b = Fake::new("fake", |c| match c {
        Command::Op(Op::Unlink { .. }) => Some(Ok(Reply::Outcome(Outcome::Err(Errno::EROFS)))),
        Command::Op(Op::Stat { .. }) => Some(Ok(Reply::Outcome(Outcome::Err(Errno::ENOENT)))),
        _ => None,
    });
    let r = scenario::run(&s, &mut b);
    assert!(!r.passed());
    assert_eq!(r.failures.len(), 1, "{r}");
    let f = &r.failures[0];
    assert_eq!(f.step.as_ref().map(|s| s.index), Some(1));
    assert_eq!(f.pos.map(|p| p.line), Some(10));
    assert_eq!(f.expected.as_deref(), Some("ok"));
    assert_eq!(f.actual.as_deref(), Some("EROFS"));
    let shown = r.to_string();
    assert!(shown.contains("fake.yaml:10: step 1 (unlink /f): expected ok, got EROFS"), "{shown}");
    // The overlay is unmounted at the end.
    assert_eq!(b.log.last(), Some(&Command::Unmount));
}

#[test]
fn only_the_given_stat_fields_are_checked() {
    let s = scenario("  - stat: /f\n    expect: {kind: file, mode: 0644}\n  - stat: /g\n    expect: {size: 6}\n");
    let mut b = Fake::new("fake", |c| match c {
        Command::Op(Op::Stat { .. }) => Some(Ok(Reply::Outcome(Outcome::Stat(stat(FileType::File, 9))))),
        _ => None,
    });
    let r = scenario::run(&s, &mut b);
    assert_eq!(r.failures.len(), 1, "{r}");
    assert_eq!(r.failures[0].step.as_ref().map(|s| s.index), Some(2));
    assert_eq!(r.failures[0].actual.as_deref(), Some("{size: 5}"));
}

/// Stats that answer each path with its inode number from `inos`.
fn by_path(inos: &'static [(&'static str, u64)]) -> impl FnMut(&Command) -> Option<Result<Reply, BackendError>> {
    move |c| match c {
        Command::Op(op @ Op::Stat { .. }) => {
            let ino = inos.iter().find(|(p, _)| *p == path_of(op)).map(|(_, i)| *i).unwrap_or(99);
            Some(Ok(Reply::Outcome(Outcome::Stat(stat(FileType::File, ino)))))
        }
        _ => None,
    }
}

#[test]
fn inode_labels_are_one_to_one() {
    let s = scenario(
        "  - stat: /a\n    expect: {ino: x}\n  - stat: /b\n    expect: {ino: x}\n  - stat: /c\n    expect: {ino: y}\n",
    );
    // Same inode for the same label, a new one for a new label: passes.
    let r = scenario::run(&s, &mut Fake::new("fake", by_path(&[("/a", 5), ("/b", 5), ("/c", 6)])));
    assert!(r.passed(), "{r}");
    // Two labels for one inode.
    let r = scenario::run(&s, &mut Fake::new("fake", by_path(&[("/a", 5), ("/b", 5), ("/c", 5)])));
    assert_eq!(r.failures.len(), 1, "{r}");
    assert_eq!(r.failures[0].step.as_ref().map(|s| s.index), Some(3));
    assert_eq!(r.failures[0].actual.as_deref(), Some("{ino: x}"));
    // One label for two inodes.
    let r = scenario::run(&s, &mut Fake::new("fake", by_path(&[("/a", 5), ("/b", 6), ("/c", 7)])));
    assert_eq!(r.failures.len(), 1, "{r}");
    assert_eq!(r.failures[0].step.as_ref().map(|s| s.index), Some(2));
}

#[test]
fn labels_in_trees_bind_with_labels_in_steps() {
    let s = scenario(
        "  - stat: /f\n    expect: {ino: a}\nfinal:\n  merged:\n    .: {nlink: 1}\n    f: !file {data: hello, ino: a}\n",
    );
    let tree = |ino| merged(&[("/", dir_stat(1, 1)), ("/f", stat(FileType::File, ino))]);
    let script = move |ino: u64| {
        move |c: &Command| match c {
            Command::Op(Op::Stat { .. }) => Some(Ok(Reply::Outcome(Outcome::Stat(stat(FileType::File, 5))))),
            Command::DumpMerged => Some(Ok(Reply::Merged(tree(ino)))),
            _ => None,
        }
    };
    assert!(scenario::run(&s, &mut Fake::new("fake", script(5))).passed());
    let r = scenario::run(&s, &mut Fake::new("fake", script(6)));
    assert_eq!(r.failures.len(), 1, "{r}");
    assert_eq!(r.failures[0].what, "final merged");
    assert!(r.failures[0].diff.contains(&"- /f: !file {data: hello, ino: a}".to_owned()), "{r}");
    assert!(r.failures[0].diff.contains(&"+ /f: !file {data: hello, ino: \"#6\"}".to_owned()), "{r}");
}

#[test]
fn tree_differences_come_with_a_diff() {
    let s = scenario("  - unlink: /g\n    expect: ok\nfinal:\n  upper: {f: hello, g: hello}\n");
    let mut b = Fake::new("fake", |c| match c {
        Command::DumpLayer { name } if name == "upper" => {
            let mut l = Layer::new();
            l.put("/f", ovlsim::Inode::file(b"hello", 0o644));
            l.put("/g", ovlsim::Inode::whiteout());
            Some(Ok(Reply::Layer(l.to_flat())))
        }
        _ => None,
    });
    let r = scenario::run(&s, &mut b);
    assert_eq!(r.failures.len(), 1, "{r}");
    let f = &r.failures[0];
    assert_eq!(f.what, "final upper");
    assert_eq!(f.pos.map(|p| p.line), Some(13));
    assert_eq!(f.diff, vec!["  /", "  /f: hello", "- /g: hello", "+ /g: !whiteout"]);
    let shown = r.to_string();
    assert!(shown.contains("fake.yaml:13: final upper: the trees differ"), "{shown}");
}

#[test]
fn not_modelled_counts_as_a_failure_with_its_reason() {
    let s = scenario("  - stat: /f\n    expect: ok\n");
    let mut b = Fake::new("fake", |c| match c {
        Command::Mount { .. } => Some(Err(BackendError::NotModelled("metacopy=on".into()))),
        _ => None,
    });
    let r = scenario::run(&s, &mut b);
    assert!(!r.passed());
    assert_eq!(r.steps_run, 0);
    assert!(r.failures[0].message.contains("not modelled: metacopy=on"), "{r}");
    // At a step, the rest of the steps are counted as not run.
    let s =
        scenario("  - unmount\n  - mount: {options: {metacopy: true}}\n    expect: ok\n  - stat: /f\n    expect: ok\n");
    let mut calls = 0;
    let mut b = Fake::new("fake", move |c| match c {
        Command::Mount { .. } => {
            calls += 1;
            (calls > 1).then(|| Err(BackendError::NotModelled("metacopy=on".into())))
        }
        _ => None,
    });
    let r = scenario::run(&s, &mut b);
    assert_eq!(r.failures.len(), 1, "{r}");
    assert_eq!(r.failures[0].step.as_ref().map(|s| s.index), Some(2));
    assert!(r.failures[0].message.contains("not modelled: metacopy=on (1 later steps not run)"), "{r}");
}

#[test]
fn checking_the_upper_while_mounted_unmounts_and_mounts_again() {
    let s = scenario("  - check:\n      upper: {}\n  - stat: /f\n    expect: ok\n");
    let mut b = Fake::new("fake", |_| None);
    let r = scenario::run(&s, &mut b);
    assert!(r.passed(), "{r}");
    let kinds: Vec<String> =
        b.log.iter().map(|c| format!("{c:?}").split([' ', '{', '(']).next().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["Layer", "Layer", "Mount", "Unmount", "DumpLayer", "Mount", "Op", "Unmount"]);
}

#[test]
fn a_step_without_an_expectation_fails_and_says_how_to_fill_it() {
    let s = scenario("  - stat: /f\n");
    let r = scenario::run(&s, &mut Fake::new("fake", |_| None));
    assert!(r.failures[0].message.contains("ovlsim record"), "{r}");
}

#[test]
fn two_backends_are_compared_step_by_step() {
    let s = scenario("  - unlink: /f\n    expect: ok\n  - stat: /f\n    expect: ENOENT\n");
    let mut a = Fake::new("one", |c| match c {
        Command::Op(Op::Stat { .. }) => Some(Ok(Reply::Outcome(Outcome::Err(Errno::ENOENT)))),
        _ => None,
    });
    let mut b = Fake::new("two", |c| match c {
        Command::Op(Op::Stat { .. }) => Some(Ok(Reply::Outcome(Outcome::Stat(stat(FileType::File, 3))))),
        _ => None,
    });
    let r = scenario::run_both(&s, &mut a, &mut b);
    assert_eq!(r.backend, "one+two");
    // The first divergence is step 2 (the final trees then differ too: labels are given by
    // first sighting, and the two saw different inodes first).
    let div: Vec<_> = r.failures.iter().filter(|f| f.backend == "one/two").collect();
    assert_eq!(div[0].step.as_ref().map(|s| s.index), Some(2), "{r}");
    assert_eq!(div[0].expected.as_deref(), Some("ENOENT"));
    // `two` also fails the expectation; `one` does not.
    assert!(r.failures.iter().any(|f| f.backend == "two" && f.step.as_ref().map(|s| s.index) == Some(2)));
    assert!(!r.failures.iter().any(|f| f.backend == "one"));
    // Inode numbers are compared as labels by first sighting, not as numbers.
    let s = scenario("  - stat: /f\n    expect: ok\n  - stat: /g\n    expect: ok\n");
    let mut a = Fake::new("one", by_path(&[("/f", 10), ("/g", 10)]));
    let mut b = Fake::new("two", by_path(&[("/f", 77), ("/g", 77)]));
    assert!(scenario::run_both(&s, &mut a, &mut b).passed());
    let mut a = Fake::new("one", by_path(&[("/f", 10), ("/g", 10)]));
    let mut b = Fake::new("two", by_path(&[("/f", 77), ("/g", 78)]));
    let r = scenario::run_both(&s, &mut a, &mut b);
    assert_eq!(r.failures[0].backend, "one/two", "{r}");
    assert_eq!(r.failures[0].step.as_ref().map(|s| s.index), Some(2), "{r}");
}

/// A fake with a little state: unlinked names give ENOENT, and the upper records them.
fn stateful() -> Fake {
    let mut gone: Vec<String> = Vec::new();
    Fake::new("fake", move |c| match c {
        Command::Op(Op::Unlink { path }) => {
            gone.push(path.clone());
            Some(Ok(Reply::Outcome(Outcome::Ok)))
        }
        Command::Op(op @ (Op::Stat { .. } | Op::Lstat { .. })) => {
            let p = path_of(op);
            Some(Ok(Reply::Outcome(if gone.iter().any(|g| g == p) {
                Outcome::Err(Errno::ENOENT)
            } else {
                Outcome::Stat(stat(FileType::File, if p == "/h" { 4 } else { p.len() as u64 }))
            })))
        }
        Command::Op(Op::Readdir { .. }) => {
            let mut m = BTreeMap::new();
            m.insert("g".to_owned(), FileType::File);
            Some(Ok(Reply::Outcome(Outcome::Entries(m))))
        }
        Command::Op(Op::Read { .. }) => Some(Ok(Reply::Outcome(Outcome::Data(b"ENOENT".to_vec())))),
        Command::DumpMerged => Some(Ok(Reply::Merged(merged(&[
            ("/", dir_stat(1, 1)),
            ("/g", stat(FileType::File, 2)),
            ("/h", stat(FileType::File, 4)),
        ])))),
        Command::DumpLayer { .. } => {
            let mut l = Layer::new();
            for g in &gone {
                l.put(g, ovlsim::Inode::whiteout());
            }
            Some(Ok(Reply::Layer(l.to_flat())))
        }
        _ => None,
    })
}

#[test]
fn record_fills_every_expectation_and_the_result_passes() {
    let mut s = scenario(
        "  - unlink: /f\n  - stat: /f\n    expect: ok\n  - stat: /h\n    expect: {kind: dir}\n  - lstat: /h\n  - readdir: /\n    expect: [x]\n  - read: /g\n  - check:\n      merged:\n",
    );
    scenario::record(&mut s, &mut stateful()).unwrap();
    let yaml = s.to_yaml();
    assert!(
        yaml.starts_with("# The rule comment stays when the scenario is recorded.\n# Source: nowhere.\nname: fake\n")
    );
    let back = scenario::parse(&yaml, "fake.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let r = scenario::run(&back, &mut stateful());
    assert!(r.passed(), "{r}\n{yaml}");
    // The user's choices are kept: a stat that listed fields keeps them, a readdir list
    // stays a list; content that reads like an errno is marked as data.
    assert!(yaml.contains("  - stat: /f\n    expect: ENOENT\n"), "{yaml}");
    assert!(yaml.contains("  - stat: /h\n    expect: {kind: file}\n"), "{yaml}");
    assert!(
        yaml.contains(
            "  - lstat: /h\n    expect: {kind: file, mode: 0644, size: 5, nlink: 1, uid: 0, gid: 0, ino: a}\n"
        ),
        "{yaml}"
    );
    assert!(yaml.contains("  - readdir: /\n    expect: [g]\n"), "{yaml}");
    assert!(yaml.contains("  - read: /g\n    expect: !data ENOENT\n"), "{yaml}");
    assert!(yaml.contains("h: !file {data: hello, ino: a}"), "{yaml}");
    assert!(yaml.contains("final:\n  merged: {.: {nlink: 1, ino: b}, "), "{yaml}");
    assert!(yaml.contains("  upper: {f: !whiteout}\n") || yaml.contains("  upper:\n    f: !whiteout\n"), "{yaml}");
}

#[test]
fn from_replies_writes_the_backend_answers_as_expectations() {
    let l0 = {
        let mut l = Layer::new();
        l.put("/f", ovlsim::Inode::file(b"x", 0o644));
        l.to_flat()
    };
    let up = Layer::new().to_flat();
    let trace = vec![
        (Command::Layer { name: "L0".into(), content: l0 }, Reply::Done),
        (Command::Layer { name: "U".into(), content: up.clone() }, Reply::Done),
        (
            Command::Mount { lowers: vec!["L0".into()], upper: None, options: Default::default() },
            Reply::MountRefused(Errno::EINVAL),
        ),
        (
            Command::Mount { lowers: vec!["L0".into()], upper: Some("U".into()), options: Default::default() },
            Reply::Done,
        ),
        (Command::Op(Op::Stat { path: "/f".into() }), Reply::Outcome(Outcome::Stat(stat(FileType::File, 8)))),
        (Command::Op(Op::Lstat { path: "/f".into() }), Reply::Outcome(Outcome::Stat(stat(FileType::File, 8)))),
        (Command::Op(Op::Unlink { path: "/nope".into() }), Reply::Outcome(Outcome::Err(Errno::ENOENT))),
        (Command::Unmount, Reply::Done),
        (Command::DumpLayer { name: "U".into() }, Reply::Layer(up)),
    ];
    let s = Scenario::from_replies("from-replies", "a shrunk case", &trace);
    let yaml = s.to_yaml();
    let back = scenario::parse(&yaml, "r.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert!(back.mount.is_none(), "a refused first mount is a step:\n{yaml}");
    assert!(yaml.contains("  - mount: {lowers: [L0]}\n    expect: EINVAL\n"), "{yaml}");
    assert!(yaml.contains("  - mount: {upper: U}\n    expect: ok\n"), "{yaml}");
    assert!(yaml.contains("ino: a}"), "{yaml}");
    assert!(yaml.contains("  - unlink: /nope\n    expect: ENOENT\n"), "{yaml}");
    assert!(yaml.contains("  - check:\n      upper: {}\n"), "{yaml}");
}

#[test]
fn a_built_unmount_closes_the_open_handles_first_and_replays_on_the_model() {
    // `Command::Unmount` closes every handle; a scenario's `unmount` is refused while one
    // is open (EBUSY), so the scenario closes the handles that are open by steps first.
    let l0 = {
        let mut l = Layer::new();
        l.put("/f", ovlsim::Inode::file(b"x", 0o644));
        l.to_flat()
    };
    let open = |fd: &str, path: &str| {
        Command::Op(Op::Fd(FdOp::Open { fd: fd.into(), path: path.into(), flags: Default::default(), mode: 0 }))
    };
    let trace = vec![
        (Command::Layer { name: "L0".into(), content: l0 }, Reply::Done),
        (Command::Layer { name: "U".into(), content: Layer::new().to_flat() }, Reply::Done),
        (
            Command::Mount { lowers: vec!["L0".into()], upper: Some("U".into()), options: Default::default() },
            Reply::Done,
        ),
        (open("f1", "/f"), Reply::Outcome(Outcome::Ok)),
        (open("f2", "/missing"), Reply::Outcome(Outcome::Err(Errno::ENOENT))),
        (open("f3", "/f"), Reply::Outcome(Outcome::Ok)),
        (Command::Op(Op::Fd(FdOp::Close { fd: "f3".into() })), Reply::Outcome(Outcome::Ok)),
        (Command::Unmount, Reply::Done),
        (
            Command::Mount { lowers: vec!["L0".into()], upper: Some("U".into()), options: Default::default() },
            Reply::Done,
        ),
    ];
    let s = Scenario::from_replies("closed-first", "a case with a handle open at an unmount", &trace);
    let yaml = s.to_yaml();
    assert!(
        yaml.contains(
            "  - close: f1
  - unmount
"
        ),
        "{yaml}"
    );
    assert!(!yaml.contains("close: f2") && yaml.matches("close: f3").count() == 1, "{yaml}");
    // Recorded on the model: the handle closes, the unmount goes through.
    let mut back = scenario::parse(&yaml, "c.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    scenario::record(&mut back, &mut ovlsim::backend::ModelBackend::new()).expect("records on the model");
    let recorded = back.to_yaml();
    assert!(recorded.contains("  - close: f1\n    expect: ok\n  - unmount\n  - mount"), "{recorded}");
}

// ---------------------------------------------------------------------------------------
// The command line.

fn ovlsim() -> Process {
    // No OVLSIM_KERNEL_WORKER: the CLI is its own kernel worker.
    let mut p = Process::new(env!("CARGO_BIN_EXE_ovlsim"));
    p.env_remove("OVLSIM_KERNEL_WORKER");
    p
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(p: &mut Process) -> Out {
    let o = p.output().expect("ovlsim runs");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ovlsim-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn examples() -> usize {
    scenario::find_files(&["spec/examples".into()]).unwrap().files.len()
}

const GOOD: &str = "\
# Unlinking a lower file leaves a whiteout.
name: good
rules: [unlink leaves a whiteout]
layers:
  L0: {f: hello}
  upper: {}
mount: {lowers: [L0], upper: upper}
steps:
  - unlink: /f
    expect: ok
  - stat: /f
    expect: ENOENT
final:
  upper:
    f: !whiteout
";

#[test]
fn run_replays_the_examples_and_ends_with_the_count() {
    let o = run(ovlsim().args(["run", "spec/examples"]));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let last = o.stdout.lines().last().unwrap();
    assert_eq!(last, format!("{} passed, 0 failed", examples()));
}

#[test]
fn run_goes_on_after_bad_files_and_reports_each() {
    let d = scratch("mixed");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("good.yaml"), GOOD).unwrap();
    std::fs::write(d.join("sub/malformed.yaml"), GOOD.replace("  - stat: /f\n", "  - stat: [/f\n")).unwrap();
    std::fs::write(d.join("sub/wrong.yaml"), GOOD.replace("expect: ENOENT", "expect: {kind: file}")).unwrap();
    std::fs::write(d.join("notes.txt"), "not a scenario").unwrap();
    let o = run(ovlsim().arg("run").arg(&d));
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert_eq!(o.stdout.lines().last().unwrap(), "1 passed, 2 failed", "{}", o.stdout);
    let malformed = format!("{}:11:", d.join("sub/malformed.yaml").display());
    assert!(o.stdout.contains(&malformed), "{}", o.stdout);
    assert!(o.stdout.contains("step 2 (stat)"), "{}", o.stdout);
    let wrong =
        format!("{}:11: step 2 (stat /f): expected {{kind: file}}, got ENOENT", d.join("sub/wrong.yaml").display());
    assert!(o.stdout.contains(&wrong), "{}", o.stdout);
    // JSON instead of text.
    let o = run(ovlsim().arg("run").arg("--json").arg(&d));
    assert_eq!(o.code, 1);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON");
    assert_eq!(v["passed"], 1);
    assert_eq!(v["failed"], 2);
    assert_eq!(v["results"].as_array().unwrap().len(), 3);
    let wrong =
        v["results"].as_array().unwrap().iter().find(|r| r["file"].as_str().unwrap().ends_with("wrong.yaml")).unwrap();
    assert_eq!(wrong["failures"][0]["step"]["index"], 2);
    assert_eq!(wrong["failures"][0]["pos"]["line"], 11);
    assert_eq!(wrong["failures"][0]["actual"], "ENOENT");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn run_defaults_to_spec_and_refuses_missing_paths() {
    let d = scratch("default");
    std::fs::create_dir_all(d.join("spec/x")).unwrap();
    std::fs::write(d.join("spec/x/good.yaml"), GOOD).unwrap();
    let o = run(ovlsim().arg("run").current_dir(&d));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.ends_with("1 passed, 0 failed\n"), "{}", o.stdout);
    let o = run(ovlsim().args(["run", "no/such/dir"]).current_dir(&d));
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("no/such/dir"), "{}", o.stderr);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn record_writes_to_stdout_or_in_place_and_keeps_the_rule_comment() {
    let d = scratch("record");
    let f = d.join("rec.yaml");
    let bare = GOOD
        .replace("    expect: ok\n", "")
        .replace("    expect: ENOENT\n", "")
        .replace("final:\n  upper:\n    f: !whiteout\n", "");
    std::fs::write(&f, &bare).unwrap();
    let o = run(ovlsim().arg("record").arg(&f).args(["-o", "-", "--backend", "model"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("with the model backend"), "{}", o.stderr);
    assert!(o.stdout.starts_with("# Unlinking a lower file leaves a whiteout.\nname: good\n"), "{}", o.stdout);
    assert!(o.stdout.contains("  - unlink: /f\n    expect: ok\n"), "{}", o.stdout);
    assert!(o.stdout.contains("final:\n"), "{}", o.stdout);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), bare, "-o - leaves the file alone");
    // In place, then the recorded scenario passes.
    let o = run(ovlsim().arg("record").arg(&f).args(["--backend", "model"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(ovlsim().arg("run").arg(&f));
    assert_eq!(o.code, 0, "{}", o.stdout);
    // To another file.
    let out = d.join("out.yaml");
    let o = run(ovlsim().arg("record").arg(&f).args(["--backend", "model", "-o"]).arg(&out));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&f).unwrap());
    // A bad file is not recorded.
    std::fs::write(&f, "name: [").unwrap();
    let o = run(ovlsim().arg("record").arg(&f).args(["-o", "-", "--backend", "model"]));
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("rec.yaml:") && o.stderr.contains("malformed YAML"), "{}", o.stderr);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn record_uses_the_kernel_by_default() {
    if !common::kernel_runs("record from the kernel by default") {
        return;
    }
    let o = run(ovlsim().args(["record", "spec/examples/unlink-lower-file-whiteout.yaml", "-o", "-"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("with the kernel backend"), "{}", o.stderr);
}

#[test]
fn record_without_a_kernel_fails_unless_the_model_is_asked_for() {
    let f = "spec/examples/unlink-lower-file-whiteout.yaml";
    let no_kernel = || {
        let mut p = ovlsim();
        p.env("OVLSIM_KERNEL_WORKER", "/nonexistent/ovlsim");
        p
    };
    for extra in [&[][..], &["--backend", "kernel"][..]] {
        let o = run(no_kernel().args(["record", f, "-o", "-"]).args(extra));
        assert_eq!(o.code, 1, "{extra:?}: {}", o.stderr);
        assert!(o.stdout.is_empty(), "{}", o.stdout);
        for needle in ["cannot record", "from the kernel", "/nonexistent/ovlsim is not a file", "add `--backend model`"]
        {
            assert!(o.stderr.contains(needle), "{extra:?}: no {needle:?} in {}", o.stderr);
        }
        assert!(!o.stderr.contains("recording"), "{}", o.stderr);
    }
    // Following the hint: the model records.
    let o = run(no_kernel().args(["record", f, "-o", "-", "--backend", "model"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("with the model backend"), "{}", o.stderr);
    // With --json, the error is in the JSON.
    let o = run(no_kernel().args(["record", f, "-o", "-", "--json"]));
    assert_eq!(o.code, 1);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["backend"], "kernel");
    assert!(v["error"].as_str().unwrap().contains("--backend model"), "{v}");
}

#[test]
fn the_kernel_worker_hint_works_when_followed() {
    // A wrong OVLSIM_KERNEL_WORKER says to unset it; the CLI then is its own worker.
    let o = run(ovlsim().env("OVLSIM_KERNEL_WORKER", "/nonexistent/ovlsim").args([
        "run",
        "spec/examples/unlink-lower-file-whiteout.yaml",
        "--backend",
        "kernel",
    ]));
    assert_eq!(o.code, 1);
    assert!(o.stdout.contains("unset OVLSIM_KERNEL_WORKER"), "{}", o.stdout);
    if !common::kernel_runs("the kernel worker hint") {
        return;
    }
    let o = run(ovlsim().args(["run", "spec/examples/unlink-lower-file-whiteout.yaml", "--backend", "kernel"]));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
}

#[test]
fn show_explains_each_step() {
    let o = run(ovlsim().args(["show", "spec/examples/unlink-lower-file-whiteout.yaml"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    for needle in [
        "scenario unlink-lower-file-whiteout",
        "layer L0:",
        "step 1, line 16: unlink /d/g",
        "result:   ok",
        "events:   copy-up /d; whiteout /d/g",
        "[upper, L0]",
        "upper (upper) on disk:",
        "g: !whiteout",
        "every expectation holds on the model",
    ] {
        assert!(o.stdout.contains(needle), "no {needle:?} in:\n{}", o.stdout);
    }
    let o = run(ovlsim().args(["show", "no-such.yaml"]));
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("no-such.yaml:1:1"), "{}", o.stderr);
}

/// `fuzz` says its seed before the first case (so that a run stopped early can be repeated),
/// and again in the summary.
#[test]
fn fuzz_prints_its_seed_first() {
    let o = run(ovlsim().args(["fuzz", "--model-only", "--cases", "3", "--seed", "4711", "--max-steps", "5"]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let first = o.stderr.lines().next().unwrap_or("");
    assert!(first.contains("seed 4711") && first.contains("--seed 4711"), "first line {first:?} of:\n{}", o.stderr);
    assert!(o.stdout.contains("fuzz (model only), seed 4711: 3 cases"), "{}", o.stdout);
}

/// The inode label of a `result:` or `expected:` line (`ino: LABEL}`).
fn ino_label(line: &str) -> &str {
    line.split("ino: ").nth(1).and_then(|r| r.split([',', '}']).next()).unwrap_or_else(|| panic!("no ino in {line:?}"))
}

/// `show` names each inode one way throughout: by the label the scenario's expectations
/// bind to it (as `run` binds them), else `#1`, `#2`, ... So a stat result shows its
/// expectation's label exactly when the two agree, and a disagreement is marked right
/// under the expectation. (It used to label inodes by its own first sighting, so an
/// agreeing result read `ino: b` next to `expected: ... ino: a`.)
#[test]
fn show_labels_inodes_as_the_scenario_does_and_marks_a_mismatch() {
    let file = "spec/regressions/write-hardlink-copy-has-no-origin.yaml";
    let o = run(ovlsim().args(["show", file]));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("every expectation holds on the model"), "{}", o.stdout);
    let lines: Vec<&str> = o.stdout.lines().collect();
    let results: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("result:") && lines[i].contains("ino: "))
        .collect();
    assert_eq!(results.len(), 4, "four stats in {file}:\n{}", o.stdout);
    for &i in &results {
        assert!(lines[i + 1].trim_start().starts_with("expected:"), "{}", o.stdout);
        assert_eq!(ino_label(lines[i]), ino_label(lines[i + 1]), "an agreeing result, another label:\n{}", o.stdout);
    }
    // The merged views use the same labels: /b is `a` (the copy), /c/d is `b`; the
    // directories, which no expectation labels, are `#1` and `#2`.
    let merged_ino = |prefix: &str| -> Vec<&str> {
        lines.iter().filter(|l| l.trim_start().starts_with(prefix)).filter_map(|l| l.rsplit("  ino ").next()).collect()
    };
    for (prefix, want) in [("/b: x", "a"), ("/c/d:", "b"), ("/ {", "#1"), ("/c/ ", "#2")] {
        let got = merged_ino(prefix);
        assert!(!got.is_empty() && got.iter().all(|l| *l == want), "{prefix}: {got:?}, not {want}:\n{}", o.stdout);
    }

    // The same scenario with /c/d expected to be /b's inode: a mismatch, marked under it,
    // and the result keeps the label the rest of the output gives /c/d.
    let text = std::fs::read_to_string(file).unwrap();
    let wrong = text.replacen("nlink: 2, uid: 0, gid: 0, ino: b}", "nlink: 2, uid: 0, gid: 0, ino: a}", 1);
    assert_ne!(wrong, text);
    let dir = scratch("show-labels");
    let path = dir.join("wrong.yaml");
    std::fs::write(&path, wrong).unwrap();
    let o = run(ovlsim().args(["show".as_ref(), path.as_os_str()]));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    let step = lines.iter().position(|l| l.starts_with("step 3,")).expect("step 3");
    let (result, expected, mark) = (lines[step + 1], lines[step + 2], lines[step + 3]);
    assert!(result.trim_start().starts_with("result:") && expected.trim_start().starts_with("expected:"));
    assert_eq!((ino_label(result), ino_label(expected)), ("b", "a"), "{}", o.stdout);
    assert!(mark.trim_start().starts_with("MISMATCH:"), "not marked:\n{}", o.stdout);
    assert!(o.stdout.contains("1 expectation(s) fail on the model"), "{}", o.stdout);
}

#[test]
fn the_examples_pass_on_the_kernel_and_agree_with_the_model() {
    if common::kernel_or_skip("scenario examples on the kernel").is_none() {
        return;
    }
    for backend in ["kernel", "both"] {
        let o = run(ovlsim().args(["run", "spec/examples", "--backend", backend]));
        assert_eq!(o.code, 0, "{backend}:\n{}{}", o.stdout, o.stderr);
        assert_eq!(o.stdout.lines().last().unwrap(), format!("{} passed, 0 failed", examples()));
    }
    // No mount is left behind.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.lines().any(|l| l.starts_with("overlay ") && l.contains("ovlsim")), "{mounts}");
}

#[test]
fn scenarios_load_from_a_path() {
    let p: &Path = Path::new("spec/examples/write-hardlink-copy-up-breaks.yaml");
    let s = scenario::load(p).unwrap();
    assert_eq!(s.name, "write-hardlink-copy-up-breaks");
    assert_eq!(s.file(), p.display().to_string());
    let flat: &FlatLayer = &s.layers[0].1;
    assert_eq!(flat.entries.len(), 2);
}
