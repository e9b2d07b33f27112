//! `GET|POST /v1/a2-impact`: the Altinn 2 cut-off report (issue 8) over HTTP — totals
//! and per-resource counts first, then the lost permits (the first `limit` of them, in
//! subject/party order), as JSON or CSV. A read like the others: scope `delegraph:read`,
//! the body and query-string limits, `min_token`; it reads the version pinned when it
//! starts, in the background pool (low priority, on as many threads as the pool has),
//! one report at a time (a second is refused: 503 `busy` with `Retry-After`), and stops
//! when the client goes away or the request time limit cuts the request.

use actix_web::web::{self, Payload};
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Scope;
use super::problem::{Problem, ProblemCode, ProblemDetails};
use super::routes::{MinToken, TOKEN_HEADER, query_input};
use crate::a2impact::{self, Filter, Listing, LostPermit, ResourceSummary};

/// How many lost permits an answer lists when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 1000;
/// The most lost permits one answer lists.
pub const MAX_LIMIT: usize = 100_000;

/// Which resources to report on, and how to answer.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct A2ImpactQuery {
    /// Only resources of this service owner.
    pub owner: Option<String>,
    /// Only this resource.
    pub resource: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// How many lost permits to list (default 1000, at most 100000); the counts are
    /// always complete.
    #[param(value_type = Option<u64>)]
    #[schema(value_type = Option<u64>)]
    pub limit: Option<Value>,
}

/// The report: totals, per-resource counts, then the first `limit` lost permits.
#[derive(Debug, Serialize, ToSchema)]
pub struct A2ImpactAnswer {
    /// Permits that would be lost at the cut-off (all of them, listed or not).
    pub lost: usize,
    /// Permits of the examined pairs that survive it.
    pub kept: usize,
    /// Lost permits that one grant of a package the same policy names, by someone at the
    /// party who may grant it, would restore.
    pub restorable_by_one_grant: usize,
    /// (subject, party) pairs where some Altinn 2 role may be held.
    pub pairs_examined: usize,
    #[schema(value_type = Vec<Object>)]
    pub resources: Vec<ResourceSummary>,
    /// The first `limit` lost permits in (subject, party) order, sorted.
    #[schema(value_type = Vec<Object>)]
    pub lost_permits: Vec<LostPermit>,
    /// Whether more permits are lost than listed.
    pub truncated: bool,
}

fn limit_of(v: Option<Value>) -> Result<usize, Problem> {
    let n = match v {
        None => return Ok(DEFAULT_LIMIT),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    }
    .ok_or_else(|| Problem::invalid("`limit` is not a non-negative integer"))?;
    if n > MAX_LIMIT as u64 {
        return Err(Problem::invalid(format!(
            "`limit` is {n}, more than the most an answer lists ({MAX_LIMIT})"
        )));
    }
    Ok(n as usize)
}

/// Who would lose which permit at the Altinn 2 cut-off, and what would restore it.
#[utoipa::path(method(get, post), path = "/v1/a2-impact", operation_id = "a2_impact", tag = "queries",
    params(A2ImpactQuery, MinToken),
    request_body(content = A2ImpactQuery, description = "POST: the fields as JSON (GET: as query parameters)"),
    responses(
        (status = 200, description = "format=json: the totals, the per-resource counts, then the lost permits", body = A2ImpactAnswer),
        (status = 200, description = "format=csv: one comment line with the totals (`# lost N, kept N, restorable by one grant N, pairs examined N, listed N`), then the lost permits as CSV with a header", content_type = "text/csv"),
        (status = "4XX", body = ProblemDetails, content_type = "application/problem+json")),
    security(("bearer" = ["delegraph:read"])))]
pub async fn a2_impact(
    req: HttpRequest,
    payload: Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Problem> {
    state.auth.require(&req, Scope::Read)?;
    let (fields, min_token) = query_input(&req, payload, &state).await?;
    crate::model::check_strings(&fields, &[])?;
    let q: A2ImpactQuery =
        serde_json::from_value(fields).map_err(|e| Problem::invalid(format!("`a2-impact`: {e}")))?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(Problem::invalid(format!(
                "`format` is `json` or `csv`, got `{other}`"
            )));
        }
    };
    let limit = limit_of(q.limit)?;
    let filter = Filter {
        owner: q.owner,
        resource: q.resource,
    };
    let store = state.partitions.store().clone();
    if let Some(t) = min_token {
        store.wait_visible(t, state.limits.max_token_wait).await?;
    }
    // One report at a time: a second one is refused (503 `busy`, `Retry-After`) rather
    // than queued, since each takes every background thread it is given.
    let turn = state.jobs.report.try_start().ok_or_else(|| {
        Problem::new(
            ProblemCode::Busy,
            "an a2-impact report is already running; try again when it has finished",
        )
    })?;
    let version = store.pin();
    let token = version.token;
    let cancel = crate::background::CancelOnDrop::new();
    let opts = a2impact::RunOptions {
        threads: Some(state.jobs.pool.threads()),
        low_priority: true,
        cancel: Some(cancel.flag()),
        deadline: None,
    };
    let report = state
        .jobs
        .pool
        .run("a2-impact", move || {
            let _turn = turn;
            // On the pinned version (a private O(1) copy, through which the tests' pause
            // can hold a report open).
            store
                .exclusive_on(version, |w| {
                    // An owner or resource the world does not have is an error, not
                    // "nothing lost".
                    filter.validate(w)?;
                    let mut listed = Vec::new();
                    let r = a2impact::report_with(
                        w,
                        &filter,
                        Listing::First(limit),
                        &opts,
                        |_, _| {},
                        |l| listed.push(l),
                    );
                    let mut r = r.map_err(|e| Problem::new(ProblemCode::Timeout, e.to_string()))?;
                    listed.sort();
                    r.lost = listed;
                    Ok::<_, Problem>(r)
                })
                .0
        })
        .await;
    cancel.disarm();
    let report = report??;
    let answer = A2ImpactAnswer {
        lost: report.total_lost(),
        kept: report.total_kept(),
        restorable_by_one_grant: report.total_restorable(),
        pairs_examined: report.pairs_examined,
        truncated: report.lost_count > report.lost.len(),
        resources: report.resources,
        lost_permits: report.lost,
    };
    if csv {
        let mut body = format!(
            "# lost {}, kept {}, restorable by one grant {}, pairs examined {}, listed {}\n{}\n",
            answer.lost,
            answer.kept,
            answer.restorable_by_one_grant,
            answer.pairs_examined,
            answer.lost_permits.len(),
            a2impact::CSV_HEADER
        );
        for l in &answer.lost_permits {
            body.push_str(&a2impact::csv_row(l));
        }
        return Ok(HttpResponse::Ok()
            .insert_header((TOKEN_HEADER, token.to_string()))
            .content_type("text/csv; charset=utf-8")
            .body(body));
    }
    Ok(HttpResponse::Ok()
        .insert_header((TOKEN_HEADER, token.to_string()))
        .json(&answer))
}
