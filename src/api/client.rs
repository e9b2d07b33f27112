//! A blocking HTTP client for a delegraph server: the [`Backend`] that runs scenario
//! files over HTTP (`delegraph test --server URL`), so the runner's parsing and judging
//! are the very code of the in-process runner.

use std::time::Duration;

use serde_json::Value;

use crate::event::Event;
use crate::model::{Error, ErrorCode, Result};
use crate::pdp::Api;
use crate::query::{Answer, Query};
use crate::scenario::Backend;

/// A server reached over HTTP.
pub struct HttpBackend {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// The token of the last write: every read asks for at least that state.
    last_write: u64,
}

impl HttpBackend {
    /// `base` is e.g. `http://127.0.0.1:8080`; `bearer` a JWT with the scopes the steps
    /// need (`delegraph:admin` for the reset before each file).
    pub fn new(base: &str, bearer: Option<String>) -> HttpBackend {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        HttpBackend {
            base: base.trim_end_matches('/').to_string(),
            token: bearer,
            agent,
            last_write: 0,
        }
    }

    /// POSTs JSON; returns the answer body, or the problem as an engine error.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.post(&url).content_type("application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut res = req
            .send(body.to_string())
            .map_err(|e| Error::invalid(format!("cannot reach `{url}`: {e}")))?;
        let status = res.status().as_u16();
        let text = res
            .body_mut()
            .with_config()
            .limit(256 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| Error::invalid(format!("cannot read the answer of `{url}`: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("`{url}` answered {status} with no JSON: {e}")))?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let code = v.get("code").and_then(Value::as_str).unwrap_or_default();
        let detail = v.get("detail").and_then(Value::as_str).unwrap_or_default();
        match ErrorCode::parse(code) {
            Some(c) => Err(Error::new(c, detail)),
            None => Err(Error::invalid(format!(
                "`{url}` answered {status} `{code}`: {detail}"
            ))),
        }
    }
}

impl Backend for HttpBackend {
    fn reset(&mut self) -> Result<()> {
        let v = self.post("/v1/admin/reset", &Value::Null)?;
        self.last_write = v.get("token").and_then(Value::as_u64).unwrap_or(0);
        Ok(())
    }

    fn apply(&mut self, events: &[Event]) -> Result<()> {
        let body =
            serde_json::to_value(events).map_err(|e| Error::invalid(format!("cannot encode events: {e}")))?;
        let v = self.post("/v1/events", &body)?;
        if let Some(t) = v.get("token").and_then(Value::as_u64) {
            self.last_write = t;
        }
        Ok(())
    }

    fn query(&mut self, q: &Query) -> Result<Answer> {
        let mut body = q.body()?;
        if let Value::Object(m) = &mut body {
            m.insert("min_token".into(), Value::from(self.last_write));
        }
        let v = self.post(&format!("/v1/{}", q.name()), &body)?;
        Answer::from_json(q, v)
    }

    /// A `decide` step: the JSON request to Altinn's decision (`internal`) or authorize
    /// (`external`) endpoint, at least as fresh as the last write.
    fn decide(&mut self, api: Api, request: &Value) -> Result<Value> {
        let path = match api {
            Api::Internal => super::decision::DECISION_PATH,
            Api::External => super::decision::AUTHORIZE_PATH,
        };
        self.post(&format!("{path}?min_token={}", self.last_write), request)
    }
}
