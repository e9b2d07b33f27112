//! RFC 9457 problem details: every error the API answers, with one `code` per problem
//! and one HTTP status per code.
//!
//! The codes are those of `spec/scenario-format.md` (the engine's [`ErrorCode`]) plus a
//! few that only the service raises (authentication, limits, freshness).

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::model::{Error, ErrorCode};
use crate::partition::{CommitError, StaleRead};

/// The code of a problem: a spec code, or one the service adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemCode {
    Spec(ErrorCode),
    /// No bearer token, or one that does not validate (401).
    Unauthenticated,
    /// A valid token without the scope the route needs (403).
    InsufficientScope,
    /// Body size, batch size or decisions per request over the limit, or a `simulate`
    /// past its time or memory budget (413).
    LimitExceeded,
    /// The state a `min_token` names did not become visible in time (503).
    TokenNotReached,
    /// The request took longer than the request time limit (503).
    Timeout,
    /// The journal failed or the store stopped taking writes (503).
    Unavailable,
    /// The journal failed after it queued the batch: it may or may not be committed;
    /// read before retrying (503).
    OutcomeUnknown,
    /// The body's media type is not one the route reads (415).
    UnsupportedMediaType,
    /// The route exists, but not with this method (405).
    MethodNotAllowed,
    /// Background work is full (a report or checkpoint already running, or the
    /// background queue full): 503 with `Retry-After`.
    Busy,
}

impl ProblemCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::Spec(c) => c.as_str(),
            ProblemCode::Unauthenticated => "unauthenticated",
            ProblemCode::InsufficientScope => "insufficient_scope",
            ProblemCode::LimitExceeded => "limit_exceeded",
            ProblemCode::TokenNotReached => "token_not_reached",
            ProblemCode::Timeout => "timeout",
            ProblemCode::Unavailable => "unavailable",
            ProblemCode::OutcomeUnknown => "outcome_unknown",
            ProblemCode::UnsupportedMediaType => "unsupported_media_type",
            ProblemCode::MethodNotAllowed => "method_not_allowed",
            ProblemCode::Busy => "busy",
        }
    }

    /// The one status of each code.
    pub fn status(self) -> u16 {
        match self {
            ProblemCode::Spec(c) => c.http_status(),
            ProblemCode::Unauthenticated => 401,
            ProblemCode::InsufficientScope => 403,
            ProblemCode::LimitExceeded => 413,
            ProblemCode::UnsupportedMediaType => 415,
            ProblemCode::MethodNotAllowed => 405,
            ProblemCode::TokenNotReached
            | ProblemCode::Timeout
            | ProblemCode::Unavailable
            | ProblemCode::OutcomeUnknown
            | ProblemCode::Busy => 503,
        }
    }
}

/// The wire form of a problem (`application/problem+json`, RFC 9457).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemDetails {
    /// `urn:delegraph:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What was wrong, in words.
    pub detail: String,
    /// The error code (scenario-format.md, or a service code).
    pub code: String,
    /// For `has_dependants`: what blocked the removal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependants: Vec<String>,
}

/// The `Retry-After` (seconds) of a `busy` answer.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The longest `detail` an answer carries, in characters.
pub const MAX_DETAIL_CHARS: usize = 1000;

fn cut(s: &str) -> String {
    match s.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A problem: the code, what was wrong, and (for `has_dependants`) what blocked it.
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: ProblemCode,
    pub detail: String,
    pub dependants: Vec<String>,
}

impl Problem {
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Problem {
        Problem {
            code,
            detail: detail.into(),
            dependants: Vec::new(),
        }
    }

    pub fn invalid(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemCode::Spec(ErrorCode::InvalidInput), detail)
    }

    pub fn limit(detail: impl Into<String>) -> Problem {
        Problem::new(ProblemCode::LimitExceeded, detail)
    }

    /// The wire form. The detail is cut at [`MAX_DETAIL_CHARS`]: whatever a message
    /// quotes, an error body stays small.
    pub fn details(&self) -> ProblemDetails {
        let c = self.code.as_str();
        let status = self.code.status();
        let title = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_string();
        ProblemDetails {
            kind: format!("urn:delegraph:problem:{c}"),
            title,
            status,
            detail: cut(&self.detail),
            code: c.to_string(),
            dependants: self.dependants.clone(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Problem {
        let mut p = Problem::new(ProblemCode::Spec(e.code), e.message);
        p.dependants = e.dependants;
        p
    }
}

impl From<CommitError> for Problem {
    fn from(e: CommitError) -> Problem {
        match e {
            CommitError::Refused(e) => e.into(),
            e @ CommitError::OutcomeUnknown { .. } => {
                Problem::new(ProblemCode::OutcomeUnknown, e.to_string())
            }
            other => Problem::new(ProblemCode::Unavailable, other.to_string()),
        }
    }
}

impl From<crate::mutate::SimError> for Problem {
    fn from(e: crate::mutate::SimError) -> Problem {
        use crate::mutate::SimError;
        match e {
            SimError::Refused(e) => e.into(),
            SimError::OverTime | SimError::OverEntries { .. } => Problem::limit(format!(
                "{e}; simulate a narrower event, or raise the server's simulate budget"
            )),
            // The client is gone (or the request time limit cut it): nobody reads this.
            SimError::Cancelled => Problem::new(ProblemCode::Timeout, e.to_string()),
        }
    }
}

impl From<crate::background::PoolError> for Problem {
    fn from(e: crate::background::PoolError) -> Problem {
        use crate::background::PoolError;
        match e {
            PoolError::Busy { .. } => Problem::new(ProblemCode::Busy, e.to_string()),
            PoolError::Lost | PoolError::Spawn(_) => Problem::new(ProblemCode::Unavailable, e.to_string()),
        }
    }
}

impl From<StaleRead> for Problem {
    fn from(e: StaleRead) -> Problem {
        match e {
            StaleRead::Ahead { .. } | StaleRead::Gone { .. } => {
                Problem::new(ProblemCode::Spec(ErrorCode::Conflict), e.to_string())
            }
            StaleRead::NotYet { .. } => Problem::new(ProblemCode::TokenNotReached, e.to_string()),
        }
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let body = serde_json::to_string(&self.details()).unwrap_or_else(|_| String::from("{}"));
        let mut r = HttpResponse::build(self.status_code());
        r.insert_header(ContentType(
            "application/problem+json".parse().unwrap_or(mime_json()),
        ));
        if self.code == ProblemCode::Unauthenticated {
            r.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if self.code == ProblemCode::Busy {
            r.insert_header(("Retry-After", RETRY_AFTER_SECS.to_string()));
        }
        r.body(body)
    }
}

fn mime_json() -> actix_web::mime::Mime {
    actix_web::mime::APPLICATION_JSON
}
