//! Checks the `vfs` crate's `OverlayFS` against the model, scenario by scenario, and
//! writes a conformance report.
//!
//! ```sh
//! cargo run --release --example vfs_conformance -- [--out DIR] [PATH...]
//! ```
//!
//! PATH defaults to `spec/`. The Markdown report goes to stdout; with `--out DIR`, each
//! failing scenario is also written to `DIR/<rule folder>/<file>` as a minimal replayable
//! scenario (its steps up to the first divergence, every expectation recorded from the
//! model, which agrees with the kernel on all of `spec/`), and the failing files to
//! `DIR/failing.txt`. Replaying one of them here shows the divergence again:
//! `cargo run --example vfs_conformance -- conformance/vfs/delete/x.yaml`.
//!
//! Exit status: 0 when the report was made (whatever it found), 2 on a usage or I/O error.

mod adapter;

use adapter::{VfsBackend, OBSERVES};
use ovlsim::harness::{check_files, Verdict};
use std::path::PathBuf;

fn main() {
    let mut out = None;
    let mut paths = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == "--out" {
            match args.next() {
                Some(d) => out = Some(PathBuf::from(d)),
                None => usage("--out needs a directory"),
            }
        } else if a == "--help" || a == "-h" {
            usage("");
        } else {
            paths.push(PathBuf::from(a));
        }
    }
    if paths.is_empty() {
        paths.push(PathBuf::from("spec"));
    }
    let report = match check_files("vfs 0.13 `OverlayFS`", &paths, OBSERVES, || Box::new(VfsBackend::new())) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vfs_conformance: {e}");
            std::process::exit(2);
        }
    };
    print!("{}", report.to_markdown());
    if let Some(dir) = out {
        match report.write_failures(&dir) {
            Ok(written) => eprintln!("wrote {} files under {}", written.len(), dir.display()),
            Err(e) => {
                eprintln!("vfs_conformance: writing under {}: {e}", dir.display());
                std::process::exit(2);
            }
        }
    }
    if paths.len() == 1 && report.results.len() == 1 {
        if let Verdict::Fail(r) = &report.results[0].verdict {
            eprintln!("{}", r.details(20));
        }
    }
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("vfs_conformance: {problem}");
    }
    eprintln!("usage: vfs_conformance [--out DIR] [PATH...]   (PATH defaults to spec/)");
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}
