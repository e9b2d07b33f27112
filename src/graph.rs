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

use rustc_hash::FxHashMap;

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;

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

/// The graph of parties, resources and grants behind the engine's own facade.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    g: StableGraph<Node, Edge, petgraph::Directed, u32>,
    parties: HashMap<String, NodeId>,
    resources: HashMap<String, NodeId>,
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

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn party_count(&self) -> usize {
        self.parties.len()
    }
    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }
    pub fn edge_count(&self) -> usize {
        self.g.edge_count()
    }

    pub fn party_node(&self, id: &str) -> Option<NodeId> {
        self.parties.get(id).copied()
    }
    pub fn resource_node(&self, id: &str) -> Option<NodeId> {
        self.resources.get(id).copied()
    }

    pub fn party(&self, n: NodeId) -> Option<&Party> {
        match self.g.node_weight(n.0) {
            Some(Node::Party(p)) => Some(p),
            _ => None,
        }
    }
    pub fn party_mut(&mut self, n: NodeId) -> Option<&mut Party> {
        match self.g.node_weight_mut(n.0) {
            Some(Node::Party(p)) => Some(p),
            _ => None,
        }
    }
    pub fn resource(&self, n: NodeId) -> Option<&Resource> {
        match self.g.node_weight(n.0) {
            Some(Node::Resource(r)) => Some(r),
            _ => None,
        }
    }
    pub fn resource_mut(&mut self, n: NodeId) -> Option<&mut Resource> {
        match self.g.node_weight_mut(n.0) {
            Some(Node::Resource(r)) => Some(r),
            _ => None,
        }
    }

    /// The external id of a party or resource node ("?" for a node that is gone).
    pub fn ext_id(&self, n: NodeId) -> &str {
        match self.g.node_weight(n.0) {
            Some(Node::Party(p)) => &p.id,
            Some(Node::Resource(r)) => &r.id,
            None => "?",
        }
    }

    pub fn add_party(&mut self, p: Party) -> NodeId {
        let id = p.id.clone();
        let n = NodeId(self.g.add_node(Node::Party(p)));
        self.parties.insert(id, n);
        self.reindex_party(n);
        n
    }

    /// Records the legacy identifiers of party `n` (after it was created or changed).
    pub fn reindex_party(&mut self, n: NodeId) {
        self.unindex_party(n);
        let Some(p) = self.party(n) else { return };
        let keys: Vec<(IdentKind, String)> = IdentKind::ALL
            .iter()
            .filter_map(|k| Some((*k, k.of(p)?)))
            .collect();
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

    /// The party with this legacy identifier (uuids compare case-insensitively).
    pub fn party_by_ident(&self, kind: IdentKind, value: &str) -> Option<NodeId> {
        let v = value.trim();
        let v: std::borrow::Cow<'_, str> =
            if kind == IdentKind::Uuid && v.bytes().any(|b| b.is_ascii_uppercase()) {
                v.to_ascii_lowercase().into()
            } else {
                v.into()
            };
        let n = *self.idents[kind as usize].get(v.as_ref())?;
        // Checked on read: never answer with a party that no longer has the identifier.
        self.party(n).is_some_and(|p| kind.is(p, &v)).then_some(n)
    }
    pub fn add_resource(&mut self, r: Resource) -> NodeId {
        let id = r.id.clone();
        let n = NodeId(self.g.add_node(Node::Resource(r)));
        self.resources.insert(id, n);
        self.resource_order.push(n);
        n
    }
    /// Removes a node with no edges (used only to undo its creation).
    pub fn remove_node(&mut self, n: NodeId) {
        let id = self.ext_id(n).to_string();
        match self.g.remove_node(n.0) {
            Some(Node::Party(_)) => {
                self.parties.remove(&id);
            }
            Some(Node::Resource(_)) => {
                self.resources.remove(&id);
                self.resource_order.retain(|x| *x != n);
            }
            None => {}
        }
        self.degree.remove(&n);
        self.unindex_party(n);
    }

    pub fn parties(&self) -> impl Iterator<Item = (NodeId, &Party)> {
        self.g.node_indices().filter_map(|i| match self.g.node_weight(i) {
            Some(Node::Party(p)) => Some((NodeId(i), p)),
            _ => None,
        })
    }
    /// Every resource, in the order they were defined.
    pub fn resources(&self) -> impl Iterator<Item = (NodeId, &Resource)> {
        self.resource_order
            .iter()
            .filter_map(|n| Some((*n, self.resource(*n)?)))
    }

    /// Edges ending at `n`: (edge, source, weight).
    pub fn incoming(&self, n: NodeId) -> impl Iterator<Item = (EdgeId, NodeId, &Edge)> {
        self.g
            .edges_directed(n.0, Direction::Incoming)
            .map(|e| (EdgeId(e.id()), NodeId(e.source()), e.weight()))
    }
    /// Edges starting at `n`: (edge, target, weight).
    pub fn outgoing(&self, n: NodeId) -> impl Iterator<Item = (EdgeId, NodeId, &Edge)> {
        self.g
            .edges_directed(n.0, Direction::Outgoing)
            .map(|e| (EdgeId(e.id()), NodeId(e.target()), e.weight()))
    }

    /// Edges `a → b`, walking whichever side has fewer edges.
    pub fn between(&self, a: NodeId, b: NodeId) -> Vec<(EdgeId, &Edge)> {
        self.between_iter(a, b).collect()
    }

    /// [`Graph::between`] without collecting.
    pub fn between_iter(&self, a: NodeId, b: NodeId) -> impl Iterator<Item = (EdgeId, &Edge)> + '_ {
        // Both adjacency lists of a hub are long, and edges from a node to itself are
        // rare (a client delegation whose agent is the client): counted, not searched.
        let none = a == b && !self.loops.contains_key(&a);
        let out_a = self.degree.get(&a).map_or(0, |d| d.1);
        let in_b = self.degree.get(&b).map_or(0, |d| d.0);
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
        self.g.edge_weight(e.0)
    }
    pub fn endpoints(&self, e: EdgeId) -> Option<(NodeId, NodeId)> {
        self.g.edge_endpoints(e.0).map(|(a, b)| (NodeId(a), NodeId(b)))
    }

    pub fn find_assignment(&self, from: NodeId, to: NodeId, role: RoleId) -> Option<EdgeId> {
        self.between(from, to).into_iter().find_map(|(e, w)| match w {
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
        self.between(client, agent)
            .into_iter()
            .find_map(|(e, w)| match w {
                Edge::Delegation(d) if d.facilitator == facilitator && d.role == role => Some(e),
                _ => None,
            })
    }

    /// The main unit of a sub-unit.
    pub fn main_unit(&self, sub: NodeId) -> Option<NodeId> {
        self.main_of.get(&sub).copied()
    }
    /// The sub-units of a main unit.
    pub fn sub_units(&self, main: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.subs_of.get(&main).into_iter().flatten().copied()
    }
    /// Incoming assignments of `n` whose role is a key role: (edge, source, assignment).
    pub fn key_roles_held(&self, n: NodeId) -> impl Iterator<Item = (EdgeId, NodeId, &Assignment)> + '_ {
        self.key_in.get(&n).into_iter().flatten().filter_map(move |e| {
            let (s, _) = self.endpoints(*e)?;
            Some((*e, s, self.assignment(*e)?))
        })
    }

    pub fn key_of(&self, e: EdgeId) -> Option<EdgeKey> {
        let (a, b) = self.endpoints(e)?;
        Some(match self.edge(e)? {
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
                .between(sub, main)
                .into_iter()
                .find_map(|(e, w)| matches!(w, Edge::MainUnit(_)).then_some(e)),
        }
    }

    pub fn add_edge(&mut self, from: NodeId, to: NodeId, w: Edge) -> EdgeId {
        self.degree.entry(from).or_default().1 += 1;
        self.degree.entry(to).or_default().0 += 1;
        if from == to {
            *self.loops.entry(from).or_default() += 1;
        }
        let is_key = matches!(&w, Edge::Assignment(a) if Catalog::builtin().is_key_role(a.role));
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

    pub fn remove_edge(&mut self, e: EdgeId) -> Option<Edge> {
        let (a, b) = self.endpoints(e)?;
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
        if matches!(self.edge(e), Some(Edge::MainUnit(_))) {
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

    /// Sets the edge with `key` to `w` (None removes it); returns the previous value.
    pub fn set_edge(&mut self, key: EdgeKey, w: Option<Edge>) -> Option<Edge> {
        let old = self.find(key).and_then(|e| self.remove_edge(e));
        if let Some(w) = w {
            let (a, b) = match key {
                EdgeKey::Assignment { from, to, .. } => (from, to),
                EdgeKey::Delegation { client, agent, .. } => (client, agent),
                EdgeKey::MainUnit { sub, main } => (sub, main),
            };
            self.add_edge(a, b, w);
        }
        old
    }
}
