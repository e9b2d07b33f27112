//! The one integration-test binary (two cores: every extra test binary costs a link).
//! Modules by topic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod a2http;
mod a2impact;
mod actor;
mod background;
mod cli;
mod consent;
mod crash;
mod decide;
mod hostile;
mod http;
mod layers;
mod partitions;
mod pdp;
mod pdp_http;
mod persist;
mod prop;
mod readback;
mod reference;
mod roundtrip;
mod scenarios;
mod sections;
mod store;
mod supplier;
mod xacml;
