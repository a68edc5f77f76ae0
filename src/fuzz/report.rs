//! Writing divergences to files, and the progress bar.

use super::case::{dumped_layers, final_commands, Answer, Case};
use super::compare::{answer_short, Divergence};
use crate::backend::{Backend, Command, Reply};
use crate::scenario::{record, Scenario};
use serde::Serialize;
use std::hash::{Hash, Hasher};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The default directory for divergence files, under the crate's `target/`.
pub const OUT_DIR_DEFAULT: &str = "target/ovlsim-divergences";

/// What a divergence file holds.
#[derive(Serialize)]
struct DivergenceFile<'a> {
    /// The divergence kind.
    signature: String,
    /// The first disagreement, when there is a structured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    divergence: Option<&'a Divergence>,
    /// What went wrong, in words.
    message: String,
    /// The case as generated (start and steps).
    case: &'a Case,
    /// Every command of the replay, setup and final checks included, up to the divergence.
    commands: Vec<Command>,
}

/// The file names for a divergence: `<signature>-<hash of the case>`, without extension.
pub fn stem(signature: &str, case: &Case) -> String {
    let mut slug: String =
        signature.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    let slug = slug.trim_matches('-');
    let slug: String = slug.chars().take(60).collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(case).unwrap_or_default().hash(&mut h);
    format!("{slug}-{:08x}", h.finish() as u32)
}

/// The command list up to and including step `step` (all of it when `None`), for replay by
/// hand.
pub(crate) fn commands_until(case: &Case, step: Option<usize>) -> Vec<Command> {
    let mut all = case.commands();
    let mounted_at_end = {
        // Whether the case ends mounted, as the model saw it: enough to list the final
        // checks; the divergent step is what matters.
        let mut mounted = false;
        for c in &all {
            match c {
                Command::Mount { .. } | Command::MountData { .. } => mounted = true,
                Command::Unmount => mounted = false,
                _ => {}
            }
        }
        mounted
    };
    all.extend(final_commands(mounted_at_end, &dumped_layers(&case.start, &case.steps)));
    if let Some(step) = step {
        all.truncate(step + 1);
    }
    all
}

/// Writes the divergence of `case` under `dir` as `<stem>.json` (the case, the divergence
/// and the command list) and, when `yaml` is given (see [`scenario_yaml`]), as
/// `<stem>.yaml`, a scenario ready to replay. Returns the paths written, the scenario first.
pub fn write(dir: &Path, case: &Case, d: &Divergence, yaml: Option<&str>) -> std::io::Result<Vec<PathBuf>> {
    write_files(dir, case, &d.signature(), Some(d), &d.to_string(), yaml)
}

/// Writes a failure that has no structured divergence (a broken model invariant, or a
/// divergence that did not reproduce) as `<stem>.json`.
pub fn write_message(dir: &Path, case: &Case, signature: &str, message: &str) -> std::io::Result<Vec<PathBuf>> {
    write_files(dir, case, signature, None, message, None)
}

fn write_files(
    dir: &Path,
    case: &Case,
    signature: &str,
    d: Option<&Divergence>,
    message: &str,
    yaml: Option<&str>,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let stem = stem(signature, case);
    let mut out = Vec::new();
    if let Some(yaml) = yaml {
        let p = dir.join(format!("{stem}.yaml"));
        crate::persist::write_atomic(&p, yaml.as_bytes())?;
        out.push(p);
    }
    let file = DivergenceFile {
        signature: signature.to_owned(),
        divergence: d,
        message: message.to_owned(),
        case,
        commands: commands_until(case, d.map(|d| d.step)),
    };
    let p = dir.join(format!("{stem}.json"));
    let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
    crate::persist::write_atomic(&p, text.as_bytes())?;
    out.push(p);
    Ok(out)
}

/// The case, up to its divergent step, as a scenario YAML file whose expectations are the
/// kernel's answers (recorded by replaying it on `kernel`): it passes on the kernel and
/// fails on the model until the model is fixed. The divergent step carries the model's
/// answer as a note.
pub fn scenario_yaml(name: &str, case: &Case, d: &Divergence, kernel: &mut dyn Backend) -> Result<String, String> {
    let commands = commands_until(case, Some(d.step));
    let rule = format!(
        "Found by the differential fuzzer: the model and the {} disagree ({}).",
        super::machine::sut_label(),
        d.signature()
    );
    let mut s = Scenario::from_commands(name, &rule, &commands);
    let setup = case.start.setup().len();
    if d.step >= setup {
        if let Some(last) = s.steps.last_mut() {
            last.note = Some(match &d.model {
                Answer::Reply(Reply::Merged(_) | Reply::Layer(_)) => {
                    format!("the model differs: {}", d.detail)
                }
                other => format!("the model answers {}", answer_short(other)),
            });
        }
    }
    // The kernel may still be mounted from the replay that found the divergence.
    let _ = kernel.exec(&Command::Unmount);
    record(&mut s, kernel).map_err(|e| e.to_string())?;
    Ok(s.to_yaml())
}

/// A one-line progress bar on stderr, redrawn at most ten times a second.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    terminal: bool,
    total: u64,
    start: Instant,
    last: Option<Instant>,
    label: String,
    /// Cases done and divergences at the last draw.
    counts: (u64, usize),
}

impl Progress {
    /// A bar for `total` cases, drawn only when `enabled`. When stderr is not a terminal,
    /// the bar is a plain line every five seconds instead.
    pub fn new(enabled: bool, total: u64, label: &str) -> Progress {
        Progress {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            total,
            start: Instant::now(),
            last: None,
            label: label.to_owned(),
            counts: (0, 0),
        }
    }

    /// Redraws the bar (if due) with the counts of the last draw and a new note: progress
    /// within a long case.
    pub fn note(&mut self, note: &str) {
        let (done, divergences) = self.counts;
        self.draw(done, divergences, note, false);
    }

    /// Redraws the bar (if due, or if `force`).
    pub fn draw(&mut self, done: u64, divergences: usize, note: &str, force: bool) {
        self.counts = (done, divergences);
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let every = if self.terminal { Duration::from_millis(100) } else { Duration::from_secs(5) };
        if !force && self.last.is_some_and(|l| now - l < every) {
            return;
        }
        if !force && self.last.is_none() && !self.terminal {
            self.last = Some(now);
            return;
        }
        self.last = Some(now);
        let width = 30;
        let filled = (done.min(self.total) * width as u64).checked_div(self.total).map_or(width, |f| f as usize);
        let secs = self.start.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "{}{} [{}{}] {done}/{} cases  {rate:.0}/s  {divergences} divergence{}{}{}{}",
            if self.terminal { "\r" } else { "" },
            self.label,
            "#".repeat(filled),
            "-".repeat(width - filled),
            self.total,
            if divergences == 1 { "" } else { "s" },
            if note.is_empty() { "" } else { "  " },
            note,
            if self.terminal { "\x1b[K" } else { "\n" },
        );
        let _ = err.flush();
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.enabled && self.terminal {
            eprintln!();
        }
    }
}
