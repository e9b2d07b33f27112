//! The state of supplier relationships and scope delegations inside the world
//! ([`World::suppliers`]), its read-only lookups and how to undo one change to it. The
//! events that change it are in [`crate::supplier`], one layer up (they go through the
//! transaction); this module knows the world only.

use imbl::{OrdMap, OrdSet};

use crate::graph::NodeId;
use crate::model::PartyKind;
use crate::world::World;

/// Scope resources, supplier relationships and scope delegations (domain.md §10).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SupplierState {
    /// Scope resources (kind `maskinporten_schema`) → the scopes they cover.
    pub(super) scopes_of: OrdMap<NodeId, Vec<String>>,
    /// Scope name → the scope resources that list it.
    pub(super) by_scope: OrdMap<String, OrdSet<NodeId>>,
    /// Consumer → supplier → the scope resources delegated on that relationship.
    pub(super) by_consumer: OrdMap<NodeId, OrdMap<NodeId, OrdSet<NodeId>>>,
    /// Supplier → its consumers.
    pub(super) by_supplier: OrdMap<NodeId, OrdSet<NodeId>>,
    /// Scope resource → the (consumer, supplier) pairs it is delegated on.
    pub(super) by_resource: OrdMap<NodeId, OrdSet<(NodeId, NodeId)>>,
}

impl SupplierState {
    /// The scope delegations of the relationship consumer → supplier; `None` when there
    /// is no such relationship.
    pub fn pair(&self, consumer: NodeId, supplier: NodeId) -> Option<&OrdSet<NodeId>> {
        self.by_consumer.get(&consumer).and_then(|m| m.get(&supplier))
    }

    /// The scopes of a scope resource; `None` for a resource of another kind.
    pub fn scopes(&self, resource: NodeId) -> Option<&[String]> {
        self.scopes_of.get(&resource).map(Vec::as_slice)
    }

    /// Whether `resource` is of kind `maskinporten_schema`.
    pub fn is_scope_resource(&self, resource: NodeId) -> bool {
        self.scopes_of.contains_key(&resource)
    }

    /// Every relationship with its delegations, ordered by (consumer, supplier).
    pub fn pairs(&self) -> impl Iterator<Item = (NodeId, NodeId, &OrdSet<NodeId>)> + '_ {
        self.by_consumer
            .iter()
            .flat_map(|(c, m)| m.iter().map(move |(s, set)| (*c, *s, set)))
    }

    /// Every scope resource with its scopes.
    pub fn scope_resources(&self) -> impl Iterator<Item = (NodeId, &[String])> + '_ {
        self.scopes_of.iter().map(|(r, s)| (*r, s.as_slice()))
    }

    /// How many supplier relationships there are.
    pub fn relationships(&self) -> usize {
        self.by_consumer.values().map(OrdMap::len).sum()
    }

    /// The consumer's suppliers.
    pub fn suppliers_of(&self, consumer: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.by_consumer
            .get(&consumer)
            .into_iter()
            .flat_map(|m| m.keys().copied())
    }

    /// The supplier's consumers.
    pub fn consumers_of(&self, supplier: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.by_supplier
            .get(&supplier)
            .into_iter()
            .flat_map(|s| s.iter().copied())
    }
}

/// Broken invariants of the state: both parties of a relationship are organisations,
/// and the indexes agree with the relationships (for `snapshot verify` and the crash
/// test, through `persist::invariants`).
pub fn violations(w: &World) -> Vec<String> {
    let st = &w.suppliers;
    let g = &w.graph;
    let mut out = Vec::new();
    let mut pairs = 0usize;
    for (c, s, set) in st.pairs() {
        pairs += 1;
        let name = format!("supplier `{}` → `{}`", g.ext_id(c), g.ext_id(s));
        for n in [c, s] {
            if g.party(n).map(|p| p.kind) != Some(PartyKind::Organisation) {
                out.push(format!("{name}: `{}` is not an organisation", g.ext_id(n)));
            }
        }
        if !st.by_supplier.get(&s).is_some_and(|cs| cs.contains(&c)) {
            out.push(format!("{name} is missing from the supplier index"));
        }
        for r in set {
            if !st.by_resource.get(r).is_some_and(|ps| ps.contains(&(c, s))) {
                out.push(format!(
                    "{name}: `{}` is missing from the resource index",
                    g.ext_id(*r)
                ));
            }
        }
    }
    let indexed: usize = st.by_supplier.values().map(OrdSet::len).sum();
    if indexed != pairs {
        out.push(format!(
            "the supplier index holds {indexed} relationships, not {pairs}"
        ));
    }
    let delegations: usize = st.pairs().map(|(_, _, set)| set.len()).sum();
    let by_res: usize = st.by_resource.values().map(OrdSet::len).sum();
    if by_res != delegations {
        out.push(format!(
            "the resource index holds {by_res} delegations, not {delegations}"
        ));
    }
    for (r, scopes) in &st.scopes_of {
        for x in scopes {
            if !st.by_scope.get(x).is_some_and(|rs| rs.contains(r)) {
                out.push(format!(
                    "scope `{x}` of `{}` is missing from the scope index",
                    g.ext_id(*r)
                ));
            }
        }
    }
    out
}

/// How to undo one change to [`SupplierState`]: the previous value of an entry.
#[derive(Debug)]
pub enum SupplierUndo {
    /// The previous delegations of (consumer, supplier); `None`: no relationship.
    Pair(NodeId, NodeId, Option<OrdSet<NodeId>>),
    /// The previous scopes of a resource; `None`: not a scope resource.
    Scopes(NodeId, Option<Vec<String>>),
}

/// Sets the relationship consumer → supplier and its delegations (`None` removes it),
/// keeping every index; returns the previous value.
pub(crate) fn set_pair(
    st: &mut SupplierState,
    consumer: NodeId,
    supplier: NodeId,
    new: Option<OrdSet<NodeId>>,
) -> Option<OrdSet<NodeId>> {
    let old = st.pair(consumer, supplier).cloned();
    for r in old.iter().flatten() {
        let mut pairs = st.by_resource.get(r).cloned().unwrap_or_default();
        pairs.remove(&(consumer, supplier));
        if pairs.is_empty() {
            st.by_resource.remove(r);
        } else {
            st.by_resource.insert(*r, pairs);
        }
    }
    let mut inner = st.by_consumer.get(&consumer).cloned().unwrap_or_default();
    let mut consumers = st.by_supplier.get(&supplier).cloned().unwrap_or_default();
    match new {
        Some(set) => {
            for r in &set {
                let mut pairs = st.by_resource.get(r).cloned().unwrap_or_default();
                pairs.insert((consumer, supplier));
                st.by_resource.insert(*r, pairs);
            }
            inner.insert(supplier, set);
            consumers.insert(consumer);
        }
        None => {
            inner.remove(&supplier);
            consumers.remove(&consumer);
        }
    }
    if inner.is_empty() {
        st.by_consumer.remove(&consumer);
    } else {
        st.by_consumer.insert(consumer, inner);
    }
    if consumers.is_empty() {
        st.by_supplier.remove(&supplier);
    } else {
        st.by_supplier.insert(supplier, consumers);
    }
    old
}

/// Sets the scopes of a resource (`None`: it is not a scope resource), keeping the
/// scope index; returns the previous value.
pub(crate) fn set_scopes(
    st: &mut SupplierState,
    resource: NodeId,
    new: Option<Vec<String>>,
) -> Option<Vec<String>> {
    let old = st.scopes_of.get(&resource).cloned();
    for s in old.iter().flatten() {
        let mut rs = st.by_scope.get(s).cloned().unwrap_or_default();
        rs.remove(&resource);
        if rs.is_empty() {
            st.by_scope.remove(s);
        } else {
            st.by_scope.insert(s.clone(), rs);
        }
    }
    match new {
        Some(scopes) => {
            for s in &scopes {
                let mut rs = st.by_scope.get(s).cloned().unwrap_or_default();
                rs.insert(resource);
                st.by_scope.insert(s.clone(), rs);
            }
            st.scopes_of.insert(resource, scopes);
        }
        None => {
            st.scopes_of.remove(&resource);
        }
    }
    old
}

/// Restores one entry (called by the transaction's rollback).
pub(crate) fn undo(w: &mut World, u: SupplierUndo) {
    match u {
        SupplierUndo::Pair(c, s, v) => {
            set_pair(&mut w.suppliers, c, s, v);
        }
        SupplierUndo::Scopes(r, v) => {
            set_scopes(&mut w.suppliers, r, v);
        }
    }
}
