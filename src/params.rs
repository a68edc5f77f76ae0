//! The mount option string: the `-o` string a user gives to `mount -t overlay`
//! (`lowerdir=L0:L1,upperdir=upper,workdir=work,redirect_dir=on`), parsed and checked as
//! the kernel does it for legacy `mount(2)`.
//!
//! Kernel: `fs/overlayfs/params.c` (`ovl_next_opt`, `ovl_parse_param` and its
//! `ovl_parameter_spec` table, `ovl_parse_param_lowerdir`,
//! `ovl_parse_param_split_lowerdirs`, `ovl_parse_layer`, `ovl_mount_dir_check`,
//! `ovl_unescape`, `ovl_fs_params_verify`), `fs/fs_context.c` (`vfs_parse_monolithic_sep`,
//! `vfs_parse_fs_param`, `vfs_parse_sb_flag`), `fs/fs_parser.c` (`fs_parse`, the value
//! types) and `fs/overlayfs/super.c` (`ovl_fill_super`). Each option is handled when it is
//! read, in the order written, so the first error in the string is the one the kernel
//! gives; the checks of the whole mount follow ([`Params::check_options`],
//! [`Params::check_layers`]). The errno and the kernel's log message (without its
//! `overlayfs: ` or `overlay: ` prefix) are those observed on Linux 6.18
//! (`spec/mount/mount-string-*.yaml`).
//!
//! Layer paths in the string are names: the model resolves each one with a function it is
//! given (a scenario's layer names; the kernel backend makes a directory of symbolic links
//! with those names and mounts from it, so the kernel reads the same string). A name that
//! does not resolve gives ENOENT, as a missing path does.

use crate::errno::Errno;
use crate::mount::{MountError, Named, Options, RedirectDir, Xino, LOWER_COUNT_MAX};
use std::fmt;
use std::str::FromStr;

/// A lower layer named in the string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lower {
    /// The layer's name (the path as the kernel resolves it: unescaped).
    pub name: String,
    /// A data-only lower layer (`lowerdir=L0::D`, `datadir+=D`).
    pub data_only: bool,
}

/// A parsed option string: the layers it names and its options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Params {
    /// The lower layers, top-most first (regular layers, then data-only ones).
    pub lowers: Vec<Lower>,
    /// `upperdir=`, the last one given.
    pub upper: Option<String>,
    /// `workdir=`, the last one given.
    pub workdir: Option<String>,
    /// The overlay's options, canonical ([`Options::canonical`]). `workdir_without_upper`
    /// is set when the string gives a `workdir=` and no `upperdir=`; `read_only` by `ro`
    /// (cleared by a later `rw`).
    pub options: Options,
    /// Options the kernel accepts and the model does not model, as written
    /// (`default_permissions`, `sync`, ...): a mount with any of them is
    /// [`MountError::NotModelled`] once every check the kernel makes has passed.
    pub unmodelled: Vec<String>,
}

/// How a parameter takes its value (kernel: the `fs_param_is_*` types of the
/// `ovl_parameter_spec` table).
#[derive(Clone, Copy)]
enum Kind {
    /// `fsparam_string_empty`: a string, which may be empty.
    StringEmpty,
    /// `fsparam_string`, `fsparam_file_or_string`: a non-empty string.
    String,
    /// `fsparam_flag`: no value.
    Flag,
    /// `fsparam_flag_no`: no value; `noNAME` negates it.
    FlagNo,
    /// `fsparam_enum`: one of these words.
    Enum(&'static [&'static str]),
}

const BOOL: &[&str] = &["on", "off"];

/// The overlay parameters, as `ovl_parameter_spec` in fs/overlayfs/params.c (Linux 6.18)
/// declares them.
const SPEC: &[(&str, Kind)] = &[
    ("lowerdir", Kind::StringEmpty),
    ("lowerdir+", Kind::String),
    ("datadir+", Kind::String),
    ("upperdir", Kind::String),
    ("workdir", Kind::String),
    ("default_permissions", Kind::Flag),
    ("redirect_dir", Kind::Enum(&["off", "follow", "nofollow", "on"])),
    ("index", Kind::Enum(BOOL)),
    ("uuid", Kind::Enum(&["off", "null", "auto", "on"])),
    ("nfs_export", Kind::Enum(BOOL)),
    ("userxattr", Kind::Flag),
    ("xino", Kind::Enum(&["off", "auto", "on"])),
    ("metacopy", Kind::Enum(BOOL)),
    ("verity", Kind::Enum(&["off", "on", "require"])),
    ("volatile", Kind::Flag),
    ("override_creds", Kind::FlagNo),
];

/// The superblock flags every filesystem takes (kernel: fs/fs_context.c,
/// `common_set_sb_flag` and `common_clear_sb_flag`): the name and whether it sets its flag.
const SB_FLAGS: &[(&str, bool)] = &[
    ("dirsync", true),
    ("lazytime", true),
    ("mand", true),
    ("ro", true),
    ("sync", true),
    ("async", false),
    ("nolazytime", false),
    ("nomand", false),
    ("rw", false),
];

/// What a layer path names, for the resolver: the kernel resolves each the same way; the
/// model's backends map the workdir apart from the layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathRole {
    /// A `lowerdir=`, `lowerdir+=` or `datadir+=` path.
    Lower,
    /// An `upperdir=` path.
    Upper,
    /// A `workdir=` path.
    Work,
}

fn refused(errno: Errno, reason: impl Into<String>) -> MountError {
    MountError::Refused { errno, reason: reason.into() }
}

fn einval(reason: impl Into<String>) -> MountError {
    refused(Errno::EINVAL, reason)
}

/// Splits the string into options at each unescaped `,`; a `\` escapes the byte after it
/// (kernel: `ovl_next_opt`). The string ends at a NUL byte, as the kernel's C string does.
pub fn split_options(data: &str) -> Vec<&str> {
    let data = data.split('\0').next().unwrap_or("");
    let b = data.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b',' => {
                out.push(&data[start..i]);
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    out.push(&data[start..]);
    out
}

/// Removes the escapes: each `\` stands for the byte after it; a `\` at the end stands for
/// nothing (kernel: `ovl_unescape`).
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits a `lowerdir=` value into its layers, still escaped, each marked data-only when it
/// follows `::` (kernel: `ovl_parse_param_split_lowerdirs`). EINVAL for three colons in a
/// row or colons at the end.
fn split_lowerdirs<'s>(s: &'s str) -> Result<Vec<(&'s str, bool)>, MountError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    // An empty segment is the middle of a `::`: the layer after it is a data-only layer.
    let mut data = false;
    let mut take = |seg: &'s str, first: bool| {
        if seg.is_empty() && !first {
            data = true;
        } else {
            out.push((seg, data));
            data = false;
        }
    };
    // Each segment is the text between separating colons, escapes kept: it starts and ends
    // at ASCII bytes (or the ends of `s`), so it is cut at character boundaries.
    let mut seg_start = 0;
    let mut colons = 0;
    let mut i = 0;
    loop {
        let Some(&c) = b.get(i) else {
            if colons > 0 {
                return Err(einval("unescaped trailing colons in lowerdir mount option."));
            }
            break;
        };
        if c == b'\\' {
            i += 1;
            match b.get(i) {
                Some(_) => {}
                None if colons > 0 => return Err(einval("unescaped trailing colons in lowerdir mount option.")),
                None => break,
            }
            colons = 0;
            i += 1;
            continue;
        }
        if c == b':' {
            let next_colon = b.get(i + 1) == Some(&b':');
            colons += 1;
            if colons == 2 && next_colon {
                return Err(einval(
                    "only single ':' or double '::' sequences of unescaped colons in lowerdir mount option allowed.",
                ));
            }
            take(&s[seg_start..i], seg_start == 0);
            seg_start = i + 1;
            i += 1;
            continue;
        }
        colons = 0;
        i += 1;
    }
    take(&s[seg_start..], seg_start == 0);
    Ok(out)
}

/// The parse state (kernel: `struct ovl_fs_context` and `struct ovl_config`).
struct Parser<'r> {
    p: Params,
    named: Named,
    /// A non-empty `lowerdir=` was given (kernel: `ctx->lowerdir_all`).
    lowerdir_all: bool,
    resolve: &'r mut dyn FnMut(PathRole, &str) -> bool,
    default_permissions: bool,
    verity: &'static str,
    override_creds: bool,
    sb_flags: Vec<&'static str>,
    /// The VFS's `source` is set: by legacy `mount(2)` before the string is read; with the
    /// new mount API by a first `source` parameter (kernel: `vfs_parse_fs_param_source`).
    source_set: bool,
}

impl<'r> Parser<'r> {
    /// A parser before any option: every option at its default, `source` set or not (see
    /// [`Parser::source_set`]).
    fn new(resolve: &'r mut dyn FnMut(PathRole, &str) -> bool, source_set: bool) -> Self {
        Parser {
            p: Params::default(),
            named: Named::default(),
            lowerdir_all: false,
            resolve,
            default_permissions: false,
            verity: "off",
            override_creds: true,
            sb_flags: Vec::new(),
            source_set,
        }
    }

    /// Resolves a path (kernel: `ovl_mount_dir_noesc`): EINVAL for an empty one, ENOENT for
    /// one that names nothing.
    fn resolve(&mut self, role: PathRole, name: &str) -> Result<(), MountError> {
        if name.is_empty() {
            return Err(einval("empty lowerdir"));
        }
        if !(self.resolve)(role, name) {
            return Err(refused(Errno::ENOENT, format!("failed to resolve '{name}': -2")));
        }
        Ok(())
    }

    fn data_count(&self) -> usize {
        self.p.lowers.iter().filter(|l| l.data_only).count()
    }

    /// One option, `key` or `key=value` (kernel: `vfs_parse_fs_param`: the superblock flags
    /// first, then `ovl_parse_param`, then the VFS's own `source`).
    fn param(&mut self, key: &str, value: Option<&str>) -> Result<(), MountError> {
        if let Some(&(name, set)) = SB_FLAGS.iter().find(|(n, _)| *n == key) {
            // vfs_parse_sb_flag looks at the key alone: `ro=x` is `ro`.
            if name == "ro" || name == "rw" {
                self.p.options.read_only = set;
            } else {
                let flag = match name {
                    "async" => "sync",
                    "nolazytime" => "lazytime",
                    "nomand" => "mand",
                    other => other,
                };
                self.sb_flags.retain(|f| *f != flag);
                if set {
                    self.sb_flags.push(flag);
                }
            }
            return Ok(());
        }
        let (name, kind, negated) = match lookup(key, value.is_none()) {
            Some(found) => found,
            None if key == "source" => {
                // Legacy mount(2) has already set the source ("overlay"); fsconfig takes one.
                if value.is_none() {
                    return Err(einval("Non-string source"));
                }
                if self.source_set {
                    return Err(einval("Multiple sources"));
                }
                self.source_set = true;
                return Ok(());
            }
            None => return Err(einval(format!("Unknown parameter '{key}'"))),
        };
        let word = match (kind, value) {
            (Kind::Flag | Kind::FlagNo, Some(_)) => return Err(einval(format!("Unexpected value for '{key}'"))),
            (Kind::Flag | Kind::FlagNo, None) => "",
            (Kind::StringEmpty, Some(v)) => v,
            (Kind::String, Some(v)) if !v.is_empty() => v,
            (Kind::Enum(words), Some(v)) => match words.iter().find(|w| **w == v) {
                Some(w) => w,
                None => return Err(einval(format!("Bad value for '{key}'"))),
            },
            _ => return Err(einval(format!("Bad value for '{key}'"))),
        };
        match name {
            "lowerdir" => self.lowerdir(word),
            "lowerdir+" | "datadir+" => self.lower_add(word, name == "datadir+"),
            "upperdir" | "workdir" => {
                let path = unescape(word);
                let role = if name == "upperdir" { PathRole::Upper } else { PathRole::Work };
                self.resolve(role, &path)?;
                if role == PathRole::Upper {
                    self.p.upper = Some(path);
                } else {
                    self.p.workdir = Some(path);
                }
                Ok(())
            }
            "default_permissions" => {
                self.default_permissions = true;
                Ok(())
            }
            "redirect_dir" => {
                self.p.options.redirect_dir = match word {
                    "on" => RedirectDir::On,
                    "follow" => RedirectDir::Follow,
                    "nofollow" => RedirectDir::Nofollow,
                    _ => RedirectDir::Off,
                };
                self.named.redirect_dir = true;
                Ok(())
            }
            "index" => {
                self.p.options.index = word == "on";
                self.named.index = true;
                Ok(())
            }
            "nfs_export" => {
                self.p.options.nfs_export = word == "on";
                self.named.nfs_export = true;
                Ok(())
            }
            "metacopy" => {
                self.p.options.metacopy = word == "on";
                self.named.metacopy = true;
                Ok(())
            }
            "xino" => {
                self.p.options.xino = match word {
                    "on" => Xino::On,
                    "auto" => Xino::Auto,
                    _ => Xino::Off,
                };
                self.named.xino = true;
                Ok(())
            }
            "uuid" => {
                self.p.options.uuid = match static_word(kind, word) {
                    "off" => crate::mount::Uuid::Off,
                    "null" => crate::mount::Uuid::Null,
                    "on" => crate::mount::Uuid::On,
                    _ => crate::mount::Uuid::Auto,
                };
                Ok(())
            }
            "verity" => {
                self.verity = static_word(kind, word);
                Ok(())
            }
            "userxattr" => {
                self.p.options.userxattr = true;
                Ok(())
            }
            "volatile" => {
                self.p.options.volatile = true;
                Ok(())
            }
            _ => {
                self.override_creds = !negated;
                Ok(())
            }
        }
    }

    /// `lowerdir=`: replaces every lower layer; an empty value drops them all (kernel:
    /// `ovl_parse_param_lowerdir`). Errors, in order: EINVAL for a value that starts with
    /// `:` ("cannot append lower layer"), for three colons or colons at the end, and for
    /// more than 500 layers; then each layer in turn: EINVAL if empty, ENOENT if it names
    /// nothing, and EINVAL for a regular layer after a data-only one.
    fn lowerdir(&mut self, value: &str) -> Result<(), MountError> {
        self.p.lowers.clear();
        self.lowerdir_all = false;
        if value.is_empty() {
            return Ok(());
        }
        if value.starts_with(':') {
            return Err(einval("cannot append lower layer"));
        }
        self.lowerdir_all = true;
        let layers = split_lowerdirs(value)?;
        if layers.len() > LOWER_COUNT_MAX {
            return Err(einval(format!("too many lower directories, limit is {LOWER_COUNT_MAX}")));
        }
        let mut data = 0;
        for (k, (raw, data_only)) in layers.iter().enumerate() {
            if k > 0 && !data_only && data > 0 {
                return Err(einval("regular lower layers cannot follow data lower layers"));
            }
            let name = unescape(raw);
            self.resolve(PathRole::Lower, &name)?;
            data += usize::from(*data_only);
            self.p.lowers.push(Lower { name, data_only: *data_only });
        }
        Ok(())
    }

    /// `lowerdir+=` and `datadir+=`: appends one layer, its path taken as it is, without
    /// escapes (kernel: `ovl_parse_layer`, `ovl_mount_dir_check`). Errors, in order: ENOENT
    /// for a path that names nothing; EINVAL after a `lowerdir=` ("lowerdir+ and datadir+
    /// cannot follow lowerdir"), for a regular layer after a data-only one ("regular lower
    /// layers cannot follow data layers"), and beyond 500 layers.
    fn lower_add(&mut self, value: &str, data_only: bool) -> Result<(), MountError> {
        self.resolve(PathRole::Lower, value)?;
        if self.lowerdir_all {
            return Err(einval("lowerdir+ and datadir+ cannot follow lowerdir"));
        }
        if !data_only && self.data_count() > 0 {
            return Err(einval("regular lower layers cannot follow data layers"));
        }
        if self.p.lowers.len() == LOWER_COUNT_MAX {
            return Err(einval(format!("too many lower directories, limit is {LOWER_COUNT_MAX}")));
        }
        self.p.lowers.push(Lower { name: value.to_owned(), data_only });
        Ok(())
    }

    fn finish(mut self) -> Params {
        let mut o = self.p.options;
        o.named = self.named;
        o.workdir_without_upper = self.p.workdir.is_some() && self.p.upper.is_none();
        self.p.options = o.canonical();
        let u = &mut self.p.unmodelled;
        if self.default_permissions {
            u.push("default_permissions".into());
        }
        if self.verity != "off" {
            u.push(format!("verity={}", self.verity));
        }
        if !self.override_creds {
            u.push("nooverride_creds".into());
        }
        u.extend(self.sb_flags.iter().map(|f| (*f).to_owned()));
        self.p
    }
}

/// The enum word as the table spells it (a `'static` copy of a matched word).
fn static_word(kind: Kind, word: &str) -> &'static str {
    match kind {
        Kind::Enum(words) => words.iter().find(|w| **w == word).copied().unwrap_or(""),
        _ => "",
    }
}

/// Finds a parameter by its key (kernel: `fs_lookup_key`): an exact name, else for a flag
/// given without a value `noNAME` of a negatable flag. Gives the name, its kind and
/// whether it was negated.
fn lookup(key: &str, is_flag: bool) -> Option<(&'static str, Kind, bool)> {
    if let Some(&(n, k)) = SPEC.iter().find(|(n, _)| *n == key) {
        return Some((n, k, false));
    }
    let rest = key.strip_prefix("no").filter(|_| is_flag)?;
    SPEC.iter().find(|(n, k)| *n == rest && matches!(k, Kind::FlagNo)).map(|&(n, k)| (n, k, true))
}

impl Params {
    /// Parses an option string as legacy `mount(2)` does, resolving each layer path with
    /// `resolve` as it is read (kernel: `vfs_parse_monolithic_sep` with `ovl_next_opt`, then
    /// `vfs_parse_fs_param` for each option in order). Empty options and options that start
    /// with `=` are skipped; the first error is the kernel's.
    pub fn parse_with(data: &str, mut resolve: impl FnMut(PathRole, &str) -> bool) -> Result<Params, MountError> {
        let mut parser = Parser::new(&mut resolve, true);
        for opt in split_options(data) {
            let (key, value) = match opt.find('=') {
                Some(0) => continue,
                Some(i) => (&opt[..i], Some(&opt[i + 1..])),
                None if opt.is_empty() => continue,
                None => (opt, None),
            };
            parser.param(key, value)?;
        }
        Ok(parser.finish())
    }

    /// [`Params::parse_with`], every path resolving.
    pub fn parse(data: &str) -> Result<Params, MountError> {
        Params::parse_with(data, |_, _| true)
    }

    /// The layer names a string gives, whether or not it parses: the lower layers (regular
    /// and data-only, as the last `lowerdir=` and the `lowerdir+=`/`datadir+=` after it
    /// list them), the upper layer and the workdirs, read as far as the string can be read.
    /// For a scenario, which names its layers before any mount is tried.
    pub fn names(data: &str) -> (Vec<String>, Option<String>, Vec<String>) {
        layer_names(split_options(data).into_iter().filter_map(|opt| opt.split_once('=')), true)
    }

    /// The upper layer's name in [`Params::names`], without reading the lower layers.
    pub fn upper_name(data: &str) -> Option<String> {
        layer_names(split_options(data).into_iter().filter_map(|opt| opt.split_once('=')), false).1
    }

    /// The options' checks, after the string is read and before the layers are set up
    /// (kernel: `ovl_fill_super`): `ovl_fs_params_verify` ([`Options::verify`]), then
    /// EINVAL for no lower layer ("missing 'lowerdir'") and for an upper layer without a
    /// workdir ("missing 'workdir'"). Observed order on Linux 6.18: a conflict is reported
    /// before a missing lowerdir, and a missing lowerdir before a missing workdir.
    pub fn check_options(&self) -> Result<Options, MountError> {
        let options = self.options.verify(self.upper.is_some())?;
        if self.lowers.is_empty() {
            return Err(einval("missing 'lowerdir'"));
        }
        if self.upper.is_some() && self.workdir.is_none() {
            return Err(einval("missing 'workdir'"));
        }
        Ok(options)
    }

    /// The layers' checks, after the workdir is set up (kernel: `ovl_get_lowerstack`,
    /// `ovl_check_layer`), then what the model does not model. In order: EINVAL for one
    /// lower layer and no upper ("at least 2 lowerdir are needed while upperdir
    /// nonexistent"; data-only layers count), EINVAL for data-only layers alone ("at least
    /// one non-data lowerdir is required"), ELOOP for a layer named twice ("conflicting
    /// lowerdir path"); then [`MountError::NotModelled`] for a workdir that is a layer
    /// (`is_layer`) or an option the model does not model. Data-only layers are modelled
    /// ([`crate::data_only`]). The regular
    /// layers and the upper are then [`crate::overlay::Overlay::mount`]'s.
    pub fn check_layers(&self, is_layer: impl Fn(&str) -> bool) -> Result<(), MountError> {
        if self.upper.is_none() && self.lowers.len() < 2 {
            return Err(einval("at least 2 lowerdir are needed while upperdir nonexistent"));
        }
        if self.lowers.iter().all(|l| l.data_only) {
            return Err(einval("at least one non-data lowerdir is required"));
        }
        let mut names: Vec<&str> = self.lowers.iter().map(|l| l.name.as_str()).collect();
        names.extend(self.upper.as_deref());
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(refused(Errno::ELOOP, "conflicting lowerdir path"));
        }
        if let Some(w) = self.workdir.as_deref().filter(|w| self.upper.is_some() && is_layer(w)) {
            return Err(MountError::NotModelled(format!("a layer ({w:?}) as the workdir")));
        }
        if let Some(u) = self.unmodelled.first() {
            return Err(MountError::NotModelled(u.clone()));
        }
        Ok(())
    }

    /// The regular lower layers' names, top-most first.
    pub fn regular_lowers(&self) -> Vec<String> {
        self.lowers.iter().filter(|l| !l.data_only).map(|l| l.name.clone()).collect()
    }

    /// The data-only lower layers' names, top-most first ([`crate::data_only`]).
    pub fn data_lowers(&self) -> Vec<String> {
        self.lowers.iter().filter(|l| l.data_only).map(|l| l.name.clone()).collect()
    }

    /// The option string for these parameters: `lowerdir=` (escaped: `\` before each `\`,
    /// `:` and `,`; `::` before the data-only layers), `upperdir=` and `workdir=` (`\`
    /// before each `\` and `,`), the options ([`Options::to_mount_string`]), then `ro`, and
    /// what the model does not model as it was written. [`Params::parse`] reads it back as
    /// these parameters when they are canonical: names not empty, data-only layers after at
    /// least one regular layer, `options.workdir_without_upper` exactly when there is a
    /// workdir and no upper.
    pub fn to_mount_string(&self) -> String {
        let mut parts = Vec::new();
        if !self.lowers.is_empty() {
            let mut s = String::from("lowerdir=");
            for (k, l) in self.lowers.iter().enumerate() {
                if k > 0 {
                    s.push_str(if l.data_only { "::" } else { ":" });
                }
                s.push_str(&escape(&l.name, &['\\', ':', ',']));
            }
            parts.push(s);
        }
        if let Some(u) = &self.upper {
            parts.push(format!("upperdir={}", escape(u, &['\\', ','])));
        }
        if let Some(w) = &self.workdir {
            parts.push(format!("workdir={}", escape(w, &['\\', ','])));
        }
        let o = self.options.to_mount_string();
        if !o.is_empty() {
            parts.push(o);
        }
        if self.options.read_only {
            parts.push("ro".into());
        }
        parts.extend(self.unmodelled.iter().cloned());
        parts.join(",")
    }
}

fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_mount_string())
    }
}

impl FromStr for Params {
    type Err = MountError;

    /// [`Params::parse`].
    fn from_str(s: &str) -> Result<Params, MountError> {
        Params::parse(s)
    }
}

impl FromStr for Options {
    type Err = MountError;

    /// The options of a `mount -t overlay -o` string: the whole string is read as
    /// [`Params::parse`] reads it (layer paths included, each taken to exist) and its
    /// options kept. An option the model does not model is [`MountError::NotModelled`].
    fn from_str(s: &str) -> Result<Options, MountError> {
        let p = Params::parse(s)?;
        match p.unmodelled.first() {
            Some(u) => Err(MountError::NotModelled(u.clone())),
            None => Ok(p.options),
        }
    }
}

/// One `fsconfig(2)` call of the new mount API: `FSCONFIG_SET_STRING` of `key` to `value`,
/// or `FSCONFIG_SET_FLAG` of `key` when there is no value.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FsParam {
    /// The parameter's name (`lowerdir+`, `redirect_dir`, `ro`, ...).
    pub key: String,
    /// The value of `FSCONFIG_SET_STRING`; `None` for `FSCONFIG_SET_FLAG`.
    pub value: Option<String>,
}

/// The longest key or string value `fsconfig(2)` takes, in bytes: it copies each with
/// `strndup_user(.., 256)`, the NUL included (kernel: fs/fsopen.c, `SYSCALL_DEFINE5(fsconfig)`).
pub const FSCONFIG_STRING_MAX: usize = 255;

impl Params {
    /// Reads the `fsconfig(2)` calls of the new mount API in order, as the kernel does
    /// each one, resolving each layer path with `resolve` as it is read; on the first call
    /// refused, gives its index (0 the first) and the refusal. Kernel: fs/fsopen.c
    /// (`fsconfig`: EINVAL for a key or value over [`FSCONFIG_STRING_MAX`] bytes), then
    /// fs/fs_context.c `vfs_parse_fs_param` and fs/overlayfs/params.c `ovl_parse_param`
    /// for the one parameter, as [`Params::parse_with`] reads each option, with two
    /// differences: nothing is split (a `,` in a value is part of it; `lowerdir=` still
    /// separates its layers at `:` and takes `\` escapes, `ovl_parse_param_lowerdir`), and
    /// no `source` is set before (`ovl_parse_monolithic` is not called), so a first
    /// `source` string is taken. The checks of `FSCONFIG_CMD_CREATE` are
    /// [`Params::check_options`] and [`Params::check_layers`], as for `mount(2)`.
    pub fn parse_fsconfig(
        calls: &[FsParam],
        mut resolve: impl FnMut(PathRole, &str) -> bool,
    ) -> Result<Params, (usize, MountError)> {
        let mut parser = Parser::new(&mut resolve, false);
        for (k, call) in calls.iter().enumerate() {
            let too_long = |s: &str| s.len() > FSCONFIG_STRING_MAX;
            if too_long(&call.key) || call.value.as_deref().is_some_and(too_long) {
                return Err((k, einval("fsconfig: a key or value longer than 255 bytes")));
            }
            parser.param(&call.key, call.value.as_deref()).map_err(|e| (k, e))?;
        }
        Ok(parser.finish())
    }

    /// The layer names the `fsconfig(2)` calls give, whether or not they are accepted, as
    /// [`Params::names`] reads an option string (a `lowerdir=` value split at its `:`).
    pub fn fsconfig_names(calls: &[FsParam]) -> (Vec<String>, Option<String>, Vec<String>) {
        layer_names(calls.iter().filter_map(|c| Some((c.key.as_str(), c.value.as_deref()?))), true)
    }

    /// The upper layer's name in [`Params::fsconfig_names`], without reading the lower
    /// layers.
    pub fn fsconfig_upper_name(calls: &[FsParam]) -> Option<String> {
        layer_names(calls.iter().filter_map(|c| Some((c.key.as_str(), c.value.as_deref()?))), false).1
    }
}

/// The lower layers, the upper layer and the workdirs that `key=value` options name, in
/// the order the kernel takes them (the last `lowerdir=`, then the `lowerdir+=` and
/// `datadir+=` after it); for [`Params::names`] and [`Params::fsconfig_names`]. Without
/// `lowers_too`, the lower layers are not read (none are given).
fn layer_names<'a>(
    options: impl Iterator<Item = (&'a str, &'a str)>,
    lowers_too: bool,
) -> (Vec<String>, Option<String>, Vec<String>) {
    let (mut lowers, mut upper, mut work) = (Vec::new(), None, Vec::new());
    for (key, value) in options {
        match key {
            "lowerdir" | "lowerdir+" | "datadir+" if !lowers_too => {}
            "lowerdir" => {
                lowers = split_lowerdirs(value)
                    .map(|l| l.into_iter().map(|(raw, _)| unescape(raw)).filter(|n| !n.is_empty()).collect())
                    .unwrap_or_default();
            }
            "lowerdir+" | "datadir+" if !value.is_empty() => lowers.push(value.to_owned()),
            "upperdir" if !value.is_empty() => upper = Some(unescape(value)),
            "workdir" if !value.is_empty() => work.push(unescape(value)),
            _ => {}
        }
    }
    (lowers, upper, work)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(data: &str) -> Option<Errno> {
        Params::parse_with(data, |_, n| n != "nosuch").err().and_then(|e| e.errno())
    }

    #[test]
    fn options_split_at_unescaped_commas() {
        assert_eq!(split_options(r"a,b\,c,,d"), vec!["a", r"b\,c", "", "d"]);
        assert_eq!(split_options(r"a\"), vec![r"a\"]);
        assert_eq!(unescape(r"a\:b\\c\"), r"a:b\c");
    }

    #[test]
    fn lowerdir_escapes_and_data_layers() {
        let p = Params::parse(r"lowerdir=a\:b:c\,d::e,upperdir=u,workdir=w").unwrap();
        let names: Vec<_> = p.lowers.iter().map(|l| (l.name.as_str(), l.data_only)).collect();
        assert_eq!(names, vec![("a:b", false), ("c,d", false), ("e", true)]);
        assert_eq!(p.upper.as_deref(), Some("u"));
    }

    #[test]
    fn errors_follow_the_kernel_order() {
        assert_eq!(errno("lowerdir=nosuch,foo"), Some(Errno::ENOENT));
        assert_eq!(errno("foo,lowerdir=nosuch"), Some(Errno::EINVAL));
        assert_eq!(errno("lowerdir=a,lowerdir+=nosuch"), Some(Errno::ENOENT));
        assert_eq!(errno("lowerdir=a,lowerdir+=b"), Some(Errno::EINVAL));
        assert_eq!(errno("lowerdir=a::b:c"), Some(Errno::EINVAL));
        assert_eq!(errno("lowerdir=a::b:nosuch"), Some(Errno::EINVAL));
        assert_eq!(errno("lowerdir=a::nosuch:c"), Some(Errno::ENOENT));
        assert_eq!(errno("lowerdir=a:::b"), Some(Errno::EINVAL));
        assert_eq!(errno(r"lowerdir=a:\"), Some(Errno::EINVAL));
        assert_eq!(errno(r"lowerdir=\"), Some(Errno::EINVAL));
        assert_eq!(errno("index"), Some(Errno::EINVAL));
        assert_eq!(errno("userxattr=on"), Some(Errno::EINVAL));
        assert_eq!(errno("nooverride_creds=x"), Some(Errno::EINVAL));
        assert_eq!(errno("lowerdir=a:b,nooverride_creds,ro=x,=x,,"), None);
    }

    /// The model's reasons are the kernel's log lines, as Linux 6.18 printed them (dmesg,
    /// after each of these strings was given to mount(2) with layers L0, L1 and U).
    #[test]
    fn reasons_are_the_kernels_messages() {
        let reason = |data: &str| match Params::parse_with(data, |_, n| n != "nosuch").and_then(|p| {
            p.check_options()?;
            p.check_layers(|_| false)
        }) {
            Err(MountError::Refused { reason, .. }) => reason,
            other => panic!("{data}: {other:?}"),
        };
        for (data, logged) in [
            ("upperdir=U,metacopy=on,redirect_dir=off", "conflicting options: metacopy=on,redirect_dir=follow"),
            ("lowerdir=L0,upperdir=U", "missing 'workdir'"),
            ("upperdir=U,workdir=W", "missing 'lowerdir'"),
            ("foo,lowerdir=nosuch", "Unknown parameter 'foo'"),
            ("lowerdir=nosuch,foo", "failed to resolve 'nosuch': -2"),
            ("lowerdir=L0:L1,lowerdir+=L2", "lowerdir+ and datadir+ cannot follow lowerdir"),
            ("lowerdir=L0:L1,upperdir=", "Bad value for 'upperdir'"),
            ("lowerdir=L0:L1,userxattr=on", "Unexpected value for 'userxattr'"),
            ("lowerdir=L0:L1,source=x", "Multiple sources"),
            ("lowerdir=L0:L1,source", "Non-string source"),
            ("lowerdir=:L0", "cannot append lower layer"),
            (
                "lowerdir=L0:::L1",
                "only single ':' or double '::' sequences of unescaped colons in lowerdir mount option allowed.",
            ),
            ("lowerdir=L0:", "unescaped trailing colons in lowerdir mount option."),
            ("lowerdir=L0", "at least 2 lowerdir are needed while upperdir nonexistent"),
            ("lowerdir=L0::L1:L2", "regular lower layers cannot follow data lower layers"),
            ("datadir+=L0,lowerdir+=L1", "regular lower layers cannot follow data layers"),
            ("datadir+=L0,datadir+=L1", "at least one non-data lowerdir is required"),
            ("lowerdir=\\", "empty lowerdir"),
            ("lowerdir=L0,upperdir=U,workdir=W,userxattr,metacopy=on", "conflicting options: userxattr,metacopy=on"),
            ("lowerdir=L0:L0,upperdir=U,workdir=W", "conflicting lowerdir path"),
        ] {
            assert_eq!(reason(data), logged, "{data}");
        }
        let many = format!("lowerdir={}", vec!["L0"; 501].join(":"));
        assert_eq!(reason(&many), "too many lower directories, limit is 500");
    }

    fn call(key: &str, value: Option<&str>) -> FsParam {
        FsParam { key: key.to_owned(), value: value.map(str::to_owned) }
    }

    /// The call refused and its errno, as Linux 6.18 refused them
    /// (`spec/mount/mount-fsconfig-*.yaml`, recorded with fsconfig(2)).
    fn refused_at(calls: &[FsParam]) -> Option<(usize, Option<Errno>)> {
        Params::parse_fsconfig(calls, |_, n| n != "nosuch").err().map(|(k, e)| (k, e.errno()))
    }

    #[test]
    fn fsconfig_refuses_at_the_call_that_is_wrong() {
        let l0 = call("lowerdir+", Some("L0"));
        assert_eq!(refused_at(&[l0.clone(), call("foo", Some("bar"))]), Some((1, Some(Errno::EINVAL))));
        assert_eq!(refused_at(&[l0.clone(), call("redirect_dir", Some("bogus"))]), Some((1, Some(Errno::EINVAL))));
        assert_eq!(refused_at(&[l0.clone(), call("upperdir", Some("nosuch"))]), Some((1, Some(Errno::ENOENT))));
        assert_eq!(refused_at(&[call("lowerdir", Some("L0")), l0.clone()]), Some((1, Some(Errno::EINVAL))));
        assert_eq!(refused_at(&[l0.clone(), call("source", None)]), Some((1, Some(Errno::EINVAL))));
        let x = call("source", Some("x"));
        assert_eq!(refused_at(&[x.clone(), l0.clone(), x.clone()]), Some((2, Some(Errno::EINVAL))));
        assert_eq!(refused_at(&[x, l0.clone(), call("ro", Some("x"))]), None);
        let long = "y".repeat(FSCONFIG_STRING_MAX + 1);
        assert_eq!(refused_at(&[l0.clone(), call("upperdir", Some(&long))]), Some((1, Some(Errno::EINVAL))));
        let at_most = "y".repeat(FSCONFIG_STRING_MAX);
        assert_eq!(refused_at(&[l0.clone(), call("upperdir", Some(&at_most))]), None);
        let many = vec![l0; LOWER_COUNT_MAX + 1];
        assert_eq!(refused_at(&many), Some((LOWER_COUNT_MAX, Some(Errno::EINVAL))));
    }

    #[test]
    fn fsconfig_values_are_not_split_at_commas() {
        let p = Params::parse_fsconfig(
            &[
                call("lowerdir", Some(r"a,b:c\:d")),
                call("lowerdir", Some("")),
                call("lowerdir+", Some("a,b")),
                call("lowerdir+", Some(r"c\:d")),
                call("upperdir", Some("u,p")),
                call("workdir", Some("w")),
                call("ro", None),
            ],
            |_, _| true,
        )
        .unwrap();
        assert_eq!(p.regular_lowers(), vec!["a,b".to_owned(), r"c\:d".to_owned()]);
        assert_eq!(p.upper.as_deref(), Some("u,p"));
        assert!(p.options.read_only);
        let p = Params::parse_fsconfig(&[call("lowerdir", Some(r"a,b:c\:d"))], |_, _| true).unwrap();
        assert_eq!(p.regular_lowers(), vec!["a,b".to_owned(), "c:d".to_owned()]);
        assert_eq!(Params::fsconfig_names(&[call("lowerdir", Some(r"a,b:c\:d"))]).0, ["a,b", "c:d"]);
    }

    #[test]
    fn last_value_wins_and_lowerdir_replaces() {
        let p = Params::parse("lowerdir=a:b,lowerdir=c,index=on,index=off,ro,rw,uuid=on,uuid=auto").unwrap();
        assert_eq!(p.regular_lowers(), vec!["c".to_owned()]);
        assert!(!p.options.index && p.options.named.index && !p.options.read_only);
        assert!(p.unmodelled.is_empty());
        assert_eq!(p.options.uuid, crate::mount::Uuid::Auto);
        let off = Params::parse("lowerdir=a:b,uuid=on,uuid=off").unwrap();
        assert_eq!(off.options.uuid, crate::mount::Uuid::Off);
        assert_eq!(off.options.to_mount_string(), "uuid=off");
    }

    /// `split_lowerdirs` as it was written first (one byte at a time into each segment), to
    /// compare the slicing one with.
    fn split_lowerdirs_bytewise(s: &str) -> Result<Vec<(String, bool)>, MountError> {
        let b = s.as_bytes();
        let mut segs: Vec<Vec<u8>> = vec![Vec::new()];
        let mut colons = 0;
        let mut i = 0;
        loop {
            let Some(&c) = b.get(i) else {
                if colons > 0 {
                    return Err(einval("unescaped trailing colons in lowerdir mount option."));
                }
                break;
            };
            if c == b'\\' {
                segs.last_mut().unwrap().push(c);
                i += 1;
                match b.get(i) {
                    Some(&n) => segs.last_mut().unwrap().push(n),
                    None if colons > 0 => return Err(einval("unescaped trailing colons in lowerdir mount option.")),
                    None => break,
                }
                colons = 0;
                i += 1;
                continue;
            }
            if c == b':' {
                let next_colon = b.get(i + 1) == Some(&b':');
                colons += 1;
                if colons == 2 && next_colon {
                    return Err(einval(
                        "only single ':' or double '::' sequences of unescaped colons in lowerdir mount option allowed.",
                    ));
                }
                segs.push(Vec::new());
                i += 1;
                continue;
            }
            segs.last_mut().unwrap().push(c);
            colons = 0;
            i += 1;
        }
        let mut out = Vec::new();
        let mut data = false;
        for (k, seg) in segs.into_iter().enumerate() {
            if seg.is_empty() && k > 0 {
                data = true;
                continue;
            }
            out.push((String::from_utf8(seg).unwrap(), data));
            data = false;
        }
        Ok(out)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The slicing `split_lowerdirs` and `unescape` give what the byte-by-byte ones give.
        #[test]
        fn split_lowerdirs_is_the_bytewise_split(
            chars in proptest::collection::vec(proptest::sample::select(vec!['a', ':', '\\', 'é', ',', '/']), 0..16),
        ) {
            let s: String = chars.into_iter().collect();
            proptest::prop_assert_eq!(
                format!("{:?}", split_lowerdirs(&s)),
                format!("{:?}", split_lowerdirs_bytewise(&s))
            );
            let bytewise: String = {
                let mut out = String::new();
                let mut cs = s.chars();
                while let Some(c) = cs.next() {
                    if c == '\\' {
                        out.extend(cs.next());
                    } else {
                        out.push(c);
                    }
                }
                out
            };
            proptest::prop_assert_eq!(unescape(&s), bytewise);
        }

        /// `upper_name` is the upper layer `names` gives, and `fsconfig_upper_name` the one
        /// `fsconfig_names` gives.
        #[test]
        fn the_upper_name_is_the_one_names_gives(
            opts in proptest::collection::vec((
                proptest::sample::select(vec!["lowerdir", "lowerdir+", "datadir+", "upperdir", "workdir", "ro", "x"]),
                proptest::sample::select(vec!["", "a", "b:c", r"u\,v", "::d", r"e"]),
            ), 0..6),
        ) {
            let data = opts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
            proptest::prop_assert_eq!(Params::upper_name(&data), Params::names(&data).1);
            let calls: Vec<FsParam> =
                opts.iter().map(|(k, v)| FsParam { key: k.to_string(), value: Some(v.to_string()) }).collect();
            proptest::prop_assert_eq!(Params::fsconfig_upper_name(&calls), Params::fsconfig_names(&calls).1);
        }
    }
}
