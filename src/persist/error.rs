//! Errors of the persistence layer: snapshots, the write-ahead log and the durable store.
//!
//! Messages follow the project style: lowercase, no final period, user input in
//! backticks, context joined by ": ".

use std::path::PathBuf;

use crate::model;

/// Why a snapshot could not be written, read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The error with the file it concerns. The inner error is part of the message
    /// rather than a `source`, so that an error chain does not print it twice.
    #[error("`{}`: {error}", path.display())]
    File {
        path: PathBuf,
        error: Box<SnapshotError>,
    },
    #[error("not a delegraph snapshot (bad magic bytes)")]
    BadMagic,
    #[error("snapshot schema version `{found}` is not supported: this build reads versions {min} to {max}")]
    UnsupportedVersion { found: u32, min: u32, max: u32 },
    #[error("snapshot is truncated: {0}")]
    Truncated(&'static str),
    #[error("snapshot checksum mismatch in {what} at byte {offset}")]
    Checksum { what: &'static str, offset: u64 },
    #[error("snapshot is corrupt: {0}")]
    Corrupt(String),
    #[error("snapshot record {index}: {message}")]
    BadRecord { index: u64, message: String },
    #[error("snapshot could not be encoded: {0}")]
    Encode(String),
    /// An error inside one section of a version 4 file, with the section it is in.
    #[error("snapshot section `{name}` (at byte {offset}): {error}")]
    Section {
        name: String,
        offset: u64,
        error: Box<SnapshotError>,
    },
}

impl SnapshotError {
    pub(crate) fn at(self, path: &std::path::Path) -> SnapshotError {
        SnapshotError::File {
            path: path.to_path_buf(),
            error: Box::new(self),
        }
    }
}

/// Why a write-ahead log record or segment could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("log i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("log segment `{path}` is not a delegraph log segment")]
    BadSegment { path: PathBuf },
    #[error("log segment `{path}` has schema version `{found}`: this build reads version {supported}")]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "log segment `{path}` is corrupt at byte {offset}: {reason}; recovery stops here rather than drop acknowledged records (only the last group of the newest segment may be torn): restore the segment from a copy, or move it and every later segment aside to give those records up"
    )]
    CorruptMiddle {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("log is missing records: expected sequence {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
    #[error("log record could not be encoded: {0}")]
    Encode(String),
    #[error("the log writer has failed and accepts no more writes: {0}")]
    Failed(String),
}

/// Why one log record could not be decoded (the reader decides whether it is a torn
/// tail or corruption).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is incomplete: need {need} bytes, have {have}")]
    Incomplete { need: u64, have: u64 },
    #[error("record length {0} exceeds the limit")]
    TooLong(u64),
    #[error("record checksum mismatch")]
    Checksum,
    #[error("record payload is not a valid batch: {0}")]
    Payload(String),
    #[error("{0}")]
    Group(String),
}

/// Errors of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The batch was refused by validation; nothing was applied or logged.
    #[error("refused: {0}")]
    Refused(model::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("data directory `{path}`: {error}")]
    Dir { path: PathBuf, error: std::io::Error },
    #[error("no snapshot in `{0}` could be read, refusing to start from an empty world: {1}")]
    NoValidSnapshot(PathBuf, String),
    #[error("replaying log record {seq} was refused (the log does not match the engine): {error}")]
    Replay { seq: u64, error: model::Error },
    #[error(
        "replaying log record {seq} in `{path}` did not do what it did when it was written (outcome digest {found:016x}, the record says {recorded:016x}): the log or the engine changed; recovery stops"
    )]
    Digest {
        seq: u64,
        path: PathBuf,
        recorded: u64,
        found: u64,
    },
    #[error(
        "the newest snapshot could not be read and the older one at sequence {older} cannot stand in: {reason}"
    )]
    Fallback { older: u64, reason: String },
    #[error("the store could not commit: {0}")]
    Commit(String),
    #[error("a lock was poisoned by a panic in another thread")]
    Poisoned,
}

/// A line of a JSON Lines import that was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {error}")]
    Line { line: u64, error: model::Error },
}
