//! The HTTP routes: handlers, their OpenAPI description, and the shared read and write
//! paths they all go through.

use actix_web::http::Method;
use actix_web::web::{self, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::AppState;
use super::auth::{Caller, Scope};
use super::problem::{Problem, ProblemCode, ProblemDetails};
use crate::partition::Committed;
use crate::query::{self, *};

/// The header every read and write answers with: the token of the state it saw or made.
pub const TOKEN_HEADER: &str = "Delegraph-Token";

/// `min_token`: answer from a state at least as fresh as this consistency token.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MinToken {
    /// A token returned by an earlier write; the read waits briefly for it.
    pub min_token: Option<u64>,
}

/// A batch of events of the vocabulary, applied atomically, e.g.
/// `[{"party": {"id": "kari", "kind": "person"}}, {"register_role": {...}}]`.
#[derive(ToSchema)]
#[schema(value_type = Vec<Object>)]
pub struct EventBatch(pub Vec<Value>);

/// What a committed batch changed, and its consistency token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventsAnswer {
    /// The log position of the batch: pass it as `min_token` to read your write.
    pub token: u64,
    pub changed: bool,
    /// Every assignment the batch deleted, cascades included.
    pub removed_assignments: Vec<RemovedAssignment>,
    /// Every client delegation the batch deleted, cascades included.
    pub removed_delegations: Vec<RemovedDelegation>,
}

/// Many decisions in one request, all answered from the same state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBatch {
    pub checks: Vec<CheckQuery>,
    #[serde(default)]
    pub min_token: Option<u64>,
}

/// One decision of a batch: `allowed`, or the problem with that check.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProblemDetails>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckBatchAnswer {
    /// The token of the state every decision was taken from.
    pub token: u64,
    /// One result per check, in order.
    pub results: Vec<CheckResult>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResetAnswer {
    pub token: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

// ----------------------------------------------------------------------------------
// The shared paths

fn json_ok(token: u64, body: &impl Serialize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((TOKEN_HEADER, token.to_string()))
        .json(body)
}

pub(super) fn token_value(v: Value, from: &str) -> Result<u64, Problem> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| Problem::invalid(format!("`min_token` in the {from} is not a non-negative integer")))
}

/// A query's fields and `min_token`, from the query string (GET) or the JSON body (POST).
pub(super) async fn query_input(
    req: &HttpRequest,
    payload: Payload,
    state: &AppState,
) -> Result<(Value, Option<u64>), Problem> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| Problem::invalid(format!("the query string is not valid: {e}")))?
        .into_inner();
    let mut fields = Map::new();
    let mut min_token = None;
    for (k, v) in pairs {
        if k == "min_token" {
            if min_token.is_some() {
                return Err(Problem::invalid("query parameter `min_token` is given twice"));
            }
            min_token = Some(token_value(Value::String(v), "query string")?);
        } else if req.method() == Method::GET {
            if fields.insert(k.clone(), Value::String(v)).is_some() {
                return Err(Problem::invalid(format!(
                    "query parameter `{}` is given twice",
                    crate::model::quote(&k)
                )));
            }
        } else {
            return Err(Problem::invalid(format!(
                "query parameter `{}`: a POST takes its fields in the JSON body",
                crate::model::quote(&k)
            )));
        }
    }
    if req.method() == Method::POST {
        super::guard::json_body(req)?;
        let body = state.limits.read_body(req, payload).await?;
        match state.limits.parse_json(&body)? {
            Value::Object(m) => fields = m,
            other => {
                return Err(Problem::invalid(format!(
                    "the body is a JSON object of the query's fields, got `{}`",
                    kind_of(&other)
                )));
            }
        }
        if let Some(t) = fields.remove("min_token") {
            if min_token.is_some() {
                return Err(Problem::invalid(
                    "`min_token` is given both in the query string and in the body",
                ));
            }
            min_token = Some(token_value(t, "body")?);
        }
    }
    Ok((Value::Object(fields), min_token))
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The read path of every query route.
pub(super) async fn query_route(
    name: &str,
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    query_route_with(name, None, req, payload, state).await
}

/// [`query_route`] with one field taken from the path (e.g. the consent id of
/// `/v1/consents/{id}`); the same field in the query or body must agree with it.
async fn query_route_with(
    name: &str,
    from_path: Option<(&str, String)>,
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    state.auth.require(&req, Scope::Read)?;
    let (mut fields, min_token) = query_input(&req, payload, &state).await?;
    if let (Some((k, v)), Value::Object(m)) = (from_path, &mut fields) {
        crate::model::check_id(k, &v)?;
        match m.insert(k.to_string(), Value::String(v.clone())) {
            Some(Value::String(old)) if old != v => {
                return Err(Problem::invalid(format!(
                    "`{k}` is `{}` in the path and `{}` in the request",
                    crate::model::quote(&v),
                    crate::model::quote(&old)
                )));
            }
            _ => {}
        }
    }
    // `at_token`: answer from exactly that version, while the store still keeps it.
    let at_token = match fields.as_object_mut().and_then(|m| m.remove("at_token")) {
        Some(v) => Some(
            token_value(v.clone(), "request")
                .map_err(|_| Problem::invalid("`at_token` is not a non-negative integer"))?,
        ),
        None => None,
    };
    let q =
        Query::parse(name, fields).ok_or_else(|| Problem::invalid(format!("unknown query `{name}`")))??;
    let store = state.partitions.store();
    if let Some(t) = min_token {
        store.wait_visible(t, state.limits.max_token_wait).await?;
    }
    let version = match at_token {
        Some(t) => store.pin_at(t)?,
        None => store.pin(),
    };
    if let Query::Simulate(sq) = q {
        return simulate_on(&state, store, version, sq).await;
    }
    let answer = query::evaluate(&version.world, &q)?;
    Ok(json_ok(version.token, &answer.body()?))
}

/// `simulate` on its pinned version, in the background pool ([`crate::background`]):
/// a private copy, low priority, within the server's budget, stopped when the client
/// goes away. It holds no HTTP worker and no lock.
async fn simulate_on(
    state: &AppState,
    store: &std::sync::Arc<crate::partition::Store>,
    version: std::sync::Arc<crate::partition::Version>,
    q: SimulateQuery,
) -> Result<HttpResponse, Problem> {
    if let Some(n) = q.limit
        && n > super::a2::MAX_LIMIT
    {
        return Err(Problem::invalid(format!(
            "`limit` is {n}, more than the most an answer lists ({})",
            super::a2::MAX_LIMIT
        )));
    }
    let cancel = crate::background::CancelOnDrop::new();
    let (time, max_entries, flag) = (
        state.limits.simulate_time,
        state.limits.simulate_max_entries,
        cancel.flag(),
    );
    let store = store.clone();
    let (answer, token) = state
        .jobs
        .pool
        .run("simulate", move || {
            // The budget's clock starts when the job runs, not while it waits its turn.
            let budget = crate::mutate::Budget {
                deadline: Some(std::time::Instant::now() + time),
                max_entries,
                cancel: Some(flag),
            };
            store.exclusive_on(version, |w| {
                query::simulate_within(w, &q, &budget, super::a2::DEFAULT_LIMIT)
            })
        })
        .await?;
    cancel.disarm();
    let answer = Answer::Simulate(answer?);
    Ok(json_ok(token, &answer.body()?))
}

// ----------------------------------------------------------------------------------
// Writes

/// Apply a batch of events atomically; durable before the answer.
///
/// Who acts in each event decides the scope it needs (one refused event refuses the
/// batch):
///
/// | acts | events | scope |
/// |---|---|---|
/// | an end user, named by `by` | `grant`, `revoke`, `remove_connection`, `add_agent`, `remove_agent`, `delegate`, `undelegate`, `access_request`, `add_client`, `remove_client`, `accept_consent`, `reject_consent`, `revoke_consent`, `add_supplier`, `remove_supplier`, `delegate_scope`, `undelegate_scope`; `by` required: `approve`, `reject`, `confirm`, `withdraw`, `escalate` | `delegraph:act` as that `by` (the token's `sub`), or `delegraph:write`; without `by` (an import) `delegraph:import` |
/// | a vendor, consumer or service owner organisation | `system`, `system_user_request`, `change_request`, `consent_request`, `use_consent`, an `access_request` with `draft: true` (also `delegraph:import`) | `delegraph:write` |
/// | a register or the administration | `party`, `register_role`, `unregister_role`, `a2_role`, `remove_a2_role`, `died`, `retire_a2_roles`, `clock`, `resource`, `policy`, `instance`, `access_list` | `delegraph:import` |
///
/// An end-user token (`delegraph:act`) acts only as its `sub`: `by` is filled from it
/// when absent and refused (403 `not_authorized`) when it differs. `delegraph:admin`
/// includes every scope; `delegraph:write` includes `delegraph:act` for any party. The
/// body is `application/json` (else 415), with no key twice in an object; a browser's
/// cross-site request is refused (403).
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(content = EventBatch, description = "a JSON list of at most 1000 events of the vocabulary"),
    responses(
        (status = 200, description = "committed: the token and everything the batch removed", body = EventsAnswer),
        (status = "4XX", description = "refused: nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the journal failed or takes no writes, nothing changed; `outcome_unknown`: the journal failed after it queued the batch, which may or may not be committed (read before retrying)", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["delegraph:act"]), ("bearer" = ["delegraph:write"]), ("bearer" = ["delegraph:import"]))
)]
pub async fn post_events(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let caller = state.auth.caller(&req)?;
    if ![Scope::Act, Scope::Write, Scope::Import]
        .iter()
        .any(|s| caller.has(*s))
    {
        return Err(Problem::new(
            ProblemCode::InsufficientScope,
            "sending events needs scope `delegraph:act`, `delegraph:write` or `delegraph:import`",
        ));
    }
    super::guard::same_origin(&req)?;
    super::guard::json_body(&req)?;
    if !req.query_string().is_empty() {
        return Err(Problem::invalid(
            "`POST /v1/events` takes no query parameters: `by` and every other field go in each event",
        ));
    }
    let body = state.limits.read_body(&req, payload).await?;
    let events = batch_of(&state.limits, &caller, &body)?;
    let committed = state.partitions.submit(events).await.map_err(|e| match e {
        // The index of the refused event, as the parse errors give it.
        crate::partition::CommitError::Refused(mut e) => {
            if let Some(i) = e.event {
                e.message = format!("event {i}: {}", e.message);
            }
            Problem::from(e)
        }
        other => Problem::from(other),
    })?;
    Ok(committed_answer(&committed))
}

/// The answer to a committed write: its token (also in the header) and what it changed.
pub(super) fn committed_answer(committed: &crate::partition::Committed) -> HttpResponse {
    let changes = Changes::from(&committed.outcome);
    let answer = EventsAnswer {
        token: committed.token,
        changed: changes.changed,
        removed_assignments: changes.removed_assignments,
        removed_delegations: changes.removed_delegations,
    };
    json_ok(committed.token, &answer)
}

/// The events of a `POST /v1/events` body, bound to `caller`. A batch of the common
/// kinds is read straight into events ([`crate::event::typed_batch`]); any other body
/// takes the general reading — strict JSON, then each event through [`super::actor`] —
/// which also gives every refusal its message. Both answer the same events.
fn batch_of(
    limits: &super::limits::Limits,
    caller: &Caller,
    body: &[u8],
) -> Result<Vec<crate::event::Event>, Problem> {
    if super::limits::json_depth(body) <= limits.max_json_depth
        && let Some(events) = crate::event::typed_batch(body)
        && !events.is_empty()
        && events.len() <= limits.max_batch_events
    {
        return super::actor::bind_batch(caller, events);
    }
    let Value::Array(items) = limits.parse_json(body)? else {
        return Err(Problem::invalid(
            "the body of `POST /v1/events` is a JSON list of events",
        ));
    };
    if items.is_empty() {
        return Err(Problem::invalid("the batch holds no event"));
    }
    if items.len() > limits.max_batch_events {
        return Err(Problem::limit(format!(
            "the batch holds {} events, more than the limit of {}",
            items.len(),
            limits.max_batch_events
        )));
    }
    super::actor::decode_batch(caller, items)
}

/// Empty the world (for `delegraph test --server`); needs `--allow-reset`.
#[utoipa::path(
    post,
    path = "/v1/admin/reset",
    tag = "admin",
    responses(
        (status = 200, description = "the world is empty", body = ResetAnswer),
        (status = "4XX", description = "refused", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["delegraph:admin"]))
)]
pub async fn post_reset(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    state.auth.require(&req, Scope::Admin)?;
    super::guard::same_origin(&req)?;
    if !state.allow_reset {
        return Err(Problem::new(
            ProblemCode::Spec(crate::model::ErrorCode::NotAuthorized),
            "resetting the world is switched off; start the server with `--allow-reset`",
        ));
    }
    let token = state.partitions.store().reset()?;
    Ok(json_ok(token, &ResetAnswer { token }))
}

/// What a checkpoint asked for over HTTP did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckpointAnswer {
    /// Whether a snapshot was written (false without `--data-dir`: nothing to write to).
    pub written: bool,
    /// The token of the state the snapshot holds.
    pub token: Option<u64>,
}

/// Write a checkpoint now: a snapshot of the newest state through the journal, off the
/// HTTP workers in the background pool, one at a time (a second one meanwhile: 503
/// `busy` with `Retry-After`). Readers and writers do not wait for it.
#[utoipa::path(
    post,
    path = "/v1/admin/checkpoint",
    tag = "admin",
    responses(
        (status = 200, description = "checkpointed (or nothing to checkpoint to)", body = CheckpointAnswer),
        (status = "4XX", description = "refused", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "`busy`: a checkpoint is running; or the journal failed", body = ProblemDetails, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["delegraph:admin"]))
)]
pub async fn post_checkpoint(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    state.auth.require(&req, Scope::Admin)?;
    super::guard::same_origin(&req)?;
    let turn = state
        .jobs
        .checkpoint
        .try_start()
        .ok_or_else(|| Problem::new(ProblemCode::Busy, "a checkpoint is already being written"))?;
    let store = state.partitions.store().clone();
    let written = state
        .jobs
        .pool
        .run("checkpoint", move || {
            let _turn = turn;
            store.checkpoint()
        })
        .await?
        .map_err(|e| Problem::new(ProblemCode::Unavailable, format!("the checkpoint failed: {e}")))?;
    let visible = state.partitions.store().visible();
    Ok(json_ok(
        visible,
        &CheckpointAnswer {
            written: written.is_some(),
            token: written,
        },
    ))
}

// ----------------------------------------------------------------------------------
// Queries: GET with the fields as query parameters, or POST with a JSON body.

macro_rules! query_handler {
    ($fn:ident, $name:literal) => {
        pub async fn $fn(
            req: HttpRequest,
            payload: Payload,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse, Problem> {
            query_route($name, req, payload, state).await
        }
    };
}

/// May `subject` use a package, a role, or an action on a resource for `party`?
#[utoipa::path(method(get, post), path = "/v1/check", operation_id = "check", tag = "queries", params(CheckQuery, MinToken),
    request_body(content = CheckQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = CheckAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn check_doc() {}
query_handler!(check, "check");

/// Every party `subject` can act for, with roles and packages.
#[utoipa::path(method(get, post), path = "/v1/authorized_parties", operation_id = "authorized_parties", tag = "queries", params(AuthorizedPartiesQuery, MinToken),
    request_body(content = AuthorizedPartiesQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = AuthorizedPartiesAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn authorized_parties_doc() {}
query_handler!(authorized_parties, "authorized_parties");

/// The effective packages and roles of `subject` for `party`.
#[utoipa::path(method(get, post), path = "/v1/rights", operation_id = "rights", tag = "queries", params(RightsQuery, MinToken),
    request_body(content = RightsQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = RightsAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn rights_doc() {}
query_handler!(rights, "rights");

/// Every subject that holds `package` for `party`.
#[utoipa::path(method(get, post), path = "/v1/holders", operation_id = "holders", tag = "queries", params(HoldersQuery, MinToken),
    request_body(content = HoldersQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = HoldersAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn holders_doc() {}
query_handler!(holders, "holders");

/// The delegation check: may `by`, acting for `party`, pass on a package or an action?
#[utoipa::path(method(get, post), path = "/v1/can_delegate", operation_id = "can_delegate", tag = "queries", params(CanDelegateQuery, MinToken),
    request_body(content = CanDelegateQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = CanDelegateAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn can_delegate_doc() {}
query_handler!(can_delegate, "can_delegate");

/// The derivation paths behind a package, role or resource + action (with `instance`)
/// answer: `paths` in words, `chains` as lists of edges (`from`, `to`, `role`, `via`,
/// `reason`), and for a no the `missing` link.
#[utoipa::path(method(get, post), path = "/v1/explain", operation_id = "explain", tag = "queries", params(ExplainQuery, MinToken),
    request_body(content = ExplainQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = ExplainAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn explain_doc() {}
query_handler!(explain, "explain");

/// The clients an agent acts for.
#[utoipa::path(method(get, post), path = "/v1/clients", operation_id = "clients", tag = "queries", params(ClientsQuery, MinToken),
    request_body(content = ClientsQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = ClientsAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn clients_doc() {}
query_handler!(clients, "clients");

/// The state of a system-user, change or access request.
#[utoipa::path(method(get, post), path = "/v1/request_status", operation_id = "request_status", tag = "queries", params(RequestStatusQuery, MinToken),
    request_body(content = RequestStatusQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = RequestStatusAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn request_status_doc() {}
query_handler!(request_status, "request_status");

/// The clients `add_client` would accept for an agent system user.
#[utoipa::path(method(get, post), path = "/v1/addable_clients", operation_id = "addable_clients", tag = "queries", params(AddableClientsQuery, MinToken),
    request_body(content = AddableClientsQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = ClientsAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn addable_clients_doc() {}
query_handler!(addable_clients, "addable_clients");

/// What one event would remove, computed without changing anything: the counts, and the
/// first `limit` entries of each list (default 1000, at most 100000) with `truncated`.
/// Runs on a private copy of the pinned version in the background pool, within the
/// server's budget (time, and entries held at once): past it 413 `limit_exceeded`,
/// and 503 `busy` (with `Retry-After`) when the background queue is full.
#[utoipa::path(post, path = "/v1/simulate", operation_id = "simulate", tag = "queries", params(MinToken),
    request_body(content = SimulateQuery),
    responses((status = 200, body = SimulateAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "`busy`: the background queue is full; retry after `Retry-After` seconds", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn simulate_doc() {}
query_handler!(simulate, "simulate");

// --- Maskinporten scope delegation (domain.md §10.5) ---

/// The scope delegations matching every filter given (at least one of `consumer`,
/// `supplier`, `scope`).
#[utoipa::path(method(get, post), path = "/v1/scope_delegations", operation_id = "scope_delegations", tag = "queries", params(ScopeDelegationsQuery, MinToken),
    request_body(content = ScopeDelegationsQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = ScopeDelegationsAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn scope_delegations_doc() {}
query_handler!(scope_delegations, "scope_delegations");

/// The consumer's suppliers, with or without scope delegations.
#[utoipa::path(method(get, post), path = "/v1/suppliers", operation_id = "suppliers", tag = "queries", params(SuppliersQuery, MinToken),
    request_body(content = SuppliersQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = SuppliersAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn suppliers_doc() {}
query_handler!(suppliers, "suppliers");

/// The organisations `supplier` is a supplier of.
#[utoipa::path(method(get, post), path = "/v1/consumers", operation_id = "consumers", tag = "queries", params(ConsumersQuery, MinToken),
    request_body(content = ConsumersQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = ConsumersAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn consumers_doc() {}
query_handler!(consumers, "consumers");

/// The `min_token` of a query string that may hold nothing else (a route whose
/// request is its body); `takes` begins the refusal of any other parameter ("the
/// decision endpoints take"). Given twice, refused.
pub(super) fn query_min_token(req: &HttpRequest, takes: &str) -> Result<Option<u64>, Problem> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| Problem::invalid(format!("the query string is not valid: {e}")))?
        .into_inner();
    let mut min = None;
    for (k, v) in pairs {
        if k != "min_token" {
            return Err(Problem::invalid(format!(
                "query parameter `{}`: {takes} only `min_token`",
                crate::model::quote(&k)
            )));
        }
        if min.is_some() {
            return Err(Problem::invalid("query parameter `min_token` is given twice"));
        }
        min = Some(token_value(Value::String(v), "query string")?);
    }
    Ok(min)
}

/// Many decisions per request, all from the same state (at most 10 000). `min_token`
/// in the body or the query string (not both).
#[utoipa::path(post, path = "/v1/check/batch", tag = "queries", request_body(content = CheckBatch),
    params(MinToken),
    responses((status = 200, body = CheckBatchAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
pub async fn check_batch(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    state.auth.require(&req, Scope::Read)?;
    super::guard::json_body(&req)?;
    let body = state.limits.read_body(&req, payload).await?;
    let v = state.limits.parse_json(&body)?;
    let n = v.get("checks").and_then(Value::as_array).map_or(0, Vec::len);
    if n > state.limits.max_batch_checks {
        return Err(Problem::limit(format!(
            "the batch holds {n} checks, more than the limit of {}",
            state.limits.max_batch_checks
        )));
    }
    crate::model::check_strings(&v, &[])?;
    // Each check reads as `POST /v1/check` does: a number stands for its text, `null`
    // for an absent key.
    let mut v = v;
    if let Some(items) = v.get_mut("checks").and_then(Value::as_array_mut) {
        for it in items.iter_mut() {
            *it = crate::model::normalise_scalars(std::mem::take(it), &[]);
        }
    }
    let batch: CheckBatch =
        serde_json::from_value(v).map_err(|e| Problem::invalid(format!("`check/batch`: {e}")))?;
    let min = match (query_min_token(&req, "`check/batch` takes")?, batch.min_token) {
        (Some(_), Some(_)) => {
            return Err(Problem::invalid(
                "`min_token` is given both in the query string and in the body",
            ));
        }
        (q, b) => q.or(b),
    };
    let store = state.partitions.store();
    if let Some(t) = min {
        store.wait_visible(t, state.limits.max_token_wait).await?;
    }
    let (results, token) = store.read(|w| {
        batch
            .checks
            .iter()
            .map(|c| match query::check(w, c) {
                Ok(a) => CheckResult {
                    allowed: Some(a.allowed),
                    error: None,
                },
                Err(e) => CheckResult {
                    allowed: None,
                    error: Some(Problem::from(e).details()),
                },
            })
            .collect::<Vec<_>>()
    });
    Ok(json_ok(token, &CheckBatchAnswer { token, results }))
}

// ----------------------------------------------------------------------------------
// Consent (domain.md §9)

/// A consent's reported status and who accepted it.
#[utoipa::path(method(get, post), path = "/v1/consent_status", operation_id = "consent_status", tag = "consent", params(ConsentStatusQuery, MinToken),
    request_body(content = ConsentStatusQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = ConsentStatusAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn consent_status_doc() {}
query_handler!(consent_status, "consent_status");

/// Does `to` (the consumer or its operator) hold a valid consent from `from` for
/// `action` on consent resource `resource`? For a no, `reason`.
#[utoipa::path(method(get, post), path = "/v1/consent_check", operation_id = "consent_check", tag = "consent", params(ConsentCheckQuery, MinToken),
    request_body(content = ConsentCheckQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = ConsentCheckAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn consent_check_doc() {}
query_handler!(consent_check, "consent_check");

/// A consent's event list, in order (a derived `expired` entry last once it expired).
#[utoipa::path(method(get, post), path = "/v1/consent_events", operation_id = "consent_events", tag = "consent", params(ConsentEventsQuery, MinToken),
    request_body(content = ConsentEventsQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses((status = 200, body = ConsentEventsAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
#[allow(unused)]
fn consent_events_doc() {}
query_handler!(consent_events, "consent_events");

/// Maskinporten's lookup: `consent_check` by (from, to, resource, action), optionally
/// of one `consent`.
#[utoipa::path(get, path = "/v1/consents/lookup", operation_id = "consent_lookup", tag = "consent", params(ConsentCheckQuery, MinToken),
    responses((status = 200, body = ConsentCheckAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
pub async fn consent_lookup(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    query_route("consent_check", req, payload, state).await
}

fn consent_id(req: &HttpRequest) -> String {
    path_id(req).unwrap_or_default()
}

/// The `{id}` of the path, wholly percent-decoded. The router leaves `%25`, `%2F` and
/// `%2B` encoded (so that a decoded `/` cannot split a segment), and a consent whose id
/// holds `%`, `/` or `+` could not be named in the path: `no consent `a%25b``. Every
/// other `%XX` is decoded already, and the middleware refused one that is not UTF-8.
fn path_id(req: &HttpRequest) -> Option<String> {
    let raw = req.match_info().get("id")?;
    Some(if raw.contains('%') {
        String::from_utf8_lossy(&super::percent_decoded(raw)).into_owned()
    } else {
        raw.to_string()
    })
}

/// One consent: its status, parties, rights, `valid_to`, who accepted it and whether that
/// person would still pass the acceptance check.
#[utoipa::path(get, path = "/v1/consents/{id}", operation_id = "consent_get", tag = "consent",
    params(("id" = String, Path, description = "the consent id"), MinToken),
    responses((status = 200, body = ConsentStatusAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
pub async fn consent_get(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let id = consent_id(&req);
    query_route_with("consent_status", Some(("consent", id)), req, payload, state).await
}

/// One consent's event list (Altinn's consent events).
#[utoipa::path(get, path = "/v1/consents/{id}/events", operation_id = "consent_get_events", tag = "consent",
    params(("id" = String, Path, description = "the consent id"), MinToken),
    responses((status = 200, body = ConsentEventsAnswer), (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
pub async fn consent_get_events(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let id = consent_id(&req);
    query_route_with("consent_events", Some(("consent", id)), req, payload, state).await
}

/// What a consent write did, and its consistency token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsentWriteAnswer {
    /// The log position: pass it as `min_token` to read your write.
    pub token: u64,
    pub consent: String,
    pub changed: bool,
}

/// The fields of a `consent_request` (the body of `POST /v1/consents`).
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct ConsentRequestBody(pub Value);

/// The body of an answer, a revocation or a use: `{"by": ...}`, or empty for an end-user
/// token (its `sub` answers).
#[derive(ToSchema)]
#[schema(value_type = Object)]
pub struct ConsentActionBody(pub Value);

/// The caller of a route that sends one named event: someone who may send some event
/// (`delegraph:act`, `write` or `import`); which events exactly is `api::actor`'s.
pub(super) fn event_writer(state: &AppState, req: &HttpRequest, name: &str) -> Result<Caller, Problem> {
    let caller = state.auth.caller(req)?;
    if ![Scope::Act, Scope::Write, Scope::Import]
        .iter()
        .any(|s| caller.has(*s))
    {
        return Err(Problem::new(
            ProblemCode::InsufficientScope,
            format!("`{name}` needs scope `delegraph:act`, `delegraph:write` or `delegraph:import`"),
        ));
    }
    Ok(caller)
}

/// One event named `name` with `fields`, bound to its caller as in `POST /v1/events`
/// (`api::actor`), then committed.
pub(super) async fn commit_one(
    state: &AppState,
    caller: &Caller,
    name: &str,
    fields: Map<String, Value>,
) -> Result<Committed, Problem> {
    let mut one = Map::new();
    one.insert(name.to_string(), Value::Object(fields));
    let ev = super::actor::decode(caller, Value::Object(one))?;
    Ok(state.partitions.submit(vec![ev]).await?)
}

/// One consent event through the write path: the event named `name` with the body's
/// fields (and the consent id from the path), bound to its caller as in
/// `POST /v1/events` (`api::actor`), then committed.
async fn consent_write(
    name: &str,
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    let caller = event_writer(&state, &req, name)?;
    super::guard::same_origin(&req)?;
    let path_id = path_id(&req);
    let body = state.limits.read_body(&req, payload).await?;
    let mut fields = if body.is_empty() && path_id.is_some() {
        Map::new()
    } else {
        super::guard::json_body(&req)?;
        match state.limits.parse_json(&body)? {
            Value::Object(m) => m,
            other => {
                return Err(Problem::invalid(format!(
                    "the body of `{name}` is a JSON object of its fields, got `{}`",
                    kind_of(&other)
                )));
            }
        }
    };
    if let Some(id) = &path_id {
        crate::model::check_id("consent", id)?;
        if let Some(v) = fields.get("consent")
            && v.as_str() != Some(id.as_str())
        {
            return Err(Problem::invalid(
                "`consent` in the body differs from the consent id in the path",
            ));
        }
        fields.insert("consent".into(), Value::String(id.clone()));
    }
    let consent = fields
        .get("consent")
        .or_else(|| fields.get("id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let committed = commit_one(&state, &caller, name, fields).await?;
    let answer = ConsentWriteAnswer {
        token: committed.token,
        consent,
        changed: committed.outcome.changed,
    };
    Ok(json_ok(committed.token, &answer))
}

/// A consumer (or its operator) asks a party for consent: the fields of the
/// `consent_request` event (`id`, `from`, `to`, `handled_by`?, `required_delegator`?,
/// `rights`, `valid_to`). Scope `delegraph:write` (a backend).
#[utoipa::path(post, path = "/v1/consents", operation_id = "consent_request", tag = "consent",
    request_body(content = ConsentRequestBody, description = "the fields of `consent_request`"),
    responses((status = 200, body = ConsentWriteAnswer), (status = "4XX", description = "refused: nothing changed", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:write"]), ("bearer" = ["delegraph:import"])))]
pub async fn consent_post(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    consent_write("consent_request", req, payload, state).await
}

/// A person accepts the consent (the acceptance check, domain.md §9.4). An end-user
/// token (`delegraph:act`) answers as its `sub`; `delegraph:write` may name any `by`.
#[utoipa::path(post, path = "/v1/consents/{id}/accept", operation_id = "consent_accept", tag = "consent",
    params(("id" = String, Path, description = "the consent id")),
    request_body(content = ConsentActionBody, description = "`{\"by\": person}`, or empty"),
    responses((status = 200, body = ConsentWriteAnswer), (status = "4XX", description = "refused: nothing changed", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:act"]), ("bearer" = ["delegraph:write"]), ("bearer" = ["delegraph:import"])))]
pub async fn consent_accept(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    consent_write("accept_consent", req, payload, state).await
}

/// A person rejects the consent (the same check as accepting).
#[utoipa::path(post, path = "/v1/consents/{id}/reject", operation_id = "consent_reject", tag = "consent",
    params(("id" = String, Path, description = "the consent id")),
    request_body(content = ConsentActionBody, description = "`{\"by\": person}`, or empty"),
    responses((status = 200, body = ConsentWriteAnswer), (status = "4XX", description = "refused: nothing changed", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:act"]), ("bearer" = ["delegraph:write"]), ("bearer" = ["delegraph:import"])))]
pub async fn consent_reject(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    consent_write("reject_consent", req, payload, state).await
}

/// A person revokes an accepted consent: `from` itself, its access manager, or someone
/// who could have accepted it. Acts at once.
#[utoipa::path(post, path = "/v1/consents/{id}/revoke", operation_id = "consent_revoke", tag = "consent",
    params(("id" = String, Path, description = "the consent id")),
    request_body(content = ConsentActionBody, description = "`{\"by\": person}`, or empty"),
    responses((status = 200, body = ConsentWriteAnswer), (status = "4XX", description = "refused: nothing changed", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:act"]), ("bearer" = ["delegraph:write"]), ("bearer" = ["delegraph:import"])))]
pub async fn consent_revoke(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    consent_write("revoke_consent", req, payload, state).await
}

/// The consumer (or its operator), `by`, uses the consent; a one-time consent is used up.
/// Scope `delegraph:write` (a backend).
#[utoipa::path(post, path = "/v1/consents/{id}/use", operation_id = "consent_use", tag = "consent",
    params(("id" = String, Path, description = "the consent id")),
    request_body(content = ConsentActionBody, description = "`{\"by\": organisation}`"),
    responses((status = 200, body = ConsentWriteAnswer), (status = "4XX", description = "refused: nothing changed", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:write"])))]
pub async fn consent_use(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    consent_write("use_consent", req, payload, state).await
}

// ----------------------------------------------------------------------------------
// Operations

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// Readiness: the world is loaded and the store takes writes (503 after the journal
/// failed, until the service restarts and recovers from its data directory).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ProblemDetails, content_type = "application/problem+json")))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Problem> {
    match state.partitions.store().unhealthy_reason() {
        None => Ok(HttpResponse::Ok().json(Health { status: "ready" })),
        Some(reason) => Err(Problem::new(
            ProblemCode::Unavailable,
            format!("the store takes no writes until the service restarts: {reason}"),
        )),
    }
}

/// Prometheus text: requests and latency per route, graph size, log position.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let store = state.partitions.store();
    let (parties, resources, edges) = store.graph_size();
    let position = store.journal().position();
    let visible = store.visible();
    let mut text = state.metrics.render(&[
        ("delegraph_graph_parties", "Parties in the graph.", parties as u64),
        (
            "delegraph_graph_resources",
            "Resources in the graph.",
            resources as u64,
        ),
        (
            "delegraph_graph_edges",
            "Edges (assignments, delegations, main-unit links).",
            edges as u64,
        ),
        (
            "delegraph_log_position",
            "Sequence number of the last durable journal record.",
            position,
        ),
        (
            "delegraph_visible_token",
            "Token of the newest state readers see.",
            visible,
        ),
        (
            "delegraph_log_lag",
            "Durable records not yet visible to readers.",
            position.saturating_sub(visible),
        ),
        (
            "delegraph_partitions",
            "Partition actors owning the write path.",
            state.partitions.count() as u64,
        ),
    ]);
    text.push_str(&super::metrics::write_path(
        store.pass_stats(),
        store.journal().group_stats(),
    ));
    if let Some((user, system)) = crate::background::process_cpu_time() {
        text.push_str(&super::metrics::process_cpu(user + system));
    }
    text.push_str(&super::metrics::partition_gauges(
        &store.partition_deltas(),
        &store.compactions(),
        &store.compactions_by_writer(),
        &store.partition_bounds(),
    ));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// A browsable page that renders `/openapi.json`; self-contained (no CDN).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML", content_type = "text/html")))]
pub async fn docs() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("ui.html"))
}

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document, generated from the handlers above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "delegraph",
        description = "An in-memory rights resolver for Altinn-style authorization. Field names are those of the scenario format; errors are RFC 9457 problem+json with the error code in `code`. Every read accepts `min_token` and answers with the `Delegraph-Token` header. Scopes: `delegraph:read` (queries), `delegraph:act` (an end user acting as the token's `sub`), `delegraph:write` (a backend: any `by`, vendor events; includes act and read), `delegraph:import` (registers and administration: events with nobody acting), `delegraph:admin` (all). Bodies are `application/json` with no duplicate keys; ids are at most 256 bytes without control or bidirectional-override characters."
    ),
    paths(
        post_events, check_doc, check_batch, authorized_parties_doc, rights_doc, holders_doc,
        can_delegate_doc, explain_doc, clients_doc, request_status_doc, addable_clients_doc, simulate_doc, post_reset, post_checkpoint, healthz, readyz,
        metrics, openapi_json, docs, super::decision::decision, super::decision::authorize,
        super::a2::a2_impact,
        consent_status_doc, consent_check_doc, consent_events_doc, consent_lookup, consent_get,
        consent_get_events, consent_post, consent_accept, consent_reject, consent_revoke, consent_use,
        scope_delegations_doc, suppliers_doc, consumers_doc,
        super::supplier::add_supplier, super::supplier::remove_supplier,
        super::supplier::delegate_scope, super::supplier::undelegate_scope,
        super::supplier::delegations
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "events", description = "mutations"),
        (name = "queries", description = "reads"),
        (name = "admin", description = "administration"),
        (name = "consent", description = "consent requests, answers and lookups (domain.md §9)"),
        (name = "decision point", description = "Altinn-compatible XACML 3.0 decisions (domain.md §8)"),
        (name = "operations", description = "health, metrics and this document"),
        (name = "maskinporten", description = "suppliers and scope delegation (domain.md §10)"),
    )
)]
pub struct ApiDoc;
