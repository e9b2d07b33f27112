//! The limits every request is held to, and the guarded JSON parsing they apply.
//!
//! Hostile input must give a clean problem and change nothing: the body is read up to
//! `max_body_bytes` (the `Content-Length` is checked first), its nesting depth is
//! counted before any parsing, invalid UTF-8 is refused by the JSON parser, and a batch
//! over `max_batch_events` is refused before a single event is looked at.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::web::{Bytes, Payload};
use serde_json::Value;

use super::problem::Problem;

/// The limits of one server. Each is documented in the README's "Limits" section.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted (bytes); larger gives 413 `limit_exceeded`.
    pub max_body_bytes: usize,
    /// Most events in one `POST /v1/events` batch; more gives 413 `limit_exceeded`.
    pub max_batch_events: usize,
    /// Most decisions in one `POST /v1/check/batch`; more gives 413 `limit_exceeded`.
    pub max_batch_checks: usize,
    /// Longest query string accepted (bytes); longer gives 413 `limit_exceeded`. (A
    /// request line over 64 KiB, or a header block over 128 KiB, is refused by the HTTP
    /// layer before any of this: see the README.)
    pub max_query_bytes: usize,
    /// Deepest JSON nesting (arrays and objects) accepted; deeper gives 400
    /// `invalid_input` before the body is parsed.
    pub max_json_depth: usize,
    /// Longest a request may take, waits included; longer gives 503 `timeout`. A read
    /// that is computing is not interrupted (resolution is bounded); the limit cuts
    /// waits for freshness, for partitions and for the journal.
    pub request_timeout: Duration,
    /// Longest a read waits for the state its `min_token` names; longer gives 503
    /// `token_not_reached`.
    pub max_token_wait: Duration,
    /// Longest a `simulate` may compute; longer gives 413 `limit_exceeded`. Keep it
    /// below `request_timeout` (which otherwise cuts the request first, with 503
    /// `timeout`; the simulation then stops too).
    pub simulate_time: Duration,
    /// Most entries a `simulate` may hold at once: the event's changes plus the accesses
    /// of the one subject being compared, before and after; more gives 413
    /// `limit_exceeded`.
    pub simulate_max_entries: usize,
    /// Background jobs (simulate, a2-impact, checkpoints over HTTP) running at once, on
    /// low-priority threads; up to 16 more wait, past that 503 `busy`.
    pub background_threads: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_body_bytes: 4 * 1024 * 1024,
            max_batch_events: 1000,
            max_batch_checks: 10_000,
            max_query_bytes: 16 * 1024,
            max_json_depth: 32,
            request_timeout: Duration::from_secs(10),
            max_token_wait: Duration::from_secs(2),
            simulate_time: Duration::from_secs(8),
            simulate_max_entries: 5_000_000,
            background_threads: 1,
        }
    }
}

impl Limits {
    /// Reads the whole body, refusing one over the size limit.
    pub async fn read_body(&self, req: &HttpRequest, payload: Payload) -> Result<Bytes, Problem> {
        let too_large = || {
            Problem::limit(format!(
                "the request body is larger than the limit of {} bytes",
                self.max_body_bytes
            ))
        };
        // A body is read as it comes: an encoded one (gzip, ...) would be read as garbage.
        if let Some(enc) = req.headers().get(actix_web::http::header::CONTENT_ENCODING) {
            let enc = enc.to_str().unwrap_or_default().trim().to_ascii_lowercase();
            if enc != "identity" {
                return Err(Problem::new(
                    super::problem::ProblemCode::UnsupportedMediaType,
                    format!(
                        "the body must not be encoded (`Content-Encoding: {}`): send it as it is",
                        crate::model::quote(&enc)
                    ),
                ));
            }
        }
        if let Some(len) = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > self.max_body_bytes as u64
        {
            return Err(too_large());
        }
        match payload.to_bytes_limited(self.max_body_bytes).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(Problem::invalid(format!("cannot read the request body: {e}"))),
            Err(_) => Err(too_large()),
        }
    }

    /// Refuses a JSON body nested deeper than the limit, before it is parsed.
    pub fn check_json_depth(&self, body: &[u8]) -> Result<(), Problem> {
        let depth = json_depth(body);
        if depth > self.max_json_depth {
            return Err(Problem::invalid(format!(
                "the JSON body nests {depth} levels deep, more than the limit of {}",
                self.max_json_depth
            )));
        }
        Ok(())
    }

    /// Parses a JSON body strictly ([`super::strict`]): nesting depth checked first, no
    /// duplicate keys, UTF-8 only.
    pub fn parse_json(&self, body: &[u8]) -> Result<Value, Problem> {
        super::strict::parse(body, self.max_json_depth)
    }
}

/// The deepest nesting of arrays and objects in a JSON text, counted without parsing
/// (brackets inside strings do not count). Invalid JSON is left for the parser to
/// refuse; this only bounds the parser's recursion.
pub fn json_depth(body: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::json_depth;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth(br#"{"a": "[[[[", "b": [1, {"c": "\"]"}]}"#), 3);
        assert_eq!(json_depth(b"1"), 0);
    }
}
