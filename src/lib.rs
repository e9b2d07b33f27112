//! delegraph: an in-memory rights resolver for Altinn-style authorization.
//!
//! # Layout
//!
//! By layer, lowest first (ARCHITECTURE.md's "Layers" table, which `tests/it/layers.rs`
//! enforces): a module uses its own layer and those listed before it, never a later one.
//! Command-line code (clap, indicatif) lives in the binary, `src/main.rs` and its modules.
//!
//! * model: [`model`] — dense catalogue ids, party kinds, the error type and its codes;
//!   [`event`] — the event vocabulary shared by scenarios, imports, the log and HTTP;
//!   [`background`] — the bounded pool of low-priority threads for simulate, reports
//!   and checkpoints asked for over HTTP.
//! * catalog: [`catalog`] — roles, packages, areas, RolePackage and RoleMap, compiled in.
//! * graph: [`graph`] — the only place petgraph is named: parties, resources and grants.
//! * world: [`world`] — the graph plus the engine clock, the Altinn 2 cut-off flag and
//!   the state of system users ([`sysuser::state`]), of consents ([`consent::state`]),
//!   of suppliers ([`supplier::state`]) and of the decision point ([`pdp::state`], with
//!   the XACML engine: [`pdp::policy`], [`pdp::eval`], ...).
//! * resolve/decide: [`resolve`] — read-only queries: records, rights, check, authorized
//!   parties, holders, the delegation check and explain; [`decide`] — the decision
//!   order of a resource decision, the one implementation every caller uses; [`pdp`] —
//!   the Altinn-compatible XACML decision point with the graph as PIP; [`a2impact`] —
//!   the Altinn 2 cut-off report: lost permits and what restores them.
//! * mutate: [`mutate`] — validation, apply with cascades, atomic batches and simulate;
//!   [`sysuser`] — systems, system users, vendor and access requests, clients;
//!   [`consent`] — consent requests, answers and use (domain.md §9); [`supplier`] —
//!   suppliers and Maskinporten scope delegation (§10);
//!   [`pdp::events`] — the decision point's events; [`query`] — queries as typed
//!   requests and answers, one evaluation for the runner, the HTTP API and the CLI;
//!   [`generate`] — the deterministic generator of realistic worlds.
//! * codecs: [`persist::snapshot`], [`persist::wal`], [`persist::import`] — snapshots, the
//!   write-ahead log's records and the JSON Lines import (records, not actors);
//!   [`load`] — a world from a snapshot, a JSON Lines stream or a scenario file.
//! * store: [`partition`] — versions, the sequencer and the partition actors that own
//!   the write path, the journal seam ([`partition::journal::Journal`]);
//!   [`persist::durable`] — the write-ahead log behind that seam, recovery, checkpoints.
//! * api/cli: [`api`] — the actix-web HTTP API: routes, JWT scopes, limits, problems,
//!   metrics, OpenAPI, and the HTTP client behind `delegraph test --server`;
//!   [`scenario`] — the `delegraph test` runner, in-process or over HTTP; [`loadtest`] —
//!   `delegraph loadtest`: bounded loopback load with HDR percentiles.

pub mod a2impact;
pub mod api;
pub mod background;
pub mod catalog;
pub mod consent;
pub mod decide;
pub mod event;
pub mod generate;
pub mod graph;
pub mod load;
pub mod loadtest;
pub mod model;
pub mod mutate;
pub mod partition;
pub mod pdp;
pub mod persist;
pub mod query;
pub mod resolve;
pub mod scenario;
pub mod supplier;
pub mod sysuser;
pub mod world;
