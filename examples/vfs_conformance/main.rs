//! Checks the `vfs` crate's `OverlayFS` against the model, scenario by scenario, and
//! writes a conformance report.
//!
//! ```sh
//! cargo run --release --example vfs_conformance -- [--out DIR] [--fuzz-cases N] [--seed S] [PATH...]
//! ```
//!
//! PATH defaults to `spec/`. With `--fuzz-cases N`, N random cases are also drawn by the
//! fuzzer's generator with what `vfs` lacks switched off ([`config`]), checked the same
//! way, and each failing one shrunk; the smallest case of each kind of divergence goes to
//! `DIR/fuzz/`. The Markdown report goes to stdout; with `--out DIR`, each
//! failing scenario is also written to `DIR/<rule folder>/<file>` as a minimal replayable
//! scenario (its steps up to the first divergence, every expectation recorded from the
//! model, which agrees with the kernel on all of `spec/`), and the failing files to
//! `DIR/failing.txt`. Replaying one of them here shows the divergence again:
//! `cargo run --example vfs_conformance -- conformance/vfs/delete/x.yaml`.
//!
//! Exit status: 0 when the report was made (whatever it found), 2 on a usage or I/O error.

mod adapter;

use adapter::{config, VfsBackend, OBSERVES};
use ovlsim::harness::{check_files, fuzz_backend, replayable, Verdict};
use std::path::PathBuf;

fn main() {
    let mut out = None;
    let mut paths = Vec::new();
    let (mut fuzz_cases, mut seed) = (0u64, 1u64);
    let mut args = std::env::args_os().skip(1);
    let number = |args: &mut dyn Iterator<Item = std::ffi::OsString>, what: &str| -> u64 {
        match args.next().and_then(|v| v.to_str().and_then(|v| v.parse().ok())) {
            Some(n) => n,
            None => usage(&format!("{what} needs a number")),
        }
    };
    while let Some(a) = args.next() {
        if a == "--out" {
            match args.next() {
                Some(d) => out = Some(PathBuf::from(d)),
                None => usage("--out needs a directory"),
            }
        } else if a == "--fuzz-cases" {
            fuzz_cases = number(&mut args, "--fuzz-cases");
        } else if a == "--seed" {
            seed = number(&mut args, "--seed");
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
    if fuzz_cases > 0 {
        let summary = match fuzz_backend(&config(), OBSERVES, fuzz_cases, seed, 24, || Box::new(VfsBackend::new())) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("vfs_conformance: {e}");
                std::process::exit(2);
            }
        };
        println!(
            "\n### Random cases\n\n{} cases (seed {seed}, at most 24 steps, generator: `adapter::config()`): {} passed, {} failed (each shrunk), {} not applicable, {} not run by the model.\n",
            summary.cases,
            summary.passed,
            summary.failures.len(),
            summary.not_applicable,
            summary.errors
        );
        // One line per kind of divergence: the operation, and what each side answered
        // (the model's errno is masked; see the header).
        let mut kinds: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
        for (s, r) in &summary.failures {
            let first = &r.failures[0];
            let op = first.what.split_whitespace().next().unwrap_or("?");
            // Succeeds (`ok`), fails (an errno: masked on both sides, so only failure
            // shows), or gives a result (a stat, data, a listing).
            let short = |a: &Option<String>| {
                a.as_deref().map(|t| {
                    let errno = t.len() > 1 && t.starts_with('E') && t.chars().all(|c| c.is_ascii_uppercase());
                    match t {
                        "ok" => "succeeds",
                        _ if errno => "fails",
                        _ => "gives a result",
                    }
                })
            };
            let kind = match (short(&first.expected), short(&first.actual)) {
                (Some(m), Some(v)) => format!("{op}: the model {m}, vfs {v}"),
                _ => format!("{op}: the trees differ"),
            };
            kinds.entry(kind).or_default().push(&s.name);
        }
        println!("| first divergence | cases | smallest example |");
        println!("|---|---:|---|");
        let mut smallest_of_each = Vec::new();
        for (kind, names) in &kinds {
            let smallest = summary
                .failures
                .iter()
                .filter(|(s, _)| names.contains(&s.name.as_str()))
                .min_by_key(|(s, _)| (s.steps.len(), s.name.len()))
                .map(|(s, _)| s.name.as_str())
                .unwrap_or("");
            println!("| {kind} | {} | `{smallest}` |", names.len());
            smallest_of_each.push(smallest);
        }
        let smallest = smallest_of_each;
        // The smallest case of each kind, as a replayable scenario.
        if let Some(dir) = &out {
            for (s, r) in summary.failures.iter().filter(|(s, _)| smallest.contains(&s.name.as_str())) {
                let written = replayable(s, r).map_err(std::io::Error::other).and_then(|min| {
                    let path = dir.join("fuzz").join(format!("{}.yaml", s.name));
                    std::fs::create_dir_all(dir.join("fuzz"))?;
                    ovlsim::persist::write_atomic(&path, min.to_yaml().as_bytes())
                });
                if let Err(e) = written {
                    eprintln!("vfs_conformance: writing {}: {e}", s.name);
                    std::process::exit(2);
                }
            }
        }
    }
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
    eprintln!("usage: vfs_conformance [--out DIR] [--fuzz-cases N] [--seed S] [PATH...]   (PATH defaults to spec/)");
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}
