//! delegraph: an in-memory rights resolver for Altinn-style authorization.
//!
//! # Layout
//!
//! * [`model`] — dense catalogue ids, party kinds, the error type and its codes.
//! * [`catalog`] — roles, packages, areas, RolePackage and RoleMap, compiled in.
//! * [`graph`] — the only place petgraph is named: parties, resources and grants.
//! * [`world`] — the graph plus the engine clock and the Altinn 2 cut-off flag.
//! * [`resolve`] — read-only queries: records, rights, check, authorized parties,
//!   holders, the delegation check and explain.
//! * [`event`] — the event vocabulary shared by scenarios, imports, the log and HTTP.
//! * [`mutate`] — validation, apply with cascades, atomic batches and simulate.
//! * [`persist`] — snapshots, the write-ahead log, the durable store and the import.
//! * [`scenario`] — the `delegraph test` runner for scenario files.

pub mod catalog;
pub mod event;
pub mod graph;
pub mod model;
pub mod mutate;
pub mod persist;
pub mod resolve;
pub mod scenario;
pub mod world;
