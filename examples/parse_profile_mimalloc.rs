//! parse_profile on the heap the `ovlsim` binary uses (mimalloc, `src/main.rs`), where the
//! plain example uses the system's: malloc and free are about a quarter of parsing there.
//!
//! Run: `cargo run --release --example parse_profile_mimalloc -- [parse|events|yaml] [ROUNDS]`.

#[cfg(target_os = "linux")]
#[global_allocator]
static HEAP: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "parse_profile.rs"]
mod profile;

fn main() {
    profile::main();
}
