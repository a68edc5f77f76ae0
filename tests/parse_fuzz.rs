//! The scenario parser under fuzz-like input: arbitrary bytes, YAML-shaped noise, and
//! mutations of the real `spec/` files. Whatever the input, `scenario::parse` returns a
//! scenario or an error that names the file and a line inside the text, and a scenario that
//! parses replays on the model and shows without a panic. Bounded: proptest's case count
//! (`PROPTEST_CASES` overrides it).

use ovlsim::backend::ModelBackend;
use ovlsim::scenario;
use proptest::prelude::*;

const FILE: &str = "fuzzed.yaml";

/// Every `spec/` file's text, read once.
fn spec_texts() -> &'static [String] {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TEXTS.get_or_init(|| {
        let found = scenario::find_files(&["spec".into()]).expect("spec/ is readable");
        assert!(found.files.len() > 100, "spec/ has its scenarios");
        found.files.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
    })
}

/// Parses `text`, and replays and shows what parses; checks every error's location.
fn check(text: &str) {
    match scenario::parse(text, FILE) {
        Ok(s) => {
            let _ = scenario::run(&s, &mut ModelBackend::new());
            let _ = scenario::show(&s);
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            // YAML breaks lines at \r, NEL, LS and PS too; libyaml reports an error at the end
            // of the text one line past the last one.
            let breaks = text.replace("\r\n", "\n").matches(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']).count();
            let lines = breaks + 2;
            for p in &e.problems {
                assert_eq!(p.file, FILE);
                assert!(p.pos.line >= 1 && p.pos.line <= lines, "line {} of {lines}: {e}", p.pos.line);
                assert!(p.pos.column >= 1, "{e}");
            }
            assert!(e.to_string().starts_with(&format!("{FILE}:")), "{e}");
        }
    }
}

/// One edit of a text's lines.
#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    FlipByte(usize, u8),
    Insert(usize, String),
    Indent(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let odd = prop_oneof![
        Just("- stat: /a".to_owned()),
        Just("  expect: 99999999999999999999999".to_owned()),
        Just("    mode: 0o7777777777".to_owned()),
        Just("  x: !whiteout {a: [1, {b: c}]}".to_owned()),
        Just("&a [*a]".to_owned()),
        Just("---".to_owned()),
        Just("? [a]\n: b".to_owned()),
        Just("\t- {".to_owned()),
        Just(format!("  {}: x", "a/".repeat(3000))),
        Just(format!("{}1{}", "[".repeat(200), "]".repeat(200))),
        "[ -~]{0,40}",
        "\\PC{0,20}",
    ];
    prop_oneof![
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::FlipByte(a, b)),
        (any::<usize>(), odd).prop_map(|(a, s)| Mutation::Insert(a, s)),
        (any::<usize>(), 0..6usize).prop_map(|(a, n)| Mutation::Indent(a, n)),
    ]
}

/// `text` with the mutations applied (bytes that stop being UTF-8 are replaced).
fn mutate(text: &str, ms: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in ms {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        match m {
            Mutation::Delete(i) => {
                lines.remove(i % n);
            }
            Mutation::Duplicate(i) => {
                let l = lines[i % n].clone();
                lines.insert(i % n, l);
            }
            Mutation::Swap(a, b) => lines.swap(a % n, b % n),
            Mutation::FlipByte(i, b) => {
                let mut bytes = lines[i % n].clone().into_bytes();
                if !bytes.is_empty() {
                    let j = i / n % bytes.len();
                    bytes[j] ^= b;
                }
                lines[i % n] = String::from_utf8_lossy(&bytes).into_owned();
            }
            Mutation::Insert(i, s) => lines.insert(i % (n + 1), s.clone()),
            Mutation::Indent(i, k) => lines[i % n] = format!("{}{}", " ".repeat(*k), lines[i % n]),
        }
    }
    lines.join("\n") + "\n"
}

/// YAML-shaped noise: the scenario format's own keys, tags and values, in random order and
/// indentation.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("name: x"),
        Just("rules: [r]"),
        Just("layers:"),
        Just("  L0:"),
        Just("  upper: {}"),
        Just("    a: hello"),
        Just("    w: !whiteout"),
        Just("    d: !dir {mode: 0755, opaque: y}"),
        Just("    s: !symlink /a"),
        Just("mount: {lowers: [L0], upper: upper}"),
        Just("mount: {lowers: [L0]}"),
        Just("steps:"),
        Just("- stat: /a"),
        Just("  expect: ENOENT"),
        Just("  expect: {kind: file, size: 5}"),
        Just("- rename: /a"),
        Just("  to: /b"),
        Just("- write: /a"),
        Just("  data: x"),
        Just("- remount: {}"),
        Just("- unmount"),
        Just("final:"),
        Just("  merged: {a: hello}"),
        Just("  upper: {w: !whiteout}"),
        Just("- {"),
        Just("&x"),
        Just("*x"),
        Just("'"),
    ];
    proptest::collection::vec(token, 0..40).prop_map(|ts| ts.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yaml_shaped_noise_never_panics(text in yamlish()) {
        check(&text);
    }

    #[test]
    fn mutated_spec_files_never_panic(i in any::<usize>(), ms in proptest::collection::vec(mutation(), 1..6)) {
        let texts = spec_texts();
        check(&mutate(&texts[i % texts.len()], &ms));
    }
}
