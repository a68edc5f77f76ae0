//! The worker protocol's version and its handshake (see `docs/worker-protocol.md`).
//!
//! A worker is any program that speaks the protocol: the `ovlsim` binary's own
//! `kernel-worker`, or a stand-in written in another language. Its first line on stdout is a
//! [`Hello`], `{"ovlsim-worker":1,"worker":"..."}`, naming the protocol and its version;
//! the backend refuses to go on with a worker that says anything else (or an `Err` reply,
//! which is how a worker reports that it could not set up). After the hello come the
//! commands, one JSON line each way, as [`crate::backend::Command`] and
//! `Result<Reply, BackendError>` serialise.

use crate::backend::{BackendError, Reply};
use serde::{Deserialize, Serialize};

/// The protocol's name: the key of the hello line.
pub const PROTOCOL_NAME: &str = "ovlsim-worker";

/// The protocol version this `ovlsim` speaks. It changes when a command or a reply changes
/// shape or meaning; a backend talks only to a worker of the same version.
pub const PROTOCOL_VERSION: u32 = 1;

/// The worker's first line: the protocol version it speaks, and what it is (free text, for
/// error messages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// The protocol version ([`PROTOCOL_VERSION`]).
    #[serde(rename = "ovlsim-worker")]
    pub version: u32,
    /// What the worker is, e.g. `ovlsim 0.1.0 kernel-worker`.
    pub worker: String,
}

impl Hello {
    /// The hello of a worker of this protocol version.
    pub fn new(worker: &str) -> Hello {
        Hello { version: PROTOCOL_VERSION, worker: worker.to_owned() }
    }
}

/// How a worker's first line reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstLine {
    /// A hello of this protocol version.
    Hello(Hello),
    /// A worker that could not set up, and why.
    SetupFailed(BackendError),
}

/// Reads a worker's first line: a [`Hello`] of [`PROTOCOL_VERSION`], or the `Err` reply of
/// a worker that could not set up. Anything else (another version, the unversioned
/// `{"Ok":"Done"}` of ovlsim before the protocol had a version, a line that is not JSON) is
/// an error that says what was expected and what came.
pub fn read_first_line(line: &str) -> Result<FirstLine, String> {
    let shown: String = line.chars().take(200).collect();
    if let Ok(hello) = serde_json::from_str::<Hello>(line) {
        if hello.version != PROTOCOL_VERSION {
            return Err(format!(
                "the worker ({}) speaks {PROTOCOL_NAME} protocol version {}; this ovlsim speaks version \
                 {PROTOCOL_VERSION} (see docs/worker-protocol.md)",
                hello.worker, hello.version
            ));
        }
        return Ok(FirstLine::Hello(hello));
    }
    match serde_json::from_str::<Result<Reply, BackendError>>(line) {
        Ok(Err(e)) => Ok(FirstLine::SetupFailed(e)),
        Ok(Ok(_)) => Err(format!(
            "the worker's first line is {shown:?}, a reply of the unversioned protocol (ovlsim before \
             {PROTOCOL_NAME} version 1); expected a hello such as {}",
            expected()
        )),
        Err(_) => Err(format!(
            "the worker's first line is {shown:?}, not a hello of the {PROTOCOL_NAME} protocol (expected \
             {}; see docs/worker-protocol.md)",
            expected()
        )),
    }
}

/// The hello this version expects, as JSON.
fn expected() -> String {
    serde_json::to_string(&Hello::new("...")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_of_this_version_is_read() {
        let line = r#"{"ovlsim-worker":1,"worker":"a test"}"#;
        assert_eq!(read_first_line(line), Ok(FirstLine::Hello(Hello::new("a test"))));
        assert_eq!(serde_json::to_string(&Hello::new("a test")).unwrap(), line);
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let e = read_first_line(r#"{"ovlsim-worker":2,"worker":"future"}"#).unwrap_err();
        assert!(e.contains("version 2") && e.contains("speaks version 1"), "{e}");
    }

    #[test]
    fn the_unversioned_first_line_is_refused() {
        let e = read_first_line(r#"{"Ok":"Done"}"#).unwrap_err();
        assert!(e.contains("unversioned"), "{e}");
        let e = read_first_line("hello").unwrap_err();
        assert!(e.contains("not a hello"), "{e}");
    }

    #[test]
    fn a_setup_failure_is_passed_on() {
        let r = read_first_line(r#"{"Err":{"Failed":"unshare: EPERM"}}"#);
        assert_eq!(r, Ok(FirstLine::SetupFailed(BackendError::Failed("unshare: EPERM".into()))));
    }
}
