//! The one integration-test binary (two cores: every extra test binary costs a link).
//! Modules by topic.

mod crash;
mod persist;
mod scenarios;
