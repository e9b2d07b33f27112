//! Persistence: graph snapshots, the write-ahead log, the durable store and the JSON
//! Lines import.
//!
//! # Layout
//!
//! * [`snapshot`] — the versioned snapshot schema (keyed by external ids), its
//!   streaming, checksummed, compressed writer and reader, atomic save and load.
//! * [`wal`] — log segments of groups of checksummed records (one group per
//!   `fdatasync`, each record with its outcome digest), group commit, torn-tail repair.
//! * [`durable`] — the [`Log`] (the server's journal), recovery, two-snapshot
//!   checkpoints, and [`Durable`]: the server's `Store` over the log.
//! * [`import`] — JSON Lines events applied in order.
//! * [`invariants`] — structural checks every committed world satisfies.
//! * [`error`] — the typed errors of all of the above.
//!
//! Nothing here knows petgraph: worlds are written by walking the graph facade and
//! rebuilt through it, so a node or edge index never reaches a file.

pub mod durable;
pub mod error;
pub mod import;
pub mod invariants;
pub mod snapshot;
pub mod wal;

pub use durable::{Durable, Log, Options, Recovery, recover};
pub use error::{DurableError, ImportError, RecordError, SnapshotError, WalError};

#[cfg(test)]
mod tests;
