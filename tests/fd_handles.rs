//! Handles (files kept open, `ovlsim::ops::FdOp`): how scenario files name them, and that
//! the model's per-handle state is cloned with the overlay. What the handles observe is
//! pinned by `spec/fd/`, recorded from the kernel.

use ovlsim::backend::ModelBackend;
use ovlsim::errno::Errno;
use ovlsim::layer::Layer;
use ovlsim::mount::Options;
use ovlsim::ops::{FdOp, Op, OpenFlags, Outcome};
use ovlsim::overlay::Overlay;
use ovlsim::scenario;

const HEAD: &str =
    "# r\nname: t\nrules: [r]\nlayers:\n  L0: {f: data}\n  upper: {}\nmount: {lowers: [L0], upper: upper}\nsteps:\n";

#[test]
fn an_unknown_handle_is_an_error_at_its_step() {
    let text = format!(
        "{HEAD}  - open: /f\n    as: f1\n    expect: ok\n  - pread: {{fd: f9, offset: 0, len: 4}}\n    expect: EBADF\n"
    );
    let err = scenario::parse(&text, "s.yaml").expect_err("f9 is never opened");
    let msg = err.to_string();
    assert!(msg.starts_with("s.yaml:12:"), "{msg}");
    assert!(msg.contains("step 2 (pread)"), "{msg}");
    assert!(msg.contains("unknown handle `f9`") && msg.contains("f1"), "{msg}");
}

#[test]
fn handle_steps_take_their_arguments_in_their_mapping() {
    let text = format!("{HEAD}  - open: /f\n    as: f1\n  - pread: {{fd: f1, len: 4}}\n  - write: {{fd: f1}}\n    data: x\n  - getdents: {{fd: f1, count: 0}}\n");
    let msg = scenario::parse(&text, "s.yaml").expect_err("three mistakes").to_string();
    assert!(msg.contains("step 2 (pread): `pread` needs `offset`"), "{msg}");
    assert!(msg.contains("step 3 (write): `write` through a handle takes its arguments in its mapping"), "{msg}");
    assert!(msg.contains("step 4 (getdents)") && msg.contains("count is at least 1"), "{msg}");
}

#[test]
fn handle_steps_are_written_back_as_read() {
    let text = format!(
        "{HEAD}  - open: /f\n    flags: [rdwr, append]\n    as: f1\n    expect: ok\n  - pread: {{fd: f1, offset: 1, len: 3}}\n    expect: ata\n  - pwrite: {{fd: f1, offset: 0, data: !hex \"00ff\"}}\n    expect: ok\n  - read: {{fd: f1, len: 2}}\n    expect: da\n  - write: {{fd: f1, data: x}}\n    expect: ok\n  - lseek: {{fd: f1, offset: -2, whence: end}}\n    expect: ok\n  - fstat: f1\n    expect: {{kind: file}}\n  - ftruncate: {{fd: f1, len: 1}}\n    expect: ok\n  - fchmod: {{fd: f1, mode: 0600}}\n    expect: ok\n  - open: /\n    flags: [directory]\n    as: d1\n    expect: ok\n  - getdents: {{fd: d1, count: 2}}\n    expect: [f]\n  - close: f1\n    expect: ok\n"
    );
    let s = scenario::parse(&text, "s.yaml").expect("a valid scenario");
    let again = scenario::parse(&s.to_yaml(), "s.yaml").expect("what to_yaml writes reads back");
    assert_eq!(
        s.steps.iter().map(|x| &x.action).collect::<Vec<_>>(),
        again.steps.iter().map(|x| &x.action).collect::<Vec<_>>()
    );
    assert_eq!(
        s.steps.iter().map(|x| &x.expect).collect::<Vec<_>>(),
        again.steps.iter().map(|x| &x.expect).collect::<Vec<_>>()
    );
    let report = scenario::run(&s, &mut ModelBackend::new());
    assert!(report.passed(), "{report}");
}

#[test]
fn handles_clone_with_the_overlay() {
    let mut lower = Layer::new();
    lower.put("/f", ovlsim::layer::Inode::file(b"lower", 0o644));
    let mut ov = Overlay::mount(vec![lower], Some(Layer::new()), Options::default()).expect("mount");
    let open = Op::Fd(FdOp::Open { fd: "f1".into(), path: "/f".into(), flags: OpenFlags::default(), mode: 0 });
    assert_eq!(ov.apply(&open), Outcome::Ok);
    let snapshot = ov.clone();
    assert_eq!(ov.apply(&Op::Fd(FdOp::Close { fd: "f1".into() })), Outcome::Ok);
    assert_eq!(ov.fds().len(), 0);
    assert_eq!(snapshot.fds().names(), vec!["f1".to_owned()]);
    let mut snapshot = snapshot;
    let read = Op::Fd(FdOp::Read { fd: "f1".into(), len: 10 });
    assert_eq!(snapshot.apply(&read), Outcome::Data(b"lower".to_vec()));
    assert_eq!(ov.apply(&read), Outcome::Err(Errno::EBADF));
}
