//! The mount option string (`ovlsim::params`): parse(print(p)) == p, random strings never
//! panic, and the model's answer to an option string is the kernel's (mount(2) with the
//! string unchanged; the model may say it does not model an option, never give another
//! answer).
//!
//! The kernel part needs root and overlayfs; without them it prints `SKIPPED: ...` to
//! stderr and passes, unless `OVLSIM_REQUIRE_KERNEL=1`, where that is a failure.

mod common;

use ovlsim::backend::{Backend, BackendError, Command, ModelBackend, Reply};
use ovlsim::layer::{FileType, FlatEntry, FlatLayer, FlatNode};
use ovlsim::mount::{MountError, Named, RedirectDir, Uuid, Xino};
use ovlsim::params::{Lower, Params};
use ovlsim::Options;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::Write;

fn name() -> impl Strategy<Value = String> {
    // The characters the string gives a meaning to, and some that it does not.
    proptest::collection::vec(
        prop::sample::select(vec!['a', 'Z', '0', ':', ',', '\\', '=', '+', ' ', '.', 'é', '/']),
        1..6,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn options() -> impl Strategy<Value = Options> {
    let redirect =
        prop::sample::select(vec![RedirectDir::On, RedirectDir::Follow, RedirectDir::Nofollow, RedirectDir::Off]);
    let xino = prop::sample::select(vec![Xino::Off, Xino::Auto, Xino::On]);
    (redirect, xino, any::<[bool; 6]>(), any::<[bool; 5]>()).prop_map(|(redirect_dir, xino, b, n)| {
        Options {
            redirect_dir,
            xino,
            index: b[0],
            metacopy: b[1],
            userxattr: b[2],
            nfs_export: b[3],
            volatile: b[4],
            read_only: b[5],
            workdir_without_upper: false,
            named: Named { redirect_dir: n[0], index: n[1], metacopy: n[2], xino: n[3], nfs_export: n[4] },
            uuid: Uuid::Auto,
        }
        .canonical()
    })
}

/// Canonical parameters: names not empty, data-only layers after at least one regular
/// one, `workdir_without_upper` exactly when there is a workdir and no upper, the options
/// the model does not model in the order the parser lists them.
fn params() -> impl Strategy<Value = Params> {
    let lowers = (proptest::collection::vec(name(), 0..4), proptest::collection::vec(name(), 0..3));
    let unmodelled = (
        any::<[bool; 2]>(),
        prop::sample::select(vec!["off", "null", "auto", "on"]),
        prop::sample::select(vec!["off", "on", "require"]),
        proptest::sample::subsequence(vec!["sync", "dirsync", "lazytime", "mand"], 0..=4).prop_shuffle(),
    );
    (lowers, proptest::option::of(name()), proptest::option::of(name()), options(), unmodelled).prop_map(
        |((regular, data), upper, workdir, mut options, (flags, uuid, verity, sb))| {
            let data = if regular.is_empty() { Vec::new() } else { data };
            let lowers = regular
                .into_iter()
                .map(|name| Lower { name, data_only: false })
                .chain(data.into_iter().map(|name| Lower { name, data_only: true }))
                .collect();
            options.workdir_without_upper = workdir.is_some() && upper.is_none();
            let mut unmodelled = Vec::new();
            if flags[0] {
                unmodelled.push("default_permissions".to_owned());
            }
            options.uuid = match uuid {
                "off" => Uuid::Off,
                "null" => Uuid::Null,
                "on" => Uuid::On,
                _ => Uuid::Auto,
            };
            if verity != "off" {
                unmodelled.push(format!("verity={verity}"));
            }
            if flags[1] {
                unmodelled.push("nooverride_creds".to_owned());
            }
            unmodelled.extend(sb.into_iter().map(str::to_owned));
            Params { lowers, upper, workdir, options, unmodelled }
        },
    )
}

/// Option-shaped noise: the words of the table, values, separators and escapes.
fn noise() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "lowerdir",
        "lowerdir+",
        "datadir+",
        "upperdir",
        "workdir",
        "redirect_dir",
        "index",
        "metacopy",
        "xino",
        "uuid",
        "verity",
        "nfs_export",
        "userxattr",
        "volatile",
        "override_creds",
        "nooverride_creds",
        "ro",
        "rw",
        "source",
        "=",
        "==",
        ",",
        ":",
        "::",
        ":::",
        "\\",
        "\\,",
        "\\:",
        "on",
        "off",
        "auto",
        "L0",
        "L1",
        "",
        "\0",
    ]);
    proptest::collection::vec(token, 0..24).prop_map(|t| t.concat())
}

/// Parses `data` every way there is; none may panic, and every refusal is the kernel's
/// EINVAL or ENOENT.
fn parse_all_ways(data: &str) {
    for r in [Params::parse(data), Params::parse_with(data, |_, n| n.starts_with('L'))] {
        if let Err(MountError::Refused { errno, .. }) = r {
            assert!(matches!(errno, ovlsim::Errno::EINVAL | ovlsim::Errno::ENOENT), "{data:?}: {errno}");
        }
    }
    let _ = data.parse::<Options>();
    let _ = Params::names(data);
    let mut m = ModelBackend::new();
    for n in ["L0", "L1"] {
        m.exec(&Command::Layer { name: n.into(), content: empty_layer() }).expect("a layer");
    }
    match m.exec(&Command::MountData { data: data.to_owned(), fsconfig: None }) {
        Ok(Reply::Done | Reply::MountRefused(_)) | Err(BackendError::NotModelled(_)) => {}
        other => panic!("{data:?}: {other:?}"),
    }
}

proptest! {
    #[test]
    fn parse_of_to_mount_string_gives_the_params_back(p in params()) {
        let s = p.to_mount_string();
        prop_assert_eq!(Params::parse(&s), Ok(p), "{}", s);
    }

    #[test]
    fn options_read_back_from_their_string(o in options()) {
        let s = o.to_string();
        prop_assert_eq!(s.parse::<Options>(), Ok(o), "{}", s);
    }

    #[test]
    fn random_strings_never_panic(data in any::<String>()) {
        parse_all_ways(&data);
    }

    #[test]
    fn option_shaped_noise_never_panics(data in noise()) {
        parse_all_ways(&data);
    }
}

fn dir() -> FlatNode {
    FlatNode {
        kind: FileType::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        data: None,
        target: None,
        rdev: None,
        xattrs: BTreeMap::new(),
    }
}

fn empty_layer() -> FlatLayer {
    FlatLayer { root: dir(), entries: Vec::new() }
}

fn layer_with(file: &str) -> FlatLayer {
    let node = FlatNode { kind: FileType::File, mode: 0o644, data: Some(file.as_bytes().into()), ..dir() };
    FlatLayer { root: dir(), entries: vec![FlatEntry::Node { path: format!("/{file}"), node }] }
}

/// A small deterministic generator (xorshift64*), so that a divergence replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Option strings drawn from the kernel's own words (and some it does not know), mounted
/// on the model and on the kernel: each answer must be the same, except where the model
/// says it does not model an option. The layers are made anew before each string.
#[test]
fn the_model_answers_option_strings_as_the_kernel_does() {
    let Some(mut k) = common::kernel_or_skip("option strings against the kernel") else { return };
    const TOKENS: &[&str] = &[
        "lowerdir=L0",
        "lowerdir=L0:L1",
        "lowerdir=L1:L0",
        "lowerdir=L0::L1",
        "lowerdir=L0:L1::L2",
        "lowerdir=",
        "lowerdir=L0:L0",
        "lowerdir=nosuch",
        "lowerdir=:L0",
        "lowerdir=L0:",
        "lowerdir=a\\:b:L0",
        "lowerdir+=L0",
        "lowerdir+=L1",
        "lowerdir+=a:b",
        "datadir+=L2",
        "upperdir=U",
        "upperdir=L0",
        "upperdir=",
        "workdir=work",
        "workdir=other",
        "redirect_dir=on",
        "redirect_dir=off",
        "redirect_dir=nofollow",
        "redirect_dir=follow",
        "index=on",
        "index=off",
        "metacopy=on",
        "metacopy=off",
        "nfs_export=on",
        "nfs_export=off",
        "xino=on",
        "xino=auto",
        "xino=bad",
        "userxattr",
        "volatile",
        "ro",
        "rw",
        "foo",
        "index",
        "uuid=null",
        "uuid=auto",
        "default_permissions",
        "",
        "=x",
        "source=x",
    ];
    let layers = [("L0", "f0"), ("L1", "f1"), ("L2", "f2"), ("U", "u"), ("a:b", "ab")];
    let mut rng = Rng(0x0715_2026_0000_0013);
    let (mut compared, mut mounted, mut not_modelled) = (0, 0, 0);
    for case in 0..400 {
        let n = 1 + rng.below(6);
        let mut parts: Vec<&str> = (0..n).map(|_| TOKENS[rng.below(TOKENS.len())]).collect();
        // Most strings name an upper and a workdir, so that they get past the early checks.
        if rng.below(3) > 0 {
            parts.splice(0..0, ["lowerdir=L0:L1", "upperdir=U", "workdir=work"]);
            let at = rng.below(parts.len());
            parts.swap(0, at);
        }
        let data = parts.join(",");
        let mut m = ModelBackend::new();
        for (name, file) in layers {
            let cmd = Command::Layer { name: name.into(), content: layer_with(file) };
            assert_eq!(m.exec(&cmd), Ok(Reply::Done));
            assert_eq!(k.exec(&cmd), Ok(Reply::Done), "case {case}: {cmd:?}");
        }
        let cmd = Command::MountData { data: data.clone(), fsconfig: None };
        let kernel = k.exec(&cmd);
        let model = m.exec(&cmd);
        match (&model, &kernel) {
            (Err(BackendError::NotModelled(_)), Ok(Reply::Done | Reply::MountRefused(_))) => not_modelled += 1,
            _ => {
                assert_eq!(model, kernel, "case {case}: mount -o {data:?}");
                compared += 1;
                mounted += usize::from(model == Ok(Reply::Done));
            }
        }
        if kernel == Ok(Reply::Done) {
            assert_eq!(k.exec(&Command::Unmount), Ok(Reply::Done));
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "option strings: {compared} answers compared ({mounted} mounts), {not_modelled} not modelled"
    );
    assert!(compared >= 200 && mounted >= 40, "too few answers compared: {compared} ({mounted} mounts)");
}

/// A scenario's `mount: {options: "..."}`: the string is kept as written, written back as
/// it was, and its layer names are the mount's.
#[test]
fn a_scenario_mount_keeps_its_option_string() {
    let text = "# r\nname: s\nrules: [r]\nlayers:\n  L0: {f: x}\n  'a:b': {g: y}\n  upper: {}\n\
                mount: {options: 'lowerdir=a\\:b:L0,upperdir=upper,workdir=work,redirect_dir=on'}\n\
                steps:\n  - read: /f\n    expect: x\n  - unmount\n  - mount:\n    expect: ok\n\
                final:\n  upper: {}\n";
    let s = ovlsim::scenario::parse(text, "s.yaml").expect("the scenario loads");
    let m = s.mount.as_ref().expect("a mount");
    assert_eq!(m.data.as_deref(), Some("lowerdir=a\\:b:L0,upperdir=upper,workdir=work,redirect_dir=on"));
    assert_eq!(m.lowers, vec!["a:b".to_owned(), "L0".to_owned()]);
    assert_eq!(m.upper.as_deref(), Some("upper"));
    assert_eq!(m.options.redirect_dir, RedirectDir::On);
    let back = ovlsim::scenario::parse(&s.to_yaml(), "s.yaml").expect("the written scenario loads");
    assert_eq!(back.mount, s.mount);
    let report = ovlsim::scenario::run(&s, &mut ModelBackend::new());
    assert!(report.passed(), "{report}");
}

/// An option string with `lowers` or `upper` beside it, a path that leaves the layers'
/// names, or a `workdir=` that names a layer, is an error in the file, located.
#[test]
fn a_scenario_option_string_that_cannot_name_layers_is_a_load_error() {
    for (mount, says) in [
        ("{lowers: [L0], options: 'lowerdir=L0,upperdir=upper,workdir=work'}", "give no `lowers` or `upper`"),
        ("{options: 'lowerdir=../L0,upperdir=upper,workdir=work'}", "its paths are layer names"),
        ("{options: 'lowerdir=L0:..,upperdir=upper,workdir=work'}", "its paths are layer names"),
        ("{options: 'lowerdir=L0,upperdir=upper,workdir=L0'}", "names a layer"),
    ] {
        let text = format!(
            "# r\nname: s\nrules: [r]\nlayers:\n  L0: {{f: x}}\n  upper: {{}}\nmount: {mount}\n\
             steps:\n  - read: /f\n    expect: x\n"
        );
        let e = ovlsim::scenario::parse(&text, "s.yaml").expect_err(mount);
        let shown = e.to_string();
        assert!(shown.contains(says) && shown.starts_with("s.yaml:7:"), "{mount}: {shown}");
    }
}
