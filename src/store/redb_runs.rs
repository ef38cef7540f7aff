//! Runs of log records in the redb file (see `redb_logs`): how a batch is cut
//! into runs, how a run is laid out, and how one is read back.
//!
//! A run's value: the record count (u32), each record's end offset (u32 each), then the
//! records (a tag byte and postcard each, as packed on the serving thread), in key order.
//! Its key: the newest arrival time (Unix ms) shifted left by [`SEQ_BITS`], plus a
//! sequence number for runs whose newest record arrived in the same millisecond. Its
//! `log_run_meta` row: the oldest arrival time (i64), the count (u32) and flags (u8),
//! little-endian, so look-ups and pruning choose runs without reading them.

use super::StoreError;
use super::logs::time_in_request_id;
use super::packed::{LogHead, PackedRecord};
use super::redb::{LOG_RUN_META, LOG_RUNS, backend};
use crate::record::LogRecord;
use redb::ReadableTable;

/// Low bits of a run (or batch) key that number runs ending in the same millisecond.
pub(super) const SEQ_BITS: u32 = 12;
/// The most arrival time one run covers (newest − oldest): a record is in a run whose
/// key time is at most this much after its own.
pub(super) const RUN_SPAN_MS: i64 = 60_000;
/// A meta flag: some record of the run has an id without its time in front, so it has a
/// `log_ids` row (removed with the record).
const HAS_ID_ROWS: u8 = 1;

/// The first run key for `time` (Unix ms); saturates for times beyond any run.
pub(super) fn run_key(time: i64) -> u64 {
    u64::try_from(time.max(0))
        .ok()
        .and_then(|t| t.checked_mul(1 << SEQ_BITS))
        .unwrap_or(u64::MAX)
}

/// The newest arrival time of the run with this key.
pub(super) fn key_time(key: u64) -> i64 {
    (key >> SEQ_BITS) as i64
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    pub oldest: i64,
    pub count: u32,
    flags: u8,
}

impl Meta {
    fn to_bytes(self) -> [u8; 13] {
        let mut out = [0u8; 13];
        out[..8].copy_from_slice(&self.oldest.to_le_bytes());
        out[8..12].copy_from_slice(&self.count.to_le_bytes());
        out[12] = self.flags;
        out
    }

    pub fn parse(key: u64, bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("log run {key:x}"), "meta".into());
        if bytes.len() != 13 {
            return Err(corrupt());
        }
        Ok(Self {
            oldest: i64::from_le_bytes(bytes[..8].try_into().map_err(|_| corrupt())?),
            count: u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| corrupt())?),
            flags: bytes[12],
        })
    }

    pub fn has_id_rows(self) -> bool {
        self.flags & HAS_ID_ROWS != 0
    }
}

type Head<'a> = (PackedRecord<'a>, LogHead<'a>);

/// Writes `heads` (in key order) as runs of at most [`RUN_SPAN_MS`] each.
pub(super) fn write(
    runs: &mut redb::Table<u64, &[u8]>,
    metas: &mut redb::Table<u64, &[u8]>,
    ids: &mut redb::Table<&str, &str>,
    heads: &[Head<'_>],
) -> Result<(), StoreError> {
    let mut rest = heads;
    while let Some((_, first)) = rest.first() {
        let n = rest
            .iter()
            .position(|(_, h)| h.time - first.time > RUN_SPAN_MS)
            .unwrap_or(rest.len());
        let (run, next) = rest.split_at(n);
        write_one(runs, metas, ids, run)?;
        rest = next;
    }
    Ok(())
}

fn write_one(
    runs: &mut redb::Table<u64, &[u8]>,
    metas: &mut redb::Table<u64, &[u8]>,
    ids: &mut redb::Table<&str, &str>,
    run: &[Head<'_>],
) -> Result<(), StoreError> {
    let (Some((_, oldest)), Some((_, newest))) = (run.first(), run.last()) else {
        return Ok(());
    };
    let mut key = run_key(newest.time);
    while metas.get(key).map_err(backend)?.is_some() {
        key += 1;
    }
    let index = 4 + 4 * run.len();
    let len = index + run.iter().map(|(r, _)| r.as_bytes().len()).sum::<usize>();
    let mut value = runs.insert_reserve(key, len).map_err(backend)?;
    let out = value.as_mut();
    out[..4].copy_from_slice(&(run.len() as u32).to_le_bytes());
    let mut end = 0;
    let mut flags = 0;
    let mut id_key = String::new();
    for (i, (rec, head)) in run.iter().enumerate() {
        let bytes = rec.as_bytes();
        out[index + end..index + end + bytes.len()].copy_from_slice(bytes);
        end += bytes.len();
        out[4 + 4 * i..8 + 4 * i].copy_from_slice(&(end as u32).to_le_bytes());
        if time_in_request_id(head.request_id) != Some(head.time) {
            flags |= HAS_ID_ROWS;
            id_key.clear();
            super::logs::push_log_key(&mut id_key, head.time, head.request_id);
            ids.insert(head.request_id, id_key.as_str())
                .map_err(backend)?;
        }
    }
    drop(value);
    let meta = Meta {
        oldest: oldest.time,
        count: run.len() as u32,
        flags,
    };
    metas
        .insert(key, meta.to_bytes().as_slice())
        .map_err(backend)?;
    Ok(())
}

/// One record of a loaded run: its key and where it lies.
#[derive(Debug)]
pub(super) struct Entry {
    pub time: i64,
    pub id: String,
    start: usize,
    end: usize,
}

/// A run read into memory, its records in key order.
pub(super) struct Run {
    key: u64,
    bytes: Vec<u8>,
    pub entries: Vec<Entry>,
}

impl Run {
    /// Reads run `key`; only records for which `keep(time, id)` holds are listed.
    pub fn load(
        key: u64,
        value: &[u8],
        keep: impl Fn(i64, &str) -> bool,
    ) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("log run {key:x}"), what.into());
        let count = value
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| corrupt("no count"))?;
        let index = 4 + 4 * count;
        let ends = value.get(4..index).ok_or_else(|| corrupt("short index"))?;
        let records = &value[index..];
        let mut entries = Vec::with_capacity(count);
        let mut start = 0;
        for end in ends.chunks_exact(4) {
            let end = u32::from_le_bytes(end.try_into().expect("4 bytes")) as usize;
            let bytes = records
                .get(start..end)
                .ok_or_else(|| corrupt("record outside the run"))?;
            let head = PackedRecord::new(bytes)
                .head()
                .ok_or_else(|| corrupt("record does not unpack"))?;
            if keep(head.time, head.request_id) {
                entries.push(Entry {
                    time: head.time,
                    id: head.request_id.to_owned(),
                    start: index + start,
                    end: index + end,
                });
            }
            start = end;
        }
        Ok(Self {
            key,
            bytes: value.to_vec(),
            entries,
        })
    }

    pub fn record(&self, e: &Entry) -> Result<LogRecord, StoreError> {
        PackedRecord::new(&self.bytes[e.start..e.end])
            .unpack()
            .ok_or_else(|| StoreError::Corrupt(format!("log run {:x}", self.key), "record".into()))
    }

    /// The listed records, packed as they were (for rewriting a run).
    pub fn packed(&self) -> impl Iterator<Item = PackedRecord<'_>> {
        self.entries
            .iter()
            .map(|e| PackedRecord::new(&self.bytes[e.start..e.end]))
    }
}

/// The runs that can hold a record that arrived at `time`, with their keys.
fn runs_holding(
    metas: &impl ReadableTable<u64, &'static [u8]>,
    time: i64,
) -> Result<Vec<u64>, StoreError> {
    let keys = run_key(time)..run_key(time.saturating_add(RUN_SPAN_MS + 1));
    Ok(meta_rows(metas, keys, usize::MAX)?
        .into_iter()
        .filter(|(_, m)| m.oldest <= time)
        .map(|(k, _)| k)
        .collect())
}

/// The record `(time, id)` from the runs, if one holds it.
pub(super) fn find(
    runs: &impl ReadableTable<u64, &'static [u8]>,
    metas: &impl ReadableTable<u64, &'static [u8]>,
    time: i64,
    id: &str,
) -> Result<Option<LogRecord>, StoreError> {
    for key in runs_holding(metas, time)? {
        let Some(value) = runs.get(key).map_err(backend)? else {
            continue;
        };
        let run = Run::load(key, value.value(), |t, i| t == time && i == id)?;
        if let Some(e) = run.entries.first() {
            return run.record(e).map(Some);
        }
    }
    Ok(None)
}

/// Removes the records older than `before` from the runs: whole runs whose newest record
/// is older (up to `most` runs), then the runs that straddle `before`, rewritten with
/// their recent records only. Answers the records removed and whether old runs are left.
pub(super) fn prune(
    txn: &redb::WriteTransaction,
    ids: &mut redb::Table<&str, &str>,
    before: i64,
    most: usize,
) -> Result<(usize, bool), StoreError> {
    let mut runs = txn.open_table(LOG_RUNS).map_err(backend)?;
    let mut metas = txn.open_table(LOG_RUN_META).map_err(backend)?;
    let mut removed = 0;
    let old = meta_rows(&metas, ..run_key(before), most)?;
    for (key, meta) in &old {
        if meta.has_id_rows() {
            drop_ids(&runs, ids, *key, |_| true)?;
        }
        runs.remove(key).map_err(backend)?;
        metas.remove(key).map_err(backend)?;
        removed += meta.count as usize;
    }
    if old.len() == most {
        return Ok((removed, true));
    }
    let near = run_key(before)..run_key(before.saturating_add(RUN_SPAN_MS + 1));
    let straddling = meta_rows(&metas, near, usize::MAX)?;
    for (key, meta) in straddling.into_iter().filter(|(_, m)| m.oldest < before) {
        if meta.has_id_rows() {
            drop_ids(&runs, ids, key, |t| t < before)?;
        }
        let kept = match runs.get(key).map_err(backend)? {
            Some(v) => Run::load(key, v.value(), |t, _| t >= before)?,
            None => continue,
        };
        let packed: Vec<_> = kept
            .packed()
            .map(|p| Ok((p, p.head().ok_or_else(|| backend("a kept record"))?)))
            .collect::<Result<_, StoreError>>()?;
        runs.remove(key).map_err(backend)?;
        metas.remove(key).map_err(backend)?;
        removed += meta.count as usize - packed.len();
        // The kept records' `log_ids` rows are written again as they were.
        write(&mut runs, &mut metas, ids, &packed)?;
    }
    Ok((removed, false))
}

/// Up to `most` meta rows in `keys`, oldest run first.
fn meta_rows(
    metas: &impl ReadableTable<u64, &'static [u8]>,
    keys: impl std::ops::RangeBounds<u64>,
    most: usize,
) -> Result<Vec<(u64, Meta)>, StoreError> {
    metas
        .range(keys)
        .map_err(backend)?
        .take(most)
        .map(|r| {
            let (k, v) = r.map_err(backend)?;
            Ok((k.value(), Meta::parse(k.value(), v.value())?))
        })
        .collect()
}

/// Forgets the `log_ids` rows of the records of run `key` that arrived at a time `gone`
/// selects.
fn drop_ids(
    runs: &redb::Table<u64, &[u8]>,
    ids: &mut redb::Table<&str, &str>,
    key: u64,
    gone: impl Fn(i64) -> bool,
) -> Result<(), StoreError> {
    let Some(v) = runs.get(key).map_err(backend)? else {
        return Ok(());
    };
    let run = Run::load(key, v.value(), |t, id| {
        gone(t) && time_in_request_id(id) != Some(t)
    })?;
    for e in &run.entries {
        ids.remove(e.id.as_str()).map_err(backend)?;
    }
    Ok(())
}
