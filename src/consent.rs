//! Consent (samtykke), domain.md §9: consent resources, consent requests and their
//! states, the acceptance check, `handled_by` operators, the event list, and the
//! answers behind `consent_status`, `consent_check` and `consent_events`.
//!
//! The state ([`state`], on the world layer of ARCHITECTURE.md: it imports no
//! `mutate`) lives in [`World::consent`] (global, like the system register: a consent
//! names two or three parties that may sit in different partitions); every change goes
//! through the transaction's undo log ([`ConsentUndo`]), so a refused event changes
//! nothing and `simulate` can roll back. The maps are persistent (`imbl`), so the first
//! change in a new version copies no consent.
//!
//! `consent_check` and the decision on a consent resource read the index
//! [`ConsentState::by_holder`]: (from, holder) → the consents (by id), where the holder
//! is the consent's `to` and, when it has one, its `handled_by`. A lookup is one search
//! among pairs of node ids plus the candidates found, whatever the number of consents.
//!
//! Expiry is never stored: a consent whose stored state is `created` or `accepted` is
//! *reported* `expired` while the engine clock ([`World::now`]) is later than its
//! `valid_to`; moving the clock is the only thing that makes it expire.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::DateTime;

use crate::event::{ConsentActionEvent, ConsentRequestEvent, Event, ResourceEvent, UseConsentEvent};
use crate::graph::{Actions, NodeId, ResourceKind};
use crate::model::{Error, ErrorCode, PartyKind, Result};
use crate::mutate::Tx;
use crate::world::World;

/// The package that makes a person an access manager of another person (§11.4).
const PERSON_ACCESS_MANAGER: &str = "innbygger-tilgangsstyring-privatperson";

pub mod state;

pub(crate) use state::undo;
pub use state::{Consent, ConsentState, ConsentUndo, Entry, Status, holds, is_valid, status};

fn set_consent(tx: &mut Tx<'_>, c: Consent) {
    let id = c.id.clone();
    let old = tx.w.consent.put(&id, Some(Arc::new(c)));
    tx.push_consent_undo(ConsentUndo(id, old));
}

// ----------------------------------------------------------------------------------
// Consent resources

/// The kind a `resource` event gives its resource in the graph: a consent resource, or
/// a service (a Maskinporten scope resource is a service in the graph; its scopes live
/// in `World::suppliers`). The shape (`one_time` only with `kind: consent`) is checked
/// by `supplier::check_resource_shape` first.
pub fn resource_kind(r: &ResourceEvent) -> Result<ResourceKind> {
    if r.one_time.is_some() && r.kind != Some(crate::event::ResourceKind::Consent) {
        return Err(Error::invalid(format!(
            "resource `{}`: `one_time` goes with `kind: consent`",
            r.id
        )));
    }
    Ok(match r.kind.unwrap_or_default() {
        crate::event::ResourceKind::Consent => ResourceKind::Consent {
            one_time: r.one_time.unwrap_or(false),
        },
        crate::event::ResourceKind::Service | crate::event::ResourceKind::MaskinportenSchema => {
            ResourceKind::Service
        }
    })
}

/// A consent resource is never granted nor asked for (§9.1): `not_assignable`.
pub fn refuse_grant_of_consent_resource(w: &World, res: NodeId) -> Result<()> {
    if crate::decide::is_consent_resource(w, res) {
        return Err(Error::new(
            ErrorCode::NotAssignable,
            format!(
                "resource `{}` is a consent resource: it is consented to, never granted",
                w.graph.ext_id(res)
            ),
        ));
    }
    Ok(())
}

/// The actions a resource's policy names: its rules' actions, or those an XACML policy
/// pins.
fn named_actions(w: &World, res: NodeId) -> Actions {
    let id = w.graph.ext_id(res);
    match crate::decide::form(w, id) {
        crate::decide::Form::Xacml(p) => crate::pdp::records::policy_actions(p).into_iter().collect(),
        crate::decide::Form::Rules(r) => r
            .rules
            .iter()
            .flat_map(|rule| rule.actions.iter().cloned())
            .collect(),
        crate::decide::Form::Missing => Actions::new(),
    }
}

// ----------------------------------------------------------------------------------
// Status, validity, the acceptance check

/// The consent's event list as `consent_events` reports it: the stored entries, then a
/// derived `expired` entry at `valid_to` while the clock is later than it.
pub fn entries(w: &World, c: &Consent) -> Vec<Entry> {
    let mut out = c.entries.clone();
    if w.now.is_some_and(|now| now > c.valid_to) {
        out.push(Entry {
            what: Status::Expired,
            by: None,
            at: Some(c.valid_to),
        });
    }
    out
}

fn is_living_person(w: &World, n: NodeId) -> bool {
    w.graph
        .party(n)
        .is_some_and(|p| p.kind == PartyKind::Person && p.alive)
}

/// §9.4(b): `u` is `from` (a living person answering for themself), or `u` holds every
/// requested action on every requested resource for `from` by the resource's rules
/// (§5's resource delegation check, the `delegable` flag not consulted).
pub fn passes_rights_check(w: &World, c: &Consent, u: NodeId) -> bool {
    if !is_living_person(w, u) {
        return false;
    }
    if u == c.from {
        return true;
    }
    c.rights.iter().all(|(res, acts)| {
        w.graph.resource_node(res).is_some_and(|rn| {
            acts.iter()
                .all(|a| crate::decide::may_consent(w, u, c.from, rn, a))
        })
    })
}

/// The acceptance check (§9.4): the required delegator if there is one, and 9.4(b).
pub fn may_answer(w: &World, c: &Consent, u: NodeId) -> std::result::Result<(), String> {
    let g = &w.graph;
    if let Some(rd) = c.required_delegator
        && rd != u
    {
        return Err(format!(
            "consent `{}` names `{}` as the one who must answer, not `{}`",
            c.id,
            g.ext_id(rd),
            g.ext_id(u)
        ));
    }
    if !passes_rights_check(w, c, u) {
        return Err(format!(
            "`{}` may not answer consent `{}` for `{}`: it is not `{}` and cannot delegate every requested \
             right for it",
            g.ext_id(u),
            c.id,
            g.ext_id(c.from),
            g.ext_id(c.from)
        ));
    }
    Ok(())
}

/// Whether `u` is an access manager of `party`: a holder of `tilgangsstyrer` for an
/// organisation (as in §5's revoke rule), or for a person a holder of
/// `innbygger-tilgangsstyring-privatperson` through §5's sources (§11.4).
fn is_access_manager(w: &World, u: NodeId, party: NodeId) -> bool {
    match w.graph.party(party).map(|p| p.kind) {
        Some(PartyKind::Organisation) => {
            crate::resolve::has_package(w, u, party, w.catalog.known.tilgangsstyrer)
        }
        Some(PartyKind::Person) => w.catalog.package_id(PERSON_ACCESS_MANAGER).is_some_and(|p| {
            crate::resolve::records(w, u, Some(party))
                .iter()
                .any(|r| r.counts_for_delegation() && r.packages.contains(p))
        }),
        _ => false,
    }
}

/// Who may revoke (§9.3): `from` itself, an access manager of `from`, or whoever passes
/// 9.4(b).
fn may_revoke(w: &World, c: &Consent, u: NodeId) -> bool {
    (u == c.from && is_living_person(w, u))
        || (is_living_person(w, u) && is_access_manager(w, u, c.from))
        || passes_rights_check(w, c, u)
}

/// The answer of `consent_check` (§9.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Yes, by this consent (the first valid one by id).
    Yes(String),
    /// No consent from `from` to (or handled by) `to`, or not the one named.
    NotFound,
    /// None of them covers the action on the resource.
    NotAuthorized,
    /// None of those is valid now.
    Conflict,
}

/// `consent_check`: does `to` (as `to` or `handled_by`) hold a valid consent from `from`
/// for `action` on `resource`; with `consent`, that consent only.
pub fn check(
    w: &World,
    from: NodeId,
    to: NodeId,
    resource: &str,
    action: &str,
    consent: Option<&str>,
) -> CheckOutcome {
    let candidates: Vec<&Arc<Consent>> = match consent {
        Some(id) => w
            .consent
            .consents
            .get(id)
            .filter(|c| c.from == from && c.holders().any(|h| h == to))
            .into_iter()
            .collect(),
        None => w.consent.from_to(from, to).collect(),
    };
    if candidates.is_empty() {
        return CheckOutcome::NotFound;
    }
    let covering: Vec<&&Arc<Consent>> = candidates
        .iter()
        .filter(|c| c.rights.get(resource).is_some_and(|a| a.contains(action)))
        .collect();
    if covering.is_empty() {
        return CheckOutcome::NotAuthorized;
    }
    match covering.iter().find(|c| is_valid(w, c)) {
        Some(c) => CheckOutcome::Yes(c.id.clone()),
        None => CheckOutcome::Conflict,
    }
}

/// The consent `id` (`not_found` when there is none).
pub fn get<'w>(w: &'w World, id: &str) -> Result<&'w Arc<Consent>> {
    w.consent
        .consents
        .get(id)
        .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("no consent `{id}`")))
}

// ----------------------------------------------------------------------------------
// The events

fn non_empty(field: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(Error::invalid(format!("`{field}` must not be empty")));
    }
    Ok(())
}

fn party(w: &World, id: &str) -> Result<NodeId> {
    w.graph.party_node(id).ok_or_else(|| Error::unknown_party(id))
}

fn kind_of(w: &World, n: NodeId) -> Option<PartyKind> {
    w.graph.party(n).map(|p| p.kind)
}

/// Applies the consent events.
pub(crate) fn apply(tx: &mut Tx<'_>, ev: &Event) -> Result<()> {
    match ev {
        Event::ConsentRequest(e) => request(tx, e),
        Event::AcceptConsent(e) => answer(tx, e, true),
        Event::RejectConsent(e) => answer(tx, e, false),
        Event::RevokeConsent(e) => revoke(tx, e),
        Event::UseConsent(e) => use_consent(tx, e),
        other => Err(Error::invalid(format!(
            "`{}` is not a consent event",
            other.name()
        ))),
    }
}

/// `consent_request` (§9.2), in the order of faults: shape, references, structure (the
/// resources' kind first, then what needs a look-up: the parties' kinds, the actions the
/// resources name, one-time uniformity, the clock), state (a used id).
fn request(tx: &mut Tx<'_>, e: &ConsentRequestEvent) -> Result<()> {
    // Shape.
    non_empty("id", &e.id)?;
    non_empty("from", &e.from)?;
    non_empty("to", &e.to)?;
    if let Some(h) = &e.handled_by {
        non_empty("handled_by", h)?;
    }
    if let Some(r) = &e.required_delegator {
        non_empty("required_delegator", r)?;
    }
    if e.from == e.to {
        return Err(Error::invalid(format!(
            "`{}` cannot ask itself for consent",
            e.to
        )));
    }
    if e.handled_by.as_ref() == Some(&e.to) {
        return Err(Error::invalid(format!(
            "`handled_by` is an operator other than the consumer `{}`",
            e.to
        )));
    }
    if e.rights.is_empty() {
        return Err(Error::invalid(
            "a consent request names at least one right in `rights`",
        ));
    }
    let mut rights: BTreeMap<String, Actions> = BTreeMap::new();
    for r in &e.rights {
        non_empty("rights.resource", &r.resource)?;
        if r.actions.is_empty() {
            return Err(Error::invalid(format!(
                "right on `{}`: `actions` must name at least one action",
                r.resource
            )));
        }
        let mut acts = Actions::new();
        for a in &r.actions {
            non_empty("rights.actions", a)?;
            acts.insert(a.trim().to_lowercase());
        }
        if rights.insert(r.resource.clone(), acts).is_some() {
            return Err(Error::invalid(format!(
                "resource `{}` appears twice in `rights`",
                r.resource
            )));
        }
    }
    let valid_to = DateTime::parse_from_rfc3339(e.valid_to.trim()).map_err(|err| {
        Error::invalid(format!(
            "`valid_to` is not an RFC 3339 time `{}`: {err}",
            e.valid_to
        ))
    })?;
    // References.
    let w = &*tx.w;
    let from = party(w, &e.from)?;
    let to = party(w, &e.to)?;
    let handled_by = e.handled_by.as_deref().map(|h| party(w, h)).transpose()?;
    let required_delegator = e.required_delegator.as_deref().map(|r| party(w, r)).transpose()?;
    let mut nodes = Vec::with_capacity(rights.len());
    for res in rights.keys() {
        nodes.push(
            w.graph
                .resource_node(res)
                .ok_or_else(|| Error::unknown_resource(res))?,
        );
    }
    // Structure: the resources' kind.
    let mut one_time = Vec::with_capacity(nodes.len());
    for n in &nodes {
        match w.graph.resource(*n).map(|r| &r.kind) {
            Some(ResourceKind::Consent { one_time: o }) => one_time.push(*o),
            _ => {
                return Err(Error::new(
                    ErrorCode::NotAssignable,
                    format!(
                        "resource `{}` is not a consent resource: it cannot be consented to",
                        w.graph.ext_id(*n)
                    ),
                ));
            }
        }
    }
    // Structure: what needs a look-up.
    if !matches!(
        kind_of(w, from),
        Some(PartyKind::Person | PartyKind::Organisation)
    ) {
        return Err(Error::invalid(format!(
            "`from` `{}` is a person or an organisation",
            e.from
        )));
    }
    if kind_of(w, to) != Some(PartyKind::Organisation) {
        return Err(Error::invalid(format!(
            "the consumer `{}` is an organisation",
            e.to
        )));
    }
    if let Some(h) = handled_by
        && kind_of(w, h) != Some(PartyKind::Organisation)
    {
        return Err(Error::invalid(format!(
            "the operator `handled_by` `{}` is an organisation",
            w.graph.ext_id(h)
        )));
    }
    if let Some(r) = required_delegator
        && kind_of(w, r) != Some(PartyKind::Person)
    {
        return Err(Error::invalid(format!(
            "`required_delegator` `{}` is a person",
            w.graph.ext_id(r)
        )));
    }
    for ((res, acts), n) in rights.iter().zip(&nodes) {
        let named = named_actions(w, *n);
        if let Some(a) = acts.iter().find(|a| !named.contains(*a)) {
            return Err(Error::invalid(format!(
                "action `{a}` is not one that the rules of consent resource `{res}` name"
            )));
        }
    }
    let is_one_time = one_time.first().copied().unwrap_or(false);
    if one_time.iter().any(|o| *o != is_one_time) {
        return Err(Error::invalid(
            "a consent request may not mix one-time and ordinary consent resources",
        ));
    }
    if let Some(now) = w.now
        && valid_to <= now
    {
        return Err(Error::invalid(format!(
            "`valid_to` {} is not later than the engine clock {}",
            e.valid_to,
            now.to_rfc3339()
        )));
    }
    // State.
    if w.consent.consents.contains_key(&e.id) {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("consent id `{}` is already used", e.id),
        ));
    }
    let consent = Consent {
        id: e.id.clone(),
        from,
        to,
        handled_by,
        required_delegator,
        rights,
        valid_to,
        one_time: is_one_time,
        state: Status::Created,
        accepted_by: None,
        entries: vec![Entry {
            what: Status::Created,
            by: Some(handled_by.unwrap_or(to)),
            at: w.now,
        }],
    };
    set_consent(tx, consent);
    Ok(())
}

/// The consent and the acting person of `accept_consent`, `reject_consent` and
/// `revoke_consent`: shape, references, and `by` being a person.
fn consent_and_person(w: &World, e: &ConsentActionEvent) -> Result<(Arc<Consent>, Option<NodeId>)> {
    non_empty("consent", &e.consent)?;
    if let Some(b) = &e.by {
        non_empty("by", b)?;
    }
    let c = get(w, &e.consent)?.clone();
    let by = e.by.as_deref().map(|b| party(w, b)).transpose()?;
    if let Some(b) = by
        && kind_of(w, b) != Some(PartyKind::Person)
    {
        return Err(Error::invalid(format!(
            "`by` `{}` answers a consent as a person, and it is not one",
            w.graph.ext_id(b)
        )));
    }
    Ok((c, by))
}

fn refuse_state(w: &World, c: &Consent, what: &str) -> Error {
    Error::new(
        ErrorCode::Conflict,
        format!(
            "consent `{}` is {}: it cannot be {what}",
            c.id,
            status(w, c).as_str()
        ),
    )
}

/// `accept_consent` / `reject_consent` (§9.3, §9.4).
fn answer(tx: &mut Tx<'_>, e: &ConsentActionEvent, accept: bool) -> Result<()> {
    let w = &*tx.w;
    let (c, by) = consent_and_person(w, e)?;
    if let Some(b) = by {
        may_answer(w, &c, b).map_err(Error::not_authorized)?;
    }
    if status(w, &c) != Status::Created {
        return Err(refuse_state(w, &c, if accept { "accepted" } else { "rejected" }));
    }
    let mut next = (*c).clone();
    next.state = if accept {
        Status::Accepted
    } else {
        Status::Rejected
    };
    if accept {
        next.accepted_by = by;
    }
    next.entries.push(Entry {
        what: next.state,
        by,
        at: w.now,
    });
    set_consent(tx, next);
    Ok(())
}

/// `revoke_consent` (§9.3).
fn revoke(tx: &mut Tx<'_>, e: &ConsentActionEvent) -> Result<()> {
    let w = &*tx.w;
    let (c, by) = consent_and_person(w, e)?;
    if let Some(b) = by
        && !may_revoke(w, &c, b)
    {
        return Err(Error::not_authorized(format!(
            "`{}` may not revoke consent `{}`: only `{}` itself, its access manager, or someone who \
             could have accepted it",
            w.graph.ext_id(b),
            c.id,
            w.graph.ext_id(c.from)
        )));
    }
    if status(w, &c) != Status::Accepted {
        return Err(refuse_state(w, &c, "revoked"));
    }
    let mut next = (*c).clone();
    next.state = Status::Revoked;
    next.entries.push(Entry {
        what: Status::Revoked,
        by,
        at: w.now,
    });
    set_consent(tx, next);
    Ok(())
}

/// `use_consent` (§9.3): by the consumer or its operator; a one-time consent is used up.
fn use_consent(tx: &mut Tx<'_>, e: &UseConsentEvent) -> Result<()> {
    let w = &*tx.w;
    non_empty("consent", &e.consent)?;
    non_empty("by", &e.by)?;
    let c = get(w, &e.consent)?.clone();
    let by = party(w, &e.by)?;
    if !c.holders().any(|h| h == by) {
        return Err(Error::not_authorized(format!(
            "`{}` is neither the consumer nor the operator of consent `{}`",
            e.by, c.id
        )));
    }
    if status(w, &c) != Status::Accepted {
        return Err(refuse_state(w, &c, "used"));
    }
    let mut next = (*c).clone();
    if next.one_time {
        next.state = Status::Used;
    }
    next.entries.push(Entry {
        what: Status::Used,
        by: Some(by),
        at: w.now,
    });
    set_consent(tx, next);
    Ok(())
}
