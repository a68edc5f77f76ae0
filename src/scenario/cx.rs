//! The parsing context: typed readers for YAML values that record a problem, with the path
//! of the offending node, instead of stopping at the first one.

use super::locate::{PosIndex, Seg, YamlPath};
use super::node::{Mapping, Node as Value};
use super::StepRef;
use crate::errno::Errno;
use std::borrow::Cow;

/// A problem found while reading a document, before it is given a line and column.
#[derive(Clone, Debug)]
pub(crate) struct RawProblem {
    /// Where: the node, or its key when `key`.
    pub path: YamlPath,
    /// Whether the problem is the key of the node at `path` rather than its value.
    pub key: bool,
    /// The step it belongs to.
    pub step: Option<StepRef>,
    /// What is wrong.
    pub message: String,
}

/// Reads YAML values and collects problems.
pub(crate) struct Cx<'t> {
    /// The document's text, for positions and for checking how numbers were written.
    pub text: Option<&'t str>,
    /// Problems so far.
    pub problems: Vec<RawProblem>,
    /// The step being read, if any: its number from 1 and its kind, made into a
    /// [`StepRef`] only for a problem.
    pub step: Option<(usize, Cow<'static, str>)>,
    /// The scenario's layer names, for mounts and edits to name.
    pub layers: Vec<String>,
    /// The positions of the text's nodes, built on first use.
    index: std::cell::OnceCell<PosIndex>,
}

/// The path of the node being read: a chain of borrowed segments on the stack, made into a
/// [`YamlPath`] only when a problem is recorded.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Path<'a> {
    /// The document's root.
    Root,
    /// The value of a key of the mapping at the parent path.
    Key(&'a Path<'a>, &'a str),
    /// An item of the sequence at the parent path.
    Index(&'a Path<'a>, usize),
}

/// A mapping's entries as read by [`Cx::fields`]: on the stack up to 8 (a step, a mount, a
/// file's attributes), on the heap beyond.
pub(crate) type Fields<'v, 'n> = smallvec::SmallVec<[(Cow<'v, str>, &'v Value<'n>); 8]>;

/// Something that names a node: a [`Path`] being read, or a [`YamlPath`].
pub(crate) trait AsPath {
    /// The node's path as segments from the root.
    fn yaml_path(&self) -> YamlPath;
}

impl AsPath for Path<'_> {
    fn yaml_path(&self) -> YamlPath {
        let mut segs = Vec::new();
        let mut at = self;
        loop {
            match at {
                Path::Root => break,
                Path::Key(parent, k) => {
                    segs.push(Seg::Key((*k).to_owned()));
                    at = parent;
                }
                Path::Index(parent, i) => {
                    segs.push(Seg::Index(*i));
                    at = parent;
                }
            }
        }
        segs.reverse();
        segs
    }
}

impl AsPath for [Seg] {
    fn yaml_path(&self) -> YamlPath {
        self.to_vec()
    }
}

impl AsPath for Vec<Seg> {
    fn yaml_path(&self) -> YamlPath {
        self.clone()
    }
}

/// `path` with one more key.
pub(crate) fn key<'a>(path: &'a Path<'a>, k: &'a str) -> Path<'a> {
    Path::Key(path, k)
}

/// `path` with one more index.
pub(crate) fn idx<'a>(path: &'a Path<'a>, i: usize) -> Path<'a> {
    Path::Index(path, i)
}

/// Whether `name` is one of `names` (`names.contains(&name)`, with the first bytes
/// compared before the rest).
fn is_one_of(name: &str, names: &[&str]) -> bool {
    let first = name.as_bytes().first();
    names.iter().any(|n| n.as_bytes().first() == first && *n == name)
}

/// A short description of a value's type, for messages.
pub(crate) fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "an empty value".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a {} node", t.tag),
    }
}

impl<'t> Cx<'t> {
    /// A context for a document with this text.
    pub fn new(text: Option<&'t str>) -> Cx<'t> {
        Cx { text, problems: Vec::new(), step: None, layers: Vec::new(), index: std::cell::OnceCell::new() }
    }

    /// The positions of the text's nodes (built once, in one pass; empty without a text).
    pub fn index(&self) -> &PosIndex {
        self.index.get_or_init(|| self.text.map(PosIndex::new).unwrap_or_default())
    }

    /// The step being read, for a problem.
    fn step_ref(&self) -> Option<StepRef> {
        self.step.as_ref().map(|(index, op)| StepRef { index: *index, op: op.to_string() })
    }

    /// Records a problem with the node at `path`.
    pub fn problem(&mut self, path: &(impl AsPath + ?Sized), message: impl Into<String>) {
        self.problems.push(RawProblem {
            path: path.yaml_path(),
            key: false,
            step: self.step_ref(),
            message: message.into(),
        });
    }

    /// Records a problem with the key of the node at `path`.
    pub fn key_problem(&mut self, path: &(impl AsPath + ?Sized), message: impl Into<String>) {
        self.problems.push(RawProblem {
            path: path.yaml_path(),
            key: true,
            step: self.step_ref(),
            message: message.into(),
        });
    }

    /// The mapping at `path`; an empty value counts as an empty mapping.
    pub fn mapping<'v, 'n>(
        &mut self,
        v: &'v Value<'n>,
        path: &(impl AsPath + ?Sized),
        what: &str,
    ) -> Option<&'v Mapping<'n>> {
        match v {
            Value::Mapping(m) => Some(m),
            Value::Null => Some(&[]),
            other => {
                self.problem(path, format!("{what} must be a mapping, not {}", type_name(other)));
                None
            }
        }
    }

    /// A mapping key as text: strings, and integers (which name files such as `1` well).
    pub fn key_text(&mut self, k: &Value, path_of_value: &(impl AsPath + ?Sized)) -> Option<String> {
        match k {
            Value::String(s) => Some(s.to_string()),
            Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
            other => {
                self.key_problem(path_of_value, format!("a key must be a string, not {}; quote it", type_name(other)));
                None
            }
        }
    }

    /// The entries of a mapping as text keys, each checked against `allowed` (all keys are
    /// allowed when `allowed` is empty). Unknown and non-text keys are recorded as problems.
    pub fn fields<'v, 'n>(
        &mut self,
        m: &'v [(Value<'n>, Value<'n>)],
        path: &Path,
        allowed: &[&str],
        what: impl std::fmt::Display,
    ) -> Fields<'v, 'n> {
        let mut out = Fields::new();
        for (k, v) in m {
            // The key's path is made only for a problem.
            let name: Cow<'v, str> = match k {
                Value::String(s) => Cow::Borrowed(s),
                Value::Number(n) if n.is_u64() || n.is_i64() => Cow::Owned(n.to_string()),
                _ => {
                    let text = match k {
                        Value::Number(n) => Some(n.to_string()),
                        Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    };
                    match &text {
                        Some(t) => self.key_text(k, &key(path, t)),
                        None => self.key_text(k, path),
                    };
                    continue;
                }
            };
            if !allowed.is_empty() && !is_one_of(&name, allowed) {
                self.key_problem(
                    &key(path, &name),
                    format!("unknown field `{name}` in {what}; expected one of: {}", allowed.join(", ")),
                );
                continue;
            }
            out.push((name, v));
        }
        out
    }

    /// A string. Integers are accepted too when `numbers` (labels such as `ino: 1`).
    pub fn string(&mut self, v: &Value, path: &(impl AsPath + ?Sized), what: impl std::fmt::Display) -> Option<String> {
        match v {
            Value::String(s) => Some(s.to_string()),
            other => {
                self.problem(path, format!("{what} must be a string, not {}", type_name(other)));
                None
            }
        }
    }

    /// A label: a string or an integer.
    pub fn label(&mut self, v: &Value, path: &(impl AsPath + ?Sized)) -> Option<String> {
        match v {
            Value::String(s) if !s.is_empty() => Some(s.to_string()),
            Value::Number(n) if n.is_u64() => Some(n.to_string()),
            other => {
                self.problem(path, format!("an inode label must be a name such as `a`, not {}", type_name(other)));
                None
            }
        }
    }

    /// A path in the merged view or a layer: absolute, without NUL.
    pub fn abs_path(&mut self, v: &Value, path: &(impl AsPath + ?Sized), what: &str) -> Option<String> {
        let s = self.string(v, path, what)?;
        if s.contains('\0') {
            self.problem(path, format!("{what} {s:?} contains a NUL byte"));
            return None;
        }
        if !s.starts_with('/') {
            self.problem(path, format!("{what} {s:?} is relative; paths are absolute, from the root `/`"));
            return None;
        }
        Some(s)
    }

    /// A step's path: absolute, or relative to the current directory, which is the merged
    /// root (`x`, `./x`, `a/../b`); not empty, without NUL.
    pub fn step_path(
        &mut self,
        v: &Value,
        path: &(impl AsPath + ?Sized),
        what: impl std::fmt::Display,
    ) -> Option<String> {
        let s = self.string(v, path, &what)?;
        if s.contains('\0') {
            self.problem(path, format!("{what} {s:?} contains a NUL byte"));
            return None;
        }
        if s.is_empty() {
            self.problem(path, format!("{what} is empty; write `/` or `.` for the root"));
            return None;
        }
        Some(s)
    }

    /// Text without NUL (a symlink target, an xattr name).
    pub fn text_no_nul(&mut self, v: &Value, path: &(impl AsPath + ?Sized), what: &str) -> Option<String> {
        let s = self.string(v, path, what)?;
        if s.contains('\0') {
            self.problem(path, format!("{what} {s:?} contains a NUL byte"));
            return None;
        }
        Some(s)
    }

    /// An unsigned integer that fits `T`.
    pub fn uint<T: TryFrom<u64>>(&mut self, v: &Value, path: &(impl AsPath + ?Sized), what: &str) -> Option<T> {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            _ => None,
        };
        match n.and_then(|n| T::try_from(n).ok()) {
            Some(t) => Some(t),
            None => {
                self.problem(path, format!("{what} must be a non-negative integer in range, not {}", type_name(v)));
                None
            }
        }
    }

    /// A permission mode: octal text (`0644`, `644`) or an integer written `0o644`.
    pub fn mode(&mut self, v: &Value, path: &(impl AsPath + ?Sized)) -> Option<u32> {
        let m = match v {
            Value::String(s) => {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                match u32::from_str_radix(digits, 8) {
                    Ok(m) if !digits.is_empty() => m,
                    _ => {
                        self.problem(path, format!("mode {s:?} is not an octal number"));
                        return None;
                    }
                }
            }
            Value::Number(n) if n.is_u64() => {
                let m = n.as_u64().unwrap_or(u64::MAX);
                if let Some(text) = self.text {
                    if let Some(pos) = self.index().get(&path.yaml_path(), false) {
                        let raw = raw_at(text, pos.line, pos.column);
                        if !raw.starts_with("0o") && m > 7 {
                            self.problem(
                                path,
                                format!(
                                    "mode {raw} is a decimal number; write modes in octal, \
                                     as 0755 or 0o755"
                                ),
                            );
                            return None;
                        }
                    }
                }
                match u32::try_from(m) {
                    Ok(m) => m,
                    Err(_) => {
                        self.problem(path, "mode is out of range");
                        return None;
                    }
                }
            }
            other => {
                self.problem(path, format!("a mode must be octal such as 0644, not {}", type_name(other)));
                return None;
            }
        };
        if m > 0o7777 {
            self.problem(path, format!("mode 0{m:o} has bits above 07777 (the file type is given apart)"));
            return None;
        }
        Some(m)
    }

    /// Bytes: a string (its UTF-8) or `!hex "00ff"`.
    pub fn bytes(&mut self, v: &Value, path: &(impl AsPath + ?Sized), what: &str) -> Option<Vec<u8>> {
        match v {
            Value::String(s) => Some(s.as_bytes().to_vec()),
            Value::Tagged(t) if t.tag == "hex" => self.hex(&t.value, path),
            other => {
                self.problem(path, format!("{what} must be a string or !hex \"00ff\", not {}", type_name(other)));
                None
            }
        }
    }

    /// The bytes of a `!hex` value.
    pub fn hex(&mut self, v: &Value, path: &(impl AsPath + ?Sized)) -> Option<Vec<u8>> {
        let text = match v {
            Value::String(s) => s.to_string(),
            Value::Number(n) if n.is_u64() => n.to_string(),
            Value::Null => String::new(),
            other => {
                self.problem(path, format!("!hex takes hex digits, not {}", type_name(other)));
                return None;
            }
        };
        match from_hex(&text) {
            Some(b) => Some(b),
            None => {
                self.problem(path, format!("!hex {text:?} is not an even run of hex digits"));
                None
            }
        }
    }

    /// An errno name such as `ENOENT`.
    pub fn errno(&mut self, v: &Value, path: &(impl AsPath + ?Sized)) -> Option<Errno> {
        let s = self.string(v, path, "an errno")?;
        match Errno::from_name(&s) {
            Some(e) => Some(e),
            None => {
                self.problem(path, format!("unknown errno {s:?}"));
                None
            }
        }
    }

    /// A `[major, minor]` pair.
    pub fn rdev(&mut self, v: &Value, path: &Path) -> Option<(u32, u32)> {
        match v {
            Value::Sequence(s) if s.len() == 2 => {
                let a = self.uint(&s[0], &idx(path, 0), "the major number");
                let b = self.uint(&s[1], &idx(path, 1), "the minor number");
                Some((a?, b?))
            }
            other => {
                self.problem(path, format!("a device number is [major, minor], not {}", type_name(other)));
                None
            }
        }
    }
}

/// The scalar text at a line and column, up to the end of the scalar.
fn raw_at(text: &str, line: usize, column: usize) -> String {
    let l = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let rest: String = l.chars().skip(column.saturating_sub(1)).collect();
    rest.split(|c: char| c.is_whitespace() || ",]}#".contains(c)).next().unwrap_or("").to_owned()
}

/// Bytes from hex digits, whitespace ignored.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    crate::hex::decode(&digits)
}
