//! The request log and statistics buckets in the redb file. A batch of records and the
//! bucket updates it causes commit in one transaction, so statistics always equal the
//! sum of the log that was kept.
//!
//! A batch's records are stored one after another as one value in `log_batches`; the
//! `logs` table keeps, per record, its sort key (arrival time, request id) and where the
//! record lies in its batch. So the per-record index rows stay small (a B-tree leaf holds
//! about four times as many as with the records inline: fewer pages split, allocated and
//! written per batch), and reads find records in the same order as before. Records that
//! earlier versions stored inline (postcard or JSON) are still read.

use super::StoreError;
use super::logs::{
    Bucket, BucketKey, LOG_POSTCARD_V1, LogQuery, LogRecord, PackedLogs, log_key, parse_stats_key,
    push_log_key, stats_key, time_in_request_id,
};
use super::redb::{RedbStore, backend, decode};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use std::sync::Arc;

pub(super) const LOGS: TableDefinition<&str, &[u8]> = TableDefinition::new("logs");
/// Request id → log key, only for ids that do not start with their request's time (ids
/// from before that format, or imported ones); the others are found without it.
pub(super) const LOG_IDS: TableDefinition<&str, &str> = TableDefinition::new("log_ids");
pub(super) const STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats");
/// Batch key → the batch's packed records, one after another. The key is the newest
/// arrival time in the batch (Unix ms) shifted left by [`SEQ_BITS`], plus a sequence
/// number for batches whose newest record arrived in the same millisecond.
pub(super) const LOG_BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("log_batches");
const SEQ_BITS: u32 = 12;

/// A `logs` value that points into a batch: this tag, then the batch key (u64), the
/// record's offset and its length (u32 each), little-endian.
const LOG_IN_BATCH: u8 = 2;
const REF_LEN: usize = 1 + 8 + 4 + 4;

fn batch_ref(batch: u64, offset: usize, len: usize) -> [u8; REF_LEN] {
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

/// The most records one log query reads before answering with a cursor to go on from.
const SCAN_LIMIT: usize = 100_000;
/// Records removed per pruning transaction, so pruning never holds the writer long.
const PRUNE_CHUNK: usize = 5_000;
/// Batches removed per pruning transaction (each up to a writer batch of records).
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

    /// Makes every earlier commit durable (an empty durable commit).
    pub async fn sync_logs(&self) -> Result<(), StoreError> {
        self.write_logs(Arc::new([]), Some(Vec::new()), true).await
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
    /// transaction. Each record's head is read once, for its key and its bucket.
    async fn write_logs(
        &self,
        records: Arc<[PackedLogs]>,
        buckets: Option<Vec<(BucketKey, Bucket)>>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let db = self.db();
        tokio::task::spawn_blocking(move || {
            let mut heads = super::logs::heads(&records);
            // In key order: the chunks of several serving threads interleave in time, and
            // inserts that only ever append to the last leaf move nothing within pages.
            heads.sort_unstable_by(|(_, a), (_, b)| {
                (a.time, a.request_id).cmp(&(b.time, b.request_id))
            });
            let buckets = buckets.unwrap_or_else(|| super::logs::buckets_of(&heads));
            let mut txn = db.begin_write().map_err(backend)?;
            if !durable {
                txn.set_durability(redb::Durability::None)
                    .map_err(backend)?;
            }
            {
                let mut logs = txn.open_table(LOGS).map_err(backend)?;
                let mut ids = txn.open_table(LOG_IDS).map_err(backend)?;
                let mut batches = txn.open_table(LOG_BATCHES).map_err(backend)?;
                if !heads.is_empty() {
                    let newest = heads.iter().map(|(_, h)| h.time).max().unwrap_or(0);
                    let mut batch = (newest.max(0) as u64) << SEQ_BITS;
                    while batches.get(batch).map_err(backend)?.is_some() {
                        batch += 1;
                    }
                    let len = heads.iter().map(|(r, _)| r.as_bytes().len()).sum();
                    let mut value = batches.insert_reserve(batch, len).map_err(backend)?;
                    let mut key = String::with_capacity(48);
                    let mut offset = 0;
                    for (rec, head) in &heads {
                        let bytes = rec.as_bytes();
                        value.as_mut()[offset..offset + bytes.len()].copy_from_slice(bytes);
                        key.clear();
                        push_log_key(&mut key, head.time, head.request_id);
                        let reference = batch_ref(batch, offset, bytes.len());
                        logs.insert(key.as_str(), reference.as_slice())
                            .map_err(backend)?;
                        if time_in_request_id(head.request_id) != Some(head.time) {
                            ids.insert(head.request_id, key.as_str()).map_err(backend)?;
                        }
                        offset += bytes.len();
                    }
                }
                let mut stats = txn.open_table(STATS).map_err(backend)?;
                for (k, b) in &buckets {
                    let sk = stats_key(k);
                    let mut bucket: Bucket = match stats.get(sk.as_str()).map_err(backend)? {
                        Some(v) => Bucket::from_bytes(v.value())
                            .ok_or_else(|| StoreError::Corrupt(sk.clone(), "bucket".into()))?,
                        None => Bucket::default(),
                    };
                    bucket.merge(b);
                    stats
                        .insert(sk.as_str(), bucket.to_bytes().as_slice())
                        .map_err(backend)?;
                }
            }
            txn.commit().map_err(backend)
        })
        .await
        .map_err(backend)?
    }

    pub async fn query_logs(
        &self,
        q: LogQuery,
    ) -> Result<(Vec<LogRecord>, Option<String>), StoreError> {
        let db = self.db();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let logs = txn.open_table(LOGS).map_err(backend)?;
            let mut reader = Reader::new(txn.open_table(LOG_BATCHES).map_err(backend)?);
            let low = log_key(q.from.unwrap_or(0), "");
            let mut high = q.to.map_or_else(|| "g".to_owned(), |t| log_key(t, ""));
            if let Some(c) = &q.cursor {
                high = high.min(c.clone());
            }
            let mut out = Vec::new();
            let mut scanned = 0;
            let mut last_key = None;
            for row in logs
                .range(low.as_str()..high.as_str())
                .map_err(backend)?
                .rev()
            {
                let (k, v) = row.map_err(backend)?;
                scanned += 1;
                last_key = Some(k.value().to_owned());
                let Some(rec) = reader.record(k.value(), v.value())? else {
                    continue;
                };
                if q.matches(&rec) {
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
            if let Some(time) = time_in_request_id(&id) {
                let key = log_key(time, &id);
                if let Some(v) = logs.get(key.as_str()).map_err(backend)? {
                    return reader.record(&key, v.value());
                }
            }
            let ids = txn.open_table(LOG_IDS).map_err(backend)?;
            let Some(key) = ids.get(id.as_str()).map_err(backend)? else {
                return Ok(None);
            };
            let key = key.value().to_owned();
            let Some(v) = logs.get(key.as_str()).map_err(backend)? else {
                return Ok(None);
            };
            reader.record(&key, v.value())
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

/// One pruning transaction: log rows, then (once no old row is left, so no row points
/// into a removed batch) the batches whose newest record is old, then buckets. Answers
/// the rows and buckets removed and whether anything old may be left.
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
            let high = (logs_before.max(0) as u64) << SEQ_BITS;
            let old_batches: Vec<u64> = batches
                .range(..high)
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
        let more = old.len() == PRUNE_CHUNK || old_stats.len() == PRUNE_CHUNK || batches_left;
        counts = (old.len(), old_stats.len(), more);
    }
    txn.commit().map_err(backend)?;
    Ok(counts)
}
