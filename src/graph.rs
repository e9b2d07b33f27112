//! The graph facade: the only module that names petgraph.
//!
//! Parties and resources are nodes; assignments, client delegations and main-unit links
//! are edges. External ids (the strings a scenario file, an import or an API caller
//! chooses) are mapped to nodes here and nowhere else.
//!
//! # Partitions
//!
//! A graph is split into P parts ([`Graph::with_partitions`]; [`Graph::new`] is one
//! part). Each part is a frozen petgraph `StableGraph` *base* with its indexes (behind an
//! `Arc`) plus a persistent *delta* of later changes (`imbl` maps), and the parts sit
//! behind a copy-on-write array: cloning a graph is O(1), and a write copies only the
//! parts it touches. [`PartState::compacted`] folds one part's delta into a new base
//! keeping every index; [`Graph::rebase_part`] moves later changes onto it. Rules that
//! place things in parts (fixed, independent of history, so every copy agrees):
//!
//! * **Nodes.** A party or a resource lives in part [`partition_of`] its external id
//!   (the FNV rule of the graph's parts and snapshot sections); its id map entry, its
//!   legacy identifier list, its degree and the indexes keyed by it (main unit of a
//!   sub-unit, sub-units of a main unit, key-role edges into it) live there too.
//! * **Edges** live with their source (the `from` of an assignment, the client of a
//!   delegation, the sub-unit of a main-unit link). An edge whose target is in the same
//!   part is a petgraph edge of that part's base. An edge whose target is elsewhere is a
//!   *remote edge*: kept by the source's part in a side table (its own index space, see
//!   [`EdgeId`]) with an outgoing index at the source, while the target's part keeps the
//!   list of remote edges coming in. A petgraph proxy node for the far end was the other
//!   way; it costs a whole node slot (the weight is the party, some 300 bytes) per far
//!   node and part, about 1 GB on a Norway world in two parts, where a remote edge costs
//!   what an edge costs.
//! * **Legacy identifiers** (uuid, party id, user id, organisation and national number)
//!   live in the part [`partition_of`] the identifier's value, so a lookup probes one map.
//! * **Resource order** (definition order, for listings) is one persistent vector beside
//!   the parts; counts are summed over the parts.
//!
//! With one part there is no remote edge, and every read is the single-base read it
//! always was (one extra pointer to follow).
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

/// A node of the graph (a party or a resource): its part and its index in that part,
/// stable across compactions. Opaque outside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    part: u32,
    ix: u32,
}

/// An edge of the graph: the part of its source and its index there (a petgraph edge
/// index, or with [`REMOTE`] set an index in the part's table of remote edges), stable
/// across compactions. Opaque outside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeId {
    part: u32,
    ix: u32,
}

/// The bit of an [`EdgeId`] index that marks a remote edge (target in another part).
const REMOTE: u32 = 1 << 31;

/// The most parts a graph may have.
pub const MAX_PARTS: usize = 4096;

impl NodeId {
    fn local(self) -> NodeIndex<u32> {
        NodeIndex::new(self.ix as usize)
    }
    /// The index of the part this node lives in.
    pub fn part(self) -> usize {
        self.part as usize
    }
    /// Its slot in its part: below [`Graph::part_slots`], for tables kept beside a graph
    /// that does not change meanwhile (a snapshot writer's party places). Not an
    /// identity across versions: use the node itself for that.
    pub fn slot(self) -> usize {
        self.ix as usize
    }

    /// The node at `index` of part `part`: for a bulk loader that knows where each node
    /// is placed before it is added ([`PartBuilder::next_node`]).
    pub fn placed(part: usize, index: usize) -> NodeId {
        NodeId {
            part: part as u32,
            ix: index as u32,
        }
    }
}

impl EdgeId {
    fn is_remote(self) -> bool {
        self.ix & REMOTE != 0
    }
    fn local(self) -> EdgeIndex<u32> {
        EdgeIndex::new(self.ix as usize)
    }
    fn slot(self) -> usize {
        (self.ix & !REMOTE) as usize
    }
}

/// A set of actions on a resource (`read`, `write`, `sign`, ...).
pub type Actions = BTreeSet<String>;

/// A party node. Kept small (see `party_node_is_small`): a medium world holds ≈ 128 000
/// of them in one array, and a load's time is mostly fresh memory. Strings are boxed
/// (no capacity), and the fields only system users or a few parties have live in one
/// optional box, [`PartyExtra`], behind accessors.
#[derive(Debug, Clone, PartialEq)]
pub struct Party {
    pub id: Box<str>,
    pub kind: PartyKind,
    pub alive: bool,
    pub name: Option<Box<str>>,
    /// ER unit type (organisasjonsform) of an organisation: AS, ENK, BEDR, ...
    pub unit_type: Option<Box<str>>,
    pub org_no: Option<Box<str>>,
    pub ssn: Option<Box<str>>,
    pub party_id: Option<i64>,
    pub user_id: Option<i64>,
    /// The rare fields; None when all of them are unset (never a box of nothing, so
    /// equal parties compare equal).
    extra: Option<Box<PartyExtra>>,
}

/// The rare fields of a [`Party`]: a system user's, and the uuid.
#[derive(Debug, Clone, PartialEq, Default)]
struct PartyExtra {
    system_user_kind: Option<SystemUserKind>,
    /// The owner organisation of a system user (external id).
    owner: Option<String>,
    /// The vendor system a system user belongs to.
    system: Option<String>,
    uuid: Option<String>,
}

impl Party {
    pub fn new(id: &str, kind: PartyKind) -> Party {
        Party {
            id: id.into(),
            kind,
            alive: true,
            name: None,
            unit_type: None,
            org_no: None,
            ssn: None,
            party_id: None,
            user_id: None,
            extra: None,
        }
    }
    pub fn system_user_kind(&self) -> Option<SystemUserKind> {
        self.extra.as_ref().and_then(|x| x.system_user_kind)
    }
    /// The owner organisation of a system user (external id).
    pub fn owner(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|x| x.owner.as_deref())
    }
    /// The vendor system a system user belongs to.
    pub fn system(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|x| x.system.as_deref())
    }
    pub fn uuid(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|x| x.uuid.as_deref())
    }
    pub fn set_system_user_kind(&mut self, v: Option<SystemUserKind>) {
        self.with_extra(v.is_some(), |x| x.system_user_kind = v);
    }
    pub fn set_owner(&mut self, v: Option<String>) {
        self.with_extra(v.is_some(), |x| x.owner = v);
    }
    pub fn set_system(&mut self, v: Option<String>) {
        self.with_extra(v.is_some(), |x| x.system = v);
    }
    pub fn set_uuid(&mut self, v: Option<String>) {
        self.with_extra(v.is_some(), |x| x.uuid = v);
    }
    /// Changes the rare fields (`set`: whether the change sets one), keeping `extra`
    /// None when they are all unset.
    fn with_extra(&mut self, set: bool, f: impl FnOnce(&mut PartyExtra)) {
        if !set && self.extra.is_none() {
            return;
        }
        let mut x = self.extra.take().unwrap_or_default();
        f(&mut x);
        if *x != PartyExtra::default() {
            self.extra = Some(x);
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
/// time (rustc-hash's fixed seed would). Keys are [`IdKey`]s: a lookup compares the
/// probed key without following a pointer.
type IdMap = HashMap<IdKey, NodeId, foldhash::fast::RandomState>;

/// An external id as the id maps keep it: up to [`IdKey::INLINE`] bytes inline (the
/// ids of generated and most real worlds), longer ones on the heap. A `String` key
/// costs a lookup a third cache miss on a large world (table group, bucket, then the
/// string's bytes); an inline key is compared where the bucket is. Hashes and compares
/// as the `str` it holds, so the maps are asked with a `&str`.
#[derive(Clone)]
enum IdKey {
    Inline(u8, [u8; IdKey::INLINE]),
    Heap(Box<str>),
}

impl IdKey {
    /// The most bytes kept inline (the key is then as large as a `String`).
    const INLINE: usize = 22;

    fn as_str(&self) -> &str {
        match self {
            IdKey::Inline(len, b) => {
                let b = b.get(..usize::from(*len)).unwrap_or(&[]);
                // SAFETY: an inline key is made only from a whole `str` (`From<&str>`,
                // `From<String>`) of `len` bytes copied in: valid UTF-8. (Checking it
                // again cost a load a tenth of its id-map time.)
                unsafe { std::str::from_utf8_unchecked(b) }
            }
            IdKey::Heap(s) => s,
        }
    }

    /// `v` in decimal, as `v.to_string()` writes it (at most 20 bytes: inline).
    fn int(v: i64) -> IdKey {
        let mut b = [0u8; IdKey::INLINE];
        let mut u = v.unsigned_abs();
        let len = u.checked_ilog10().map_or(1, |d| d as usize + 1) + usize::from(v < 0);
        if v < 0 {
            b[0] = b'-';
        }
        // Two digits at a time from the end.
        let mut i = len;
        while u >= 10 {
            let d = (u % 100) as usize;
            u /= 100;
            if let Some(two) = b.get_mut(i.saturating_sub(2)..i) {
                two.copy_from_slice(&DIGITS[2 * d..2 * d + 2]);
            }
            i = i.saturating_sub(2);
        }
        if (u > 0 || v == 0)
            && let Some(x) = b.get_mut(i.wrapping_sub(1))
        {
            *x = b'0' + u as u8;
        }
        IdKey::Inline(len as u8, b)
    }

    /// Where the key keeps its bytes apart from itself (a long key's heap).
    fn heap_bytes(&self) -> Option<*const u8> {
        match self {
            IdKey::Inline(..) => None,
            IdKey::Heap(s) => Some(s.as_ptr()),
        }
    }
}

/// "00" to "99", for [`IdKey::int`].
const DIGITS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

impl From<String> for IdKey {
    fn from(s: String) -> IdKey {
        if s.len() <= IdKey::INLINE {
            let mut b = [0u8; IdKey::INLINE];
            b[..s.len()].copy_from_slice(s.as_bytes());
            IdKey::Inline(s.len() as u8, b)
        } else {
            IdKey::Heap(s.into_boxed_str())
        }
    }
}

impl From<&str> for IdKey {
    fn from(s: &str) -> IdKey {
        if s.len() <= IdKey::INLINE {
            let mut b = [0u8; IdKey::INLINE];
            b[..s.len()].copy_from_slice(s.as_bytes());
            IdKey::Inline(s.len() as u8, b)
        } else {
            IdKey::Heap(s.into())
        }
    }
}

impl std::borrow::Borrow<str> for IdKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::hash::Hash for IdKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl PartialEq for IdKey {
    fn eq(&self, other: &IdKey) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for IdKey {}

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// An edge with its endpoints, as the delta and the remote-edge table keep it.
type FullEdge = (NodeId, NodeId, Edge);

/// One frozen layer of one part: a petgraph structure of the part's nodes and the edges
/// between them, its remote edges, and its indexes. Mutated in place only while nothing
/// else shares it (loading, the reference engine, a compaction building the next base);
/// otherwise changes go to the part's delta.
#[derive(Debug, Clone, Default)]
struct Core {
    /// Which part this is.
    part: u32,
    g: StableGraph<Node, Edge, petgraph::Directed, u32>,
    /// Edges from a node of this part to a node of another, by [`EdgeId::slot`] (a slot
    /// is never reused: a removed one stays `None`).
    remote: Vec<Option<FullEdge>>,
    /// How many of `remote` are edges (not `None`).
    remote_n: usize,
    /// Remote edges out of each node of this part, and into each node of this part from
    /// other parts.
    remote_out: FxHashMap<NodeId, Vec<EdgeId>>,
    remote_in: FxHashMap<NodeId, Vec<EdgeId>>,
    parties: IdMap,
    resources: IdMap,
    /// Edge counts (in, out) per node, remote edges included, to walk the smaller side
    /// when looking for an edge between two nodes (a hub such as an accounting firm may
    /// have tens of thousands).
    degree: Degrees,
    /// Edges from a node to itself (a client delegation whose agent is the client).
    loops: FxHashMap<NodeId, u32>,
    /// Sub-unit → main unit (keyed by the sub-unit, here), and main unit → sub-units
    /// (keyed by the main unit, here): mirrors of the MainUnit edges.
    main_of: FxHashMap<NodeId, NodeId>,
    subs_of: FxHashMap<NodeId, Vec<NodeId>>,
    /// Incoming assignments with a key role, per receiving node: the key-role path
    /// starts from these, and a firm with 20 000 client edges has only a few of them.
    key_in: FxHashMap<NodeId, Vec<EdgeId>>,
    /// Legacy identifiers (uuid, party id, user id, org number, national id) → party,
    /// for decision requests, for the values that hash to this part. A party's old
    /// identifiers are dropped when it changes; entries are also checked on read. Events
    /// never let two parties share one (`Graph::ident_clash`).
    /// Per identifier kind (`IdentKind as usize`), the party holding each value. Keys
    /// are [`IdKey`]s: a national id, organisation number, party or user id is kept
    /// inline, so a load makes no string per identifier.
    idents: [FxHashMap<IdKey, NodeId>; 5],
    /// The identifier keys indexed for a party of this part whose node weight was
    /// changed in place after they were indexed (a direct write: see
    /// [`Graph::party_mut`]), to drop them at its reindex. Every other party's keys are
    /// those of its weight ([`ident_keys_of`]), so a loaded world stores none.
    ident_keys: FxHashMap<NodeId, Vec<(IdentKind, String)>>,
}

/// Edge counts (in, out) per node of a part, by node index: a dense array (a load adds
/// millions of nodes in index order; a hash map cost a hash insert per edge end).
#[derive(Debug, Clone, Default)]
struct Degrees(Vec<(u32, u32)>);

impl Degrees {
    fn get(&self, n: NodeId) -> (u32, u32) {
        self.0.get(n.ix as usize).copied().unwrap_or_default()
    }
    /// The counts of `n`, to change (the array grows to hold it).
    fn at(&mut self, n: NodeId) -> &mut (u32, u32) {
        let i = n.ix as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, (0, 0));
        }
        // In range: resized above.
        &mut self.0[i]
    }
    fn reserve(&mut self, n: usize) {
        self.0.reserve_exact(n);
    }
}

/// The kinds of legacy identifier a decision request may name a party by.
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
    /// The value of this identifier of `p` as a lookup keys it (a uuid in lower case).
    fn of(self, p: &Party) -> Option<String> {
        self.key(p).map(|k| k.as_str().to_owned())
    }

    /// [`IdentKind::of`] as the identifier maps keep it: numbers and short values are
    /// made in place, without a string on the heap.
    fn key(self, p: &Party) -> Option<IdKey> {
        match self {
            IdentKind::Uuid => p.uuid().map(|s| IdKey::from(s.to_ascii_lowercase())),
            IdentKind::PartyId => p.party_id.map(IdKey::int),
            IdentKind::UserId => p.user_id.map(IdKey::int),
            IdentKind::OrgNo => p.org_no.as_deref().map(IdKey::from),
            IdentKind::Ssn => p.ssn.as_deref().map(IdKey::from),
        }
    }
    /// Whether party `p` has identifier `v` (in its canonical form) of this kind.
    fn is(self, p: &Party, v: &str) -> bool {
        match self {
            IdentKind::Uuid => p.uuid().is_some_and(|u| u.eq_ignore_ascii_case(v)),
            IdentKind::PartyId => p.party_id.is_some_and(|x| v.parse::<i64>() == Ok(x)),
            IdentKind::UserId => p.user_id.is_some_and(|x| v.parse::<i64>() == Ok(x)),
            IdentKind::OrgNo => p.org_no.as_deref() == Some(v),
            IdentKind::Ssn => p.ssn.as_deref() == Some(v),
        }
    }
    /// The party field that holds identifiers of this kind, as events name it.
    pub fn field(self) -> &'static str {
        match self {
            IdentKind::Uuid => "uuid",
            IdentKind::PartyId => "party_id",
            IdentKind::UserId => "user_id",
            IdentKind::OrgNo => "org_no",
            IdentKind::Ssn => "ssn",
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
    fn new(part: u32) -> Core {
        Core {
            part,
            ..Core::default()
        }
    }

    fn id(&self, i: NodeIndex<u32>) -> NodeId {
        NodeId {
            part: self.part,
            ix: i.index() as u32,
        }
    }

    fn edge_id(&self, e: EdgeIndex<u32>) -> EdgeId {
        EdgeId {
            part: self.part,
            ix: e.index() as u32,
        }
    }

    fn add_node(&mut self, n: Node) -> NodeId {
        let i = self.g.add_node(n);
        self.id(i)
    }

    /// Removes a node (with no edges) and its id map entry.
    fn remove_node(&mut self, n: NodeId) {
        match self.g.remove_node(n.local()) {
            Some(Node::Party(p)) => {
                self.parties.remove(&*p.id);
            }
            Some(Node::Resource(r)) => {
                self.resources.remove(r.id.as_str());
            }
            None => {}
        }
        *self.degree.at(n) = (0, 0);
    }

    /// A base edge with its endpoints.
    fn edge_full(&self, e: EdgeId) -> Option<(NodeId, NodeId, &Edge)> {
        if e.is_remote() {
            let (a, b, w) = self.remote.get(e.slot())?.as_ref()?;
            return Some((*a, *b, w));
        }
        let (a, b) = self.g.edge_endpoints(e.local())?;
        Some((self.id(a), self.id(b), self.g.edge_weight(e.local())?))
    }

    /// The base's adjacency list of `n` in direction `dir` (as a delta override starts).
    fn adj_list(&self, n: NodeId, dir: Direction) -> imbl::Vector<EdgeId> {
        let mut v: imbl::Vector<EdgeId> = self
            .g
            .edges_directed(n.local(), dir)
            .map(|e| self.edge_id(e.id()))
            .collect();
        let remote = match dir {
            Direction::Outgoing => &self.remote_out,
            Direction::Incoming => &self.remote_in,
        };
        if let Some(r) = remote.get(&n) {
            v.extend(r.iter().copied());
        }
        v
    }
}

fn drop_from<K: std::hash::Hash + Eq, V: PartialEq>(m: &mut FxHashMap<K, Vec<V>>, k: &K, x: &V) {
    if let Some(v) = m.get_mut(k) {
        v.retain(|y| y != x);
        if v.is_empty() {
            m.remove(k);
        }
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

/// The changes to one part since its base, as persistent maps: cloning is O(1) and a
/// change copies only the path to it. Every entry is an absolute value that overrides
/// the base's (an empty list or 0 where the base's index has no entry; `None` for a
/// removed node, edge or key).
///
/// INVARIANT: the adjacency lists of both endpoints of every edge added, removed or
/// given a new weight in the delta are overridden (`out_adj` in the source's part,
/// `in_adj` in the target's part), so a node without an override has exactly its base
/// edges (petgraph's and remote ones) and the walk of its petgraph edges may read their
/// weights from the base (remote edges are always read through `edges`). New nodes, edges and remote edges get
/// indices from `next_node`/`next_edge`/`next_remote`, which start at the base's bounds
/// and never go back, so an index names one node or edge for the life of the delta, and
/// [`PartState::compacted`] places each at the same index in the next base.
///
/// INVARIANT: every key of `edges` that names a base edge (below the base's bounds) has
/// its bit in `base_edges` ([`BaseEdgeFilter`]), so a base edge whose bit is clear was
/// never changed and is read from the base without a lookup in `edges`.
#[derive(Debug, Clone, Default)]
struct Delta {
    nodes: imbl::OrdMap<u32, Option<Arc<Node>>>,
    /// Edges of this part (local and remote, by [`EdgeId`] index).
    edges: imbl::OrdMap<u32, Option<Arc<FullEdge>>>,
    base_edges: BaseEdgeFilter,
    /// The base's edge bounds (local, remote) when this delta began: indices below them
    /// name base edges.
    base_edge_bound: u32,
    base_remote_bound: u32,
    out_adj: Map<NodeId, imbl::Vector<EdgeId>>,
    in_adj: Map<NodeId, imbl::Vector<EdgeId>>,
    parties: Map<String, Option<NodeId>>,
    resources: Map<String, Option<NodeId>>,
    loops: Map<NodeId, u32>,
    main_of: Map<NodeId, Option<NodeId>>,
    subs_of: Map<NodeId, Vec<NodeId>>,
    key_in: Map<NodeId, Vec<EdgeId>>,
    idents: [Map<String, Option<NodeId>>; 5],
    ident_keys: Map<NodeId, Vec<(IdentKind, String)>>,
    next_node: u32,
    next_edge: u32,
    next_remote: u32,
    parties_n: i64,
    resources_n: i64,
    edges_n: i64,
}

/// Which base edges a delta may have changed: one bit per base edge index modulo
/// [`BaseEdgeFilter::BITS`], set when the delta's `edges` takes an entry for that index
/// (never cleared while the delta lives). A clear bit says for sure that the edge is the
/// base's; a set one (or a collision) sends the read to the delta's map, as before.
///
/// Why: once anything is written to a part, every read of an edge by id there — each
/// edge of an overridden adjacency list, each key-role edge, each assignment looked
/// up — was a tree lookup in `edges` first, although a write changes a handful of
/// base edges; a write's own checks (its actor's records, its assignment) read dozens.
/// The bits sit behind an `Arc` (8 KiB): the first change after a version shares them
/// copies them, once per sequencer pass.
#[derive(Debug, Clone, Default)]
struct BaseEdgeFilter(Option<Arc<[u64; BaseEdgeFilter::WORDS]>>);

impl BaseEdgeFilter {
    const WORDS: usize = 1024;
    const BITS: u32 = 64 * Self::WORDS as u32;

    fn at(ix: u32) -> (usize, u64) {
        let bit = ix % Self::BITS;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn mark(&mut self, ix: u32) {
        let (w, b) = Self::at(ix);
        let words = self.0.get_or_insert_with(|| Arc::new([0; Self::WORDS]));
        if let Some(word) = Arc::make_mut(words).get_mut(w) {
            *word |= b;
        }
    }

    /// False only if no entry for base edge `ix` was ever put in the delta.
    fn may_hold(&self, ix: u32) -> bool {
        let (w, b) = Self::at(ix);
        self.0
            .as_ref()
            .is_some_and(|words| words.get(w).is_none_or(|x| x & b != 0))
    }
}

impl Delta {
    /// Whether edge index `ix` (local or remote) is below the base's bounds: an index
    /// the base gave out, not one this delta did.
    fn names_base_edge(&self, ix: u32) -> bool {
        if ix & REMOTE != 0 {
            ix & !REMOTE < self.base_remote_bound
        } else {
            ix < self.base_edge_bound
        }
    }

    /// Puts edge `ix`'s entry (keeping the `base_edges` invariant).
    fn put_edge(&mut self, ix: u32, v: Option<Arc<FullEdge>>) {
        if self.names_base_edge(ix) {
            self.base_edges.mark(ix);
        }
        self.edges.insert(ix, v);
    }

    /// Whether `edges` may hold an entry for edge `ix`: always for an edge of the
    /// delta's own, for a base edge only if its bit is set.
    fn may_hold_edge(&self, ix: u32) -> bool {
        !self.names_base_edge(ix) || self.base_edges.may_hold(ix)
    }
}

/// One part of a graph: a base and the delta of changes since.
#[derive(Debug, Clone, Default)]
struct Part {
    base: Arc<Core>,
    /// True once anything was written to `d` (reads then consult it first).
    dirty: bool,
    d: Delta,
}

/// Where a write to a part goes: straight into its base (nothing shares it and its
/// delta is empty), or into its delta (with the base to read from).
enum W<'a> {
    Direct(&'a mut Core),
    Delta(&'a mut Delta, &'a Core),
}

/// The delta's adjacency list of `n` (copied from the base on first change).
fn adj_mut<'a>(d: &'a mut Delta, base: &Core, n: NodeId, dir: Direction) -> &'a mut imbl::Vector<EdgeId> {
    let map = match dir {
        Direction::Outgoing => &mut d.out_adj,
        Direction::Incoming => &mut d.in_adj,
    };
    map.entry(n).or_insert_with(|| base.adj_list(n, dir))
}

/// The delta's own copy of node `ix` (made from the base on first change).
fn node_mut<'a>(d: &'a mut Delta, base: &Core, ix: u32) -> Option<&'a mut Node> {
    let cur = if d.nodes.contains_key(&ix) {
        None
    } else {
        Some(base.g.node_weight(NodeIndex::new(ix as usize))?.clone())
    };
    let slot = d.nodes.entry(ix).or_insert_with(|| cur.map(Arc::new));
    slot.as_mut().map(Arc::make_mut)
}

impl Part {
    fn new(part: u32) -> Part {
        Part {
            base: Arc::new(Core::new(part)),
            dirty: false,
            d: Delta::default(),
        }
    }

    fn index(&self) -> u32 {
        self.base.part
    }

    /// Whether changes go straight into the base: only while nothing shares it and the
    /// delta is empty. Then `Arc::make_mut` on the base copies nothing.
    fn direct(&mut self) -> bool {
        !self.dirty && Arc::get_mut(&mut self.base).is_some()
    }

    fn w(&mut self) -> W<'_> {
        if self.direct() {
            return W::Direct(Arc::make_mut(&mut self.base));
        }
        if !self.dirty {
            self.dirty = true;
            self.d.next_node = self.base.g.node_bound() as u32;
            self.d.next_edge = self.base.g.edge_bound() as u32;
            self.d.next_remote = self.base.remote.len() as u32;
            self.d.base_edge_bound = self.d.next_edge;
            self.d.base_remote_bound = self.d.next_remote;
        }
        W::Delta(&mut self.d, &self.base)
    }

    /// The base, when changes go straight into it (bulk loading).
    fn direct_core(&mut self) -> Option<&mut Core> {
        self.direct().then(|| Arc::make_mut(&mut self.base))
    }

    fn delta_len(&self) -> usize {
        if self.dirty {
            self.d.nodes.len() + self.d.edges.len()
        } else {
            0
        }
    }

    fn party_count(&self) -> i64 {
        self.base.parties.len() as i64 + self.d.parties_n
    }
    fn resource_count(&self) -> i64 {
        self.base.resources.len() as i64 + self.d.resources_n
    }
    fn edge_count(&self) -> i64 {
        (self.base.g.edge_count() + self.base.remote_n) as i64 + self.d.edges_n
    }

    fn party_node(&self, id: &str) -> Option<NodeId> {
        if self.dirty
            && let Some(v) = self.d.parties.get(id)
        {
            return *v;
        }
        self.base.parties.get(id).copied()
    }
    fn resource_node(&self, id: &str) -> Option<NodeId> {
        if self.dirty
            && let Some(v) = self.d.resources.get(id)
        {
            return *v;
        }
        self.base.resources.get(id).copied()
    }

    fn node(&self, ix: u32) -> Option<&Node> {
        if self.dirty
            && let Some(v) = self.d.nodes.get(&ix)
        {
            return v.as_deref();
        }
        self.base.g.node_weight(NodeIndex::new(ix as usize))
    }

    fn edge_full(&self, e: EdgeId) -> Option<(NodeId, NodeId, &Edge)> {
        if self.dirty
            && self.d.may_hold_edge(e.ix)
            && let Some(v) = self.d.edges.get(&e.ix)
        {
            return v.as_deref().map(|(a, b, w)| (*a, *b, w));
        }
        self.base.edge_full(e)
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

    /// (incoming, outgoing) edge counts of `n`.
    fn degree(&self, n: NodeId) -> (u32, u32) {
        let base = self.base.degree.get(n);
        let i = self
            .adj(n, Direction::Incoming)
            .map_or(base.0, |v| v.len() as u32);
        let o = self
            .adj(n, Direction::Outgoing)
            .map_or(base.1, |v| v.len() as u32);
        (i, o)
    }

    /// The number of edges at `n` in direction `dir`: the length of its delta's list
    /// when it has one (no walk), else the base's count.
    fn count(&self, n: NodeId, dir: Direction) -> u32 {
        match self.adj(n, dir) {
            Some(v) => v.len() as u32,
            None => {
                let (i, o) = self.base.degree.get(n);
                if dir == Direction::Outgoing { o } else { i }
            }
        }
    }

    fn loops(&self, n: NodeId) -> u32 {
        if self.dirty
            && let Some(k) = self.d.loops.get(&n)
        {
            return *k;
        }
        self.base.loops.get(&n).copied().unwrap_or(0)
    }

    fn main_of(&self, sub: NodeId) -> Option<NodeId> {
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

    fn key_edges(&self, n: NodeId) -> &[EdgeId] {
        if self.dirty
            && let Some(v) = self.d.key_in.get(&n)
        {
            return v;
        }
        self.base.key_in.get(&n).map_or(&[], |v| v.as_slice())
    }

    /// The identifier keys indexed for party `n`: recorded ones (a changed party), else
    /// those of its weight in the base.
    fn ident_keys(&self, n: NodeId) -> Vec<(IdentKind, String)> {
        if self.dirty
            && let Some(v) = self.d.ident_keys.get(&n)
        {
            return v.clone();
        }
        if let Some(v) = self.base.ident_keys.get(&n) {
            return v.clone();
        }
        match self.base.g.node_weight(n.local()) {
            Some(Node::Party(p)) => ident_keys_of(p),
            _ => Vec::new(),
        }
    }

    fn ident(&self, kind: IdentKind, v: &str) -> Option<NodeId> {
        if self.dirty
            && let Some(x) = self.d.idents[kind as usize].get(v)
        {
            return *x;
        }
        self.base.idents[kind as usize].get(v).copied()
    }

    fn parties(&self) -> impl Iterator<Item = (NodeId, &Party)> {
        let part = self.index();
        let bound = self.base.g.node_bound() as u32;
        let base = self.base.g.node_indices().filter_map(move |i| {
            let n = self.base.id(i);
            match self.node(n.ix) {
                Some(Node::Party(p)) => Some((n, p)),
                _ => None,
            }
        });
        let new = self
            .dirty
            .then(|| {
                self.d
                    .nodes
                    .range(bound..)
                    .filter_map(move |(i, w)| match w.as_deref() {
                        Some(Node::Party(p)) => Some((NodeId { part, ix: *i }, p)),
                        _ => None,
                    })
            })
            .into_iter()
            .flatten();
        base.chain(new)
    }

    /// This part with its delta folded into a new base (the same nodes and edges at the
    /// same indices). None if the delta does not fit its base (an engine bug).
    fn compacted(&self) -> Option<Part> {
        if !self.dirty {
            return Some(self.clone());
        }
        let d = &self.d;
        let part = self.index();
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
        // Stand-in edges are loops on one stand-in node, removed newest first: each is
        // then at the head of the stand-in's lists, so removing it is O(1). (On the real
        // edge's endpoints, a hub's lists grew with every stand-in and each removal
        // walked them: quadratic in the delta's revoked edges.)
        let mut fill_edges = Vec::new();
        let mut stand_in: Option<NodeIndex<u32>> = None;
        for (i, w) in d.edges.range(edge_bound..REMOTE) {
            let Some(w) = w else { continue };
            let (a, b, w) = &**w;
            if a.part != part || b.part != part {
                return None;
            }
            loop {
                let got = match stand_in {
                    Some(t) => c.g.add_edge(t, t, w.clone()),
                    None => c.g.add_edge(a.local(), b.local(), w.clone()),
                };
                let got_i = got.index() as u32;
                if got_i == *i {
                    if stand_in.is_some() {
                        // The real edge's slot: onto its real endpoints.
                        c.g.remove_edge(got);
                        if c.g.add_edge(a.local(), b.local(), w.clone()) != got {
                            return None;
                        }
                    }
                    break;
                }
                if got_i > *i {
                    return None;
                }
                if stand_in.is_none() {
                    // The first stand-in went onto the real endpoints: move it.
                    c.g.remove_edge(got);
                    let t = c.g.add_node(c.g.node_weight(a.local())?.clone());
                    stand_in = Some(t);
                    let again = c.g.add_edge(t, t, w.clone());
                    if again != got {
                        return None;
                    }
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
        for (i, w) in d.edges.range(REMOTE..) {
            let slot = (*i & !REMOTE) as usize;
            if c.remote.len() <= slot {
                c.remote.resize(slot + 1, None);
            }
            *c.remote.get_mut(slot)? = w.as_deref().cloned();
        }
        c.remote_n = c.remote.iter().filter(|e| e.is_some()).count();
        for e in fill_edges.into_iter().rev() {
            c.g.remove_edge(e);
        }
        if let Some(t) = stand_in {
            c.g.remove_node(t);
        }
        // Highest first, so that the free list hands the slots out lowest first (a
        // later compaction places new nodes in index order).
        let mut gone: Vec<NodeIndex<u32>> = fill_nodes.into_iter().chain(gone_nodes).collect();
        gone.sort_unstable_by(|a, b| b.cmp(a));
        for n in gone {
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
        for (m, dm) in [(&mut c.parties, &d.parties), (&mut c.resources, &d.resources)] {
            for (k, v) in dm {
                match v {
                    Some(v) => m.insert(k.clone().into(), *v),
                    None => m.remove(k.as_str()),
                };
            }
        }
        put(&mut c.main_of, &d.main_of);
        for (m, dm) in c.idents.iter_mut().zip(&d.idents) {
            for (k, v) in dm {
                match v {
                    Some(v) => m.insert(k.as_str().into(), *v),
                    None => m.remove(k.as_str()),
                };
            }
        }
        put_fx(&mut c.loops, &d.loops, |v| *v == 0);
        put_fx(&mut c.subs_of, &d.subs_of, Vec::is_empty);
        put_fx(&mut c.key_in, &d.key_in, Vec::is_empty);
        put_fx(&mut c.ident_keys, &d.ident_keys, Vec::is_empty);
        // Remote edges at overridden nodes: the remote part of each override.
        for (n, list) in &d.out_adj {
            let r: Vec<EdgeId> = list.iter().copied().filter(|e| e.is_remote()).collect();
            if r.is_empty() {
                c.remote_out.remove(n);
            } else {
                c.remote_out.insert(*n, r);
            }
        }
        for (n, list) in &d.in_adj {
            let r: Vec<EdgeId> = list.iter().copied().filter(|e| e.part != part).collect();
            if r.is_empty() {
                c.remote_in.remove(n);
            } else {
                c.remote_in.insert(*n, r);
            }
        }
        for n in d.out_adj.keys().chain(d.in_adj.keys()) {
            let deg = self.degree(*n);
            *c.degree.at(*n) = deg;
        }
        Some(Part {
            base: Arc::new(c),
            dirty: false,
            d: Delta::default(),
        })
    }

    /// This part (a later state of `from`, which shares its base) over `onto`, the
    /// result of `from.compacted()`: keeps only what changed after `from`. None when this
    /// part is not a later state of `from`.
    fn rebased(&self, from: &Part, onto: &Part) -> Option<Part> {
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
        let edges = newer_ord(&n.edges, &t.edges);
        // The entries kept name edges of the new base too (the fold put every edge of
        // the old delta into it): the filter is made again against that base.
        let base_edge_bound = onto.base.g.edge_bound() as u32;
        let base_remote_bound = onto.base.remote.len() as u32;
        // Both endpoints of every changed edge keep their override (see `Delta`), also
        // when the edge only changed its weight after `from`: its lists are then the
        // same as `from`'s and `newer` left them out, and a walk of either node would
        // read the new base's old weight.
        let mut out_adj = newer(&n.out_adj, &t.out_adj);
        let mut in_adj = newer(&n.in_adj, &t.in_adj);
        for e in edges.values().flatten() {
            let (a, b, _) = &**e;
            if !out_adj.contains_key(a)
                && let Some(list) = n.out_adj.get(a)
            {
                out_adj.insert(*a, list.clone());
            }
            if !in_adj.contains_key(b)
                && let Some(list) = n.in_adj.get(b)
            {
                in_adj.insert(*b, list.clone());
            }
        }
        let mut d = Delta {
            nodes: newer_ord(&n.nodes, &t.nodes),
            edges: imbl::OrdMap::new(),
            base_edges: BaseEdgeFilter::default(),
            base_edge_bound,
            base_remote_bound,
            out_adj,
            in_adj,
            parties: newer(&n.parties, &t.parties),
            resources: newer(&n.resources, &t.resources),
            loops: newer(&n.loops, &t.loops),
            main_of: newer(&n.main_of, &t.main_of),
            subs_of: newer(&n.subs_of, &t.subs_of),
            key_in: newer(&n.key_in, &t.key_in),
            idents: [0, 1, 2, 3, 4].map(|k| newer(&n.idents[k], &t.idents[k])),
            ident_keys: newer(&n.ident_keys, &t.ident_keys),
            next_node: n.next_node.max(onto.base.g.node_bound() as u32),
            next_edge: n.next_edge.max(onto.base.g.edge_bound() as u32),
            next_remote: n.next_remote.max(onto.base.remote.len() as u32),
            parties_n: n.parties_n - t.parties_n,
            resources_n: n.resources_n - t.resources_n,
            edges_n: n.edges_n - t.edges_n,
        };
        for ix in edges.keys() {
            if d.names_base_edge(*ix) {
                d.base_edges.mark(*ix);
            }
        }
        d.edges = edges;
        Some(Part {
            base: onto.base.clone(),
            dirty: true,
            d,
        })
    }
}

/// The graph of parties, resources and grants behind the engine's own facade.
///
/// P parts (see the module doc), each a frozen base plus a persistent delta, behind a
/// copy-on-write array: cloning is O(1), so a version of the world can be published
/// while the writer goes on with a copy, and a write copies only the parts it touches.
/// While a part's base is not shared and its delta is empty (loading, the reference
/// engine, the scenario runner) changes to it go straight into the base.
#[derive(Debug, Clone)]
pub struct Graph {
    parts: Arc<[Arc<Part>]>,
    /// Resource nodes in definition order (a whole-graph scan for them would cost a
    /// walk over millions of parties).
    order: imbl::Vector<NodeId>,
}

impl Default for Graph {
    fn default() -> Self {
        Graph::with_partitions(1)
    }
}

/// One part of a graph as it was in some version, held alone: what a background fold
/// reads and its install compares with, without keeping the version's other parts (or
/// the rest of its world) alive while the fold waits for a core.
#[derive(Debug, Clone)]
pub struct PartState {
    index: usize,
    part: Arc<Part>,
}

impl PartState {
    /// The part it is a state of.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Its delta folded into a new base, for [`Graph::rebase_part`]; O(size of the part).
    /// None if the delta does not fit its base (an engine bug: the caller keeps the
    /// uncompacted part, which is still correct).
    pub fn compacted(&self) -> Option<PartBase> {
        Some(PartBase {
            index: self.index,
            part: Arc::new(self.part.compacted()?),
        })
    }
}

/// A part folded into a new base by [`PartState::compacted`], to be installed with
/// [`Graph::rebase_part`].
#[derive(Debug, Clone)]
pub struct PartBase {
    index: usize,
    part: Arc<Part>,
}

impl PartBase {
    /// The part it is a base of.
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Graph {
    /// An empty graph in one part.
    pub fn new() -> Graph {
        Graph::with_partitions(1)
    }

    /// An empty graph in `p` parts (at least 1, at most [`MAX_PARTS`]).
    pub fn with_partitions(p: usize) -> Graph {
        let p = p.clamp(1, MAX_PARTS);
        Graph {
            parts: (0..p).map(|i| Arc::new(Part::new(i as u32))).collect(),
            order: imbl::Vector::new(),
        }
    }

    /// How many parts the graph has.
    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// One more than the highest [`NodeId::slot`] of part `i` (0 for no such part).
    pub fn part_slots(&self, i: usize) -> usize {
        self.parts.get(i).map_or(0, |p| {
            let bound = p.base.g.node_bound() as u32;
            (if p.dirty { p.d.next_node.max(bound) } else { bound }) as usize
        })
    }

    /// The part a party or resource id lives in.
    fn home(&self, id: &str) -> u32 {
        let n = self.parts.len();
        if n == 1 { 0 } else { partition_of(id, n) as u32 }
    }

    fn part(&self, i: u32) -> Option<&Part> {
        self.parts.get(i as usize).map(|p| &**p)
    }

    /// Part `i` to change (ids of this graph always name one of its parts): the array
    /// and the part are copied first if anything else shares them.
    fn part_mut(&mut self, i: u32) -> &mut Part {
        let slots = Arc::make_mut(&mut self.parts);
        // A graph has at least one part (`with_partitions`), so `k` is in range.
        let k = (i as usize) % slots.len().max(1);
        Arc::make_mut(&mut slots[k])
    }

    fn w(&mut self, i: u32) -> W<'_> {
        self.part_mut(i).w()
    }

    /// How many nodes and edges the deltas hold, over all parts.
    pub fn delta_len(&self) -> usize {
        self.parts.iter().map(|p| p.delta_len()).sum()
    }

    /// How many nodes and edges part `i`'s delta holds (compaction folds it past a bound).
    pub fn part_delta_len(&self, i: usize) -> usize {
        self.parts.get(i).map_or(0, |p| p.delta_len())
    }

    /// How many nodes and edges part `i`'s base holds (remote edges out of it included):
    /// what a fold of that part copies.
    pub fn part_base_len(&self, i: usize) -> usize {
        self.parts.get(i).map_or(0, |p| {
            let b = &p.base;
            b.g.node_count() + b.g.edge_count() + b.remote_n
        })
    }

    pub fn party_count(&self) -> usize {
        self.parts.iter().map(|p| p.party_count()).sum::<i64>().max(0) as usize
    }
    pub fn resource_count(&self) -> usize {
        self.parts.iter().map(|p| p.resource_count()).sum::<i64>().max(0) as usize
    }
    pub fn edge_count(&self) -> usize {
        self.parts.iter().map(|p| p.edge_count()).sum::<i64>().max(0) as usize
    }

    pub fn party_node(&self, id: &str) -> Option<NodeId> {
        self.part(self.home(id))?.party_node(id)
    }
    pub fn resource_node(&self, id: &str) -> Option<NodeId> {
        self.part(self.home(id))?.resource_node(id)
    }

    fn node(&self, n: NodeId) -> Option<&Node> {
        self.part(n.part)?.node(n.ix)
    }

    pub fn party(&self, n: NodeId) -> Option<&Party> {
        match self.node(n) {
            Some(Node::Party(p)) => Some(p),
            _ => None,
        }
    }
    pub fn party_mut(&mut self, n: NodeId) -> Option<&mut Party> {
        self.party(n)?;
        let node = match self.w(n.part) {
            W::Direct(c) => {
                // The keys indexed for it, before its weight changes in place (a
                // reindex drops them; see `Core::ident_keys`).
                if !c.ident_keys.contains_key(&n)
                    && let Some(Node::Party(p)) = c.g.node_weight(n.local())
                {
                    let keys = ident_keys_of(p);
                    if !keys.is_empty() {
                        c.ident_keys.insert(n, keys);
                    }
                }
                c.g.node_weight_mut(n.local())
            }
            W::Delta(d, base) => node_mut(d, base, n.ix),
        };
        match node {
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
        self.resource(n)?;
        let node = match self.w(n.part) {
            W::Direct(c) => c.g.node_weight_mut(n.local()),
            W::Delta(d, base) => node_mut(d, base, n.ix),
        };
        match node {
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

    /// Adds a node in the part of its id (new nodes get indices past the base's).
    fn add_node(&mut self, id: String, node: Node) -> NodeId {
        let i = self.home(&id);
        let is_party = matches!(node, Node::Party(_));
        match self.w(i) {
            W::Direct(c) => {
                let n = c.add_node(node);
                if is_party {
                    c.parties.insert(id.into(), n);
                } else {
                    c.resources.insert(id.into(), n);
                }
                n
            }
            W::Delta(d, _) => {
                let n = NodeId {
                    part: i,
                    ix: d.next_node,
                };
                d.next_node += 1;
                d.nodes.insert(n.ix, Some(Arc::new(node)));
                if is_party {
                    d.parties.insert(id, Some(n));
                    d.parties_n += 1;
                } else {
                    d.resources.insert(id, Some(n));
                    d.resources_n += 1;
                }
                n
            }
        }
    }

    pub fn add_party(&mut self, p: Party) -> NodeId {
        let n = self.add_node(p.id.to_string(), Node::Party(p));
        self.reindex_party(n);
        n
    }

    fn ident_keys(&self, n: NodeId) -> Vec<(IdentKind, String)> {
        self.part(n.part).map_or_else(Vec::new, |p| p.ident_keys(n))
    }

    fn ident(&self, kind: IdentKind, v: &str) -> Option<NodeId> {
        self.part(self.home(v))?.ident(kind, v)
    }

    /// Points identifier `v` of `kind` at `n` (None: at nobody), in the value's part.
    fn set_ident(&mut self, kind: IdentKind, v: String, n: Option<NodeId>) {
        let i = self.home(&v);
        match self.w(i) {
            W::Direct(c) => {
                let m = &mut c.idents[kind as usize];
                match n {
                    Some(n) => m.insert(v.into(), n),
                    None => m.remove(v.as_str()),
                };
            }
            W::Delta(d, _) => {
                d.idents[kind as usize].insert(v, n);
            }
        }
    }

    /// Records the keys now indexed for party `n`: those of its weight (after a reindex)
    /// or none (it is being removed), so a base keeps no list.
    fn set_ident_keys(&mut self, n: NodeId, keys: Vec<(IdentKind, String)>) {
        match self.w(n.part) {
            W::Direct(c) => {
                c.ident_keys.remove(&n);
            }
            W::Delta(d, _) => {
                d.ident_keys.insert(n, keys);
            }
        }
    }

    /// Records the legacy identifiers of party `n` (after it was created or changed).
    pub fn reindex_party(&mut self, n: NodeId) {
        self.unindex_party(n);
        let Some(p) = self.party(n) else { return };
        let keys = ident_keys_of(p);
        if keys.is_empty() {
            return;
        }
        for (kind, v) in &keys {
            self.set_ident(*kind, v.clone(), Some(n));
        }
        self.set_ident_keys(n, keys);
    }

    fn unindex_party(&mut self, n: NodeId) {
        let keys = self.ident_keys(n);
        if keys.is_empty() {
            return;
        }
        for (kind, v) in keys {
            if self.ident(kind, &v) == Some(n) {
                self.set_ident(kind, v, None);
            }
        }
        self.set_ident_keys(n, Vec::new());
    }

    /// The first legacy identifier of `p` that a live party other than `me` already
    /// holds: its kind, value and holder. Identifiers are unique among parties, as in
    /// Altinn's register, so an event that would share one is refused.
    pub fn ident_clash(&self, p: &Party, me: Option<NodeId>) -> Option<(IdentKind, String, NodeId)> {
        ident_keys_of(p).into_iter().find_map(|(kind, v)| {
            let holder = self.party_by_ident(kind, &v)?;
            (Some(holder) != me).then_some((kind, v, holder))
        })
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

    pub fn add_resource(&mut self, r: Resource) -> NodeId {
        let n = self.add_node(r.id.clone(), Node::Resource(r));
        self.order.push_back(n);
        n
    }

    /// Removes a node with no edges (used only to undo its creation).
    pub fn remove_node(&mut self, n: NodeId) {
        let Some(node) = self.node(n) else { return };
        let (id, is_party) = match node {
            Node::Party(p) => (p.id.to_string(), true),
            Node::Resource(r) => (r.id.clone(), false),
        };
        // While its weight is there to give the keys indexed for it.
        self.unindex_party(n);
        match self.w(n.part) {
            W::Direct(c) => c.remove_node(n),
            W::Delta(d, _) => {
                if is_party {
                    d.parties.insert(id, None);
                    d.parties_n -= 1;
                } else {
                    d.resources.insert(id, None);
                    d.resources_n -= 1;
                }
                d.nodes.insert(n.ix, None);
            }
        }
        if !is_party {
            self.order.retain(|x| *x != n);
        }
    }

    /// Every party, part by part.
    pub fn parties(&self) -> impl Iterator<Item = (NodeId, &Party)> {
        self.parts.iter().flat_map(|p| p.parties())
    }
    /// Every resource, in the order they were defined.
    pub fn resources(&self) -> impl Iterator<Item = (NodeId, &Resource)> {
        self.order.iter().filter_map(|n| Some((*n, self.resource(*n)?)))
    }

    /// An edge with its endpoints.
    fn edge_full(&self, e: EdgeId) -> Option<(NodeId, NodeId, &Edge)> {
        self.part(e.part)?.edge_full(e)
    }

    /// Edges at `n` in direction `dir`: (edge, the other end, weight).
    ///
    /// The base walk is the hot path of every check, so it stays a small petgraph
    /// iterator; an overridden adjacency list (and a base list with remote edges) is
    /// walked through a box, because an `imbl` vector iterator is hundreds of bytes and
    /// the adapters that resolution stacks on top of this one move it around (measured:
    /// 60 % of a check in `memmove` when both kinds were chained inline).
    fn edges_at(&self, n: NodeId, dir: Direction) -> EdgesAt<'_> {
        let Some(p) = self.part(n.part) else {
            return EdgesAt::Empty;
        };
        let out = dir == Direction::Outgoing;
        if let Some(over) = p.adj(n, dir) {
            return EdgesAt::Delta(Box::new(over.iter().filter_map(move |e| {
                let (a, b, w) = self.edge_full(*e)?;
                Some((*e, if out { b } else { a }, w))
            })));
        }
        let c = &*p.base;
        let local = c.g.edges_directed(n.local(), dir);
        let remote = if out { &c.remote_out } else { &c.remote_in };
        if !remote.is_empty()
            && let Some(r) = remote.get(&n)
        {
            return EdgesAt::Delta(Box::new(EdgesAt::Base(local, dir, c).chain(r.iter().filter_map(
                move |e| {
                    let (a, b, w) = self.edge_full(*e)?;
                    Some((*e, if out { b } else { a }, w))
                },
            ))));
        }
        EdgesAt::Base(local, dir, c)
    }

    /// Edges ending at `n`: (edge, source, weight).
    pub fn incoming(&self, n: NodeId) -> impl Iterator<Item = (EdgeId, NodeId, &Edge)> + '_ {
        self.edges_at(n, Direction::Incoming)
    }
    /// Edges starting at `n`: (edge, target, weight).
    pub fn outgoing(&self, n: NodeId) -> impl Iterator<Item = (EdgeId, NodeId, &Edge)> + '_ {
        self.edges_at(n, Direction::Outgoing)
    }

    fn loops(&self, n: NodeId) -> u32 {
        self.part(n.part).map_or(0, |p| p.loops(n))
    }

    /// Edges `a → b`, walking whichever side has fewer edges.
    pub fn between(&self, a: NodeId, b: NodeId) -> Vec<(EdgeId, &Edge)> {
        self.between_iter(a, b).collect()
    }

    /// Whether `a` has no more outgoing edges than `b` has incoming ones: the choice of
    /// side [`Graph::between_iter`] walks. Found by walking both lists in step until the
    /// shorter ends, not from the degree map: on a large world each degree lookup is a
    /// hash probe into a cold table (two cache misses), while the lists are short for
    /// nearly every pair and the walk warms the side that is then read. For two hubs it
    /// costs at most twice the shorter list.
    fn out_not_longer(&self, a: NodeId, b: NodeId) -> bool {
        let mut out = self.outgoing(a);
        let mut inc = self.incoming(b);
        loop {
            if out.next().is_none() {
                return true;
            }
            if inc.next().is_none() {
                return false;
            }
        }
    }

    /// [`Graph::between`] without collecting.
    pub fn between_iter(&self, a: NodeId, b: NodeId) -> impl Iterator<Item = (EdgeId, &Edge)> + '_ {
        self.between_by(a, b, false)
    }

    /// The number of edges out of `n` (from its delta's list or the base's counts: no
    /// walk).
    pub fn out_degree(&self, n: NodeId) -> usize {
        self.part(n.part)
            .map_or(0, |p| p.count(n, Direction::Outgoing) as usize)
    }

    /// The number of edges into `n` (see [`Graph::out_degree`]).
    pub fn in_degree(&self, n: NodeId) -> usize {
        self.part(n.part)
            .map_or(0, |p| p.count(n, Direction::Incoming) as usize)
    }

    /// Edges `a → b`, walking the side with fewer edges. With `counted` the side is
    /// chosen from the two counts ([`Graph::out_degree`], [`Graph::in_degree`]): the
    /// writes' lookups, where a list overridden by the delta costs a tree lookup per
    /// edge walked, so walking both in step ([`Graph::out_not_longer`]) costs more than
    /// the counts. Without, as [`Graph::between_iter`] (the checks' lookups).
    pub fn between_by(
        &self,
        a: NodeId,
        b: NodeId,
        counted: bool,
    ) -> impl Iterator<Item = (EdgeId, &Edge)> + '_ {
        // Both adjacency lists of a hub are long, and edges from a node to itself are
        // rare (a client delegation whose agent is the client): counted, not searched.
        let none = a == b && self.loops(a) == 0;
        let walk_out = !none
            && if counted {
                self.out_degree(a) <= self.in_degree(b)
            } else {
                self.out_not_longer(a, b)
            };
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
        self.between_by(from, to, true).find_map(|(e, w)| match w {
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
        self.between_by(client, agent, true).find_map(|(e, w)| match w {
            Edge::Delegation(d) if d.facilitator == facilitator && d.role == role => Some(e),
            _ => None,
        })
    }

    /// The main unit of a sub-unit.
    pub fn main_unit(&self, sub: NodeId) -> Option<NodeId> {
        self.part(sub.part)?.main_of(sub)
    }
    fn subs(&self, main: NodeId) -> &[NodeId] {
        self.part(main.part).map_or(&[], |p| p.subs(main))
    }
    /// The sub-units of a main unit.
    pub fn sub_units(&self, main: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.subs(main).iter().copied()
    }
    fn key_edges(&self, n: NodeId) -> &[EdgeId] {
        self.part(n.part).map_or(&[], |p| p.key_edges(n))
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
                .between_by(sub, main, true)
                .find_map(|(e, w)| matches!(w, Edge::MainUnit(_)).then_some(e)),
        }
    }

    /// Adds an edge `from → to`, kept by the part of `from` (a remote edge when `to` is
    /// in another part); the indexes of `to` are kept by its own part.
    pub fn add_edge(&mut self, from: NodeId, to: NodeId, w: Edge) -> EdgeId {
        let is_key = is_key_edge(&w);
        let is_main = matches!(w, Edge::MainUnit(_));
        let same = from.part == to.part;
        // What the delta's absolute entries start from (read before writing).
        let loops = self.loops(from);
        let key_in = is_key.then(|| self.key_edges(to).to_vec());
        let subs = is_main.then(|| self.subs(to).to_vec());
        let e = match self.w(from.part) {
            W::Direct(c) => {
                let (e, incoming) = c.add_fresh_edge(from, to, w);
                if incoming.is_none() {
                    // petgraph keeps the target's list; the indexes are this part's too.
                    return e;
                }
                e
            }
            W::Delta(d, base) => {
                let e = if same {
                    let e = EdgeId {
                        part: base.part,
                        ix: d.next_edge,
                    };
                    d.next_edge += 1;
                    e
                } else {
                    let e = EdgeId {
                        part: base.part,
                        ix: d.next_remote | REMOTE,
                    };
                    d.next_remote += 1;
                    e
                };
                d.put_edge(e.ix, Some(Arc::new((from, to, w))));
                d.edges_n += 1;
                if from == to {
                    d.loops.insert(from, loops + 1);
                }
                if is_main {
                    d.main_of.insert(from, Some(to));
                }
                // petgraph puts a new edge first in both lists; so does the delta.
                adj_mut(d, base, from, Direction::Outgoing).push_front(e);
                e
            }
        };
        match self.w(to.part) {
            W::Direct(c) => {
                // Only for an edge from another part (a same-part direct add returned).
                c.index_incoming(Incoming {
                    to,
                    edge: e,
                    is_key,
                    main_from: is_main.then_some(from),
                });
            }
            W::Delta(d, base) => {
                adj_mut(d, base, to, Direction::Incoming).push_front(e);
                if let Some(mut v) = key_in {
                    v.push(e);
                    d.key_in.insert(to, v);
                }
                if let Some(mut v) = subs {
                    v.push(from);
                    d.subs_of.insert(to, v);
                }
            }
        }
        e
    }

    pub fn remove_edge(&mut self, e: EdgeId) -> Option<Edge> {
        let (a, b, w) = self.edge_full(e)?;
        let w = w.clone();
        let same = a.part == b.part;
        let is_main = matches!(w, Edge::MainUnit(_));
        let loops = self.loops(a);
        let key_now = self.key_edges(b);
        let key_in: Vec<EdgeId> = key_now.iter().copied().filter(|x| *x != e).collect();
        let key_changed = key_in.len() != key_now.len();
        let subs = is_main.then(|| {
            self.subs(b)
                .iter()
                .copied()
                .filter(|x| *x != a)
                .collect::<Vec<_>>()
        });
        match self.w(e.part) {
            W::Direct(c) => {
                {
                    let dg = c.degree.at(a);
                    dg.1 = dg.1.saturating_sub(1);
                }
                if a == b
                    && let Some(k) = c.loops.get_mut(&a)
                {
                    *k = k.saturating_sub(1);
                    if *k == 0 {
                        c.loops.remove(&a);
                    }
                }
                if is_main {
                    c.main_of.remove(&a);
                }
                if e.is_remote() {
                    if let Some(slot) = c.remote.get_mut(e.slot())
                        && slot.take().is_some()
                    {
                        c.remote_n -= 1;
                    }
                    drop_from(&mut c.remote_out, &a, &e);
                } else {
                    c.g.remove_edge(e.local());
                }
                if same {
                    {
                        let dg = c.degree.at(b);
                        dg.0 = dg.0.saturating_sub(1);
                    }
                    drop_from(&mut c.key_in, &b, &e);
                    if is_main {
                        drop_from(&mut c.subs_of, &b, &a);
                    }
                    return Some(w);
                }
            }
            W::Delta(d, base) => {
                let list = adj_mut(d, base, a, Direction::Outgoing);
                if let Some(i) = list.index_of(&e) {
                    list.remove(i);
                }
                d.put_edge(e.ix, None);
                d.edges_n -= 1;
                if a == b {
                    d.loops.insert(a, loops.saturating_sub(1));
                }
                if is_main {
                    d.main_of.insert(a, None);
                }
            }
        }
        match self.w(b.part) {
            W::Direct(c) => {
                {
                    let dg = c.degree.at(b);
                    dg.0 = dg.0.saturating_sub(1);
                }
                drop_from(&mut c.remote_in, &b, &e);
                drop_from(&mut c.key_in, &b, &e);
                if is_main {
                    drop_from(&mut c.subs_of, &b, &a);
                }
            }
            W::Delta(d, base) => {
                let list = adj_mut(d, base, b, Direction::Incoming);
                if let Some(i) = list.index_of(&e) {
                    list.remove(i);
                }
                if key_changed {
                    d.key_in.insert(b, key_in);
                }
                if let Some(v) = subs {
                    d.subs_of.insert(b, v);
                }
            }
        }
        Some(w)
    }

    /// Sets the edge with `key` to `w` (None removes it); returns the previous value.
    pub fn set_edge(&mut self, key: EdgeKey, w: Option<Edge>) -> Option<Edge> {
        let found = self.find(key);
        self.set_found_edge(key, found, w)
    }

    /// [`Graph::set_edge`] for a caller that has just looked the key up: `found` must be
    /// `self.find(key)` (a write reads the edge it changes first; one lookup, not two).
    pub fn set_found_edge(&mut self, key: EdgeKey, found: Option<EdgeId>, w: Option<Edge>) -> Option<Edge> {
        if let (Some(e), Some(w)) = (found, &w) {
            // The key fixes the endpoints and the kind, so the edge keeps its place.
            if let Some(old) = self.replace_edge_weight(e, w.clone()) {
                return Some(old);
            }
        }
        let old = found.and_then(|e| self.remove_edge(e));
        if let Some(w) = w {
            let (a, b) = endpoints_of(key);
            self.add_edge(a, b, w);
        }
        old
    }

    /// Replaces the weight of edge `e` in place: same index, same endpoints, same place
    /// in both adjacency lists, so no index changes (a grant or a revoke on an existing
    /// edge changes one delta entry, not two adjacency lists and a fresh index). The
    /// new weight must index as the old one does (both key-role assignments or neither,
    /// both main-unit edges or neither); otherwise nothing changes and None is returned,
    /// as for an edge that does not exist.
    fn replace_edge_weight(&mut self, e: EdgeId, w: Edge) -> Option<Edge> {
        let (a, b, old) = self.edge_full(e)?;
        if is_key_edge(old) != is_key_edge(&w)
            || matches!(old, Edge::MainUnit(_)) != matches!(w, Edge::MainUnit(_))
        {
            return None;
        }
        let old = old.clone();
        match self.w(e.part) {
            W::Direct(c) => {
                if e.is_remote() {
                    *c.remote.get_mut(e.slot())? = Some((a, b, w));
                } else {
                    *c.g.edge_weight_mut(e.local())? = w;
                }
            }
            W::Delta(d, base) => {
                // A base edge's weight is read from the base by the walk of an endpoint
                // without an overridden list (see `Delta`): override both first. Remote
                // edges are always read through the delta's edge map.
                if !e.is_remote() {
                    for (n, dir) in [(a, Direction::Outgoing), (b, Direction::Incoming)] {
                        let map = match dir {
                            Direction::Outgoing => &d.out_adj,
                            Direction::Incoming => &d.in_adj,
                        };
                        if !map.contains_key(&n) {
                            adj_mut(d, base, n, dir);
                        }
                    }
                }
                d.put_edge(e.ix, Some(Arc::new((a, b, w))));
            }
        }
        Some(old)
    }

    /// This graph with every part's delta folded into a new base (the same nodes and
    /// edges at the same indices, so every id stays valid); O(size of the graph), meant
    /// for a background thread. None if a delta does not fit its base (an engine bug:
    /// the caller keeps the uncompacted graph, which is still correct).
    pub fn compacted(&self) -> Option<Graph> {
        let parts = self
            .parts
            .iter()
            .map(|p| {
                if p.dirty {
                    p.compacted().map(Arc::new)
                } else {
                    Some(p.clone())
                }
            })
            .collect::<Option<Arc<[Arc<Part>]>>>()?;
        Some(Graph {
            parts,
            order: self.order.clone(),
        })
    }

    /// Part `i` as it is in this graph, held alone (None: no such part).
    pub fn part_state(&self, i: usize) -> Option<PartState> {
        Some(PartState {
            index: i,
            part: self.parts.get(i)?.clone(),
        })
    }

    /// Folds part `i`'s delta into a new base in place (on a private copy of a world,
    /// before it is published); false if there is no such part or its delta does not
    /// fit its base (an engine bug: the part is left as it was, still correct).
    pub fn compact_part(&mut self, i: usize) -> bool {
        let Some(next) = self.parts.get(i).and_then(|p| p.compacted()) else {
            return false;
        };
        *self.part_mut(i as u32) = next;
        true
    }

    /// Moves this graph's part (a later state of `from`, which shares its base) onto
    /// `onto`, made from `from` by [`PartState::compacted`]: keeps only what changed
    /// after `from`. False (and nothing changed) when this part is not a later state of
    /// `from`.
    pub fn rebase_part(&mut self, from: &PartState, onto: &PartBase) -> bool {
        let i = onto.index;
        let Some(now) = self.parts.get(i).filter(|_| from.index == i) else {
            return false;
        };
        let Some(next) = now.rebased(&from.part, &onto.part) else {
            return false;
        };
        *self.part_mut(i as u32) = next;
        true
    }

    /// This graph (a later state of `from`, which shares its bases) over `onto`, the
    /// result of `from.compacted()`: keeps only what changed after `from`. None when this
    /// graph is not a later state of `from`.
    pub fn rebased(&self, from: &Graph, onto: &Graph) -> Option<Graph> {
        if self.parts.len() != from.parts.len() || from.parts.len() != onto.parts.len() {
            return None;
        }
        let parts = self
            .parts
            .iter()
            .zip(from.parts.iter())
            .zip(onto.parts.iter())
            .map(|((now, then), onto)| now.rebased(then, onto).map(Arc::new))
            .collect::<Option<Arc<[Arc<Part>]>>>()?;
        Some(Graph {
            parts,
            order: self.order.clone(),
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
    /// (position in this batch, kind, value): the keys of the identifier maps.
    values: Vec<(u32, IdentKind, IdKey)>,
}

impl PreparedParties {
    pub fn with_capacity(n: usize) -> PreparedParties {
        PreparedParties {
            parties: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            values: Vec::new(),
        }
    }
    pub fn push(&mut self, party: Party) {
        let at = self.parties.len() as u32;
        self.values.extend(
            IdentKind::ALL
                .iter()
                .filter_map(|k| Some((at, *k, k.key(&party)?))),
        );
        self.keys.push(party.id.to_string());
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
/// edges added in batches without a delta, the parts filled in parallel.
impl Graph {
    /// The bases of every part, when all of them take changes directly (none shared,
    /// no delta); else None.
    fn cores_mut(&mut self) -> Option<Vec<&mut Core>> {
        let slots = Arc::make_mut(&mut self.parts);
        let mut out = Vec::with_capacity(slots.len());
        for p in slots.iter_mut() {
            out.push(Arc::make_mut(p).direct_core()?);
        }
        Some(out)
    }

    /// Reserves room for this many more parties, resources and edges in the node and
    /// edge arrays and the id maps (spread evenly over the parts, with a margin), so
    /// that loading a large world never regrows (and for a moment doubles) them. Does
    /// nothing to a part that shares its base.
    pub fn reserve(&mut self, parties: usize, resources: usize, edges: usize) {
        let n = self.parts.len();
        let share = |x: usize| if n == 1 { x } else { x / n + x / (8 * n) + 16 };
        let (parties, resources, edges) = (share(parties), share(resources), share(edges));
        for i in 0..n {
            let Some(c) = self.part_mut(i as u32).direct_core() else {
                continue;
            };
            c.g.reserve_exact_nodes(parties + resources);
            c.g.reserve_exact_edges(edges);
            c.parties.reserve(parties);
            c.resources.reserve(resources);
            c.degree.reserve(parties + resources);
        }
    }

    /// Adds prepared parties, batch after batch, each to its part, with room for all of
    /// them and their identifiers reserved first. With one part, the nodes and id map
    /// are built on one thread while the identifier maps are built on another (a fresh
    /// graph gives node indices in order, so both know every party's node); with more,
    /// the parts are filled in parallel (a batch whose parties all live in one part —
    /// a snapshot section read into as many parts — goes there whole). Each id must be
    /// new: on a duplicate the id is returned as the error, with the graph partly built
    /// (a loader drops it). Returns the node of every party, batch by batch in the order
    /// given (a loader resolves references by position with them instead of looking ids
    /// up).
    pub fn add_prepared(&mut self, batches: Vec<PreparedParties>) -> Result<Vec<Vec<NodeId>>, String> {
        let n = self.parts.len();
        let fresh = self.cores_mut().is_some_and(|cs| {
            cs.iter()
                .all(|c| c.g.node_count() == c.g.node_bound() && c.remote.is_empty())
        });
        if !fresh {
            let mut placed = Vec::with_capacity(batches.len());
            for b in batches {
                let mut nodes = Vec::with_capacity(b.parties.len());
                for p in b.parties {
                    if self.party_node(&p.id).is_some() {
                        return Err(p.id.into());
                    }
                    nodes.push(self.add_party(p));
                }
                placed.push(nodes);
            }
            return Ok(placed);
        }
        let Some(mut cores) = self.cores_mut() else {
            return Err("the graph's base is shared: nothing can be added in bulk".into());
        };
        // A fresh part gives node indices in order from its bound: every party's node
        // is known before it is added.
        let mut next: Vec<u32> = cores.iter().map(|c| c.g.node_bound() as u32).collect();
        let mut placed: Vec<Vec<NodeId>> = Vec::with_capacity(batches.len());
        let mut take = |h: usize| {
            let ix = next.get(h).copied().unwrap_or(0);
            if let Some(x) = next.get_mut(h) {
                *x += 1;
            }
            NodeId { part: h as u32, ix }
        };
        if n == 1 {
            for b in &batches {
                placed.push((0..b.len()).map(|_| take(0)).collect());
            }
            return match cores.pop() {
                Some(c) => fill_one(c, batches).map(|()| placed),
                None => Ok(placed),
            };
        }
        // Each batch to the part of its parties (split when they are of several).
        let mut per: Vec<Vec<PreparedParties>> = (0..n).map(|_| Vec::new()).collect();
        for b in batches {
            let homes: Vec<usize> = b.keys.iter().map(|k| partition_of(k, n)).collect();
            placed.push(homes.iter().map(|h| take(*h)).collect());
            if let Some(&h) = homes.first()
                && homes.iter().all(|x| *x == h)
            {
                if let Some(v) = per.get_mut(h) {
                    v.push(b);
                }
                continue;
            }
            let mut split: Vec<PreparedParties> = (0..n).map(|_| PreparedParties::default()).collect();
            let mut values = b.values.into_iter().peekable();
            for (j, (p, key)) in b.parties.into_iter().zip(b.keys).enumerate() {
                let Some(to) = homes.get(j).and_then(|h| split.get_mut(*h)) else {
                    continue;
                };
                let at = to.parties.len() as u32;
                while let Some((_, k, v)) = values.next_if(|(i, _, _)| *i as usize == j) {
                    to.values.push((at, k, v));
                }
                to.parties.push(p);
                to.keys.push(key);
            }
            for (h, s) in split.into_iter().enumerate() {
                if !s.is_empty()
                    && let Some(v) = per.get_mut(h)
                {
                    v.push(s);
                }
            }
        }
        // The nodes and id maps part by part in parallel; each part's identifier values
        // go to the parts they hash to, filled in a second parallel pass.
        let jobs: Vec<(&mut Core, Vec<PreparedParties>)> = cores.into_iter().zip(per).collect();
        let results = on_parts(jobs, |(c, batches)| fill_part(c, batches, n));
        let mut cores = Vec::with_capacity(n);
        let mut inbox: Vec<Vec<Vec<(IdentKind, IdKey, NodeId)>>> = (0..n).map(|_| Vec::new()).collect();
        for r in results {
            let (c, outbox) = r?;
            cores.push(c);
            for (to, v) in outbox.into_iter().enumerate() {
                if let Some(b) = inbox.get_mut(to) {
                    b.push(v);
                }
            }
        }
        on_parts(cores.into_iter().zip(inbox).collect(), |(c, lists)| {
            for (kind, v, node) in lists.into_iter().flatten() {
                c.idents[kind as usize].insert(v, node);
            }
        });
        Ok(placed)
    }

    /// Adds batches of edges whose endpoints exist (the caller has checked that none
    /// of them duplicates another: this adds, it does not replace), each to the part of
    /// its source. With one part, on a fresh graph, the petgraph edges are added on one
    /// thread while the indexes (degrees, key roles, main units) are built on another;
    /// with more, the parts are filled in parallel (a batch whose edges all have their
    /// source in one part goes there whole), then each part's list of remote edges
    /// coming in.
    pub fn add_edges(&mut self, batches: Vec<Vec<FullEdge>>) {
        let n = self.parts.len();
        let fresh = self
            .cores_mut()
            .is_some_and(|cs| cs.iter().all(|c| c.g.edge_count() == c.g.edge_bound()));
        let cores = if fresh { self.cores_mut() } else { None };
        let Some(mut cores) = cores else {
            for (a, b, w) in batches.into_iter().flatten() {
                self.add_edge(a, b, w);
            }
            return;
        };
        if n == 1 {
            if let Some(c) = cores.pop() {
                edges_one(c, batches);
            }
            return;
        }
        let mut per: Vec<Vec<Vec<FullEdge>>> = (0..n).map(|_| Vec::new()).collect();
        for b in batches {
            if let Some((first, _, _)) = b.first()
                && b.iter().all(|(a, _, _)| a.part == first.part)
            {
                if let Some(v) = per.get_mut(first.part as usize) {
                    v.push(b);
                }
                continue;
            }
            let mut split: Vec<Vec<FullEdge>> = (0..n).map(|_| Vec::new()).collect();
            for e in b {
                if let Some(v) = split.get_mut(e.0.part as usize) {
                    v.push(e);
                }
            }
            for (h, s) in split.into_iter().enumerate() {
                if !s.is_empty()
                    && let Some(v) = per.get_mut(h)
                {
                    v.push(s);
                }
            }
        }
        let jobs: Vec<(&mut Core, Vec<Vec<FullEdge>>)> = cores.into_iter().zip(per).collect();
        let results = on_parts(jobs, |(c, batches)| {
            let outbox = edges_part(c, batches, n);
            (c, outbox)
        });
        let mut cores = Vec::with_capacity(n);
        let mut inbox: Vec<Vec<Vec<Incoming>>> = (0..n).map(|_| Vec::new()).collect();
        for (c, outbox) in results {
            cores.push(c);
            for (to, v) in outbox.into_iter().enumerate() {
                if let Some(b) = inbox.get_mut(to) {
                    b.push(v);
                }
            }
        }
        on_parts(cores.into_iter().zip(inbox).collect(), |(c, lists)| {
            for x in lists.into_iter().flatten() {
                c.index_incoming(x);
            }
        });
    }
}

/// One part of a graph built from nothing on a worker of its own (a snapshot's sections
/// loaded by the part's actor): its parties in index order (the node of each is known
/// before it is added: [`PartBuilder::next_node`]), then the edges out of them. What
/// belongs to other parts (identifiers whose value hashes there, the incoming side of
/// remote edges) is kept for [`Graph::from_builders`] to hand over once every part is
/// built. Nothing is reserved with a margin: the counts come from the snapshot's index.
#[derive(Debug)]
pub struct PartBuilder {
    c: Core,
    parts: usize,
    /// Identifier values of this part's parties that hash to another part, by that part.
    idents_out: Vec<Vec<(IdentKind, IdKey, NodeId)>>,
    /// Remote edges out of this part, by the part of their target.
    incoming_out: Vec<Vec<Incoming>>,
}

/// The identifier maps of a [`PartBuilder`]'s part, filled apart from its nodes: the
/// values that hash to this part are gathered by kind and put into its maps at the end
/// with room reserved for all of them ([`PartIdents::index`]); the others are kept for
/// their parts.
#[derive(Debug)]
pub struct PartIdents {
    part: u32,
    parts: usize,
    maps: [FxHashMap<IdKey, NodeId>; 5],
    vals: [Vec<(IdKey, NodeId)>; 5],
    out: Vec<Vec<(IdentKind, IdKey, NodeId)>>,
    /// The part's id map (external id → node), filled the same way.
    ids: IdMap,
    keys: Vec<(IdKey, NodeId)>,
}

impl PartIdents {
    /// Gathers the id and the identifiers of party `p`, whose node is `node`.
    pub fn add(&mut self, p: &Party, node: NodeId) {
        self.keys.push((p.id[..].into(), node));
        for k in IdentKind::ALL {
            let Some(v) = k.key(p) else { continue };
            let to = if self.parts == 1 {
                self.part as usize
            } else {
                partition_of(v.as_str(), self.parts)
            };
            if to == self.part as usize {
                if let Some(m) = self.vals.get_mut(k as usize) {
                    m.push((v, node));
                }
            } else if let Some(out) = self.out.get_mut(to) {
                out.push((k, v, node));
            }
        }
    }

    /// Puts the gathered ids and values into the maps, in the order of their table
    /// slots ([`insert_by_slot`]). Of two parties with one identifier value the later
    /// holds it, as when inserted in order; two parties with one id are an error (the
    /// id).
    pub fn index(&mut self) -> Result<(), String> {
        let mut dup = None;
        let inline = |_: &IdKey| None;
        insert_by_slot(
            &mut self.ids,
            std::mem::take(&mut self.keys),
            inline,
            |k, _, _| {
                dup.get_or_insert_with(|| k.as_str().to_string());
                false
            },
        );
        if let Some(id) = dup {
            return Err(id);
        }
        for (m, v) in self.maps.iter_mut().zip(&mut self.vals) {
            // The value goes to the later party (they are gathered in node order).
            insert_by_slot(m, std::mem::take(v), IdKey::heap_bytes, |_, held, new| {
                new.ix > held.ix
            });
        }
        Ok(())
    }
}

/// Asks the processor to bring the bytes at `p` into its cache (a hint: it reads nothing
/// and never faults).
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no effect but on the cache, whatever the address; SSE is
    // part of every x86_64 processor.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Inserts `items` into `m` (reserved for them first) in the order of the table slots
/// their hashes start at: the items are first put in order by the slot's top bits (a
/// counting sort in place, on up to 1 024 ranges), so that millions of inserts walk the
/// table front to back instead of missing the cache and the TLB on nearly every one. A
/// key already in the map (or twice in `items`, met in no particular order) is given to
/// `replace` with the value held and the new one: true replaces the held value. `bytes`
/// says where a key keeps its bytes apart from itself (a `String`'s heap), to fetch them
/// into the cache a few inserts ahead: in slot order they are scattered.
fn insert_by_slot<K, V, S>(
    m: &mut HashMap<K, V, S>,
    mut items: Vec<(K, V)>,
    bytes: impl Fn(&K) -> Option<*const u8>,
    mut replace: impl FnMut(&K, &V, &V) -> bool,
) where
    K: std::hash::Hash + Eq,
    S: std::hash::BuildHasher,
{
    /// Below this many items the table (a few hundred KiB) stays in the caches whatever
    /// the order. Above, the sort pays already at a medium world's 128 400 ids (tables
    /// of 1–9 MiB: its identifier maps were filled in 30–40 ms instead of 60–80, w16med;
    /// with `String` keys, before [`IdKey`], the sort had cost more than it saved).
    const SMALL: usize = 1 << 12;
    const RANGES_LOG: u32 = 10;
    /// How many inserts ahead a key's bytes are fetched.
    const AHEAD: usize = 16;
    m.reserve(items.len());
    if items.len() >= SMALL {
        // A table of `b` buckets (a power of two) holds b / 8 * 7 entries; a key's probe
        // starts at bucket `hash & (b - 1)`. (Were that to change, only the speed would.)
        let buckets = (m.capacity() / 7 * 8).next_power_of_two().max(1) as u64;
        let log = buckets.trailing_zeros();
        let shift = log.saturating_sub(RANGES_LOG);
        let ranges = 1usize << log.min(RANGES_LOG);
        let h = m.hasher();
        let mut at: Vec<u16> = items
            .iter()
            .map(|(k, _)| ((h.hash_one(k) & (buckets - 1)) >> shift) as u16)
            .collect();
        // American flag sort: `next[r]` is where range r's next item goes, up to `end[r]`.
        let mut end = vec![0usize; ranges];
        for r in &at {
            if let Some(c) = end.get_mut(usize::from(*r)) {
                *c += 1;
            }
        }
        let mut sum = 0;
        let mut next = Vec::with_capacity(ranges);
        for c in &mut end {
            next.push(sum);
            sum += *c;
            *c = sum;
        }
        for r in 0..ranges {
            while let (Some(&i), Some(&e)) = (next.get(r), end.get(r)) {
                if i >= e {
                    break;
                }
                let Some(&t) = at.get(i) else { break };
                let t = usize::from(t);
                if t == r {
                    if let Some(n) = next.get_mut(r) {
                        *n += 1;
                    }
                    continue;
                }
                // Put item i where range t's next item goes (t > r: its range is not
                // full, so that slot holds an item not yet placed).
                let Some(j) = next.get_mut(t) else { break };
                let to = *j;
                *j += 1;
                items.swap(i, to);
                at.swap(i, to);
            }
        }
    }
    let mut items = items.into_iter();
    while let Some((k, v)) = items.next() {
        if let Some(p) = items.as_slice().get(AHEAD).and_then(|(k, _)| bytes(k)) {
            prefetch(p);
        }
        match m.entry(k) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if replace(e.key(), e.get(), &v) {
                    e.insert(v);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }
}

impl PartBuilder {
    /// Part `part` of `parts`, with room for exactly this many parties, resources and
    /// edges (edges out of its parties, remote ones included).
    pub fn new(part: usize, parts: usize, parties: usize, resources: usize, edges: usize) -> PartBuilder {
        let parts = parts.clamp(1, MAX_PARTS);
        let mut c = Core::new(part as u32);
        c.g.reserve_exact_nodes(parties + resources);
        c.g.reserve_exact_edges(edges);
        c.parties.reserve(parties);
        c.resources.reserve(resources);
        c.degree.reserve(parties + resources);
        PartBuilder {
            c,
            parts,
            idents_out: (0..parts).map(|_| Vec::new()).collect(),
            incoming_out: (0..parts).map(|_| Vec::new()).collect(),
        }
    }

    /// The node the next party added gets.
    pub fn next_node(&self) -> NodeId {
        NodeId {
            part: self.c.part,
            ix: self.c.g.node_bound() as u32,
        }
    }

    /// How many parties were added.
    pub fn party_count(&self) -> usize {
        self.c.g.node_count()
    }

    /// Adds a party (before any resource). Its id and identifiers are indexed apart
    /// ([`PartIdents`], which also finds a repeated id).
    pub fn add_party(&mut self, p: Party) -> NodeId {
        let node = self.next_node();
        self.c.g.add_node(Node::Party(p));
        node
    }

    /// The identifier maps of this part, to fill apart from its nodes (on the thread
    /// that decodes the parties while this one adds them); given back with
    /// [`PartBuilder::put_idents`].
    pub fn take_idents(&mut self) -> PartIdents {
        PartIdents {
            part: self.c.part,
            parts: self.parts,
            maps: std::mem::take(&mut self.c.idents),
            vals: Default::default(),
            out: std::mem::take(&mut self.idents_out),
            keys: Vec::with_capacity(self.c.parties.capacity()),
            ids: std::mem::take(&mut self.c.parties),
        }
    }

    pub fn put_idents(&mut self, i: PartIdents) {
        self.c.idents = i.maps;
        self.idents_out = i.out;
        self.c.parties = i.ids;
    }

    /// The party at `n` of this part (for messages).
    pub fn party(&self, n: NodeId) -> Option<&Party> {
        if n.part != self.c.part {
            return None;
        }
        match self.c.g.node_weight(n.local()) {
            Some(Node::Party(p)) => Some(p),
            _ => None,
        }
    }

    /// Adds an edge out of a party of this part (the caller has checked that it is new
    /// and that both ends exist).
    pub fn add_edge(&mut self, from: NodeId, to: NodeId, w: Edge) {
        let (_, incoming) = self.c.add_fresh_edge(from, to, w);
        post(&mut self.incoming_out, incoming);
    }
}

impl Graph {
    /// The graph of parts built by [`PartBuilder`]s (part `i` by the `i`-th, of as many
    /// parts as builders): each part takes the identifiers and the incoming remote edges
    /// the others kept for it, the parts in parallel. Errors when the builders are not
    /// parts 0.. of one graph.
    pub fn from_builders(builders: Vec<PartBuilder>) -> Result<Graph, String> {
        let n = builders.len();
        if n == 0 || n > MAX_PARTS {
            return Err(format!("{n} parts built"));
        }
        let mut cores = Vec::with_capacity(n);
        let mut idents_in: Vec<Vec<Vec<(IdentKind, IdKey, NodeId)>>> = (0..n).map(|_| Vec::new()).collect();
        let mut incoming_in: Vec<Vec<Vec<Incoming>>> = (0..n).map(|_| Vec::new()).collect();
        for (i, b) in builders.into_iter().enumerate() {
            if b.c.part as usize != i || b.parts != n {
                return Err(format!(
                    "part {} of {} built where part {i} of {n} belongs",
                    b.c.part, b.parts
                ));
            }
            cores.push(b.c);
            for (to, v) in b.idents_out.into_iter().enumerate() {
                if let Some(x) = idents_in.get_mut(to) {
                    x.push(v);
                }
            }
            for (to, v) in b.incoming_out.into_iter().enumerate() {
                if let Some(x) = incoming_in.get_mut(to) {
                    x.push(v);
                }
            }
        }
        let jobs: Vec<_> = cores.into_iter().zip(idents_in).zip(incoming_in).collect();
        let cores = on_parts(jobs, |((mut c, idents), incoming)| {
            let mut kinds = [0usize; 5];
            for (k, _, _) in idents.iter().flatten() {
                kinds[*k as usize] += 1;
            }
            for (m, k) in c.idents.iter_mut().zip(kinds) {
                m.reserve(k);
            }
            for (kind, v, node) in idents.into_iter().flatten() {
                c.idents[kind as usize].insert(v, node);
            }
            let remote: usize = incoming.iter().map(Vec::len).sum();
            c.remote_in.reserve(remote);
            for x in incoming.into_iter().flatten() {
                c.index_incoming(x);
            }
            Arc::new(Part {
                base: Arc::new(c),
                dirty: false,
                d: Delta::default(),
            })
        });
        Ok(Graph {
            parts: cores.into_iter().collect(),
            order: imbl::Vector::new(),
        })
    }
}

/// Puts a remote edge in the outbox of its target's part.
fn post(outbox: &mut [Vec<Incoming>], incoming: Option<Incoming>) {
    if let Some(x) = incoming
        && let Some(out) = outbox.get_mut(x.to.part as usize)
    {
        out.push(x);
    }
}

/// A remote edge as the part of its target indexes it.
#[derive(Debug)]
struct Incoming {
    to: NodeId,
    edge: EdgeId,
    is_key: bool,
    /// The sub-unit, for a main-unit link.
    main_from: Option<NodeId>,
}

/// Runs `f` on every job, on one worker per core (at most one per job); the results in
/// the order of the jobs.
fn on_parts<T: Send, R: Send>(jobs: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let total = jobs.len();
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(total)
        .max(1);
    if workers == 1 {
        return jobs.into_iter().map(f).collect();
    }
    let queue = parking_lot::Mutex::new(jobs.into_iter().enumerate());
    let done = parking_lot::Mutex::new(Vec::with_capacity(total));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let next = queue.lock().next();
                    let Some((i, job)) = next else { break };
                    let r = f(job);
                    done.lock().push((i, r));
                }
            });
        }
    });
    let mut done = done.into_inner();
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Fills a fresh single-part graph: nodes and id map on this thread, identifier maps on
/// another.
fn fill_one(c: &mut Core, batches: Vec<PreparedParties>) -> Result<(), String> {
    let mut kinds = [0usize; 5];
    let mut total = 0;
    for b in &batches {
        total += b.len();
        for (_, k, _) in &b.values {
            kinds[*k as usize] += 1;
        }
    }
    let part = c.part;
    let first = c.g.node_bound();
    let mut nodes = Vec::with_capacity(batches.len());
    let mut maps = Vec::with_capacity(batches.len());
    let mut at = first;
    for b in batches {
        let n = b.len();
        nodes.push((b.parties, b.keys));
        maps.push((at, b.values));
        at += n;
    }
    let Core {
        g, parties, idents, ..
    } = c;
    g.reserve_nodes(total);
    parties.reserve(total);
    for (m, k) in idents.iter_mut().zip(kinds) {
        m.reserve(k);
    }
    let node = move |i: usize| NodeId { part, ix: i as u32 };
    std::thread::scope(|s| {
        s.spawn(move || {
            for (at, values) in maps {
                for (i, kind, v) in values {
                    idents[kind as usize].insert(v, node(at + i as usize));
                }
            }
        });
        for (ps, keys) in nodes {
            for (p, key) in ps.into_iter().zip(keys) {
                match parties.entry(key.into()) {
                    std::collections::hash_map::Entry::Occupied(e) => {
                        return Err(e.key().as_str().to_string());
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(node(g.add_node(Node::Party(p)).index()));
                    }
                }
            }
        }
        Ok(())
    })
}

/// Fills one fresh part of a graph in `n` parts with its parties; returns the
/// identifier values to index, by the part each lives in.
#[allow(clippy::type_complexity)]
fn fill_part(
    c: &mut Core,
    batches: Vec<PreparedParties>,
    n: usize,
) -> Result<(&mut Core, Vec<Vec<(IdentKind, IdKey, NodeId)>>), String> {
    let total: usize = batches.iter().map(PreparedParties::len).sum();
    c.g.reserve_nodes(total);
    c.parties.reserve(total);
    let mut outbox: Vec<Vec<(IdentKind, IdKey, NodeId)>> = (0..n).map(|_| Vec::new()).collect();
    for b in batches {
        let mut nodes = Vec::with_capacity(b.len());
        for (p, key) in b.parties.into_iter().zip(b.keys) {
            match c.parties.entry(key.into()) {
                std::collections::hash_map::Entry::Occupied(e) => return Err(e.key().as_str().to_string()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let i = c.g.add_node(Node::Party(p));
                    let node = NodeId {
                        part: c.part,
                        ix: i.index() as u32,
                    };
                    e.insert(node);
                    nodes.push(node);
                }
            }
        }
        for (i, kind, v) in b.values {
            if let (Some(node), Some(out)) =
                (nodes.get(i as usize), outbox.get_mut(partition_of(v.as_str(), n)))
            {
                out.push((kind, v, *node));
            }
        }
    }
    Ok((c, outbox))
}

/// Adds edges to a fresh single-part graph: petgraph edges on this thread, indexes on
/// another.
fn edges_one(c: &mut Core, batches: Vec<Vec<FullEdge>>) {
    // (from, to, is_key, is_main) of every edge, in the order they are added.
    let meta: Vec<Vec<(NodeId, NodeId, bool, bool)>> = batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|(a, t, w)| (*a, *t, is_key_edge(w), matches!(w, Edge::MainUnit(_))))
                .collect()
        })
        .collect();
    let part = c.part;
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
                degree.at(from).1 += 1;
                degree.at(to).0 += 1;
                if from == to {
                    *loops.entry(from).or_default() += 1;
                }
                if is_key {
                    key_in.entry(to).or_default().push(EdgeId { part, ix: e as u32 });
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
                g.add_edge(a.local(), t.local(), w);
            }
        }
    });
}

/// Adds the edges whose source is in this fresh part of a graph in `n` parts; returns
/// the remote edges by the part of their target, for it to index.
fn edges_part(c: &mut Core, batches: Vec<Vec<FullEdge>>, n: usize) -> Vec<Vec<Incoming>> {
    let mut outbox: Vec<Vec<Incoming>> = (0..n).map(|_| Vec::new()).collect();
    for (a, b, w) in batches.into_iter().flatten() {
        let (_, incoming) = c.add_fresh_edge(a, b, w);
        post(&mut outbox, incoming);
    }
    outbox
}

impl Core {
    /// Adds an edge out of a party of this part, kept in place (a fresh part, or one no
    /// version shares; the caller has checked that it is new and that both ends exist):
    /// the degrees, loops and indexes kept here. For an edge to another part it returns
    /// the entry that part indexes ([`Core::index_incoming`]).
    fn add_fresh_edge(&mut self, from: NodeId, to: NodeId, w: Edge) -> (EdgeId, Option<Incoming>) {
        let part = self.part;
        let is_key = is_key_edge(&w);
        let is_main = matches!(w, Edge::MainUnit(_));
        let same = to.part == part;
        let e = if same {
            let i = self.g.add_edge(from.local(), to.local(), w);
            self.edge_id(i)
        } else {
            let e = EdgeId {
                part,
                ix: self.remote.len() as u32 | REMOTE,
            };
            self.remote.push(Some((from, to, w)));
            self.remote_n += 1;
            self.remote_out.entry(from).or_default().push(e);
            e
        };
        self.degree.at(from).1 += 1;
        if from == to {
            *self.loops.entry(from).or_default() += 1;
        }
        if is_main {
            self.main_of.insert(from, to);
        }
        if !same {
            let incoming = Incoming {
                to,
                edge: e,
                is_key,
                main_from: is_main.then_some(from),
            };
            return (e, Some(incoming));
        }
        self.degree.at(to).0 += 1;
        if is_key {
            self.key_in.entry(to).or_default().push(e);
        }
        if is_main {
            self.subs_of.entry(to).or_default().push(from);
        }
        (e, None)
    }

    /// Indexes, on the part of its target, an edge kept by another part.
    fn index_incoming(&mut self, x: Incoming) {
        self.degree.at(x.to).0 += 1;
        self.remote_in.entry(x.to).or_default().push(x.edge);
        if x.is_key {
            self.key_in.entry(x.to).or_default().push(x.edge);
        }
        if let Some(sub) = x.main_from {
            self.subs_of.entry(x.to).or_default().push(sub);
        }
    }
}

/// The partition a party id belongs to among `n`: FNV-1a of the id, stable across
/// runs, builds and platforms (unlike the std hasher), so the parts of the graph
/// and the sections of a snapshot agree on it.
pub fn partition_of(party: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in party.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if n == 0 { 0 } else { (h % n as u64) as usize }
}

/// The edges at one node: straight from a base, or from a boxed walk of the delta's
/// override of its adjacency list or of a base list with remote edges (see
/// [`Graph::edges_at`]).
enum EdgesAt<'g> {
    Base(
        petgraph::stable_graph::Edges<'g, Edge, petgraph::Directed, u32>,
        Direction,
        &'g Core,
    ),
    Delta(Box<dyn Iterator<Item = (EdgeId, NodeId, &'g Edge)> + 'g>),
    Empty,
}

impl<'g> Iterator for EdgesAt<'g> {
    type Item = (EdgeId, NodeId, &'g Edge);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            EdgesAt::Base(it, dir, c) => it.next().map(|e| {
                let other = if *dir == Direction::Outgoing {
                    e.target()
                } else {
                    e.source()
                };
                (c.edge_id(e.id()), c.id(other), e.weight())
            }),
            EdgesAt::Delta(it) => it.next(),
            EdgesAt::Empty => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A number kept as an identifier key reads as `to_string` writes it.
    #[test]
    fn int_keys_are_the_numbers_in_decimal() {
        let mut vs = vec![
            0,
            1,
            -1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ];
        let mut x: i64 = 1;
        for _ in 0..18 {
            x *= 10;
            vs.extend([x - 1, x, x + 1, -x, 7 * x / 3]);
        }
        for v in vs {
            assert_eq!(IdKey::int(v).as_str(), v.to_string());
        }
    }

    /// A medium world's load is mostly fresh memory, the node array the largest block:
    /// a party node that grows back (e.g. a new field outside `PartyExtra`) shows here.
    #[test]
    fn party_node_is_small() {
        assert!(
            std::mem::size_of::<Party>() <= 128,
            "{}",
            std::mem::size_of::<Party>()
        );
        assert!(
            std::mem::size_of::<Node>() <= 128,
            "{}",
            std::mem::size_of::<Node>()
        );
    }

    /// The rare fields read back as set, and a party whose rare fields are all unset
    /// again equals one that never had them.
    #[test]
    fn party_extra_fields_round_trip() {
        let mut p = Party::new("su1", PartyKind::SystemUser);
        let plain = p.clone();
        p.set_uuid(None);
        assert_eq!(p, plain);
        p.set_system_user_kind(Some(SystemUserKind::Agent));
        p.set_owner(Some("o1".into()));
        p.set_system(Some("sys".into()));
        p.set_uuid(Some("U-1".into()));
        assert_eq!(p.system_user_kind(), Some(SystemUserKind::Agent));
        assert_eq!(p.owner(), Some("o1"));
        assert_eq!(p.system(), Some("sys"));
        assert_eq!(p.uuid(), Some("U-1"));
        assert_ne!(p, plain);
        p.set_system_user_kind(None);
        p.set_owner(None);
        p.set_system(None);
        assert_eq!(p.uuid(), Some("U-1"));
        p.set_uuid(None);
        assert_eq!(p, plain);
    }

    /// A delta reads a base edge from the base unless its bit in the delta's filter is
    /// set: a base edge changed after the world is shared reads its new weight, a
    /// removed one is gone, and every other base edge — those that share a changed
    /// one's bit (index + `BITS`) included — reads the base's; so after the part is
    /// moved onto a compacted base (the filter made again) and changed again, and in
    /// the version shared before.
    #[test]
    fn base_edges_read_through_the_delta_filter() {
        let c = Catalog::builtin();
        let role = c.known.rettighetshaver;
        let pkg = |code: &str| c.package_id(code).unwrap();
        let n = BaseEdgeFilter::BITS as usize + 4;
        let mut g = Graph::new();
        let hub = g.add_party(Party::new("hub", PartyKind::Organisation));
        let key = |to: NodeId| EdgeKey::Assignment { from: hub, to, role };
        let weight = |codes: &[&str]| {
            let mut a = Assignment::new(role);
            for code in codes {
                a.packages.insert(pkg(code));
            }
            Edge::Assignment(a)
        };
        let mut to = Vec::new();
        let mut want: Vec<Option<Edge>> = Vec::new();
        for i in 0..n {
            let t = g.add_party(Party::new(&format!("p{i}"), PartyKind::Person));
            g.set_edge(key(t), Some(weight(&["ulykke"])));
            to.push(t);
            want.push(Some(weight(&["ulykke"])));
        }
        let check = |g: &Graph, want: &[Option<Edge>], what: &str| {
            for (i, t) in to.iter().enumerate() {
                let got = g.find(key(*t)).and_then(|e| g.edge(e));
                assert_eq!(got, want[i].as_ref(), "{what}: edge to p{i}");
            }
            let listed = g
                .outgoing(hub)
                .filter(|(_, _, w)| **w == weight(&["ulykke"]))
                .count();
            let unchanged = want.iter().filter(|w| **w == Some(weight(&["ulykke"]))).count();
            assert_eq!(listed, unchanged, "{what}: unchanged edges listed at the hub");
        };
        let first = g.clone();
        let before = want.clone();
        // Edges 1 and 2 of the base change in the delta; 1 + BITS shares edge 1's bit.
        g.set_edge(key(to[1]), Some(weight(&["ulykke", "skatt-naering"])));
        want[1] = Some(weight(&["ulykke", "skatt-naering"]));
        g.set_edge(key(to[2]), None);
        want[2] = None;
        check(&g, &want, "delta");
        check(&first, &before, "the version shared before");
        // Moved onto the compacted base of that state, then changed again.
        let folded = g.part_state(0).unwrap();
        let onto = folded.compacted().unwrap();
        g.set_edge(key(to[3]), Some(weight(&["skatt-naering"])));
        want[3] = Some(weight(&["skatt-naering"]));
        g.set_edge(key(to[1]), None);
        want[1] = None;
        assert!(g.rebase_part(&folded, &onto));
        check(&g, &want, "rebased");
        let shared = g.clone();
        g.set_edge(key(to[5]), None);
        want[5] = None;
        check(&g, &want, "rebased, changed again");
        drop(shared);
    }

    /// Ids of `n` parties, with every seventh a repeat of an earlier one.
    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                if i % 7 == 6 {
                    format!("p{}", i * 31 % i)
                } else {
                    format!("p{i}")
                }
            })
            .collect()
    }

    /// Inserting in slot order leaves the map that inserting in order does, the later
    /// of two equal keys holding it, for tables large enough to be sorted first.
    #[test]
    fn insert_by_slot_agrees_with_inserting_in_order() {
        for n in [10, 40_000, 700_000] {
            let items: Vec<(String, NodeId)> = ids(n)
                .into_iter()
                .enumerate()
                .map(|(i, k)| (k, NodeId::placed(0, i)))
                .collect();
            let mut want = FxHashMap::default();
            for (k, v) in items.clone() {
                want.insert(k, v);
            }
            let mut got = FxHashMap::default();
            let mut repeats = 0;
            insert_by_slot(
                &mut got,
                items,
                |k: &String| Some(k.as_ptr()),
                |_, held, new| {
                    repeats += 1;
                    new.ix > held.ix
                },
            );
            assert_eq!(got, want, "{n} items");
            assert_eq!(repeats, n - want.len(), "{n} items");
            assert!(repeats > 0, "{n} items");
        }
    }

    /// A part's id map built apart from its nodes finds every party, and a repeated id
    /// is an error naming it.
    #[test]
    fn a_part_id_map_finds_every_party_and_refuses_a_repeated_id() {
        for repeat in [false, true] {
            let n = 50_000;
            let mut b = PartBuilder::new(0, 1, n, 0, 0);
            let mut idents = b.take_idents();
            for i in 0..n {
                let id = if repeat && i == n - 1 {
                    "p123".to_string()
                } else {
                    format!("p{i}")
                };
                let mut p = Party::new(&id, PartyKind::Person);
                p.party_id = Some(i as i64);
                idents.add(&p, b.next_node());
                b.add_party(p);
            }
            let done = idents.index();
            b.put_idents(idents);
            if repeat {
                assert_eq!(done, Err("p123".to_string()));
                continue;
            }
            assert_eq!(done, Ok(()));
            let g = Graph::from_builders(vec![b]).unwrap();
            for i in (0..n).step_by(97) {
                let node = g.party_node(&format!("p{i}")).unwrap();
                assert_eq!(&*g.party(node).unwrap().id, format!("p{i}"));
                assert_eq!(g.party_by_ident(IdentKind::PartyId, &i.to_string()), Some(node));
            }
        }
    }
}
