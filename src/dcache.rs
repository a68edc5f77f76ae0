//! The lower half of a lookup, remembered: the model's dentry cache (kernel: `fs/dcache.c`,
//! which keeps `ovl_lookup`'s answers so that a name is probed through the layers once).
//!
//! `ovl_lookup` probes the upper layer and then, unless the upper stops it, each layer of the
//! parent's lower stack. The lower layers cannot change while the overlay is mounted
//! ([`Overlay::apply`](crate::Overlay::apply) asserts it), and the mount options that name
//! the private xattrs are fixed at mount. So what the lower probe finds is a function of four
//! things only: the parent's lower stack, the name probed for (after an upper redirect),
//! whether the upper found a directory there, and whether the stack is the lower roots.
//! `DentryCache` keeps that function's answers. The upper is probed on every lookup: it
//! changes.
//!
//! The one side effect of the lower probe, flagging a lower layer that holds `opaque=x`
//! directories (kernel: `ovl_layer_set_xwhiteouts`), is kept with the answer and replayed on
//! every hit. The cache is shared by the clones of one mount, so a clone that hits an answer
//! another clone made still sets the flags it would have set itself.
//!
//! Stacks are keyed by identity: a lower stack is an `Arc<[LowerPath]>`, and the cache
//! holds every stack it keys on, so an address cannot be reused while it is a key. Two equal
//! stacks made apart are two keys: a miss, never a wrong answer.

use crate::lookup::LowerPath;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// A lower stack, compared and hashed by identity.
#[derive(Clone, Debug)]
struct StackKey(Arc<[LowerPath]>);

impl PartialEq for StackKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StackKey {}

impl Hash for StackKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0) as *const LowerPath as usize).hash(state);
    }
}

/// What the lower half of one lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LowerAnswer {
    /// The lower stack of the child, top-most first.
    pub stack: Arc<[LowerPath]>,
    /// The file type of the top-most object of `stack`, if any: what the merged object
    /// shows when it has no upper.
    pub top_ftype: Option<crate::layer::FileType>,
    /// The last object of `stack` is a metacopy file ([`crate::whiteout::is_metacopy`]).
    pub last_metacopy: bool,
    /// Whether the lookup, upper and lowers together, found a directory.
    pub is_dir: bool,
    /// A lower copy carries `opaque=x`.
    pub xwhiteouts: bool,
    /// The lower layers the probe flagged as holding xattr whiteouts.
    pub flagged: Box<[usize]>,
    /// The lookup ended on a metacopy file whose data is in the data-only layers
    /// ([`crate::data_only`]): the lower data is the last of `stack` unless
    /// `lowerdata_error`.
    pub lazy: bool,
    /// Why the lookup of the lower data in the data-only layers found none.
    pub lowerdata_error: Option<crate::errno::Errno>,
}

/// Which question about one name: whether the upper found a directory, and whether the
/// stack probed is the lower roots (after an absolute redirect).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Probe {
    /// The upper found a directory of this name.
    pub upper_dir: bool,
    /// The stack probed is the lower roots.
    pub from_root: bool,
}

impl Probe {
    fn index(self) -> usize {
        usize::from(self.upper_dir) | usize::from(self.from_root) << 1
    }
}

/// The answers for one parent stack: per name, one slot per [`Probe`].
type Names = HashMap<Box<str>, [Option<LowerAnswer>; 4], KeyHash>;

/// The hasher of the cache's two maps, whose keys (a stack's address, a name of a few
/// bytes) are hashed twice per cached lookup: std's SipHash resists keys crafted to
/// collide, which the model's own lookups do not need, at several times the cost on short
/// keys (1.7% of the instructions of `examples/profile_model cases`). This is the
/// multiply-rotate of `rustc-hash` 2 (FxHash), rotated at the end so that the low bits,
/// which pick the bucket, depend on every input bit (an aligned address has its low bits
/// zero). [`crate::icache`]'s maps, keyed by inode numbers and lower paths, hash with it
/// too.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
}

/// Builds [`KeyHasher`]s.
pub(crate) type KeyHash = std::hash::BuildHasherDefault<KeyHasher>;

/// The most answers kept, and the most lower entries their stacks may hold together; past
/// either, the cache starts again empty (as memory pressure shrinks the kernel's dcache).
/// An answer is about 100 bytes and a stack entry 16, so the cache stays under about 250 MiB.
const ANSWERS_MAX: usize = 1 << 20;
const STACK_ENTRIES_MAX: usize = 1 << 23;

/// When lookups use the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CachePolicy {
    /// Never: every lookup probes every layer.
    Off,
    /// When the parent's lower stack has at least [`AUTO_MIN_LAYERS`] layers, where a hit is
    /// cheaper than the probes it saves.
    #[default]
    Auto,
    /// On every lookup that reaches the lowers (for tests of the cache itself).
    Always,
}

/// The smallest lower stack that [`CachePolicy::Auto`] caches. Measured on a repeated
/// `stat` of a depth-4 path: 670 → 546 ns through 2 lowers, 902 → 602 ns through 4, but
/// only 568 → 544 ns through 1, where the cache's memory is not worth it. On workloads
/// that mount, look up a few names and stop (the fuzzer's cases), the misses cost about
/// as much as the hits save: callgrind counts of `examples/profile_model` moved by
/// less than 1% between this value, 1 and 4.
pub const AUTO_MIN_LAYERS: usize = 2;

impl CachePolicy {
    /// Whether a lower probe through `layers` layers goes through the cache.
    pub(crate) fn covers(self, layers: usize) -> bool {
        match self {
            CachePolicy::Off => false,
            CachePolicy::Auto => layers >= AUTO_MIN_LAYERS,
            CachePolicy::Always => true,
        }
    }
}

#[derive(Default)]
struct Inner {
    stacks: HashMap<StackKey, Names, KeyHash>,
    answers: usize,
    stack_entries: usize,
}

/// The answers of the lower half of lookups, for one mount and all its clones.
#[derive(Default)]
pub(crate) struct DentryCache {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for DentryCache {
    /// The number of answers only: the answers themselves are not worth printing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.inner.try_lock() {
            Ok(inner) => write!(f, "DentryCache({} answers)", inner.answers),
            Err(_) => write!(f, "DentryCache(busy)"),
        }
    }
}

impl DentryCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave a half-made answer: inserts are whole.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer for `name` probed through `stack`, if one was kept.
    pub(crate) fn get(&self, stack: &Arc<[LowerPath]>, name: &str, probe: Probe) -> Option<LowerAnswer> {
        let inner = self.lock();
        let names = inner.stacks.get(&StackKey(Arc::clone(stack)))?;
        names.get(name)?[probe.index()].clone()
    }

    /// Keeps `answer` for `name` probed through `stack`.
    pub(crate) fn put(&self, stack: &Arc<[LowerPath]>, name: &str, probe: Probe, answer: LowerAnswer) {
        let mut inner = self.lock();
        if inner.answers >= ANSWERS_MAX || inner.stack_entries >= STACK_ENTRIES_MAX {
            *inner = Inner::default();
        }
        inner.stack_entries += answer.stack.len();
        let slot = &mut inner.stacks.entry(StackKey(Arc::clone(stack))).or_default().entry(name.into()).or_default()
            [probe.index()];
        let new = slot.is_none();
        *slot = Some(answer);
        if new {
            inner.answers += 1;
        }
    }

    /// How many answers are kept.
    pub(crate) fn len(&self) -> usize {
        self.lock().answers
    }
}

#[cfg(test)]
mod tests {
    use crate::layer::{Inode, Layer};
    use crate::{CachePolicy, Op, Options, Outcome, Overlay};

    /// Two lowers whose `/d` merges; the top one's carries `opaque=x`, so a lookup through it
    /// flags lower 0 as holding xattr whiteouts.
    fn xwhiteout_stack() -> Overlay {
        let mut top = Layer::new();
        top.put("/d/f", Inode::file(b"top", 0o644));
        let d = top.walk(["d"]).expect("/d");
        top.set_xattr(d, "trusted.overlay.opaque", b"x");
        let mut bottom = Layer::new();
        bottom.put("/d/g", Inode::file(b"bottom", 0o644));
        let mut ov = Overlay::mount(vec![top, bottom], Some(Layer::new()), Options::default()).expect("mount");
        ov.set_cache_policy(CachePolicy::Always);
        ov
    }

    fn stat(ov: &mut Overlay, path: &str) -> Outcome {
        ov.apply(&Op::Stat { path: path.into() })
    }

    #[test]
    fn clones_share_answers_and_a_hit_replays_the_xwhiteout_flag() {
        let mut first = xwhiteout_stack();
        let mut forked = first.clone();
        let mut uncached = first.clone();
        uncached.set_cache_policy(CachePolicy::Off);
        assert!(!forked.has_xwhiteouts(0));

        let answer = stat(&mut first, "/d/g");
        assert!(matches!(answer, Outcome::Stat(_)), "{answer:?}");
        assert!(first.has_xwhiteouts(0), "the lookup of /d met opaque=x in lower 0");
        let kept = forked.cached_lookups();
        assert!(kept >= 2, "the fork sees the answers its sibling made ({kept})");

        // The fork answers from the cache: the same answer, and the same flag set.
        assert_eq!(stat(&mut forked, "/d/g"), answer);
        assert_eq!(forked.cached_lookups(), kept, "every lookup of the fork was a hit");
        assert!(forked.has_xwhiteouts(0), "a hit replays the flag the probe would set");

        assert_eq!(stat(&mut uncached, "/d/g"), answer);
        assert!(uncached.has_xwhiteouts(0));
        assert_eq!(first.apply(&Op::Readdir { path: "/d".into() }), uncached.apply(&Op::Readdir { path: "/d".into() }));
    }

    #[test]
    fn drop_caches_empties_one_clone_only() {
        let mut ov = xwhiteout_stack();
        assert!(matches!(stat(&mut ov, "/d/f"), Outcome::Stat(_)));
        let mut cold = ov.clone();
        cold.drop_caches();
        assert_eq!(cold.cached_lookups(), 0);
        assert!(ov.cached_lookups() > 0);
        assert_eq!(stat(&mut cold, "/d/f"), stat(&mut ov, "/d/f"));
        assert!(cold.cached_lookups() > 0, "the cold clone fills its own cache again");
    }

    #[test]
    fn the_default_policy_caches_only_deep_stacks() {
        let lowers = |n: usize| {
            (0..n).map(|i| {
                let mut l = Layer::new();
                l.put(&format!("/d/f{i}"), Inode::file(b"x", 0o644));
                l
            })
        };
        let mut shallow =
            Overlay::mount(lowers(super::AUTO_MIN_LAYERS - 1).collect(), Some(Layer::new()), Options::default())
                .expect("mount");
        assert!(matches!(stat(&mut shallow, "/d/f0"), Outcome::Stat(_)));
        assert_eq!(shallow.cached_lookups(), 0);
        let mut deep = Overlay::mount(lowers(super::AUTO_MIN_LAYERS).collect(), Some(Layer::new()), Options::default())
            .expect("mount");
        assert!(matches!(stat(&mut deep, "/d/f0"), Outcome::Stat(_)));
        assert!(deep.cached_lookups() > 0);
    }

    #[test]
    fn an_overlay_and_its_shared_cache_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Overlay>();
        let mut ov = xwhiteout_stack();
        let mut clone = ov.clone();
        let there = std::thread::spawn(move || stat(&mut clone, "/d/g")).join().expect("no panic");
        assert_eq!(stat(&mut ov, "/d/g"), there);
    }
}
