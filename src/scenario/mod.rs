//! Scenario scripts. (Being written.)
