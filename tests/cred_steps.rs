//! `as_user` and `umask` in scenarios: bad values are located errors (file, line, step),
//! and the keys are written back as read.

use ovlsim::cred::{Cred, User};
use ovlsim::scenario::{self, Problem, ScenarioError};

const BASE: &str = "\
# A base scenario for the caller tests.
name: base
rules: [a rule]
layers:
  L0: {f: hello, d: {}}
  upper: {}
mount: {lowers: [L0], upper: upper}
{top}steps:
{steps}";

fn text(top: &str, steps: &str) -> String {
    BASE.replace("{top}", top).replace("{steps}", steps)
}

fn problems(text: &str) -> Vec<Problem> {
    match scenario::parse(text, "bad.yaml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(ScenarioError { problems }) => problems,
    }
}

/// The one problem is at `line`, in step `step` (or none), and says `needle`.
#[track_caller]
fn one(text: &str, line: usize, step: Option<(usize, &str)>, needle: &str) {
    let ps = problems(text);
    assert_eq!(ps.len(), 1, "one problem expected, got {ps:#?}");
    let p = &ps[0];
    let shown = p.to_string();
    assert!(shown.starts_with(&format!("bad.yaml:{line}:")), "wrong place: {shown}");
    assert_eq!(p.step.as_ref().map(|s| (s.index, s.op.as_str())), step, "{shown}");
    assert!(shown.contains(needle), "{shown:?} does not say {needle:?}");
}

#[test]
fn a_step_reads_its_caller_and_umask() {
    let t = text(
        "umask: 0022\n",
        "  - mkdir: /d/x\n    as_user: {uid: 1000, gid: 100, groups: [50, 60]}\n    umask: 0077\n  - stat: /f\n",
    );
    let s = scenario::parse(&t, "ok.yaml").unwrap();
    assert_eq!(s.umask, Some(0o022));
    assert_eq!(s.steps[0].as_user, Some(User { uid: 1000, gid: 100, groups: vec![50, 60] }));
    assert_eq!(s.steps[0].cred(s.umask), Some(Cred { uid: 1000, gid: 100, groups: vec![50, 60], umask: 0o077 }));
    // A step without either takes the scenario's umask, as root.
    assert_eq!(s.steps[1].cred(s.umask), Some(Cred { umask: 0o022, ..Cred::root() }));
    // Without any, the step is root's with umask 0, sent as a plain Op.
    let plain = scenario::parse(&text("", "  - stat: /f\n"), "ok.yaml").unwrap();
    assert_eq!(plain.steps[0].cred(plain.umask), None);
}

#[test]
fn callers_and_umasks_are_written_back() {
    let t =
        text("umask: 0022\n", "  - mkdir: /d/x\n    as_user: {uid: 1000, gid: 100, groups: [50]}\n    umask: 0077\n");
    let s = scenario::parse(&t, "ok.yaml").unwrap();
    let y = s.to_yaml();
    assert!(y.contains("umask: 0022\n"), "{y}");
    assert!(y.contains("as_user: {uid: 1000, gid: 100, groups: [50]}"), "{y}");
    let back = scenario::parse(&y, "back.yaml").unwrap();
    assert_eq!(back.umask, s.umask);
    assert_eq!((&back.steps[0].as_user, back.steps[0].umask), (&s.steps[0].as_user, s.steps[0].umask));
}

#[test]
fn a_bad_as_user_is_located() {
    one(&text("", "  - stat: /f\n    as_user: 1000\n"), 10, Some((1, "stat")), "`as_user` is a mapping");
    one(&text("", "  - stat: /f\n    as_user: {uid: 1000}\n"), 10, Some((1, "stat")), "has no `gid`");
    one(&text("", "  - stat: /f\n    as_user: {uid: -1, gid: 0}\n"), 10, Some((1, "stat")), "uid");
    one(
        &text("", "  - stat: /f\n    as_user: {uid: 1, gid: 1, groups: 5}\n"),
        10,
        Some((1, "stat")),
        "list of group ids",
    );
    one(&text("", "  - stat: /f\n    as_user: {uid: 1, gid: 1, user: x}\n"), 10, Some((1, "stat")), "user");
    one(&text("", "  - stat: /f\n    as_user: {uid: 4294967295, gid: 1}\n"), 10, Some((1, "stat")), "-1");
}

#[test]
fn a_bad_umask_is_located() {
    one(&text("", "  - stat: /f\n    umask: 01777\n"), 10, Some((1, "stat")), "permission bits only");
    one(&text("", "  - stat: /f\n    umask: 22\n"), 10, Some((1, "stat")), "decimal");
    one(&text("umask: x\n", "  - stat: /f\n"), 8, None, "not an octal number");
}

#[test]
fn only_operations_take_a_caller() {
    one(&text("", "  - unmount\n  - mount:\n    as_user: {uid: 1, gid: 1}\n"), 11, Some((2, "mount")), "as_user");
    one(&text("", "  - drop_caches:\n    umask: 0022\n"), 10, Some((1, "drop_caches")), "umask");
}

#[test]
fn a_step_through_a_handle_takes_a_caller() {
    let t = text(
        "",
        "  - open: /f\n    as: f1\n  - pread: {fd: f1, offset: 0, len: 1}\n    as_user: {uid: 7, gid: 8}\n    umask: 0022\n",
    );
    let s = scenario::parse(&t, "ok.yaml").unwrap();
    assert_eq!(s.steps[0].cred(s.umask), None);
    assert_eq!(s.steps[1].cred(s.umask), Some(Cred { uid: 7, gid: 8, groups: vec![], umask: 0o022 }));
    let back = s.to_yaml();
    assert!(
        back.contains("  - pread: {fd: f1, offset: 0, len: 1}\n    as_user: {uid: 7, gid: 8}\n    umask: 0022\n"),
        "{back}"
    );
}
