//! Shared test helpers: the kernel tier's gate.

use ovlsim::kernel::{KernelBackend, WorkerCommand};

/// Whether the kernel tier runs here ([`KernelBackend::gate`], with this package's `ovlsim`
/// binary as the worker): after a loud skip notice, false; under `OVLSIM_REQUIRE_KERNEL=1` (set by
/// `.ci/run`) a kernel that cannot run is a failure, never a skip.
#[allow(dead_code)]
pub fn kernel_runs(what: &str) -> bool {
    KernelBackend::gate(what, WorkerCommand::cli(env!("CARGO_BIN_EXE_ovlsim")))
}

/// A kernel backend, or `None` after a loud skip notice when the kernel tier cannot run
/// here (see [`kernel_runs`]).
#[allow(dead_code)]
pub fn kernel_or_skip(what: &str) -> Option<KernelBackend> {
    if !kernel_runs(what) {
        return None;
    }
    match KernelBackend::new() {
        Ok(k) => Some(k),
        Err(e) => panic!("the kernel tier is available but the backend failed to start: {e}"),
    }
}
