//! profile_model on the heap the `ovlsim` binary uses (mimalloc, `src/main.rs`), where the
//! plain example uses the system's. Same arguments (`examples/profile_model/body.rs`).
//!
//! Run: `cargo run --release --example profile_model_mimalloc -- [scenarios|cases|both|by-command] [rounds]`.

#[path = "profile_model/body.rs"]
mod body;

#[cfg(target_os = "linux")]
#[global_allocator]
static GLOBAL: body::Counting<mimalloc::MiMalloc> = body::Counting(mimalloc::MiMalloc);

fn main() {
    body::main();
}
