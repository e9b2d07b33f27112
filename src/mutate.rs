//! Mutations: events → validation → apply, with the cascades of domain.md §6, and
//! `simulate`, which applies an event to a private copy and measures what it removed,
//! comparing accesses one subject at a time within a [`Budget`].
//!
//! Every change goes through a [`Tx`] that records how to undo it, keyed by what an
//! edge *means* ([`EdgeKey`]) rather than by its index, because an edge removed and put
//! back gets a new index. A refused event rolls back whatever it had done, so a refused
//! event changes nothing; a batch of events is one transaction.
//!
//! Validation follows the spec's order of faults: shape (`invalid_input`), references
//! (`unknown_*`), structure (`not_assignable`, `not_delegable`, `invalid_agent`), the
//! actor (`not_authorized`), then state (`has_dependants`, `conflict`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::DateTime;

use crate::catalog::{Catalog, PackageSet};
use crate::event::{
    AgentEvent, ConnectionEvent, DelegateEvent, Event, GrantEvent, PartyEvent, ResourceEvent, RoleEvent,
};
use crate::graph::{
    Actions, Assignment, Delegation, Edge, EdgeId, EdgeKey, NodeId, Party, Resource, Rule, Token,
};
use crate::model::{Error, ErrorCode, PackageId, PartyKind, Result, RoleId, SystemUserKind, quote};
use crate::resolve::{self, DelegationVerdict};
use crate::world::World;

enum Undo {
    Edge(EdgeKey, Option<Edge>),
    /// Restore a party's attributes, or (None) remove a node created by the transaction.
    Node(NodeId, Option<Party>),
    Resource(NodeId, Option<Resource>),
    Clock(Option<chrono::DateTime<chrono::FixedOffset>>),
    A2Retired(bool),
    /// A change to the system register or the requests (see [`crate::sysuser`]).
    Sys(crate::sysuser::SysUndo),
    /// A change to the decision point's state (see [`crate::pdp`]).
    Pdp(crate::pdp::PdpUndo),
    /// A change to the consents (see [`crate::consent`]).
    Consent(crate::consent::ConsentUndo),
    /// A change to the suppliers and scope delegations (see [`crate::supplier`]).
    Supplier(crate::supplier::SupplierUndo),
}

/// What an applied event changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changed: bool,
    /// Assignments the event deleted: (from, to, role code).
    pub removed_assignments: Vec<(String, String, String)>,
    /// Client delegations the event deleted: (client, facilitator, agent).
    pub removed_delegations: Vec<(String, String, String)>,
}

/// A transaction over the world: changes with their undo log.
pub struct Tx<'w> {
    pub w: &'w mut World,
    undo: Vec<Undo>,
}

impl<'w> Tx<'w> {
    pub fn new(w: &'w mut World) -> Tx<'w> {
        Tx { w, undo: Vec::new() }
    }

    pub(crate) fn set_edge(&mut self, key: EdgeKey, new: Option<Edge>) {
        let old = self.w.graph.set_edge(key, new);
        self.undo.push(Undo::Edge(key, old));
    }

    pub(crate) fn edge(&self, key: EdgeKey) -> Option<Edge> {
        self.w.graph.find(key).and_then(|e| self.w.graph.edge(e)).cloned()
    }

    /// [`Tx::edge`] with where it was found, for [`Tx::set_found_edge`].
    pub(crate) fn edge_found(&self, key: EdgeKey) -> (Option<EdgeId>, Option<Edge>) {
        let found = self.w.graph.find(key);
        (found, found.and_then(|e| self.w.graph.edge(e)).cloned())
    }

    /// [`Tx::set_edge`] given `found` from [`Tx::edge_found`] of the same key, with no
    /// change to that edge since (other edges may have changed: indices are stable).
    pub(crate) fn set_found_edge(&mut self, key: EdgeKey, found: Option<EdgeId>, new: Option<Edge>) {
        let old = self.w.graph.set_found_edge(key, found, new);
        self.undo.push(Undo::Edge(key, old));
    }

    /// Adds a new party node, undoably.
    pub(crate) fn add_party(&mut self, p: Party) -> NodeId {
        let n = self.w.graph.add_party(p);
        self.undo.push(Undo::Node(n, None));
        n
    }

    /// Records how to undo a change to the system-user state.
    pub(crate) fn push_sys_undo(&mut self, u: crate::sysuser::SysUndo) {
        self.undo.push(Undo::Sys(u));
    }

    /// Records how to undo a change to the decision point's state.
    pub(crate) fn push_pdp_undo(&mut self, u: crate::pdp::PdpUndo) {
        self.undo.push(Undo::Pdp(u));
    }

    /// Records how to undo a change to the consents.
    pub(crate) fn push_consent_undo(&mut self, u: crate::consent::ConsentUndo) {
        self.undo.push(Undo::Consent(u));
    }

    /// Records how to undo a change to the suppliers and scope delegations.
    pub(crate) fn push_supplier_undo(&mut self, u: crate::supplier::SupplierUndo) {
        self.undo.push(Undo::Supplier(u));
    }

    /// Creates or replaces a resource node, undoably.
    pub(crate) fn put_resource(&mut self, res: Resource) -> NodeId {
        match self.w.graph.resource_node(&res.id) {
            Some(n) => {
                let old = self.w.graph.resource(n).cloned();
                if let Some(cur) = self.w.graph.resource_mut(n) {
                    *cur = res;
                }
                self.undo.push(Undo::Resource(n, old));
                n
            }
            None => {
                let n = self.w.graph.add_resource(res);
                self.undo.push(Undo::Resource(n, None));
                n
            }
        }
    }

    /// Undo everything since the transaction began.
    pub fn rollback(mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Edge(key, old) => {
                    self.w.graph.set_edge(key, old);
                }
                Undo::Node(n, Some(p)) => {
                    if let Some(cur) = self.w.graph.party_mut(n) {
                        *cur = p;
                    }
                    self.w.graph.reindex_party(n);
                }
                Undo::Node(n, None) => self.w.graph.remove_node(n),
                Undo::Resource(n, Some(r)) => {
                    if let Some(cur) = self.w.graph.resource_mut(n) {
                        *cur = r;
                    }
                }
                Undo::Resource(n, None) => self.w.graph.remove_node(n),
                Undo::Clock(c) => self.w.now = c,
                Undo::A2Retired(b) => self.w.a2_retired = b,
                Undo::Sys(u) => crate::sysuser::undo(self.w, u),
                Undo::Pdp(u) => crate::pdp::undo(self.w, u),
                Undo::Consent(u) => crate::consent::undo(self.w, u),
                Undo::Supplier(u) => crate::supplier::undo(self.w, u),
            }
        }
    }

    /// What the transaction has changed so far, compared with where it started.
    pub fn outcome(&self) -> Outcome {
        // Each changed edge once, with its value before the transaction, in the order
        // first changed. A write's log is a few entries: searched, not hashed.
        let mut first: Vec<(EdgeKey, &Option<Edge>)> = Vec::new();
        let short = self.undo.len() <= 16;
        let mut seen: HashSet<EdgeKey> = HashSet::new();
        let mut changed = false;
        for u in &self.undo {
            match u {
                Undo::Edge(k, old) => {
                    let new = if short {
                        !first.iter().any(|(f, _)| f == k)
                    } else {
                        seen.insert(*k)
                    };
                    if new {
                        first.push((*k, old));
                    }
                }
                // Judged below, against the state now (§10).
                Undo::Supplier(_) => {}
                _ => changed = true,
            }
        }
        let c = self.w.catalog;
        let g = &self.w.graph;
        let mut out = Outcome::default();
        for (k, before) in first {
            let before = before.as_ref();
            let after = g.find(k).and_then(|e| g.edge(e));
            if before != after {
                changed = true;
            }
            if before.is_some() && after.is_none() {
                match k {
                    EdgeKey::Assignment { from, to, role } => out.removed_assignments.push((
                        g.ext_id(from).to_string(),
                        g.ext_id(to).to_string(),
                        c.role(role).code.clone(),
                    )),
                    EdgeKey::MainUnit { sub, main } => out.removed_assignments.push((
                        g.ext_id(sub).to_string(),
                        g.ext_id(main).to_string(),
                        "hovedenhet".to_string(),
                    )),
                    EdgeKey::Delegation {
                        client,
                        agent,
                        facilitator,
                        ..
                    } => out.removed_delegations.push((
                        g.ext_id(client).to_string(),
                        g.ext_id(facilitator).to_string(),
                        g.ext_id(agent).to_string(),
                    )),
                }
            }
        }
        // Supplier relationships live outside the graph: a removed one is a removed
        // assignment too (§10.4).
        let supplier_undo = self.undo.iter().filter_map(|u| match u {
            Undo::Supplier(s) => Some(s),
            _ => None,
        });
        changed |= crate::supplier::outcome(self.w, supplier_undo, &mut out);
        out.changed = changed;
        out
    }

    /// Removes a client delegation.
    fn remove_delegation(&mut self, key: EdgeKey) {
        self.set_edge(key, None);
    }

    /// The client delegations built on an assignment: those that start at it (it is the
    /// client assignment) and those that end at it (it is the agent assignment).
    fn delegations_on(&self, from: NodeId, to: NodeId, role: RoleId) -> Vec<EdgeKey> {
        let g = &self.w.graph;
        let mut out = Vec::new();
        for (e, _, edge) in g.outgoing(from) {
            if let Edge::Delegation(d) = edge
                && d.facilitator == to
                && d.role == role
                && let Some(k) = g.key_of(e)
            {
                out.push(k);
            }
        }
        if role == self.w.catalog.known.agent {
            for (e, _, edge) in g.incoming(to) {
                if let Edge::Delegation(d) = edge
                    && d.facilitator == from
                    && let Some(k) = g.key_of(e)
                {
                    out.push(k);
                }
            }
        }
        out
    }

    /// Removes an assignment and everything that hangs on it (§6).
    fn remove_assignment_cascading(&mut self, from: NodeId, to: NodeId, role: RoleId) {
        for k in self.delegations_on(from, to, role) {
            self.remove_delegation(k);
        }
        self.set_edge(EdgeKey::Assignment { from, to, role }, None);
    }
}

/// Applies one event; a refused event changes nothing.
pub fn apply(w: &mut World, ev: &Event) -> Result<Outcome> {
    apply_batch(w, std::slice::from_ref(ev))
}

/// Applies events atomically: all of them, or (on the first refusal) none.
pub fn apply_batch(w: &mut World, evs: &[Event]) -> Result<Outcome> {
    let mut tx = Tx::new(w);
    for (i, ev) in evs.iter().enumerate() {
        if let Err(mut e) = apply_in(&mut tx, ev) {
            tx.rollback();
            e.event = Some(i);
            return Err(e);
        }
    }
    Ok(tx.outcome())
}

/// Validates events as [`apply_batch`] would and reports what they would change, then
/// undoes them: the world is left as it was (the service's dry run before the journal).
pub fn dry_run_batch(w: &mut World, evs: &[Event]) -> Result<Outcome> {
    let mut tx = Tx::new(w);
    for ev in evs {
        if let Err(e) = apply_in(&mut tx, ev) {
            tx.rollback();
            return Err(e);
        }
    }
    let out = tx.outcome();
    tx.rollback();
    Ok(out)
}

/// One access that a simulated event would take away.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    Package {
        subject: String,
        party: String,
        package: String,
    },
    Resource {
        subject: String,
        party: String,
        resource: String,
        action: String,
    },
}

/// What `simulate` predicts.
#[derive(Debug, Clone, Default)]
pub struct Simulation {
    pub lost: BTreeSet<Access>,
    pub removed_assignments: usize,
    pub removed_delegations: usize,
    pub outcome: Outcome,
}

/// Every access of `x` as external ids: (party, package) and (party, resource, action);
/// with `parties`, only the accesses for those parties.
pub fn accesses_of(w: &World, x: NodeId, parties: Option<&BTreeSet<NodeId>>) -> BTreeSet<Access> {
    let mut by_party: BTreeMap<NodeId, Vec<resolve::Record>> = BTreeMap::new();
    match parties {
        None => {
            for r in resolve::records(w, x, None) {
                by_party.entry(r.from).or_default().push(r);
            }
        }
        Some(ps) => {
            for f in ps {
                let recs = resolve::records(w, x, Some(*f));
                if !recs.is_empty() {
                    by_party.insert(*f, recs);
                }
            }
        }
    }
    let c = w.catalog;
    let g = &w.graph;
    let subject = g.ext_id(x).to_string();
    let mut out = BTreeSet::new();
    for (f, recs) in by_party {
        let party = g.ext_id(f).to_string();
        let mut pk = PackageSet::EMPTY;
        for r in &recs {
            pk.union_with(&r.packages);
        }
        for p in pk.iter() {
            out.insert(Access::Package {
                subject: subject.clone(),
                party: party.clone(),
                package: c.package(p).code.clone(),
            });
        }
        let permitted = crate::decide::permitted_actions(w, f, &recs);
        for (res, action) in permitted {
            out.insert(Access::Resource {
                subject: subject.clone(),
                party: party.clone(),
                resource: g.ext_id(res).to_string(),
                action,
            });
        }
    }
    out
}

/// Where a change can alter accesses, found from the nodes it touched.
///
/// A record of X for F rests on edges whose giver is F, F's main unit or an ENK that F
/// owns, and on the key-role edge of X when it inherits. So a change around the touched
/// nodes T can alter only: subjects in T, the receivers of T's edges and those receivers'
/// key-role holders; and, for each of them, only the parties in T, their sub-units and
/// the owners of ENKs in T — except for a subject whose own key-role edge or attributes
/// changed, which may lose any party.
struct Reach {
    subjects: BTreeSet<NodeId>,
    parties: BTreeSet<NodeId>,
    /// Subjects whose every party must be compared.
    whole: BTreeSet<NodeId>,
}

fn reach(w: &World, touched: &BTreeSet<NodeId>, whole: &BTreeSet<NodeId>) -> Reach {
    let c = w.catalog;
    let g = &w.graph;
    let mut subjects = touched.clone();
    let mut hop1 = BTreeSet::new();
    for t in touched {
        for (_, to, e) in g.outgoing(*t) {
            if matches!(e, Edge::Assignment(_) | Edge::Delegation(_)) {
                hop1.insert(to);
            }
        }
    }
    for h in &hop1 {
        for (_, to, e) in g.outgoing(*h) {
            if let Edge::Assignment(a) = e
                && c.is_key_role(a.role)
            {
                subjects.insert(to);
            }
        }
    }
    subjects.extend(hop1);
    let mut parties = touched.clone();
    for t in touched {
        parties.extend(resolve::repeated_to(w, *t));
    }
    let whole = whole.iter().filter(|n| g.party(**n).is_some()).copied().collect();
    Reach {
        subjects,
        parties,
        whole,
    }
}

/// One access in engine ids (compared between the worlds before and after an event;
/// only the lost ones are turned into external ids).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum RawAccess {
    Package(NodeId, PackageId),
    /// (party, resource, action as its number in [`ActionNames`]).
    Resource(NodeId, NodeId, u32),
}

/// The policy step's permits of one class of holders: the (resource, action) pairs whose
/// policy answers Permit to anyone holding exactly these roles and packages, with
/// whether the resource is in access-list mode. The policy step of a decision reads
/// only the roles and packages held (`rules` match them; an XACML policy sees the
/// rights the information point adds from them), never the party, so a class is
/// evaluated once per world; the grants and the access lists, which do depend on the
/// records and the party, are applied per party.
type ClassPermits = std::sync::Arc<Vec<(NodeId, u32, bool)>>;

/// The classes evaluated in one world.
#[derive(Default)]
struct Classes {
    map: HashMap<(crate::catalog::RoleSet, PackageSet), ClassPermits>,
    /// Entries held in all classes (counted in the simulation's budget).
    entries: usize,
}

/// Action names by number, shared by the worlds before and after (so that their
/// accesses compare as numbers).
#[derive(Default)]
struct ActionNames {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl ActionNames {
    fn id(&mut self, a: &str) -> u32 {
        if let Some(i) = self.ids.get(a) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.names.push(a.to_string());
        self.ids.insert(a.to_string(), i);
        i
    }

    fn name(&self, i: u32) -> &str {
        self.names.get(i as usize).map_or("", String::as_str)
    }
}

fn class_permits(
    w: &World,
    classes: &mut Classes,
    names: &mut ActionNames,
    recs: &[resolve::Record],
) -> ClassPermits {
    use crate::decide::{self, Form};
    use crate::pdp::response::Decision;
    let key = decide::held(recs);
    if let Some(p) = classes.map.get(&key) {
        return p.clone();
    }
    let (roles, packages) = &key;
    let mut out = Vec::new();
    for (n, res) in w.graph.resources() {
        // On a background thread (simulate), give way to readers between resources.
        crate::background::pace();
        // Records never permit on a consent resource (domain.md §9.5), so simulate's
        // lost set leaves it out (as `decide::permitted_actions` does).
        if matches!(res.kind, crate::graph::ResourceKind::Consent { .. }) {
            continue;
        }
        // The actions of rules naming a held token (as `decide::permitted_actions`
        // gathers them).
        let mut actions = BTreeSet::new();
        for rule in &res.rules {
            if rule
                .any_of
                .iter()
                .any(|t| resolve::token_matches(w, *t, roles, packages))
            {
                actions.extend(rule.actions.iter().cloned());
            }
        }
        let list_mode = decide::in_list_mode(w, &res.id);
        match decide::form(w, &res.id) {
            Form::Xacml(policy) => {
                // And every action the policy pins, decided by the policy.
                actions.extend(crate::pdp::records::policy_actions(policy));
                for a in actions {
                    if crate::pdp::records::policy_decision(w, &res.id, policy, recs, &a) == Decision::Permit
                    {
                        out.push((n, names.id(&a), list_mode));
                    }
                }
            }
            // A rule naming a held token permits the actions it lists.
            Form::Rules(_) => out.extend(actions.into_iter().map(|a| (n, names.id(&a), list_mode))),
            Form::Missing => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    classes.entries += out.len();
    let out = std::sync::Arc::new(out);
    classes.map.insert(key, out.clone());
    out
}

/// The resource actions `recs` (one subject's records for `party`) are permitted: the
/// class's policy permits that the access lists let stand, then the actions of the
/// grants the records carry, decided in full. The same answer as
/// `decide::permitted_actions`, with the policy step evaluated once per class.
fn permitted_by_class(
    w: &World,
    class: &ClassPermits,
    names: &mut ActionNames,
    party: NodeId,
    recs: &[resolve::Record],
    out: &mut Vec<(NodeId, u32)>,
) {
    for (n, a, list_mode) in class.iter() {
        let stands = !list_mode
            || w.graph.resource(*n).is_some_and(|r| {
                crate::decide::lists_allow(w, &r.id, Some(party), &[names.name(*a).to_string()])
            });
        if stands {
            out.push((*n, *a));
        }
    }
    for r in recs {
        for (res, acts) in resolve::resource_grants(w, r).into_iter().flatten() {
            for a in acts {
                if crate::decide::permits_with(w, recs, party, *res, a, None) {
                    out.push((*res, names.id(a)));
                }
            }
        }
    }
}

/// One subject's view of one party: the packages held, the class's policy permits, and
/// the records (for the grants and the access lists, when they matter).
struct PartyView {
    party: NodeId,
    packages: PackageSet,
    class: ClassPermits,
    /// No grant on the records and no resource in access-list mode among the class's
    /// permits: the resource permits are exactly the class's.
    simple: bool,
    recs: Vec<resolve::Record>,
}

impl PartyView {
    /// The resource permits, sorted.
    fn resources(&self, w: &World, names: &mut ActionNames) -> Vec<(NodeId, u32)> {
        if self.simple {
            return self.class.iter().map(|(n, a, _)| (*n, *a)).collect();
        }
        let mut out = Vec::new();
        permitted_by_class(w, &self.class, names, self.party, &self.recs, &mut out);
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// `x`'s views of its parties (with `parties`, only of those), in party order.
fn party_views(
    w: &World,
    classes: &mut Classes,
    names: &mut ActionNames,
    x: NodeId,
    parties: Option<&BTreeSet<NodeId>>,
) -> Vec<PartyView> {
    let mut by_party: BTreeMap<NodeId, Vec<resolve::Record>> = BTreeMap::new();
    match parties {
        None => {
            for r in resolve::records(w, x, None) {
                by_party.entry(r.from).or_default().push(r);
            }
        }
        Some(ps) => {
            for f in ps {
                let recs = resolve::records(w, x, Some(*f));
                if !recs.is_empty() {
                    by_party.insert(*f, recs);
                }
            }
        }
    }
    by_party
        .into_iter()
        .map(|(party, recs)| {
            let mut packages = PackageSet::EMPTY;
            for r in &recs {
                packages.union_with(&r.packages);
            }
            let class = class_permits(w, classes, names, &recs);
            let grants = recs
                .iter()
                .any(|r| resolve::resource_grants(w, r).is_some_and(|g| !g.is_empty()));
            let simple = !grants && !class.iter().any(|(_, _, list)| *list);
            PartyView {
                party,
                packages,
                class,
                simple,
                recs,
            }
        })
        .collect()
}

/// Entries of `a` not in `b` (both sorted).
fn sorted_minus<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    let mut j = 0;
    for x in a {
        while b.get(j).is_some_and(|y| y < x) {
            j += 1;
        }
        if b.get(j) != Some(x) {
            out.push(*x);
        }
    }
    out
}

/// The class permits lost between two classes, by their addresses (both worlds' classes
/// live as long as the simulation, so the addresses stay theirs).
type DiffCache = HashMap<(usize, usize), std::sync::Arc<Vec<(NodeId, u32)>>>;

/// What `x` loses between its views `before` and `after` (both in party order).
fn lost_between(
    w: &World,
    after_w: &World,
    names: &mut ActionNames,
    diffs: &mut DiffCache,
    before: &[PartyView],
    after: &[PartyView],
) -> Vec<RawAccess> {
    let mut out = Vec::new();
    let mut j = 0;
    for b in before {
        while after.get(j).is_some_and(|a| a.party < b.party) {
            j += 1;
        }
        let a = after.get(j).filter(|a| a.party == b.party);
        let kept_packages = a.map_or(PackageSet::EMPTY, |a| a.packages);
        out.extend(
            b.packages
                .iter()
                .filter(|p| !kept_packages.contains(*p))
                .map(|p| RawAccess::Package(b.party, p)),
        );
        let lost: Vec<(NodeId, u32)> = match a {
            None => b.resources(w, names),
            Some(a) if b.simple && a.simple => {
                if std::sync::Arc::ptr_eq(&b.class, &a.class) {
                    Vec::new()
                } else {
                    let key = (
                        std::sync::Arc::as_ptr(&b.class) as usize,
                        std::sync::Arc::as_ptr(&a.class) as usize,
                    );
                    let d = diffs.entry(key).or_insert_with(|| {
                        std::sync::Arc::new(sorted_minus(
                            &b.resources(w, names),
                            &a.resources(after_w, names),
                        ))
                    });
                    d.to_vec()
                }
            }
            Some(a) => sorted_minus(&b.resources(w, names), &a.resources(after_w, names)),
        };
        out.extend(
            lost.into_iter()
                .map(|(n, act)| RawAccess::Resource(b.party, n, act)),
        );
    }
    out
}

/// What a simulation may spend: a deadline, how many entries it may hold at once, and
/// a flag that stops it (the client went away).
///
/// The memory a simulation holds is counted, not measured: the entries of the event's
/// change log (one per edge, node or state it changed, cascades included) plus the
/// accesses of the one subject being compared, before and after. Subjects are compared
/// one at a time and only the lost accesses the caller keeps stay, so nothing else
/// grows with the world.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    /// Past this instant the simulation stops with [`SimError::OverTime`].
    pub deadline: Option<std::time::Instant>,
    /// The most entries held at once (see above); 0 means no limit.
    pub max_entries: usize,
    /// Set by someone else to stop the simulation ([`SimError::Cancelled`]).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Budget {
    /// No deadline, no entry limit, no cancellation (scenario files, the CLI, tests).
    pub fn unlimited() -> Budget {
        Budget::default()
    }

    fn check_time(&self) -> std::result::Result<(), SimError> {
        // Called between steps: on a background thread, give way to waiting readers.
        crate::background::pace();
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(SimError::Cancelled);
        }
        if self.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(SimError::OverTime);
        }
        Ok(())
    }

    fn check_entries(&self, held: usize, what: &str) -> std::result::Result<(), SimError> {
        if self.max_entries > 0 && held > self.max_entries {
            return Err(SimError::OverEntries {
                held,
                max: self.max_entries,
                what: what.to_string(),
            });
        }
        Ok(())
    }
}

/// Why a simulation gave no answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The event itself is refused (the error the same event would get as a write).
    #[error(transparent)]
    Refused(#[from] Error),
    #[error("the simulation ran past its time budget")]
    OverTime,
    #[error("the simulation would hold {held} entries ({what}), more than its budget of {max}")]
    OverEntries { held: usize, max: usize, what: String },
    #[error("the simulation was cancelled")]
    Cancelled,
}

/// The totals of a streamed simulation (the lost accesses went to the sink).
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    pub lost_count: usize,
    /// Subjects whose accesses were compared.
    pub subjects: usize,
    pub outcome: Outcome,
}

/// What `simulate` needs to know about the change, read from the change log.
struct Touched {
    nodes: BTreeSet<NodeId>,
    whole: BTreeSet<NodeId>,
    attributes_changed: bool,
}

fn touched_by(tx: &Tx<'_>) -> Touched {
    let c = tx.w.catalog;
    let mut t = Touched {
        nodes: BTreeSet::new(),
        whole: BTreeSet::new(),
        attributes_changed: false,
    };
    for u in &tx.undo {
        match u {
            Undo::Edge(k, _) => match *k {
                EdgeKey::Assignment { from, to, role } => {
                    t.nodes.insert(from);
                    t.nodes.insert(to);
                    if c.is_key_role(role) {
                        t.whole.insert(to);
                    }
                }
                EdgeKey::Delegation {
                    client,
                    agent,
                    facilitator,
                    ..
                } => {
                    t.nodes.extend([client, agent, facilitator]);
                }
                EdgeKey::MainUnit { sub, main } => {
                    t.nodes.extend([sub, main]);
                }
            },
            Undo::Node(n, _) => {
                t.attributes_changed = true;
                t.nodes.insert(*n);
                for (_, s, _) in tx.w.graph.incoming(*n) {
                    t.nodes.insert(s);
                }
                for (_, o, _) in tx.w.graph.outgoing(*n) {
                    t.nodes.insert(o);
                }
            }
            _ => {}
        }
    }
    t
}

/// Predicts what `ev` would remove and which accesses would be lost, changing nothing:
/// every lost access, sorted. Without a budget (scenario files, the CLI, tests); the
/// server uses [`simulate_streaming`].
pub fn simulate(w: &mut World, ev: &Event) -> Result<Simulation> {
    let mut lost = BTreeSet::new();
    let s =
        simulate_streaming(w, ev, &Budget::unlimited(), |l| lost.extend(l.accesses())).map_err(
            |e| match e {
                SimError::Refused(e) => e,
                // An unlimited budget neither runs out nor is cancelled.
                other => Error::invalid(other.to_string()),
            },
        )?;
    Ok(Simulation {
        lost,
        removed_assignments: s.outcome.removed_assignments.len(),
        removed_delegations: s.outcome.removed_delegations.len(),
        outcome: s.outcome,
    })
}

/// Predicts what `ev` would remove and which accesses would be lost, changing nothing,
/// within `budget`, handing the lost accesses to `sink` one subject at a time, subjects
/// in the order of their external ids.
///
/// The event is applied once, to a private O(1) copy of `w` (`after`); `w` is `before`.
/// Accesses are compared only where the change can reach (see `Reach`) — every subject
/// for a global event (`resource`, `retire_a2_roles`, `clock`, `policy`,
/// `access_list`) — over the same subjects and parties before and after, one subject
/// at a time: the accesses of one subject are all that is held besides the change.
pub fn simulate_streaming(
    w: &World,
    ev: &Event,
    budget: &Budget,
    mut sink: impl FnMut(SubjectLoss<'_>),
) -> std::result::Result<Streamed, SimError> {
    budget.check_time()?;
    // Events that change policies or global state can touch anyone.
    let global = matches!(
        ev,
        Event::Resource(_)
            | Event::RetireA2Roles(_)
            | Event::Clock(_)
            | Event::Policy(_)
            | Event::AccessList(_)
    );
    let mut after = w.clone();
    let (outcome, touched, changes) = {
        let mut tx = Tx::new(&mut after);
        // A refusal leaves a half-changed private copy, which is dropped.
        apply_in(&mut tx, ev)?;
        // The transaction is not rolled back: `after` keeps the change.
        (tx.outcome(), touched_by(&tx), tx.undo.len())
    };
    budget.check_entries(changes, "the event's changes")?;
    budget.check_time()?;
    let g = &w.graph;
    let region = if global {
        Reach {
            subjects: BTreeSet::new(),
            parties: BTreeSet::new(),
            whole: BTreeSet::new(),
        }
    } else {
        let t: BTreeSet<NodeId> = touched
            .nodes
            .iter()
            .filter(|n| g.party(**n).is_some())
            .copied()
            .collect();
        let mut r = reach(w, &t, &touched.whole);
        let ra = reach(&after, &touched.nodes, &touched.whole);
        r.subjects.extend(ra.subjects);
        r.parties.extend(ra.parties);
        r.whole.extend(ra.whole);
        if touched.attributes_changed {
            r.whole = r.subjects.clone();
        }
        r
    };
    // Subjects in the order of their external ids, so that the first N lost accesses a
    // caller keeps are the first N of the sorted answer.
    // Sorted as (id, node) pairs: comparing the ids in place, not looking each node's
    // id up again per comparison (a global event on a national world sorts millions).
    // On a background thread, this walk over every party and its sort give way to
    // readers too.
    let mut pacer = crate::background::Pacer::new();
    let mut keyed: Vec<(&str, NodeId)> = if global {
        g.parties()
            .map(|(n, p)| {
                pacer.step();
                (&*p.id, n)
            })
            .collect()
    } else {
        region
            .subjects
            .iter()
            .filter(|n| g.party(**n).is_some())
            .map(|n| (g.ext_id(*n), *n))
            .collect()
    };
    budget.check_time()?;
    // Ids are unique: an unstable sort gives the one order.
    keyed.sort_unstable_by(|a, b| {
        pacer.step();
        a.0.cmp(b.0)
    });
    let subjects: Vec<NodeId> = keyed.into_iter().map(|(_, n)| n).collect();
    budget.check_time()?;
    let parties: BTreeSet<NodeId> = region
        .parties
        .iter()
        .filter(|n| g.party(**n).is_some())
        .copied()
        .collect();
    let mut out = Streamed {
        outcome,
        ..Streamed::default()
    };
    let (mut classes_before, mut classes_after) = (Classes::default(), Classes::default());
    let mut names = ActionNames::default();
    const HELD: &str = "the event's changes, the classes' permits and one subject's accesses";
    let mut diffs = DiffCache::new();
    for s in subjects {
        budget.check_time()?;
        let only = (!global && !region.whole.contains(&s)).then_some(&parties);
        let before = party_views(w, &mut classes_before, &mut names, s, only);
        let now = if after.graph.party(s).is_some() {
            party_views(&after, &mut classes_after, &mut names, s, only)
        } else {
            Vec::new()
        };
        let lost = lost_between(w, &after, &mut names, &mut diffs, &before, &now);
        let fixed = changes + classes_before.entries + classes_after.entries + diffs.len();
        budget.check_entries(fixed + before.len() + now.len() + lost.len(), HELD)?;
        out.subjects += 1;
        if !lost.is_empty() {
            out.lost_count += lost.len();
            sink(SubjectLoss {
                w,
                names: &names,
                subject: s,
                lost,
            });
        }
    }
    Ok(out)
}

/// The accesses one subject would lose, in engine ids until asked for as external ids
/// (a caller that keeps only the first N need not build the rest).
pub struct SubjectLoss<'a> {
    w: &'a World,
    names: &'a ActionNames,
    subject: NodeId,
    lost: Vec<RawAccess>,
}

impl SubjectLoss<'_> {
    pub fn len(&self) -> usize {
        self.lost.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lost.is_empty()
    }

    /// The lost accesses as external ids.
    pub fn accesses(self) -> Vec<Access> {
        let (w, names, s) = (self.w, self.names, self.subject);
        self.lost.into_iter().map(|a| external(w, names, s, a)).collect()
    }
}

fn external(w: &World, names: &ActionNames, s: NodeId, a: RawAccess) -> Access {
    let g = &w.graph;
    match a {
        RawAccess::Package(f, p) => Access::Package {
            subject: g.ext_id(s).to_string(),
            party: g.ext_id(f).to_string(),
            package: w.catalog.package(p).code.clone(),
        },
        RawAccess::Resource(f, r, action) => Access::Resource {
            subject: g.ext_id(s).to_string(),
            party: g.ext_id(f).to_string(),
            resource: g.ext_id(r).to_string(),
            action: names.name(action).to_string(),
        },
    }
}

// ----------------------------------------------------------------------------------
// Validation helpers

fn party(w: &World, id: &str) -> Result<NodeId> {
    w.graph.party_node(id).ok_or_else(|| Error::unknown_party(id))
}

fn opt_party(w: &World, id: Option<&String>) -> Result<Option<NodeId>> {
    id.map(|i| party(w, i)).transpose()
}

fn role(c: &Catalog, name: &str) -> Result<RoleId> {
    c.role_id(name).ok_or_else(|| c.unknown_role(name))
}

fn package(c: &Catalog, name: &str) -> Result<PackageId> {
    c.package_id(name).ok_or_else(|| c.unknown_package(name))
}

fn resource(w: &World, id: &str) -> Result<NodeId> {
    w.graph
        .resource_node(id)
        .ok_or_else(|| Error::unknown_resource(id))
}

fn non_empty(field: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(Error::invalid(format!("`{field}` must not be empty")));
    }
    Ok(())
}

fn actions_of(field: &str, v: &[String]) -> Result<Actions> {
    if v.is_empty() {
        return Err(Error::invalid(format!("`{field}` must name at least one action")));
    }
    let mut out = Actions::new();
    for a in v {
        non_empty(field, a)?;
        out.insert(a.trim().to_lowercase());
    }
    Ok(out)
}

fn kind_of(w: &World, n: NodeId) -> Option<PartyKind> {
    w.graph.party(n).map(|p| p.kind)
}

/// Does `by` hold package `p` for `party` (through any path; read from `by`'s side)?
fn holds(w: &World, by: NodeId, party: NodeId, p: PackageId) -> bool {
    resolve::actor_has_package(w, by, party, p)
}

fn require_client_admin(w: &World, by: Option<NodeId>, facilitator: NodeId) -> Result<()> {
    if let Some(b) = by
        && !holds(w, b, facilitator, w.catalog.known.klientadministrator)
    {
        return Err(Error::not_authorized(format!(
            "`{}` does not hold klientadministrator for `{}`",
            w.graph.ext_id(b),
            w.graph.ext_id(facilitator)
        )));
    }
    Ok(())
}

// ----------------------------------------------------------------------------------
// The events

pub(crate) fn apply_in(tx: &mut Tx<'_>, ev: &Event) -> Result<()> {
    match ev {
        Event::Party(p) => party_event(tx, p),
        Event::RegisterRole(r) => register_role(tx, r, true),
        Event::UnregisterRole(r) => register_role(tx, r, false),
        Event::A2Role(r) => a2_role(tx, r, true),
        Event::RemoveA2Role(r) => a2_role(tx, r, false),
        Event::Resource(r) => resource_event(tx, r),
        Event::Grant(g) => grant(tx, g),
        Event::Revoke(g) => revoke(tx, g),
        Event::RemoveConnection(c) => remove_connection(tx, c),
        Event::AddAgent(a) => add_agent(tx, a),
        Event::RemoveAgent(a) => remove_agent(tx, a),
        Event::Delegate(d) => delegate(tx, d),
        Event::Undelegate(d) => undelegate(tx, d),
        Event::Died(d) => died(tx, &d.person),
        Event::RetireA2Roles(_) => retire_a2_roles(tx),
        Event::Clock(c) => {
            let t = DateTime::parse_from_rfc3339(c.now.trim())
                .map_err(|e| Error::invalid(format!("`now` is not an RFC 3339 time `{}`: {e}", c.now)))?;
            // A server's wall-clock tick never moves the clock back (a scenario may have
            // set it ahead); replaying it gives the same answer.
            if c.forward_only == Some(true) && tx.w.now.is_some_and(|cur| cur >= t) {
                return Ok(());
            }
            tx.undo.push(Undo::Clock(tx.w.now));
            tx.w.now = Some(t);
            Ok(())
        }
        Event::System(_)
        | Event::SystemUserRequest(_)
        | Event::ChangeRequest(_)
        | Event::AccessRequest(_)
        | Event::Approve(_)
        | Event::Reject(_)
        | Event::Confirm(_)
        | Event::Withdraw(_)
        | Event::Escalate(_)
        | Event::AddClient(_)
        | Event::RemoveClient(_) => crate::sysuser::apply(tx, ev),
        Event::Policy(_) | Event::Instance(_) | Event::AccessList(_) => crate::pdp::events::apply(tx, ev),
        Event::ConsentRequest(_)
        | Event::AcceptConsent(_)
        | Event::RejectConsent(_)
        | Event::RevokeConsent(_)
        | Event::UseConsent(_) => crate::consent::apply(tx, ev),
        Event::AddSupplier(_)
        | Event::RemoveSupplier(_)
        | Event::DelegateScope(_)
        | Event::UndelegateScope(_) => crate::supplier::apply(tx, ev),
    }
}

/// The legacy identifiers of a party have the shape domain.md §1 and scenario-format.md
/// give them: an organisation number is 9 digits, a national id 11, a uuid 8-4-4-4-12
/// hexadecimal digits, and Altinn's party and user ids are positive integers (a decision
/// request could never name anything else, so anything else is a typo of the import).
fn party_identifiers(p: &PartyEvent) -> Result<()> {
    let id = quote(&p.id);
    let digits = |field: &str, v: &Option<String>, n: usize, what: &str| match v {
        Some(v) if v.len() != n || !v.bytes().all(|b| b.is_ascii_digit()) => Err(Error::invalid(format!(
            "`{field}` of `{id}` is `{}`: {what} is {n} digits",
            quote(v)
        ))),
        _ => Ok(()),
    };
    digits("org_no", &p.org_no, 9, "an organisation number")?;
    digits("ssn", &p.ssn, 11, "a national id")?;
    if let Some(u) = &p.uuid
        && !crate::model::is_uuid(u)
    {
        return Err(Error::invalid(format!(
            "`uuid` of `{id}` is `{}`: a uuid is 32 hexadecimal digits in groups of 8-4-4-4-12",
            quote(u)
        )));
    }
    for (field, v) in [("party_id", p.party_id), ("user_id", p.user_id)] {
        if let Some(v) = v
            && v < 1
        {
            return Err(Error::invalid(format!(
                "`{field}` of `{id}` is `{v}`: Altinn's party and user ids are positive integers"
            )));
        }
    }
    Ok(())
}

fn party_event(tx: &mut Tx<'_>, p: &PartyEvent) -> Result<()> {
    non_empty("id", &p.id)?;
    party_identifiers(p)?;
    if let Some(u) = &p.unit_type {
        non_empty("unit_type", u)?;
    }
    if p.kind != PartyKind::Organisation && (p.unit_type.is_some() || p.main_unit.is_some()) {
        return Err(Error::invalid(format!(
            "`{}`: only an organisation has a unit type or a main unit",
            p.id
        )));
    }
    if p.kind != PartyKind::SystemUser
        && (p.system_user_kind.is_some() || p.owner.is_some() || p.system.is_some())
    {
        return Err(Error::invalid(format!(
            "`{}`: only a system user has a system user kind, owner or system",
            p.id
        )));
    }
    let w = &*tx.w;
    let existing = w.graph.party_node(&p.id);
    // References first; a kind that differs from the stored one needs a look-up, so it
    // ranks with the structure (the order of faults).
    let main = opt_party(w, p.main_unit.as_ref())?;
    let owner = opt_party(w, p.owner.as_ref())?;
    if let Some(n) = existing
        && kind_of(w, n) != Some(p.kind)
    {
        return Err(Error::invalid(format!(
            "party `{}` is a {}, not a {}",
            p.id,
            kind_of(w, n).map_or("?", PartyKind::as_str),
            p.kind.as_str()
        )));
    }
    if let Some(m) = main {
        if Some(m) == existing || p.main_unit.as_deref() == Some(p.id.as_str()) {
            return Err(Error::invalid(format!("`{}` cannot be its own main unit", p.id)));
        }
        if kind_of(w, m) != Some(PartyKind::Organisation) {
            return Err(Error::invalid(format!(
                "main unit `{}` is not an organisation",
                w.graph.ext_id(m)
            )));
        }
        if w.graph.main_unit(m).is_some() {
            return Err(Error::invalid(format!(
                "`{}` is itself a sub-unit: main units are one level only",
                w.graph.ext_id(m)
            )));
        }
        if let Some(n) = existing
            && w.graph.sub_units(n).next().is_some()
        {
            return Err(Error::invalid(format!(
                "`{}` has sub-units and cannot become a sub-unit",
                p.id
            )));
        }
    }
    if let Some(o) = owner
        && kind_of(w, o) != Some(PartyKind::Organisation)
    {
        return Err(Error::invalid(format!(
            "owner `{}` of a system user must be an organisation",
            w.graph.ext_id(o)
        )));
    }
    let mut party = match existing.and_then(|n| w.graph.party(n)) {
        Some(old) => old.clone(),
        None => Party::new(&p.id, p.kind),
    };
    macro_rules! upd {
        ($($f:ident),*) => { $( if let Some(v) = &p.$f { party.$f = Some(v.clone().into()); } )* };
        ($($f:ident: $set:ident),*) => { $( if p.$f.is_some() { party.$set(p.$f.clone()); } )* };
    }
    upd!(name, unit_type, org_no, ssn, party_id, user_id);
    upd!(system_user_kind: set_system_user_kind, owner: set_owner, system: set_system, uuid: set_uuid);
    if p.kind == PartyKind::SystemUser && party.system_user_kind().is_none() {
        party.set_system_user_kind(Some(SystemUserKind::Standard));
    }
    if let Some((kind, v, holder)) = tx.w.graph.ident_clash(&party, existing) {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "{} `{v}` of `{}` already belongs to `{}`",
                kind.field(),
                p.id,
                tx.w.graph.ext_id(holder)
            ),
        ));
    }
    let n = match existing {
        Some(n) => {
            let old = tx.w.graph.party(n).cloned();
            if let Some(cur) = tx.w.graph.party_mut(n) {
                *cur = party;
            }
            tx.w.graph.reindex_party(n);
            tx.undo.push(Undo::Node(n, old));
            n
        }
        None => {
            let n = tx.w.graph.add_party(party);
            tx.undo.push(Undo::Node(n, None));
            n
        }
    };
    if let Some(m) = main {
        set_main_unit(tx, n, m)?;
    }
    Ok(())
}

/// Makes `m` the main unit of `sub`, replacing any earlier link.
fn set_main_unit(tx: &mut Tx<'_>, sub: NodeId, m: NodeId) -> Result<()> {
    let c = tx.w.catalog;
    if let Some(old) = tx.w.graph.main_unit(sub) {
        if old == m {
            return Ok(());
        }
        tx.set_edge(EdgeKey::MainUnit { sub, main: old }, None);
    }
    let role = if tx.w.graph.party(sub).is_some_and(|p| p.is_unit_type("AAFY")) {
        c.known.ikke_naeringsdrivende_hovedenhet
    } else {
        c.known.hovedenhet
    };
    tx.set_edge(EdgeKey::MainUnit { sub, main: m }, Some(Edge::MainUnit(role)));
    Ok(())
}

fn register_role(tx: &mut Tx<'_>, r: &RoleEvent, add: bool) -> Result<()> {
    let w = &*tx.w;
    let c = w.catalog;
    if r.from == r.to {
        return Err(Error::invalid(format!(
            "a role cannot be given by `{}` to itself",
            r.from
        )));
    }
    let (from, to, role) = (party(w, &r.from)?, party(w, &r.to)?, role(c, &r.role)?);
    if !c.is_register_role(role) {
        return Err(Error::new(
            ErrorCode::NotAssignable,
            format!("`{}` is not a register (ER or guardianship) role", r.role),
        ));
    }
    if c.is_main_unit_link(role) {
        if kind_of(w, from) != Some(PartyKind::Organisation)
            || kind_of(w, to) != Some(PartyKind::Organisation)
        {
            return Err(Error::invalid("a main-unit link joins two organisations"));
        }
        if add {
            if w.graph.main_unit(to).is_some() {
                return Err(Error::invalid(format!(
                    "`{}` is itself a sub-unit: main units are one level only",
                    r.to
                )));
            }
            if w.graph.sub_units(from).next().is_some() {
                return Err(Error::invalid(format!(
                    "`{}` has sub-units and cannot become a sub-unit",
                    r.from
                )));
            }
            return set_main_unit(tx, from, to);
        }
        if w.graph.main_unit(from) == Some(to) {
            tx.set_edge(EdgeKey::MainUnit { sub: from, main: to }, None);
        }
        return Ok(());
    }
    let key = EdgeKey::Assignment { from, to, role };
    if add {
        if tx.edge(key).is_none() {
            tx.set_edge(key, Some(Edge::Assignment(Assignment::new(role))));
        }
    } else if tx.edge(key).is_some() {
        // The register removing a role always cascades.
        tx.remove_assignment_cascading(from, to, role);
    }
    Ok(())
}

fn a2_role(tx: &mut Tx<'_>, r: &RoleEvent, add: bool) -> Result<()> {
    let w = &*tx.w;
    let c = w.catalog;
    if r.from == r.to {
        return Err(Error::invalid(format!(
            "a role cannot be given by `{}` to itself",
            r.from
        )));
    }
    let (from, to, role) = (party(w, &r.from)?, party(w, &r.to)?, role(c, &r.role)?);
    if !c.is_altinn2_role(role) {
        return Err(Error::new(
            ErrorCode::NotAssignable,
            format!("`{}` is not an Altinn 2 role", r.role),
        ));
    }
    if add && w.a2_retired {
        return Err(Error::new(
            ErrorCode::NotAssignable,
            format!(
                "Altinn 2 roles were retired: `{}` can no longer be assigned",
                r.role
            ),
        ));
    }
    let key = EdgeKey::Assignment { from, to, role };
    if add {
        if tx.edge(key).is_none() {
            tx.set_edge(key, Some(Edge::Assignment(Assignment::new(role))));
        }
    } else if tx.edge(key).is_some() {
        tx.remove_assignment_cascading(from, to, role);
    }
    Ok(())
}

/// Parses a policy token: a package URN, a role URN or `urn:altinn:rolecode:CODE`.
pub fn parse_token(c: &Catalog, t: &str) -> Result<Token> {
    let l = t.trim().to_lowercase();
    if l.starts_with("urn:altinn:accesspackage:") {
        return package(c, t).map(Token::Package);
    }
    if l.starts_with("urn:altinn:rolecode:")
        || l.starts_with("urn:altinn:role:")
        || l.starts_with("urn:altinn:external-role:")
    {
        return role(c, t).map(Token::Role);
    }
    Err(Error::invalid(format!(
        "policy token `{t}` is not a package URN, a role URN or `urn:altinn:rolecode:CODE`"
    )))
}

fn resource_event(tx: &mut Tx<'_>, r: &ResourceEvent) -> Result<()> {
    non_empty("id", &r.id)?;
    crate::supplier::check_resource_shape(r)?;
    let kind = crate::consent::resource_kind(r)?;
    let c = tx.w.catalog;
    if let Some(m) = &r.access_list_mode
        && m != "enabled"
        && m != "disabled"
    {
        return Err(Error::invalid(format!(
            "`access_list_mode` is `enabled` or `disabled`, got `{m}`"
        )));
    }
    let mut rules = Vec::with_capacity(r.rules.len());
    for spec in &r.rules {
        let actions = actions_of("actions", &spec.actions)?;
        if spec.any_of.is_empty() {
            return Err(Error::invalid("a rule's `any_of` must name at least one token"));
        }
        rules.push((actions, spec.any_of.clone()));
    }
    let mut parsed = Vec::with_capacity(rules.len());
    for (actions, written) in rules {
        let any_of = written
            .iter()
            .map(|t| parse_token(c, t))
            .collect::<Result<Vec<_>>>()?;
        parsed.push(Rule {
            actions,
            any_of,
            written,
        });
    }
    let res = Resource {
        id: r.id.clone(),
        owner: r.owner.clone(),
        delegable: r.delegable.unwrap_or(true),
        rules: parsed,
        kind,
    };
    let n = match tx.w.graph.resource_node(&r.id) {
        Some(n) => {
            let old = tx.w.graph.resource(n).cloned();
            if let Some(cur) = tx.w.graph.resource_mut(n) {
                *cur = res;
            }
            tx.undo.push(Undo::Resource(n, old));
            n
        }
        None => {
            let n = tx.w.graph.add_resource(res);
            tx.undo.push(Undo::Resource(n, None));
            n
        }
    };
    crate::supplier::on_resource_event(tx, n, r);
    crate::pdp::events::on_resource_event(tx, r)
}

/// What a grant or revoke names.
enum GrantTarget {
    Package(PackageId),
    Resource(NodeId, Actions),
    Instance(NodeId, String, Actions),
}

/// A grant or revoke's parties, looked up once: (from, to, by).
type Named = (NodeId, NodeId, Option<NodeId>);

/// What `g` names, and its parties ([`Named`]), in the order of faults.
fn grant_target(w: &World, g: &GrantEvent) -> Result<(GrantTarget, Named)> {
    let c = w.catalog;
    // Shape first.
    match (&g.package, &g.resource) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("name either `package` or `resource`, not both"));
        }
        (None, None) => {
            return Err(Error::invalid("name a `package`, or a `resource` with `actions`"));
        }
        (Some(_), None) if g.actions.is_some() || g.instance.is_some() => {
            return Err(Error::invalid(
                "`actions` and `instance` go with `resource`, not with `package`",
            ));
        }
        _ => {}
    }
    if g.from == g.to {
        return Err(Error::invalid(format!("`{}` cannot grant to itself", g.from)));
    }
    let actions = match (&g.resource, &g.actions) {
        (Some(_), Some(a)) => Some(actions_of("actions", a)?),
        (Some(r), None) => {
            return Err(Error::invalid(format!(
                "a grant of resource `{r}` needs `actions`"
            )));
        }
        _ => None,
    };
    if let Some(i) = &g.instance {
        non_empty("instance", i)?;
    }
    let named = (party(w, &g.from)?, party(w, &g.to)?, opt_party(w, g.by.as_ref())?);
    let target = match (&g.package, &g.resource) {
        (Some(p), _) => GrantTarget::Package(package(c, p)?),
        (None, Some(r)) => {
            let n = resource(w, r)?;
            let acts = actions.unwrap_or_default();
            match &g.instance {
                Some(i) => GrantTarget::Instance(n, i.trim().to_string(), acts),
                None => GrantTarget::Resource(n, acts),
            }
        }
        (None, None) => return Err(Error::invalid("name a `package` or a `resource`")),
    };
    Ok((target, named))
}

/// §7: a standard system user acts for its owner with the rights granted on the
/// rightholder assignment owner → system user, and an agent system user only through
/// client delegations; so a system user receives grants from its owner only, and an
/// agent system user none at all.
fn refuse_grant_to_other_system_user(w: &World, from: NodeId, to: NodeId) -> Result<()> {
    let Some(su) = w.graph.party(to).filter(|p| p.kind == PartyKind::SystemUser) else {
        return Ok(());
    };
    if su.system_user_kind() == Some(SystemUserKind::Agent) {
        return Err(Error::invalid(format!(
            "agent system user `{}` acts through client delegations only: it takes no grants",
            su.id
        )));
    }
    if let Some(owner) = su.owner()
        && owner != w.graph.ext_id(from)
    {
        return Err(Error::invalid(format!(
            "system user `{}` acts for its owner `{owner}` only: `{}` cannot grant to it",
            su.id,
            w.graph.ext_id(from)
        )));
    }
    Ok(())
}

fn grant(tx: &mut Tx<'_>, g: &GrantEvent) -> Result<()> {
    if g.cascade.is_some() {
        return Err(Error::invalid("`cascade` goes with `revoke`, not with `grant`"));
    }
    let w = &*tx.w;
    let c = w.catalog;
    let (target, (from, to, by)) = grant_target(w, g)?;
    if kind_of(w, from) == Some(PartyKind::SystemUser) {
        return Err(Error::invalid(format!(
            "a system user (`{}`) cannot give grants",
            g.from
        )));
    }
    // §11.2: a person gives to persons and organisations, never to a system user.
    if kind_of(w, from) == Some(PartyKind::Person) && kind_of(w, to) == Some(PartyKind::SystemUser) {
        return Err(Error::invalid(format!(
            "a person (`{}`) cannot grant to a system user (`{}`)",
            g.from, g.to
        )));
    }
    refuse_grant_to_other_system_user(w, from, to)?;
    // Structure.
    if let GrantTarget::Resource(r, _) | GrantTarget::Instance(r, _, _) = &target {
        crate::consent::refuse_grant_of_consent_resource(w, *r)?;
    }
    match &target {
        GrantTarget::Package(p) => {
            let pkg = c.package(*p);
            if !pkg.is_assignable {
                return Err(Error::new(
                    ErrorCode::NotAssignable,
                    format!("package `{}` is not assignable", pkg.code),
                ));
            }
            let from_type = match kind_of(w, from) {
                Some(PartyKind::Person) => Some(crate::model::EntityType::Person),
                Some(PartyKind::Organisation) => Some(crate::model::EntityType::Organisation),
                _ => None,
            };
            if from_type != Some(pkg.entity_type) {
                return Err(Error::new(
                    ErrorCode::NotAssignable,
                    format!(
                        "package `{}` is given by a {:?}, and `{}` is not one",
                        pkg.code, pkg.entity_type, g.from
                    )
                    .to_lowercase(),
                ));
            }
            let to_kind = kind_of(w, to);
            let representative = c.package_id("virksomhetens-representant-skjemaoppgaver");
            if to_kind == Some(PartyKind::Organisation)
                && (*p == c.known.hovedadministrator || Some(*p) == representative)
            {
                return Err(Error::new(
                    ErrorCode::NotAssignable,
                    format!("package `{}` cannot be given to an organisation", pkg.code),
                ));
            }
            if to_kind == Some(PartyKind::SystemUser) && Some(*p) == representative {
                return Err(Error::new(
                    ErrorCode::NotAssignable,
                    format!("package `{}` cannot be given to a system user", pkg.code),
                ));
            }
        }
        GrantTarget::Resource(r, _) | GrantTarget::Instance(r, _, _) => {
            // §10.1: a scope resource passes on only by scope delegation.
            crate::supplier::refuse_scope_grant(w, *r)?;
            if by.is_some() && !w.graph.resource(*r).is_some_and(|x| x.delegable) {
                return Err(Error::new(
                    ErrorCode::NotDelegable,
                    format!("resource `{}` is not delegable", w.graph.ext_id(*r)),
                ));
            }
        }
    }
    // The actor.
    if let Some(b) = by {
        match &target {
            GrantTarget::Package(p) => {
                let v = resolve::actor_can_delegate_package(w, b, from, *p);
                if v != DelegationVerdict::Yes {
                    return Err(Error::not_authorized(format!(
                        "`{}` may not grant package `{}` for `{}`",
                        w.graph.ext_id(b),
                        c.package(*p).code,
                        g.from
                    )));
                }
            }
            GrantTarget::Resource(r, acts) | GrantTarget::Instance(r, _, acts) => {
                for a in acts {
                    if !crate::decide::can_delegate_resource(w, b, from, *r, a) {
                        return Err(Error::not_authorized(format!(
                            "`{}` may not pass on `{a}` on resource `{}` for `{}`",
                            w.graph.ext_id(b),
                            w.graph.ext_id(*r),
                            g.from
                        )));
                    }
                }
            }
        }
    }
    // Apply: on the rightholder assignment, created on demand.
    let key = EdgeKey::Assignment {
        from,
        to,
        role: c.known.rettighetshaver,
    };
    let (at, found) = tx.edge_found(key);
    let existed = found.is_some();
    let mut a = match found {
        Some(Edge::Assignment(a)) => a,
        _ => Assignment::new(c.known.rettighetshaver),
    };
    let before = a.clone();
    match target {
        GrantTarget::Package(p) => a.packages.insert(p),
        GrantTarget::Resource(r, acts) => a.resources.entry(r).or_default().extend(acts),
        GrantTarget::Instance(r, i, acts) => a.instances.entry((r, i)).or_default().extend(acts),
    }
    if !existed || a != before {
        tx.set_found_edge(key, at, Some(Edge::Assignment(a)));
    }
    Ok(())
}

/// May `by` remove what is named from the connection `from → to` (§5)?
///
/// `by`'s records for `from` are read from `by`'s side, the ones the delegation check
/// counts first ([`resolve::actor_delegation_records`]): they answer every question
/// below but whether `by` holds `tilgangsstyrer` through a record the delegation check
/// does not count (RoleMap, a client delegation, the owner rule), and a revoke by
/// someone who may pass the grant on (most) is answered without the others. Each of
/// [`holds`], [`resolve::is_person_access_manager`] and
/// [`resolve::can_delegate_package`] would read the same records again.
fn may_remove(w: &World, by: NodeId, from: NodeId, to: NodeId, what: &[GrantTarget]) -> bool {
    if by == to {
        return true;
    }
    let counted = resolve::actor_delegation_records(w, by, from);
    let tilgangsstyrer = w.catalog.known.tilgangsstyrer;
    let manages = |recs: &[resolve::Record]| recs.iter().any(|r| r.packages.contains(tilgangsstyrer));
    if manages(&counted) {
        return true;
    }
    // §11.4: a person's outgoing grants are theirs and their access managers' to remove.
    if kind_of(w, from) == Some(PartyKind::Person)
        && (by == from || resolve::is_person_access_manager_in(w, by, from, &counted))
    {
        return true;
    }
    let may_pass_on = !what.is_empty()
        && what.iter().all(|t| match t {
            GrantTarget::Package(p) => {
                resolve::can_delegate_package_in(w, by, from, *p, &counted) == DelegationVerdict::Yes
            }
            GrantTarget::Resource(r, acts) | GrantTarget::Instance(r, _, acts) => acts
                .iter()
                .all(|a| crate::decide::can_delegate_resource(w, by, from, *r, a)),
        });
    may_pass_on || manages(&resolve::actor_records(w, by, from))
}

fn revoke(tx: &mut Tx<'_>, g: &GrantEvent) -> Result<()> {
    let w = &*tx.w;
    let c = w.catalog;
    let (target, (from, to, by)) = grant_target(w, g)?;
    if let Some(b) = by
        && !may_remove(w, b, from, to, std::slice::from_ref(&target))
    {
        return Err(Error::not_authorized(format!(
            "`{}` may not revoke this grant from `{}` to `{}`",
            w.graph.ext_id(b),
            g.from,
            g.to
        )));
    }
    let rh = c.known.rettighetshaver;
    let key = EdgeKey::Assignment { from, to, role: rh };
    let (at, Some(Edge::Assignment(mut a))) = tx.edge_found(key) else {
        return Ok(()); // nothing to revoke: not an error
    };
    // The forwarded copies: client delegations built on this assignment that carry it.
    let copies: Vec<(EdgeKey, Delegation)> = tx
        .delegations_on(from, to, rh)
        .into_iter()
        .filter_map(|k| match tx.edge(k) {
            Some(Edge::Delegation(d)) => Some((k, d)),
            _ => None,
        })
        .filter(|(_, d)| match &target {
            GrantTarget::Package(p) => d.packages.contains(*p),
            GrantTarget::Resource(r, acts) => d.resources.get(r).is_some_and(|x| !x.is_disjoint(acts)),
            GrantTarget::Instance(..) => false,
        })
        .collect();
    let held = match &target {
        GrantTarget::Package(p) => a.packages.contains(*p),
        GrantTarget::Resource(r, acts) => a.resources.get(r).is_some_and(|x| !x.is_disjoint(acts)),
        GrantTarget::Instance(r, i, acts) => a
            .instances
            .get(&(*r, i.clone()))
            .is_some_and(|x| !x.is_disjoint(acts)),
    };
    if !held {
        return Ok(());
    }
    if !copies.is_empty() && g.cascade == Some(false) {
        let mut e = Error::new(
            ErrorCode::HasDependants,
            format!(
                "{} client delegation(s) forward this grant; set `cascade` to remove them too",
                copies.len()
            ),
        );
        e.dependants = copies.iter().map(|(k, _)| describe_key(w, *k)).collect();
        return Err(e);
    }
    for (k, mut d) in copies {
        match &target {
            GrantTarget::Package(p) => d.packages.remove(*p),
            GrantTarget::Resource(r, acts) => {
                if let Some(x) = d.resources.get_mut(r) {
                    x.retain(|a| !acts.contains(a));
                    if x.is_empty() {
                        d.resources.remove(r);
                    }
                }
            }
            GrantTarget::Instance(..) => {}
        }
        // An emptied client delegation is removed.
        tx.set_edge(
            k,
            if d.is_empty() {
                None
            } else {
                Some(Edge::Delegation(d))
            },
        );
    }
    match &target {
        GrantTarget::Package(p) => a.packages.remove(*p),
        GrantTarget::Resource(r, acts) => {
            if let Some(x) = a.resources.get_mut(r) {
                x.retain(|y| !acts.contains(y));
                if x.is_empty() {
                    a.resources.remove(r);
                }
            }
        }
        GrantTarget::Instance(r, i, acts) => {
            let k = (*r, i.clone());
            if let Some(x) = a.instances.get_mut(&k) {
                x.retain(|y| !acts.contains(y));
                if x.is_empty() {
                    a.instances.remove(&k);
                }
            }
        }
    }
    // An emptied rightholder assignment stays until it is removed (§3). The copies
    // changed above are other edges, so `at` still names this one.
    tx.set_found_edge(key, at, Some(Edge::Assignment(a)));
    Ok(())
}

fn describe_key(w: &World, k: EdgeKey) -> String {
    let g = &w.graph;
    let c = w.catalog;
    match k {
        EdgeKey::Assignment { from, to, role } => {
            format!(
                "assignment `{}` → `{}` ({})",
                g.ext_id(from),
                g.ext_id(to),
                c.role(role).code
            )
        }
        EdgeKey::Delegation {
            client,
            agent,
            facilitator,
            ..
        } => format!(
            "client delegation from `{}` via `{}` to `{}`",
            g.ext_id(client),
            g.ext_id(facilitator),
            g.ext_id(agent)
        ),
        EdgeKey::MainUnit { sub, main } => {
            format!("main-unit link `{}` → `{}`", g.ext_id(sub), g.ext_id(main))
        }
    }
}

fn remove_connection(tx: &mut Tx<'_>, ev: &ConnectionEvent) -> Result<()> {
    let w = &*tx.w;
    let c = w.catalog;
    let (from, to) = (party(w, &ev.from)?, party(w, &ev.to)?);
    let by = opt_party(w, ev.by.as_ref())?;
    let rh = c.known.rettighetshaver;
    let key = EdgeKey::Assignment { from, to, role: rh };
    let Some(Edge::Assignment(a)) = tx.edge(key) else {
        // Nothing to remove is not an error, but the actor ranks before state (as for
        // `revoke`): a connection that is not there may be removed only by those who
        // may remove an emptied one (§5).
        if let Some(b) = by
            && !may_remove(w, b, from, to, &[])
        {
            return Err(Error::not_authorized(format!(
                "`{}` may not remove the connection from `{}` to `{}`",
                w.graph.ext_id(b),
                ev.from,
                ev.to
            )));
        }
        return Ok(());
    };
    if let Some(b) = by {
        let mut what: Vec<GrantTarget> = a.packages.iter().map(GrantTarget::Package).collect();
        what.extend(
            a.resources
                .iter()
                .map(|(r, x)| GrantTarget::Resource(*r, x.clone())),
        );
        what.extend(
            a.instances
                .iter()
                .map(|((r, i), x)| GrantTarget::Instance(*r, i.clone(), x.clone())),
        );
        if !may_remove(w, b, from, to, &what) {
            return Err(Error::not_authorized(format!(
                "`{}` may not remove the connection from `{}` to `{}`",
                w.graph.ext_id(b),
                ev.from,
                ev.to
            )));
        }
    }
    let delegations = tx.delegations_on(from, to, rh);
    if (a.has_grants() || !delegations.is_empty()) && ev.cascade != Some(true) {
        let mut deps: Vec<String> = a
            .packages
            .iter()
            .map(|p| format!("package `{}`", c.package(p).code))
            .collect();
        deps.extend(
            a.resources
                .keys()
                .map(|r| format!("resource grant `{}`", w.graph.ext_id(*r))),
        );
        deps.extend(
            a.instances
                .keys()
                .map(|(r, i)| format!("instance grant `{}` `{i}`", w.graph.ext_id(*r))),
        );
        deps.extend(delegations.iter().map(|k| describe_key(w, *k)));
        let mut e = Error::new(
            ErrorCode::HasDependants,
            format!(
                "the connection from `{}` to `{}` has {} dependant(s); set `cascade` to remove them too",
                ev.from,
                ev.to,
                deps.len()
            ),
        );
        e.dependants = deps;
        return Err(e);
    }
    tx.remove_assignment_cascading(from, to, rh);
    Ok(())
}

fn check_agent(w: &World, ev_agent: &str, facilitator: NodeId, agent: NodeId) -> Result<()> {
    if kind_of(w, facilitator) != Some(PartyKind::Organisation) {
        return Err(Error::invalid(format!(
            "facilitator `{}` is not an organisation",
            w.graph.ext_id(facilitator)
        )));
    }
    let ok = match w.graph.party(agent) {
        Some(p) if p.kind == PartyKind::Person => p.alive,
        Some(p) if p.kind == PartyKind::SystemUser => p.system_user_kind() == Some(SystemUserKind::Agent),
        _ => false,
    };
    if !ok || agent == facilitator {
        return Err(Error::new(
            ErrorCode::InvalidAgent,
            format!("`{ev_agent}` cannot be an agent: an agent is a living person or an agent system user"),
        ));
    }
    // §7: an agent system user acts for its owner's clients, so only its owner makes it
    // an agent (as `add_client` does on the first client).
    if let Some(p) = w.graph.party(agent)
        && p.kind == PartyKind::SystemUser
        && p.owner() != Some(w.graph.ext_id(facilitator))
    {
        return Err(Error::new(
            ErrorCode::InvalidAgent,
            format!(
                "agent system user `{ev_agent}` acts for the clients of its owner `{}`, not of `{}`",
                p.owner().unwrap_or("(none)"),
                w.graph.ext_id(facilitator)
            ),
        ));
    }
    Ok(())
}

fn add_agent(tx: &mut Tx<'_>, ev: &AgentEvent) -> Result<()> {
    if ev.cascade.is_some() {
        return Err(Error::invalid(
            "`cascade` goes with `remove_agent`, not with `add_agent`",
        ));
    }
    let w = &*tx.w;
    let (f, a) = (party(w, &ev.facilitator)?, party(w, &ev.agent)?);
    let by = opt_party(w, ev.by.as_ref())?;
    check_agent(w, &ev.agent, f, a)?;
    require_client_admin(w, by, f)?;
    let role = w.catalog.known.agent;
    let key = EdgeKey::Assignment { from: f, to: a, role };
    if tx.edge(key).is_none() {
        tx.set_edge(key, Some(Edge::Assignment(Assignment::new(role))));
    }
    Ok(())
}

fn remove_agent(tx: &mut Tx<'_>, ev: &AgentEvent) -> Result<()> {
    let w = &*tx.w;
    let (f, a) = (party(w, &ev.facilitator)?, party(w, &ev.agent)?);
    let by = opt_party(w, ev.by.as_ref())?;
    require_client_admin(w, by, f)?;
    let role = w.catalog.known.agent;
    if tx.edge(EdgeKey::Assignment { from: f, to: a, role }).is_none() {
        return Ok(());
    }
    let deps = tx.delegations_on(f, a, role);
    if !deps.is_empty() && ev.cascade == Some(false) {
        let mut e = Error::new(
            ErrorCode::HasDependants,
            format!(
                "{} client delegation(s) end at agent `{}`; set `cascade` to remove them too",
                deps.len(),
                ev.agent
            ),
        );
        e.dependants = deps.iter().map(|k| describe_key(w, *k)).collect();
        return Err(e);
    }
    tx.remove_assignment_cascading(f, a, role);
    Ok(())
}

/// The packages the facilitator holds from the client through the client assignment.
fn held_through(w: &World, client: NodeId, a: &Assignment) -> PackageSet {
    resolve::packages_carried(w, a.role, &a.packages, client)
}

fn delegate(tx: &mut Tx<'_>, ev: &DelegateEvent) -> Result<()> {
    let w = &*tx.w;
    let c = w.catalog;
    let Some(role_name) = &ev.role else {
        return Err(Error::invalid("`delegate` needs the client assignment's `role`"));
    };
    let pkgs_named = ev.packages.as_deref().unwrap_or(&[]);
    let res_named = ev.resources.as_deref().unwrap_or(&[]);
    if pkgs_named.is_empty() && res_named.is_empty() {
        return Err(Error::invalid(
            "a delegation must forward at least one package or resource",
        ));
    }
    for r in res_named {
        if let Some(a) = r.actions() {
            actions_of("actions", a)?;
        }
    }
    let (client, f, agent) = (
        party(w, &ev.client)?,
        party(w, &ev.facilitator)?,
        party(w, &ev.agent)?,
    );
    let by = opt_party(w, ev.by.as_ref())?;
    let role = role(c, role_name)?;
    let pkgs = pkgs_named
        .iter()
        .map(|p| package(c, p))
        .collect::<Result<Vec<_>>>()?;
    let mut res = Vec::new();
    for r in res_named {
        let n = resource(w, r.id())?;
        let acts = r.actions().map(|a| actions_of("actions", a)).transpose()?;
        res.push((n, acts));
    }
    // Structure: the agent, then what is forwarded.
    check_agent(w, &ev.agent, f, agent)?;
    if !res.is_empty() && kind_of(w, agent) == Some(PartyKind::SystemUser) {
        return Err(Error::invalid(format!(
            "agent system user `{}` holds packages only: drop `resources`",
            ev.agent
        )));
    }
    if w.graph.find_assignment(f, agent, c.known.agent).is_none() {
        return Err(Error::new(
            ErrorCode::InvalidAgent,
            format!(
                "`{}` is not an agent of `{}`: add the agent first",
                ev.agent, ev.facilitator
            ),
        ));
    }
    let client_assignment = w
        .graph
        .find_assignment(client, f, role)
        .and_then(|e| w.graph.assignment(e));
    let held = client_assignment
        .map(|a| held_through(w, client, a))
        .unwrap_or_default();
    let mut forwarded = PackageSet::EMPTY;
    for p in &pkgs {
        let pkg = c.package(*p);
        if !pkg.is_delegable {
            return Err(Error::new(
                ErrorCode::NotDelegable,
                format!("package `{}` is not delegable", pkg.code),
            ));
        }
        if !held.contains(*p) {
            return Err(Error::new(
                ErrorCode::NotDelegable,
                format!(
                    "`{}` does not hold `{}` from `{}` through a {} assignment",
                    ev.facilitator,
                    pkg.code,
                    ev.client,
                    c.role(role).code
                ),
            ));
        }
        forwarded.insert(*p);
    }
    let mut forwarded_res: BTreeMap<NodeId, Actions> = BTreeMap::new();
    for (r, acts) in &res {
        let granted = client_assignment.and_then(|a| a.resources.get(r));
        let delegable = w.graph.resource(*r).is_some_and(|x| x.delegable);
        let ok = delegable && granted.is_some_and(|g| acts.as_ref().is_none_or(|a| a.is_subset(g)));
        if !ok {
            return Err(Error::new(
                ErrorCode::NotDelegable,
                format!(
                    "`{}` holds no delegable resource grant `{}` from `{}` with those actions",
                    ev.facilitator,
                    w.graph.ext_id(*r),
                    ev.client
                ),
            ));
        }
        let acts = acts.clone().or_else(|| granted.cloned()).unwrap_or_default();
        forwarded_res.entry(*r).or_default().extend(acts);
    }
    require_client_admin(w, by, f)?;
    let key = EdgeKey::Delegation {
        client,
        agent,
        facilitator: f,
        role,
    };
    let mut d = match tx.edge(key) {
        Some(Edge::Delegation(d)) => d,
        _ => Delegation {
            facilitator: f,
            role,
            packages: PackageSet::EMPTY,
            resources: BTreeMap::new(),
        },
    };
    let before = d.clone();
    d.packages.union_with(&forwarded);
    for (r, a) in forwarded_res {
        d.resources.entry(r).or_default().extend(a);
    }
    if d != before || tx.edge(key).is_none() {
        tx.set_edge(key, Some(Edge::Delegation(d)));
    }
    Ok(())
}

fn undelegate(tx: &mut Tx<'_>, ev: &DelegateEvent) -> Result<()> {
    let w = &*tx.w;
    let c = w.catalog;
    for r in ev.resources.as_deref().unwrap_or(&[]) {
        if let Some(a) = r.actions() {
            actions_of("actions", a)?;
        }
    }
    let (client, f, agent) = (
        party(w, &ev.client)?,
        party(w, &ev.facilitator)?,
        party(w, &ev.agent)?,
    );
    let by = opt_party(w, ev.by.as_ref())?;
    let role = ev.role.as_deref().map(|r| role(c, r)).transpose()?;
    let pkgs = ev
        .packages
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|p| package(c, p))
        .collect::<Result<Vec<_>>>()?;
    let mut res = Vec::new();
    for r in ev.resources.as_deref().unwrap_or(&[]) {
        res.push((
            resource(w, r.id())?,
            r.actions().map(|a| actions_of("actions", a)).transpose()?,
        ));
    }
    require_client_admin(w, by, f)?;
    let everything = ev.packages.is_none() && ev.resources.is_none();
    let keys: Vec<EdgeKey> = w
        .graph
        .between(client, agent)
        .into_iter()
        .filter_map(|(e, edge)| match edge {
            Edge::Delegation(d) if d.facilitator == f && role.is_none_or(|r| r == d.role) => {
                w.graph.key_of(e)
            }
            _ => None,
        })
        .collect();
    for k in keys {
        let Some(Edge::Delegation(mut d)) = tx.edge(k) else {
            continue;
        };
        if everything {
            tx.set_edge(k, None);
            continue;
        }
        let before = d.clone();
        for p in &pkgs {
            d.packages.remove(*p);
        }
        for (r, acts) in &res {
            match acts {
                None => {
                    d.resources.remove(r);
                }
                Some(acts) => {
                    if let Some(x) = d.resources.get_mut(r) {
                        x.retain(|a| !acts.contains(a));
                        if x.is_empty() {
                            d.resources.remove(r);
                        }
                    }
                }
            }
        }
        if d.is_empty() {
            tx.set_edge(k, None);
        } else if d != before {
            tx.set_edge(k, Some(Edge::Delegation(d)));
        }
    }
    Ok(())
}

fn died(tx: &mut Tx<'_>, person: &str) -> Result<()> {
    let w = &*tx.w;
    let c = w.catalog;
    let p = party(w, person)?;
    let Some(old) = w.graph.party(p).cloned() else {
        return Err(Error::unknown_party(person));
    };
    if old.kind != PartyKind::Person {
        return Err(Error::invalid(format!("`{person}` is not a person")));
    }
    if !old.alive {
        return Ok(());
    }
    let k = c.known;
    let removable = |role: RoleId| {
        role == k.rettighetshaver || role == k.appstyrt_rettighetshaver || c.is_altinn2_role(role)
    };
    let mut doomed = Vec::new();
    for (_, to, e) in w.graph.outgoing(p) {
        if let Edge::Assignment(a) = e
            && removable(a.role)
        {
            doomed.push((p, to, a.role));
        }
    }
    for (_, from, e) in w.graph.incoming(p) {
        if let Edge::Assignment(a) = e
            && (removable(a.role) || a.role == k.agent)
        {
            doomed.push((from, p, a.role));
        }
    }
    for (from, to, role) in doomed {
        tx.remove_assignment_cascading(from, to, role);
    }
    let mut dead = old.clone();
    dead.alive = false;
    if let Some(cur) = tx.w.graph.party_mut(p) {
        *cur = dead;
    }
    tx.undo.push(Undo::Node(p, Some(old)));
    Ok(())
}

fn retire_a2_roles(tx: &mut Tx<'_>) -> Result<()> {
    let w = &*tx.w;
    let c = w.catalog;
    let mut doomed = Vec::new();
    // Under `simulate` this runs on a background thread: give way to readers (nothing
    // happens on the write path's threads).
    let mut pacer = crate::background::Pacer::new();
    for (n, _) in w.graph.parties() {
        pacer.step();
        for (_, to, e) in w.graph.outgoing(n) {
            if let Edge::Assignment(a) = e
                && c.is_altinn2_role(a.role)
            {
                doomed.push((n, to, a.role));
            }
        }
    }
    for (from, to, role) in doomed {
        pacer.step();
        tx.remove_assignment_cascading(from, to, role);
    }
    if !tx.w.a2_retired {
        tx.undo.push(Undo::A2Retired(false));
        tx.w.a2_retired = true;
    }
    Ok(())
}
