//! The `vfs` crate's `OverlayFS` (0.13) as an ovlsim [`Backend`]: the adapter a Rust
//! implementation writes to be checked against the model in its own `cargo test`.
//!
//! What `vfs` can express, and so what this adapter maps:
//! - layers: `MemoryFS` trees of directories and regular files; anything else (symlinks,
//!   devices, FIFOs, hard links, xattrs, and so every whiteout, opaque directory and
//!   redirect a scenario's layer holds) is refused as not modelled;
//! - the mount: `OverlayFS::new(&[upper, lowers...])`, top-most first; a mount without an
//!   upper layer, or with options other than the defaults, is not modelled (`vfs` writes
//!   to its first layer and has no options);
//! - operations: stat and lstat (`metadata`: the type and the length), read
//!   (`open_file`), write (`create_file` for a new file, `append_file` and a seek
//!   otherwise), mkdir (`create_dir`), rmdir (`remove_dir`), unlink (`remove_file`),
//!   readdir (`read_dir`, with `metadata` of each name for its type); every other
//!   operation is not modelled. Paths with `.` or `..` components, empty components or a
//!   trailing slash are not modelled either (`vfs` rejects them as invalid);
//! - the upper layer read back into overlay meaning: `vfs` records a removed name `p` as a
//!   file `.whiteout/p_wo` in the upper layer's root; it reads back as a whiteout at `p`
//!   (with its parents, as directories, where the upper has none).
//!
//! `vfs` reports no errno, mode, owner, link count or inode number: those are masked on
//! both sides ([`OBSERVES`]).

use ovlsim::backend::{Backend, BackendError, Command, Reply};
use ovlsim::dump::try_dump_merged;
use ovlsim::fuzz::GenConfig;
use ovlsim::layer::{FileData, FileType, FlatEntry, FlatLayer, FlatNode, READ_INLINE_MAX};
use ovlsim::ops::{Op, Outcome, Stat, WriteAt};
use ovlsim::{Errno, Options};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use vfs::{FileSystem, MemoryFS, OverlayFS, VfsFileType, VfsPath};

/// What `vfs`'s API shows: file types, lengths, data, names, and success or failure.
pub const OBSERVES: ovlsim::harness::Observes = ovlsim::harness::Observes {
    errno: false,
    mode: false,
    owner: false,
    nlink: false,
    ino: false,
    dir_size: false,
    xattrs: false,
    upper: true,
};

/// What the fuzzer's generator may draw for `vfs`: files and directories in layers, one
/// mount with an upper and default options, plain absolute paths, and the operations the
/// adapter maps ([`GenConfig::minimal`]).
pub fn config() -> GenConfig {
    GenConfig::minimal()
}

/// The largest layer file the adapter builds in a `MemoryFS`, which holds every byte (a
/// sparse file of a scenario may be 10^12 bytes long).
const FILE_LEN_MAX: u64 = 64 << 20;

/// Where `vfs` keeps its whiteouts, in the upper layer's root.
const WHITEOUT_DIR: &str = ".whiteout";

/// `vfs`'s `OverlayFS` behind the ovlsim protocol.
#[derive(Default)]
pub struct VfsBackend {
    layers: BTreeMap<String, VfsPath>,
    mounted: Option<OverlayFS>,
}

fn not_modelled(what: impl Into<String>) -> BackendError {
    BackendError::NotModelled(what.into())
}

/// The path as `vfs`'s `FileSystem` methods take it: `""` for the root, `/a/b` below it.
fn vfs_path(path: &str) -> Result<String, BackendError> {
    if path == "/" {
        return Ok(String::new());
    }
    let ok = path.starts_with('/') && path[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(path.to_owned())
    } else {
        Err(not_modelled("a path with ., .., an empty component or a trailing slash (vfs rejects them)"))
    }
}

/// Every failure of `vfs` is a failure; which errno is not observed ([`OBSERVES`]).
fn failed<T>(r: vfs::VfsResult<T>) -> Result<T, Outcome> {
    r.map_err(|_| Outcome::Err(Errno::EIO))
}

impl VfsBackend {
    /// A backend with no layers.
    pub fn new() -> VfsBackend {
        VfsBackend::default()
    }

    fn build_layer(content: &FlatLayer) -> Result<VfsPath, BackendError> {
        if !content.root.xattrs.is_empty() {
            return Err(not_modelled("xattrs on a layer root"));
        }
        let root = VfsPath::new(MemoryFS::new());
        for e in &content.entries {
            let (path, node) = match e {
                FlatEntry::Node { path, node } => (path, node),
                FlatEntry::Link { .. } => return Err(not_modelled("hard links in a layer")),
            };
            if !node.xattrs.is_empty() {
                return Err(not_modelled("xattrs in a layer (so whiteout, opaque and redirect markers)"));
            }
            let at = root.join(&path[1..]).map_err(|e| not_modelled(format!("a layer path vfs rejects: {e}")))?;
            let data = node.data.clone().unwrap_or_default();
            if data.len() > FILE_LEN_MAX {
                return Err(not_modelled("a layer file over 64 MiB (MemoryFS holds every byte)"));
            }
            let made = match node.kind {
                FileType::Dir => at.create_dir(),
                FileType::File => at.create_file().and_then(|mut f| Ok(f.write_all(&data.to_vec())?)),
                FileType::Symlink => return Err(not_modelled("symlinks in a layer")),
                _ => return Err(not_modelled("devices or FIFOs in a layer (so whiteouts)")),
            };
            made.map_err(|e| BackendError::Failed(format!("building {path} in a MemoryFS: {e}")))?;
        }
        Ok(root)
    }

    fn overlay(&self) -> Result<&OverlayFS, BackendError> {
        self.mounted.as_ref().ok_or_else(|| BackendError::Usage("an operation needs a mount".into()))
    }

    fn stat(fs: &OverlayFS, path: &str) -> Result<Stat, Outcome> {
        let m = failed(fs.metadata(path))?;
        let kind = match m.file_type {
            VfsFileType::File => FileType::File,
            VfsFileType::Directory => FileType::Dir,
        };
        Ok(Stat { kind, mode: 0, size: m.len, nlink: 0, uid: 0, gid: 0, rdev: (0, 0), ino: 0 })
    }

    /// One operation on the overlay. `in_dump` answers `listxattr` with no names, as
    /// [`dump_merged`] asks for them and `vfs` has none (xattrs are not observed).
    fn op(fs: &OverlayFS, op: &Op, in_dump: bool) -> Result<Outcome, BackendError> {
        let r: Result<Outcome, Outcome> = match op {
            Op::Stat { path } | Op::Lstat { path } => Self::stat(fs, &vfs_path(path)?).map(Outcome::Stat),
            Op::Read { path } => {
                let p = vfs_path(path)?;
                failed(fs.open_file(&p)).and_then(|mut f| {
                    let mut data = Vec::new();
                    f.read_to_end(&mut data).map_err(|_| Outcome::Err(Errno::EIO))?;
                    // The protocol's form of a read: a big file by its digest.
                    Ok(if data.len() as u64 > READ_INLINE_MAX {
                        Outcome::Digest(FileData::from(data).digest())
                    } else {
                        Outcome::Data(data)
                    })
                })
            }
            Op::Write { path, at, data } => {
                let p = vfs_path(path)?;
                if let WriteAt::Offset(off) = at {
                    if off.saturating_add(data.len() as u64) > FILE_LEN_MAX {
                        return Err(not_modelled("a write past 64 MiB (MemoryFS holds every byte)"));
                    }
                }
                let exists = failed(fs.exists(&p));
                exists.and_then(|exists| {
                    let mut f = if exists { failed(fs.append_file(&p))? } else { failed(fs.create_file(&p))? };
                    if let WriteAt::Offset(off) = at {
                        f.seek(SeekFrom::Start(*off)).map_err(|_| Outcome::Err(Errno::EIO))?;
                    }
                    f.write_all(data).and_then(|()| f.flush()).map_err(|_| Outcome::Err(Errno::EIO))?;
                    Ok(Outcome::Ok)
                })
            }
            Op::Mkdir { path, .. } => failed(fs.create_dir(&vfs_path(path)?)).map(|()| Outcome::Ok),
            Op::Rmdir { path } => failed(fs.remove_dir(&vfs_path(path)?)).map(|()| Outcome::Ok),
            Op::Unlink { path } => failed(fs.remove_file(&vfs_path(path)?)).map(|()| Outcome::Ok),
            Op::Readdir { path } => {
                let p = vfs_path(path)?;
                match failed(fs.read_dir(&p)) {
                    Err(o) => Err(o),
                    Ok(names) => {
                        let mut entries = BTreeMap::new();
                        for name in names {
                            let child = if p.is_empty() { format!("/{name}") } else { format!("{p}/{name}") };
                            let kind = Self::stat(fs, &child).map(|st| st.kind).map_err(|_| {
                                BackendError::Failed(format!("vfs lists {child} but its metadata fails"))
                            })?;
                            entries.insert(name, kind);
                        }
                        Ok(Outcome::Entries(entries))
                    }
                }
            }
            Op::Listxattr { .. } if in_dump => Ok(Outcome::XattrNames(BTreeSet::new())),
            other => return Err(not_modelled(format!("{} (no such call in vfs's API)", other.name()))),
        };
        Ok(r.unwrap_or_else(|o| o))
    }

    /// A layer's `MemoryFS` read back into overlay meaning.
    fn read_layer(root: &VfsPath) -> Result<FlatLayer, BackendError> {
        let failed = |e: vfs::VfsError| BackendError::Failed(format!("reading back a MemoryFS: {e}"));
        let dir = |mode| FlatNode {
            kind: FileType::Dir,
            mode,
            uid: 0,
            gid: 0,
            data: None,
            target: None,
            rdev: None,
            xattrs: BTreeMap::new(),
        };
        let mut nodes: BTreeMap<String, FlatNode> = BTreeMap::new();
        for p in root.walk_dir().map_err(failed)? {
            let p = p.map_err(failed)?;
            let path = p.as_str().to_owned();
            if path == format!("/{WHITEOUT_DIR}") || path.starts_with(&format!("/{WHITEOUT_DIR}/")) {
                let name = &path[WHITEOUT_DIR.len() + 1..];
                if let Some(target) = name.strip_suffix("_wo").filter(|t| !t.is_empty() && p.is_file().unwrap_or(false))
                {
                    let mut whiteout = dir(0);
                    whiteout.kind = FileType::Char;
                    whiteout.rdev = Some((0, 0));
                    nodes.insert(target.to_owned(), whiteout);
                }
                continue;
            }
            let node = if p.is_dir().map_err(failed)? {
                dir(0o755)
            } else {
                let mut data = Vec::new();
                p.open_file().map_err(failed)?.read_to_end(&mut data).map_err(|e| failed(e.into()))?;
                let mut file = dir(0o644);
                file.kind = FileType::File;
                file.data = Some(FileData::from(data));
                file
            };
            nodes.insert(path, node);
        }
        // A whiteout's parents, where the upper has none of its own.
        let parents: Vec<String> = nodes
            .keys()
            .flat_map(|p| {
                let mut up = Vec::new();
                let mut cur = p.as_str();
                while let Some(i) = cur.rfind('/').filter(|&i| i > 0) {
                    cur = &cur[..i];
                    up.push(cur.to_owned());
                }
                up
            })
            .collect();
        for p in parents {
            nodes.entry(p).or_insert_with(|| dir(0o755));
        }
        let entries = nodes.into_iter().map(|(path, node)| FlatEntry::Node { path, node }).collect();
        Ok(FlatLayer { root: dir(0o755), entries })
    }

    fn exec_inner(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        match cmd {
            Command::Layer { name, content } => {
                if self.mounted.is_some() {
                    return Err(BackendError::Usage("creating a layer needs the overlay unmounted".into()));
                }
                let layer = Self::build_layer(content)?;
                self.layers.insert(name.clone(), layer);
                Ok(Reply::Done)
            }
            Command::Mount { lowers, upper, options } => {
                if *options != Options::default() {
                    return Err(not_modelled("mount options other than the defaults (vfs has none)"));
                }
                let upper = upper.as_ref().ok_or_else(|| not_modelled("a mount without an upper layer"))?;
                let mut stack = Vec::new();
                for name in std::iter::once(upper).chain(lowers) {
                    let l = self.layers.get(name).ok_or_else(|| BackendError::Usage(format!("no layer {name:?}")))?;
                    stack.push(l.clone());
                }
                self.mounted = Some(OverlayFS::new(&stack));
                Ok(Reply::Done)
            }
            Command::Unmount => {
                self.mounted.take().ok_or_else(|| BackendError::Usage("unmount while unmounted".into()))?;
                Ok(Reply::Done)
            }
            Command::Op(op) => Ok(Reply::Outcome(Self::op(self.overlay()?, op, false)?)),
            Command::Edit { .. } => Err(not_modelled("offline edits of a layer")),
            Command::DumpLayer { name } => {
                let l = self.layers.get(name).ok_or_else(|| BackendError::Usage(format!("no layer {name:?}")))?;
                Ok(Reply::Layer(Self::read_layer(l)?))
            }
            Command::DumpMerged => {
                let fs = self.overlay()?;
                try_dump_merged(|op| Self::op(fs, op, true)).map(Reply::Merged)
            }
            // A command added to the protocol after this adapter was written.
            other => Err(not_modelled(format!("the command {}", other.name()))),
        }
    }
}

impl Backend for VfsBackend {
    fn name(&self) -> &'static str {
        "vfs"
    }

    /// Carries out `cmd`; a panic inside `vfs` is reported as a backend failure (a crash
    /// of the implementation), not propagated.
    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        catch_unwind(AssertUnwindSafe(|| self.exec_inner(cmd))).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(BackendError::Failed(format!("vfs panicked: {msg}")))
        })
    }
}
