//! Mount-command templates: how `--backend 'mount:TEMPLATE'` becomes an argv.
//!
//! # Splitting (no shell)
//!
//! The template is split into words the way a POSIX shell splits a simple command, without
//! running a shell and without any expansion: words are separated by spaces, tabs or
//! newlines; `'...'` quotes everything up to the next `'` literally; `"..."` quotes too,
//! and inside it `\"` and `\\` stand for `"` and `\`; outside quotes a `\` makes the next
//! character literal. There are no variables, globs, pipes or redirections: `$`, `*`, `|`,
//! `>` are plain characters. An unclosed quote or a trailing `\` is an error.
//!
//! # Placeholders
//!
//! After splitting, each word has its placeholders replaced, so a substituted value is
//! always part of one word, whatever it holds:
//!
//! | placeholder  | value |
//! |--------------|-------|
//! | `{lowerdir}` | the lower directories, colon-joined, top-most first |
//! | `{upperdir}` | the upper directory (empty without an upper layer) |
//! | `{workdir}`  | the work directory (empty without one) |
//! | `{merged}`   | the mount point |
//! | `{dirs}`     | the directory part of `{options}` alone: `lowerdir=…`, then `,upperdir=…,workdir=…` only when there is an upper (for implementations without the kernel's options, such as fuse-overlayfs, which refuses an empty `upperdir=`) |
//! | `{options}`  | the whole overlay option string the kernel backend passes to `mount(2)`: `lowerdir=…,upperdir=…,workdir=…`, the scenario's options (`redirect_dir=…,index=…,metacopy=…,xino=…`, then `nfs_export=on`, `userxattr`, `volatile` when set), and `ro` for a read-only mount |
//!
//! `{{` and `}}` stand for literal braces. Any other `{name}` is an error, found when the
//! template is read, not at the first mount.

use std::fmt;

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 6] = ["lowerdir", "upperdir", "workdir", "merged", "options", "dirs"];

/// One piece of a template word.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Hole(&'static str),
}

/// A parsed mount-command template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    text: String,
    words: Vec<Vec<Piece>>,
}

/// The values of the placeholders for one mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values {
    /// `{lowerdir}`.
    pub lowerdir: String,
    /// `{upperdir}`.
    pub upperdir: String,
    /// `{workdir}`.
    pub workdir: String,
    /// `{merged}`.
    pub merged: String,
    /// `{options}`.
    pub options: String,
    /// `{dirs}`.
    pub dirs: String,
}

impl Values {
    fn get(&self, name: &str) -> &str {
        match name {
            "lowerdir" => &self.lowerdir,
            "upperdir" => &self.upperdir,
            "workdir" => &self.workdir,
            "merged" => &self.merged,
            "dirs" => &self.dirs,
            _ => &self.options,
        }
    }
}

impl Template {
    /// Reads a template (see the module documentation), or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let words = split(text)?;
        if words.is_empty() {
            return Err("the mount command is empty".into());
        }
        let words = words.iter().map(|w| holes(w)).collect::<Result<Vec<_>, _>>()?;
        if words[0].iter().any(|p| matches!(p, Piece::Hole(_))) {
            return Err("the program name (the first word) cannot be a placeholder".into());
        }
        Ok(Template { text: text.to_owned(), words })
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The argv for one mount.
    pub fn argv(&self, v: &Values) -> Vec<String> {
        self.words
            .iter()
            .map(|w| {
                w.iter()
                    .map(|p| match p {
                        Piece::Text(t) => t.as_str(),
                        Piece::Hole(h) => v.get(h),
                    })
                    .collect()
            })
            .collect()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits `text` into words as a template is split (see the module documentation), with no
/// placeholders: how `worker:COMMAND ARGS` becomes an argv.
pub fn split_words(text: &str) -> Result<Vec<String>, String> {
    split(text)
}

/// Splits `text` into words (quotes and backslashes as in the module documentation).
fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("an unclosed ' in the mount command".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("an unclosed \" in the mount command".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("an unclosed \" in the mount command".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("a \\ at the end of the mount command".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok(words)
}

/// Finds the placeholders in one word.
fn holes(word: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = word;
    while let Some(i) = rest.find(['{', '}']) {
        text.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            text.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(format!("a lone }} in {word:?} (write }}}} for a literal brace)"));
        }
        let Some(end) = tail.find('}') else {
            return Err(format!("an unclosed {{ in {word:?} (write {{{{ for a literal brace)"));
        };
        let name = &tail[1..end];
        let Some(known) = PLACEHOLDERS.iter().find(|p| **p == name) else {
            return Err(format!("unknown placeholder {{{name}}} in {word:?} (known: {})", known_list()));
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(Piece::Hole(known));
        rest = &tail[end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn known_list() -> String {
    PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values {
            lowerdir: "/l/1:/l/0".into(),
            upperdir: "/l/2".into(),
            workdir: "/w/2".into(),
            merged: "/m".into(),
            options: "lowerdir=/l/1:/l/0,upperdir=/l/2,workdir=/w/2,redirect_dir=off".into(),
            dirs: "lowerdir=/l/1:/l/0,upperdir=/l/2,workdir=/w/2".into(),
        }
    }

    #[test]
    fn kernel_template_becomes_mount_argv() {
        let t = Template::parse("mount -t overlay overlay -o {options} {merged}").unwrap();
        assert_eq!(
            t.argv(&values()),
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                "lowerdir=/l/1:/l/0,upperdir=/l/2,workdir=/w/2,redirect_dir=off",
                "/m"
            ]
        );
    }

    #[test]
    fn placeholders_join_within_a_word() {
        let t =
            Template::parse("fuse-overlayfs -f -o lowerdir={lowerdir},upperdir={upperdir},workdir={workdir} {merged}")
                .unwrap();
        assert_eq!(t.argv(&values())[3], "lowerdir=/l/1:/l/0,upperdir=/l/2,workdir=/w/2");
        let t = Template::parse("fuse-overlayfs -f -o {dirs} {merged}").unwrap();
        assert_eq!(t.argv(&values())[3], "lowerdir=/l/1:/l/0,upperdir=/l/2,workdir=/w/2");
    }

    #[test]
    fn quotes_and_backslashes_make_one_word_without_a_shell() {
        let t = Template::parse(r#"prog 'a b' "c \"d\" \n" e\ f $HOME * {{x}}"#).unwrap();
        assert_eq!(t.argv(&values()), ["prog", "a b", "c \"d\" \\n", "e f", "$HOME", "*", "{x}"]);
        assert_eq!(Template::parse("prog ''").unwrap().argv(&values()), ["prog", ""]);
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (t, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("prog 'a", "unclosed '"),
            ("prog \"a", "unclosed \""),
            ("prog a\\", "at the end"),
            ("prog {lower}", "unknown placeholder {lower}"),
            ("prog {merged", "unclosed {"),
            ("prog a}", "lone }"),
            ("{merged} x", "program name"),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.contains(why), "{t:?}: {e}");
        }
    }
}
