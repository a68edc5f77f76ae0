//! House-style checks that can fail: every scenario opens with its rule and source, is
//! named after its file, and sits in a topic folder; every topic the suite promises exists.

use std::path::{Path, PathBuf};

fn spec_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec");
    ovlsim::scenario::find_files(&[root]).expect("spec/ is readable").files
}

#[test]
fn every_scenario_opens_with_its_rule_and_source() {
    let mut bad = Vec::new();
    for f in spec_files() {
        let text = std::fs::read_to_string(&f).expect("readable");
        let header: Vec<&str> = text.lines().take_while(|l| l.starts_with('#')).collect();
        if header.is_empty() {
            bad.push(format!("{}: no leading rule comment", f.display()));
        } else if !header.iter().any(|l| l.to_lowercase().contains("source")) {
            bad.push(format!("{}: the rule comment names no source", f.display()));
        }
        let stem = f.file_stem().unwrap().to_string_lossy().into_owned();
        if !text.lines().any(|l| l == format!("name: {stem}")) {
            bad.push(format!("{}: `name:` is not the file name", f.display()));
        }
        if stem.split('-').count() < 2 {
            bad.push(format!("{}: not named op-subject-condition", f.display()));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn every_promised_topic_has_scenarios() {
    let topics = [
        "lookup",
        "whiteout",
        "opaque",
        "copy_up",
        "delete",
        "readdir",
        "rename",
        "hardlink",
        "inode",
        "symlink_path",
        "readonly",
        "mount",
        "xattr",
        "offline",
        "seed",
        "cache",
        "cred",
    ];
    let files = spec_files();
    for topic in topics {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec").join(topic);
        assert!(files.iter().any(|f| f.starts_with(&dir)), "spec/{topic}/ has no scenario");
    }
}
