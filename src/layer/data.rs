//! A regular file's data: a length and the extents of bytes written, with holes between
//! them that read as zeros, as tmpfs keeps a sparse file.
//!
//! A [`FileData`] costs what it holds, not its length: `truncate(f, 10^12)` is one number,
//! and a write at offset 10^12 holds the bytes written. A clone is O(1) (a shared list of
//! shared buffers; a file written once from the start is one buffer, as `Arc<[u8]>` was),
//! and a write or a shrinking truncate copies no byte that was already there (an extent cut
//! in two keeps its buffer, with a narrower range; only a small append joins the extent
//! before it). An edit copies the list of extents, so it costs their number too.
//!
//! Two files are equal when their contents are, whatever their extents: a hole and an
//! extent of zeros read the same.
//!
//! A [`Digest`] names a file's content without its bytes: its length and a hash of its
//! non-zero 8-byte words ([`Digester`]). Zeros add nothing to the hash, so a hole costs
//! nothing to hash and both backends compute the same value whatever their extents (the
//! kernel worker feeds the data regions `SEEK_DATA`/`SEEK_HOLE` finds, the model its
//! extents).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// The largest file a `read` returns as bytes; a larger one is answered with its
/// [`Digest`] (64 KiB). Merged trees show larger files the same way.
pub const READ_INLINE_MAX: u64 = 64 << 10;

/// One extent: `buf[lo..hi]`, a range of a shared buffer.
#[derive(Clone)]
struct Extent {
    buf: Arc<[u8]>,
    lo: usize,
    hi: usize,
}

impl Extent {
    fn whole(buf: Arc<[u8]>) -> Extent {
        Extent { hi: buf.len(), buf, lo: 0 }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.lo..self.hi]
    }

    fn len(&self) -> u64 {
        (self.hi - self.lo) as u64
    }

    /// The part of this extent (which starts at file offset `start`) inside `[from, to)`,
    /// empty if none is.
    fn cut(&self, start: u64, from: u64, to: u64) -> Extent {
        let end = start + self.len();
        let from = from.clamp(start, end);
        let to = to.clamp(from, end);
        Extent { buf: self.buf.clone(), lo: self.lo + (from - start) as usize, hi: self.lo + (to - start) as usize }
    }
}

/// Where the bytes are. Most files are written once from the start: they are one shared
/// buffer at offset 0, one allocation as a plain `Arc<[u8]>` would be.
#[derive(Clone, Default)]
enum Body {
    /// All hole.
    #[default]
    Empty,
    /// The whole buffer at offset 0 (the length may go past it: a hole at the end).
    Dense(Arc<[u8]>),
    /// Extents by file offset: sorted, not overlapping, none empty, all below the length.
    Sparse(Arc<[(u64, Extent)]>),
}

/// The most bytes a write copies to join the extent that ends where it starts, so that
/// small appends do not pile up extents.
const JOIN_MAX: u64 = 4096;

/// A regular file's data (see the module docs).
#[derive(Clone, Default)]
pub struct FileData {
    /// `st_size`.
    len: u64,
    body: Body,
}

impl FileData {
    /// An empty file.
    pub fn new() -> FileData {
        FileData::default()
    }

    /// A file of `len` bytes, all a hole.
    pub fn hole(len: u64) -> FileData {
        FileData { len, body: Body::Empty }
    }

    /// A file holding exactly `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> FileData {
        let mut d = FileData::new();
        d.write(0, bytes);
        d
    }

    /// The length (`st_size`).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes held, as (offset, bytes) in offset order; the rest reads as zeros. They
    /// may hold zeros too.
    pub fn extents(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let (dense, sparse): (Option<&[u8]>, &[(u64, Extent)]) = match &self.body {
            Body::Empty => (None, &[]),
            Body::Dense(b) => (Some(b), &[]),
            Body::Sparse(v) => (None, v),
        };
        dense.map(|b| (0, b)).into_iter().chain(sparse.iter().map(|(o, e)| (*o, e.bytes())))
    }

    /// The number of bytes held (what the file costs), which is at most its length.
    pub fn held(&self) -> u64 {
        self.extents().map(|(_, b)| b.len() as u64).sum()
    }

    /// The extents as a list to edit.
    fn pieces(&self) -> Vec<(u64, Extent)> {
        match &self.body {
            Body::Empty => Vec::new(),
            Body::Dense(b) => vec![(0, Extent::whole(b.clone()))],
            Body::Sparse(v) => v.to_vec(),
        }
    }

    /// Sets the extents from an edited list.
    fn set(&mut self, pieces: Vec<(u64, Extent)>) {
        self.body = match pieces.as_slice() {
            [] => Body::Empty,
            [(0, e)] if e.lo == 0 && e.hi == e.buf.len() => Body::Dense(e.buf.clone()),
            _ => Body::Sparse(pieces.into()),
        };
    }

    /// Writes `bytes` at `offset`, extending the length if the write ends past it.
    ///
    /// Panics if `offset + bytes.len()` overflows a u64: callers check the kernel's limits
    /// first.
    pub fn write(&mut self, offset: u64, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = offset.checked_add(bytes.len() as u64).expect("a write ends within u64");
        let mut pieces = punch(self.pieces(), offset, end);
        let i = pieces.partition_point(|(s, _)| *s < offset);
        let joins = i > 0 && {
            let (s, e) = &pieces[i - 1];
            s + e.len() == offset && e.len() + bytes.len() as u64 <= JOIN_MAX
        };
        if joins {
            let (s, e) = &pieces[i - 1];
            let joined: Arc<[u8]> = [e.bytes(), bytes].concat().into();
            pieces[i - 1] = (*s, Extent::whole(joined));
        } else {
            pieces.insert(i, (offset, Extent::whole(Arc::from(bytes))));
        }
        self.set(pieces);
        self.len = self.len.max(end);
    }

    /// Sets the length: a shorter file drops what lies past it, a longer one ends in a
    /// hole.
    pub fn truncate(&mut self, len: u64) {
        if len < self.len {
            let pieces = punch(self.pieces(), len, self.len);
            self.set(pieces);
        }
        self.len = len;
    }

    /// The bytes of `[offset, offset + n)`, cut at the end of the file.
    pub fn read(&self, offset: u64, n: u64) -> Vec<u8> {
        let end = offset.saturating_add(n).min(self.len);
        if offset >= end {
            return Vec::new();
        }
        let mut out = vec![0u8; (end - offset) as usize];
        for (start, b) in self.extents() {
            let stop = start + b.len() as u64;
            if stop <= offset || start >= end {
                continue;
            }
            let (from, to) = (start.max(offset), stop.min(end));
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&b[(from - start) as usize..(to - start) as usize]);
        }
        out
    }

    /// The whole content. Only for files known to be small: it allocates the length.
    pub fn to_vec(&self) -> Vec<u8> {
        self.read(0, self.len)
    }

    /// The non-zero bytes with their offsets, in offset order: what decides the content,
    /// given the length.
    fn non_zero(&self) -> impl Iterator<Item = (u64, u8)> + '_ {
        self.extents().flat_map(|(start, b)| {
            b.iter().enumerate().filter(|(_, x)| **x != 0).map(move |(i, x)| (start + i as u64, *x))
        })
    }

    /// The content as runs of bytes with no long zero run inside, in offset order: each
    /// run starts and ends with a non-zero byte, and runs are cut where `gap` or more
    /// zeros lie between. It depends on the content only, not on the extents, so it is how
    /// files are written out.
    pub fn runs(&self, gap: u64) -> Vec<(u64, Vec<u8>)> {
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        for (pos, b) in self.non_zero() {
            match out.last_mut() {
                Some((start, run)) if pos - (*start + run.len() as u64) < gap => {
                    let at = (pos - *start) as usize;
                    run.resize(at, 0);
                    run.push(b);
                }
                _ => out.push((pos, vec![b])),
            }
        }
        out
    }

    /// The digest of the content.
    pub fn digest(&self) -> Digest {
        let mut d = Digester::new();
        for (start, b) in self.extents() {
            d.feed(start, b);
        }
        d.finish(self.len)
    }
}

impl PartialEq for FileData {
    /// Equal contents: the same length and the same bytes, a hole reading as zeros.
    fn eq(&self, other: &FileData) -> bool {
        self.len == other.len && self.non_zero().eq(other.non_zero())
    }
}

impl Eq for FileData {}

impl std::fmt::Debug for FileData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.len <= 64 {
            write!(f, "{:?}", String::from_utf8_lossy(&self.to_vec()))
        } else {
            // At most a few runs, each cut short: a file may hold gigabytes.
            let runs: Vec<(u64, String)> = self
                .runs(32)
                .iter()
                .take(4)
                .map(|(o, b)| (*o, String::from_utf8_lossy(&b[..b.len().min(32)]).into_owned()))
                .collect();
            write!(f, "FileData {{ len: {}, held: {}, runs: {runs:?}.. }}", self.len, self.held())
        }
    }
}

impl From<&[u8]> for FileData {
    fn from(b: &[u8]) -> FileData {
        FileData::from_bytes(b)
    }
}

impl From<Vec<u8>> for FileData {
    fn from(b: Vec<u8>) -> FileData {
        FileData::from_bytes(&b)
    }
}

/// Removes what `pieces` hold in `[from, to)`, keeping what lies either side.
fn punch(pieces: Vec<(u64, Extent)>, from: u64, to: u64) -> Vec<(u64, Extent)> {
    let mut out = Vec::with_capacity(pieces.len() + 1);
    for (start, e) in pieces {
        let stop = start + e.len();
        if stop <= from || start >= to {
            out.push((start, e));
            continue;
        }
        if start < from {
            out.push((start, e.cut(start, start, from)));
        }
        if stop > to {
            out.push((to, e.cut(start, to, stop)));
        }
    }
    out
}

/// The wire form: the length and the extents, each as an offset and hex digits.
#[derive(Serialize, Deserialize)]
struct Wire {
    len: u64,
    extents: Vec<(u64, String)>,
}

impl Serialize for FileData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let extents = self.extents().map(|(o, b)| (o, crate::hex::encode(b))).collect();
        Wire { len: self.len, extents }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for FileData {
    /// The wire form, or the plain byte list that `data` was before extents. Told apart by
    /// the input's first token, not by serde's `untagged`, which would first copy the whole
    /// value (megabytes of digits) into a generic tree.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FileData, D::Error> {
        d.deserialize_any(DataVisitor)
    }
}

/// Reads [`FileData`] in either of its forms.
struct DataVisitor;

impl<'de> serde::de::Visitor<'de> for DataVisitor {
    type Value = FileData;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(r#"file data: {"len":N,"extents":[[offset,"hex digits"],...]}, or an array of bytes"#)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<FileData, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(READ_INLINE_MAX as usize));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(FileData::from_bytes(&bytes))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<FileData, A::Error> {
        use serde::de::Error;
        let w = Wire::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        let mut data = FileData::hole(w.len);
        for (offset, digits) in w.extents {
            let bytes = crate::hex::decode(&digits).ok_or_else(|| A::Error::custom("an extent is not hex digits"))?;
            if offset.checked_add(bytes.len() as u64).is_none_or(|end| end > w.len) {
                return Err(A::Error::custom("an extent ends past the length"));
            }
            data.write(offset, &bytes);
        }
        Ok(data)
    }
}

/// A file's content without its bytes: its length and [`Digester`]'s hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    /// The length.
    pub size: u64,
    /// The hash of the non-zero 8-byte words.
    pub hash: u64,
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes, hash {:016x}", self.size, self.hash)
    }
}

/// Computes a [`Digest`] from a file's bytes fed in offset order, holes left out.
///
/// The content is cut into 8-byte words at offsets that are multiples of 8; each non-zero
/// word `w` at index `k` adds `mix(w ^ mix(k))` (SplitMix64's finaliser), wrapping. A zero
/// word adds nothing, so a hole need not be fed, and bytes fed in any split give the same
/// hash. It tells contents apart, not adversaries.
#[derive(Clone, Debug, Default)]
pub struct Digester {
    /// The sum so far.
    sum: u64,
    /// The word being filled, and its index.
    word: u64,
    index: u64,
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Digester {
    /// A digester that has seen nothing.
    pub fn new() -> Digester {
        Digester::default()
    }

    fn flush(&mut self) {
        if self.word != 0 {
            self.sum = self.sum.wrapping_add(mix(self.word ^ mix(self.index)));
            self.word = 0;
        }
    }

    fn byte(&mut self, pos: u64, b: u8) {
        if pos / 8 != self.index {
            self.flush();
            self.index = pos / 8;
        }
        self.word |= u64::from(b) << (8 * (pos % 8));
    }

    /// Feeds `bytes`, which are at `offset`: after every byte fed before.
    pub fn feed(&mut self, offset: u64, bytes: &[u8]) {
        let mut pos = offset;
        let mut rest = bytes;
        while !rest.is_empty() && !pos.is_multiple_of(8) {
            self.byte(pos, rest[0]);
            pos += 1;
            rest = &rest[1..];
        }
        let mut words = rest.chunks_exact(8);
        for w in words.by_ref() {
            self.flush();
            self.index = pos / 8;
            self.word = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            pos += 8;
        }
        for &b in words.remainder() {
            self.byte(pos, b);
            pos += 1;
        }
    }

    /// The digest of a file of length `size` whose bytes were fed.
    pub fn finish(mut self, size: u64) -> Digest {
        self.flush();
        Digest { size, hash: self.sum }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One change to a file, applied to the data type and to a plain vector alike.
    #[derive(Clone, Debug)]
    enum Change {
        Write(u64, Vec<u8>),
        Truncate(u64),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (0u64..80, prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..24))
                .prop_map(|(o, b)| Change::Write(o, b)),
            (0u64..100).prop_map(Change::Truncate),
        ]
    }

    fn apply_vec(v: &mut Vec<u8>, c: &Change) {
        match c {
            Change::Write(o, b) => {
                if b.is_empty() {
                    return;
                }
                let end = *o as usize + b.len();
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[*o as usize..end].copy_from_slice(b);
            }
            Change::Truncate(n) => v.resize(*n as usize, 0),
        }
    }

    fn apply(d: &mut FileData, c: &Change) {
        match c {
            Change::Write(o, b) => d.write(*o, b),
            Change::Truncate(n) => d.truncate(*n),
        }
    }

    /// The digest of a plain vector, fed byte by byte.
    fn digest_of(v: &[u8]) -> Digest {
        let mut d = Digester::new();
        for (i, b) in v.iter().enumerate() {
            d.feed(i as u64, &[*b]);
        }
        d.finish(v.len() as u64)
    }

    proptest! {
        /// Every change gives the content a plain vector gets, and every read agrees.
        #[test]
        fn file_data_behaves_as_a_vector(changes in prop::collection::vec(change(), 0..12), at in 0u64..100, n in 0u64..100) {
            let (mut d, mut v) = (FileData::new(), Vec::new());
            for c in &changes {
                apply(&mut d, c);
                apply_vec(&mut v, c);
                prop_assert_eq!(d.len(), v.len() as u64);
                prop_assert_eq!(d.to_vec(), v.clone());
            }
            let want: Vec<u8> = v.iter().copied().skip(at as usize).take(n as usize).collect();
            prop_assert_eq!(d.read(at, n), want);
            prop_assert!(d.held() <= d.len());
            prop_assert_eq!(&d, &FileData::from_bytes(&v));
            prop_assert_eq!(d.digest(), digest_of(&v));
            let runs = d.runs(4);
            let mut back = FileData::hole(d.len());
            for (o, b) in &runs {
                prop_assert!(b.first().is_some_and(|x| *x != 0) && b.last().is_some_and(|x| *x != 0));
                back.write(*o, b);
            }
            prop_assert_eq!(&back, &d);
            let wire: FileData = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
            prop_assert_eq!(wire.to_vec(), v);
        }

        /// Two files are equal exactly when their bytes are; so are their digests, here.
        #[test]
        fn equality_is_on_content(a in prop::collection::vec(change(), 0..6), b in prop::collection::vec(change(), 0..6)) {
            let (mut da, mut va, mut db, mut vb) = (FileData::new(), Vec::new(), FileData::new(), Vec::new());
            for c in &a { apply(&mut da, c); apply_vec(&mut va, c); }
            for c in &b { apply(&mut db, c); apply_vec(&mut vb, c); }
            prop_assert_eq!(da == db, va == vb);
            prop_assert_eq!(da.digest() == db.digest(), va == vb);
        }
    }

    #[test]
    fn a_huge_sparse_file_costs_what_it_holds() {
        let mut d = FileData::hole(1_000_000_000_000);
        d.write(500_000_000_000, b"mid");
        d.write(i64::MAX as u64 - 3, b"end");
        assert_eq!(d.len(), i64::MAX as u64);
        assert_eq!(d.held(), 6);
        assert_eq!(d.read(500_000_000_000 - 1, 5), b"\0mid\0");
        assert_eq!(d.runs(32), [(500_000_000_000, b"mid".to_vec()), (i64::MAX as u64 - 3, b"end".to_vec())]);
        let mut zeros = d.clone();
        zeros.write(0, &[0; 4096]);
        assert_eq!(zeros, d, "an extent of zeros reads as the hole it replaces");
        assert_eq!(zeros.digest(), d.digest());
        d.truncate(500_000_000_001);
        assert_eq!(d.read(500_000_000_000, 10), b"m");
        assert_eq!(d.held(), 1);
        assert_ne!(d.digest(), FileData::hole(500_000_000_001).digest());
    }

    #[test]
    fn a_file_written_from_the_start_is_one_buffer_and_small_appends_join() {
        let d = FileData::from_bytes(b"0123456789abcdef");
        assert!(matches!(d.body, Body::Dense(ref b) if b.len() == 16));
        let mut log = FileData::new();
        for i in 0..100u64 {
            log.write(log.len(), format!("line {i:03}\n").as_bytes());
        }
        assert_eq!(log.extents().count(), 1, "1,000 bytes of small appends are one extent");
        assert!(matches!(log.body, Body::Dense(_)));
        let mut big = FileData::new();
        for _ in 0..3 {
            big.write(big.len(), &[1; 3000]);
        }
        assert_eq!(big.extents().count(), 3, "appends past JOIN_MAX are not copied together");
    }

    #[test]
    fn the_wire_form_refuses_extents_past_the_length() {
        let bad = r#"{"len":2,"extents":[[1,"6162"]]}"#;
        assert!(serde_json::from_str::<FileData>(bad).is_err());
        assert!(serde_json::from_str::<FileData>(r#"{"len":2,"extents":[[0,"6"]]}"#).is_err());
        // Cases saved before extents wrote the bytes as a list; they still load.
        assert_eq!(serde_json::from_str::<FileData>("[104,105]").unwrap(), FileData::from_bytes(b"hi"));
        // A sign is not a digit (`u8::from_str_radix` took "+a" as 10), nor is a space.
        assert!(serde_json::from_str::<FileData>(r#"{"len":1,"extents":[[0,"+a"]]}"#).is_err());
        assert!(serde_json::from_str::<FileData>(r#"{"len":1,"extents":[[0," a"]]}"#).is_err());
        assert!(serde_json::from_str::<FileData>("[256]").is_err());
        let e = serde_json::from_str::<FileData>(r#""6869""#).unwrap_err().to_string();
        assert!(e.contains("expected file data"), "{e}");
    }

    #[test]
    fn the_wire_form_is_lower_case_hex_and_reads_back_in_any_self_describing_format() {
        let mut d = FileData::hole(8192);
        d.write(0, &[0x00, 0x7f, 0x80, 0xff]);
        d.write(8190, b"!!");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"len":8192,"extents":[[0,"007f80ff"],[8190,"2121"]]}"#);
        assert_eq!(serde_json::from_str::<FileData>(&json).unwrap(), d);
        assert_eq!(
            serde_json::from_str::<FileData>(&json.to_uppercase().replace("LEN", "len").replace("EXTENTS", "extents"))
                .unwrap(),
            d
        );
        let yaml = yaml_serde::to_string(&d).unwrap();
        assert_eq!(yaml_serde::from_str::<FileData>(&yaml).unwrap(), d);
    }
}
