//! Building a scenario from backend commands (and, optionally, their replies).

use super::record::fill;
use super::runner::{Obs, SetupError, StepObs, Trace};
use super::{Action, Check, MountChange, MountSpec, Scenario, Step};
use crate::backend::{Command, Reply};
use crate::ops::{FdOp, Op, Outcome};

/// Builds the scenario of `commands`; returns it with, for each command, the index of the
/// step it became (if it became one). A first mount whose reply is a refusal becomes a step.
fn build(name: &str, rule: &str, commands: &[Command], replies: Option<&[Reply]>) -> (Scenario, Vec<Option<usize>>) {
    let mut s = Scenario::new(name, rule);
    let mut spec: Option<MountSpec> = None;
    let mut started = false;
    let mut step_of = Vec::with_capacity(commands.len());
    // The handles that may be open: `Command::Unmount` closes them first, a scenario's
    // `unmount` does not (it is refused while they are open), so they are closed by steps.
    let mut open: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for (k, cmd) in commands.iter().enumerate() {
        let mut before = s.steps.len();
        if let Command::Op(Op::Fd(f)) | Command::OpAs { op: Op::Fd(f), .. } = cmd {
            let failed = matches!(replies.and_then(|r| r.get(k)), Some(Reply::Outcome(Outcome::Err(_))));
            match f {
                FdOp::Open { fd, .. } | FdOp::OpenByHandle { fd, .. } if !failed => {
                    open.insert(fd.clone());
                }
                FdOp::Open { fd, .. } | FdOp::OpenByHandle { fd, .. } | FdOp::Close { fd } => {
                    open.remove(fd);
                }
                _ => {}
            }
        }
        match cmd {
            Command::Layer { name, content } => {
                let existing = s.layers.iter().position(|(n, _)| n == name);
                match (started, existing) {
                    (false, Some(i)) => s.layers[i].1 = content.clone(),
                    (_, None) => s.layers.push((name.clone(), content.clone())),
                    (true, Some(_)) => s.steps.push(Step::new(Action::Edit {
                        layer: name.clone(),
                        replace: Some(content.clone()),
                        edits: Vec::new(),
                    })),
                }
            }
            Command::Mount { lowers, upper, options } => {
                let new = MountSpec {
                    lowers: lowers.clone(),
                    upper: upper.clone(),
                    options: *options,
                    data: None,
                    fsconfig: None,
                };
                let refused = matches!(replies.and_then(|r| r.get(k)), Some(Reply::MountRefused(_)));
                if !started && !refused {
                    s.mount = Some(new.clone());
                } else {
                    // Against the previous mount, or against the defaults for a first one.
                    // After an option string, the whole mount (an empty change repeats it).
                    let (lowers, upper, options) = match &spec {
                        Some(p) if p.data.is_none() && p.fsconfig.is_none() => (Some(&p.lowers), &p.upper, p.options),
                        _ => (None, &None, Default::default()),
                    };
                    let whole = spec.as_ref().is_some_and(|p| p.data.is_some() || p.fsconfig.is_some());
                    let change = MountChange {
                        lowers: (lowers != Some(&new.lowers)).then(|| new.lowers.clone()),
                        upper: (whole || upper != &new.upper).then(|| new.upper.clone()),
                        options: (whole || options != new.options).then_some(new.options),
                        data: None,
                        fsconfig: None,
                    };
                    s.steps.push(Step::new(Action::Mount(change)));
                }
                spec = Some(new);
                started = true;
            }
            Command::MountData { data, fsconfig } => {
                let new = match fsconfig {
                    Some(calls) => MountSpec::from_fsconfig(calls),
                    None => MountSpec::from_data(data),
                };
                let refused =
                    matches!(replies.and_then(|r| r.get(k)), Some(Reply::MountRefused(_) | Reply::CallRefused { .. }));
                if !started && !refused {
                    s.mount = Some(new.clone());
                } else {
                    let change = match fsconfig {
                        Some(calls) => MountChange { fsconfig: Some(calls.clone()), ..MountChange::default() },
                        None => MountChange { data: Some(data.clone()), ..MountChange::default() },
                    };
                    s.steps.push(Step::new(Action::Mount(change)));
                }
                spec = Some(new);
                started = true;
            }
            Command::Unmount => {
                for fd in std::mem::take(&mut open) {
                    s.steps.push(Step::new(Action::Op(Op::Fd(FdOp::Close { fd }))));
                }
                before = s.steps.len();
                s.steps.push(Step::new(Action::Unmount));
                started = true;
            }
            Command::Op(op) => {
                s.steps.push(Step::new(Action::Op(op.clone())));
                started = true;
            }
            Command::OpAs { cred, op } => {
                let mut step = Step::new(Action::Op(op.clone()));
                step.as_user = Some(crate::cred::User { uid: cred.uid, gid: cred.gid, groups: cred.groups.clone() });
                step.umask = Some(cred.umask);
                s.steps.push(step);
                started = true;
            }
            Command::Edit { layer, edit } => {
                s.steps.push(Step::new(Action::Edit {
                    layer: layer.clone(),
                    replace: None,
                    edits: vec![edit.clone()],
                }));
                started = true;
            }
            Command::DumpMerged => {
                s.steps.push(Step::new(Action::Check(Check { merged: Some(None), upper: None, index: None })));
                started = true;
            }
            Command::DropCaches => {
                s.steps.push(Step::new(Action::DropCaches));
                started = true;
            }
            Command::DumpLayer { name } => {
                if spec.as_ref().and_then(|m| m.upper.as_ref()) == Some(name) {
                    s.steps.push(Step::new(Action::Check(Check { merged: None, upper: Some(None), index: None })));
                }
                started = true;
            }
        }
        step_of.push((s.steps.len() > before).then_some(before));
    }
    (s, step_of)
}

impl Scenario {
    /// A scenario that replays `commands`, with no expectations yet (fill them in with
    /// [`super::record`], then write the result with [`Scenario::to_yaml`]).
    ///
    /// `Layer` commands before the first mount or step become the scenario's layers; a later
    /// `Layer` for a new name is added to the layers too (it is not used before), and one for
    /// an existing name becomes an `edit` step with `replace`. The first `Mount` becomes the
    /// scenario's `mount`; later ones become `mount` steps listing what changed. `DumpMerged`
    /// becomes a `check` of the merged view and `DumpLayer` of the current upper a `check` of
    /// the upper; `DumpLayer` of another layer is left out (overlayfs never writes a lower).
    pub fn from_commands(name: &str, rule: &str, commands: &[Command]) -> Scenario {
        build(name, rule, commands, None).0
    }

    /// A scenario that replays the commands of `trace`, with each reply as the expectation
    /// of its step (for example, the kernel's replies to a case the property tests shrank):
    /// outcomes become `expect`, a refused mount its errno, and `DumpMerged` / `DumpLayer`
    /// replies the trees of `check` steps. Inode labels are given as [`super::record`]
    /// gives them. Built as [`Scenario::from_commands`] builds; a first mount that was
    /// refused becomes a step. Replies that do not fit their command (a backend error
    /// turned into a reply, say) leave the step without an expectation.
    pub fn from_replies(name: &str, rule: &str, trace: &[(Command, Reply)]) -> Scenario {
        let commands: Vec<Command> = trace.iter().map(|(c, _)| c.clone()).collect();
        let replies: Vec<Reply> = trace.iter().map(|(_, r)| r.clone()).collect();
        let (mut s, step_of) = build(name, rule, &commands, Some(&replies));
        let mut steps: Vec<StepObs> =
            s.steps.iter().map(|_| StepObs { obs: Ok(Obs::Done), events: Vec::new() }).collect();
        for ((cmd, reply), at) in trace.iter().zip(step_of) {
            let Some(i) = at else { continue };
            let obs = match (cmd, reply) {
                (Command::Op(_) | Command::OpAs { .. }, Reply::Outcome(o)) => Obs::Outcome(o.clone()),
                (Command::Mount { .. }, Reply::Done) => Obs::Mount(Ok(())),
                (Command::Mount { .. }, Reply::MountRefused(e)) => Obs::Mount(Err(*e)),
                (Command::MountData { .. }, Reply::Done) => Obs::Mount(Ok(())),
                (Command::MountData { .. }, Reply::MountRefused(e)) => Obs::Mount(Err(*e)),
                (Command::MountData { .. }, Reply::CallRefused { call, errno }) => Obs::CallRefused(*call, *errno),
                (Command::DumpMerged, Reply::Merged(m)) => Obs::Trees { merged: Some(m.clone()), upper: None },
                (Command::DumpLayer { .. }, Reply::Layer(l)) => Obs::Trees { merged: None, upper: Some(l.clone()) },
                _ => Obs::Done,
            };
            steps[i].obs = Ok(obs);
        }
        let t = Trace {
            backend: String::new(),
            setup: Ok::<(), SetupError>(()),
            steps,
            final_trees: None,
            final_index: None,
        };
        fill(&mut s, &t, None, None);
        s
    }
}
