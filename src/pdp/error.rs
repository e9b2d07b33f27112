//! Why a decision-point document could not be read or evaluated.

use super::response::{self, Response, ResultItem};

/// Why a document could not be read or evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PdpError {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("processing error: {0}")]
    Processing(String),
}

impl PdpError {
    pub fn status(&self) -> &'static str {
        match self {
            PdpError::Syntax(_) => response::STATUS_SYNTAX,
            PdpError::Processing(_) => response::STATUS_PROCESSING,
        }
    }
    pub(crate) fn message(&self) -> String {
        match self {
            PdpError::Syntax(m) | PdpError::Processing(m) => m.clone(),
        }
    }
    /// The whole answer to a request that failed: one Indeterminate.
    pub fn to_response(&self) -> Response {
        Response::single(ResultItem::error(self.status(), self.message()))
    }
}
