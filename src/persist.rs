//! Writing the project's own files so that nothing is ever lost.
//!
//! Every file ovlsim writes (a recorded scenario, a divergence, a regression seed file) goes
//! through [`write_atomic`]: the bytes go to a temporary file in the same directory, are
//! flushed to disk, and the temporary file is renamed over the target. A kill, a full disk
//! or a file-size limit at any point leaves either the old file, whole, or the new one,
//! whole; never an empty or cut file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` atomically: a temporary file beside it (`.NAME.ovlsim-tmp.PID.N`),
/// `fsync`, then `rename` over `path`, then `fsync` of the directory. A symlink at `path` is
/// followed: its target is replaced, the link stays. An existing file keeps its permission
/// bits. On any error the temporary file is removed and `path` is untouched; the error
/// names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let named = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let target = resolve_symlink(path).map_err(named)?;
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target.file_name().ok_or_else(|| named(std::io::Error::other("not a file name")))?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.ovlsim-tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        if let Ok(old) = std::fs::metadata(&target) {
            f.set_permissions(old.permissions())?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(named(e));
    }
    // The rename is durable once the directory is; a failure here loses nothing.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `path`, or the file a symlink at `path` points to (followed to the end, at most 40 links
/// as the kernel allows), so that writing replaces the file and keeps the link.
fn resolve_symlink(path: &Path) -> std::io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&p)?;
                p = match p.parent() {
                    Some(d) if to.is_relative() => d.join(to),
                    _ => to,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ovlsim-persist-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let d = scratch("replace");
        let f = d.join("s.yaml");
        std::fs::write(&f, "old").unwrap();
        write_atomic(&f, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn follows_a_symlink_and_keeps_it() {
        let d = scratch("symlink");
        std::fs::write(d.join("real.yaml"), "old").unwrap();
        std::os::unix::fs::symlink("real.yaml", d.join("link.yaml")).unwrap();
        write_atomic(&d.join("link.yaml"), b"new").unwrap();
        assert!(std::fs::symlink_metadata(d.join("link.yaml")).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(d.join("real.yaml")).unwrap(), "new");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_write_names_the_path_and_keeps_the_original() {
        let d = scratch("fail");
        let f = d.join("missing-dir").join("s.yaml");
        let e = write_atomic(&f, b"x").unwrap_err();
        assert!(e.to_string().contains("missing-dir/s.yaml"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
