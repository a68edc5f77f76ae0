//! Operations as another caller: the worker forks a child that switches to the caller's
//! credentials and umask, runs the one operation and sends its outcome back over a pipe.
//! The worker's own credentials never change.

use super::ops;
use crate::backend::BackendError;
use crate::cred::Cred;
use crate::ops::{Op, Outcome};
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// Runs `op` in a child that called `setgroups`, `setresgid`, `setresuid` (in that order:
/// the group changes need root) and `umask`, and reports what the child's syscalls gave.
///
/// The child inherits the worker's root (the merged root), so the operation's paths
/// resolve as the worker's own do. The worker is single-threaded, so the child may
/// allocate; it never returns into the worker's loop (it leaves with `_exit`, also after a
/// panic) and never writes to stdout.
pub(super) fn run_as(cred: &Cred, op: &Op) -> Result<Outcome, BackendError> {
    let failed = |what: &str| BackendError::Failed(format!("{what}: {}", std::io::Error::last_os_error()));
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(failed("pipe2 for a caller's child"));
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the worker is single-threaded; the child only runs `child` and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(failed("fork for a caller's child"));
    }
    if pid == 0 {
        drop(read_end);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(cred, op)))
            .unwrap_or_else(|_| Err(BackendError::Failed(format!("{op:?} as {cred:?}: the child panicked"))));
        let line = serde_json::to_vec(&r).unwrap_or_default();
        let mut w = std::fs::File::from(write_end);
        let code = i32::from(w.write_all(&line).is_err());
        // SAFETY: ends the child without running the worker's exit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    drop(write_end);
    let mut buf = Vec::new();
    let read = std::fs::File::from(read_end).read_to_end(&mut buf);
    let mut status = 0;
    // SAFETY: `pid` is the worker's own child; waiting for it reaps it.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(failed("waitpid for a caller's child"));
        }
    }
    read.map_err(|e| BackendError::Failed(format!("reading a caller's child's answer: {e}")))?;
    serde_json::from_slice::<Result<Outcome, BackendError>>(&buf).unwrap_or_else(|_| {
        Err(BackendError::Failed(format!("{op:?} as {cred:?}: the child gave no answer (wait status {status})")))
    })
}

/// The child's part: switch to `cred`, then the operation.
fn child(cred: &Cred, op: &Op) -> Result<Outcome, BackendError> {
    let step = |what: &str, r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(BackendError::Failed(format!("{what}: {}", std::io::Error::last_os_error())))
        }
    };
    // SAFETY: plain syscalls on this (single-threaded) child's own credentials.
    unsafe {
        step("prctl(PR_SET_PDEATHSIG)", libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
        step("setgroups", libc::setgroups(cred.groups.len(), cred.groups.as_ptr()))?;
        step("setresgid", libc::setresgid(cred.gid, cred.gid, cred.gid))?;
        step("setresuid", libc::setresuid(cred.uid, cred.uid, cred.uid))?;
        libc::umask(cred.umask & 0o777);
    }
    ops::run(op)
}
