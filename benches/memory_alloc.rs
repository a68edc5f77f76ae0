//! memory_alloc: heap bytes per entry of a 1M-file layer, counted by a counting global
//! allocator, beside a flat `BTreeMap<String, Vec<u8>>` and the `vfs` crate's `MemoryFS`
//! holding the same files. Not a criterion bench: it measures bytes, not time.
//!
//! The allocator counts the bytes each allocation asks for, live (allocated minus freed),
//! so each figure is exact and independent of what the system allocator keeps or rounds
//! up; `benches/memory.rs` measures the resident set instead (`VmRSS`), which includes
//! that overhead. The three structures are built one after the other in this process and
//! each is measured as the live heap it added, then dropped; what a builder allocates and
//! frees on the way (temporary path strings) does not count. The files: N regular files of
//! 16 bytes ([`common::DATA`]), 1,000 per directory, at `/dNNNN/fNNNN`:
//! - `Layer`: [`common::big_layer`], built with `Layer::put` (the directories are made on
//!   the way);
//! - `BTreeMap<String, Vec<u8>>`: [`common::big_std`], full path to data (no directories);
//! - `vfs::MemoryFS`: `create_dir` for each directory, then `create_file` and `write_all`.
//!
//! Quick mode (`cargo test --benches`): N = 20k.
//!
//! Run: `cargo bench --bench memory_alloc`.

mod common;

use common::{big_layer, big_path, big_std, label, quick, DATA};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use vfs::{FileSystem, MemoryFS};

/// The system allocator, counting the live bytes asked for.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to `System` unchanged; the counter only adds and
// subtracts the sizes of the layouts it is given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The live heap bytes that `build`'s result holds.
fn held<T>(build: impl FnOnce() -> T) -> usize {
    let before = LIVE.load(Ordering::Relaxed);
    let value = build();
    let after = LIVE.load(Ordering::Relaxed);
    black_box(&value);
    drop(value);
    after.saturating_sub(before)
}

fn memory_fs(n: usize) -> MemoryFS {
    let fs = MemoryFS::new();
    for i in 0..n {
        let path = big_path(i);
        if i % 1000 == 0 {
            let dir = &path[..path.rfind('/').expect("a directory")];
            fs.create_dir(dir).expect("create_dir");
        }
        let mut f = fs.create_file(&path).expect("create_file");
        f.write_all(DATA).expect("write");
        f.flush().expect("flush");
    }
    // The files hold their data (a `MemoryFS` file is written back on flush and drop).
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut fs.open_file(&big_path(n - 1)).expect("open"), &mut back).expect("read");
    assert_eq!(back, DATA, "MemoryFS kept the data");
    fs
}

fn main() {
    let n = if quick() { 20_000 } else { 1_000_000 };
    let rows = [
        ("`Layer` (ovlsim)", held(|| big_layer(n))),
        ("`BTreeMap<String, Vec<u8>>` (baseline)", held(|| big_std(n))),
        ("`vfs::MemoryFS`", held(|| memory_fs(n))),
    ];
    let base = rows[1].1 as f64;
    println!(
        "memory_alloc: {} files of {} bytes, 1,000 per directory; live heap bytes asked for",
        label(n),
        DATA.len()
    );
    println!("| structure | heap | bytes per entry | vs BTreeMap |");
    println!("|---|---:|---:|---:|");
    for (what, bytes) in rows {
        println!(
            "| {what} | {:.1} MiB | {:.0} B | {:.2}× |",
            bytes as f64 / (1024.0 * 1024.0),
            bytes as f64 / n as f64,
            bytes as f64 / base
        );
    }
}
