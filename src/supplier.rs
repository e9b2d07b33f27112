//! Maskinporten scope delegation (domain.md §10): scope resources (`resource.kind:
//! maskinporten_schema` with `scopes`), the supplier relationship consumer → supplier
//! (`add_supplier` / `remove_supplier`) and the scope delegations hung on it
//! (`delegate_scope` / `undelegate_scope`), with the lookups Maskinporten asks.
//!
//! The state ([`state`], on the world layer of ARCHITECTURE.md: it imports no
//! `mutate`) is global and lives in [`World::suppliers`], shared between versions and
//! copied on its first change in one of them like `World::sys`; its maps are `imbl`
//! maps, so that copy costs a few reference counts, not the size of the state. It is
//! kept out of the graph on purpose: a supplier assignment yields no record (§10.2), so
//! resolution never needs to see it, and no graph walk pays for it.
//!
//! Indexes (all kept by [`set_pair`] / [`set_scopes`], the only writers):
//! * consumer → supplier → delegated scope resources (the relationship and its
//!   delegations in one entry; an empty set is a relationship without delegations);
//! * supplier → consumers;
//! * scope resource → (consumer, supplier) pairs it is delegated on;
//! * scope name → the scope resources that list it.
//!
//! So each of Maskinporten's lookups — by (supplier, consumer, scope), by supplier, by
//! consumer or by scope alone — starts from an index and never scans the state.
//!
//! Every change goes through the transaction's undo log ([`SupplierUndo`]: the previous
//! value of one entry), so a refused event changes nothing and `simulate` rolls back.

use imbl::OrdSet;

use crate::event::{Event, ResourceEvent, ResourceKind, ScopeEvent, SupplierEvent};
use crate::graph::NodeId;
use crate::model::{Error, ErrorCode, PartyKind, Result};
use crate::mutate::{Outcome, Tx};
use crate::world::World;

pub mod state;

pub use state::{SupplierState, SupplierUndo, violations};
pub(crate) use state::{set_pair, set_scopes, undo};

fn put_pair(tx: &mut Tx<'_>, c: NodeId, s: NodeId, new: Option<OrdSet<NodeId>>) {
    let old = set_pair(&mut tx.w.suppliers, c, s, new);
    tx.push_supplier_undo(SupplierUndo::Pair(c, s, old));
}

/// What the changes logged in `undo` did, added to `out`: a supplier relationship
/// that existed before and not after is a removed assignment (role `supplier`).
/// Returns whether anything changed.
pub(crate) fn outcome<'a>(
    w: &World,
    undo: impl Iterator<Item = &'a SupplierUndo>,
    out: &mut Outcome,
) -> bool {
    let mut seen_pairs: std::collections::BTreeMap<(NodeId, NodeId), &Option<OrdSet<NodeId>>> =
        Default::default();
    let mut changed = false;
    for u in undo {
        match u {
            SupplierUndo::Pair(c, s, old) => {
                seen_pairs.entry((*c, *s)).or_insert(old);
            }
            SupplierUndo::Scopes(r, old) => {
                changed |= old.as_deref() != w.suppliers.scopes(*r);
            }
        }
    }
    let g = &w.graph;
    for ((c, s), before) in seen_pairs {
        let after = w.suppliers.pair(c, s);
        changed |= before.as_ref() != after;
        if before.is_some() && after.is_none() {
            out.removed_assignments.push((
                g.ext_id(c).to_string(),
                g.ext_id(s).to_string(),
                w.catalog.role(w.catalog.known.supplier).code.clone(),
            ));
        }
    }
    changed
}

// ----------------------------------------------------------------------------------
// The resource event: scope resources

/// The shape of a `resource` event's `kind`, `one_time` and `scopes` (invalid_input):
/// `one_time` goes with a consent resource, `scopes` with a scope resource.
pub(crate) fn check_resource_shape(r: &ResourceEvent) -> Result<()> {
    let kind = r.kind.unwrap_or_default();
    if r.one_time.is_some() && kind != ResourceKind::Consent {
        return Err(Error::invalid(format!(
            "resource `{}`: `one_time` goes with `kind: consent`",
            r.id
        )));
    }
    if let Some(scopes) = &r.scopes {
        if kind != ResourceKind::MaskinportenSchema {
            return Err(Error::invalid(format!(
                "resource `{}`: `scopes` go with `kind: maskinporten_schema`",
                r.id
            )));
        }
        if scopes.iter().any(|s| s.trim().is_empty()) {
            return Err(Error::invalid(format!(
                "resource `{}`: a scope must not be empty",
                r.id
            )));
        }
    }
    Ok(())
}

/// Records what kind of resource `n` now is: a scope resource with its scopes, or not
/// one (a `resource` event replaces the whole resource). Scope delegations of a
/// resource that stops being a scope resource stay until they are removed, as grants
/// stay when a policy changes.
pub(crate) fn on_resource_event(tx: &mut Tx<'_>, n: NodeId, r: &ResourceEvent) {
    let new = (r.kind == Some(ResourceKind::MaskinportenSchema)).then(|| {
        let mut scopes: Vec<String> = r.scopes.iter().flatten().map(|s| s.trim().to_string()).collect();
        scopes.sort();
        scopes.dedup();
        scopes
    });
    if tx.w.suppliers.scopes_of.get(&n) == new.as_ref() {
        return;
    }
    let old = set_scopes(&mut tx.w.suppliers, n, new);
    tx.push_supplier_undo(SupplierUndo::Scopes(n, old));
}

/// `grant` or an access request of a scope resource: not_assignable (§10.1).
pub(crate) fn refuse_scope_grant(w: &World, resource: NodeId) -> Result<()> {
    if w.suppliers.is_scope_resource(resource) {
        return Err(Error::new(
            ErrorCode::NotAssignable,
            format!(
                "`{}` is a Maskinporten scope resource: it is passed on only by `delegate_scope`",
                w.graph.ext_id(resource)
            ),
        ));
    }
    Ok(())
}

// ----------------------------------------------------------------------------------
// The events

pub(crate) fn apply(tx: &mut Tx<'_>, ev: &Event) -> Result<()> {
    match ev {
        Event::AddSupplier(e) => add_supplier(tx, e),
        Event::RemoveSupplier(e) => remove_supplier(tx, e),
        Event::DelegateScope(e) => delegate_scope(tx, e),
        Event::UndelegateScope(e) => undelegate_scope(tx, e),
        other => Err(Error::invalid(format!(
            "`{}` is not a supplier event",
            other.name()
        ))),
    }
}

fn party(w: &World, id: &str) -> Result<NodeId> {
    w.graph.party_node(id).ok_or_else(|| Error::unknown_party(id))
}

fn opt_party(w: &World, id: Option<&String>) -> Result<Option<NodeId>> {
    id.map(|i| party(w, i)).transpose()
}

/// Shape and references of a supplier event: different ids, known parties, and (a
/// lookup, so after the references) two organisations.
fn parties(w: &World, consumer: &str, supplier: &str) -> Result<(NodeId, NodeId)> {
    let (c, s) = (party(w, consumer)?, party(w, supplier)?);
    Ok((c, s))
}

fn same_party(consumer: &str, supplier: &str) -> Result<()> {
    if consumer == supplier {
        return Err(Error::invalid(format!("`{consumer}` cannot be its own supplier")));
    }
    Ok(())
}

fn organisations(w: &World, c: NodeId, s: NodeId) -> Result<()> {
    for (n, what) in [(c, "consumer"), (s, "supplier")] {
        if w.graph.party(n).map(|p| p.kind) != Some(PartyKind::Organisation) {
            return Err(Error::invalid(format!(
                "the {what} `{}` is not an organisation",
                w.graph.ext_id(n)
            )));
        }
    }
    Ok(())
}

fn holds_admin(w: &World, by: NodeId, party: NodeId) -> bool {
    crate::resolve::has_package(w, by, party, w.catalog.known.maskinporten_administrator)
}

/// With `by`: `by` holds `maskinporten-administrator` for one of `parties`.
fn require_admin(w: &World, by: Option<NodeId>, parties: &[NodeId]) -> Result<()> {
    if let Some(b) = by
        && !parties.iter().any(|p| holds_admin(w, b, *p))
    {
        let names: Vec<String> = parties
            .iter()
            .map(|p| format!("`{}`", w.graph.ext_id(*p)))
            .collect();
        return Err(Error::not_authorized(format!(
            "`{}` does not hold maskinporten-administrator for {}",
            w.graph.ext_id(b),
            names.join(" or ")
        )));
    }
    Ok(())
}

fn add_supplier(tx: &mut Tx<'_>, e: &SupplierEvent) -> Result<()> {
    if e.cascade.is_some() {
        return Err(Error::invalid(
            "`cascade` goes with `remove_supplier`, not with `add_supplier`",
        ));
    }
    same_party(&e.consumer, &e.supplier)?;
    let w = &*tx.w;
    let (c, s) = parties(w, &e.consumer, &e.supplier)?;
    let by = opt_party(w, e.by.as_ref())?;
    organisations(w, c, s)?;
    require_admin(w, by, &[c])?;
    if w.suppliers.pair(c, s).is_none() {
        put_pair(tx, c, s, Some(OrdSet::new()));
    }
    Ok(())
}

fn remove_supplier(tx: &mut Tx<'_>, e: &SupplierEvent) -> Result<()> {
    same_party(&e.consumer, &e.supplier)?;
    let w = &*tx.w;
    let (c, s) = parties(w, &e.consumer, &e.supplier)?;
    let by = opt_party(w, e.by.as_ref())?;
    organisations(w, c, s)?;
    // A supplier may give up what it received (§10.4).
    require_admin(w, by, &[c, s])?;
    let Some(delegated) = w.suppliers.pair(c, s) else {
        return Ok(()); // nothing to remove: not an error
    };
    if !delegated.is_empty() && e.cascade != Some(true) {
        let mut err = Error::new(
            ErrorCode::HasDependants,
            format!(
                "{} scope delegation(s) hang on the supplier relationship `{}` → `{}`; set `cascade` to remove them too",
                delegated.len(),
                e.consumer,
                e.supplier
            ),
        );
        err.dependants = delegated
            .iter()
            .map(|r| format!("scope delegation `{}`", w.graph.ext_id(*r)))
            .collect();
        return Err(err);
    }
    put_pair(tx, c, s, None);
    Ok(())
}

/// Every action the policy of `res` names (what "the whole resource" means).
fn resource_actions(w: &World, res: NodeId) -> Vec<String> {
    let mut acts: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    if let Some(r) = w.graph.resource(res) {
        for rule in &r.rules {
            acts.extend(rule.actions.iter().cloned());
        }
        if let Some(p) = w.pdp.policies.get(&r.id) {
            acts.extend(crate::pdp::records::policy_actions(p));
        }
    }
    acts.into_iter().collect()
}

fn delegate_scope(tx: &mut Tx<'_>, e: &ScopeEvent) -> Result<()> {
    same_party(&e.consumer, &e.supplier)?;
    let w = &*tx.w;
    // References, then the relationship (not_found ranks with them).
    let (c, s) = parties(w, &e.consumer, &e.supplier)?;
    let res = w
        .graph
        .resource_node(&e.resource)
        .ok_or_else(|| Error::unknown_resource(&e.resource))?;
    let by = opt_party(w, e.by.as_ref())?;
    let Some(delegated) = w.suppliers.pair(c, s) else {
        return Err(Error::new(
            ErrorCode::NotFound,
            format!(
                "`{}` is not a supplier of `{}`: add the supplier first",
                e.supplier, e.consumer
            ),
        ));
    };
    // Structure.
    organisations(w, c, s)?;
    if !w.suppliers.is_scope_resource(res) {
        return Err(Error::new(
            ErrorCode::NotAssignable,
            format!(
                "`{}` is not a Maskinporten scope resource (kind `maskinporten_schema`)",
                e.resource
            ),
        ));
    }
    if !w.graph.resource(res).is_some_and(|r| r.delegable) {
        return Err(Error::new(
            ErrorCode::NotDelegable,
            format!("scope resource `{}` is not delegable", e.resource),
        ));
    }
    let actions = resource_actions(w, res);
    if !crate::decide::lists_allow(w, &e.resource, Some(c), &actions) {
        return Err(Error::new(
            ErrorCode::NotDelegable,
            format!(
                "`{}` is on none of the access lists of `{}` for its actions: it cannot pass the scope on",
                e.consumer, e.resource
            ),
        ));
    }
    // The actor: the administrator package and the right to delegate every action.
    if let Some(b) = by {
        require_admin(w, by, &[c])?;
        if let Some(a) = actions
            .iter()
            .find(|a| !crate::decide::can_delegate_resource(w, b, c, res, a))
        {
            return Err(Error::not_authorized(format!(
                "`{}` may not pass on `{a}` on `{}` for `{}`",
                w.graph.ext_id(b),
                e.resource,
                e.consumer
            )));
        }
    }
    if delegated.contains(&res) {
        return Ok(());
    }
    let mut next = delegated.clone();
    next.insert(res);
    put_pair(tx, c, s, Some(next));
    Ok(())
}

fn undelegate_scope(tx: &mut Tx<'_>, e: &ScopeEvent) -> Result<()> {
    same_party(&e.consumer, &e.supplier)?;
    let w = &*tx.w;
    let (c, s) = parties(w, &e.consumer, &e.supplier)?;
    let res = w
        .graph
        .resource_node(&e.resource)
        .ok_or_else(|| Error::unknown_resource(&e.resource))?;
    let by = opt_party(w, e.by.as_ref())?;
    organisations(w, c, s)?;
    require_admin(w, by, &[c, s])?;
    let Some(delegated) = w.suppliers.pair(c, s) else {
        return Ok(());
    };
    if !delegated.contains(&res) {
        return Ok(());
    }
    let mut next = delegated.clone();
    next.remove(&res);
    put_pair(tx, c, s, Some(next));
    Ok(())
}

// ----------------------------------------------------------------------------------
// Lookups (domain.md §10.5)

/// One scope delegation, by external ids.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ScopeDelegation {
    pub consumer: String,
    pub supplier: String,
    pub resource: String,
}

/// The scope delegations matching every filter given (at least one is required):
/// `consumer`, `supplier`, and `scope` (a resource that lists it). Sorted.
pub fn scope_delegations(
    w: &World,
    consumer: Option<&str>,
    supplier: Option<&str>,
    scope: Option<&str>,
) -> Result<Vec<ScopeDelegation>> {
    if consumer.is_none() && supplier.is_none() && scope.is_none() {
        return Err(Error::invalid(
            "`scope_delegations` needs at least one of `consumer`, `supplier` or `scope`",
        ));
    }
    let c = consumer.map(|c| party(w, c)).transpose()?;
    let s = supplier.map(|s| party(w, s)).transpose()?;
    let st = &w.suppliers;
    let lists_scope =
        |r: NodeId| scope.is_none_or(|x| st.scopes(r).is_some_and(|ss| ss.iter().any(|y| y == x)));
    let mut found: Vec<(NodeId, NodeId, NodeId)> = Vec::new();
    match (c, s, scope) {
        (Some(c), _, _) => {
            let pairs: Vec<(NodeId, &OrdSet<NodeId>)> = match s {
                Some(s) => st.pair(c, s).map(|set| (s, set)).into_iter().collect(),
                None => st
                    .by_consumer
                    .get(&c)
                    .into_iter()
                    .flat_map(|m| m.iter().map(|(s, set)| (*s, set)))
                    .collect(),
            };
            for (s, set) in pairs {
                found.extend(set.iter().filter(|r| lists_scope(**r)).map(|r| (c, s, *r)));
            }
        }
        (None, Some(s), _) => {
            for c in st.consumers_of(s) {
                for r in st.pair(c, s).into_iter().flatten() {
                    if lists_scope(*r) {
                        found.push((c, s, *r));
                    }
                }
            }
        }
        (None, None, Some(x)) => {
            for r in st.by_scope.get(x).into_iter().flatten() {
                for (c, s) in st.by_resource.get(r).into_iter().flatten() {
                    found.push((*c, *s, *r));
                }
            }
        }
        (None, None, None) => {}
    }
    let g = &w.graph;
    let mut out: Vec<ScopeDelegation> = found
        .into_iter()
        .map(|(c, s, r)| ScopeDelegation {
            consumer: g.ext_id(c).to_string(),
            supplier: g.ext_id(s).to_string(),
            resource: g.ext_id(r).to_string(),
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The consumer's suppliers (with or without delegations), sorted.
pub fn suppliers(w: &World, consumer: &str) -> Result<Vec<String>> {
    let c = party(w, consumer)?;
    let mut out: Vec<String> = w
        .suppliers
        .suppliers_of(c)
        .map(|s| w.graph.ext_id(s).to_string())
        .collect();
    out.sort();
    Ok(out)
}

/// The organisations `supplier` is a supplier of, sorted.
pub fn consumers(w: &World, supplier: &str) -> Result<Vec<String>> {
    let s = party(w, supplier)?;
    let mut out: Vec<String> = w
        .suppliers
        .consumers_of(s)
        .map(|c| w.graph.ext_id(c).to_string())
        .collect();
    out.sort();
    Ok(out)
}
