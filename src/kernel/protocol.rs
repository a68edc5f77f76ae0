//! The worker protocol's version and its handshake (see `docs/worker-protocol.md`).
//!
//! A worker is any program that speaks the protocol: the `ovlsim` binary's own
//! `kernel-worker`, or a stand-in written in another language. Its first line on stdout is a
//! [`Hello`], `{"ovlsim-worker":2,"worker":"..."}`, naming the protocol and its version;
//! the backend refuses to go on with a worker that says anything else (or an `Err` reply,
//! which is how a worker reports that it could not set up). After the hello come the
//! commands, one JSON line each way, as [`crate::backend::Command`] and
//! `Result<Reply, BackendError>` serialise.

use crate::backend::{BackendError, Reply};
use serde::{Deserialize, Serialize};

/// The protocol's name: the key of the hello line.
pub const PROTOCOL_NAME: &str = "ovlsim-worker";

/// The protocol version this `ovlsim` speaks. It changes when a command or a reply changes
/// shape or meaning; a backend talks only to a worker of the same version.
///
/// Version 2: `OpAs` (an operation as another caller, also through a handle) and the
/// request `TryUnmount` (an unmount that keeps the handles open: EBUSY).
pub const PROTOCOL_VERSION: u32 = 2;

/// One request line to a worker: a [`crate::backend::Command`], or one of the requests
/// that are not commands of a backend ([`Extra`]). It is written as its content alone (a
/// command as a command, an extra request as itself), and read with [`Request::read`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Request {
    /// A command.
    Command(crate::backend::Command),
    /// Another request.
    Extra(Extra),
}

impl Request {
    /// Reads a request line: a [`crate::backend::Command`] if it is one, else an [`Extra`];
    /// the error is the one of reading it as a command, which says what is wrong with most
    /// lines.
    ///
    /// Not serde's `untagged` deserialisation: that first copies the whole line into serde's
    /// generic `Content` tree, about 32 bytes for each number of a byte array, so that a
    /// 70 MB write took a 2.2 GB tree (grown by doubling, each step a fresh allocation
    /// copied and faulted in) before the command was built; under mimalloc, which does not
    /// grow a huge block in place as glibc's `mremap` does, the worker spent more than 10 s
    /// of system time zeroing pages (BENCHMARKS.md, "The binary's heap"). Each try here
    /// reads the line directly into its type.
    pub fn read(line: &str) -> Result<Request, serde_json::Error> {
        match serde_json::from_str::<crate::backend::Command>(line) {
            Ok(c) => Ok(Request::Command(c)),
            Err(e) => serde_json::from_str::<Extra>(line).map(Request::Extra).map_err(|_| e),
        }
    }
}

/// The requests that are not [`crate::backend::Command`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Extra {
    /// [`crate::backend::Backend::try_unmount`]: `umount(2)` with the open handles kept
    /// open; `MountRefused` with the errno (EBUSY while a handle is open) leaves the
    /// overlay mounted and the handles usable.
    TryUnmount,
}

/// The worker's first line: the protocol version it speaks, and what it is (free text, for
/// error messages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The protocol version ([`PROTOCOL_VERSION`]).
    #[serde(rename = "ovlsim-worker")]
    pub version: u32,
    /// What the worker is, e.g. `ovlsim 0.1.0 kernel-worker`.
    pub worker: String,
}

impl Hello {
    /// The hello of a worker of this protocol version.
    pub fn new(worker: &str) -> Hello {
        Hello { version: PROTOCOL_VERSION, worker: worker.to_owned() }
    }
}

/// How a worker's first line reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstLine {
    /// A hello of this protocol version.
    Hello(Hello),
    /// A worker that could not set up, and why.
    SetupFailed(BackendError),
}

/// Reads a worker's first line: a [`Hello`] of [`PROTOCOL_VERSION`], or the `Err` reply of
/// a worker that could not set up. Anything else (another version, the unversioned
/// `{"Ok":"Done"}` of ovlsim before the protocol had a version, a line that is not JSON) is
/// an error that says what was expected and what came.
pub fn read_first_line(line: &str) -> Result<FirstLine, String> {
    let shown: String = line.chars().take(200).collect();
    if let Ok(hello) = serde_json::from_str::<Hello>(line) {
        if hello.version != PROTOCOL_VERSION {
            return Err(format!(
                "the worker ({}) speaks {PROTOCOL_NAME} protocol version {}; this ovlsim speaks version \
                 {PROTOCOL_VERSION} (see docs/worker-protocol.md)",
                hello.worker, hello.version
            ));
        }
        return Ok(FirstLine::Hello(hello));
    }
    match serde_json::from_str::<Result<Reply, BackendError>>(line) {
        Ok(Err(e)) => Ok(FirstLine::SetupFailed(e)),
        Ok(Ok(_)) => Err(format!(
            "the worker's first line is {shown:?}, a reply of the unversioned protocol (ovlsim before \
             {PROTOCOL_NAME} version 1); expected a hello such as {}",
            expected()
        )),
        Err(_) => Err(format!(
            "the worker's first line is {shown:?}, not a hello of the {PROTOCOL_NAME} protocol (expected \
             {}; see docs/worker-protocol.md)",
            expected()
        )),
    }
}

/// The hello this version expects, as JSON.
fn expected() -> String {
    serde_json::to_string(&Hello::new("...")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_of_this_version_is_read() {
        let line = r#"{"ovlsim-worker":2,"worker":"a test"}"#;
        assert_eq!(read_first_line(line), Ok(FirstLine::Hello(Hello::new("a test"))));
        assert_eq!(serde_json::to_string(&Hello::new("a test")).unwrap(), line);
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let e = read_first_line(r#"{"ovlsim-worker":3,"worker":"future"}"#).unwrap_err();
        assert!(e.contains("version 3") && e.contains("speaks version 2"), "{e}");
        let e = read_first_line(r#"{"ovlsim-worker":1,"worker":"before OpAs"}"#).unwrap_err();
        assert!(e.contains("version 1") && e.contains("speaks version 2"), "{e}");
    }

    #[test]
    fn the_unversioned_first_line_is_refused() {
        let e = read_first_line(r#"{"Ok":"Done"}"#).unwrap_err();
        assert!(e.contains("unversioned"), "{e}");
        let e = read_first_line("hello").unwrap_err();
        assert!(e.contains("not a hello"), "{e}");
    }

    #[test]
    fn a_request_reads_as_a_command_else_as_an_extra_with_the_command_error() {
        use crate::backend::Command;
        assert_eq!(Request::read(r#""Unmount""#).unwrap(), Request::Command(Command::Unmount));
        assert_eq!(Request::read(r#""TryUnmount""#).unwrap(), Request::Extra(Extra::TryUnmount));
        let e = Request::read(r#"{"Op":{"Stat":{}}}"#).unwrap_err().to_string();
        assert!(e.contains("missing field `path`"), "{e}");
    }

    #[test]
    fn a_setup_failure_is_passed_on() {
        let r = read_first_line(r#"{"Err":{"Failed":"unshare: EPERM"}}"#);
        assert_eq!(r, Ok(FirstLine::SetupFailed(BackendError::Failed("unshare: EPERM".into()))));
    }
}

/// `docs/worker-protocol.md` against the real serde types: every JSON line of its examples
/// reads as its type and writes back the same, and every kind of command, operation,
/// reply, outcome and error has an example there, generated here.
#[cfg(test)]
mod doc {
    use super::*;
    use crate::backend::{Command, Edit, MergedEntry, MergedTree};
    use crate::errno::Errno;
    use crate::layer::{Digester, FileData, FileType, FlatEntry, FlatLayer, FlatNode};
    use crate::mount::{Options, RedirectDir};
    use crate::ops::{Access, MknodKind, Op, OpenFlags, Outcome, RenameFlags, Stat, WriteAt};
    use std::collections::{BTreeMap, BTreeSet};

    const DOC: &str = include_str!("../../docs/worker-protocol.md");

    /// The index of a command's kind; `COMMANDS` of them. A new variant does not compile
    /// here until it is given an index, and the coverage test fails until it has an example.
    fn command_kind(c: &Command) -> usize {
        match c {
            Command::Layer { .. } => 0,
            Command::Mount { .. } => 1,
            Command::Unmount => 2,
            Command::Op(_) => 3,
            Command::Edit { .. } => 4,
            Command::DumpLayer { .. } => 5,
            Command::DumpMerged => 6,
            Command::MountData { .. } => 7,
            Command::DropCaches => 8,
            Command::OpAs { .. } => 9,
        }
    }
    const COMMANDS: usize = 10;

    fn op_kind(o: &Op) -> usize {
        match o {
            Op::Stat { .. } => 0,
            Op::Lstat { .. } => 1,
            Op::Open { .. } => 2,
            Op::Read { .. } => 3,
            Op::Write { .. } => 4,
            Op::Truncate { .. } => 5,
            Op::Mkdir { .. } => 6,
            Op::Rmdir { .. } => 7,
            Op::Unlink { .. } => 8,
            Op::Rename { .. } => 9,
            Op::Link { .. } => 10,
            Op::Symlink { .. } => 11,
            Op::Readlink { .. } => 12,
            Op::Readdir { .. } => 13,
            Op::Chmod { .. } => 14,
            Op::Chown { .. } => 15,
            Op::Utimes { .. } => 16,
            Op::Setxattr { .. } => 17,
            Op::Getxattr { .. } => 18,
            Op::Listxattr { .. } => 19,
            Op::Removexattr { .. } => 20,
            Op::Mknod { .. } => 21,
            Op::Fd(_) => 22,
        }
    }
    const OPS: usize = 23;

    fn edit_kind(e: &Edit) -> usize {
        match e {
            Edit::Put { .. } => 0,
            Edit::Link { .. } => 1,
            Edit::Remove { .. } => 2,
        }
    }
    const EDITS: usize = 3;

    fn reply_kind(r: &Result<Reply, BackendError>) -> usize {
        match r {
            Ok(Reply::Done) => 0,
            Ok(Reply::MountRefused(_)) => 1,
            Ok(Reply::Outcome(_)) => 2,
            Ok(Reply::Layer(_)) => 3,
            Ok(Reply::Merged(_)) => 4,
            Err(BackendError::Usage(_)) => 5,
            Err(BackendError::NotModelled(_)) => 6,
            Err(BackendError::Failed(_)) => 7,
            Err(BackendError::Refused(..)) => 8,
            Err(BackendError::MountCommand { .. }) => 9,
            Err(BackendError::NotApplicable(_)) => 10,
            Ok(Reply::Index(_)) => 11,
            Ok(Reply::CallRefused { .. }) => 12,
        }
    }
    const REPLIES: usize = 13;

    fn outcome_kind(o: &Outcome) -> usize {
        match o {
            Outcome::Ok => 0,
            Outcome::Err(_) => 1,
            Outcome::Stat(_) => 2,
            Outcome::Data(_) => 3,
            Outcome::Digest(_) => 4,
            Outcome::Target(_) => 5,
            Outcome::Entries(_) => 6,
            Outcome::Xattr(_) => 7,
            Outcome::XattrNames(_) => 8,
        }
    }
    const OUTCOMES: usize = 9;

    fn node(kind: FileType, mode: u32) -> FlatNode {
        FlatNode { kind, mode, uid: 0, gid: 0, data: None, target: None, rdev: None, xattrs: BTreeMap::new() }
    }

    fn layer() -> FlatLayer {
        let mut d = node(FileType::Dir, 0o755);
        d.xattrs.insert("trusted.overlay.opaque".into(), b"y".to_vec());
        let mut f = node(FileType::File, 0o644);
        let mut data = FileData::hole(8192);
        data.write(0, b"hi");
        data.write(8190, b"!!");
        f.data = Some(data);
        let mut s = node(FileType::Symlink, 0o777);
        s.target = Some("d/f".into());
        let mut w = node(FileType::Char, 0);
        w.rdev = Some((0, 0));
        FlatLayer {
            root: node(FileType::Dir, 0o755),
            entries: vec![
                FlatEntry::Node { path: "/d".into(), node: d },
                FlatEntry::Node { path: "/d/f".into(), node: f },
                FlatEntry::Link { path: "/d/g".into(), to: "/d/f".into() },
                FlatEntry::Node { path: "/gone".into(), node: w },
                FlatEntry::Node { path: "/s".into(), node: s },
            ],
        }
    }

    fn stat(kind: FileType, mode: u32, size: u64, ino: u64) -> Stat {
        Stat { kind, mode, size, nlink: 1, uid: 0, gid: 0, rdev: (0, 0), ino }
    }

    fn commands() -> Vec<Command> {
        let p = |s: &str| s.to_owned();
        let ops = vec![
            Op::Stat { path: p("/d/f") },
            Op::Lstat { path: p("/s") },
            Op::Open {
                path: p("/d/new"),
                flags: OpenFlags { access: Access::WriteOnly, creat: true, excl: true, ..OpenFlags::default() },
                mode: 0o644,
            },
            Op::Read { path: p("/d/f") },
            Op::Write { path: p("/d/f"), at: WriteAt::Offset(2), data: b"ya".to_vec() },
            Op::Write { path: p("/log"), at: WriteAt::Append, data: b"x".to_vec() },
            Op::Truncate { path: p("/d/f"), len: 0 },
            Op::Mkdir { path: p("/e"), mode: 0o755 },
            Op::Rmdir { path: p("/e") },
            Op::Unlink { path: p("/d/g") },
            Op::Rename { from: p("/d"), to: p("/e"), flags: RenameFlags::default() },
            Op::Rename { from: p("/a"), to: p("/b"), flags: RenameFlags { exchange: true, ..RenameFlags::default() } },
            Op::Link { from: p("/d/f"), to: p("/h") },
            Op::Symlink { target: p("../d"), path: p("/t") },
            Op::Readlink { path: p("/s") },
            Op::Readdir { path: p("/") },
            Op::Chmod { path: p("/d/f"), mode: 0o600 },
            Op::Chown { path: p("/d/f"), uid: 1000, gid: u32::MAX },
            Op::Utimes { path: p("/d/f") },
            Op::Setxattr { path: p("/d/f"), name: p("user.k"), value: b"v".to_vec() },
            Op::Getxattr { path: p("/d/f"), name: p("user.k") },
            Op::Listxattr { path: p("/d/f") },
            Op::Removexattr { path: p("/d/f"), name: p("user.k") },
            Op::Mknod { path: p("/dev0"), kind: MknodKind::Char(1, 3), mode: 0o600 },
            Op::Mknod { path: p("/fifo"), kind: MknodKind::Fifo, mode: 0o644 },
            Op::Fd(crate::ops::FdOp::Pread { fd: p("f1"), offset: 0, len: 4 }),
        ];
        let mut cmds = vec![
            Command::Layer { name: p("L0"), content: layer() },
            Command::Layer {
                name: p("upper"),
                content: FlatLayer { root: node(FileType::Dir, 0o755), entries: Vec::new() },
            },
            Command::Mount { lowers: vec![p("L0")], upper: Some(p("upper")), options: Options::default() },
            Command::Mount {
                lowers: vec![p("L1"), p("L0")],
                upper: None,
                options: Options { redirect_dir: RedirectDir::Follow, read_only: true, ..Options::default() },
            },
        ];
        cmds.extend(ops.into_iter().map(Command::Op));
        cmds.extend([
            Command::MountData {
                data: p("lowerdir=L1:L0,upperdir=upper,workdir=work,redirect_dir=on"),
                fsconfig: None,
            },
            Command::DropCaches,
            Command::OpAs {
                cred: crate::cred::Cred { uid: 1000, gid: 1000, groups: vec![27], umask: 0o022 },
                op: Op::Mkdir { path: p("/d/e"), mode: 0o777 },
            },
            Command::DumpMerged,
            Command::Unmount,
            Command::DumpLayer { name: p("upper") },
            Command::Edit { layer: p("L0"), edit: Edit::Put { path: p("/d/x"), node: node(FileType::Fifo, 0o600) } },
            Command::Edit { layer: p("L0"), edit: Edit::Link { path: p("/y"), to: p("/d/f") } },
            Command::Edit { layer: p("L0"), edit: Edit::Remove { path: p("/d") } },
            Command::MountData {
                data: String::new(),
                fsconfig: Some(vec![
                    crate::params::FsParam { key: p("lowerdir+"), value: Some(p("L0")) },
                    crate::params::FsParam { key: p("ro"), value: None },
                ]),
            },
        ]);
        cmds
    }

    fn replies() -> Vec<Result<Reply, BackendError>> {
        let mut digest = Digester::new();
        digest.feed(0, b"hi");
        let mut tree = MergedTree::new();
        let entry = |stat: Result<Stat, Errno>| -> MergedEntry {
            serde_json::from_value(serde_json::json!({ "stat": stat })).expect("an entry")
        };
        tree.insert("/".into(), entry(Ok(stat(FileType::Dir, 0o755, 60, 1))));
        let mut f = entry(Ok(stat(FileType::File, 0o644, 2, 2)));
        f.data = Some(b"hi".to_vec());
        f.xattrs.insert("user.k".into(), b"v".to_vec());
        tree.insert("/f".into(), f);
        let mut s = entry(Ok(stat(FileType::Symlink, 0o777, 1, 3)));
        s.target = Some("f".into());
        tree.insert("/s".into(), s);
        let outcomes = vec![
            Outcome::Ok,
            Outcome::Err(Errno::ENOENT),
            Outcome::Stat(stat(FileType::File, 0o644, 2, 2)),
            Outcome::Data(b"hi".to_vec()),
            Outcome::Digest(digest.finish(1 << 20)),
            Outcome::Target("d/f".into()),
            Outcome::Entries(BTreeMap::from([("d".into(), FileType::Dir), ("s".into(), FileType::Symlink)])),
            Outcome::Xattr(b"v".to_vec()),
            Outcome::XattrNames(BTreeSet::from(["user.k".into()])),
        ];
        let mut replies = vec![Ok(Reply::Done), Ok(Reply::MountRefused(Errno::EINVAL))];
        replies.extend(outcomes.into_iter().map(|o| Ok(Reply::Outcome(o))));
        replies.extend([
            Ok(Reply::Layer(layer())),
            Ok(Reply::Merged(tree)),
            Err(BackendError::Usage("an operation needs a mount".into())),
            Err(BackendError::NotModelled("rename flags [\"exchange\"]".into())),
            Err(BackendError::Failed("umount /m: EBUSY".into())),
            Err(BackendError::Refused(Errno::EPERM, "/p: setxattr user.k on a FIFO".into())),
            Err(BackendError::MountCommand {
                command: "fuse-overlayfs -f -o lowerdir=/l/0 /m".into(),
                status: "exit status: 1".into(),
                stderr: "fuse: device not found".into(),
            }),
            Err(BackendError::NotApplicable("fuse-overlayfs: layer L0: an xattr whiteout".into())),
            Ok(Reply::Index(Some(BTreeMap::from([("L0:/d/h3".into(), "file".into())])))),
            Ok(Reply::CallRefused { call: 1, errno: Errno::EINVAL }),
        ]);
        replies
    }

    /// The JSON lines of the doc's code blocks whose info string is `json <tag>`.
    fn blocks(tag: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut inside = false;
        for line in DOC.lines() {
            if let Some(info) = line.strip_prefix("```") {
                inside = !inside && info.trim() == format!("json {tag}");
                continue;
            }
            if inside && !line.trim().is_empty() {
                out.push(line);
            }
        }
        out
    }

    fn same_json<T: Serialize + for<'de> Deserialize<'de>>(line: &str) -> Result<(), String> {
        let v: T = serde_json::from_str(line).map_err(|e| format!("{line}: {e}"))?;
        let back = serde_json::to_string(&v).map_err(|e| e.to_string())?;
        if back == line {
            Ok(())
        } else {
            Err(format!("{line}\n  writes back as\n{back}"))
        }
    }

    /// [`same_json`] for a request, read with [`Request::read`].
    fn same_request(line: &str) -> Result<(), String> {
        let v = Request::read(line).map_err(|e| format!("{line}: {e}"))?;
        let back = serde_json::to_string(&v).map_err(|e| e.to_string())?;
        if back == line {
            Ok(())
        } else {
            Err(format!("{line}\n  writes back as\n{back}"))
        }
    }

    #[test]
    fn every_example_in_the_doc_is_what_serde_reads_and_writes() {
        let (hellos, commands, replies) = (blocks("hello"), blocks("command"), blocks("reply"));
        assert!(!hellos.is_empty() && !commands.is_empty() && !replies.is_empty());
        let mut wrong = Vec::new();
        wrong.extend(hellos.iter().filter_map(|l| same_json::<Hello>(l).err()));
        wrong.extend(commands.iter().filter_map(|l| same_json::<Command>(l).err()));
        wrong.extend(replies.iter().filter_map(|l| same_json::<Result<Reply, BackendError>>(l).err()));
        assert!(
            wrong.is_empty(),
            "docs/worker-protocol.md has examples serde does not agree with:\n{}",
            wrong.join("\n")
        );
        assert!(hellos.contains(&serde_json::to_string(&Hello::new("ovlsim 0.1.0 kernel-worker")).unwrap().as_str()));
    }

    /// The requests that are not commands: each has its example, which reads as an
    /// [`Extra`] (never as a command) and writes back the same.
    #[test]
    fn the_doc_has_an_example_of_every_request_that_is_not_a_command() {
        let requests = blocks("request");
        let wrong: Vec<String> = requests.iter().filter_map(|l| same_request(l).err()).collect();
        assert!(wrong.is_empty(), "docs/worker-protocol.md: {}", wrong.join("\n"));
        // The index of a request's kind: a new variant does not compile here until it has one.
        let kind = |e: &Extra| match e {
            Extra::TryUnmount => 0,
        };
        let kinds: Vec<usize> = requests
            .iter()
            .filter_map(|l| match Request::read(l) {
                Ok(Request::Extra(e)) => Some(kind(&e)),
                _ => None,
            })
            .collect();
        assert!((0..1).all(|k| kinds.contains(&k)), "a request that is not a command has no example");
        assert_eq!(kinds.len(), requests.len(), "a `json request` example reads as a command");
        // A command still reads as a command, and writes as before the requests had a wrapper.
        let line = serde_json::to_string(&Request::Command(Command::Unmount)).unwrap();
        assert_eq!(line, "\"Unmount\"");
        assert_eq!(Request::read(&line).unwrap(), Request::Command(Command::Unmount));
    }

    #[test]
    fn the_doc_has_an_example_of_every_command_op_edit_reply_and_outcome() {
        let cmds = commands();
        let reps = replies();
        let covered = |n: usize, kinds: Vec<usize>| (0..n).all(|k| kinds.contains(&k));
        assert!(covered(COMMANDS, cmds.iter().map(command_kind).collect()), "a command kind has no example");
        let ops = cmds.iter().filter_map(|c| if let Command::Op(o) = c { Some(op_kind(o)) } else { None });
        assert!(covered(OPS, ops.collect()), "an operation has no example");
        let edits =
            cmds.iter().filter_map(|c| if let Command::Edit { edit, .. } = c { Some(edit_kind(edit)) } else { None });
        assert!(covered(EDITS, edits.collect()), "an edit has no example");
        assert!(covered(REPLIES, reps.iter().map(reply_kind).collect()), "a reply has no example");
        let outcomes =
            reps.iter().filter_map(|r| if let Ok(Reply::Outcome(o)) = r { Some(outcome_kind(o)) } else { None });
        assert!(covered(OUTCOMES, outcomes.collect()), "an outcome has no example");
        // Each generated example is in the doc, verbatim.
        let (in_cmds, in_reps) = (blocks("command"), blocks("reply"));
        let missing: Vec<String> = cmds
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .filter(|l| !in_cmds.contains(&l.as_str()))
            .chain(reps.iter().map(|r| serde_json::to_string(r).unwrap()).filter(|l| !in_reps.contains(&l.as_str())))
            .collect();
        assert!(missing.is_empty(), "docs/worker-protocol.md lacks these examples:\n{}", missing.join("\n"));
    }

    /// Prints the examples, to paste into the doc: `cargo test --lib print_examples -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn print_examples() {
        for c in commands() {
            println!("{}", serde_json::to_string(&c).unwrap());
        }
        println!();
        for r in replies() {
            println!("{}", serde_json::to_string(&r).unwrap());
        }
    }
}
