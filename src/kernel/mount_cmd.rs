//! The worker side of the mount-command backend: the host's programs made reachable inside
//! the worker's tmpfs, and one mount command run, watched, stopped and reaped.
//!
//! # What the command sees
//!
//! The worker chroots into its private tmpfs before it runs anything, so a command would
//! find no program there. When a mount command is configured, the worker, still inside its
//! private mount namespace and before the chroot, bind-mounts the host's `/usr`, `/bin`,
//! `/sbin`, `/lib`, `/lib32`, `/lib64`, `/libx32` and `/etc` read-only into the tmpfs (a
//! host symlink such as a merged-usr `/bin -> usr/bin` is copied as the same symlink),
//! binds `/dev/fuse`, `/dev/null`, `/dev/zero`, `/dev/urandom` and mounts a `proc` on
//! `/proc`. These mounts live in the worker's namespace only and vanish with it. Operations
//! still run chrooted in the merged directory, so no scenario path reaches them, and
//! layers are still built with `RESOLVE_IN_ROOT` below their own directory.
//!
//! # How a mount is judged
//!
//! The command runs in its own process group with `PR_SET_PDEATHSIG(SIGKILL)`, its stdin
//! on `/dev/null` and its stdout and stderr in one file on the tmpfs. The worker polls
//! `/proc/self/mountinfo` for a new mount on the merged directory:
//! - the command exits 0 and a mount appeared (`mount(8)`, or a FUSE daemon that forked):
//!   mounted, no process kept;
//! - a mount appeared while the command still runs (a FUSE daemon in the foreground, `-f`):
//!   mounted, the process is kept and stopped at unmount;
//! - the command exits non-zero, or 0 without a mount, or is killed by a signal, or runs
//!   [`MOUNT_TIMEOUT`] without mounting: a [`BackendError::MountCommand`] with the argv,
//!   the exit status and the output, and nothing left mounted or running.
//!
//! The worker is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so a daemon that forks away
//! from the command is still the worker's child: after each unmount, every child of the
//! worker is given [`STOP_GRACE`] to exit, then killed and reaped.

use crate::backend::BackendError;
use rustix::fs::{Mode, CWD};
use rustix::mount::{MountFlags, UnmountFlags};
use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a mount command may run before its mount appears.
pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(6);

/// How long a daemon has to exit after its mount is gone, before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Where the command's stdout and stderr go, on the worker's tmpfs.
const OUTPUT: &str = "/mount-command.out";

/// The host directories bound read-only into the tmpfs.
const HOST_DIRS: [&str; 8] = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"];

/// The host device nodes bound into the tmpfs's `/dev`.
const HOST_DEVS: [&str; 4] = ["/dev/fuse", "/dev/null", "/dev/zero", "/dev/urandom"];

/// Makes the host's programs reachable under `base` (the worker's tmpfs, not yet its root).
/// Runs inside the worker's private mount namespace.
pub fn expose_host(base: &std::path::Path) -> Result<(), String> {
    let fail = |what: String, e: rustix::io::Errno| format!("{what}: {e}");
    for dir in HOST_DIRS {
        let inside = base.join(&dir[1..]);
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(dir).map_err(|e| format!("readlink {dir}: {e}"))?;
                std::os::unix::fs::symlink(&target, &inside)
                    .map_err(|e| format!("symlink {} -> {}: {e}", inside.display(), target.display()))?;
            }
            Ok(m) if m.is_dir() => {
                rustix::fs::mkdir(&inside, Mode::from_raw_mode(0o755))
                    .map_err(|e| fail(format!("mkdir {}", inside.display()), e))?;
                rustix::mount::mount_bind_recursive(dir, &inside)
                    .map_err(|e| fail(format!("binding {dir} on {}", inside.display()), e))?;
                rustix::mount::mount_remount(&inside, MountFlags::BIND | MountFlags::RDONLY, "")
                    .map_err(|e| fail(format!("making {} read-only", inside.display()), e))?;
            }
            _ => {}
        }
    }
    let dev = base.join("dev");
    rustix::fs::mkdir(&dev, Mode::from_raw_mode(0o755)).map_err(|e| fail("mkdir dev".into(), e))?;
    for node in HOST_DEVS {
        if std::fs::symlink_metadata(node).is_err() {
            continue;
        }
        let inside = base.join(&node[1..]);
        File::create(&inside).map_err(|e| format!("creating {}: {e}", inside.display()))?;
        rustix::mount::mount_bind(node, &inside).map_err(|e| fail(format!("binding {node}"), e))?;
    }
    for d in ["proc", "tmp", "run"] {
        rustix::fs::mkdir(base.join(d), Mode::from_raw_mode(0o755)).map_err(|e| fail(format!("mkdir {d}"), e))?;
    }
    rustix::mount::mount(
        "proc",
        base.join("proc"),
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        None,
    )
    .map_err(|e| fail("mounting proc".into(), e))?;
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| fail("PR_SET_CHILD_SUBREAPER".into(), e))?;
    Ok(())
}

/// A mount command's process, kept while its mount lives (a FUSE daemon in the foreground).
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    argv: Vec<String>,
}

/// Runs `argv` until `merged` is a mount point (see the module documentation). `Ok(Some)`
/// is a daemon to stop at unmount.
pub fn mount(argv: &[String], merged: &str) -> Result<Option<Daemon>, BackendError> {
    let before = mounts_on(merged);
    let out = File::create(OUTPUT).map_err(|e| cmd_error(argv, "not started", &format!("creating {OUTPUT}: {e}")))?;
    let err = out.try_clone().map_err(|e| cmd_error(argv, "not started", &format!("dup: {e}")))?;
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(out).stderr(err).current_dir("/").process_group(0);
    // SAFETY: prctl is async-signal-safe and touches nothing shared.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|e| cmd_error(argv, "not started", &e.to_string()))?;
    let start = Instant::now();
    loop {
        let mounted = mounts_on(merged) > before;
        match child.try_wait() {
            Ok(Some(status)) => {
                // Read again: the command may have mounted and exited since the first look.
                let mounted = mounts_on(merged) > before;
                if status.success() && mounted {
                    return Ok(None);
                }
                let why = if status.success() {
                    format!("{status}, but nothing is mounted on {merged}")
                } else {
                    status.to_string()
                };
                cleanup(merged, mounted);
                return Err(cmd_error(argv, &why, &output()));
            }
            Ok(None) if mounted => return Ok(Some(Daemon { child, argv: argv.to_vec() })),
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                cleanup(merged, mounted);
                return Err(cmd_error(argv, &format!("wait failed: {e}"), &output()));
            }
        }
        if start.elapsed() > MOUNT_TIMEOUT {
            kill_group(&mut child);
            cleanup(merged, mounts_on(merged) > before);
            return Err(cmd_error(argv, &format!("did not mount within {MOUNT_TIMEOUT:?}; killed"), &output()));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Unmounts `merged` (lazily if busy), then stops the daemon if any and every other child
/// of the worker. An error names a daemon that had died before it was asked to stop.
pub fn unmount(merged: &str, daemon: Option<Daemon>) -> Result<(), BackendError> {
    let mut problem = None;
    if let Err(e) = rustix::mount::unmount(merged, UnmountFlags::empty()) {
        let _ = rustix::mount::unmount(merged, UnmountFlags::DETACH);
        problem = Some(BackendError::Failed(format!("umount {merged}: {e} (detached it instead)")));
    }
    match (problem, stop(daemon)) {
        (Some(p), _) | (None, Err(p)) => Err(p),
        (None, Ok(())) => Ok(()),
    }
}

/// Stops the daemon if any (its file system already unmounted) and every other child of
/// the worker. An error names a daemon that had died before it was asked to stop.
pub fn stop(daemon: Option<Daemon>) -> Result<(), BackendError> {
    let mut problem = None;
    if let Some(mut d) = daemon {
        if let Ok(Some(status)) = d.child.try_wait() {
            if !status.success() {
                problem
                    .get_or_insert_with(|| cmd_error(&d.argv, &format!("the daemon had died ({status})"), &output()));
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while matches!(d.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        kill_group(&mut d.child);
    }
    reap_children();
    match problem {
        Some(p) => Err(p),
        None => Ok(()),
    }
}

/// Unmounts what a failed command may have mounted and stops every child.
fn cleanup(merged: &str, mounted: bool) {
    if mounted {
        let _ = rustix::mount::unmount(merged, UnmountFlags::DETACH);
    }
    reap_children();
}

/// Kills the child's process group and reaps the child.
fn kill_group(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Gives every child of the worker (an orphaned daemon reparented to it) [`STOP_GRACE`] to
/// exit, then kills and reaps them all.
pub fn reap_children() {
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        let left = children();
        for pid in &left {
            let _ = rustix::process::waitpid(Some(*pid), rustix::process::WaitOptions::NOHANG);
        }
        let left = children();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for pid in &left {
                let _ = rustix::process::kill_process(*pid, rustix::process::Signal::KILL);
                let _ = rustix::process::waitpid(Some(*pid), rustix::process::WaitOptions::empty());
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The worker's children, from `/proc/<pid>/stat` (field 4 is the parent).
fn children() -> Vec<rustix::process::Pid> {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        let ppid: i32 = after.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == me).then(|| rustix::process::Pid::from_raw(pid)).flatten()
    })
    .collect()
}

/// How many mounts sit on `merged` (its mount point field in `/proc/self/mountinfo`, which
/// shows paths from the worker's root).
fn mounts_on(merged: &str) -> usize {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return 0 };
    info.lines().filter(|l| l.split(' ').nth(4) == Some(merged)).count()
}

/// The command's output, cut to its last 2000 bytes.
fn output() -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(OUTPUT) {
        let _ = f.read_to_end(&mut buf);
    }
    let _ = rustix::fs::unlinkat(CWD, OUTPUT, rustix::fs::AtFlags::empty());
    let cut = buf.len().saturating_sub(2000);
    String::from_utf8_lossy(&buf[cut..]).trim().to_owned()
}

fn cmd_error(argv: &[String], status: &str, stderr: &str) -> BackendError {
    BackendError::MountCommand { command: argv.join(" "), status: status.to_owned(), stderr: stderr.to_owned() }
}
