//! OCI and Docker layer tars: in as a [`Layer`], and the model's upper out as a changeset.
//!
//! OCI image spec, `layer.md`, "Representing Changes": a layer is a tar of the paths it
//! adds or changes; a removed path is an empty file `.wh.NAME` beside it ("Whiteouts"), and
//! a directory whose lower content is hidden holds `.wh..wh..opq` ("Opaque Whiteout").
//! Overlay's own form of the same marks is a character device 0/0 and the xattr
//! `trusted.overlay.opaque=y` (overlayfs.rst, "whiteouts and opaque directories"); the
//! translation both ways is the one containerd's overlay applier makes
//! (`archive/tar_opts_linux.go`, `OverlayConvertWhiteout`) and Docker's overlay2 driver
//! makes on export (`pkg/archive`, `overlayWhiteoutConverter`).
//!
//! In: [`read_tar`] (and [`Layer::from_oci_tar`]) take a plain, gzip or zstd stream, told
//! apart by its magic bytes. PAX `SCHILY.xattr.NAME` (and libarchive's `LIBARCHIVE.xattr.NAME`) records become xattrs (a
//! `trusted.overlay.X` of the image's own stored escaped, as `trusted.overlay.overlay.X`,
//! as the kernel stores one set through a mount); a hard link
//! must name an earlier non-directory entry of the same layer. Refused, each with an error
//! naming the entry: an absolute path or a `..` component, a hard link to a path outside the
//! layer, a whiteout beside the name it hides in the same layer (layer.md: "Files that are
//! present in the same layer as a whiteout file can only be hidden by whiteout files in
//! subsequent layers"), a truncated or corrupt stream, a file over
//! [`super::FILE_SIZE_MAX`], a path deeper than [`super::DEPTH_MAX`], a tar without its
//! end-of-archive block (a stream cut at an entry boundary), an entry type a layer
//! cannot hold (sparse files, GNU volume headers). Other AUFS metadata names
//! (`.wh..wh.plnk`, `.wh..wh.aufs`) are skipped, as containerd skips them.
//!
//! Out: [`write_changeset`] (and [`Layer::to_oci_tar`]) write the upper as a tar that is
//! the same, byte for byte, for the same layer: entries in walk order (parents first, names
//! in byte order), mtime 0, numeric owners with empty user and group names, GNU headers.
//! A whiteout becomes `.wh.NAME`, an opaque directory the directory and `.wh..wh..opq`,
//! overlay's private xattrs are left out and escaped ones written as the mount shows them, and a redirected (renamed) directory, whose lower
//! content a changeset cannot point to, is written opaque with its whole content from the
//! merged view. The whiteout of the old name is the one the kernel left in the upper.

use super::{checked, ImageError, DEPTH_MAX, FILE_SIZE_MAX};
use crate::dump::MergedTree;
use crate::layer::{FileType, FlatEntry, FlatLayer, FlatNode, Inode, Layer, NodeKind};
use crate::whiteout::TRUSTED_PREFIX;
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

/// The prefix of a whiteout's name in a changeset.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the opaque marker in a changeset.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The prefix of the AUFS metadata names, which a changeset may hold and an applier skips.
const META_PREFIX: &str = ".wh..wh.";
/// The PAX record prefix of an xattr (as GNU tar and libarchive write them).
const PAX_XATTR: &str = "SCHILY.xattr.";
/// libarchive's PAX record for an xattr: `LIBARCHIVE.xattr.` and the URL-encoded name, the
/// value in base64 (libarchive, `archive_write_set_format_pax.c`, `add_pax_attr_binary`).
const PAX_LIBARCHIVE_XATTR: &str = "LIBARCHIVE.xattr.";

impl Layer {
    /// Reads an OCI or Docker layer tar (plain, gzip or zstd) as a layer in overlay's
    /// on-disk form (see [`crate::image::oci`]).
    pub fn from_oci_tar(reader: impl Read) -> Result<Layer, ImageError> {
        let flat = read_tar("-", reader)?;
        checked("-", &flat)
    }

    /// Writes this layer as an OCI changeset (see [`write_changeset`]); a redirected
    /// directory is an error here, since its content lives in the lowers: use
    /// [`write_changeset`] with the merged view.
    pub fn to_oci_tar(&self, writer: impl Write) -> Result<(), ImageError> {
        write_changeset("-", self, None, TRUSTED_PREFIX, writer)
    }
}

/// Reads the tar at `path` (see [`read_tar`]).
pub fn read_tar_file(path: &std::path::Path) -> Result<FlatLayer, ImageError> {
    let shown = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| ImageError::whole(&shown, format!("opening: {e}")))?;
    read_tar(&shown, std::io::BufReader::new(f))
}

/// The stream with any gzip or zstd compression taken off, by the magic bytes at its start
/// (gzip `1f 8b`, RFC 1952; zstd `28 b5 2f fd`, RFC 8878).
pub(crate) fn decompressed<'r>(source: &str, mut r: impl Read + 'r) -> Result<Box<dyn Read + 'r>, ImageError> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match r.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::whole(source, format!("reading: {e}"))),
        }
    }
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(r);
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(head))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        let peek = Peek { inner: head, head: None };
        let dec = ruzstd::decoding::StreamingDecoder::new(peek)
            .map_err(|e| ImageError::whole(source, format!("zstd stream: {e}")))?;
        Box::new(ZstdFrames { dec: Some(dec) })
    } else {
        Box::new(head)
    })
}

/// A reader with one byte put back in front.
struct Peek<R> {
    inner: R,
    head: Option<u8>,
}

impl<R: Read> Read for Peek<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.head.take(), buf.first_mut()) {
            (Some(b), Some(first)) => {
                *first = b;
                Ok(1)
            }
            (head, _) => {
                self.head = head;
                self.inner.read(buf)
            }
        }
    }
}

/// A zstd stream of one or more frames, decoded one after the other (RFC 8878, 3.1: a
/// stream is a sequence of frames; `pzstd` and seekable zstd write several).
struct ZstdFrames<R: Read> {
    dec: Option<ruzstd::decoding::StreamingDecoder<Peek<R>, ruzstd::decoding::FrameDecoder>>,
}

impl<R: Read> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(dec) = self.dec.as_mut() else { return Ok(0) };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The frame is done: is there another?
            let mut rest = self.dec.take().expect("a decoder").into_inner();
            let mut b = [0u8; 1];
            let k = loop {
                match rest.read(&mut b) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    other => break other?,
                }
            };
            if k == 0 {
                return Ok(0);
            }
            rest.head = Some(b[0]);
            let dec = ruzstd::decoding::StreamingDecoder::new(rest)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("zstd frame: {e}")))?;
            self.dec = Some(dec);
        }
    }
}

/// A reader that remembers whether its source ran dry, and how much it gave: a tar that
/// ends without its end-of-archive block is truncated.
struct Ends<R> {
    inner: R,
    read: u64,
    dry: bool,
}

impl<R: Read> Read for Ends<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.dry = true;
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// The layer path of a tar entry's name: relative to the layer root, `.` components and a
/// leading `./` dropped. Absolute paths, `..` components and paths deeper than
/// [`DEPTH_MAX`] are refused.
fn layer_path(name: &str) -> Result<Vec<&str>, String> {
    if name.starts_with('/') {
        return Err("an absolute path; a layer's entries are relative to its root".into());
    }
    let comps: Vec<&str> = name.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    if comps.contains(&"..") {
        return Err("a `..` component, which would leave the layer".into());
    }
    if comps.len() > DEPTH_MAX {
        return Err(format!("{} components, deeper than {DEPTH_MAX}, the most a layer may have", comps.len()));
    }
    Ok(comps)
}

fn joined(comps: &[&str]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(c);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// A layer being read from a tar.
struct Reader<'s> {
    source: &'s str,
    layer: Layer,
    /// Each whiteout's layer path and the entry that made it.
    whiteouts: BTreeMap<String, String>,
    /// Each other path the layer has from an entry (the entry's own and its parents'), and
    /// the first entry that made it.
    present: BTreeMap<String, String>,
}

/// Reads an OCI or Docker layer tar (plain, gzip or zstd) from `reader`, into overlay's
/// on-disk form: `.wh.NAME` becomes a character device 0/0 `NAME`, `.wh..wh..opq` the
/// xattr `trusted.overlay.opaque=y` on its directory. `source` names the stream in errors.
/// See [`crate::image::oci`] for what is refused.
pub fn read_tar(source: &str, reader: impl Read) -> Result<FlatLayer, ImageError> {
    let stream = decompressed(source, reader)?;
    let mut archive = tar::Archive::new(Ends { inner: stream, read: 0, dry: false });
    let entries = archive.entries().map_err(|e| ImageError::whole(source, format!("reading the tar: {e}")))?;
    let mut r = Reader { source, layer: Layer::new(), whiteouts: BTreeMap::new(), present: BTreeMap::new() };
    let mut last = String::from("(the start)");
    for entry in entries {
        let entry =
            entry.map_err(|e| ImageError::whole(source, format!("reading the tar after entry {last:?}: {e}")))?;
        last = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        r.entry(entry, &last)?;
    }
    // The tar ends at its first zero block (end of archive); a stream that ran dry before
    // one is cut short, unless it is empty.
    let ends = archive.into_inner();
    if ends.dry && ends.read > 0 {
        return Err(ImageError::whole(
            source,
            format!("truncated: the stream ends after entry {last:?} without the tar's end-of-archive block"),
        ));
    }
    if let Some((path, by)) = r.whiteouts.iter().find(|(p, _)| r.present.contains_key(*p)) {
        return Err(ImageError::at(
            source,
            by.clone(),
            format!(
                "a whiteout of {path} in the same layer as the entry {:?} it would hide; layer.md: a whiteout \
                 applies only to lower layers",
                r.present[path]
            ),
        ));
    }
    Ok(r.layer.to_flat())
}

impl Reader<'_> {
    fn err(&self, entry: &str, message: impl Into<String>) -> ImageError {
        ImageError::at(self.source, entry, message)
    }

    /// Records that `comps` and its parents are in the layer, made by entry `name`.
    fn mark_present(&mut self, comps: &[&str], name: &str) {
        for k in 1..=comps.len() {
            self.present.entry(joined(&comps[..k])).or_insert_with(|| name.to_owned());
        }
    }

    /// The directory at `comps`, with its parents, each made (mode 0755) where missing, as
    /// tar extractors make missing parents; see [`Reader::put_dir`] for one made over a
    /// non-directory.
    fn dir_at(&mut self, comps: &[&str]) -> crate::layer::Ino {
        let mut dir = self.layer.root();
        for k in 1..=comps.len() {
            dir = match self.layer.child(dir, comps[k - 1]) {
                Some(ino) if self.layer.get(ino).is_dir() => ino,
                _ => self.put_dir(&comps[..k], Inode::dir(0o755)),
            };
        }
        dir
    }

    /// Puts directory `inode` at `comps`, whose parents are directories. A directory that
    /// replaces a non-directory of this same layer is opaque: in the changeset the
    /// non-directory had already replaced whatever the layers below hold there, and overlay
    /// would otherwise merge that content back in (the rule of a whiteout followed by a
    /// `mkdir`: overlayfs.rst, "whiteouts and opaque directories").
    fn put_dir(&mut self, comps: &[&str], inode: Inode) -> crate::layer::Ino {
        let path = joined(comps);
        let replaces = self.layer.walk(comps.iter().copied()).is_some();
        let ino = self.layer.put(&path, inode);
        if replaces {
            self.layer.set_xattr(ino, &format!("{TRUSTED_PREFIX}opaque"), b"y");
        }
        ino
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>, name: &str) -> Result<(), ImageError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let utf8 = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| self.err(name, "the entry's name is not UTF-8"))?;
        let comps = layer_path(&utf8).map_err(|m| self.err(name, m))?;
        let base = comps.last().copied().unwrap_or("");
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            let parent = &comps[..comps.len() - 1];
            self.mark_present(parent, name);
            if base == OPAQUE_MARKER {
                let dir = self.dir_at(parent);
                self.layer.set_xattr(dir, &format!("{TRUSTED_PREFIX}opaque"), b"y");
            } else if base.starts_with(META_PREFIX) {
                // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): containerd and Docker skip it.
            } else if hidden.is_empty() {
                return Err(self.err(name, "a whiteout `.wh.` with no name after it"));
            } else {
                self.dir_at(parent);
                let mut path = joined(parent);
                if !path.ends_with('/') {
                    path.push('/');
                }
                path.push_str(hidden);
                self.layer.put(&path, Inode::whiteout());
                self.whiteouts.insert(path, name.to_owned());
            }
            return Ok(());
        }
        let h = entry.header();
        let meta = |what: &str, v: std::io::Result<u64>| -> Result<u32, ImageError> {
            let v = v.map_err(|e| self.err(name, format!("its {what}: {e}")))?;
            u32::try_from(v).map_err(|_| self.err(name, format!("its {what} {v} does not fit in 32 bits")))
        };
        let mode = meta("mode", h.mode().map(u64::from))? & 0o7777;
        let uid = meta("uid", h.uid())?;
        let gid = meta("gid", h.gid())?;
        let dev = |v: std::io::Result<Option<u32>>| v.map(|d| d.unwrap_or(0));
        let (major, minor) = match kind {
            tar::EntryType::Char | tar::EntryType::Block => (
                dev(h.device_major()).map_err(|e| self.err(name, format!("its device major: {e}")))?,
                dev(h.device_minor()).map_err(|e| self.err(name, format!("its device minor: {e}")))?,
            ),
            _ => (0, 0),
        };
        let size = entry.size();
        let mut xattrs: Xattrs = BTreeMap::new();
        let mut libarchive: Xattrs = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions().map_err(|e| self.err(name, format!("its PAX records: {e}")))? {
            for ext in exts {
                let ext = ext.map_err(|e| self.err(name, format!("its PAX records: {e}")))?;
                let key = ext.key().map_err(|_| self.err(name, "a PAX record's key is not UTF-8"))?;
                if let Some(x) = key.strip_prefix(PAX_XATTR) {
                    xattrs.insert(escaped(x), ext.value_bytes().to_vec());
                } else if let Some(x) = key.strip_prefix(PAX_LIBARCHIVE_XATTR) {
                    let (k, v) = libarchive_xattr(x, ext.value_bytes()).ok_or_else(|| {
                        self.err(name, format!("its PAX record {key:?} is not URL-encoded and base64"))
                    })?;
                    libarchive.insert(escaped(&k), v);
                }
            }
        }
        // bsdtar writes each xattr both ways; the SCHILY record, raw bytes, wins.
        for (k, v) in libarchive {
            xattrs.entry(k).or_insert(v);
        }
        let path = joined(&comps);
        let link_target = || -> Result<String, ImageError> {
            let t = entry.link_name_bytes().ok_or_else(|| self.err(name, "a link with no target"))?;
            String::from_utf8(t.into_owned()).map_err(|_| self.err(name, "its link target is not UTF-8"))
        };
        let kind = match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if size > FILE_SIZE_MAX {
                    return Err(self.err(
                        name,
                        format!("a declared size of {size} bytes, over the {FILE_SIZE_MAX} a file may have here"),
                    ));
                }
                NodeKind::File(Default::default())
            }
            tar::EntryType::Directory => NodeKind::Dir(Default::default()),
            tar::EntryType::Symlink => NodeKind::Symlink(link_target()?.into()),
            tar::EntryType::Link => {
                let target = link_target()?;
                let to = layer_path(&target).map_err(|m| self.err(name, format!("a hard link to {target:?}: {m}")))?;
                if comps.is_empty() {
                    return Err(self.err(name, "a hard link as the layer root"));
                }
                self.mark_present(&comps, name);
                return match self.layer.put_link(&path, &joined(&to)) {
                    Some(_) => Ok(()),
                    None => Err(self.err(
                        name,
                        format!("a hard link to {target:?}, which is not an earlier non-directory entry of this layer"),
                    )),
                };
            }
            tar::EntryType::Char => NodeKind::Char(major, minor),
            tar::EntryType::Block => NodeKind::Block(major, minor),
            tar::EntryType::Fifo => NodeKind::Fifo,
            other => return Err(self.err(name, format!("entry type {other:?}, which a layer cannot hold"))),
        };
        let data = if matches!(kind, NodeKind::File(_)) {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(|e| self.err(name, format!("reading its data: {e}")))?;
            if data.len() as u64 != size {
                return Err(self.err(name, format!("truncated: {} of its {size} bytes", data.len())));
            }
            Some(data)
        } else {
            None
        };
        let node = FlatNode {
            kind: kind.file_type(),
            mode,
            uid,
            gid,
            data: data.map(crate::layer::FileData::from),
            target: match &kind {
                NodeKind::Symlink(t) => Some(t.to_string()),
                _ => None,
            },
            rdev: matches!(kind, NodeKind::Char(..) | NodeKind::Block(..)).then_some((major, minor)),
            xattrs,
        };
        let mut inode = node.to_inode();
        self.mark_present(&comps, name);
        if comps.is_empty() {
            // `./`: the layer root's own metadata.
            if !inode.is_dir() {
                return Err(self.err(name, "the layer root must be a directory"));
            }
            let root = self.layer.root();
            self.layer.update(root, |r| keep_entries(r, inode));
            return Ok(());
        }
        self.dir_at(&comps[..comps.len() - 1]);
        match self.layer.walk(comps.iter().copied()) {
            // A directory entry again: its metadata changes, its content stays (as tar
            // extraction over an existing directory leaves it).
            Some(ino) if inode.is_dir() && self.layer.get(ino).is_dir() => {
                let opaque = self.layer.get(ino).xattrs.get(&format!("{TRUSTED_PREFIX}opaque")).cloned();
                self.layer.update(ino, |d| keep_entries(d, inode));
                if let Some(v) = opaque {
                    self.layer.set_xattr(ino, &format!("{TRUSTED_PREFIX}opaque"), &v);
                }
            }
            _ if inode.is_dir() => {
                self.put_dir(&comps, inode);
            }
            _ => {
                inode.nlink = 0;
                self.layer.put(&path, inode);
            }
        }
        Ok(())
    }
}

type Xattrs = BTreeMap<String, Vec<u8>>;

/// A `LIBARCHIVE.xattr.NAME` record's name (URL-encoded: `%XX` escapes) and value (base64,
/// with or without `=` padding), decoded; `None` when either is malformed or the name is not
/// UTF-8.
fn libarchive_xattr(name: &str, value: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut n = Vec::with_capacity(name.len());
    let mut bytes = name.bytes();
    while let Some(c) = bytes.next() {
        if c == b'%' {
            let (h, l) = (bytes.next().and_then(crate::hex::digit)?, bytes.next().and_then(crate::hex::digit)?);
            n.push(h << 4 | l);
        } else {
            n.push(c);
        }
    }
    let sextet = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = value.strip_suffix(b"==").or(value.strip_suffix(b"=")).unwrap_or(value).to_vec();
    if digits.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= u32::from(sextet(c)?) << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some((String::from_utf8(n).ok()?, out))
}

/// The name under which a file's own xattr `name` is stored in overlay's form: a
/// `trusted.overlay.X` of the image's file is `trusted.overlay.overlay.X` in a layer, so
/// that it reads back as itself through the mount and is never taken for overlay's own
/// mark (overlayfs.rst, "Nesting overlayfs mounts"; kernel: `ovl_xattr_escape_name`).
fn escaped(name: &str) -> String {
    match name.strip_prefix(TRUSTED_PREFIX) {
        Some(rest) => format!("{TRUSTED_PREFIX}overlay.{rest}"),
        None => name.to_owned(),
    }
}

/// Gives directory `d` the metadata of `new`, keeping its entries and link count.
fn keep_entries(d: &mut Inode, mut new: Inode) {
    new.kind = d.kind.clone();
    new.nlink = d.nlink;
    *d = new;
}

// ---------------------------------------------------------------------------------------
// Out.

/// Writes `upper` as an OCI layer changeset to `writer`, deterministically (see
/// [`crate::image::oci`]). `prefix` is the mount's private xattr prefix
/// (`trusted.overlay.`, or `user.overlay.` under `userxattr`); `merged` is the mount's
/// merged view, needed only when the upper has a redirected directory or a metacopy file,
/// whose content lives in the lowers. `source` names the output in errors.
pub fn write_changeset(
    source: &str,
    upper: &Layer,
    merged: Option<&MergedTree>,
    prefix: &str,
    writer: impl Write,
) -> Result<(), ImageError> {
    write_changeset_with(source, upper, merged, &|_| None, prefix, writer)
}

/// [`write_changeset`], with `file_data` giving the whole data of a merged regular file by
/// path where it has it. The merged view holds a file over
/// [`READ_INLINE_MAX`](crate::layer::READ_INLINE_MAX) bytes by its digest only; such a file
/// in a redirected directory, or behind a metacopy file, is written from `file_data`, and
/// without it the export fails rather than write the file short. The model gives it with
/// [`Overlay::file_data`](crate::Overlay::file_data).
pub fn write_changeset_with(
    source: &str,
    upper: &Layer,
    merged: Option<&MergedTree>,
    file_data: &dyn Fn(&str) -> Option<crate::layer::FileData>,
    prefix: &str,
    writer: impl Write,
) -> Result<(), ImageError> {
    let whole = |path: &str, m: &crate::dump::MergedEntry| -> Result<Option<FlatNode>, ImageError> {
        let Some(mut n) = merged_node(m) else { return Ok(None) };
        if n.kind == FileType::File {
            if let Some(data) = file_data(path) {
                n.data = Some(data);
            } else if n.data.is_none() {
                return Err(ImageError::at(
                    source,
                    path,
                    "a file over 64 KiB whose data lives in a lower layer: the merged view holds only its digest",
                ));
            }
        }
        Ok(Some(n))
    };
    let flat = upper.to_flat();
    let mut w = Writer { source, prefix, tar: tar::Builder::new(writer), written: HashMap::new() };
    let nodes: HashMap<&str, &FlatNode> = flat
        .entries
        .iter()
        .filter_map(|e| match e {
            FlatEntry::Node { path, node } => Some((path.as_str(), node)),
            FlatEntry::Link { .. } => None,
        })
        .collect();
    let mut expanded: Option<String> = None;
    for entry in &flat.entries {
        let path = entry.path();
        if let Some(dir) = &expanded {
            if path.strip_prefix(dir.as_str()).is_some_and(|rest| rest.starts_with('/')) {
                continue;
            }
            expanded = None;
        }
        match entry {
            FlatEntry::Link { to, .. } => match w.written.get(to.as_str()).cloned() {
                Some(first) => w.hard_link(path, &first)?,
                // The first name is inside an expanded directory: this one gets a copy.
                None => {
                    let node = nodes[to.as_str()];
                    w.node(path, node)?;
                    w.written.insert(to.clone(), path.to_owned());
                }
            },
            FlatEntry::Node { node, .. } => {
                let private = |n: &str| node.xattrs.get(&format!("{prefix}{n}"));
                let xwhiteout = node.kind == FileType::File
                    && node.data.as_ref().is_none_or(|d| d.is_empty())
                    && private("whiteout").is_some();
                if (node.kind == FileType::Char && node.rdev == Some((0, 0))) || xwhiteout {
                    // An xattr whiteout hides its name from lookup as a char 0/0 does
                    // (`ovl_path_is_whiteout`; readdir may still list it, which a changeset
                    // cannot say): both are the changeset's `.wh.NAME`.
                    w.marker(path, &whiteout_name(path))?;
                } else if node.kind == FileType::Dir && private("redirect").is_some() {
                    let merged = merged.ok_or_else(|| {
                        ImageError::at(source, path, "a redirected directory: its content needs the merged view")
                    })?;
                    w.node(path, node)?;
                    w.marker(path, &format!("{path}/{OPAQUE_MARKER}"))?;
                    let under = format!("{path}/");
                    for (p, m) in merged.range(under.clone()..).take_while(|(p, _)| p.starts_with(&under)) {
                        if let Some(n) = whole(p, m)? {
                            w.node_as(p, &n, true)?;
                        }
                    }
                    expanded = Some(path.to_owned());
                } else if node.kind == FileType::File && private("metacopy").is_some() {
                    let m = match merged.and_then(|m| m.get(path)) {
                        Some(m) => whole(path, m)?,
                        None => None,
                    }
                    .ok_or_else(|| ImageError::at(source, path, "a metacopy file: its data needs the merged view"))?;
                    w.node(path, &FlatNode { data: m.data, ..node.clone() })?;
                    w.written.insert(path.to_owned(), path.to_owned());
                } else {
                    w.node(path, node)?;
                    w.written.insert(path.to_owned(), path.to_owned());
                    if node.kind == FileType::Dir && private("opaque").map(|v| &v[..]) == Some(b"y") {
                        w.marker(path, &format!("{path}/{OPAQUE_MARKER}"))?;
                    }
                }
            }
        }
    }
    w.tar.into_inner().and_then(|mut out| out.flush()).map_err(|e| ImageError::whole(source, format!("writing: {e}")))
}

/// The changeset name of the whiteout of `path`: `.wh.` before its last component.
fn whiteout_name(path: &str) -> String {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    format!("{dir}/{WHITEOUT_PREFIX}{name}")
}

/// An entry of the merged view as a node; `None` for a listed name `lstat` cannot find.
pub fn merged_node(m: &crate::dump::MergedEntry) -> Option<FlatNode> {
    let st = m.stat.as_ref().ok()?;
    Some(FlatNode {
        kind: st.kind,
        mode: st.mode & 0o7777,
        uid: st.uid,
        gid: st.gid,
        data: m.data.clone().map(crate::layer::FileData::from),
        target: m.target.clone(),
        rdev: matches!(st.kind, FileType::Char | FileType::Block).then_some(st.rdev),
        xattrs: m.xattrs.clone(),
    })
}

struct Writer<'s, W: Write> {
    source: &'s str,
    prefix: &'s str,
    tar: tar::Builder<W>,
    /// Each upper path written as a node, and the tar path a hard link to it names.
    written: HashMap<String, String>,
}

/// A GNU header with the fields every entry shares: mtime 0, no user or group names.
fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(0);
    h.set_size(0);
    h
}

impl<W: Write> Writer<'_, W> {
    /// Writes the upper's `node` at `path` (see [`Writer::node_as`]).
    fn node(&mut self, path: &str, node: &FlatNode) -> Result<(), ImageError> {
        self.node_as(path, node, false)
    }

    fn io(&self, path: &str, r: std::io::Result<()>) -> Result<(), ImageError> {
        r.map_err(|e| ImageError::at(self.source, path, format!("writing: {e}")))
    }

    /// The tar name of layer path `path`: relative, a directory's with a trailing `/`.
    fn name(path: &str, dir: bool) -> String {
        let rel = path.trim_start_matches('/');
        if dir {
            format!("{rel}/")
        } else {
            rel.to_owned()
        }
    }

    /// An empty regular file, mode 0: a whiteout or the opaque marker.
    fn marker(&mut self, about: &str, name: &str) -> Result<(), ImageError> {
        let mut h = header(tar::EntryType::Regular, 0, 0, 0);
        let r = self.tar.append_data(&mut h, Self::name(name, false), std::io::empty());
        self.io(about, r)
    }

    fn hard_link(&mut self, path: &str, to: &str) -> Result<(), ImageError> {
        let mut h = header(tar::EntryType::Link, 0, 0, 0);
        let r = self.tar.append_link(&mut h, Self::name(path, false), Self::name(to, false));
        self.io(path, r)
    }

    /// Writes `node` at `path`. Its xattrs are as on disk (overlay's own left out, escaped
    /// ones unescaped), or, for a node of the merged view (`shown`), as the mount shows them
    /// already.
    fn node_as(&mut self, path: &str, node: &FlatNode, shown: bool) -> Result<(), ImageError> {
        let xattrs: Vec<(String, &[u8])> = node
            .xattrs
            .iter()
            .filter_map(|(k, v)| {
                let k = if shown { Some(k.clone()) } else { crate::whiteout::unescape_xattr_under(self.prefix, k) };
                k.map(|k| (format!("{PAX_XATTR}{k}"), &v[..]))
            })
            .collect();
        if !xattrs.is_empty() {
            let r = self.tar.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), *v)));
            self.io(path, r)?;
        }
        let kind = match node.kind {
            FileType::Dir => tar::EntryType::Directory,
            FileType::File => tar::EntryType::Regular,
            FileType::Symlink => tar::EntryType::Symlink,
            FileType::Char => tar::EntryType::Char,
            FileType::Block => tar::EntryType::Block,
            FileType::Fifo => tar::EntryType::Fifo,
        };
        let mut h = header(kind, node.mode, node.uid, node.gid);
        let name = Self::name(path, node.kind == FileType::Dir);
        let r = match node.kind {
            FileType::Symlink => self.tar.append_link(&mut h, name, node.target.as_deref().unwrap_or_default()),
            FileType::File => {
                let data = node.data.as_ref().map(|d| d.to_vec()).unwrap_or_default();
                h.set_size(data.len() as u64);
                self.tar.append_data(&mut h, name, &data[..])
            }
            FileType::Char | FileType::Block => {
                let (a, b) = node.rdev.unwrap_or((0, 0));
                let r = h.set_device_major(a).and_then(|()| h.set_device_minor(b));
                r.and_then(|()| self.tar.append_data(&mut h, name, std::io::empty()))
            }
            FileType::Dir | FileType::Fifo => self.tar.append_data(&mut h, name, std::io::empty()),
        };
        self.io(path, r)
    }
}
