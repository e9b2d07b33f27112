//! The one integration-test binary (two cores: every extra test binary costs a link).
//! Modules by topic.

mod http;
mod scenarios;
