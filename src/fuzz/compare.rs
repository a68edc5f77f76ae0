//! Comparing two backends' answers, and the divergence found when they differ.
//!
//! Everything is compared exactly except `st_ino`, which is a backend's own number: each
//! side's numbers are mapped to labels by first sighting (the first inode seen in a run is
//! `#0`, the next new one `#1`, ...), and the labels are compared. Two answers agree on
//! identity when they see "the same inode as before" at the same places.

use super::case::Answer;
use crate::backend::{BackendError, Command, MergedEntry, MergedTree, Reply};
use crate::layer::FileType;
use crate::layer::{FlatEntry, FlatLayer};
use crate::ops::{Outcome, Stat};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// Inode labels of one side: raw `st_ino` to the order of first sighting.
#[derive(Clone, Debug, Default)]
pub struct Labels {
    seen: HashMap<u64, usize>,
}

impl Labels {
    /// The label of `ino`, giving it the next one on first sighting.
    pub fn label(&mut self, ino: u64) -> usize {
        let next = self.seen.len();
        *self.seen.entry(ino).or_insert(next)
    }
}

/// How divergences name the system under test: `kernel`, or the short name of another one
/// ([`crate::kernel::SystemUnderTest::label`], set by [`super::machine::set_system_under_test`]).
fn sut() -> String {
    super::machine::sut_label()
}

/// Compares answers of a reference (the model) and a system under test (the kernel), and
/// keeps the inode labels of both across a run.
#[derive(Clone, Debug, Default)]
pub struct Comparer {
    reference: Labels,
    tested: Labels,
}

impl Comparer {
    /// A comparer with no inode seen yet.
    pub fn new() -> Comparer {
        Comparer::default()
    }

    /// `None` when the answers agree; else where they differ, in words.
    pub fn differ(&mut self, reference: &Answer, tested: &Answer) -> Option<String> {
        match (reference, tested) {
            (Answer::Reply(a), Answer::Reply(b)) => self.replies(a, b),
            (Answer::Error(a), Answer::Error(b)) => match (a, b) {
                // Both refuse the command for its place in the script: the messages are the
                // backends' own.
                (BackendError::Usage(_), BackendError::Usage(_)) => None,
                // Both refuse a layer the same way: the messages are the backends' own.
                (BackendError::Refused(x, _), BackendError::Refused(y, _)) if x == y => None,
                _ => Some(format!("harness errors differ: {} {b}, model {a}", sut())),
            },
            // Both refuse the mount; a mount command reports an exit status, not an errno.
            (Answer::Reply(Reply::MountRefused(_)), Answer::Error(BackendError::MountCommand { .. })) => None,
            (Answer::Panic(p), _) => Some(format!("the model panicked: {p}")),
            (_, Answer::Panic(p)) => Some(format!("the system under test panicked: {p}")),
            (Answer::Error(e), _) => Some(format!("only the model failed the command: {e}")),
            (_, Answer::Error(e)) => Some(format!("only the {} failed the command: {e}", sut())),
        }
    }

    fn replies(&mut self, a: &Reply, b: &Reply) -> Option<String> {
        match (a, b) {
            (Reply::Outcome(x), Reply::Outcome(y)) => self.outcomes(x, y),
            (Reply::Merged(x), Reply::Merged(y)) => self.merged(x, y),
            (Reply::Layer(x), Reply::Layer(y)) => layers(x, y),
            _ if a == b => None,
            _ => Some("the replies differ".to_owned()),
        }
    }

    fn outcomes(&mut self, a: &Outcome, b: &Outcome) -> Option<String> {
        match (a, b) {
            (Outcome::Stat(x), Outcome::Stat(y)) => self.stats(x, y),
            _ if a == b => None,
            (Outcome::Entries(x), Outcome::Entries(y)) => {
                let only = |p: &BTreeMap<String, FileType>, q: &BTreeMap<String, FileType>| -> Vec<String> {
                    p.keys().filter(|k| !q.contains_key(*k)).cloned().collect()
                };
                let (model, kernel) = (only(x, y), only(y, x));
                let mut out = Vec::new();
                if !kernel.is_empty() {
                    out.push(format!("only the {} lists {kernel:?}", sut()));
                }
                if !model.is_empty() {
                    out.push(format!("only the model lists {model:?}"));
                }
                if out.is_empty() {
                    out.push("the d_types differ".to_owned());
                }
                Some(format!("entries differ: {}", out.join("; ")))
            }
            _ => Some("the outcomes differ".to_owned()),
        }
    }

    /// Every field but `ino` exactly; `ino` by label.
    fn stats(&mut self, a: &Stat, b: &Stat) -> Option<String> {
        let mut fields = Vec::new();
        macro_rules! field {
            ($f:ident) => {
                if a.$f != b.$f {
                    fields.push(format!("{}: {} {:?}, model {:?}", stringify!($f), sut(), b.$f, a.$f));
                }
            };
        }
        field!(kind);
        if a.mode != b.mode {
            fields.push(format!("mode: {} {:04o}, model {:04o}", sut(), b.mode, a.mode));
        }
        field!(size);
        field!(nlink);
        field!(uid);
        field!(gid);
        field!(rdev);
        let (la, lb) = (self.reference.label(a.ino), self.tested.label(b.ino));
        if la != lb {
            fields.push(format!("inode identity: {} #{lb}, model #{la}", sut()));
        }
        if fields.is_empty() {
            None
        } else {
            Some(format!("stat differs ({})", fields.join(", ")))
        }
    }

    fn merged(&mut self, a: &MergedTree, b: &MergedTree) -> Option<String> {
        let ka: BTreeSet<&String> = a.keys().collect();
        let kb: BTreeSet<&String> = b.keys().collect();
        let mut out = Vec::new();
        let only_a: Vec<&&String> = ka.difference(&kb).collect();
        let only_b: Vec<&&String> = kb.difference(&ka).collect();
        if !only_a.is_empty() {
            out.push(format!("only the model lists {only_a:?}"));
        }
        if !only_b.is_empty() {
            out.push(format!("only the {} lists {only_b:?}", sut()));
        }
        for (path, ea) in a {
            let Some(eb) = b.get(path) else { continue };
            if let Some(d) = self.entries(ea, eb) {
                out.push(format!("{path}: {d}"));
            }
        }
        if out.is_empty() {
            None
        } else {
            Some(format!("merged views differ: {}", out.join("; ")))
        }
    }

    fn entries(&mut self, a: &MergedEntry, b: &MergedEntry) -> Option<String> {
        let mut out = Vec::new();
        match (&a.stat, &b.stat) {
            (Ok(x), Ok(y)) => out.extend(self.stats(x, y)),
            (x, y) if x != y => out.push(format!("lstat: {} {}, model {}", sut(), short(y), short(x))),
            _ => {}
        }
        if a.data != b.data {
            out.push(format!(
                "data: {} {:?}, model {:?}",
                sut(),
                b.data.as_deref().map(String::from_utf8_lossy),
                a.data.as_deref().map(String::from_utf8_lossy)
            ));
        }
        if a.digest != b.digest {
            out.push(format!("digest: {} {:?}, model {:?}", sut(), b.digest, a.digest));
        }
        if a.target != b.target {
            out.push(format!("target: {} {:?}, model {:?}", sut(), b.target, a.target));
        }
        if a.xattrs != b.xattrs {
            out.push(format!("xattrs: {} {:?}, model {:?}", sut(), b.xattrs, a.xattrs));
        }
        if out.is_empty() {
            None
        } else {
            Some(out.join(", "))
        }
    }
}

fn short(r: &Result<Stat, crate::errno::Errno>) -> String {
    match r {
        Ok(s) => format!("{:?}", s.kind),
        Err(e) => e.to_string(),
    }
}

/// Where two layer dumps differ: the root, then each path that is missing on one side or
/// different.
fn layers(a: &FlatLayer, b: &FlatLayer) -> Option<String> {
    if a == b {
        return None;
    }
    let mut out = Vec::new();
    if a.root != b.root {
        out.push(format!("root: {} {:?}, model {:?}", sut(), b.root, a.root));
    }
    let by_path = |l: &FlatLayer| -> std::collections::BTreeMap<String, FlatEntry> {
        l.entries.iter().map(|e| (e.path().to_owned(), e.clone())).collect()
    };
    let (pa, pb) = (by_path(a), by_path(b));
    for (p, ea) in &pa {
        match pb.get(p) {
            None => out.push(format!("only the model has {p} ({})", entry_short(ea))),
            Some(eb) if eb != ea => out.push(format!("{p}: {} {}, model {}", sut(), entry_short(eb), entry_short(ea))),
            _ => {}
        }
    }
    for (p, eb) in &pb {
        if !pa.contains_key(p) {
            out.push(format!("only the {} has {p} ({})", sut(), entry_short(eb)));
        }
    }
    if out.is_empty() {
        out.push("entry order differs".to_owned());
    }
    Some(format!("layers differ: {}", out.join("; ")))
}

fn entry_short(e: &FlatEntry) -> String {
    match e {
        FlatEntry::Link { to, .. } => format!("link to {to}"),
        FlatEntry::Node { node, .. } => {
            let mut s = format!("{:?} {:04o}", node.kind, node.mode);
            if node.uid != 0 || node.gid != 0 {
                s.push_str(&format!(" {}:{}", node.uid, node.gid));
            }
            if let Some(d) = &node.data {
                s.push_str(&format!(" {:?}", d));
            }
            if let Some(t) = &node.target {
                s.push_str(&format!(" -> {t}"));
            }
            if let Some(r) = node.rdev {
                s.push_str(&format!(" {}/{}", r.0, r.1));
            }
            for (k, v) in &node.xattrs {
                s.push_str(&format!(" {k}={:?}", String::from_utf8_lossy(v)));
            }
            s
        }
    }
}

/// The first point where the two backends disagreed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// The index of the command in the case's whole command list (setup included), from 0.
    pub step: usize,
    /// The command.
    pub command: Command,
    /// The model's answer.
    pub model: Answer,
    /// The kernel's (or the system under test's) answer.
    pub kernel: Answer,
    /// Where the answers differ, in words.
    pub detail: String,
}

impl Divergence {
    /// A short, stable description of the kind of divergence, for grouping: the command's
    /// kind and the two answers' shapes (`rename: kernel EXDEV, model ok`); when the shapes
    /// are the same, what differs (`stat: stat nlink`).
    pub fn signature(&self) -> String {
        let (what, k, m) = self.parts();
        if k == m {
            format!("{what}: {}", detail_kind(&self.detail))
        } else {
            format!("{what}: {} {k}, model {m}", sut())
        }
    }

    /// A coarser kind than [`Divergence::signature`]: the command's kind and the two
    /// answers' shapes only. Shrinking keeps a case while its divergence keeps this kind.
    pub fn kind(&self) -> String {
        let (what, k, m) = self.parts();
        format!("{what}: {} {k}, model {m}", sut())
    }

    fn parts(&self) -> (String, String, String) {
        let what = self.command.name().to_owned();
        let shape = |a: &Answer| match a {
            Answer::Reply(Reply::Outcome(Outcome::Err(e))) => e.to_string(),
            Answer::Reply(Reply::Outcome(Outcome::Ok)) => "ok".into(),
            Answer::Reply(Reply::Outcome(Outcome::Stat(_))) => "stat".into(),
            Answer::Reply(Reply::Outcome(_)) => "value".into(),
            Answer::Reply(Reply::MountRefused(e)) => format!("refused {e}"),
            Answer::Reply(Reply::Done) => "done".into(),
            Answer::Reply(Reply::Layer(_)) => "layer".into(),
            Answer::Reply(Reply::Merged(_)) => "tree".into(),
            Answer::Reply(Reply::Index(_)) => "index".into(),
            Answer::Reply(Reply::CallRefused { call, errno }) => format!("fsconfig call {call} refused {errno}"),
            Answer::Error(e) => match e {
                BackendError::Usage(_) => "usage error".into(),
                BackendError::NotModelled(_) => "not modelled".into(),
                BackendError::Failed(_) => "harness failure".into(),
                BackendError::Refused(e, _) => format!("layer refused {e}"),
                BackendError::MountCommand { status, .. } => format!("mount command failed ({status})"),
                BackendError::NotApplicable(_) => "not applicable".into(),
            },
            Answer::Panic(_) => "panic".into(),
        };
        (what, shape(&self.kernel), shape(&self.model))
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "divergence at step {}: {:?}", self.step, self.command)?;
        writeln!(f, "  {}: {}", sut(), answer_short(&self.kernel))?;
        writeln!(f, "  model:  {}", answer_short(&self.model))?;
        write!(f, "  detail: {}", self.detail)
    }
}

/// What a detail says differs, without the values that vary from case to case: `stat
/// differs (nlink: kernel 1, model 2)` gives `merged nlink`; an `lstat` difference keeps
/// its two results (`lstat ESTALE/Dir`), which tell kinds of divergence apart.
fn detail_kind(detail: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut push = |w: String| {
        if !out.contains(&w) {
            out.push(w);
        }
    };
    let mut rest = detail;
    while let Some(i) = rest.find("stat differs (") {
        rest = &rest[i + "stat differs (".len()..];
        let inside = rest.split(')').next().unwrap_or("");
        for f in inside.split(", ") {
            if let Some((name, _)) = f.split_once(':') {
                push(name.trim().to_owned());
            }
        }
    }
    let sut = sut();
    let lstat = format!("lstat: {sut} ");
    let mut rest = detail;
    while let Some(i) = rest.find(&lstat) {
        rest = &rest[i + lstat.len()..];
        let kernel = rest.split(',').next().unwrap_or("").trim();
        let model =
            rest.split_once(", model ").map(|(_, m)| m.split([',', ';']).next().unwrap_or("").trim()).unwrap_or("");
        push(format!("lstat {kernel}/{model}"));
    }
    for word in [
        "only the model lists",
        &format!("only the {sut} lists"),
        "data:",
        "target:",
        "xattrs:",
        "only the model has",
        &format!("only the {sut} has"),
        "root:",
    ] {
        let word = word.trim_end_matches(':');
        if detail.contains(word) {
            push(word.to_owned());
        }
    }
    let first = detail.split(':').next().unwrap_or("").trim();
    if out.is_empty() {
        first.to_owned()
    } else {
        format!("{} {}", first.split(' ').next().unwrap_or(""), out.join(", "))
    }
}

/// An answer in one line, trees left out.
pub fn answer_short(a: &Answer) -> String {
    match a {
        Answer::Reply(Reply::Merged(t)) => format!("merged view of {} paths", t.len()),
        Answer::Reply(Reply::Layer(l)) => format!("layer of {} entries", l.entries.len()),
        Answer::Reply(Reply::Outcome(o)) => format!("{o:?}"),
        Answer::Reply(r) => format!("{r:?}"),
        Answer::Error(e) => format!("error: {e}"),
        Answer::Panic(p) => format!("panic: {p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errno::Errno;

    fn stat(ino: u64, nlink: u32) -> Stat {
        Stat { kind: FileType::File, mode: 0o644, size: 0, nlink, uid: 0, gid: 0, rdev: (0, 0), ino }
    }

    fn outcome(o: Outcome) -> Answer {
        Answer::Reply(Reply::Outcome(o))
    }

    #[test]
    fn inode_numbers_compare_as_identities() {
        let mut c = Comparer::new();
        // Different numbers, same first sighting: equal.
        assert_eq!(c.differ(&outcome(Outcome::Stat(stat(7, 1))), &outcome(Outcome::Stat(stat(900, 1)))), None);
        // The same inode again on both sides: equal.
        assert_eq!(c.differ(&outcome(Outcome::Stat(stat(7, 1))), &outcome(Outcome::Stat(stat(900, 1)))), None);
        // The model sees a new inode where the kernel sees the old one: a divergence.
        let d = c.differ(&outcome(Outcome::Stat(stat(8, 1))), &outcome(Outcome::Stat(stat(900, 1))));
        assert_eq!(d.as_deref(), Some("stat differs (inode identity: kernel #0, model #1)"));
    }

    #[test]
    fn usage_errors_agree_whatever_their_words() {
        let mut c = Comparer::new();
        let a = Answer::Error(BackendError::Usage("one".into()));
        let b = Answer::Error(BackendError::Usage("two".into()));
        assert_eq!(c.differ(&a, &b), None);
        assert!(c.differ(&a, &Answer::Error(BackendError::Failed("x".into()))).is_some());
    }

    #[test]
    fn signatures_name_the_command_and_the_shapes() {
        let d = Divergence {
            step: 3,
            command: Command::Op(crate::ops::Op::Unlink { path: "/a".into() }),
            model: outcome(Outcome::Ok),
            kernel: outcome(Outcome::Err(Errno::EXDEV)),
            detail: "the outcomes differ".into(),
        };
        assert_eq!(d.signature(), "unlink: kernel EXDEV, model ok");
        let tree = Divergence {
            step: 5,
            command: Command::DumpMerged,
            model: Answer::Reply(Reply::Merged(MergedTree::new())),
            kernel: Answer::Reply(Reply::Merged(MergedTree::new())),
            detail: "merged views differ: /a: lstat: kernel ESTALE, model Dir; /b: stat differs (nlink: kernel 2, \
                     model 1)"
                .into(),
        };
        assert_eq!(tree.signature(), "dump-merged: merged nlink, lstat ESTALE/Dir");
        assert_eq!(tree.kind(), "dump-merged: kernel tree, model tree");
    }
}
