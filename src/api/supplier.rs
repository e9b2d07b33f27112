//! Maskinporten scope delegation over HTTP (domain.md §10), in the spirit of Altinn's
//! MaskinportenSchema endpoints:
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/maskinporten/suppliers` | `add_supplier` (`{consumer, supplier, by?}`) |
//! | `DELETE /v1/maskinporten/suppliers?consumer=&supplier=&cascade=&by=` | `remove_supplier` |
//! | `POST /v1/maskinporten/scope-delegations` | `delegate_scope` (`{consumer, supplier, resource, by?}`) |
//! | `DELETE /v1/maskinporten/scope-delegations?consumer=&supplier=&resource=&by=` | `undelegate_scope` |
//! | `GET /v1/maskinporten/delegations?supplier=&consumer=&scope=` | Maskinporten's lookup (`scope_delegations`) |
//!
//! A write here is one event of the vocabulary on the very path of `POST /v1/events`:
//! the actor binding of [`super::actor`] (an end-user token acts as its `sub`; `by`
//! absent means an import and needs `delegraph:import`), the sequencer, durable before
//! the answer, which is the same `EventsAnswer`. The generic query routes
//! `/v1/scope_delegations`, `/v1/suppliers` and `/v1/consumers` answer the same queries
//! under their vocabulary names.

use actix_web::web::{self, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::problem::{Problem, ProblemDetails};
use super::routes::{EventsAnswer, MinToken};
use crate::query::{ScopeDelegationsAnswer, ScopeDelegationsQuery};

/// `POST /v1/maskinporten/suppliers`: make `supplier` a supplier of `consumer`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct AddSupplierBody {
    pub consumer: String,
    pub supplier: String,
    /// The person acting (needs `maskinporten-administrator` for the consumer).
    pub by: Option<String>,
}

/// `DELETE /v1/maskinporten/suppliers`: end the supplier relationship.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveSupplierParams {
    pub consumer: String,
    pub supplier: String,
    /// Remove the scope delegations with it (default false: refused with
    /// `has_dependants` while there are any).
    pub cascade: Option<bool>,
    /// The person acting (`maskinporten-administrator` for the consumer or the supplier).
    pub by: Option<String>,
}

/// `POST /v1/maskinporten/scope-delegations`: delegate a whole scope resource.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DelegateScopeBody {
    pub consumer: String,
    pub supplier: String,
    /// A resource of kind `maskinporten_schema`.
    pub resource: String,
    pub by: Option<String>,
}

/// `DELETE /v1/maskinporten/scope-delegations`: remove one scope delegation.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UndelegateScopeParams {
    pub consumer: String,
    pub supplier: String,
    pub resource: String,
    pub by: Option<String>,
}

/// Submits one event named `name` with `fields` on the path of `POST /v1/events`.
async fn submit(
    req: &HttpRequest,
    state: &AppState,
    name: &str,
    fields: Map<String, Value>,
) -> Result<HttpResponse, Problem> {
    let caller = super::routes::event_writer(state, req, name)?;
    let committed = super::routes::commit_one(state, &caller, name, fields).await?;
    Ok(super::routes::committed_answer(&committed))
}

/// The JSON object of a POST body (no `min_token` here: this is a write).
async fn body_fields(
    req: &HttpRequest,
    payload: Payload,
    state: &AppState,
) -> Result<Map<String, Value>, Problem> {
    super::guard::same_origin(req)?;
    super::guard::json_body(req)?;
    if !req.query_string().is_empty() {
        return Err(Problem::invalid("this route takes its fields in the JSON body"));
    }
    let body = state.limits.read_body(req, payload).await?;
    match state.limits.parse_json(&body)? {
        Value::Object(m) => Ok(m),
        _ => Err(Problem::invalid(
            "the body is a JSON object of the event's fields",
        )),
    }
}

/// The fields of a DELETE from its query string; `cascade` is a boolean.
fn query_fields(req: &HttpRequest) -> Result<Map<String, Value>, Problem> {
    super::guard::same_origin(req)?;
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| Problem::invalid(format!("the query string is not valid: {e}")))?
        .into_inner();
    let mut fields = Map::new();
    for (k, v) in pairs {
        let value = if k == "cascade" {
            match v.as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(Problem::invalid("`cascade` is `true` or `false`")),
            }
        } else {
            Value::String(v)
        };
        if fields.insert(k.clone(), value).is_some() {
            return Err(Problem::invalid(format!(
                "query parameter `{}` is given twice",
                crate::model::quote(&k)
            )));
        }
    }
    Ok(fields)
}

/// Make an organisation a supplier of a consumer (`add_supplier`, domain.md §10.2).
#[utoipa::path(post, path = "/v1/maskinporten/suppliers", tag = "maskinporten",
    request_body(content = AddSupplierBody),
    responses(
        (status = 200, description = "committed", body = EventsAnswer),
        (status = "4XX", description = "refused: nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["delegraph:act"]), ("bearer" = ["delegraph:write"]), ("bearer" = ["delegraph:import"])))]
pub async fn add_supplier(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let fields = body_fields(&req, payload, &state).await?;
    submit(&req, &state, "add_supplier", fields).await
}

/// End a supplier relationship (`remove_supplier`, domain.md §10.4).
#[utoipa::path(delete, path = "/v1/maskinporten/suppliers", tag = "maskinporten",
    params(RemoveSupplierParams),
    responses(
        (status = 200, description = "committed; the removed supplier assignment is listed", body = EventsAnswer),
        (status = "4XX", description = "refused (`has_dependants` while scopes are delegated and `cascade` is not set): nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["delegraph:act"]), ("bearer" = ["delegraph:write"]), ("bearer" = ["delegraph:import"])))]
pub async fn remove_supplier(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let fields = query_fields(&req)?;
    submit(&req, &state, "remove_supplier", fields).await
}

/// Delegate a whole scope resource to a supplier (`delegate_scope`, domain.md §10.3).
#[utoipa::path(post, path = "/v1/maskinporten/scope-delegations", tag = "maskinporten",
    request_body(content = DelegateScopeBody),
    responses(
        (status = 200, description = "committed", body = EventsAnswer),
        (status = "4XX", description = "refused: nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["delegraph:act"]), ("bearer" = ["delegraph:write"]), ("bearer" = ["delegraph:import"])))]
pub async fn delegate_scope(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let fields = body_fields(&req, payload, &state).await?;
    submit(&req, &state, "delegate_scope", fields).await
}

/// Remove one scope delegation (`undelegate_scope`, domain.md §10.4).
#[utoipa::path(delete, path = "/v1/maskinporten/scope-delegations", tag = "maskinporten",
    params(UndelegateScopeParams),
    responses(
        (status = 200, description = "committed", body = EventsAnswer),
        (status = "4XX", description = "refused: nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["delegraph:act"]), ("bearer" = ["delegraph:write"]), ("bearer" = ["delegraph:import"])))]
pub async fn undelegate_scope(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    let fields = query_fields(&req)?;
    submit(&req, &state, "undelegate_scope", fields).await
}

/// Maskinporten's lookup: the scope delegations matching every filter given (at least
/// one of `supplier`, `consumer`, `scope`), each with its resource's scopes.
#[utoipa::path(get, path = "/v1/maskinporten/delegations", tag = "maskinporten",
    params(ScopeDelegationsQuery, MinToken),
    responses((status = 200, body = ScopeDelegationsAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
pub async fn delegations(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    super::routes::query_route("scope_delegations", req, payload, state).await
}
