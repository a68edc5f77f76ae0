//! The worker process: a private mount namespace, a tmpfs as its whole world, and a loop
//! that carries out one command per stdin line.

use super::mount_cmd::{self, Daemon};
use super::protocol::{Extra, Request};
use super::template::{Template, Values};
use super::{layers, ops};
use crate::backend::{BackendError, Command, Edit, Reply};
use crate::dump::try_dump_merged;
use crate::errno::Errno;
use crate::mount::Options;
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags, CWD};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;

/// Where the layers live on the worker's tmpfs (as `/l/<n>`).
const LAYERS: &str = "/l";
/// Where the workdirs live (as `/w/<n>`, one per upper layer).
const WORKDIRS: &str = "/w";
/// The merged mount point.
const MERGED: &str = "/m";
/// The directory an option string's paths are resolved from: a link per layer name.
const NAMES: &str = "/n";
/// The sysctl that empties the kernel's caches.
const DROP_CACHES: &str = "/proc/sys/vm/drop_caches";

/// The worker's `main`: sets up the namespace and serves commands from stdin until it
/// closes. Run by `ovlsim kernel-worker` (a hidden subcommand); not meant to be called
/// otherwise.
///
/// `parent` (`--parent-pid <pid>` on the command line) is the process that expects to own
/// the worker. The worker exits at once if its parent is already someone else.
pub fn worker_main(parent: Option<i32>) -> ExitCode {
    worker_main_with(parent, None)
}

/// [`worker_main`], mounting with `mount_command` (a template, see
/// [`MountConfig`](super::MountConfig); `--mount-command` on the command line) instead of
/// `mount(2)` when it is given.
pub fn worker_main_with(parent: Option<i32>, mount_command: Option<&str>) -> ExitCode {
    let command = match mount_command.map(Template::parse).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ovlsim kernel-worker: --mount-command: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)) {
        eprintln!("ovlsim kernel-worker: PR_SET_PDEATHSIG: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(parent) = parent {
        let now = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
        if now != Some(parent) {
            eprintln!("ovlsim kernel-worker: the parent {parent} is gone");
            return ExitCode::FAILURE;
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut worker = match Worker::setup(command) {
        Ok(w) => {
            let hello = super::protocol::Hello::new(&format!(
                "ovlsim {} {}",
                env!("CARGO_PKG_VERSION"),
                super::WORKER_SUBCOMMAND
            ));
            if send_line(&mut out, &serde_json::to_string(&hello).unwrap_or_default()).is_err() {
                return ExitCode::FAILURE;
            }
            w
        }
        Err(msg) => {
            let _ = send(&mut out, &Err(BackendError::Failed(msg)));
            return ExitCode::FAILURE;
        }
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) => {
                worker.stop();
                return ExitCode::SUCCESS;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("ovlsim kernel-worker: reading stdin: {e}");
                return ExitCode::FAILURE;
            }
        }
        let reply = match Request::read(&line) {
            Ok(Request::Command(cmd)) => worker.exec(&cmd),
            Ok(Request::Extra(Extra::TryUnmount)) => worker.try_unmount(),
            Err(e) => Err(BackendError::Failed(format!("the worker cannot read the command: {e}"))),
        };
        if send(&mut out, &reply).is_err() {
            return ExitCode::FAILURE;
        }
    }
}

fn send(out: &mut impl Write, reply: &Result<Reply, BackendError>) -> std::io::Result<()> {
    let line = serde_json::to_string(reply).unwrap_or_else(|e| {
        serde_json::to_string(&Err::<Reply, _>(BackendError::Failed(format!(
            "the worker cannot encode its reply: {e}"
        ))))
        .unwrap_or_default()
    });
    send_line(out, &line)
}

fn send_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// A failed setup step, as a message.
fn step<T>(what: &str, r: rustix::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// The worker's state.
struct Worker {
    /// The tmpfs root, the worker's own `/` while unmounted.
    root: OwnedFd,
    /// Scenario layer names to their directory numbers.
    layers: BTreeMap<String, u32>,
    /// While mounted: the merged root fd (the process root).
    mounted: Option<OwnedFd>,
    /// The mount command, if the worker mounts with one instead of `mount(2)`.
    command: Option<Template>,
    /// While mounted with a command that keeps running: its process.
    daemon: Option<Daemon>,
    /// The open handles, closed at every unmount (but `TryUnmount`), mount and new layer.
    handles: super::fd::Handles,
    /// `/proc/sys/vm/drop_caches`, opened before the chroot hides `/proc` (or why it could
    /// not be).
    drop_caches: Result<OwnedFd, String>,
}

impl Worker {
    /// Namespace, tmpfs, the host's programs for a mount command, chroot, umask.
    fn setup(command: Option<Template>) -> Result<Worker, String> {
        // SAFETY: the worker is single-threaded here, and CLONE_NEWNS touches no fd table.
        step("unshare(CLONE_NEWNS)", unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) })?;
        step(
            "making / recursively private",
            rustix::mount::mount_change("/", MountPropagationFlags::PRIVATE | MountPropagationFlags::REC),
        )?;
        let base = std::env::temp_dir();
        step(
            &format!("mounting a tmpfs on {}", base.display()),
            rustix::mount::mount("ovlsim", &base, "tmpfs", MountFlags::NODEV, Some(c"mode=0755")),
        )?;
        let root = step(
            "opening the tmpfs",
            rustix::fs::open(&base, OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC, Mode::empty()),
        )?;
        if command.is_some() {
            mount_cmd::expose_host(&base)?;
        }
        let drop_caches = rustix::fs::open(DROP_CACHES, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| format!("opening {DROP_CACHES}: {e}"));
        let worker = Worker {
            root,
            layers: BTreeMap::new(),
            mounted: None,
            command,
            daemon: None,
            handles: Default::default(),
            drop_caches,
        };
        step("chroot into the tmpfs", worker.enter_root())?;
        rustix::process::umask(Mode::empty());
        for d in [LAYERS, WORKDIRS, MERGED] {
            step(&format!("mkdir {d}"), rustix::fs::mkdirat(CWD, d, Mode::from_raw_mode(0o755)))?;
        }
        Ok(worker)
    }

    /// Makes the tmpfs root the process root and cwd.
    fn enter_root(&self) -> rustix::io::Result<()> {
        rustix::process::fchdir(&self.root)?;
        rustix::process::chroot(".")?;
        rustix::process::chdir("/")
    }

    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        if matches!(cmd, Command::Layer { .. } | Command::Mount { .. } | Command::Unmount) {
            self.handles.close_all();
        }
        if matches!(cmd, Command::Layer { .. }) {
            self.handles.forget_file_handles();
        }
        match cmd {
            Command::Op(crate::ops::Op::Fd(op)) if self.mounted.is_some() => self.handles.run(op).map(Reply::Outcome),
            Command::Layer { name, content } => {
                self.unmounted("creating a layer")?;
                if let Some(old) = self.layers.remove(name) {
                    layers::remove_dir(&layer_dir(old))?;
                    layers::remove_dir(&work_dir(old))?;
                }
                let n = (0..).find(|n| !self.layers.values().any(|v| v == n)).expect("a free layer number");
                let dir = layer_dir(n);
                match layers::build(&dir, content) {
                    Ok(()) => {
                        self.layers.insert(name.clone(), n);
                        Ok(Reply::Done)
                    }
                    Err(e) => {
                        let _ = layers::remove_dir(&dir);
                        Err(e)
                    }
                }
            }
            Command::Mount { lowers, upper, options } => {
                if self.mounted.is_some() {
                    return Err(usage("mount while mounted"));
                }
                let lowers = lowers.iter().map(|n| self.named(n)).collect::<Result<Vec<_>, _>>()?;
                let upper = upper.as_deref().map(|n| self.named(n)).transpose()?;
                self.mount(&lowers, upper, options)
            }
            Command::MountData { data, fsconfig } => {
                if self.mounted.is_some() {
                    return Err(usage("mount while mounted"));
                }
                self.mount_data(data, fsconfig.as_deref())
            }
            Command::Unmount => self.unmount(),
            Command::Op(op) => {
                if self.mounted.is_none() {
                    return Err(usage("an operation needs a mount"));
                }
                ops::run(op).map(Reply::Outcome)
            }
            Command::Edit { layer, edit } => {
                self.unmounted("an offline edit")?;
                let dir = layer_dir(self.named(layer)?);
                match edit {
                    Edit::Put { path, node } => layers::put(&dir, path, node)?,
                    Edit::Link { path, to } => {
                        if !layers::put_link(&dir, path, to)? {
                            return Err(usage(&format!("link target {to:?} is missing or a directory")));
                        }
                    }
                    Edit::Remove { path } => layers::remove(&dir, path)?,
                }
                Ok(Reply::Done)
            }
            Command::DumpLayer { name } if name.ends_with(crate::backend::INDEX_SUFFIX) => {
                self.unmounted("dumping a layer")?;
                let upper = self.named(name.strip_suffix(crate::backend::INDEX_SUFFIX).expect("the suffix"))?;
                let named: Vec<(String, String)> =
                    self.layers.iter().map(|(n, d)| (n.clone(), layer_dir(*d))).collect();
                layers::dump_index(&format!("{}/index", work_dir(upper)), &named).map(Reply::Index)
            }
            Command::DumpLayer { name } => {
                self.unmounted("dumping a layer")?;
                let dir = layer_dir(self.named(name)?);
                layers::dump(&dir).map(Reply::Layer)
            }
            Command::DumpMerged => {
                if self.mounted.is_none() {
                    return Err(usage("dumping the merged view needs a mount"));
                }
                try_dump_merged(ops::run).map(Reply::Merged)
            }
            Command::DropCaches => self.drop_caches(),
            Command::OpAs { cred, op } => {
                if self.mounted.is_none() {
                    return Err(usage("an operation needs a mount"));
                }
                if self.command.is_some() {
                    return Err(BackendError::NotApplicable(
                        "an operation as another caller on a mount command's file system (only its mounter may use it)"
                            .into(),
                    ));
                }
                if let crate::ops::Op::Fd(f) = op {
                    return self.handles.run_as(cred, f).map(Reply::Outcome);
                }
                super::caller::run_as(cred, op).map(Reply::Outcome)
            }
        }
    }

    /// Writes `2` to `/proc/sys/vm/drop_caches`: the kernel frees every dentry and inode
    /// that nothing references (kernel: `fs/drop_caches.c`, `drop_slab`). This is
    /// system-wide, on the host's caches too; only what is unused goes, so it is safe, and
    /// it needs root. At offset 0: with `kernel.sysctl_writes_strict` (the default) a write
    /// at a later offset is ignored.
    fn drop_caches(&self) -> Result<Reply, BackendError> {
        let fd = self.drop_caches.as_ref().map_err(|e| BackendError::Failed(e.clone()))?;
        match rustix::io::pwrite(fd, b"2\n", 0) {
            Ok(2) => Ok(Reply::Done),
            Ok(n) => Err(BackendError::Failed(format!("{DROP_CACHES}: a short write ({n} of 2 bytes)"))),
            Err(e) => Err(BackendError::Failed(format!("writing {DROP_CACHES}: {e}"))),
        }
    }

    fn unmounted(&self, what: &str) -> Result<(), BackendError> {
        match self.mounted {
            Some(_) => Err(usage(&format!("{what} needs the overlay unmounted"))),
            None => Ok(()),
        }
    }

    fn named(&self, name: &str) -> Result<u32, BackendError> {
        self.layers.get(name).copied().ok_or_else(|| usage(&format!("no layer named {name:?}")))
    }

    /// Legacy `mount(2)` of the overlay on `/m`, then a chroot into it.
    fn mount(&mut self, lowers: &[u32], upper: Option<u32>, options: &Options) -> Result<Reply, BackendError> {
        let mut data = Vec::new();
        if !lowers.is_empty() {
            let dirs: Vec<String> = lowers.iter().map(|n| layer_dir(*n)).collect();
            data.push(format!("lowerdir={}", dirs.join(":")));
        }
        if let Some(u) = upper {
            let work = work_dir(u);
            match rustix::fs::mkdirat(CWD, work.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(failed(format!("mkdir {work}: {e}"))),
            }
            data.push(format!("upperdir={}", layer_dir(u)));
            data.push(format!("workdir={work}"));
        } else if options.workdir_without_upper {
            let work = format!("{WORKDIRS}/stray");
            match rustix::fs::mkdirat(CWD, work.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(failed(format!("mkdir {work}: {e}"))),
            }
            data.push(format!("workdir={work}"));
        }
        let dirs = data.join(",");
        data.push(options.to_mount_string());
        if let Some(template) = &self.command {
            if options.read_only {
                data.push("ro".into());
            }
            let values = Values {
                lowerdir: lowers.iter().map(|n| layer_dir(*n)).collect::<Vec<_>>().join(":"),
                upperdir: upper.map(layer_dir).unwrap_or_default(),
                workdir: match upper {
                    Some(u) => work_dir(u),
                    None if options.workdir_without_upper => format!("{WORKDIRS}/stray"),
                    None => String::new(),
                },
                merged: MERGED.into(),
                options: data.join(","),
                dirs,
            };
            self.daemon = mount_cmd::mount(&template.argv(&values), MERGED)?;
            if let Err(e) = restrict(options.read_only) {
                let _ = mount_cmd::unmount(MERGED, self.daemon.take());
                return Err(failed(format!("mount_setattr(nodev) on {MERGED}: {e}")));
            }
            return self.enter_merged();
        }
        let data = std::ffi::CString::new(data.join(",")).map_err(|_| usage("mount options contain a NUL byte"))?;
        let mut flags = MountFlags::NODEV;
        if options.read_only {
            flags |= MountFlags::RDONLY;
        }
        if let Err(e) = rustix::mount::mount("overlay", MERGED, "overlay", flags, Some(&*data)) {
            return match Errno::from_code(e.raw_os_error()) {
                Some(errno) => Ok(Reply::MountRefused(errno)),
                None => Err(failed(format!(
                    "mount refused with {e} (errno {}), which the model does not know",
                    e.raw_os_error()
                ))),
            };
        }
        self.enter_merged()
    }

    /// [`Command::MountData`]: legacy `mount(2)` with the option string unchanged, from
    /// `/n`, a directory where each layer's name is a symbolic link to the layer, and each
    /// `workdir=` path that is no layer's name a link to the upper layer's workdir (or to
    /// `/w/stray` without an upper); the kernel resolves the relative paths against the
    /// cwd. A path that is not a plain name (empty, `.`, `..`, or with a `/`) is a usage
    /// error: it would reach outside `/n`. With `fsconfig`, the new mount API from the same
    /// `/n` ([`fsconfig_mount`]).
    fn mount_data(&mut self, data: &str, fsconfig: Option<&[crate::params::FsParam]>) -> Result<Reply, BackendError> {
        if self.command.is_some() {
            return Err(BackendError::NotApplicable("an option string is passed to mount(2) only".into()));
        }
        let (lowers, upper, works) = match fsconfig {
            Some(calls) => crate::params::Params::fsconfig_names(calls),
            None => crate::params::Params::names(data),
        };
        for name in lowers.iter().chain(&upper).chain(&works) {
            if !plain_name(name) {
                return Err(usage(&format!("the option string names {name:?}, which is not a layer's name")));
            }
        }
        layers::remove_dir(NAMES)?;
        let made = |r: rustix::io::Result<()>, what: &str| r.map_err(|e| failed(format!("{what}: {e}")));
        made(rustix::fs::mkdirat(CWD, NAMES, Mode::from_raw_mode(0o755)), &format!("mkdir {NAMES}"))?;
        for (name, n) in self.layers.iter().filter(|(name, _)| plain_name(name)) {
            made(rustix::fs::symlink(layer_dir(*n), format!("{NAMES}/{name}")), &format!("symlink {NAMES}/{name}"))?;
        }
        let work = match upper.as_deref().and_then(|u| self.layers.get(u)) {
            Some(u) => work_dir(*u),
            None => format!("{WORKDIRS}/stray"),
        };
        match rustix::fs::mkdirat(CWD, work.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(failed(format!("mkdir {work}: {e}"))),
        }
        for w in works.iter().filter(|w| !self.layers.contains_key(*w)) {
            match rustix::fs::symlink(work.as_str(), format!("{NAMES}/{w}")) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(failed(format!("symlink {NAMES}/{w}: {e}"))),
            }
        }
        if let Some(calls) = fsconfig {
            made(rustix::process::chdir(NAMES), &format!("chdir {NAMES}"))?;
            let r = fsconfig_mount(calls);
            made(rustix::process::chdir("/"), "chdir /")?;
            return match r? {
                None => self.enter_merged(),
                Some(refused) => Ok(refused),
            };
        }
        let c = std::ffi::CString::new(data).map_err(|_| usage("mount options contain a NUL byte"))?;
        made(rustix::process::chdir(NAMES), &format!("chdir {NAMES}"))?;
        let r = rustix::mount::mount("overlay", MERGED, "overlay", MountFlags::NODEV, Some(&*c));
        made(rustix::process::chdir("/"), "chdir /")?;
        if let Err(e) = r {
            return match Errno::from_code(e.raw_os_error()) {
                Some(errno) => Ok(Reply::MountRefused(errno)),
                None => Err(failed(format!(
                    "mount refused with {e} (errno {}), which the model does not know",
                    e.raw_os_error()
                ))),
            };
        }
        self.enter_merged()
    }

    /// Makes the merged directory the process root and cwd.
    fn enter_merged(&mut self) -> Result<Reply, BackendError> {
        let merged = rustix::fs::open(MERGED, OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .and_then(|fd| {
                rustix::process::fchdir(&fd)?;
                rustix::process::chroot(".")?;
                rustix::process::chdir("/")?;
                Ok(fd)
            });
        match merged {
            Ok(fd) => {
                self.mounted = Some(fd);
                Ok(Reply::Done)
            }
            Err(e) => {
                let _ = self.enter_root();
                if self.command.is_some() {
                    let _ = mount_cmd::unmount(MERGED, self.daemon.take());
                } else {
                    let _ = rustix::mount::unmount(MERGED, UnmountFlags::DETACH);
                }
                Err(failed(format!("entering the merged root: {e}")))
            }
        }
    }

    /// Escapes the merged root, then unmounts it.
    fn unmount(&mut self) -> Result<Reply, BackendError> {
        if self.mounted.take().is_none() {
            return Err(usage("unmount while unmounted"));
        }
        self.enter_root().map_err(|e| failed(format!("escaping the merged root: {e}")))?;
        if self.command.is_some() {
            return mount_cmd::unmount(MERGED, self.daemon.take()).map(|()| Reply::Done);
        }
        if let Err(e) = rustix::mount::unmount(MERGED, UnmountFlags::empty()) {
            let _ = rustix::mount::unmount(MERGED, UnmountFlags::DETACH);
            return Err(failed(format!("umount {MERGED}: {e} (detached it instead)")));
        }
        Ok(Reply::Done)
    }
}

impl Worker {
    /// `umount(2)` with the handles left open, as a scenario's `unmount` step makes it: an
    /// errno (EBUSY while a handle is open) is the answer, and the worker goes back into
    /// the merged root, still mounted, its handles open. Without handles it is
    /// [`Worker::unmount`]. A mount command's daemon is stopped once its file system is
    /// unmounted.
    fn try_unmount(&mut self) -> Result<Reply, BackendError> {
        if self.mounted.is_none() {
            return Err(usage("unmount while unmounted"));
        }
        if self.handles.is_empty() {
            return self.unmount();
        }
        self.enter_root().map_err(|e| failed(format!("escaping the merged root: {e}")))?;
        match rustix::mount::unmount(MERGED, UnmountFlags::empty()) {
            Ok(()) => {
                self.mounted = None;
                if self.command.is_some() {
                    mount_cmd::stop(self.daemon.take())?;
                }
                Ok(Reply::Done)
            }
            Err(e) => {
                let errno = Errno::from_code(e.raw_os_error());
                self.mounted = None;
                self.enter_merged()?;
                match errno {
                    Some(errno) => Ok(Reply::MountRefused(errno)),
                    None => Err(failed(format!("umount {MERGED}: {e}, an errno the model does not know"))),
                }
            }
        }
    }

    /// Unmounts and stops a mount command's processes before the worker exits (its
    /// namespace would take the mount, but not a daemon).
    fn stop(&mut self) {
        self.handles.close_all();
        if self.command.is_some() {
            if self.mounted.take().is_some() {
                let _ = self.enter_root();
                let _ = mount_cmd::unmount(MERGED, self.daemon.take());
            }
            mount_cmd::reap_children();
        }
    }
}

/// Sets `nodev` (and `rdonly` for a read-only mount) on the mount a command made, as the
/// `mount(2)` path passes `MS_NODEV` (see the module documentation of [`super`]), with
/// `mount_setattr(2)`, which changes only these flags.
fn restrict(read_only: bool) -> std::io::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    const MOUNT_ATTR_NODEV: u64 = 0x4;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_NODEV | if read_only { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let path = c"/m";
    // SAFETY: the path is a NUL-terminated string and `attr` a live struct of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            0u32,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether a layer name can be a link's name in [`NAMES`] (and so a path in an option
/// string that stays there).
/// The new mount API, from the cwd (`/n`): `fsopen("overlay")`, each call
/// (`FSCONFIG_SET_STRING`, or `FSCONFIG_SET_FLAG` without a value) until one is refused,
/// `FSCONFIG_CMD_CREATE`, `fsmount` with `MOUNT_ATTR_NODEV` (as the `mount(2)` path passes
/// `MS_NODEV`, see the module documentation of [`super`]), and `move_mount` onto `/m`.
/// `None` when mounted; the reply of a refusal otherwise ([`Reply::CallRefused`], or
/// [`Reply::MountRefused`] for `FSCONFIG_CMD_CREATE`). Nothing is left mounted on a
/// failure: the detached mount of `fsmount` goes with its descriptor unless `move_mount`
/// attached it.
fn fsconfig_mount(calls: &[crate::params::FsParam]) -> Result<Option<Reply>, BackendError> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
    let errno_of = |e: rustix::io::Errno, what: &str| {
        Errno::from_code(e.raw_os_error()).ok_or_else(|| {
            failed(format!("{what} refused with {e} (errno {}), which the model does not know", e.raw_os_error()))
        })
    };
    for c in calls {
        if c.key.contains('\0') || c.value.as_deref().is_some_and(|v| v.contains('\0')) {
            return Err(usage("an fsconfig key or value contains a NUL byte"));
        }
    }
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| failed(format!("fsopen(\"overlay\"): {e}")))?;
    for (call, c) in calls.iter().enumerate() {
        let r = match &c.value {
            Some(v) => rustix::mount::fsconfig_set_string(&fs, c.key.as_str(), v.as_str()),
            None => rustix::mount::fsconfig_set_flag(&fs, c.key.as_str()),
        };
        if let Err(e) = r {
            return Ok(Some(Reply::CallRefused { call, errno: errno_of(e, "fsconfig")? }));
        }
    }
    if let Err(e) = rustix::mount::fsconfig_create(&fs) {
        return Ok(Some(Reply::MountRefused(errno_of(e, "FSCONFIG_CMD_CREATE")?)));
    }
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::MOUNT_ATTR_NODEV)
        .map_err(|e| failed(format!("fsmount: {e}")))?;
    rustix::mount::move_mount(&mnt, "", CWD, MERGED, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(|e| failed(format!("move_mount onto {MERGED}: {e}")))?;
    Ok(None)
}

fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

fn layer_dir(n: u32) -> String {
    format!("{LAYERS}/{n}")
}

fn work_dir(n: u32) -> String {
    format!("{WORKDIRS}/{n}")
}

fn usage(msg: &str) -> BackendError {
    BackendError::Usage(msg.to_owned())
}

fn failed(msg: String) -> BackendError {
    BackendError::Failed(msg)
}
