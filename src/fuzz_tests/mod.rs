//! Property tests over the parsers that see hostile input: the route parser, the config
//! parser, usage extraction and pasted-key extraction (`parsers`), the upstream error
//! classifier (`classifier`), and the stream relay's framing (`framing`: SSE and JSON-array
//! streams split at every possible place, cut anywhere). Each runs a fixed number of cases
//! as an ordinary `cargo test`.

use proptest::prelude::*;

mod classifier;
mod framing;
mod parsers;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
