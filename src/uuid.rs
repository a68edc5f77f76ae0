//! `uuid=`: how an origin file handle names its lower filesystem (overlayfs.rst "UUID and
//! fsid"; kernel: `fs/overlayfs/namei.c`, `ovl_encode_real_fh`, `ovl_decode_real_fh`;
//! `fs/overlayfs/super.c`, `ovl_fill_super`; `fs/overlayfs/util.c`, `ovl_init_uuid_xattr`).
//!
//! The origin an upper inode records (and the names of index entries, and the upper root's
//! origin checked at an `index=on` mount) is a file handle that holds the lower
//! filesystem's uuid, or a null uuid under `uuid=off`. A handle decodes only on a mount
//! that would have written it so: under `uuid=off`, only handles with a null uuid; under
//! any other value, only those with the filesystem's uuid. So a switch between `uuid=off`
//! and another value loses every origin recorded before it: a copied-up file shows its
//! upper inode number instead of its lower one, a lower hard link indexed before is not
//! found in the index, and an `index=on` mount fails to verify the upper root's origin
//! (ESTALE). `null`, `auto` and `on` write and read the same handles.
//!
//! The model keeps an origin's layer as a [`LayerId`]; a handle written under `uuid=off`
//! is the layer's id with [`NULL_UUID`] set, which no layer's own id has, so that it
//! matches exactly when the kernel's handle would decode.
//!
//! Not modelled: the overlay's own uuid (`null` gives none, `on` and `auto` on a new upper
//! keep a random one in the upper root's `trusted.overlay.uuid` xattr, `auto` on an upper
//! whose root is already impure and has no such xattr falls back to `null`). It is seen
//! only in `statfs`'s `f_fsid`, which no step reads, and the xattr is random, so the kernel
//! backend leaves it out of the upper layer it reads back, as it does `origin` and `impure`.
//! `uuid=off` over layers on more than one filesystem falls back to `null`; the model's
//! layers are on one.

use crate::layer::LayerId;
use crate::mount::Uuid;
use crate::overlay::Overlay;

/// The bit that marks a [`LayerId`] as a file handle with a null uuid (`uuid=off`).
const NULL_UUID: u64 = 1 << 63;

impl Overlay {
    /// The layer part of an origin file handle this mount writes for lower `layer`, and
    /// decodes: the layer's id, marked as holding a null uuid under `uuid=off` (kernel:
    /// `ovl_encode_real_fh`, "if (ovl_origin_uuid(ofs)) fh->fb.uuid = *uuid";
    /// `ovl_decode_real_fh`, "In case of uuid=off option just make sure that stored uuid is
    /// null"; observed on 6.18, spec/index/mount-index-uuid-off-switch-estale.yaml).
    pub(crate) fn fh_layer(&self, layer: usize) -> LayerId {
        let id = self.lowers[layer].id();
        if self.uuid_off() {
            LayerId(id.0 | NULL_UUID)
        } else {
            id
        }
    }

    /// The origin file handle this mount writes for lower object `l`, and looks index
    /// entries up by: its layer as [`Overlay::fh_layer`] gives it, and its inode.
    pub(crate) fn origin_of(&self, l: crate::lookup::LowerPath) -> crate::layer::Origin {
        crate::layer::Origin { layer: self.fh_layer(l.layer), ino: l.ino }
    }

    /// Whether this mount writes and reads null uuids: `uuid=off` with an upper layer. A
    /// mount without an upper falls back to `uuid=null`, as its lowers' filesystem counts
    /// as a second one (`fs[0]` is kept for the upper's) (kernel: `ovl_fill_super`, "The
    /// uuid=off requires a single fs for lower and upper, falling back to uuid=null",
    /// `ofs->numfs > 1`; observed on 6.18: a lower-only `uuid=off` mount decodes a handle
    /// taken under `uuid=null`, fuzz profile `index` seed 16).
    fn uuid_off(&self) -> bool {
        self.options.uuid == Uuid::Off && self.upper.is_some()
    }
}

impl Overlay {
    /// The layer part of a file handle this mount writes for the upper layer (an overlay
    /// file handle of an upper object): the upper's id, marked as holding a null uuid under
    /// `uuid=off` (kernel: `ovl_encode_real_fh`, the same uuid rule for an upper as for a
    /// lower; observed on 6.18, spec/nfs_export/open_by_handle-upper-uuid-off-remount-estale.yaml).
    pub(crate) fn fh_upper_layer(&self) -> Option<LayerId> {
        let id = self.upper.as_ref()?.id();
        Some(if self.uuid_off() { LayerId(id.0 | NULL_UUID) } else { id })
    }

    /// Whether a file handle whose layer part is `id` holds the uuid this mount decodes:
    /// a null uuid under `uuid=off`, the filesystem's under any other value; a handle that
    /// does not is not decoded at all, in any layer (kernel: `ovl_decode_real_fh`, "In case
    /// of uuid=off option just make sure that stored uuid is null", returning NULL, which
    /// `ovl_upper_fh_to_d` and `ovl_check_origin_fh` turn into ESTALE; observed on 6.18,
    /// spec/nfs_export/open_by_handle-upper-uuid-off-remount-estale.yaml).
    pub(crate) fn fh_uuid_decodes(&self, id: LayerId) -> bool {
        let null = id.0 & NULL_UUID != 0;
        null == self.uuid_off()
    }
}

/// The layer a file handle's [`LayerId`] names, whatever uuid it holds.
pub(crate) fn handle_layer(id: LayerId) -> LayerId {
    LayerId(id.0 & !NULL_UUID)
}

#[cfg(test)]
mod tests {
    use crate::layer::{Inode, Layer};
    use crate::mount::{MountError, Options, Uuid};
    use crate::{Errno, Op, Outcome, Overlay};

    fn ino(ov: &mut Overlay, path: &str) -> u64 {
        match ov.apply(&Op::Lstat { path: path.into() }) {
            Outcome::Stat(s) => s.ino,
            other => panic!("lstat {path}: {other:?}"),
        }
    }

    /// A file copied up under `first`, then looked at under each of `then`: whether it kept
    /// its lower inode number there.
    fn keeps_lower_ino(first: Uuid, then: Uuid) -> bool {
        let mut lower = Layer::new();
        lower.put("/f", Inode::file(b"x", 0o644));
        let opts = |uuid| Options { uuid, ..Options::default() };
        let mut ov = Overlay::mount(vec![lower], Some(Layer::new()), opts(first)).expect("mount");
        let lower_ino = ino(&mut ov, "/f");
        assert_eq!(ov.apply(&Op::Chmod { path: "/f".into(), mode: 0o600 }), Outcome::Ok);
        assert_eq!(ino(&mut ov, "/f"), lower_ino, "the overlay inode keeps its number while mounted");
        let (lowers, upper) = ov.unmount();
        let mut ov = Overlay::mount(lowers, upper, opts(then)).expect("remount");
        ino(&mut ov, "/f") == lower_ino
    }

    #[test]
    fn origins_decode_only_under_the_uuid_mode_that_wrote_them() {
        use Uuid::*;
        for (first, then, kept) in [
            (Off, Off, true),
            (Off, Auto, false),
            (Off, Null, false),
            (On, Off, false),
            (Null, On, true),
            (Auto, Null, true),
        ] {
            assert_eq!(keeps_lower_ino(first, then), kept, "uuid={first:?} then uuid={then:?}");
        }
    }

    #[test]
    fn an_index_mount_switching_to_or_from_uuid_off_is_estale() {
        let lower = Layer::new();
        let opts = |uuid| Options { index: true, uuid, ..Options::default() };
        let ov = Overlay::mount(vec![lower], Some(Layer::new()), opts(Uuid::Off)).expect("mount");
        let (lowers, upper) = ov.unmount();
        for uuid in [Uuid::Auto, Uuid::Null, Uuid::On] {
            let r = Overlay::mount(lowers.clone(), upper.clone(), opts(uuid));
            assert!(matches!(r, Err(MountError::Refused { errno: Errno::ESTALE, .. })), "{uuid:?}: {r:?}");
        }
        assert!(Overlay::mount(lowers.clone(), upper.clone(), opts(Uuid::Off)).is_ok());
        let index_off = Options { uuid: Uuid::On, ..Options::default() };
        assert!(Overlay::mount(lowers, upper, index_off).is_ok(), "index=off does not check the root");
    }
}
