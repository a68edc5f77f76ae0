//! profile_model on the system's heap; the code is in `body.rs` (its doc says how to run it),
//! shared with `profile_model_mimalloc`.

#[path = "body.rs"]
mod body;

#[global_allocator]
static GLOBAL: body::Counting<std::alloc::System> = body::Counting(std::alloc::System);

fn main() {
    body::main();
}
