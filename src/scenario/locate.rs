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
//!
//! Many positions at once (every problem of a scenario with thousands of bad steps) are
//! looked up in a [`PosIndex`] instead: one pass of an event parser (`saphyr-parser`, which
//! gives every event its span) records the position of every node and key, so that locating
//! N problems costs one pass, not N parses. Its positions equal the probes' (a test checks
//! every node of every file under `spec/`).

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

/// The position of every node (and of every mapping key) of a YAML document, by path.
#[derive(Clone, Debug, Default)]
pub struct PosIndex {
    /// `path -> (node position, key position)`; the key position is that of the key under
    /// which the node is the value, when its parent is a mapping.
    nodes: std::collections::HashMap<YamlPath, (Pos, Option<Pos>)>,
}

impl Pos {
    /// The position of a `saphyr-parser` marker (whose column counts from 0).
    fn of(m: saphyr_parser::Marker) -> Pos {
        Pos { line: m.line(), column: m.col() + 1 }
    }
}

/// Where the second document of a stream starts (its `---`), if there is one.
pub fn second_document(text: &str) -> Option<Pos> {
    saphyr_parser::Parser::new_from_str(text)
        .map_while(Result::ok)
        .filter(|(ev, _)| matches!(ev, saphyr_parser::Event::DocumentStart(_)))
        .nth(1)
        .map(|(_, span)| Pos::of(span.start))
}

/// The most index entries copied for aliases, in all.
const ALIAS_COPIES_MAX: usize = 100_000;

/// Where a node sits while the index is built.
enum Frame {
    /// A sequence at `path`; `next` is the index of its next item.
    Seq { path: YamlPath, next: usize },
    /// A mapping at `path`; `key` is the pending key (its text and position) when the next
    /// node is a value, `None` when it is a key.
    Map { path: YamlPath, key: Option<(String, Pos)> },
    /// A non-scalar key (`? [a, b]: x`), skipped: the nesting depth inside it.
    Skip(usize),
}

impl PosIndex {
    /// The index of `text`, built in one pass; empty past the first document, or when the
    /// text does not parse (then [`locate`] cannot find anything either).
    pub fn new(text: &str) -> PosIndex {
        let mut nodes: std::collections::HashMap<YamlPath, (Pos, Option<Pos>)> = std::collections::HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut documents = 0;
        let lines: Vec<&str> = text.split('\n').collect();
        let mut anchors: std::collections::HashMap<usize, YamlPath> = std::collections::HashMap::new();
        let mut copied = 0;
        for ev in saphyr_parser::Parser::new_from_str(text) {
            let Ok((ev, span)) = ev else { break };
            use saphyr_parser::Event as E;
            let mut pos = Pos::of(span.start);
            if matches!(ev, E::SequenceStart(..)) && span.start == span.end {
                // A block sequence starts at its first `-` (where libyaml, and so the probes,
                // put it); saphyr puts it at the first item's content.
                pos = dash_before(&lines, pos).unwrap_or(pos);
            }
            if matches!(ev, E::Scalar(..)) && span.start == span.end {
                // An empty value (`unmount:` then its fields below): saphyr puts it at the
                // `:`, libyaml (and so the probes) just after it.
                let at = lines.get(pos.line - 1).and_then(|l| l.chars().nth(pos.column - 1));
                if at == Some(':') {
                    pos.column += 1;
                }
            }
            let (opens, closes) = match &ev {
                E::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        break;
                    }
                    continue;
                }
                E::Scalar(..) | E::Alias(_) => (false, false),
                E::SequenceStart(..) | E::MappingStart(..) => (true, false),
                E::SequenceEnd | E::MappingEnd => (false, true),
                _ => continue,
            };
            if let Some(Frame::Skip(depth)) = stack.last_mut() {
                if opens {
                    *depth += 1;
                } else if closes {
                    *depth -= 1;
                }
                if *depth == 0 {
                    stack.pop();
                    if let Some(Frame::Map { key, .. }) = stack.last_mut() {
                        // Nothing can name the value of a complex key.
                        *key = Some(("\u{0}complex key".into(), pos));
                    }
                }
                continue;
            }
            if closes {
                stack.pop();
                continue;
            }
            // The node's path, or a key of a mapping.
            let (path, key_pos) = match stack.last_mut() {
                None => (Vec::new(), None),
                Some(Frame::Seq { path, next }) => {
                    let mut p = path.clone();
                    p.push(Seg::Index(*next));
                    *next += 1;
                    (p, None)
                }
                Some(Frame::Map { path, key }) => match key.take() {
                    Some((k, kpos)) => {
                        let mut p = path.clone();
                        p.push(Seg::Key(k));
                        (p, Some(kpos))
                    }
                    None => {
                        match &ev {
                            E::Scalar(v, style, _, _) => *key = Some((key_text(v, *style), pos)),
                            _ if opens => stack.push(Frame::Skip(1)),
                            _ => *key = Some(("\u{0}alias key".into(), pos)),
                        }
                        continue;
                    }
                },
                Some(Frame::Skip(_)) => unreachable!("handled above"),
            };
            match &ev {
                E::SequenceStart(..) => stack.push(Frame::Seq { path: path.clone(), next: 0 }),
                E::MappingStart(..) => stack.push(Frame::Map { path: path.clone(), key: None }),
                _ => {}
            }
            if let E::Scalar(_, _, id, _) | E::SequenceStart(id, _) | E::MappingStart(id, _) = &ev {
                if *id != 0 {
                    anchors.insert(*id, path.clone());
                }
            }
            if let E::Alias(id) = &ev {
                // An alias reads as its anchored node (as yaml_serde replays it): the same
                // positions, under this path. Copies are capped against alias bombs.
                if let Some(from) = anchors.get(id) {
                    let copies: Vec<(YamlPath, (Pos, Option<Pos>))> = nodes
                        .iter()
                        .filter(|(p, _)| p.starts_with(from))
                        .take(ALIAS_COPIES_MAX.saturating_sub(copied))
                        .map(|(p, v)| {
                            let mut q = path.clone();
                            q.extend_from_slice(&p[from.len()..]);
                            (q, if p.len() == from.len() { (v.0, key_pos) } else { *v })
                        })
                        .collect();
                    copied += copies.len();
                    for (q, v) in copies {
                        nodes.entry(q).or_insert(v);
                    }
                    continue;
                }
            }
            nodes.entry(path).or_insert((pos, key_pos));
        }
        PosIndex { nodes }
    }

    /// The position of the node at `path` (or of its key, with `key`), as [`locate`] finds it.
    pub fn get(&self, path: &[Seg], key: bool) -> Option<Pos> {
        let (node, k) = self.nodes.get(path)?;
        if key {
            *k
        } else {
            Some(*node)
        }
    }

    /// The position of the node at `path`, or of the nearest ancestor that exists, as
    /// [`locate_nearest`] finds it.
    pub fn nearest(&self, path: &[Seg], key: bool) -> Pos {
        let mut key = key;
        for len in (0..=path.len()).rev() {
            if let Some(p) = self.get(&path[..len], key) {
                return p;
            }
            key = false;
        }
        Pos { line: 1, column: 1 }
    }
}

/// The position of the last `-` before `pos`, on its line or on the lines above it (past
/// blank and comment lines), where a block sequence's first entry begins.
fn dash_before(lines: &[&str], pos: Pos) -> Option<Pos> {
    let mut line = pos.line;
    let mut text: String = lines.get(line - 1)?.chars().take(pos.column - 1).collect();
    loop {
        let code = match text.find(" #") {
            Some(i) => &text[..i],
            None if text.trim_start().starts_with('#') => "",
            None => &text,
        };
        let code = code.trim_end();
        if code.ends_with('-') {
            return Some(Pos { line, column: code.chars().count() });
        }
        if !code.trim().is_empty() || line == 1 {
            return None;
        }
        line -= 1;
        text = lines[line - 1].to_owned();
    }
}

/// A key's text as [`KeySeed`] compares it: plain scalars that YAML reads as null, booleans
/// or integers in their canonical form, everything else as written.
fn key_text(v: &str, style: saphyr_parser::ScalarStyle) -> String {
    if style != saphyr_parser::ScalarStyle::Plain {
        return v.to_owned();
    }
    match v {
        "~" | "null" | "Null" | "NULL" | "" => "null".into(),
        "true" | "True" | "TRUE" => "true".into(),
        "false" | "False" | "FALSE" => "false".into(),
        _ => v.parse::<i64>().map(|n| n.to_string()).unwrap_or_else(|_| v.to_owned()),
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
    let w = first_word(text);
    if w.is_empty() {
        default.to_owned()
    } else {
        w.to_owned()
    }
}

/// The first word of a step's text: up to a `:`, `,` or whitespace, after any `{`.
fn first_word(text: &str) -> &str {
    text.trim_start_matches('{').split(|c: char| c == ':' || c == ',' || c.is_whitespace()).next().unwrap_or("")
}

/// The position of each step when the top-level `steps:` list is written in plain block
/// style, found by one scan of its lines instead of an event parse of the whole document;
/// `ops` are the steps' ops, in order (as read from the parsed document). `None` (then
/// [`step_positions`] asks a [`PosIndex`]) whenever the text is anything else or the scan
/// is unsure: no `steps:` line of its own, a flow-style list, tabs in an indentation, an
/// item that opens with an anchor, alias, tag, quote, `?` or block scalar, lines that do not
/// nest, or items whose count or first words are not the steps' count and ops. Its positions
/// equal the index's (a test checks every `spec/` file and mutations of them).
pub fn block_step_positions(text: &str, ops: &[&str]) -> Option<Vec<Option<Pos>>> {
    let mut lines = text.lines().enumerate();
    lines.find(|(_, l)| l.trim_end_matches([' ', '\r']) == "steps:")?;
    let mut out = Vec::with_capacity(ops.len());
    let mut item_indent: Option<usize> = None;
    let mut pending = false;
    let push = |out: &mut Vec<Option<Pos>>, pos: Pos, rest: &str| {
        if ops.get(out.len()) != Some(&first_word(rest)) {
            return false;
        }
        out.push(Some(pos));
        true
    };
    for (i, l) in lines {
        let trimmed = l.trim_start_matches(' ');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.starts_with(|c: char| c.is_whitespace()) {
            return None;
        }
        let indent = l.len() - trimmed.len();
        if pending {
            // The item's node starts on the line after a lone `-`.
            if item_indent.is_some_and(|d| indent <= d) || !plain_start(trimmed) {
                return None;
            }
            pending = false;
            if !push(&mut out, Pos { line: i + 1, column: indent + 1 }, trimmed) {
                return None;
            }
            continue;
        }
        let dash = trimmed == "-" || trimmed.starts_with("- ");
        if indent == 0 && !dash {
            if trimmed.starts_with('-') {
                return None;
            }
            break;
        }
        let depth = *item_indent.get_or_insert(indent);
        if indent < depth || (indent == depth && !dash) {
            return None;
        }
        if indent > depth {
            continue;
        }
        let after = trimmed[1..].trim_start_matches(' ');
        if after.starts_with(|c: char| c.is_whitespace()) {
            return None;
        }
        if after.is_empty() || after.starts_with('#') {
            pending = true;
            continue;
        }
        if !plain_start(after) {
            return None;
        }
        let column = indent + 1 + (trimmed.len() - after.len());
        if !push(&mut out, Pos { line: i + 1, column }, after) {
            return None;
        }
    }
    (!pending && out.len() == ops.len()).then_some(out)
}

/// [`block_step_positions`] from where the fast reader found the items of the `steps:` list
/// ([`super::fast::load_with_steps`]: line, column, the item's text on that line), with the
/// same checks: each item starts plainly and its first word is its step's op, and there are
/// as many items as steps. The scan is not repeated over the text.
pub fn checked_step_positions(starts: &[(usize, usize, &str)], ops: &[&str]) -> Option<Vec<Option<Pos>>> {
    if starts.len() != ops.len() {
        return None;
    }
    starts
        .iter()
        .zip(ops)
        .map(|(&(line, column, text), op)| {
            (plain_start(text) && first_word(text) == *op).then_some(Some(Pos { line, column }))
        })
        .collect()
}

/// Whether a node written as `text` starts plainly: not with an anchor, alias, tag, quote,
/// complex key, block scalar or reserved indicator, whose start the scan does not follow.
fn plain_start(text: &str) -> bool {
    !text.starts_with(['&', '*', '!', '?', '|', '>', '%', '@', '`', '"', '\'', '-', ':', ',', '[', ']', '}'])
}

/// The position of each of the `count` steps, from the document's index.
pub fn step_positions(index: &PosIndex, count: usize) -> Vec<Option<Pos>> {
    (0..count).map(|i| index.get(&[Seg::Key("steps".into()), Seg::Index(i)], false)).collect()
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
        let near = PosIndex::new(DOC).nearest(&[k("steps"), Seg::Index(1), k("nope")], true);
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

    /// Every `spec/` file, and the documents above.
    fn documents() -> Vec<String> {
        let mut docs: Vec<String> = vec![
            DOC.to_owned(),
            "steps: [{stat: /a}, {stat: /b}]\n".to_owned(),
            "steps:\n- stat: /a\n-\n  stat: /b\n# c\n-   unmount\nfinal: {}\n".to_owned(),
            "? [a, b]\n: {c: 1}\nd: &x {e: [1, !t 2]}\nf: *x\n1: one\n~: n\n'q': {\"r\": !u {s: 1}}\n".to_owned(),
        ];
        let files = crate::scenario::find_files(&["spec".into()]).unwrap().files;
        docs.extend(files.iter().map(|p| std::fs::read_to_string(p).unwrap()));
        docs
    }

    #[test]
    fn the_index_finds_what_the_probes_find() {
        let mut checked = 0;
        for (n, d) in documents().iter().enumerate() {
            let index = PosIndex::new(d);
            assert!(!index.nodes.is_empty(), "{d}");
            let mut paths: Vec<&YamlPath> = index.nodes.keys().collect();
            paths.sort_by_key(|p| format!("{p:?}"));
            // Every node of the small documents; a sample of the spec files (a probe is a
            // whole parse).
            let stride = if n < 4 { 1 } else { 2 };
            // Values under a complex or alias key are indexed under a name no path has.
            let nameable = |p: &&YamlPath| !p.iter().any(|s| matches!(s, Seg::Key(k) if k.starts_with('\u{0}')));
            for p in paths.into_iter().filter(nameable).skip(n % stride).step_by(stride) {
                assert_eq!(index.get(p, false), locate(d, p, false), "{p:?} in\n{d}");
                if let Some(k) = index.get(p, true) {
                    assert_eq!(Some(k), locate(d, p, true), "key of {p:?} in\n{d}");
                }
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// The steps' ops and the index's positions of a document that reads as a scenario.
    fn index_positions(d: &str) -> Option<(Vec<&'static str>, Vec<Option<Pos>>)> {
        let s = crate::scenario::parse(d, "spec/x.yaml").ok()?;
        let ops: Vec<&'static str> = s.steps.iter().map(crate::scenario::Step::op_name).collect();
        let index = step_positions(&PosIndex::new(d), ops.len());
        Some((ops, index))
    }

    /// The positions the fast reader's item starts give ([`checked_step_positions`]); when
    /// there are any, the line scan gives the same ones.
    fn reader_positions(d: &str, ops: &[&str]) -> Option<Vec<Option<Pos>>> {
        let arena = bumpalo::Bump::new();
        let starts = crate::scenario::fast::load_with_steps(d, &arena)?.1?;
        let positions = checked_step_positions(&starts, ops)?;
        assert_eq!(block_step_positions(d, ops).as_ref(), Some(&positions), "{d}");
        Some(positions)
    }

    #[test]
    fn the_line_scan_finds_what_the_index_finds() {
        let mut scanned = 0;
        let mut docs = documents();
        docs.extend(
            [
                "name: x\nrules: r\nlayers: {}\nsteps:\n  -\n    # c\n    stat: /a\n  - {lstat: /b}\n\n  -   unmount\n",
                "name: x\nrules: r\nlayers: {}\nsteps:\n- !x {stat: /a}\n",
                "name: x\nrules: r\nlayers: {}\nsteps:\n- 'unmount'\n",
                "name: x\nrules: r\nlayers: {}\nsteps: [unmount]\n",
                "name: x\nrules: r\nlayers: {}\nsteps:\n- expect: ENOENT\n  stat: /a\n",
                "name: x\nrules: r\nlayers: {}\nsteps:\n- stat: /a\n  expect: ok\n  note: \"x\n- unlink: /b\"\n",
                "name: x\nrules: r\nlayers: {}\nsteps:\n- stat: /a\n-x: 1\n",
                "name: x\nrules: r\nlayers: {}\nsteps:\n  - stat: /a\n-x: 1\n",
                "name: x\nrules: r\nlayers: {}\nsteps:\n  -\n    stat: /a\n  - lstat: /b\n",
                "name: x\nrules: r\nlayers: {}\nsteps:  \n- unmount\n",
                "name: x\nrules: r\nlayers: {}\nsteps: # c\n- unmount\n",
            ]
            .map(str::to_owned),
        );
        let mut read = 0;
        for d in &docs {
            let Some((ops, index)) = index_positions(d) else { continue };
            if let Some(fast) = block_step_positions(d, &ops) {
                assert_eq!(fast, index, "{d}");
                scanned += 1;
            }
            if let Some(fast) = reader_positions(d, &ops) {
                assert_eq!(fast, index, "{d}");
                read += 1;
            }
        }
        // Nearly every spec file takes the scan, and the fast reader's starts.
        assert!(scanned * 10 > docs.len() * 9, "{scanned} of {}", docs.len());
        assert!(read * 10 > docs.len() * 9, "{read} of {}", docs.len());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// Line edits of spec files: whenever the scan answers, it answers as the index.
        #[test]
        fn the_line_scan_agrees_on_edited_files(
            i in proptest::prelude::any::<usize>(),
            edits in proptest::collection::vec((0usize..8, proptest::prelude::any::<usize>()), 1..4),
        ) {
            let docs = documents();
            let mut lines: Vec<String> = docs[i % docs.len()].lines().map(str::to_owned).collect();
            for (kind, at) in edits {
                if lines.is_empty() {
                    break;
                }
                let at = at % lines.len();
                match kind {
                    0 => { lines.remove(at); }
                    1 => { let l = lines[at].clone(); lines.insert(at, l); }
                    2 => lines[at].insert(0, ' '),
                    3 => lines.insert(at, "- unmount".into()),
                    4 => lines.insert(at, "  # - stat: /x".into()),
                    5 => lines.insert(at, "-x: 1".into()),
                    6 => lines.insert(at, "-".into()),
                    _ => lines[at] = lines[at].trim_start().to_owned(),
                }
            }
            let d = lines.join("\n") + "\n";
            if let Some((ops, index)) = index_positions(&d) {
                if let Some(fast) = block_step_positions(&d, &ops) {
                    proptest::prop_assert_eq!(fast, index.clone(), "{}", d);
                }
                if let Some(fast) = reader_positions(&d, &ops) {
                    proptest::prop_assert_eq!(fast, index, "{}", d);
                }
            }
        }
    }

    #[test]
    fn step_positions_equal_the_probes() {
        for d in documents() {
            let n = match yaml_serde::from_str::<yaml_serde::Value>(&d).unwrap().get("steps") {
                Some(yaml_serde::Value::Sequence(s)) => s.len(),
                _ => 0,
            };
            let probes: Vec<Option<Pos>> = (0..n).map(|i| locate(&d, &[k("steps"), Seg::Index(i)], false)).collect();
            assert_eq!(step_positions(&PosIndex::new(&d), n), probes, "{d}");
        }
    }
}
