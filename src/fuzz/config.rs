//! What the generator draws: layer features, mount options, operations and path shapes,
//! each of which can be switched off for an implementation that lacks it, so that it is
//! still tested on the rest.
//!
//! [`GenConfig::default`] is everything the fuzzer draws against the kernel; its draws are
//! the same, seed for seed, as before the configuration existed (a switched-off feature
//! only takes weight away from its arm, so a default configuration consumes the random
//! stream exactly as the fixed generator did, and saved regression seeds replay the same
//! cases). The switches added later (`drop_caches`, `shared_redirects`, `userxattr`) are
//! off by default for that reason: each adds an arm or a draw. `examples/gen_fingerprint.rs`
//! hashes the default draws of 500 seeds; the number stayed the same across that change.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Every operation the generator can draw, by [`crate::ops::Op::name`].
pub const OP_NAMES: [&str; 22] = [
    "stat",
    "lstat",
    "open",
    "read",
    "write",
    "truncate",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "link",
    "symlink",
    "readlink",
    "readdir",
    "chmod",
    "chown",
    "utimes",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "mknod",
];

/// The generator's configuration. Build one from [`GenConfig::default`] (everything) or
/// [`GenConfig::minimal`] (files and directories only), then switch features on or off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// Symlinks in layers, and `symlink`/`readlink` targets among the paths.
    pub symlinks: bool,
    /// Whiteouts (character devices 0/0) in layers.
    pub whiteouts: bool,
    /// Xattr whiteouts (`trusted.overlay.whiteout` files) in layers.
    pub xattr_whiteouts: bool,
    /// Opaque markers (`y`, `x`, and values that are not opaque) on layer directories and
    /// roots.
    pub opaque_dirs: bool,
    /// Redirect xattrs on layer directories (only redirects that lead nowhere).
    pub redirects: bool,
    /// Hard links inside a layer.
    pub hard_links: bool,
    /// FIFOs in layers.
    pub fifos: bool,
    /// `user.*` xattrs on layer files and directories.
    pub user_xattrs: bool,
    /// Owners other than root in layers.
    pub owners: bool,
    /// At most this many lower layers (1 to [`super::gen::LOWER_COUNT_MAX`]).
    pub lowers_max: usize,
    /// Mounts without an upper layer (read-only overlays).
    pub lower_only_mounts: bool,
    /// `redirect_dir` modes other than `off`.
    pub redirect_dir: bool,
    /// Read-only mounts (`ro`).
    pub read_only: bool,
    /// `xino=on`.
    pub xino: bool,
    /// Unmounting and mounting again within a case.
    pub remounts: bool,
    /// Offline edits of layers between mounts (needs `remounts`).
    pub offline_edits: bool,
    /// Paths with a `.` or `..` component or a trailing slash.
    pub odd_paths: bool,
    /// The operations drawn, by [`crate::ops::Op::name`] (see [`OP_NAMES`]).
    pub ops: BTreeSet<&'static str>,
    /// `drop_caches` steps while mounted ([`crate::backend::Command::DropCaches`]).
    pub drop_caches: bool,
    /// Redirects on upper directories that lead to a directory another name may show, so
    /// that two merged directories share a lower one (the one looked up second is ESTALE
    /// while the first one's inode is cached; see [`crate::icache`]). Not in lower layers,
    /// and no lower-only mount of the upper: there they alias non-directories, which is out
    /// of contract. Sequences that remove the directory holding the inode and then reach a
    /// copied-up child of it through the other name alias too, and a readdir can decide by
    /// tmpfs's entry order which name works (README, Scope): measured on the kernel with
    /// `examples/cache_fuzz.rs`, 2 of 2,000 cases (seed 3) diverged that way.
    pub shared_redirects: bool,
    /// `userxattr` mounts (with `redirect_dir=nofollow`): symlinks and special files are
    /// then copied up without an origin, and report the lower `st_ino` while cached.
    pub userxattr: bool,
}

impl Default for GenConfig {
    /// Everything the fuzzer draws against the kernel.
    fn default() -> GenConfig {
        GenConfig {
            symlinks: true,
            whiteouts: true,
            xattr_whiteouts: true,
            opaque_dirs: true,
            redirects: true,
            hard_links: true,
            fifos: true,
            user_xattrs: true,
            owners: true,
            lowers_max: super::gen::LOWER_COUNT_MAX,
            lower_only_mounts: true,
            redirect_dir: true,
            read_only: true,
            xino: true,
            remounts: true,
            offline_edits: true,
            odd_paths: true,
            ops: OP_NAMES.iter().copied().collect(),
            drop_caches: false,
            shared_redirects: false,
            userxattr: false,
        }
    }
}

impl GenConfig {
    /// Regular files and directories in layers, one mount with an upper and default
    /// options, plain absolute paths, and the operations `stat`, `lstat`, `read`,
    /// `write`, `mkdir`, `rmdir`, `unlink` and `readdir`: what the smallest overlay
    /// implementation does.
    pub fn minimal() -> GenConfig {
        GenConfig {
            symlinks: false,
            whiteouts: false,
            xattr_whiteouts: false,
            opaque_dirs: false,
            redirects: false,
            hard_links: false,
            fifos: false,
            user_xattrs: false,
            owners: false,
            lowers_max: super::gen::LOWER_COUNT_MAX,
            lower_only_mounts: false,
            redirect_dir: false,
            read_only: false,
            xino: false,
            remounts: false,
            offline_edits: false,
            odd_paths: false,
            ops: ["stat", "lstat", "read", "write", "mkdir", "rmdir", "unlink", "readdir"].into_iter().collect(),
            drop_caches: false,
            shared_redirects: false,
            userxattr: false,
        }
    }

    /// This configuration with the named operations switched off. Errors: a name that is
    /// not in [`OP_NAMES`].
    pub fn without_ops(mut self, names: &[&str]) -> Result<GenConfig, String> {
        for n in names {
            let known = OP_NAMES.iter().find(|k| *k == n).ok_or_else(|| format!("no operation named {n:?}"))?;
            self.ops.remove(known);
        }
        Ok(self)
    }

    /// Whether operation `name` is drawn.
    pub fn op(&self, name: &str) -> bool {
        self.ops.contains(name)
    }

    /// A weight `w` if `on`, else 0: an arm of a weighted choice that is switched off is
    /// never drawn, and the other arms keep their weights.
    pub(crate) fn weight(on: bool, w: u32) -> u32 {
        if on {
            w
        } else {
            0
        }
    }

    /// Checks the configuration: at least one operation, 1 to
    /// [`super::gen::LOWER_COUNT_MAX`] lowers, offline edits only with remounts.
    pub fn check(&self) -> Result<(), String> {
        if self.ops.is_empty() {
            return Err("the configuration draws no operation".into());
        }
        if !(1..=super::gen::LOWER_COUNT_MAX).contains(&self.lowers_max) {
            return Err(format!("lowers_max must be 1 to {}", super::gen::LOWER_COUNT_MAX));
        }
        if self.offline_edits && !self.remounts {
            return Err("offline edits need remounts".into());
        }
        Ok(())
    }
}

thread_local! {
    static CURRENT: RefCell<Arc<GenConfig>> = RefCell::new(Arc::new(GenConfig::default()));
}

/// The configuration [`super::ModelMachine`] starts its cases with on this thread.
pub fn current() -> Arc<GenConfig> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with `config` as this thread's generator configuration, so that
/// [`super::ModelMachine`] (whose `init_state` takes no arguments) draws by it; the
/// previous configuration is restored afterwards, even if `f` panics.
pub fn with_config<R>(config: GenConfig, f: impl FnOnce() -> R) -> R {
    struct Restore(Arc<GenConfig>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.clone();
            CURRENT.with(|c| *c.borrow_mut() = prev);
        }
    }
    let _restore = Restore(CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), Arc::new(config))));
    f()
}
