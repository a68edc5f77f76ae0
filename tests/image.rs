//! Container image layers in and out of the model (`ovlsim::image`): OCI layer tars made
//! here with the `tar` crate (plain, gzip, zstd), directories in overlay's on-disk form
//! made here (as root, with real char 0/0 whiteouts and `trusted.overlay.*` xattrs), the
//! refusals of bad input, and the export of an upper as a changeset.

mod common;

use ovlsim::image::{oci, ImageError};
use ovlsim::layer::{FileType, FlatEntry, FlatLayer, FlatNode, Inode, Layer};
use std::collections::BTreeMap;
use std::io::Write;

/// One entry of a test tar.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Fifo(&'a str),
    Char(&'a str, u32, u32),
    /// A file with PAX xattrs.
    XFile(&'a str, &'a [u8], &'a [(&'a str, &'a [u8])]),
}

/// A plain tar of `entries`, in order, owners 0, mtime 0.
fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::XFile(p, data, xattrs) => {
                let pax: Vec<(String, &[u8])> = xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Symlink(p, t) | E::Hard(p, t) => {
                let kind = if matches!(e, E::Symlink(..)) { tar::EntryType::Symlink } else { tar::EntryType::Link };
                h.set_entry_type(kind);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o600);
                h.set_size(0);
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
            E::Char(p, a, m) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o600);
                h.set_size(0);
                h.set_device_major(*a).unwrap();
                h.set_device_minor(*m).unwrap();
                b.append_data(&mut h, p, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(bytes).unwrap();
    g.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(bytes, ruzstd::encoding::CompressionLevel::Fastest)
}

/// The node at `path` of a flat layer, and whether it is a hard link (to which path).
fn at<'f>(flat: &'f FlatLayer, path: &str) -> &'f FlatEntry {
    flat.entries.iter().find(|e| e.path() == path).unwrap_or_else(|| panic!("no {path} in {flat:#?}"))
}

fn node<'f>(flat: &'f FlatLayer, path: &str) -> &'f FlatNode {
    match at(flat, path) {
        FlatEntry::Node { node, .. } => node,
        other => panic!("{path} is {other:?}"),
    }
}

/// A `security.capability` value tmpfs takes: a v2 header (`VFS_CAP_REVISION_2`), no caps.
const CAPS: &[u8] = &[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A layer with every kind of entry and both changeset markers.
fn sample() -> Vec<u8> {
    tar_of(&[
        E::Dir("./", 0o755),
        E::Dir("./etc/", 0o750),
        E::File("./etc/hosts", b"127.0.0.1 localhost\n", 0o644),
        E::Hard("./etc/hosts.bak", "./etc/hosts"),
        E::Symlink("./etc/localtime", "/usr/share/zoneinfo/UTC"),
        E::File("./etc/.wh.passwd", b"", 0o644),
        E::Dir("./var/", 0o755),
        E::File("./var/.wh..wh..opq", b"", 0o644),
        E::File("./var/new", b"n", 0o600),
        E::Fifo("./run.fifo"),
        E::Char("./null", 1, 3),
        E::XFile("./caps", b"bin", &[("security.capability", CAPS), ("user.k", b"v")]),
        E::File("./.wh..wh.plnk", b"", 0o644),
    ])
}

#[test]
fn oci_tar_markers_become_overlay_form() {
    let flat = oci::read_tar("sample.tar", &sample()[..]).unwrap();
    let wo = node(&flat, "/etc/passwd");
    assert_eq!((wo.kind, wo.rdev), (FileType::Char, Some((0, 0))), "a .wh. entry is a char 0/0 whiteout");
    assert!(flat.entries.iter().all(|e| !e.path().contains(".wh.")), "no marker is left as a name: {flat:#?}");
    assert_eq!(node(&flat, "/var").xattrs.get("trusted.overlay.opaque").map(|v| &v[..]), Some(&b"y"[..]));
    assert_eq!(node(&flat, "/etc").mode, 0o750);
    assert_eq!(node(&flat, "/etc/localtime").target.as_deref(), Some("/usr/share/zoneinfo/UTC"));
    assert!(
        matches!(at(&flat, "/etc/hosts.bak"), FlatEntry::Link { .. })
            || matches!(at(&flat, "/etc/hosts"), FlatEntry::Link { .. })
    );
    assert_eq!(node(&flat, "/run.fifo").kind, FileType::Fifo);
    assert_eq!((node(&flat, "/null").kind, node(&flat, "/null").rdev), (FileType::Char, Some((1, 3))));
    let caps = node(&flat, "/caps");
    assert_eq!(caps.xattrs.get("security.capability").map(|v| &v[..]), Some(CAPS));
    assert_eq!(caps.xattrs.get("user.k").map(|v| &v[..]), Some(&b"v"[..]));
    assert_eq!(node(&flat, "/var/new").data.as_ref().map(|d| d.to_vec()), Some(b"n".to_vec()));
    let layer = Layer::from_oci_tar(&sample()[..]).unwrap();
    let hosts = layer.walk(["etc", "hosts"]).unwrap();
    assert_eq!(layer.get(hosts).nlink, 2, "the hard link inside the tar is one inode");
}

#[test]
fn gzip_and_zstd_read_as_plain() {
    let plain = oci::read_tar("p", &sample()[..]).unwrap();
    assert_eq!(oci::read_tar("g", &gzip(&sample())[..]).unwrap(), plain);
    assert_eq!(oci::read_tar("z", &zstd(&sample())[..]).unwrap(), plain);
    // A zstd stream of several frames (as pzstd writes), cut in the middle of an entry.
    let bytes = sample();
    let mut frames = zstd(&bytes[..1000]);
    frames.extend(zstd(&bytes[1000..]));
    assert_eq!(oci::read_tar("z2", &frames[..]).unwrap(), plain);
    // An empty stream is an empty layer.
    assert_eq!(oci::read_tar("e", &b""[..]).unwrap(), Layer::new().to_flat());
}

fn err_of(bytes: &[u8]) -> ImageError {
    match oci::read_tar("bad.tar", bytes) {
        Ok(flat) => panic!("accepted: {flat:#?}"),
        Err(e) => e,
    }
}

/// A tar with one raw header whose name field is `name` (bypassing the tar crate's own
/// checks on paths).
fn raw_tar(name: &str, kind: u8, link: &str) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::new(kind));
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn the_spec_refusals_name_the_entry() {
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (raw_tar("/etc/passwd", b'0', ""), "/etc/passwd", "absolute path"),
        (raw_tar("a/../../x", b'0', ""), "a/../../x", "`..`"),
        (raw_tar("evil", b'1', "../../etc/shadow"), "evil", "`..`"),
        (raw_tar("h", b'1', "missing"), "h", "not an earlier non-directory entry"),
        (tar_of(&[E::Dir("d/", 0o755), E::Hard("h", "d")]), "h", "not an earlier non-directory entry"),
        (tar_of(&[E::File("f", b"x", 0o644), E::File(".wh.f", b"", 0o644)]), ".wh.f", "same layer"),
        (tar_of(&[E::File(".wh.d", b"", 0o644), E::File("d/x", b"x", 0o644)]), ".wh.d", "same layer"),
        (raw_tar("v", b'V', ""), "v", "cannot hold"),
    ];
    for (bytes, entry, says) in cases {
        let e = err_of(&bytes);
        assert_eq!(e.entry.as_deref(), Some(entry), "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert_eq!(e.file, "bad.tar");
    }
}

#[test]
fn truncated_corrupt_huge_and_deep_input_are_errors() {
    let tar = tar_of(&[E::File("big", &[7u8; 5000], 0o644)]);
    // Cut inside the data: the entry is named.
    let e = err_of(&tar[..1500]);
    assert!(e.to_string().contains("big") && e.to_string().contains("truncated"), "{e}");
    // Cut at a block boundary after an entry: no end-of-archive block.
    let whole = tar_of(&[E::File("a", b"a", 0o644), E::File("b", b"b", 0o644)]);
    let e = err_of(&whole[..1024]);
    assert!(e.to_string().contains("end-of-archive") && e.to_string().contains("\"a\""), "{e}");
    let e = err_of(&zstd(&whole[..2048]));
    assert!(e.to_string().contains("end-of-archive") && e.to_string().contains("\"b\""), "{e}");
    // Cut inside a header: the stream as a whole.
    let two = tar_of(&[E::File("a", b"a", 0o644), E::File("b", b"b", 0o644)]);
    let e = err_of(&two[..1024 + 100]);
    assert!(e.to_string().contains("after entry \"a\""), "{e}");
    // A broken checksum.
    let mut bad = two.clone();
    bad[1024 + 3] ^= 0xff;
    assert!(err_of(&bad).to_string().contains("checksum"), "{}", err_of(&bad));
    // Truncated and corrupt gzip and zstd streams.
    for z in [gzip(&tar), zstd(&tar)] {
        let e = err_of(&z[..z.len() / 2]);
        assert!(!e.to_string().is_empty());
        let mut flipped = z.clone();
        let at = z.len() / 2;
        flipped[at] ^= 0x55;
        flipped[at + 1] ^= 0xaa;
        // A flip may still decode to a valid tar (zstd's data blocks carry no checksum
        // without the optional frame checksum); it must never panic, and the output must
        // then differ or be an error.
        if let Ok(f) = oci::read_tar("bad.tar", &flipped[..]) {
            assert_ne!(Some(&f), oci::read_tar("ok", &tar[..]).ok().as_ref());
        }
    }
    // A declared size of 64 GiB with no data behind it.
    let mut h = tar::Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_size(64 << 30);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut huge = h.as_bytes().to_vec();
    huge.extend_from_slice(&[0u8; 1024]);
    let e = err_of(&huge);
    assert_eq!(e.entry.as_deref(), Some("huge"), "{e}");
    assert!(e.to_string().contains("declared size"), "{e}");
    // A path 10,000 components deep (a GNU long name).
    let deep = vec!["a"; 10_000].join("/");
    let e = err_of(&tar_of(&[E::File(&deep, b"x", 0o644)]));
    assert!(e.to_string().contains("10000 components"), "{}", &e.to_string()[e.to_string().len() - 80..]);
}

#[test]
fn export_reads_back_as_the_same_layer() {
    let mut l = Layer::new();
    let d = l.put("/d", Inode::dir(0o700));
    l.set_xattr(d, "trusted.overlay.opaque", b"y");
    l.put("/d/f", Inode::file(b"data", 0o640));
    l.put_link("/g", "/d/f");
    l.put("/gone", Inode::whiteout());
    l.put("/s", Inode::symlink("d/f"));
    let x = l.put("/x", Inode::file(b"", 0o644));
    l.set_xattr(x, "user.note", b"kept");
    let mut long = "n".repeat(200);
    long.push_str("/deep");
    l.put(&format!("/{long}"), Inode::file(b"long", 0o644));
    let mut a = Vec::new();
    l.to_oci_tar(&mut a).unwrap();
    let mut b = Vec::new();
    l.clone().to_oci_tar(&mut b).unwrap();
    assert_eq!(a, b, "byte for byte the same");
    let names: Vec<String> = tar::Archive::new(&a[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    assert!(names.contains(&".wh.gone".to_owned()) && names.contains(&"d/.wh..wh..opq".to_owned()), "{names:?}");
    for e in tar::Archive::new(&a[..]).entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().mtime().unwrap(), 0);
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
    }
    let back = Layer::from_oci_tar(&a[..]).unwrap();
    assert_eq!(back.to_flat(), l.to_flat());
}

#[test]
fn a_redirect_needs_the_merged_view() {
    let mut l = Layer::new();
    let d = l.put("/new", Inode::dir(0o755));
    l.set_xattr(d, "trusted.overlay.redirect", b"old");
    let e = l.to_oci_tar(Vec::new()).unwrap_err();
    assert_eq!(e.entry.as_deref(), Some("/new"));
    assert!(e.message.contains("merged view"), "{e}");
}

/// A file over 64 KiB in a renamed (redirected) directory lives in a lower layer; the
/// merged view holds it by digest only. The export writes it whole from the model, and
/// refuses rather than write it short when it has only the merged view.
#[test]
fn a_large_file_in_a_redirected_dir_is_exported_whole() {
    let big: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8 + 1).collect();
    let mut lower = Layer::new();
    lower.put("/old", Inode::dir(0o755));
    lower.put("/old/big", Inode::file(&big, 0o644));
    let options = ovlsim::Options { redirect_dir: ovlsim::mount::RedirectDir::On, ..Default::default() };
    let mut ov = ovlsim::overlay::Overlay::mount(vec![lower], Some(Layer::new()), options).unwrap();
    let rename = ovlsim::Op::Rename { from: "/old".into(), to: "/new".into(), flags: Default::default() };
    assert_eq!(ov.apply(&rename), ovlsim::ops::Outcome::Ok);
    let merged = ov.clone().dump_merged();
    assert!(merged["/new/big"].data.is_none() && merged["/new/big"].digest.is_some(), "held by digest");

    let e = oci::write_changeset("-", ov.upper().unwrap(), Some(&merged), "trusted.overlay.", Vec::new()).unwrap_err();
    assert_eq!(e.entry.as_deref(), Some("/new/big"), "{e}");

    let mut out = Vec::new();
    oci::write_changeset_with(
        "-",
        ov.upper().unwrap(),
        Some(&merged),
        &|p| ov.file_data(p),
        "trusted.overlay.",
        &mut out,
    )
    .unwrap();
    let mut found = None;
    for e in tar::Archive::new(&out[..]).entries().unwrap() {
        let mut e = e.unwrap();
        if e.path_bytes().as_ref() == b"new/big" {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            found = Some(bytes);
        }
    }
    assert!(found.as_ref() == Some(&big), "new/big written whole: {:?} bytes", found.map(|b| b.len()));
}

// ---------------------------------------------------------------------------------------
// Directories.

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "ovlsim-image-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn from_dir_reads_overlay_form() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let t = TempDir::new("dir");
    let p = |s: &str| t.0.join(s);
    std::fs::create_dir(p("d")).unwrap();
    std::fs::write(p("d/f"), b"data").unwrap();
    std::fs::set_permissions(p("d/f"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::hard_link(p("d/f"), p("g")).unwrap();
    symlink("d/f", p("s")).unwrap();
    rustix::fs::mknodat(rustix::fs::CWD, p("fifo"), rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
    let have_user_xattrs = rustix::fs::setxattr(p("d/f"), "user.k", b"v", rustix::fs::XattrFlags::empty()).is_ok();
    let root = is_root();
    if root {
        let mk = |name: &str, major: u32, minor: u32| {
            let dev = rustix::fs::makedev(major, minor);
            rustix::fs::mknodat(rustix::fs::CWD, p(name), rustix::fs::FileType::CharacterDevice, 0.into(), dev)
                .unwrap();
        };
        mk("gone", 0, 0);
        mk("null", 1, 3);
        rustix::fs::setxattr(p("d"), "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(p("d"), "trusted.overlay.origin", b"\x00\xfb", rustix::fs::XattrFlags::empty()).unwrap();
    } else {
        let _ = writeln!(std::io::stderr(), "SKIPPED (part): from_dir whiteouts and trusted xattrs need root");
    }
    let l = Layer::from_dir(&t.0).unwrap();
    let flat = l.to_flat();
    assert_eq!(node(&flat, "/d/f").data.as_ref().map(|d| d.to_vec()), Some(b"data".to_vec()));
    assert_eq!(node(&flat, "/d/f").mode, 0o640);
    assert!(matches!(at(&flat, "/g"), FlatEntry::Link { .. }) || matches!(at(&flat, "/d/f"), FlatEntry::Link { .. }));
    assert_eq!(node(&flat, "/s").target.as_deref(), Some("d/f"));
    assert_eq!(node(&flat, "/fifo").kind, FileType::Fifo);
    if have_user_xattrs {
        assert_eq!(node(&flat, "/d/f").xattrs.get("user.k").map(|v| &v[..]), Some(&b"v"[..]));
    }
    if root {
        assert_eq!(node(&flat, "/gone").rdev, Some((0, 0)));
        assert_eq!(node(&flat, "/null").rdev, Some((1, 3)));
        let d = &node(&flat, "/d").xattrs;
        assert_eq!(d.get("trusted.overlay.opaque").map(|v| &v[..]), Some(&b"y"[..]));
        assert!(!d.contains_key("trusted.overlay.origin"), "bookkeeping is left out: {d:?}");
    }
}

#[test]
fn from_dir_refuses_too_deep_and_names_the_path() {
    let t = TempDir::new("deep");
    let mut p = t.0.clone();
    // Relative mkdirs keep every path short.
    let mut dir = rustix::fs::open(&p, rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY, 0.into()).unwrap();
    for _ in 0..ovlsim::image::DEPTH_MAX + 1 {
        rustix::fs::mkdirat(&dir, "a", 0o755.into()).unwrap();
        dir = rustix::fs::openat(&dir, "a", rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY, 0.into())
            .unwrap();
    }
    let e = Layer::from_dir(&t.0).unwrap_err();
    assert!(e.message.contains("deeper than"), "{e}");
    assert_eq!(e.entry.as_deref().map(|s| s.matches('/').count()), Some(ovlsim::image::DEPTH_MAX + 1));
    p.push("missing");
    let e = Layer::from_dir(&p).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    // remove_dir_all on a 1,025-deep tree is fine (it is iterative in std).
    drop(t);
}

#[test]
fn a_layer_written_as_a_directory_reads_back() {
    // The same sample read from a tar, and from a directory made by extracting it the way
    // an overlay engine does (markers in overlay form), are the same layer.
    if !is_root() {
        let _ = writeln!(std::io::stderr(), "SKIPPED: a_layer_written_as_a_directory_reads_back needs root (mknod)");
        return;
    }
    let flat = oci::read_tar("sample.tar", &sample()[..]).unwrap();
    let t = TempDir::new("extract");
    for e in &flat.entries {
        let p = t.0.join(e.path().trim_start_matches('/'));
        match e {
            FlatEntry::Link { to, .. } => std::fs::hard_link(t.0.join(to.trim_start_matches('/')), &p).unwrap(),
            FlatEntry::Node { node, .. } => {
                let mode = rustix::fs::Mode::from_raw_mode(node.mode);
                match node.kind {
                    FileType::Dir => std::fs::create_dir(&p).unwrap(),
                    FileType::File => std::fs::write(&p, node.data.as_ref().unwrap().to_vec()).unwrap(),
                    FileType::Symlink => std::os::unix::fs::symlink(node.target.as_deref().unwrap(), &p).unwrap(),
                    FileType::Fifo | FileType::Char | FileType::Block => {
                        let (ft, (a, b)) = match node.kind {
                            FileType::Fifo => (rustix::fs::FileType::Fifo, (0, 0)),
                            FileType::Char => (rustix::fs::FileType::CharacterDevice, node.rdev.unwrap()),
                            _ => (rustix::fs::FileType::BlockDevice, node.rdev.unwrap()),
                        };
                        rustix::fs::mknodat(rustix::fs::CWD, &p, ft, mode, rustix::fs::makedev(a, b)).unwrap();
                    }
                    other => panic!("no such node in these layers: {other:?}"),
                }
                if node.kind != FileType::Symlink {
                    rustix::fs::chmod(&p, mode).unwrap();
                }
                for (k, v) in &node.xattrs {
                    rustix::fs::lsetxattr(&p, k.as_str(), v, rustix::fs::XattrFlags::empty()).unwrap();
                }
            }
        }
    }
    rustix::fs::chmod(&t.0, 0o755.into()).unwrap();
    let back = Layer::from_dir(&t.0).unwrap().to_flat();
    let mut want = flat.clone();
    want.root.xattrs = BTreeMap::new();
    assert_eq!(back.entries, want.entries);
}

/// `Layer::from_dir` on the upper a real kernel overlay left on disk: a lower is built
/// here, an overlay is mounted on it with `mount -t overlay` inside a private mount
/// namespace (`unshare -m`, so nothing is mounted on the host), a file is removed, a
/// directory removed and made again, a file written, a mode changed and a symlink made,
/// and the upper read back is the upper the model leaves after the same operations.
#[test]
fn from_dir_reads_the_upper_a_kernel_overlay_left() {
    use ovlsim::Op;
    if !common::kernel_runs("from_dir of a kernel overlay's upper") {
        return;
    }
    let t = TempDir::new("kernel-upper");
    let p = |s: &str| t.0.join(s);
    for d in ["l/d", "l/x", "u", "w", "m"] {
        std::fs::create_dir_all(p(d)).unwrap();
    }
    for (f, data) in [("l/d/f", "lower data"), ("l/g", "gone soon"), ("l/h", "mode"), ("l/x/a", "a"), ("l/x/b", "b")] {
        std::fs::write(p(f), data).unwrap();
    }
    for d in ["l", "l/d", "l/x", "u"] {
        rustix::fs::chmod(p(d), 0o755.into()).unwrap();
    }
    for f in ["l/d/f", "l/g", "l/h", "l/x/a", "l/x/b"] {
        rustix::fs::chmod(p(f), 0o644.into()).unwrap();
    }
    let script = r#"set -e
cd "$1"
mount -t overlay overlay -o lowerdir=l,upperdir=u,workdir=w m
trap 'umount m' EXIT
rm m/g
rm -r m/x
mkdir -m 755 m/x
printf new | dd of=m/d/f conv=notrunc status=none
chmod 600 m/h
ln -s d/f m/s
"#;
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&t.0)
        .output()
        .expect("unshare runs");
    assert!(out.status.success(), "the overlay script failed: {}", String::from_utf8_lossy(&out.stderr));

    let upper = Layer::from_dir(p("u")).unwrap().to_flat();
    let lower = Layer::from_dir(p("l")).unwrap();
    let mut ov = ovlsim::overlay::Overlay::mount(vec![lower], Some(Layer::new()), ovlsim::Options::default()).unwrap();
    let ops = [
        Op::Unlink { path: "/g".into() },
        Op::Unlink { path: "/x/a".into() },
        Op::Unlink { path: "/x/b".into() },
        Op::Rmdir { path: "/x".into() },
        Op::Mkdir { path: "/x".into(), mode: 0o755 },
        Op::Write { path: "/d/f".into(), at: ovlsim::ops::WriteAt::Offset(0), data: b"new".to_vec() },
        Op::Chmod { path: "/h".into(), mode: 0o600 },
        Op::Symlink { target: "d/f".into(), path: "/s".into() },
    ];
    for op in &ops {
        assert_eq!(ov.apply(op), ovlsim::ops::Outcome::Ok, "{op:?} on the model");
    }
    let mut model = ov.upper().unwrap().to_flat();
    // `from_dir` leaves the kernel's bookkeeping out (origin, impure): so does the compare.
    let bookkeeping = |k: &String| k.starts_with("trusted.overlay.") && !k.ends_with(".opaque");
    for e in &mut model.entries {
        if let FlatEntry::Node { node, .. } = e {
            node.xattrs.retain(|k, _| !bookkeeping(k));
        }
    }
    model.root.xattrs.retain(|k, _| !bookkeeping(k));
    assert_eq!(upper.entries, model.entries, "the kernel's upper, read by from_dir, against the model's");
    assert_eq!(node(&upper, "/g").rdev, Some((0, 0)), "a whiteout");
    assert_eq!(node(&upper, "/x").xattrs.get("trusted.overlay.opaque").map(|v| &v[..]), Some(&b"y"[..]));
    assert_eq!(node(&upper, "/d/f").data.as_ref().map(|d| d.to_vec()), Some(b"newer data".to_vec()));
}

// ---------------------------------------------------------------------------------------
// Properties.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Bytes of a real layer tar (plain, gzip or zstd) with flipped bytes and a cut: an
    /// error or a layer, never a panic.
    #[test]
    fn mutated_tar_bytes_give_errors_not_panics(
        codec in 0..3usize,
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
    ) {
        let plain = sample();
        let mut bytes = match codec { 0 => plain, 1 => gzip(&plain), _ => zstd(&plain) };
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        if let Err(e) = oci::read_tar("m.tar", &bytes[..]) {
            prop_assert_eq!(e.file.as_str(), "m.tar");
        }
    }
}

/// The plain changeset applier's tree: every path but the root, with its node.
type Tree = BTreeMap<String, FlatNode>;

fn remove_tree(tree: &mut Tree, path: &str) {
    tree.remove(path);
    let under = format!("{path}/");
    let gone: Vec<String> =
        tree.range(under.clone()..).take_while(|(k, _)| k.starts_with(&under)).map(|(k, _)| k.clone()).collect();
    for k in gone {
        tree.remove(&k);
    }
}

/// Makes the missing parents of `path` as directories 0755, replacing non-directories (as
/// containerd's applier does, `mkparent`, before it looks at the entry, whiteouts included).
fn make_parents(tree: &mut Tree, path: &str) {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let mut p = String::new();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push('/');
        p.push_str(c);
        if tree.get(&p).map(|n| n.kind) != Some(FileType::Dir) {
            remove_tree(tree, &p);
            tree.insert(p.clone(), FlatNode::of(&Inode::dir(0o755)));
        }
    }
}

/// The parents of `path`, root left out. An entry's parents are its layer's, made by it or
/// not: a layer's tar lists them (the generated ones here may not), and they hold the entry
/// in overlay's form.
fn parents_of(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut p = path;
    while let Some((up, _)) = p.rsplit_once('/') {
        if up.is_empty() {
            break;
        }
        out.push(up.to_owned());
        p = up;
    }
    out
}

/// What one entry of a changeset does.
enum Change {
    /// `.wh..wh..opq` in this directory.
    Opaque(String),
    /// `.wh.NAME`: this path.
    Whiteout(String),
    /// A node at this path; a hard link names its target.
    Add(String, FlatNode, Option<String>),
}

/// A plain changeset applier, not overlayfs (OCI image spec, layer.md, "Applying
/// Changesets"), entries in order: `.wh..wh..opq` empties its directory of what the layers
/// below put there (not of what this layer added), `.wh.NAME` removes NAME; a directory
/// over a directory changes its metadata only, anything else replaces what was at its
/// path; missing parents are made first, for whiteouts too (see [`make_parents`]); a hard
/// link is a copy.
fn apply_changeset(tree: &mut Tree, tar_bytes: &[u8]) {
    let mut changes = Vec::new();
    for e in tar::Archive::new(tar_bytes).entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        if comps.is_empty() {
            continue;
        }
        let parent = comps[..comps.len() - 1].iter().map(|c| format!("/{c}")).collect::<String>();
        let base = comps[comps.len() - 1];
        if base == ".wh..wh..opq" {
            changes.push(Change::Opaque(parent));
            continue;
        }
        if base.starts_with(".wh..wh.") {
            continue;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            changes.push(Change::Whiteout(format!("{parent}/{name}")));
            continue;
        }
        let h = e.header().clone();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                if let Some(k) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(k.to_owned(), x.value_bytes().to_vec());
                }
            }
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        let link = e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap());
        let kind = h.entry_type();
        let ft = match kind {
            tar::EntryType::Directory | tar::EntryType::Link => FileType::Dir,
            tar::EntryType::Regular => FileType::File,
            tar::EntryType::Symlink => FileType::Symlink,
            tar::EntryType::Char => FileType::Char,
            tar::EntryType::Block => FileType::Block,
            tar::EntryType::Fifo => FileType::Fifo,
            other => panic!("entry type {other:?}"),
        };
        let node = FlatNode {
            kind: ft,
            mode: h.mode().unwrap() & 0o7777,
            uid: h.uid().unwrap() as u32,
            gid: h.gid().unwrap() as u32,
            data: (ft == FileType::File).then(|| ovlsim::layer::FileData::from(data)),
            target: if ft == FileType::Symlink { link.clone() } else { None },
            rdev: matches!(ft, FileType::Char | FileType::Block)
                .then(|| (h.device_major().unwrap().unwrap(), h.device_minor().unwrap().unwrap())),
            xattrs,
        };
        let hard = (kind == tar::EntryType::Link)
            .then(|| format!("/{}", link.unwrap().trim_start_matches("./").trim_start_matches('/')));
        changes.push(Change::Add(format!("{parent}/{base}"), node, hard));
    }
    let mut added = std::collections::BTreeSet::new();
    for change in changes {
        match change {
            Change::Opaque(dir) => {
                make_parents(tree, &format!("{dir}/x"));
                added.extend(parents_of(&format!("{dir}/x")));
                let under = format!("{dir}/");
                let gone: Vec<String> = tree
                    .range(under.clone()..)
                    .take_while(|(k, _)| k.starts_with(&under))
                    .map(|(k, _)| k.clone())
                    .filter(|k| !added.contains(k))
                    .collect();
                for k in gone {
                    tree.remove(&k);
                }
            }
            Change::Whiteout(path) => {
                make_parents(tree, &path);
                added.extend(parents_of(&path));
                remove_tree(tree, &path);
            }
            Change::Add(path, node, hard) => {
                let node = match hard {
                    Some(to) => tree.get(&to).cloned().unwrap_or_else(|| panic!("hard link to {to}, not in the tree")),
                    None => node,
                };
                make_parents(tree, &path);
                match tree.get(&path) {
                    Some(old) if old.kind == FileType::Dir && node.kind == FileType::Dir => {}
                    _ => remove_tree(tree, &path),
                }
                added.extend(parents_of(&path));
                tree.insert(path.clone(), node);
                added.insert(path);
            }
        }
    }
}

/// The merged view as the applier's tree: every listed path that `lstat` finds, but the root.
fn merged_as_tree(m: &ovlsim::dump::MergedTree) -> Tree {
    m.iter().filter(|(p, _)| p.as_str() != "/").filter_map(|(p, e)| Some((p.clone(), oci::merged_node(e)?))).collect()
}

/// One entry of a generated lower layer tar.
#[derive(Clone, Debug)]
enum Gen {
    Dir(String),
    File(String, u8),
    Symlink(String),
    Whiteout(String),
    Opaque(String),
}

fn gen_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(&["a", "b", "c"][..]), 1..=3).prop_map(|c| c.join("/"))
}

fn gen_entry() -> impl Strategy<Value = Gen> {
    prop_oneof![
        3 => gen_path().prop_map(Gen::Dir),
        3 => (gen_path(), 0..3u8).prop_map(|(p, d)| Gen::File(p, d)),
        1 => gen_path().prop_map(Gen::Symlink),
        2 => gen_path().prop_map(Gen::Whiteout),
        1 => gen_path().prop_map(Gen::Opaque),
    ]
}

/// A lower layer's tar from generated entries, in the changeset's form.
fn gen_tar(entries: &[Gen]) -> Vec<u8> {
    let marker = |dir: &str, name: &str| if dir.is_empty() { name.to_owned() } else { format!("{dir}/{name}") };
    let split = |p: &str| match p.rsplit_once('/') {
        Some((d, n)) => (d.to_owned(), n.to_owned()),
        None => (String::new(), p.to_owned()),
    };
    let data = [b"x".to_vec(), b"yy".to_vec(), Vec::new()];
    let owned: Vec<(String, Option<Vec<u8>>, u8)> = entries
        .iter()
        .map(|e| match e {
            Gen::Dir(p) => (format!("{p}/"), None, 0),
            Gen::File(p, d) => (p.clone(), Some(data[*d as usize].clone()), 1),
            Gen::Symlink(p) => (p.clone(), None, 2),
            Gen::Whiteout(p) => {
                let (d, n) = split(p);
                (marker(&d, &format!(".wh.{n}")), Some(Vec::new()), 1)
            }
            Gen::Opaque(p) => (marker(p, ".wh..wh..opq"), Some(Vec::new()), 1),
        })
        .collect();
    let es: Vec<E<'_>> = owned
        .iter()
        .map(|(p, d, k)| match k {
            0 => E::Dir(p, 0o755),
            1 => E::File(p, d.as_deref().unwrap(), 0o644),
            _ => E::Symlink(p, "../a"),
        })
        .collect();
    tar_of(&es)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Import a stack of layer tars, run operations on the model, export the upper: the
    /// stack's tars and the export, applied in order by a plain changeset applier, give the
    /// model's merged view (every path `lstat` finds but the root: type, mode, owner, file
    /// data, symlink target, device numbers and xattrs).
    #[test]
    fn exported_upper_applied_on_the_stack_is_the_merged_view(
        stack in proptest::collection::vec(proptest::collection::vec(gen_entry(), 0..8), 1..=3),
        redirect in any::<bool>(),
        ops in proptest::collection::vec(ovlsim::fuzz::gen::op(), 0..16),
    ) {
        model_round_trip(&stack, redirect, &ops)?;
    }
}

/// The model's round trip (see the property above) for one case.
fn model_round_trip(stack: &[Vec<Gen>], redirect: bool, ops: &[ovlsim::Op]) -> Result<(), TestCaseError> {
    let tars: Vec<Vec<u8>> = stack.iter().map(|l| gen_tar(l)).collect();
    let mut lowers = Vec::new();
    for t in &tars {
        match Layer::from_oci_tar(&t[..]) {
            Ok(l) => lowers.push(l),
            // A whiteout beside the name it hides: refused, as layer.md says.
            Err(e) => {
                prop_assert!(e.message.contains("same layer"), "{}", e);
                return Ok(());
            }
        }
    }
    let mut options = ovlsim::Options::default();
    if redirect {
        options.redirect_dir = ovlsim::mount::RedirectDir::On;
    }
    let mut ov = match ovlsim::overlay::Overlay::mount(lowers, Some(Layer::new()), options) {
        Ok(ov) => ov,
        Err(_) => return Ok(()),
    };
    for op in ops {
        ov.apply(op);
    }
    let merged = ov.dump_merged();
    let mut out = Vec::new();
    oci::write_changeset("-", ov.upper().unwrap(), Some(&merged), "trusted.overlay.", &mut out).unwrap();
    let mut tree = Tree::new();
    for t in tars.iter().rev() {
        apply_changeset(&mut tree, t);
    }
    apply_changeset(&mut tree, &out);
    prop_assert_eq!(tree, merged_as_tree(&merged), "ops {:?}", ops);
    Ok(())
}

/// Found by the property at 100,000 cases: a redirected directory's content is written
/// from the merged view, whose xattrs are as the mount shows them; a file's own
/// `trusted.overlay.opaque` (stored escaped) was taken for overlay's and dropped.
#[test]
fn regression_redirected_dir_keeps_a_files_own_overlay_xattr() {
    use ovlsim::ops::RenameFlags;
    let stack = vec![vec![Gen::File("b/b".into(), 0), Gen::Dir("c".into())]];
    let ops = [
        ovlsim::Op::Setxattr { path: "/b/b".into(), name: "trusted.overlay.opaque".into(), value: vec![] },
        ovlsim::Op::Rename { from: "/b".into(), to: "/c/".into(), flags: RenameFlags::default() },
    ];
    model_round_trip(&stack, true, &ops).unwrap();
}

// ---------------------------------------------------------------------------------------
// The spec scenarios' fixtures.

/// The layer tars that the scenarios under `spec/image/` load, made here: the committed
/// files must be these bytes. `OVLSIM_BLESS=1 cargo test --test image spec_fixtures` writes
/// them anew.
fn spec_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let base = tar_of(&[
        E::Dir("./", 0o755),
        E::Dir("etc/", 0o755),
        E::File("etc/hosts", b"127.0.0.1 localhost\n", 0o644),
        E::File("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644),
        E::Hard("etc/passwd-", "etc/passwd"),
        E::Dir("var/", 0o755),
        E::Dir("var/cache/", 0o755),
        E::File("var/cache/old", b"stale\n", 0o644),
        E::File("var/log", b"", 0o644),
        E::Dir("bin/", 0o755),
        E::File("bin/busybox", b"#!busybox\n", 0o755),
        E::Symlink("bin/sh", "busybox"),
    ]);
    let top = tar_of(&[
        E::Dir("etc/", 0o755),
        E::File("etc/.wh.passwd", b"", 0o644),
        E::File("etc/hosts", b"10.0.0.1 app\n", 0o644),
        E::Dir("var/", 0o755),
        E::Dir("var/cache/", 0o700),
        E::File("var/cache/.wh..wh..opq", b"", 0o644),
        E::File("var/cache/fresh", b"new\n", 0o644),
        E::XFile("bin/app", b"#!app\n", &[("user.origin", b"build")]),
    ]);
    let app = tar_of(&[
        E::Dir("app/", 0o755),
        E::Dir("app/lib/", 0o755),
        E::File("app/lib/a.so", b"a\n", 0o644),
        E::File("app/lib/b.so", b"b\n", 0o644),
        E::Dir("app/lib/sub/", 0o755),
        E::File("app/lib/sub/c", b"c\n", 0o644),
    ]);
    vec![("base.tar", base), ("top.tar.gz", gzip(&top)), ("app.tar.zst", zstd(&app))]
}

#[test]
fn spec_fixtures_are_up_to_date() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/image/layers");
    let bless = std::env::var_os("OVLSIM_BLESS").is_some_and(|v| v == "1");
    for (name, bytes) in spec_fixtures() {
        let path = dir.join(name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            ovlsim::persist::write_atomic(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == bytes,
            "{} differs from what this test makes; OVLSIM_BLESS=1 cargo test --test image spec_fixtures writes it",
            path.display()
        );
    }
}

#[test]
fn a_scenario_names_tar_and_dir_layers_relative_to_itself() {
    let t = TempDir::new("scenario");
    std::fs::write(t.0.join("l1.tar"), tar_of(&[E::File("f", b"lower\n", 0o644), E::File("g", b"g", 0o644)])).unwrap();
    std::fs::create_dir_all(t.0.join("l0/d")).unwrap();
    std::fs::write(t.0.join("l0/d/x"), b"x").unwrap();
    let bad = tar_of(&[E::File("f", b"x", 0o644), E::File(".wh.f", b"", 0o644)]);
    std::fs::write(t.0.join("bad.tar"), bad).unwrap();
    let text = |l0: &str, l1: &str| {
        format!(
            "# test\nname: t\nrules: [r]\nlayers:\n  L0: {l0}\n  L1: {l1}\nmount: {{lowers: [L0, L1]}}\nsteps:\n  - read: /f\n    expect: \"lower\\n\"\n  - readdir: /\n    expect: [d, f, g]\n"
        )
    };
    let file = t.0.join("s.yaml");
    std::fs::write(&file, text("!dir l0", "!tar l1.tar")).unwrap();
    let s = ovlsim::scenario::load(&file).unwrap();
    let report = ovlsim::scenario::run(&s, &mut ovlsim::backend::ModelBackend::new());
    assert!(report.passed(), "{}", report.details(10));
    // Written back, the layers keep their tags.
    let yaml = s.to_yaml();
    assert!(yaml.contains("L0: !dir l0") && yaml.contains("L1: !tar l1.tar"), "{yaml}");
    // Errors are located at the layer's line and column and name the entry.
    for (l0, l1, says) in [
        ("!dir l0", "!tar missing.tar", "missing.tar: opening"),
        ("!dir l0", "!tar bad.tar", "entry \".wh.f\""),
        ("!dir nowhere", "!tar l1.tar", "nowhere: opening"),
        ("!dir [x]", "!tar l1.tar", "takes a path"),
    ] {
        std::fs::write(&file, text(l0, l1)).unwrap();
        let e = ovlsim::scenario::load(&file).unwrap_err().to_string();
        let line = if says.contains("nowhere") || says.contains("takes") { 5 } else { 6 };
        assert!(e.contains(&format!("s.yaml:{line}:")) && e.contains(says), "{e}");
    }
}

/// The README's "Container images" example, as written there.
#[test]
fn readme_example_exports_the_whiteout() -> Result<(), Box<dyn std::error::Error>> {
    use ovlsim::{ops::Op, overlay::Overlay, Options};
    let spec = |f: &str| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/image/layers").join(f);
    let base = Layer::from_oci_tar(std::fs::File::open(spec("base.tar"))?)?;
    let top = Layer::from_oci_tar(std::fs::File::open(spec("top.tar.gz"))?)?;
    let mut ov = Overlay::mount(vec![top, base], Some(Layer::new()), Options::default())?;
    ov.apply(&Op::Unlink { path: "/etc/hosts".into() });
    let merged = ov.dump_merged();
    let mut tar = Vec::new();
    oci::write_changeset("upper.tar", ov.upper().unwrap(), Some(&merged), "trusted.overlay.", &mut tar)?;
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()?
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    assert_eq!(names, ["etc/", "etc/.wh.hosts"]);
    Ok(())
}

/// `ovlsim export` writes what the README shows, through `persist::write_atomic`, the same
/// bytes each time.
#[test]
fn export_cli_writes_the_changeset() {
    let t = TempDir::new("export");
    let scenario =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/image/lookup-oci-layers-whiteout-opaque.yaml");
    let run = |out: &std::path::Path| run_with(&scenario, out);
    let (a, b) = (t.0.join("a.tar"), t.0.join("b.tar"));
    let out = run(&a);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("diff_id sha256:941c6a3be3c7531849571528e302ef21562c1519b233ba6be986569e32d72944"));
    assert!(run(&b).status.success());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    // A scenario that cannot be read: a message and a failure status, nothing written.
    let bad = t.0.join("bad.yaml");
    std::fs::write(&bad, "name: x\n").unwrap();
    let c = t.0.join("c.tar");
    let out = run_with(&bad, &c);
    assert!(!out.status.success() && !c.exists(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn run_with(scenario: &std::path::Path, out: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ovlsim"))
        .arg("export")
        .arg(scenario)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap()
}

/// The round trip on the kernel: the layers built from the imported tars on a real tmpfs,
/// mounted, the same random operations, the upper read back from disk and exported; the
/// stack's tars and that export, applied by the plain applier, give the kernel's merged
/// view (compared as in the model's property above).
#[test]
fn kernel_upper_exported_applied_on_the_stack_is_the_merged_view() {
    use ovlsim::backend::{Backend, Command, Reply};
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let Some(k) = common::kernel_or_skip("the image round trip on the kernel") else {
        return;
    };
    let k = std::cell::RefCell::new(k);
    let strategy = (
        proptest::collection::vec(proptest::collection::vec(gen_entry(), 0..8), 1..=3),
        any::<bool>(),
        proptest::collection::vec(ovlsim::fuzz::gen::op(), 0..16),
    );
    let mut runner = TestRunner::new(Config { cases: 500, failure_persistence: None, ..Config::default() });
    let result = runner.run(&strategy, |(stack, redirect, ops)| {
        let fail = |m: String| TestCaseError::fail(m);
        let mut k = k.borrow_mut();
        // A case that failed while mounted left the mount up.
        let _ = k.exec(&Command::Unmount);
        let tars: Vec<Vec<u8>> = stack.iter().map(|l| gen_tar(l)).collect();
        let mut lowers = Vec::new();
        for t in &tars {
            match oci::read_tar("-", &t[..]) {
                Ok(flat) => lowers.push(flat),
                Err(_) => return Ok(()),
            }
        }
        let mut names = Vec::new();
        for (i, flat) in lowers.iter().enumerate() {
            let name = format!("L{i}");
            k.exec(&Command::Layer { name: name.clone(), content: flat.clone() }).map_err(|e| fail(e.to_string()))?;
            names.push(name);
        }
        let empty = Layer::new().to_flat();
        k.exec(&Command::Layer { name: "U".into(), content: empty }).map_err(|e| fail(e.to_string()))?;
        let mut options = ovlsim::Options::default();
        if redirect {
            options.redirect_dir = ovlsim::mount::RedirectDir::On;
        }
        match k.exec(&Command::Mount { lowers: names, upper: Some("U".into()), options }) {
            Ok(Reply::Done) => {}
            other => return Err(fail(format!("mount: {other:?}"))),
        }
        for op in &ops {
            k.exec(&Command::Op(op.clone())).map_err(|e| fail(e.to_string()))?;
        }
        let merged = match k.exec(&Command::DumpMerged) {
            Ok(Reply::Merged(m)) => m,
            other => return Err(fail(format!("dump merged: {other:?}"))),
        };
        k.exec(&Command::Unmount).map_err(|e| fail(e.to_string()))?;
        let upper = match k.exec(&Command::DumpLayer { name: "U".into() }) {
            Ok(Reply::Layer(l)) => Layer::from_flat(&l),
            other => return Err(fail(format!("dump upper: {other:?}"))),
        };
        let mut out = Vec::new();
        oci::write_changeset("-", &upper, Some(&merged), "trusted.overlay.", &mut out)
            .map_err(|e| fail(e.to_string()))?;
        let mut tree = Tree::new();
        for t in tars.iter().rev() {
            apply_changeset(&mut tree, t);
        }
        apply_changeset(&mut tree, &out);
        prop_assert_eq!(tree, merged_as_tree(&merged), "ops {:?}", ops);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// OCI image layouts.

use ovlsim::image::layout;

/// Writes an OCI image layout at `dir` with one manifest named `reference`: `layers` are
/// (blob, uncompressed tar) pairs, base first. Returns the manifest's digest.
fn write_layout(dir: &std::path::Path, reference: &str, layers: &[(Vec<u8>, Vec<u8>)]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let d = layout::sha256(bytes);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).unwrap();
        (d, bytes.len())
    };
    let diff_ids: Vec<String> = layers.iter().map(|(_, plain)| format!("{:?}", layout::sha256(plain))).collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let (cd, cs) = put(config.as_bytes());
    let descs: Vec<String> = layers
        .iter()
        .map(|(blob, _)| {
            let (d, s) = put(blob);
            format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{s}}}"#)
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cs}}},"layers":[{}]}}"#,
        descs.join(",")
    );
    let (md, ms) = put(manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{ms},"annotations":{{"{}":"{reference}"}}}}]}}"#,
        layout::REF_NAME
    );
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    md
}

fn two_layer_image(dir: &std::path::Path) -> String {
    let base = tar_of(&[E::File("f", b"base\n", 0o644), E::File("gone", b"x", 0o644)]);
    let top = tar_of(&[E::File(".wh.gone", b"", 0o644), E::File("new", b"top\n", 0o644)]);
    write_layout(dir, "v1", &[(base.clone(), base), (gzip(&top), top)])
}

#[test]
fn an_oci_layout_is_a_verified_lower_stack() {
    let t = TempDir::new("layout");
    two_layer_image(&t.0);
    let stack = layout::read_stack(&t.0, Some("v1")).unwrap();
    assert_eq!(stack.len(), 2);
    assert_eq!(node(&stack[0], "/gone").rdev, Some((0, 0)), "layer 0 is the top-most");
    assert_eq!(node(&stack[1], "/f").data.as_ref().map(|d| d.to_vec()), Some(b"base\n".to_vec()));
    assert_eq!(layout::read_stack(&t.0, None).unwrap(), stack, "one manifest needs no ref");
    // In a scenario, each layer by its number.
    std::fs::write(
        t.0.join("s.yaml"),
        "# t\nname: t\nrules: [r]\nlayers:\n  L0: !oci {path: ., ref: v1, layer: 0}\n  L1: !oci {path: ., layer: 1}\n\
         mount: {lowers: [L0, L1]}\nsteps:\n  - readdir: /\n    expect: [f, new]\n",
    )
    .unwrap();
    let s = ovlsim::scenario::load(t.0.join("s.yaml")).unwrap();
    let report = ovlsim::scenario::run(&s, &mut ovlsim::backend::ModelBackend::new());
    assert!(report.passed(), "{}", report.details(10));
    let yaml = s.to_yaml();
    assert!(yaml.contains("L0: !oci {path: ., ref: v1, layer: 0}"), "{yaml}");
    assert!(yaml.contains("L1: !oci {path: ., layer: 1}"), "{yaml}");
}

#[test]
fn an_oci_layout_that_does_not_verify_is_an_error() {
    let t = TempDir::new("layout-bad");
    two_layer_image(&t.0);
    let e = layout::read_stack(&t.0, Some("v2")).unwrap_err();
    assert!(e.to_string().contains("0 manifests named \"v2\"; the refs are: v1"), "{e}");
    // A layer blob changed on disk.
    let layers = layout::manifest_layers(&t.0, Some("v1")).unwrap();
    let blob = t.0.join("blobs/sha256").join(layers[1].blob.digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[600] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let e = layout::read_stack(&t.0, Some("v1")).unwrap_err();
    assert_eq!(e.entry.as_deref(), Some(format!("layer {}", layers[1].blob.digest).as_str()), "{e}");
    assert!(e.message.contains("digest is sha256:"), "{e}");
    // A diff_id that does not match: the same layer blob, another config.
    let t2 = TempDir::new("layout-diffid");
    let plain = tar_of(&[E::File("f", b"x", 0o644)]);
    write_layout(&t2.0, "v1", &[(plain.clone(), tar_of(&[E::File("f", b"y", 0o644)]))]);
    let e = layout::read_stack(&t2.0, None).unwrap_err();
    assert!(e.message.contains("diff_id"), "{e}");
    // A digest that would leave blobs/.
    let index = std::fs::read_to_string(t2.0.join("index.json")).unwrap();
    let md = index.split("\"digest\":\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    std::fs::write(t2.0.join("index.json"), index.replace(&md, "sha256:../../../../etc/passwd")).unwrap();
    let e = layout::read_stack(&t2.0, None).unwrap_err();
    assert!(e.message.contains("64 lower-case hex"), "{e}");
    // No index at all.
    let e = layout::read_stack(&t.0.join("nowhere"), None).unwrap_err();
    assert_eq!(e.entry.as_deref(), Some("index.json"), "{e}");
}

/// `ovlsim image DIR --ref TAG`: the layers listed top-most first with their digests, the
/// image as overlay merges it (the whited-out name gone), and `--scenario FILE` writes a
/// scenario over it that loads and runs, and is not written over a second time.
#[test]
fn image_cli_lists_the_layers_and_writes_a_scenario() {
    let t = TempDir::new("image-cli");
    let image = t.0.join("img");
    std::fs::create_dir(&image).unwrap();
    two_layer_image(&image);
    let bin = env!("CARGO_BIN_EXE_ovlsim");
    let out = std::process::Command::new(bin).arg("image").arg(&image).args(["--ref", "v1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let top = text.lines().next().unwrap();
    assert!(top.starts_with("layer 0: sha256:") && top.contains("1 whiteouts"), "{text}");
    assert!(text.contains("/new: "), "{text}");
    assert!(text.contains("/f: ") && !text.contains("/gone"), "the whiteout hides /gone: {text}");

    let file = t.0.join("s/image-merged.yaml");
    std::fs::create_dir(t.0.join("s")).unwrap();
    let made = std::process::Command::new(bin)
        .arg("image")
        .arg(&image)
        .args(["--ref", "v1", "--scenario"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(yaml.contains("L1: !oci {path: ../img, ref: v1, layer: 1}"), "{yaml}");
    let s = ovlsim::scenario::load(&file).unwrap();
    assert_eq!(s.layers.len(), 3, "two image layers and the upper");
    let again = std::process::Command::new(bin)
        .arg("image")
        .arg(&image)
        .args(["--ref", "v1", "--scenario"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "an existing scenario is not replaced");

    let bad = std::process::Command::new(bin).arg("image").arg(&image).args(["--ref", "v2"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("the refs are: v1"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// bsdtar (libarchive) writes an xattr as `LIBARCHIVE.xattr.NAME` (the name URL-encoded,
/// the value base64, unpadded) beside, or instead of, `SCHILY.xattr.NAME`: both are read,
/// and the raw SCHILY value wins where both are given.
#[test]
fn libarchive_xattr_records_are_read() {
    let mut b = tar::Builder::new(Vec::new());
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_path(name).unwrap();
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
    };
    // "value" in base64 without padding; the name has an escaped space.
    b.append_pax_extensions([("LIBARCHIVE.xattr.user.a%20b", &b"dmFsdWU"[..])]).unwrap();
    file(&mut b, "f");
    b.append_pax_extensions([("LIBARCHIVE.xattr.user.k", &b"bGli"[..]), ("SCHILY.xattr.user.k", &b"raw"[..])]).unwrap();
    file(&mut b, "g");
    b.append_pax_extensions([("LIBARCHIVE.xattr.user.k", &b"!!"[..])]).unwrap();
    file(&mut b, "h");
    let bytes = b.into_inner().unwrap();
    let cut = bytes.len() - 3 * 512 - 1024; // the last entry (its PAX header and itself) and the end
    let mut good = bytes[..cut].to_vec();
    good.extend_from_slice(&[0u8; 1024]);
    let flat = oci::read_tar("t.tar", &good[..]).unwrap();
    assert_eq!(node(&flat, "/f").xattrs.get("user.a b").map(|v| &v[..]), Some(&b"value"[..]));
    assert_eq!(node(&flat, "/g").xattrs.get("user.k").map(|v| &v[..]), Some(&b"raw"[..]));
    let e = oci::read_tar("t.tar", &bytes[..]).unwrap_err();
    assert_eq!(e.entry.as_deref(), Some("h"), "{e}");
    assert!(e.message.contains("LIBARCHIVE.xattr.user.k"), "{e}");
}

/// An xattr whiteout in the upper (a zero-size file with the private `whiteout` xattr)
/// hides its name from lookup as a char 0/0 does, and is exported as `.wh.NAME`; a file
/// with data and the same xattr is an ordinary file, exported as one.
#[test]
fn an_xattr_whiteout_in_the_upper_is_exported_as_a_whiteout() {
    let mut l = Layer::new();
    let d = l.put("/d", Inode::dir(0o755));
    l.set_xattr(d, "trusted.overlay.opaque", b"x");
    let a = l.put("/d/a", Inode::file(b"", 0o644));
    l.set_xattr(a, "trusted.overlay.whiteout", b"");
    let b = l.put("/d/b", Inode::file(b"data", 0o644));
    l.set_xattr(b, "trusted.overlay.whiteout", b"");
    let mut out = Vec::new();
    l.to_oci_tar(&mut out).unwrap();
    let names: Vec<String> = tar::Archive::new(&out[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    assert!(names.contains(&"d/.wh.a".to_owned()) && !names.contains(&"d/a".to_owned()), "{names:?}");
    assert!(names.contains(&"d/b".to_owned()) && !names.contains(&"d/.wh..wh..opq".to_owned()), "{names:?}");
}
