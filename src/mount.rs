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

/// `uuid=`: how origin file handles name the lower filesystem, and whether the overlay has
/// a persistent uuid of its own (overlayfs.rst "UUID and fsid"; kernel: `enum ovl_uuid`,
/// `ovl_origin_uuid`, `ovl_has_fsid`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Uuid {
    /// Origin file handles hold a null uuid, and only such handles decode.
    Off,
    /// Origin file handles hold the lower filesystem's uuid; the overlay has no fsid.
    Null,
    /// As `null` on an upper used before (its root impure and without the `uuid` xattr),
    /// else as `on` (the kernel's default).
    #[default]
    Auto,
    /// Origin file handles hold the lower filesystem's uuid; the overlay keeps a persistent
    /// uuid in the upper root's `uuid` xattr.
    On,
}

impl Uuid {
    /// The option value as the kernel spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Uuid::Off => "off",
            Uuid::Null => "null",
            Uuid::Auto => "auto",
            Uuid::On => "on",
        }
    }

    /// Whether this is the default, `auto`.
    pub fn is_auto(&self) -> bool {
        *self == Uuid::Auto
    }
}

/// The mount options of an overlay. Each field holds the value asked for, or the reference
/// kernel's default (Linux 6.18: `redirect_dir` off, which follows; index, metacopy,
/// nfs_export and xino off: `REDIRECT_DIR=n`, `REDIRECT_ALWAYS_FOLLOW=y`, `INDEX=n`,
/// `METACOPY=n`, `XINO_AUTO=n`, `NFS_EXPORT=n`). [`Options::named`] records which options
/// with a default were named explicitly: only those, and those whose value differs from the
/// default, are passed to the kernel ([`Options::to_mount_string`]); the others are left to
/// the kernel's defaults and its implications ([`Options::verify`]).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// The options named explicitly even at their default value (a scenario's
    /// `redirect_dir: off`).
    #[serde(skip_serializing_if = "Named::is_empty")]
    pub named: Named,
    /// `uuid=`.
    #[serde(skip_serializing_if = "Uuid::is_auto")]
    pub uuid: Uuid,
}

/// Which options that have a kernel default were given explicitly (kernel: `struct
/// ovl_opt_set`, `ctx->set`, set by `ovl_parse_param`). An option counts as given when it is
/// named here or its value differs from the default ([`Options::given`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Named {
    /// `redirect_dir=` was given.
    pub redirect_dir: bool,
    /// `index=` was given.
    pub index: bool,
    /// `metacopy=` was given.
    pub metacopy: bool,
    /// `xino=` was given.
    pub xino: bool,
    /// `nfs_export=` was given.
    pub nfs_export: bool,
}

impl Named {
    /// Whether no option is named.
    pub fn is_empty(&self) -> bool {
        *self == Named::default()
    }
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

/// Every field, but `uuid` only when it is not the default (`auto`): options without a
/// `uuid=` read as they did before it was modelled (the fuzzer's fingerprint of its draws
/// hashes this form).
impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Options");
        d.field("redirect_dir", &self.redirect_dir)
            .field("index", &self.index)
            .field("metacopy", &self.metacopy)
            .field("xino", &self.xino)
            .field("userxattr", &self.userxattr)
            .field("nfs_export", &self.nfs_export)
            .field("volatile", &self.volatile)
            .field("read_only", &self.read_only)
            .field("workdir_without_upper", &self.workdir_without_upper)
            .field("named", &self.named);
        if !self.uuid.is_auto() {
            d.field("uuid", &self.uuid);
        }
        d.finish()
    }
}

impl Options {
    /// The options given explicitly: named, or not at their default value (kernel:
    /// `ctx->set`).
    pub fn given(&self) -> Named {
        let d = Options::default();
        Named {
            redirect_dir: self.named.redirect_dir || self.redirect_dir != d.redirect_dir,
            index: self.named.index || self.index != d.index,
            metacopy: self.named.metacopy || self.metacopy != d.metacopy,
            xino: self.named.xino || self.xino != d.xino,
            nfs_export: self.named.nfs_export || self.nfs_export != d.nfs_export,
        }
    }

    /// The same options with [`Options::named`] kept only where the value is the default
    /// (a value off the default is given anyway): the one spelling of each request, so a
    /// scenario written and read back compares equal.
    pub fn canonical(mut self) -> Options {
        let d = Options::default();
        let n = &mut self.named;
        n.redirect_dir &= self.redirect_dir == d.redirect_dir;
        n.index &= self.index == d.index;
        n.metacopy &= self.metacopy == d.metacopy;
        n.xino &= self.xino == d.xino;
        n.nfs_export &= self.nfs_export == d.nfs_export;
        self
    }

    /// The effective options after the kernel's implications, or the kernel's refusal.
    ///
    /// Kernel: `ovl_fs_params_verify` in params.c, in its order; "given" is
    /// [`Options::given`] (`ctx->set`), and an option not given takes the kernel's default
    /// and may be changed to resolve a conflict:
    /// 1. without an upper, `index` and `volatile` are ignored ("useless in a non-upper
    ///    mount"; a given `index=off` stays given), and `redirect_dir=follow` (or `off`, which is follow) counts as `on`;
    /// 2. `metacopy=on` with redirects not `on`: EINVAL when both were given ("conflicting
    ///    options: metacopy=on,redirect_dir=follow"; `off` is shown as `follow`); else a
    ///    given `redirect_dir` turns metacopy off, and otherwise redirects become `on`;
    /// 3. `nfs_export=on` without `index`: without an upper and with redirects not
    ///    `nofollow` it falls back to off; else EINVAL when both were given ("nfs_export=on,
    ///    index=off"); else a given `index=off` turns nfs_export off, and otherwise index
    ///    becomes on;
    /// 4. `nfs_export=on,metacopy=on`: EINVAL when both were given; else the given one wins;
    /// 5. `userxattr`: EINVAL with a given `redirect_dir` other than `nofollow` (an explicit
    ///    `off` too) or a given `metacopy=on`; otherwise redirects become `nofollow` and
    ///    metacopy off ("Silently disable default setting of redirect and metacopy").
    ///    NOTE(kernel): overlayfs.rst "User xattr" says userxattr implies nofollow; it does
    ///    not say that an explicit `redirect_dir=off` is refused (observed on 6.18).
    pub fn verify(mut self, has_upper: bool) -> Result<Options, MountError> {
        let conflict = |what: &str| MountError::refused(Errno::EINVAL, format!("conflicting options: {what}"));
        let mut given = self.given();
        if !has_upper {
            // Only `index=on` is dropped as useless; a given `index=off` still counts as
            // given (kernel: `if (config->index && index_opt) { ... index_opt = false; }`;
            // observed on 6.18: spec/nfs_export/mount-nfs-export-index-off-lower-only-einval).
            if self.index {
                given.index = false;
            }
            self.index = false;
            self.volatile = false;
        }
        let shown = |r: RedirectDir| if r == RedirectDir::Off { "follow" } else { r.as_str() };
        // Without an upper the kernel turns follow into on "to make the logic below simpler";
        // no redirect is made there, so the model keeps the value and asks here.
        let redirect_on = self.redirect_dir.creates() || (!has_upper && self.redirect_dir.follows());
        if self.metacopy && !redirect_on {
            if given.metacopy && given.redirect_dir {
                return Err(conflict(&format!("metacopy=on,redirect_dir={}", shown(self.redirect_dir))));
            }
            if given.redirect_dir {
                self.metacopy = false;
            } else {
                self.redirect_dir = RedirectDir::On;
            }
        }
        if self.nfs_export && !self.index {
            if !has_upper && self.redirect_dir != RedirectDir::Nofollow {
                self.nfs_export = false;
            } else if given.nfs_export && given.index {
                return Err(conflict("nfs_export=on,index=off"));
            } else if given.index {
                self.nfs_export = false;
            } else {
                self.index = true;
            }
        }
        if self.nfs_export && self.metacopy {
            if given.nfs_export && given.metacopy {
                return Err(conflict("nfs_export=on,metacopy=on"));
            }
            if given.metacopy {
                self.nfs_export = false;
            } else {
                self.metacopy = false;
            }
        }
        if self.userxattr {
            if given.redirect_dir && self.redirect_dir != RedirectDir::Nofollow {
                return Err(conflict(&format!("userxattr,redirect_dir={}", shown(self.redirect_dir))));
            }
            if self.metacopy && given.metacopy {
                return Err(conflict("userxattr,metacopy=on"));
            }
            self.redirect_dir = RedirectDir::Nofollow;
            self.metacopy = false;
        }
        Ok(self)
    }

    /// The legacy `mount(2)` option string for these options (the layer paths are not
    /// included): only the options given ([`Options::given`]); the others are left to the
    /// kernel's defaults, as a mount command that does not name them would.
    pub fn to_mount_string(&self) -> String {
        let given = self.given();
        let mut parts: Vec<String> = Vec::new();
        if given.redirect_dir {
            parts.push(format!("redirect_dir={}", self.redirect_dir.as_str()));
        }
        if given.index {
            parts.push(format!("index={}", on_off(self.index)));
        }
        if given.metacopy {
            parts.push(format!("metacopy={}", on_off(self.metacopy)));
        }
        if given.xino {
            parts.push(format!("xino={}", self.xino.as_str()));
        }
        if given.nfs_export {
            parts.push(format!("nfs_export={}", on_off(self.nfs_export)));
        }
        if self.userxattr {
            parts.push("userxattr".to_owned());
        }
        if self.volatile {
            parts.push("volatile".to_owned());
        }
        if !self.uuid.is_auto() {
            parts.push(format!("uuid={}", self.uuid.as_str()));
        }
        parts.join(",")
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The options a mount would take, or its errno.
    fn effective(o: Options) -> Result<Options, Option<Errno>> {
        o.verify(true).map_err(|e| e.errno())
    }

    // The expectations below are what Linux 6.18 showed in /proc/mounts for the same
    // option strings (an upper mount): `userxattr` alone gives `redirect_dir=nofollow`,
    // `metacopy=on` alone gives `redirect_dir=on`, `nfs_export=on` alone gives `index=on`,
    // and `userxattr,redirect_dir=off` is refused with EINVAL.

    #[test]
    fn options_not_given_are_left_to_the_kernel() {
        assert_eq!(Options::default().to_mount_string(), "");
        let ux = Options { userxattr: true, ..Options::default() };
        assert_eq!(ux.to_mount_string(), "userxattr");
        let named = Options { userxattr: true, named: Named { redirect_dir: true, ..Named::default() }, ..ux };
        assert_eq!(named.to_mount_string(), "redirect_dir=off,userxattr");
        let on = Options { redirect_dir: RedirectDir::On, ..Options::default() };
        assert_eq!(on.to_mount_string(), "redirect_dir=on");
    }

    #[test]
    fn userxattr_defaults_redirect_to_nofollow_and_refuses_a_given_one() {
        let ux = Options { userxattr: true, ..Options::default() };
        assert_eq!(effective(ux).map(|o| o.redirect_dir), Ok(RedirectDir::Nofollow));
        let off = Options { named: Named { redirect_dir: true, ..Named::default() }, ..ux };
        assert_eq!(effective(off), Err(Some(Errno::EINVAL)));
        let nofollow = Options { redirect_dir: RedirectDir::Nofollow, ..ux };
        assert_eq!(effective(nofollow).map(|o| o.redirect_dir), Ok(RedirectDir::Nofollow));
    }

    #[test]
    fn implied_options_follow_the_option_given() {
        let mc = Options { metacopy: true, ..Options::default() };
        assert_eq!(effective(mc).map(|o| (o.redirect_dir, o.metacopy)), Ok((RedirectDir::On, true)));
        let mc_off = Options { named: Named { redirect_dir: true, ..Named::default() }, ..mc };
        assert_eq!(effective(mc_off), Err(Some(Errno::EINVAL)));
        let nfs = Options { nfs_export: true, ..Options::default() };
        assert_eq!(effective(nfs).map(|o| (o.index, o.nfs_export)), Ok((true, true)));
        let nfs_no_index = Options { named: Named { index: true, ..Named::default() }, ..nfs };
        assert_eq!(effective(nfs_no_index), Err(Some(Errno::EINVAL)));
    }
}
