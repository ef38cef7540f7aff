//! Watching an answer on its way out for its usage block: the last stream event that
//! mentions `"usage` or, for a non-stream answer, its last [`TAIL_LIMIT`] bytes, parsed
//! once when the answer ends.

use crate::usage::{self, Tokens};
use bytes::Bytes;
use std::collections::VecDeque;

/// How much of a non-stream answer's end is kept to find its usage block.
const TAIL_LIMIT: usize = 64 * 1024;

pub(super) struct UsageWatch {
    /// Keep the answer's tail (non-stream) rather than the last event naming usage.
    passthrough: bool,
    /// The last event that mentioned usage (streams).
    usage_unit: Bytes,
    /// The older units of a non-stream answer's end, at most [`TAIL_LIMIT`] bytes in all.
    tail: VecDeque<Bytes>,
    /// The newest unit of the tail, apart: a one-piece answer needs no list.
    tail_last: Option<Bytes>,
    tail_len: usize,
}

impl UsageWatch {
    pub(super) fn new(passthrough: bool) -> Self {
        Self {
            passthrough,
            usage_unit: Bytes::new(),
            tail: VecDeque::new(),
            tail_last: None,
            tail_len: 0,
        }
    }

    /// Notes a unit on its way out (or held back) where usage may be.
    pub(super) fn seen(&mut self, unit: &Bytes) {
        if self.passthrough {
            if let Some(previous) = self.tail_last.replace(unit.clone()) {
                self.tail.push_back(previous);
            }
            self.tail_len += unit.len();
            while self.tail_len > TAIL_LIMIT {
                let Some(old) = self.tail.pop_front() else {
                    break;
                };
                self.tail_len -= old.len();
            }
        } else if memchr::memmem::find(unit, b"\"usage").is_some() {
            self.usage_unit = unit.clone();
        }
    }

    /// The usage the answer reported, from what was seen.
    pub(super) fn tokens(&self) -> Option<Tokens> {
        if !self.passthrough {
            return usage::parse(&self.usage_unit);
        }
        match (&self.tail_last, self.tail.is_empty()) {
            (None, _) => None,
            (Some(last), true) => usage::parse(last),
            (Some(last), false) => {
                let mut tail = Vec::with_capacity(self.tail_len);
                self.tail.iter().for_each(|b| tail.extend_from_slice(b));
                tail.extend_from_slice(last);
                usage::parse(&tail)
            }
        }
    }
}
