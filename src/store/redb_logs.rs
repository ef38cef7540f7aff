//! The request log in the redb file. Records are kept in runs (see `redb_runs`): a
//! batch's records in key order (arrival time, request id), one after another as one
//! value in `log_runs`, split so that no run spans more than [`RUN_SPAN_MS`] of arrival
//! times. There is no row per record: a batch costs two inserts however many records it
//! holds. Reads merge the runs that overlap (the serving threads' batches interleave in
//! time, and a long stream is logged when it ends): the span bound says which runs can
//! hold a given time.
//!
//! A durable commit holds its records together with every bucket update not yet written
//! (see `redb_stats`), so after each one the statistics equal the sum of the log kept.

use super::StoreError;
use super::logs::{Bucket, BucketKey, LogQuery, log_key, time_in_request_id};
use super::packed::PackedLogs;
use super::redb::{LOG_IDS, LOG_RUN_META, LOG_RUNS, RedbStore, backend};
use super::redb_runs::{self as runs, Meta, RUN_SPAN_MS, Run, run_key};
use super::redb_stats as stats;
use crate::record::LogRecord;
use redb::ReadableDatabase;
use std::sync::Arc;

/// The most records one log query reads before answering with a cursor to go on from.
const SCAN_LIMIT: usize = 100_000;
/// Runs removed per pruning transaction (each up to a writer batch of records), so
/// pruning never holds the writer long.
const PRUNE_RUNS: usize = 64;

/// A log key's arrival time and request id (a key too short for a time sorts first).
fn split_key(key: &str) -> (i64, &str) {
    match key.get(..16).and_then(|t| i64::from_str_radix(t, 16).ok()) {
        Some(time) => (time, &key[16..]),
        None if key >= "0000000000000000" => (i64::MAX, ""),
        None => (i64::MIN, key),
    }
}

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
            let mut heads = super::packed::heads(&records);
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
                if durable {
                    stats::write(&txn, &waiting, &own)?;
                }
            }
            txn.commit().map_err(backend)?;
            if durable {
                waiting.clear();
            } else {
                stats::wait(&mut waiting, &own);
            }
            Ok(())
        })
        .await
        .map_err(backend)?
    }

    /// Records matching `q`, newest first, and the cursor for the next page when more
    /// may follow.
    pub async fn query_logs(
        &self,
        q: LogQuery,
    ) -> Result<(Vec<LogRecord>, Option<String>), StoreError> {
        let db = self.db();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            let mut walk = Walk::new(&txn, &q)?;
            let (mut out, mut scanned, mut last_key) = (Vec::new(), 0, None);
            while let Some((key, rec)) = walk.next()? {
                last_key = Some(key);
                scanned += 1;
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
            let run_table = txn.open_table(LOG_RUNS).map_err(backend)?;
            let metas = txn.open_table(LOG_RUN_META).map_err(backend)?;
            if let Some(time) = time_in_request_id(&id) {
                if let Some(rec) = runs::find(&run_table, &metas, time, &id)? {
                    return Ok(Some(rec));
                }
            }
            let ids = txn.open_table(LOG_IDS).map_err(backend)?;
            let Some(key) = ids.get(id.as_str()).map_err(backend)? else {
                return Ok(None);
            };
            let (time, _) = split_key(key.value());
            runs::find(&run_table, &metas, time, &id)
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
            let (logs, buckets, more) =
                tokio::task::spawn_blocking(move || prune_chunk(&db, logs_before, stats_before))
                    .await
                    .map_err(backend)??;
            removed.0 += logs as u64;
            removed.1 += buckets as u64;
            if !more {
                return Ok(removed);
            }
        }
    }
}

/// One pruning transaction: the runs whose newest record is old and those that straddle
/// the cut (rewritten without their old records), then buckets. Answers the records and
/// buckets removed and whether anything old may be left.
fn prune_chunk(
    db: &redb::Database,
    logs_before: i64,
    stats_before: i64,
) -> Result<(usize, usize, bool), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    let counts;
    {
        let mut ids = txn.open_table(LOG_IDS).map_err(backend)?;
        let (records, runs_left) = runs::prune(&txn, &mut ids, logs_before, PRUNE_RUNS)?;
        let (buckets, buckets_left) = stats::prune(&txn, stats_before)?;
        counts = (records, buckets, runs_left || buckets_left);
    }
    txn.commit().map_err(backend)?;
    Ok(counts)
}

type MetaRange = std::iter::Rev<redb::Range<'static, u64, &'static [u8]>>;

/// A walk down the log, newest first, below a query's upper bound (its `to` or cursor)
/// and from its `from`: the runs that can hold a record in range are read in turn, a run
/// once the walk reaches its newest time, and their records merged.
struct Walk {
    runs: redb::ReadOnlyTable<u64, &'static [u8]>,
    /// Meta rows of runs not read yet, newest first.
    metas: MetaRange,
    next_run: Option<(u64, Meta)>,
    /// Runs read and not yet walked through, each holding its records in range.
    open: Vec<Run>,
    from: i64,
    /// Every record walked is below this (time, id).
    top: (i64, String),
}

impl Walk {
    fn new(txn: &redb::ReadTransaction, q: &LogQuery) -> Result<Self, StoreError> {
        let mut high = q.to.map_or_else(|| "g".to_owned(), |t| log_key(t, ""));
        if let Some(c) = &q.cursor {
            high = high.min(c.clone());
        }
        let (top_time, top_id) = split_key(&high);
        let metas = txn.open_table(LOG_RUN_META).map_err(backend)?;
        let mut metas = metas
            .range(..run_key(top_time.saturating_add(RUN_SPAN_MS + 1)))
            .map_err(backend)?
            .rev();
        Ok(Self {
            runs: txn.open_table(LOG_RUNS).map_err(backend)?,
            next_run: next_meta(&mut metas)?,
            metas,
            open: Vec::new(),
            from: q.from.unwrap_or(0),
            top: (top_time, top_id.to_owned()),
        })
    }

    /// The next record down, with its log key.
    fn next(&mut self) -> Result<Option<(String, LogRecord)>, StoreError> {
        loop {
            let newest = self.newest_open();
            let Some((key, meta)) = self.next_run else {
                return self.take(newest);
            };
            let run_time = runs::key_time(key);
            if run_time < self.from {
                // Runs come newest first: none left can hold a record in range.
                self.next_run = None;
            } else if newest.is_none_or(|(t, _)| t <= run_time) {
                // This run may hold something newer than what is open: read it.
                if meta.oldest <= self.top.0 {
                    self.load(key)?;
                }
                self.next_run = next_meta(&mut self.metas)?;
            } else {
                return self.take(newest);
            }
        }
    }

    /// The newest arrival time among the open runs' records, and which run holds it.
    fn newest_open(&self) -> Option<(i64, usize)> {
        let (key, i) = self
            .open
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.entries.last().map(|e| ((e.time, e.id.as_str()), i)))
            .max()?;
        Some((key.0, i))
    }

    fn load(&mut self, key: u64) -> Result<(), StoreError> {
        let Some(v) = self.runs.get(key).map_err(backend)? else {
            return Ok(());
        };
        let (from, top) = (self.from, &self.top);
        let run = Run::load(key, v.value(), |t, id| {
            t >= from && (t, id) < (top.0, top.1.as_str())
        })?;
        if !run.entries.is_empty() {
            self.open.push(run);
        }
        Ok(())
    }

    /// Takes the newest open record out of its run.
    fn take(
        &mut self,
        newest: Option<(i64, usize)>,
    ) -> Result<Option<(String, LogRecord)>, StoreError> {
        let Some((_, i)) = newest else {
            return Ok(None);
        };
        let run = &mut self.open[i];
        let entry = run.entries.pop().expect("a newest entry");
        let rec = run.record(&entry)?;
        if run.entries.is_empty() {
            self.open.swap_remove(i);
        }
        Ok(Some((log_key(entry.time, &entry.id), rec)))
    }
}

fn next_meta(metas: &mut MetaRange) -> Result<Option<(u64, Meta)>, StoreError> {
    match metas.next() {
        Some(row) => {
            let (k, v) = row.map_err(backend)?;
            Ok(Some((k.value(), Meta::parse(k.value(), v.value())?)))
        }
        None => Ok(None),
    }
}
