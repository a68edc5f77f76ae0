//! file_size: what a large sparse file costs the model. The same steps on a lower file of
//! 16 bytes (the baseline) and on one of 10^12 bytes holding 16 bytes at its end: the first
//! write (a copy-up, then a write at 5 * 10^11), a truncate to 2 * 10^12, and a read (the
//! big file answers its digest). Cost follows the bytes held, not the length: the ratios
//! should be near 1.
//!
//! Run: `cargo bench --bench file_size`.

mod common;

use common::ratio;
use criterion::{BatchSize, BenchmarkId};
use ovlsim::layer::{FileData, Inode, Layer, NodeKind};
use ovlsim::ops::WriteAt;
use ovlsim::{Op, Options, Outcome, Overlay};
use std::hint::black_box;

const BIG: u64 = 1_000_000_000_000;

fn mounted(data: FileData) -> Overlay {
    let mut lower = Layer::new();
    lower.put("/f", Inode::new(NodeKind::File(data), 0o644));
    Overlay::mount(vec![lower], Some(Layer::new()), Options::default()).expect("mount")
}

fn main() {
    let mut c = common::criterion();
    let mut sparse = FileData::hole(BIG - 16);
    sparse.write(BIG - 16, b"fedcba9876543210");
    let cases = [("16B", FileData::from_bytes(b"fedcba9876543210")), ("1e12B", sparse)];
    let steps = |len: u64| {
        vec![
            Op::Write { path: "/f".into(), at: WriteAt::Offset(len / 2), data: b"0123456789abcdef".to_vec() },
            Op::Truncate { path: "/f".into(), len: 2 * len },
            Op::Read { path: "/f".into() },
        ]
    };
    let mut group = c.benchmark_group("file_size");
    for (label, data) in &cases {
        let ov = mounted(data.clone());
        let ops = steps(data.len());
        let mut check = ov.clone();
        let outcomes: Vec<Outcome> = ops.iter().map(|op| check.apply(op)).collect();
        assert_eq!(outcomes[..2], [Outcome::Ok, Outcome::Ok], "{label}");
        assert!(matches!(outcomes[2], Outcome::Data(_) | Outcome::Digest(_)), "{label}: {:?}", outcomes[2]);
        group.bench_function(BenchmarkId::new("write_truncate_read", label), |b| {
            b.iter_batched(
                || ov.clone(),
                |mut o| {
                    for op in &ops {
                        black_box(o.apply(black_box(op)));
                    }
                    o
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    c.final_summary();
    let ratios = [ratio(
        "copy-up, write, truncate, read: a 10^12-byte sparse file vs a 16-byte one (~1)",
        "file_size/write_truncate_read/1e12B",
        "file_size/write_truncate_read/16B",
    )];
    common::print_ratios("file_size", &ratios);
}
