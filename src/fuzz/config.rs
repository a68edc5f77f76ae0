//! What the generator draws: layer features, mount options, operations and path shapes,
//! each of which can be switched off for an implementation that lacks it, so that it is
//! still tested on the rest.
//!
//! [`GenConfig::default`] is everything the fuzzer draws against the kernel. A switched-off
//! feature only takes weight away from its arm, so a configuration consumes the random
//! stream the same way whatever else is switched off; the switches added later
//! (`drop_caches`, `shared_redirects`, `userxattr`, `handles`) are off by default so that
//! the default draws stay the same, seed for seed. They changed once on purpose since:
//! when the generator began to draw straight from the RNG (issue 12), every seed (and
//! every saved regression seed) began to draw another case. `examples/gen_fingerprint.rs`
//! hashes the default draws of 500 seeds; a unit test pins the fingerprint of the
//! default draws (`profile::tests::default_draws_are_unchanged`).

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
    /// At most this many lower layers (1 to [`super::gen::LOWER_COUNT_LIMIT`]; the default is [`super::gen::LOWER_COUNT_MAX`]).
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
    /// The name alphabet of layers and paths (default [`super::gen::NAMES`]): names of 1 to
    /// 255 bytes, without `/` or NUL, neither `.` nor `..`, distinct and in byte order (the
    /// order of a layer's entries, so that generated layers are canonical).
    pub names: Vec<String>,
    /// The deepest path in layers and in most operations (default
    /// [`super::gen::DEPTH_MAX`]; at most [`super::gen::DEPTH_LIMIT`]).
    pub depth_max: usize,
    /// The weight of a subdirectory among a layer directory's children, against 3 for a
    /// non-directory (default 2): higher draws deeper trees.
    pub dir_weight: u32,
    /// At least this many lower layers (default 1; at most `lowers_max`).
    pub lowers_min: usize,
    /// Most lower layers sparse: a few entries each, so that the entries of a stack sit in
    /// few of its lowers (default off: every layer as full as any other).
    pub sparse_lowers: bool,
    /// Every mount with `userxattr`, and the markers drawn in layers under `user.overlay.`,
    /// with `trusted.overlay.` ones as decoys that must be ignored (default off: no
    /// `userxattr`, markers under `trusted.overlay.` with `user.overlay.` decoys).
    pub userxattr: bool,
    /// Markers on layer roots: opaque `y` and `x`, redirects, and the other namespace's
    /// marker, on lower and upper roots alike (default off: only `trusted.overlay.opaque=y`,
    /// rarely).
    pub root_markers: bool,
    /// `xino=auto` as well as `xino=on`, and either more often (default off).
    pub xino_auto: bool,
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
    /// Named handles ([`crate::ops::fd::FdOp`]): files and directories kept open across
    /// other operations, read, written, truncated, listed, seeked, changed (mode, owner,
    /// xattrs) and synced through, closed at
    /// every unmount (default off). Listings are drawn whole (a `getdents` of
    /// [`super::gen::GETDENTS_ALL`] entries) and seeks in a directory to 0, 1 or 2 (past `.`
    /// and `..`): where a batch ends inside a listing depends on the real directories'
    /// entry order, which the model does not keep (see [`crate::fd`]).
    pub handles: bool,
    /// `metacopy=on` in about half the mounts (with `redirect_dir` left to its implied `on`
    /// or drawn as ever, a conflict then refused as the kernel refuses it), and metacopy
    /// files in layers: an upper or middle lower file with the `metacopy` xattr, whose data
    /// comes from below (default off, so that campaigns of the other profiles keep their
    /// meaning; [`crate::metacopy`]).
    pub metacopy: bool,
    /// Operations as callers other than root and with umasks
    /// ([`crate::backend::Command::OpAs`], [`super::gen::cred`]; default off).
    pub callers: bool,
    /// `index=on` and `nfs_export=on` in mounts ([`crate::index`]; with their refusals:
    /// `nfs_export=on` with an explicit `index=off` or `metacopy=on`, EINVAL), hard links
    /// in layers four times as often (files, symlinks and FIFOs, several names across
    /// directories, so that copy-ups index them), remounts that drop the top-most lower
    /// (ESTALE under `index=on`) or the bottom one (added back below by a later remount),
    /// and a final dump of the workdir's `index/` (default off). Not with
    /// [`GenConfig::userxattr`] (every mount); `metacopy=on` with `index=on`, `uuid=` and
    /// `userxattr` cases come with [`GenConfig::index_metacopy`], [`GenConfig::uuid`] and
    /// [`GenConfig::index_userxattr`].
    pub index: bool,
    /// Data-only lower layers (`lowerdir=L0::D0`, [`crate::data_only`]): 1 or 2 regular
    /// lowers over 1 or 2 data-only ones `D0`, `D1`, mounted by an option string
    /// ([`crate::backend::Command::MountData`]), with regular lower files turned into
    /// metacopy files whose absolute redirect names a file, a directory, a symlink or
    /// nothing in the data-only layers (default off; never with `index` or `userxattr`).
    pub data_only: bool,
    /// Under [`GenConfig::index`]: `metacopy=on` in about a third of the mounts without
    /// `nfs_export=on` (which refuses it) and without `userxattr` (which refuses it too), and
    /// metacopy chains in the lowers: a lower regular file over a regular file at the same
    /// path further down turned into a metacopy file (its data from below), so that chains
    /// reach over several lowers (default off; [`crate::metacopy`], [`crate::index`]).
    pub index_metacopy: bool,
    /// Under [`GenConfig::index`]: `uuid=` given in some mounts (`null`, `on`, `off`; mostly
    /// left to `auto`), so that remounts of one upper switch it (ESTALE for `index=on` after a
    /// switch to or from `off`; [`crate::uuid`]; default off).
    pub uuid: bool,
    /// Under [`GenConfig::index`]: a quarter of the cases mount with `userxattr` throughout
    /// (never with `nfs_export=on`, `metacopy=on` or a `redirect_dir` but `nofollow`), over
    /// lowers whose symlinks and FIFOs have several links (half the linked plain files of
    /// such a case turned into them: their copy-up is EPERM, and a later
    /// `index=on` mount is then refused, ENODATA; default off).
    pub index_userxattr: bool,
    /// The file-handle steps `name_to_handle` (of existing and missing paths, with and without
    /// `AT_HANDLE_FID`) and `open_by_handle` (of a handle the case took earlier, read-only,
    /// sometimes with `O_DIRECTORY`), and `close` of what it opened ([`crate::export`]). A
    /// step the model answers as not modelled is never drawn: a precondition runs it on a
    /// copy of the model first (default off).
    pub file_handles: bool,
    /// Some mounts made with the new mount API ([`crate::backend::Command::MountData`] with
    /// `fsconfig`: `lowerdir+`, `datadir+`, `upperdir`, `workdir` and the options as calls),
    /// sometimes with a call the kernel refuses ([`crate::backend::Reply::CallRefused`]).
    /// Only the model and the kernel take it: `fuzz --against` switches it off (default off).
    pub fsconfig: bool,
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
            names: super::gen::NAMES.iter().map(|n| (*n).to_owned()).collect(),
            depth_max: super::gen::DEPTH_MAX,
            dir_weight: 2,
            lowers_min: 1,
            sparse_lowers: false,
            userxattr: false,
            root_markers: false,
            xino_auto: false,
            drop_caches: false,
            shared_redirects: false,
            handles: false,
            metacopy: false,
            callers: false,
            index: false,
            data_only: false,
            index_metacopy: false,
            uuid: false,
            index_userxattr: false,
            file_handles: false,
            fsconfig: false,
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
            ..GenConfig::default()
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
    /// [`super::gen::LOWER_COUNT_LIMIT`] lowers (`lowers_min` at most `lowers_max`), offline
    /// edits only with remounts, a depth of 1 to [`super::gen::DEPTH_LIMIT`], and an
    /// alphabet of 1 to 16 distinct names that a layer can hold, in byte order.
    pub fn check(&self) -> Result<(), String> {
        if self.ops.is_empty() {
            return Err("the configuration draws no operation".into());
        }
        if !(1..=super::gen::LOWER_COUNT_LIMIT).contains(&self.lowers_max) {
            return Err(format!("lowers_max must be 1 to {}", super::gen::LOWER_COUNT_LIMIT));
        }
        if !(1..=self.lowers_max).contains(&self.lowers_min) {
            return Err("lowers_min must be 1 to lowers_max".into());
        }
        if !(1..=super::gen::DEPTH_LIMIT).contains(&self.depth_max) {
            return Err(format!("depth_max must be 1 to {}", super::gen::DEPTH_LIMIT));
        }
        if !(1..=16).contains(&self.names.len()) {
            return Err("the name alphabet must have 1 to 16 names".into());
        }
        for (i, n) in self.names.iter().enumerate() {
            let legal = !n.is_empty()
                && n.len() <= crate::layer::check::NAME_LEN_MAX
                && !n.contains(['/', '\0'])
                && n != "."
                && n != "..";
            if !legal || i > 0 && self.names[i - 1] >= *n {
                return Err(format!(
                    "{n:?} is not a name for the alphabet (1 to 255 bytes, no / or NUL, not . or .., \
                     distinct, in byte order as a layer lists them)"
                ));
            }
        }
        if self.offline_edits && !self.remounts {
            return Err("offline edits need remounts".into());
        }
        if self.data_only && (self.index || self.userxattr || self.lowers_max < 2) {
            return Err("data-only layers go without index and userxattr, and need lowers_max of 2 or more".into());
        }
        if self.index && self.userxattr {
            return Err("index is not drawn with userxattr".into());
        }
        if (self.index_metacopy || self.uuid || self.index_userxattr) && !self.index {
            return Err("index_metacopy, uuid and index_userxattr need index".into());
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

#[cfg(test)]
mod tests {
    use super::OP_NAMES;
    use crate::ops::Op;
    use std::collections::BTreeSet;

    /// The index of an operation's kind. A new operation does not compile here until it is
    /// given one, and then the test below fails until `OP_NAMES` and the list there name it.
    fn kind(op: &Op) -> usize {
        match op {
            Op::Stat { .. } => 0,
            Op::Lstat { .. } => 1,
            Op::Open { .. } => 2,
            Op::Read { .. } => 3,
            Op::Write { .. } => 4,
            Op::Truncate { .. } => 5,
            Op::Mkdir { .. } => 6,
            Op::Rmdir { .. } => 7,
            Op::Unlink { .. } => 8,
            Op::Rename { .. } => 9,
            Op::Link { .. } => 10,
            Op::Symlink { .. } => 11,
            Op::Readlink { .. } => 12,
            Op::Readdir { .. } => 13,
            Op::Chmod { .. } => 14,
            Op::Chown { .. } => 15,
            Op::Utimes { .. } => 16,
            Op::Setxattr { .. } => 17,
            Op::Getxattr { .. } => 18,
            Op::Listxattr { .. } => 19,
            Op::Removexattr { .. } => 20,
            Op::Mknod { .. } => 21,
            // Operations through a named handle are drawn by `gen::handle_op` under
            // `GenConfig::handles`, not by name, so they are not in `OP_NAMES`.
            Op::Fd(_) => KINDS,
        }
    }
    const KINDS: usize = 22;

    #[test]
    fn op_names_are_exactly_the_names_of_the_operations() {
        let ops: Vec<Op> = [
            r#"{"Stat":{"path":"/"}}"#,
            r#"{"Lstat":{"path":"/"}}"#,
            r#"{"Open":{"path":"/f","flags":{"access":"ReadOnly"},"mode":420}}"#,
            r#"{"Read":{"path":"/f"}}"#,
            r#"{"Write":{"path":"/f","at":"Append","data":[]}}"#,
            r#"{"Truncate":{"path":"/f","len":0}}"#,
            r#"{"Mkdir":{"path":"/d","mode":493}}"#,
            r#"{"Rmdir":{"path":"/d"}}"#,
            r#"{"Unlink":{"path":"/f"}}"#,
            r#"{"Rename":{"from":"/a","to":"/b","flags":{}}}"#,
            r#"{"Link":{"from":"/a","to":"/b"}}"#,
            r#"{"Symlink":{"target":"a","path":"/s"}}"#,
            r#"{"Readlink":{"path":"/s"}}"#,
            r#"{"Readdir":{"path":"/"}}"#,
            r#"{"Chmod":{"path":"/f","mode":420}}"#,
            r#"{"Chown":{"path":"/f","uid":0,"gid":0}}"#,
            r#"{"Utimes":{"path":"/f"}}"#,
            r#"{"Setxattr":{"path":"/f","name":"user.k","value":[]}}"#,
            r#"{"Getxattr":{"path":"/f","name":"user.k"}}"#,
            r#"{"Listxattr":{"path":"/f"}}"#,
            r#"{"Removexattr":{"path":"/f","name":"user.k"}}"#,
            r#"{"Mknod":{"path":"/p","kind":"Fifo","mode":420}}"#,
        ]
        .iter()
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("{j}: {e}")))
        .collect();
        let kinds: BTreeSet<usize> = ops.iter().map(kind).collect();
        assert_eq!(kinds, (0..KINDS).collect(), "the list above lacks an operation");
        let listed: BTreeSet<&str> = OP_NAMES.iter().copied().collect();
        assert_eq!(listed.len(), OP_NAMES.len(), "OP_NAMES names an operation twice: {OP_NAMES:?}");
        let names: BTreeSet<&str> = ops.iter().map(Op::name).collect();
        let unknown: Vec<&&str> = listed.difference(&names).collect();
        let missing: Vec<&&str> = names.difference(&listed).collect();
        assert!(unknown.is_empty(), "OP_NAMES names no operation: {unknown:?}");
        assert!(missing.is_empty(), "OP_NAMES lacks operations: {missing:?}");
    }
}
