//! Write-through: after every change, the real upper directory is made to hold the model's
//! upper in the kernel's on-disk form (whiteouts as character devices 0/0, overlay's
//! `trusted.overlay.*` xattrs), as [`crate::layer::Layer::to_flat`] gives it.
//!
//! Only what changed is written: the flat forms before and after are compared path by
//! path. Removed paths go first (deepest first), then new and changed ones, parents first;
//! each is written under a temporary name and renamed into place
//! ([`crate::kernel::layers::through`]), and every other name of a rewritten hard-linked
//! node is linked again. A directory that stays one is changed in place.
//!
//! Not written: the kernel's bookkeeping xattrs (`origin`, `impure`): the model keeps
//! origins outside the xattrs (see the crate docs), and a layer dump leaves them out.

use crate::backend::BackendError;
use crate::kernel::layers::through;
use crate::layer::{FileType, FlatEntry, FlatLayer, Layer};
use std::collections::{HashMap, HashSet};

/// The real upper directory and the upper last written to it.
pub(crate) struct WriteThrough {
    dir: String,
    written: Layer,
    flat: FlatLayer,
}

impl WriteThrough {
    /// Starts from `upper`, which the directory `dir` holds now (it was read from it).
    pub(crate) fn new(dir: String, upper: &Layer) -> WriteThrough {
        WriteThrough { dir, written: upper.clone(), flat: upper.to_flat() }
    }

    /// Writes what changed since the last call.
    pub(crate) fn sync(&mut self, upper: &Layer) -> Result<(), BackendError> {
        if upper.ptr_eq(&self.written) {
            return Ok(());
        }
        let new = upper.to_flat();
        if new != self.flat {
            apply(&self.dir, &self.flat, &new)?;
        }
        self.written = upper.clone();
        self.flat = new;
        Ok(())
    }
}

/// Changes the layer directory `dir`, which holds `old`, to hold `new`.
fn apply(dir: &str, old: &FlatLayer, new: &FlatLayer) -> Result<(), BackendError> {
    let old_at: HashMap<&str, &FlatEntry> = old.entries.iter().map(|e| (e.path(), e)).collect();
    let new_at: HashMap<&str, &FlatEntry> = new.entries.iter().map(|e| (e.path(), e)).collect();
    for e in old.entries.iter().rev() {
        if !new_at.contains_key(e.path()) {
            through::remove(dir, e.path())?;
        }
    }
    if old.root != new.root {
        through::set_dir_meta(dir, "", &old.root, &new.root)?;
    }
    let mut rewritten: HashSet<&str> = HashSet::new();
    for e in &new.entries {
        match e {
            FlatEntry::Node { path, node } => match old_at.get(path.as_str()) {
                Some(FlatEntry::Node { node: o, .. }) if o == node => {}
                Some(FlatEntry::Node { node: o, .. }) if o.kind == FileType::Dir && node.kind == FileType::Dir => {
                    through::set_dir_meta(dir, path, o, node)?;
                }
                _ => {
                    through::put(dir, path, node)?;
                    rewritten.insert(path);
                }
            },
            FlatEntry::Link { path, to } => {
                let same = matches!(old_at.get(path.as_str()), Some(FlatEntry::Link { to: t, .. }) if t == to);
                if !same || rewritten.contains(to.as_str()) {
                    through::link(dir, path, to)?;
                }
            }
        }
    }
    Ok(())
}
