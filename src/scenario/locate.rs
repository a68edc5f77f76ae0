//! Finding where a node of a YAML document is: file line and column.
//!
//! `yaml_serde` has no spanned values, but every error it raises while deserialising carries
//! the position of the node being deserialised. A [`YamlPath`] is located by *probing*: the
//! document is deserialised again with a seed that walks the path (mapping keys, sequence
//! indices, through tags) and raises an error at the target node; the error's location is the
//! node's position. A probe costs one parse of the document, so positions are looked up only
//! for steps (once per step, at load) and for problems.
//!
//! A document that does not parse cannot be probed; [`step_at_line`] then finds the step that
//! holds a line by a light scan of the text (block style only).

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IgnoredAny, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use std::fmt;

/// One step of a path into a YAML document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    /// The value under a mapping key (keys are compared as their scalar text).
    Key(String),
    /// The element of a sequence, from 0.
    Index(usize),
}

/// A path into a YAML document, from the root.
pub type YamlPath = Vec<Seg>;

/// A position in a file: line and column, both from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Pos {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

const MARK: &str = "\u{0}ovlsim-probe";

/// The position of the node at `path` (or of its key, with `key`), if the document parses
/// and the node exists.
pub fn locate(text: &str, path: &[Seg], key: bool) -> Option<Pos> {
    let de = yaml_serde::Deserializer::from_str(text);
    match (Probe { path, key }).deserialize(de) {
        Err(e) if e.to_string().contains(MARK) => e.location().map(|l| Pos { line: l.line(), column: l.column() }),
        _ => None,
    }
}

/// The position of the node at `path`, or of the nearest ancestor that exists; line 1,
/// column 1 when nothing can be found.
pub fn locate_nearest(text: &str, path: &[Seg], key: bool) -> Pos {
    let mut len = path.len();
    let mut key = key;
    loop {
        if let Some(p) = locate(text, &path[..len], key) {
            return p;
        }
        if len == 0 {
            return Pos { line: 1, column: 1 };
        }
        len -= 1;
        key = false;
    }
}

fn hit<E: de::Error>() -> E {
    E::custom(MARK)
}

struct Probe<'a> {
    path: &'a [Seg],
    key: bool,
}

impl Probe<'_> {
    fn leaf<E: de::Error>(self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(hit())
        } else {
            Ok(())
        }
    }
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        match self.path.split_first() {
            None => Err(hit()),
            Some((Seg::Index(i), rest)) => {
                for _ in 0..*i {
                    if a.next_element::<IgnoredAny>()?.is_none() {
                        return Ok(());
                    }
                }
                a.next_element_seed(Probe { path: rest, key: self.key })?;
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
        match self.path.split_first() {
            None => Err(hit()),
            Some((Seg::Key(k), rest)) => loop {
                let fail = rest.is_empty() && self.key;
                match a.next_key_seed(KeySeed { want: k, fail })? {
                    None => return Ok(()),
                    Some(true) => {
                        a.next_value_seed(Probe { path: rest, key: self.key })?;
                        return Ok(());
                    }
                    Some(false) => {
                        a.next_value::<IgnoredAny>()?;
                    }
                }
            },
            Some(_) => Ok(()),
        }
    }
    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<(), A::Error> {
        if self.path.is_empty() {
            return Err(hit());
        }
        let (_tag, v): (IgnoredAny, _) = a.variant()?;
        v.newtype_variant_seed(self)
    }
}

struct KeySeed<'a> {
    want: &'a str,
    fail: bool,
}

impl KeySeed<'_> {
    fn is<E: de::Error>(self, s: &str) -> Result<bool, E> {
        if s == self.want {
            if self.fail {
                Err(hit())
            } else {
                Ok(true)
            }
        } else {
            Ok(false)
        }
    }
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
        self.is(s)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.is(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.is(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.is(&v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.is(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.is("null")
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        self.is("null")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<bool, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<bool, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_enum<A: EnumAccess<'de>>(self, a: A) -> Result<bool, A::Error> {
        let (_tag, v): (IgnoredAny, _) = a.variant()?;
        v.newtype_variant::<IgnoredAny>()?;
        Ok(false)
    }
}

/// The block-style `steps:` list as text: each item's position (where its node starts) and
/// first word (its op), and the line after the list ends. Empty when there is no block-style
/// top-level `steps:` key.
fn scan_steps(text: &str) -> (Vec<(Pos, String)>, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == "steps:") else {
        return (Vec::new(), 0);
    };
    let mut items = Vec::new();
    let mut item_indent = None;
    let mut pending: Option<String> = None;
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = l.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = l.len() - trimmed.len();
        if let Some(op) = pending.take() {
            // The item's node starts on the line after a lone `-`.
            items.push((Pos { line: i + 1, column: indent + 1 }, op_word(trimmed, &op)));
        }
        if indent == 0 && !trimmed.starts_with('-') {
            return (items, i + 1);
        }
        if (trimmed == "-" || trimmed.starts_with("- ")) && *item_indent.get_or_insert(indent) == indent {
            let after = trimmed[1..].trim_start();
            if after.is_empty() {
                pending = Some(String::new());
            } else {
                let column = indent + 1 + (trimmed.len() - after.len());
                items.push((Pos { line: i + 1, column }, op_word(after, "")));
            }
        }
    }
    (items, lines.len() + 1)
}

/// The first word of a step's text (its op).
fn op_word(text: &str, default: &str) -> String {
    let w =
        text.trim_start_matches('{').split(|c: char| c == ':' || c == ',' || c.is_whitespace()).next().unwrap_or("");
    if w.is_empty() {
        default.to_owned()
    } else {
        w.to_owned()
    }
}

/// The position of each of the `count` steps: from the text scan when it agrees with a
/// probe of the first and the last step, else by probing each one.
pub fn step_positions(text: &str, count: usize) -> Vec<Option<Pos>> {
    let probe = |i: usize| locate(text, &[Seg::Key("steps".into()), Seg::Index(i)], false);
    let (items, _) = scan_steps(text);
    if count > 0 && items.len() == count && Some(items[0].0) == probe(0) && Some(items[count - 1].0) == probe(count - 1)
    {
        return items.into_iter().map(|(p, _)| Some(p)).collect();
    }
    (0..count).map(probe).collect()
}

/// The step (index from 0, and its first key, the op) whose text holds line `line`, found by
/// scanning the block-style `steps:` list. For documents that do not parse.
pub fn step_at_line(text: &str, line: usize) -> Option<(usize, String)> {
    let (items, end) = scan_steps(text);
    if line >= end {
        return None;
    }
    items.iter().enumerate().rev().find(|(_, (p, _))| p.line <= line).map(|(i, (_, op))| (i, op.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Seg {
        Seg::Key(s.into())
    }

    const DOC: &str = "# c\nname: x\nlayers:\n  L0:\n    a: !whiteout\n    d: !file {data: x, mode: 0644}\nsteps:\n- stat: /a\n  expect: ENOENT\n-   rename: /a\n    to: /b\n- {op: x, y: [1, 2]}\n- unmount\n";

    #[test]
    fn probes_find_nodes_keys_and_tagged_values() {
        let at = |p: &[Seg], key| locate(DOC, p, key).map(|p| (p.line, p.column));
        assert_eq!(at(&[k("layers"), k("L0"), k("a")], false), Some((5, 8)));
        assert_eq!(at(&[k("layers"), k("L0"), k("d"), k("mode")], true), Some((6, 24)));
        assert_eq!(at(&[k("steps"), Seg::Index(1)], false), Some((10, 5)));
        assert_eq!(at(&[k("steps"), Seg::Index(2), k("y"), Seg::Index(1)], false), Some((12, 18)));
        assert_eq!(at(&[k("steps"), Seg::Index(3)], false), Some((13, 3)));
        assert_eq!(at(&[k("steps"), Seg::Index(4)], false), None);
        let near = locate_nearest(DOC, &[k("steps"), Seg::Index(1), k("nope")], true);
        assert_eq!((near.line, near.column), (10, 5));
    }

    #[test]
    fn prescan_finds_the_step_of_a_line() {
        assert_eq!(step_at_line(DOC, 9), Some((0, "stat".into())));
        assert_eq!(step_at_line(DOC, 11), Some((1, "rename".into())));
        assert_eq!(step_at_line(DOC, 12), Some((2, "op".into())));
        assert_eq!(step_at_line(DOC, 13), Some((3, "unmount".into())));
        assert_eq!(step_at_line(DOC, 4), None);
    }

    #[test]
    fn scanned_step_positions_equal_the_probes() {
        let probe_all = |text: &str, n: usize| -> Vec<Option<Pos>> {
            (0..n).map(|i| locate(text, &[k("steps"), Seg::Index(i)], false)).collect()
        };
        let mut docs: Vec<String> = vec![
            DOC.to_owned(),
            "steps: [{stat: /a}, {stat: /b}]\n".to_owned(),
            "steps:\n- stat: /a\n-\n  stat: /b\n# c\n-   unmount\nfinal: {}\n".to_owned(),
        ];
        for e in std::fs::read_dir("spec/examples").unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                docs.push(std::fs::read_to_string(p).unwrap());
            }
        }
        for d in &docs {
            let n = match yaml_serde::from_str::<yaml_serde::Value>(d).unwrap().get("steps") {
                Some(yaml_serde::Value::Sequence(s)) => s.len(),
                _ => 0,
            };
            assert_eq!(step_positions(d, n), probe_all(d, n), "{d}");
        }
    }
}
