//! The mount-command backend: the kernel through the generic path agrees with spec/, and
//! fuse-overlayfs fails exactly the scenarios committed under `conformance/fuse-overlayfs/`.

mod common;

use ovlsim::dialect::Dialect;
use ovlsim::kernel::MountConfig;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The kernel, mounted by `mount(8)` instead of `mount(2)`.
const KERNEL_TEMPLATE: &str = "mount -t overlay overlay -o {options} {merged}";

/// fuse-overlayfs in the foreground, as CONFORMANCE.md ran it.
const FUSE_TEMPLATE: &str = "fuse-overlayfs -f -o {dirs} {merged}";

/// `folder/name.yaml` of scenarios, each with a message.
type Named = Vec<(String, String)>;

/// Every spec/ scenario on `config`: (`folder/name.yaml` of each failure with its first
/// lines, `folder/name.yaml` of each not-applicable one with why, passed count).
fn run_spec(config: &MountConfig) -> (Named, Named, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec");
    let found = ovlsim::scenario::find_files(&[root]).expect("spec/ is there");
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    let (mut failed, mut na, mut passed) = (Vec::new(), Vec::new(), 0);
    for path in &found.files {
        let key = key_of(path);
        let s = ovlsim::scenario::load(path).expect("spec/ scenarios load");
        match ovlsim::conform::run_scenario(&s, config) {
            Ok(r) if r.passed() => passed += 1,
            Ok(r) => failed.push((key, r.details(3))),
            Err(why) => na.push((key, why)),
        }
    }
    (failed, na, passed)
}

/// `folder/name.yaml`.
fn key_of(path: &Path) -> String {
    let folder = path.parent().and_then(|p| p.file_name()).expect("a folder").to_string_lossy();
    format!("{folder}/{}", path.file_name().expect("a name").to_string_lossy())
}

#[test]
fn kernel_through_the_mount_command_agrees_with_spec() {
    if !common::kernel_runs("spec/ through the mount-command backend") {
        return;
    }
    let config = MountConfig::new(KERNEL_TEMPLATE, Dialect::Kernel).expect("the template reads");
    let (failed, na, passed) = run_spec(&config);
    assert!(failed.is_empty(), "the kernel through `{KERNEL_TEMPLATE}` failed: {failed:#?}");
    // Only expected mount refusals cannot be judged through a command (no errno).
    for (file, why) in &na {
        assert!(why.contains("expects the mount to be refused"), "{file}: {why}");
    }
    assert!(passed > 100, "only {passed} scenarios ran");
}

/// Whether fuse-overlayfs can run here; else says so loudly, and fails under
/// `OVLSIM_REQUIRE_KERNEL=1`.
fn fuse_runs() -> bool {
    let on_path =
        std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fuse-overlayfs").is_file()));
    let why = if !on_path {
        "no fuse-overlayfs on PATH (apt-get install fuse-overlayfs fuse3)"
    } else if !Path::new("/dev/fuse").exists() {
        "no /dev/fuse"
    } else {
        return true;
    };
    let required = std::env::var("OVLSIM_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
    assert!(!required, "OVLSIM_REQUIRE_KERNEL=1 but fuse-overlayfs cannot run: {why}");
    let _ = writeln!(std::io::stderr(), "SKIPPED: fuse-overlayfs conformance: {why}");
    false
}

/// The committed failures: every `*.yaml` under `conformance/fuse-overlayfs/<folder>/`
/// (the fuzz folder aside), as `folder/name.yaml`.
fn committed() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/fuse-overlayfs");
    let mut out = BTreeSet::new();
    for folder in std::fs::read_dir(&root).expect("conformance/fuse-overlayfs/ is committed") {
        let folder: PathBuf = folder.expect("a folder entry").path();
        if !folder.is_dir() || folder.file_name().is_some_and(|n| n == "fuzz") {
            continue;
        }
        for f in std::fs::read_dir(&folder).expect("a folder") {
            let f = f.expect("an entry").path();
            if f.extension().is_some_and(|e| e == "yaml") {
                out.insert(key_of(&f));
            }
        }
    }
    out
}

#[test]
fn fuse_overlayfs_fails_exactly_the_committed_scenarios() {
    if !common::kernel_runs("fuse-overlayfs conformance") || !fuse_runs() {
        return;
    }
    let config = MountConfig::new(FUSE_TEMPLATE, Dialect::FuseOverlayfs).expect("the template reads");
    let (failed, _, passed) = run_spec(&config);
    let now: BTreeSet<String> = failed.iter().map(|(k, _)| k.clone()).collect();
    let want = committed();
    let new: Vec<&(String, String)> = failed.iter().filter(|(k, _)| !want.contains(k)).collect();
    let fixed: Vec<&String> = want.difference(&now).collect();
    assert!(
        new.is_empty() && fixed.is_empty(),
        "fuse-overlayfs's failures changed (re-run `ovlsim conform` and update CONFORMANCE.md):\n\
         newly failing: {new:#?}\nno longer failing: {fixed:#?}"
    );
    assert!(passed > 0, "no scenario passed on fuse-overlayfs: the harness is broken");
}
