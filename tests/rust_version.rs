//! The declared `rust-version` is true of the locked dependency graph: no locked dependency
//! declares a newer one. (Only the toolchain installed here can run, so an older one is not
//! tried; clippy's `incompatible_msrv` lint checks the crate's own use of std against the
//! declared version.)

use std::process::Command;

/// `1.85`, `1.85.0` → `[1, 85, 0]`.
fn version(v: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = v.split('.').map(|p| p.parse().unwrap_or_else(|_| panic!("a version: {v:?}"))).collect();
    parts.resize(3, 0);
    parts
}

#[test]
fn rust_version_is_at_least_what_every_locked_dependency_needs() {
    let declared = env!("CARGO_PKG_RUST_VERSION");
    assert!(!declared.is_empty(), "Cargo.toml declares no rust-version");
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let in_graph: std::collections::HashSet<&str> =
        meta["resolve"]["nodes"].as_array().expect("a resolve").iter().filter_map(|n| n["id"].as_str()).collect();
    let mut needs: Vec<(Vec<u64>, String)> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["name"] != env!("CARGO_PKG_NAME") && p["id"].as_str().is_some_and(|id| in_graph.contains(id)))
        .filter_map(|p| {
            let rv = p["rust_version"].as_str()?;
            Some((version(rv), format!("{} {} (rust-version {rv})", p["name"].as_str()?, p["version"].as_str()?)))
        })
        .collect();
    needs.sort();
    let (most, who) = needs.last().expect("some dependency declares a rust-version");
    assert!(
        version(declared) >= *most,
        "Cargo.toml declares rust-version {declared}, but the locked {who} needs more: \
         raise rust-version to {} (or lock an older {})",
        most.iter().map(u64::to_string).collect::<Vec<_>>().join("."),
        who.split(' ').next().unwrap_or("dependency"),
    );
    eprintln!("rust-version {declared}: the most a locked dependency needs is {who}");
}
