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
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use std::io::{IoSlice, IoSliceMut};
use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

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
    let (ours, theirs) = socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
        .map_err(|e| BackendError::Failed(format!("socketpair for a caller's child: {e}")))?;
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
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    // SAFETY: `fd` is open in this process for the whole call (the child's own handle).
    let borrowed = fd.map(|fd| [unsafe { BorrowedFd::borrow_raw(fd) }]);
    if let Some(fds) = &borrowed {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    let byte = [u8::from(fd.is_some())];
    match sendmsg(sock, &[IoSlice::new(&byte)], &mut control, SendFlags::empty())? {
        1 => Ok(()),
        n => Err(std::io::Error::other(format!("sendmsg sent {n} bytes of 1"))),
    }
}

/// Reads the byte [`send_fd`] sent, and the fd with it if any (close-on-exec).
fn recv_fd(sock: &OwnedFd) -> std::io::Result<Option<OwnedFd>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = recvmsg(sock, &mut [IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    if got.bytes == 0 {
        // The child died before it sent anything; its missing answer says so.
        return Ok(None);
    }
    let fd = control.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    Ok(fd)
}
