//! readdir: a merged directory of 10k and 100k names spread over 10 lowers, 10% of them
//! whited out in the upper.
//!
//! `/big` is a directory in the upper and in each of the 10 lowers. Name `k` (of N) is a
//! regular file in one lower only, lower `(7k + k/10) mod 10`, so every lower holds N/10
//! of them; the upper holds a whiteout (char 0/0) for every name with `k mod 10 = 0`. The
//! listing has 0.9 N names. Baseline (`std_merge`): the same merge in plain `std`, one
//! `BTreeMap<name, (type, is_whiteout)>` per layer, merged top-down into a `BTreeMap`, then
//! the whiteouts filtered out.
//!
//! Run: `cargo bench --bench readdir`.

mod common;

use common::{label, ratio, size, DATA};
use criterion::{BenchmarkId, SamplingMode};
use ovlsim::layer::{FileType, Inode, Layer};
use ovlsim::{Op, Options, Outcome, Overlay};
use std::collections::BTreeMap;
use std::hint::black_box;

const LOWERS: usize = 10;

type StdDir = BTreeMap<String, (FileType, bool)>;

fn std_merge(layers: &[StdDir]) -> BTreeMap<String, FileType> {
    let mut seen: BTreeMap<String, (FileType, bool)> = BTreeMap::new();
    for l in layers {
        for (name, e) in l {
            if !seen.contains_key(name) {
                seen.insert(name.clone(), *e);
            }
        }
    }
    seen.into_iter().filter(|(_, (_, wh))| !wh).map(|(n, (t, _))| (n, t)).collect()
}

fn main() {
    let mut c = common::criterion();
    let sizes = [size(10_000, 1_000), size(100_000, 10_000)];
    let mut ratios = Vec::new();
    let mut group = c.benchmark_group("readdir");
    group.sampling_mode(SamplingMode::Flat);
    for &n in &sizes {
        let mut lowers: Vec<Layer> = (0..LOWERS).map(|_| Layer::new()).collect();
        let mut upper = Layer::new();
        upper.put("/big", Inode::dir(0o755));
        let mut std_layers: Vec<StdDir> = vec![StdDir::new(); LOWERS + 1];
        for l in &mut lowers {
            l.put("/big", Inode::dir(0o755));
        }
        for k in 0..n {
            let name = format!("e{k:07}");
            let which = (7 * k + k / 10) % LOWERS;
            lowers[which].put(&format!("/big/{name}"), Inode::file(DATA, 0o644));
            std_layers[1 + which].insert(name.clone(), (FileType::File, false));
            if k % 10 == 0 {
                upper.put(&format!("/big/{name}"), Inode::whiteout());
                std_layers[0].insert(name, (FileType::Char, true));
            }
        }
        let mut ov = Overlay::mount(lowers, Some(upper), Options::default()).expect("mount");
        let op = Op::Readdir { path: "/big".into() };
        match ov.apply(&op) {
            Outcome::Entries(e) => assert_eq!(e.len(), n - n / 10),
            other => panic!("readdir: {other:?}"),
        }
        assert_eq!(std_merge(&std_layers).len(), n - n / 10);
        let l = label(n);
        group.bench_function(BenchmarkId::new("ovlsim", &l), |b| b.iter(|| ov.apply(black_box(&op))));
        group.bench_function(BenchmarkId::new("std_merge", &l), |b| b.iter(|| std_merge(black_box(&std_layers))));
        ratios.push(ratio(
            format!("readdir of {l} names over {LOWERS} lowers: ovlsim vs std merge"),
            format!("readdir/ovlsim/{l}"),
            format!("readdir/std_merge/{l}"),
        ));
    }
    group.finish();
    let (a, b) = (label(sizes[0]), label(sizes[1]));
    ratios.push(ratio(
        format!("ovlsim: {b} vs {a} (linear means ~10)"),
        format!("readdir/ovlsim/{b}"),
        format!("readdir/ovlsim/{a}"),
    ));
    c.final_summary();
    common::print_ratios("readdir", &ratios);
    let rows: Vec<(&str, String, f64)> =
        sizes.iter().map(|&n| ("names listed", format!("readdir/ovlsim/{}", label(n)), (n - n / 10) as f64)).collect();
    common::print_rates("readdir", &rows);
}
