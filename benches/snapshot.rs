//! snapshot: `Overlay::clone`, and a clone followed by one write, at 1k, 100k and 1M entries.
//!
//! The state is a mounted overlay whose upper layer holds the N entries (the lowers sit
//! behind an `Arc` and never change, so the upper is the only part a clone could have to
//! copy: the worst case), over one small lower. Baseline: the same state in plain `std`
//! collections, one `BTreeMap<String, Vec<u8>>` per layer, deep-cloned.
//!
//! Every fixture is built once per size, outside the timed loop. The clones are dropped
//! outside the timed loop too (`iter_with_large_drop`), for ovlsim and the baseline alike.
//!
//! Run: `cargo bench --bench snapshot`.

mod common;

use common::{big_layer, big_path, big_std, label, ratio, size, DATA};
use criterion::{BenchmarkId, SamplingMode};
use ovlsim::layer::{Inode, Layer};
use ovlsim::ops::WriteAt;
use ovlsim::{Op, Options, Outcome, Overlay};
use std::collections::BTreeMap;
use std::hint::black_box;

/// The `std` baseline: one map per layer, upper first.
#[derive(Clone)]
struct StdState {
    upper: BTreeMap<String, Vec<u8>>,
    lowers: Vec<BTreeMap<String, Vec<u8>>>,
}

fn small_lower() -> Layer {
    let mut l = Layer::new();
    for i in 0..16 {
        l.put(&format!("/lower/f{i}"), Inode::file(DATA, 0o644));
    }
    l
}

fn main() {
    let mut c = common::criterion();
    let sizes = [1_000, size(100_000, 10_000), size(1_000_000, 20_000)];
    let mut ratios = Vec::new();
    let mut group = c.benchmark_group("snapshot");
    // The 1M-entry std clone takes about a tenth of a second: flat sampling keeps the
    // iteration count per sample small.
    group.sampling_mode(SamplingMode::Flat);
    for &n in &sizes {
        let ov = Overlay::mount(vec![small_lower()], Some(big_layer(n)), Options::default()).expect("mount");
        let st = StdState {
            upper: big_std(n),
            lowers: vec![(0..16).map(|i| (format!("/lower/f{i}"), DATA.to_vec())).collect()],
        };
        let target = big_path(n / 2);
        let write = Op::Write { path: target.clone(), at: WriteAt::Offset(0), data: b"fedcba9876543210".to_vec() };
        // The write must really happen, on the model and on the baseline.
        assert_eq!(ov.clone().apply(&write), Outcome::Ok);
        assert!(st.upper.contains_key(&target) && st.lowers[0].len() == 16);
        let l = label(n);

        group.bench_function(BenchmarkId::new("ovlsim_clone", &l), |b| {
            b.iter_with_large_drop(|| black_box(&ov).clone())
        });
        group.bench_function(BenchmarkId::new("std_clone", &l), |b| b.iter_with_large_drop(|| black_box(&st).clone()));
        group.bench_function(BenchmarkId::new("ovlsim_clone_write", &l), |b| {
            b.iter_with_large_drop(|| {
                let mut o = black_box(&ov).clone();
                let r = o.apply(black_box(&write));
                debug_assert_eq!(r, Outcome::Ok);
                o
            })
        });
        group.bench_function(BenchmarkId::new("std_clone_write", &l), |b| {
            b.iter_with_large_drop(|| {
                let mut s = black_box(&st).clone();
                if let Some(d) = s.upper.get_mut(black_box(&target)) {
                    d.clear();
                    d.extend_from_slice(b"fedcba9876543210");
                }
                s
            })
        });
        ratios.push(ratio(
            format!("clone at {l}: ovlsim vs std deep clone"),
            format!("snapshot/ovlsim_clone/{l}"),
            format!("snapshot/std_clone/{l}"),
        ));
        ratios.push(ratio(
            format!("clone + 1 write at {l}: ovlsim vs std"),
            format!("snapshot/ovlsim_clone_write/{l}"),
            format!("snapshot/std_clone_write/{l}"),
        ));
    }
    group.finish();
    let first = label(sizes[0]);
    for &n in &sizes[1..] {
        let l = label(n);
        for f in ["ovlsim_clone", "ovlsim_clone_write", "std_clone"] {
            ratios.push(ratio(
                format!("{f}: {l} vs {first} (flat means ~1)"),
                format!("snapshot/{f}/{l}"),
                format!("snapshot/{f}/{first}"),
            ));
        }
    }
    c.final_summary();
    common::print_ratios("snapshot", &ratios);
}
