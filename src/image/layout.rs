//! An OCI image layout directory as a lower stack: `index.json` → manifest → layers, each
//! blob found by its digest and verified (OCI image spec, `image-layout.md`,
//! `image-index.md`, `manifest.md`, `descriptor.md`).
//!
//! The manifest lists layers base first ("the base layer MUST be the first"); overlay
//! numbers its lowers top-most first (`lowerdir=L0:L1`), so [`manifest_layers`] returns
//! them in that order: index 0 is the top-most layer. Every blob read is checked against
//! its descriptor's size and `sha256` digest, and each layer's uncompressed tar against
//! the config's `rootfs.diff_ids`. A digest is `sha256:` and 64 lower-case hex digits, so
//! a blob path never leaves `blobs/sha256/`. A nested index (a multi-platform image) is
//! not followed: name a platform's manifest in `index.json`.

use super::{oci, ImageError};
use crate::layer::FlatLayer;
use serde::Deserialize;
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// The annotation that names a manifest in `index.json` (`annotations.md`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The largest JSON blob read (index, manifest, config): 4 MiB.
const JSON_LEN_MAX: u64 = 4 << 20;
/// The largest layer blob read: 1 GiB (each file in it is held to [`super::FILE_SIZE_MAX`]).
const BLOB_LEN_MAX: u64 = 1 << 30;

/// A content descriptor (`descriptor.md`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    /// The media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// `sha256:` and the hex digest of the blob.
    pub digest: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// Annotations (the ref name among them).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Config {
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

/// One layer of an image: its blob's descriptor and the digest of its uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLayer {
    /// The layer blob.
    pub blob: Descriptor,
    /// The config's `diff_id` for it.
    pub diff_id: String,
}

/// The `sha256:` digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    format!("sha256:{}", crate::hex::encode(&d))
}

/// The path of the blob with `digest` under `dir`, if the digest is well formed.
fn blob_path(dir: &Path, digest: &str) -> Result<std::path::PathBuf, String> {
    let hex =
        digest.strip_prefix("sha256:").ok_or_else(|| format!("digest {digest:?}: only sha256 digests are read"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("digest {digest:?} is not sha256: and 64 lower-case hex digits"));
    }
    Ok(dir.join("blobs").join("sha256").join(hex))
}

/// Reads the blob of `desc`, checking its size (at most `max`) and digest.
fn read_blob(dir: &Path, desc: &Descriptor, max: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    let shown = dir.display().to_string();
    let err = |m: String| ImageError::at(&shown, format!("{what} {}", desc.digest), m);
    let path = blob_path(dir, &desc.digest).map_err(err)?;
    if desc.size > max {
        return Err(err(format!("a declared size of {} bytes, over the {max} read here", desc.size)));
    }
    let f = std::fs::File::open(&path).map_err(|e| err(format!("opening {}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    f.take(desc.size + 1).read_to_end(&mut bytes).map_err(|e| err(format!("reading {}: {e}", path.display())))?;
    if bytes.len() as u64 != desc.size {
        return Err(err(format!("the blob has {} bytes, its descriptor says {}", bytes.len(), desc.size)));
    }
    let got = sha256(&bytes);
    if got != desc.digest {
        return Err(err(format!("the blob's digest is {got}")));
    }
    Ok(bytes)
}

fn json<T: serde::de::DeserializeOwned>(shown: &str, what: &str, bytes: &[u8]) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::at(shown, what, format!("not a valid {what}: {e}")))
}

/// The layers of the image named `reference` (its `org.opencontainers.image.ref.name`; with
/// `None`, the index must hold exactly one manifest), top-most first.
pub fn manifest_layers(dir: &Path, reference: Option<&str>) -> Result<Vec<ImageLayer>, ImageError> {
    let shown = dir.display().to_string();
    let index_path = dir.join("index.json");
    let meta = std::fs::metadata(&index_path).map_err(|e| ImageError::at(&shown, "index.json", e.to_string()))?;
    if meta.len() > JSON_LEN_MAX {
        return Err(ImageError::at(&shown, "index.json", format!("over {JSON_LEN_MAX} bytes")));
    }
    let text = std::fs::read(&index_path).map_err(|e| ImageError::at(&shown, "index.json", e.to_string()))?;
    let index: Index = json(&shown, "index.json", &text)?;
    let named = |d: &&Descriptor| reference.is_none_or(|r| d.annotations.get(REF_NAME).map(String::as_str) == Some(r));
    let found: Vec<&Descriptor> = index.manifests.iter().filter(named).collect();
    let manifest = match found[..] {
        [one] => one,
        _ => {
            let refs: Vec<&str> =
                index.manifests.iter().filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str)).collect();
            return Err(ImageError::at(
                &shown,
                "index.json",
                format!(
                    "{} manifests{}; the refs are: {}",
                    found.len(),
                    reference.map(|r| format!(" named {r:?}")).unwrap_or_default(),
                    if refs.is_empty() { "(none)".to_owned() } else { refs.join(", ") }
                ),
            ));
        }
    };
    if manifest.media_type.contains("image.index") || manifest.media_type.contains("manifest.list") {
        return Err(ImageError::at(
            &shown,
            format!("manifest {}", manifest.digest),
            "an index inside the index (a multi-platform image) is not followed; name a platform's manifest",
        ));
    }
    let m: Manifest = json(&shown, "manifest", &read_blob(dir, manifest, JSON_LEN_MAX, "manifest")?)?;
    let config: Config = json(&shown, "config", &read_blob(dir, &m.config, JSON_LEN_MAX, "config")?)?;
    if config.rootfs.diff_ids.len() != m.layers.len() {
        return Err(ImageError::at(
            &shown,
            format!("config {}", m.config.digest),
            format!("{} diff_ids for {} layers", config.rootfs.diff_ids.len(), m.layers.len()),
        ));
    }
    let mut layers: Vec<ImageLayer> =
        m.layers.into_iter().zip(config.rootfs.diff_ids).map(|(blob, diff_id)| ImageLayer { blob, diff_id }).collect();
    layers.reverse();
    Ok(layers)
}

/// Reads one layer of the image (see [`manifest_layers`]), verified against its digest and
/// its `diff_id`.
pub fn read_layer(dir: &Path, layer: &ImageLayer) -> Result<FlatLayer, ImageError> {
    let shown = dir.display().to_string();
    let what = format!("layer {}", layer.blob.digest);
    let blob = read_blob(dir, &layer.blob, BLOB_LEN_MAX, "layer")?;
    let mut plain = Vec::new();
    oci::decompressed(&shown, &blob[..])?
        .take(BLOB_LEN_MAX + 1)
        .read_to_end(&mut plain)
        .map_err(|e| ImageError::at(&shown, what.clone(), format!("decompressing: {e}")))?;
    if plain.len() as u64 > BLOB_LEN_MAX {
        return Err(ImageError::at(&shown, what, format!("over {BLOB_LEN_MAX} bytes uncompressed")));
    }
    let got = sha256(&plain);
    if got != layer.diff_id {
        return Err(ImageError::at(
            &shown,
            what,
            format!("its tar's digest is {got}, the config's diff_id {}", layer.diff_id),
        ));
    }
    oci::read_tar(&format!("{shown} {what}"), &plain[..])
}

/// The whole stack of the image named `reference`, top-most first (see
/// [`manifest_layers`]).
pub fn read_stack(dir: &Path, reference: Option<&str>) -> Result<Vec<FlatLayer>, ImageError> {
    manifest_layers(dir, reference)?.iter().map(|l| read_layer(dir, l)).collect()
}
