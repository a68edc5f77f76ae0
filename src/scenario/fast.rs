//! A fast reader for the plain block style that scenario files are written in, giving the
//! same tree as `yaml_serde::from_str` (converted by [`Node::from_value`]) or nothing.
//!
//! `yaml_serde` (a port of libyaml, then serde's `Value` visitor) costs about two thirds of
//! parsing a scenario. Scenario files use a small part of YAML: block mappings and
//! sequences, one-line flow mappings and sequences, plain and one-line quoted scalars, and
//! local tags (`!whiteout`, `!hex`, ...), also alone on a key's or dash's line before the
//! block node they tag (`f: !file` with `data:` below). [`load_with_steps`] reads exactly
//! that part in one pass over the lines and gives up (`None`) at anything else: anchors,
//! aliases, block scalars, multi-line scalars or flow collections, complex keys, directives
//! and document markers, tabs, carriage returns, bytes outside printable ASCII, a duplicate
//! key, a number it does not read the way `yaml_serde` does, a nesting deeper than
//! [`DEPTH_MAX`], and whatever does not nest as block style requires. The caller then parses with `yaml_serde`, so every
//! malformed document is reported exactly as before; a test checks that every `spec/` file
//! and many mutations of them read the same both ways.

use super::node::{Node, Tag, Tagged};
use bumpalo::Bump;
use yaml_serde::Number;

/// The deepest nesting read here (`yaml_serde` stops at 128).
const DEPTH_MAX: usize = 64;

/// A line with content: its number (from 1), its indentation and its text after it.
#[derive(Clone, Copy)]
struct Line<'t> {
    no: usize,
    indent: usize,
    text: &'t str,
}

/// A [`Line`] as kept between documents: its text as a range of the document's bytes.
#[derive(Clone, Copy)]
struct LineAt {
    no: usize,
    indent: usize,
    start: usize,
    end: usize,
}

thread_local! {
    /// The line table of the last document read on this thread, kept for the next one:
    /// a table of a ~1.4 KB scenario is about 1.5 KB, which the system allocator serves
    /// from its slow path every time.
    static LINES: std::cell::Cell<Vec<LineAt>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The most lines whose table is kept between documents.
const LINES_KEPT: usize = 1 << 14;

/// Where an item of the top-level `steps:` list starts: its line and column (from 1) and
/// the item's text from there to the end of that line.
pub(crate) type StepStart<'t> = (usize, usize, &'t str);

/// The document as `yaml_serde::from_str` reads it, or `None` when the text is outside the
/// subset read here (see the module's documentation).
#[cfg(test)]
pub(crate) fn load<'t>(text: &'t str, arena: &'t Bump) -> Option<Node<'t>> {
    load_with_steps(text, arena).map(|(v, _)| v)
}

/// The document as `yaml_serde::from_str` reads it (`None` outside the subset), with where
/// each item of the top-level block sequence `steps:` starts when the key is alone on its
/// line (`steps:`, as [`super::locate::block_step_positions`] wants it), its items are block
/// sequence items, each with its node on the dash's line or on the one after a lone dash,
/// and no line at indentation 0 that starts with `-` follows the list.
/// The tree's collections, tags and unescaped strings are allocated in `arena`.
pub(crate) fn load_with_steps<'t>(text: &'t str, arena: &'t Bump) -> Option<(Node<'t>, Option<Vec<StepStart<'t>>>)> {
    let mut lines = LINES.take();
    lines.clear();
    let read = read_lines(text, arena, &mut lines);
    if lines.capacity() <= LINES_KEPT {
        LINES.set(lines);
    }
    read
}

/// [`load_with_steps`], with `lines` (empty) for the line table.
fn read_lines<'t>(
    text: &'t str,
    arena: &'t Bump,
    lines: &mut Vec<LineAt>,
) -> Option<(Node<'t>, Option<Vec<StepStart<'t>>>)> {
    let b = text.as_bytes();
    lines.reserve(text.len() / 16 + 1);
    // One pass over the bytes: every byte printable ASCII or a newline; each line's
    // indentation, and its text without trailing spaces unless it is blank or a comment.
    let mut start = 0;
    let mut no = 0;
    while start <= b.len() {
        no += 1;
        let end = line_end(b, start)?;
        let mut body = start;
        while body < end && b[body] == b' ' {
            body += 1;
        }
        let mut last = end;
        while last > body && b[last - 1] == b' ' {
            last -= 1;
        }
        if last > body && b[body] != b'#' {
            let indent = body - start;
            let t = &text[body..last];
            if indent == 0 && (t.starts_with("---") || t.starts_with("...") || t.starts_with('%')) {
                return None;
            }
            lines.push(LineAt { no, indent, start: body, end: last });
        }
        start = end + 1;
    }
    if lines.first()?.indent != 0 {
        return None;
    }
    let mut r = Reader { text, arena, lines, at: 0, items: Vec::new(), entries: Vec::new(), steps: None };
    let v = r.block(0, 0)?;
    (r.at == r.lines.len()).then_some((v, r.steps))
}

/// The end of the line that starts at `i` (its newline, or the end of the text), or `None`
/// when a byte before it is neither printable ASCII nor a newline. Eight bytes at a time
/// while none of them is below `' '` or above `'~'` (the word tests are exact when they
/// find nothing; a word they flag is looked at byte by byte).
fn line_end(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(word) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().ok()?);
        // A byte below 0x20, or one at or above 0x7f.
        let below = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let above = ((x & !HIGH).wrapping_add(ONES) | x) & HIGH;
        if below | above != 0 {
            break;
        }
        i += 8;
    }
    while i < b.len() {
        match b[i] {
            b'\n' => return Some(i),
            b' '..=b'~' => i += 1,
            _ => return None,
        }
    }
    Some(b.len())
}

struct Reader<'t, 'l> {
    text: &'t str,
    /// Where the tree's collections go.
    arena: &'t Bump,
    lines: &'l mut [LineAt],
    at: usize,
    /// The items of the block sequences being read, innermost last: each sequence is
    /// allocated once in the arena, at its length, when it ends.
    items: Vec<Node<'t>>,
    /// The same for the entries of block mappings.
    entries: Vec<(Node<'t>, Node<'t>)>,
    /// Where the items of the top-level `steps:` list start ([`load_with_steps`]).
    steps: Option<Vec<StepStart<'t>>>,
}

impl<'t> Reader<'t, '_> {
    fn peek(&self) -> Option<Line<'t>> {
        let l = self.lines.get(self.at)?;
        Some(Line { no: l.no, indent: l.indent, text: &self.text[l.start..l.end] })
    }

    /// The block node whose first line is the current one, at that line's indentation.
    fn block(&mut self, indent: usize, depth: usize) -> Option<Node<'t>> {
        if depth > DEPTH_MAX {
            return None;
        }
        let l = self.peek()?;
        if l.indent != indent {
            return None;
        }
        if is_dash(l.text) {
            self.sequence(indent, depth, false)
        } else if key_end(l.text).is_none() {
            // A scalar or flow node on a line of its own.
            self.at += 1;
            inline(l.text, self.arena, depth + 1)
        } else {
            self.mapping(indent, depth)
        }
    }

    /// A block sequence whose items' dashes are at `indent`. `steps`: the top-level
    /// `steps:` list, whose items' starts are kept in `self.steps`.
    fn sequence(&mut self, indent: usize, depth: usize, steps: bool) -> Option<Node<'t>> {
        let start = self.items.len();
        let mut starts = steps.then(Vec::new);
        while let Some(l) = self.peek() {
            if l.indent != indent || !is_dash(l.text) {
                break;
            }
            let rest = l.text[1..].trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                self.at += 1;
                if let Some(s) = &mut starts {
                    match self.peek() {
                        Some(n) if n.indent > indent => s.push((n.no, n.indent + 1, n.text)),
                        _ => starts = None,
                    }
                }
                let item = self.nested(indent, depth)?;
                self.items.push(item);
                continue;
            }
            let column = indent + (l.text.len() - rest.len());
            if is_dash(rest) {
                return None;
            }
            if let Some(s) = &mut starts {
                s.push((l.no, column + 1, rest));
            }
            let item = if key_end(rest).is_some() {
                // A mapping that starts on the dash's line: its keys are at `column`.
                let at = &mut self.lines[self.at];
                at.indent = column;
                at.start = at.end - rest.len();
                self.mapping(column, depth + 1)?
            } else {
                self.at += 1;
                match self.tagged_block(rest, indent, depth, false)? {
                    Some(v) => v,
                    None => inline(rest, self.arena, depth + 1)?,
                }
            };
            self.items.push(item);
            if self.peek().is_some_and(|n| n.indent > indent) {
                return None;
            }
        }
        if starts.is_some() && !self.peek().is_some_and(|n| n.indent == 0 && n.text.starts_with('-')) {
            self.steps = starts;
        }
        Some(Node::Sequence(self.arena.alloc_slice_fill_iter(self.items.drain(start..))))
    }

    /// A block mapping whose keys are at `indent`.
    fn mapping(&mut self, indent: usize, depth: usize) -> Option<Node<'t>> {
        let start = self.entries.len();
        while let Some(l) = self.peek() {
            if l.indent < indent {
                break;
            }
            if l.indent > indent || is_dash(l.text) {
                return None;
            }
            let (k, rest) = key_end(l.text)?;
            let key = scalar_text(k, self.arena)?;
            self.at += 1;
            let rest = rest.trim_start_matches(' ');
            let value = if rest.is_empty() || rest.starts_with('#') {
                // The top-level `steps:` list, its key alone on its line.
                let steps = depth == 0 && l.text == "steps:";
                match self.peek() {
                    // A sequence may sit at its key's indentation.
                    Some(n) if n.indent == indent && is_dash(n.text) => self.sequence(indent, depth + 1, steps)?,
                    // As `nested` reads it (`block` at the deeper line).
                    Some(n) if steps && n.indent > indent && is_dash(n.text) => {
                        self.sequence(n.indent, depth + 1, true)?
                    }
                    _ => self.nested(indent, depth)?,
                }
            } else {
                match self.tagged_block(rest, indent, depth, true)? {
                    Some(v) => v,
                    None => inline(rest, self.arena, depth + 1)?,
                }
            };
            self.entries.push((key, value));
        }
        if !unique_keys(&self.entries[start..]) {
            return None;
        }
        Some(Node::Mapping(self.arena.alloc_slice_fill_iter(self.entries.drain(start..))))
    }

    /// A tag alone on the line of a key or dash at `indent` (`f: !file`, a comment allowed
    /// after it) whose node is the block on the deeper lines after it: `Some(Some(node))`
    /// for that tagged node, `Some(None)` when `rest` is not a lone tag or no deeper line
    /// follows (the tag is read on its line), `None` for what is not read here: a second
    /// tag on the next line, or (`key`: after a mapping key) a sequence at `indent`.
    fn tagged_block(&mut self, rest: &'t str, indent: usize, depth: usize, key: bool) -> Option<Option<Node<'t>>> {
        let Some(tag) = lone_tag(rest) else { return Some(None) };
        match self.peek() {
            Some(n) if n.indent > indent => {
                if n.text.starts_with('!') {
                    return None;
                }
                let value = self.block(n.indent, depth + 2)?;
                Some(Some(Node::Tagged(self.arena.alloc(Tagged { tag: Tag(tag), value }))))
            }
            Some(n) if key && n.indent == indent && is_dash(n.text) => None,
            _ => Some(None),
        }
    }

    /// The block node on the lines after a key or dash at `indent` with nothing after it:
    /// empty unless the next line is deeper.
    fn nested(&mut self, indent: usize, depth: usize) -> Option<Node<'t>> {
        match self.peek() {
            Some(n) if n.indent > indent => self.block(n.indent, depth + 1),
            _ => Some(Node::Null),
        }
    }
}

/// Whether no two entries of a mapping have the same key (`yaml_serde` refuses that).
fn unique_keys(m: &[(Node, Node)]) -> bool {
    if m.len() < 2 {
        return true;
    }
    if m.len() <= 16 {
        // Keys are compared only where their signatures are equal, as equal keys' are.
        let mut sigs = [0u64; 16];
        for (i, (k, _)) in m.iter().enumerate() {
            let sig = key_sig(k);
            if sigs[..i].iter().zip(m).any(|(s, (o, _))| *s == sig && o == k) {
                return false;
            }
            sigs[i] = sig;
        }
        return true;
    }
    let mut seen: Vec<&Node> = m.iter().map(|(k, _)| k).collect();
    seen.sort_by(|a, b| key_order(a).cmp(&key_order(b)));
    seen.windows(2).all(|w| w[0] != w[1])
}

/// A key's signature: a string key's length, first and last bytes; the same for every
/// other key. Equal keys have equal signatures.
fn key_sig(k: &Node) -> u64 {
    match k {
        Node::String(s) => {
            let b = s.as_bytes();
            let end = |c: Option<&u8>| c.map_or(0, |&c| u64::from(c));
            (b.len() as u64) << 16 | end(b.first()) << 8 | end(b.last())
        }
        _ => u64::MAX,
    }
}

/// An order of the scalar keys read here in which equal keys are neighbours.
fn key_order<'a>(k: &'a Node) -> (u8, &'a str, Option<u64>, Option<i64>) {
    match k {
        Node::Null => (0, "", None, None),
        Node::Bool(b) => (1 + u8::from(*b), "", None, None),
        Node::Number(n) => (3, "", n.as_u64(), n.as_i64()),
        Node::String(s) => (4, s, None, None),
        _ => (5, "", None, None),
    }
}

/// The name of the tag that is all of `text` but a comment (`!file`, `!file  # c`).
fn lone_tag(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    if b.first() != Some(&b'!') {
        return None;
    }
    let end = 1 + b[1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_' || **c == b'-').count();
    if end == 1 {
        return None;
    }
    let after = text[end..].trim_start_matches(' ');
    (after.is_empty() || (after.starts_with('#') && after.len() < text.len() - end)).then_some(&text[1..end])
}

/// Whether a line's text is a sequence entry (`-` alone or followed by a space).
fn is_dash(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

/// A block mapping key and what follows its `:`, when `text` starts with one: a plain key up
/// to the first `: ` (or a `:` ending the line), or a quoted key followed by `:`.
fn key_end(text: &str) -> Option<(&str, &str)> {
    let end = if text.starts_with(['"', '\'']) {
        let close = quoted_end(text)?;
        let after = text[close..].trim_start_matches(' ');
        if !after.starts_with(':') {
            return None;
        }
        text.len() - after.len()
    } else {
        // The first `: ` or a `:` ending the line; what `plain_ok(key, false)` refuses
        // inside the key before it, a ` #`, is noted on the way (a `: ` cannot be in it, and
        // a `:` can end it only when right before the one found).
        let b = text.as_bytes();
        let mut hash = false;
        let mut found = None;
        for i in 0..b.len() {
            match b[i] {
                b':' if i + 1 == b.len() || b[i + 1] == b' ' => {
                    found = Some(i);
                    break;
                }
                b'#' if i > 0 && b[i - 1] == b' ' => hash = true,
                _ => {}
            }
        }
        let i = found?;
        let k = text[..i].trim_end_matches(' ');
        let ok = !hash && !k.ends_with(':') && plain_start_ok(k);
        debug_assert_eq!(Some(i), find_pair(text, b':', b' ').or_else(|| text.ends_with(':').then(|| text.len() - 1)));
        debug_assert_eq!(ok, plain_ok(k, false), "{k:?}");
        if !ok {
            return None;
        }
        i
    };
    let rest = &text[end + 1..];
    if !(rest.is_empty() || rest.starts_with(' ')) || end > 1000 {
        return None;
    }
    Some((text[..end].trim_end_matches(' '), rest))
}

/// The value of a key or sequence entry written on its line (after the indicator and
/// spaces): a scalar, a tagged node or a flow collection, with nothing but a comment after.
fn inline<'t>(text: &'t str, arena: &'t Bump, depth: usize) -> Option<Node<'t>> {
    if depth > DEPTH_MAX {
        return None;
    }
    if text.starts_with(['{', '[', '"', '\'', '!']) {
        let mut c = Cursor { t: text, s: text.as_bytes(), i: 0, arena };
        let v = c.node(depth, true)?;
        c.spaces();
        return c.at_end_or_comment().then_some(v);
    }
    // The scalar runs to a ` #`; what `plain_ok(plain, false)` refuses inside it, a `: ` or
    // a `:` at its end, is noted on the way.
    let b = text.as_bytes();
    let mut end = b.len();
    let mut colon = false;
    for i in 0..b.len() {
        match b[i] {
            b'#' if i > 0 && b[i - 1] == b' ' => {
                end = i - 1;
                break;
            }
            b':' if i + 1 == b.len() || b[i + 1] == b' ' => colon = true,
            _ => {}
        }
    }
    let plain = text[..end].trim_end_matches(' ');
    let ok = !colon && plain_start_ok(plain);
    debug_assert_eq!(ok, plain_ok(plain, false), "{plain:?}");
    if !ok {
        return None;
    }
    resolve(plain)
}

/// Whether `s` reads as one plain scalar as written here: not empty, not starting with an
/// indicator, with no `: ` or ` #` (and, in a flow collection, no flow indicator or `:`).
fn plain_ok(s: &str, flow: bool) -> bool {
    if !plain_start_ok(s) {
        return false;
    }
    let b = s.as_bytes();
    for i in 0..b.len() {
        match b[i] {
            // `: ` or a `:` at the end, ` #`, or (in a flow collection) a flow indicator.
            b':' if i + 1 == b.len() || b[i + 1] == b' ' => return false,
            b'#' if i > 0 && b[i - 1] == b' ' => return false,
            b',' | b'[' | b']' | b'{' | b'}' | b':' if flow => return false,
            _ => {}
        }
    }
    true
}

/// The first part of [`plain_ok`]: `s` is not empty and does not start with an indicator.
fn plain_start_ok(s: &str) -> bool {
    let Some(first) = s.bytes().next() else { return false };
    if matches!(
        first,
        b'&' | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'?'
            | b'%'
            | b'@'
            | b'`'
            | b'"'
            | b'\''
            | b'#'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b':'
    ) || (first == b'-' && (s.len() == 1 || s.as_bytes()[1] == b' '))
    {
        return false;
    }
    true
}

/// Where the first `a` followed by `b` starts in `s`.
fn find_pair(s: &str, a: u8, b: u8) -> Option<usize> {
    let s = s.as_bytes();
    (1..s.len()).find(|&i| s[i] == b && s[i - 1] == a).map(|i| i - 1)
}

/// The key of a mapping: a plain or quoted scalar, as `yaml_serde` reads it.
fn scalar_text<'t>(k: &'t str, arena: &'t Bump) -> Option<Node<'t>> {
    if k.starts_with(['"', '\'']) {
        let mut c = Cursor { t: k, s: k.as_bytes(), i: 0, arena };
        let v = c.quoted()?;
        return (c.i == k.len()).then_some(v);
    }
    resolve(k)
}

/// A plain scalar as `yaml_serde` reads it (its `visit_untagged_scalar`), or `None` for the
/// forms whose reading is not copied here (floats, hex and binary, signs, big numbers).
fn resolve<'t>(s: &'t str) -> Option<Node<'t>> {
    let Some(&first) = s.as_bytes().first() else { return Some(Node::Null) };
    // The words below are compared only when the first byte can start one.
    if matches!(first, b'~' | b'n' | b'N' | b't' | b'T' | b'f' | b'F') {
        match s {
            "~" | "null" | "Null" | "NULL" => return Some(Node::Null),
            "true" | "True" | "TRUE" => return Some(Node::Bool(true)),
            "false" | "False" | "FALSE" => return Some(Node::Bool(false)),
            _ => {}
        }
    }
    let b = s.as_bytes();
    if !matches!(b[0], b'0'..=b'9' | b'+' | b'-' | b'.') {
        // Neither an integer nor a finite float can start so.
        return Some(Node::str(s));
    }
    let digits = |t: &[u8]| !t.is_empty() && t.iter().all(u8::is_ascii_digit);
    if digits(b) {
        if b.len() > 1 && b[0] == b'0' {
            // Leading zeros: a string (YAML 1.2), as `0644`.
            return Some(Node::str(s));
        }
        return s.parse::<u64>().ok().map(|n| Node::Number(Number::from(n)));
    }
    if b[0] == b'-' && digits(&b[1..]) && b[1] != b'0' {
        return s.parse::<i64>().ok().map(|n| Node::Number(Number::from(n)));
    }
    if let Some(oct) = s.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
            return u64::from_str_radix(oct, 8).ok().map(|n| Node::Number(Number::from(n)));
        }
        return None;
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if unsigned.is_empty() {
        // `+` alone: no number reads so.
        return Some(Node::str(s));
    }
    let special = [".inf", ".nan"].contains(&unsigned.to_ascii_lowercase().as_str());
    if unsigned.parse::<f64>().is_ok()
        || special
        || unsigned.starts_with("0x")
        || unsigned.starts_with("0b")
        || unsigned.starts_with("0o")
        || s.starts_with('+')
    {
        return None;
    }
    Some(Node::str(s))
}

/// The end (past the closing quote) of the quoted scalar at the start of `text`.
fn quoted_end(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let q = b[0];
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' if q == b'"' => i += 2,
            c if c == q => {
                if q == b'\'' && b.get(i + 1) == Some(&b'\'') {
                    i += 2;
                } else {
                    return Some(i + 1);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The entries a flow collection has room for before it grows: most in the spec/ files
/// have two to four (`{kind: dir, ino: a}`, `[1, 3]`).
const FLOW_ROOM: usize = 4;

/// A cursor over one line, for flow collections, quoted scalars and tags.
struct Cursor<'t> {
    t: &'t str,
    s: &'t [u8],
    i: usize,
    /// Where flow collections, tags and unescaped strings go.
    arena: &'t Bump,
}

impl<'t> Cursor<'t> {
    fn spaces(&mut self) {
        while self.s.get(self.i) == Some(&b' ') {
            self.i += 1;
        }
    }

    fn at_end_or_comment(&self) -> bool {
        self.i == self.s.len() || (self.s[self.i] == b'#' && self.s[self.i - 1] == b' ')
    }

    /// A node: a flow collection, a quoted scalar, a tagged node or (inside a flow
    /// collection) a plain scalar. `block`: the node is a block value, where a plain
    /// scalar is read by [`inline`] instead.
    fn node(&mut self, depth: usize, block: bool) -> Option<Node<'t>> {
        if depth > DEPTH_MAX {
            return None;
        }
        match *self.s.get(self.i)? {
            b'{' => self.flow_mapping(depth),
            b'[' => self.flow_sequence(depth),
            b'"' | b'\'' => self.quoted(),
            b'!' => {
                let start = self.i + 1;
                self.i = start;
                while self.s.get(self.i).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-') {
                    self.i += 1;
                }
                if self.i == start || !(self.i == self.s.len() || self.s[self.i] == b' ') {
                    return None;
                }
                let tag = &self.t[start..self.i];
                self.spaces();
                if self.s.get(self.i) == Some(&b'!') {
                    // A node has at most one tag (YAML 1.2, "Node Properties"): `!a !b x`
                    // is an error, which only `yaml_serde` reports with its position.
                    return None;
                }
                let value = if self.at_end_or_comment() {
                    if !block {
                        return None;
                    }
                    Node::Null
                } else if block && !matches!(self.s[self.i], b'{' | b'[' | b'"' | b'\'' | b'!') {
                    let rest = &self.t[self.i..];
                    let v = inline(rest, self.arena, depth + 1)?;
                    self.i = self.s.len();
                    v
                } else {
                    self.node(depth + 1, block)?
                };
                Some(Node::Tagged(self.arena.alloc(Tagged { tag: Tag(tag), value })))
            }
            _ if !block => {
                // The scalar runs to a flow indicator or a `:` that ends a key. What
                // `plain_ok(text, true)` refuses inside it, a `:` or ` #`, is noted on the
                // way (the scan does not stop at a flow indicator it could hold).
                let start = self.i;
                let mut inside = false;
                while let Some(&c) = self.s.get(self.i) {
                    match c {
                        b',' | b'[' | b']' | b'{' | b'}' => break,
                        b':' if self.s.get(self.i + 1).is_none_or(|c| matches!(c, b' ' | b',' | b']' | b'}')) => break,
                        b':' => inside = true,
                        b'#' if self.i > start && self.s[self.i - 1] == b' ' => inside = true,
                        _ => {}
                    }
                    self.i += 1;
                }
                let text = self.t[start..self.i].trim_end_matches(' ');
                let ok = !inside && plain_start_ok(text);
                debug_assert_eq!(ok, plain_ok(text, true), "{text:?}");
                if !ok {
                    return None;
                }
                resolve(text)
            }
            _ => None,
        }
    }

    fn quoted(&mut self) -> Option<Node<'t>> {
        let rest = &self.t[self.i..];
        let end = quoted_end(rest)?;
        let inner = &rest[1..end - 1];
        let escaped = if rest.starts_with('\'') { "'" } else { "\\" };
        if !inner.contains(escaped) {
            self.i += end;
            return Some(Node::str(inner));
        }
        let mut out = String::with_capacity(inner.len());
        if rest.starts_with('\'') {
            out.push_str(&inner.replace("''", "'"));
        } else {
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                out.push(match chars.next()? {
                    'n' => '\n',
                    't' => '\t',
                    '0' => '\0',
                    '\\' => '\\',
                    '"' => '"',
                    '/' => '/',
                    _ => return None,
                });
            }
        }
        self.i += end;
        Some(Node::String(self.arena.alloc_str(&out)))
    }

    /// After an entry of a flow collection: `,` and more (true), or the closing `close`.
    fn separator(&mut self, close: u8) -> Option<bool> {
        self.spaces();
        match *self.s.get(self.i)? {
            b',' => {
                self.i += 1;
                self.spaces();
                // No empty entry, no trailing comma.
                if matches!(self.s.get(self.i), Some(b',' | b']' | b'}') | None) {
                    return None;
                }
                Some(true)
            }
            c if c == close => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    fn flow_sequence(&mut self, depth: usize) -> Option<Node<'t>> {
        self.i += 1;
        self.spaces();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(Node::Sequence(&[]));
        }
        // Room for the usual few entries at once (growing from none takes 1, 2, then 4).
        let mut items = bumpalo::collections::Vec::with_capacity_in(FLOW_ROOM, self.arena);
        loop {
            items.push(self.node(depth + 1, false)?);
            if self.s.get(self.i) == Some(&b':') {
                return None;
            }
            if !self.separator(b']')? {
                return Some(Node::Sequence(items.into_bump_slice()));
            }
        }
    }

    fn flow_mapping(&mut self, depth: usize) -> Option<Node<'t>> {
        self.i += 1;
        self.spaces();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Some(Node::Mapping(&[]));
        }
        let mut m = bumpalo::collections::Vec::with_capacity_in(FLOW_ROOM, self.arena);
        loop {
            let key = match self.s.get(self.i)? {
                b'"' | b'\'' => self.quoted()?,
                b'{' | b'[' | b'!' => return None,
                _ => self.node(depth + 1, false)?,
            };
            if !matches!(key, Node::String(_) | Node::Number(_) | Node::Bool(_) | Node::Null) {
                return None;
            }
            self.spaces();
            if self.s.get(self.i) != Some(&b':') || self.s.get(self.i + 1) != Some(&b' ') {
                return None;
            }
            self.i += 1;
            self.spaces();
            if matches!(self.s.get(self.i), Some(b',' | b'}') | None) {
                return None;
            }
            let value = self.node(depth + 1, false)?;
            m.push((key, value));
            if !self.separator(b'}')? {
                return unique_keys(&m).then(|| Node::Mapping(m.into_bump_slice()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_documents() -> Vec<String> {
        let files = crate::scenario::find_files(&["spec".into()]).unwrap().files;
        let mut docs: Vec<String> = files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        docs.sort();
        docs
    }

    /// When the fast reader answers, `yaml_serde` reads the same value (tags and numbers
    /// included, as their debug forms show), mapping entries in the same order.
    fn same(d: &str) -> bool {
        let arena = Bump::new();
        let Some(fast) = load(d, &arena) else { return false };
        let slow = yaml_serde::from_str::<yaml_serde::Value>(d);
        assert!(slow.is_ok(), "the fast reader read what yaml_serde refuses ({slow:?}):\n{d}");
        let slow = Node::from_value(slow.unwrap(), &arena);
        assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "in\n{d}");
        assert_eq!(fast, slow);
        true
    }

    #[test]
    fn every_spec_file_reads_as_yaml_serde_reads_it() {
        let docs = spec_documents();
        let fast = docs.iter().filter(|d| same(d)).count();
        // Nearly every file takes the fast path.
        assert!(fast * 10 > docs.len() * 9, "{fast} of {}", docs.len());
    }

    #[test]
    fn forms_outside_the_subset_are_left_to_yaml_serde() {
        for d in [
            "a: &x 1\nb: *x\n",
            "a: |\n  text\n",
            "a: b\n  c\n",
            "a: {b: 1,\n  c: 2}\n",
            "---\na: 1\n",
            "a: 1\na: 2\n",
            "a: 1.5\n",
            "a: 0x1f\n",
            "a:\tb\n",
            "a: \"\\u00e9\"\n",
            "? a\n: b\n",
            "a: {w: !whiteout}\n",
            "a: [1, 2,]\n",
            "a:\n  - - 2\n",
            "a: 99999999999999999999\n",
            "a: !t\n- b\n",
            "a: !t\n  !u x\n",
            "a: !t !u x\n",
            "a: [!t !u x]\n",
            "",
        ] {
            assert_eq!(load(d, &Bump::new()), None, "{d:?}");
        }
        for d in [
            "a: !whiteout\nb: !hex \"00ff\"\nc: !file {data: x, mode: 0644}\nd: [1, -2, 0o17, '', \"q\\n\"]\n",
            "steps:\n- stat: /a\n  expect: {kind: dir, ino: a}\n-\n  unmount\n- x # c\nfinal: {}\n",
            "a:\n  - 1\n  -\n    - 2\n    - 3\n",
            "x: !file\n  data: a\n  mode: 0640\ny: !file  # c\n    data: b\nz: +\n",
            "- !file\n  data: a\n- !whiteout\n- !t\n  - 1\n- b\n",
            "a: !whiteout\nb:\n- !hex\n  \"00\"\n",
        ] {
            assert!(load(d, &Bump::new()).is_some(), "{d:?}");
            same(d);
        }
    }

    /// `line_end`, byte by byte: the first newline at or after `i` (or the end), `None` when
    /// a byte before it is not printable ASCII.
    fn line_end_bytewise(b: &[u8], i: usize) -> Option<usize> {
        let end = b[i..].iter().position(|c| *c == b'\n').map_or(b.len(), |p| i + p);
        b[i..end].iter().all(|c| (b' '..=b'~').contains(c)).then_some(end)
    }

    #[test]
    fn line_end_finds_the_newline_and_refuses_other_bytes() {
        let bytes = [b' ', b'~', b'a', b'\n', 0x7f, 0x1f, 0x00, 0x80, 0xff, b'\t', b'\r', 0x20, 0x7e, 0x21];
        // Every byte in every place of words and their tails, from every start.
        for len in 0..20 {
            for at in 0..len {
                for &c in &bytes {
                    let mut b = vec![b'x'; len];
                    b[at] = c;
                    for i in 0..=len {
                        assert_eq!(line_end(&b, i), line_end_bytewise(&b, i), "{b:?} from {i}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Spec files with characters put in, taken out or replaced: whatever the fast reader
        /// reads, `yaml_serde` reads the same.
        #[test]
        fn edited_spec_files_read_the_same(
            i in proptest::prelude::any::<usize>(),
            edits in proptest::collection::vec(
                (0usize..3, proptest::prelude::any::<usize>(), proptest::sample::select(
                    vec![' ', '-', ':', '#', '{', '}', '[', ']', ',', '!', '"', '\'', '\n', '&', '*', '0', '.', 'a', '~', '?', '|', '\\', '+'],
                )),
                1..5,
            ),
        ) {
            let docs = spec_documents();
            let mut d: Vec<char> = docs[i % docs.len()].chars().collect();
            for (kind, at, c) in edits {
                let at = at % (d.len() + 1);
                match kind {
                    0 => d.insert(at, c),
                    1 if at < d.len() => { d.remove(at); }
                    _ if at < d.len() => d[at] = c,
                    _ => {}
                }
            }
            let d: String = d.into_iter().collect();
            same(&d);
        }

        /// `line_end` agrees with a byte-by-byte scan on any bytes.
        #[test]
        fn line_end_is_the_bytewise_scan(
            b in proptest::collection::vec(proptest::sample::select(vec![b' ', b'a', b'~', b'\n', 0x7f, 0x1f, 0x80, 0xff, 0]), 0..64),
            i in proptest::prelude::any::<usize>(),
        ) {
            let i = i % (b.len() + 1);
            proptest::prop_assert_eq!(line_end(&b, i), line_end_bytewise(&b, i));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// `unique_keys` (signatures first up to 16 keys, sorting above) is the plain
        /// comparison of every pair of keys, on keys alike in length and ends, and of other
        /// types.
        #[test]
        fn unique_keys_is_the_pairwise_comparison(
            keys in proptest::collection::vec(proptest::sample::select(vec![
                "", "a", "b", "ab", "ba", "aab", "abb", "acb", "abab", "x", "mode", "mide", "1", "~", "n", "t",
            ]), 0..24),
        ) {
            let arena = Bump::new();
            let m: Vec<(Node, Node)> = keys
                .iter()
                .map(|k| {
                    let key = match *k {
                        "~" => Node::Null,
                        "1" => Node::Number(1.into()),
                        "t" => Node::Bool(true),
                        "n" => Node::Number(2.into()),
                        k => Node::String(arena.alloc_str(k)),
                    };
                    (key, Node::Null)
                })
                .collect();
            let pairwise = m.iter().enumerate().all(|(i, (k, _))| m[..i].iter().all(|(o, _)| o != k));
            proptest::prop_assert_eq!(unique_keys(&m), pairwise);
        }
    }
}
