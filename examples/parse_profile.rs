//! parse_profile: times the parts of `scenario::parse` over every `spec/` file, for
//! profiling (`valgrind --tool=callgrind target/release/examples/parse_profile parse 20`).
//!
//! Run: `cargo run --release --example parse_profile -- [parse|events|yaml] [ROUNDS]`;
//! `parse_profile_mimalloc` (same arguments) runs it on the `ovlsim` binary's heap.

use ovlsim::scenario;
use std::hint::black_box;
use std::time::Instant;

pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("parse");
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(200);
    let spec = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec");
    let files = scenario::find_files(&[spec]).expect("list spec/").files;
    let texts: Vec<(String, String)> =
        files.iter().map(|p| (p.display().to_string(), std::fs::read_to_string(p).expect("read"))).collect();
    let start = Instant::now();
    for _ in 0..rounds {
        for (file, text) in &texts {
            match what {
                "events" => {
                    let n = saphyr_parser::Parser::new_from_str(black_box(text)).count();
                    black_box(n);
                }
                "yaml" => {
                    let _ = black_box(yaml_serde::from_str::<yaml_serde::Value>(black_box(text)));
                }
                _ => {
                    let _ = black_box(scenario::parse(black_box(text), file));
                }
            }
        }
    }
    let per = start.elapsed().as_secs_f64() / (rounds * texts.len()) as f64;
    println!("{what}: {} files, {:.1} µs per file", texts.len(), per * 1e6);
}
