//! The one integration-test binary (two cores: every extra test binary costs a link).
//! Modules by topic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod a2impact;
mod scenarios;
mod xacml;
