//! lookup_depth: `stat` of a path of depth 1, 4 and 16 through 1, 10, 100 and 500 lowers
//! (under an empty upper), with the last name only in the bottom lower (the worst case)
//! or only in the top one.
//!
//! Two layouts of the directories on the way:
//! - `merged`: every lower has the directory chain `/d1/.../d15` (as every layer of a
//!   container image has `/usr/lib`), so every component is a merged directory and the
//!   lookup visits every lower at every level: depth × lowers probes;
//! - `sparse`: the chain `/s1/.../s15` is only in the top and the bottom lower, so only the
//!   first component is probed in every lower (depth 4 and 16 only: at depth 1 the two
//!   layouts are the same path).
//!
//! Each directory also holds four filler files per layer, so the maps are not trivially
//! small. Baseline (`std_flat_probe`): what a naive union does, one
//! `HashMap<full path, (kind, is_whiteout)>` per layer, probed top-down for the whole path.
//!
//! Each stat is measured twice: warm (the path was looked up before, so the lower half of
//! each component is answered by the lookup cache, `ovlsim::dcache`, as the kernel answers
//! from its dentry cache) and cold (every iteration starts from an empty cache, as the
//! first lookup after a mount: every layer is probed).
//!
//! Target: < 10 µs through 500 lowers. Run: `cargo bench --bench lookup_depth`.

mod common;

use common::{ratio, DATA};
use criterion::{BatchSize, BenchmarkId};
use ovlsim::layer::{FileType, Inode, Layer};
use ovlsim::{CachePolicy, Op, Options, Outcome, Overlay};
use std::collections::HashMap;
use std::hint::black_box;

const DEPTHS: [usize; 3] = [1, 4, 16];
const FILLERS: usize = 4;

/// `/{prefix}1/.../{prefix}{depth-1}/{name}`.
fn path(prefix: &str, depth: usize, name: &str) -> String {
    let mut p = String::new();
    for i in 1..depth {
        p.push_str(&format!("/{prefix}{i}"));
    }
    p.push('/');
    p.push_str(name);
    p
}

/// Lower `i` of `count`.
fn lower(i: usize, count: usize) -> Layer {
    let mut l = Layer::new();
    let top = i == 0;
    let bottom = i + 1 == count;
    for depth in 1..=16 {
        let dir_prefix = path("d", depth, "");
        for k in 0..FILLERS {
            l.put(&format!("{dir_prefix}fill_{i}_{k}"), Inode::file(DATA, 0o644));
        }
        if top || bottom {
            let sparse_dir = path("s", depth, "");
            for k in 0..FILLERS {
                l.put(&format!("{sparse_dir}fill_{i}_{k}"), Inode::file(DATA, 0o644));
            }
        }
    }
    for &depth in &DEPTHS {
        for prefix in ["d", "s"] {
            if top {
                l.put(&path(prefix, depth, "top_t"), Inode::file(DATA, 0o644));
            }
            if bottom {
                l.put(&path(prefix, depth, "bottom_t"), Inode::file(DATA, 0o644));
            }
        }
    }
    l
}

/// The baseline's view of a layer: every full path, with its kind and whether it is a
/// whiteout.
type Flat = HashMap<String, (FileType, bool)>;

fn flat(l: &Layer) -> Flat {
    l.walk_all()
        .into_iter()
        .map(|(p, ino)| {
            let inode = l.get(ino);
            let wh = matches!(inode.kind, ovlsim::layer::NodeKind::Char(0, 0));
            (p, (inode.file_type(), wh))
        })
        .collect()
}

fn flat_probe(layers: &[Flat], path: &str) -> Option<FileType> {
    for l in layers {
        if let Some(&(kind, wh)) = l.get(path) {
            return if wh { None } else { Some(kind) };
        }
    }
    None
}

fn main() {
    let mut c = common::criterion();
    let counts = [1, 10, 100, 500];
    let mut ratios = Vec::new();
    let mut group = c.benchmark_group("lookup_depth");
    for &count in &counts {
        let lowers: Vec<Layer> = (0..count).map(|i| lower(i, count)).collect();
        let mut flats: Vec<Flat> = vec![Flat::new()];
        flats.extend(lowers.iter().map(flat));
        let mut ov = Overlay::mount(lowers, Some(Layer::new()), Options::default()).expect("mount");
        for &depth in &DEPTHS {
            for pos in ["bottom", "top"] {
                let name = format!("{pos}_t");
                let param = format!("depth{depth}_lowers{count}");
                let std_id = format!("std_flat_probe_{pos}");
                let p = path("d", depth, &name);
                assert!(flat_probe(&flats, &p).is_some(), "{p}");
                group.bench_function(BenchmarkId::new(&std_id, &param), |b| {
                    b.iter(|| flat_probe(black_box(&flats), black_box(&p)))
                });
                let layouts: &[&str] = if depth == 1 { &["merged"] } else { &["merged", "sparse"] };
                for &layout in layouts {
                    let prefix = if layout == "merged" { "d" } else { "s" };
                    let op = Op::Stat { path: path(prefix, depth, &name) };
                    let first = ov.apply(&op);
                    assert!(matches!(first, Outcome::Stat(_)), "{op:?}");
                    let mut uncached = ov.clone();
                    uncached.set_cache_policy(CachePolicy::Off);
                    assert_eq!(uncached.apply(&op), first, "the lookup cache changed the answer to {op:?}");
                    // Warm: the path was looked up before (the call above), as a path a
                    // program uses again is in the kernel's dentry cache.
                    let id = format!("ovlsim_{layout}_{pos}");
                    group.bench_function(BenchmarkId::new(&id, &param), |b| b.iter(|| ov.apply(black_box(&op))));
                    // Cold: every iteration starts from an empty lookup cache, as the first
                    // lookup after a mount or after `drop_caches`.
                    let cold_id = format!("ovlsim_cold_{layout}_{pos}");
                    group.bench_function(BenchmarkId::new(&cold_id, &param), |b| {
                        b.iter_batched(
                            || {
                                let mut cold = ov.clone();
                                cold.drop_caches();
                                cold
                            },
                            |mut cold| {
                                let out = cold.apply(black_box(&op));
                                (cold, out)
                            },
                            BatchSize::SmallInput,
                        )
                    });
                    for (kind, id) in [("warm", &id), ("cold", &cold_id)] {
                        ratios.push(ratio(
                            format!(
                                "stat depth {depth}, {count} lowers, name in {pos}, {layout}, {kind}: ovlsim vs std flat probe"
                            ),
                            format!("lookup_depth/{id}/{param}"),
                            format!("lookup_depth/{std_id}/{param}"),
                        ));
                    }
                }
            }
        }
    }
    group.finish();
    c.final_summary();
    common::print_ratios("lookup_depth", &ratios);
    if !common::quick() {
        println!("## lookup_depth: against the 10 µs target through 500 lowers\n");
        println!("| id | median | < 10 µs |");
        println!("|---|---:|---|");
        for cache in ["", "cold_"] {
            for layout in ["merged", "sparse"] {
                for pos in ["bottom", "top"] {
                    for &depth in &DEPTHS {
                        if depth == 1 && layout == "sparse" {
                            continue;
                        }
                        let id = format!("lookup_depth/ovlsim_{cache}{layout}_{pos}/depth{depth}_lowers500");
                        if let Some(ns) = common::median_ns(&id) {
                            let ok = if ns < 10_000.0 { "met" } else { "MISSED" };
                            println!("| `{id}` | {} | {ok} |", common::human(ns));
                        }
                    }
                }
            }
        }
        println!();
    }
}
