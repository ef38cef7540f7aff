//! SSE framing for the relay: where whole events end in what has arrived, so a stream is
//! only ever cut between events. Pure functions over bytes; no I/O.

/// The end of the first complete SSE event in `buf` (just past its blank line), if any.
fn boundary(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The end of the last complete SSE event in `buf` (a blank line: `\n\n` or `\n\r\n`),
/// if any, searching back from the end to `from` (bytes before it have none).
pub(super) fn last_boundary(buf: &[u8], from: usize) -> Option<usize> {
    memchr::memrchr_iter(b'\n', &buf[from..])
        .map(|i| from + i)
        .find(|&i| {
            (i >= 1 && buf[i - 1] == b'\n')
                || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n')
        })
        .map(|i| i + 1)
}

/// The byte ranges of the whole SSE events in `unit`.
pub(super) fn events(unit: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut events = Vec::new();
    let mut at = 0;
    while let Some(n) = boundary(&unit[at..]) {
        events.push(at..at + n);
        at += n;
    }
    if at < unit.len() {
        events.push(at..unit.len());
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_boundaries_accept_crlf_and_lf() {
        assert_eq!(boundary(b"data: {}\r\n\r\ndata: {"), Some(12));
        assert_eq!(boundary(b"data: 1\n\ndata: 2\n\n"), Some(9));
        assert_eq!(boundary(b"data: {\"a\":1}\r\n"), None);
        assert_eq!(
            last_boundary(b"data: 1\r\n\r\ndata: 2\n\ndata: 3", 0),
            Some(20)
        );
        assert_eq!(last_boundary(b"data: 1\r\n\r\ndata: 2", 0), Some(11));
        assert_eq!(last_boundary(b"data: 1\r\n\r\n", 0), Some(11));
        // A boundary split across reads is found once its last byte comes.
        assert_eq!(last_boundary(b"data: 1\r\n\r", 0), None);
        assert_eq!(last_boundary(b"data: 1\r\n\r\n", 8), Some(11));
        assert_eq!(last_boundary(b"data: 1\n\n", 7), Some(9));
        assert_eq!(last_boundary(b"\n", 0), None);
        assert_eq!(last_boundary(b"data: 3", 0), None);
        assert_eq!(events(b"data: 1\r\n\r\ndata: 2\n\n"), vec![0..11, 11..20]);
    }
}
