//! memory: resident memory (`VmRSS` in `/proc/self/status`) of a 1M-entry layer, in bytes
//! per entry, and the extra memory of 1,000 snapshots that each differ from the one before
//! by one write. Not a criterion bench: it measures bytes, not time.
//!
//! Each figure is measured in a fresh child process (this binary again, with
//! `OVLSIM_MEM_PHASE` set), so that memory freed by one phase and kept by the allocator
//! cannot hide the growth of the next. The phases:
//! - `layer`: a [`Layer`] of N files (1,000 per directory), built with `Layer::put`;
//! - `std`: the same files as a `BTreeMap<String, Vec<u8>>` (full path to data), the
//!   baseline;
//! - `snapshots_lower`: an overlay over that N-entry lower, then 1,000 snapshots, each a
//!   clone of the one before plus one write to a different lower file (a copy-up of the
//!   file and its directory);
//! - `snapshots_upper`: the N entries in the upper, then 1,000 snapshots, each a clone of
//!   the one before plus one overwrite of a different upper file (the worst case for
//!   sharing: every write path-copies the big inode table);
//! - `std_snapshots`: the baseline's snapshot, a deep clone plus one write, 10 times (a
//!   thousand would need about 100 GiB at 1M: the per-snapshot figure is multiplied).
//!
//! Quick mode (`cargo test --benches`): N = 20k and 100 snapshots.
//!
//! Run: `cargo bench --bench memory`.

mod common;

use common::{big_layer, big_path, big_std, label, quick, DATA};
use ovlsim::layer::{Inode, Layer};
use ovlsim::ops::WriteAt;
use ovlsim::{Op, Options, Outcome, Overlay};
use std::hint::black_box;
use std::process::Command;

const PHASE_ENV: &str = "OVLSIM_MEM_PHASE";

/// `VmRSS` in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).expect("VmRSS value").parse().expect("VmRSS number");
    kb * 1024
}

fn sizes() -> (usize, usize) {
    if quick() {
        (20_000, 100)
    } else {
        (1_000_000, 1_000)
    }
}

fn write(path: String) -> Op {
    Op::Write { path, at: WriteAt::Offset(0), data: b"fedcba9876543210".to_vec() }
}

fn small_lower() -> Layer {
    let mut l = Layer::new();
    l.put("/lower/f", Inode::file(DATA, 0o644));
    l
}

/// The RSS growth of `snaps` snapshots of `ov`, each a clone of the one before plus one
/// write to a different file of the `n` big ones; all are kept alive until measured.
fn snapshot_growth(ov: Overlay, n: usize, snaps: usize) -> u64 {
    let mut kept = Vec::with_capacity(snaps + 1);
    kept.push(ov);
    let before = rss();
    for i in 0..snaps {
        let mut next = kept.last().expect("first").clone();
        assert_eq!(next.apply(&write(big_path(i * (n / snaps)))), Outcome::Ok);
        kept.push(next);
    }
    let after = rss();
    black_box(&kept);
    after.saturating_sub(before)
}

/// Runs one phase and prints `bytes count` on stdout: the RSS growth and what it is for.
fn phase(name: &str) {
    let (n, snaps) = sizes();
    let (bytes, count) = match name {
        "layer" => {
            let before = rss();
            let l = big_layer(n);
            let after = rss();
            black_box(&l);
            (after - before, n)
        }
        "std" => {
            let before = rss();
            let m = big_std(n);
            let after = rss();
            black_box(&m);
            (after - before, n)
        }
        "snapshots_lower" => {
            let ov = Overlay::mount(vec![big_layer(n)], Some(Layer::new()), Options::default()).expect("mount");
            (snapshot_growth(ov, n, snaps), snaps)
        }
        "snapshots_upper" => {
            let ov = Overlay::mount(vec![small_lower()], Some(big_layer(n)), Options::default()).expect("mount");
            (snapshot_growth(ov, n, snaps), snaps)
        }
        "std_snapshots" => {
            let m = big_std(n);
            let copies = 10;
            let mut v = Vec::with_capacity(copies);
            let before = rss();
            for i in 0..copies {
                let mut c = m.clone();
                c.insert(big_path(i), b"fedcba9876543210".to_vec());
                v.push(c);
            }
            let after = rss();
            black_box(&v);
            (after - before, copies)
        }
        other => panic!("unknown phase {other}"),
    };
    println!("{bytes} {count}");
}

/// Runs `name` in a child process and returns (bytes, count).
fn child(name: &str) -> (u64, usize) {
    let exe = std::env::current_exe().expect("current exe");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = Command::new(exe).args(&args).env(PHASE_ENV, name).output().expect("run the phase");
    assert!(out.status.success(), "phase {name} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let line = text.lines().last().expect("a result line");
    let mut it = line.split_whitespace();
    let bytes = it.next().expect("bytes").parse().expect("bytes number");
    let count = it.next().expect("count").parse().expect("count number");
    (bytes, count)
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1024.0 * 1024.0))
}

fn main() {
    if let Ok(name) = std::env::var(PHASE_ENV) {
        phase(&name);
        return;
    }
    let (n, snaps) = sizes();
    let (layer, _) = child("layer");
    let (std, _) = child("std");
    let (lower_snaps, _) = child("snapshots_lower");
    let (upper_snaps, _) = child("snapshots_upper");
    let (std_snaps, copies) = child("std_snapshots");
    let nl = label(n);
    println!("\n## memory (VmRSS growth; N = {nl} files in directories of 1,000)\n");
    println!("| what | resident | per unit | vs std baseline |");
    println!("|---|---:|---:|---:|");
    let per_entry = |b: u64| b as f64 / n as f64;
    println!(
        "| `Layer` of {nl} files | {} | {:.0} B/entry | {:.2}× |",
        mib(layer as f64),
        per_entry(layer),
        layer as f64 / std as f64
    );
    println!(
        "| baseline: `BTreeMap<String, Vec<u8>>` of {nl} files | {} | {:.0} B/entry | 1× |",
        mib(std as f64),
        per_entry(std)
    );
    let std_per_snap = std_snaps as f64 / copies as f64;
    println!(
        "| {snaps} snapshots, one copy-up write each ({nl} lower) | {} | {:.0} B/snapshot | {:.2e}× |",
        mib(lower_snaps as f64),
        lower_snaps as f64 / snaps as f64,
        (lower_snaps as f64 / snaps as f64) / std_per_snap
    );
    println!(
        "| {snaps} snapshots, one overwrite each ({nl} upper) | {} | {:.0} B/snapshot | {:.2e}× |",
        mib(upper_snaps as f64),
        upper_snaps as f64 / snaps as f64,
        (upper_snaps as f64 / snaps as f64) / std_per_snap
    );
    println!(
        "| baseline: {snaps} deep clones + one write (measured {copies}, scaled) | {} | {:.0} B/snapshot | 1× |",
        mib(std_per_snap * snaps as f64),
        std_per_snap
    );
    println!();
}
