//! `ovlsim mount` as a black box: the same layers under the kernel overlay and under the
//! model served through FUSE, the same shell session on both, then the merged trees and the
//! uppers compared exactly.
//!
//! Needs root, overlayfs, `/dev/fuse`, `fusermount3` and `unshare`. Without them the test
//! prints `SKIPPED: ...` to stderr and passes, unless `OVLSIM_REQUIRE_KERNEL=1`, where
//! that is a failure. Everything is mounted inside a private mount namespace (the test
//! re-runs itself under `unshare --mount --propagation private`) on a private tmpfs, and
//! unmounted (lazily, even on a panic) before it ends.

use ovlsim::layer::{FlatEntry, Layer};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that tells the re-run test where its tmpfs goes.
const INNER_DIR: &str = "OVLSIM_FUSE_TEST_DIR";

/// The shell session run in each merged directory: the shell-level actions of issue 11.
/// It ends by printing `find`'s view of the tree (no times, no block counts).
const SESSION: &str = r#"
set -eu
umask 022
echo created > new.txt
echo appended >> a.txt
echo again >> only2
printf 'x%.0s' $(seq 1 5000) >> big
cp -a dir1 dir1.copy
mv u.txt u-moved.txt
mv dir2 dir2-moved
mkdir made && echo m > made/f && mv made made2
mv made2/f made2/g
rm -r dir3
ln shared shared.hard
ln -s dir1/one one.sym
chmod 600 new.txt
chmod 751 dir1
touch only2 dir1/sub/two
mkfifo pipe
rm link
mkdir dir3 && echo back > dir3/new
echo over > updir/file
ls -la > /dev/null
ls -laR . > /dev/null
find . > /dev/null
tar -cf ../t.tar dir1 shared shared.hard one.sym pipe h1 h2
mkdir untar
tar -xpf ../t.tar -C untar
mv untar/dir1 untar/dir1-again
rm untar/h1
find . -printf '%y %m %n %U %G %p %l\n' | LC_ALL=C sort
"#;

/// What the test needs, or why it cannot run.
fn missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    for tool in ["fusermount3", "unshare", "tar"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            return Some(format!("no {tool} on PATH"));
        }
    }
    if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay")) {
        let _ = Command::new("modprobe").arg("overlay").status();
        if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay")) {
            return Some("no overlay filesystem".into());
        }
    }
    None
}

/// The temp dir the tmpfs is mounted on inside the namespace, removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_model_through_fuse_matches_the_kernel_overlay() {
    if let Some(why) = missing() {
        let _ = writeln!(std::io::stderr(), "SKIPPED: ovlsim mount black-box test: {why}");
        if std::env::var("OVLSIM_REQUIRE_KERNEL").as_deref() == Ok("1") {
            panic!("OVLSIM_REQUIRE_KERNEL=1 but the FUSE black-box test cannot run: {why}");
        }
        return;
    }
    let dir = TempDir(std::env::temp_dir().join(format!("ovlsim-fuse-{}", std::process::id())));
    std::fs::create_dir(&dir.0).expect("temp dir");
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args(["--exact", "inner_session_in_private_namespace", "--ignored", "--nocapture", "--test-threads=1"])
        .env(INNER_DIR, &dir.0)
        .output()
        .expect("unshare runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the session in the private namespace failed:\n{text}");
    assert!(text.contains("1 passed"), "the inner test did not run:\n{text}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    assert!(!mounts.contains(&dir.0.display().to_string()), "something stayed mounted on the host:\n{mounts}");
}

/// Mounted things, unmounted lazily and the daemon killed when dropped (even on a panic).
struct Guard {
    kernel: PathBuf,
    fuse: PathBuf,
    daemon: Option<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.fuse).stderr(Stdio::null()).status();
        let _ = Command::new("umount").arg("-l").arg(&self.kernel).stderr(Stdio::null()).status();
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir -p");
    std::fs::write(path, data).expect("write");
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    // SAFETY: valid C strings and a valid buffer for the call.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(r, 0, "lsetxattr {name} on {}: {}", path.display(), std::io::Error::last_os_error());
}

/// The same layers under `base`: two lowers, an upper, a workdir, a mount point.
fn make_layers(base: &Path) {
    let (l1, l2, u) = (base.join("l1"), base.join("l2"), base.join("u"));
    write(&l1.join("a.txt"), b"alpha\n");
    write(&l1.join("dir1/one"), b"1");
    write(&l1.join("dir1/sub/two"), b"22");
    write(&l1.join("dir2/x"), b"x");
    write(&l1.join("dir3/deep/y"), b"y");
    write(&l1.join("dir3/z"), b"z");
    write(&l1.join("shared"), b"shared\n");
    set_xattr(&l1.join("shared"), "user.tag", b"hello");
    write(&l1.join("big"), &vec![b'b'; 100_000]);
    write(&l1.join("h1"), b"hard");
    std::fs::hard_link(l1.join("h1"), l1.join("h2")).expect("link");
    std::os::unix::fs::symlink("a.txt", l1.join("link")).expect("symlink");
    write(&l2.join("a.txt"), b"old");
    write(&l2.join("dir1/from_l2"), b"l2");
    write(&l2.join("only2"), b"only in l2\n");
    write(&u.join("u.txt"), b"upper\n");
    write(&u.join("updir/file"), b"u");
    std::fs::create_dir(base.join("w")).expect("workdir");
    std::fs::create_dir(base.join("m")).expect("mount point");
}

fn options(base: &Path) -> String {
    let d = |n: &str| base.join(n).display().to_string();
    format!("lowerdir={}:{},upperdir={},workdir={}", d("l1"), d("l2"), d("u"), d("w"))
}

fn is_mounted(path: &Path) -> bool {
    let want = format!(" {} ", path.display());
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| m.contains(&want))
}

/// Runs the session in `merged`: its exit status and output.
fn session(merged: &Path) -> (bool, String) {
    let out = Command::new("timeout").args(["120", "sh", "-c", SESSION]).current_dir(merged).output().expect("sh runs");
    let text =
        format!("{}--- stderr ---\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Everything `lstat`, `readlink`, `read` and `l*xattr` say about a tree, by path; hard
/// links as the first path of each inode.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut first: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let rel = format!("/{}", p.strip_prefix(root).expect("below").display());
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        let mut d =
            format!("mode {:o} nlink {} uid {} gid {} rdev {}", m.mode(), m.nlink(), m.uid(), m.gid(), m.rdev());
        if !ft.is_dir() {
            d += &format!(" size {}", m.size());
            let same = first.entry(m.ino()).or_insert_with(|| rel.clone());
            if *same != rel {
                d += &format!(" same-inode-as {same}");
            }
        }
        if ft.is_symlink() {
            d += &format!(" -> {}", std::fs::read_link(&p).expect("readlink").display());
        } else if ft.is_file() {
            let data = std::fs::read(&p).expect("read");
            d += &format!(" data {:?}", String::from_utf8_lossy(&data[..data.len().min(200)]));
        } else if ft.is_dir() {
            let mut names: Vec<PathBuf> =
                std::fs::read_dir(&p).expect("readdir").map(|e| e.expect("entry").path()).collect();
            names.sort();
            d += &format!(" entries {}", names.len());
            stack.extend(names);
        } else {
            assert!(ft.is_fifo() || ft.is_char_device() || ft.is_block_device(), "{rel}: an unexpected type");
        }
        d += &format!(" xattrs {:?}", xattrs(&p));
        out.insert(rel, d);
    }
    out
}

/// A node's xattrs (`l*xattr`), names sorted.
fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "llistxattr {}: {}", path.display(), std::io::Error::last_os_error());
    let names: Vec<String> = buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into())
        .collect();
    let mut out = BTreeMap::new();
    for name in names {
        let c = CString::new(name.clone()).expect("name");
        let mut v = vec![0u8; 65536];
        // SAFETY: valid C strings and buffer.
        let n = unsafe { libc::lgetxattr(p.as_ptr(), c.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(n >= 0, "lgetxattr {name} of {}: {}", path.display(), std::io::Error::last_os_error());
        v.truncate(n as usize);
        out.insert(name, v);
    }
    out
}

/// The differences between two descriptions, one line each.
fn differences(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        if a.get(k) != b.get(k) {
            out.push(format!("{k}:\n  kernel: {:?}\n  model:  {:?}", a.get(k), b.get(k)));
        }
    }
    out
}

/// A layer directory read back in the kernel's on-disk form, by path.
fn upper_of(dir: &Path) -> BTreeMap<String, String> {
    let flat = Layer::from_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).to_flat();
    let mut out = BTreeMap::new();
    out.insert("/".to_owned(), format!("{:?}", flat.root));
    for e in flat.entries {
        match e {
            FlatEntry::Node { path, node } => out.insert(path, format!("{node:?}")),
            FlatEntry::Link { path, to } => out.insert(path, format!("link to {to}")),
        };
    }
    out
}

#[test]
#[ignore = "run by the_model_through_fuse_matches_the_kernel_overlay in a private mount namespace"]
fn inner_session_in_private_namespace() {
    let dir = PathBuf::from(std::env::var_os(INNER_DIR).expect("run by the outer test"));
    run(Command::new("mount").args(["-t", "tmpfs", "ovlsim-fuse-test"]).arg(&dir));
    let (k, f) = (dir.join("kernel"), dir.join("fuse"));
    make_layers(&k);
    make_layers(&f);
    let mut guard = Guard { kernel: k.join("m"), fuse: f.join("m"), daemon: None };
    run(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &options(&k)]).arg(k.join("m")));
    let daemon = Command::new(env!("CARGO_BIN_EXE_ovlsim"))
        .args(["mount", "-o", &options(&f)])
        .arg(f.join("m"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ovlsim mount starts");
    guard.daemon = Some(daemon);
    let start = Instant::now();
    while !is_mounted(&f.join("m")) {
        let exited = guard.daemon.as_mut().and_then(|d| d.try_wait().ok().flatten());
        assert!(exited.is_none(), "ovlsim mount exited before mounting: {exited:?}");
        assert!(start.elapsed() < Duration::from_secs(30), "ovlsim mount did not mount in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (k_ok, k_out) = session(&k.join("m"));
    let (f_ok, f_out) = session(&f.join("m"));
    assert!(k_ok, "the session failed on the kernel overlay:\n{k_out}");
    assert!(f_ok, "the session failed on the model through FUSE:\n{f_out}\n(the kernel's output:\n{k_out})");
    assert_eq!(f_out, k_out, "the session's output differs (left: model, right: kernel)");
    assert!(k_out.lines().count() > 30, "the session listed too little:\n{k_out}");

    let (k_tree, f_tree) = (describe(&k.join("m")), describe(&f.join("m")));
    let diff = differences(&k_tree, &f_tree);
    assert!(diff.is_empty(), "the merged trees differ:\n{}", diff.join("\n"));
    // The same tree, archived: tar reads every entry, its type, mode, owner, size, link
    // target, hard links and user xattrs (times pinned).
    let tar = |m: &Path| {
        let out = Command::new("tar")
            .args(["--sort=name", "--mtime=@0", "--numeric-owner", "--xattrs", "--xattrs-include=user.*"])
            // The pax headers' names carry tar's pid, and their times are not modelled.
            .args(["--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime", "-cf", "-", "."])
            .current_dir(m)
            .output()
            .expect("tar");
        assert!(out.status.success(), "tar in {}: {}", m.display(), String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let (k_tar, f_tar) = (tar(&k.join("m")), tar(&f.join("m")));
    if k_tar != f_tar {
        let at = k_tar.iter().zip(&f_tar).position(|(a, b)| a != b).unwrap_or(k_tar.len().min(f_tar.len()));
        let around =
            |t: &[u8]| String::from_utf8_lossy(&t[at.saturating_sub(200)..(at + 200).min(t.len())]).into_owned();
        panic!(
            "the trees archive differently ({} and {} bytes), first at byte {at}:\n  kernel: {:?}\n  model:  {:?}",
            k_tar.len(),
            f_tar.len(),
            around(&k_tar),
            around(&f_tar)
        );
    }

    // Unmount both; the daemon ends by itself after `fusermount3 -u`.
    run(Command::new("umount").arg(k.join("m")));
    run(Command::new("fusermount3").arg("-u").arg(f.join("m")));
    let mut daemon = guard.daemon.take().expect("daemon");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = daemon.try_wait().expect("wait") {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "ovlsim mount did not exit after fusermount3 -u");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(daemon.stderr.as_mut().expect("stderr"), &mut err);
    assert!(status.success(), "ovlsim mount exited with {status}: {err}");
    assert!(!err.contains("failed"), "ovlsim mount reported a failure: {err}");

    let (k_upper, f_upper) = (upper_of(&k.join("u")), upper_of(&f.join("u")));
    let diff = differences(&k_upper, &f_upper);
    assert!(diff.is_empty(), "the uppers differ:\n{}", diff.join("\n"));
    assert!(k_upper.len() > 10, "the kernel's upper holds too little: {k_upper:?}");

    // SIGTERM (as Ctrl-C's SIGINT) unmounts and ends the daemon with status 0.
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_ovlsim"))
        .args(["mount", "-o", &options(&f)])
        .arg(f.join("m"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ovlsim mount starts");
    let start = Instant::now();
    while !is_mounted(&f.join("m")) {
        assert!(daemon.try_wait().expect("wait").is_none(), "ovlsim mount exited before mounting");
        assert!(start.elapsed() < Duration::from_secs(30), "ovlsim mount did not mount in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read(f.join("m/a.txt")).expect("read through the mount"), b"alpha\nappended\n");
    // SAFETY: kill(2) on the child's pid.
    assert_eq!(unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) }, 0);
    guard.daemon = Some(daemon);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = guard.daemon.as_mut().and_then(|d| d.try_wait().expect("wait")) {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "ovlsim mount did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "ovlsim mount exited with {status} after SIGTERM");
    assert!(!is_mounted(&f.join("m")), "SIGTERM left the mount in place");
    drop(guard);
    run(Command::new("umount").arg(&dir));
}

/// `ovlsim mount` with bad input: (exit success, stderr). It must refuse before mounting,
/// so these run anywhere (no root or FUSE needed).
fn mount_cli(args: &[&str]) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ovlsim"))
        .arg("mount")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ovlsim runs");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(args[args.len() - 1]).status();
            panic!("ovlsim mount {args:?} did not refuse: it mounted or hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().expect("stderr"), &mut err);
    (status.success(), err)
}

#[test]
fn bad_input_is_refused_with_the_kernels_errno_and_nothing_is_mounted() {
    let dir = TempDir(std::env::temp_dir().join(format!("ovlsim-fuse-bad-{}", std::process::id())));
    for d in ["l1", "l2", "u", "w", "m"] {
        std::fs::create_dir_all(dir.0.join(d)).expect("mkdir");
    }
    write(&dir.0.join("file"), b"not a directory");
    let p = |n: &str| dir.0.join(n).display().to_string();
    let good = format!("lowerdir={}:{},upperdir={},workdir={}", p("l1"), p("l2"), p("u"), p("w"));
    let cases: Vec<(Vec<String>, &str)> = vec![
        // The mount point: mount(2) resolves it first (observed on 6.18: `mount` says
        // "mount point does not exist", "mount point is not a directory").
        (vec!["-o".into(), good.clone(), p("nosuch")], "ENOENT: mount point does not exist"),
        (vec!["-o".into(), good.clone(), p("file")], "ENOTDIR: mount point is not a directory"),
        // Layers: a missing path is ENOENT, a file where a directory is needed EINVAL
        // (kernel log on 6.18: "overlay: f is not a directory").
        (
            vec!["-o".into(), format!("lowerdir={},upperdir={},workdir={}", p("nosuch"), p("u"), p("w")), p("m")],
            "ENOENT",
        ),
        (vec!["-o".into(), format!("lowerdir={},upperdir={},workdir={}", p("file"), p("u"), p("w")), p("m")], "EINVAL"),
        (
            vec!["-o".into(), format!("lowerdir={},upperdir={},workdir={}", p("l1"), p("file"), p("w")), p("m")],
            "is not a directory",
        ),
        // Option strings the kernel refuses.
        (vec!["-o".into(), format!("lowerdir={},upperdir={}", p("l1"), p("u")), p("m")], "EINVAL: missing 'workdir'"),
        (vec!["-o".into(), format!("{good},bogus=1"), p("m")], "EINVAL"),
        (vec!["-o".into(), format!("lowerdir={}", p("l1")), p("m")], "EINVAL: at least 2 lowerdir are needed"),
        (vec!["-o".into(), format!("lowerdir={}:{}", p("l1"), p("l1")), p("m")], "ELOOP"),
        // A scenario that cannot be read.
        (vec![p("nosuch.yaml"), p("m")], "nosuch.yaml"),
    ];
    for (args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, err) = mount_cli(&args);
        assert!(!ok, "ovlsim mount {args:?} succeeded");
        assert!(err.contains(want), "ovlsim mount {args:?}: expected {want:?} in: {err}");
        assert!(!err.contains("panicked"), "{err}");
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        assert!(!mounts.contains(&dir.0.display().to_string()), "{args:?} left a mount:\n{mounts}");
    }
}
