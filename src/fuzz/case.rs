//! A generated case: the layer stack and first mount ([`CaseStart`]), then the commands
//! ([`Case`]). A case turns into the plain [`Command`] list that both backends run.

use crate::backend::{BackendError, Command, Reply};
use crate::layer::FlatLayer;
use crate::mount::Options;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The layers of a case and the options of its first mount.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseStart {
    /// The lower layers, top-most first, with their names (`L0`, `L1`, ...).
    pub lowers: Vec<(String, FlatLayer)>,
    /// The upper layer and its name (`U`), if any.
    pub upper: Option<(String, FlatLayer)>,
    /// The options of the first mount.
    pub options: Options,
    /// How many of `lowers` (the last ones, `D0`, `D1`, ...) are data-only lower layers
    /// ([`crate::data_only`]): the case's mounts are then option strings
    /// ([`CaseStart::mount_with`]). 0 in cases without them, and then not serialized, so
    /// that a case's form (and the generator's fingerprint) is as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub data: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl CaseStart {
    /// Every layer with its name: the lowers, then the upper.
    pub fn layers(&self) -> impl Iterator<Item = &(String, FlatLayer)> {
        self.lowers.iter().chain(self.upper.iter())
    }

    /// Every layer name: the lowers, then the upper.
    pub fn layer_names(&self) -> Vec<String> {
        self.layers().map(|(n, _)| n.clone()).collect()
    }

    /// Whether `name` is one of the case's layers.
    pub fn has_layer(&self, name: &str) -> bool {
        self.layers().any(|(n, _)| n == name)
    }

    /// Whether `name` is the upper layer.
    pub fn is_upper(&self, name: &str) -> bool {
        self.upper.as_ref().is_some_and(|(n, _)| n == name)
    }

    /// The first mount.
    pub fn mount(&self) -> Command {
        self.mount_with(self.options, self.upper.is_some())
    }

    /// A mount of the case's lowers with `options`, over its upper if `with_upper` (and it
    /// has one): a [`Command::Mount`], or with data-only layers ([`CaseStart::data`]) an
    /// option string `lowerdir=L0:L1::D0::D1,upperdir=U,workdir=work,...`
    /// ([`Command::MountData`]; `work` names no layer, so it is the upper's own workdir;
    /// a read-only mount is not expressed there).
    pub fn mount_with(&self, options: Options, with_upper: bool) -> Command {
        let lowers: Vec<String> = self.lowers.iter().map(|(n, _)| n.clone()).collect();
        let upper = self.upper.as_ref().filter(|_| with_upper).map(|(n, _)| n.clone());
        if self.data == 0 {
            return Command::Mount { lowers, upper, options };
        }
        let split = lowers.len().saturating_sub(self.data);
        let mut data = format!("lowerdir={}", lowers[..split].join(":"));
        for d in &lowers[split..] {
            data.push_str("::");
            data.push_str(d);
        }
        if let Some(u) = upper {
            data.push_str(&format!(",upperdir={u},workdir=work"));
        }
        let rest = options.to_mount_string();
        if !rest.is_empty() {
            data.push(',');
            data.push_str(&rest);
        }
        Command::MountData { data, fsconfig: None }
    }

    /// The commands that build the layers and make the first mount.
    pub fn setup(&self) -> Vec<Command> {
        let mut out: Vec<Command> = self
            .layers()
            .map(|(name, content)| Command::Layer { name: name.clone(), content: content.clone() })
            .collect();
        out.push(self.mount());
        out
    }

    /// Whether some layer holds a metacopy xattr.
    pub fn has_metacopy(&self) -> bool {
        use crate::layer::FlatEntry;
        self.layers().any(|(_, l)| {
            l.entries.iter().any(|e| match e {
                FlatEntry::Node { node, .. } => node.xattrs.keys().any(|k| k.ends_with(".overlay.metacopy")),
                FlatEntry::Link { .. } => false,
            })
        })
    }

    /// Whether some layer holds a redirect xattr (offline lower edits are then undefined).
    pub fn has_redirects(&self) -> bool {
        use crate::layer::FlatEntry;
        self.layers().any(|(_, l)| {
            l.entries.iter().any(|e| match e {
                FlatEntry::Node { node, .. } => node.xattrs.keys().any(|k| k.ends_with(".overlay.redirect")),
                FlatEntry::Link { .. } => false,
            })
        })
    }
}

impl fmt::Debug for CaseStart {
    /// One line of JSON, so that a regression file's comment stays on one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

/// The commands that end a case: the merged view (while mounted), an unmount, and a dump
/// of each of `layer_names` as on disk.
pub fn final_commands(mounted: bool, layer_names: &[String]) -> Vec<Command> {
    let mut out = Vec::new();
    if mounted {
        out.push(Command::DumpMerged);
        out.push(Command::Unmount);
    }
    out.extend(layer_names.iter().map(|n| Command::DumpLayer { name: n.clone() }));
    out
}

/// The layers a case dumps at the end: the upper (which the overlay writes), and every
/// layer that an offline edit touched (to compare how the edits were made). The other
/// lowers are as built, and building is compared by the layers' use.
///
/// When some mount of the case asks for `index=on` or `nfs_export=on` over the upper, the
/// upper's workdir `index/` is dumped last ([`crate::backend::INDEX_SUFFIX`]), so that the
/// index the copy-ups left is compared too.
pub fn dumped_layers(start: &CaseStart, steps: &[Command]) -> Vec<String> {
    let mut out: Vec<String> = start
        .layer_names()
        .into_iter()
        .filter(|n| start.is_upper(n) || steps.iter().any(|s| matches!(s, Command::Edit { layer, .. } if layer == n)))
        .collect();
    let indexed = |o: &Options| o.index || o.nfs_export;
    let index_mounts = indexed(&start.options)
        || steps.iter().any(|s| match s {
            Command::Mount { upper: Some(_), options, .. } => indexed(options),
            Command::MountData { fsconfig: Some(calls), .. } => fsconfig_mount(calls, |n| start.has_layer(n))
                .is_some_and(|(_, upper, options)| upper.is_some() && indexed(&options)),
            _ => false,
        });
    if let Some((u, _)) = start.upper.as_ref().filter(|_| index_mounts) {
        out.push(format!("{u}{}", crate::backend::INDEX_SUFFIX));
    }
    out
}

/// The regular lowers, the upper and the options of a mount by `fsconfig(2)` calls
/// ([`Command::MountData`]), as the model reads them ([`crate::params::Params::parse_fsconfig`],
/// with the layers `is_layer` accepts and any workdir); `None` when a call is refused.
pub fn fsconfig_mount(
    calls: &[crate::params::FsParam],
    is_layer: impl Fn(&str) -> bool,
) -> Option<(Vec<String>, Option<String>, Options)> {
    use crate::params::PathRole;
    let resolve = |role, name: &str| role == PathRole::Work || is_layer(name);
    let p = crate::params::Params::parse_fsconfig(calls, resolve).ok()?;
    Some((p.regular_lowers(), p.upper.clone(), p.options))
}

/// A whole case: the start, then the generated steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Case {
    /// The layers and the first mount.
    pub start: CaseStart,
    /// The generated commands, after the first mount.
    pub steps: Vec<Command>,
}

impl Case {
    /// Every command of the case: the setup, then the steps. The final checks
    /// ([`final_commands`]) depend on whether the overlay is mounted at the end, which the
    /// runner tracks.
    pub fn commands(&self) -> Vec<Command> {
        let mut out = self.start.setup();
        out.extend(self.steps.iter().cloned());
        out
    }
}

/// What a backend answered to one command: a reply, a harness error, or (for the model
/// only) a panic, which is a broken model invariant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The backend carried the command out.
    Reply(Reply),
    /// The backend refused or failed the command.
    Error(BackendError),
    /// The model panicked, with this message.
    Panic(String),
}

impl From<Result<Reply, BackendError>> for Answer {
    fn from(r: Result<Reply, BackendError>) -> Answer {
        match r {
            Ok(reply) => Answer::Reply(reply),
            Err(e) => Answer::Error(e),
        }
    }
}

impl Answer {
    /// Whether this is [`BackendError::NotModelled`]: the case is to be discarded.
    pub fn is_not_modelled(&self) -> bool {
        matches!(self, Answer::Error(BackendError::NotModelled(_)))
    }

    /// Whether this is a refusal by a system under test: [`BackendError::NotModelled`] (a
    /// worker program that does not do what the command asks) or
    /// [`BackendError::NotApplicable`] (a dialect that cannot express it). The case is
    /// discarded, never counted as agreement.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Answer::Error(BackendError::NotModelled(_) | BackendError::NotApplicable(_)))
    }

    /// Whether this is a successful mount.
    pub fn is_done(&self) -> bool {
        matches!(self, Answer::Reply(Reply::Done))
    }
}
