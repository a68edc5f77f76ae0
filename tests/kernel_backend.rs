//! The kernel backend against the real kernel: real mounts in a private namespace.
//!
//! These tests need root and overlayfs. Without them each test prints
//! `SKIPPED: kernel backend tests: ...` to stderr and passes, unless
//! `OVLSIM_REQUIRE_KERNEL=1`, where that is a failure.

mod common;

use ovlsim::backend::{Backend, BackendError, Command, Edit, ModelBackend, Reply};
use ovlsim::kernel::KernelBackend;
use ovlsim::layer::{FileType, FlatEntry, FlatLayer, FlatNode};
use ovlsim::mount::RedirectDir;
use ovlsim::ops::{Op, Outcome, RenameFlags, Stat, WriteAt};
use ovlsim::{Errno, Options};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

/// Overlay lines of `/proc/mounts` that were there before any test ran (a host whose root
/// is an overlay has some); any other one is a leak.
fn overlay_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/mounts")
        .expect("read /proc/mounts")
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("overlay"))
        .map(str::to_owned)
        .collect()
}

fn baseline() -> &'static Vec<String> {
    static BASELINE: OnceLock<Vec<String>> = OnceLock::new();
    BASELINE.get_or_init(overlay_mounts)
}

fn assert_no_leaked_mounts() {
    let leaked: Vec<String> = overlay_mounts().into_iter().filter(|l| !baseline().contains(l)).collect();
    assert!(leaked.is_empty(), "overlay mounts leaked: {leaked:?}");
}

/// A fresh kernel backend, or `None` (after a loud message) when the tier cannot run.
fn kernel() -> Option<KernelBackend> {
    // The mounts that were there before any worker started; every test goes through here.
    baseline();
    common::kernel_or_skip("kernel backend tests")
}

fn node(kind: FileType, mode: u32) -> FlatNode {
    FlatNode { kind, mode, uid: 0, gid: 0, data: None, target: None, rdev: None, xattrs: BTreeMap::new() }
}

fn dir(mode: u32) -> FlatNode {
    node(FileType::Dir, mode)
}

fn file(data: &[u8], mode: u32) -> FlatNode {
    FlatNode { data: Some(data.into()), ..node(FileType::File, mode) }
}

fn symlink(target: &str) -> FlatNode {
    FlatNode { target: Some(target.to_owned()), ..node(FileType::Symlink, 0o777) }
}

fn device(kind: FileType, major: u32, minor: u32, mode: u32) -> FlatNode {
    FlatNode { rdev: Some((major, minor)), ..node(kind, mode) }
}

fn whiteout() -> FlatNode {
    device(FileType::Char, 0, 0, 0)
}

fn with_xattr(mut n: FlatNode, name: &str, value: &[u8]) -> FlatNode {
    n.xattrs.insert(name.to_owned(), value.to_vec());
    n
}

fn layer(entries: Vec<(&str, FlatNode)>) -> FlatLayer {
    FlatLayer {
        root: dir(0o755),
        entries: entries.into_iter().map(|(path, node)| FlatEntry::Node { path: path.to_owned(), node }).collect(),
    }
}

fn op(k: &mut KernelBackend, op: Op) -> Outcome {
    match k.exec(&Command::Op(op.clone())) {
        Ok(Reply::Outcome(o)) => o,
        other => panic!("{op:?} answered {other:?}"),
    }
}

fn ok(k: &mut (impl Backend + ?Sized), cmd: Command) {
    let r = k.exec(&cmd);
    assert_eq!(r, Ok(Reply::Done), "{cmd:?}");
}

fn make_layer(k: &mut (impl Backend + ?Sized), name: &str, content: FlatLayer) {
    ok(k, Command::Layer { name: name.into(), content });
}

fn mount(k: &mut (impl Backend + ?Sized), lowers: &[&str], upper: Option<&str>, options: Options) {
    ok(
        k,
        Command::Mount {
            lowers: lowers.iter().map(|s| s.to_string()).collect(),
            upper: upper.map(str::to_owned),
            options,
        },
    );
}

fn dump_layer(k: &mut (impl Backend + ?Sized), name: &str) -> FlatLayer {
    match k.exec(&Command::DumpLayer { name: name.into() }) {
        Ok(Reply::Layer(l)) => l,
        other => panic!("dump of {name} answered {other:?}"),
    }
}

fn stat(k: &mut KernelBackend, path: &str) -> Stat {
    match op(k, Op::Stat { path: path.into() }) {
        Outcome::Stat(s) => s,
        other => panic!("stat {path} answered {other:?}"),
    }
}

fn read(path: &str) -> Op {
    Op::Read { path: path.into() }
}

fn data(d: &[u8]) -> Outcome {
    Outcome::Data(d.to_vec())
}

fn err(e: Errno) -> Outcome {
    Outcome::Err(e)
}

#[test]
fn read_upper_file_shadows_lower_file() {
    let Some(mut k) = kernel() else { return };
    make_layer(&mut k, "L0", layer(vec![("/f", file(b"lower", 0o644)), ("/g", file(b"only lower", 0o600))]));
    make_layer(&mut k, "U", layer(vec![("/f", file(b"upper", 0o640))]));
    mount(&mut k, &["L0"], Some("U"), Options::default());
    assert_eq!(op(&mut k, read("/f")), data(b"upper"));
    assert_eq!(op(&mut k, read("/g")), data(b"only lower"));
    assert_eq!(stat(&mut k, "/f").mode, 0o640);
    assert_eq!(
        op(&mut k, Op::Readdir { path: "/".into() }),
        Outcome::Entries(BTreeMap::from([("f".into(), FileType::File), ("g".into(), FileType::File),]))
    );
    ok(&mut k, Command::Unmount);
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn unlink_lower_file_leaves_whiteout_in_upper() {
    let Some(mut k) = kernel() else { return };
    make_layer(&mut k, "L0", layer(vec![("/d", dir(0o755)), ("/d/f", file(b"x", 0o644))]));
    make_layer(&mut k, "U", layer(vec![]));
    mount(&mut k, &["L0"], Some("U"), Options::default());
    assert_eq!(op(&mut k, Op::Unlink { path: "/d/f".into() }), Outcome::Ok);
    assert_eq!(op(&mut k, Op::Stat { path: "/d/f".into() }), err(Errno::ENOENT));
    assert_eq!(op(&mut k, Op::Readdir { path: "/d".into() }), Outcome::Entries(BTreeMap::new()));
    ok(&mut k, Command::Unmount);
    // The copied-up parent and the whiteout; the kernel's origin/impure/uuid xattrs are
    // normalised away.
    assert_eq!(dump_layer(&mut k, "U"), layer(vec![("/d", dir(0o755)), ("/d/f", whiteout())]));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn whiteouts_made_by_the_kernel_dump_as_separate_nodes() {
    let Some(mut k) = kernel() else { return };
    make_layer(&mut k, "L0", layer(vec![("/a", file(b"", 0o644)), ("/b", file(b"", 0o644))]));
    make_layer(&mut k, "U", layer(vec![]));
    mount(&mut k, &["L0"], Some("U"), Options::default());
    for p in ["/a", "/b"] {
        assert_eq!(op(&mut k, Op::Unlink { path: p.into() }), Outcome::Ok);
    }
    // Through the mount the whiteouts are invisible; raw, the kernel shares one inode.
    ok(&mut k, Command::Unmount);
    assert_eq!(dump_layer(&mut k, "U"), layer(vec![("/a", whiteout()), ("/b", whiteout())]));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn layer_hard_link_pair_dumps_as_node_and_link() {
    let Some(mut k) = kernel() else { return };
    let content = FlatLayer {
        root: dir(0o755),
        entries: vec![
            FlatEntry::Node { path: "/a".into(), node: file(b"shared", 0o644) },
            FlatEntry::Node { path: "/d".into(), node: dir(0o755) },
            FlatEntry::Link { path: "/d/b".into(), to: "/a".into() },
        ],
    };
    make_layer(&mut k, "L0", content.clone());
    make_layer(&mut k, "L1", layer(vec![]));
    assert_eq!(dump_layer(&mut k, "L0"), content);
    mount(&mut k, &["L0", "L1"], None, Options::default());
    let (a, b) = (stat(&mut k, "/a"), stat(&mut k, "/d/b"));
    assert_eq!(a.ino, b.ino);
    assert_eq!((a.nlink, b.nlink), (2, 2));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn layer_round_trips_every_kind_and_marker() {
    let Some(mut k) = kernel() else { return };
    let mut owned = file(b"setuid", 0o4755);
    owned.uid = 1000;
    owned.gid = 100;
    let mut sym = symlink("../target");
    sym.uid = 7;
    sym.xattrs.insert("trusted.mark".into(), b"s".to_vec());
    let content = FlatLayer {
        root: with_xattr(dir(0o711), "user.root", b"r"),
        entries: vec![
            FlatEntry::Node { path: "/blk".into(), node: device(FileType::Block, 8, 1, 0o600) },
            FlatEntry::Node { path: "/chr".into(), node: device(FileType::Char, 1, 3, 0o666) },
            FlatEntry::Node {
                path: "/d".into(),
                node: with_xattr(with_xattr(dir(0o2770), "trusted.overlay.opaque", b"y"), "user.note", b"hello"),
            },
            FlatEntry::Node { path: "/d/e".into(), node: dir(0o1777) },
            FlatEntry::Node { path: "/d/e/wo".into(), node: whiteout() },
            FlatEntry::Node {
                path: "/d/redir".into(),
                node: with_xattr(dir(0o755), "trusted.overlay.redirect", b"/x"),
            },
            FlatEntry::Node { path: "/empty".into(), node: file(b"", 0o000) },
            FlatEntry::Node { path: "/fifo".into(), node: node(FileType::Fifo, 0o640) },
            FlatEntry::Node { path: "/owned".into(), node: owned },
            FlatEntry::Node { path: "/sym".into(), node: sym },
            FlatEntry::Node { path: "/xw".into(), node: with_xattr(file(b"", 0o644), "trusted.overlay.whiteout", b"") },
        ],
    };
    make_layer(&mut k, "L", content.clone());
    assert_eq!(dump_layer(&mut k, "L"), content);
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn offline_edits_match_the_model() {
    let Some(mut k) = kernel() else { return };
    let mut m = ModelBackend::new();
    let start = layer(vec![("/d", dir(0o700)), ("/d/f", file(b"one", 0o644)), ("/s", symlink("/d"))]);
    let edits = vec![
        Edit::Put { path: "/a/b/c".into(), node: file(b"deep", 0o600) },
        Edit::Link { path: "/d/g".into(), to: "/d/f".into() },
        Edit::Put { path: "/s/x".into(), node: file(b"symlink parent replaced", 0o644) },
        Edit::Remove { path: "/d/f".into() },
        Edit::Remove { path: "/missing/too".into() },
        Edit::Put { path: "/a".into(), node: whiteout() },
    ];
    for b in [&mut k as &mut dyn Backend, &mut m] {
        make_layer(b, "L", start.clone());
        for e in &edits {
            ok(b, Command::Edit { layer: "L".into(), edit: e.clone() });
        }
    }
    let kernel_view = dump_layer(&mut k, "L");
    assert_eq!(kernel_view, dump_layer(&mut m, "L"));
    assert!(kernel_view
        .entries
        .contains(&FlatEntry::Node { path: "/s/x".into(), node: file(b"symlink parent replaced", 0o644) }));
    // A link to a missing name is a usage error, as in the model.
    let bad = Command::Edit { layer: "L".into(), edit: Edit::Link { path: "/z".into(), to: "/nowhere".into() } };
    assert!(matches!(k.exec(&bad), Err(BackendError::Usage(_))));
    assert!(matches!(m.exec(&bad), Err(BackendError::Usage(_))));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn symlinks_and_dotdot_stay_inside_the_merged_root() {
    let Some(mut k) = kernel() else { return };
    make_layer(
        &mut k,
        "L0",
        layer(vec![("/abs", symlink("/etc/passwd")), ("/up", symlink("../../../../..")), ("/sh", symlink("/bin/sh"))]),
    );
    make_layer(&mut k, "L1", layer(vec![("/etc", dir(0o755)), ("/etc/passwd", file(b"inside", 0o644))]));
    mount(&mut k, &["L0", "L1"], None, Options::default());
    // The absolute link reaches the overlay's /etc/passwd, not the host's.
    assert_eq!(op(&mut k, read("/abs")), data(b"inside"));
    assert_eq!(op(&mut k, read("/up/etc/passwd")), data(b"inside"));
    assert_eq!(op(&mut k, read("/../../etc/passwd")), data(b"inside"));
    // The host has /bin/sh; the overlay does not.
    assert_eq!(op(&mut k, Op::Stat { path: "/sh".into() }), err(Errno::ENOENT));
    assert_eq!(op(&mut k, Op::Stat { path: "/proc/self".into() }), err(Errno::ENOENT));
    let root = op(&mut k, Op::Readdir { path: "/".into() });
    assert_eq!(op(&mut k, Op::Readdir { path: "/..".into() }), root);
    assert_eq!(op(&mut k, Op::Readdir { path: "/up".into() }), root);
    assert_eq!(stat(&mut k, "/up").ino, stat(&mut k, "/").ino);
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn mount_with_501_lowers_is_refused_and_500_is_not() {
    let Some(mut k) = kernel() else { return };
    let names: Vec<String> = (0..501).map(|i| format!("L{i}")).collect();
    for n in &names {
        make_layer(&mut k, n, layer(vec![]));
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    mount(&mut k, &refs[..500], None, Options::default());
    ok(&mut k, Command::Unmount);
    let cmd = Command::Mount { lowers: names.clone(), upper: None, options: Options::default() };
    assert_eq!(k.exec(&cmd), Ok(Reply::MountRefused(Errno::EINVAL)));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn mount_errors_are_the_kernels() {
    let Some(mut k) = kernel() else { return };
    make_layer(&mut k, "L0", layer(vec![]));
    make_layer(&mut k, "U", layer(vec![]));
    let refused = |k: &mut KernelBackend, lowers: &[&str], upper: Option<&str>| {
        k.exec(&Command::Mount {
            lowers: lowers.iter().map(|s| s.to_string()).collect(),
            upper: upper.map(str::to_owned),
            options: Options::default(),
        })
    };
    // One lower and no upper.
    assert_eq!(refused(&mut k, &["L0"], None), Ok(Reply::MountRefused(Errno::EINVAL)));
    // The same layer twice, and a lower that is the upper: overlap is ELOOP.
    assert_eq!(refused(&mut k, &["L0", "L0"], None), Ok(Reply::MountRefused(Errno::ELOOP)));
    assert_eq!(refused(&mut k, &["U"], Some("U")), Ok(Reply::MountRefused(Errno::ELOOP)));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn killed_worker_fails_the_command_and_every_later_one() {
    let Some(mut k) = kernel() else { return };
    make_layer(&mut k, "L0", layer(vec![("/f", file(b"x", 0o644))]));
    make_layer(&mut k, "L1", layer(vec![]));
    mount(&mut k, &["L0", "L1"], None, Options::default());
    let pid = rustix::process::Pid::from_raw(k.worker_pid() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
    let r = k.exec(&Command::Op(read("/f")));
    match &r {
        Err(BackendError::Failed(msg)) => {
            assert!(msg.contains("Read"), "names the command: {msg}");
            assert!(msg.contains("died"), "{msg}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(!k.is_alive());
    match k.exec(&Command::DumpMerged) {
        Err(BackendError::Failed(msg)) => assert!(msg.contains("gone"), "{msg}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    // Reaped: no such process any more.
    assert_eq!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn hung_worker_times_out_and_is_killed() {
    let Some(mut k) = kernel() else { return };
    make_layer(&mut k, "L", layer(vec![]));
    let pid = rustix::process::Pid::from_raw(k.worker_pid() as i32).expect("a pid");
    k.set_timeout(Duration::from_millis(300));
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).expect("stop");
    match k.exec(&Command::DumpLayer { name: "L".into() }) {
        Err(BackendError::Failed(msg)) => {
            assert!(msg.contains("dump of layer \"L\""), "names the command: {msg}");
            assert!(msg.contains("no reply within"), "{msg}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(!k.is_alive());
    assert_eq!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn commands_out_of_place_are_usage_errors() {
    let Some(mut k) = kernel() else { return };
    let usage = |r: Result<Reply, BackendError>| matches!(r, Err(BackendError::Usage(_)));
    assert!(usage(k.exec(&Command::Op(read("/f")))));
    assert!(usage(k.exec(&Command::DumpMerged)));
    assert!(usage(k.exec(&Command::Unmount)));
    assert!(usage(k.exec(&Command::DumpLayer { name: "L".into() })));
    assert!(usage(k.exec(&Command::Mount {
        lowers: vec!["nope".into(), "nada".into()],
        upper: None,
        options: Options::default(),
    })));
    make_layer(&mut k, "L0", layer(vec![]));
    make_layer(&mut k, "L1", layer(vec![]));
    mount(&mut k, &["L0", "L1"], None, Options::default());
    assert!(usage(k.exec(&Command::Edit { layer: "L0".into(), edit: Edit::Remove { path: "/f".into() } })));
    assert!(usage(k.exec(&Command::Layer { name: "L2".into(), content: layer(vec![]) })));
    assert!(usage(k.exec(&Command::DumpLayer { name: "L0".into() })));
    assert!(usage(k.exec(&Command::Mount {
        lowers: vec!["L0".into(), "L1".into()],
        upper: None,
        options: Options::default(),
    })));
    // None of that hurt the worker.
    assert!(k.is_alive());
    assert_eq!(op(&mut k, Op::Readdir { path: "/".into() }), Outcome::Entries(BTreeMap::new()));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn merged_dump_hides_whiteouts_and_overlay_xattrs() {
    let Some(mut k) = kernel() else { return };
    make_layer(
        &mut k,
        "L0",
        layer(vec![("/d", dir(0o755)), ("/d/gone", file(b"hidden", 0o644)), ("/d/low", file(b"low", 0o644))]),
    );
    make_layer(
        &mut k,
        "U",
        layer(vec![
            ("/d", with_xattr(with_xattr(dir(0o750), "trusted.overlay.impure", b"y"), "user.visible", b"v")),
            ("/d/gone", whiteout()),
            ("/d/up", file(b"up", 0o600)),
        ]),
    );
    mount(&mut k, &["L0"], Some("U"), Options::default());
    let tree = match k.exec(&Command::DumpMerged) {
        Ok(Reply::Merged(t)) => t,
        other => panic!("{other:?}"),
    };
    let paths: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(paths, ["/", "/d", "/d/low", "/d/up"]);
    let d = tree["/d"].stat.as_ref().expect("stat /d");
    // A merged directory: the upper's mode, nlink 1.
    assert_eq!((d.kind, d.mode, d.nlink), (FileType::Dir, 0o750, 1));
    assert_eq!(tree["/d"].xattrs, BTreeMap::from([("user.visible".to_owned(), b"v".to_vec())]));
    assert_eq!(tree["/d/low"].data.as_deref(), Some(&b"low"[..]));
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn devices_fifos_and_remounts() {
    let Some(mut k) = kernel() else { return };
    make_layer(
        &mut k,
        "L0",
        layer(vec![
            ("/null", device(FileType::Char, 1, 3, 0o666)),
            ("/fifo", node(FileType::Fifo, 0o666)),
            ("/ld", dir(0o755)),
        ]),
    );
    make_layer(&mut k, "U", layer(vec![]));
    mount(&mut k, &["L0"], Some("U"), Options::default());
    // The mounts are nodev: a device does not open.
    assert_eq!(op(&mut k, read("/null")), err(Errno::EACCES));
    // A FIFO never blocks the worker: empty for a reader, ENXIO for a writer.
    assert_eq!(op(&mut k, read("/fifo")), data(b""));
    let write = |path: &str, d: &[u8]| Op::Write { path: path.into(), at: WriteAt::Append, data: d.to_vec() };
    assert_eq!(op(&mut k, write("/fifo", b"x")), err(Errno::ENXIO));
    // Renaming a lower directory without redirects is EXDEV.
    let rename = Op::Rename { from: "/ld".into(), to: "/ld2".into(), flags: RenameFlags::default() };
    assert_eq!(op(&mut k, rename.clone()), err(Errno::EXDEV));
    assert_eq!(op(&mut k, write("/new", b"kept")), Outcome::Ok);
    ok(&mut k, Command::Unmount);
    // A remount of the same upper (and workdir) sees the write; redirect_dir=on allows the
    // directory rename.
    let on = Options { redirect_dir: RedirectDir::On, ..Options::default() };
    mount(&mut k, &["L0"], Some("U"), on);
    assert_eq!(op(&mut k, read("/new")), data(b"kept"));
    assert_eq!(op(&mut k, rename), Outcome::Ok);
    ok(&mut k, Command::Unmount);
    let upper = dump_layer(&mut k, "U");
    assert!(upper.entries.contains(&FlatEntry::Node { path: "/ld".into(), node: whiteout() }));
    assert!(upper.entries.iter().any(|e| matches!(e,
        FlatEntry::Node { path, node }
            if path == "/ld2" && node.xattrs.get("trusted.overlay.redirect").map(Vec::as_slice) == Some(b"ld"))));
    // Read-only: writes are EROFS.
    let ro = Options { read_only: true, ..Options::default() };
    mount(&mut k, &["L0"], Some("U"), ro);
    assert_eq!(op(&mut k, write("/new", b"no")), err(Errno::EROFS));
    drop(k);
    assert_no_leaked_mounts();
}

/// A node with 300 `user.*` xattrs of 250-byte names: more than `listxattr` can list.
fn many_xattrs(mut n: FlatNode) -> FlatNode {
    for i in 0..300 {
        n.xattrs.insert(format!("user.{i:03}{}", "a".repeat(242)), b"v".to_vec());
    }
    n
}

/// Layers the kernel cannot hold are refused by both backends, with the errno tmpfs gives,
/// whether as a whole layer or as an offline edit (`ovlsim::layer::check::check_node`).
#[test]
fn both_backends_refuse_layers_the_kernel_cannot_hold_with_its_errno() {
    let Some(mut k) = kernel() else { return };
    let mut m = ModelBackend::new();
    let long = "n".repeat(300);
    let cases: Vec<(String, FlatNode, Errno)> = vec![
        (format!("/{long}"), file(b"x", 0o644), Errno::ENAMETOOLONG),
        (format!("/d/{long}/f"), file(b"x", 0o644), Errno::ENAMETOOLONG),
        ("/s".into(), symlink(""), Errno::ENOENT),
        ("/s".into(), symlink(&"t".repeat(4096)), Errno::ENAMETOOLONG),
        ("/f".into(), with_xattr(file(b"x", 0o644), &format!("user.{}", "a".repeat(251)), b"v"), Errno::ERANGE),
        ("/f".into(), with_xattr(file(b"x", 0o644), "user.a", &[b'v'; 65537]), Errno::E2BIG),
        ("/f".into(), with_xattr(file(b"x", 0o644), "security.capability", b"x"), Errno::EINVAL),
        ("/d".into(), with_xattr(dir(0o755), "security.capability", &[0; 20]), Errno::EINVAL),
        ("/f".into(), with_xattr(file(b"x", 0o644), "system.posix_acl_access", b"x"), Errno::EINVAL),
        ("/f".into(), with_xattr(file(b"x", 0o644), "foo.bar", b"v"), Errno::EOPNOTSUPP),
        ("/f".into(), with_xattr(file(b"x", 0o644), "user.", b"v"), Errno::EINVAL),
        ("/p".into(), with_xattr(node(FileType::Fifo, 0o644), "user.a", b"v"), Errno::EPERM),
        ("/f".into(), many_xattrs(file(b"x", 0o644)), Errno::E2BIG),
    ];
    make_layer(&mut k, "E", layer(vec![("/g", file(b"good", 0o644))]));
    make_layer(&mut m, "E", layer(vec![("/g", file(b"good", 0o644))]));
    for (i, (path, bad, errno)) in cases.into_iter().enumerate() {
        let whole = Command::Layer { name: format!("L{i}"), content: layer(vec![(&path, bad.clone())]) };
        let edit = Command::Edit { layer: "E".into(), edit: Edit::Put { path: path.clone(), node: bad } };
        for cmd in [whole, edit] {
            for b in [&mut k as &mut dyn Backend, &mut m] {
                match b.exec(&cmd) {
                    Err(BackendError::Refused(e, msg)) => assert_eq!(e, errno, "{} on {path}: {msg}", b.name()),
                    other => panic!("{} accepted {path} ({errno}): {other:?}", b.name()),
                }
            }
        }
    }
    // What a refused edit leaves differs: the model changes nothing, the kernel keeps the
    // parents it made (`Edit::apply_to`). The good file is in both.
    for b in [&mut k as &mut dyn Backend, &mut m] {
        let view = dump_layer(b, "E");
        assert!(view.entries.contains(&FlatEntry::Node { path: "/g".into(), node: file(b"good", 0o644) }));
    }
    drop(k);
    assert_no_leaked_mounts();
}

/// The skip notice reaches a plain `cargo test`'s output: the harness captures `eprintln!`,
/// so the gate writes to stderr directly. This test runs itself again in a child test
/// process with a worker that does not exist, with the harness's default capture.
#[test]
fn a_skip_is_shown_by_a_plain_cargo_test() {
    const CHILD: &str = "OVLSIM_TEST_GATE_CHILD";
    if std::env::var_os(CHILD).is_some() {
        assert!(!common::kernel_runs("the gate's child"));
        return;
    }
    let child = |require: Option<&str>| {
        let mut p = std::process::Command::new(std::env::current_exe().unwrap());
        p.args(["a_skip_is_shown_by_a_plain_cargo_test", "--exact", "--test-threads=1"])
            .env(CHILD, "1")
            .env("OVLSIM_KERNEL_WORKER", "/nonexistent/ovlsim")
            .env_remove("OVLSIM_REQUIRE_KERNEL")
            .env_remove("RUST_TEST_NOCAPTURE");
        if let Some(v) = require {
            p.env("OVLSIM_REQUIRE_KERNEL", v);
        }
        let o = p.output().unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = child(None);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stderr.contains("SKIPPED: the gate's child: the kernel tier needs root and overlayfs:"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // Under OVLSIM_REQUIRE_KERNEL=1 the same gate fails the test.
    let (ok, stdout, stderr) = child(Some("1"));
    assert!(!ok, "{stdout}{stderr}");
    assert!(stdout.contains("OVLSIM_REQUIRE_KERNEL=1 but the kernel tier cannot run"), "{stdout}{stderr}");
}

/// Files past the model's old 64 MiB limit and around the 64 KiB read threshold: a 70 MB
/// write, a write at 10^12 into a sparse lower's copy-up, and files of 64 KiB and one byte
/// more. Model and kernel give the same outcomes (a read over 64 KiB is a digest) and the
/// same upper layer, read back with SEEK_DATA/SEEK_HOLE.
#[test]
fn large_and_sparse_files_agree_with_the_model() {
    use ovlsim::layer::{FileData, READ_INLINE_MAX};
    let Some(mut k) = kernel() else { return };
    let mut m = ModelBackend::new();
    let mut big = FileData::hole(1_000_000_000_000);
    big.write(500_000_000_000, b"middle");
    let lower = layer(vec![
        ("/big", FlatNode { data: Some(big), ..node(FileType::File, 0o644) }),
        ("/edge", FlatNode { data: Some(vec![7u8; READ_INLINE_MAX as usize].into()), ..node(FileType::File, 0o644) }),
    ]);
    // 70 MB that are not all one byte, so that a misplaced piece would show.
    let seventy: Vec<u8> = (0..70_000_000u32).map(|i| (i % 251) as u8 + 1).collect();
    let ops = vec![
        read("/big"),
        read("/edge"),
        Op::Write { path: "/edge".into(), at: WriteAt::Append, data: b"+".to_vec() },
        read("/edge"),
        Op::Write { path: "/new".into(), at: WriteAt::Offset(0), data: seventy },
        Op::Stat { path: "/new".into() },
        read("/new"),
        Op::Write { path: "/big".into(), at: WriteAt::Offset(1_000_000_000_000), data: b"end".to_vec() },
        read("/big"),
        Op::Truncate { path: "/new".into(), len: 1 << 40 },
        read("/new"),
    ];
    let mut outcomes = Vec::new();
    for b in [&mut k as &mut dyn Backend, &mut m] {
        make_layer(b, "L0", lower.clone());
        make_layer(b, "U", layer(vec![]));
        mount(b, &["L0"], Some("U"), Options::default());
        let mut seen = Vec::new();
        for o in &ops {
            match b.exec(&Command::Op(o.clone())) {
                Ok(Reply::Outcome(out)) => seen.push(out),
                other => panic!("{} answered {other:?} to {}", b.name(), o.name()),
            }
        }
        ok(b, Command::Unmount);
        outcomes.push((seen, dump_layer(b, "U")));
    }
    let (kernel_seen, kernel_upper) = &outcomes[0];
    let (model_seen, model_upper) = &outcomes[1];
    for (i, (kb, mb)) in kernel_seen.iter().zip(model_seen).enumerate() {
        // Inode numbers are each backend's own; the rest must agree.
        let same = match (kb, mb) {
            (Outcome::Stat(a), Outcome::Stat(b)) => Stat { ino: 0, ..a.clone() } == Stat { ino: 0, ..b.clone() },
            (a, b) => a == b,
        };
        // Short: an outcome may hold 64 KiB.
        let short = |o: &Outcome| match o {
            Outcome::Data(d) => format!("Data({} bytes, {})", d.len(), FileData::from_bytes(d).digest()),
            other => format!("{other:?}"),
        };
        assert!(same, "{}: kernel {}, model {}", ops[i].name(), short(kb), short(mb));
    }
    assert!(kernel_upper == model_upper, "the upper layers differ");
    // The kernel's own answers, on the points that matter.
    assert!(matches!(kernel_seen[0], Outcome::Digest(d) if d.size == 1_000_000_000_000));
    assert_eq!(kernel_seen[1], Outcome::Data(vec![7u8; READ_INLINE_MAX as usize]));
    assert!(matches!(kernel_seen[3], Outcome::Digest(d) if d.size == READ_INLINE_MAX + 1));
    assert_eq!(kernel_seen[4], Outcome::Ok);
    assert!(matches!(&kernel_seen[5], Outcome::Stat(s) if s.size == 70_000_000));
    assert!(matches!(kernel_seen[8], Outcome::Digest(d) if d.size == 1_000_000_000_003));
    // Growing with a hole keeps the hash (zeros add nothing) and changes the length.
    match (&kernel_seen[6], &kernel_seen[10]) {
        (Outcome::Digest(a), Outcome::Digest(b)) => assert!(a.hash == b.hash && b.size == 1 << 40, "{a:?} {b:?}"),
        other => panic!("reads of /new answered {other:?}"),
    }
    drop(k);
    assert_no_leaked_mounts();
}

#[test]
fn an_unmount_with_a_handle_open_is_ebusy_and_keeps_both_on_the_kernel_and_the_model() {
    let Some(mut k) = kernel() else { return };
    let mut m = ModelBackend::new();
    let fd = |op: ovlsim::ops::FdOp| Command::Op(Op::Fd(op));
    let open = fd(ovlsim::ops::FdOp::Open { fd: "f1".into(), path: "/f".into(), flags: Default::default(), mode: 0 });
    let pread = fd(ovlsim::ops::FdOp::Pread { fd: "f1".into(), offset: 0, len: 8 });
    let close = fd(ovlsim::ops::FdOp::Close { fd: "f1".into() });
    for b in [&mut k as &mut dyn Backend, &mut m] {
        make_layer(b, "L0", layer(vec![("/f", file(b"data", 0o644))]));
        make_layer(b, "U", layer(vec![]));
        mount(b, &["L0"], Some("U"), Options::default());
        assert_eq!(b.exec(&open), Ok(Reply::Outcome(Outcome::Ok)), "{}", b.name());
        assert_eq!(b.try_unmount(), Ok(Reply::MountRefused(Errno::EBUSY)), "{}", b.name());
        // Still mounted, the handle still reads.
        assert_eq!(b.exec(&pread), Ok(Reply::Outcome(data(b"data"))), "{}", b.name());
        assert_eq!(b.exec(&close), Ok(Reply::Outcome(Outcome::Ok)), "{}", b.name());
        assert_eq!(b.try_unmount(), Ok(Reply::Done), "{}", b.name());
        assert!(matches!(b.exec(&Command::DumpLayer { name: "U".into() }), Ok(Reply::Layer(_))), "{}", b.name());
        // The plain unmount closes the handles first.
        mount(b, &["L0"], Some("U"), Options::default());
        assert_eq!(b.exec(&open), Ok(Reply::Outcome(Outcome::Ok)), "{}", b.name());
        ok(b, Command::Unmount);
    }
    drop(k);
    assert_no_leaked_mounts();
}
