//! The model as a library without its optional features (`default-features = false`):
//! scenarios still parse and replay. Every scenario of `spec/` passes on the model, except,
//! in a build without the `image` feature, those that read a layer from an image (`!tar`,
//! `!dir`, `!oci`): those must be refused with a located error that names the feature.
//! `.ci/run` runs this test with `--no-default-features`; with the default features it is
//! the model half of `tests/spec_suite.rs` again, plus the check that image sources load.

use ovlsim::backend::ModelBackend;
use ovlsim::scenario;
use std::path::PathBuf;

/// Whether this build reads image layers (see `scenario::parse`'s `read_image_file`).
const IMAGE: bool = cfg!(all(feature = "image", target_os = "linux"));

#[test]
fn spec_scenarios_parse_and_replay_on_the_model_whatever_the_features() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec");
    let files = scenario::find_files(&[root]).expect("spec/ is readable").files;
    assert!(files.len() >= 80, "spec/ should hold at least 80 scenarios, found {}", files.len());
    let (mut passed, mut refused, mut bad) = (0, 0, Vec::new());
    for f in &files {
        let text = std::fs::read_to_string(f).expect("a spec file is readable");
        let uses_image = ["!tar", "!dir", "!oci"].iter().any(|t| text.contains(&format!(": {t} ")));
        match scenario::load(f) {
            Ok(s) => {
                let report = scenario::run(&s, &mut ModelBackend::new());
                if !IMAGE && uses_image {
                    bad.push(format!("{}: loaded without the image feature", f.display()));
                } else if report.passed() {
                    passed += 1;
                } else {
                    bad.push(report.details(20));
                }
            }
            Err(e) if !IMAGE && uses_image => {
                let msg = e.to_string();
                if msg.contains("`image` feature") && msg.contains(&f.display().to_string()) {
                    refused += 1;
                } else {
                    bad.push(format!("{}: refused, but not for the image feature: {msg}", f.display()));
                }
            }
            Err(e) => bad.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(bad.is_empty(), "{} scenarios fail on the model:\n{}", bad.len(), bad.join("\n"));
    if IMAGE {
        assert_eq!(refused, 0);
    } else {
        assert!(refused > 0, "spec/image holds scenarios with image layers; none was seen");
    }
    assert_eq!(passed + refused, files.len());
}
