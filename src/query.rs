//! Queries as typed requests and answers, with one evaluation shared by the scenario
//! runner (in-process), the HTTP API and `delegraph test --server`.
//!
//! Request field names are those of `spec/scenario-format.md`, without the expectation
//! fields (`expect`, `includes`, ...), which belong to the scenario runner. Answers carry
//! external ids only and every list is sorted, so that an answer does not depend on
//! internal indices: the same world reached by different routes (1 or N partitions, a
//! rolled-back dry run, a replayed log) gives byte-identical answers.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::event::Event;
use crate::graph::NodeId;
use crate::model::{Error, PackageId, Result, RoleId};
use crate::mutate::{self, Access, Outcome};
use crate::resolve::{self, DelegationVerdict};
use crate::world::World;

/// `check`: may `subject` use a package, a role, or an action on a resource (or one of
/// its instances) for `party`? Exactly one of `package`, `role`, `resource` + `action`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    pub subject: String,
    pub party: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The decision: for a resource check `allowed` is permit (true) or deny (false).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckAnswer {
    pub allowed: bool,
}

/// `authorized_parties`: every party `subject` can act for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedPartiesQuery {
    pub subject: String,
}

/// One party the subject can act for, with what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuthorizedPartyEntry {
    pub party: String,
    /// For a sub-unit: its main unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_unit: Option<String>,
    /// Role codes, sorted.
    pub roles: Vec<String>,
    /// Package codes, sorted.
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuthorizedPartiesAnswer {
    /// Sorted by party id.
    pub parties: Vec<AuthorizedPartyEntry>,
}

/// `rights`: the effective packages and roles of `subject` for `party`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RightsQuery {
    pub subject: String,
    pub party: String,
}

/// Package and role codes, sorted; roles exclude `rettighetshaver` and `agent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RightsAnswer {
    pub packages: Vec<String>,
    pub roles: Vec<String>,
}

/// `can_delegate`: may `by`, acting for `party`, pass on a package, or an action on a
/// resource?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CanDelegateQuery {
    pub by: String,
    pub party: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CanDelegateAnswer {
    pub allowed: bool,
    /// Why not, for a package: `not_assignable`, `wrong_entity_type` or `not_held`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `holders`: every subject that holds `package` for `party`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HoldersQuery {
    pub party: String,
    pub package: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HoldersAnswer {
    /// Sorted subject ids.
    pub holders: Vec<String>,
}

/// `clients`: the clients an agent acts for, named by `system_user`, or by
/// `facilitator` and `agent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ClientsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facilitator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClientsAnswer {
    /// Sorted client ids.
    pub clients: Vec<String>,
}

/// `request_status`: the state of a system-user, change or access request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RequestStatusQuery {
    pub request: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestStatusAnswer {
    /// `draft`, `pending`, `accepted`, `approved`, `rejected`, `withdrawn` or `timed_out`.
    pub status: String,
    /// Whether the request was escalated to the party's access managers.
    pub escalated: bool,
}

/// `addable_clients`: the clients `add_client` would accept for an agent system user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AddableClientsQuery {
    pub system_user: String,
}

/// `explain`: the derivation paths behind "subject holds a package / role for party",
/// or "subject may do action on resource (or one instance) for party".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    pub subject: String,
    pub party: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// One derivation path: its description and the edges it follows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct Chain {
    pub text: String,
    pub edges: Vec<resolve::Link>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ExplainAnswer {
    pub allowed: bool,
    /// One human-readable derivation per path, sorted; empty for a no.
    pub paths: Vec<String>,
    /// The same paths as lists of edges, in the order of `paths`.
    #[serde(default)]
    pub chains: Vec<Chain>,
    /// For a no: the link that is missing, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
}

/// `simulate`: what one event would remove, computed without changing anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateQuery {
    /// One event of the vocabulary, e.g. `{"unregister_role": {"from": .., "to": .., "role": ..}}`.
    #[schema(value_type = Object)]
    pub event: Value,
    /// How many entries each list of the answer holds at most (the counts are always
    /// complete). Over HTTP the default is 1000 and the most 100000; in scenario files
    /// and `delegraph query` there is no limit unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// An access that would be lost: a package, or an action on a resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct LostAccess {
    pub subject: String,
    pub party: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// An assignment an event deleted (`role` is the role code).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct RemovedAssignment {
    pub from: String,
    pub to: String,
    pub role: String,
}

/// A client delegation an event deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct RemovedDelegation {
    pub client: String,
    pub facilitator: String,
    pub agent: String,
}

/// What an event (or batch) changed, or would change: sorted lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Changes {
    pub changed: bool,
    pub removed_assignments: Vec<RemovedAssignment>,
    pub removed_delegations: Vec<RemovedDelegation>,
}

impl From<&Outcome> for Changes {
    fn from(o: &Outcome) -> Changes {
        let mut removed_assignments: Vec<RemovedAssignment> = o
            .removed_assignments
            .iter()
            .map(|(from, to, role)| RemovedAssignment {
                from: from.clone(),
                to: to.clone(),
                role: role.clone(),
            })
            .collect();
        let mut removed_delegations: Vec<RemovedDelegation> = o
            .removed_delegations
            .iter()
            .map(|(client, facilitator, agent)| RemovedDelegation {
                client: client.clone(),
                facilitator: facilitator.clone(),
                agent: agent.clone(),
            })
            .collect();
        removed_assignments.sort();
        removed_delegations.sort();
        Changes {
            changed: o.changed,
            removed_assignments,
            removed_delegations,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SimulateAnswer {
    /// Sorted; the first `limit` of them.
    pub lost: Vec<LostAccess>,
    /// The first `limit`, sorted.
    pub removed_assignments: Vec<RemovedAssignment>,
    /// The first `limit`, sorted.
    pub removed_delegations: Vec<RemovedDelegation>,
    /// How many accesses would be lost (listed or not).
    #[serde(default)]
    pub lost_count: usize,
    /// How many assignments the event would remove, cascades included.
    #[serde(default)]
    pub removed_assignments_count: usize,
    /// How many client delegations the event would remove, cascades included.
    #[serde(default)]
    pub removed_delegations_count: usize,
    /// Whether some list holds fewer entries than its count.
    #[serde(default)]
    pub truncated: bool,
}

// ----------------------------------------------------------------------------------
// Consent (domain.md §9)

/// `consent_status`: a consent's reported status and who accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsentStatusQuery {
    pub consent: String,
}

/// One right of a consent: a consent resource and actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentRightAnswer {
    pub resource: String,
    /// Sorted.
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentStatusAnswer {
    pub consent: String,
    /// `created`, `accepted`, `rejected`, `revoked`, `used` or `expired` (derived from the
    /// engine clock, never stored).
    pub status: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_delegator: Option<String>,
    /// Sorted by resource.
    pub rights: Vec<ConsentRightAnswer>,
    /// RFC 3339.
    pub valid_to: String,
    /// The person who accepted it (none for an import or before acceptance).
    pub accepted_by: Option<String>,
    /// Whether that person would pass the acceptance check now (false without one).
    pub acceptor_entitled: bool,
}

/// `consent_check`: does `to` (the consumer, or the operator in `handled_by`) hold a
/// valid consent from `from` for `action` on consent resource `resource`; with
/// `consent`, by that consent only?
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsentCheckQuery {
    pub from: String,
    pub to: String,
    pub resource: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentCheckAnswer {
    pub allowed: bool,
    /// For a no: `not_found` (no consent from `from` to `to`), `not_authorized` (none
    /// covers the action) or `conflict` (none valid now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a yes: the consent that permits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<String>,
}

/// `consent_events`: what happened to a consent, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsentEventsQuery {
    pub consent: String,
}

/// One entry of a consent's event list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentEventEntry {
    /// `created`, `accepted`, `rejected`, `revoked`, `used` or `expired`.
    pub event: String,
    pub by: Option<String>,
    /// The engine clock when it happened (RFC 3339), none while the clock was unset.
    pub at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentEventsAnswer {
    pub consent: String,
    pub events: Vec<ConsentEventEntry>,
}

pub fn consent_status(w: &World, q: &ConsentStatusQuery) -> Result<ConsentStatusAnswer> {
    use crate::consent;
    let c = consent::get(w, &q.consent)?;
    let id = |n: NodeId| w.graph.ext_id(n).to_string();
    Ok(ConsentStatusAnswer {
        consent: c.id.clone(),
        status: consent::status(w, c).as_str().to_string(),
        from: id(c.from),
        to: id(c.to),
        handled_by: c.handled_by.map(id),
        required_delegator: c.required_delegator.map(id),
        rights: c
            .rights
            .iter()
            .map(|(r, a)| ConsentRightAnswer {
                resource: r.clone(),
                actions: a.iter().cloned().collect(),
            })
            .collect(),
        valid_to: c.valid_to.to_rfc3339(),
        accepted_by: c.accepted_by.map(id),
        acceptor_entitled: c
            .accepted_by
            .is_some_and(|u| consent::may_answer(w, c, u).is_ok()),
    })
}

pub fn consent_check(w: &World, q: &ConsentCheckQuery) -> Result<ConsentCheckAnswer> {
    use crate::consent::CheckOutcome;
    let (f, t) = (party(w, &q.from)?, party(w, &q.to)?);
    let rn = resource_node(w, &q.resource)?;
    if !crate::decide::is_consent_resource(w, rn) {
        return Err(Error::invalid(format!(
            "`{}` is not a consent resource",
            q.resource
        )));
    }
    let action = q.action.trim().to_lowercase();
    let out = crate::consent::check(w, f, t, &q.resource, &action, q.consent.as_deref());
    let (allowed, reason, consent) = match out {
        CheckOutcome::Yes(id) => (true, None, Some(id)),
        CheckOutcome::NotFound => (false, Some("not_found"), None),
        CheckOutcome::NotAuthorized => (false, Some("not_authorized"), None),
        CheckOutcome::Conflict => (false, Some("conflict"), None),
    };
    Ok(ConsentCheckAnswer {
        allowed,
        reason: reason.map(str::to_string),
        consent,
    })
}

pub fn consent_events(w: &World, q: &ConsentEventsQuery) -> Result<ConsentEventsAnswer> {
    let c = crate::consent::get(w, &q.consent)?;
    Ok(ConsentEventsAnswer {
        consent: c.id.clone(),
        events: crate::consent::entries(w, c)
            .into_iter()
            .map(|e| ConsentEventEntry {
                event: e.what.as_str().to_string(),
                by: e.by.map(|n| w.graph.ext_id(n).to_string()),
                at: e.at.map(|t| t.to_rfc3339()),
            })
            .collect(),
    })
}

// --- Maskinporten scope delegation (domain.md §10.5) ---

/// `scope_delegations`: the scope delegations matching every filter given (at least
/// one): Maskinporten's lookup by supplier, consumer and scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScopeDelegationsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supplier: Option<String>,
    /// A Maskinporten scope: matches the scope resources that list it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// One scope delegation: the whole scope resource, with the scopes it covers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct ScopeDelegationEntry {
    pub consumer: String,
    pub supplier: String,
    pub resource: String,
    /// The Maskinporten scopes of the resource, sorted.
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScopeDelegationsAnswer {
    /// Sorted by (consumer, supplier, resource).
    pub delegations: Vec<ScopeDelegationEntry>,
}

/// `suppliers`: the consumer's suppliers, with or without scope delegations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SuppliersQuery {
    pub consumer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SuppliersAnswer {
    /// Sorted supplier ids.
    pub suppliers: Vec<String>,
}

/// `consumers`: the organisations `supplier` is a supplier of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsumersQuery {
    pub supplier: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsumersAnswer {
    /// Sorted consumer ids.
    pub consumers: Vec<String>,
}

/// One query of the vocabulary; its JSON form is the scenario step without expectations,
/// e.g. `{"check": {"subject": "kari", "party": "bergen", "package": "skattegrunnlag"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Query {
    Check(CheckQuery),
    AuthorizedParties(AuthorizedPartiesQuery),
    Rights(RightsQuery),
    CanDelegate(CanDelegateQuery),
    Holders(HoldersQuery),
    Clients(ClientsQuery),
    RequestStatus(RequestStatusQuery),
    AddableClients(AddableClientsQuery),
    Explain(ExplainQuery),
    Simulate(SimulateQuery),
    // Consent (domain.md §9).
    ConsentStatus(ConsentStatusQuery),
    ConsentCheck(ConsentCheckQuery),
    ConsentEvents(ConsentEventsQuery),
    // §10
    ScopeDelegations(ScopeDelegationsQuery),
    Suppliers(SuppliersQuery),
    Consumers(ConsumersQuery),
}

/// The answer to a [`Query`], of the same variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Check(CheckAnswer),
    AuthorizedParties(AuthorizedPartiesAnswer),
    Rights(RightsAnswer),
    CanDelegate(CanDelegateAnswer),
    Holders(HoldersAnswer),
    Clients(ClientsAnswer),
    RequestStatus(RequestStatusAnswer),
    AddableClients(ClientsAnswer),
    Explain(ExplainAnswer),
    Simulate(SimulateAnswer),
    // Consent (domain.md §9).
    ConsentStatus(ConsentStatusAnswer),
    ConsentCheck(ConsentCheckAnswer),
    ConsentEvents(ConsentEventsAnswer),
    // §10
    ScopeDelegations(ScopeDelegationsAnswer),
    Suppliers(SuppliersAnswer),
    Consumers(ConsumersAnswer),
}

/// The name of every query [`Query::parse`] reads (the scenario runner tells steps
/// apart by them).
pub const NAMES: &[&str] = &[
    "check",
    "authorized_parties",
    "rights",
    "can_delegate",
    "holders",
    "clients",
    "request_status",
    "addable_clients",
    "explain",
    "simulate",
    "consent_status",
    "consent_check",
    "consent_events",
    "scope_delegations",
    "suppliers",
    "consumers",
];

impl Query {
    /// The query's name in the vocabulary, also the last segment of its HTTP route.
    pub fn name(&self) -> &'static str {
        match self {
            Query::Check(_) => "check",
            Query::AuthorizedParties(_) => "authorized_parties",
            Query::Rights(_) => "rights",
            Query::CanDelegate(_) => "can_delegate",
            Query::Holders(_) => "holders",
            Query::Clients(_) => "clients",
            Query::RequestStatus(_) => "request_status",
            Query::AddableClients(_) => "addable_clients",
            Query::Explain(_) => "explain",
            Query::Simulate(_) => "simulate",
            Query::ConsentStatus(_) => "consent_status",
            Query::ConsentCheck(_) => "consent_check",
            Query::ConsentEvents(_) => "consent_events",
            Query::ScopeDelegations(_) => "scope_delegations",
            Query::Suppliers(_) => "suppliers",
            Query::Consumers(_) => "consumers",
        }
    }

    /// Whether evaluating needs exclusive access to the world (simulate applies the event
    /// and rolls it back).
    pub fn needs_exclusive(&self) -> bool {
        matches!(self, Query::Simulate(_))
    }

    /// Parses the query named `name` (one of [`NAMES`]) from its fields; `None` when
    /// `name` is no query of this module.
    pub fn parse(name: &str, body: Value) -> Option<Result<Query>> {
        fn p<T: for<'de> Deserialize<'de>>(name: &str, body: Value) -> Result<T> {
            // The id rule holds for queries as for events (a `simulate` may carry a policy).
            crate::model::check_strings(&body, &["xml"])?;
            // `null` is absent and a number stands for its text, as in events; a
            // simulated event keeps its own numeric fields.
            let body = match body {
                Value::Object(mut m) => {
                    let event = m.remove("event");
                    let mut body = crate::model::normalise_scalars(Value::Object(m), &["limit"]);
                    if let (Some(e), Value::Object(b)) = (event, &mut body) {
                        b.insert("event".into(), e);
                    }
                    body
                }
                other => other,
            };
            serde_json::from_value(body).map_err(|e| Error::invalid(format!("`{name}`: {e}")))
        }
        Some(match name {
            "check" => p(name, body).map(Query::Check),
            "authorized_parties" => p(name, body).map(Query::AuthorizedParties),
            "rights" => p(name, body).map(Query::Rights),
            "can_delegate" => p(name, body).map(Query::CanDelegate),
            "holders" => p(name, body).map(Query::Holders),
            "clients" => p(name, body).map(Query::Clients),
            "request_status" => p(name, body).map(Query::RequestStatus),
            "addable_clients" => p(name, body).map(Query::AddableClients),
            "explain" => p(name, body).map(Query::Explain),
            "simulate" => p(name, body).map(Query::Simulate),
            "consent_status" => p(name, body).map(Query::ConsentStatus),
            "consent_check" => p(name, body).map(Query::ConsentCheck),
            "consent_events" => p(name, body).map(Query::ConsentEvents),
            "scope_delegations" => p(name, body).map(Query::ScopeDelegations),
            "suppliers" => p(name, body).map(Query::Suppliers),
            "consumers" => p(name, body).map(Query::Consumers),
            _ => return None,
        })
    }

    /// The query's fields as JSON (the body of its HTTP route).
    pub fn body(&self) -> Result<Value> {
        let v = match self {
            Query::Check(q) => serde_json::to_value(q),
            Query::AuthorizedParties(q) => serde_json::to_value(q),
            Query::Rights(q) => serde_json::to_value(q),
            Query::CanDelegate(q) => serde_json::to_value(q),
            Query::Holders(q) => serde_json::to_value(q),
            Query::Clients(q) => serde_json::to_value(q),
            Query::RequestStatus(q) => serde_json::to_value(q),
            Query::AddableClients(q) => serde_json::to_value(q),
            Query::Explain(q) => serde_json::to_value(q),
            Query::Simulate(q) => serde_json::to_value(q),
            Query::ConsentStatus(q) => serde_json::to_value(q),
            Query::ConsentCheck(q) => serde_json::to_value(q),
            Query::ConsentEvents(q) => serde_json::to_value(q),
            Query::ScopeDelegations(q) => serde_json::to_value(q),
            Query::Suppliers(q) => serde_json::to_value(q),
            Query::Consumers(q) => serde_json::to_value(q),
        };
        v.map_err(|e| Error::invalid(format!("cannot encode the query: {e}")))
    }
}

impl Answer {
    /// Parses the answer to `q` from its JSON form (an HTTP response body).
    pub fn from_json(q: &Query, v: Value) -> Result<Answer> {
        fn p<T: for<'de> Deserialize<'de>>(name: &str, v: Value) -> Result<T> {
            serde_json::from_value(v).map_err(|e| Error::invalid(format!("answer to `{name}`: {e}")))
        }
        let n = q.name();
        Ok(match q {
            Query::Check(_) => Answer::Check(p(n, v)?),
            Query::AuthorizedParties(_) => Answer::AuthorizedParties(p(n, v)?),
            Query::Rights(_) => Answer::Rights(p(n, v)?),
            Query::CanDelegate(_) => Answer::CanDelegate(p(n, v)?),
            Query::Holders(_) => Answer::Holders(p(n, v)?),
            Query::Clients(_) => Answer::Clients(p(n, v)?),
            Query::RequestStatus(_) => Answer::RequestStatus(p(n, v)?),
            Query::AddableClients(_) => Answer::AddableClients(p(n, v)?),
            Query::Explain(_) => Answer::Explain(p(n, v)?),
            Query::Simulate(_) => Answer::Simulate(p(n, v)?),
            Query::ConsentStatus(_) => Answer::ConsentStatus(p(n, v)?),
            Query::ConsentCheck(_) => Answer::ConsentCheck(p(n, v)?),
            Query::ConsentEvents(_) => Answer::ConsentEvents(p(n, v)?),
            Query::ScopeDelegations(_) => Answer::ScopeDelegations(p(n, v)?),
            Query::Suppliers(_) => Answer::Suppliers(p(n, v)?),
            Query::Consumers(_) => Answer::Consumers(p(n, v)?),
        })
    }

    /// The answer's fields as JSON (an HTTP response body).
    pub fn body(&self) -> Result<Value> {
        let v = match self {
            Answer::Check(a) => serde_json::to_value(a),
            Answer::AuthorizedParties(a) => serde_json::to_value(a),
            Answer::Rights(a) => serde_json::to_value(a),
            Answer::CanDelegate(a) => serde_json::to_value(a),
            Answer::Holders(a) => serde_json::to_value(a),
            Answer::Clients(a) => serde_json::to_value(a),
            Answer::RequestStatus(a) => serde_json::to_value(a),
            Answer::AddableClients(a) => serde_json::to_value(a),
            Answer::Explain(a) => serde_json::to_value(a),
            Answer::Simulate(a) => serde_json::to_value(a),
            Answer::ConsentStatus(a) => serde_json::to_value(a),
            Answer::ConsentCheck(a) => serde_json::to_value(a),
            Answer::ConsentEvents(a) => serde_json::to_value(a),
            Answer::ScopeDelegations(a) => serde_json::to_value(a),
            Answer::Suppliers(a) => serde_json::to_value(a),
            Answer::Consumers(a) => serde_json::to_value(a),
        };
        v.map_err(|e| Error::invalid(format!("cannot encode the answer: {e}")))
    }
}

/// Evaluates a read-only query. `simulate` needs [`evaluate_mut`]; here it is refused.
pub fn evaluate(w: &World, q: &Query) -> Result<Answer> {
    Ok(match q {
        Query::Check(q) => Answer::Check(check(w, q)?),
        Query::AuthorizedParties(q) => Answer::AuthorizedParties(authorized_parties(w, q)?),
        Query::Rights(q) => Answer::Rights(rights(w, q)?),
        Query::CanDelegate(q) => Answer::CanDelegate(can_delegate(w, q)?),
        Query::Holders(q) => Answer::Holders(holders(w, q)?),
        Query::Clients(q) => Answer::Clients(clients(w, q)?),
        Query::RequestStatus(q) => Answer::RequestStatus(RequestStatusAnswer {
            status: crate::sysuser::request_status(w, &q.request)?
                .as_str()
                .to_string(),
            escalated: w
                .sys
                .requests
                .get(&q.request)
                .is_some_and(|r| r.escalated_by.is_some()),
        }),
        Query::AddableClients(q) => Answer::AddableClients(ClientsAnswer {
            clients: sorted_ids(w, crate::sysuser::addable_clients(w, &q.system_user)?),
        }),
        Query::Explain(q) => Answer::Explain(explain(w, q)?),
        Query::Simulate(_) => {
            return Err(Error::invalid("`simulate` needs exclusive access to the world"));
        }
        Query::ConsentStatus(q) => Answer::ConsentStatus(consent_status(w, q)?),
        Query::ConsentCheck(q) => Answer::ConsentCheck(consent_check(w, q)?),
        Query::ConsentEvents(q) => Answer::ConsentEvents(consent_events(w, q)?),
        Query::ScopeDelegations(q) => Answer::ScopeDelegations(scope_delegations(w, q)?),
        Query::Suppliers(q) => Answer::Suppliers(SuppliersAnswer {
            suppliers: crate::supplier::suppliers(w, &q.consumer)?,
        }),
        Query::Consumers(q) => Answer::Consumers(ConsumersAnswer {
            consumers: crate::supplier::consumers(w, &q.supplier)?,
        }),
    })
}

/// Evaluates any query, `simulate` included (which changes the world and rolls back).
pub fn evaluate_mut(w: &mut World, q: &Query) -> Result<Answer> {
    match q {
        Query::Simulate(q) => simulate(w, q).map(Answer::Simulate),
        other => evaluate(w, other),
    }
}

fn party(w: &World, id: &str) -> Result<NodeId> {
    w.graph.party_node(id).ok_or_else(|| Error::unknown_party(id))
}

fn package_id(w: &World, p: &str) -> Result<PackageId> {
    w.catalog
        .package_id(p)
        .ok_or_else(|| w.catalog.unknown_package(p))
}

fn role_id(w: &World, r: &str) -> Result<RoleId> {
    w.catalog.role_id(r).ok_or_else(|| w.catalog.unknown_role(r))
}

fn resource_node(w: &World, r: &str) -> Result<NodeId> {
    w.graph.resource_node(r).ok_or_else(|| Error::unknown_resource(r))
}

fn sorted_ids(w: &World, set: impl IntoIterator<Item = NodeId>) -> Vec<String> {
    let s: BTreeSet<String> = set.into_iter().map(|n| w.graph.ext_id(n).to_string()).collect();
    s.into_iter().collect()
}

pub fn check(w: &World, q: &CheckQuery) -> Result<CheckAnswer> {
    let (x, f) = (party(w, &q.subject)?, party(w, &q.party)?);
    let plain = q.action.is_none() && q.instance.is_none();
    let allowed = match (&q.package, &q.role, &q.resource) {
        (Some(p), None, None) if plain => resolve::has_package(w, x, f, package_id(w, p)?),
        (None, Some(r), None) if plain => resolve::has_role(w, x, f, role_id(w, r)?),
        (None, None, Some(res)) => {
            let Some(action) = &q.action else {
                return Err(Error::invalid("a resource check needs `action`"));
            };
            let rn = resource_node(w, res)?;
            let action = action.to_lowercase();
            crate::decide::permits(w, x, f, rn, &action, q.instance.as_deref())
        }
        _ => {
            return Err(Error::invalid(
                "`check` names exactly one of `package`, `role` or `resource` + `action`",
            ));
        }
    };
    Ok(CheckAnswer { allowed })
}

pub fn authorized_parties(w: &World, q: &AuthorizedPartiesQuery) -> Result<AuthorizedPartiesAnswer> {
    let c = w.catalog;
    let x = party(w, &q.subject)?;
    let mut parties: Vec<AuthorizedPartyEntry> = resolve::authorized_parties(w, x)
        .into_iter()
        .map(|a| {
            let roles: BTreeSet<String> = a.roles.iter().map(|r| c.role(r).code.clone()).collect();
            let packages: BTreeSet<String> = a.packages.iter().map(|p| c.package(p).code.clone()).collect();
            AuthorizedPartyEntry {
                party: w.graph.ext_id(a.party).to_string(),
                main_unit: a.main_unit.map(|m| w.graph.ext_id(m).to_string()),
                roles: roles.into_iter().collect(),
                packages: packages.into_iter().collect(),
            }
        })
        .collect();
    parties.sort_by(|a, b| a.party.cmp(&b.party));
    Ok(AuthorizedPartiesAnswer { parties })
}

pub fn rights(w: &World, q: &RightsQuery) -> Result<RightsAnswer> {
    let c = w.catalog;
    let (x, f) = (party(w, &q.subject)?, party(w, &q.party)?);
    let r = resolve::rights(w, x, f);
    let packages: BTreeSet<String> = r.packages.iter().map(|p| c.package(p).code.clone()).collect();
    let roles: BTreeSet<String> = r
        .roles
        .iter()
        .filter(|r| !c.is_unreported_role(**r))
        .map(|r| c.role(*r).code.clone())
        .collect();
    Ok(RightsAnswer {
        packages: packages.into_iter().collect(),
        roles: roles.into_iter().collect(),
    })
}

pub fn can_delegate(w: &World, q: &CanDelegateQuery) -> Result<CanDelegateAnswer> {
    let (u, p) = (party(w, &q.by)?, party(w, &q.party)?);
    match (&q.package, &q.resource, &q.action) {
        (Some(pk), None, None) => {
            let reason = match resolve::can_delegate_package(w, u, p, package_id(w, pk)?) {
                DelegationVerdict::Yes => None,
                DelegationVerdict::NotAssignable => Some("not_assignable"),
                DelegationVerdict::WrongEntityType => Some("wrong_entity_type"),
                DelegationVerdict::NotHeld => Some("not_held"),
            };
            Ok(CanDelegateAnswer {
                allowed: reason.is_none(),
                reason: reason.map(str::to_string),
            })
        }
        (None, Some(r), Some(a)) => {
            let rn = resource_node(w, r)?;
            Ok(CanDelegateAnswer {
                allowed: crate::decide::can_delegate_resource(w, u, p, rn, &a.to_lowercase()),
                reason: None,
            })
        }
        _ => Err(Error::invalid(
            "`can_delegate` names a `package`, or a `resource` and an `action`",
        )),
    }
}

pub fn holders(w: &World, q: &HoldersQuery) -> Result<HoldersAnswer> {
    let f = party(w, &q.party)?;
    let p = package_id(w, &q.package)?;
    Ok(HoldersAnswer {
        holders: sorted_ids(w, resolve::holders(w, f, p)),
    })
}

pub fn clients(w: &World, q: &ClientsQuery) -> Result<ClientsAnswer> {
    let (f, a) = match (&q.system_user, &q.facilitator, &q.agent) {
        (None, Some(f), Some(a)) => (party(w, f)?, party(w, a)?),
        (Some(su), None, None) => {
            let a = party(w, su)?;
            let owner = w
                .graph
                .party(a)
                .and_then(|p| p.owner().map(str::to_string))
                .ok_or_else(|| Error::invalid(format!("`{su}` is not a system user with an owner")))?;
            (party(w, &owner)?, a)
        }
        _ => {
            return Err(Error::invalid(
                "`clients` names a `system_user`, or a `facilitator` and an `agent`",
            ));
        }
    };
    Ok(ClientsAnswer {
        clients: sorted_ids(w, resolve::clients(w, f, a)),
    })
}

pub fn explain(w: &World, q: &ExplainQuery) -> Result<ExplainAnswer> {
    let c = w.catalog;
    let (x, f) = (party(w, &q.subject)?, party(w, &q.party)?);
    let recs = resolve::records(w, x, Some(f));
    let plain = q.action.is_none() && q.instance.is_none();
    let (allowed, chosen): (bool, Vec<&resolve::Record>) = match (&q.package, &q.role, &q.resource) {
        (Some(p), None, None) if plain => {
            let p = package_id(w, p)?;
            let chosen: Vec<_> = recs.iter().filter(|r| r.packages.contains(p)).collect();
            (!chosen.is_empty(), chosen)
        }
        (None, Some(r), None) if plain => {
            let r = role_id(w, r)?;
            let chosen: Vec<_> = recs.iter().filter(|rec| rec.held_role() == Some(r)).collect();
            (!chosen.is_empty(), chosen)
        }
        (None, None, Some(res)) => {
            // The decision is the check's; the paths are the records that permit alone.
            let allowed = check(
                w,
                &CheckQuery {
                    subject: q.subject.clone(),
                    party: q.party.clone(),
                    package: None,
                    role: None,
                    resource: Some(res.clone()),
                    action: q.action.clone(),
                    instance: q.instance.clone(),
                },
            )?
            .allowed;
            let rn = resource_node(w, res)?;
            let action = q.action.as_deref().unwrap_or_default().to_lowercase();
            let inst = q.instance.as_deref();
            let chosen = recs
                .iter()
                .filter(|r| {
                    let one = std::slice::from_ref(*r);
                    crate::decide::permits_with(w, one, f, rn, &action, inst)
                })
                .collect();
            (allowed, if allowed { chosen } else { Vec::new() })
        }
        _ => {
            return Err(Error::invalid(
                "`explain` names exactly one of `package`, `role` or `resource` + `action`",
            ));
        }
    };
    let mut chains: Vec<Chain> = chosen
        .iter()
        .map(|r| Chain {
            text: resolve::describe(w, x, r),
            edges: resolve::derivation(w, x, r),
        })
        .collect();
    chains.sort();
    chains.dedup();
    let missing = (!allowed).then(|| {
        let (sx, sf) = (&q.subject, &q.party);
        if recs.is_empty() {
            return format!(
                "no edge leads from `{sf}` to `{sx}`: no role, grant, key role or client delegation \
                 (nor one for its main unit)"
            );
        }
        let mut held: BTreeSet<String> = BTreeSet::new();
        for r in &recs {
            match r.held_role() {
                Some(role) if !c.is_unreported_role(role) => held.insert(c.role(role).code.clone()),
                _ => held.insert(format!("{} (client delegation)", c.role(r.role).code)),
            };
        }
        let held = held.into_iter().collect::<Vec<_>>().join(", ");
        let wanted = match (&q.package, &q.role, &q.resource) {
            (Some(p), _, _) => {
                let unit = w.graph.party(f).and_then(|p| p.unit_type.clone());
                let pid = c.package_id(p);
                let givers: Vec<String> = c
                    .roles
                    .iter()
                    .enumerate()
                    .filter_map(|(i, role)| {
                        let id = crate::model::RoleId(u16::try_from(i).ok()?);
                        let gives = pid.is_some_and(|pid| c.role_packages(id, unit.as_deref()).contains(pid));
                        (gives && !c.is_rightholder(id)).then(|| role.code.clone())
                    })
                    .collect();
                let from = match givers.len() {
                    0 => "a grant".to_string(),
                    1..=3 => format!("role {} or a grant", givers.join(", ")),
                    n => format!("role {}, {} other roles or a grant", givers[..3].join(", "), n - 3),
                };
                format!("none of them gives package `{p}` (it comes with {from} from `{sf}`)")
            }
            (_, Some(r), _) => format!("none of them is role `{r}`"),
            (_, _, Some(res)) => format!(
                "none of them satisfies the policy of `{res}` for action `{}`, and no grant of it reaches `{sx}`",
                q.action.as_deref().unwrap_or_default()
            ),
            _ => String::new(),
        };
        format!("`{sx}` acts for `{sf}` as {held}, but {wanted}")
    });
    Ok(ExplainAnswer {
        allowed,
        paths: chains.iter().map(|c| c.text.clone()).collect(),
        chains,
        missing,
    })
}

pub fn simulate(w: &mut World, q: &SimulateQuery) -> Result<SimulateAnswer> {
    simulate_within(w, q, &mutate::Budget::unlimited(), usize::MAX).map_err(|e| match e {
        mutate::SimError::Refused(e) => e,
        // An unlimited budget neither runs out nor is cancelled.
        other => Error::invalid(other.to_string()),
    })
}

/// `simulate` within a budget (the server's): the lost accesses are compared one subject
/// at a time and only the first `limit` (or `default_limit` when the query names none)
/// of each list are kept; the counts are complete.
pub fn simulate_within(
    w: &World,
    q: &SimulateQuery,
    budget: &mutate::Budget,
    default_limit: usize,
) -> std::result::Result<SimulateAnswer, mutate::SimError> {
    let limit = q.limit.unwrap_or(default_limit);
    let ev = Event::from_json(q.event.clone())?;
    let mut lost: Vec<LostAccess> = Vec::new();
    let s = mutate::simulate_streaming(w, &ev, budget, |subject| {
        if lost.len() >= limit {
            return;
        }
        // Subjects come in the order of their ids, so sorting one subject's accesses
        // keeps the whole list sorted.
        let mut l: Vec<LostAccess> = subject.accesses().into_iter().map(lost_access).collect();
        l.sort();
        lost.extend(l.into_iter().take(limit - lost.len()));
    })?;
    let changes = Changes::from(&s.outcome);
    let (na, nd) = (
        changes.removed_assignments.len(),
        changes.removed_delegations.len(),
    );
    let mut removed_assignments = changes.removed_assignments;
    let mut removed_delegations = changes.removed_delegations;
    removed_assignments.truncate(limit);
    removed_delegations.truncate(limit);
    Ok(SimulateAnswer {
        truncated: lost.len() < s.lost_count
            || removed_assignments.len() < na
            || removed_delegations.len() < nd,
        lost,
        removed_assignments,
        removed_delegations,
        lost_count: s.lost_count,
        removed_assignments_count: na,
        removed_delegations_count: nd,
    })
}

fn lost_access(a: Access) -> LostAccess {
    match a {
        Access::Package {
            subject,
            party,
            package,
        } => LostAccess {
            subject,
            party,
            package: Some(package),
            resource: None,
            action: None,
        },
        Access::Resource {
            subject,
            party,
            resource,
            action,
        } => LostAccess {
            subject,
            party,
            package: None,
            resource: Some(resource),
            action: Some(action),
        },
    }
}

/// `scope_delegations` (domain.md §10.5), each entry with its resource's scopes.
pub fn scope_delegations(w: &World, q: &ScopeDelegationsQuery) -> Result<ScopeDelegationsAnswer> {
    let found = crate::supplier::scope_delegations(
        w,
        q.consumer.as_deref(),
        q.supplier.as_deref(),
        q.scope.as_deref(),
    )?;
    let delegations = found
        .into_iter()
        .map(|d| {
            let scopes = w
                .graph
                .resource_node(&d.resource)
                .and_then(|n| w.suppliers.scopes(n))
                .map(<[String]>::to_vec)
                .unwrap_or_default();
            ScopeDelegationEntry {
                consumer: d.consumer,
                supplier: d.supplier,
                resource: d.resource,
                scopes,
            }
        })
        .collect();
    Ok(ScopeDelegationsAnswer { delegations })
}

#[cfg(test)]
mod tests {
    /// [`super::NAMES`] is exactly the names [`super::Query::parse`] reads.
    #[test]
    fn names_are_the_queries_parse_reads() {
        for n in super::NAMES {
            assert!(super::Query::parse(n, serde_json::json!({})).is_some(), "{n}");
        }
        assert!(super::Query::parse("decide", serde_json::json!({})).is_none());
        let src = include_str!("query.rs");
        // (The needle is built, so that this line is not one of its matches.)
        let needle = [" => p(name, body)", ".map(Query::"].concat();
        let arms = src.matches(needle.as_str()).count();
        assert_eq!(
            arms,
            super::NAMES.len(),
            "a query of `parse` is missing from NAMES"
        );
    }
}
