//! peer: the `vfs` crate's `OverlayFS` over `MemoryFS` layers against ovlsim, on the
//! operations `vfs` supports, in one criterion group: create, read, append, remove,
//! exists and read_dir.
//!
//! Both start from the same state: one lower holding `/data/f0000` ... `/data/f0999`
//! (16 bytes each) under an empty upper. The same call on each side:
//!
//! | operation | `vfs` (`FileSystem` trait on `OverlayFS`) | ovlsim (`Overlay::apply`) |
//! |---|---|---|
//! | create | `create_file("/data/new")` + `write_all(16 bytes)` | `Write { /data/new, Offset(0) }` |
//! | read | `open_file("/data/f0500")` + `read_to_end` | `Read { /data/f0500 }` |
//! | append | `append_file("/data/f0500")` + `write_all(16 bytes)` (copies up) | `Write { /data/f0500, Append }` (copies up) |
//! | remove | `remove_file("/data/f0500")` (whiteout) | `Unlink { /data/f0500 }` (whiteout) |
//! | exists | `exists("/data/f0500")` | `Stat { /data/f0500 }` |
//! | read_dir | `read_dir("/data")`, collected | `Readdir { /data }` |
//!
//! The operations that change the state run on a fresh state each iteration
//! (`iter_batched`, set-up untimed): for ovlsim an O(1) clone of the mounted overlay, for
//! `vfs` a new `OverlayFS` with a new empty `MemoryFS` upper over the same lower (`vfs`
//! never writes to a lower, and a `MemoryFS` clone shares its state, so it cannot be
//! snapshotted). Each ratio is ovlsim / `vfs`: below 1, ovlsim is faster.
//!
//! Run: `cargo bench --bench peer`.

mod common;

use common::{ratio, DATA};
use criterion::{BatchSize, BenchmarkId};
use ovlsim::layer::{Inode, Layer};
use ovlsim::ops::WriteAt;
use ovlsim::{Op, Options, Outcome, Overlay};
use std::hint::black_box;
use std::io::{Read, Write};
use vfs::{FileSystem, MemoryFS, OverlayFS, VfsPath};

const FILES: usize = 1000;
const TARGET: &str = "/data/f0500";

fn vfs_lower() -> VfsPath {
    let root: VfsPath = MemoryFS::new().into();
    let data = root.join("data").expect("join");
    data.create_dir().expect("mkdir");
    for i in 0..FILES {
        let mut f = data.join(format!("f{i:04}")).expect("join").create_file().expect("create");
        f.write_all(DATA).expect("write");
    }
    root
}

fn vfs_fresh(lower: &VfsPath) -> OverlayFS {
    OverlayFS::new(&[MemoryFS::new().into(), lower.clone()])
}

fn model() -> Overlay {
    let mut lower = Layer::new();
    for i in 0..FILES {
        lower.put(&format!("/data/f{i:04}"), Inode::file(DATA, 0o644));
    }
    Overlay::mount(vec![lower], Some(Layer::new()), Options::default()).expect("mount")
}

fn vfs_create(fs: &OverlayFS) {
    let mut f = fs.create_file("/data/new").expect("create");
    f.write_all(DATA).expect("write");
}

fn vfs_read(fs: &OverlayFS) -> Vec<u8> {
    let mut out = Vec::new();
    fs.open_file(TARGET).expect("open").read_to_end(&mut out).expect("read");
    out
}

fn vfs_append(fs: &OverlayFS) {
    let mut f = fs.append_file(TARGET).expect("append");
    f.write_all(DATA).expect("write");
}

fn vfs_read_dir(fs: &OverlayFS) -> Vec<String> {
    fs.read_dir("/data").expect("read_dir").collect()
}

fn main() {
    let mut c = common::criterion();
    let lower = vfs_lower();
    let ov = model();

    // Both sides see the same thing before and after each operation.
    {
        let fs = vfs_fresh(&lower);
        let mut o = ov.clone();
        assert_eq!(vfs_read(&fs), DATA);
        assert_eq!(o.apply(&Op::Read { path: TARGET.into() }), Outcome::Data(DATA.to_vec()));
        assert_eq!(vfs_read_dir(&fs).len(), FILES);
        match o.apply(&Op::Readdir { path: "/data".into() }) {
            Outcome::Entries(e) => assert_eq!(e.len(), FILES),
            other => panic!("readdir: {other:?}"),
        }
        vfs_append(&fs);
        assert_eq!(vfs_read(&fs).len(), 2 * DATA.len());
        let append = Op::Write { path: TARGET.into(), at: WriteAt::Append, data: DATA.to_vec() };
        assert_eq!(o.apply(&append), Outcome::Ok);
        vfs_create(&fs);
        assert!(fs.exists("/data/new").expect("exists"));
        fs.remove_file(TARGET).expect("remove");
        assert!(!fs.exists(TARGET).expect("exists"));
        assert_eq!(o.apply(&Op::Unlink { path: TARGET.into() }), Outcome::Ok);
        assert_eq!(o.apply(&Op::Stat { path: TARGET.into() }).errno(), Some(ovlsim::Errno::ENOENT));
    }

    let ops: Vec<(&str, Op)> = vec![
        ("create", Op::Write { path: "/data/new".into(), at: WriteAt::Offset(0), data: DATA.to_vec() }),
        ("read", Op::Read { path: TARGET.into() }),
        ("append", Op::Write { path: TARGET.into(), at: WriteAt::Append, data: DATA.to_vec() }),
        ("remove", Op::Unlink { path: TARGET.into() }),
        ("exists", Op::Stat { path: TARGET.into() }),
        ("read_dir", Op::Readdir { path: "/data".into() }),
    ];
    let mut ratios = Vec::new();
    let mut group = c.benchmark_group("peer");
    for (name, op) in &ops {
        let mutates = matches!(*name, "create" | "append" | "remove");
        let fs = vfs_fresh(&lower);
        if mutates {
            group.bench_function(BenchmarkId::new("vfs", name), |b| {
                b.iter_batched(
                    || vfs_fresh(&lower),
                    |fs| {
                        match *name {
                            "create" => vfs_create(&fs),
                            "append" => vfs_append(&fs),
                            _ => fs.remove_file(black_box(TARGET)).expect("remove"),
                        }
                        fs
                    },
                    BatchSize::SmallInput,
                )
            });
            group.bench_function(BenchmarkId::new("ovlsim", name), |b| {
                b.iter_batched(
                    || ov.clone(),
                    |mut o| {
                        o.apply(black_box(op));
                        o
                    },
                    BatchSize::SmallInput,
                )
            });
        } else {
            group.bench_function(BenchmarkId::new("vfs", name), |b| match *name {
                "read" => b.iter(|| vfs_read(black_box(&fs))),
                "exists" => b.iter(|| fs.exists(black_box(TARGET)).expect("exists")),
                _ => b.iter(|| vfs_read_dir(black_box(&fs))),
            });
            let mut o = ov.clone();
            group.bench_function(BenchmarkId::new("ovlsim", name), |b| b.iter(|| o.apply(black_box(op))));
        }
        ratios.push(ratio(format!("{name}: ovlsim vs vfs"), format!("peer/ovlsim/{name}"), format!("peer/vfs/{name}")));
    }
    group.finish();
    c.final_summary();
    common::print_ratios("peer", &ratios);
}
