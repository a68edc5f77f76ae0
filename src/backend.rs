//! The protocol both backends speak: the model ([`ModelBackend`]) and the real kernel
//! ([`crate::kernel::KernelBackend`]). A scenario is a list of [`Command`]s; each gets a
//! [`Reply`]. The scenario runner and the property tests drive either backend, or both, with
//! the same commands and compare the replies.

use crate::dcache::CachePolicy;
use crate::errno::Errno;
use crate::layer::{FlatLayer, FlatNode, Layer};
use crate::mount::{MountError, Options};
use crate::ops::{Op, Outcome};
use crate::overlay::{Event, Overlay};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::dump::{dump_merged, MergedEntry, MergedTree};

/// An offline edit of one layer, made while the overlay is unmounted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Edit {
    /// Put `node` at `path`, making missing parents (mode 0755) and replacing what was there.
    Put {
        /// Path inside the layer, from its root.
        path: String,
        /// The node.
        node: FlatNode,
    },
    /// Make `path` another name for the non-directory at `to`.
    Link {
        /// The new name.
        path: String,
        /// The existing name.
        to: String,
    },
    /// Remove whatever is at `path`, recursively.
    Remove {
        /// Path inside the layer.
        path: String,
    },
}

impl Edit {
    /// Makes this edit in `layer`, as the model does offline. A node the layer cannot hold
    /// is refused with the kernel's errno ([`crate::layer::check::check_node`]), and the
    /// layer is left as it was (the kernel backend removes the node it made, but keeps the
    /// parents it made, and a node it replaced is gone). A link that cannot be made (its target is missing or a
    /// directory, or making its parents would remove the target) is a usage error; the
    /// layer may then have new parents.
    pub fn apply_to(&self, layer: &mut Layer) -> Result<(), BackendError> {
        match self {
            Edit::Put { path, node } => {
                layer.try_put(path, node.to_inode()).map_err(|r| BackendError::Refused(r.errno, r.to_string()))?;
            }
            Edit::Link { path, to } => {
                layer.put_link(path, to).ok_or_else(|| {
                    BackendError::Usage(format!(
                        "link target {to:?} is missing or a directory, or {path:?} would replace it"
                    ))
                })?;
            }
            Edit::Remove { path } => {
                layer.remove(path);
            }
        }
        Ok(())
    }
}

/// One command to a backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// Create the named layer with this content. Names are the scenario's own (`L0`,
    /// `upper`, ...). Only while unmounted.
    Layer {
        /// The layer's name.
        name: String,
        /// Its content.
        content: FlatLayer,
    },
    /// Mount the named layers: `lowers` top-most first.
    Mount {
        /// Lower layer names, top-most first.
        lowers: Vec<String>,
        /// The upper layer's name, if any.
        upper: Option<String>,
        /// The options.
        options: Options,
    },
    /// Unmount.
    Unmount,
    /// Run one operation on the merged view.
    Op(Op),
    /// Edit a layer offline. Only while unmounted.
    Edit {
        /// The layer's name.
        layer: String,
        /// The edit.
        edit: Edit,
    },
    /// Read back a layer as it is on disk. Only while unmounted. A name that is an upper
    /// layer's name followed by [`INDEX_SUFFIX`] (`upper/index`; no layer name has a `/`)
    /// reads its workdir's `index/` instead, as [`Reply::Index`].
    DumpLayer {
        /// The layer's name.
        name: String,
    },
    /// Read the whole merged view. Only while mounted.
    DumpMerged,
    /// Mount with an option string as `mount -t overlay -o DATA` gives it to `mount(2)`
    /// (`lowerdir=L0:L1,upperdir=upper,workdir=work,index=off`): its layer paths are layer
    /// names; a `workdir=` that names no layer is the upper layer's own workdir. The model
    /// reads it as [`crate::params::Params::parse_with`] does; the kernel backend passes it
    /// to `mount(2)` unchanged, from a directory where each layer's name is a link to it.
    MountData {
        /// The option string.
        data: String,
        /// Mount with the new mount API instead (`fsopen("overlay")`, these
        /// `fsconfig(2)` calls in order, `FSCONFIG_CMD_CREATE`, `fsmount`, `move_mount`);
        /// `data` is then not used. Paths are layer names as in `data`. The model reads the
        /// calls as [`crate::params::Params::parse_fsconfig`] does. The first call refused
        /// ends the mount: [`Reply::CallRefused`]; a refused `FSCONFIG_CMD_CREATE` is
        /// [`Reply::MountRefused`]. (A field of this command, not a command of its own: the
        /// same mount, another system call.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fsconfig: Option<Vec<crate::params::FsParam>>,
    },
    /// Empty the dentry and inode caches, as `echo 2 > /proc/sys/vm/drop_caches` does:
    /// the kernel backend writes it (system-wide on the host), the model forgets what its
    /// lookups remembered ([`Overlay::drop_caches`]). Mounted or not.
    DropCaches,
    /// Run one operation on the merged view as another caller, or with a umask
    /// ([`crate::cred`]). A backend that cannot switch callers answers
    /// [`BackendError::NotModelled`]. An operation through a named handle
    /// ([`crate::ops::FdOp`]) is made by this caller through the handle, whoever opened it;
    /// an `open` so makes a handle opened by this caller.
    OpAs {
        /// The caller.
        cred: crate::cred::Cred,
        /// The operation.
        op: Op,
    },
}

impl Command {
    /// The command's name in reports: an operation's syscall name ([`Op::name`]), or
    /// `layer`, `mount`, `unmount`, `edit`, `dump-layer`, `dump-merged`, `drop-caches`.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Op(op) => op.name(),
            Command::Layer { .. } => "layer",
            Command::Mount { .. } => "mount",
            Command::Unmount => "unmount",
            Command::Edit { .. } => "edit",
            Command::DumpLayer { .. } => "dump-layer",
            Command::DumpMerged => "dump-merged",
            Command::MountData { .. } => "mount",
            Command::DropCaches => "drop-caches",
            Command::OpAs { op, .. } => op.name(),
        }
    }
}

/// The suffix of a [`Command::DumpLayer`] name that reads the named upper layer's workdir
/// index ([`crate::index`]) rather than the layer.
pub const INDEX_SUFFIX: &str = "/index";

/// A backend's answer to one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reply {
    /// The command was carried out.
    Done,
    /// The mount (or, for [`Backend::try_unmount`], the unmount) was refused with this errno.
    MountRefused(Errno),
    /// The outcome of an operation.
    Outcome(Outcome),
    /// A layer as on disk.
    Layer(FlatLayer),
    /// The merged view.
    Merged(MergedTree),
    /// What the workdir's `index/` of an upper layer holds ([`Command::DumpLayer`] of
    /// `NAME/index`): each entry named `LAYER:/path` after the lower object whose file
    /// handle names it (its layer, then the first of its paths in byte order; `?` when no
    /// layer holds it), with its kind, `file` or `whiteout`; `None` when there is no `index/`
    /// (no mount with `index=on` used this upper). The kernel's temporary and shared-whiteout
    /// entries (`#…`) are left out. See [`crate::index::dump_index`].
    Index(Option<BTreeMap<String, String>>),
    /// A mount with the new mount API ([`Command::MountData`] with `fsconfig`) ended at
    /// this `fsconfig(2)` call (0 the first), refused with this errno; nothing is mounted.
    CallRefused {
        /// The index of the call in the command's list.
        call: usize,
        /// Its errno.
        errno: Errno,
    },
}

/// A failure of the harness or of the scenario, not of the file system: a command out of
/// place, a layer that does not exist, a mount the model cannot represent, a kernel that
/// cannot be reached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BackendError {
    /// The command does not fit the backend's state (for example, an op while unmounted).
    #[error("{0}")]
    Usage(String),
    /// The model does not implement what the command asks for.
    #[error("not modelled: {0}")]
    NotModelled(String),
    /// The backend itself failed (the kernel worker died, a setup syscall failed, ...).
    #[error("backend failure: {0}")]
    Failed(String),
    /// A layer cannot hold this content: the errno the kernel's call gives (the model
    /// decides it by [`crate::layer::check::check_node`]), and what was refused.
    #[error("{1}")]
    Refused(Errno, String),
    /// A mount command (the mount-command backend, [`crate::kernel::MountConfig`]) did not
    /// mount: it exited non-zero, exited 0 without mounting, was killed by a signal, or ran
    /// out of time. A refused mount gives this, not [`Reply::MountRefused`]: a command reports
    /// an exit status, not an errno.
    #[error("the mount command `{command}` failed ({status}); its output: {stderr}")]
    MountCommand {
        /// The command as run (its argv, space-joined).
        command: String,
        /// How it ended.
        status: String,
        /// The end of its stdout and stderr.
        stderr: String,
    },
    /// The implementation's on-disk dialect cannot express what the command asks for (an
    /// xattr whiteout, a redirect, an option it does not have): the scenario or case is
    /// not applicable to it, which is never a pass.
    #[error("not applicable: {0}")]
    NotApplicable(String),
}

/// A backend: something that carries out commands.
pub trait Backend {
    /// A short name for reports: `model` or `kernel`.
    fn name(&self) -> &'static str;
    /// Carries out one command.
    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError>;
    /// Carries out [`Command::Layer`] with this name and content, as [`Backend::exec`]
    /// does; a backend that only reads the content may override it to skip the copy that
    /// building the command makes.
    fn exec_layer(&mut self, name: &str, content: &FlatLayer) -> Result<Reply, BackendError> {
        self.exec(&Command::Layer { name: name.to_owned(), content: content.clone() })
    }
    /// The overlay events the last command caused, where the backend can tell (the model).
    fn events(&self) -> Vec<Event> {
        Vec::new()
    }
    /// Unmounts as a scenario's `unmount` step does: `umount(2)` with the open handles
    /// ([`crate::ops::FdOp`]) left open, where [`Command::Unmount`] closes them first. While
    /// any is open the overlay is busy: the answer is [`Reply::MountRefused`] with EBUSY,
    /// and the overlay stays mounted with its handles ([`Overlay::unmount_refused`]).
    /// Without handles it is [`Command::Unmount`], which is what a backend that keeps no
    /// handles runs (the default). To the worker it is the request `"TryUnmount"`
    /// ([`crate::kernel::protocol::Request`]).
    fn try_unmount(&mut self) -> Result<Reply, BackendError> {
        self.exec(&Command::Unmount)
    }
}

/// The model as a backend: named layers, and an [`Overlay`] while mounted.
#[derive(Clone, Debug, Default)]
pub struct ModelBackend {
    layers: BTreeMap<String, Layer>,
    mounted: Option<Mounted>,
    events: Vec<Event>,
    cache_policy: CachePolicy,
    /// The upper layers whose workdir a volatile mount has left marked
    /// ([`crate::mount::leaves_volatile_marker`]).
    volatile_marked: std::collections::BTreeSet<String>,
    /// The file handles kept while unmounted, for the next mount ([`crate::export`]).
    file_handles: imbl::OrdMap<String, crate::export::FileHandle>,
}

#[derive(Clone, Debug)]
struct Mounted {
    overlay: Overlay,
    upper: Option<String>,
}

impl ModelBackend {
    /// A backend with no layers.
    pub fn new() -> ModelBackend {
        ModelBackend::default()
    }

    /// A backend whose mounts use `policy` for their lookup cache (see [`crate::dcache`]).
    /// The answers are the same under every policy; tests use [`CachePolicy::Always`] and
    /// [`CachePolicy::Off`] to check that.
    pub fn with_cache_policy(policy: CachePolicy) -> ModelBackend {
        ModelBackend { cache_policy: policy, ..ModelBackend::default() }
    }

    /// Sets the lookup-cache policy of this backend and of its mounted overlay, if any.
    pub fn set_cache_policy(&mut self, policy: CachePolicy) {
        self.cache_policy = policy;
        if let Some(m) = &mut self.mounted {
            m.overlay.set_cache_policy(policy);
        }
    }

    /// The mounted overlay, if any.
    pub fn overlay(&self) -> Option<&Overlay> {
        self.mounted.as_ref().map(|m| &m.overlay)
    }

    /// The named layer as it is now (while mounted, the upper as the overlay left it).
    pub fn layer(&self, name: &str) -> Option<Layer> {
        if let Some(m) = &self.mounted {
            if m.upper.as_deref() == Some(name) {
                return m.overlay.upper().cloned();
            }
        }
        self.layers.get(name).cloned()
    }

    fn unmounted(&self, what: &str) -> Result<(), BackendError> {
        match &self.mounted {
            Some(_) => Err(BackendError::Usage(format!("{what} needs the overlay unmounted"))),
            None => Ok(()),
        }
    }

    /// [`Command::Layer`]: the named layer, built from `content` (only while unmounted).
    fn create_layer(&mut self, name: &str, content: &FlatLayer) -> Result<Reply, BackendError> {
        self.unmounted("creating a layer")?;
        let layer = Layer::try_from_flat(content)
            .map_err(|(path, r)| BackendError::Refused(r.errno, format!("{path}: {r}")))?;
        self.layers.insert(name.to_owned(), layer);
        // A layer made anew has a fresh workdir, as the kernel backend's does.
        self.volatile_marked.remove(name);
        // New layers are a new case: the file handles kept go (as in the kernel worker).
        self.file_handles = imbl::OrdMap::new();
        Ok(Reply::Done)
    }

    /// [`Command::MountData`]: the string (or the `fsconfig` calls) read and checked in the kernel's order
    /// ([`crate::params`]), then the volatile marker of the upper's workdir, then the mount
    /// of its layers ([`Overlay::mount`]). A path that names no layer gives ENOENT; any
    /// `workdir=` path resolves (it is the upper layer's workdir).
    fn mount_data(&mut self, data: &str, fsconfig: Option<&[crate::params::FsParam]>) -> Result<Reply, BackendError> {
        use crate::params::{Params, PathRole};
        let refusal = |e: MountError| match e {
            MountError::Refused { errno, .. } => Ok(Reply::MountRefused(errno)),
            MountError::NotModelled(what) => Err(BackendError::NotModelled(what)),
        };
        let layers = &self.layers;
        let resolve = |role, name: &str| role == PathRole::Work || layers.contains_key(name);
        let parsed = match fsconfig {
            None => Params::parse_with(data, resolve),
            Some(calls) => match Params::parse_fsconfig(calls, resolve) {
                Ok(p) => Ok(p),
                Err((call, MountError::Refused { errno, .. })) => return Ok(Reply::CallRefused { call, errno }),
                Err((_, e)) => Err(e),
            },
        };
        let params = match parsed {
            Ok(p) => p,
            Err(e) => return refusal(e),
        };
        let options = match params.check_options() {
            Ok(_) => params.options,
            Err(e) => return refusal(e),
        };
        if params.upper.as_ref().is_some_and(|u| self.volatile_marked.contains(u)) {
            return Ok(Reply::MountRefused(Errno::EINVAL));
        }
        if let Err(e) = params.check_layers(|n| layers.contains_key(n)) {
            return refusal(e);
        }
        let lower_layers =
            params.regular_lowers().iter().map(|n| self.named(n).cloned()).collect::<Result<Vec<_>, _>>()?;
        let data_layers = params.data_lowers().iter().map(|n| self.named(n).cloned()).collect::<Result<Vec<_>, _>>()?;
        let upper_layer = params.upper.as_deref().map(|n| self.named(n).cloned()).transpose()?;
        match Overlay::mount_with_data(lower_layers, data_layers, upper_layer, options) {
            Ok(mut overlay) => {
                overlay.set_cache_policy(self.cache_policy);
                overlay.fds.file_handles = self.file_handles.clone();
                self.mounted = Some(Mounted { overlay, upper: params.upper.clone() });
                Ok(Reply::Done)
            }
            Err(e) => refusal(e),
        }
    }

    fn named(&self, name: &str) -> Result<&Layer, BackendError> {
        self.layers.get(name).ok_or_else(|| BackendError::Usage(format!("no layer named {name:?}")))
    }
}

impl Backend for ModelBackend {
    fn name(&self) -> &'static str {
        "model"
    }

    fn try_unmount(&mut self) -> Result<Reply, BackendError> {
        self.events.clear();
        let m = self.mounted.as_ref().ok_or_else(|| BackendError::Usage("unmount while unmounted".into()))?;
        if let Some(errno) = m.overlay.unmount_refused() {
            return Ok(Reply::MountRefused(errno));
        }
        self.exec(&Command::Unmount)
    }

    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        self.events.clear();
        match cmd {
            Command::Layer { name, content } => self.create_layer(name, content),
            Command::Mount { lowers, upper, options } => {
                self.unmounted("mount")?;
                if upper.as_ref().is_some_and(|u| self.volatile_marked.contains(u)) {
                    // Only an option conflict, EINVAL too, comes before the workdir check.
                    return Ok(Reply::MountRefused(Errno::EINVAL));
                }
                let lower_layers = lowers.iter().map(|n| self.named(n).cloned()).collect::<Result<Vec<_>, _>>()?;
                let upper_layer = upper.as_deref().map(|n| self.named(n).cloned()).transpose()?;
                match Overlay::mount(lower_layers, upper_layer, *options) {
                    Ok(mut overlay) => {
                        overlay.set_cache_policy(self.cache_policy);
                        overlay.fds.file_handles = self.file_handles.clone();
                        self.mounted = Some(Mounted { overlay, upper: upper.clone() });
                        Ok(Reply::Done)
                    }
                    Err(MountError::Refused { errno, .. }) => Ok(Reply::MountRefused(errno)),
                    Err(MountError::NotModelled(what)) => Err(BackendError::NotModelled(what)),
                }
            }
            Command::MountData { data, fsconfig } => {
                self.unmounted("mount")?;
                self.mount_data(data, fsconfig.as_deref())
            }
            Command::Unmount => {
                let m = self.mounted.take().ok_or_else(|| BackendError::Usage("unmount while unmounted".into()))?;
                self.file_handles = m.overlay.fds.file_handles.clone();
                if let (Some(name), Some(upper)) = (&m.upper, m.overlay.upper()) {
                    // The upper was mounted by this name, so the name is taken: its layer is
                    // replaced without a copy of the name.
                    match self.layers.get_mut(name) {
                        Some(layer) => *layer = upper.clone(),
                        None => {
                            self.layers.insert(name.clone(), upper.clone());
                        }
                    }
                    if crate::mount::leaves_volatile_marker(m.overlay.options(), true) {
                        self.volatile_marked.insert(name.clone());
                    }
                }
                Ok(Reply::Done)
            }
            Command::Op(op) => {
                let m =
                    self.mounted.as_mut().ok_or_else(|| BackendError::Usage("an operation needs a mount".into()))?;
                if let Some(what) = crate::fd::not_modelled(&m.overlay, op) {
                    return Err(BackendError::NotModelled(what));
                }
                let outcome = m.overlay.apply(op);
                self.events = m.overlay.take_events();
                if let Some(what) = m.overlay.take_unspecified() {
                    return Err(BackendError::NotModelled(what));
                }
                Ok(Reply::Outcome(outcome))
            }
            Command::Edit { layer, edit } => {
                self.unmounted("an offline edit")?;
                let l = self
                    .layers
                    .get_mut(layer)
                    .ok_or_else(|| BackendError::Usage(format!("no layer named {layer:?}")))?;
                let path = match edit {
                    Edit::Put { path, .. } | Edit::Link { path, .. } | Edit::Remove { path } => path,
                };
                if crate::layer::components(path).next().is_none() {
                    return Err(BackendError::Usage(format!(
                        "an edit needs a path below the layer root, not {path:?}"
                    )));
                }
                edit.apply_to(l)?;
                Ok(Reply::Done)
            }
            Command::DumpLayer { name } => match name.strip_suffix(INDEX_SUFFIX) {
                Some(upper) => Ok(Reply::Index(crate::index::dump_index(self.named(upper)?, &self.layers))),
                None => Ok(Reply::Layer(self.named(name)?.to_flat())),
            },
            Command::DumpMerged => {
                let m = self
                    .mounted
                    .as_mut()
                    .ok_or_else(|| BackendError::Usage("dumping the merged view needs a mount".into()))?;
                // On the overlay itself, not a clone: the kernel's lookups during the dump
                // record origins and impure parents, and so must the model's.
                let tree = m.overlay.dump_merged();
                m.overlay.take_events();
                if let Some(what) = m.overlay.take_unspecified() {
                    return Err(BackendError::NotModelled(what));
                }
                Ok(Reply::Merged(tree))
            }
            Command::DropCaches => {
                if let Some(m) = self.mounted.as_mut() {
                    m.overlay.drop_caches();
                }
                Ok(Reply::Done)
            }
            Command::OpAs { cred, op } => {
                let m =
                    self.mounted.as_mut().ok_or_else(|| BackendError::Usage("an operation needs a mount".into()))?;
                if let Some(what) = crate::fd::not_modelled(&m.overlay, op) {
                    return Err(BackendError::NotModelled(what));
                }
                let outcome = m.overlay.apply_as(op, cred);
                self.events = m.overlay.take_events();
                if let Some(what) = m.overlay.take_unspecified() {
                    return Err(BackendError::NotModelled(what));
                }
                Ok(Reply::Outcome(outcome))
            }
        }
    }

    fn exec_layer(&mut self, name: &str, content: &FlatLayer) -> Result<Reply, BackendError> {
        self.events.clear();
        self.create_layer(name, content)
    }

    fn events(&self) -> Vec<Event> {
        self.events.clone()
    }
}
