//! The real-mount backend: the same [`Command`]s as the model, carried out by the Linux
//! kernel on a real overlay mount.
//!
//! # Shape
//!
//! [`KernelBackend`] is the parent side. It spawns one worker process (the `ovlsim` binary
//! run with the hidden subcommand `kernel-worker`, which calls [`worker_main`]; the CLI
//! re-executes itself through `/proc/self/exe`, see [`KernelBackend::find_worker`] and
//! [`WorkerCommand`]) and speaks to it over pipes: after the worker's hello line (the
//! protocol's version, [`protocol`]), one JSON line per [`Command`] on the worker's stdin,
//! one JSON line per `Result<Reply, BackendError>` on its stdout. `docs/worker-protocol.md`
//! documents the protocol for workers in other languages ([`KernelBackend::with_program`]). Every command has a timeout
//! ([`KernelBackend::DEFAULT_TIMEOUT`], see [`KernelBackend::set_timeout`]); when it runs out,
//! or the worker dies, the worker is killed and reaped and the command fails with
//! [`BackendError::Failed`] naming it. Dropping the backend kills and reaps the worker.
//!
//! # Isolation
//!
//! The worker sets `PR_SET_PDEATHSIG` to `SIGKILL` (the parent side spawns every worker
//! from one long-lived thread, because the "parent" of that rule is the spawning thread),
//! enters a new mount namespace (`unshare(CLONE_NEWNS)`) and makes every mount in it
//! private (`MS_REC|MS_PRIVATE`) before it mounts anything. It then mounts a fresh tmpfs
//! over the temp directory (`std::env::temp_dir()`, inside its own namespace only, so
//! nothing is left on the host), keeps an fd to it, and `chroot`s into it. From then on the
//! host file system is out of reach of every path the worker resolves. The layers live on
//! that tmpfs as `/l/<n>`, the workdirs as `/w/<n>` (one per upper layer, reused across
//! remounts of it, as a user would), and the merged mount point is `/m`. The short names
//! keep a 500-layer `lowerdir=` inside the one page that legacy `mount(2)` copies. When the
//! worker exits, for whatever reason, its namespace goes with it, and every mount in it.
//!
//! # Path safety
//!
//! Operations run inside the merged view: after mounting, the worker `fchdir`s to the
//! merged directory and `chroot(".")`s there, then runs each [`Op`](crate::ops::Op) as the plain syscall on
//! the path exactly as given, as a user would. So every path rule (absolute symlinks, `..`
//! at the root, trailing slashes, `ELOOP` after 40 links, `rmdir("/")`) is the kernel's
//! own, and none of them reaches past the merged root. Before unmounting, it escapes back
//! with `fchdir(tmpfs fd)` and `chroot(".")`.
//!
//! Layer building, offline edits and dumps never follow a symlink: directories are opened
//! one component at a time with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_XDEV)` relative to the layer directory, and every node is made and read with
//! `*at` calls that do not follow. A component `.` or `..` in a layer path is refused.
//!
//! Device nodes are a second way out of a sandbox: a layer may hold any major and minor,
//! and opening `block 8/0` would open a host disk. So the tmpfs and the overlay are mounted
//! `MS_NODEV`. **What this changes, observably:** `open`, `read` and `write` of a char or
//! block device through the merged view fail with `EACCES` (the VFS `may_open_dev` check),
//! where a `dev` mount would open the device. Nothing else differs: `mknod`, `stat`,
//! copy-up, rename and unlink of devices behave as on any mount.
//!
//! # How the operations map to syscalls
//!
//! As in [`crate::ops`], with these details:
//! - every `open` (in `Open`, `Read`, `Write`, `Readdir`) also carries `O_NONBLOCK` and
//!   `O_CLOEXEC`. `O_NONBLOCK` keeps a FIFO from blocking the worker: a FIFO opened for
//!   reading reads as empty, one opened for writing with no reader fails with `ENXIO`. It
//!   changes nothing for regular files and directories;
//! - `Read` reads to end of file, and fails the command (not the op) past 64 MiB;
//! - `Utimes` is `utimensat(AT_FDCWD, path, NULL, 0)` and `Truncate` is `truncate(2)`,
//!   both through libc, because rustix has neither form;
//! - `Chown` passes `u32::MAX` through as `-1`, "leave unchanged", as the raw syscall does;
//! - an errno that [`Errno::from_code`](crate::errno::Errno::from_code) does not know, or
//!   a file type the model has no name for (a socket), fails the command with
//!   [`BackendError::Failed`].
//!
//! # What a layer dump normalises
//!
//! [`Command::DumpLayer`] reads a layer directory back as a [`FlatLayer`] the way
//! [`Layer::to_flat`](crate::layer::Layer::to_flat) does: parents first, names in byte
//! order, a hard link as [`FlatEntry::Link`](crate::layer::FlatEntry::Link) to the first
//! path seen. It leaves out only what is not part of the contract:
//! - the kernel's bookkeeping xattrs `trusted.overlay.origin`, `trusted.overlay.impure` and
//!   `trusted.overlay.uuid`, and the same names under `user.overlay.` (a plain lookup
//!   writes some of them), in layer dumps and in `listxattr` through the mount (where they
//!   show when a later mount uses another private prefix);
//! - hard links between char 0/0 whiteouts: the kernel makes each new whiteout a link to one
//!   shared whiteout inode in the workdir, the model makes separate inodes, so a whiteout is
//!   always dumped as its own node;
//! - timestamps, raw inode numbers, link counts and directory sizes, which
//!   [`FlatLayer`] does not have at all.
//!
//! # State rules
//!
//! An operation or [`Command::DumpMerged`] while unmounted, a layer name that was never
//! created, a mount while mounted, an unmount while unmounted, and `Layer`, `Edit` or
//! `DumpLayer` while mounted are [`BackendError::Usage`]. Creating a layer again under a
//! name it already has replaces its directory and its workdir with fresh ones.
//!
//! [`FlatLayer`]: crate::layer::FlatLayer

mod caller;
mod fd;
pub(crate) mod layers;
mod mount_cmd;
mod ops;
pub mod protocol;
pub mod template;
mod worker;

pub use mount_cmd::{MOUNT_TIMEOUT, STOP_GRACE};
pub use worker::{worker_main, worker_main_with};

use crate::backend::{Backend, BackendError, Command, Edit, Reply};
use crate::dialect::Dialect;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The hidden `ovlsim` subcommand that runs the worker ([`worker_main`]).
pub const WORKER_SUBCOMMAND: &str = "kernel-worker";

/// The file name of the `ovlsim` binary, which is also the worker (with
/// [`WORKER_SUBCOMMAND`]).
pub const CLI_NAME: &str = "ovlsim";

/// The environment variable that names an `ovlsim` binary (under any file name) to run as
/// the worker, with [`WORKER_SUBCOMMAND`], overriding the search.
pub const WORKER_ENV: &str = "OVLSIM_KERNEL_WORKER";

/// mimalloc's option (read from the environment at start-up) that commits its first arena
/// eagerly; turned off for the workers this crate starts from the `ovlsim` binary.
const MIMALLOC_EAGER_COMMIT: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// How to start a worker: a program and the arguments that come before `--parent-pid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The program.
    pub program: PathBuf,
    /// Its leading arguments.
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// The program alone, with no leading arguments.
    pub fn new(program: impl Into<PathBuf>) -> WorkerCommand {
        WorkerCommand { program: program.into(), args: Vec::new() }
    }

    /// An `ovlsim` binary, run as `<ovlsim> kernel-worker`.
    pub fn cli(ovlsim: impl Into<PathBuf>) -> WorkerCommand {
        WorkerCommand { program: ovlsim.into(), args: vec![WORKER_SUBCOMMAND.into()] }
    }

    /// The running process itself, re-executed through `/proc/self/exe` with the hidden
    /// subcommand: what the `ovlsim` CLI uses (see [`set_default_worker`]).
    pub fn this_cli() -> WorkerCommand {
        WorkerCommand::cli("/proc/self/exe")
    }
}

impl std::fmt::Display for WorkerCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.program.display())?;
        for a in &self.args {
            write!(f, " {}", a.to_string_lossy())?;
        }
        Ok(())
    }
}

impl From<&Path> for WorkerCommand {
    fn from(p: &Path) -> WorkerCommand {
        WorkerCommand::new(p)
    }
}

impl From<PathBuf> for WorkerCommand {
    fn from(p: PathBuf) -> WorkerCommand {
        WorkerCommand::new(p)
    }
}

impl From<&str> for WorkerCommand {
    fn from(p: &str) -> WorkerCommand {
        WorkerCommand::new(p)
    }
}

static DEFAULT_WORKER: OnceLock<WorkerCommand> = OnceLock::new();

/// Sets the process-wide worker that [`KernelBackend::find_worker`] uses when [`WORKER_ENV`]
/// is not set. Only the first call counts; it returns whether this one did. The `ovlsim` CLI
/// sets [`WorkerCommand::this_cli`]; [`KernelBackend::gate`] sets the worker it is given.
pub fn set_default_worker(worker: WorkerCommand) -> bool {
    DEFAULT_WORKER.set(worker).is_ok()
}

/// The mount-command backend's configuration: the same worker, mounting with a command
/// instead of `mount(2)` (see [`template`] for the placeholders and the quoting, and
/// [`KernelBackend::with_mount`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountConfig {
    /// The command template, e.g. `mount -t overlay overlay -o {options} {merged}`.
    pub template: String,
    /// How layers are written for the implementation and its upper read back.
    pub dialect: Dialect,
}

impl MountConfig {
    /// A configuration, with the template checked.
    pub fn new(template: &str, dialect: Dialect) -> Result<MountConfig, String> {
        template::Template::parse(template)?;
        Ok(MountConfig { template: template.to_owned(), dialect })
    }

    /// The command line option that selects it: `mount:TEMPLATE`.
    pub fn spec(&self) -> String {
        format!("{MOUNT_PREFIX}{}", self.template)
    }
}

/// The prefix of a mount-command backend's name on the command line (`mount:TEMPLATE`).
pub const MOUNT_PREFIX: &str = "mount:";

/// The prefix of a worker program on the command line (`worker:COMMAND ARGS`): another
/// program that speaks the worker protocol (`docs/worker-protocol.md`) stands in for the
/// `ovlsim` worker.
pub const WORKER_PREFIX: &str = "worker:";

impl WorkerCommand {
    /// A worker program from its command line, `COMMAND ARGS`, split into words as a mount
    /// template is ([`template::split_words`]: quotes and backslashes, no shell).
    pub fn parse(text: &str) -> Result<WorkerCommand, String> {
        let mut words = template::split_words(text)?.into_iter();
        let program = words.next().ok_or("the worker command is empty")?;
        Ok(WorkerCommand { program: program.into(), args: words.map(OsString::from).collect() })
    }
}

/// The system a backend runs on, as the command line names it: the kernel's `mount(2)`
/// through the `ovlsim` worker (`kernel`), a mount command (`mount:TEMPLATE`), or another
/// worker program (`worker:COMMAND ARGS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SystemUnderTest {
    /// The kernel's `mount(2)`, through the `ovlsim` worker.
    #[default]
    Kernel,
    /// The `ovlsim` worker, mounting with a command ([`KernelBackend::with_mount`]).
    Mount(MountConfig),
    /// Another program that speaks the worker protocol ([`KernelBackend::with_program`]).
    Worker(WorkerCommand),
}

impl SystemUnderTest {
    /// Starts a backend on it.
    pub fn start(&self) -> Result<KernelBackend, BackendError> {
        match self {
            SystemUnderTest::Kernel => KernelBackend::new(),
            SystemUnderTest::Mount(m) => KernelBackend::with_mount(m.clone()),
            SystemUnderTest::Worker(w) => KernelBackend::with_program(w.clone()),
        }
    }

    /// A short name for reports: `kernel`, a mount command's program (`fuse-overlayfs`, or
    /// `mount -t overlay` for the kernel through the generic path), or a worker program's
    /// file name (`worker.py`).
    pub fn label(&self) -> String {
        match self {
            SystemUnderTest::Kernel => "kernel".into(),
            SystemUnderTest::Mount(m) => {
                let words = template::split_words(&m.template).unwrap_or_default();
                let program = words.first().map(|w| file_name(w)).unwrap_or_else(|| "mount command".into());
                match words.get(1..3) {
                    Some([t, fs]) if program == "mount" && t == "-t" => format!("mount -t {fs}"),
                    _ => program,
                }
            }
            SystemUnderTest::Worker(w) => {
                // An interpreter's script names the worker better than the interpreter.
                let script = w.args.iter().map(|a| a.to_string_lossy()).find(|a| !a.starts_with('-'));
                let program = file_name(&w.program.to_string_lossy());
                match script {
                    Some(s)
                        if ["python3", "python", "perl", "ruby", "node", "sh", "bash"].contains(&program.as_str()) =>
                    {
                        file_name(&s)
                    }
                    _ => program,
                }
            }
        }
    }

    /// The command line option that names it: `kernel`, `mount:TEMPLATE` or
    /// `worker:COMMAND ARGS`.
    pub fn spec(&self) -> String {
        match self {
            SystemUnderTest::Kernel => "kernel".into(),
            SystemUnderTest::Mount(m) => m.spec(),
            SystemUnderTest::Worker(w) => format!("{WORKER_PREFIX}{w}"),
        }
    }
}

/// The last component of a path.
fn file_name(p: &str) -> String {
    Path::new(p).file_name().map_or_else(|| p.to_owned(), |n| n.to_string_lossy().into_owned())
}

/// The hidden worker option that carries the mount command.
pub const MOUNT_COMMAND_ARG: &str = "--mount-command";

/// How much of the worker's stderr is kept for error messages.
const STDERR_TAIL_MAX: usize = 4096;

/// The real-kernel backend: a worker process with a private mount namespace.
#[derive(Debug)]
pub struct KernelBackend {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    replies: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    timeout: Duration,
    pid: u32,
    gone: Option<String>,
    mount: Option<MountConfig>,
    /// Another worker program, started by [`KernelBackend::with_program`].
    program: Option<WorkerCommand>,
}

impl KernelBackend {
    /// The default timeout of one command: long enough for the slowest real command on a
    /// loaded 2-core machine (the read-back of a tree 4,001 directories deep takes about
    /// 1.4 s of system time when the machine is quiet; a whole `cargo test` at load 12 or
    /// more once failed `tests/hostile_input.rs`'s deep-tree replay, with 10 s here then), and
    /// short enough that a hung worker is noticed.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Starts a worker found by [`KernelBackend::find_worker`].
    pub fn new() -> Result<KernelBackend, BackendError> {
        let worker = KernelBackend::find_worker().map_err(BackendError::Failed)?;
        KernelBackend::with_worker(worker)
    }

    /// Starts a worker found by [`KernelBackend::find_worker`] that mounts with
    /// `config`'s command and writes and reads layers in its dialect. It is the kernel
    /// backend in every other way: the same namespace, tmpfs, layer builder, syscalls and
    /// read-back. A command that does not mount gives [`BackendError::MountCommand`]; what the
    /// dialect cannot express gives [`BackendError::NotApplicable`].
    pub fn with_mount(config: MountConfig) -> Result<KernelBackend, BackendError> {
        let mut worker = KernelBackend::find_worker().map_err(BackendError::Failed)?;
        worker.args.push(MOUNT_COMMAND_ARG.into());
        worker.args.push(config.template.clone().into());
        let mut k = KernelBackend::with_worker(worker)?;
        // Mounting, stopping a daemon and reaping it take their own timeouts inside the worker.
        k.timeout = k.timeout.max(MOUNT_TIMEOUT + STOP_GRACE * 3);
        k.mount = Some(config);
        Ok(k)
    }

    /// The mount command this backend mounts with, if any.
    pub fn mount_config(&self) -> Option<&MountConfig> {
        self.mount.as_ref()
    }

    /// Starts another program that speaks the worker protocol (`docs/worker-protocol.md`)
    /// as the system under test: run as `COMMAND ARGS --parent-pid <pid>`, it builds
    /// layers, mounts and runs operations its own way. [`Backend::name`] is then `worker`.
    pub fn with_program(worker: WorkerCommand) -> Result<KernelBackend, BackendError> {
        let mut k = KernelBackend::with_worker(worker.clone())?;
        k.program = Some(worker);
        Ok(k)
    }

    /// What this backend runs on.
    pub fn system(&self) -> SystemUnderTest {
        match (&self.mount, &self.program) {
            (Some(m), _) => SystemUnderTest::Mount(m.clone()),
            (None, Some(w)) => SystemUnderTest::Worker(w.clone()),
            (None, None) => SystemUnderTest::Kernel,
        }
    }

    /// Starts the worker `worker` (a [`WorkerCommand`], or the path of a program run as it
    /// is), and waits until it has set up its namespace.
    pub fn with_worker(worker: impl Into<WorkerCommand>) -> Result<KernelBackend, BackendError> {
        let worker = worker.into();
        let mut cmd = std::process::Command::new(&worker.program);
        cmd.args(&worker.args)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let ours = worker.args.first().is_some_and(|a| a == WORKER_SUBCOMMAND);
        if ours && std::env::var_os(MIMALLOC_EAGER_COMMIT).is_none() {
            // The `ovlsim` binary's heap is mimalloc, which by default commits its first
            // arena at start-up: about 0.3 ms of a short-lived worker's life (one per
            // scenario under `ovlsim run --backend kernel`). The worker allocates little.
            cmd.env(MIMALLOC_EAGER_COMMIT, "0");
        }
        let mut child = spawn(cmd).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound && ours {
                format!(" (set {WORKER_ENV} to the path of an {CLI_NAME} binary)")
            } else {
                String::new()
            };
            BackendError::Failed(format!("cannot start the worker `{worker}`: {e}{hint}"))
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr_pipe = child.stderr.take();
        let (tx, replies) = mpsc::channel();
        if let Some(out) = stdout {
            let spawned = std::thread::Builder::new().name("ovlsim-kernel-stdout".into()).spawn(move || {
                for line in BufReader::new(out).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send(l).is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            });
            if let Err(e) = spawned {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BackendError::Failed(format!("cannot start a reader thread for the kernel worker: {e}")));
            }
        }
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut err) = stderr_pipe {
            let tail = Arc::clone(&stderr);
            // Without this thread the worker's stderr is simply not collected; a failed
            // spawn is not worth failing the backend for.
            let _ = std::thread::Builder::new().name("ovlsim-kernel-stderr".into()).spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    if t.len() > STDERR_TAIL_MAX {
                        let cut = t.len() - STDERR_TAIL_MAX;
                        t.drain(..cut);
                    }
                }
            });
        }
        let pid = child.id();
        let mut backend = KernelBackend {
            child: Some(child),
            stdin,
            replies,
            stderr,
            timeout: KernelBackend::DEFAULT_TIMEOUT,
            pid,
            gone: None,
            mount: None,
            program: None,
        };
        let line = backend.receive_line("the worker's setup")?;
        match protocol::read_first_line(&line) {
            Ok(protocol::FirstLine::Hello(_)) => Ok(backend),
            Ok(protocol::FirstLine::SetupFailed(e)) => {
                backend.kill();
                Err(BackendError::Failed(format!("the worker `{worker}` could not set up: {}", message(&e))))
            }
            Err(why) => Err(backend.fail(&format!("the worker `{worker}`"), why)),
        }
    }

    /// How to start the worker: `$OVLSIM_KERNEL_WORKER` if set (see [`WORKER_ENV`]); else
    /// the default set by [`set_default_worker`] (the `ovlsim` CLI sets itself); else an
    /// `ovlsim` binary next to the current executable or in its parent directory (test
    /// binaries live in `target/<profile>/deps/`, the binaries in `target/<profile>/`).
    pub fn find_worker() -> Result<WorkerCommand, String> {
        if let Some(p) = std::env::var_os(WORKER_ENV) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(WorkerCommand::cli(p))
            } else {
                Err(format!(
                    "{WORKER_ENV}={} is not a file (unset {WORKER_ENV}, or set it to the path of an {CLI_NAME} binary)",
                    p.display()
                ))
            };
        }
        if let Some(w) = DEFAULT_WORKER.get() {
            return Ok(w.clone());
        }
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the current executable: {e}"))?;
        let name = format!("{CLI_NAME}{}", std::env::consts::EXE_SUFFIX);
        let mut tried = Vec::new();
        let mut release = false;
        let mut dir = exe.parent();
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join(&name);
            if candidate.is_file() {
                return Ok(WorkerCommand::cli(candidate));
            }
            release |= d.file_name().is_some_and(|n| n == "release");
            tried.push(candidate.display().to_string());
            dir = d.parent();
        }
        let build = if release {
            format!("cargo build --release --bin {CLI_NAME}")
        } else {
            format!("cargo build --bin {CLI_NAME}")
        };
        Err(format!(
            "the kernel worker (the {name} binary, run as `{name} {WORKER_SUBCOMMAND}`) was not found (tried {}); \
             build it with `{build}`, or set {WORKER_ENV} to the path of an {CLI_NAME} binary",
            tried.join(", ")
        ))
    }

    /// Whether the kernel tier can run here, and if not, why: not Linux, not root, no
    /// `overlay` in `/proc/filesystems`, no worker binary, or a worker that cannot set up
    /// (for example, `unshare` refused). It starts a worker to find out, and stops it.
    pub fn available() -> Result<(), String> {
        if !cfg!(target_os = "linux") {
            return Err("the kernel tier needs Linux".into());
        }
        let euid = rustix::process::geteuid();
        if !euid.is_root() {
            return Err(format!("not root (euid {}); mounting needs root", euid.as_raw()));
        }
        let fss =
            std::fs::read_to_string("/proc/filesystems").map_err(|e| format!("cannot read /proc/filesystems: {e}"))?;
        if !fss.lines().any(|l| l.split_whitespace().last() == Some("overlay")) {
            return Err("no overlay in /proc/filesystems (try `modprobe overlay`)".into());
        }
        let worker = KernelBackend::find_worker()?;
        KernelBackend::with_worker(worker).map(drop).map_err(|e| message(&e))
    }

    /// [`KernelBackend::available`], asked once per process (it starts a worker).
    pub fn available_once() -> Result<(), String> {
        static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
        AVAILABLE.get_or_init(KernelBackend::available).clone()
    }

    /// The kernel tier's gate for tests and benchmarks: whether it runs here. `worker`
    /// becomes the default worker ([`set_default_worker`]; [`WORKER_ENV`] still overrides
    /// it), so a test passes `WorkerCommand::cli(env!("CARGO_BIN_EXE_ovlsim"))`. When the
    /// tier cannot run, the gate says so loudly (`SKIPPED: <what>: ...`) and returns false;
    /// under `OVLSIM_REQUIRE_KERNEL=1`, which `.ci/run` sets, it panics instead, so that the
    /// kernel tier never skips in CI.
    ///
    /// The notice is written to the process's stderr directly, not with `eprintln!`, which
    /// the test harness captures: a plain `cargo test` shows it.
    pub fn gate(what: &str, worker: impl Into<WorkerCommand>) -> bool {
        set_default_worker(worker.into());
        match KernelBackend::available_once() {
            Ok(()) => true,
            Err(reason) => {
                let required = std::env::var("OVLSIM_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
                assert!(!required, "OVLSIM_REQUIRE_KERNEL=1 but the kernel tier cannot run ({what}): {reason}");
                let _ =
                    writeln!(std::io::stderr(), "SKIPPED: {what}: the kernel tier needs root and overlayfs: {reason}");
                false
            }
        }
    }

    /// The timeout of one command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the timeout of one command.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The worker's process id (it stays the same after the worker is gone).
    pub fn worker_pid(&self) -> u32 {
        self.pid
    }

    /// Whether the worker is still there to take commands.
    pub fn is_alive(&self) -> bool {
        self.gone.is_none()
    }

    /// Waits for one reply line. The outer error is a harness failure (the worker was
    /// killed); the inner result is the worker's answer.
    fn receive(&mut self, what: &str) -> Result<Result<Reply, BackendError>, BackendError> {
        let line = self.receive_line(what)?;
        serde_json::from_str(&line).map_err(|e| {
            let shown: String = line.chars().take(200).collect();
            self.fail(what, format!("unreadable reply {shown:?}: {e}"))
        })
    }

    /// Waits for one line from the worker; a timeout or a dead worker is an error (and the
    /// worker is killed and reaped).
    fn receive_line(&mut self, what: &str) -> Result<String, BackendError> {
        match self.replies.recv_timeout(self.timeout) {
            Ok(line) => Ok(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(self.fail(what, format!("no reply within {:?}; the worker was killed", self.timeout)))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.reap();
                Err(self.fail(what, format!("the worker died ({status})")))
            }
        }
    }

    /// Kills the worker, records why, and makes the error for `what`.
    fn fail(&mut self, what: &str, why: String) -> BackendError {
        self.kill();
        let tail = {
            let t = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&t).trim().to_owned()
        };
        let mut msg = format!("{what}: {why}");
        if !tail.is_empty() {
            msg.push_str(&format!("; worker stderr: {tail}"));
        }
        self.gone = Some(msg.clone());
        BackendError::Failed(msg)
    }

    /// Waits for the worker to exit (it has closed its stdout) and describes how it ended.
    fn reap(&mut self) -> String {
        self.stdin = None;
        match self.child.as_mut() {
            Some(c) => {
                // The worker closed stdout; give it a moment to exit before killing it.
                for _ in 0..100 {
                    match c.try_wait() {
                        Ok(Some(status)) => {
                            self.child = None;
                            return status.to_string();
                        }
                        Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                        Err(e) => return format!("wait failed: {e}"),
                    }
                }
                "closed its output but did not exit".into()
            }
            None => "already reaped".into(),
        }
    }

    /// Kills and reaps the worker, if it is still there.
    fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for KernelBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

impl KernelBackend {
    /// [`Backend::exec`] through the dialect: layers written in it, checked against it, and
    /// layer dumps read back from it.
    fn exec_dialect(&mut self, dialect: Dialect, cmd: &Command) -> Result<Reply, BackendError> {
        let na = BackendError::NotApplicable;
        match cmd {
            Command::Layer { name, content } => {
                let content = dialect.write(content).map_err(|e| na(format!("{dialect}: layer {name}: {e}")))?;
                self.exec_raw(&Command::Layer { name: name.clone(), content })
            }
            Command::Edit { edit: Edit::Put { path, node }, layer } => {
                dialect.check_node(path, node).map_err(|e| na(format!("{dialect}: edit of layer {layer}: {e}")))?;
                self.exec_raw(cmd)
            }
            Command::Mount { options, .. } => {
                dialect.check_options(options).map_err(|e| na(format!("{dialect}: {e}")))?;
                self.exec_raw(cmd)
            }
            Command::MountData { .. } => Err(na(format!("{dialect}: an option string is passed to mount(2) only"))),
            Command::DumpLayer { .. } => match self.exec_raw(cmd)? {
                Reply::Layer(l) => Ok(Reply::Layer(dialect.read(l))),
                other => Ok(other),
            },
            _ => self.exec_raw(cmd),
        }
    }

    fn exec_raw(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        // A command is sent as itself (`Request::Command` is untagged): no copy of its data.
        self.request(&describe(cmd), cmd)
    }

    /// Sends one request line, a [`protocol::Request`] or the [`Command`] it wraps, and
    /// reads its reply.
    fn request(&mut self, what: &str, req: &impl serde::Serialize) -> Result<Reply, BackendError> {
        let what = what.to_owned();
        if let Some(why) = &self.gone {
            return Err(BackendError::Failed(format!("{what}: the worker is gone (earlier: {why})")));
        }
        let mut line =
            serde_json::to_string(req).map_err(|e| BackendError::Failed(format!("{what}: cannot encode: {e}")))?;
        line.push('\n');
        let written = match self.stdin.as_mut() {
            Some(w) => w.write_all(line.as_bytes()).and_then(|()| w.flush()),
            None => Err(std::io::Error::other("no pipe to the worker")),
        };
        if let Err(e) = written {
            let status = self.reap();
            return Err(self.fail(&what, format!("cannot write to the worker ({e}; it {status})")));
        }
        self.receive(&what)?
    }
}

impl Backend for KernelBackend {
    /// `kernel`, `mount` for a mount-command backend, or `worker` for another worker
    /// program.
    fn name(&self) -> &'static str {
        if self.mount.is_some() {
            "mount"
        } else if self.program.is_some() {
            "worker"
        } else {
            "kernel"
        }
    }

    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        match self.mount.as_ref().map(|m| m.dialect) {
            Some(d) => self.exec_dialect(d, cmd),
            None => self.exec_raw(cmd),
        }
    }

    fn try_unmount(&mut self) -> Result<Reply, BackendError> {
        self.request("unmount (handles kept open)", &protocol::Request::Extra(protocol::Extra::TryUnmount))
    }
}

/// The message of an error, without the variant's prefix.
fn message(e: &BackendError) -> String {
    match e {
        BackendError::Failed(m) | BackendError::Usage(m) => m.clone(),
        other => other.to_string(),
    }
}

/// A short name for a command, for error messages.
fn describe(cmd: &Command) -> String {
    match cmd {
        Command::Layer { name, .. } => format!("creating layer {name:?}"),
        Command::Mount { lowers, upper, .. } => {
            let lowers =
                if lowers.len() > 8 { format!("{} lowers", lowers.len()) } else { format!("lowers {lowers:?}") };
            format!("mount ({lowers}, upper {upper:?})")
        }
        Command::Unmount => "unmount".into(),
        Command::Op(op) => cut(format_args!("op {op:?}")),
        Command::Edit { layer, edit } => {
            let path = match edit {
                Edit::Put { path, .. } | Edit::Link { path, .. } | Edit::Remove { path } => path,
            };
            cut(format_args!("edit of layer {layer:?} at {path:?}"))
        }
        Command::DumpLayer { name } => format!("dump of layer {name:?}"),
        Command::DumpMerged => "dump of the merged view".into(),
        Command::MountData { fsconfig: Some(calls), .. } => cut(format_args!("fsconfig {calls:?}")),
        Command::MountData { data, .. } => cut(format_args!("mount -o {data:?}")),
        Command::DropCaches => "drop_caches".into(),
        Command::OpAs { cred, op } => cut(format_args!("op {op:?} as {cred:?}")),
    }
}

/// The longest text [`describe`] keeps of a command, in bytes, before its `…`.
const DESCRIBE_MAX: usize = 200;

/// `args` formatted up to [`DESCRIBE_MAX`] bytes, then `…` if there was more. Formatting
/// stops there: a write of 70 MB is not written out as 350 MB of `Debug` text to keep the
/// first 200 bytes (it was, once per command, before each was sent).
fn cut(args: std::fmt::Arguments<'_>) -> String {
    /// A writer that takes [`DESCRIBE_MAX`] bytes, then refuses, which ends the formatting.
    struct Bounded {
        text: String,
        full: bool,
    }
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            let room = DESCRIBE_MAX - self.text.len();
            if s.len() <= room {
                self.text.push_str(s);
                return Ok(());
            }
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
            self.full = true;
            Err(std::fmt::Error)
        }
    }
    let mut b = Bounded { text: String::new(), full: false };
    // An error here is the writer's own refusal: the text is full.
    let _ = std::fmt::write(&mut b, args);
    if b.full {
        b.text.push('…');
    }
    b.text
}

type SpawnRequest = (std::process::Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from one long-lived thread. `PR_SET_PDEATHSIG` fires when the thread that
/// spawned the worker exits, not the process; spawning from a thread that lives as long as
/// the process keeps a worker alive when its backend moves to another thread, and still kills
/// it when the process dies.
fn spawn(cmd: std::process::Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        // If the thread cannot start, `rx` is dropped and every send below fails, which
        // falls back to spawning from the calling thread.
        let _ = std::thread::Builder::new().name("ovlsim-kernel-spawner".into()).spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    match tx.send((cmd, reply_tx)) {
        Ok(()) => reply_rx.recv().unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread is gone"))),
        Err(mpsc::SendError((mut cmd, _))) => cmd.spawn(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_described_in_at_most_200_bytes_and_formatting_stops_there() {
        let write = |len| {
            Command::Op(crate::ops::Op::Write {
                path: "/f".into(),
                at: crate::ops::WriteAt::Append,
                data: vec![7; len],
            })
        };
        let short = describe(&write(3));
        assert_eq!(short, r#"op Write { path: "/f", at: Append, data: [7, 7, 7] }"#);
        let long = describe(&write(1 << 20));
        assert!(long.starts_with(r#"op Write { path: "/f", at: Append, data: [7, 7"#), "{long}");
        assert!(long.ends_with('…') && long.len() == DESCRIBE_MAX + '…'.len_utf8(), "{} bytes", long.len());
        // A multi-byte character across the limit is left out whole.
        let wide = cut(format_args!("a{}", "é".repeat(DESCRIBE_MAX)));
        assert_eq!(wide, format!("a{}…", "é".repeat(DESCRIBE_MAX / 2 - 1)));

        /// Writes `pieces` pieces of 10 bytes, counting those the writer took.
        struct Pieces<'a>(usize, &'a std::cell::Cell<usize>);
        impl std::fmt::Debug for Pieces<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                for _ in 0..self.0 {
                    f.write_str("0123456789")?;
                    self.1.set(self.1.get() + 1);
                }
                Ok(())
            }
        }
        let taken = std::cell::Cell::new(0);
        let text = cut(format_args!("{:?}", Pieces(1_000_000, &taken)));
        assert_eq!(text.len(), DESCRIBE_MAX + '…'.len_utf8());
        assert_eq!(taken.get(), DESCRIBE_MAX / 10, "formatting went on past the limit");
    }
}
