//! The request log and statistics buckets in the redb file. A durable commit holds its
//! records together with every bucket update not yet written, so after each one the
//! statistics equal the sum of the log that was kept.
//!
//! Records are kept in runs (format 3): a batch's records in key order (arrival time,
//! request id), one after another as one value in `log_runs`, split so that no run spans
//! more than [`RUN_SPAN_MS`] of arrival times. A run's key is its newest arrival time;
//! `log_run_meta` keeps its oldest time and record count. There is no row per record:
//! a batch costs two inserts however many records it holds. Reads merge the runs that
//! overlap (the serving threads' batches interleave in time, and a long stream is logged
//! when it ends): the span bound says which runs can hold a given time.
//!
//! Statistics of a batch committed without waiting for the disk (between the log
//! writer's ticks) wait in memory and are written with the next durable commit: a crash
//! loses such batches and their statistics together, readers see statistics up to one
//! tick behind the log, and a bucket is rewritten once a tick, not once a batch (with
//! thousands of keys every batch touches thousands of buckets).
//!
//! Files from earlier versions keep their `logs` rows (one per record: the record inline
//! in JSON or postcard, or, in format 2, a pointer into `log_batches`); reads merge those
//! rows with the runs, and pruning removes them as before.

use super::StoreError;
use super::logs::{
    Bucket, BucketKey, LOG_POSTCARD_V1, LogQuery, PackedLogs, log_key, parse_stats_key, stats_key,
    time_in_request_id,
};
use super::redb::{RedbStore, backend, decode};
use super::redb_runs::{self as runs, LOG_RUN_META, LOG_RUNS, Meta, RUN_SPAN_MS, Run, run_key};
use crate::record::LogRecord;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::sync::Arc;

pub(super) const LOGS: TableDefinition<&str, &[u8]> = TableDefinition::new("logs");
/// Request id → log key, only for ids that do not start with their request's time (ids
/// from before that format, or imported ones); the others are found without it.
pub(super) const LOG_IDS: TableDefinition<&str, &str> = TableDefinition::new("log_ids");
pub(super) const STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats");
/// Format 2: batch key → the batch's packed records, one after another, each pointed to
/// by a `logs` row. The key is the newest arrival time in the batch (Unix ms) shifted
/// left by `SEQ_BITS`, plus a sequence number. Read and pruned, no longer written.
pub(super) const LOG_BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("log_batches");

/// A `logs` value that points into a batch: this tag, then the batch key (u64), the
/// record's offset and its length (u32 each), little-endian.
const LOG_IN_BATCH: u8 = 2;
const REF_LEN: usize = 1 + 8 + 4 + 4;

#[cfg(test)]
pub(super) fn batch_ref(batch: u64, offset: usize, len: usize) -> [u8; REF_LEN] {
    let mut out = [0u8; REF_LEN];
    out[0] = LOG_IN_BATCH;
    out[1..9].copy_from_slice(&batch.to_le_bytes());
    out[9..13].copy_from_slice(&(offset as u32).to_le_bytes());
    out[13..17].copy_from_slice(&(len as u32).to_le_bytes());
    out
}

/// The batch, offset and length a `logs` value points to, if it is a reference.
fn parse_ref(value: &[u8]) -> Option<(u64, usize, usize)> {
    if value.len() != REF_LEN || value[0] != LOG_IN_BATCH {
        return None;
    }
    let batch = u64::from_le_bytes(value[1..9].try_into().ok()?);
    let offset = u32::from_le_bytes(value[9..13].try_into().ok()?) as usize;
    let len = u32::from_le_bytes(value[13..17].try_into().ok()?) as usize;
    Some((batch, offset, len))
}

/// Reads `logs` values during one read transaction, keeping the batch last read: a page
/// of the log mostly comes from one or two batches.
struct Reader {
    batches: redb::ReadOnlyTable<u64, &'static [u8]>,
    last: Option<(u64, redb::AccessGuard<'static, &'static [u8]>)>,
}

impl Reader {
    fn new(batches: redb::ReadOnlyTable<u64, &'static [u8]>) -> Self {
        Self {
            batches,
            last: None,
        }
    }

    /// The record a `logs` value holds or points to; `None` when its batch is gone (only
    /// while pruning removes both).
    fn record(&mut self, key: &str, value: &[u8]) -> Result<Option<LogRecord>, StoreError> {
        let Some((batch, offset, len)) = parse_ref(value) else {
            return decode_log(key, value).map(Some);
        };
        if self.last.as_ref().is_none_or(|(b, _)| *b != batch) {
            self.last = None;
            match self.batches.get(batch).map_err(backend)? {
                Some(guard) => self.last = Some((batch, guard)),
                None => return Ok(None),
            }
        }
        let (_, guard) = self.last.as_ref().expect("just read");
        let bytes = guard
            .value()
            .get(offset..offset + len)
            .ok_or_else(|| StoreError::Corrupt(key.to_owned(), "outside its batch".into()))?;
        decode_log(key, bytes).map(Some)
    }
}

/// Log records are stored as [`PackedLogs`] packs them (a tag byte then postcard). Records
/// written as JSON by earlier versions start with `{` and are still read.
fn decode_log(key: &str, bytes: &[u8]) -> Result<LogRecord, StoreError> {
    match bytes.split_first() {
        Some((&LOG_POSTCARD_V1, rest)) => postcard::from_bytes(rest)
            .map_err(|e| StoreError::Corrupt(key.to_owned(), e.to_string())),
        _ => decode(key, bytes),
    }
}

/// Bucket updates of committed batches not yet in the `stats` table.
pub(super) type Waiting = std::collections::BTreeMap<BucketKey, Bucket>;

fn add_buckets(to: &mut Waiting, buckets: &[(BucketKey, Bucket)]) {
    for (k, b) in buckets {
        match to.get_mut(k) {
            Some(kept) => kept.merge(b),
            None => {
                to.insert(k.clone(), b.clone());
            }
        }
    }
}

/// Adds `b` to the stored bucket `k`; a bucket already there is updated where it lies
/// (one look-up).
fn add_to_bucket(
    stats: &mut redb::Table<&str, &[u8]>,
    k: &BucketKey,
    b: &Bucket,
) -> Result<(), StoreError> {
    let sk = stats_key(k);
    if let Some(mut kept) = stats.get_mut(sk.as_str()).map_err(backend)? {
        let mut bucket = Bucket::from_bytes(kept.value())
            .ok_or_else(|| StoreError::Corrupt(sk.clone(), "bucket".into()))?;
        bucket.merge(b);
        return kept.insert(bucket.to_bytes().as_slice()).map_err(backend);
    }
    stats
        .insert(sk.as_str(), b.to_bytes().as_slice())
        .map_err(backend)?;
    Ok(())
}

/// A log key's arrival time and request id (a key too short for a time sorts first).
fn split_key(key: &str) -> (i64, &str) {
    match key.get(..16).and_then(|t| i64::from_str_radix(t, 16).ok()) {
        Some(time) => (time, &key[16..]),
        None if key >= "0000000000000000" => (i64::MAX, ""),
        None => (i64::MIN, key),
    }
}

type MetaRange = std::iter::Rev<redb::Range<'static, u64, &'static [u8]>>;

fn next_meta(metas: &mut MetaRange) -> Result<Option<(u64, Meta)>, StoreError> {
    match metas.next() {
        Some(row) => {
            let (k, v) = row.map_err(backend)?;
            Ok(Some((k.value(), Meta::parse(k.value(), v.value())?)))
        }
        None => Ok(None),
    }
}

type RowRange = std::iter::Rev<redb::Range<'static, &'static str, &'static [u8]>>;

fn next_row(rows: &mut RowRange) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    match rows.next() {
        Some(row) => {
            let (k, v) = row.map_err(backend)?;
            Ok(Some((k.value().to_owned(), v.value().to_vec())))
        }
        None => Ok(None),
    }
}

/// The most records one log query reads before answering with a cursor to go on from.
const SCAN_LIMIT: usize = 100_000;
/// Records removed per pruning transaction, so pruning never holds the writer long.
const PRUNE_CHUNK: usize = 5_000;
/// Batches (format 2) or runs removed per pruning transaction (each up to a writer
/// batch of records).
const PRUNE_BATCHES: usize = 64;

impl RedbStore {
    /// Appends records and adds them to their buckets, in one transaction; durable when
    /// it returns, or with the next durable commit (`durable = false`: no `fdatasync`).
    pub async fn append_logs(
        &self,
        records: Arc<[PackedLogs]>,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.write_logs(records, None, durable).await
    }

    /// Makes every earlier commit durable, with the statistics waiting for it.
    pub async fn sync_logs(&self) -> Result<(), StoreError> {
        self.write_logs(Arc::new([]), None, true).await
    }

    /// Copies records and buckets in as they are (for `migrate`): buckets are merged,
    /// records are not counted again.
    pub async fn import(
        &self,
        records: Arc<[PackedLogs]>,
        buckets: Vec<(BucketKey, Bucket)>,
    ) -> Result<(), StoreError> {
        self.write_logs(records, Some(buckets), true).await
    }

    /// Writes `records` and merges `buckets` (by default: the records' own) in one
    /// transaction, or, when not `durable`, leaves the buckets waiting for the next
    /// durable commit. Each record's head is read once, for its key and its bucket.
    async fn write_logs(
        &self,
        records: Arc<[PackedLogs]>,
        buckets: Option<Vec<(BucketKey, Bucket)>>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let db = self.db();
        let waiting = self.waiting.clone();
        tokio::task::spawn_blocking(move || {
            // One log writer at a time; held until the commit has answered.
            let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
            let mut heads = super::logs::heads(&records);
            // In key order: runs are read back by merging them in that order.
            heads.sort_unstable_by(|(_, a), (_, b)| {
                (a.time, a.request_id).cmp(&(b.time, b.request_id))
            });
            let own = buckets.unwrap_or_else(|| super::logs::buckets_of(&heads));
            let mut txn = db.begin_write().map_err(backend)?;
            if !durable {
                txn.set_durability(redb::Durability::None)
                    .map_err(backend)?;
            }
            {
                let mut ids = txn.open_table(LOG_IDS).map_err(backend)?;
                let mut runs = txn.open_table(LOG_RUNS).map_err(backend)?;
                let mut metas = txn.open_table(LOG_RUN_META).map_err(backend)?;
                runs::write(&mut runs, &mut metas, &mut ids, &heads)?;
                // A durable commit writes what waited and this batch's own (a bucket in
                // both is updated twice); the waiting ones are dropped once it is done.
                if durable {
                    let mut stats = txn.open_table(STATS).map_err(backend)?;
                    for (k, b) in waiting.iter().chain(own.iter().map(|(k, b)| (k, b))) {
                        add_to_bucket(&mut stats, k, b)?;
                    }
                }
            }
            txn.commit().map_err(backend)?;
            if durable {
                waiting.clear();
            } else {
                add_buckets(&mut waiting, &own);
            }
            Ok(())
        })
        .await
        .map_err(backend)?
    }

    /// Records matching `q`, newest first: the runs that can hold a record in range,
    /// merged with older versions' rows, a run read when the merge reaches its newest time.
    pub async fn query_logs(
        &self,
        q: LogQuery,
    ) -> Result<(Vec<LogRecord>, Option<String>), StoreError> {
        let db = self.db();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let logs = txn.open_table(LOGS).map_err(backend)?;
            let mut reader = Reader::new(txn.open_table(LOG_BATCHES).map_err(backend)?);
            let run_table = txn.open_table(LOG_RUNS).map_err(backend)?;
            let metas = txn.open_table(LOG_RUN_META).map_err(backend)?;
            let from = q.from.unwrap_or(0);
            let low = log_key(from, "");
            let mut high = q.to.map_or_else(|| "g".to_owned(), |t| log_key(t, ""));
            if let Some(c) = &q.cursor {
                high = high.min(c.clone());
            }
            // Every key read is below `high` (a log key) and at or above `low`.
            let top = split_key(&high);
            let in_range = |time: i64, id: &str| time >= from && (time, id) < top;
            let top_time = top.0;
            let mut metas = metas
                .range(..run_key(top_time.saturating_add(RUN_SPAN_MS + 1)))
                .map_err(backend)?
                .rev();
            let mut next_run = next_meta(&mut metas)?;
            let mut legacy = logs
                .range(low.as_str()..high.as_str())
                .map_err(backend)?
                .rev();
            let mut legacy_top = next_row(&mut legacy)?;
            let mut open: Vec<Run> = Vec::new();
            let mut out = Vec::new();
            let mut scanned = 0;
            let mut last_key = None;
            loop {
                // The newest record open (in a run read or the next older-version row),
                // and whether it is a run's (which one) or the row.
                let (newest_time, from_run) = {
                    let run = open
                        .iter()
                        .enumerate()
                        .filter_map(|(i, r)| r.entries.last().map(|e| ((e.time, e.id.as_str()), i)))
                        .max();
                    let row = legacy_top.as_ref().map(|(k, _)| split_key(k));
                    match (run, row) {
                        (Some((k, i)), row) if Some(k) >= row => (Some(k.0), Some(i)),
                        (_, row) => (row.map(|(t, _)| t), None),
                    }
                };
                if let Some((key, meta)) = next_run {
                    let run_time = runs::key_time(key);
                    if run_time < from {
                        next_run = None;
                        continue;
                    }
                    if newest_time.is_none_or(|t| t <= run_time) {
                        // This run may hold something newer than what is open: read it.
                        if meta.oldest <= top_time {
                            if let Some(v) = run_table.get(key).map_err(backend)? {
                                let run = Run::load(key, v.value(), in_range)?;
                                if !run.entries.is_empty() {
                                    open.push(run);
                                }
                            }
                        }
                        next_run = next_meta(&mut metas)?;
                        continue;
                    }
                }
                let rec = match from_run {
                    Some(i) => {
                        let run = &mut open[i];
                        let entry = run.entries.pop().expect("a newest entry");
                        last_key = Some(log_key(entry.time, &entry.id));
                        let rec = run.record(&entry)?;
                        if run.entries.is_empty() {
                            open.swap_remove(i);
                        }
                        Some(rec)
                    }
                    None => {
                        let Some((key, value)) = legacy_top.take() else {
                            break;
                        };
                        let rec = reader.record(&key, &value)?;
                        last_key = Some(key);
                        legacy_top = next_row(&mut legacy)?;
                        rec
                    }
                };
                scanned += 1;
                if let Some(rec) = rec.filter(|r| q.matches(r)) {
                    out.push(rec);
                    if out.len() >= q.limit {
                        break;
                    }
                }
                if scanned >= SCAN_LIMIT {
                    break;
                }
            }
            let more = out.len() >= q.limit || scanned >= SCAN_LIMIT;
            Ok((out, last_key.filter(|_| more)))
        })
        .await
        .map_err(backend)?
    }

    pub async fn get_log(&self, request_id: &str) -> Result<Option<LogRecord>, StoreError> {
        let db = self.db();
        let id = request_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let logs = txn.open_table(LOGS).map_err(backend)?;
            let mut reader = Reader::new(txn.open_table(LOG_BATCHES).map_err(backend)?);
            let run_table = txn.open_table(LOG_RUNS).map_err(backend)?;
            let metas = txn.open_table(LOG_RUN_META).map_err(backend)?;
            let mut find = |key: &str| -> Result<Option<LogRecord>, StoreError> {
                if let Some(v) = logs.get(key).map_err(backend)? {
                    return reader.record(key, v.value());
                }
                let (time, id) = split_key(key);
                runs::find(&run_table, &metas, time, id)
            };
            if let Some(time) = time_in_request_id(&id) {
                if let Some(rec) = find(&log_key(time, &id))? {
                    return Ok(Some(rec));
                }
            }
            let ids = txn.open_table(LOG_IDS).map_err(backend)?;
            let Some(key) = ids.get(id.as_str()).map_err(backend)? else {
                return Ok(None);
            };
            let key = key.value().to_owned();
            find(&key)
        })
        .await
        .map_err(backend)?
    }

    /// Every bucket whose hour starts in `[from, to)` (Unix ms).
    pub async fn stats_range(
        &self,
        from: i64,
        to: i64,
    ) -> Result<Vec<(BucketKey, Bucket)>, StoreError> {
        let db = self.db();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let stats = txn.open_table(STATS).map_err(backend)?;
            let low = format!("{:016x}", from.max(0));
            let high = format!("{:016x}", to.max(0));
            let mut out = Vec::new();
            for row in stats.range(low.as_str()..high.as_str()).map_err(backend)? {
                let (k, v) = row.map_err(backend)?;
                let Some(key) = parse_stats_key(k.value()) else {
                    return Err(StoreError::Corrupt(
                        k.value().into(),
                        "bad stats key".into(),
                    ));
                };
                let bucket = Bucket::from_bytes(v.value())
                    .ok_or_else(|| StoreError::Corrupt(k.value().into(), "bucket".into()))?;
                out.push((key, bucket));
            }
            Ok(out)
        })
        .await
        .map_err(backend)?
    }

    /// Removes log records older than `logs_before` and buckets older than
    /// `stats_before` (Unix ms), a chunk per transaction. Answers how many went.
    pub async fn prune(
        &self,
        logs_before: i64,
        stats_before: i64,
    ) -> Result<(u64, u64), StoreError> {
        let mut removed = (0, 0);
        loop {
            let db = self.db();
            let (logs, stats, more) =
                tokio::task::spawn_blocking(move || prune_chunk(&db, logs_before, stats_before))
                    .await
                    .map_err(backend)??;
            removed.0 += logs as u64;
            removed.1 += stats as u64;
            if !more {
                return Ok(removed);
            }
        }
    }
}

/// One pruning transaction: older versions' log rows, then (once no old row is left, so
/// no row points into a removed batch) the batches whose newest record is old, then the
/// runs whose newest record is old and those that straddle the cut (rewritten without
/// their old records), then buckets. Answers the records and buckets removed and
/// whether anything old may be left.
fn prune_chunk(
    db: &redb::Database,
    logs_before: i64,
    stats_before: i64,
) -> Result<(usize, usize, bool), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let counts;
    {
        let mut logs = txn.open_table(LOGS).map_err(backend)?;
        let mut ids = txn.open_table(LOG_IDS).map_err(backend)?;
        let mut stats = txn.open_table(STATS).map_err(backend)?;
        let high = log_key(logs_before, "");
        let old: Vec<String> = logs
            .range(..high.as_str())
            .map_err(backend)?
            .take(PRUNE_CHUNK)
            .map(|r| r.map(|(k, _)| k.value().to_owned()))
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        for k in &old {
            logs.remove(k.as_str()).map_err(backend)?;
            let (time, id) = k.split_at(16);
            if time_in_request_id(id) != i64::from_str_radix(time, 16).ok() {
                ids.remove(id).map_err(backend)?;
            }
        }
        let mut batches_left = false;
        if old.len() < PRUNE_CHUNK {
            let mut batches = txn.open_table(LOG_BATCHES).map_err(backend)?;
            let old_batches: Vec<u64> = batches
                .range(..run_key(logs_before))
                .map_err(backend)?
                .take(PRUNE_BATCHES)
                .map(|r| r.map(|(k, _)| k.value()))
                .collect::<Result<_, _>>()
                .map_err(backend)?;
            for k in &old_batches {
                batches.remove(k).map_err(backend)?;
            }
            batches_left = old_batches.len() == PRUNE_BATCHES;
        }
        let (in_runs, runs_left) = runs::prune(&txn, &mut ids, logs_before, PRUNE_BATCHES)?;
        let high = format!("{:016x}", stats_before.max(0));
        let old_stats: Vec<String> = stats
            .range(..high.as_str())
            .map_err(backend)?
            .take(PRUNE_CHUNK)
            .map(|r| r.map(|(k, _)| k.value().to_owned()))
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        for k in &old_stats {
            stats.remove(k.as_str()).map_err(backend)?;
        }
        let more =
            old.len() == PRUNE_CHUNK || old_stats.len() == PRUNE_CHUNK || batches_left || runs_left;
        counts = (old.len() + in_runs, old_stats.len(), more);
    }
    txn.commit().map_err(backend)?;
    Ok(counts)
}
