//! The event vocabulary (scenario-format.md): one set of types for scenario files, the
//! JSON Lines import, the write-ahead log and the HTTP API.
//!
//! Every struct denies unknown fields: a key the contract does not name is an
//! `invalid_input`, never silently ignored.

use serde::{Deserialize, Serialize};

use crate::model::{Error, PartyKind, Result, SystemUserKind};

/// A rule of a resource policy as written: actions and any-of subject tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub actions: Vec<String>,
    pub any_of: Vec<String>,
}

/// A resource named in a client delegation: just its id (every action of the grant),
/// or the id with the actions to forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ResourceRef {
    Id(String),
    WithActions {
        #[serde(alias = "id")]
        resource: String,
        #[serde(default)]
        actions: Option<Vec<String>>,
    },
}

impl ResourceRef {
    pub fn id(&self) -> &str {
        match self {
            ResourceRef::Id(s) => s,
            ResourceRef::WithActions { resource, .. } => resource,
        }
    }
    pub fn actions(&self) -> Option<&[String]> {
        match self {
            ResourceRef::Id(_) => None,
            ResourceRef::WithActions { actions, .. } => actions.as_deref(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyEvent {
    pub id: String,
    pub kind: PartyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_user_kind: Option<SystemUserKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::model::int_or_digits")]
    pub party_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::model::int_or_digits")]
    pub user_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEvent {
    pub from: String,
    pub to: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceEvent {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegable: Option<bool>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_lists: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_list_mode: Option<String>,
    // --- §9–§10: what the resource is (domain.md §9.1, §10.1) ---
    /// `service` (the default), `consent` or `maskinporten_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ResourceKind>,
    /// Consent resources only: the consent is used up by its first use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time: Option<bool>,
    /// Scope resources (`maskinporten_schema`) only: the Maskinporten scopes covered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// What a resource is (domain.md §9.1, §10.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    #[default]
    Service,
    Consent,
    MaskinportenSchema,
}

/// `grant` and `revoke`: one of a package, a resource with actions, or an instance of a
/// resource with actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantEvent {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionEvent {
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEvent {
    pub facilitator: String,
    pub agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateEvent {
    pub client: String,
    pub facilitator: String,
    pub agent: String,
    /// The client assignment's role; required by `delegate`, absent in `undelegate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<ResourceRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiedEvent {
    pub person: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockEvent {
    pub now: String,
    /// Set by a server following the wall clock: the clock only moves forward (a
    /// `now` earlier than the engine clock changes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_only: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `system`: a vendor registers a system and the rights it may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemEvent {
    pub id: String,
    pub vendor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<ResourceRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_urls: Option<Vec<String>>,
}

/// `system_user_request`: a vendor asks a party for a system user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemUserRequestEvent {
    pub id: String,
    pub system: String,
    pub party: String,
    pub kind: SystemUserKind,
    pub system_user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<ResourceRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ref: Option<String>,
}

/// Rights named by a change request's `add` or `remove`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RightsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packages: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<ResourceRef>>,
}

/// `change_request`: a vendor asks to change a standard system user's rights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequestEvent {
    pub id: String,
    pub system_user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<RightsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<RightsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_url: Option<String>,
}

/// `access_request`: `from` asks `to` for a package or one action on a resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequestEvent {
    pub id: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<bool>,
}

/// `approve`, `reject`, `confirm`, `withdraw` and `escalate`: someone acts on a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestActionEvent {
    pub request: String,
    pub by: String,
}

/// `add_client` and `remove_client` of an agent system user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEvent {
    pub system_user: String,
    pub client: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `policy`: set a resource's policy from an XACML 3.0 document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEvent {
    pub resource: String,
    pub xml: String,
}

/// `instance`: an instance of an app or resource, owned by a party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceEvent {
    pub id: String,
    pub resource: String,
    pub party: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_event: Option<String>,
}

/// A member of an access list: an organisation, optionally limited to some actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessListMember {
    pub org: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
}

/// `access_list`: a service owner's list of organisations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessListEvent {
    pub owner: String,
    pub id: String,
    #[serde(default)]
    pub members: Vec<AccessListMember>,
}

// ----------------------------------------------------------------------------------
// Consent (domain.md §9)

/// One right a consent asks for: a consent resource and actions on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRightSpec {
    pub resource: String,
    pub actions: Vec<String>,
}

/// `consent_request`: the consumer `to` asks `from` for consent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequestEvent {
    pub id: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_delegator: Option<String>,
    pub rights: Vec<ConsentRightSpec>,
    pub valid_to: String,
}

/// `accept_consent`, `reject_consent` and `revoke_consent`: a person answers or revokes;
/// without `by`, an administrative import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentActionEvent {
    pub consent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `use_consent`: the consumer (or its operator) `by` uses the consent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UseConsentEvent {
    pub consent: String,
    pub by: String,
}

// --- Maskinporten scope delegation (domain.md §10) ---

/// `add_supplier` and `remove_supplier`: the supplier assignment consumer → supplier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplierEvent {
    pub consumer: String,
    pub supplier: String,
    /// `remove_supplier` only (default false): remove the scope delegations with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `delegate_scope` and `undelegate_scope`: a whole scope resource on a supplier
/// assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeEvent {
    pub consumer: String,
    pub supplier: String,
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A mutation of the world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    Party(PartyEvent),
    RegisterRole(RoleEvent),
    UnregisterRole(RoleEvent),
    A2Role(RoleEvent),
    RemoveA2Role(RoleEvent),
    Resource(ResourceEvent),
    Grant(GrantEvent),
    Revoke(GrantEvent),
    RemoveConnection(ConnectionEvent),
    AddAgent(AgentEvent),
    RemoveAgent(AgentEvent),
    Delegate(DelegateEvent),
    Undelegate(DelegateEvent),
    Died(DiedEvent),
    RetireA2Roles(Empty),
    Clock(ClockEvent),
    System(SystemEvent),
    SystemUserRequest(SystemUserRequestEvent),
    ChangeRequest(ChangeRequestEvent),
    AccessRequest(AccessRequestEvent),
    Approve(RequestActionEvent),
    Reject(RequestActionEvent),
    Confirm(RequestActionEvent),
    Withdraw(RequestActionEvent),
    Escalate(RequestActionEvent),
    AddClient(ClientEvent),
    RemoveClient(ClientEvent),
    Policy(PolicyEvent),
    Instance(InstanceEvent),
    AccessList(AccessListEvent),
    // Consent (domain.md §9).
    ConsentRequest(ConsentRequestEvent),
    AcceptConsent(ConsentActionEvent),
    RejectConsent(ConsentActionEvent),
    RevokeConsent(ConsentActionEvent),
    UseConsent(UseConsentEvent),
    // --- §10 suppliers ---
    AddSupplier(SupplierEvent),
    RemoveSupplier(SupplierEvent),
    DelegateScope(ScopeEvent),
    UndelegateScope(ScopeEvent),
}

/// The names of every event of the vocabulary, including those a later part of the
/// engine implements (used to tell a query step from an event step).
pub const EVENT_NAMES: &[&str] = &[
    "party",
    "register_role",
    "unregister_role",
    "a2_role",
    "remove_a2_role",
    "resource",
    "grant",
    "revoke",
    "remove_connection",
    "add_agent",
    "remove_agent",
    "delegate",
    "undelegate",
    "died",
    "retire_a2_roles",
    "clock",
    "system",
    "system_user_request",
    "change_request",
    "access_request",
    "approve",
    "reject",
    "confirm",
    "withdraw",
    "escalate",
    "add_client",
    "remove_client",
    "policy",
    "instance",
    "access_list",
    // Consent (domain.md §9).
    "consent_request",
    "accept_consent",
    "reject_consent",
    "revoke_consent",
    "use_consent",
    // §10 suppliers
    "add_supplier",
    "remove_supplier",
    "delegate_scope",
    "undelegate_scope",
];

/// The fields of the vocabulary whose values are numbers; every other number in an event
/// stands for its text ([`crate::model::normalise_scalars`]).
pub const NUMERIC_FIELDS: &[&str] = &["party_id", "user_id"];

impl Event {
    /// Parses one event from its JSON form `{"name": {fields}}`. A field-less event may
    /// be written with a null body (`retire_a2_roles:`).
    ///
    /// Every key and string obeys the id rule ([`crate::model::check_id`]: length and
    /// characters) except a policy's `xml` document; this is the one entry every event
    /// passes (HTTP, imports, scenario files, `simulate`).
    pub fn from_json(v: serde_json::Value) -> Result<Event> {
        crate::model::check_strings(&v, &["xml"])?;
        let v = match v {
            serde_json::Value::Object(m) if m.len() == 1 => serde_json::Value::Object(
                m.into_iter()
                    .map(|(k, body)| {
                        let body = match body {
                            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
                            other => crate::model::normalise_scalars(other, NUMERIC_FIELDS),
                        };
                        (k, body)
                    })
                    .collect(),
            ),
            serde_json::Value::Object(m) => {
                return Err(Error::invalid(format!(
                    "an event is a mapping with exactly one key, got {} keys",
                    m.len()
                )));
            }
            other => {
                return Err(Error::invalid(format!(
                    "an event is a mapping with one key, got `{}`",
                    crate::model::quote(&other.to_string())
                )));
            }
        };
        let name = v
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_default();
        if !EVENT_NAMES.contains(&name.as_str()) {
            let hint = crate::model::hint(&name, EVENT_NAMES.iter().copied());
            return Err(Error::invalid(format!("unknown event `{name}`{hint}")));
        }
        let body = v.get(&name).cloned().unwrap_or_default();
        serde_json::from_value(v).map_err(|e| {
            let msg = e.to_string();
            match msg.strip_prefix("unknown variant `") {
                // An enum value inside the body (a party's `kind`, ...): name the field.
                Some(rest) => {
                    let value = rest.split('`').next().unwrap_or_default();
                    let expected = rest.split_once(", expected ").map(|(_, x)| x).unwrap_or("");
                    match field_with_value(&body, value) {
                        Some(field) => Error::invalid(format!(
                            "event `{name}`: field `{field}` has value `{value}`; expected {expected}"
                        )),
                        None => Error::invalid(format!(
                            "event `{name}`: unknown value `{value}`; expected {expected}"
                        )),
                    }
                }
                None => Error::invalid(format!("event `{name}`: {msg}")),
            }
        })
    }

    /// The event's name in the vocabulary.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Party(_) => "party",
            Event::RegisterRole(_) => "register_role",
            Event::UnregisterRole(_) => "unregister_role",
            Event::A2Role(_) => "a2_role",
            Event::RemoveA2Role(_) => "remove_a2_role",
            Event::Resource(_) => "resource",
            Event::Grant(_) => "grant",
            Event::Revoke(_) => "revoke",
            Event::RemoveConnection(_) => "remove_connection",
            Event::AddAgent(_) => "add_agent",
            Event::RemoveAgent(_) => "remove_agent",
            Event::Delegate(_) => "delegate",
            Event::Undelegate(_) => "undelegate",
            Event::Died(_) => "died",
            Event::RetireA2Roles(_) => "retire_a2_roles",
            Event::Clock(_) => "clock",
            Event::System(_) => "system",
            Event::SystemUserRequest(_) => "system_user_request",
            Event::ChangeRequest(_) => "change_request",
            Event::AccessRequest(_) => "access_request",
            Event::Approve(_) => "approve",
            Event::Reject(_) => "reject",
            Event::Confirm(_) => "confirm",
            Event::Withdraw(_) => "withdraw",
            Event::Escalate(_) => "escalate",
            Event::AddClient(_) => "add_client",
            Event::RemoveClient(_) => "remove_client",
            Event::Policy(_) => "policy",
            Event::Instance(_) => "instance",
            Event::AccessList(_) => "access_list",
            Event::ConsentRequest(_) => "consent_request",
            Event::AcceptConsent(_) => "accept_consent",
            Event::RejectConsent(_) => "reject_consent",
            Event::RevokeConsent(_) => "revoke_consent",
            Event::UseConsent(_) => "use_consent",
            Event::AddSupplier(_) => "add_supplier",
            Event::RemoveSupplier(_) => "remove_supplier",
            Event::DelegateScope(_) => "delegate_scope",
            Event::UndelegateScope(_) => "undelegate_scope",
        }
    }
}

/// A whole batch `[{"name": {fields}}, ...]` read straight from its text into events,
/// for the kinds the HTTP write route sees most (`grant`, `revoke`, `remove_connection`,
/// `add_agent`, `remove_agent`, the four role events, `died`): no `serde_json::Value` in
/// between. It answers only what the general reading ([`Event::from_json`] of each item
/// of the strict JSON list) answers too, and `None` for everything else — any other
/// kind, any string the id rule refuses, any text the typed reading refuses (an unknown
/// or repeated field, a repeated key, a wrong type, not JSON) — so that the caller takes
/// the general reading, which gives the errors. Equal answers: the structs are read by
/// the same derived code (which refuses unknown and repeated fields), these kinds hold
/// only strings, lists of strings and booleans, and every string here is checked with
/// the same rule [`crate::model::check_strings`] applies (their keys are field and event
/// names, all valid). The tests of `api::actor` hold the two readings together, on
/// fixed and on mutated batches.
pub fn typed_batch(body: &[u8]) -> Option<Vec<Event>> {
    let events: Vec<Event> = serde_json::from_slice(body).ok()?;
    events.iter().all(typed_ok).then_some(events)
}

/// Whether `ev` is of a kind [`typed_batch`] answers for, every string of it valid.
fn typed_ok(ev: &Event) -> bool {
    let ok = |s: &str| crate::model::check_id("a value", s).is_ok();
    let opt = |s: &Option<String>| s.as_deref().is_none_or(ok);
    match ev {
        Event::Grant(e) | Event::Revoke(e) => {
            ok(&e.from)
                && ok(&e.to)
                && opt(&e.package)
                && opt(&e.resource)
                && opt(&e.instance)
                && opt(&e.by)
                && e.actions.as_ref().is_none_or(|a| a.iter().all(|x| ok(x)))
        }
        Event::RemoveConnection(e) => ok(&e.from) && ok(&e.to) && opt(&e.by),
        Event::AddAgent(e) | Event::RemoveAgent(e) => ok(&e.facilitator) && ok(&e.agent) && opt(&e.by),
        Event::RegisterRole(e) | Event::UnregisterRole(e) | Event::A2Role(e) | Event::RemoveA2Role(e) => {
            ok(&e.from) && ok(&e.to) && ok(&e.role)
        }
        Event::Died(e) => ok(&e.person),
        _ => false,
    }
}

/// The (possibly nested, dotted) name of a field of `body` whose value is the string
/// `value`, for error messages that name the wrong field.
fn field_with_value(body: &serde_json::Value, value: &str) -> Option<String> {
    match body {
        serde_json::Value::Object(m) => m.iter().find_map(|(k, v)| match v {
            serde_json::Value::String(s) if s == value => Some(k.clone()),
            other => field_with_value(other, value).map(|f| format!("{k}.{f}")),
        }),
        serde_json::Value::Array(a) => a.iter().find_map(|v| field_with_value(v, value)),
        _ => None,
    }
}
