//! The decision point over HTTP, on Altinn's paths: `POST /authorization/api/v1/decision`
//! (XACML in XML or in the JSON profile, chosen by the `Content-Type`) and
//! `POST /authorization/api/v1/authorize` (the external endpoint, JSON only).
//!
//! The answers are the library's ([`crate::pdp`]); this module only picks the format,
//! guards the body and reads the world the way every query route does (read scope,
//! `min_token`, the world's read lock, the `Delegraph-Token` header).
//!
//! Two kinds of failure, as in Altinn: a request that is not valid XACML (malformed XML
//! or JSON, a reference to an unknown category, ...) is *answered*, with HTTP 200 and
//! one `Indeterminate` carrying the `syntax-error` status, because that is what a PEP
//! written against Altinn expects to parse. A body the server will not read at all is
//! *refused* with a problem: a media type it does not speak (415
//! `unsupported_media_type`), bytes that are not text (400 `invalid_input`), a body over
//! the size limit (413 `limit_exceeded`) or JSON nested deeper than the limit (400
//! `invalid_input`, checked before parsing as on every JSON route).

use actix_web::http::header::CONTENT_TYPE;
use actix_web::web::{self, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::auth::Scope;
use super::problem::{Problem, ProblemCode, ProblemDetails};
use super::routes::TOKEN_HEADER;
use crate::pdp::{self, Api, PdpError};
use crate::world::World;

/// The internal decision endpoint.
pub const DECISION_PATH: &str = "/authorization/api/v1/decision";
/// The external decision endpoint (also takes a national id as the subject).
pub const AUTHORIZE_PATH: &str = "/authorization/api/v1/authorize";

/// An XACML 3.0 request in the JSON profile, in Altinn's shape:
/// `{"Request": {"AccessSubject": [{"Attribute": [{"AttributeId": "urn:altinn:userid",
/// "Value": "1001"}]}], "Action": [...], "Resource": [...], "MultiRequests":
/// {"RequestReference": [{"ReferenceId": [...]}]}}}`. Property names are read
/// case-insensitively.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct XacmlJsonRequest(pub Value);

/// The JSON-profile answer: `{"Response": [{"Decision": "Permit", "Status": {"StatusCode":
/// {"Value": "urn:oasis:names:tc:xacml:1.0:status:ok"}}, "Obligations": [...],
/// "Category": [...]}]}`, one result per individual request, in request order.
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct XacmlJsonResponse(pub Value);

/// The format of a request body, and so of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Xml,
    Json,
}

/// The media type of the body (without parameters, lower case), mapped to a format
/// the endpoint takes.
fn body_format(req: &HttpRequest, accepted: &[Format]) -> Result<Format, Problem> {
    let raw = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let format = match media.as_str() {
        "application/xml" | "text/xml" | "application/xacml+xml" => Some(Format::Xml),
        "application/json" | "application/xacml+json" => Some(Format::Json),
        _ => None,
    };
    let takes = |f: Format| accepted.contains(&f);
    match format {
        Some(f) if takes(f) => Ok(f),
        _ => {
            let names = if takes(Format::Xml) {
                "application/json, application/xacml+json, application/xml, text/xml or application/xacml+xml"
            } else {
                "application/json or application/xacml+json"
            };
            let got = if media.is_empty() {
                "no Content-Type".to_string()
            } else {
                format!("`{media}`")
            };
            Err(Problem::new(
                ProblemCode::UnsupportedMediaType,
                format!("the body must be {names}, got {got}"),
            ))
        }
    }
}

/// `min_token` is the only query parameter (the body is the XACML request).
fn min_token(req: &HttpRequest) -> Result<Option<u64>, Problem> {
    super::routes::query_min_token(req, "the decision endpoints take")
}

/// A body read and checked, ready to be decided.
enum Input {
    Xml(String),
    Json(Value),
    /// Text that is not JSON: answered, not refused (see the module doc).
    NotJson(String),
}

impl Input {
    fn read(format: Format, body: &[u8], state: &AppState) -> Result<Input, Problem> {
        match format {
            // XML may come as UTF-16 (with or without a byte-order mark); the library's
            // decoder knows the cases.
            Format::Xml => pdp::xml::decode(body)
                .map(Input::Xml)
                .map_err(|e| Problem::invalid(format!("the XML body is not UTF-8 or UTF-16 text: {e}"))),
            Format::Json => {
                let text = std::str::from_utf8(body)
                    .map_err(|e| Problem::invalid(format!("the JSON body is not UTF-8 text: {e}")))?;
                state.limits.check_json_depth(body)?;
                Ok(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                    Err(e) => Input::NotJson(format!("the body is not valid JSON: {e}")),
                    // Valid JSON that holds a key twice is refused, as on every JSON route.
                    Ok(_) => Input::Json(super::strict::parse(body, state.limits.max_json_depth)?),
                })
            }
        }
    }

    fn decide(&self, w: &World, api: Api) -> Answer {
        match self {
            Input::Xml(text) => Answer::Xml(pdp::decide_xml(w, text)),
            Input::Json(v) => Answer::Json(pdp::decide_json_api(w, v, api)),
            Input::NotJson(why) => Answer::Json(pdp::json::write_response(
                &PdpError::Syntax(why.clone()).to_response(),
            )),
        }
    }
}

enum Answer {
    Xml(String),
    Json(Value),
}

/// The read path of both endpoints.
async fn decide_route(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
    api: Api,
    accepted: &[Format],
) -> Result<HttpResponse, Problem> {
    state.auth.require(&req, Scope::Read)?;
    let format = body_format(&req, accepted)?;
    let min = min_token(&req)?;
    let body = state.limits.read_body(&req, payload).await?;
    let input = Input::read(format, &body, &state)?;
    let store = state.partitions.store();
    if let Some(t) = min {
        store.wait_visible(t, state.limits.max_token_wait).await?;
    }
    let (answer, token) = store.read(|w| input.decide(w, api));
    let mut res = HttpResponse::Ok();
    res.insert_header((TOKEN_HEADER, token.to_string()));
    Ok(match answer {
        Answer::Xml(text) => res.content_type("application/xml; charset=utf-8").body(text),
        Answer::Json(v) => res.json(v),
    })
}

/// Altinn's decision endpoint: an XACML 3.0 request in XML (`application/xml`,
/// `text/xml`, `application/xacml+xml`) or in the JSON profile (`application/json`,
/// `application/xacml+json`), answered in the same format. A request that is not valid
/// XACML is answered (200) with one `Indeterminate` and the `syntax-error` status.
#[utoipa::path(post, path = "/authorization/api/v1/decision", operation_id = "decision", tag = "decision point",
    params(super::routes::MinToken),
    request_body(description = "an XACML 3.0 request", content(
        (XacmlJsonRequest = "application/json"),
        (XacmlJsonRequest = "application/xacml+json"),
        (String = "application/xml"),
        (String = "text/xml"),
        (String = "application/xacml+xml"),
    )),
    responses(
        (status = 200, description = "the decisions, one result per individual request, in the request's format", content(
            (XacmlJsonResponse = "application/json"),
            (String = "application/xml"),
        )),
        (status = 415, description = "a media type other than XML or JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = "4XX", description = "refused", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["delegraph:read"])))]
pub async fn decision(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    decide_route(req, payload, state, Api::Internal, &[Format::Xml, Format::Json]).await
}

/// Altinn's external authorize endpoint: a JSON-profile request, where the subject may
/// also be a national id (`urn:altinn:person:identifier-no`).
#[utoipa::path(post, path = "/authorization/api/v1/authorize", operation_id = "authorize", tag = "decision point",
    params(super::routes::MinToken),
    request_body(description = "an XACML 3.0 request in the JSON profile", content(
        (XacmlJsonRequest = "application/json"),
        (XacmlJsonRequest = "application/xacml+json"),
    )),
    responses(
        (status = 200, description = "the decisions, one result per individual request", body = XacmlJsonResponse),
        (status = 415, description = "a media type other than JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = "4XX", description = "refused", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["delegraph:read"])))]
pub async fn authorize(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    decide_route(req, payload, state, Api::External, &[Format::Json]).await
}
