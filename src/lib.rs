//! ovlsim: an exact, pure in-memory model of Linux OverlayFS.
//!
//! The model answers every call a user makes on a merged directory with the result, or the
//! errno, that Linux 6.18 gives, in the same precedence, and leaves the upper layer the
//! kernel would leave on disk. A real-kernel oracle ([`kernel`]) replays the same calls on a
//! real overlay mount, so that every rule here is checked against the kernel, not against
//! the documentation.
//!
//! # Glossary
//! - **lower**, **upper**: the read-only layers (`lowerdir=L0:L1`, numbered from 0, the
//!   top-most) and the writable one (`upperdir=`).
//! - **merged**: the view the mount shows; a merged directory is one that exists in two or
//!   more layers.
//! - **whiteout**: a character device 0/0 (or a zero-size file with the
//!   `trusted.overlay.whiteout` xattr) that hides a name of the layers below.
//! - **opaque**: a directory with `trusted.overlay.opaque=y`, which hides everything below.
//! - **copy-up**: copying a lower object (and its parents) into the upper before a change.
//! - **redirect**: `trusted.overlay.redirect` on a renamed directory, naming where its lower
//!   content lives.
//!
//! # Module map
//! | module | concept | kernel |
//! |---|---|---|
//! | [`layer`] | persistent layer trees, inodes, xattrs; what a layer can hold ([`layer::check`]) | the real filesystems (tmpfs) |
//! | [`overlay`] | the mounted overlay, `Clone` in O(1) | `super.c` |
//! | [`mount`] | options and their validation | `params.c` |
//! | [`path`] | resolution in the merged namespace | `fs/namei.c` |
//! | [`lookup`] | per-name merge across layers | `namei.c` |
//! | [`dcache`] | the lower half of lookups, kept per mount ([`CachePolicy`]) | `fs/dcache.c` |
//! | [`icache`] | the overlay inodes still cached: ESTALE, kept lowers | `inode.c` (`ovl_get_inode`) |
//! | [`copy_up`] | copy-up, parents first | `copy_up.c` |
//! | [`whiteout`] | whiteouts, opaque directories, private xattrs | `dir.c`, `util.c`, `xattrs.c` |
//! | [`readdir`] | merged listing, empty-directory check | `readdir.c` |
//! | [`inode`] | what `stat` reports, inode identity | `inode.c` |
//! | [`ops`] | the syscalls: checks first, then the change | `dir.c`, `file.c`, `inode.c` |
//! | [`dump`] | the whole merged view, read as a user reads it | |
//! | [`backend`] | one protocol for the model and the kernel | |
//! | [`kernel`] | the real-mount backend | |
//! | [`scenario`] | YAML scenarios, runner, recorder | |
//! | [`image`] | container image layers: OCI tars, image layouts and overlay directories in, the upper out as a changeset | OCI image spec `layer.md` |
//! | [`params`] | the mount option string (`lowerdir=L0:L1,upperdir=…`), read and checked as `mount(2)` does | `params.c`, `fs_parser.c` |
//! | [`fuse`] | `ovlsim mount`: the model served through FUSE, written through to a real upper | |
//! | [`metacopy`] | `metacopy=on`: metadata-only copy-up, lower data, data copy-up | `copy_up.c`, `namei.c` |
//! | [`index`] | `index=on`, `nfs_export=on`: copy-ups through the workdir index, the merged link count, index whiteouts, the upper root's origin | `copy_up.c`, `namei.c`, `util.c`, `super.c` |
//! | [`indexdir`] | the workdir's index at an `index=on` mount: each entry verified, stale and orphan entries removed or whited out | `readdir.c`, `namei.c`, `super.c` |
//! | [`data_only`] | data-only lower layers: lower data found by an absolute redirect | `namei.c`, `util.c` |
//! | `uuid` | `uuid=`: which origin file handles a mount writes and decodes | `namei.c`, `super.c` |
//! | [`cred`] | callers other than root and umasks; their permission checks are in [`ops`] (`perm`) | `fs/namei.c`, `fs/attr.c`, `inode.c` (`ovl_permission`) |
//!
//! [`kernel`] (with `fuzz`, `conform` and [`image`]) is behind Cargo features (`kernel`,
//! `proptest`, `image`; all on by default, Linux only). Without them the model, scenario
//! parsing and replay, and [`harness`] build on any Unix: see the README, "Cargo features".
//!
//! # A tour
//! ```
//! use ovlsim::layer::{Inode, Layer};
//! use ovlsim::{Errno, Event, Op, Options, Outcome, Overlay};
//!
//! let mut lower = Layer::new();
//! lower.put("/etc/motd", Inode::file(b"hello", 0o644));
//! let mut ov = Overlay::mount(vec![lower], Some(Layer::new()), Options::default()).unwrap();
//!
//! // Reading never copies up.
//! let read = Op::Read { path: "/etc/motd".into() };
//! assert_eq!(ov.apply(&read), Outcome::Data(b"hello".to_vec()));
//! assert!(ov.take_events().is_empty());
//!
//! // Removing a lower file copies its parent up and leaves a whiteout.
//! assert_eq!(ov.apply(&Op::Unlink { path: "/etc/motd".into() }), Outcome::Ok);
//! assert_eq!(
//!     ov.take_events(),
//!     [Event::CopyUp { path: "/etc".into() }, Event::Whiteout { path: "/etc/motd".into() }]
//! );
//! assert_eq!(ov.apply(&read), Outcome::Err(Errno::ENOENT));
//!
//! // A snapshot is an O(1) clone; the two overlays then go their own ways.
//! let snapshot = ov.clone();
//! ov.apply(&Op::Mkdir { path: "/etc/motd".into(), mode: 0o755 });
//! assert!(matches!(snapshot.clone().apply(&Op::Stat { path: "/etc/motd".into() }), Outcome::Err(Errno::ENOENT)));
//!
//! // The upper layer is what the kernel leaves on disk: the new directory is opaque,
//! // because it was made over a whiteout.
//! let upper = ov.upper().unwrap();
//! let dir = upper.walk(["etc", "motd"]).unwrap();
//! assert_eq!(upper.get(dir).xattr("trusted.overlay.opaque"), Some(&b"y"[..]));
//! ```
//!
//! # What the model leaves out
//! - The kernel's bookkeeping xattrs (`trusted.overlay.origin`, `impure`, `uuid`) are not
//!   written to the model's upper; the copy-up origin is kept in [`layer::Inode::origin`]
//!   instead. The kernel backend drops them when it reads a layer back.
//! - Timestamps are not modelled. Every call runs as root with umask 0; the harness mounts
//!   `nodev` and opens with `O_NONBLOCK`, so devices give EACCES and FIFOs never block.
//! - `metacopy=on` is modelled ([`metacopy`]), and data-only lower layers (`::`,
//!   `datadir+=`; [`data_only`]); fs-verity digests (`verity=`) are refused as not
//!   modelled (tmpfs layers have no fs-verity); `index=on` (hard links, the upper root's
//!   origin check) and `nfs_export=on` (everything indexed, index whiteouts) are modelled
//!   ([`index`]), with the file-handle calls on the merged directory ([`export`]),
//!   `index` with `metacopy` included (a lower hard link is copied up metadata only into
//!   the index), and `uuid=` (which origins decode; `src/uuid.rs`). The kernel's inode
//!   cache is modelled as it stands when nothing is evicted ([`icache`], emptied by
//!   [`Overlay::drop_caches`]); eviction under memory pressure, and one lower
//!   non-directory reached under two merged names (an alias of a cached inode), are out
//!   of contract.
//! - Files kept open are modelled through named handles ([`ops::FdOp`], [`fd`]): reads
//!   across a copy-up, the per-handle readdir cache. Handles on FIFOs and seeks to a
//!   non-merged directory's cookies are refused as not modelled.
#![deny(missing_docs)]

pub mod backend;
#[cfg(all(feature = "proptest", target_os = "linux"))]
pub mod conform;
pub mod copy_up;
pub mod cred;
pub mod data_only;
pub mod dcache;
pub mod dialect;
pub mod dump;
pub mod errno;
pub mod export;
pub mod fd;
#[cfg(all(feature = "fuse", target_os = "linux"))]
pub mod fuse;
#[cfg(all(feature = "proptest", target_os = "linux"))]
pub mod fuzz;
pub mod harness;
mod hex;
pub mod icache;
#[cfg(all(feature = "image", target_os = "linux"))]
pub mod image;
pub mod index;
mod index_follow;
pub mod indexdir;
pub mod inode;
#[cfg(all(feature = "kernel", target_os = "linux"))]
pub mod kernel;
pub mod layer;
pub mod lookup;
pub mod metacopy;
pub mod mount;
pub mod ops;
pub mod overlay;
pub mod params;
pub mod path;
pub mod persist;
pub mod readdir;
pub mod scenario;
mod uuid;
pub mod whiteout;

pub use backend::{Backend, Command, ModelBackend, Reply};
pub use dcache::CachePolicy;
pub use errno::Errno;
pub use layer::{FileType, Inode, Layer};
pub use mount::{Options, RedirectDir};
pub use ops::{Op, Outcome, Stat};
pub use overlay::{Event, LayerRef, Overlay};
