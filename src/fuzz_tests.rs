//! Property tests over the parsers that see hostile input (filled in by the reliability work).
