//! The real-mount backend. (Being written.)
