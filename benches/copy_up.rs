//! copy_up: the first write to a file 8 directories deep (`/a/b/c/d/e/f/g/h/file`) in a
//! lower layer that also holds 1k, 100k or 1M other files, under an empty upper.
//!
//! Each iteration writes to its own clone of the mounted overlay (`iter_batched`, the O(1)
//! clone made and dropped outside the timing), so every timed write is a real first write:
//! 8 directory copy-ups, then the file's. It must be O(depth), not O(tree): the ratio of
//! 1M to 1k should be near 1. Baseline (`rewrite`): the same write once the file has been
//! copied up already, to show what the copy-up itself costs.
//!
//! Run: `cargo bench --bench copy_up`.

mod common;

use common::{big_layer, label, ratio, size, DATA};
use criterion::{BatchSize, BenchmarkId};
use ovlsim::layer::{Inode, Layer};
use ovlsim::ops::WriteAt;
use ovlsim::{Event, Op, Options, Outcome, Overlay};
use std::hint::black_box;

const TARGET: &str = "/a/b/c/d/e/f/g/h/file";

fn main() {
    let mut c = common::criterion();
    let sizes = [1_000, size(100_000, 5_000), size(1_000_000, 20_000)];
    let write = Op::Write { path: TARGET.into(), at: WriteAt::Offset(0), data: b"fedcba9876543210".to_vec() };
    let mut ratios = Vec::new();
    let mut group = c.benchmark_group("copy_up");
    for &n in &sizes {
        let mut lower = big_layer(n);
        lower.put(TARGET, Inode::file(DATA, 0o644));
        let ov = Overlay::mount(vec![lower], Some(Layer::new()), Options::default()).expect("mount");
        let mut copied = ov.clone();
        assert_eq!(copied.apply(&write), Outcome::Ok);
        let events = copied.take_events();
        assert_eq!(
            events.iter().filter(|e| matches!(e, Event::CopyUp { .. })).count(),
            9,
            "8 directories and the file are copied up: {events:?}"
        );
        let l = label(n);
        group.bench_function(BenchmarkId::new("first_write", &l), |b| {
            b.iter_batched(
                || ov.clone(),
                |mut o| {
                    o.apply(black_box(&write));
                    o
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("rewrite", &l), |b| {
            b.iter_batched(
                || copied.clone(),
                |mut o| {
                    o.apply(black_box(&write));
                    o
                },
                BatchSize::SmallInput,
            )
        });
        ratios.push(ratio(
            format!("{l}: first write (9 copy-ups) vs the same write after copy-up"),
            format!("copy_up/first_write/{l}"),
            format!("copy_up/rewrite/{l}"),
        ));
    }
    group.finish();
    let first = label(sizes[0]);
    for &n in &sizes[1..] {
        let l = label(n);
        ratios.push(ratio(
            format!("first write: {l} vs {first} (O(depth) means ~1)"),
            format!("copy_up/first_write/{l}"),
            format!("copy_up/first_write/{first}"),
        ));
    }
    c.final_summary();
    common::print_ratios("copy_up", &ratios);
}
