//! A layer's inode table: inode numbers to inodes, persistent (an O(1) clone, a write copies
//! only the path to its slot).
//!
//! A layer numbers its inodes itself, from [`super::ROOT_INO`] up, one after another, and
//! never reuses a number. So the table is a persistent vector (`imbl::Vector`, a relaxed
//! radix-balanced tree of 64-wide nodes) indexed by the number, with an empty slot where an
//! inode was dropped. Looking an inode up is an index into at most a few nodes, where the
//! hash map it replaced hashed the number and walked a hash trie: on the generated cases of
//! `examples/profile_model_mimalloc`, that map's code was 17% of the model's instructions
//! (BENCHMARKS.md, "Model per case: the inode table").

use super::{Ino, Inode, ROOT_INO};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The inodes of one layer, by number.
#[derive(Clone, Debug)]
pub(crate) struct InodeTable {
    /// Slot `ino - ROOT_INO` holds inode `ino`, or `None` once it is dropped.
    slots: imbl::Vector<Option<Arc<Inode>>>,
    /// The number of live inodes.
    live: usize,
    /// This table's contents' stamp ([`fresh_stamp`]): drawn anew whenever the table is made
    /// or may change, kept by a clone. Two tables with one stamp are one table and its
    /// unchanged clones. (`imbl::Vector::ptr_eq` cannot tell: it is false for the small
    /// vectors it keeps inline, as most layers' are, and the fuzzer's invariants rely on an
    /// O(1) answer for unchanged clones.)
    stamp: u64,
}

/// A stamp no table has had.
fn fresh_stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Default for InodeTable {
    fn default() -> InodeTable {
        InodeTable { slots: imbl::Vector::new(), live: 0, stamp: fresh_stamp() }
    }
}

impl InodeTable {
    /// The slot index of `ino`, if it is a number this table can hold.
    fn slot(ino: Ino) -> Option<usize> {
        ino.checked_sub(ROOT_INO).and_then(|i| usize::try_from(i).ok())
    }

    /// The number of live inodes.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Whether one table is an unchanged clone of the other, in O(1).
    pub(crate) fn ptr_eq(&self, other: &InodeTable) -> bool {
        self.stamp == other.stamp
    }

    /// Inode `ino`, if live.
    pub(crate) fn get(&self, ino: &Ino) -> Option<&Arc<Inode>> {
        self.slots.get(Self::slot(*ino)?)?.as_ref()
    }

    /// Inode `ino`, if live, to change in place.
    pub(crate) fn get_mut(&mut self, ino: &Ino) -> Option<&mut Arc<Inode>> {
        let slot = Self::slot(*ino)?;
        if self.slots.get(slot)?.is_none() {
            return None;
        }
        self.stamp = fresh_stamp();
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Puts `inode` at number `ino`, growing the table with empty slots up to it; returns
    /// the inode it replaces.
    ///
    /// # Panics
    /// If `ino` is below [`ROOT_INO`] or too large for an index: a broken layer invariant.
    pub(crate) fn insert(&mut self, ino: Ino, inode: Arc<Inode>) -> Option<Arc<Inode>> {
        let slot = Self::slot(ino).expect("layer invariant: inode numbers start at ROOT_INO");
        while self.slots.len() <= slot {
            self.slots.push_back(None);
        }
        self.stamp = fresh_stamp();
        let old = self.slots.set(slot, Some(inode));
        if old.is_none() {
            self.live += 1;
        }
        old
    }

    /// Drops inode `ino`; returns it, if it was live.
    pub(crate) fn remove(&mut self, ino: &Ino) -> Option<Arc<Inode>> {
        let slot = Self::slot(*ino)?;
        self.slots.get(slot)?.as_ref()?;
        self.stamp = fresh_stamp();
        let old = self.slots.set(slot, None);
        self.live -= 1;
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_their_numbers_and_clones_are_independent() {
        let mut t = InodeTable::default();
        assert!(t.get(&ROOT_INO).is_none() && t.get(&0).is_none() && t.remove(&5).is_none());
        assert!(t.insert(ROOT_INO, Arc::new(Inode::dir(0o755))).is_none());
        // A number past the end grows the table with empty slots.
        assert!(t.insert(ROOT_INO + 100, Arc::new(Inode::file(b"x", 0o644))).is_none());
        assert_eq!(t.len(), 2);
        assert!(t.get(&(ROOT_INO + 50)).is_none() && t.get_mut(&(ROOT_INO + 50)).is_none());
        let before = t.clone();
        assert!(before.ptr_eq(&t), "an unchanged clone, whatever the vector's inner form");
        assert!(!InodeTable::default().ptr_eq(&InodeTable::default()), "two tables made apart");
        Arc::make_mut(t.get_mut(&(ROOT_INO + 100)).expect("live")).mode = 0o600;
        assert!(!before.ptr_eq(&t), "a change");
        assert_eq!(t.get(&(ROOT_INO + 100)).expect("live").mode, 0o600);
        assert_eq!(before.get(&(ROOT_INO + 100)).expect("live").mode, 0o644, "the clone is unchanged");
        assert!(t.insert(ROOT_INO + 100, Arc::new(Inode::file(b"y", 0o644))).is_some(), "a replacement");
        assert_eq!(t.len(), 2);
        assert!(t.remove(&ROOT_INO).is_some() && t.remove(&ROOT_INO).is_none());
        assert_eq!((t.len(), before.len()), (1, 2));
        assert!(t.get(&ROOT_INO).is_none() && before.get(&ROOT_INO).is_some());
    }
}
