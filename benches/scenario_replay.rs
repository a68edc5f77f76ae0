//! scenario_replay: the whole `spec/` suite replayed on the model, in scenarios per second.
//!
//! The suite is whatever `spec/**/*.yaml` holds when the bench runs, found and read with
//! the scenario API (`scenario::find_files`, `scenario::parse`) and replayed with
//! `scenario::run` on a fresh `ModelBackend` per scenario, as `ovlsim run spec/` does.
//! Three measurements of the whole suite:
//! - `parse`: parsing every scenario from its text (the baseline);
//! - `run`: replaying every parsed scenario, with every expectation checked;
//! - `parse_and_run`: both, which is what `ovlsim run spec/` does after reading the files.
//!
//! Run: `cargo bench --bench scenario_replay`.

mod common;

use criterion::{BenchmarkId, SamplingMode};
use ovlsim::backend::ModelBackend;
use ovlsim::scenario::{self, Scenario};
use std::hint::black_box;
use std::path::PathBuf;

fn main() {
    let mut c = common::criterion();
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec");
    let files = if spec.is_dir() { scenario::find_files(&[spec]).expect("list spec/").files } else { Vec::new() };
    let texts: Vec<(String, String)> =
        files.iter().map(|p| (p.display().to_string(), std::fs::read_to_string(p).expect("read a scenario"))).collect();
    let parsed: Vec<Scenario> = texts
        .iter()
        .filter_map(|(file, text)| match scenario::parse(text, file) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("scenario_replay: {file} does not load, left out: {e}");
                None
            }
        })
        .collect();
    let failed: Vec<&str> =
        parsed.iter().filter(|s| !scenario::run(s, &mut ModelBackend::new()).passed()).map(|s| s.file()).collect();
    let count = parsed.len();
    println!(
        "scenario_replay: {} files under spec/, {count} load, {} fail on the model{}",
        texts.len(),
        failed.len(),
        if failed.is_empty() { String::new() } else { format!(" ({})", failed.join(", ")) }
    );
    if count == 0 {
        println!("scenario_replay: no scenario to replay; nothing measured");
        return;
    }

    let mut group = c.benchmark_group("scenario_replay");
    group.sampling_mode(SamplingMode::Flat);
    let suite = format!("{count}_scenarios");
    group.bench_function(BenchmarkId::new("parse", &suite), |b| {
        b.iter(|| {
            for (file, text) in &texts {
                let _ = black_box(scenario::parse(black_box(text), file));
            }
        })
    });
    group.bench_function(BenchmarkId::new("run", &suite), |b| {
        b.iter(|| {
            for s in &parsed {
                black_box(scenario::run(black_box(s), &mut ModelBackend::new()));
            }
        })
    });
    group.bench_function(BenchmarkId::new("parse_and_run", &suite), |b| {
        b.iter(|| {
            for (file, text) in &texts {
                if let Ok(s) = scenario::parse(black_box(text), file) {
                    black_box(scenario::run(&s, &mut ModelBackend::new()));
                }
            }
        })
    });
    group.finish();
    c.final_summary();
    common::print_ratios(
        "scenario_replay",
        &[
            common::ratio(
                "replay vs parse, whole suite",
                format!("scenario_replay/run/{suite}"),
                format!("scenario_replay/parse/{suite}"),
            ),
            common::ratio(
                "parse + replay vs parse, whole suite",
                format!("scenario_replay/parse_and_run/{suite}"),
                format!("scenario_replay/parse/{suite}"),
            ),
        ],
    );
    common::print_rates(
        "scenario_replay",
        &[
            ("scenarios parsed", format!("scenario_replay/parse/{suite}"), count as f64),
            ("scenarios replayed (model)", format!("scenario_replay/run/{suite}"), count as f64),
            ("scenarios parsed and replayed (model)", format!("scenario_replay/parse_and_run/{suite}"), count as f64),
        ],
    );
}
