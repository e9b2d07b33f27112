//! The graph facade: the only module that names petgraph.
//!
//! Parties and resources are nodes of a `StableGraph`; assignments, client delegations
//! and main-unit links are its edges. External ids (the strings a scenario file, an
//! import or an API caller chooses) are mapped to nodes here and nowhere else.
//!
//! INVARIANT: a [`NodeId`] or [`EdgeId`] never leaves the process (it is not serialised,
//! logged as an identity or returned by an API). petgraph reuses freed indices, so an
//! index kept outside the graph could later name another party; everything that crosses
//! the boundary uses the external id.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableGraph};
use petgraph::visit::{EdgeIndexable, EdgeRef, NodeIndexable};

use crate::catalog::{Catalog, PackageSet};
use crate::model::{PackageId, PartyKind, RoleId, SystemUserKind};

/// A node of the graph (a party or a resource). Opaque outside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex<u32>);

/// An edge of the graph. Opaque outside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId(EdgeIndex<u32>);

/// A set of actions on a resource (`read`, `write`, `sign`, ...).
pub type Actions = BTreeSet<String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Party {
    pub id: String,
    pub kind: PartyKind,
    pub name: Option<String>,
    /// ER unit type (organisasjonsform) of an organisation: AS, ENK, BEDR, ...
    pub unit_type: Option<String>,
    pub org_no: Option<String>,
    pub ssn: Option<String>,
    pub alive: bool,
    pub system_user_kind: Option<SystemUserKind>,
    /// The owner organisation of a system user (external id).
    pub owner: Option<String>,
    /// The vendor system a system user belongs to.
    pub system: Option<String>,
    pub uuid: Option<String>,
    pub party_id: Option<i64>,
    pub user_id: Option<i64>,
}

impl Party {
    pub fn new(id: &str, kind: PartyKind) -> Party {
        Party {
            id: id.to_string(),
            kind,
            name: None,
            unit_type: None,
            org_no: None,
            ssn: None,
            alive: true,
            system_user_kind: None,
            owner: None,
            system: None,
            uuid: None,
            party_id: None,
            user_id: None,
        }
    }
    pub fn is_unit_type(&self, t: &str) -> bool {
        self.unit_type
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(t))
    }
    pub fn is_living_person(&self) -> bool {
        self.kind == PartyKind::Person && self.alive
    }
}

/// A token of a resource policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token {
    Package(PackageId),
    Role(RoleId),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub actions: Actions,
    pub any_of: Vec<Token>,
    /// The tokens as written, for explanations and round trips.
    pub written: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub id: String,
    pub owner: Option<String>,
    pub delegable: bool,
    pub rules: Vec<Rule>,
    /// What the resource is (scenario-format `kind`); a service unless said otherwise.
    pub kind: ResourceKind,
}

/// The kind of a resource (domain.md §9.1, §10.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResourceKind {
    /// An ordinary service, decided by its policy and grants (§4).
    #[default]
    Service,
    /// Something a party consents to (§9): decided by consents alone.
    Consent { one_time: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Party(Party),
    Resource(Resource),
}

/// An assignment `From → To` with a role, and the grants hung on it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Assignment {
    pub role: RoleId,
    pub packages: PackageSet,
    /// Resource grants: resource node → actions.
    pub resources: BTreeMap<NodeId, Actions>,
    /// Instance grants: (resource node, instance id) → actions.
    pub instances: BTreeMap<(NodeId, String), Actions>,
}

impl Assignment {
    pub fn new(role: RoleId) -> Assignment {
        Assignment {
            role,
            ..Assignment::default()
        }
    }
    pub fn has_grants(&self) -> bool {
        !self.packages.is_empty() || !self.resources.is_empty() || !self.instances.is_empty()
    }
}

/// A client delegation, stored as an edge client → agent. It links the client
/// assignment `client → facilitator` (with `role`) to the agent assignment
/// `facilitator → agent`, and carries what is forwarded.
#[derive(Debug, Clone, PartialEq)]
pub struct Delegation {
    pub facilitator: NodeId,
    pub role: RoleId,
    pub packages: PackageSet,
    pub resources: BTreeMap<NodeId, Actions>,
}

impl Delegation {
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.resources.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Edge {
    Assignment(Assignment),
    Delegation(Delegation),
    /// sub-unit → main unit, with the ER role that records it.
    MainUnit(RoleId),
}

/// Identifies an edge by what it means, independent of its index: the unit of undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKey {
    Assignment {
        from: NodeId,
        to: NodeId,
        role: RoleId,
    },
    Delegation {
        client: NodeId,
        agent: NodeId,
        facilitator: NodeId,
        role: RoleId,
    },
    MainUnit {
        sub: NodeId,
        main: NodeId,
    },
}

/// External id → node. foldhash rather than the std SipHash: the ids are short strings
/// and a Norway load does millions of lookups, foldhash is several times faster there
/// and, seeded per process, still does not let a caller choose colliding ids ahead of
/// time (rustc-hash's fixed seed would).
type IdMap = HashMap<String, NodeId, foldhash::fast::RandomState>;

/// One frozen layer of the graph: a petgraph structure with its indexes. Mutated in
/// place only while nothing else shares it (loading, the reference engine, a compaction
/// building the next base); otherwise changes go to the [`Graph`]'s delta.
#[derive(Debug, Clone, Default)]
struct Core {
    g: StableGraph<Node, Edge, petgraph::Directed, u32>,
    parties: IdMap,
    resources: IdMap,
    /// Edge counts per node, to walk the smaller side when looking for an edge between
    /// two nodes (a hub such as an accounting firm may have tens of thousands).
    degree: FxHashMap<NodeId, (u32, u32)>,
    /// Edges from a node to itself (a client delegation whose agent is the client).
    loops: FxHashMap<NodeId, u32>,
    /// Sub-unit → main unit, and main unit → sub-units (mirrors of the MainUnit edges).
    main_of: FxHashMap<NodeId, NodeId>,
    subs_of: FxHashMap<NodeId, Vec<NodeId>>,
    /// Incoming assignments with a key role, per receiving node: the key-role path
    /// starts from these, and a firm with 20 000 client edges has only a few of them.
    key_in: FxHashMap<NodeId, Vec<EdgeId>>,
    /// Resource nodes in definition order (a whole-graph scan for them would cost a
    /// walk over millions of parties).
    resource_order: Vec<NodeId>,
    /// Legacy identifiers (uuid, party id, user id, org number, national id) → party,
    /// for decision requests. A party's old identifiers are dropped when it changes;
    /// entries are also checked on read. When two parties share an identifier, the last
    /// one written holds it.
    /// Per identifier kind (`IdentKind as usize`), the party holding each value.
    idents: [FxHashMap<String, NodeId>; 5],
    /// The identifier keys indexed for each party, to drop them when they change.
    ident_keys: FxHashMap<NodeId, Vec<(IdentKind, String)>>,
}

/// The kinds of legacy identifier a decision request may name a party by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentKind {
    Uuid,
    PartyId,
    UserId,
    OrgNo,
    Ssn,
}

impl IdentKind {
    fn of(self, p: &Party) -> Option<String> {
        match self {
            IdentKind::Uuid => p.uuid.as_ref().map(|s| s.to_ascii_lowercase()),
            IdentKind::PartyId => p.party_id.map(|v| v.to_string()),
            IdentKind::UserId => p.user_id.map(|v| v.to_string()),
            IdentKind::OrgNo => p.org_no.clone(),
            IdentKind::Ssn => p.ssn.clone(),
        }
    }
    /// Whether party `p` has identifier `v` (in its canonical form) of this kind.
    fn is(self, p: &Party, v: &str) -> bool {
        match self {
            IdentKind::Uuid => p.uuid.as_ref().is_some_and(|u| u.eq_ignore_ascii_case(v)),
            IdentKind::PartyId => p.party_id.is_some_and(|x| v.parse::<i64>() == Ok(x)),
            IdentKind::UserId => p.user_id.is_some_and(|x| v.parse::<i64>() == Ok(x)),
            IdentKind::OrgNo => p.org_no.as_deref() == Some(v),
            IdentKind::Ssn => p.ssn.as_deref() == Some(v),
        }
    }
    const ALL: [IdentKind; 5] = [
        IdentKind::Uuid,
        IdentKind::PartyId,
        IdentKind::UserId,
        IdentKind::OrgNo,
        IdentKind::Ssn,
    ];
}

impl Core {
    fn party(&self, n: NodeId) -> Option<&Party> {
        match self.g.node_weight(n.0) {
            Some(Node::Party(p)) => Some(p),
            _ => None,
        }
    }

    fn add_party(&mut self, p: Party) -> NodeId {
        let id = p.id.clone();
        let n = NodeId(self.g.add_node(Node::Party(p)));
        self.parties.insert(id, n);
        self.reindex_party(n);
        n
    }

    fn reindex_party(&mut self, n: NodeId) {
        self.unindex_party(n);
        let Some(p) = self.party(n) else { return };
        let keys = ident_keys_of(p);
        for (kind, v) in &keys {
            self.idents[*kind as usize].insert(v.clone(), n);
        }
        if !keys.is_empty() {
            self.ident_keys.insert(n, keys);
        }
    }

    fn unindex_party(&mut self, n: NodeId) {
        for (kind, v) in self.ident_keys.remove(&n).unwrap_or_default() {
            let map = &mut self.idents[kind as usize];
            if map.get(&v) == Some(&n) {
                map.remove(&v);
            }
        }
    }

    fn add_resource(&mut self, r: Resource) -> NodeId {
        let id = r.id.clone();
        let n = NodeId(self.g.add_node(Node::Resource(r)));
        self.resources.insert(id, n);
        self.resource_order.push(n);
        n
    }

    fn remove_node(&mut self, n: NodeId) {
        match self.g.remove_node(n.0) {
            Some(Node::Party(p)) => {
                self.parties.remove(&p.id);
            }
            Some(Node::Resource(r)) => {
                self.resources.remove(&r.id);
                self.resource_order.retain(|x| *x != n);
            }
            None => {}
        }
        self.degree.remove(&n);
        self.unindex_party(n);
    }

    fn add_edge(&mut self, from: NodeId, to: NodeId, w: Edge) -> EdgeId {
        self.degree.entry(from).or_default().1 += 1;
        self.degree.entry(to).or_default().0 += 1;
        if from == to {
            *self.loops.entry(from).or_default() += 1;
        }
        let is_key = is_key_edge(&w);
        let is_main = matches!(w, Edge::MainUnit(_));
        let e = EdgeId(self.g.add_edge(from.0, to.0, w));
        if is_key {
            self.key_in.entry(to).or_default().push(e);
        }
        if is_main {
            self.main_of.insert(from, to);
            self.subs_of.entry(to).or_default().push(from);
        }
        e
    }

    fn remove_edge(&mut self, e: EdgeId) -> Option<Edge> {
        let (a, b) = self.g.edge_endpoints(e.0)?;
        let (a, b) = (NodeId(a), NodeId(b));
        if let Some(d) = self.degree.get_mut(&a) {
            d.1 = d.1.saturating_sub(1);
        }
        if let Some(d) = self.degree.get_mut(&b) {
            d.0 = d.0.saturating_sub(1);
        }
        if a == b
            && let Some(k) = self.loops.get_mut(&a)
        {
            *k -= 1;
            if *k == 0 {
                self.loops.remove(&a);
            }
        }
        if let Some(v) = self.key_in.get_mut(&b) {
            v.retain(|x| *x != e);
            if v.is_empty() {
                self.key_in.remove(&b);
            }
        }
        if matches!(self.g.edge_weight(e.0), Some(Edge::MainUnit(_))) {
            self.main_of.remove(&a);
            if let Some(v) = self.subs_of.get_mut(&b) {
                v.retain(|x| *x != a);
                if v.is_empty() {
                    self.subs_of.remove(&b);
                }
            }
        }
        self.g.remove_edge(e.0)
    }
}

fn ident_keys_of(p: &Party) -> Vec<(IdentKind, String)> {
    IdentKind::ALL
        .iter()
        .filter_map(|k| Some((*k, k.of(p)?)))
        .collect()
}

fn is_key_edge(w: &Edge) -> bool {
    matches!(w, Edge::Assignment(a) if Catalog::builtin().is_key_role(a.role))
}

fn endpoints_of(key: EdgeKey) -> (NodeId, NodeId) {
    match key {
        EdgeKey::Assignment { from, to, .. } => (from, to),
        EdgeKey::Delegation { client, agent, .. } => (client, agent),
        EdgeKey::MainUnit { sub, main } => (sub, main),
    }
}

type Map<K, V> = imbl::HashMap<K, V>;

/// An edge with its endpoints, as the delta keeps it.
type FullEdge = (NodeId, NodeId, Edge);

/// The changes since the base, as persistent maps: cloning is O(1) and a change copies
/// only the path to it. Every entry is an absolute value that overrides the base's (an
/// empty list or 0 where the base's index has no entry; `None` for a removed node, edge
/// or key).
///
/// INVARIANT: the adjacency lists of both endpoints of every edge added or removed in the
/// delta are overridden (`out_adj`, `in_adj`), so a node without an override has exactly
/// its base edges, which the delta never changes in place. New nodes and edges get
/// indices from `next_node`/`next_edge`, which start at the base's bounds and never go
/// back, so an index names one node or edge for the life of the delta, and
/// [`Graph::compacted`] places each at the same index in the next base.
#[derive(Debug, Clone, Default)]
struct Delta {
    nodes: imbl::OrdMap<u32, Option<Arc<Node>>>,
    edges: imbl::OrdMap<u32, Option<Arc<FullEdge>>>,
    out_adj: Map<NodeId, imbl::Vector<EdgeId>>,
    in_adj: Map<NodeId, imbl::Vector<EdgeId>>,
    parties: Map<String, Option<NodeId>>,
    resources: Map<String, Option<NodeId>>,
    loops: Map<NodeId, u32>,
    main_of: Map<NodeId, Option<NodeId>>,
    subs_of: Map<NodeId, Vec<NodeId>>,
    key_in: Map<NodeId, Vec<EdgeId>>,
    resource_order: Option<imbl::Vector<NodeId>>,
    idents: [Map<String, Option<NodeId>>; 5],
    ident_keys: Map<NodeId, Vec<(IdentKind, String)>>,
    next_node: u32,
    next_edge: u32,
    parties_n: i64,
    resources_n: i64,
    edges_n: i64,
}

/// The graph of parties, resources and grants behind the engine's own facade.
///
/// A frozen base (a petgraph structure with its indexes, shared behind an `Arc`) plus a
/// persistent delta of later changes. Cloning is O(1), so a version of the world can be
/// published while the writer goes on with a copy; [`Graph::compacted`] folds the delta
/// into a new base. While the base is not shared and the delta is empty (loading, the
/// reference engine, the scenario runner) changes go straight into the base.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    base: Arc<Core>,
    /// True once anything was written to `d` (reads then consult it first).
    dirty: bool,
    d: Delta,
}

fn ix(n: NodeId) -> u32 {
    n.0.index() as u32
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Whether changes go straight into the base: only while nothing shares it and the
    /// delta is empty. Then `Arc::make_mut` on the base copies nothing.
    fn direct(&mut self) -> bool {
        !self.dirty && Arc::get_mut(&mut self.base).is_some()
    }

    fn delta(&mut self) -> &mut Delta {
        if !self.dirty {
            self.dirty = true;
            self.d.next_node = self.base.g.node_bound() as u32;
            self.d.next_edge = self.base.g.edge_bound() as u32;
        }
        &mut self.d
    }

    /// How many nodes and edges the delta holds (compaction folds it past a bound).
    pub fn delta_len(&self) -> usize {
        if self.dirty {
            self.d.nodes.len() + self.d.edges.len()
        } else {
            0
        }
    }

    pub fn party_count(&self) -> usize {
        (self.base.parties.len() as i64 + self.d.parties_n).max(0) as usize
    }
    pub fn resource_count(&self) -> usize {
        (self.base.resources.len() as i64 + self.d.resources_n).max(0) as usize
    }
    pub fn edge_count(&self) -> usize {
        (self.base.g.edge_count() as i64 + self.d.edges_n).max(0) as usize
    }

    pub fn party_node(&self, id: &str) -> Option<NodeId> {
        if self.dirty
            && let Some(v) = self.d.parties.get(id)
        {
            return *v;
        }
        self.base.parties.get(id).copied()
    }
    pub fn resource_node(&self, id: &str) -> Option<NodeId> {
        if self.dirty
            && let Some(v) = self.d.resources.get(id)
        {
            return *v;
        }
        self.base.resources.get(id).copied()
    }

    fn node(&self, n: NodeId) -> Option<&Node> {
        if self.dirty
            && let Some(v) = self.d.nodes.get(&ix(n))
        {
            return v.as_deref();
        }
        self.base.g.node_weight(n.0)
    }

    /// The delta's own copy of node `n` (made from the base on first change).
    fn node_mut(&mut self, n: NodeId) -> Option<&mut Node> {
        let cur = self.node(n)?.clone();
        let d = self.delta();
        let slot = d.nodes.entry(ix(n)).or_insert_with(|| Some(Arc::new(cur)));
        slot.as_mut().map(Arc::make_mut)
    }

    pub fn party(&self, n: NodeId) -> Option<&Party> {
        match self.node(n) {
            Some(Node::Party(p)) => Some(p),
            _ => None,
        }
    }
    pub fn party_mut(&mut self, n: NodeId) -> Option<&mut Party> {
        if self.direct() {
            let c = Arc::make_mut(&mut self.base);
            return match c.g.node_weight_mut(n.0) {
                Some(Node::Party(p)) => Some(p),
                _ => None,
            };
        }
        self.party(n)?;
        match self.node_mut(n) {
            Some(Node::Party(p)) => Some(p),
            _ => None,
        }
    }
    pub fn resource(&self, n: NodeId) -> Option<&Resource> {
        match self.node(n) {
            Some(Node::Resource(r)) => Some(r),
            _ => None,
        }
    }
    pub fn resource_mut(&mut self, n: NodeId) -> Option<&mut Resource> {
        if self.direct() {
            let c = Arc::make_mut(&mut self.base);
            return match c.g.node_weight_mut(n.0) {
                Some(Node::Resource(r)) => Some(r),
                _ => None,
            };
        }
        self.resource(n)?;
        match self.node_mut(n) {
            Some(Node::Resource(r)) => Some(r),
            _ => None,
        }
    }

    /// The external id of a party or resource node ("?" for a node that is gone).
    pub fn ext_id(&self, n: NodeId) -> &str {
        match self.node(n) {
            Some(Node::Party(p)) => &p.id,
            Some(Node::Resource(r)) => &r.id,
            None => "?",
        }
    }

    pub fn add_party(&mut self, p: Party) -> NodeId {
        if self.direct() {
            let c = Arc::make_mut(&mut self.base);
            return c.add_party(p);
        }
        let id = p.id.clone();
        let d = self.delta();
        let n = NodeId(NodeIndex::new(d.next_node as usize));
        d.next_node += 1;
        d.nodes.insert(ix(n), Some(Arc::new(Node::Party(p))));
        d.parties.insert(id, Some(n));
        d.parties_n += 1;
        self.reindex_party(n);
        n
    }

    fn ident_keys(&self, n: NodeId) -> &[(IdentKind, String)] {
        if self.dirty
            && let Some(v) = self.d.ident_keys.get(&n)
        {
            return v;
        }
        self.base.ident_keys.get(&n).map_or(&[], |v| v.as_slice())
    }

    fn ident(&self, kind: IdentKind, v: &str) -> Option<NodeId> {
        if self.dirty
            && let Some(x) = self.d.idents[kind as usize].get(v)
        {
            return *x;
        }
        self.base.idents[kind as usize].get(v).copied()
    }

    /// Records the legacy identifiers of party `n` (after it was created or changed).
    pub fn reindex_party(&mut self, n: NodeId) {
        if self.direct() {
            let c = Arc::make_mut(&mut self.base);
            return c.reindex_party(n);
        }
        self.unindex_party(n);
        let Some(p) = self.party(n) else { return };
        let keys = ident_keys_of(p);
        let d = self.delta();
        for (kind, v) in &keys {
            d.idents[*kind as usize].insert(v.clone(), Some(n));
        }
        d.ident_keys.insert(n, keys);
    }

    fn unindex_party(&mut self, n: NodeId) {
        let keys = self.ident_keys(n).to_vec();
        let stale: Vec<(IdentKind, String)> = keys
            .into_iter()
            .filter(|(kind, v)| self.ident(*kind, v) == Some(n))
            .collect();
        let d = self.delta();
        d.ident_keys.insert(n, Vec::new());
        for (kind, v) in stale {
            d.idents[kind as usize].insert(v, None);
        }
    }

    /// The party with this legacy identifier (uuids compare case-insensitively).
    pub fn party_by_ident(&self, kind: IdentKind, value: &str) -> Option<NodeId> {
        let v = value.trim();
        let v: std::borrow::Cow<'_, str> =
            if kind == IdentKind::Uuid && v.bytes().any(|b| b.is_ascii_uppercase()) {
                v.to_ascii_lowercase().into()
            } else {
                v.into()
            };
        let n = self.ident(kind, v.as_ref())?;
        // Checked on read: never answer with a party that no longer has the identifier.
        self.party(n).is_some_and(|p| kind.is(p, &v)).then_some(n)
    }

    fn order(&self) -> Option<&imbl::Vector<NodeId>> {
        if self.dirty {
            self.d.resource_order.as_ref()
        } else {
            None
        }
    }

    fn order_mut(&mut self) -> &mut imbl::Vector<NodeId> {
        let base: imbl::Vector<NodeId> = self.base.resource_order.iter().copied().collect();
        self.delta().resource_order.get_or_insert(base)
    }

    pub fn add_resource(&mut self, r: Resource) -> NodeId {
        if self.direct() {
            let c = Arc::make_mut(&mut self.base);
            return c.add_resource(r);
        }
        let id = r.id.clone();
        let d = self.delta();
        let n = NodeId(NodeIndex::new(d.next_node as usize));
        d.next_node += 1;
        d.nodes.insert(ix(n), Some(Arc::new(Node::Resource(r))));
        d.resources.insert(id, Some(n));
        d.resources_n += 1;
        self.order_mut().push_back(n);
        n
    }

    /// Removes a node with no edges (used only to undo its creation).
    pub fn remove_node(&mut self, n: NodeId) {
        if self.direct() {
            let c = Arc::make_mut(&mut self.base);
            return c.remove_node(n);
        }
        match self.node(n).cloned() {
            Some(Node::Party(p)) => {
                let d = self.delta();
                d.parties.insert(p.id, None);
                d.parties_n -= 1;
            }
            Some(Node::Resource(r)) => {
                let d = self.delta();
                d.resources.insert(r.id, None);
                d.resources_n -= 1;
                self.order_mut().retain(|x| *x != n);
            }
            None => return,
        }
        self.delta().nodes.insert(ix(n), None);
        self.unindex_party(n);
    }

    pub fn parties(&self) -> impl Iterator<Item = (NodeId, &Party)> {
        let bound = self.base.g.node_bound() as u32;
        let base = self
            .base
            .g
            .node_indices()
            .filter_map(|i| match self.node(NodeId(i)) {
                Some(Node::Party(p)) => Some((NodeId(i), p)),
                _ => None,
            });
        let new = self
            .dirty
            .then(|| {
                self.d
                    .nodes
                    .range(bound..)
                    .filter_map(|(i, w)| match w.as_deref() {
                        Some(Node::Party(p)) => Some((NodeId(NodeIndex::new(*i as usize)), p)),
                        _ => None,
                    })
            })
            .into_iter()
            .flatten();
        base.chain(new)
    }
    /// Every resource, in the order they were defined.
    pub fn resources(&self) -> impl Iterator<Item = (NodeId, &Resource)> {
        let over = self.order();
        let base = over
            .is_none()
            .then(|| self.base.resource_order.iter())
            .into_iter()
            .flatten();
        over.into_iter()
            .flatten()
            .chain(base)
            .filter_map(|n| Some((*n, self.resource(*n)?)))
    }

    /// An edge with its endpoints.
    fn edge_full(&self, e: EdgeId) -> Option<(NodeId, NodeId, &Edge)> {
        if self.dirty
            && let Some(v) = self.d.edges.get(&(e.0.index() as u32))
        {
            return v.as_deref().map(|(a, b, w)| (*a, *b, w));
        }
        let (a, b) = self.base.g.edge_endpoints(e.0)?;
        Some((NodeId(a), NodeId(b), self.base.g.edge_weight(e.0)?))
    }

    fn adj(&self, n: NodeId, dir: Direction) -> Option<&imbl::Vector<EdgeId>> {
        if !self.dirty {
            return None;
        }
        match dir {
            Direction::Outgoing => self.d.out_adj.get(&n),
            Direction::Incoming => self.d.in_adj.get(&n),
        }
    }

    /// Edges at `n` in direction `dir`: (edge, the other end, weight).
    ///
    /// The base walk is the hot path of every check, so it stays a small petgraph
    /// iterator; an overridden adjacency list is walked through a box, because an
    /// `imbl` vector iterator is hundreds of bytes and the adapters that resolution
    /// stacks on top of this one move it around (measured: 60 % of a check in `memmove`
    /// when both kinds were chained inline).
    fn edges_at(&self, n: NodeId, dir: Direction) -> EdgesAt<'_> {
        match self.adj(n, dir) {
            Some(over) => EdgesAt::Delta(Box::new(over.iter().filter_map(move |e| {
                let (a, b, w) = self.edge_full(*e)?;
                Some((*e, if dir == Direction::Outgoing { b } else { a }, w))
            }))),
            None => EdgesAt::Base(self.base.g.edges_directed(n.0, dir), dir),
        }
    }

    /// Edges ending at `n`: (edge, source, weight).
    pub fn incoming(&self, n: NodeId) -> impl Iterator<Item = (EdgeId, NodeId, &Edge)> + '_ {
        self.edges_at(n, Direction::Incoming)
    }
    /// Edges starting at `n`: (edge, target, weight).
    pub fn outgoing(&self, n: NodeId) -> impl Iterator<Item = (EdgeId, NodeId, &Edge)> + '_ {
        self.edges_at(n, Direction::Outgoing)
    }

    /// (incoming, outgoing) edge counts of `n`.
    fn degree(&self, n: NodeId) -> (u32, u32) {
        let base = self.base.degree.get(&n).copied().unwrap_or_default();
        let i = self
            .adj(n, Direction::Incoming)
            .map_or(base.0, |v| v.len() as u32);
        let o = self
            .adj(n, Direction::Outgoing)
            .map_or(base.1, |v| v.len() as u32);
        (i, o)
    }

    fn loops(&self, n: NodeId) -> u32 {
        if self.dirty
            && let Some(k) = self.d.loops.get(&n)
        {
            return *k;
        }
        self.base.loops.get(&n).copied().unwrap_or(0)
    }

    /// Edges `a → b`, walking whichever side has fewer edges.
    pub fn between(&self, a: NodeId, b: NodeId) -> Vec<(EdgeId, &Edge)> {
        self.between_iter(a, b).collect()
    }

    /// [`Graph::between`] without collecting.
    pub fn between_iter(&self, a: NodeId, b: NodeId) -> impl Iterator<Item = (EdgeId, &Edge)> + '_ {
        // Both adjacency lists of a hub are long, and edges from a node to itself are
        // rare (a client delegation whose agent is the client): counted, not searched.
        let none = a == b && self.loops(a) == 0;
        let out_a = self.degree(a).1;
        let in_b = self.degree(b).0;
        let walk_out = !none && out_a <= in_b;
        let walk_in = !none && !walk_out;
        let from_out = walk_out
            .then(|| {
                self.outgoing(a)
                    .filter(move |(_, t, _)| *t == b)
                    .map(|(e, _, w)| (e, w))
            })
            .into_iter()
            .flatten();
        let from_in = walk_in
            .then(|| {
                self.incoming(b)
                    .filter(move |(_, s, _)| *s == a)
                    .map(|(e, _, w)| (e, w))
            })
            .into_iter()
            .flatten();
        from_out.chain(from_in)
    }

    pub fn edge(&self, e: EdgeId) -> Option<&Edge> {
        self.edge_full(e).map(|(_, _, w)| w)
    }
    pub fn endpoints(&self, e: EdgeId) -> Option<(NodeId, NodeId)> {
        self.edge_full(e).map(|(a, b, _)| (a, b))
    }

    pub fn find_assignment(&self, from: NodeId, to: NodeId, role: RoleId) -> Option<EdgeId> {
        self.between_iter(from, to).find_map(|(e, w)| match w {
            Edge::Assignment(a) if a.role == role => Some(e),
            _ => None,
        })
    }
    pub fn assignment(&self, e: EdgeId) -> Option<&Assignment> {
        match self.edge(e) {
            Some(Edge::Assignment(a)) => Some(a),
            _ => None,
        }
    }
    pub fn find_delegation(
        &self,
        client: NodeId,
        agent: NodeId,
        facilitator: NodeId,
        role: RoleId,
    ) -> Option<EdgeId> {
        self.between_iter(client, agent).find_map(|(e, w)| match w {
            Edge::Delegation(d) if d.facilitator == facilitator && d.role == role => Some(e),
            _ => None,
        })
    }

    /// The main unit of a sub-unit.
    pub fn main_unit(&self, sub: NodeId) -> Option<NodeId> {
        if self.dirty
            && let Some(v) = self.d.main_of.get(&sub)
        {
            return *v;
        }
        self.base.main_of.get(&sub).copied()
    }
    fn subs(&self, main: NodeId) -> &[NodeId] {
        if self.dirty
            && let Some(v) = self.d.subs_of.get(&main)
        {
            return v;
        }
        self.base.subs_of.get(&main).map_or(&[], |v| v.as_slice())
    }
    /// The sub-units of a main unit.
    pub fn sub_units(&self, main: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.subs(main).iter().copied()
    }
    fn key_edges(&self, n: NodeId) -> &[EdgeId] {
        if self.dirty
            && let Some(v) = self.d.key_in.get(&n)
        {
            return v;
        }
        self.base.key_in.get(&n).map_or(&[], |v| v.as_slice())
    }
    /// Incoming assignments of `n` whose role is a key role: (edge, source, assignment).
    pub fn key_roles_held(&self, n: NodeId) -> impl Iterator<Item = (EdgeId, NodeId, &Assignment)> + '_ {
        self.key_edges(n).iter().filter_map(move |e| {
            let (s, _) = self.endpoints(*e)?;
            Some((*e, s, self.assignment(*e)?))
        })
    }

    pub fn key_of(&self, e: EdgeId) -> Option<EdgeKey> {
        let (a, b, w) = self.edge_full(e)?;
        Some(match w {
            Edge::Assignment(x) => EdgeKey::Assignment {
                from: a,
                to: b,
                role: x.role,
            },
            Edge::Delegation(d) => EdgeKey::Delegation {
                client: a,
                agent: b,
                facilitator: d.facilitator,
                role: d.role,
            },
            Edge::MainUnit(_) => EdgeKey::MainUnit { sub: a, main: b },
        })
    }

    pub fn find(&self, key: EdgeKey) -> Option<EdgeId> {
        match key {
            EdgeKey::Assignment { from, to, role } => self.find_assignment(from, to, role),
            EdgeKey::Delegation {
                client,
                agent,
                facilitator,
                role,
            } => self.find_delegation(client, agent, facilitator, role),
            EdgeKey::MainUnit { sub, main } => self
                .between_iter(sub, main)
                .find_map(|(e, w)| matches!(w, Edge::MainUnit(_)).then_some(e)),
        }
    }

    /// The delta's adjacency list of `n` (copied from the base on first change).
    fn adj_mut(&mut self, n: NodeId, dir: Direction) -> &mut imbl::Vector<EdgeId> {
        let init: Option<imbl::Vector<EdgeId>> = self.adj(n, dir).is_none().then(|| {
            self.base
                .g
                .edges_directed(n.0, dir)
                .map(|e| EdgeId(e.id()))
                .collect()
        });
        let d = self.delta();
        let map = match dir {
            Direction::Outgoing => &mut d.out_adj,
            Direction::Incoming => &mut d.in_adj,
        };
        map.entry(n).or_insert_with(|| init.unwrap_or_default())
    }

    pub fn add_edge(&mut self, from: NodeId, to: NodeId, w: Edge) -> EdgeId {
        if self.direct() {
            let c = Arc::make_mut(&mut self.base);
            return c.add_edge(from, to, w);
        }
        let is_key = is_key_edge(&w);
        let is_main = matches!(w, Edge::MainUnit(_));
        let loops = self.loops(from);
        let mut key_in = is_key.then(|| self.key_edges(to).to_vec());
        let mut subs = is_main.then(|| self.subs(to).to_vec());
        let d = self.delta();
        let e = EdgeId(EdgeIndex::new(d.next_edge as usize));
        d.next_edge += 1;
        d.edges.insert(e.0.index() as u32, Some(Arc::new((from, to, w))));
        d.edges_n += 1;
        if from == to {
            d.loops.insert(from, loops + 1);
        }
        if let Some(v) = key_in.as_mut() {
            v.push(e);
            d.key_in.insert(to, std::mem::take(v));
        }
        if let Some(v) = subs.as_mut() {
            v.push(from);
            d.main_of.insert(from, Some(to));
            d.subs_of.insert(to, std::mem::take(v));
        }
        // petgraph puts a new edge first in both lists; so does the delta.
        self.adj_mut(from, Direction::Outgoing).push_front(e);
        self.adj_mut(to, Direction::Incoming).push_front(e);
        e
    }

    pub fn remove_edge(&mut self, e: EdgeId) -> Option<Edge> {
        if self.direct() {
            let c = Arc::make_mut(&mut self.base);
            return c.remove_edge(e);
        }
        let (a, b, w) = self.edge_full(e)?;
        let w = w.clone();
        let loops = self.loops(a);
        let key_in: Vec<EdgeId> = self.key_edges(b).iter().copied().filter(|x| *x != e).collect();
        let key_changed = key_in.len() != self.key_edges(b).len();
        let subs = matches!(w, Edge::MainUnit(_)).then(|| {
            self.subs(b)
                .iter()
                .copied()
                .filter(|x| *x != a)
                .collect::<Vec<_>>()
        });
        for (n, dir) in [(a, Direction::Outgoing), (b, Direction::Incoming)] {
            let list = self.adj_mut(n, dir);
            if let Some(i) = list.index_of(&e) {
                list.remove(i);
            }
        }
        let d = self.delta();
        d.edges.insert(e.0.index() as u32, None);
        d.edges_n -= 1;
        if a == b {
            d.loops.insert(a, loops.saturating_sub(1));
        }
        if key_changed {
            d.key_in.insert(b, key_in);
        }
        if let Some(v) = subs {
            d.main_of.insert(a, None);
            d.subs_of.insert(b, v);
        }
        Some(w)
    }

    /// Sets the edge with `key` to `w` (None removes it); returns the previous value.
    pub fn set_edge(&mut self, key: EdgeKey, w: Option<Edge>) -> Option<Edge> {
        let old = self.find(key).and_then(|e| self.remove_edge(e));
        if let Some(w) = w {
            let (a, b) = endpoints_of(key);
            self.add_edge(a, b, w);
        }
        old
    }

    /// This graph with its delta folded into a new base (the same nodes and edges at the
    /// same indices, so every id stays valid); O(size of the graph), meant for a
    /// background thread. None if the delta does not fit its base (an engine bug:
    /// the caller keeps the uncompacted graph, which is still correct).
    pub fn compacted(&self) -> Option<Graph> {
        if !self.dirty {
            return Some(self.clone());
        }
        let d = &self.d;
        let mut c = (*self.base).clone();
        let base_bound = self.base.g.node_bound() as u32;
        let edge_bound = self.base.g.edge_bound() as u32;
        // New nodes and edges at their own indices: a slot the base left free is filled
        // with a stand-in first, removed again at the end.
        let mut fill_nodes = Vec::new();
        for (i, w) in d.nodes.range(base_bound..) {
            let Some(w) = w else { continue };
            loop {
                let got = c.g.add_node((**w).clone());
                let got_i = got.index() as u32;
                if got_i == *i {
                    break;
                }
                if got_i > *i {
                    return None;
                }
                fill_nodes.push(got);
            }
        }
        let mut gone_nodes = Vec::new();
        for (i, w) in d.nodes.range(..base_bound) {
            let n = NodeIndex::new(*i as usize);
            match w {
                Some(w) => *c.g.node_weight_mut(n)? = (**w).clone(),
                None => gone_nodes.push(n),
            }
        }
        let mut fill_edges = Vec::new();
        for (i, w) in d.edges.range(edge_bound..) {
            let Some(w) = w else { continue };
            let (a, b, w) = &**w;
            loop {
                let got = c.g.add_edge(a.0, b.0, w.clone());
                let got_i = got.index() as u32;
                if got_i == *i {
                    break;
                }
                if got_i > *i {
                    return None;
                }
                fill_edges.push(got);
            }
        }
        for (i, w) in d.edges.range(..edge_bound) {
            let e = EdgeIndex::new(*i as usize);
            match w {
                Some(w) => *c.g.edge_weight_mut(e)? = w.2.clone(),
                None => {
                    c.g.remove_edge(e);
                }
            }
        }
        for e in fill_edges {
            c.g.remove_edge(e);
        }
        for n in fill_nodes.into_iter().chain(gone_nodes) {
            c.g.remove_node(n);
        }
        // The indexes: every delta entry is an absolute value.
        fn put<K: std::hash::Hash + Eq + Clone, V: Clone, S: std::hash::BuildHasher>(
            m: &mut HashMap<K, V, S>,
            d: &Map<K, Option<V>>,
        ) {
            for (k, v) in d {
                match v {
                    Some(v) => m.insert(k.clone(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
        fn put_fx<K: std::hash::Hash + Eq + Clone, V: Clone>(
            m: &mut FxHashMap<K, V>,
            d: &Map<K, V>,
            empty: impl Fn(&V) -> bool,
        ) {
            for (k, v) in d {
                if empty(v) {
                    m.remove(k);
                } else {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        put(&mut c.parties, &d.parties);
        put(&mut c.resources, &d.resources);
        for (k, v) in &d.main_of {
            match v {
                Some(v) => c.main_of.insert(*k, *v),
                None => c.main_of.remove(k),
            };
        }
        for (m, dm) in c.idents.iter_mut().zip(&d.idents) {
            for (k, v) in dm {
                match v {
                    Some(v) => m.insert(k.clone(), *v),
                    None => m.remove(k),
                };
            }
        }
        put_fx(&mut c.loops, &d.loops, |v| *v == 0);
        put_fx(&mut c.subs_of, &d.subs_of, Vec::is_empty);
        put_fx(&mut c.key_in, &d.key_in, Vec::is_empty);
        put_fx(&mut c.ident_keys, &d.ident_keys, Vec::is_empty);
        for n in d.out_adj.keys().chain(d.in_adj.keys()) {
            let deg = self.degree(*n);
            c.degree.insert(*n, deg);
        }
        if let Some(o) = &d.resource_order {
            c.resource_order = o.iter().copied().collect();
        }
        Some(Graph {
            base: Arc::new(c),
            dirty: false,
            d: Delta::default(),
        })
    }

    /// This graph (a later state of `from`, which shares its base) over `onto`, the
    /// result of `from.compacted()`: keeps only what changed after `from`. None when this
    /// graph is not a later state of `from`.
    pub fn rebased(&self, from: &Graph, onto: &Graph) -> Option<Graph> {
        if !Arc::ptr_eq(&self.base, &from.base) || onto.dirty {
            return None;
        }
        if !self.dirty {
            return (!from.dirty).then(|| onto.clone());
        }
        fn newer<K: std::hash::Hash + Eq + Clone, V: Clone + PartialEq>(
            now: &Map<K, V>,
            then: &Map<K, V>,
        ) -> Map<K, V> {
            now.iter()
                .filter(|(k, v)| then.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
        fn newer_ord<V: Clone>(
            now: &imbl::OrdMap<u32, Option<Arc<V>>>,
            then: &imbl::OrdMap<u32, Option<Arc<V>>>,
        ) -> imbl::OrdMap<u32, Option<Arc<V>>> {
            now.iter()
                .filter(|(k, v)| match (then.get(*k), v) {
                    (Some(Some(a)), Some(b)) => !Arc::ptr_eq(a, b),
                    (Some(None), None) => false,
                    _ => true,
                })
                .map(|(k, v)| (*k, v.clone()))
                .collect()
        }
        let (n, t) = (&self.d, &from.d);
        let d = Delta {
            nodes: newer_ord(&n.nodes, &t.nodes),
            edges: newer_ord(&n.edges, &t.edges),
            out_adj: newer(&n.out_adj, &t.out_adj),
            in_adj: newer(&n.in_adj, &t.in_adj),
            parties: newer(&n.parties, &t.parties),
            resources: newer(&n.resources, &t.resources),
            loops: newer(&n.loops, &t.loops),
            main_of: newer(&n.main_of, &t.main_of),
            subs_of: newer(&n.subs_of, &t.subs_of),
            key_in: newer(&n.key_in, &t.key_in),
            resource_order: (n.resource_order != t.resource_order)
                .then(|| n.resource_order.clone())
                .flatten(),
            idents: [0, 1, 2, 3, 4].map(|k| newer(&n.idents[k], &t.idents[k])),
            ident_keys: newer(&n.ident_keys, &t.ident_keys),
            next_node: n.next_node.max(onto.base.g.node_bound() as u32),
            next_edge: n.next_edge.max(onto.base.g.edge_bound() as u32),
            parties_n: n.parties_n - t.parties_n,
            resources_n: n.resources_n - t.resources_n,
            edges_n: n.edges_n - t.edges_n,
        };
        Some(Graph {
            base: onto.base.clone(),
            dirty: true,
            d,
        })
    }
}

/// Parties made ready to be added in bulk ([`Graph::add_prepared`]): their id keys and
/// legacy identifiers are computed (and allocated) here, so that loaders can prepare
/// parties on many threads and leave only the inserts, themselves split over two
/// threads, to the graph.
#[derive(Debug, Default)]
pub struct PreparedParties {
    parties: Vec<Party>,
    keys: Vec<String>,
    /// Per party, the identifier keys indexed for it.
    idents: Vec<Vec<(IdentKind, String)>>,
    /// (position in this batch, kind, value): the keys of the identifier maps.
    values: Vec<(u32, IdentKind, String)>,
}

impl PreparedParties {
    pub fn with_capacity(n: usize) -> PreparedParties {
        PreparedParties {
            parties: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            idents: Vec::with_capacity(n),
            values: Vec::new(),
        }
    }
    pub fn push(&mut self, party: Party) {
        let at = self.parties.len() as u32;
        let idents = ident_keys_of(&party);
        self.values
            .extend(idents.iter().map(|(k, v)| (at, *k, v.clone())));
        self.idents.push(idents);
        self.keys.push(party.id.clone());
        self.parties.push(party);
    }
    pub fn len(&self) -> usize {
        self.parties.len()
    }
    pub fn is_empty(&self) -> bool {
        self.parties.is_empty()
    }
}

/// Building in bulk (loading a snapshot): room reserved up front, then parties and
/// edges added in batches without a delta.
impl Graph {
    /// Reserves room for this many more parties, resources and edges in the node and
    /// edge arrays and the id maps, so that loading a large world never regrows (and
    /// for a moment doubles) them. Does nothing to a graph that shares its base.
    pub fn reserve(&mut self, parties: usize, resources: usize, edges: usize) {
        if !self.direct() {
            return;
        }
        let c = Arc::make_mut(&mut self.base);
        c.g.reserve_exact_nodes(parties + resources);
        c.g.reserve_exact_edges(edges);
        c.parties.reserve(parties);
        c.resources.reserve(resources);
        c.degree.reserve(parties.min(edges.saturating_mul(2)));
    }

    /// Adds prepared parties, batch after batch, with room for all of them and their
    /// identifiers reserved first. The nodes and id map are built on one thread while
    /// the identifier maps are built on another (a fresh graph gives node indices in
    /// order, so both know every party's node). Each id must be new: on a duplicate the
    /// id is returned as the error, with the graph partly built (a loader drops it).
    /// Returns the node of every party, batch by batch in the order given (a loader
    /// resolves references by position with them instead of looking ids up).
    pub fn add_prepared(&mut self, batches: Vec<PreparedParties>) -> Result<Vec<Vec<NodeId>>, String> {
        let fresh = self.direct() && self.base.g.node_count() == self.base.g.node_bound();
        if !fresh {
            let mut placed = Vec::with_capacity(batches.len());
            for b in batches {
                let mut nodes = Vec::with_capacity(b.parties.len());
                for p in b.parties {
                    if self.party_node(&p.id).is_some() {
                        return Err(p.id);
                    }
                    nodes.push(self.add_party(p));
                }
                placed.push(nodes);
            }
            return Ok(placed);
        }
        let c = Arc::make_mut(&mut self.base);
        let mut kinds = [0usize; 5];
        let mut total = 0;
        for b in &batches {
            total += b.len();
            for (_, k, _) in &b.values {
                kinds[*k as usize] += 1;
            }
        }
        let with_idents: usize = batches
            .iter()
            .map(|b| b.idents.iter().filter(|v| !v.is_empty()).count())
            .sum();
        let first = c.g.node_bound();
        let mut nodes = Vec::with_capacity(batches.len());
        let mut maps = Vec::with_capacity(batches.len());
        let mut placed = Vec::with_capacity(batches.len());
        let mut at = first;
        for b in batches {
            let n = b.len();
            nodes.push((b.parties, b.keys));
            maps.push((at, b.idents, b.values));
            placed.push((at..at + n).map(|i| NodeId(NodeIndex::new(i))).collect());
            at += n;
        }
        let Core {
            g,
            parties,
            idents,
            ident_keys,
            ..
        } = c;
        g.reserve_nodes(total);
        parties.reserve(total);
        ident_keys.reserve(with_idents);
        for (m, k) in idents.iter_mut().zip(kinds) {
            m.reserve(k);
        }
        std::thread::scope(|s| {
            s.spawn(move || {
                for (at, keys, values) in maps {
                    for (i, (kind, v)) in values.into_iter().map(|(i, k, v)| (i, (k, v))) {
                        idents[kind as usize].insert(v, NodeId(NodeIndex::new(at + i as usize)));
                    }
                    for (i, k) in keys.into_iter().enumerate() {
                        if !k.is_empty() {
                            ident_keys.insert(NodeId(NodeIndex::new(at + i)), k);
                        }
                    }
                }
            });
            for (ps, keys) in nodes {
                for (p, key) in ps.into_iter().zip(keys) {
                    match parties.entry(key) {
                        std::collections::hash_map::Entry::Occupied(e) => return Err(e.key().clone()),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(NodeId(g.add_node(Node::Party(p))));
                        }
                    }
                }
            }
            Ok(placed)
        })
    }

    /// Adds batches of edges whose endpoints exist (the caller has checked that none
    /// of them duplicates another: this adds, it does not replace). On a fresh graph the
    /// petgraph edges are added on one thread while the indexes (degrees, key roles,
    /// main units) are built on another.
    pub fn add_edges(&mut self, batches: Vec<Vec<(NodeId, NodeId, Edge)>>) {
        let fresh = self.direct() && self.base.g.edge_count() == self.base.g.edge_bound();
        if !fresh {
            for (a, b, w) in batches.into_iter().flatten() {
                self.add_edge(a, b, w);
            }
            return;
        }
        let c = Arc::make_mut(&mut self.base);
        // (from, to, is_key, is_main) of every edge, in the order they are added.
        let meta: Vec<Vec<(NodeId, NodeId, bool, bool)>> = batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|(a, t, w)| (*a, *t, is_key_edge(w), matches!(w, Edge::MainUnit(_))))
                    .collect()
            })
            .collect();
        let first = c.g.edge_bound();
        let Core {
            g,
            degree,
            loops,
            main_of,
            subs_of,
            key_in,
            ..
        } = c;
        std::thread::scope(|s| {
            s.spawn(move || {
                for (e, (from, to, is_key, is_main)) in (first..).zip(meta.into_iter().flatten()) {
                    degree.entry(from).or_default().1 += 1;
                    degree.entry(to).or_default().0 += 1;
                    if from == to {
                        *loops.entry(from).or_default() += 1;
                    }
                    if is_key {
                        key_in.entry(to).or_default().push(EdgeId(EdgeIndex::new(e)));
                    }
                    if is_main {
                        main_of.insert(from, to);
                        subs_of.entry(to).or_default().push(from);
                    }
                }
            });
            g.reserve_edges(batches.iter().map(Vec::len).sum());
            for b in batches {
                for (a, t, w) in b {
                    g.add_edge(a.0, t.0, w);
                }
            }
        });
    }
}

/// The partition a party id belongs to among `n`: FNV-1a of the id, stable across
/// runs, builds and platforms (unlike the std hasher), so the write queues of the store
/// and the sections of a snapshot agree on it.
pub fn partition_of(party: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in party.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if n == 0 { 0 } else { (h % n as u64) as usize }
}

/// The edges at one node: straight from the base, or from the delta's override of its
/// adjacency list (see [`Graph::edges_at`]).
enum EdgesAt<'g> {
    Base(
        petgraph::stable_graph::Edges<'g, Edge, petgraph::Directed, u32>,
        Direction,
    ),
    Delta(Box<dyn Iterator<Item = (EdgeId, NodeId, &'g Edge)> + 'g>),
}

impl<'g> Iterator for EdgesAt<'g> {
    type Item = (EdgeId, NodeId, &'g Edge);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            EdgesAt::Base(it, dir) => it.next().map(|e| {
                let other = if *dir == Direction::Outgoing {
                    e.target()
                } else {
                    e.source()
                };
                (EdgeId(e.id()), NodeId(other), e.weight())
            }),
            EdgesAt::Delta(it) => it.next(),
        }
    }
}
