//! What every bench shares: quick mode, the criterion settings, the fixtures, and the ratio
//! summary printed after a real run.
//!
//! Quick mode (`cargo test --benches`, `cargo bench -- --test`, `--list`, or
//! `OVLSIM_BENCH_QUICK=1`) shrinks the big fixtures so that the smoke run takes seconds:
//! criterion then runs each routine once and measures nothing.
#![allow(dead_code)]

use criterion::Criterion;
use ovlsim::layer::{Inode, Layer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// Whether the big fixtures are shrunk: criterion is not measuring (no `--bench`, or
/// `--test`, or `--list`), or `OVLSIM_BENCH_QUICK` is set to something other than `0`.
pub fn quick() -> bool {
    static QUICK: OnceLock<bool> = OnceLock::new();
    *QUICK.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        let env = std::env::var("OVLSIM_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        env || !has("--bench") || has("--test") || has("--list")
    })
}

/// `full` when measuring, `small` in quick mode.
pub fn size(full: usize, small: usize) -> usize {
    if quick() {
        small
    } else {
        full
    }
}

/// The settings of every bench: modest samples, so that the whole `cargo bench` run stays
/// within a few minutes on a 2-core machine. Command-line flags still override them.
pub fn criterion() -> Criterion {
    start_time();
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .configure_from_args()
}

fn start_time() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

/// A size as the tables write it: 1k, 100k, 1M.
pub fn label(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// The payload of every fixture file.
pub const DATA: &[u8] = b"0123456789abcdef";

/// The path of entry `i` of a big fixture: 1,000 files per directory.
pub fn big_path(i: usize) -> String {
    format!("/d{:04}/f{:04}", i / 1000, i % 1000)
}

/// A layer of `n` regular files (plus one directory per 1,000 of them), each holding
/// [`DATA`], at [`big_path`]`(0..n)`.
pub fn big_layer(n: usize) -> Layer {
    let mut l = Layer::new();
    for i in 0..n {
        l.put(&big_path(i), Inode::file(DATA, 0o644));
    }
    l
}

/// The same files in plain `std`: full path to data.
pub fn big_std(n: usize) -> BTreeMap<String, Vec<u8>> {
    (0..n).map(|i| (big_path(i), DATA.to_vec())).collect()
}

// ---------------------------------------------------------------------------------------
// The ratio summary.

/// One line of the summary: `subject` against `baseline`, both criterion ids
/// (`group/function/parameter`).
pub struct Ratio {
    /// What the ratio says, e.g. "clone, ovlsim vs std deep clone".
    pub what: String,
    /// The measured id.
    pub subject: String,
    /// The baseline id.
    pub baseline: String,
}

/// A ratio line.
pub fn ratio(what: impl Into<String>, subject: impl Into<String>, baseline: impl Into<String>) -> Ratio {
    Ratio { what: what.into(), subject: subject.into(), baseline: baseline.into() }
}

fn criterion_home() -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(h);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("criterion");
    }
    // Benches run with the package root as the working directory.
    PathBuf::from("target/criterion")
}

/// The median of `id` measured by this process, in nanoseconds, from criterion's
/// `new/estimates.json`. `None` when it was not measured in this run (filtered out, quick
/// mode), so that a stale file from an earlier run is never read.
pub fn median_ns(id: &str) -> Option<f64> {
    let dir = criterion_home().join(id).join("new");
    let file = dir.join("estimates.json");
    let meta = std::fs::metadata(&file).ok()?;
    if meta.modified().ok()? < start_time() {
        return None;
    }
    let text = std::fs::read_to_string(&file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// A duration in nanoseconds, as a person reads it.
pub fn human(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// A number with about three significant digits.
pub fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else if x >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

/// A ratio, and how it reads: "N× faster" or "N× slower".
pub fn show_ratio(r: f64) -> String {
    if r < 1.0 {
        format!("{} ({}× faster)", num(r), num(1.0 / r))
    } else {
        format!("{} ({}× slower)", num(r), num(r))
    }
}

/// Prints the ratios as a markdown table (subject median / baseline median: below 1 the
/// subject is faster). Prints nothing in quick mode, where criterion measures nothing.
pub fn print_ratios(title: &str, ratios: &[Ratio]) {
    if quick() {
        return;
    }
    println!("\n## {title}: ratios (median of subject / median of baseline; < 1 means the subject is faster)\n");
    println!("| ratio | subject | median | baseline | median | subject/baseline |");
    println!("|---|---|---:|---|---:|---:|");
    for r in ratios {
        match (median_ns(&r.subject), median_ns(&r.baseline)) {
            (Some(s), Some(b)) => println!(
                "| {} | `{}` | {} | `{}` | {} | {} |",
                r.what,
                r.subject,
                human(s),
                r.baseline,
                human(b),
                show_ratio(s / b)
            ),
            _ => println!("| {} | `{}` | - | `{}` | - | not measured in this run |", r.what, r.subject, r.baseline),
        }
    }
    println!();
}

/// Prints the medians of `ids` as rates: `per` things per run of the routine.
pub fn print_rates(title: &str, rows: &[(&str, String, f64)]) {
    if quick() {
        return;
    }
    println!("\n## {title}: rates\n");
    println!("| what | id | median per iteration | per second |");
    println!("|---|---|---:|---:|");
    for (what, id, per) in rows {
        match median_ns(id) {
            Some(ns) => println!("| {what} | `{id}` | {} | {:.1} |", human(ns), per * 1e9 / ns),
            None => println!("| {what} | `{id}` | - | not measured in this run |"),
        }
    }
    println!();
}
