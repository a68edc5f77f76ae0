//! A small YAML writer for scenarios: block style for structure, flow style for short leaves,
//! plain scalars where they read back unchanged and double quotes elsewhere.
//!
//! `yaml_serde`'s own serialiser writes numbers in decimal and every mapping in block style;
//! scenarios want `0644` modes and one-line nodes, so they are written here from a [`Y`]
//! document.

use yaml_serde::Value;

/// How a collection prefers to be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    /// One line when short and simple enough, else block.
    Auto,
    /// Always block style (one entry per line).
    Block,
}

/// A YAML document to write.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Y {
    /// A string, quoted if it needs it.
    Str(String),
    /// Text written as is: numbers, modes, keywords.
    Raw(String),
    /// A sequence.
    Seq(Vec<Y>, Style),
    /// A mapping; keys are strings, quoted if they need it.
    Map(Vec<(String, Y)>, Style),
    /// A tagged node (`!tag value`); the tag is given without `!`.
    Tagged(String, Box<Y>),
    /// An empty value.
    Null,
}

impl Y {
    /// A string.
    pub fn s(s: impl Into<String>) -> Y {
        Y::Str(s.into())
    }

    /// An unsigned number.
    pub fn n(n: impl Into<u64>) -> Y {
        Y::Raw(n.into().to_string())
    }

    /// A permission mode, in octal with a leading zero (`0644`), which the parser reads back
    /// as octal.
    pub fn mode(m: u32) -> Y {
        Y::Raw(format!("0{m:03o}"))
    }

    /// A tagged node.
    pub fn tag(tag: &str, value: Y) -> Y {
        Y::Tagged(tag.to_owned(), Box::new(value))
    }

    /// A mapping written in flow style when short.
    pub fn map(entries: Vec<(String, Y)>) -> Y {
        Y::Map(entries, Style::Auto)
    }

    /// A sequence written in flow style when short.
    pub fn seq(items: Vec<Y>) -> Y {
        Y::Seq(items, Style::Auto)
    }

    fn is_null_leaf(&self) -> bool {
        match self {
            Y::Null => true,
            Y::Tagged(_, v) => v.is_null_leaf(),
            _ => false,
        }
    }
}

/// Whether `s` can be written as a plain scalar and read back as the same string.
pub(crate) fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.ends_with(' ') || first == ' ' {
        return false;
    }
    if "-~@%`'\"!&*|>?#".contains(first) {
        return false;
    }
    if !s.chars().all(|c| c.is_alphanumeric() || "_-./+=$^()~@% ".contains(c)) {
        return false;
    }
    matches!(yaml_serde::from_str::<Value>(s), Ok(Value::String(back)) if back == s)
}

/// `s` as a YAML scalar: plain when that reads back unchanged, else double-quoted.
pub(crate) fn scalar(s: &str) -> String {
    if plain_ok(s) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            '\u{85}' => out.push_str("\\N"),
            '\u{a0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The lines longer than this are written in block style.
const WIDTH: usize = 96;

/// `y` on one line, in flow style, if it can be (`None` for a block-only node).
pub(crate) fn flow(y: &Y) -> Option<String> {
    Some(match y {
        Y::Str(s) => scalar(s),
        Y::Raw(r) => r.clone(),
        Y::Null => "~".to_owned(),
        Y::Tagged(t, v) => match &**v {
            Y::Null => format!("!{t}"),
            v => format!("!{t} {}", flow(v)?),
        },
        Y::Seq(items, style) => {
            if *style == Style::Block && !items.is_empty() {
                return None;
            }
            let mut parts = Vec::new();
            for i in items {
                if i.is_null_leaf() {
                    return None;
                }
                parts.push(flow(i)?);
            }
            format!("[{}]", parts.join(", "))
        }
        Y::Map(entries, style) => {
            if *style == Style::Block && !entries.is_empty() {
                return None;
            }
            let mut parts = Vec::new();
            for (k, v) in entries {
                if v.is_null_leaf() {
                    return None;
                }
                parts.push(format!("{}: {}", scalar(k), flow(v)?));
            }
            format!("{{{}}}", parts.join(", "))
        }
    })
}

/// `y` on one line whatever its style (for diffs and reports). Tagged empty values are
/// written as `!tag` even inside collections.
pub(crate) fn one_line(y: &Y) -> String {
    match y {
        Y::Str(s) => scalar(s),
        Y::Raw(r) => r.clone(),
        Y::Null => "~".to_owned(),
        Y::Tagged(t, v) => match &**v {
            Y::Null => format!("!{t}"),
            v => format!("!{t} {}", one_line(v)),
        },
        Y::Seq(items, _) => format!("[{}]", items.iter().map(one_line).collect::<Vec<_>>().join(", ")),
        Y::Map(entries, _) => format!(
            "{{{}}}",
            entries.iter().map(|(k, v)| format!("{}: {}", scalar(k), one_line(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Writes a mapping's entries in block style at `indent` spaces.
pub(crate) fn write_map(out: &mut String, entries: &[(String, Y)], indent: usize) {
    for (k, v) in entries {
        out.push_str(&" ".repeat(indent));
        write_entry(out, &scalar(k), v, indent);
    }
}

/// Writes `key: value` whose key is already at `indent` (the key text is written here).
fn write_entry(out: &mut String, key: &str, v: &Y, indent: usize) {
    out.push_str(key);
    out.push(':');
    write_value(out, v, indent);
}

/// Writes a value after `key:` (or after `- `), ending the line.
fn write_value(out: &mut String, v: &Y, indent: usize) {
    if let Some(f) = flow(v) {
        if indent + f.len() < WIDTH || !matches!(v, Y::Map(..) | Y::Seq(..) | Y::Tagged(..)) {
            if f != "~" {
                out.push(' ');
                out.push_str(&f);
            }
            out.push('\n');
            return;
        }
    }
    match v {
        Y::Map(entries, _) => {
            out.push('\n');
            write_map(out, entries, indent + 2);
        }
        Y::Seq(items, _) => {
            out.push('\n');
            write_seq(out, items, indent + 2);
        }
        Y::Tagged(t, inner) => {
            out.push_str(&format!(" !{t}"));
            match &**inner {
                Y::Map(entries, _) if !entries.is_empty() => {
                    out.push('\n');
                    write_map(out, entries, indent + 2);
                }
                Y::Seq(items, _) if !items.is_empty() => {
                    out.push('\n');
                    write_seq(out, items, indent + 2);
                }
                Y::Null => out.push('\n'),
                other => {
                    out.push(' ');
                    out.push_str(&one_line(other));
                    out.push('\n');
                }
            }
        }
        other => {
            out.push(' ');
            out.push_str(&one_line(other));
            out.push('\n');
        }
    }
}

/// Writes a sequence's items in block style, the dashes at `indent` spaces.
pub(crate) fn write_seq(out: &mut String, items: &[Y], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Y::Map(entries, style) if !entries.is_empty() => {
                let fl = if *style == Style::Block { None } else { flow(item) };
                match fl {
                    Some(f) if indent + f.len() < WIDTH => {
                        out.push(' ');
                        out.push_str(&f);
                        out.push('\n');
                    }
                    _ => {
                        out.push(' ');
                        let (k0, v0) = &entries[0];
                        write_entry(out, &scalar(k0), v0, indent + 2);
                        write_map(out, &entries[1..], indent + 2);
                    }
                }
            }
            other => write_value(out, other, indent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_read_back() {
        for s in [
            "",
            "a",
            "yes",
            "no",
            "null",
            "~",
            "1",
            "0644",
            "1.5",
            "-x",
            "- x",
            "a: b",
            "a #b",
            " x",
            "x ",
            "é",
            "\u{7}",
            "a\nb",
            "\"q\"",
            "it's",
            "<<",
            "[x]",
            "{x}",
            ".",
            "/a/b",
            "ENOENT",
            "\u{85}\u{2028}\u{feff}",
            "tab\there",
            "\\",
            "!x",
            "&a",
            "*a",
            "%x",
            "@x",
            ".inf",
            "0x10",
            "0o7",
            "true",
            "False",
        ] {
            let text = format!("k: {}\n", scalar(s));
            let v: Value = yaml_serde::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(v["k"], Value::String(s.to_owned()), "{text}");
        }
    }

    #[test]
    fn block_and_flow() {
        let y = Y::Map(
            vec![
                ("a".into(), Y::s("x")),
                (
                    "d".into(),
                    Y::Map(
                        vec![
                            ("w".into(), Y::tag("whiteout", Y::Null)),
                            ("f".into(), Y::map(vec![("mode".into(), Y::mode(0o600))])),
                        ],
                        Style::Block,
                    ),
                ),
                ("s".into(), Y::seq(vec![Y::s("a"), Y::s("b")])),
            ],
            Style::Block,
        );
        let mut out = String::new();
        if let Y::Map(e, _) = &y {
            write_map(&mut out, e, 0);
        }
        assert_eq!(out, "a: x\nd:\n  w: !whiteout\n  f: {mode: 0600}\ns: [a, b]\n");
    }
}
