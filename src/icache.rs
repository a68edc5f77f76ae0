//! The overlay inodes the kernel still holds: what a lookup finds in the inode cache, and
//! what a copy-up leaves in it (kernel: `fs/overlayfs/inode.c`, `ovl_get_inode`,
//! `ovl_hash_bylower`, `ovl_verify_inode`; the lower stack lives in the overlay inode,
//! `OVL_I_E`).
//!
//! The kernel keeps an overlay inode for as long as a dentry refers to it, and keeps
//! dentries until memory runs short or `drop_caches` asks. [`InodeCache`] is that cache as it
//! stands when nothing is evicted, which is what a short sequence of calls meets: every
//! inode made since the mount (or the last [`Overlay::drop_caches`]) is still there, except
//! those whose last name was removed. Three things in it change answers:
//!
//! - **Directories are hashed by their top-most lower directory.** Two merged names that
//!   share it (an upper `redirect` to a lower directory another name also shows) cannot both
//!   have an inode: the second lookup finds the first one's inode with another upper, and is
//!   ESTALE ([`Overlay::get_inode`]).
//! - **A copy-up keeps the lower in the inode.** A non-directory hashed by its lower (one
//!   lower link) keeps that lower after its copy-up even when the copy records no origin
//!   (symlinks and special files under `userxattr`, whose upper cannot hold `user.*`
//!   xattrs): while the inode lives, it reports the lower `st_ino` and moves as an object
//!   with an origin ([`Overlay::keep_lower`]). Only the name that was copied up (and
//!   renamed) reaches that inode: a name `link` makes is dropped from the dcache and looked
//!   up afresh (`ovl_instantiate`: "Force lookup of new upper hardlink"), and a fresh lookup
//!   sees a pure upper object, hashed by its upper inode.
//! - **An indexed inode's link count.** An upper indexed from a lower with one link
//!   (`nfs_export=on`) has a merged count that no xattr gives back (`ovl_get_nlink` reads
//!   none for such a lower): it lives in the overlay inode, as long as a dentry that a lookup
//!   made holds it ([`LiveNlink`]); a new inode counts the upper's links, the index entry's
//!   included.
//!
//! Not kept: non-directories hashed by their lower without a copy-up. Two merged names show
//! one lower non-directory only through two directories that share a lower one (the second
//! of which is ESTALE while the first lives) or after offline edits (the fuzzer makes none
//! such); see the README's scope.
//!
//! Both maps are persistent (`imbl`), so an overlay's clone is O(1) and goes its own way.
//! They hash with [`crate::dcache`]'s multiply-rotate, not SipHash: a lookup probes them
//! once, and SipHash was most of that probe's cost.

use crate::dcache::KeyHash;
use crate::errno::{Errno, SysResult};
use crate::layer::Ino;
use crate::lookup::{Dentry, LowerPath};
use crate::overlay::Overlay;

/// A persistent map hashed with [`KeyHash`].
type Map<K, V> = imbl::GenericHashMap<K, V, KeyHash, imbl::shared_ptr::DefaultSharedPtr>;
/// A persistent set hashed with [`KeyHash`].
type Set<A> = imbl::GenericHashSet<A, KeyHash, imbl::shared_ptr::DefaultSharedPtr>;

/// The overlay inodes of one mount, as far as they change answers.
#[derive(Clone, Debug, Default)]
pub(crate) struct InodeCache {
    /// Directory inodes hashed by their top-most lower directory: the upper directory each
    /// holds (`None` for a lower-only directory).
    dirs: Map<LowerPath, Option<Ino>>,
    /// Upper non-directories copied up without an origin, with the lower their inode keeps
    /// and the one name (upper parent directory, name) whose dentry holds that inode.
    kept: Map<Ino, Kept>,
    /// The overlay inodes of indexed upper non-directories whose origin has one link, by
    /// upper inode: their link count, which no xattr gives back once they are evicted
    /// (`ovl_get_nlink` reads none for such a lower), and the names whose dentries hold
    /// them ([`crate::index`], [`LiveNlink`]).
    pub(crate) live_nlink: Map<Ino, LiveNlink>,
    /// Index entries left by a copy-up that failed with EPERM (`index=on` under
    /// `userxattr`, [`Overlay::index_copy_up_denied`]): their overlay inode, made from the
    /// lower before the copy-up, still shows the lower's link count; once evicted, the
    /// entry's own count.
    pub(crate) failed_index: Set<Ino>,
}

/// The overlay inode of an indexed upper non-directory whose origin has one link: its
/// `i_nlink`, and the names (upper parent directory, name) whose cached dentries hold it.
/// It lives while one does, or an open file (kernel: `d_delete` of the last one, then `iput`, with
/// `generic_delete_inode` as overlay's `drop_inode`); a name `link` makes holds none
/// (`ovl_instantiate`: "Force lookup of new upper hardlink", `d_drop`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveNlink {
    pub(crate) nlink: u32,
    pub(crate) names: Set<(Ino, Box<str>)>,
}

/// The lower an inode keeps after a copy-up without an origin, and where its dentry is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kept {
    lower: LowerPath,
    dir: Ino,
    name: Box<str>,
}

impl InodeCache {
    /// The lower that the inode of upper non-directory `upper`, reached as `name` in upper
    /// directory `dir`, keeps from its copy-up.
    pub(crate) fn kept_lower(&self, upper: Ino, dir: Ino, name: &str) -> Option<LowerPath> {
        // Mostly empty: no hash computed then.
        if self.kept.is_empty() {
            return None;
        }
        self.kept.get(&upper).filter(|k| k.dir == dir && *k.name == *name).map(|k| k.lower)
    }

    /// Whether the inode of upper non-directory `upper` keeps a lower, by whichever name.
    pub(crate) fn keeps_lower(&self, upper: Ino) -> bool {
        self.kept.contains_key(&upper)
    }

    /// How many inodes the cache holds.
    pub(crate) fn len(&self) -> usize {
        self.dirs.len() + self.kept.len()
    }
}

impl Overlay {
    /// Gets the overlay inode for a directory that a lookup found, from the cache or new.
    ///
    /// Kernel: `ovl_get_inode`. A directory with a lower part is hashed by its top-most lower
    /// directory (`ovl_hash_bylower`); when an inode with that key is cached, it must hold
    /// the same upper directory, or none when the lookup found none (`ovl_verify_inode`,
    /// strict), else the lookup fails. The root's inode is never hashed (`ovl_get_root`).
    /// Errors: ESTALE.
    pub(crate) fn get_inode(&mut self, d: &Dentry) -> SysResult<()> {
        let Some(&key) = d.lowers.first().filter(|_| d.is_dir() && !d.is_root()) else { return Ok(()) };
        match self.icache.dirs.get(&key) {
            Some(&held) if held != d.upper => Err(Errno::ESTALE),
            Some(_) => Ok(()),
            None => {
                self.icache.dirs.insert(key, d.upper);
                Ok(())
            }
        }
    }

    /// Records what a copy-up of `d` to upper inode `copy` leaves in its overlay inode.
    ///
    /// Kernel: `ovl_copy_up_one` ends with `ovl_inode_update`: the inode keeps its hash key
    /// and lower stack and gains the upper. A directory's inode now holds its copy. A
    /// non-directory hashed by its lower (`ovl_hash_bylower`: one link) whose copy records
    /// no origin still has the lower: `ovl_path_type` gives it `__OVL_PATH_ORIGIN` by
    /// `OVL_CONST_INO`, and `ovl_getattr` the lower's `st_ino`, until the inode is evicted.
    pub(crate) fn keep_lower(&mut self, dir: Ino, d: &Dentry, copy: Ino, has_origin: bool) {
        let Some(&lower) = d.lowers.first() else { return };
        if d.is_dir() {
            if self.icache.dirs.contains_key(&lower) {
                self.icache.dirs.insert(lower, Some(copy));
            }
        } else if !has_origin && self.lowers[lower.layer].get(lower.ino).nlink == 1 {
            self.icache.kept.insert(copy, Kept { lower, dir, name: d.name.as_str().into() });
        }
    }

    /// Follows the dentry of upper non-directory `ino` from `from` to `to` (upper directory,
    /// name) when a rename moves it: the dentry moves with its inode (kernel: `d_move`); so
    /// does the name of a [`LiveNlink`].
    pub(crate) fn move_kept(&mut self, ino: Ino, from: (Ino, &str), to: (Ino, &str)) {
        if let Some(live) = self.icache.live_nlink.get_mut(&ino) {
            if live.names.remove(&(from.0, from.1.into())).is_some() {
                live.names.insert((to.0, to.1.into()));
            }
        }
        if let Some(k) = self.icache.kept.get_mut(&ino) {
            if k.dir == from.0 && *k.name == *from.1 {
                k.dir = to.0;
                k.name = to.1.into();
            }
        }
    }

    /// Forgets the kept lower of upper non-directory `ino` when its dentry at `at` (upper
    /// directory, name) is removed, by unlink or by a rename over it: the inode goes with
    /// its last dentry. So does a [`LiveNlink`] with no name left, unless an open file holds
    /// it ([`Overlay::evict_unheld`]).
    pub(crate) fn forget_kept(&mut self, ino: Ino, at: (Ino, &str)) {
        if let Some(live) = self.icache.live_nlink.get_mut(&ino) {
            live.names.remove(&(at.0, at.1.into()));
            self.evict_unheld(ino);
        }
        if self.icache.kept_lower(ino, at.0, at.1).is_some() {
            self.icache.kept.remove(&ino);
        }
    }

    /// Forgets the inode of directory `d`, whose name was just removed: the dentry goes, and
    /// with its last reference the overlay inode (kernel: `d_delete`, then `iput` with
    /// `generic_delete_inode` as overlay's `drop_inode`).
    pub(crate) fn forget_dir(&mut self, d: &Dentry) {
        if let Some(key) = d.lowers.first().filter(|_| d.is_dir()) {
            if self.icache.dirs.get(key) == Some(&d.upper) {
                self.icache.dirs.remove(key);
            }
        }
    }

    /// How many overlay inodes the model holds in its inode cache.
    pub fn cached_inodes(&self) -> usize {
        self.icache.len()
    }
}

#[cfg(test)]
mod tests {
    use crate::errno::Errno;
    use crate::layer::{Inode, Layer};
    use crate::mount::{Options, RedirectDir};
    use crate::{Op, Outcome, Overlay};

    /// Lower `/a/f`; upper `/b` redirected to `/a`: two merged directories on one lower one.
    fn shared_lower() -> Overlay {
        let mut lower = Layer::new();
        lower.put("/a/f", Inode::file(b"lower f", 0o644));
        let mut upper = Layer::new();
        upper.put("/b/g", Inode::file(b"upper g", 0o644));
        let b = upper.walk(["b"]).expect("/b");
        upper.set_xattr(b, "trusted.overlay.redirect", b"/a");
        Overlay::mount(vec![lower], Some(upper), Options::default()).expect("mount")
    }

    fn stat(ov: &mut Overlay, path: &str) -> Outcome {
        ov.apply(&Op::Stat { path: path.into() })
    }

    fn ino(ov: &mut Overlay, path: &str) -> u64 {
        match ov.apply(&Op::Lstat { path: path.into() }) {
            Outcome::Stat(s) => s.ino,
            other => panic!("lstat {path}: {other:?}"),
        }
    }

    #[test]
    fn each_clone_keeps_its_own_inodes_and_drop_caches_empties_them() {
        let mut first = shared_lower();
        let mut fork = first.clone();
        assert!(matches!(stat(&mut first, "/a"), Outcome::Stat(_)));
        assert_eq!(stat(&mut first, "/b"), Outcome::Err(Errno::ESTALE));
        // The fork was cloned before /a's inode was made: /b is its first lookup.
        assert_eq!(fork.cached_inodes(), 0);
        assert!(matches!(stat(&mut fork, "/b"), Outcome::Stat(_)));
        assert_eq!(stat(&mut fork, "/a"), Outcome::Err(Errno::ESTALE));
        assert_eq!(stat(&mut first, "/b/g"), Outcome::Err(Errno::ESTALE), "the fork's lookups did not reach it");
        first.drop_caches();
        assert_eq!(first.cached_inodes(), 0);
        assert!(matches!(stat(&mut first, "/b/g"), Outcome::Stat(_)));
        assert_eq!(stat(&mut first, "/a"), Outcome::Err(Errno::ESTALE));
    }

    #[test]
    fn a_copy_without_origin_keeps_the_lower_ino_until_drop_caches() {
        let mut lower = Layer::new();
        lower.put("/s", Inode::symlink("f"));
        let options = Options { userxattr: true, redirect_dir: RedirectDir::Nofollow, ..Options::default() };
        let mut ov = Overlay::mount(vec![lower], Some(Layer::new()), options).expect("mount");
        let before = ino(&mut ov, "/s");
        assert_eq!(
            ov.apply(&Op::Rename { from: "/s".into(), to: "/t".into(), flags: Default::default() }),
            Outcome::Ok
        );
        assert_eq!(ino(&mut ov, "/t"), before, "the renamed dentry keeps its inode");
        let mut cold = ov.clone();
        cold.drop_caches();
        assert_ne!(ino(&mut cold, "/t"), before, "a fresh lookup finds a pure upper symlink");
        assert_eq!(ino(&mut ov, "/t"), before, "the clone's drop left this overlay's cache alone");
    }
}
