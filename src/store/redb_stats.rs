//! The statistics buckets in the redb file: one row per hour, user, key and model, in the
//! compact encoding of [`Bucket::to_bytes`]. The log writer adds each batch's buckets in
//! the transaction that writes its records; a batch committed without waiting for the
//! disk (between the writer's ticks) leaves its buckets in memory, written with the next
//! durable commit. So a crash loses such batches and their statistics together, readers
//! see statistics up to one tick behind the log, and a bucket is rewritten once a tick,
//! not once a batch (with thousands of keys every batch touches thousands of buckets).

use super::StoreError;
use super::logs::{Bucket, BucketKey, parse_stats_key, stats_key};
use super::redb::{RedbStore, STATS, Waiting, backend};
use redb::{ReadableDatabase, ReadableTable};

/// Buckets removed per pruning transaction.
const PRUNE_BUCKETS: usize = 5_000;

/// Keeps a batch's bucket updates for the next durable commit.
pub(super) fn wait(to: &mut Waiting, buckets: &[(BucketKey, Bucket)]) {
    for (k, b) in buckets {
        match to.get_mut(k) {
            Some(kept) => kept.merge(b),
            None => {
                to.insert(k.clone(), b.clone());
            }
        }
    }
}

/// Adds what waited and a batch's own updates to the stored buckets (a bucket in both is
/// updated twice); the caller drops the waiting ones once the commit is done.
pub(super) fn write(
    txn: &redb::WriteTransaction,
    waiting: &Waiting,
    own: &[(BucketKey, Bucket)],
) -> Result<(), StoreError> {
    let mut stats = txn.open_table(STATS).map_err(backend)?;
    for (k, b) in waiting.iter().chain(own.iter().map(|(k, b)| (k, b))) {
        add_to_bucket(&mut stats, k, b)?;
    }
    Ok(())
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

/// Removes up to [`PRUNE_BUCKETS`] buckets whose hour starts before `before` (Unix ms).
/// Answers how many went and whether more may be left.
pub(super) fn prune(
    txn: &redb::WriteTransaction,
    before: i64,
) -> Result<(usize, bool), StoreError> {
    let mut stats = txn.open_table(STATS).map_err(backend)?;
    let high = format!("{:016x}", before.max(0));
    let old: Vec<String> = stats
        .range(..high.as_str())
        .map_err(backend)?
        .take(PRUNE_BUCKETS)
        .map(|r| r.map(|(k, _)| k.value().to_owned()))
        .collect::<Result<_, _>>()
        .map_err(backend)?;
    for k in &old {
        stats.remove(k.as_str()).map_err(backend)?;
    }
    Ok((old.len(), old.len() == PRUNE_BUCKETS))
}

impl RedbStore {
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
                let corrupt = |what: &str| StoreError::Corrupt(k.value().into(), what.into());
                let key = parse_stats_key(k.value()).ok_or_else(|| corrupt("bad stats key"))?;
                let bucket = Bucket::from_bytes(v.value()).ok_or_else(|| corrupt("bucket"))?;
                out.push((key, bucket));
            }
            Ok(out)
        })
        .await
        .map_err(backend)?
    }
}
