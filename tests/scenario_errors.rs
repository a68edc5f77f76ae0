//! Bad scenario input: every class of mistake is reported with its file, line, column and
//! step, several problems are reported at once, and nothing panics.

use ovlsim::scenario::{self, Problem, ScenarioError};

/// A valid scenario to start from; `{steps}` is replaced by the steps under test.
const BASE: &str = "\
# A base scenario for the error tests.
name: base
rules: [a rule]
layers:
  L0: {f: hello, d: {}}
  upper: {}
mount: {lowers: [L0], upper: upper}
steps:
{steps}";

fn with_steps(steps: &str) -> String {
    BASE.replace("{steps}", steps)
}

/// The line the steps start on in [`BASE`].
const STEPS_LINE: usize = 9;

fn problems(text: &str) -> Vec<Problem> {
    match scenario::parse(text, "bad.yaml") {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(ScenarioError { problems }) => problems,
    }
}

/// Asserts the one problem names the file, the line and the step, and says `needle`.
#[track_caller]
fn one(text: &str, line: usize, step: Option<(usize, &str)>, needle: &str) -> Problem {
    let ps = problems(text);
    assert_eq!(ps.len(), 1, "one problem expected, got {ps:#?}");
    let p = ps.into_iter().next().unwrap();
    let shown = p.to_string();
    assert!(shown.starts_with(&format!("bad.yaml:{line}:")), "wrong place: {shown}");
    assert_eq!(p.pos.line, line, "{shown}");
    match step {
        Some((i, op)) => {
            assert!(shown.contains(&format!("step {i} ({op})")), "no step in: {shown}");
            assert_eq!(p.step.as_ref().map(|s| (s.index, s.op.as_str())), Some((i, op)));
        }
        None => assert!(p.step.is_none(), "unexpected step in: {shown}"),
    }
    assert!(shown.contains(needle), "{shown:?} does not say {needle:?}");
    p
}

#[test]
fn the_base_scenario_is_valid() {
    let s = scenario::parse(&with_steps("  - stat: /f\n    expect: ok\n"), "ok.yaml").unwrap();
    assert_eq!(s.steps[0].pos.map(|p| p.line), Some(STEPS_LINE));
}

#[test]
fn malformed_yaml_names_the_line_and_the_step() {
    let text = with_steps("  - stat: /f\n    expect: ok\n  - unlink: /f\n    expect: [ok\n  - stat: /f\n");
    // libyaml notices the unclosed list on the next line; the error points at its start.
    let p = one(&text, STEPS_LINE + 3, Some((2, "unlink")), "malformed YAML");
    assert!(p.pos.column > 0);
    // Bad indentation inside a step.
    let text = with_steps("  - rename: /f\n    to: /g\n      expect: ok\n");
    one(&text, STEPS_LINE + 2, Some((1, "rename")), "malformed YAML");
}

#[test]
fn malformed_yaml_outside_the_steps_has_no_step() {
    let text = BASE.replace("layers:\n", "layers: [\n").replace("{steps}", "");
    let ps = problems(&text);
    assert!(ps[0].to_string().starts_with("bad.yaml:"), "{ps:?}");
    assert!(ps[0].step.is_none());
}

#[test]
fn an_unknown_operation() {
    let text = with_steps("  - stat: /f\n    expect: ok\n  - sta: /f\n    expect: ok\n");
    let p = one(&text, STEPS_LINE + 2, Some((2, "sta")), "unknown operation `sta`");
    assert_eq!(p.pos.column, 5, "the column of the key");
}

#[test]
fn an_unknown_field_in_a_step() {
    let text = with_steps("  - rename: /f\n    to: /g\n    flag: [noreplace]\n    expect: ok\n");
    one(&text, STEPS_LINE + 2, Some((1, "rename")), "unknown field `flag`");
}

#[test]
fn an_unknown_top_level_field() {
    let text = with_steps("  - stat: /f\n    expect: ok\n") + "colour: blue\n";
    one(&text, STEPS_LINE + 2, None, "unknown field `colour`");
}

#[test]
fn a_missing_argument() {
    let text = with_steps("  - rename: /f\n    expect: ok\n");
    one(&text, STEPS_LINE, Some((1, "rename")), "`rename` needs `to`");
}

#[test]
fn an_empty_path() {
    // Relative paths are steps' paths from the merged root; an empty one is a mistake.
    let text = with_steps("  - stat: f\n    expect: ok\n  - unlink: \"\"\n    expect: ok\n");
    one(&text, STEPS_LINE + 2, Some((2, "unlink")), "is empty");
    let text = with_steps("  - rename: /f\n    to: \"\"\n    expect: ok\n");
    one(&text, STEPS_LINE + 1, Some((1, "rename")), "is empty");
}

#[test]
fn a_path_with_nul() {
    let text = with_steps("  - stat: \"/f\\0g\"\n    expect: ok\n");
    one(&text, STEPS_LINE, Some((1, "stat")), "NUL");
    let text = BASE.replace("{f: hello, d: {}}", "{\"f\\0\": hello}").replace("{steps}", "");
    one(&text, 5, None, "NUL");
}

#[test]
fn an_expectation_of_the_wrong_type() {
    // A mapping for readdir is names to types: `kind: dir` is an entry named kind.
    let text = with_steps("  - readdir: /d\n    expect: {kind: directory}\n");
    one(&text, STEPS_LINE + 1, Some((1, "readdir")), "unknown file type");
    let text = with_steps("  - readdir: /d\n    expect: !hex 00\n");
    one(&text, STEPS_LINE + 1, Some((1, "readdir")), "`expect` for readdir must be");
    let text = with_steps("  - stat: /f\n    expect: [a, b]\n");
    one(&text, STEPS_LINE + 1, Some((1, "stat")), "`expect` for stat must be");
    let text = with_steps("  - unlink: /f\n    expect: hello\n");
    one(&text, STEPS_LINE + 1, Some((1, "unlink")), "`expect` for unlink must be ok or an errno");
    let text = with_steps("  - read: /f\n    expect: {size: 1}\n");
    one(&text, STEPS_LINE + 1, Some((1, "read")), "`expect` for read must be");
    let text = with_steps("  - stat: /f\n    expect: {kind: file, colour: red}\n");
    one(&text, STEPS_LINE + 1, Some((1, "stat")), "unknown field `colour`");
}

#[test]
fn an_unknown_errno() {
    let text = with_steps("  - unlink: /f\n    expect: ENOTAERRNO\n");
    one(&text, STEPS_LINE + 1, Some((1, "unlink")), "unknown errno");
    // Content that reads like an errno must say so.
    let text = with_steps("  - read: /f\n    expect: EWHAT\n");
    one(&text, STEPS_LINE + 1, Some((1, "read")), "!data");
}

#[test]
fn a_mount_naming_an_unknown_layer() {
    let text = BASE.replace("lowers: [L0]", "lowers: [L9]").replace("{steps}", "");
    one(&text, 7, None, "unknown layer \"L9\"");
    let text = with_steps("  - unmount\n  - mount: {upper: nope}\n    expect: ok\n");
    one(&text, STEPS_LINE + 1, Some((2, "mount")), "unknown layer \"nope\"");
}

#[test]
fn an_edit_of_an_unknown_layer() {
    let text = with_steps("  - unmount\n  - edit: L7\n    remove: [/f]\n");
    one(&text, STEPS_LINE + 1, Some((2, "edit")), "unknown layer \"L7\"");
}

#[test]
fn final_upper_without_an_upper_layer() {
    let text = BASE
        .replace("mount: {lowers: [L0], upper: upper}", "mount: {lowers: [L0, upper]}")
        .replace("{steps}", "  - stat: /f\n    expect: ok\nfinal:\n  upper: {}\n");
    one(&text, STEPS_LINE + 3, None, "no upper layer");
}

#[test]
fn writes_without_an_upper_are_not_a_parse_error() {
    // EROFS at run time, or a failing expectation: not the parser's business.
    let text = BASE
        .replace("mount: {lowers: [L0], upper: upper}", "mount: {lowers: [L0, upper]}")
        .replace("{steps}", "  - write: /f\n    data: x\n    expect: ok\n");
    scenario::parse(&text, "ok.yaml").unwrap();
}

#[test]
fn operations_while_unmounted_and_edits_while_mounted() {
    let text = with_steps("  - unmount\n  - stat: /f\n    expect: ok\n");
    one(&text, STEPS_LINE + 1, Some((2, "stat")), "not mounted");
    let text = with_steps("  - edit: L0\n    remove: [/f]\n");
    one(&text, STEPS_LINE, Some((1, "edit")), "offline");
    let text = with_steps("  - mount\n");
    one(&text, STEPS_LINE, Some((1, "mount")), "already mounted");
}

#[test]
fn a_decimal_mode() {
    let text = with_steps("  - chmod: /f\n    mode: 644\n    expect: ok\n");
    one(&text, STEPS_LINE + 1, Some((1, "chmod")), "decimal");
    // Octal spellings are fine.
    for m in ["0644", "0o644", "'644'"] {
        let ok = with_steps(&format!("  - chmod: /f\n    mode: {m}\n    expect: ok\n"));
        let s = scenario::parse(&ok, "ok.yaml").unwrap();
        match &s.steps[0].action {
            scenario::Action::Op(ovlsim::Op::Chmod { mode, .. }) => assert_eq!(*mode, 0o644, "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn bad_nodes_in_a_layer() {
    let text = BASE.replace("{f: hello, d: {}}", "{f: !whitout ~}").replace("{steps}", "");
    one(&text, 5, None, "unknown node tag !whitout");
    // A tag right before `}` is a YAML syntax error; the message says what to write.
    let text = BASE.replace("{f: hello, d: {}}", "{f: !whiteout}").replace("{steps}", "");
    one(&text, 5, None, "`{w: !whiteout ~}`");
    let text = BASE.replace("{f: hello, d: {}}", "{f: 12}").replace("{steps}", "");
    one(&text, 5, None, "quote file content");
    let text = BASE.replace("{f: hello, d: {}}", "{f: hello, g: !link /missing}").replace("{steps}", "");
    one(&text, 5, None, "no such path");
    let text = BASE.replace("{f: hello, d: {}}", "{d: {}, g: !link /d}").replace("{steps}", "");
    one(&text, 5, None, "directories cannot be linked");
    let text = BASE.replace("{f: hello, d: {}}", "{f: !symlink {mode: 0777}}").replace("{steps}", "");
    one(&text, 5, None, "needs a `target`");
    let text = BASE.replace("{f: hello, d: {}}", "{a/b: x, a: y}").replace("{steps}", "");
    one(&text, 5, None, "given twice");
    let text = BASE.replace("{f: hello, d: {}}", "{e: !error ENOENT}").replace("{steps}", "");
    one(&text, 5, None, "!error is for merged trees");
}

#[test]
fn a_self_link_edit_is_refused() {
    let text = with_steps("  - unmount\n  - edit: L0\n    link: {/f: /f}\n");
    one(&text, STEPS_LINE + 2, Some((2, "edit")), "cannot become a link");
}

#[test]
fn a_step_that_is_not_a_mapping() {
    let text = with_steps("  - stat /f\n");
    one(&text, STEPS_LINE, Some((1, "?")), "a step is a mapping");
    let text = with_steps("  - stat: /f\n    unlink: /f\n");
    one(&text, STEPS_LINE + 1, Some((1, "stat")), "a step does one thing");
}

#[test]
fn expect_on_a_step_that_has_none() {
    let text = with_steps("  - drop_caches: ~\n    expect: ok\n");
    one(&text, STEPS_LINE + 1, Some((1, "drop_caches")), "unknown field `expect`");
}

#[test]
fn an_unmount_expects_an_errno_and_stays_mounted_after_one() {
    // Refused (EBUSY: a handle is open), the overlay stays mounted: a later operation is
    // fine, a mount is not.
    let ok = with_steps("  - open: /f\n    as: f1\n  - unmount: ~\n    expect: EBUSY\n  - stat: /f\n");
    scenario::parse(&ok, "ok.yaml").unwrap_or_else(|e| panic!("{e}"));
    let text = with_steps("  - unmount: ~\n    expect: EBUSY\n  - mount: {}\n");
    one(&text, STEPS_LINE + 2, Some((2, "mount")), "already mounted");
    // Not yet recorded while a handle is open: the kernel refuses it, so still mounted.
    let text = with_steps("  - open: /f\n    as: f1\n  - unmount\n  - mount: {}\n");
    one(&text, STEPS_LINE + 3, Some((3, "mount")), "already mounted");
    // Closed first: unmounted.
    let ok = with_steps("  - open: /f\n    as: f1\n  - close: f1\n  - unmount\n  - mount: {}\n");
    scenario::parse(&ok, "ok.yaml").unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let text =
        with_steps("  - stat: \"\"\n    expect: ok\n  - sta: /f\n  - rename: /f\n    to: /g\n    expect: ENOPE\n")
            .replace("lowers: [L0]", "lowers: [L9]");
    let ps = problems(&text);
    let shown: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
    assert!(ps.len() >= 4, "{shown:#?}");
    assert!(shown.iter().any(|s| s.contains("unknown layer")), "{shown:#?}");
    assert!(shown.iter().any(|s| s.contains("step 1 (stat)") && s.contains("empty")), "{shown:#?}");
    assert!(shown.iter().any(|s| s.contains("step 2 (sta)")), "{shown:#?}");
    assert!(shown.iter().any(|s| s.contains("step 3 (rename)") && s.contains("ENOPE")), "{shown:#?}");
    // The error's Display lists them one per line, each with the file.
    let all = scenario::parse(&text, "bad.yaml").unwrap_err().to_string();
    assert_eq!(all.lines().count(), ps.len());
    assert!(all.lines().all(|l| l.starts_with("bad.yaml:")));
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("ovlsim-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rename-bad.yaml");
    std::fs::write(&path, with_steps("  - rename: /f\n    expect: ok\n")).unwrap();
    let e = scenario::load(&path).unwrap_err();
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("{}:{}:", path.display(), STEPS_LINE)), "{shown}");
    assert!(shown.contains("step 1 (rename)"), "{shown}");
    let missing = scenario::load(dir.join("missing.yaml")).unwrap_err().to_string();
    assert!(missing.contains("missing.yaml:1:1: cannot read the file"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Mangled versions of valid scenarios (lines dropped, text cut short, characters
/// swapped) must give an error or a scenario, never a panic.
#[test]
fn mangled_scenarios_never_panic() {
    let mut sources = vec![with_steps(
        "  - stat: /f\n    expect: {kind: file, ino: a}\n  - unmount\n  - edit: L0\n    put: {/g: !symlink f}\n    link: {/h: /f}\n  - mount: {options: {redirect_dir: on}}\n    expect: ok\n  - check:\n      merged: {.: {nlink: 1}, f: hello, g: !symlink f, h: hello}\nfinal:\n  upper: {}\n",
    )];
    for f in scenario::find_files(&["spec/examples".into()]).unwrap().files {
        sources.push(std::fs::read_to_string(f).unwrap());
    }
    let swaps = [":", "-", "{", "}", "[", "!", "\"", " ", "\t", "0", "/", "~"];
    let mut cases = 0;
    for src in &sources {
        let lines: Vec<&str> = src.lines().collect();
        for i in 0..lines.len() {
            let mut l = lines.clone();
            l.remove(i);
            let _ = scenario::parse(&l.join("\n"), "m.yaml");
            cases += 1;
        }
        for cut in (0..src.len()).step_by(7).filter(|c| src.is_char_boundary(*c)) {
            let _ = scenario::parse(&src[..cut], "m.yaml");
            cases += 1;
        }
        for (k, (i, _)) in src.char_indices().enumerate().filter(|(k, _)| k % 5 == 0) {
            let mut t = src.clone();
            let len = t[i..].chars().next().map(char::len_utf8).unwrap_or(0);
            t.replace_range(i..i + len, swaps[k % swaps.len()]);
            let _ = scenario::parse(&t, "m.yaml");
            cases += 1;
        }
    }
    assert!(cases > 1000);
}

/// A scenario whose layer `L0` is `layer` (flow or block YAML, indented under `L0:`).
fn with_layer(layer: &str) -> String {
    BASE.replace("  L0: {f: hello, d: {}}\n", &format!("  L0:\n{layer}")).replace("{steps}", "")
}

/// Asserts the one problem is at `line`:`column` and names the kernel's errno.
#[track_caller]
fn refused(text: &str, line: usize, column: usize, errno: &str) {
    let p = one(text, line, None, errno);
    assert_eq!((p.pos.line, p.pos.column), (line, column), "{p}");
    assert!(p.to_string().contains("a layer cannot hold"), "{p}");
}

#[test]
fn a_layer_name_over_255_bytes_is_enametoolong_at_its_key() {
    let long = "n".repeat(300);
    refused(&with_layer(&format!("    d:\n      {long}: x\n")), 7, 7, "ENAMETOOLONG");
    // A path key: the long component is a parent.
    refused(&with_layer(&format!("    a/{long}/b: x\n")), 6, 5, "ENAMETOOLONG");
}

#[test]
fn an_xattr_the_kernel_refuses_is_located_at_its_name_or_value() {
    // A name over 255 bytes: ERANGE, at the name.
    let long = format!("user.{}", "a".repeat(260));
    refused(&with_layer(&format!("    f: !file\n      data: x\n      xattrs: {{{long}: v}}\n")), 8, 16, "ERANGE");
    // A value over 64 KiB: E2BIG, at the value.
    let big = "v".repeat(65537);
    refused(&with_layer(&format!("    f: !file\n      xattrs:\n        user.a: {big}\n")), 8, 17, "E2BIG");
    // An invalid security.capability: EINVAL, at the value.
    refused(&with_layer("    f: !file\n      xattrs:\n        security.capability: !hex \"00\"\n"), 8, 30, "EINVAL");
    // A namespace tmpfs lacks: EOPNOTSUPP, at the name.
    refused(&with_layer("    d: {.: {xattrs: {foo.bar: x}}}\n"), 6, 22, "EOPNOTSUPP");
    // user.* on a FIFO: EPERM, at the name.
    refused(&with_layer("    p: !fifo {xattrs: {user.a: x}}\n"), 6, 24, "EPERM");
    // A redirect short form over 64 KiB: at the `redirect` value of `.`.
    refused(&with_layer(&format!("    d: {{.: {{redirect: {big}}}}}\n")), 6, 23, "E2BIG");
}

#[test]
fn a_symlink_target_the_kernel_refuses_is_located_at_the_target() {
    refused(&with_layer("    s: !symlink {target: \"\"}\n"), 6, 26, "ENOENT");
    let long = "t".repeat(4096);
    // A short-form target is placed at its tagged value.
    refused(&with_layer(&format!("    s: !symlink {long}\n")), 6, 8, "ENAMETOOLONG");
}

#[test]
fn an_offline_put_the_kernel_refuses_is_located_in_the_step() {
    let long = "n".repeat(256);
    let text = with_steps(&format!("  - unmount\n  - edit: L0\n    put: {{/d/{long}: x}}\n"));
    let p = one(&text, STEPS_LINE + 2, Some((2, "edit")), "ENAMETOOLONG");
    assert_eq!(p.pos.column, 11, "{p}");
}

/// `!sparse` content that overlaps, ends past the size or has no offset, and `!digest` in a
/// layer or with a bad hash, are located errors.
#[test]
fn sparse_and_digest_mistakes_are_located() {
    let layer = |node: &str| {
        format!(
            "# r\nname: x\nrules: [r]\nlayers:\n  L0:\n    f: {node}\nmount: {{lowers: [L0]}}\nsteps:\n  - stat: /f\n    expect: ok\n"
        )
    };
    one(&layer("!sparse {size: 4, data: {2: abc}}"), 6, None, "ends at 5, past the size 4");
    one(&layer("!sparse {size: 9, data: {0: abc, 2: x}}"), 6, None, "overlaps the content before it");
    one(&layer("!sparse {size: 9, data: {x: abc}}"), 6, None, "is not an offset");
    one(&layer("!sparse {data: {0: a}}"), 6, None, "needs a `size`");
    one(&layer("!digest {size: 9, hash: 0000000000000000}"), 6, None, "!digest is for merged trees");
    let read = |e: &str| with_steps(&format!("  - read: /f\n    expect: {e}\n"));
    one(&read("!digest {size: 9, hash: xyz}"), STEPS_LINE + 1, Some((1, "read")), "not 16 hex digits");
    one(&read("!sparse {size: 1, data: {0: ab}}"), STEPS_LINE + 1, Some((1, "read")), "past the size 1");
}

/// A read expected as `!sparse` content is compared as a read shows it: bytes up to
/// 64 KiB, a digest above.
#[test]
fn a_sparse_read_expectation_is_bytes_or_a_digest() {
    use ovlsim::layer::FileData;
    use ovlsim::scenario::Expect;
    let s = |e: &str| scenario::parse(&with_steps(&format!("  - read: /f\n    expect: {e}\n")), "ok.yaml").unwrap();
    let small = s("!sparse {size: 4, data: {1: a}}");
    assert_eq!(small.steps[0].expect, Some(Expect::Data(b"\0a\0\0".to_vec())));
    let big = s("!sparse {size: 100000, data: {99999: z}}");
    let mut want = FileData::hole(100_000);
    want.write(99_999, b"z");
    assert_eq!(big.steps[0].expect, Some(Expect::Digest(want.digest())));
}

#[test]
fn a_file_handle_step_names_its_mistakes() {
    // A file handle no `name_to_handle` kept before.
    one(
        &with_steps("  - open_by_handle: h1\n    as: f1\n    expect: ok\n"),
        STEPS_LINE,
        Some((1, "open_by_handle")),
        "unknown file handle `h1`",
    );
    // `name_to_handle` without `as:`.
    one(
        &with_steps("  - name_to_handle: /f\n    expect: ok\n"),
        STEPS_LINE,
        Some((1, "name_to_handle")),
        "needs `as:`",
    );
    // A flag it does not take.
    one(
        &with_steps("  - name_to_handle: /f\n    as: h1\n    flags: [connectable]\n    expect: ok\n"),
        STEPS_LINE + 2,
        Some((1, "name_to_handle")),
        "the flags of `name_to_handle` are: fid",
    );
    // They run as root only.
    let ps =
        problems(&with_steps("  - name_to_handle: /f\n    as: h1\n    as_user: {uid: 1, gid: 1}\n    expect: ok\n"));
    assert!(ps.iter().any(|p| p.to_string().contains("as_user")), "{ps:#?}");
    // Well formed, they round-trip through the writer.
    let text = with_steps(
        "  - name_to_handle: /f\n    as: h1\n    flags: [fid]\n    follow: true\n    expect: ok\n  - open_by_handle: h1\n    flags: [rdonly, directory]\n    as: f1\n    expect: ENOTDIR\n",
    );
    let s = scenario::parse(&text, "ok.yaml").unwrap();
    let again = scenario::parse(&s.to_yaml(), "again.yaml").unwrap();
    assert_eq!(again.steps.len(), 2);
    assert_eq!(format!("{:?}", again.steps[0].action), format!("{:?}", s.steps[0].action));
    assert_eq!(format!("{:?}", again.steps[1].action), format!("{:?}", s.steps[1].action));
}

#[test]
fn fsconfig_mistakes_are_located() {
    // A call is [key, value] or [key]; not three items, not a bare string.
    let text = with_steps("  - unmount\n  - mount: {fsconfig: [[lowerdir+, L0, x]]}\n");
    one(&text, STEPS_LINE + 1, Some((2, "mount")), "[key, value] or [key]");
    let text = with_steps("  - unmount\n  - mount: {fsconfig: [lowerdir+]}\n");
    one(&text, STEPS_LINE + 1, Some((2, "mount")), "[key, value] or [key]");
    // The layers are named by the calls: no `lowers` with them.
    let text = with_steps("  - unmount\n  - mount: {lowers: [L0], fsconfig: [[lowerdir+, L0]]}\n");
    one(&text, STEPS_LINE + 1, Some((2, "mount")), "give no `lowers`");
    // A path is a layer name.
    let text = with_steps("  - unmount\n  - mount: {fsconfig: [[lowerdir+, /etc]]}\n");
    one(&text, STEPS_LINE + 1, Some((2, "mount")), "layer names");
    // A refused call counts from 1 and names its errno.
    let text = with_steps("  - unmount\n  - mount: {fsconfig: [[foo]]}\n    expect: {call: 0, errno: EINVAL}\n");
    one(&text, STEPS_LINE + 2, Some((2, "mount")), "counts from 1");
    let text = with_steps("  - unmount\n  - mount: {fsconfig: [[foo]]}\n    expect: {call: 1, errno: EWHAT}\n");
    one(&text, STEPS_LINE + 2, Some((2, "mount")), "unknown errno");
    // A refused call leaves the overlay unmounted: a mount may follow.
    let text = with_steps(
        "  - unmount\n  - mount: {fsconfig: [[foo]]}\n    expect: {call: 1, errno: EINVAL}\n  - mount: {fsconfig: [[lowerdir+, L0], [upperdir, upper], [workdir, work]]}\n    expect: ok\n",
    );
    let s = scenario::parse(&text, "ok.yaml").unwrap();
    assert_eq!(s.steps.len(), 3);
}
