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
//! * [`decide`] — the decision order of a resource decision (policy, grants on
//!   NotApplicable, access lists), the one implementation every caller uses.
//! * [`event`] — the event vocabulary shared by scenarios, imports, the log and HTTP.
//! * [`mutate`] — validation, apply with cascades, atomic batches and simulate.
//! * [`a2impact`] — the Altinn 2 cut-off report: lost permits and what restores them.
//! * [`load`] — a world from a JSON Lines event stream or a scenario file.
//! * [`sysuser`] — systems, system users, vendor and access requests, clients.
//! * [`generate`] — the deterministic generator of realistic worlds (`delegraph generate`).
//! * [`pdp`] — the Altinn-compatible XACML decision point with the graph as PIP.
//! * [`query`] — queries as typed requests and answers, one evaluation for the scenario
//!   runner, the HTTP API and `delegraph test --server`.
//! * [`scenario`] — the `delegraph test` runner for scenario files, in-process or over HTTP.
//! * [`partition`] — the shared world, the commit section and the partition actors that
//!   own the write path; the journal seam ([`partition::journal::Journal`]).
//! * [`api`] — the actix-web HTTP API: routes, JWT scopes, limits, problems, metrics,
//!   OpenAPI, and the HTTP client behind `delegraph test --server`.
//! * [`loadtest`] — `delegraph loadtest`: bounded loopback load with HDR percentiles.
//! * [`persist`] — snapshots, the write-ahead log, the durable store and the import.
//! * [`background`] — the bounded pool of low-priority threads for simulate, reports
//!   and checkpoints asked for over HTTP.

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
