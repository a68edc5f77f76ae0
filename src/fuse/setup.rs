//! What `ovlsim mount` serves: an overlay mounted from a `mount -t overlay -o` option
//! string over real directories, or from a scenario's layers and mount.

use crate::errno::Errno;
use crate::layer::Layer;
use crate::mount::MountError;
use crate::overlay::Overlay;
use crate::params::{Params, PathRole};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why `ovlsim mount` cannot mount.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// What the kernel would refuse, with its errno and its log message.
    #[error("{errno}: {reason}")]
    Refused {
        /// The errno `mount(2)` would return.
        errno: Errno,
        /// Why.
        reason: String,
    },
    /// The kernel would mount it; the model does not model it.
    #[error("not modelled: {0}")]
    NotModelled(String),
    /// A layer directory or scenario that cannot be read.
    #[error("{0}")]
    Read(String),
}

impl From<MountError> for SetupError {
    fn from(e: MountError) -> SetupError {
        match e {
            MountError::Refused { errno, reason } => SetupError::Refused { errno, reason },
            MountError::NotModelled(m) => SetupError::NotModelled(m),
        }
    }
}

impl SetupError {
    /// The errno, for a refused mount.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SetupError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// An overlay to serve, and the real upper directory to write it through to, if any.
pub struct Served {
    /// The overlay.
    pub overlay: Overlay,
    /// The real upper directory (`upperdir=` of an option string).
    pub upper_dir: Option<PathBuf>,
}

/// The overlay an option string describes, its layers read from the directories it names
/// ([`Layer::from_dir`]). The string is read and checked as the kernel reads it
/// ([`Params::parse_with`], [`Params::check_options`], [`Params::check_layers`]): a path
/// that does not exist is ENOENT, one that is not a directory EINVAL ("X is not a
/// directory", `ovl_mount_dir_check`; observed on 6.18), as `mount(2)` answers them. A
/// relative path is taken from the working directory, as `mount` takes it.
pub fn from_options(data: &str) -> Result<Served, SetupError> {
    let mut not_dir: Option<String> = None;
    let params = Params::parse_with(data, |_, name| match std::fs::metadata(name) {
        Ok(m) => {
            if !m.is_dir() && not_dir.is_none() {
                not_dir = Some(name.to_owned());
            }
            true
        }
        Err(_) => false,
    })?;
    if let Some(n) = not_dir {
        return Err(SetupError::Refused { errno: Errno::EINVAL, reason: format!("{n} is not a directory") });
    }
    let options = params.check_options()?;
    let canon = |p: &str| std::fs::canonicalize(p).ok();
    let layer_paths: Vec<PathBuf> =
        params.lowers.iter().map(|l| l.name.as_str()).chain(params.upper.as_deref()).filter_map(canon).collect();
    params.check_layers(|w| canon(w).is_some_and(|w| layer_paths.contains(&w)))?;
    let read = |name: &str| Layer::from_dir(name).map_err(|e| SetupError::Read(e.to_string()));
    // The same directory named twice is one layer, so that the model sees the conflict.
    let mut by_path: BTreeMap<PathBuf, Layer> = BTreeMap::new();
    let mut layer = |name: &str| -> Result<Layer, SetupError> {
        let key = canon(name).unwrap_or_else(|| PathBuf::from(name));
        if let Some(l) = by_path.get(&key) {
            return Ok(l.clone());
        }
        let l = read(name)?;
        by_path.insert(key, l.clone());
        Ok(l)
    };
    let lowers = params.regular_lowers().iter().map(|n| layer(n)).collect::<Result<Vec<_>, _>>()?;
    let data = params.data_lowers().iter().map(|n| layer(n)).collect::<Result<Vec<_>, _>>()?;
    let upper = params.upper.as_deref().map(&mut layer).transpose()?;
    let overlay = Overlay::mount_with_data(lowers, data, upper, options)?;
    Ok(Served { overlay, upper_dir: params.upper.as_deref().map(PathBuf::from) })
}

/// The overlay a scenario mounts before its first step, from its layers (its steps are not
/// run). Nothing is written through: the layers are the scenario's.
pub fn from_scenario(file: &Path) -> Result<Served, SetupError> {
    let s = crate::scenario::load(file).map_err(|e| SetupError::Read(e.to_string()))?;
    let shown = file.display();
    let Some(m) = &s.mount else {
        return Err(SetupError::Read(format!("{shown}: the scenario has no `mount:` to serve")));
    };
    let layers: BTreeMap<&str, Layer> = s.layers.iter().map(|(n, f)| (n.as_str(), Layer::from_flat(f))).collect();
    let get =
        |n: &str| layers.get(n).cloned().ok_or_else(|| SetupError::Read(format!("{shown}: no layer named {n:?}")));
    let (lowers, data, upper, options) = match &m.data {
        Some(data) => {
            let p = Params::parse_with(data, |role, n| role == PathRole::Work || layers.contains_key(n))?;
            let options = p.check_options()?;
            p.check_layers(|n| layers.contains_key(n))?;
            (p.regular_lowers(), p.data_lowers(), p.upper.clone(), options)
        }
        None => (m.lowers.clone(), Vec::new(), m.upper.clone(), m.options),
    };
    let lowers = lowers.iter().map(|n| get(n)).collect::<Result<Vec<_>, _>>()?;
    let data = data.iter().map(|n| get(n)).collect::<Result<Vec<_>, _>>()?;
    let upper = upper.as_deref().map(get).transpose()?;
    Ok(Served { overlay: Overlay::mount_with_data(lowers, data, upper, options)?, upper_dir: None })
}
