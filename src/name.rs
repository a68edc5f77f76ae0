//! One name of a directory: the key of a layer directory's entries
//! ([`crate::layer::Entries`]) and a dentry's name ([`crate::lookup::Dentry::name`]).
//!
//! Names are mostly a few bytes: up to [`Name::INLINE_MAX`] bytes are kept inline, so that
//! entering a name in a directory, copying a directory's map node on a path copy, and
//! making a dentry allocate nothing for it; longer names are boxed. A `Name` orders, and
//! compares, exactly as the `String` it replaces: by its bytes.

use std::cmp::Ordering;

/// A name of a directory entry (see the module doc).
#[derive(Clone, Default)]
pub struct Name(NameRepr);

// A `Name` is no larger than the `String` it replaces.
const _: () = assert!(std::mem::size_of::<Name>() == std::mem::size_of::<String>());

#[derive(Clone)]
enum NameRepr {
    Inline { len: u8, bytes: [u8; Name::INLINE_MAX] },
    Boxed(Box<str>),
}

impl Default for NameRepr {
    fn default() -> Self {
        NameRepr::Inline { len: 0, bytes: [0; Name::INLINE_MAX] }
    }
}

impl Name {
    /// The longest name kept inline: with its length and the variant's tag, a `Name` takes
    /// the 24 bytes of a `String`.
    pub const INLINE_MAX: usize = 22;

    /// Whether the name is empty (the root's), without reading it as a string.
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            NameRepr::Inline { len, .. } => *len == 0,
            NameRepr::Boxed(s) => s.is_empty(),
        }
    }

    /// The name's bytes, without reading them as a string: what comparisons and the
    /// directories' probes use ([`Name::as_str`] checks the bytes as UTF-8 each time).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            NameRepr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            NameRepr::Boxed(s) => s.as_bytes(),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            NameRepr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("model invariant: made from a str")
            }
            NameRepr::Boxed(s) => s,
        }
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        if s.len() > Name::INLINE_MAX {
            return Name(NameRepr::Boxed(s.into()));
        }
        let mut bytes = [0; Name::INLINE_MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Name(NameRepr::Inline { len: s.len() as u8, bytes })
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Name {
        Name::from(s.as_str())
    }
}

impl From<String> for Name {
    fn from(s: String) -> Name {
        if s.len() > Name::INLINE_MAX {
            return Name(NameRepr::Boxed(s.into_boxed_str()));
        }
        Name::from(s.as_str())
    }
}

impl From<&Name> for String {
    fn from(n: &Name) -> String {
        n.as_str().to_owned()
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// Probes by bytes: a directory map keyed by `Name` looked up with `name.as_bytes()`
/// compares bytes only, where a probe by `&str` reads every key it meets as a string.
impl std::borrow::Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Byte order, as `str` (and so the `String` keys this replaces) orders.
impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    /// A name reads back as the string it was made from, inline or boxed, at the edge
    /// between the two and with characters of several bytes.
    #[test]
    fn a_name_reads_back_as_made() {
        let long = "x".repeat(255);
        let cases = ["", "a", "ü", "abcdefghijklmnopqrstuv", "abcdefghijklmnopqrstuvw", "日本語の名前です", &long];
        for s in cases {
            let name = Name::from(s);
            assert_eq!(name.as_str(), s);
            assert_eq!(name.as_bytes(), s.as_bytes());
            assert_eq!(name.is_empty(), s.is_empty());
            assert_eq!(name, Name::from(s));
            assert_eq!(name, Name::from(s.to_owned()));
            assert_eq!(format!("{name}"), s);
        }
        assert_ne!(Name::from("abcdefghijklmnopqrstuv"), Name::from("abcdefghijklmnopqrstuvw"));
    }

    /// Names order exactly as the strings they are made from (byte order), inline against
    /// inline, boxed against boxed and across the two; a map keyed by `Name` is so walked in
    /// the order the `String`-keyed one was, and probed by `&str` or by bytes alike.
    #[test]
    fn names_order_as_their_strings() {
        let long = |c: char, n: usize| c.to_string().repeat(n);
        let mut strings = vec![
            String::new(),
            "a".into(),
            "A".into(),
            "a.".into(),
            "a-".into(),
            "a/".into(),
            "ab".into(),
            "b".into(),
            "\u{7f}".into(),
            "ü".into(),
            "u\u{308}".into(),
            "日本".into(),
            "\u{10ffff}".into(),
            "z\u{0}".into(),
            "z".into(),
            "z\u{0}\u{0}".into(),
            "z\u{0}a".into(),
            "z\u{1}".into(),
            format!("{}\u{0}", long('a', 21)),
            format!("{}\u{0}", long('a', 22)),
            long('a', 22),
            long('a', 23),
            long('a', 255),
            format!("{}b", long('a', 21)),
            format!("{}b", long('a', 22)),
            format!("{}\u{e9}", long('a', 21)),
            format!("{}!", long('z', 40)),
            long('z', 22),
        ];
        for a in &strings {
            for b in &strings {
                let (na, nb) = (Name::from(a.as_str()), Name::from(b.as_str()));
                assert_eq!(na.cmp(&nb), a.cmp(b), "{a:?} against {b:?}");
                assert_eq!(na == nb, a == b, "{a:?} against {b:?}");
            }
        }
        let mut map = imbl::OrdMap::new();
        for (i, s) in strings.iter().enumerate() {
            map.insert(Name::from(s.as_str()), i);
        }
        strings.sort();
        let keys: Vec<&str> = map.keys().map(Name::as_str).collect();
        assert_eq!(keys, strings.iter().map(String::as_str).collect::<Vec<_>>());
        for s in &strings {
            let by_str = map.get(s.as_str());
            let by_bytes = map.get(s.as_bytes());
            assert!(by_str.is_some() && by_str == by_bytes, "{s:?}");
        }
        assert_eq!(map.get(&b"a/b"[..]), None);
    }

    /// Every string of up to 3 characters over NUL, `a`, `b` and `é` (two bytes), and each
    /// of them padded to the inline limit and past it: ordered and compared as strings.
    #[test]
    fn names_order_as_their_strings_exhaustively() {
        let alphabet = ['\0', 'a', 'b', 'é'];
        let mut strings = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> =
                strings.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            strings.extend(longer);
        }
        strings.sort();
        strings.dedup();
        let padded: Vec<String> =
            strings.iter().flat_map(|s| [19, 20, 21, 22, 23].map(|n| format!("{}{s}", "x".repeat(n)))).collect();
        strings.extend(padded);
        let names: Vec<Name> = strings.iter().map(|s| Name::from(s.as_str())).collect();
        for (a, na) in strings.iter().zip(&names) {
            for (b, nb) in strings.iter().zip(&names) {
                assert_eq!(na.cmp(nb), a.cmp(b), "{a:?} against {b:?}");
                assert_eq!(na == nb, a == b, "{a:?} against {b:?}");
            }
        }
    }
}
