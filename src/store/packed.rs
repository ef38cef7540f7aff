//! Log records packed on the serving thread that built them, read back without
//! unpacking their strings. The log writer hands these bytes to the store as they are,
//! and redb keeps them.

use crate::record::{LogOutcome, LogRecord};
use crate::usage::Tokens;
use serde::{Deserialize, Serialize};

/// How log records are packed, for the writer and in the redb file: a tag byte, then the
/// record in postcard (compact and positional: changing `LogRecord` means a new tag and
/// a new redb format version).
pub const LOG_POSTCARD_V1: u8 = 1;

/// Log records packed on the thread that built them, one after another (each a tag byte
/// then postcard): a serving thread fills one and hands it to the log writer whole, so
/// records cross threads (and are freed there) a chunk at a time. The writer and the
/// stores read what they need through [`PackedRecord::head`] without unpacking strings,
/// and redb keeps these very bytes.
#[derive(Debug, Clone, Default)]
pub struct PackedLogs {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<u32>,
}

impl PackedLogs {
    /// Room for `records` typical records, so packing does not grow the buffer step by step.
    pub fn with_capacity(records: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(records * 320),
            ends: Vec::with_capacity(records),
        }
    }

    /// Packs a [`LogRecord`], or a record that serialises as one (a borrowed view).
    pub fn push(&mut self, rec: &impl Serialize) {
        let mut bytes = std::mem::take(&mut self.bytes);
        bytes.push(LOG_POSTCARD_V1);
        self.bytes = postcard::to_extend(rec, bytes).expect("log records always serialise");
        self.ends.push(self.bytes.len() as u32);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = PackedRecord<'_>> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| PackedRecord(&self.bytes[start as usize..end as usize]))
    }
}

/// One record of a [`PackedLogs`].
#[derive(Debug, Clone, Copy)]
pub struct PackedRecord<'a>(&'a [u8]);

impl<'a> PackedRecord<'a> {
    /// A record as [`PackedLogs`] packed it (a tag byte then postcard), e.g. read back.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    /// Tag byte and postcard, as redb stores it.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The fields that place the record and feed its statistics bucket, borrowed.
    pub fn head(&self) -> Option<LogHead<'a>> {
        postcard::from_bytes(self.0.get(1..)?).ok()
    }

    pub fn unpack(&self) -> Option<LogRecord> {
        postcard::from_bytes(self.0.get(1..)?).ok()
    }
}

/// Packs records into one chunk (for `migrate` and tests; the log writer gets chunks the
/// serving threads packed).
pub fn pack_all(records: &[LogRecord]) -> Vec<PackedLogs> {
    let mut chunk = PackedLogs::with_capacity(records.len());
    records.iter().for_each(|r| chunk.push(r));
    vec![chunk]
}

/// The leading fields of a packed [`LogRecord`], in its field order (postcard is
/// positional; the unit test `packed_head_reads_the_record` holds the two together).
#[derive(Debug, Deserialize)]
pub struct LogHead<'a> {
    pub request_id: &'a str,
    pub time: i64,
    #[serde(borrow)]
    pub user: Option<&'a str>,
    _route: &'a str,
    pub model: &'a str,
    _stream: bool,
    _status: u16,
    pub outcome: LogOutcome,
    pub latency_ms: f64,
    _ttfb_ms: Option<f64>,
    pub tokens: Tokens,
    #[serde(borrow)]
    pub key_id: Option<&'a str>,
}

/// Each record of a batch with its head; a record that does not unpack (never expected:
/// it was packed by this build moments ago) is left out of the store with an error logged.
pub fn heads(chunks: &[PackedLogs]) -> Vec<(PackedRecord<'_>, LogHead<'_>)> {
    let total: usize = chunks.iter().map(PackedLogs::len).sum();
    let mut heads = Vec::with_capacity(total);
    heads.extend(
        chunks
            .iter()
            .flat_map(PackedLogs::records)
            .filter_map(|r| Some((r, r.head()?))),
    );
    if heads.len() < total {
        tracing::error!(
            skipped = total - heads.len(),
            "log records that did not unpack were skipped"
        );
    }
    heads
}
