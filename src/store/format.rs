//! The store's format versions and the one rule for them: a store is read only in the
//! exact format this binary writes; one of another version, older or newer, is refused
//! and left as it is (no conversion). Reading the version is each back-end's own.

use super::StoreError;

/// The format this binary writes to Redis.
pub const FORMAT_VERSION: u32 = 3;
/// The redb file's format: the request log in runs (`log_runs`, see `redb_logs`).
pub const REDB_FORMAT_VERSION: u32 = 6;

/// Accepts a store marked with format `found` when it is the `known` one; `place` names
/// the store for the error of an older one.
pub(super) fn check(
    found: u32,
    known: u32,
    place: impl FnOnce() -> String,
) -> Result<(), StoreError> {
    if found == known {
        Ok(())
    } else if found > known {
        Err(StoreError::TooNew { found, known })
    } else {
        Err(StoreError::TooOld {
            path: place(),
            found,
            known,
        })
    }
}
