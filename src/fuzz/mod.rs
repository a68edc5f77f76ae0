//! Differential property testing: random layer stacks and command sequences, run on the
//! model and on the real kernel, every answer compared.
//!
//! # The pieces
//!
//! - [`gen`]: the generator: direct draws from the RNG (`draw_*`), and proptest strategies
//!   that wrap them ([`gen::direct`]; their values do not shrink). Layer stacks of 1 to 4 lowers and an optional upper over
//!   a four-name alphabet (`a`..`d`), depth at most 3, with files, directories, symlinks,
//!   whiteouts, xattr whiteouts, opaque directories, hard links, FIFOs and a few `user.*`
//!   xattrs; every [`Op`](crate::ops::Op) variant on paths with the odd trailing slash,
//!   `..` or `.`; remounts (the same layers, or the old upper as a lower) and offline edits
//!   between mounts; mostly default mount options.
//! - [`machine`]: the model as a `proptest-state-machine` [`ReferenceStateMachine`]
//!   ([`ModelMachine`]), the kernel as the system under test ([`KernelMachine`]). Proptest
//!   runs the cases and shrinks them by deleting transitions; a divergence is a panic whose
//!   message is the [`Divergence`].
//! - [`compare`]: every answer compared exactly, except `st_ino`, which is compared as an
//!   identity: each side's inode numbers are labelled by first sighting and the labels must
//!   match.
//! - [`invariants`]: the model-only mode's checks (no panic, determinism, the lookup cache
//!   changes no answer, reads change nothing, well-formed layers).
//! - [`shrink`]: a second shrinking pass over the whole case (steps, layers, entries,
//!   xattrs, options), since proptest only deletes transitions of a directly drawn case.
//! - [`report`]: divergence files under `target/ovlsim-divergences/` (a scenario YAML whose
//!   expectations are the kernel's answers, and a JSON dump of the case), and a progress
//!   bar.
//! - [`profile`]: named generator configurations that reach further than the default
//!   (many sparse lowers, deep trees, odd names, long sequences, `userxattr`, markers on
//!   layer roots), for `ovlsim fuzz --profile`.
//!
//! # Design
//!
//! - **State machine, not whole cases.** The kernel needs its layer stack built up front,
//!   which fits the shape of `proptest-state-machine`: the initial state *is* the stack and
//!   the first mount, [`KernelMachine::init_test`](proptest_state_machine::StateMachineTest::init_test)
//!   builds it, and every transition is one [`Command`](crate::backend::Command) (an
//!   operation, an unmount, a remount, an offline edit, a dump). Transitions are drawn from
//!   the model's state (operations while mounted, edits and mounts while not; paths the
//!   layers hold or earlier operations made), and the preconditions keep shrunk sequences
//!   in that shape.
//! - **One kernel worker per thread, reused.** Starting a worker costs more than a whole
//!   case; a case re-creates its layers under fixed names (`L0`..`L3`, `U`), which gives
//!   them fresh directories and workdirs, and an unmount first clears whatever an earlier
//!   failed case left mounted.
//! - **What is compared.** Every reply, `st_ino` as identity; at the end of a case the
//!   merged view (while mounted), then, after an unmount, the upper layer as on disk and
//!   every layer an offline edit touched.
//! - **Offline edits stay defined.** Lower layers are edited only while no layer holds a
//!   redirect and no mount used `redirect_dir=on` or `xino=on` (overlayfs.rst, "Changes to
//!   underlying filesystems"; kernel: `ovl_allow_offline_changes`); the upper always. No
//!   edit may show a lower file under a merged name while it is also the copy-up origin of
//!   an upper one: the kernel answers that by its inode cache (`machine::shows_an_origin`).
//! - **Not modelled is not a failure.** Options the model does not implement are never
//!   generated, and a case where the model answers
//!   [`BackendError::NotModelled`](crate::backend::BackendError::NotModelled) is not
//!   compared further.
//!
//! # Running
//!
//! `cargo test --test differential` runs the property as a test (as root on Linux with
//! overlayfs; it prints `SKIPPED: ...` and passes elsewhere unless
//! `OVLSIM_REQUIRE_KERNEL=1`). [`run`] is the same search for the command line, with a
//! seed, a progress bar and the option to keep going after a divergence:
//!
//! ```no_run
//! let report = ovlsim::fuzz::run(ovlsim::fuzz::FuzzConfig {
//!     cases: 500,
//!     progress: true,
//!     ..Default::default()
//! });
//! println!("{report}");
//! std::process::exit(if report.is_clean() { 0 } else { 1 });
//! ```
//!
//! [`ReferenceStateMachine`]: proptest_state_machine::ReferenceStateMachine

pub mod campaign;
pub mod case;
pub mod compare;
pub mod config;
pub mod gen;
pub mod invariants;
pub mod machine;
pub mod profile;
pub mod report;
pub(crate) mod shrink;

pub use case::{Answer, Case, CaseStart};
pub use compare::{Comparer, Divergence};
pub use config::{with_config, GenConfig};
pub use machine::{KernelMachine, KernelSut, ModelMachine, RefState, Replayed};

use crate::kernel::KernelBackend;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use proptest::test_runner::{FailurePersistence, PersistedSeed};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};
use std::cell::{Cell, RefCell};
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the second shrinking pass ([`shrink::minimize`]) may take per failure.
pub const SHRINK_TIME_MAX: Duration = Duration::from_secs(60);

/// The most transitions in a generated case, by default.
pub const STEPS_MAX_DEFAULT: usize = 24;

/// What [`run`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuzzConfig {
    /// How many cases to generate.
    pub cases: u64,
    /// The seed; `None` picks one (the report says which).
    pub seed: Option<u64>,
    /// The most transitions (commands after the first mount) in a case.
    pub max_steps: usize,
    /// Where divergence files go.
    pub out_dir: PathBuf,
    /// Whether to go on after a divergence (until `cases` have run), collecting each
    /// distinct one.
    pub keep_going: bool,
    /// Whether to draw a progress bar on stderr.
    pub progress: bool,
    /// Run the model alone and check its invariants ([`invariants`]), to test the model
    /// where there is no kernel and to measure its speed.
    pub model_only: bool,
    /// A proptest regression file (such as `proptest-regressions/differential.txt`) to
    /// which the seed of each distinct divergence is appended, so that the property test
    /// replays it first. The seeds replay the same cases only with the default
    /// `max_steps` ([`STEPS_MAX_DEFAULT`]) and generator; with another, nothing is written.
    pub regressions: Option<PathBuf>,
    /// The system under test: the kernel's `mount(2)` (the default), a mount command
    /// ([`crate::kernel::KernelBackend::with_mount`]), or another worker program
    /// ([`crate::kernel::KernelBackend::with_program`]).
    pub against: crate::kernel::SystemUnderTest,
    /// What the generator draws (a [`profile::Profile`]'s configuration, or any other);
    /// regression seeds are written only for the default one.
    pub generator: GenConfig,
    /// Plain model-only mode: each case is drawn and run on the model with no invariant
    /// checked (only a panic of the model fails), for speed. Implies `model_only`.
    pub plain: bool,
    /// Threads that run cases (each kernel job with its own worker); 0 is one per core. The
    /// results do not depend on it: case `i` is drawn from the seed and `i`
    /// ([`campaign`]).
    pub jobs: usize,
    /// Run only this shard's share of the case indices, and write its summary
    /// ([`campaign::Summary`]) with the divergence files to `out_dir`, for
    /// [`campaign::merge`].
    pub shard: Option<campaign::Shard>,
    /// Stops the run between cases when set (the command line's Ctrl-C); the report then
    /// says what ran ([`FuzzReport::interrupted`]).
    pub stop: campaign::StopFlag,
}

impl Default for FuzzConfig {
    fn default() -> FuzzConfig {
        FuzzConfig {
            cases: 2000,
            seed: None,
            max_steps: STEPS_MAX_DEFAULT,
            out_dir: PathBuf::from(report::OUT_DIR_DEFAULT),
            keep_going: false,
            progress: false,
            model_only: false,
            regressions: None,
            against: crate::kernel::SystemUnderTest::Kernel,
            generator: GenConfig::default(),
            plain: false,
            jobs: 1,
            shard: None,
            stop: campaign::StopFlag::default(),
        }
    }
}

/// One distinct divergence (or, model-only, one broken invariant) found by [`run`].
#[derive(Clone, Debug)]
pub struct Found {
    /// Its kind ([`Divergence::signature`]); cases with the same kind are counted together.
    pub signature: String,
    /// The shrunk case.
    pub case: Case,
    /// The first disagreement of the shrunk case, when a replay reproduced it.
    pub divergence: Option<Divergence>,
    /// What went wrong, in words.
    pub message: String,
    /// The files written for it.
    pub files: Vec<PathBuf>,
    /// How many generated cases failed this way.
    pub occurrences: usize,
    /// The proptest seed of the generated case (`cc <hex>`), as a regression file holds it.
    pub seed: Option<String>,
    /// The campaign index of the first case that failed this way.
    pub first_case: u64,
}

/// What [`run`] did.
#[derive(Clone, Debug)]
pub struct FuzzReport {
    /// `model vs kernel` (`model vs <name>` for another system under test, by
    /// [`crate::kernel::SystemUnderTest::label`]), or `model only`.
    pub mode: String,
    /// The seed the run used.
    pub seed: u64,
    /// Cases generated and run (shrinking runs not counted).
    pub cases: u64,
    /// Commands run on the backend under test (or the model, model-only) in those cases.
    pub steps: u64,
    /// Cases that could not run: errors of the harness (such as too many rejected cases).
    pub errors: Vec<String>,
    /// The distinct divergences, in the order found.
    pub divergences: Vec<Found>,
    /// Wall-clock time, shrinking included.
    pub elapsed: Duration,
    /// The part of `elapsed` spent shrinking and recording divergences.
    pub shrinking: Duration,
    /// `cases` per second of `elapsed` less `shrinking`: the search's own speed.
    pub cases_per_sec: f64,
    /// Why nothing ran (no kernel), if so.
    pub skipped: Option<String>,
    /// The wrapping sum of [`campaign::case_digest`] over the cases run: equal when two
    /// runs ran the same cases.
    pub digest: u64,
    /// Whether the run was stopped ([`FuzzConfig::stop`]) before its last case.
    pub interrupted: bool,
    /// The share of the case indices this run took ([`campaign::Shard::ALL`]: all).
    pub shard: campaign::Shard,
}

impl FuzzReport {
    /// Whether the run found nothing wrong (a skipped run is not clean).
    pub fn is_clean(&self) -> bool {
        self.divergences.is_empty() && self.errors.is_empty() && self.skipped.is_none() && !self.interrupted
    }

    /// The summary a shard writes ([`campaign::Summary`]), for the run `config` asked for.
    pub fn summary(&self, config: &FuzzConfig) -> campaign::Summary {
        let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        campaign::Summary {
            mode: self.mode.clone(),
            seed: self.seed,
            campaign_cases: config.cases,
            max_steps: config.max_steps,
            generator: campaign::generator_fingerprint(&config.generator),
            keep_going: config.keep_going,
            shards: vec![self.shard],
            cases: self.cases,
            steps: self.steps,
            digest: self.digest,
            interrupted: self.interrupted,
            errors: self.errors.clone(),
            divergences: self
                .divergences
                .iter()
                .map(|d| campaign::SummaryEntry {
                    signature: d.signature.clone(),
                    occurrences: d.occurrences as u64,
                    first_case: d.first_case,
                    seed: d.seed.clone(),
                    message: d.message.clone(),
                    files: d.files.iter().map(name).collect(),
                })
                .collect(),
            elapsed_secs: self.elapsed.as_secs_f64(),
        }
    }
}

impl fmt::Display for FuzzReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = &self.skipped {
            return write!(f, "SKIPPED: fuzz ({}): {why}", self.mode);
        }
        let shard = if self.shard == campaign::Shard::ALL { String::new() } else { format!(" shard {}", self.shard) };
        writeln!(
            f,
            "fuzz ({}), seed {}{shard}: {} cases, {} steps in {:.1} s, {:.1} s of it shrinking ({:.1} cases/s searching)",
            self.mode,
            self.seed,
            self.cases,
            self.steps,
            self.elapsed.as_secs_f64(),
            self.shrinking.as_secs_f64(),
            self.cases_per_sec
        )?;
        if self.interrupted {
            writeln!(
                f,
                "interrupted: the summary of the {} cases that ran (repeat with --seed {})",
                self.cases, self.seed
            )?;
        }
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        if self.divergences.is_empty() {
            return write!(f, "no divergence");
        }
        writeln!(f, "{} distinct divergence(s):", self.divergences.len())?;
        for (i, d) in self.divergences.iter().enumerate() {
            writeln!(
                f,
                "{:3}. {} ({} case{}, first: case {})",
                i + 1,
                d.signature,
                d.occurrences,
                if d.occurrences == 1 { "" } else { "s" },
                d.first_case
            )?;
            for line in d.message.lines() {
                writeln!(f, "       {line}")?;
            }
            if let Some(seed) = &d.seed {
                writeln!(f, "       seed: {seed}")?;
            }
            for p in &d.files {
                writeln!(f, "       {}", p.display())?;
            }
        }
        Ok(())
    }
}

/// A failure persistence that keeps the seeds of failing cases in memory, so that [`run`]
/// can report them and write them to a regression file.
#[derive(Clone, Debug, Default)]
struct SeedCollector(Arc<Mutex<Vec<String>>>);

impl FailurePersistence for SeedCollector {
    fn load_persisted_failures2(&self, _: Option<&'static str>) -> Vec<PersistedSeed> {
        Vec::new()
    }

    fn save_persisted_failure2(&mut self, _: Option<&'static str>, seed: PersistedSeed, _: &dyn fmt::Debug) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(seed.to_string());
    }

    fn box_clone(&self) -> Box<dyn FailurePersistence> {
        Box::new(self.clone())
    }

    fn eq(&self, other: &dyn FailurePersistence) -> bool {
        other.as_any().downcast_ref::<SeedCollector>().is_some_and(|o| Arc::ptr_eq(&self.0, &o.0))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Appends `seed` with a comment to the proptest regression file `path` (made with
/// proptest's header when missing), unless the seed is already there.
pub fn append_regression(path: &Path, seed: &str, comment: &str) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    if old.lines().any(|l| l.split('#').next().map(str::trim) == Some(seed)) {
        return Ok(());
    }
    let mut text = old;
    if text.is_empty() {
        text.push_str(
            "# Seeds for failure cases proptest has generated in the past. It is\n\
             # automatically read and these particular cases re-run before any\n\
             # novel cases are generated.\n\
             #\n\
             # It is recommended to check this file in to source control so that\n\
             # everyone who runs the test benefits from these saved cases.\n",
        );
    }
    let comment: String = comment.chars().map(|c| if c == '\n' || c == '\r' { ' ' } else { c }).collect();
    text.push_str(&format!("{seed} # {comment}\n"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::persist::write_atomic(path, text.as_bytes())
}

/// Whether the kernel tier can run here ([`KernelBackend::available_once`]).
pub fn kernel_available() -> Result<(), String> {
    KernelBackend::available_once()
}

/// The proptest RNG for a seed.
pub fn rng_for(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&seed.rotate_left(17).to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

/// Replays a shrunk failing case, writes its files under `out_dir`, and describes it.
///
/// For a kernel run the case is replayed on a fresh model and this thread's kernel worker,
/// which gives the structured [`Divergence`] (and shows that it reproduces); `message` is
/// proptest's failure message, used when the replay does not reproduce it.
pub fn record_failure(out_dir: &Path, case: &Case, message: &str, model_only: bool) -> Found {
    let mut divergence = None;
    let mut yaml = None;
    let mut case = case.clone();
    if model_only {
        let key = |c: &Case| invariants::check_case(c).err().map(|m| invariant_kind(&m));
        case = shrink::minimize(&case, key, SHRINK_TIME_MAX).0;
    } else if let Ok(mut kernel) = machine::checkout() {
        if let Replayed::Diverged(first) = machine::replay_with(&case, &mut kernel) {
            let key = first.kind();
            let fails = |c: &Case| match machine::replay_with(c, &mut kernel) {
                Replayed::Diverged(d) if d.kind() == key => Some(()),
                _ => None,
            };
            case = shrink::minimize(&case, fails, SHRINK_TIME_MAX).0;
            let d = match machine::replay_with(&case, &mut kernel) {
                Replayed::Diverged(d) => *d,
                _ => *first,
            };
            let stem = report::stem(&d.signature(), &case);
            match report::scenario_yaml(&stem, &case, &d, &mut kernel) {
                Ok(y) => yaml = Some(y),
                Err(e) => eprintln!("cannot record the divergence as a scenario: {e}"),
            }
            divergence = Some(d);
        }
        machine::checkin(kernel);
    }
    let case = &case;
    let (signature, message) = match &divergence {
        Some(d) => (d.signature(), d.to_string()),
        None => {
            let m = message.strip_prefix(machine::DIVERGENCE_MARK).unwrap_or(message);
            let sig = if model_only {
                format!("model invariant: {}", invariant_kind(m))
            } else {
                format!("not reproduced: {}", m.lines().next().unwrap_or(""))
            };
            (sig, m.to_owned())
        }
    };
    let files = match &divergence {
        Some(d) => report::write(out_dir, case, d, yaml.as_deref()),
        None => report::write_message(out_dir, case, &signature, &message),
    }
    .unwrap_or_else(|e| {
        eprintln!("cannot write the divergence under {}: {e}", out_dir.display());
        Vec::new()
    });
    Found { signature, case: case.clone(), divergence, message, files, occurrences: 1, seed: None, first_case: 0 }
}

fn invariant_kind(m: &str) -> String {
    // "step 3 (Op(Rename { .. })): the model panicked: ..." → "rename: the model panicked"
    let op = m
        .split("Op(")
        .nth(1)
        .and_then(|r| r.split([' ', '{']).next())
        .map(|s| s.to_lowercase())
        .unwrap_or_else(|| "command".into());
    let what = m.split("): ").nth(1).unwrap_or(m).split([':', '(', '{']).next().unwrap_or("").trim().to_owned();
    format!("{op}: {what}")
}

/// Runs one generated case as the property test does, catching the divergence panic:
/// `Err` with proptest's failure message when the case fails.
pub fn check_on_kernel(
    state: RefState,
    transitions: Vec<crate::backend::Command>,
    seen: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
) -> Result<(), TestCaseError> {
    machine::install_panic_filter();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        KernelMachine::test_sequential(Config::default(), state, transitions, seen)
    }))
    .map_err(|p| {
        let msg = if let Some(s) = p.downcast_ref::<String>() {
            s.clone()
        } else if let Some(s) = p.downcast_ref::<&str>() {
            (*s).to_owned()
        } else {
            "a panic".to_owned()
        };
        TestCaseError::fail(msg)
    })
}

/// Sets the step hook ([`machine::set_step_hook`]) and removes it when dropped.
struct StepHookGuard;

impl StepHookGuard {
    fn set(hook: Box<dyn FnMut()>) -> StepHookGuard {
        machine::set_step_hook(Some(hook));
        StepHookGuard
    }
}

impl Drop for StepHookGuard {
    fn drop(&mut self) {
        machine::set_step_hook(None);
    }
}

/// Searches for divergences between the model and the kernel (or, with
/// [`FuzzConfig::model_only`], for broken model invariants), shrinks each one, writes it
/// under [`FuzzConfig::out_dir`], and reports.
///
/// With [`FuzzConfig::keep_going`], a case whose first divergence has the signature of one
/// already found is counted in [`Found::occurrences`] and not shrunk again.
///
/// Without a usable kernel (and not model-only), nothing runs and the report says why
/// ([`FuzzReport::skipped`]).
pub fn run(mut config: FuzzConfig) -> FuzzReport {
    // Only the model and the kernel take mounts by `fsconfig(2)` calls: the mount template
    // and worker programs do not.
    if config.against != crate::kernel::SystemUnderTest::Kernel {
        config.generator.fsconfig = false;
    }
    with_config(config.generator.clone(), || run_drawing(config))
}

/// [`run`], drawing by this thread's generator configuration ([`with_config`]).
fn run_drawing(config: FuzzConfig) -> FuzzReport {
    machine::install_panic_filter();
    let start = Instant::now();
    let seed = config.seed.unwrap_or_else(random_seed);
    machine::set_system_under_test(config.against.clone());
    let plain = config.plain;
    let model_only = config.model_only || plain;
    let mode = if plain {
        "model only, plain".to_owned()
    } else if model_only {
        "model only".to_owned()
    } else {
        format!("model vs {}", config.against.label())
    };
    let shard = config.shard.unwrap_or(campaign::Shard::ALL);
    let mut report = FuzzReport {
        mode: mode.clone(),
        seed,
        cases: 0,
        steps: 0,
        errors: Vec::new(),
        divergences: Vec::new(),
        elapsed: Duration::ZERO,
        shrinking: Duration::ZERO,
        cases_per_sec: 0.0,
        skipped: None,
        digest: 0,
        interrupted: false,
        shard,
    };
    if let Err(e) = config.generator.check() {
        report.errors.push(format!("generator configuration: {e}"));
        return report;
    }
    if !model_only {
        if let Err(why) = kernel_available() {
            report.skipped = Some(why);
            return report;
        }
    }
    let jobs = if config.jobs == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { config.jobs };
    let positions = shard.cases_of(config.cases);
    if config.progress {
        // First, so that a run stopped early can be repeated.
        let of = if config.shard.is_some() { format!(" (shard {shard}: {positions} of them)") } else { String::new() };
        eprintln!(
            "fuzz ({mode}), seed {seed}: {} cases{of} of at most {} steps on {jobs} job{} (repeat with --seed {seed})",
            config.cases,
            config.max_steps,
            if jobs == 1 { "" } else { "s" }
        );
    }
    let progress = Rc::new(RefCell::new(report::Progress::new(config.progress, positions, "fuzz")));
    // The case being generated (one job: on this thread), for the progress line of a long
    // case: steps made so far.
    let generated = Rc::new(Cell::new(0u64));
    let _hook = config.progress.then(|| {
        let (progress, generated) = (Rc::clone(&progress), Rc::clone(&generated));
        StepHookGuard::set(Box::new(move || {
            generated.set(generated.get() + machine::STEP_HOOK_EVERY);
            progress.borrow_mut().note(&format!("generating a case: {} steps", generated.get()));
        }))
    });
    let run_mode = if plain {
        campaign::Mode::Plain
    } else if model_only {
        campaign::Mode::Invariants
    } else {
        campaign::Mode::Kernel
    };
    let results = campaign::search(campaign::Search {
        mode: run_mode,
        seed,
        max_steps: config.max_steps,
        shard,
        positions,
        jobs,
        keep_going: config.keep_going,
        stop: config.stop,
        generator: &config.generator,
        progress: &mut |done, failed| {
            generated.set(0);
            progress.borrow_mut().draw(done, failed, "", false)
        },
    });
    report.interrupted = config.stop.is_set();
    report.cases = results.len() as u64;
    for r in &results {
        report.steps += r.steps;
        report.digest = report.digest.wrapping_add(campaign::case_digest(r.index, r.steps));
        if let Some(e) = &r.error {
            report.errors.push(format!("case {}: {e}", r.index));
        }
    }
    progress.borrow_mut().draw(report.cases, results.iter().filter(|r| r.failure.is_some()).count(), "", true);
    let shrink_start = Instant::now();
    // Signatures already found (shrunk, and as first seen), with the index of their entry
    // in `report.divergences`.
    let mut known: Vec<(String, usize)> = Vec::new();
    for r in &results {
        let Some((first_sig, message)) = &r.failure else { continue };
        if let Some((_, i)) = known.iter().find(|(s, _)| s == first_sig) {
            report.divergences[*i].occurrences += 1;
            continue;
        }
        progress.borrow_mut().note("recording");
        let f = if config.stop.is_set() {
            // Stopped: recorded as found, not shrunk.
            unshrunk(&config.out_dir, seed, r.index, config.max_steps, first_sig, message)
        } else {
            shrunk(&config.out_dir, seed, r.index, config.max_steps, first_sig, message, model_only)
        };
        let index = match report.divergences.iter().position(|d| d.signature == f.signature) {
            Some(i) => {
                let d = &mut report.divergences[i];
                d.occurrences += 1;
                for p in f.files.iter().filter(|p| !d.files.contains(p)) {
                    let _ = std::fs::remove_file(p);
                }
                i
            }
            None => {
                report.divergences.push(f.clone());
                report.divergences.len() - 1
            }
        };
        for sig in [f.signature, first_sig.clone()] {
            if !sig.is_empty() && !known.iter().any(|(s, _)| *s == sig) {
                known.push((sig, index));
            }
        }
    }
    report.shrinking = shrink_start.elapsed();
    progress.borrow_mut().draw(report.cases, report.divergences.len(), "", true);
    progress.borrow_mut().finish();
    if let Some(path) = &config.regressions {
        if config.max_steps == STEPS_MAX_DEFAULT && config.generator == GenConfig::default() {
            for d in &report.divergences {
                if let Some(seed) = &d.seed {
                    if let Err(e) = append_regression(path, seed, &d.signature) {
                        report.errors.push(format!("cannot write {}: {e}", path.display()));
                    }
                }
            }
        }
    }
    report.elapsed = start.elapsed();
    let searching = report.elapsed.saturating_sub(report.shrinking);
    report.cases_per_sec = report.cases as f64 / searching.as_secs_f64().max(1e-9);
    if config.shard.is_some() {
        if let Err(e) = report.summary(&config).write(&config.out_dir) {
            report.errors.push(format!("cannot write the summary under {}: {e}", config.out_dir.display()));
        }
    }
    report
}

/// Case `index` of `seed`, which failed with `first_sig`, shrunk by proptest (the state
/// machine's shrinking, from the same case: [`campaign::case_runner`]) and then by
/// [`record_failure`], and written under `out_dir`.
fn shrunk(
    out_dir: &Path,
    seed: u64,
    index: u64,
    max_steps: usize,
    first_sig: &str,
    message: &str,
    model_only: bool,
) -> Found {
    let seeds = SeedCollector::default();
    let proptest_config = Config { failure_persistence: Some(Box::new(seeds.clone())), ..campaign::proptest_config() };
    let mut runner = TestRunner::new_with_rng(proptest_config, rng_for(campaign::case_seed(seed, index)));
    let strategy = ModelMachine::sequential_strategy(1..=max_steps.max(1));
    // The last case that failed, shrinking included: proptest-state-machine can end its
    // shrinking on an initial state that passes (it keeps a simplified initial state when
    // it cannot complicate it back), so its final value is not trusted.
    let last_failing: RefCell<Option<Case>> = RefCell::new(None);
    let result = runner.run(&strategy, |(state, transitions, seen)| {
        let case = machine::case_of(&state, &transitions);
        let r = if model_only {
            invariants::check_case(&case).map(drop).map_err(TestCaseError::fail)
        } else {
            check_on_kernel(state, transitions, seen)
        };
        if r.is_err() {
            *last_failing.borrow_mut() = Some(case);
        }
        r
    });
    let mut f = match result {
        Err(TestError::Fail(msg, (state, transitions, _))) => {
            let case = last_failing.take().unwrap_or_else(|| machine::case_of(&state, &transitions));
            record_failure(out_dir, &case, msg.message(), model_only)
        }
        // It passed the second time (a kernel that answers otherwise now), or proptest gave
        // up: kept as first found.
        _ => unshrunk(out_dir, seed, index, max_steps, &format!("not reproduced: {first_sig}"), message),
    };
    f.seed = seeds.0.lock().unwrap_or_else(|p| p.into_inner()).last().cloned();
    f.first_case = index;
    f
}

/// Case `index` of `seed`, which failed with `signature`, written under `out_dir` as it was
/// drawn.
fn unshrunk(out_dir: &Path, seed: u64, index: u64, max_steps: usize, signature: &str, message: &str) -> Found {
    let case = campaign::draw(&mut campaign::case_runner(seed, index), max_steps, false).map(|d| d.case());
    let (case, files) = match case {
        Ok(case) => {
            let files = report::write_message(out_dir, &case, signature, message).unwrap_or_else(|e| {
                eprintln!("cannot write the divergence under {}: {e}", out_dir.display());
                Vec::new()
            });
            (case, files)
        }
        Err(_) => (
            Case {
                start: CaseStart { lowers: Vec::new(), upper: None, options: Default::default(), data: 0 },
                steps: Vec::new(),
            },
            Vec::new(),
        ),
    };
    Found {
        signature: signature.to_owned(),
        case,
        divergence: None,
        message: message.to_owned(),
        files,
        occurrences: 1,
        seed: None,
        first_case: index,
    }
}
