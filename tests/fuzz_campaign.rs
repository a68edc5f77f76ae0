//! Campaigns (`ovlsim fuzz --jobs`, `--shard`, `--merge`, Ctrl-C), on the model alone: the
//! results depend only on the seed, whatever the number of jobs or shards.

use ovlsim::fuzz::campaign::{self, Shard, Summary};
use ovlsim::fuzz::{self, FuzzConfig};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A directory under the temp dir, named `ovlsim-*` (CI looks for leftovers by that name),
/// removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("ovlsim-campaign-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("a temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(cases: u64, jobs: usize, plain: bool) -> FuzzConfig {
    FuzzConfig { cases, seed: Some(5), model_only: true, plain, keep_going: true, jobs, ..FuzzConfig::default() }
}

/// The summary of a run, as a shard would write it.
fn summary(config: &FuzzConfig) -> Summary {
    let report = fuzz::run(config.clone());
    assert!(report.errors.is_empty(), "{report}");
    report.summary(config)
}

#[test]
fn one_job_and_two_jobs_give_the_same_summary() {
    for plain in [false, true] {
        let one = summary(&config(300, 1, plain));
        let two = summary(&config(300, 2, plain));
        assert_eq!(one.cases, 300);
        assert!(one.steps > 300, "every case runs its setup and steps: {one}");
        assert!(campaign::same_results(&one, &two), "--jobs 1:\n{one}\n--jobs 2:\n{two}");
    }
}

#[test]
fn another_seed_runs_other_cases() {
    let a = summary(&config(100, 2, true));
    let b = summary(&FuzzConfig { seed: Some(6), ..config(100, 2, true) });
    assert_eq!((a.cases, b.cases), (100, 100));
    assert_ne!(a.digest, b.digest, "seeds 5 and 6 ran the same cases");
}

#[test]
fn two_shards_merged_are_the_whole_campaign() {
    let whole = summary(&config(301, 2, false));
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("shard{i}"))).collect();
    for (i, dir) in dirs.iter().enumerate() {
        let c = FuzzConfig {
            shard: Some(Shard { index: i as u64, count: 2 }),
            out_dir: dir.0.clone(),
            ..config(301, 1, false)
        };
        let report = fuzz::run(c);
        assert_eq!(report.cases, [151, 150][i], "shard {i}/2: {report}");
    }
    let out = TempDir::new("merged");
    let merged = campaign::merge(&dirs.iter().map(|d| d.0.clone()).collect::<Vec<_>>(), &out.0).expect("merged");
    let whole = Summary { shards: vec![Shard { index: 0, count: 2 }, Shard { index: 1, count: 2 }], ..whole };
    assert!(campaign::same_results(&merged, &whole), "merged:\n{merged}\nwhole:\n{whole}");
    assert_eq!(Summary::read(&out.0).expect("the merged summary is written"), merged);
    // One shard alone is not the campaign: the merge says which shard is missing.
    let half = campaign::merge(&[dirs[0].0.clone()], &out.0).expect("merged");
    assert_eq!(half.cases, 151);
    assert!(half.errors.iter().any(|e| e.contains("1/2")), "{half}");
    // Summaries of another campaign are refused.
    let other = TempDir::new("other");
    fuzz::run(FuzzConfig {
        seed: Some(9),
        shard: Some(Shard { index: 1, count: 2 }),
        out_dir: other.0.clone(),
        ..config(301, 1, false)
    });
    let err = campaign::merge(&[dirs[0].0.clone(), other.0.clone()], &out.0).expect_err("another seed");
    assert!(err.contains("another campaign"), "{err}");
}

/// `ovlsim fuzz` prints its seed first; Ctrl-C stops it between cases with the summary so
/// far and a non-zero exit.
#[cfg(unix)]
#[test]
fn ctrl_c_prints_the_summary_so_far() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovlsim"))
        .args(["fuzz", "--model-only", "--plain", "--cases", "100000000", "--seed", "3", "--jobs", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ovlsim runs");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    err.read_line(&mut first).expect("a first line");
    assert!(first.contains("seed 3") && first.contains("--seed 3"), "the seed comes first: {first}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let out = child.wait_with_output().expect("it ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("interrupted") && stdout.contains("seed 3"), "{stdout}");
    let _ = writeln!(std::io::stderr(), "{stdout}");
}

/// `--shard` and `--merge` on the command line.
#[test]
fn the_command_line_shards_and_merges() {
    let dirs: Vec<TempDir> = (0..2).map(|i| TempDir::new(&format!("cli{i}"))).collect();
    let ovlsim = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ovlsim")).args(args).output().expect("ovlsim runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for (i, d) in dirs.iter().enumerate() {
        let shard = format!("{i}/2");
        let dir = d.0.display().to_string();
        let (code, out) =
            ovlsim(&["fuzz", "--model-only", "--cases", "40", "--seed", "2", "--shard", &shard, "--out", &dir]);
        assert_eq!(code, Some(0), "{out}");
        assert!(d.0.join("summary.json").is_file());
    }
    let out = TempDir::new("cli-merged");
    let (a, b, m) = (dirs[0].0.display().to_string(), dirs[1].0.display().to_string(), out.0.display().to_string());
    let (code, text) = ovlsim(&["fuzz", "--merge", &a, &b, "--out", &m]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("40 of 40 cases (shards 0/2 1/2)"), "{text}");
    let (code, text) = ovlsim(&["fuzz", "--shard", "2/2", "--model-only"]);
    assert_eq!(code, Some(2), "{text}");
}
