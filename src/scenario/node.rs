//! The document tree that scenarios are read from: the shape of a `yaml_serde::Value`,
//! borrowed from the text and from one arena.
//!
//! The fast reader ([`super::fast`]) builds it straight from the text: scalars borrow their
//! text (a quoted one with escapes is copied into the arena), mappings are their entries in
//! order (a slice of `(key, value)`, nothing hashed). A document outside the fast reader's
//! subset is read by `yaml_serde` and converted ([`Node::from_value`]), so both readers
//! give the scenario reader the same tree.
//!
//! Every slice, tag and copied string of a tree is allocated in one [`Bump`] arena, which
//! [`with_arena`] lends to a parse and empties after it: a tree costs no allocation of its
//! own on the heap and nothing to drop (with the system allocator, a spec/ file's tree was
//! about 130 allocations and frees, and the arena took its parse from 170k to 155k
//! instructions: BENCHMARKS.md, "Parsing: the document tree in an arena").

use bumpalo::Bump;
use std::fmt;
use yaml_serde::{Number, Value};

/// A mapping: its entries in document order (keys are unique).
pub(crate) type Mapping<'t> = [(Node<'t>, Node<'t>)];

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
    String(&'t str),
    /// A sequence.
    Sequence(&'t [Node<'t>]),
    /// A mapping.
    Mapping(&'t Mapping<'t>),
    /// A node with a local tag (`!whiteout`, `!hex "00ff"`).
    Tagged(&'t Tagged<'t>),
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
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Tag<'t>(pub &'t str);

/// The largest arena kept between parses on a thread: a larger one (a huge or hostile
/// document) is given back to the heap after its parse.
const ARENA_KEPT: usize = 1 << 20;

thread_local! {
    /// The arena of the last parse on this thread, emptied, for the next one.
    static ARENA: std::cell::Cell<Option<Bump>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with an empty arena for a document tree: this thread's kept one (its memory
/// reused, so a parse allocates no chunk of its own once one ran), or a new one. The arena
/// is emptied and kept after `f` unless it grew past [`ARENA_KEPT`].
pub(crate) fn with_arena<R>(f: impl FnOnce(&Bump) -> R) -> R {
    let mut arena = ARENA.take().unwrap_or_default();
    let r = f(&arena);
    if arena.allocated_bytes() <= ARENA_KEPT {
        arena.reset();
        ARENA.set(Some(arena));
    }
    r
}

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
    /// The same tree as a `yaml_serde::Value` read by `yaml_serde`, in `arena`.
    pub fn from_value(v: Value, arena: &'t Bump) -> Node<'t> {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) => Node::String(arena.alloc_str(&s)),
            Value::Sequence(s) => {
                Node::Sequence(arena.alloc_slice_fill_iter(s.into_iter().map(|v| Node::from_value(v, arena))))
            }
            Value::Mapping(m) => Node::Mapping(arena.alloc_slice_fill_iter(
                m.into_iter().map(|(k, v)| (Node::from_value(k, arena), Node::from_value(v, arena))),
            )),
            Value::Tagged(t) => {
                let shown = t.tag.to_string();
                let name = arena.alloc_str(shown.strip_prefix('!').unwrap_or(&shown));
                Node::Tagged(arena.alloc(Tagged { tag: Tag(name), value: Node::from_value(t.value, arena) }))
            }
        }
    }

    /// Whether the node is empty (`~`).
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }

    /// The text of a string node.
    pub fn as_str(&self) -> Option<&'t str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }

    /// A string node borrowing `s`.
    pub fn str(s: &'t str) -> Node<'t> {
        Node::String(s)
    }
}
