//! Shared test helpers: the kernel tier's gate.

use ovlsim::kernel::KernelBackend;

/// A kernel backend, or `None` after a loud skip notice when the kernel tier cannot run
/// here. With `OVLSIM_REQUIRE_KERNEL=1` (set by `.ci/run`) a kernel that cannot run is a
/// failure, never a skip.
#[allow(dead_code)]
pub fn kernel_or_skip(what: &str) -> Option<KernelBackend> {
    let required = std::env::var("OVLSIM_REQUIRE_KERNEL").is_ok_and(|v| v == "1");
    if let Err(why) = KernelBackend::available() {
        assert!(!required, "OVLSIM_REQUIRE_KERNEL=1 but the kernel tier cannot run: {why}");
        eprintln!("SKIPPED: {what}: the kernel tests need root and overlayfs: {why}");
        return None;
    }
    if std::env::var_os("OVLSIM_KERNEL_WORKER").is_none() {
        std::env::set_var("OVLSIM_KERNEL_WORKER", env!("CARGO_BIN_EXE_ovlsim-kernel-worker"));
    }
    match KernelBackend::new() {
        Ok(k) => Some(k),
        Err(e) => panic!("the kernel tier is available but the backend failed to start: {e}"),
    }
}
