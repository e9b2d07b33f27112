//! The decision order (domain.md §4 "Resource decisions", §5, §8 steps 2–6): the one
//! place where "the policy, then grants on NotApplicable, then the access lists" is
//! written. Every caller goes through [`order`]: `check` and `simulate` (through
//! [`permits_with`]), the decision point (`pdp::pip`, which hands in its own evaluation
//! of the whole request context), the Altinn 2 cut-off report (which hands in decisions
//! it evaluated once per class of holders) and the resource delegation check
//! ([`can_delegate_resource`]).
//!
//! A resource's policy takes one of two forms ([`Form`]): an XACML policy (answered by
//! the decision point's evaluator), or a `rules` list, which answers Permit when a rule
//! listing the action names a role or package held and NotApplicable otherwise. Either
//! way a NotApplicable may still become Permit through the resource and instance grants
//! that reach the subject, and a Permit on a resource in access-list mode stands only
//! for an organisation on one of its lists whose action filter admits the actions.

use std::sync::Arc;

use crate::catalog::{PackageSet, RoleSet};
use crate::graph::{NodeId, Resource};
use crate::model::PartyKind;
use crate::pdp::CompiledPolicy;
use crate::pdp::response::{Decision, ResultItem};
use crate::resolve::{self, Record};
use crate::world::World;

/// The form a resource's policy takes.
#[derive(Clone, Copy)]
pub enum Form<'a> {
    /// An XACML policy (`policy` event).
    Xacml(&'a Arc<CompiledPolicy>),
    /// A rule list (`resource` event).
    Rules(&'a Resource),
    /// No such resource.
    Missing,
}

/// The form of the policy of resource `id`.
pub fn form<'a>(w: &'a World, id: &str) -> Form<'a> {
    if let Some(p) = w.pdp.policies.get(id) {
        return Form::Xacml(p);
    }
    match w.graph.resource_node(id).and_then(|n| w.graph.resource(n)) {
        Some(r) => Form::Rules(r),
        None => Form::Missing,
    }
}

/// A rule list's answer for holders of these roles and packages: Permit when every
/// action is listed by a rule naming one of them, otherwise NotApplicable (the grants
/// may still permit).
pub fn rules_decision(
    w: &World,
    res: &Resource,
    actions: &[String],
    roles: &RoleSet,
    packages: &PackageSet,
) -> Decision {
    let all = !actions.is_empty()
        && actions
            .iter()
            .all(|a| resolve::policy_permits(w, res, a, roles, packages));
    if all {
        Decision::Permit
    } else {
        Decision::NotApplicable
    }
}

/// Whether the access lists of `resource` let a permit of `actions` stand for `org` (the
/// party, or for a request without one the subject's organisation): always, unless the
/// resource is in access-list mode; then only for an organisation on one of its lists
/// whose action filter admits every action.
pub fn lists_allow(w: &World, resource: &str, org: Option<NodeId>, actions: &[String]) -> bool {
    if !in_list_mode(w, resource) {
        return true;
    }
    org.filter(|o| {
        w.graph
            .party(*o)
            .is_some_and(|p| p.kind == PartyKind::Organisation)
    })
    .is_some_and(|o| crate::pdp::pip::on_list(w, resource, o, actions))
}

/// Whether `resource` is in access-list mode.
pub fn in_list_mode(w: &World, resource: &str) -> bool {
    w.pdp.resource_lists.get(resource).is_some_and(|c| c.enabled)
}

/// The decision order, the one implementation: the policy's answer; on NotApplicable,
/// Permit when the grants cover the actions; a Permit then stands only if the access
/// lists allow it (otherwise Deny). `policy` is the policy step's answer (obligations
/// and all), `grants` and `lists` are asked only when the order needs them.
pub fn order(policy: ResultItem, grants: impl FnOnce() -> bool, lists: impl FnOnce() -> bool) -> ResultItem {
    let mut r = policy;
    if r.decision == Decision::NotApplicable && grants() {
        r = ResultItem::new(Decision::Permit);
    }
    if r.decision == Decision::Permit && !lists() {
        r = ResultItem::new(Decision::Deny);
    }
    r
}

/// [`order`] on bare decisions (the cut-off report's slots).
pub fn order_decision(
    policy: Decision,
    grants: impl FnOnce() -> bool,
    lists: impl FnOnce() -> bool,
) -> Decision {
    order(ResultItem::new(policy), grants, lists).decision
}

/// The roles and packages a set of records gives (roles as policies match them).
pub fn held(recs: &[Record]) -> (RoleSet, PackageSet) {
    let mut roles = RoleSet::EMPTY;
    let mut packages = PackageSet::EMPTY;
    for r in recs {
        roles.extend(r.held_role());
        packages.union_with(&r.packages);
    }
    (roles, packages)
}

/// The decision for one subject whose records for `party` are `recs`: may it do
/// `action` on resource `res` (or on one instance of it)? The policy sees the subject's
/// roles and packages, the resource and the action. Records never permit on a consent
/// resource (§4, §9.5): only a consent does ([`permits`], [`consent_decision`]).
pub fn decision_with(
    w: &World,
    recs: &[Record],
    party: NodeId,
    res: NodeId,
    action: &str,
    instance: Option<&str>,
) -> Decision {
    if is_consent_resource(w, res) {
        return Decision::NotApplicable;
    }
    policy_order_with(w, recs, party, res, action, instance)
}

/// The decision order over records, for any resource: the policy (or rule list), the
/// grants, the access lists. A consent resource's rules are read this way only by the
/// consent acceptance check ([`may_consent`]).
fn policy_order_with(
    w: &World,
    recs: &[Record],
    party: NodeId,
    res: NodeId,
    action: &str,
    instance: Option<&str>,
) -> Decision {
    let Some(resource) = w.graph.resource(res) else {
        return Decision::NotApplicable;
    };
    let id = resource.id.as_str();
    let actions = [action.to_string()];
    let policy = match form(w, id) {
        Form::Xacml(p) => crate::pdp::records::policy_decision(w, id, p, recs, action),
        Form::Rules(r) => {
            let (roles, packages) = held(recs);
            rules_decision(w, r, &actions, &roles, &packages)
        }
        Form::Missing => Decision::NotApplicable,
    };
    // The acceptance check reads a consent resource "by R's rules" (§9.4(b)): a grant of
    // it cannot be made (§9.1), and one made while it was still a service does not count.
    let consent = matches!(resource.kind, crate::graph::ResourceKind::Consent { .. });
    order_decision(
        policy,
        || !consent && resolve::grants_permit(w, recs, res, action, instance),
        || lists_allow(w, id, Some(party), &actions),
    )
}

/// [`decision_with`] is Permit.
pub fn permits_with(
    w: &World,
    recs: &[Record],
    party: NodeId,
    res: NodeId,
    action: &str,
    instance: Option<&str>,
) -> bool {
    decision_with(w, recs, party, res, action, instance) == Decision::Permit
}

/// May `x` do `action` on resource `res` (or one instance of it) for party `f`? On a
/// consent resource: iff `x` holds a valid consent from `f` for the action (§9.5).
pub fn permits(w: &World, x: NodeId, f: NodeId, res: NodeId, action: &str, instance: Option<&str>) -> bool {
    if let Some(d) = consent_decision(
        w,
        Some(x),
        Some(f),
        res,
        std::slice::from_ref(&action.to_string()),
    ) {
        return d == Decision::Permit;
    }
    let recs = resolve::records(w, x, Some(f));
    permits_with(w, &recs, f, res, action, instance)
}

/// The resource delegation check (§5): may `u`, acting for `party`, pass on `action` on
/// resource `res`? The resource must be delegable, and `u` must be permitted the action
/// for `party` — by the same decision order, the access lists included — through
/// records other than client delegations.
pub fn can_delegate_resource(w: &World, u: NodeId, party: NodeId, res: NodeId, action: &str) -> bool {
    if !w.graph.resource(res).is_some_and(|r| r.delegable) {
        return false;
    }
    if !passes_on_for_person(w, u, party) {
        return false;
    }
    permits_with(w, &delegation_records(w, u, party), party, res, action, None)
}

/// §11.3: for a person party P, someone other than P passes on P's rights only as P's
/// access manager (`innbygger-tilgangsstyring-privatperson` for P). Other parties: no
/// extra condition.
fn passes_on_for_person(w: &World, u: NodeId, party: NodeId) -> bool {
    u == party
        || !w.graph.party(party).is_some_and(|p| p.kind == PartyKind::Person)
        || resolve::is_person_access_manager(w, u, party)
}

/// The records of `u` for `party` that the resource delegation check counts (§5).
fn delegation_records(w: &World, u: NodeId, party: NodeId) -> Vec<Record> {
    resolve::records(w, u, Some(party))
        .into_iter()
        .filter(Record::counts_for_resource_delegation)
        .collect()
}

// ----------------------------------------------------------------------------------
// Consent resources (domain.md §4, §8.10, §9)

/// Whether `res` is a consent resource (§9.1).
pub fn is_consent_resource(w: &World, res: NodeId) -> bool {
    w.graph
        .resource(res)
        .is_some_and(|r| matches!(r.kind, crate::graph::ResourceKind::Consent { .. }))
}

/// The decision on a consent resource, `None` for any other resource: Permit iff the
/// subject holds a valid consent from the party for every action (§9.5), otherwise
/// NotApplicable (§8.10). Nothing else (roles, packages, grants) permits on it.
pub fn consent_decision(
    w: &World,
    subject: Option<NodeId>,
    party: Option<NodeId>,
    res: NodeId,
    actions: &[String],
) -> Option<Decision> {
    if !is_consent_resource(w, res) {
        return None;
    }
    let id = w.graph.ext_id(res);
    let permit = match (subject, party) {
        (Some(x), Some(f)) => {
            !actions.is_empty()
                && actions
                    .iter()
                    .all(|a| crate::consent::state::holds(w, x, f, id, &a.to_lowercase()))
        }
        _ => false,
    };
    Some(if permit {
        Decision::Permit
    } else {
        Decision::NotApplicable
    })
}

/// The consent acceptance check's right (§9.4(b)): does `u` hold `action` on resource
/// `res` for `party` by the resource's rules, through records other than client
/// delegations? §5's resource delegation check without the `delegable` flag, and read
/// on a consent resource's rules; with §11.3 for a person party.
pub fn may_consent(w: &World, u: NodeId, party: NodeId, res: NodeId, action: &str) -> bool {
    if !passes_on_for_person(w, u, party) {
        return false;
    }
    policy_order_with(w, &delegation_records(w, u, party), party, res, action, None) == Decision::Permit
}

/// Every (resource, action) that `recs` (one subject's records for `party`) are
/// permitted: the candidates are the actions of rules naming a role or package held,
/// the actions an XACML policy pins, and the actions of grants the records carry; each
/// is decided by [`permits_with`]. Instance grants are per instance and not listed.
pub fn permitted_actions(
    w: &World,
    party: NodeId,
    recs: &[Record],
) -> std::collections::BTreeSet<(NodeId, String)> {
    let mut candidates = resolve::rule_and_grant_actions(w, recs);
    for (id, policy) in &w.pdp.policies {
        if let Some(rn) = w.graph.resource_node(id) {
            for a in crate::pdp::records::policy_actions(policy) {
                candidates.insert((rn, a));
            }
        }
    }
    candidates
        .into_iter()
        .filter(|(rn, a)| permits_with(w, recs, party, *rn, a, None))
        .collect()
}
