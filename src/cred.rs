//! Callers: who makes an operation, and with which umask.
//!
//! Every operation runs as root with umask 0 unless a scenario step says otherwise
//! (`as_user: {uid, gid, groups}`, `umask: 0o022`); such a step travels to a backend as
//! [`crate::backend::Command::OpAs`], with a [`Cred`]. The model checks permissions with it
//! ([`crate::ops`], module `perm`); the kernel worker runs the operation in a child that
//! switched to it (`setgroups`, `setresgid`, `setresuid`, `umask`).
//!
//! A caller with uid 0 has every capability, a caller with another uid none: a process
//! that changes all its uids from 0 to non-zero loses its capabilities (capabilities(7),
//! "Effect of user ID changes on capabilities"). The mounter is root.

use serde::{Deserialize, Serialize};

/// The credentials and umask of a caller (kernel: `struct cred`'s fsuid, fsgid and
/// supplementary groups, and `fs_struct`'s umask).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cred {
    /// The real, effective, saved and filesystem user id.
    pub uid: u32,
    /// The real, effective, saved and filesystem group id.
    pub gid: u32,
    /// The supplementary groups.
    #[serde(default)]
    pub groups: Vec<u32>,
    /// The umask (permission bits only).
    #[serde(default)]
    pub umask: u32,
}

impl Cred {
    /// Root, with umask 0: the caller of every operation without `as_user` or `umask`.
    pub fn root() -> Cred {
        Cred::default()
    }

    /// Whether the caller has the capabilities (`CAP_DAC_OVERRIDE`, `CAP_FOWNER`,
    /// `CAP_CHOWN`, `CAP_FSETID`, `CAP_SYS_ADMIN`, ...): uid 0.
    pub fn capable(&self) -> bool {
        self.uid == 0
    }

    /// Whether `gid` is the caller's fsgid or one of its supplementary groups (kernel:
    /// `in_group_p`).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// A scenario step's `as_user`: who runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct User {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// The supplementary groups.
    #[serde(default)]
    pub groups: Vec<u32>,
}

impl Cred {
    /// The caller of a step run as `user` (root when `None`) with `umask` (0 when `None`);
    /// `None` when both are `None`: the step runs as root with umask 0, as a plain
    /// [`crate::backend::Command::Op`].
    pub fn of_step(user: Option<&User>, umask: Option<u32>) -> Option<Cred> {
        if user.is_none() && umask.is_none() {
            return None;
        }
        let u = user.cloned().unwrap_or_default();
        Some(Cred { uid: u.uid, gid: u.gid, groups: u.groups, umask: umask.unwrap_or(0) })
    }
}
