//! The document tree that scenarios are read from: the shape of a `yaml_serde::Value`,
//! borrowed from the text where it can be.
//!
//! The fast reader ([`super::fast`]) builds it straight from the text: scalars borrow their
//! text (a quoted one with escapes is the only copy), mappings are their entries in order
//! (`Vec<(key, value)>`, nothing hashed). A document outside the fast reader's subset is
//! read by `yaml_serde` and converted ([`Node::from_value`]), so both readers give the
//! scenario reader the same tree.

use std::borrow::Cow;
use std::fmt;
use yaml_serde::{Number, Value};

/// A mapping: its entries in document order (keys are unique).
pub(crate) type Mapping<'t> = Vec<(Node<'t>, Node<'t>)>;

/// A YAML node, as `yaml_serde::Value` has it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node<'t> {
    /// `~`, `null` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer (or, from `yaml_serde`, a float).
    Number(Number),
    /// A string.
    String(Cow<'t, str>),
    /// A sequence.
    Sequence(Vec<Node<'t>>),
    /// A mapping.
    Mapping(Mapping<'t>),
    /// A node with a local tag (`!whiteout`, `!hex "00ff"`).
    Tagged(Box<Tagged<'t>>),
}

/// A tagged node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tagged<'t> {
    /// The tag.
    pub tag: Tag<'t>,
    /// The node it tags.
    pub value: Node<'t>,
}

/// A tag, held without its `!` (as `yaml_serde::value::Tag` compares and shows it).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tag<'t>(pub Cow<'t, str>);

/// `yaml_serde`'s rule: one leading `!` is not part of a tag's name (`!` alone is).
fn nobang(s: &str) -> &str {
    match s.strip_prefix('!') {
        Some("") | None => s,
        Some(unbanged) => unbanged,
    }
}

impl PartialEq<str> for Tag<'_> {
    fn eq(&self, other: &str) -> bool {
        self.0 == nobang(other)
    }
}

impl PartialEq<&str> for Tag<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == nobang(other)
    }
}

impl fmt::Display for Tag<'_> {
    /// As `yaml_serde::value::Tag` shows it: `!name`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "!{}", self.0)
    }
}

impl<'t> Node<'t> {
    /// The same tree as a `yaml_serde::Value` read by `yaml_serde`.
    pub fn from_value(v: Value) -> Node<'static> {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) => Node::String(Cow::Owned(s)),
            Value::Sequence(s) => Node::Sequence(s.into_iter().map(Node::from_value).collect()),
            Value::Mapping(m) => {
                Node::Mapping(m.into_iter().map(|(k, v)| (Node::from_value(k), Node::from_value(v))).collect())
            }
            Value::Tagged(t) => {
                let shown = t.tag.to_string();
                let name = shown.strip_prefix('!').unwrap_or(&shown).to_owned();
                Node::Tagged(Box::new(Tagged { tag: Tag(Cow::Owned(name)), value: Node::from_value(t.value) }))
            }
        }
    }

    /// Whether the node is empty (`~`).
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    /// The text of a string node.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// A string node borrowing `s`.
    pub fn str(s: &'t str) -> Node<'t> {
        Node::String(Cow::Borrowed(s))
    }
}
