//! `ovlsim`: replay, record and explain overlay scenarios (see `spec/README.md`).
//!
//! One function per subcommand; a new subcommand is a variant of [`Cmd`], an args struct
//! and a `cmd_*` function.

use clap::{Parser, Subcommand, ValueEnum};
use ovlsim::backend::{Backend, ModelBackend};
use ovlsim::kernel::KernelBackend;
use ovlsim::scenario::{self, RunReport};
use std::io::Write;
use std::path::PathBuf;

/// The binary's heap. Parsing scenarios and drawing fuzz cases make many small, short-lived
/// allocations; glibc's malloc and free were a third of the instructions of `ovlsim run spec/`
/// (BENCHMARKS.md, "whole_process"). The library itself leaves the choice to its user.
#[cfg(target_os = "linux")]
#[global_allocator]
static HEAP: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

/// The exit status of a process killed by `SIGPIPE`, as a shell reports it (128 + 13).
const EXIT_BROKEN_PIPE: i32 = 141;

/// Writes to stdout. A reader that went away (`ovlsim run | head -1`) ends the process
/// quietly with status 141, as a Unix tool killed by `SIGPIPE` would; any other write error
/// is reported on stderr and ends it with status 2.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        let _ = writeln!(std::io::stderr(), "ovlsim: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

/// [`out`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => { out(&format!("{}\n", format_args!($($arg)*))) };
}

/// A line on stderr; a closed stderr is no reason to stop (nor to panic, as `eprintln!` does).
macro_rules! errln {
    ($($arg:tt)*) => {{ let _ = writeln!(std::io::stderr(), $($arg)*); }};
}

/// [`out`] without a newline.
macro_rules! outp {
    ($($arg:tt)*) => { out(&format!($($arg)*)) };
}

/// The exit statuses, for `--help`.
const EXIT_STATUS: &str = "\
Exit status:
  0    everything passed (run: every scenario; record: recorded; fuzz: every case agreed)
  1    a scenario failed, a recording failed, or fuzz found a divergence; also when the
       kernel tier was asked for and cannot run here (not root, no overlay)
  2    a usage error: bad arguments, a path that does not exist, no scenario found
  141  stdout was closed by its reader (as `| head` does); the output stopped there";

#[derive(Parser)]
#[command(
    name = "ovlsim",
    version,
    about = "An exact model of Linux OverlayFS, checked against the real kernel",
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay scenarios and check every expectation; ends with `N passed, N failed`.
    Run(RunArgs),
    /// Fill in a scenario's expectations and final trees from a backend.
    Record(RecordArgs),
    /// Replay a scenario on the model and explain each step.
    Show(ShowArgs),
    /// Random differential testing: generated layer stacks and operation sequences on the
    /// model and on the kernel, compared step by step.
    Fuzz(FuzzArgs),
    /// Replay a scenario on the model and write the upper at its end as an OCI layer tar.
    Export(ExportArgs),
    /// Check another overlay implementation: replay scenarios and fuzz cases on it through a
    /// mount command or a worker program, and write a conformance report (exit 0: every applicable check passed,
    /// 1: failures, 2: the report could not be made).
    Conform(ConformArgs),
    /// Read an OCI image layout (every blob verified): list its layers and show the image
    /// as overlay merges it on the model; with --scenario, write a new scenario over it.
    Image(ImageArgs),
    /// The kernel backend's worker process (started by the kernel backend, not by hand).
    #[command(hide = true)]
    KernelWorker(KernelWorkerArgs),
    /// Serve the model as a real filesystem through FUSE, in the foreground, until Ctrl-C
    /// or `fusermount3 -u MOUNTPOINT`: `mount SCENARIO.yaml MOUNTPOINT` (the scenario's
    /// layers and mount; its steps are not run) or `mount -o lowerdir=…,upperdir=…,workdir=…
    /// MOUNTPOINT` (the option string of `mount -t overlay -o`, layers read from real
    /// directories; every change is written through to the real upper directory).
    Mount(MountArgs),
}

#[derive(clap::Args)]
struct MountArgs {
    /// The overlay option string, as `mount -t overlay -o` takes it.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Option<String>,
    /// SCENARIO.yaml MOUNTPOINT, or MOUNTPOINT alone with -o.
    #[arg(required = true, num_args = 1..=2, value_name = "[SCENARIO] MOUNTPOINT")]
    args: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct KernelWorkerArgs {
    /// The process that expects to own the worker; the worker exits if it is gone.
    #[arg(long)]
    parent_pid: Option<i32>,
    /// Mount with this command template instead of `mount(2)` (the mount-command backend).
    #[arg(long)]
    mount_command: Option<String>,
}

/// Which backend(s) `run` replays on.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RunBackend {
    /// The in-memory model.
    Model,
    /// A real overlay mount.
    Kernel,
    /// Both, comparing them step by step.
    Both,
    /// The kernel backend's worker, mounting with this command template.
    Mount(String),
    /// Another program that speaks the worker protocol.
    Worker(ovlsim::kernel::WorkerCommand),
}

impl RunBackend {
    /// How reports name the backend(s).
    fn label(&self) -> &'static str {
        match self {
            RunBackend::Model => "model",
            RunBackend::Kernel => "kernel",
            RunBackend::Both => "model+kernel",
            RunBackend::Mount(_) => "mount",
            RunBackend::Worker(_) => "worker",
        }
    }
}

/// `model`, `kernel`, `both`, `mount:TEMPLATE` (the template checked here) or
/// `worker:COMMAND ARGS`.
fn parse_run_backend(s: &str) -> Result<RunBackend, String> {
    match s {
        "model" => Ok(RunBackend::Model),
        "kernel" => Ok(RunBackend::Kernel),
        "both" => Ok(RunBackend::Both),
        _ => {
            if let Some(t) = s.strip_prefix(ovlsim::kernel::MOUNT_PREFIX) {
                ovlsim::kernel::template::Template::parse(t).map(|_| RunBackend::Mount(t.to_owned()))
            } else if let Some(c) = s.strip_prefix(ovlsim::kernel::WORKER_PREFIX) {
                ovlsim::kernel::WorkerCommand::parse(c).map(RunBackend::Worker)
            } else {
                Err("expected model, kernel, both, mount:TEMPLATE or worker:COMMAND".into())
            }
        }
    }
}

/// The system `fuzz` and `conform` test against the model: the kernel, a mount command
/// template, or a worker program.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Against(RunBackend);

impl Against {
    /// The system under test, a mount command's layers in `dialect`.
    fn sut(self, dialect: ovlsim::dialect::Dialect) -> ovlsim::kernel::SystemUnderTest {
        use ovlsim::kernel::{MountConfig, SystemUnderTest};
        match self.0 {
            RunBackend::Mount(template) => SystemUnderTest::Mount(MountConfig { template, dialect }),
            RunBackend::Worker(w) => SystemUnderTest::Worker(w),
            _ => SystemUnderTest::Kernel,
        }
    }
}

/// `kernel`, `mount:TEMPLATE` or `worker:COMMAND`.
fn parse_against(s: &str) -> Result<Against, String> {
    match parse_run_backend(s)? {
        b @ (RunBackend::Kernel | RunBackend::Mount(_) | RunBackend::Worker(_)) => Ok(Against(b)),
        _ => Err("expected kernel, mount:TEMPLATE or worker:COMMAND".into()),
    }
}

/// The help on `worker:COMMAND`, shared by `--backend` and `--against`.
const WORKER_HELP: &str = "\
worker:COMMAND ARGS runs COMMAND (split into words as a template is, no shell) as the worker, \
with `--parent-pid PID` appended, and speaks the worker protocol to it over its stdin and \
stdout (docs/worker-protocol.md): another implementation, in any language, builds the \
layers, mounts and runs the operations its own way. What it refuses as not modelled is \
reported as not applicable. Example: \
'worker:python3 examples/worker-python/worker.py'.";

/// The help shared by `--backend mount:…`, `--against` and `--dialect`.
const MOUNT_HELP: &str = "\
mount:TEMPLATE runs the kernel backend's worker (private mount namespace, private tmpfs) but \
mounts with a command instead of mount(2). The template is split into words without a shell \
('…' and \"…\" quote, \\ escapes; no variables, globs or redirections); placeholders \
{lowerdir} (colon-joined, top-most first), {upperdir}, {workdir}, {merged}, {options} (the \
whole overlay option string the kernel backend passes, with lowerdir=…,upperdir=…,workdir=…), \
{dirs} (lowerdir=… and, with an upper, ,upperdir=…,workdir=…) are replaced inside words; {{ and }} are literal braces. The command sees the host's /usr, \
/bin, /sbin, /lib*, /etc read-only, /dev/fuse and /proc. Run FUSE daemons in the foreground \
(-f): the daemon is stopped and reaped after each unmount. Examples: \
'mount:mount -t overlay overlay -o {options} {merged}' (the kernel, through the generic path), \
'mount:fuse-overlayfs -f -o {dirs} {merged}' \
(with --dialect fuse-overlayfs).";

/// Which backend `record` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OneBackend {
    /// The in-memory model.
    Model,
    /// A real overlay mount.
    Kernel,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Scenario files, or directories searched recursively for `*.yaml`.
    #[arg(default_value = "spec/")]
    paths: Vec<PathBuf>,
    /// The backend to replay on: model, kernel, both, mount:TEMPLATE or worker:COMMAND
    /// (see below).
    #[arg(long, value_parser = parse_run_backend, default_value = "model", long_help = format!(
        "The backend to replay on: model (the in-memory model), kernel (a real overlay mount), \
         both (comparing them step by step), mount:TEMPLATE or worker:COMMAND.\n\n{MOUNT_HELP}\n\n{WORKER_HELP}\n\n\
         A scenario a mount command cannot judge (one that expects a mount refused with an errno, \
         or that its dialect cannot express) is reported as not applicable, not as a pass; \
         the summary counts them."))]
    backend: RunBackend,
    /// How layers are written for a mount:TEMPLATE backend and its upper read back:
    /// kernel, userxattr or fuse-overlayfs (see the README's dialect table).
    #[arg(long, value_parser = parse_dialect, default_value = "kernel")]
    dialect: ovlsim::dialect::Dialect,
    /// Print machine-readable results (JSON) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RecordArgs {
    /// The scenario file.
    file: PathBuf,
    /// Where to write the result: a file, or `-` for stdout (default: the file itself).
    #[arg(short, long)]
    output: Option<String>,
    /// The backend to record from (default: the kernel; without one, recording fails unless
    /// `--backend model` asks for the model).
    #[arg(long, value_enum)]
    backend: Option<OneBackend>,
    /// Print a machine-readable result (JSON) on stdout: the file, the backend, where the
    /// scenario went, and the error if any. With `-o -` the scenario is in the JSON too.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct FuzzArgs {
    /// How many cases to generate.
    #[arg(long, default_value_t = 1000)]
    cases: u64,
    /// The seed (default: a random one, printed in the summary).
    #[arg(long)]
    seed: Option<u64>,
    /// The most steps in a case (default: the profile's; 24 for the default profile).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Where each shrunk divergence is written, as a scenario YAML file.
    #[arg(long, default_value = "target/ovlsim-divergences")]
    out: PathBuf,
    /// Go on after a divergence instead of stopping at the first.
    #[arg(long)]
    keep_going: bool,
    /// Run the model alone, checking its invariants (no kernel needed).
    #[arg(long)]
    model_only: bool,
    /// The system under test: kernel (default), mount:TEMPLATE or worker:COMMAND.
    #[arg(long, value_parser = parse_against, default_value = "kernel", long_help = format!(
        "The system under test, compared with the model: kernel (a real overlay mount, the \
         default), mount:TEMPLATE or worker:COMMAND.\n\n{MOUNT_HELP}\n\n{WORKER_HELP}\n\nA mount the model refuses and the \
         command fails to make counts as agreement (a command reports no errno); a case the \
         dialect cannot express is discarded, as a case the model does not model is."))]
    against: Against,
    /// The dialect of a mount:TEMPLATE system under test (kernel, userxattr, fuse-overlayfs).
    #[arg(long, value_parser = parse_dialect, default_value = "kernel")]
    dialect: ovlsim::dialect::Dialect,
    /// What the generator draws: a profile (see the long help, --help).
    #[arg(long, default_value = "default", value_parser = parse_profile, long_help = profile_help())]
    profile: ovlsim::fuzz::profile::Profile,
    /// Plain model-only mode: draw each case and run it on the model, no invariant checked
    /// (a panic of the model still fails); the fastest way through many cases.
    #[arg(long)]
    plain: bool,
    /// Threads that run cases, each kernel job with its own worker (default: one per core).
    /// The results depend only on the seed: case i is drawn from the seed and i.
    #[arg(long)]
    jobs: Option<usize>,
    /// Run only the case indices i with i % N == I (I/N, from 0/N), and write the shard's
    /// summary.json with its divergence files to --out, for --merge.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<ovlsim::fuzz::campaign::Shard>,
    /// Join the summaries and divergence files of shards (their --out directories) into
    /// --out, print the whole campaign's summary, and run nothing.
    #[arg(long, value_name = "DIR", num_args = 1..)]
    merge: Vec<PathBuf>,
}

fn parse_shard(s: &str) -> Result<ovlsim::fuzz::campaign::Shard, String> {
    s.parse()
}

fn parse_profile(s: &str) -> Result<ovlsim::fuzz::profile::Profile, String> {
    s.parse()
}

/// `--profile`'s long help: every profile with what it draws.
fn profile_help() -> String {
    let mut help = String::from("What the generator draws. `default` is what the kernel differential test draws, seed for seed (since the direct generator of issue 12); the others reach further:\n");
    for p in ovlsim::fuzz::profile::Profile::ALL {
        help.push_str(&format!("\n  {:<10} {}", p.name(), p.about()));
    }
    help
}

fn parse_dialect(s: &str) -> Result<ovlsim::dialect::Dialect, String> {
    s.parse()
}

#[derive(clap::Args)]
struct ConformArgs {
    /// Scenario files, or directories searched recursively for `*.yaml`.
    #[arg(default_value = "spec/")]
    paths: Vec<PathBuf>,
    /// The implementation: mount:TEMPLATE or worker:COMMAND.
    #[arg(long, value_parser = parse_against, long_help = format!(
        "The implementation: mount:TEMPLATE or worker:COMMAND.\n\n{MOUNT_HELP}\n\n{WORKER_HELP}"))]
    against: Against,
    /// How layers are written for it and its upper read back: kernel, userxattr or
    /// fuse-overlayfs (see the README's dialect table).
    #[arg(long, value_parser = parse_dialect, default_value = "kernel")]
    dialect: ovlsim::dialect::Dialect,
    /// How many fuzz cases to run after the scenarios.
    #[arg(long, default_value_t = 0)]
    fuzz_cases: u64,
    /// The fuzz seed (default: a random one, named in the report).
    #[arg(long)]
    seed: Option<u64>,
    /// Where REPORT.md and each failure's replayable scenario YAML go (one folder per rule
    /// folder; fuzz divergences under fuzz/). The YAML files' expectations are the kernel's,
    /// which the model agrees with.
    #[arg(long)]
    out: PathBuf,
    /// Fields not to compare, comma-separated (errno, mode, owner, nlink, ino, dir_size,
    /// xattrs, upper): each scenario and fuzz case is then replayed on the model and on
    /// the implementation, with these fields masked on both sides, so that a known
    /// difference (say fuse-overlayfs's directory link counts) does not hide the others.
    #[arg(long, value_parser = ovlsim::harness::Observes::ignoring, default_value = "")]
    ignore: ovlsim::harness::Observes,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The scenario file.
    file: PathBuf,
    /// Where to write the tar.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(clap::Args)]
struct ImageArgs {
    /// The OCI image layout directory (with `index.json` and `blobs/`).
    dir: PathBuf,
    /// The image's `org.opencontainers.image.ref.name` (needed when the index holds more
    /// than one manifest).
    #[arg(long = "ref")]
    reference: Option<String>,
    /// Write a new scenario over the image here (one `!oci` layer per image layer, an empty
    /// upper, a `readdir /` step); fill its expectations with `ovlsim record FILE`. An
    /// existing file is not replaced.
    #[arg(long)]
    scenario: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ShowArgs {
    /// The scenario file.
    file: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The kernel backend's worker is this very binary, re-executed with `kernel-worker`.
    ovlsim::kernel::set_default_worker(ovlsim::kernel::WorkerCommand::this_cli());
    match cli.command {
        Cmd::KernelWorker(a) => ovlsim::kernel::worker_main_with(a.parent_pid, a.mount_command.as_deref()),
        Cmd::Run(a) => cmd_run(a),
        Cmd::Record(a) => cmd_record(a),
        Cmd::Show(a) => cmd_show(a),
        Cmd::Fuzz(a) => cmd_fuzz(a),
        Cmd::Export(a) => cmd_export(a),
        Cmd::Conform(a) => cmd_conform(a),
        Cmd::Image(a) => cmd_image(a),
        Cmd::Mount(a) => cmd_mount(a),
    }
}

/// `ovlsim fuzz`: exits 0 only when every case agreed (a run that could not reach the
/// kernel is not a pass).
fn cmd_fuzz(a: FuzzArgs) -> ExitCode {
    if !a.merge.is_empty() {
        return match ovlsim::fuzz::campaign::merge(&a.merge, &a.out) {
            Ok(summary) => {
                outln!("{summary}");
                if summary.is_clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let config = ovlsim::fuzz::FuzzConfig {
        cases: a.cases,
        seed: a.seed,
        max_steps: a.max_steps.unwrap_or(a.profile.steps_max()),
        out_dir: a.out,
        keep_going: a.keep_going,
        progress: true,
        model_only: a.model_only,
        against: a.against.sut(a.dialect),
        generator: a.profile.config(),
        plain: a.plain,
        jobs: a.jobs.unwrap_or(0),
        shard: a.shard,
        stop: stop_on_ctrl_c(),
        ..Default::default()
    };
    let report = ovlsim::fuzz::run(config);
    outln!("{report}");
    if report.interrupted {
        // As a shell reports a process that SIGINT ended.
        ExitCode::from(130)
    } else if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Set by the SIGINT handler of `ovlsim fuzz`.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the first Ctrl-C (SIGINT) stop `ovlsim fuzz` between cases, so that it prints the
/// summary so far; a second one ends the process at once (the default action is back).
#[cfg(unix)]
fn stop_on_ctrl_c() -> ovlsim::fuzz::campaign::StopFlag {
    extern "C" fn on_sigint(_: libc::c_int) {
        // Async-signal-safe: an atomic store and signal(2).
        INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: restoring the default disposition of SIGINT from its handler.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    }
    // SAFETY: the handler only stores to an atomic and calls signal(2), both
    // async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    ovlsim::fuzz::campaign::StopFlag(Some(&INTERRUPTED))
}

#[cfg(not(unix))]
fn stop_on_ctrl_c() -> ovlsim::fuzz::campaign::StopFlag {
    ovlsim::fuzz::campaign::StopFlag(Some(&INTERRUPTED))
}

/// `ovlsim conform`: see [`Cmd::Conform`].
fn cmd_conform(a: ConformArgs) -> ExitCode {
    if a.against.0 == RunBackend::Kernel {
        errln!("ovlsim conform: --against kernel is the reference itself; give mount:TEMPLATE or worker:COMMAND");
        return ExitCode::from(2);
    }
    let config = ovlsim::conform::ConformConfig {
        against: a.against.sut(a.dialect),
        paths: a.paths,
        fuzz_cases: a.fuzz_cases,
        seed: a.seed,
        out: a.out.clone(),
        progress: true,
        observes: a.ignore,
    };
    match ovlsim::conform::conform(&config) {
        Ok(entries) => {
            let count = |f: fn(&ovlsim::conform::Verdict) -> bool| entries.iter().filter(|e| f(&e.verdict)).count();
            use ovlsim::conform::Verdict;
            let failed = count(|v| matches!(v, Verdict::Failed(_)));
            outln!(
                "{} passed, {failed} failed, {} not applicable; report: {}",
                count(|v| matches!(v, Verdict::Passed)),
                count(|v| matches!(v, Verdict::NotApplicable(_))),
                a.out.join("REPORT.md").display()
            );
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            errln!("ovlsim conform: {e}");
            ExitCode::from(2)
        }
    }
}

/// A backend by choice, or why it cannot be had.
fn backend(which: OneBackend) -> Result<Box<dyn Backend>, String> {
    match which {
        OneBackend::Model => Ok(Box::new(ModelBackend::new())),
        OneBackend::Kernel => KernelBackend::new()
            .map(|k| Box::new(k) as Box<dyn Backend>)
            .map_err(|e| format!("the kernel backend cannot start: {e}")),
    }
}

/// A failed report for a scenario whose backend could not be had.
fn backend_failure(file: &str, name: &str, why: String) -> RunReport {
    RunReport {
        file: file.to_owned(),
        name: name.to_owned(),
        backend: "kernel".into(),
        steps_total: 0,
        steps_run: 0,
        failures: vec![scenario::Failure {
            backend: "kernel".into(),
            step: None,
            what: "setup".into(),
            pos: None,
            message: why,
            expected: None,
            actual: None,
            diff: Vec::new(),
        }],
    }
}

/// A scenario's run, or why a mount command cannot judge it.
enum Ran {
    Report(RunReport),
    NotApplicable { file: String, why: String },
}

fn run_one(path: &std::path::Path, which: &RunBackend, dialect: ovlsim::dialect::Dialect) -> Ran {
    let file = path.display().to_string();
    let label = which.label();
    let s = match scenario::load(path) {
        Ok(s) => s,
        Err(e) => return Ran::Report(RunReport::from_error(&file, label, &e)),
    };
    if let RunBackend::Mount(_) | RunBackend::Worker(_) = which {
        let sut = Against(which.clone()).sut(dialect);
        return match ovlsim::conform::run_scenario_on(&s, &sut) {
            Ok(r) => Ran::Report(r),
            Err(why) => Ran::NotApplicable { file, why },
        };
    }
    Ran::Report(match which {
        RunBackend::Mount(_) | RunBackend::Worker(_) => unreachable!("handled above"),
        RunBackend::Model => scenario::run(&s, &mut ModelBackend::new()),
        RunBackend::Kernel => match backend(OneBackend::Kernel) {
            Ok(mut k) => scenario::run(&s, k.as_mut()),
            Err(why) => backend_failure(&file, &s.name, why),
        },
        RunBackend::Both => match backend(OneBackend::Kernel) {
            Ok(mut k) => scenario::run_both(&s, &mut ModelBackend::new(), k.as_mut()),
            Err(why) => backend_failure(&file, &s.name, why),
        },
    })
}

/// `ovlsim run`: exits 0 when every scenario passed, 1 when one failed (an unreadable file or
/// directory on the way counts as a failed scenario), 2 when a path does not exist or no
/// scenario was found at all (a mistyped path in CI must not pass). With `mount:TEMPLATE`,
/// a scenario the command cannot judge is listed as not applicable and counted apart; with
/// `worker:COMMAND`, one the worker refused.
fn cmd_run(a: RunArgs) -> ExitCode {
    let found = match scenario::find_files(&a.paths) {
        Ok(f) => f,
        Err(e) => {
            errln!("ovlsim: {e}");
            return ExitCode::from(2);
        }
    };
    if found.files.is_empty() && found.problems.is_empty() {
        let paths: Vec<String> = a.paths.iter().map(|p| p.display().to_string()).collect();
        errln!("ovlsim: no scenario files (*.yaml) found under {}", paths.join(", "));
        return ExitCode::from(2);
    }
    let label = a.backend.label();
    let walked = found.problems.iter().map(|(path, why)| {
        let file = path.display().to_string();
        let e = scenario::ScenarioError::single(&file, scenario::Pos { line: 1, column: 1 }, None, why.clone());
        RunReport::from_error(&file, label, &e)
    });
    let mut reports = Vec::new();
    let mut not_applicable = Vec::new();
    let ran = found.files.iter().map(|f| run_one(f, &a.backend, a.dialect));
    for r in walked.map(Ran::Report).chain(ran) {
        let r = match r {
            Ran::Report(r) => r,
            Ran::NotApplicable { file, why } => {
                if !a.json {
                    outln!("n/a  {file} [{label}]: {why}");
                }
                not_applicable.push(serde_json::json!({ "file": file, "why": why }));
                continue;
            }
        };
        if !a.json {
            if r.passed() {
                outln!("ok   {} [{}]", r.file, r.backend);
            } else {
                outln!("FAIL {} [{}]", r.file, r.backend);
                outp!("{}", r.details(20));
            }
        }
        reports.push(r);
    }
    let passed = reports.iter().filter(|r| r.passed()).count();
    let failed = reports.len() - passed;
    let na = not_applicable.len();
    if a.json {
        let out = serde_json::json!({
            "passed": passed, "failed": failed, "not_applicable": not_applicable, "results": reports,
        });
        outln!("{}", serde_json::to_string_pretty(&out).expect("reports serialise"));
    } else if na > 0 {
        outln!("{passed} passed, {failed} failed, {na} not applicable");
    } else {
        outln!("{passed} passed, {failed} failed");
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn cmd_record(a: RecordArgs) -> ExitCode {
    let file = a.file.display().to_string();
    let json = a.json;
    let result = record_one(&a);
    let ok = result.is_ok();
    if json {
        let (backend, output, yaml, error) = match &result {
            Ok((backend, output, yaml)) => (Some(*backend), Some(output.clone()), yaml.clone(), None),
            Err((backend, e)) => (*backend, None, None, Some(e.clone())),
        };
        let out = serde_json::json!({
            "file": file, "ok": ok, "backend": backend, "output": output, "scenario": yaml, "error": error,
        });
        outln!("{}", serde_json::to_string_pretty(&out).expect("a result serialises"));
    } else if let Err((_, e)) = &result {
        errln!("{e}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Records one scenario: `(backend, where it went, the YAML when it went to stdout)`, or
/// `(backend if chosen, the error)`.
#[allow(clippy::type_complexity)]
fn record_one(a: &RecordArgs) -> Result<(&'static str, String, Option<String>), (Option<&'static str>, String)> {
    let file = a.file.display().to_string();
    let mut s = scenario::load(&a.file).map_err(|e| (None, e.to_string()))?;
    let which = a.backend.unwrap_or(OneBackend::Kernel);
    if which == OneBackend::Kernel {
        KernelBackend::available().map_err(|why| {
            let exe = std::env::current_exe().map_or_else(|_| "ovlsim".into(), |p| p.display().to_string());
            (
                Some("kernel"),
                format!(
                    "ovlsim: cannot record {file} from the kernel: {why}\n\
                     The kernel backend needs root and overlayfs (e.g. `sudo {exe} record {file}`); \
                     to record from the model instead, add `--backend model`."
                ),
            )
        })?;
    }
    let name = match which {
        OneBackend::Model => "model",
        OneBackend::Kernel => "kernel",
    };
    let mut b = backend(which).map_err(|why| (Some(name), format!("ovlsim: {why}")))?;
    errln!("ovlsim: recording {file} with the {name} backend");
    scenario::record(&mut s, b.as_mut()).map_err(|e| (Some(name), e.to_string()))?;
    let yaml = s.to_yaml();
    if let Err(e) = scenario::parse(&yaml, &file) {
        return Err((
            Some(name),
            format!("ovlsim: internal error: the recorded scenario does not read back:\n{e}\n{yaml}"),
        ));
    }
    // Written to a temporary file and renamed: a kill or a full disk leaves the original.
    let cannot = |e: std::io::Error| (Some(name), format!("ovlsim: cannot write the scenario to {e}"));
    match a.output.as_deref() {
        Some("-") if a.json => Ok((name, "-".into(), Some(yaml))),
        Some("-") => {
            outp!("{yaml}");
            Ok((name, "-".into(), None))
        }
        Some(out) => ovlsim::persist::write_atomic(out.as_ref(), yaml.as_bytes())
            .map(|()| (name, out.to_owned(), None))
            .map_err(cannot),
        None => {
            ovlsim::persist::write_atomic(&a.file, yaml.as_bytes()).map(|()| (name, file.clone(), None)).map_err(cannot)
        }
    }
}

fn cmd_show(a: ShowArgs) -> ExitCode {
    match scenario::load(&a.file) {
        Ok(s) => {
            outp!("{}", scenario::show(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `ovlsim export`: the upper at the end of the scenario, as replayed on the model, as an
/// OCI layer changeset (see `ovlsim::image::oci`).
fn cmd_export(a: ExportArgs) -> ExitCode {
    let export = match ovlsim::image::export_scenario(&a.file) {
        Ok(x) => x,
        Err(e) => {
            errln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if export.failures > 0 {
        errln!("{}: warning: the model did not meet {} expectation(s)", a.file.display(), export.failures);
    }
    if let Err(e) = ovlsim::persist::write_atomic(&a.output, &export.tar) {
        errln!("{}: cannot write: {e}", a.output.display());
        return ExitCode::FAILURE;
    }
    outln!("{}: {} bytes, diff_id {}", a.output.display(), export.tar.len(), export.diff_id);
    ExitCode::SUCCESS
}

/// `ovlsim image`: see [`Cmd::Image`]. Exits 1 when the image cannot be read (an error
/// naming the file and the entry), 2 when the scenario file exists already.
fn cmd_image(a: ImageArgs) -> ExitCode {
    let described = match ovlsim::image::describe_layout(&a.dir, a.reference.as_deref()) {
        Ok(text) => text,
        Err(e) => {
            errln!("ovlsim image: {e}");
            return ExitCode::FAILURE;
        }
    };
    outp!("{described}");
    let Some(file) = a.scenario else { return ExitCode::SUCCESS };
    if file.exists() {
        errln!("ovlsim image: {} exists; not replaced", file.display());
        return ExitCode::from(2);
    }
    let text = match ovlsim::image::scenario_for_layout(&a.dir, a.reference.as_deref(), &file) {
        Ok(text) => text,
        Err(e) => {
            errln!("ovlsim image: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = ovlsim::persist::write_atomic(&file, text.as_bytes()) {
        errln!("{}: cannot write: {e}", file.display());
        return ExitCode::FAILURE;
    }
    // The scenario must load as written: its layers are read from the image again.
    if let Err(e) = scenario::load(&file) {
        errln!("{}: the new scenario does not load: {e}", file.display());
        return ExitCode::FAILURE;
    }
    outln!("wrote {}; fill its expectations from the kernel with `ovlsim record {}`", file.display(), file.display());
    ExitCode::SUCCESS
}

/// `ovlsim mount`: see [`Cmd::Mount`]. Exits 0 after a clean unmount; 1 when the mount is
/// refused (the errno the kernel would give, and why) or fails; 2 for bad arguments.
#[cfg(all(feature = "fuse", target_os = "linux"))]
fn cmd_mount(a: MountArgs) -> ExitCode {
    use ovlsim::fuse::setup;
    let (served, mountpoint) = match (&a.options, a.args.as_slice()) {
        (Some(o), [mp]) => (setup::from_options(o), mp),
        (None, [file, mp]) => (setup::from_scenario(file), mp),
        (Some(_), _) => {
            errln!("ovlsim mount: with -o, give the mount point alone");
            return ExitCode::from(2);
        }
        (None, _) => {
            errln!("ovlsim mount: give SCENARIO.yaml MOUNTPOINT, or -o OPTIONS MOUNTPOINT");
            return ExitCode::from(2);
        }
    };
    // The mount point first, as mount(2) resolves it before the filesystem reads its
    // options.
    match std::fs::metadata(mountpoint) {
        Err(_) => {
            errln!("ovlsim mount: {}: ENOENT: mount point does not exist", mountpoint.display());
            return ExitCode::FAILURE;
        }
        Ok(m) if !m.is_dir() => {
            errln!("ovlsim mount: {}: ENOTDIR: mount point is not a directory", mountpoint.display());
            return ExitCode::FAILURE;
        }
        Ok(_) => {}
    }
    let served = match served {
        Ok(s) => s,
        Err(e) => {
            errln!("ovlsim mount: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shown = mountpoint.display().to_string();
    let r = ovlsim::fuse::serve(served, mountpoint, || {
        errln!("ovlsim mount: the model is mounted on {shown}; Ctrl-C or `fusermount3 -u {shown}` unmounts it");
    });
    match r {
        Ok(()) => {
            errln!("ovlsim mount: {shown} unmounted");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let name =
                e.raw_os_error().and_then(ovlsim::Errno::from_code).map(|n| format!("{n}: ")).unwrap_or_default();
            errln!("ovlsim mount: {shown}: {name}{e}");
            ExitCode::FAILURE
        }
    }
}

/// `ovlsim mount` in a build without the `fuse` feature.
#[cfg(not(all(feature = "fuse", target_os = "linux")))]
fn cmd_mount(_: MountArgs) -> ExitCode {
    errln!("ovlsim mount: this build has no FUSE support (the `fuse` feature, Linux only)");
    ExitCode::from(2)
}
