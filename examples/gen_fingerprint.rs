//! A fingerprint of the cases the fuzzer's generator draws with the default
//! [`GenConfig`](ovlsim::fuzz::GenConfig): for seeds 0..N, the case start and up to 40
//! transitions (each drawn from the state the previous ones left, as the fuzzer draws them),
//! hashed together. A change to the generator that must not change the default draws
//! (a new arm switched off by default) leaves this number the same. The draws (and this
//! number) changed once on purpose, when the generator began to draw straight from the RNG
//! (issue 12): every seed draws another case since.
//!
//! `cargo run --release --example gen_fingerprint [N]` (N = 500 by default).

use ovlsim::fuzz::{rng_for, ModelMachine};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use std::hash::{DefaultHasher, Hash, Hasher};

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let mut all = DefaultHasher::new();
    let mut steps = 0usize;
    for seed in 0..n {
        let mut runner = TestRunner::new_with_rng(Config::default(), rng_for(seed));
        let Ok(tree) = ModelMachine::init_state().new_tree(&mut runner) else { continue };
        let mut state = tree.current();
        format!("{:?}", state.start).hash(&mut all);
        for _ in 0..40 {
            let Ok(tree) = ModelMachine::transitions(&state).new_tree(&mut runner) else { break };
            let t = tree.current();
            if !ModelMachine::preconditions(&state, &t) {
                continue;
            }
            format!("{t:?}").hash(&mut all);
            steps += 1;
            state = ModelMachine::apply(state, &t);
        }
    }
    println!("{n} cases, {steps} transitions, fingerprint {:016x}", all.finish());
}
