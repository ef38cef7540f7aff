//! The error of a body, and of a connection one is read from: any error, boxed. A leaf:
//! it imports nothing of the crate, so both the relay and the upstream client use it.

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
