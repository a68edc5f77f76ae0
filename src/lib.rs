//! ovlsim: an exact, pure in-memory model of Linux OverlayFS.
#![deny(missing_docs)]

pub mod backend;
pub mod copy_up;
pub mod errno;
pub mod inode;
pub mod kernel;
pub mod layer;
pub mod lookup;
pub mod mount;
pub mod ops;
pub mod overlay;
pub mod path;
pub mod readdir;
pub mod scenario;
pub mod whiteout;

pub use backend::{Backend, Command, ModelBackend, Reply};
pub use errno::Errno;
pub use layer::{FileType, Inode, Layer};
pub use mount::{Options, RedirectDir};
pub use ops::{Op, Outcome, Stat};
pub use overlay::{Event, LayerRef, Overlay};
