//! Operations as another caller: the worker forks a child that switches to the caller's
//! credentials and umask, runs the one operation and sends its outcome back over a socket.
//! The worker's own credentials never change.
//!
//! A call through a handle runs in the child on the fd it inherited through `fork` (the
//! same open file description: its position, its directory cache); an `open` as another
//! caller sends the new fd back (`SCM_RIGHTS`), and the worker keeps it as the handle.

use super::ops;
use crate::backend::BackendError;
use crate::cred::Cred;
use crate::ops::{Op, Outcome};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the child did: the outcome, and an fd to hand back (an `open`'s new handle).
pub(super) type ChildResult = (Result<Outcome, BackendError>, Option<RawFd>);

/// Runs `op` in a child that called `setgroups`, `setresgid`, `setresuid` (in that order:
/// the group changes need root) and `umask`, and reports what the child's syscalls gave.
pub(super) fn run_as(cred: &Cred, op: &Op) -> Result<Outcome, BackendError> {
    run_as_with(cred, &format!("{op:?}"), || (ops::run(op), None)).map(|(o, _)| o)
}

/// Runs `work` in a child switched to `cred` (see [`run_as`]): its outcome, and the fd it
/// handed back, now the worker's.
///
/// The child inherits the worker's root (the merged root), so the operation's paths
/// resolve as the worker's own do, and its fds. The worker is single-threaded, so the
/// child may allocate; it never returns into the worker's loop (it leaves with `_exit`,
/// also after a panic) and never writes to stdout.
pub(super) fn run_as_with(
    cred: &Cred,
    what: &str,
    work: impl FnOnce() -> ChildResult,
) -> Result<(Outcome, Option<OwnedFd>), BackendError> {
    let failed = |what: &str| BackendError::Failed(format!("{what}: {}", std::io::Error::last_os_error()));
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(failed("socketpair for a caller's child"));
    }
    // SAFETY: socketpair succeeded, so both are open descriptors that nothing else owns.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the worker is single-threaded; the child only runs `child` and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(failed("fork for a caller's child"));
    }
    if pid == 0 {
        drop(ours);
        let (r, fd) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(cred, work)))
            .unwrap_or_else(|_| (Err(BackendError::Failed(format!("{what} as {cred:?}: the child panicked"))), None));
        let line = serde_json::to_vec(&r).unwrap_or_default();
        let sent = send_fd(&theirs, fd).is_ok();
        let mut w = std::fs::File::from(theirs);
        let code = i32::from(!sent || w.write_all(&line).is_err());
        // SAFETY: ends the child without running the worker's exit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    drop(theirs);
    let got = recv_fd(&ours);
    let mut buf = Vec::new();
    let read = std::fs::File::from(ours).read_to_end(&mut buf);
    let mut status = 0;
    // SAFETY: `pid` is the worker's own child; waiting for it reaps it.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(failed("waitpid for a caller's child"));
        }
    }
    let fd = got.map_err(|e| BackendError::Failed(format!("reading a caller's child's fd: {e}")))?;
    read.map_err(|e| BackendError::Failed(format!("reading a caller's child's answer: {e}")))?;
    let outcome = serde_json::from_slice::<Result<Outcome, BackendError>>(&buf).unwrap_or_else(|_| {
        Err(BackendError::Failed(format!("{what} as {cred:?}: the child gave no answer (wait status {status})")))
    })?;
    Ok((outcome, fd))
}

/// The child's part: switch to `cred`, then the work.
fn child(cred: &Cred, work: impl FnOnce() -> ChildResult) -> ChildResult {
    let step = |what: &str, r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(BackendError::Failed(format!("{what}: {}", std::io::Error::last_os_error())))
        }
    };
    // SAFETY: plain syscalls on this (single-threaded) child's own credentials.
    let switched = unsafe {
        step("prctl(PR_SET_PDEATHSIG)", libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))
            .and_then(|()| step("setgroups", libc::setgroups(cred.groups.len(), cred.groups.as_ptr())))
            .and_then(|()| step("setresgid", libc::setresgid(cred.gid, cred.gid, cred.gid)))
            .and_then(|()| step("setresuid", libc::setresuid(cred.uid, cred.uid, cred.uid)))
    };
    if let Err(e) = switched {
        return (Err(e), None);
    }
    // SAFETY: sets this child's umask only.
    unsafe { libc::umask(cred.umask & 0o777) };
    work()
}

/// Sends one byte, with `fd` as `SCM_RIGHTS` when there is one: the first thing the child
/// writes, so that [`recv_fd`] reads it alone.
fn send_fd(sock: &OwnedFd, fd: Option<RawFd>) -> std::io::Result<()> {
    let mut byte = [u8::from(fd.is_some())];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: zeroed msghdr is a valid empty header; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer has room for one header and one fd (CMSG_SPACE).
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
    }
    // SAFETY: `msg` points at live buffers.
    if unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, 0) } != 1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the byte [`send_fd`] sent, and the fd with it if any (close-on-exec).
fn recv_fd(sock: &OwnedFd) -> std::io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: zeroed msghdr is a valid empty header; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at live buffers.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 {
        // The child died before it sent anything; its missing answer says so.
        return Ok(None);
    }
    // SAFETY: the kernel filled `msg`'s control buffer; the header walk stays inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if !c.is_null() && (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
            return Ok(Some(OwnedFd::from_raw_fd(fd)));
        }
    }
    Ok(None)
}
