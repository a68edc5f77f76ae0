//! profile_model: the model side of `benches/model_vs_kernel.rs`, without criterion, for a
//! profiler (callgrind counts instructions; `--toggle-collect` on `run_scenarios` or
//! `run_cases` leaves loading and case generation out).
//!
//! Run: `cargo run --release --example profile_model -- [scenarios|cases|both|by-command]
//! [rounds]`; `by-command` times the cases' commands one by one and prints, for each kind
//! of command, its time per case and its allocations (counted by this example's global
//! allocator, which passes every call on to the system's; `profile_model_mimalloc`, same
//! arguments, passes them to mimalloc, the `ovlsim` binary's heap). Under callgrind: `valgrind --tool=callgrind
//! --toggle-collect='profile_model::run_*' target/release/examples/profile_model both 3`.

use ovlsim::backend::{Backend, BackendError, Command, ModelBackend};
use ovlsim::fuzz::gen;
use ovlsim::scenario::{self, Scenario};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

/// An allocator counting the allocations made (for `by-command`), passing every call on to
/// `A`: the system's here, mimalloc in `profile_model_mimalloc`.
pub struct Counting<A>(pub A);

static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: every call is passed on to `A` unchanged.
unsafe impl<A: std::alloc::GlobalAlloc> std::alloc::GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract is `A`'s.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract is `A`'s.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: the caller's contract is `A`'s.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Operations per generated case, as in the bench.
const CASE_OPS: usize = 20;

/// Every `spec/**/*.yaml` that loads.
fn scenarios() -> Vec<Scenario> {
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec");
    scenario::find_files(&[spec]).expect("list spec/").files.iter().filter_map(|p| scenario::load(p).ok()).collect()
}

/// Replays every scenario `rounds` times on a fresh model; the number of failed scenarios.
#[inline(never)]
fn run_scenarios(suite: &[Scenario], rounds: usize) -> usize {
    let mut failed = 0;
    for _ in 0..rounds {
        for s in suite {
            failed += usize::from(!black_box(scenario::run(s, &mut ModelBackend::new())).passed());
        }
    }
    failed
}

/// Runs every case `rounds` times on a fresh model; the number of harness failures.
#[inline(never)]
fn run_cases(cases: &[Vec<Command>], rounds: usize) -> usize {
    let mut failed = 0;
    for _ in 0..rounds {
        for cmds in cases {
            let mut b = ModelBackend::new();
            for c in cmds {
                if let Err(BackendError::Failed(_)) = black_box(b.exec(c)) {
                    failed += 1;
                }
            }
        }
    }
    failed
}

/// The kind of a command, as the breakdown groups it: `Op` by its syscall name.
fn kind(c: &Command) -> String {
    match c {
        Command::Op(op) => format!("op {}", op.name()),
        other => other.name().to_owned(),
    }
}

/// Runs every case `rounds` times, timing each command; prints, for each kind of command,
/// the time it takes per case and per command.
fn by_command(cases: &[Vec<Command>], rounds: usize) {
    let mut time: BTreeMap<String, (f64, usize, u64)> = BTreeMap::new();
    for _ in 0..rounds {
        for cmds in cases {
            let mut b = ModelBackend::new();
            for c in cmds {
                let (t, a) = (Instant::now(), allocations());
                let reply = black_box(b.exec(c));
                let (spent, made) = (t.elapsed().as_secs_f64(), allocations() - a);
                drop(reply);
                let slot = time.entry(kind(c)).or_default();
                slot.0 += spent;
                slot.1 += 1;
                slot.2 += made;
            }
        }
    }
    let runs = (rounds * cases.len()).max(1) as f64;
    println!("{:<16} {:>12} {:>10} {:>12} {:>12}", "command", "µs per case", "per case", "ns each", "allocs each");
    for (k, (spent, count, made)) in &time {
        println!(
            "{k:<16} {:>12.2} {:>10.2} {:>12.0} {:>12.1}",
            spent / runs * 1e6,
            *count as f64 / runs,
            spent / *count as f64 * 1e9,
            *made as f64 / *count as f64
        );
    }
    let total: f64 = time.values().map(|(s, _, _)| s).sum();
    println!("{:<16} {:>12.2}", "total", total / runs * 1e6);
}

pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("both");
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(1);
    if what == "scenarios" || what == "both" {
        let suite = scenarios();
        let t = Instant::now();
        let failed = run_scenarios(&suite, rounds);
        let per = t.elapsed().as_secs_f64() * 1e6 / (rounds * suite.len()).max(1) as f64;
        println!("scenarios: {} x {rounds}, {failed} failed, {per:.1} µs per scenario", suite.len());
    }
    let cases =
        || -> Vec<Vec<Command>> { (0u64..).filter_map(|seed| gen::seeded_commands(seed, CASE_OPS)).take(20).collect() };
    if what == "by-command" {
        by_command(&cases(), rounds);
    }
    if what == "cases" || what == "both" {
        let cases = cases();
        let t = Instant::now();
        let failed = run_cases(&cases, rounds);
        let per = t.elapsed().as_secs_f64() * 1e6 / (rounds * cases.len()).max(1) as f64;
        println!("cases: {} x {rounds}, {failed} harness failures, {per:.1} µs per case", cases.len());
    }
}
