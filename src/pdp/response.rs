//! The response: one result per individual request.

use super::policy::AttrValue;
use super::request::Category;

pub const STATUS_OK: &str = "urn:oasis:names:tc:xacml:1.0:status:ok";
pub const STATUS_MISSING: &str = "urn:oasis:names:tc:xacml:1.0:status:missing-attribute";
pub const STATUS_SYNTAX: &str = "urn:oasis:names:tc:xacml:1.0:status:syntax-error";
pub const STATUS_PROCESSING: &str = "urn:oasis:names:tc:xacml:1.0:status:processing-error";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Permit,
    Deny,
    NotApplicable,
    Indeterminate,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Permit => "Permit",
            Decision::Deny => "Deny",
            Decision::NotApplicable => "NotApplicable",
            Decision::Indeterminate => "Indeterminate",
        }
    }
    pub fn parse(s: &str) -> Option<Decision> {
        Some(match s.trim() {
            "Permit" => Decision::Permit,
            "Deny" => Decision::Deny,
            "NotApplicable" => Decision::NotApplicable,
            "Indeterminate" => Decision::Indeterminate,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub id: String,
    pub category: Option<String>,
    pub issuer: Option<String>,
    pub value: AttrValue,
}

/// An obligation or advice of a result.
#[derive(Debug, Clone, PartialEq)]
pub struct Obligation {
    pub id: String,
    pub assignments: Vec<Assignment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResultItem {
    pub decision: Decision,
    pub status_code: String,
    pub status_message: Option<String>,
    pub obligations: Vec<Obligation>,
    pub advice: Vec<Obligation>,
    /// The attributes marked IncludeInResult, by category.
    pub attributes: Vec<Category>,
    /// (is a policy set, id, version) of the policies that were applicable.
    pub policy_ids: Vec<(bool, String, String)>,
}

impl ResultItem {
    pub fn new(decision: Decision) -> ResultItem {
        ResultItem {
            decision,
            status_code: STATUS_OK.to_string(),
            status_message: None,
            obligations: Vec::new(),
            advice: Vec::new(),
            attributes: Vec::new(),
            policy_ids: Vec::new(),
        }
    }
    pub fn error(code: &str, message: impl Into<String>) -> ResultItem {
        ResultItem {
            status_code: code.to_string(),
            status_message: Some(message.into()),
            ..ResultItem::new(Decision::Indeterminate)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Response {
    pub results: Vec<ResultItem>,
}

impl Response {
    pub fn single(r: ResultItem) -> Response {
        Response { results: vec![r] }
    }
}
