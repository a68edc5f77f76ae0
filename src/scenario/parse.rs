//! Reading a scenario document into a [`Scenario`], collecting every problem with its place.

use super::cx::{idx, key, type_name, Cx, Fields, Path, RawProblem};
use super::locate::{
    block_step_positions, checked_step_positions, second_document, step_at_line, step_positions, Pos, PosIndex,
};
use super::node::{Mapping, Node as Value};
use super::tree::{node_to_flat, parse_layer, parse_merged, parse_node, TreeContext, TreeKind};
use super::{
    Action, Check, Expect, MountChange, MountSpec, Problem, Scenario, ScenarioError, Source, StatExpect, Step, StepRef,
};
use crate::backend::Edit;
use crate::errno::Errno;
use crate::layer::{FileType, FlatLayer};
use crate::mount::{Options, RedirectDir, Xino};
use crate::ops::{Access, FdOp, MknodKind, Op, OpenFlags, RenameFlags, WriteAt};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// The top-level keys.
const TOP: &[&str] = &["name", "rules", "layers", "mount", "steps", "final", "umask"];

/// Every step kind ([`STEP_KINDS`], in the order the documentation lists them),
/// [`is_step_kind`] and [`step_kind`], from one list.
macro_rules! step_kinds {
    ($($kind:literal,)*) => {
        /// Every step kind, in the order the documentation lists them.
        pub(crate) const STEP_KINDS: &[&str] = &[$($kind),*];

        /// Whether `s` is one of [`STEP_KINDS`] (a `match`, not a scan of the list).
        fn is_step_kind(s: &str) -> bool {
            step_kind(s).is_some()
        }

        /// The step kind `s` is, as [`STEP_KINDS`] spells it (a `match`).
        fn step_kind(s: &str) -> Option<&'static str> {
            match s {
                $($kind => Some($kind),)*
                _ => None,
            }
        }
    };
}

step_kinds! {
    "stat",
    "lstat",
    "open",
    "read",
    "write",
    "truncate",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "link",
    "symlink",
    "readlink",
    "readdir",
    "chmod",
    "chown",
    "utimes",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "mknod",
    "mkfifo",
    "mount",
    "unmount",
    "edit",
    "check",
    "close",
    "pread",
    "pwrite",
    "lseek",
    "fstat",
    "ftruncate",
    "fchmod",
    "getdents",
    "drop_caches",
    "fchown",
    "fsync",
    "fsetxattr",
    "fgetxattr",
    "flistxattr",
    "fremovexattr",
    "name_to_handle",
    "open_by_handle",
}

/// The fields a step of this kind takes besides its own key.
fn step_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "open" => &["flags", "mode", "as", "expect", "note"],
        "write" => &["data", "at", "expect", "note"],
        "truncate" => &["len", "expect", "note"],
        "mkdir" | "chmod" | "mkfifo" => &["mode", "expect", "note"],
        "rename" => &["to", "flags", "expect", "note"],
        "link" => &["to", "expect", "note"],
        "symlink" => &["target", "expect", "note"],
        "chown" => &["uid", "gid", "expect", "note"],
        "setxattr" => &["name", "value", "expect", "note"],
        "getxattr" | "removexattr" => &["name", "expect", "note"],
        "mknod" => &["kind", "rdev", "mode", "expect", "note"],
        "unmount" => &["expect", "note"],
        "check" | "drop_caches" => &["note"],
        "edit" => &["replace", "remove", "put", "link", "note"],
        "name_to_handle" => &["as", "flags", "follow", "expect", "note"],
        "open_by_handle" => &["as", "flags", "expect", "note"],
        _ => &["expect", "note"],
    }
}

/// What kind of value an operation returns, for reading its `expect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// `ok` or an errno only.
    Plain,
    /// stat fields.
    Stat,
    /// bytes (read, getxattr).
    Data,
    /// a symlink target.
    Target,
    /// readdir names, with or without types.
    Readdir,
    /// listxattr names.
    Names,
}

/// The class of an operation's result.
pub(crate) fn class_of(op: &Op) -> Class {
    match op {
        Op::Stat { .. } | Op::Lstat { .. } => Class::Stat,
        Op::Read { .. } | Op::Getxattr { .. } => Class::Data,
        Op::Readlink { .. } => Class::Target,
        Op::Readdir { .. } => Class::Readdir,
        Op::Listxattr { .. } => Class::Names,
        Op::Fd(FdOp::Read { .. } | FdOp::Pread { .. } | FdOp::Fgetxattr { .. }) => Class::Data,
        Op::Fd(FdOp::Flistxattr { .. }) => Class::Names,
        Op::Fd(FdOp::Fstat { .. }) => Class::Stat,
        Op::Fd(FdOp::Getdents { .. }) => Class::Readdir,
        _ => Class::Plain,
    }
}

pub(crate) fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
    super::node::with_arena(|arena| parse_in(text, file, arena))
}

/// [`parse`], with the document's tree in `arena`.
fn parse_in(text: &str, file: &str, arena: &bumpalo::Bump) -> Result<Scenario, ScenarioError> {
    // A UTF-8 byte order mark is allowed at the start of a YAML stream, and invisible in an
    // editor: positions are counted without it.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The plain block style of scenario files is read by the fast reader; anything else (and
    // every malformed document) by `yaml_serde`, which reports errors as before.
    let mut step_starts = None;
    let read = match super::fast::load_with_steps(text, arena) {
        Some((v, starts)) => {
            step_starts = starts;
            Ok(v)
        }
        None => yaml_serde::from_str::<yaml_serde::Value>(text).map(|v| Value::from_value(v, arena)),
    };
    let value: Value = match read {
        Ok(v) => v,
        Err(e) => {
            let mut pos =
                e.location().map(|l| Pos { line: l.line(), column: l.column() }).unwrap_or(Pos { line: 1, column: 1 });
            let full = e.to_string();
            // An unclosed flow collection or quoted string is noticed later than it starts:
            // point at its start.
            for ctx in ["while parsing a flow", "while scanning a quoted scalar"] {
                if let Some(at) = full.find(ctx).and_then(|i| context_pos(&full[i..])) {
                    pos = at;
                }
            }
            // yaml_serde does not say where the second document is.
            if full.contains("more than one document") {
                pos = second_document(text).unwrap_or(pos);
            }
            let step = step_at_line(text, pos.line).map(|(i, op)| StepRef { index: i + 1, op });
            let mut msg = strip_positions(&full);
            if full.contains("while scanning a tag") {
                msg.push_str(
                    " (in flow style, a tag without a value needs a space or `~` before `}` or `]`: \
                     `{w: !whiteout ~}`)",
                );
            }
            return Err(ScenarioError::single(file, pos, step, format!("malformed YAML: {msg}")));
        }
    };
    let mut cx = Cx::new(Some(text));
    let scenario = read_scenario(&mut cx, &value, text, file);
    if cx.problems.is_empty() {
        if let Some(mut s) = scenario {
            let ops: Vec<&str> = s.steps.iter().map(Step::op_name).collect();
            let positions = step_starts
                .and_then(|starts| checked_step_positions(&starts, &ops))
                .or_else(|| block_step_positions(text, &ops))
                .unwrap_or_else(|| step_positions(cx.index(), s.steps.len()));
            for (step, pos) in s.steps.iter_mut().zip(positions) {
                step.pos = pos;
            }
            return Ok(s);
        }
    }
    Err(resolve(&cx.problems, cx.index(), file))
}

/// A YAML error message without its ` at line N column M` parts (the position is given
/// apart).
fn strip_positions(msg: &str) -> String {
    let mut out = String::new();
    let mut rest = msg;
    while let Some(i) = rest.find(" at line ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " at line ".len()..];
        let skip = after
            .find(" column ")
            .map(|c| {
                let tail = &after[c + " column ".len()..];
                c + " column ".len() + tail.find(|ch: char| !ch.is_ascii_digit()).unwrap_or(tail.len())
            })
            .unwrap_or(0);
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

/// The position in `at line N column M` at the start of `text`'s first such part.
fn context_pos(text: &str) -> Option<Pos> {
    let rest = &text[text.find(" at line ")? + " at line ".len()..];
    let (line, rest) = rest.split_once(" column ")?;
    let column: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some(Pos { line: line.parse().ok()?, column: column.parse().ok()? })
}

/// Gives each problem its line and column, all from one index of the text.
pub(crate) fn resolve(problems: &[RawProblem], index: &PosIndex, file: &str) -> ScenarioError {
    let mut out: Vec<Problem> = problems
        .iter()
        .map(|p| Problem {
            file: file.to_owned(),
            pos: index.nearest(&p.path, p.key),
            step: p.step.clone(),
            message: p.message.clone(),
        })
        .collect();
    if out.is_empty() {
        out.push(Problem {
            file: file.to_owned(),
            pos: Pos { line: 1, column: 1 },
            step: None,
            message: "the scenario could not be read".into(),
        });
    }
    out.dedup();
    ScenarioError { problems: out }
}

/// The leading comment block of a text: the comment and blank lines before the first key.
pub(crate) fn header_of(text: &str) -> String {
    // Where every line up to the first key is indented with spaces and tabs only and does
    // not end in `\r`, the header is a slice of the text: up to the end of its last comment
    // line.
    let b = text.as_bytes();
    let (mut at, mut kept, mut blank_after) = (0, 0, false);
    while at < b.len() {
        let end = text[at..].find('\n').map_or(b.len(), |p| at + p);
        let line = &b[at..end];
        if line.last() == Some(&b'\r') {
            return header_of_lines(text);
        }
        match line.iter().find(|c| !matches!(c, b' ' | b'\t')) {
            Some(b'#') => (kept, blank_after) = (end, false),
            None => blank_after = true,
            // What `trim_start` would also take (other whitespace) is left to the lines.
            Some(c) if !c.is_ascii() || matches!(c, 0x0b | 0x0c | b'\r') => return header_of_lines(text),
            Some(_) => break,
        }
        at = end + 1;
    }
    if kept == 0 {
        return String::new();
    }
    let mut h = String::with_capacity(kept + 2);
    h.push_str(&text[..kept]);
    h.push('\n');
    if blank_after {
        h.push('\n');
    }
    h
}

/// [`header_of`], line by line: any text.
fn header_of_lines(text: &str) -> String {
    let mut lines = Vec::new();
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with('#') || t.is_empty() {
            lines.push(l);
        } else {
            break;
        }
    }
    let mut blank_after = false;
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
        blank_after = true;
    }
    let mut h = lines.join("\n");
    if !h.is_empty() {
        h.push('\n');
        if blank_after {
            h.push('\n');
        }
    }
    h
}

fn read_scenario(cx: &mut Cx, v: &Value, text: &str, file: &str) -> Option<Scenario> {
    let root = Path::Root;
    let m = match v {
        Value::Mapping(m) => m,
        other => {
            cx.problem(
                &root,
                format!(
                    "a scenario is a mapping with name, rules, layers, mount, steps and final; \
                     this document is {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    let fields = cx.fields(m, &root, TOP, "the scenario");
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let mut ok = true;
    for required in ["name", "rules", "layers", "steps"] {
        if get(required).is_none() {
            cx.problem(&root, format!("the scenario has no `{required}`"));
            ok = false;
        }
    }
    let name = get("name").and_then(|v| cx.string(v, &key(&root, "name"), "name"));
    let rules = get("rules").and_then(|v| read_rules(cx, v, &key(&root, "rules")));
    let mut image_layers = Vec::new();
    let layers = get("layers")
        .and_then(|v| read_layers(cx, v, &key(&root, "layers"), file, &mut image_layers))
        .unwrap_or_default();
    // The layer names, lent to the readers that take them (`cx.layers` for steps).
    let layer_names: Vec<String> = layers.iter().map(|(n, _)| n.clone()).collect();
    let mount = match get("mount") {
        Some(v) => {
            let p = key(&root, "mount");
            let r = read_mount_spec(cx, v, &p, &layer_names);
            ok &= r.is_some();
            r
        }
        None => None,
    };
    cx.layers = layer_names;
    let mut steps = Vec::new();
    if let Some(v) = get("steps") {
        let p = key(&root, "steps");
        match v {
            Value::Sequence(items) => {
                steps.reserve_exact(items.len());
                for (i, item) in items.iter().enumerate() {
                    match read_step(cx, item, &idx(&p, i), i) {
                        Some(s) => steps.push(s),
                        None => ok = false,
                    }
                    cx.step = None;
                }
            }
            Value::Null => {}
            other => {
                cx.problem(&p, format!("`steps` must be a list of steps, not {}", type_name(other)));
                ok = false;
            }
        }
    }
    let final_check = match get("final") {
        Some(v) => {
            let r = read_check(cx, v, &key(&root, "final"), "final");
            ok &= r.is_some();
            r
        }
        None => None,
    };
    let umask = match get("umask") {
        Some(v) => {
            let r = read_umask(cx, v, &key(&root, "umask"));
            ok &= r.is_some();
            r
        }
        None => None,
    };
    let scenario = Scenario {
        umask,
        name: name.unwrap_or_default(),
        rules: rules.unwrap_or_default(),
        layers,
        mount,
        steps,
        final_check,
        source: Some(Source {
            file: file.to_owned(),
            text: text.to_owned(),
            header: header_of(text),
            key_order: fields.iter().map(|(k, _)| k.to_string()).collect(),
            image_layers,
        }),
    };
    if ok && cx.problems.is_empty() {
        check_sequence(cx, &scenario);
    }
    Some(scenario)
}

fn read_rules(cx: &mut Cx, v: &Value, path: &Path) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.to_string()]),
        Value::Sequence(items) if !items.is_empty() => {
            let mut out = Vec::new();
            for (i, it) in items.iter().enumerate() {
                out.push(cx.string(it, &idx(path, i), "a rule")?);
            }
            Some(out)
        }
        other => {
            cx.problem(
                path,
                format!("`rules` must list the rule(s) the scenario pins, in words; found {}", type_name(other)),
            );
            None
        }
    }
}

fn read_layers(
    cx: &mut Cx,
    v: &Value,
    path: &Path,
    file: &str,
    image_layers: &mut Vec<super::ImageLayerSource>,
) -> Option<Vec<(String, FlatLayer)>> {
    let m = cx.mapping(v, path, "`layers`")?;
    let mut out = Vec::new();
    for (name, lv) in cx.fields(m, path, &[], "layers") {
        let p = key(path, &name);
        let name = name.to_string();
        if let Some((mut source, flat)) = read_image_layer(cx, lv, &p, file) {
            source.name = name.clone();
            image_layers.push(source);
            out.push((name, flat));
            continue;
        }
        // A layer with problems is still known by name, so mounts naming it add no noise.
        match parse_layer(cx, lv, &p) {
            Some(flat) => out.push((name, flat)),
            None => out.push((name, crate::layer::Layer::new().to_flat())),
        }
    }
    Some(out)
}

/// A layer read from a container image: `!tar FILE` (an OCI or Docker layer tar, plain,
/// gzip or zstd), `!dir DIR` (a directory in overlay's on-disk form), or
/// `!oci {path: DIR, ref: NAME, layer: N}` (layer N, 0 the top-most, of the image named
/// NAME in an OCI image layout, digests verified); paths relative to the scenario file's
/// directory (see [`crate::image`]). Returns the source as written (its name left empty)
/// and the layer (empty after a problem); `None` when `v` is none of these tags.
fn read_image_layer(cx: &mut Cx, v: &Value, path: &Path, file: &str) -> Option<(super::ImageLayerSource, FlatLayer)> {
    let Value::Tagged(t) = v else { return None };
    let tag = t.tag.to_string();
    let tag = tag.trim_start_matches('!');
    if !["tar", "dir", "oci"].contains(&tag) {
        return None;
    }
    let mut source = super::ImageLayerSource {
        name: String::new(),
        tag: tag.to_owned(),
        path: String::new(),
        reference: None,
        layer: None,
    };
    let empty = crate::layer::Layer::new().to_flat();
    if tag == "oci" {
        let Some(m) = cx.mapping(&t.value, path, "!oci") else {
            return Some((source, empty));
        };
        for (k, fv) in cx.fields(m, path, &["path", "ref", "layer"], "!oci") {
            let kp = key(path, &k);
            match &*k {
                "path" => source.path = cx.string(fv, &kp, "path").unwrap_or_default(),
                "ref" => source.reference = cx.string(fv, &kp, "ref"),
                _ => source.layer = cx.uint(fv, &kp, "layer"),
            }
        }
        if source.path.is_empty() || source.layer.is_none() {
            cx.problem(path, "!oci needs `path` (an OCI image layout directory) and `layer` (0 is the top-most)");
            return Some((source, empty));
        }
    } else {
        let Value::String(rel) = &t.value else {
            cx.problem(path, format!("!{tag} takes a path relative to the scenario file, not {}", type_name(&t.value)));
            return Some((source, empty));
        };
        source.path = rel.to_string();
    }
    let full = std::path::Path::new(file).parent().unwrap_or(std::path::Path::new("")).join(&source.path);
    let flat = read_image_file(tag, &full, &source);
    match flat {
        Ok(flat) => Some((source, flat)),
        Err(e) => {
            cx.problem(path, e.to_string());
            Some((source, empty))
        }
    }
}

/// The layer of an image source (see [`read_image_layer`]), checked as a layer.
#[cfg(all(feature = "image", target_os = "linux"))]
fn read_image_file(tag: &str, full: &std::path::Path, source: &super::ImageLayerSource) -> Result<FlatLayer, String> {
    let read = match tag {
        "tar" => crate::image::oci::read_tar_file(full),
        "dir" => crate::image::dir::read_dir(full),
        _ => crate::image::layout::manifest_layers(full, source.reference.as_deref()).and_then(|layers| {
            let n = source.layer.unwrap_or(0);
            match layers.get(n as usize) {
                Some(l) => crate::image::layout::read_layer(full, l),
                None => Err(crate::image::ImageError::whole(
                    &full.display().to_string(),
                    format!("layer {n}: the image has {} layers", layers.len()),
                )),
            }
        }),
    };
    read.and_then(|flat| {
        crate::layer::check::check_layer(&flat)
            .map(|()| flat)
            .map_err(|(p, r)| crate::image::ImageError::at(&full.display().to_string(), p, r.to_string()))
    })
    .map_err(|e| e.to_string())
}

/// Without the `image` feature (or off Linux), image sources are a problem of the file.
#[cfg(not(all(feature = "image", target_os = "linux")))]
fn read_image_file(tag: &str, _: &std::path::Path, _: &super::ImageLayerSource) -> Result<FlatLayer, String> {
    Err(format!("!{tag} layers need ovlsim's `image` feature (Linux), which this build does not have"))
}

fn read_lowers(cx: &mut Cx, v: &Value, path: &Path, layers: &[String]) -> Option<Vec<String>> {
    let items: Vec<(Path, &Value)> = match v {
        Value::Sequence(s) if !s.is_empty() => s.iter().enumerate().map(|(i, x)| (idx(path, i), x)).collect(),
        Value::String(_) => vec![(*path, v)],
        other => {
            cx.problem(path, format!("`lowers` must list layer names, top-most first, not {}", type_name(other)));
            return None;
        }
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (p, x) in items {
        match cx.string(x, &p, "a layer name") {
            Some(n) if layers.contains(&n) => out.push(n),
            Some(n) => {
                cx.problem(&p, unknown_layer(&n, layers));
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn unknown_layer(n: &str, layers: &[String]) -> String {
    format!(
        "unknown layer {n:?}; the layers are: {}",
        if layers.is_empty() { "(none)".to_owned() } else { layers.join(", ") }
    )
}

fn read_upper(cx: &mut Cx, v: &Value, path: &Path, layers: &[String]) -> Option<Option<String>> {
    match v {
        Value::Null => Some(None),
        _ => {
            let n = cx.string(v, path, "the upper layer's name")?;
            if layers.contains(&n) {
                Some(Some(n))
            } else {
                cx.problem(path, unknown_layer(&n, layers));
                None
            }
        }
    }
}

fn read_mount_spec(cx: &mut Cx, v: &Value, path: &Path, layers: &[String]) -> Option<MountSpec> {
    let m = cx.mapping(v, path, "`mount`")?;
    let fields = cx.fields(m, path, &["lowers", "upper", "options", "fsconfig"], "mount");
    let change = read_mount_fields(cx, fields, path, layers)?;
    if change.data.is_some() || change.fsconfig.is_some() {
        return change.apply(None).ok();
    }
    if change.lowers.is_none() {
        cx.problem(path, "the mount has no `lowers`");
        return None;
    }
    change.apply(None).ok()
}

fn read_mount_fields(cx: &mut Cx, fields: Fields, path: &Path, layers: &[String]) -> Option<MountChange> {
    let mut change = MountChange::default();
    let mut ok = true;
    for (k, v) in fields {
        let p = key(path, &k);
        match &*k {
            "lowers" => match read_lowers(cx, v, &p, layers) {
                Some(l) => change.lowers = Some(l),
                None => ok = false,
            },
            "upper" => match read_upper(cx, v, &p, layers) {
                Some(u) => change.upper = Some(u),
                None => ok = false,
            },
            "options" if matches!(v, Value::String(_)) => match read_option_string(cx, v, &p, layers) {
                Some(d) => change.data = Some(d),
                None => ok = false,
            },
            "options" => match read_options(cx, v, &p) {
                Some(o) => change.options = Some(o),
                None => ok = false,
            },
            "fsconfig" => match read_fsconfig(cx, v, &p, layers) {
                Some(calls) => change.fsconfig = Some(calls),
                None => ok = false,
            },
            _ => {}
        }
    }
    if change.data.is_some() && (change.lowers.is_some() || change.upper.is_some()) {
        cx.problem(path, "an option string names the layers itself: give no `lowers` or `upper` with it");
        return None;
    }
    if change.fsconfig.is_some()
        && (change.lowers.is_some() || change.upper.is_some() || change.options.is_some() || change.data.is_some())
    {
        cx.problem(
            path,
            "`fsconfig` names the layers and options itself: give no `lowers`, `upper` or `options` with it",
        );
        return None;
    }
    ok.then_some(change)
}

/// An option string (`options: "lowerdir=L0:L1,upperdir=upper,workdir=work"`): its paths
/// are layer names, so each must be a plain name (no `/`, not `.` or `..`); a `workdir=`
/// may not name a layer (it is the upper layer's own workdir). A name that is no layer is
/// allowed: the mount gives ENOENT, as for a missing path.
fn read_option_string(cx: &mut Cx, v: &Value, path: &Path, layers: &[String]) -> Option<String> {
    let data = cx.string(v, path, "an option string")?;
    let (lowers, upper, works) = crate::params::Params::names(&data);
    let mut ok = true;
    for name in lowers.iter().chain(&upper).chain(&works) {
        if name == "." || name == ".." || name.contains('/') {
            cx.problem(path, format!("the option string names {name:?}: its paths are layer names, without `/`"));
            ok = false;
        }
    }
    for w in works.iter().filter(|w| layers.contains(w)) {
        cx.problem(
            path,
            format!("`workdir={w}` names a layer; the workdir is the upper layer's own: give it another name (work)"),
        );
        ok = false;
    }
    ok.then_some(data)
}

/// The `fsconfig(2)` calls of a mount with the new mount API (`fsconfig: [[lowerdir+, L0],
/// [upperdir, upper], [workdir, work], [ro]]`): each entry `[key, value]`
/// (`FSCONFIG_SET_STRING`) or `[key]` (`FSCONFIG_SET_FLAG`), strings without NUL. Layer
/// paths are layer names, as in an option string ([`read_option_string`]).
fn read_fsconfig(cx: &mut Cx, v: &Value, path: &Path, layers: &[String]) -> Option<Vec<crate::params::FsParam>> {
    let Value::Sequence(items) = v else {
        cx.problem(path, format!("`fsconfig` must list the calls, each [key, value] or [key], not {}", type_name(v)));
        return None;
    };
    let mut calls = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let p = idx(path, i);
        let parts = match item {
            Value::Sequence(s) if s.len() == 1 || s.len() == 2 => s,
            other => {
                cx.problem(&p, format!("an fsconfig call is [key, value] or [key] (a flag), not {}", type_name(other)));
                ok = false;
                continue;
            }
        };
        let key = cx.text_no_nul(&parts[0], &idx(&p, 0), "an fsconfig key");
        let value = match parts.get(1) {
            Some(x) => cx.text_no_nul(x, &idx(&p, 1), "an fsconfig value (quote it)").map(Some),
            None => Some(None),
        };
        match (key, value) {
            (Some(key), Some(value)) => calls.push(crate::params::FsParam { key, value }),
            _ => ok = false,
        }
    }
    let (lowers, upper, works) = crate::params::Params::fsconfig_names(&calls);
    for name in lowers.iter().chain(&upper).chain(&works) {
        if name == "." || name == ".." || name.contains('/') {
            cx.problem(path, format!("`fsconfig` names {name:?}: its paths are layer names, without `/`"));
            ok = false;
        }
    }
    for w in works.iter().filter(|w| layers.contains(w)) {
        cx.problem(
            path,
            format!("`workdir` {w:?} names a layer; the workdir is the upper layer's own: give it another name (work)"),
        );
        ok = false;
    }
    ok.then_some(calls)
}

/// The option fields, as `mount::Options` names them.
const OPTION_FIELDS: &[&str] = &[
    "redirect_dir",
    "index",
    "metacopy",
    "xino",
    "userxattr",
    "nfs_export",
    "volatile",
    "read_only",
    "workdir_without_upper",
    "uuid",
];

fn read_options(cx: &mut Cx, v: &Value, path: &Path) -> Option<Options> {
    let m = cx.mapping(v, path, "`options`")?;
    let mut o = Options::default();
    let mut ok = true;
    for (k, val) in cx.fields(m, path, OPTION_FIELDS, "mount options") {
        let p = key(path, &k);
        let word = match val {
            Value::String(s) => Some(&**s),
            Value::Bool(true) => Some("on"),
            Value::Bool(false) => Some("off"),
            _ => None,
        };
        let flag = match word {
            Some("on") | Some("true") => Some(true),
            Some("off") | Some("false") => Some(false),
            _ => None,
        };
        match &*k {
            "redirect_dir" | "index" | "metacopy" | "xino" | "nfs_export" => {
                let n = &mut o.named;
                *match &*k {
                    "redirect_dir" => &mut n.redirect_dir,
                    "index" => &mut n.index,
                    "metacopy" => &mut n.metacopy,
                    "xino" => &mut n.xino,
                    _ => &mut n.nfs_export,
                } = true;
            }
            _ => {}
        }
        match &*k {
            "redirect_dir" => match word {
                Some("on") => o.redirect_dir = RedirectDir::On,
                Some("follow") => o.redirect_dir = RedirectDir::Follow,
                Some("nofollow") => o.redirect_dir = RedirectDir::Nofollow,
                Some("off") => o.redirect_dir = RedirectDir::Off,
                _ => {
                    cx.problem(&p, "redirect_dir must be on, follow, nofollow or off");
                    ok = false;
                }
            },
            "xino" => match word {
                Some("on") => o.xino = Xino::On,
                Some("auto") => o.xino = Xino::Auto,
                Some("off") => o.xino = Xino::Off,
                _ => {
                    cx.problem(&p, "xino must be on, auto or off");
                    ok = false;
                }
            },
            "uuid" => match if matches!(val, Value::Null) { Some("null") } else { word } {
                Some("off") => o.uuid = crate::mount::Uuid::Off,
                Some("null") => o.uuid = crate::mount::Uuid::Null,
                Some("auto") => o.uuid = crate::mount::Uuid::Auto,
                Some("on") => o.uuid = crate::mount::Uuid::On,
                _ => {
                    cx.problem(&p, "uuid must be off, null, auto or on");
                    ok = false;
                }
            },
            other => match flag {
                Some(b) => match other {
                    "index" => o.index = b,
                    "metacopy" => o.metacopy = b,
                    "userxattr" => o.userxattr = b,
                    "nfs_export" => o.nfs_export = b,
                    "volatile" => o.volatile = b,
                    "workdir_without_upper" => o.workdir_without_upper = b,
                    _ => o.read_only = b,
                },
                None => {
                    cx.problem(&p, format!("{other} must be true or false (or on/off)"));
                    ok = false;
                }
            },
        }
    }
    ok.then_some(o.canonical())
}

fn read_step(cx: &mut Cx, v: &Value, path: &Path, i: usize) -> Option<Step> {
    let alone: [(Value, Value); 1];
    let m: &[(Value, Value)] = match v {
        Value::String(s @ ("unmount" | "mount" | "drop_caches")) => {
            alone = [(Value::String(s), Value::Null)];
            &alone
        }
        Value::Mapping(m) => m,
        other => {
            cx.step = Some((i + 1, "?".into()));
            cx.problem(
                path,
                format!(
                    "a step is a mapping such as `stat: /f` with an `expect`, or `unmount`; \
                     found {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    // Find the step's kind: the one key that names an operation (nearly always the only
    // such key: then nothing is collected).
    let mut named = m.iter().filter_map(|(k, _)| match k {
        Value::String(s) if is_step_kind(s) => Some(&**s),
        _ => None,
    });
    let only = match (named.next(), named.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    };
    let mut kinds: Vec<&str> = Vec::new();
    let mut unknown: Vec<&str> = Vec::new();
    for (k, _) in m.iter().filter(|_| only.is_none()) {
        if let Value::String(s) = k {
            if is_step_kind(s) {
                kinds.push(s);
            } else if !["expect", "note"].contains(&&**s) {
                unknown.push(s);
            }
        }
    }
    // `link` is an op and a field of `edit`: a kind whose fields take the other kinds wins.
    if kinds.len() > 1 {
        let fitting: Vec<&str> =
            kinds.iter().copied().filter(|k| kinds.iter().all(|o| o == k || step_fields(k).contains(o))).collect();
        if fitting.len() == 1 {
            kinds = fitting;
        }
    }
    let kind: &str = match (only, kinds.as_slice()) {
        (Some(one), _) | (None, &[one]) => one,
        (None, []) => {
            let op = unknown.first().map_or_else(|| "?".to_owned(), |u| u.to_string());
            cx.step = Some((i + 1, op.clone().into()));
            if unknown.is_empty() {
                cx.problem(path, "the step names no operation");
            } else {
                cx.key_problem(
                    &key(path, &op),
                    format!("unknown operation `{op}`; expected one of: {}", STEP_KINDS.join(", ")),
                );
            }
            return None;
        }
        (None, several) => {
            cx.step = Some((i + 1, several[0].to_owned().into()));
            cx.key_problem(
                &key(path, several[1]),
                format!("a step does one thing; this one names {}", several.join(" and ")),
            );
            return None;
        }
    };
    cx.step = Some((i + 1, step_kind(kind).expect("a step kind").into()));
    // The step's own key, its fields, and `as_user` and `umask` for an operation.
    let mut allowed = [""; 10];
    let own = step_fields(kind);
    allowed[0] = kind;
    allowed[1..1 + own.len()].copy_from_slice(own);
    let mut n = 1 + own.len();
    if !NOT_OPS.contains(&kind) && !super::handle::FILE_HANDLE_KINDS.contains(&kind) {
        allowed[n..n + 2].copy_from_slice(&["as_user", "umask"]);
        n += 2;
    }
    let fields = cx.fields(m, path, &allowed[..n], format_args!("a `{kind}` step"));
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let subject = get(kind).expect("the kind key is present");
    let sp = key(path, kind);
    let note = match get("note") {
        Some(v) => Some(cx.string(v, &key(path, "note"), "a note")?),
        None => None,
    };
    let action = match kind {
        "mount" => {
            let change = match subject {
                Value::Null => MountChange::default(),
                Value::Mapping(mm) => {
                    let f = cx.fields(mm, &sp, &["lowers", "upper", "options", "fsconfig"], "mount");
                    {
                        // Lent, not copied: the readers take the names as an argument.
                        let layers = std::mem::take(&mut cx.layers);
                        let change = read_mount_fields(cx, f, &sp, &layers);
                        cx.layers = layers;
                        change?
                    }
                }
                other => {
                    cx.problem(
                        &sp,
                        format!(
                            "`mount` takes the changes to the previous mount (lowers, upper, \
                             options) or nothing, not {}",
                            type_name(other)
                        ),
                    );
                    return None;
                }
            };
            Action::Mount(change)
        }
        "unmount" => {
            if !matches!(subject, Value::Null) {
                cx.problem(&sp, "`unmount` takes no value");
                return None;
            }
            Action::Unmount
        }
        "edit" => read_edit(cx, subject, &sp, path, &fields)?,
        "check" => Action::Check(read_check(cx, subject, &sp, "check")?),
        "drop_caches" => {
            if !matches!(subject, Value::Null) {
                cx.problem(&sp, "`drop_caches` takes no value");
                return None;
            }
            Action::DropCaches
        }
        _ => Action::Op(read_op(cx, kind, subject, &sp, path, &fields)?),
    };
    let expect = match get("expect") {
        None => None,
        Some(Value::Mapping(m)) if matches!(action, Action::Mount(_)) => {
            Some(read_call_expect(cx, m, &key(path, "expect"))?)
        }
        Some(v) => {
            let ep = key(path, "expect");
            let class = match &action {
                Action::Op(op) => class_of(op),
                _ => Class::Plain,
            };
            Some(read_expect(cx, v, &ep, class, kind)?)
        }
    };
    let as_user = match get("as_user") {
        Some(v) => Some(read_user(cx, v, &key(path, "as_user"))?),
        None => None,
    };
    let umask = match get("umask") {
        Some(v) => Some(read_umask(cx, v, &key(path, "umask"))?),
        None => None,
    };
    Some(Step { action, expect, note, pos: None, as_user, umask })
}

/// The step kinds that are not operations: they take no `as_user` or `umask`.
const NOT_OPS: &[&str] = &["mount", "unmount", "edit", "check", "drop_caches"];

/// A umask: a mode of permission bits only (`0o022`, `022`).
fn read_umask(cx: &mut Cx, v: &Value, path: &Path) -> Option<u32> {
    let m = cx.mode(v, path)?;
    if m > 0o777 {
        cx.problem(path, format!("a umask has permission bits only (at most 0777), not {m:#o}"));
        return None;
    }
    Some(m)
}

/// An `as_user`: `{uid: N, gid: N, groups: [N, ...]}` (`groups` may be left out: none).
fn read_user(cx: &mut Cx, v: &Value, path: &Path) -> Option<crate::cred::User> {
    let Value::Mapping(m) = v else {
        cx.problem(path, format!("`as_user` is a mapping {{uid, gid, groups}}, not {}", type_name(v)));
        return None;
    };
    let fields = cx.fields(m, path, &["uid", "gid", "groups"], "`as_user`");
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let mut ids = [0u32; 2];
    for (i, k) in ["uid", "gid"].into_iter().enumerate() {
        match get(k) {
            Some(v) => ids[i] = cx.uint::<u32>(v, &key(path, k), k)?,
            None => {
                cx.problem(path, format!("`as_user` has no `{k}`"));
                return None;
            }
        }
    }
    let mut groups = Vec::new();
    match get("groups") {
        None => {}
        Some(Value::Sequence(items)) => {
            for (i, g) in items.iter().enumerate() {
                groups.push(cx.uint::<u32>(g, &idx(&key(path, "groups"), i), "a group id")?);
            }
        }
        Some(other) => {
            cx.problem(&key(path, "groups"), format!("`groups` is a list of group ids, not {}", type_name(other)));
            return None;
        }
    }
    if ids.contains(&u32::MAX) || groups.contains(&u32::MAX) {
        cx.problem(path, "4294967295 is not a user or group id (it is -1)");
        return None;
    }
    Some(crate::cred::User { uid: ids[0], gid: ids[1], groups })
}

fn read_op(
    cx: &mut Cx,
    kind: &str,
    subject: &Value,
    sp: &Path,
    path: &Path,
    fields: &[(Cow<str>, &Value)],
) -> Option<Op> {
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    if super::handle::is_handle_step(kind, subject) {
        return super::handle::read_handle_op(cx, kind, subject, sp, path, fields);
    }
    if kind == "open_by_handle" {
        let flags = match get("flags") {
            Some(v) => read_open_flags(cx, v, &key(path, "flags")),
            None => Some(OpenFlags::default()),
        };
        return super::handle::read_open_by_handle(cx, subject, sp, path, get("as"), flags?);
    }
    let target_path = cx.step_path(subject, sp, format_args!("the path of `{kind}`"));
    let mut ok = target_path.is_some();
    let p = target_path.unwrap_or_default();
    let need = |cx: &mut Cx, k: &'static str| match get(k) {
        Some(v) => Some((v, key(path, k))),
        None => {
            cx.problem(path, format!("`{kind}` needs `{k}`"));
            None
        }
    };
    let mode_or = |cx: &mut Cx, default: u32| -> Option<u32> {
        match get("mode") {
            Some(v) => cx.mode(v, &key(path, "mode")),
            None => Some(default),
        }
    };
    let op = match kind {
        "stat" => Some(Op::Stat { path: p }),
        "lstat" => Some(Op::Lstat { path: p }),
        "read" => Some(Op::Read { path: p }),
        "readlink" => Some(Op::Readlink { path: p }),
        "readdir" => Some(Op::Readdir { path: p }),
        "rmdir" => Some(Op::Rmdir { path: p }),
        "unlink" => Some(Op::Unlink { path: p }),
        "utimes" => Some(Op::Utimes { path: p }),
        "listxattr" => Some(Op::Listxattr { path: p }),
        "name_to_handle" => {
            let op = super::handle::read_name_to_handle(cx, p, path, get("as"), get("flags"), get("follow"));
            ok &= op.is_some();
            return if ok { op } else { None };
        }
        "open" => {
            let flags = match get("flags") {
                Some(v) => read_open_flags(cx, v, &key(path, "flags")),
                None => Some(OpenFlags::default()),
            };
            let mode = mode_or(cx, 0o644);
            if let Some(v) = get("as") {
                let op = super::handle::open_as(cx, v, &key(path, "as"), p, flags?, mode?);
                ok &= op.is_some();
                return if ok { op } else { None };
            }
            Some(Op::Open { path: p, flags: flags?, mode: mode? })
        }
        "write" => {
            let data = need(cx, "data").and_then(|(v, dp)| cx.bytes(v, &dp, "data"));
            let at = match get("at") {
                None => Some(WriteAt::Offset(0)),
                Some(Value::String("append")) => Some(WriteAt::Append),
                Some(v) => cx.uint::<u64>(v, &key(path, "at"), "`at` (an offset, or append)").map(WriteAt::Offset),
            };
            Some(Op::Write { path: p, at: at?, data: data? })
        }
        "truncate" => {
            let len = need(cx, "len").and_then(|(v, lp)| cx.uint::<u64>(v, &lp, "len"));
            Some(Op::Truncate { path: p, len: len? })
        }
        "mkdir" => Some(Op::Mkdir { path: p, mode: mode_or(cx, 0o755)? }),
        "chmod" => {
            let mode = need(cx, "mode").and_then(|(v, mp)| cx.mode(v, &mp));
            Some(Op::Chmod { path: p, mode: mode? })
        }
        "chown" => {
            // -1 leaves the id as it is (chown(2)); it travels as u32::MAX.
            let id = |cx: &mut Cx, v: &Value, p: &Path, what: &str| match v {
                Value::Number(n) if n.as_i64() == Some(-1) => Some(u32::MAX),
                _ => cx.uint(v, p, what),
            };
            let uid = need(cx, "uid").and_then(|(v, up)| id(cx, v, &up, "uid (or -1)"));
            let gid = need(cx, "gid").and_then(|(v, gp)| id(cx, v, &gp, "gid (or -1)"));
            Some(Op::Chown { path: p, uid: uid?, gid: gid? })
        }
        "rename" => {
            let to = need(cx, "to").and_then(|(v, tp)| cx.step_path(v, &tp, "`to`"));
            let flags = match get("flags") {
                Some(v) => read_rename_flags(cx, v, &key(path, "flags")),
                None => Some(RenameFlags::default()),
            };
            Some(Op::Rename { from: p, to: to?, flags: flags? })
        }
        "link" => {
            let to = need(cx, "to").and_then(|(v, tp)| cx.step_path(v, &tp, "`to`"));
            Some(Op::Link { from: p, to: to? })
        }
        "symlink" => {
            let t = need(cx, "target").and_then(|(v, tp)| cx.text_no_nul(v, &tp, "a symlink target"));
            Some(Op::Symlink { target: t?, path: p })
        }
        "setxattr" => {
            let name = need(cx, "name").and_then(|(v, np)| xattr_name(cx, v, &np));
            let value = need(cx, "value").and_then(|(v, vp)| cx.bytes(v, &vp, "value"));
            Some(Op::Setxattr { path: p, name: name?, value: value? })
        }
        "getxattr" => {
            let name = need(cx, "name").and_then(|(v, np)| xattr_name(cx, v, &np));
            Some(Op::Getxattr { path: p, name: name? })
        }
        "removexattr" => {
            let name = need(cx, "name").and_then(|(v, np)| xattr_name(cx, v, &np));
            Some(Op::Removexattr { path: p, name: name? })
        }
        "mkfifo" => Some(Op::Mknod { path: p, kind: MknodKind::Fifo, mode: mode_or(cx, 0o644)? }),
        "mknod" => {
            let k = need(cx, "kind").and_then(|(v, kp)| cx.string(v, &kp, "kind").map(|s| (s, kp)));
            let rdev = get("rdev").map(|v| cx.rdev(v, &key(path, "rdev")));
            let mode = mode_or(cx, 0o644);
            let (k, kp) = k?;
            let mk = match (k.as_str(), rdev) {
                ("file", None) => MknodKind::File,
                ("fifo", None) => MknodKind::Fifo,
                ("char", Some(Some((a, b)))) => MknodKind::Char(a, b),
                ("block", Some(Some((a, b)))) => MknodKind::Block(a, b),
                ("char" | "block", None) => {
                    cx.problem(path, format!("mknod of a {k} device needs `rdev: [major, minor]`"));
                    return None;
                }
                ("file" | "fifo", Some(_)) => {
                    cx.problem(&key(path, "rdev"), format!("mknod of a {k} takes no `rdev`"));
                    return None;
                }
                ("char" | "block", Some(None)) => return None,
                _ => {
                    cx.problem(&kp, format!("mknod kind {k:?}: expected file, fifo, char or block"));
                    return None;
                }
            };
            Some(Op::Mknod { path: p, kind: mk, mode: mode? })
        }
        _ => unreachable!("step kinds are checked before"),
    };
    ok &= op.is_some();
    if ok {
        op
    } else {
        None
    }
}

pub(super) fn xattr_name(cx: &mut Cx, v: &Value, p: &Path) -> Option<String> {
    let n = cx.text_no_nul(v, p, "an xattr name")?;
    if n.is_empty() {
        cx.problem(p, "an xattr name cannot be empty");
        return None;
    }
    Some(n)
}

/// Words of a flag list: a list of strings, or one string (`wronly`, or `wronly|creat`).
fn words<'p>(cx: &mut Cx, v: &Value, path: &'p Path<'p>) -> Option<Vec<(String, Path<'p>)>> {
    match v {
        Value::String(s) => {
            Some(s.split(['|', ',']).map(|w| (w.trim().to_owned(), *path)).filter(|(w, _)| !w.is_empty()).collect())
        }
        Value::Sequence(items) => {
            let mut out = Vec::new();
            for (i, it) in items.iter().enumerate() {
                let p = idx(path, i);
                out.push((cx.string(it, &p, "a flag")?, p));
            }
            Some(out)
        }
        Value::Null => Some(Vec::new()),
        other => {
            cx.problem(path, format!("flags are a list such as [wronly, creat], not {}", type_name(other)));
            None
        }
    }
}

fn read_open_flags(cx: &mut Cx, v: &Value, path: &Path) -> Option<OpenFlags> {
    let mut f = OpenFlags::default();
    let mut access = None;
    for (w, p) in words(cx, v, path)? {
        match w.as_str() {
            "rdonly" | "wronly" | "rdwr" => {
                if access.is_some() {
                    cx.problem(&p, "give one access mode: rdonly, wronly or rdwr");
                    return None;
                }
                access = Some(match w.as_str() {
                    "rdonly" => Access::ReadOnly,
                    "wronly" => Access::WriteOnly,
                    _ => Access::ReadWrite,
                });
            }
            "creat" => f.creat = true,
            "excl" => f.excl = true,
            "trunc" => f.trunc = true,
            "append" => f.append = true,
            "directory" => f.directory = true,
            "nofollow" => f.nofollow = true,
            other => {
                cx.problem(
                    &p,
                    format!(
                        "unknown open flag `{other}`; expected rdonly, wronly, rdwr, creat, \
                         excl, trunc, append, directory, nofollow"
                    ),
                );
                return None;
            }
        }
    }
    f.access = access.unwrap_or_default();
    Some(f)
}

fn read_rename_flags(cx: &mut Cx, v: &Value, path: &Path) -> Option<RenameFlags> {
    let mut f = RenameFlags::default();
    for (w, p) in words(cx, v, path)? {
        match w.as_str() {
            "noreplace" => f.noreplace = true,
            "exchange" => f.exchange = true,
            "whiteout" => f.whiteout = true,
            other => {
                cx.problem(&p, format!("unknown rename flag `{other}`; expected noreplace, exchange, whiteout"));
                return None;
            }
        }
    }
    Some(f)
}

/// A file type name as scenarios spell it.
pub(crate) fn file_type(cx: &mut Cx, v: &Value, path: &Path) -> Option<FileType> {
    let s = cx.string(v, path, "a file type")?;
    Some(match s.as_str() {
        "dir" => FileType::Dir,
        "file" => FileType::File,
        "symlink" => FileType::Symlink,
        "char" => FileType::Char,
        "block" => FileType::Block,
        "fifo" => FileType::Fifo,
        other => {
            cx.problem(path, format!("unknown file type {other:?}; expected dir, file, symlink, char, block or fifo"));
            return None;
        }
    })
}

fn looks_like_errno(s: &str) -> bool {
    s.len() > 2 && s.starts_with('E') && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A mount refused at an `fsconfig(2)` call: `{call: N, errno: E}`, N from 1 (the first
/// entry of the mount's `fsconfig`).
fn read_call_expect(cx: &mut Cx, m: &Mapping, path: &Path) -> Option<Expect> {
    let fields = cx.fields(m, path, &["call", "errno"], "a refused fsconfig call");
    let (mut call, mut errno) = (None, None);
    let given = fields.len();
    for (k, v) in fields {
        let p = key(path, &k);
        if k == "call" {
            match cx.uint::<usize>(v, &p, "`call` (from 1)") {
                Some(0) => cx.problem(&p, "`call` counts from 1, the first entry of `fsconfig`"),
                Some(n) => call = Some(n - 1),
                None => {}
            }
        } else if let Some(s) = cx.string(v, &p, "an errno") {
            match Errno::from_name(&s) {
                Some(e) => errno = Some(e),
                None => cx.problem(&p, format!("unknown errno {s:?}")),
            }
        }
    }
    match (call, errno) {
        (Some(call), Some(errno)) => Some(Expect::Call { call, errno }),
        _ if given == 2 => None,
        _ => {
            cx.problem(path, "a refused fsconfig call is `{call: N, errno: E}`, both given");
            None
        }
    }
}

fn read_expect(cx: &mut Cx, v: &Value, path: &Path, class: Class, kind: &str) -> Option<Expect> {
    let what = match class {
        Class::Plain => "ok or an errno such as ENOENT",
        Class::Stat => "ok, an errno, or a mapping of stat fields (kind, mode, size, nlink, uid, gid, rdev, ino)",
        Class::Data => "ok, an errno, or the content (a string, !data, !hex, !sparse or !digest)",
        Class::Target => "ok, an errno, or the target (a string, or !data)",
        Class::Readdir => "ok, an errno, a list of names, or a mapping of names to types",
        Class::Names => "ok, an errno, or a list of xattr names",
    };
    let wrong = |cx: &mut Cx, v: &Value| {
        cx.problem(path, format!("`expect` for {kind} must be {what}; found {}", type_name(v)));
    };
    match v {
        Value::String(s) => {
            if *s == "ok" {
                return Some(Expect::Ok);
            }
            if let Some(e) = Errno::from_name(s) {
                return Some(Expect::Err(e));
            }
            if looks_like_errno(s) {
                cx.problem(path, format!("unknown errno {s:?} (write !data {s} for content that reads so)"));
                return None;
            }
            match class {
                Class::Data => Some(Expect::Data(s.as_bytes().to_vec())),
                Class::Target => Some(Expect::Target(s.to_string())),
                _ => {
                    wrong(cx, v);
                    None
                }
            }
        }
        Value::Tagged(t) if (t.tag == "data" || t.tag == "hex") => match class {
            Class::Data => {
                let b = if t.tag == "hex" { cx.hex(&t.value, path)? } else { cx.bytes(&t.value, path, "!data")? };
                Some(Expect::Data(b))
            }
            Class::Target if t.tag == "data" => Some(Expect::Target(cx.string(&t.value, path, "!data")?)),
            _ => {
                wrong(cx, v);
                None
            }
        },
        Value::Tagged(t) if (t.tag == "sparse" || t.tag == "digest") && kind == "read" => {
            let m = cx.mapping(&t.value, path, &format!("!{}", t.tag))?;
            let keys: &[&str] = if t.tag == "sparse" { &["size", "data"] } else { &["size", "hash"] };
            let fields = cx.fields(m, path, keys, format_args!("!{}", t.tag));
            let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
            let Some(size) = get("size") else {
                cx.problem(path, format!("!{} needs a `size`", t.tag));
                return None;
            };
            if t.tag == "digest" {
                let Some(hash) = get("hash") else {
                    cx.problem(path, "!digest needs a `hash`");
                    return None;
                };
                return super::tree::parse_digest(cx, size, hash, path).map(Expect::Digest);
            }
            // A read shows a file over READ_INLINE_MAX bytes by its digest.
            let data = super::tree::parse_sparse(cx, size, get("data"), path)?;
            Some(if data.len() > crate::layer::READ_INLINE_MAX {
                Expect::Digest(data.digest())
            } else {
                Expect::Data(data.to_vec())
            })
        }
        Value::Mapping(m) => match class {
            Class::Stat => read_stat_expect(cx, m, path).map(Expect::Stat),
            Class::Readdir => {
                let mut out = BTreeMap::new();
                let mut ok = true;
                for (name, tv) in cx.fields(m, path, &[], "readdir entries") {
                    match file_type(cx, tv, &key(path, &name)) {
                        Some(t) => {
                            out.insert(name.into_owned(), t);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(Expect::Entries(out))
            }
            _ => {
                wrong(cx, v);
                None
            }
        },
        Value::Sequence(items) => match class {
            Class::Readdir | Class::Names => {
                let mut out = BTreeSet::new();
                for (i, it) in items.iter().enumerate() {
                    let n = match it {
                        Value::Number(n) => n.to_string(),
                        _ => cx.string(it, &idx(path, i), "a name")?,
                    };
                    if !out.insert(n.clone()) {
                        cx.problem(&idx(path, i), format!("{n:?} is listed twice"));
                        return None;
                    }
                }
                Some(Expect::Names(out))
            }
            _ => {
                wrong(cx, v);
                None
            }
        },
        other => {
            wrong(cx, other);
            None
        }
    }
}

fn read_stat_expect(cx: &mut Cx, m: &Mapping, path: &Path) -> Option<StatExpect> {
    let mut s = StatExpect::default();
    let mut ok = true;
    let fields = cx.fields(m, path, &["kind", "mode", "size", "nlink", "uid", "gid", "rdev", "ino"], "stat fields");
    for (k, v) in fields {
        let p = key(path, &k);
        let r = match &*k {
            "kind" => file_type(cx, v, &p).map(|t| s.kind = Some(t)),
            "mode" => cx.mode(v, &p).map(|x| s.mode = Some(x)),
            "size" => cx.uint(v, &p, "size").map(|x| s.size = Some(x)),
            "nlink" => cx.uint(v, &p, "nlink").map(|x| s.nlink = Some(x)),
            "uid" => cx.uint(v, &p, "uid").map(|x| s.uid = Some(x)),
            "gid" => cx.uint(v, &p, "gid").map(|x| s.gid = Some(x)),
            "rdev" => cx.rdev(v, &p).map(|x| s.rdev = Some(x)),
            _ => cx.label(v, &p).map(|x| s.ino = Some(x)),
        };
        ok &= r.is_some();
    }
    ok.then_some(s)
}

fn read_check(cx: &mut Cx, v: &Value, path: &Path, what: &str) -> Option<Check> {
    let m = match v {
        Value::Mapping(m) => m,
        other => {
            cx.problem(path, format!("`{what}` takes `merged:` and/or `upper:` trees, not {}", type_name(other)));
            return None;
        }
    };
    let mut c = Check::default();
    let mut ok = true;
    let allowed: &[&str] = if what == "final" { &["merged", "upper", "index"] } else { &["merged", "upper"] };
    for (k, tv) in cx.fields(m, path, allowed, format_args!("`{what}`")) {
        let p = key(path, &k);
        if k == "index" {
            match read_index(cx, tv, &p) {
                Some(i) => c.index = Some(i),
                None => ok = false,
            }
            continue;
        }
        if k == "merged" {
            match tv.is_null() {
                true => c.merged = Some(None),
                false => match parse_merged(cx, tv, &p) {
                    Some(t) => c.merged = Some(Some(t)),
                    None => ok = false,
                },
            }
        } else {
            match tv.is_null() {
                true => c.upper = Some(None),
                false => match parse_layer(cx, tv, &p) {
                    Some(t) => c.upper = Some(Some(t)),
                    None => ok = false,
                },
            }
        }
    }
    if ok && c.merged.is_none() && c.upper.is_none() && c.index.is_none() {
        cx.problem(path, format!("`{what}` checks nothing: give `merged:` and/or `upper:`"));
        return None;
    }
    ok.then_some(c)
}

/// `final: index:`: a mapping from `LAYER:/path` to `file`, `dir` or `whiteout`, `{}` for an
/// empty index, or `~` to be filled in by `record`.
fn read_index(cx: &mut Cx, v: &Value, path: &Path) -> Option<Option<BTreeMap<String, String>>> {
    let m = match v {
        Value::Null => return Some(None),
        Value::Mapping(m) => m,
        other => {
            cx.problem(
                path,
                format!("`index` maps `LAYER:/path` to `file`, `dir` or `whiteout`, not {}", type_name(other)),
            );
            return None;
        }
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, kv) in cx.fields(m, path, &[], "`index`") {
        let p = key(path, &k);
        match cx.string(kv, &p, "an index entry's kind") {
            Some(kind) if kind == "file" || kind == "dir" || kind == "whiteout" => {
                out.insert(k.into_owned(), kind);
            }
            Some(kind) => {
                cx.problem(&p, format!("an index entry is `file`, `dir` or `whiteout`, not {kind:?}"));
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(Some(out))
}

fn read_edit(cx: &mut Cx, subject: &Value, sp: &Path, path: &Path, fields: &[(Cow<str>, &Value)]) -> Option<Action> {
    let layer = cx.string(subject, sp, "the layer to edit")?;
    if !cx.layers.contains(&layer) {
        let msg = unknown_layer(&layer, &cx.layers);
        cx.problem(sp, msg);
        return None;
    }
    let mut replace = None;
    let mut removes = Vec::new();
    let mut puts = Vec::new();
    let mut links = Vec::new();
    let mut ok = true;
    let mut any = false;
    for (k, v) in fields {
        let p = key(path, k);
        match &**k {
            "replace" => {
                any = true;
                match parse_layer(cx, v, &p) {
                    Some(flat) => replace = Some(flat),
                    None => ok = false,
                }
            }
            "remove" => {
                any = true;
                let items: Vec<(Path, &Value)> = match v {
                    Value::Sequence(s) => s.iter().enumerate().map(|(i, x)| (idx(&p, i), x)).collect(),
                    _ => vec![(p, *v)],
                };
                for (ip, x) in items {
                    match layer_path(cx, x, &ip) {
                        Some(lp) => removes.push(Edit::Remove { path: lp }),
                        None => ok = false,
                    }
                }
            }
            "put" => {
                any = true;
                let Some(m) = cx.mapping(v, &p, "`put`") else {
                    ok = false;
                    continue;
                };
                for (lp_text, nv) in cx.fields(m, &p, &[], "put") {
                    let np = key(&p, &lp_text);
                    let Some(lp) = layer_path(cx, &Value::str(&lp_text), &np) else {
                        // The path problem belongs to the key.
                        if let Some(last) = cx.problems.last_mut() {
                            last.key = true;
                        }
                        ok = false;
                        continue;
                    };
                    let mut link_paths = Vec::new();
                    match parse_node(cx, nv, &np, TreeContext::Layer, &lp, &mut link_paths) {
                        Some(node) if super::tree::check_layer_node(cx, &lp, &node, nv, &np) => {
                            flatten_put(&lp, &node, &mut puts)
                        }
                        _ => ok = false,
                    }
                }
            }
            "link" => {
                any = true;
                let Some(m) = cx.mapping(v, &p, "`link`") else {
                    ok = false;
                    continue;
                };
                for (new, to) in cx.fields(m, &p, &[], "link") {
                    let np = key(&p, &new);
                    let a = layer_path(cx, &Value::str(&new), &np);
                    let b = layer_path(cx, to, &np);
                    match (a, b) {
                        (Some(path), Some(to))
                            if to == path
                                || to.starts_with(&format!("{path}/"))
                                || path.starts_with(&format!("{to}/")) =>
                        {
                            cx.problem(&np, format!("{path} cannot become a link to {to}: one is or holds the other"));
                            ok = false;
                        }
                        (Some(path), Some(to)) => links.push(Edit::Link { path, to }),
                        _ => ok = false,
                    }
                }
            }
            _ => {}
        }
    }
    if ok && !any {
        cx.problem(path, "`edit` changes nothing: give replace, remove, put and/or link");
        return None;
    }
    let mut edits = removes;
    edits.extend(puts);
    edits.extend(links);
    ok.then_some(Action::Edit { layer, replace, edits })
}

/// An absolute path inside a layer, not the root, with plain names.
fn layer_path(cx: &mut Cx, v: &Value, p: &Path) -> Option<String> {
    let s = cx.abs_path(v, p, "a layer path")?;
    let parts: Vec<&str> = s.split('/').skip(1).collect();
    if parts.iter().any(|c| c.is_empty() || *c == "." || *c == "..") {
        cx.problem(p, format!("layer path {s:?} must name a path below the root, with plain names"));
        return None;
    }
    Some(s)
}

/// The edits that put `node` at `lpath`: the node itself, then (for a directory) its
/// entries, parents first; `!link` nodes become link edits.
fn flatten_put(lpath: &str, node: &super::tree::TreeNode, out: &mut Vec<Edit>) {
    match &node.kind {
        TreeKind::Link(to) => out.push(Edit::Link { path: lpath.to_owned(), to: to.clone() }),
        TreeKind::Dir(entries) => {
            out.push(Edit::Put { path: lpath.to_owned(), node: node_to_flat(node) });
            for (name, child) in entries {
                flatten_put(&format!("{lpath}/{name}"), child, out);
            }
        }
        _ => out.push(Edit::Put { path: lpath.to_owned(), node: node_to_flat(node) }),
    }
}

/// Checks the order of mounts, unmounts, operations, edits and checks.
fn check_sequence(cx: &mut Cx, s: &Scenario) {
    super::handle::check_handles(cx, s);
    let steps_path = key(&Path::Root, "steps");
    // Each mount's upper layer alone: no step needs more of it here.
    let mut spec = s.mount.as_ref().map(MountSpec::upper_only);
    let mut mounted = spec.is_some();
    // The handles that may be open: opened (not expected to fail) and not closed since.
    let mut open: BTreeSet<&str> = BTreeSet::new();
    for (i, step) in s.steps.iter().enumerate() {
        let p = idx(&steps_path, i);
        cx.step = Some((i + 1, step.op_name().into()));
        match &step.action {
            Action::Op(Op::Fd(FdOp::Open { fd, .. } | FdOp::OpenByHandle { fd, .. })) => {
                if !mounted {
                    cx.problem(&p, "the overlay is not mounted here; add a `mount` step first");
                }
                if matches!(step.expect, Some(Expect::Err(_))) {
                    open.remove(fd.as_str());
                } else {
                    open.insert(fd);
                }
            }
            Action::Op(Op::Fd(FdOp::Close { fd })) => {
                if !mounted {
                    cx.problem(&p, "the overlay is not mounted here; add a `mount` step first");
                }
                open.remove(fd.as_str());
            }
            Action::Op(_) => {
                if !mounted {
                    cx.problem(&p, "the overlay is not mounted here; add a `mount` step first");
                }
            }
            Action::Mount(change) => {
                if mounted {
                    cx.problem(&p, "the overlay is already mounted; add an `unmount` step first");
                }
                match change.apply_upper(spec.as_ref()) {
                    Ok(m) => spec = Some(m),
                    Err(msg) => cx.problem(&p, msg),
                }
                mounted = !matches!(step.expect, Some(Expect::Err(_) | Expect::Call { .. }));
            }
            Action::Unmount => {
                if !mounted {
                    cx.problem(&p, "the overlay is not mounted here");
                }
                // A refused unmount leaves it mounted: one expected to fail, or one not yet
                // recorded while a handle is open (the kernel refuses it: EBUSY).
                mounted = match step.expect {
                    Some(Expect::Err(_)) => true,
                    Some(_) => false,
                    None => !open.is_empty(),
                };
                if !mounted {
                    open.clear();
                }
            }
            Action::Edit { .. } => {
                if mounted {
                    cx.problem(&p, "layers are edited offline only; add an `unmount` step first");
                }
            }
            Action::Check(c) => {
                if c.merged.is_some() && !mounted {
                    cx.problem(&p, "the merged view needs a mount; the overlay is not mounted here");
                }
                if c.upper.is_some() && spec.as_ref().and_then(|m| m.upper.as_ref()).is_none() {
                    cx.problem(&p, "`upper:` is checked but the mount has no upper layer");
                }
            }
            Action::DropCaches => {}
        }
    }
    cx.step = None;
    if let Some(f) = &s.final_check {
        let fp = key(&Path::Root, "final");
        if f.merged.is_some() && !mounted {
            cx.problem(&key(&fp, "merged"), "`final: merged:` needs the overlay mounted at the end, and it is not");
        }
        if f.upper.is_some() && spec.as_ref().and_then(|m| m.upper.as_ref()).is_none() {
            cx.problem(&key(&fp, "upper"), "`final: upper:` is given but the mount has no upper layer");
        }
        if f.index.is_some() && spec.as_ref().and_then(|m| m.upper.as_ref()).is_none() {
            cx.problem(&key(&fp, "index"), "`final: index:` is given but the mount has no upper layer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// `header_of` (a slice of the text where it can be one) is `header_of_lines` on
        /// any text of comment, blank and key lines, odd whitespace and line ends included.
        #[test]
        fn header_of_is_the_line_by_line_header(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "#", "# a", " ", "\t", "\n", "\r", "\r\n", "a", "name: x", "\u{a0}", "\u{b}", "\u{c}", "é", "  # b",
            ]), 0..14),
        ) {
            let text: String = parts.concat();
            proptest::prop_assert_eq!(header_of(&text), header_of_lines(&text), "{:?}", text);
        }
    }

    /// `apply_upper` gives the upper layer (or the refusal) `apply` gives, mount after
    /// mount, on every spec/ scenario's mounts and on hand-made changes.
    #[test]
    fn apply_upper_is_the_upper_apply_gives() {
        let mut chains: Vec<(Option<MountSpec>, Vec<MountChange>)> = Vec::new();
        for p in crate::scenario::find_files(&["spec".into()]).unwrap().files {
            let Ok(s) = crate::scenario::load(&p) else { continue };
            let changes = s
                .steps
                .iter()
                .filter_map(|st| match &st.action {
                    Action::Mount(c) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            chains.push((s.mount.clone(), changes));
        }
        let some = |l: &[&str]| Some(l.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        let hand = vec![
            MountChange::default(),
            MountChange { upper: Some(None), ..Default::default() },
            MountChange { upper: Some(Some("U".into())), ..Default::default() },
            MountChange { lowers: some(&["L0"]), ..Default::default() },
            MountChange { lowers: some(&["L0"]), upper: Some(Some("U".into())), ..Default::default() },
            MountChange { data: Some(r"lowerdir=a:b,upperdir=u\,v,workdir=w".into()), ..Default::default() },
            MountChange { data: Some("lowerdir=a,upperdir=,upperdir=x,upperdir=".into()), ..Default::default() },
            MountChange { data: Some("upperdir=u:v,lowerdir=::".into()), ..Default::default() },
            MountChange {
                fsconfig: Some(vec![crate::params::FsParam { key: "upperdir".into(), value: Some("u".into()) }]),
                ..Default::default()
            },
        ];
        for a in &hand {
            for b in &hand {
                chains.push((None, vec![a.clone(), b.clone()]));
                chains.push((Some(MountSpec::from_data("lowerdir=x,upperdir=y")), vec![a.clone(), b.clone()]));
            }
        }
        assert!(chains.len() > 300);
        for (first, changes) in chains {
            let (mut full, mut upper) = (first.clone(), first.as_ref().map(MountSpec::upper_only));
            for c in &changes {
                let (f, u) = (c.apply(full.as_ref()), c.apply_upper(upper.as_ref()));
                assert_eq!(f.as_ref().map(|m| &m.upper), u.as_ref().map(|m| &m.upper), "{c:?} after {full:?}");
                if let (Ok(f), Ok(u)) = (f, u) {
                    (full, upper) = (Some(f), Some(u));
                }
            }
        }
    }

    /// The same on every spec/ file.
    #[test]
    fn header_of_is_the_line_by_line_header_on_the_spec_files() {
        for p in crate::scenario::find_files(&["spec".into()]).unwrap().files {
            let text = std::fs::read_to_string(&p).unwrap();
            assert_eq!(header_of(&text), header_of_lines(&text), "{}", p.display());
        }
    }
}
