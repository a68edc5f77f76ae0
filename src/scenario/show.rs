//! Explaining a scenario step by step on the model.

use super::emit::{one_line, write_map, Y};
use super::runner::{check_trace_labeled, execute, outcome_y, FinalWant, Labels, Obs};
use super::tree::{node_y, tree_from_flat, tree_from_merged, tree_lines, walk, TreeContext};
use super::write::expect_y;
use super::{MountSpec, Scenario};
use crate::backend::ModelBackend;
use crate::overlay::{Event, LayerRef};

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{}{l}\n", " ".repeat(by))).collect()
}

/// A tree in block YAML (`{}` when empty).
fn tree_text(y: Y) -> String {
    match &y {
        Y::Map(entries, _) if !entries.is_empty() => {
            let mut out = String::new();
            write_map(&mut out, entries, 0);
            out
        }
        other => format!("{}\n", one_line(other)),
    }
}

fn mount_line(m: &MountSpec) -> String {
    if let Some(d) = &m.data {
        return format!("options {d}");
    }
    if let Some(calls) = &m.fsconfig {
        return format!("fsconfig {}", crate::scenario::write::fsconfig_text(calls));
    }
    let mut s = format!("lowers {}", m.lowers.join(":"));
    if let Some(u) = &m.upper {
        s.push_str(&format!(", upper {u}"));
    }
    format!("{s}, options {}", m.options)
}

fn event_text(e: &Event) -> String {
    match e {
        Event::CopyUp { path } => format!("copy-up {path}"),
        Event::Whiteout { path } => format!("whiteout {path}"),
        Event::Opaque { path } => format!("opaque {path}"),
        Event::Redirect { path, target } => format!("redirect {path} -> {target}"),
    }
}

fn layer_name(r: LayerRef, spec: &MountSpec) -> String {
    match r {
        LayerRef::Upper => spec.upper.clone().unwrap_or_else(|| "upper".into()),
        LayerRef::Lower(i) => spec.lowers.get(i).cloned().unwrap_or_else(|| format!("lower {i}")),
    }
}

/// Where inode `ino` is shown, until the labels are known ([`resolve_inos`]).
fn ino_mark(ino: u64) -> String {
    format!("\u{e000}{ino}\u{e001}")
}

/// The inode numbers of the [`ino_mark`]s in `text`, in order.
fn marked_inos(text: &str) -> Vec<u64> {
    text.split('\u{e000}').skip(1).filter_map(|t| t.split('\u{e001}').next()?.parse().ok()).collect()
}

/// `text` with every [`ino_mark`] replaced by the inode's label in `labels`. A mark the
/// emitter quoted (in a result) becomes the label as the emitter writes it, quoted only if
/// it must be, as in an expectation.
fn resolve_inos(text: &str, labels: &Labels) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\u{e000}') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + '\u{e000}'.len_utf8()..];
        match tail.find('\u{e001}').and_then(|end| Some((end, tail[..end].parse::<u64>().ok()?))) {
            Some((end, ino)) => {
                rest = &tail[end + '\u{e001}'.len_utf8()..];
                let quoted = out.ends_with('"') && rest.starts_with('"');
                if quoted {
                    out.pop();
                    rest = &rest[1..];
                    out.push_str(&one_line(&Y::s(labels.show(ino))));
                } else {
                    out.push_str(&labels.show(ino));
                }
            }
            None => {
                out.push('\u{e000}');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The merged view with the layer(s) each entry comes from.
fn merged_text(b: &ModelBackend, spec: &MountSpec) -> String {
    let Some(ov) = b.overlay() else {
        return "(not mounted)\n".into();
    };
    let merged = ov.clone().dump_merged();
    let mut inos = std::collections::HashMap::new();
    let tree = tree_from_merged(&merged, |p, i| {
        inos.insert(p.to_owned(), ino_mark(i));
        None
    });
    let lines = tree_lines(&tree, TreeContext::Merged);
    let paths: Vec<String> = std::iter::once("/".to_owned()).chain(walk(&tree).into_iter().map(|(p, _)| p)).collect();
    let width = lines.iter().map(|l| l.len()).max().unwrap_or(0).min(60);
    let mut out = String::new();
    for (line, path) in lines.iter().zip(&paths) {
        let from = match ov.provenance(path) {
            Some(layers) => layers.into_iter().map(|r| layer_name(r, spec)).collect::<Vec<_>>().join(", "),
            None => "unresolved".into(),
        };
        let ino = inos.get(path).map(|l| format!("  ino {l}")).unwrap_or_default();
        out.push_str(&format!("{line:<width$}  [{from}]{ino}\n"));
    }
    out
}

/// Replays `s` on the model and explains it: after each step, the step and its result (and
/// whether it is what the scenario expects), the overlay events it caused, the merged view
/// with each entry's layers (`Overlay::provenance`), and the upper layer as on disk
/// (whiteouts, opaque directories and redirects shown plainly). Plain text.
///
/// An inode is shown by one name throughout: the label the scenario's expectations give it
/// (bound as `run` binds them: one to one, by first sighting), else `#1`, `#2`, ... by first
/// sighting in the output. So
/// a result and its expectation show the same label exactly when they agree, and a step
/// whose result differs is marked `MISMATCH` right under its expectation.
pub fn show(s: &Scenario) -> String {
    let mut out = format!("scenario {} ({})\n", s.name, s.file());
    for r in &s.rules {
        out.push_str(&format!("  rule: {r}\n"));
    }
    for (name, flat) in &s.layers {
        let text = tree_text(node_y(&tree_from_flat(flat), TreeContext::Layer));
        if text == "{}\n" {
            out.push_str(&format!("\nlayer {name}: {{}}\n"));
        } else {
            out.push_str(&format!("\nlayer {name}:\n{}", indent(&text, 2)));
        }
    }
    if let Some(m) = &s.mount {
        out.push_str(&format!("\nmount: {}\n", mount_line(m)));
    }
    let mut b = ModelBackend::new();
    // Each step as its head (the step, its result and expectation) and the rest.
    let mut blocks: Vec<(String, String)> = Vec::new();
    let trace = execute(s, &mut b, FinalWant::of(s), |v| {
        let mut t = String::new();
        let line = v.step.pos.map(|p| format!(", line {}", p.line)).unwrap_or_default();
        t.push_str(&format!("\nstep {}{line}: {}\n", v.index + 1, v.step.summary()));
        if let Some(n) = &v.step.note {
            t.push_str(&format!("  note:     {n}\n"));
        }
        let result = match &v.obs.obs {
            Err(e) => format!("backend error: {e}"),
            Ok(Obs::Outcome(o)) => one_line(&outcome_y(o, &mut |i| Some(ino_mark(i)))),
            Ok(Obs::Mount(Ok(()))) => format!("ok ({})", v.spec.map(mount_line).unwrap_or_default()),
            Ok(Obs::Mount(Err(e))) => format!("refused with {e}"),
            Ok(Obs::Done) => "done".into(),
            Ok(Obs::Refused(e)) => format!("refused with {e}"),
            Ok(Obs::CallRefused(call, e)) => format!("fsconfig call {} refused with {e}", call + 1),
            Ok(Obs::Trees { .. }) => "trees read".into(),
        };
        t.push_str(&format!("  result:   {result}\n"));
        if let Some(e) = &v.step.expect {
            t.push_str(&format!("  expected: {}\n", one_line(&expect_y(e))));
        }
        let head = std::mem::take(&mut t);
        if !v.obs.events.is_empty() {
            let ev: Vec<String> = v.obs.events.iter().map(event_text).collect();
            t.push_str(&format!("  events:   {}\n", ev.join("; ")));
        }
        if let Some(ov) = v.backend.overlay().filter(|ov| !ov.fds().is_empty()) {
            t.push_str(&format!("  handles:  {}\n", ov.fds().describe().join("; ")));
        }
        if let super::Action::Edit { layer, .. } = &v.step.action {
            if let Some(l) = v.backend.layer(layer) {
                t.push_str(&format!("  layer {layer} now:\n"));
                t.push_str(&indent(&tree_text(node_y(&tree_from_flat(&l.to_flat()), TreeContext::Layer)), 4));
            }
        }
        if let Some(spec) = v.spec {
            if v.mounted {
                t.push_str("  merged:\n");
                t.push_str(&indent(&merged_text(v.backend, spec), 4));
            }
            if let Some(u) = &spec.upper {
                if let Some(layer) = v.backend.layer(u) {
                    t.push_str(&format!("  upper ({u}) on disk:\n"));
                    t.push_str(&indent(&tree_text(node_y(&tree_from_flat(&layer.to_flat()), TreeContext::Layer)), 4));
                }
            }
        }
        blocks.push((head, t));
    });
    // The labels a whole check binds, then the check again from them: its messages then
    // name each inode as the rest of the output does.
    // Inodes with no label get `#1`, `#2`, ... by first sighting in the output.
    let (_, mut labels) = check_trace_labeled(s, &trace, Labels::default());
    for (head, rest) in &blocks {
        for ino in marked_inos(head).into_iter().chain(marked_inos(rest)) {
            labels.name_unlabeled(ino);
        }
    }
    let (failures, labels) = check_trace_labeled(s, &trace, labels);
    if let Err(e) = &trace.setup {
        out.push_str(&format!("\nsetup failed: {e}\n"));
    }
    for (i, (head, rest)) in blocks.iter().enumerate() {
        out.push_str(&resolve_inos(head, &labels));
        for f in failures.iter().filter(|f| f.step.as_ref().is_some_and(|r| r.index == i + 1)) {
            out.push_str(&format!("  MISMATCH: {}\n", f.message));
            for l in &f.diff {
                out.push_str(&format!("    {l}\n"));
            }
        }
        out.push_str(&resolve_inos(rest, &labels));
    }
    for f in failures.iter().filter(|f| f.step.is_none()) {
        out.push_str(&format!("\n{}: {}\n", f.what, f.message));
        for l in &f.diff {
            out.push_str(&format!("    {l}\n"));
        }
    }
    out.push_str(&format!(
        "\n{}\n",
        if failures.is_empty() {
            "every expectation holds on the model".to_owned()
        } else {
            format!("{} expectation(s) fail on the model", failures.len())
        }
    ));
    out
}
