//! The kernel worker: one process with a private mount namespace that carries out
//! [`ovlsim::backend::Command`]s on a real overlay. Started by
//! [`ovlsim::kernel::KernelBackend`]; see [`ovlsim::kernel`].

fn main() -> std::process::ExitCode {
    ovlsim::kernel::worker_main()
}
