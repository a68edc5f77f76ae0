//! Scenario scripts: YAML files that pin one overlay rule each, replayed on a [`Backend`](crate::backend::Backend).
//!
//! A scenario names its layers, mounts them, runs steps (operations with their expected
//! results, remounts, offline edits, tree checks) and may end with the expected merged view
//! and upper layer. The format is documented with examples in `spec/README.md`; in short:
//!
//! ```
//! use ovlsim::backend::ModelBackend;
//! use ovlsim::scenario;
//!
//! let text = r#"
//! ## Unlinking a lower-only file leaves a whiteout in the upper layer.
//! ## Source: overlayfs.rst "whiteouts and opaque directories".
//! name: unlink-lower-file-whiteout
//! rules: [unlink of a lower-only file replaces the name with a whiteout in the upper]
//! layers:
//!   L0: {f: hello}
//!   upper: {}
//! mount: {lowers: [L0], upper: upper}
//! steps:
//!   - unlink: /f
//!     expect: ok
//!   - stat: /f
//!     expect: ENOENT
//! final:
//!   merged: {.: {nlink: 1}}
//!   upper:
//!     f: !whiteout
//! "#;
//! let s = scenario::parse(text, "unlink-lower-file-whiteout.yaml").unwrap();
//! let report = scenario::run(&s, &mut ModelBackend::new());
//! assert!(report.passed(), "{report}");
//! ```
//!
//! The entry points:
//! - [`load`] and [`parse`] read a scenario ([`Scenario`]) or report every problem in it,
//!   each with file, line, column and step ([`ScenarioError`]);
//! - [`run`] replays a scenario on a backend and checks every expectation ([`RunReport`]);
//!   [`run_both`] replays it on two backends and also reports where they diverge;
//! - [`record`] fills in the expectations and final trees from a backend, and
//!   [`Scenario::to_yaml`] writes the scenario back;
//! - [`show`] replays a scenario on the model and explains each step;
//! - [`Scenario::from_commands`] builds a scenario from backend commands (for the property
//!   tests to write a shrunk failure as a scenario).
//!
//! Reading: the plain block style of scenario files is read by `fast` into a `node::Node`
//! tree borrowed from the text; anything else, and every malformed document, by
//! `yaml_serde`, whose `Value` is converted to the same tree. Problem paths
//! (`cx::Path`) live on the stack and are written out only for a problem.
//!
//! Positions: nodes have no spans. The steps' positions come from one scan of a
//! block-style `steps:` list, checked against the parsed steps, and otherwise, as every
//! problem's, from a one-pass index of the document (`locate::PosIndex`); `locate` also
//! finds a single node by probing: the document is deserialised again with a seed that walks
//! to the node and fails there, and the error's location is the node's line and column. A
//! document that does not parse at all is scanned as text to find the step that holds the
//! error line.

mod build;
mod cx;
mod diff;
mod emit;
mod fast;
pub(crate) mod handle;
mod locate;
mod node;
mod parse;
mod record;
mod runner;
mod show;
mod tree;
pub(crate) mod write;

pub use locate::{locate, Pos, Seg, YamlPath};
pub use record::{record, RecordError};
#[cfg(all(feature = "proptest", target_os = "linux"))]
pub(crate) use runner::run_stopped;
pub use runner::{differences, run, run_both, Failure, RunReport};
pub(crate) use runner::{differences_stopped, failure_position};
pub use show::show;

/// `s` as a YAML scalar in the project's style: plain where that reads back as the same
/// string, quoted otherwise.
pub fn yaml_scalar(s: &str) -> String {
    emit::scalar(s)
}
pub use tree::{
    default_mode, tree_from_flat, tree_from_merged, tree_lines, tree_to_flat, walk, FlatTree, TreeContext, TreeKind,
    TreeNode, DEPTH_MAX, OPAQUE_XATTR, REDIRECT_XATTR, XWHITEOUT_XATTR,
};

use crate::backend::Edit;
use crate::errno::Errno;
use crate::layer::{FileType, FlatLayer};
use crate::mount::Options;
use crate::ops::Op;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// A scenario: layers, an initial mount, steps and the expected final trees.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The scenario's name, by convention the file name without `.yaml`
    /// (`op-subject-condition`).
    pub name: String,
    /// The rule or rules the scenario pins, in words.
    pub rules: Vec<String>,
    /// The layers by name, in the order written.
    pub layers: Vec<(String, FlatLayer)>,
    /// The mount made before the first step, if any.
    pub mount: Option<MountSpec>,
    /// The steps.
    pub steps: Vec<Step>,
    /// The expected trees at the end (`final:` in YAML).
    pub final_check: Option<Check>,
    /// Where the scenario was read from, if it was.
    pub source: Option<Source>,
    /// The umask of every operation step that gives none (`umask:` at the top level;
    /// `None`: 0).
    pub umask: Option<u32>,
}

/// The text a scenario was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file name as given.
    pub file: String,
    /// The whole text.
    pub text: String,
    /// The leading comment block (the rule comment), kept when the scenario is written back.
    pub header: String,
    /// The top-level keys in the order written.
    pub key_order: Vec<String>,
    /// The layers read from container images (`!tar FILE`, `!dir DIR`, `!oci {...}`), as
    /// written, so that the scenario is written back with them.
    pub image_layers: Vec<ImageLayerSource>,
}

/// A scenario layer read from a container image, as the scenario names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayerSource {
    /// The layer's name in the scenario.
    pub name: String,
    /// `tar`, `dir` or `oci`.
    pub tag: String,
    /// The file or directory, relative to the scenario file, as written.
    pub path: String,
    /// `!oci`: the image's ref name, if given.
    pub reference: Option<String>,
    /// `!oci`: which layer, 0 the top-most.
    pub layer: Option<u64>,
}

/// A mount: which layers, and the options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// The lower layers' names, top-most first.
    pub lowers: Vec<String>,
    /// The upper layer's name, if any.
    pub upper: Option<String>,
    /// The options.
    pub options: Options,
    /// The option string, when the mount gives one (`options: "lowerdir=L0,..."`): then
    /// `lowers` and `upper` are the names it gives and `options` what it asks for (the
    /// defaults if it does not parse), and backends are given the string itself
    /// ([`crate::backend::Command::MountData`]).
    pub data: Option<String>,
    /// The `fsconfig(2)` calls, when the mount is made with the new mount API
    /// (`mount: {fsconfig: [[lowerdir+, L0], [ro]]}`): then `lowers` and `upper` are the
    /// names they give and `options` what they ask for, and backends are given the calls
    /// ([`crate::backend::Command::MountData`] with `fsconfig`).
    pub fsconfig: Option<Vec<crate::params::FsParam>>,
}

impl MountSpec {
    /// The mount an option string describes: its layer names (every lower, data-only
    /// ones too, [`crate::params::Params::names`]) and options.
    pub fn from_data(data: &str) -> MountSpec {
        let (lowers, upper, _) = crate::params::Params::names(data);
        let options = crate::params::Params::parse(data).map(|p| p.options).unwrap_or_default();
        MountSpec { lowers, upper, options, data: Some(data.to_owned()), fsconfig: None }
    }

    /// The mount `fsconfig(2)` calls describe: their layer names
    /// ([`crate::params::Params::fsconfig_names`]) and options.
    pub fn from_fsconfig(calls: &[crate::params::FsParam]) -> MountSpec {
        let (lowers, upper, _) = crate::params::Params::fsconfig_names(calls);
        let options = crate::params::Params::parse_fsconfig(calls, |_, _| true).map(|p| p.options).unwrap_or_default();
        MountSpec { lowers, upper, options, data: None, fsconfig: Some(calls.to_vec()) }
    }

    /// This mount's upper layer alone: no lower layers, default options, no option string
    /// or calls ([`MountChange::apply_upper`]).
    pub(crate) fn upper_only(&self) -> MountSpec {
        MountSpec::with_upper(self.upper.clone())
    }

    /// A mount with this upper layer alone (see [`MountSpec::upper_only`]).
    fn with_upper(upper: Option<String>) -> MountSpec {
        MountSpec { lowers: Vec::new(), upper, options: Options::default(), data: None, fsconfig: None }
    }
}

/// A mount step's changes to the previous mount: a field left out keeps its previous value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountChange {
    /// New lower layers.
    pub lowers: Option<Vec<String>>,
    /// A new upper layer (`Some(None)`: no upper).
    pub upper: Option<Option<String>>,
    /// New options (complete: fields not given take their defaults).
    pub options: Option<Options>,
    /// A new option string, which gives the layers and the options
    /// ([`MountSpec::from_data`]).
    pub data: Option<String>,
    /// New `fsconfig(2)` calls, which give the layers and the options
    /// ([`MountSpec::from_fsconfig`]).
    pub fsconfig: Option<Vec<crate::params::FsParam>>,
}

impl MountChange {
    /// The mount this change makes after `prev`, or why it cannot be made.
    pub fn apply(&self, prev: Option<&MountSpec>) -> Result<MountSpec, String> {
        self.apply_with(prev, true)
    }

    /// [`MountChange::apply`] for the upper layer only, after a `prev` made so too
    /// ([`MountSpec::upper_only`]): the result has the upper layer `apply` gives, no lower
    /// layers, default options and no option string or calls (an option string's lower
    /// layers and options are not read). Checking a scenario's order of steps needs no
    /// more of each mount.
    pub(crate) fn apply_upper(&self, prev: Option<&MountSpec>) -> Result<MountSpec, String> {
        self.apply_with(prev, false)
    }

    /// [`MountChange::apply`]; without `all`, [`MountChange::apply_upper`].
    fn apply_with(&self, prev: Option<&MountSpec>, all: bool) -> Result<MountSpec, String> {
        if let Some(d) = &self.data {
            return Ok(match all {
                true => MountSpec::from_data(d),
                false => MountSpec::with_upper(crate::params::Params::upper_name(d)),
            });
        }
        if let Some(calls) = &self.fsconfig {
            return Ok(match all {
                true => MountSpec::from_fsconfig(calls),
                false => MountSpec::with_upper(crate::params::Params::fsconfig_upper_name(calls)),
            });
        }
        if let (true, Some(p)) = (*self == MountChange::default(), prev) {
            return Ok(p.clone());
        }
        let lowers = match (&self.lowers, prev) {
            (Some(l), _) => l,
            (None, Some(p)) => &p.lowers,
            (None, None) => return Err("there is no earlier mount to repeat; give `lowers`".to_owned()),
        };
        let upper = match &self.upper {
            Some(u) => u.clone(),
            None => prev.and_then(|p| p.upper.clone()),
        };
        if !all {
            return Ok(MountSpec::with_upper(upper));
        }
        Ok(MountSpec {
            lowers: lowers.clone(),
            upper,
            options: match &self.options {
                Some(o) => *o,
                None => prev.map(|p| p.options).unwrap_or_default(),
            },
            data: None,
            fsconfig: None,
        })
    }
}

/// One step.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// What the step does.
    pub action: Action,
    /// The expected result, for operations and mounts (`None`: not recorded yet).
    pub expect: Option<Expect>,
    /// A free-text note, kept when the scenario is written back.
    pub note: Option<String>,
    /// Where the step is in its file.
    pub pos: Option<Pos>,
    /// An operation step's caller (`as_user:`; `None`: root).
    pub as_user: Option<crate::cred::User>,
    /// An operation step's umask (`umask:`; `None`: the scenario's).
    pub umask: Option<u32>,
}

impl Step {
    /// A step with no expectation yet.
    pub fn new(action: Action) -> Step {
        Step { action, expect: None, note: None, pos: None, as_user: None, umask: None }
    }

    /// The caller of an operation step in a scenario whose umask is `default_umask`, or
    /// `None` for root with umask 0 ([`crate::cred::Cred::of_step`]).
    pub fn cred(&self, default_umask: Option<u32>) -> Option<crate::cred::Cred> {
        crate::cred::Cred::of_step(self.as_user.as_ref(), self.umask.or(default_umask))
    }

    /// The step's kind as written: the op name (`rename`, `mkfifo`), `mount`, `unmount`,
    /// `edit`, `check` or `drop_caches`.
    pub fn op_name(&self) -> &'static str {
        match &self.action {
            Action::Op(op) => write::op_word(op),
            Action::Mount(_) => "mount",
            Action::Unmount => "unmount",
            Action::Edit { .. } => "edit",
            Action::Check(_) => "check",
            Action::DropCaches => "drop_caches",
        }
    }

    /// A one-line summary: `rename /a /b`, `mount`, `edit L0`.
    pub fn summary(&self) -> String {
        match &self.action {
            Action::Op(op) => {
                let mut s = write::op_word(op).to_owned();
                for p in op.paths() {
                    s.push(' ');
                    s.push_str(p);
                }
                if let Op::Fd(f) = op {
                    s.push_str(&format!(" [{}]", f.fd()));
                }
                if let Op::Symlink { target, .. } = op {
                    s.push_str(&format!(" -> {target}"));
                }
                s
            }
            Action::Edit { layer, .. } => format!("edit {layer}"),
            other => Step::new(other.clone()).op_name().to_owned(),
        }
    }
}

/// What a step does.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// An operation on the merged view.
    Op(Op),
    /// A mount (after an unmount, or the first one).
    Mount(MountChange),
    /// An unmount.
    Unmount,
    /// Offline edits of one layer, made in this order: `replace`, then the `edits` (removes,
    /// then puts, then links, as written).
    Edit {
        /// The layer.
        layer: String,
        /// New content for the whole layer, as a fresh directory.
        replace: Option<FlatLayer>,
        /// Edits of the layer in place.
        edits: Vec<Edit>,
    },
    /// A check of the merged view and/or the upper layer.
    Check(Check),
    /// `drop_caches`: empty the dentry and inode caches (mounted or not).
    DropCaches,
}

/// Trees to check: `None` leaves a tree unchecked; `Some(None)` asks for it but has no
/// expected tree yet (`merged: ~`, filled in by `record`).
///
/// Both trees are held flat, as the backends report them, so that a check compares them
/// without building directory maps: reading a scenario builds none for them, and a tree that
/// matches is not turned into a [`TreeNode`] tree at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// The merged view, as lstat shows it ([`FlatTree::to_tree`] gives its tree).
    pub merged: Option<Option<FlatTree>>,
    /// The upper layer as on disk, in its canonical flat form (hard links as
    /// [`tree_to_flat`] writes them; [`tree_from_flat`] gives its tree).
    pub upper: Option<Option<FlatLayer>>,
    /// What the upper's workdir `index/` holds (`final:` only): each entry, named
    /// `LAYER:/path` after its origin, with its kind (`file`, `whiteout`); `Some(None)`
    /// (`index: ~`) asks for it; an empty map says the index is empty (see
    /// [`crate::backend::Reply::Index`]).
    pub index: Option<Option<std::collections::BTreeMap<String, String>>>,
}

/// The expected result of an operation or a mount.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expect {
    /// Success, whatever the value (`ok`).
    Ok,
    /// Failure with this errno (`ENOENT`).
    Err(Errno),
    /// `stat`/`lstat` success with these fields.
    Stat(StatExpect),
    /// `read` or `getxattr` success with these bytes.
    Data(Vec<u8>),
    /// `read` success on a file over [`crate::layer::READ_INLINE_MAX`] bytes, with this
    /// digest ([`Outcome::Digest`]).
    Digest(crate::layer::Digest),
    /// `readlink` success with this target.
    Target(String),
    /// `readdir` or `listxattr` success with exactly these names.
    Names(BTreeSet<String>),
    /// `readdir` success with exactly these names and types.
    Entries(BTreeMap<String, FileType>),
    /// A mount with the new mount API refused at this `fsconfig(2)` call (0 the first;
    /// written `{call: N, errno: E}` with N from 1) with this errno.
    Call {
        /// The call's index in the mount's `fsconfig` list.
        call: usize,
        /// Its errno.
        errno: Errno,
    },
}

/// Expected `stat` fields: only those given are checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatExpect {
    /// The file type.
    pub kind: Option<FileType>,
    /// Permission bits.
    pub mode: Option<u32>,
    /// `st_size`.
    pub size: Option<u64>,
    /// `st_nlink`.
    pub nlink: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Device numbers.
    pub rdev: Option<(u32, u32)>,
    /// The inode label: the same label means the same `st_ino`.
    pub ino: Option<String>,
}

impl StatExpect {
    /// The fields this expectation gives, filled from `st`; the inode label is `ino` when
    /// this expectation gives one.
    pub fn with_values_of(&self, st: &crate::ops::Stat, ino: Option<String>) -> StatExpect {
        StatExpect {
            kind: self.kind.map(|_| st.kind),
            mode: self.mode.map(|_| st.mode),
            size: self.size.map(|_| st.size),
            nlink: self.nlink.map(|_| st.nlink),
            uid: self.uid.map(|_| st.uid),
            gid: self.gid.map(|_| st.gid),
            rdev: self.rdev.map(|_| st.rdev),
            ino: self.ino.as_ref().and(ino),
        }
    }
}

/// A step by number (from 1) and kind, for messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct StepRef {
    /// The step's number, from 1.
    pub index: usize,
    /// The step's kind: the op name, `mount`, `unmount`, `edit` or `check`.
    pub op: String,
}

impl fmt::Display for StepRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step {} ({})", self.index, self.op)
    }
}

/// One problem in a scenario file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file.
    pub file: String,
    /// Where in it.
    pub pos: Pos,
    /// The step, if the problem is in one.
    pub step: Option<StepRef>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.pos)?;
        if let Some(s) = &self.step {
            write!(f, "{s}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a scenario could not be loaded: every problem found, each with its file, line,
/// column and step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScenarioError {
    /// The problems, in the order found (at least one).
    pub problems: Vec<Problem>,
}

impl ScenarioError {
    /// An error with one problem.
    pub fn single(file: &str, pos: Pos, step: Option<StepRef>, message: String) -> ScenarioError {
        ScenarioError { problems: vec![Problem { file: file.to_owned(), pos, step, message }] }
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

/// Reads and checks the scenario in `path`. Only a regular file is read (a FIFO or a device
/// named `x.yaml` would block or never end): it is opened without blocking and checked
/// with `fstat` before a byte is read. A file over [`FILE_LEN_MAX`] is refused.
pub fn load(path: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    match read_regular(path) {
        Ok(text) => parse(&text, &file),
        Err(e) => {
            Err(ScenarioError::single(&file, Pos { line: 1, column: 1 }, None, format!("cannot read the file: {e}")))
        }
    }
}

/// The largest scenario file read: 64 MiB.
pub const FILE_LEN_MAX: u64 = 64 << 20;

/// The text of the regular file at `path`: opened with `O_NONBLOCK` (so that a FIFO does
/// not block the open), refused unless `fstat` says it is a regular file of at most
/// [`FILE_LEN_MAX`] bytes, and read as UTF-8.
fn read_regular(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        let what = if m.is_dir() { "a directory" } else { "not a regular file" };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
    }
    if m.len() > FILE_LEN_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} bytes, more than the {FILE_LEN_MAX} a scenario may have", m.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    f.take(FILE_LEN_MAX + 1).read_to_end(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

/// Reads and checks a scenario from its text; `file` names it in messages.
pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
    parse::parse(text, file)
}

/// What [`find_files`] found: the scenario files, and what it could not read on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// The scenario files, in order.
    pub files: Vec<PathBuf>,
    /// Each entry that could not be read or followed, with why (an unreadable directory, a
    /// symlink loop): each is a failure, and the walk goes on with the rest.
    pub problems: Vec<(PathBuf, String)>,
}

/// The scenario files under `paths`: each file as given, and every `*.yaml` file under each
/// directory, recursively, sorted by path. Symlinks are followed, but a directory that is
/// its own ancestor (a symlink loop) is reported in [`Found::problems`] instead of walked
/// again, as is every entry that cannot be read. The walk keeps its own stack, so no depth
/// of directories can overflow the process's stack.
///
/// Errors: a path in `paths` that does not exist (a mistyped path is a usage error).
pub fn find_files(paths: &[PathBuf]) -> std::io::Result<Found> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Found::default();
    for p in paths {
        let m = std::fs::metadata(p).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        if !m.is_dir() {
            found.files.push(p.clone());
            continue;
        }
        // Depth-first, in order: each frame is a directory's sorted entries still to visit,
        // and the (device, inode) of the directory, to find loops.
        let mut stack: Vec<(std::vec::IntoIter<PathBuf>, (u64, u64))> = Vec::new();
        let enter = |dir: &Path, id: (u64, u64), stack: &mut Vec<_>, found: &mut Found| match std::fs::read_dir(dir)
            .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect::<Result<Vec<_>, _>>())
        {
            Ok(mut entries) => {
                entries.sort();
                stack.push((entries.into_iter(), id));
            }
            Err(e) => found.problems.push((dir.to_path_buf(), format!("cannot read the directory: {e}"))),
        };
        enter(p, (m.dev(), m.ino()), &mut stack, &mut found);
        while let Some((entries, _)) = stack.last_mut() {
            let Some(e) = entries.next() else {
                stack.pop();
                continue;
            };
            match std::fs::metadata(&e) {
                Ok(m) if m.is_dir() => {
                    let id = (m.dev(), m.ino());
                    if stack.iter().any(|(_, a)| *a == id) {
                        found.problems.push((e, "a symlink loop: this directory is its own ancestor".into()));
                    } else {
                        enter(&e, id, &mut stack, &mut found);
                    }
                }
                Ok(_) if e.extension().is_some_and(|x| x == "yaml") => found.files.push(e),
                Ok(_) => {}
                Err(err) => {
                    // A dangling symlink not named *.yaml is not a scenario; a loop is
                    // reported whatever its name.
                    if e.extension().is_some_and(|x| x == "yaml") || err.raw_os_error() == Some(libc::ELOOP) {
                        found.problems.push((e, format!("cannot follow: {err}")));
                    }
                }
            }
        }
    }
    Ok(found)
}

impl Scenario {
    /// An empty scenario with this name and rule.
    pub fn new(name: &str, rule: &str) -> Scenario {
        Scenario {
            name: name.to_owned(),
            rules: vec![rule.to_owned()],
            layers: Vec::new(),
            mount: None,
            steps: Vec::new(),
            final_check: None,
            source: None,
            umask: None,
        }
    }

    /// The file the scenario came from, or `<memory>`.
    pub fn file(&self) -> &str {
        self.source.as_ref().map(|s| s.file.as_str()).unwrap_or("<memory>")
    }

    /// The position of the node at `path` in the scenario's text, if it has one.
    pub fn locate(&self, path: &[Seg]) -> Option<Pos> {
        self.source.as_ref().and_then(|s| locate::locate(&s.text, path, false))
    }

    /// The scenario as YAML: the rule comment it was read with (if any), then its keys in
    /// the order they were written, regenerated from the data.
    pub fn to_yaml(&self) -> String {
        write::to_yaml(self)
    }

    /// The upper layer's name at the end of the steps (of the last mount), if any.
    pub fn last_upper(&self) -> Option<String> {
        let mut spec = self.mount.clone();
        for s in &self.steps {
            if let Action::Mount(c) = &s.action {
                if let Ok(m) = c.apply(spec.as_ref()) {
                    spec = Some(m);
                }
            }
        }
        spec.and_then(|s| s.upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Inode, Layer, NodeKind};
    use proptest::prelude::*;
    use std::sync::Arc;

    /// Names that need quoting, look like other YAML types, or are not UTF-8-simple.
    const NAMES: &[&str] =
        &["a", "b", "d", "yes", "1", "0644", "a b", "é", ".hidden", "-x", "ok", "x:y", "#c", "null", "[", "~"];

    fn kind() -> impl Strategy<Value = NodeKind> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..6).prop_map(|d| NodeKind::File(d.into())),
            "[a-z/. ]{0,8}".prop_map(|t| NodeKind::Symlink(Arc::from(t.as_str()))),
            Just(NodeKind::Char(0, 0)),
            (0u32..3, 0u32..3).prop_map(|(a, b)| NodeKind::Char(a, b)),
            (0u32..9, 0u32..3).prop_map(|(a, b)| NodeKind::Block(a, b)),
            Just(NodeKind::Fifo),
            Just(NodeKind::Dir(Default::default())),
        ]
    }

    #[derive(Clone, Debug)]
    enum Build {
        Put(Vec<usize>, NodeKind, u32, u32, u32, Vec<(usize, Vec<u8>)>),
        Link(Vec<usize>, Vec<usize>),
    }

    const XATTRS: &[&str] = &[OPAQUE_XATTR, REDIRECT_XATTR, XWHITEOUT_XATTR, "user.a", "trusted.overlay.origin"];

    fn build() -> impl Strategy<Value = Build> {
        let path = prop::collection::vec(0..NAMES.len(), 1..4);
        prop_oneof![
            4 => (
                path.clone(),
                kind(),
                prop_oneof![Just(0o644u32), Just(0o755), Just(0), 0u32..0o7777],
                prop_oneof![Just(0u32), Just(1000)],
                prop_oneof![Just(0u32), Just(6)],
                prop::collection::vec(
                    (0..XATTRS.len(), prop_oneof![Just(b"y".to_vec()), Just(b"x".to_vec()), Just(Vec::new()), Just(vec![0xff])]),
                    0..3
                )
            )
                .prop_map(|(p, k, m, u, g, x)| Build::Put(p, k, m, u, g, x)),
            1 => (path.clone(), path).prop_map(|(a, b)| Build::Link(a, b)),
        ]
    }

    fn join(p: &[usize]) -> String {
        p.iter().map(|i| format!("/{}", NAMES[*i])).collect()
    }

    fn layer_of(builds: &[Build]) -> Layer {
        let mut l = Layer::new();
        for b in builds {
            match b {
                Build::Put(p, k, mode, uid, gid, xattrs) => {
                    let mut inode = Inode::new(k.clone(), *mode);
                    inode.uid = *uid;
                    inode.gid = *gid;
                    let ino = l.put(&join(p), inode);
                    for (x, v) in xattrs {
                        l.set_xattr(ino, XATTRS[*x], v);
                    }
                }
                Build::Link(a, b) => {
                    // NOTE: Layer::put_link panics when the new name is the target, holds it
                    // or is under it; that is the layer's business, not the notation's.
                    let (a, b) = (join(a), join(b));
                    if !(b == a || b.starts_with(&format!("{a}/")) || a.starts_with(&format!("{b}/"))) {
                        l.put_link(&a, &b);
                    }
                }
            }
        }
        l
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// FlatLayer -> notation (YAML text) -> FlatLayer is the identity.
        #[test]
        fn layers_round_trip_through_the_notation(builds in prop::collection::vec(build(), 0..14)) {
            let flat = layer_of(&builds).to_flat();
            // A layer the kernel cannot hold (an empty symlink target, `user.*` on a FIFO) is
            // refused at load, where tests/scenario_errors.rs pins it.
            prop_assume!(crate::layer::check::check_layer(&flat).is_ok());
            let mut s = Scenario::new("round-trip", "the notation is exact");
            s.layers.push(("L0".into(), flat.clone()));
            let yaml = s.to_yaml();
            let back = parse(&yaml, "rt.yaml").map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
            prop_assert_eq!(&back.layers[0].1, &flat, "{}", yaml);
            // And the tree form is canonical: writing it again gives the same text.
            prop_assert_eq!(back.to_yaml(), yaml);
        }
    }

    #[test]
    fn commands_round_trip_through_yaml() {
        use crate::backend::{Command, Edit};
        use crate::layer::{FileType, FlatNode};
        use crate::ops::{Access, MknodKind, OpenFlags, RenameFlags, WriteAt};
        let mut l0 = Layer::new();
        l0.put("/f", Inode::file(b"x", 0o644));
        let node = FlatNode {
            kind: FileType::File,
            mode: 0o600,
            uid: 1,
            gid: 2,
            data: Some(b"ok".to_vec().into()),
            target: None,
            rdev: None,
            xattrs: Default::default(),
        };
        let ops = vec![
            Op::Open {
                path: "/f".into(),
                flags: OpenFlags {
                    access: Access::ReadWrite,
                    creat: true,
                    excl: true,
                    trunc: true,
                    append: true,
                    directory: true,
                    nofollow: true,
                },
                mode: 0o600,
            },
            Op::Write { path: "/f".into(), at: WriteAt::Append, data: vec![0xff, 0] },
            Op::Write { path: "/f".into(), at: WriteAt::Offset(3), data: b"ENOENT".to_vec() },
            Op::Truncate { path: "/f".into(), len: 2 },
            Op::Rename {
                from: "/f".into(),
                to: "/g".into(),
                flags: RenameFlags { noreplace: true, exchange: true, whiteout: true },
            },
            Op::Link { from: "/g".into(), to: "/h".into() },
            Op::Symlink { target: "../x y".into(), path: "/s".into() },
            Op::Chmod { path: "/g".into(), mode: 0o4755 },
            Op::Chown { path: "/g".into(), uid: 7, gid: 8 },
            Op::Chown { path: "/g".into(), uid: u32::MAX, gid: 8 },
            Op::Utimes { path: "/g".into() },
            Op::Setxattr { path: "/g".into(), name: "user.k".into(), value: b"v".to_vec() },
            Op::Getxattr { path: "/g".into(), name: "user.k".into() },
            Op::Listxattr { path: "/g".into() },
            Op::Removexattr { path: "/g".into(), name: "user.k".into() },
            Op::Mknod { path: "/c".into(), kind: MknodKind::Char(1, 3), mode: 0o600 },
            Op::Mknod { path: "/b".into(), kind: MknodKind::Block(8, 0), mode: 0o644 },
            Op::Mknod { path: "/r".into(), kind: MknodKind::File, mode: 0o644 },
            Op::Mknod { path: "/p".into(), kind: MknodKind::Fifo, mode: 0o640 },
            Op::Mkdir { path: "/d".into(), mode: 0o700 },
            Op::Readdir { path: "/d".into() },
            Op::Rmdir { path: "/d".into() },
            Op::Unlink { path: "/h".into() },
            Op::Readlink { path: "/s".into() },
            Op::Read { path: "/g".into() },
            Op::Stat { path: "/g".into() },
            Op::Lstat { path: "/s".into() },
        ];
        let mut cmds = vec![
            Command::Layer { name: "L0".into(), content: l0.to_flat() },
            Command::Layer { name: "U".into(), content: Layer::new().to_flat() },
            Command::Mount { lowers: vec!["L0".into()], upper: Some("U".into()), options: Default::default() },
        ];
        cmds.extend(ops.iter().cloned().map(Command::Op));
        cmds.push(Command::DumpMerged);
        cmds.push(Command::Unmount);
        cmds.push(Command::Edit { layer: "L0".into(), edit: Edit::Put { path: "/n/m".into(), node } });
        cmds.push(Command::Edit { layer: "L0".into(), edit: Edit::Link { path: "/n/k".into(), to: "/f".into() } });
        cmds.push(Command::Edit { layer: "L0".into(), edit: Edit::Remove { path: "/f".into() } });
        cmds.push(Command::Mount {
            lowers: vec!["L0".into()],
            upper: None,
            options: crate::mount::Options { redirect_dir: crate::mount::RedirectDir::Nofollow, ..Default::default() },
        });
        cmds.push(Command::DumpLayer { name: "L0".into() });
        let s = Scenario::from_commands("all-ops", "every op round-trips", &cmds);
        let yaml = s.to_yaml();
        let back = parse(&yaml, "all.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let strip = |s: &Scenario| -> Vec<Action> { s.steps.iter().map(|st| st.action.clone()).collect() };
        assert_eq!(strip(&back), strip(&s), "{yaml}");
        assert_eq!(back.layers, s.layers);
        assert_eq!(back.mount, s.mount);
        let ops_back: Vec<Op> = back
            .steps
            .iter()
            .filter_map(|st| match &st.action {
                Action::Op(o) => Some(o.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ops_back, ops);
    }
}
