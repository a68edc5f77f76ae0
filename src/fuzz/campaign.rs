//! Campaigns: case `i` of a seed drawn from the seed and `i` alone, so that the cases can
//! run on every core ([`FuzzConfig::jobs`](super::FuzzConfig::jobs)), in shards on other
//! machines ([`Shard`]), and be joined again ([`merge`]) into the summary one run would
//! have given.
//!
//! # Case `i` of a seed
//!
//! Case `i` is drawn by a proptest runner whose RNG is the one `TestRunner::run` gives the
//! first case of a runner seeded with [`rng_for`]`(`[`case_seed`]`(seed, i))`: whatever job,
//! shard or mode runs it, case `i` is the same case, and a failing case is shrunk by
//! proptest (`TestRunner::run` with one case) from exactly that case. Case 0 of a seed is
//! the first case the fuzzer drew from that seed before campaigns existed.
//!
//! # Drawing without keeping the value tree
//!
//! [`draw`] makes the same draws from the runner's RNG as `proptest-state-machine`'s
//! `Sequential::new_tree` over [`ModelMachine`] (the case start and its filter, the number
//! of transitions, each transition with its preconditions; checked by a test), calling the
//! generator's direct draws ([`machine::draw_state`], [`machine::draw_transition`]) that
//! the state machine's strategies wrap: the fast modes run the case as it is drawn, and
//! only a failing case is drawn again through the state machine, to be shrunk.

use super::case::{dumped_layers, final_commands, Answer, Case};
use super::machine::{self, exec_quiet, ModelMachine, RefState};
use super::{config, gen, invariants, rng_for};
use crate::backend::{Command, ModelBackend};
use proptest::test_runner::{Config, Reason, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// What separates the seeds of two consecutive cases ([`case_seed`]): the 64-bit golden
/// ratio, so that the seeds of a campaign's cases are spread over the whole range.
pub const CASE_SEED_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// The seed whose proptest RNG ([`rng_for`]) draws case `index` of a campaign with `seed`.
/// Case 0's is `seed` itself.
pub fn case_seed(seed: u64, index: u64) -> u64 {
    seed.wrapping_add(index.wrapping_mul(CASE_SEED_STEP))
}

/// The proptest configuration a case is drawn and shrunk under (one case; the shrinking
/// limits and local rejects the fuzzer has always used).
pub(crate) fn proptest_config() -> Config {
    Config {
        cases: 1,
        failure_persistence: None,
        max_shrink_iters: 4096,
        max_shrink_time: 120_000,
        max_local_rejects: 1 << 20,
        ..Config::default()
    }
}

/// The runner that draws case `index` of `seed`: seeded as `TestRunner::run` seeds the
/// first case of a runner on [`rng_for`]`(`[`case_seed`]`(seed, index))`.
pub fn case_runner(seed: u64, index: u64) -> TestRunner {
    let mut base = TestRunner::new_with_rng(proptest_config(), rng_for(case_seed(seed, index)));
    let rng = base.new_rng();
    TestRunner::new_with_rng(proptest_config(), rng)
}

/// A case drawn by [`draw`], already run on the model as it was drawn.
pub struct Drawn {
    /// The state after the case's setup (its first mount), when asked for.
    pub initial: Option<RefState>,
    /// The state after the last transition.
    pub last: RefState,
    /// The transitions.
    pub transitions: Vec<Command>,
    /// The first panic of the model while drawing, as the invariant checks word it.
    pub panic: Option<String>,
}

impl Drawn {
    /// The case.
    pub fn case(&self) -> Case {
        Case { start: (*self.last.start).clone(), steps: self.transitions.clone() }
    }
}

/// Draws a case of 1 to `max_steps` transitions from `runner`, by this thread's generator
/// configuration ([`super::with_config`]), making the draws `Sequential::new_tree` makes
/// for `ModelMachine::sequential_strategy(1..=max_steps)`; keeps the initial state when
/// `keep_initial`.
pub fn draw(runner: &mut TestRunner, max_steps: usize, keep_initial: bool) -> Result<Drawn, Reason> {
    draw_with(runner, max_steps, keep_initial, None)
}

/// The invariant checks ([`invariants::Checker`]) of a case as [`draw_with`] draws it: the
/// checker after the last command checked, or the first broken invariant.
#[derive(Debug, Default)]
pub struct Checked {
    checker: Option<invariants::Checker>,
    error: Option<String>,
}

impl Checked {
    /// Checks `cmd`, which took the model from `before` to `model` with `answer`, unless an
    /// invariant is already broken.
    fn observe(&mut self, before: &ModelBackend, model: &ModelBackend, cmd: &Command, answer: &Answer) {
        if let Some(checker) = self.checker.as_mut() {
            if let Err(e) = checker.check(before, model, cmd, answer, false) {
                // Checked no further: the first broken invariant is the case's.
                self.error = Some(e);
                self.checker = None;
            }
        }
    }

    /// The number of commands checked in all, or the first broken invariant: the result of
    /// [`invariants::check_case`] on the drawn case, whose final commands are run here on
    /// `model` (the model after the case's last transition).
    pub fn finish(self, model: ModelBackend) -> Result<usize, String> {
        match (self.error, self.checker) {
            (Some(e), _) => Err(e),
            (None, Some(mut c)) => c.finish(model),
            (None, None) => Err("no case was checked".into()),
        }
    }
}

/// [`draw`], and with `check`, the invariant checks of every command as it is drawn: each
/// setup command and each transition is checked on the very run that drew it (the model
/// before it and after it), so that the invariant mode does not run the case once more.
pub fn draw_with(
    runner: &mut TestRunner,
    max_steps: usize,
    keep_initial: bool,
    mut check: Option<&mut Checked>,
) -> Result<Drawn, Reason> {
    let cfg = config::current();
    // ModelMachine::init_state: a case start mapped to its state, filtered.
    let mut state = loop {
        let start = gen::draw_case_start(runner.rng(), &cfg);
        let state = match check.as_deref_mut() {
            Some(c) => {
                *c = Checked { checker: Some(invariants::Checker::new(&start)), error: None };
                RefState::with_config_observed(start, cfg.clone(), Some(&mut |b, m, cmd, a| c.observe(b, m, cmd, a)))
            }
            None => RefState::with_config(start, cfg.clone()),
        };
        if !machine::start_readdir_order_decides(&state) {
            break state;
        }
        runner.reject_local("a readdir would depend on tmpfs's entry order")?;
    };
    let mut panic = state.setup.iter().enumerate().find_map(|(i, a)| match a {
        Answer::Panic(p) => Some(format!("step {i} ({:?}): the model panicked: {p}", state.start.setup()[i])),
        _ => None,
    });
    let initial = keep_initial.then(|| state.clone());
    let count = proptest::num::sample_uniform_incl(runner, 1usize, max_steps.max(1));
    let mut transitions = Vec::with_capacity(count);
    let setup = state.setup.len();
    while transitions.len() < count {
        let t = machine::draw_transition(runner.rng(), &state);
        if ModelMachine::preconditions(&state, &t) {
            let before = check.as_ref().is_some_and(|c| c.checker.is_some()).then(|| state.model.clone());
            state = ModelMachine::apply(state, &t);
            if let (Some(c), Some(before), Some(answer)) = (check.as_deref_mut(), before, &state.last) {
                c.observe(&before, &state.model, &t, answer);
            }
            if let (None, Some(Answer::Panic(p))) = (&panic, &state.last) {
                panic = Some(format!("step {} ({t:?}): the model panicked: {p}", setup + transitions.len()));
            }
            transitions.push(t);
        } else {
            runner.reject_local("Pre-conditions were not satisfied")?;
        }
    }
    Ok(Drawn { initial, last: state, transitions, panic })
}

/// How a campaign runs each case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Drawn and run on the model; only a panic of the model fails.
    Plain,
    /// Run on the model with every invariant ([`invariants::check_case`]).
    Invariants,
    /// Run on the model and the system under test, every answer compared.
    Kernel,
}

/// What one case gave.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// The case's position in its shard (0, 1, 2, ...).
    pub position: u64,
    /// The case's index in the campaign.
    pub index: u64,
    /// Commands run.
    pub steps: u64,
    /// The failure: its signature as first seen (before shrinking) and message.
    pub failure: Option<(String, String)>,
    /// The case could not run (proptest gave up drawing it).
    pub error: Option<String>,
}

/// Runs case `index` of `seed` once (no shrinking).
pub fn run_case(
    mode: Mode,
    seed: u64,
    index: u64,
    max_steps: usize,
) -> (u64, Result<Option<(String, String)>, String>) {
    let mut runner = case_runner(seed, index);
    let mut checked = (mode == Mode::Invariants).then(Checked::default);
    let drawn = match draw_with(&mut runner, max_steps, mode == Mode::Kernel, checked.as_mut()) {
        Ok(d) => d,
        Err(why) => return (0, Err(why.to_string())),
    };
    let invariant = |m: String| Some((format!("model invariant: {}", super::invariant_kind(&m)), m));
    match mode {
        Mode::Plain => {
            let mut state = drawn.last;
            let mut steps = (state.setup.len() + drawn.transitions.len()) as u64;
            if let Some(p) = drawn.panic {
                return (steps, Ok(invariant(p)));
            }
            for cmd in final_commands(state.mounted, &dumped_layers(&state.start, &state.edits)) {
                steps += 1;
                if let Answer::Panic(p) = exec_quiet(&mut state.model, &cmd) {
                    return (steps, Ok(invariant(format!("step {} ({cmd:?}): the model panicked: {p}", steps - 1))));
                }
            }
            (steps, Ok(None))
        }
        // The checks of `invariants::check_case`, made while the case was drawn.
        Mode::Invariants => match checked.unwrap_or_default().finish(drawn.last.model) {
            Ok(n) => (n as u64, Ok(None)),
            Err(m) => (0, Ok(invariant(m))),
        },
        Mode::Kernel => {
            let initial = drawn.initial.expect("kept for the kernel");
            let before = machine::kernel_steps();
            let r = super::check_on_kernel(initial, drawn.transitions, None);
            let steps = machine::kernel_steps() - before;
            let sig = machine::take_last_divergence().map(|d| d.signature());
            match r {
                Ok(()) => (steps, Ok(None)),
                Err(e) => {
                    let m = e.to_string();
                    let m = m.strip_prefix("Test failed: ").unwrap_or(&m).to_owned();
                    (steps, Ok(Some((sig.unwrap_or_default(), m))))
                }
            }
        }
    }
}

/// Which of a campaign's case indices a run takes: those `i` with `i % count == index`
/// (interleaved, so that every shard gets the same mix of short and long cases, and a shard
/// of a stopped campaign has run its share of the first cases).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// This shard, from 0.
    pub index: u64,
    /// How many shards.
    pub count: u64,
}

impl Shard {
    /// The whole campaign.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The campaign index of this shard's case at `position`.
    pub fn case_index(self, position: u64) -> u64 {
        self.index + position * self.count
    }

    /// How many of the campaign's first `cases` indices are this shard's.
    pub fn cases_of(self, cases: u64) -> u64 {
        if cases > self.index {
            (cases - self.index).div_ceil(self.count)
        } else {
            0
        }
    }
}

impl FromStr for Shard {
    type Err = String;

    /// `I/N`, with `I < N`.
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}`: a shard is I/N, with 0 <= I < N (0/4, 1/4, 2/4, 3/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A flag that stops a campaign between cases (set by `ovlsim fuzz`'s SIGINT handler).
#[derive(Clone, Copy, Debug, Default)]
pub struct StopFlag(pub Option<&'static AtomicBool>);

impl StopFlag {
    /// Whether a stop was asked for.
    pub fn is_set(self) -> bool {
        self.0.is_some_and(|f| f.load(Ordering::Relaxed))
    }
}

impl PartialEq for StopFlag {
    fn eq(&self, other: &StopFlag) -> bool {
        match (self.0, other.0) {
            (Some(a), Some(b)) => std::ptr::eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }
}

impl Eq for StopFlag {}

/// What [`search`] is asked to do.
pub(crate) struct Search<'a> {
    pub mode: Mode,
    pub seed: u64,
    pub max_steps: usize,
    pub shard: Shard,
    /// Cases of the shard to run (positions 0..positions).
    pub positions: u64,
    pub jobs: usize,
    pub keep_going: bool,
    pub stop: StopFlag,
    pub generator: &'a super::GenConfig,
    /// Called on the searching thread now and then with (cases done, failures so far); on
    /// one job, also between the steps of a long case.
    pub progress: &'a mut dyn FnMut(u64, usize),
}

/// Runs the cases of a shard on `jobs` threads (on this one when `jobs` is 1) and returns
/// what each gave, by position. Without `keep_going`, the search stops at the first failure
/// (or error) by position: every case before it has run, none after it is returned, so that
/// the result does not depend on `jobs`. After a stop ([`StopFlag`]), what was done is
/// returned; a case that was running is left out.
pub(crate) fn search(s: Search<'_>) -> Vec<CaseResult> {
    let next = AtomicU64::new(0);
    let stop_at = AtomicU64::new(u64::MAX);
    let done = AtomicU64::new(0);
    let failed = AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    // Takes the next case and runs it; false when there is none left to take.
    let one = || -> bool {
        let position = next.fetch_add(1, Ordering::Relaxed);
        if position >= s.positions || position > stop_at.load(Ordering::Relaxed) || s.stop.is_set() {
            return false;
        }
        let index = s.shard.case_index(position);
        let (steps, r) = run_case(s.mode, s.seed, index, s.max_steps);
        if s.stop.is_set() {
            // Interrupted while it ran (a kernel worker may have died of the same Ctrl-C):
            // not counted.
            return false;
        }
        let (failure, error) = match r {
            Ok(f) => (f, None),
            Err(e) => (None, Some(e)),
        };
        if failure.is_some() {
            failed.fetch_add(1, Ordering::Relaxed);
        }
        if error.is_some() || failure.is_some() && !s.keep_going {
            stop_at.fetch_min(position, Ordering::Relaxed);
        }
        results.lock().unwrap_or_else(|p| p.into_inner()).push(CaseResult { position, index, steps, failure, error });
        done.fetch_add(1, Ordering::Relaxed);
        true
    };
    let progress = s.progress;
    if s.jobs <= 1 {
        while one() {
            progress(done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        }
    } else {
        let generator = s.generator;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..s.jobs)
                .map(|_| {
                    scope.spawn(|| {
                        super::with_config(generator.clone(), || {
                            machine::install_panic_filter();
                            while one() {}
                            machine::release_worker();
                        })
                    })
                })
                .collect();
            while !handles.iter().all(|h| h.is_finished()) {
                std::thread::sleep(std::time::Duration::from_millis(20));
                progress(done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
            }
            for h in handles {
                if let Err(p) = h.join() {
                    std::panic::resume_unwind(p);
                }
            }
        });
    }
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let cut = stop_at.load(Ordering::Relaxed);
    results.retain(|r| r.position <= cut);
    results.sort_by_key(|r| r.position);
    results
}

/// A mix of a case's index and its number of steps, summed (wrapping) over a run's cases in
/// [`Summary::digest`]: equal digests say that two runs (or merged shards) ran the same
/// cases, whatever their order.
pub fn case_digest(index: u64, steps: u64) -> u64 {
    // splitmix64's finaliser over the pair.
    let mut z = index.wrapping_mul(CASE_SEED_STEP) ^ steps.rotate_left(32) ^ 0xD1B5_4A32_D192_ED03;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The file a shard's summary is written to, in its output directory.
pub const SUMMARY_FILE: &str = "summary.json";

/// The summary of a run (or of merged shards) as `summary.json` holds it: what
/// [`merge`] joins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `model only`, `model only (plain)`, `model vs kernel`, ...
    pub mode: String,
    /// The campaign's seed.
    pub seed: u64,
    /// The campaign's number of cases (every shard's share together).
    pub campaign_cases: u64,
    /// The most transitions in a case.
    pub max_steps: usize,
    /// A fingerprint of the generator configuration (shards must agree on it).
    pub generator: String,
    /// Whether the run went on after a divergence.
    pub keep_going: bool,
    /// The shard count, and the shards this summary covers (sorted).
    pub shards: Vec<Shard>,
    /// Cases run.
    pub cases: u64,
    /// Commands run in them.
    pub steps: u64,
    /// The wrapping sum of [`case_digest`] over the cases run.
    pub digest: u64,
    /// Whether a run was stopped (Ctrl-C) before its last case.
    pub interrupted: bool,
    /// Cases that could not run.
    pub errors: Vec<String>,
    /// The distinct divergences, by the index of the first case that showed each.
    pub divergences: Vec<SummaryEntry>,
    /// Wall-clock seconds (merged: the longest shard).
    pub elapsed_secs: f64,
}

/// One distinct divergence in a [`Summary`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryEntry {
    /// Its kind.
    pub signature: String,
    /// How many cases failed this way.
    pub occurrences: u64,
    /// The campaign index of the first case that failed this way.
    pub first_case: u64,
    /// The proptest seed of that case (`cc <hex>`), when it was shrunk.
    pub seed: Option<String>,
    /// What went wrong, in words.
    pub message: String,
    /// The files written for it, by name, in the summary's directory.
    pub files: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shards: Vec<String> = self.shards.iter().map(Shard::to_string).collect();
        writeln!(
            f,
            "fuzz ({}), seed {}: {} of {} cases (shards {}), {} steps{}, digest {:016x}",
            self.mode,
            self.seed,
            self.cases,
            self.campaign_cases,
            shards.join(" "),
            self.steps,
            if self.interrupted { ", interrupted" } else { "" },
            self.digest
        )?;
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        if self.divergences.is_empty() {
            return write!(f, "no divergence");
        }
        writeln!(f, "{} distinct divergence(s):", self.divergences.len())?;
        for (i, d) in self.divergences.iter().enumerate() {
            let s = if d.occurrences == 1 { "" } else { "s" };
            writeln!(f, "{:3}. {} ({} case{s}, first: case {})", i + 1, d.signature, d.occurrences, d.first_case)?;
            for line in d.message.lines() {
                writeln!(f, "       {line}")?;
            }
            if let Some(seed) = &d.seed {
                writeln!(f, "       seed: {seed}")?;
            }
            for p in &d.files {
                writeln!(f, "       {p}")?;
            }
        }
        Ok(())
    }
}

impl Summary {
    /// Whether nothing went wrong and every case of the campaign ran.
    pub fn is_clean(&self) -> bool {
        self.divergences.is_empty() && self.errors.is_empty() && !self.interrupted
    }

    /// Writes the summary as `dir/summary.json`.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let p = dir.join(SUMMARY_FILE);
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::persist::write_atomic(&p, text.as_bytes())?;
        Ok(p)
    }

    /// Reads `dir/summary.json`.
    pub fn read(dir: &Path) -> Result<Summary, String> {
        let p = dir.join(SUMMARY_FILE);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))
    }
}

/// A fingerprint of a generator configuration, for [`Summary::generator`] (FNV-1a over its
/// `Debug` form: the same on every machine that runs the same ovlsim).
pub fn generator_fingerprint(g: &super::GenConfig) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{g:?}").bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Joins the summaries in `dirs` (each the output directory of one or more shards of one
/// campaign: same seed, cases, steps, generator and mode) into one, written with the
/// divergence files it keeps to `out`: counts add up, a divergence seen by several shards is
/// one entry whose occurrences add up and whose files are those of its first case by index.
/// The merged summary of every shard of a `--keep-going` campaign is the summary of the
/// whole campaign run at once; without `--keep-going` each shard stopped at its own first
/// divergence, and the merge says what each found.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Summary, String> {
    let mut parts = Vec::new();
    for d in dirs {
        parts.push((d.clone(), Summary::read(d)?));
    }
    let Some((_, first)) = parts.first() else {
        return Err("nothing to merge: give the shards' output directories".into());
    };
    let mut merged = Summary {
        shards: Vec::new(),
        cases: 0,
        steps: 0,
        digest: 0,
        interrupted: false,
        errors: Vec::new(),
        divergences: Vec::new(),
        elapsed_secs: 0.0,
        ..first.clone()
    };
    let mut sources: Vec<PathBuf> = Vec::new();
    for (dir, s) in &parts {
        let same = s.mode == merged.mode
            && s.seed == merged.seed
            && s.campaign_cases == merged.campaign_cases
            && s.max_steps == merged.max_steps
            && s.generator == merged.generator
            && s.keep_going == merged.keep_going;
        if !same {
            return Err(format!(
                "{}: another campaign (mode, seed, cases, max steps, generator or --keep-going differ from {})",
                dir.display(),
                dirs[0].display()
            ));
        }
        for sh in &s.shards {
            if merged.shards.contains(sh) {
                return Err(format!("{}: shard {sh} is in two of the summaries", dir.display()));
            }
            if sh.count != first.shards[0].count {
                return Err(format!("{}: shard {sh} is not one of {} shards", dir.display(), first.shards[0].count));
            }
        }
        merged.shards.extend(s.shards.iter().copied());
        merged.cases += s.cases;
        merged.steps += s.steps;
        merged.digest = merged.digest.wrapping_add(s.digest);
        merged.interrupted |= s.interrupted;
        merged.errors.extend(s.errors.iter().cloned());
        merged.elapsed_secs = merged.elapsed_secs.max(s.elapsed_secs);
        for d in &s.divergences {
            match merged.divergences.iter().position(|m| m.signature == d.signature) {
                Some(i) => {
                    let m = &mut merged.divergences[i];
                    m.occurrences += d.occurrences;
                    if d.first_case < m.first_case {
                        let occurrences = m.occurrences;
                        *m = SummaryEntry { occurrences, ..d.clone() };
                        sources[i] = dir.clone();
                    }
                }
                None => {
                    merged.divergences.push(d.clone());
                    sources.push(dir.clone());
                }
            }
        }
    }
    merged.shards.sort();
    let count = first.shards[0].count;
    let missing: Vec<String> =
        (0..count).filter(|i| !merged.shards.iter().any(|s| s.index == *i)).map(|i| format!("{i}/{count}")).collect();
    if !missing.is_empty() {
        merged.errors.push(format!("shards not merged: {}", missing.join(" ")));
    }
    let mut order: Vec<usize> = (0..merged.divergences.len()).collect();
    order.sort_by_key(|&i| merged.divergences[i].first_case);
    merged.divergences = order.iter().map(|&i| merged.divergences[i].clone()).collect();
    let sources: Vec<PathBuf> = order.iter().map(|&i| sources[i].clone()).collect();
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for (d, dir) in merged.divergences.iter().zip(&sources) {
        for name in &d.files {
            let from = dir.join(name);
            let to = out.join(name);
            if from == to {
                continue;
            }
            let bytes = std::fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
            crate::persist::write_atomic(&to, &bytes).map_err(|e| format!("{}: {e}", to.display()))?;
        }
    }
    merged.write(out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(merged)
}

/// Whether two summaries report the same results: everything but the time taken.
pub fn same_results(a: &Summary, b: &Summary) -> bool {
    Summary { elapsed_secs: 0.0, ..a.clone() } == Summary { elapsed_secs: 0.0, ..b.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `draw` makes exactly the draws of `Sequential::new_tree`, and `case_runner` seeds
    /// case `i` as `TestRunner::run` seeds its first case: the case each mode runs is the
    /// case proptest shrinks.
    #[test]
    fn draw_gives_the_case_the_state_machine_gives() {
        for index in 0..60 {
            let drawn = draw(&mut case_runner(11, index), super::super::STEPS_MAX_DEFAULT, false).expect("drawn");
            let mut runner = TestRunner::new_with_rng(proptest_config(), rng_for(case_seed(11, index)));
            let strategy = ModelMachine::sequential_strategy(1..=super::super::STEPS_MAX_DEFAULT);
            let seen = std::cell::RefCell::new(None);
            let _ = runner.run(&strategy, |(state, transitions, _)| {
                *seen.borrow_mut() = Some(machine::case_of(&state, &transitions));
                Ok(())
            });
            assert_eq!(seen.into_inner().as_ref(), Some(&drawn.case()), "case {index}");
        }
    }

    /// The invariant mode checks the runs that drew a case: the same commands (the count)
    /// and the same result as `invariants::check_case` on the drawn case.
    #[test]
    fn checks_made_while_drawing_are_check_case() {
        for index in 0..40 {
            let mut checked = Checked::default();
            let drawn = draw_with(&mut case_runner(5, index), 24, false, Some(&mut checked)).expect("drawn");
            let case = drawn.case();
            let n = case.commands().len();
            let got = checked.finish(drawn.last.model);
            assert_eq!(got, invariants::check_case(&case), "case {index}");
            assert!(got.is_ok_and(|k| k > n), "case {index}: the setup, the steps and the final commands");
        }
    }

    #[test]
    fn case_0_is_the_seed_and_cases_differ() {
        assert_eq!(case_seed(42, 0), 42);
        let a = draw(&mut case_runner(42, 1), 24, false).unwrap().case();
        let b = draw(&mut case_runner(42, 2), 24, false).unwrap().case();
        assert_ne!(a, b);
        assert_eq!(a, draw(&mut case_runner(42, 1), 24, false).unwrap().case());
    }

    #[test]
    fn shards_split_the_indices() {
        let shard: Shard = "1/3".parse().unwrap();
        assert_eq!((0..shard.cases_of(10)).map(|p| shard.case_index(p)).collect::<Vec<_>>(), vec![1, 4, 7]);
        assert_eq!(Shard { index: 0, count: 3 }.cases_of(10), 4);
        assert_eq!(Shard { index: 2, count: 3 }.cases_of(10), 3);
        assert_eq!(Shard { index: 5, count: 6 }.cases_of(3), 0);
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
