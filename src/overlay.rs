//! The overlay: lowers, an optional upper, and the options. Clone is O(1).

use crate::errno::Errno;
use crate::layer::Layer;
use crate::mount::{MountError, Options};
use crate::ops::{Op, Outcome};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Something the overlay did to its upper layer, reported so that a user can see why a
/// result is what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An object was copied up from a lower layer (parents are reported first).
    CopyUp {
        /// The merged path.
        path: String,
    },
    /// A whiteout was created in the upper.
    Whiteout {
        /// The merged path.
        path: String,
    },
    /// An upper directory was made opaque.
    Opaque {
        /// The merged path.
        path: String,
    },
    /// A redirect was set on an upper directory.
    Redirect {
        /// The merged path.
        path: String,
        /// The redirect value.
        target: String,
    },
}

/// Which layer an object of the merged view comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LayerRef {
    /// The upper layer.
    Upper,
    /// Lower layer `n`, 0 being the top-most.
    Lower(usize),
}

/// A mounted overlay.
#[derive(Clone, Debug)]
pub struct Overlay {
    pub(crate) lowers: Arc<[Layer]>,
    pub(crate) upper: Option<Layer>,
    pub(crate) options: Options,
    pub(crate) events: Vec<Event>,
}

impl Overlay {
    /// Mounts `lowers` (top-most first, as in `lowerdir=L0:L1`) under an optional `upper`.
    pub fn mount(
        lowers: Vec<Layer>,
        upper: Option<Layer>,
        options: Options,
    ) -> Result<Overlay, MountError> {
        let _ = Errno::EINVAL;
        Ok(Overlay {
            lowers: lowers.into(),
            upper,
            options,
            events: Vec::new(),
        })
    }

    /// The upper layer as it would be on disk now.
    pub fn upper(&self) -> Option<&Layer> {
        self.upper.as_ref()
    }

    /// The lower layers, top-most first.
    pub fn lowers(&self) -> &[Layer] {
        &self.lowers
    }

    /// The effective options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Carries out `op` on the merged view.
    pub fn apply(&mut self, op: &Op) -> Outcome {
        let _ = op;
        Outcome::Err(Errno::ENOSYS)
    }

    /// The layers that make up the object at `path` (no final symlink followed), top-most
    /// first: one layer for a non-directory, every merged layer for a directory. `None` when
    /// the path does not resolve.
    pub fn provenance(&self, path: &str) -> Option<Vec<LayerRef>> {
        let _ = path;
        None
    }

    /// The events caused since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}
