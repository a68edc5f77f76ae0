//! Mount options as typed values, and their validation (kernel: `fs/overlayfs/params.c`,
//! `ovl_fs_params_verify`; `fs/overlayfs/super.c`, `ovl_get_lowerstack`).

use crate::errno::Errno;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The most lower layers a mount may have (kernel: `OVL_MAX_STACK`).
pub const LOWER_COUNT_MAX: usize = 500;

/// `redirect_dir=`.
///
/// overlayfs.rst, "Renaming directories": `on` creates and follows redirects; `follow`
/// follows them only; `nofollow` refuses (EPERM) to look up a directory that has one; `off`
/// creates none and follows or refuses according to `redirect_always_follow`, which is `Y` on
/// the reference kernel, so `off` behaves as `follow` here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectDir {
    /// Create and follow redirects.
    On,
    /// Follow existing redirects; create none.
    Follow,
    /// Refuse to follow redirects (EPERM).
    Nofollow,
    /// Create none; follow (the kernel's `redirect_always_follow=Y`). The default.
    #[default]
    Off,
}

impl RedirectDir {
    /// Whether renaming a lower or merged directory creates a redirect (else EXDEV).
    pub fn creates(self) -> bool {
        self == RedirectDir::On
    }

    /// Whether existing redirects are followed (else lookup gives EPERM).
    pub fn follows(self) -> bool {
        self != RedirectDir::Nofollow
    }

    /// The option value as the kernel spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RedirectDir::On => "on",
            RedirectDir::Follow => "follow",
            RedirectDir::Nofollow => "nofollow",
            RedirectDir::Off => "off",
        }
    }
}

/// `xino=`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Xino {
    /// No inode-number extension. The default on the reference kernel (`XINO_AUTO=n`).
    #[default]
    Off,
    /// Extend inode numbers when the layers are on different filesystems.
    Auto,
    /// Always extend.
    On,
}

impl Xino {
    /// The option value as the kernel spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Xino::Off => "off",
            Xino::Auto => "auto",
            Xino::On => "on",
        }
    }
}

/// The mount options of an overlay. Every field is explicit, because kernel defaults differ
/// between builds; the defaults here are those of the reference kernel (Linux 6.18,
/// `REDIRECT_DIR=n`, `INDEX=n`, `METACOPY=n`, `XINO_AUTO=n`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// `redirect_dir=`.
    pub redirect_dir: RedirectDir,
    /// `index=on`.
    pub index: bool,
    /// `metacopy=on`.
    pub metacopy: bool,
    /// `xino=`.
    pub xino: Xino,
    /// `userxattr`: overlay's xattrs live under `user.overlay.` instead of `trusted.overlay.`.
    pub userxattr: bool,
    /// `nfs_export=on`.
    pub nfs_export: bool,
    /// `volatile`.
    pub volatile: bool,
    /// `MS_RDONLY`: a read-only mount even with an upper.
    pub read_only: bool,
    /// Pass `workdir=` even without an upper, as a script that drops `upperdir=` but keeps
    /// the rest of its options would. The kernel ignores it ("option workdir is useless in a
    /// non-upper mount, ignore"); so does the model.
    pub workdir_without_upper: bool,
}

/// Why a mount was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The kernel refuses this mount with `errno`; `reason` is its log message.
    #[error("{errno}: {reason}")]
    Refused {
        /// The errno `mount(2)` returns.
        errno: Errno,
        /// The kernel's log message, without the `overlayfs: ` prefix.
        reason: String,
    },
    /// The kernel accepts this mount, but the model does not implement the option yet.
    #[error("not modelled: {0}")]
    NotModelled(String),
}

impl MountError {
    fn refused(errno: Errno, reason: impl Into<String>) -> MountError {
        MountError::Refused { errno, reason: reason.into() }
    }

    /// The errno, for a refused mount.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            MountError::Refused { errno, .. } => Some(*errno),
            MountError::NotModelled(_) => None,
        }
    }
}

impl Options {
    /// The effective options after the kernel's implications, or the kernel's refusal.
    ///
    /// Kernel: `ovl_fs_params_verify` in params.c, in its order. The harness always passes
    /// `redirect_dir`, `index`, `metacopy` and `xino` explicitly (see
    /// [`Options::to_mount_string`]), so the kernel's "set explicitly" conflicts apply to
    /// them:
    /// 1. without an upper, `index` and `volatile` are ignored ("useless in a non-upper
    ///    mount");
    /// 2. `metacopy=on` with redirects not `on`: EINVAL ("conflicting options:
    ///    metacopy=on,redirect_dir=follow"; `off` is shown as `follow`);
    /// 3. `nfs_export=on` without `index`: without an upper and with redirects not
    ///    `nofollow` it falls back to off; otherwise EINVAL ("nfs_export=on,index=off");
    /// 4. `nfs_export=on,metacopy=on`: EINVAL;
    /// 5. `userxattr` with `redirect_dir` other than `nofollow`, or with `metacopy=on`:
    ///    EINVAL. NOTE(kernel): overlayfs.rst says userxattr implies nofollow; an explicit
    ///    `redirect_dir=off` is refused on 6.18.
    pub fn verify(mut self, has_upper: bool) -> Result<Options, MountError> {
        let conflict = |what: &str| MountError::refused(Errno::EINVAL, format!("conflicting options: {what}"));
        let shown = |r: RedirectDir| if r == RedirectDir::Off { "follow" } else { r.as_str() };
        if !has_upper {
            self.index = false;
            self.volatile = false;
        }
        if self.metacopy && !self.redirect_dir.creates() {
            return Err(conflict(&format!("metacopy=on,redirect_dir={}", shown(self.redirect_dir))));
        }
        if self.nfs_export && !self.index {
            if !has_upper && self.redirect_dir != RedirectDir::Nofollow {
                self.nfs_export = false;
            } else {
                return Err(conflict("nfs_export=on,index=off"));
            }
        }
        if self.nfs_export && self.metacopy {
            return Err(conflict("nfs_export=on,metacopy=on"));
        }
        if self.userxattr {
            if self.redirect_dir != RedirectDir::Nofollow {
                return Err(conflict(&format!("userxattr,redirect_dir={}", shown(self.redirect_dir))));
            }
            if self.metacopy {
                return Err(conflict("userxattr,metacopy=on"));
            }
        }
        Ok(self)
    }

    /// The legacy `mount(2)` option string for these options, every option explicit (the
    /// layer paths are not included).
    pub fn to_mount_string(&self) -> String {
        let mut s = format!(
            "redirect_dir={},index={},metacopy={},xino={}",
            self.redirect_dir.as_str(),
            on_off(self.index),
            on_off(self.metacopy),
            self.xino.as_str()
        );
        if self.nfs_export {
            s.push_str(",nfs_export=on");
        }
        if self.userxattr {
            s.push_str(",userxattr");
        }
        if self.volatile {
            s.push_str(",volatile");
        }
        s
    }
}

/// Whether a mount with these (effective) options leaves `work/incompat/volatile` in its
/// upper layer's workdir when it is unmounted: a `volatile` mount with an upper (without
/// one, `volatile` is ignored, [`Options::verify`]). Every later mount with that upper
/// layer, and so that workdir, is then refused with EINVAL ("overlay with incompat feature
/// 'volatile' cannot be mounted"): volatile or not, read-only or not, until the directory is
/// removed; the upper layer used as a lower layer, with no workdir, still mounts.
///
/// Source: overlayfs.rst "Volatile mount"; fs/overlayfs/super.c, `ovl_make_workdir` and
/// `ovl_check_incompat` (the check is made when the workdir is set up, so only an option
/// conflict, also EINVAL, can come first). Observed on Linux 6.18
/// (`spec/volatile/mount-volatile-leftover-refuses-remount.yaml`).
pub fn leaves_volatile_marker(options: &Options, has_upper: bool) -> bool {
    options.volatile && has_upper
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

impl fmt::Display for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_mount_string())?;
        if self.read_only {
            f.write_str(",ro")?;
        }
        Ok(())
    }
}
