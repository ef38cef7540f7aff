//! Framing of Google's JSON-array stream (`[{…}\r\n,{…}]`, a stream asked for without
//! `alt=sse`) for the relay: where whole elements end, so a stream is only ever cut
//! between them. No I/O.

/// Incremental scanner for a JSON array streamed element by element. It remembers where
/// it stopped, so each byte is looked at once however the input is chunked.
#[derive(Default)]
pub(super) struct JsonScan {
    pos: usize,
    depth: u32,
    in_string: bool,
    escaped: bool,
    pub(super) closed: bool,
}

impl JsonScan {
    /// Scans new bytes; answers the end of the last whole element (or of the closing `]`).
    pub(super) fn scan(&mut self, buf: &[u8]) -> Option<usize> {
        let mut end = None;
        while self.pos < buf.len() && !self.closed {
            let b = buf[self.pos];
            self.pos += 1;
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => self.depth += 1,
                b']' | b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth <= 1 {
                        end = Some(self.pos);
                        self.closed = self.depth == 0;
                    }
                }
                _ => {}
            }
        }
        end
    }

    /// The caller removed the first `n` bytes of the buffer.
    pub(super) fn consumed(&mut self, n: usize) {
        self.pos -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_array_elements_split_however_the_bytes_arrive() {
        let stream = b"[{\"a\":\"x}]\\\"\"}\r\n,{\"b\":[1,{\"c\":2}]}\r\n]";
        for chunk in 1..stream.len() {
            let mut scan = JsonScan::default();
            let mut buf = Vec::new();
            let mut units = Vec::new();
            for piece in stream.chunks(chunk) {
                buf.extend_from_slice(piece);
                if let Some(end) = scan.scan(&buf) {
                    units.push(String::from_utf8(buf.drain(..end).collect()).unwrap());
                    scan.consumed(end);
                }
            }
            assert!(scan.closed, "chunk {chunk}");
            assert_eq!(units.concat(), String::from_utf8(stream.to_vec()).unwrap());
        }
    }
}
