//! Container image layers in and out of the model.
//!
//! A container image is a stack of layer changesets. On disk an overlay-based engine keeps
//! each layer in overlay's own form (Docker's overlay2 `diff/`, containerd's snapshots, a
//! kernel upper directory: whiteouts as character devices 0/0, opaque directories marked by
//! `trusted.overlay.opaque`); in a registry or an image tarball each layer is a tar in the
//! OCI image spec's form ("Representing Changes", `layer.md`: `.wh.NAME` whiteouts and
//! `.wh..wh..opq` opaque markers). This module translates both into a [`Layer`] and the
//! model's upper back into an OCI changeset:
//!
//! - [`dir`]: [`Layer::from_dir`], a real directory in overlay's on-disk form.
//! - [`layout`]: an OCI image layout directory as a lower stack, digests verified.
//! - [`oci`]: [`Layer::from_oci_tar`] (plain, gzip or zstd) and [`oci::write_changeset`],
//!   the upper as a deterministic OCI layer tar.
//!
//! Every error is an [`ImageError`] naming the file or directory and the entry.

pub mod dir;
pub mod layout;
pub mod oci;

use crate::layer::Layer;

/// The most path components an imported entry may have below its layer root: the same
/// bound as a scenario's trees ([`crate::scenario::DEPTH_MAX`]), which keeps every walk of
/// the layer well inside a thread's stack.
pub const DEPTH_MAX: usize = crate::scenario::DEPTH_MAX;

/// The largest regular file an imported layer may hold, 64 MiB: an import reads each file's
/// bytes into memory, where a tar header can declare up to 8 GiB (or more, in base-256).
pub const FILE_SIZE_MAX: u64 = 64 << 20;

/// A layer that could not be read or written: where, which entry, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{}{}: {message}", file, entry.as_ref().map(|e| format!(": entry {e:?}")).unwrap_or_default())]
pub struct ImageError {
    /// The file or directory read or written (`-` for a stream with no name).
    pub file: String,
    /// The entry of the layer the error is about, if one.
    pub entry: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ImageError {
    /// An error about `entry` of `source`.
    pub fn at(source: &str, entry: impl Into<String>, message: impl Into<String>) -> ImageError {
        ImageError { file: source.to_owned(), entry: Some(entry.into()), message: message.into() }
    }

    /// An error about `source` as a whole.
    pub fn whole(source: &str, message: impl Into<String>) -> ImageError {
        ImageError { file: source.to_owned(), entry: None, message: message.into() }
    }
}

/// Checks that a real layer directory could hold `flat` ([`crate::layer::check::check_layer`])
/// and builds the layer.
fn checked(source: &str, flat: &crate::layer::FlatLayer) -> Result<Layer, ImageError> {
    crate::layer::check::check_layer(flat).map_err(|(path, r)| ImageError::at(source, path, r.to_string()))?;
    Ok(Layer::from_flat(flat))
}

/// What [`export_scenario`] made: the changeset tar and its digest.
#[derive(Clone, Debug)]
pub struct Export {
    /// The uncompressed layer tar.
    pub tar: Vec<u8>,
    /// `sha256:` and the hex digest of [`Export::tar`]: the layer's `DiffID` in an image
    /// config (OCI image spec, `config.md`).
    pub diff_id: String,
    /// How many of the scenario's expectations the model did not meet (the export is of
    /// the model's state all the same).
    pub failures: usize,
}

/// Replays the scenario at `path` on the model and writes the upper at its end as an OCI
/// changeset ([`oci::write_changeset`], with the mount's merged view for redirected
/// directories). The scenario must end mounted with an upper layer.
pub fn export_scenario(path: &std::path::Path) -> Result<Export, String> {
    use crate::backend::ModelBackend;
    use sha2::Digest;
    let s = crate::scenario::load(path).map_err(|e| e.to_string())?;
    let mut b = ModelBackend::new();
    let report = crate::scenario::run(&s, &mut b);
    let shown = path.display().to_string();
    // The replay unmounts at its end: mount again as the last mount did, with the layers as
    // the steps left them (a mount shows the same tree each time it is made on them).
    let mut spec = s.mount.clone();
    for step in &s.steps {
        if let crate::scenario::Action::Mount(c) = &step.action {
            if let Ok(m) = c.apply(spec.as_ref()) {
                spec = Some(m);
            }
        }
    }
    let spec = spec.ok_or_else(|| format!("{shown}: the scenario never mounts"))?;
    let mount = crate::backend::Command::Mount { lowers: spec.lowers, upper: spec.upper, options: spec.options };
    match crate::backend::Backend::exec(&mut b, &mount) {
        Ok(crate::backend::Reply::Done) => {}
        other => return Err(format!("{shown}: mounting the scenario's last mount again on the model: {other:?}")),
    }
    let overlay = b.overlay().ok_or_else(|| format!("{shown}: the scenario's last mount did not come up"))?;
    let upper = overlay.upper().ok_or_else(|| format!("{shown}: the last mount has no upper layer to export"))?;
    let prefix =
        if overlay.options().userxattr { crate::whiteout::USER_PREFIX } else { crate::whiteout::TRUSTED_PREFIX };
    let merged = overlay.clone().dump_merged();
    let mut tar = Vec::new();
    oci::write_changeset_with(&shown, upper, Some(&merged), &|p| overlay.file_data(p), prefix, &mut tar)
        .map_err(|e| e.to_string())?;
    let diff_id = format!("sha256:{}", crate::hex::encode(&sha2::Sha256::digest(&tar)));
    Ok(Export { tar, diff_id, failures: report.failures.len() })
}

/// What `ovlsim image` prints of an OCI image layout: each layer (top-most first, numbered
/// as a scenario's `!oci {layer: N}` numbers them) with its digests and what it holds, then
/// the image as a container sees it: the model's merged view of the stack, mounted with an
/// empty upper and default options. Every blob is verified as [`layout::read_stack`] does.
pub fn describe_layout(dir: &std::path::Path, reference: Option<&str>) -> Result<String, String> {
    use crate::layer::{FileType, FlatEntry, Layer};
    use std::fmt::Write as _;
    let layers = layout::manifest_layers(dir, reference).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut stack = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let flat = layout::read_layer(dir, l).map_err(|e| e.to_string())?;
        let (mut whiteouts, mut opaque, mut links) = (0, 0, 0);
        for e in &flat.entries {
            match e {
                FlatEntry::Link { .. } => links += 1,
                FlatEntry::Node { node, .. } => {
                    whiteouts += usize::from(node.kind == FileType::Char && node.rdev == Some((0, 0)));
                    opaque += usize::from(
                        node.xattrs
                            .get(&format!("{}opaque", crate::whiteout::TRUSTED_PREFIX))
                            .is_some_and(|v| v == b"y"),
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "layer {i}: {} ({} bytes), diff_id {}: {} entries, {whiteouts} whiteouts, {opaque} opaque directories, {links} hard links",
            l.blob.digest,
            l.blob.size,
            l.diff_id,
            flat.entries.len()
        );
        stack.push(Layer::from_flat(&flat));
    }
    let overlay = crate::Overlay::mount(stack, Some(Layer::new()), crate::Options::default())
        .map_err(|e| format!("{}: the layers do not mount on the model: {e}", dir.display()))?;
    let merged = overlay.clone().dump_merged();
    let tree = crate::scenario::tree_from_merged(&merged, |_, _| None);
    let _ = writeln!(out, "\nmerged view ({} layers, an empty upper, default options):", layers.len());
    for line in crate::scenario::tree_lines(&tree, crate::scenario::TreeContext::Merged) {
        let _ = writeln!(out, "  {line}");
    }
    Ok(out)
}

/// A new scenario over the image at `dir` (named `reference`): one `!oci` layer per image
/// layer, an empty upper, a mount of them all, and one step that lists the root; its
/// expectations are left for `ovlsim record` to fill from the kernel. `file` is where the
/// scenario will be written: the image's path is written relative to its directory.
pub fn scenario_for_layout(
    dir: &std::path::Path,
    reference: Option<&str>,
    file: &std::path::Path,
) -> Result<String, String> {
    use std::fmt::Write as _;
    let count = layout::manifest_layers(dir, reference).map_err(|e| e.to_string())?.len();
    let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let rel = relative_to(dir, base)?;
    let name = file.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    let quote = |s: &str| crate::scenario::yaml_scalar(s);
    let mut out = String::new();
    let _ =
        writeln!(out, "# The image {} as overlay mounts it. State the rule this scenario pins here,", dir.display());
    let _ =
        writeln!(out, "# add steps, then fill the expectations from the kernel: `ovlsim record {}`.", file.display());
    let _ = writeln!(out, "name: {}", quote(&name));
    let _ = writeln!(out, "rules:\n  - {}", quote(&format!("the merged view of the image {}", rel)));
    let _ = writeln!(out, "\nlayers:");
    for i in 0..count {
        let r = reference.map(|r| format!(", ref: {}", quote(r))).unwrap_or_default();
        let _ = writeln!(out, "  L{i}: !oci {{path: {}{r}, layer: {i}}}", quote(&rel));
    }
    let _ = writeln!(out, "  upper: {{}}");
    let lowers: Vec<String> = (0..count).map(|i| format!("L{i}")).collect();
    let _ = writeln!(out, "mount: {{lowers: [{}], upper: upper}}", lowers.join(", "));
    let _ = writeln!(out, "\nsteps:\n  - readdir: /");
    Ok(out)
}

/// `path` relative to directory `base`, both made absolute; `path` itself when they share
/// nothing but the root.
fn relative_to(path: &std::path::Path, base: &std::path::Path) -> Result<String, String> {
    let abs = |p: &std::path::Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let (p, b) = (abs(path)?, abs(base)?);
    let (pc, bc): (Vec<_>, Vec<_>) = (p.components().collect(), b.components().collect());
    let common = pc.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    if common <= 1 {
        return Ok(p.display().to_string());
    }
    let mut rel = std::path::PathBuf::new();
    for _ in common..bc.len() {
        rel.push("..");
    }
    for c in &pc[common..] {
        rel.push(c);
    }
    Ok(if rel.as_os_str().is_empty() { ".".into() } else { rel.display().to_string() })
}
