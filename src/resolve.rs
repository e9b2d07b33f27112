//! Read-only resolution (domain.md §4 and §5): the records by which a subject acts for a
//! party, and every query built on them — check, rights, authorized parties, holders,
//! resource decisions, the delegation check and explain.
//!
//! Resolution is bounded pattern matching, not graph search: the longest derivation is
//! three assignment edges, so each path walks adjacency lists directly with small local
//! state. Cycles in the data (A gives B, B gives A) cannot make it loop because no path
//! follows more than its fixed number of edges.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{Catalog, PackageSet, RoleSet};
use crate::graph::{Actions, Edge, EdgeId, NodeId, Resource, Token};
use crate::model::{EntityType, PackageId, PartyKind, RoleId};
use crate::world::World;

/// How the base of a record was found (paths 1, 2 and 4 of §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An assignment F → X (path 1).
    Direct { edge: EdgeId },
    /// The `privatperson` role every living person holds for themself.
    SelfPerson,
    /// F → O (edge) and O → X with a key role (key_edge) (path 2).
    KeyRole {
        edge: EdgeId,
        holder: NodeId,
        key_role: RoleId,
    },
    /// A client delegation C → X, via the facilitator (path 4).
    Delegation { edge: EdgeId, facilitator: NodeId },
}

/// Why a base record was repeated for another party (paths 5 and 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// From a main unit to one of its sub-units (path 5).
    SubUnit { main: NodeId },
    /// From an ENK to its living owner (path 6).
    Owner { enk: NodeId },
}

/// One way by which the subject acts on behalf of `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub from: NodeId,
    pub role: RoleId,
    pub packages: PackageSet,
    pub origin: Origin,
    /// Set when the record comes from RoleMap (path 3): the role it was mapped from.
    pub mapped_from: Option<RoleId>,
    pub repeat: Option<Repeat>,
}

impl Record {
    /// The role the subject holds through this record, if any. A client-delegation
    /// record keeps the client assignment's role (the owner rule of path 6 needs it),
    /// but the agent does not hold that role (§4.4: "X does not hold role r through
    /// it"), so it gives no role to rights, role checks or policy matching.
    pub fn held_role(&self) -> Option<RoleId> {
        (!matches!(self.origin, Origin::Delegation { .. })).then_some(self.role)
    }

    /// Whether the package delegation check (§5) counts this record: direct or key
    /// role, or either of those at the party's main unit; never client delegations,
    /// RoleMap or the owner rule.
    pub fn counts_for_delegation(&self) -> bool {
        matches!(
            self.origin,
            Origin::Direct { .. } | Origin::KeyRole { .. } | Origin::SelfPerson
        ) && self.mapped_from.is_none()
            && !matches!(self.repeat, Some(Repeat::Owner { .. }))
    }
}

impl Record {
    /// Whether the resource delegation check (§5) counts this record: every record but
    /// a client delegation's — RoleMap roles are held roles, and the main-unit and
    /// sole-proprietor-owner repeats of records count as the records do.
    pub fn counts_for_resource_delegation(&self) -> bool {
        !matches!(self.origin, Origin::Delegation { .. })
    }
}

/// The effective rights of a subject for one party.
#[derive(Debug, Clone, Default)]
pub struct Rights {
    pub roles: BTreeSet<RoleId>,
    pub packages: PackageSet,
    pub records: Vec<Record>,
}

fn unit_type(w: &World, n: NodeId) -> Option<&str> {
    w.graph.party(n).and_then(|p| p.unit_type.as_deref())
}

fn is_iks(w: &World, n: NodeId) -> bool {
    w.graph.party(n).is_some_and(|p| p.is_unit_type("IKS"))
}

/// The package-carrying rule (§4.1), the one implementation: what a record with `role`
/// gives at party `at` — for a rightholder role the package grants hung on its
/// assignment (`granted`), otherwise the role's RolePackage rows with `has_access`
/// (unit-type rows only when `at`'s unit type matches).
pub fn packages_carried(w: &World, role: RoleId, granted: &PackageSet, at: NodeId) -> PackageSet {
    if w.catalog.is_rightholder(role) {
        *granted
    } else {
        w.catalog.role_packages(role, unit_type(w, at))
    }
}

/// Packages a record with `role` on assignment `edge` gives at party `from`.
fn packages_of(w: &World, role: RoleId, edge: Option<&Edge>, from: NodeId) -> PackageSet {
    match edge {
        Some(Edge::Assignment(a)) => packages_carried(w, role, &a.packages, from),
        _ => packages_carried(w, role, &PackageSet::EMPTY, from),
    }
}

/// The living owners (`innehaver`) of `enk` when it is a sole proprietorship: the
/// parties the owner rule (§4.6) repeats its accountant and auditor records for.
pub fn enk_owners(w: &World, enk: NodeId) -> Vec<NodeId> {
    let g = &w.graph;
    if !g.party(enk).is_some_and(|p| p.is_unit_type("ENK")) {
        return Vec::new();
    }
    g.outgoing(enk)
        .filter_map(|(_, owner, edge)| match edge {
            Edge::Assignment(a)
                if a.role == w.catalog.known.innehaver
                    && g.party(owner).is_some_and(|p| p.is_living_person()) =>
            {
                Some(owner)
            }
            _ => None,
        })
        .collect()
}

/// The sole proprietorships a living person owns (the reverse of [`enk_owners`]).
pub fn owned_enks(w: &World, person: NodeId) -> Vec<NodeId> {
    let g = &w.graph;
    if !g.party(person).is_some_and(|p| p.is_living_person()) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (_, e, edge) in g.incoming(person) {
        if let Edge::Assignment(a) = edge
            && a.role == w.catalog.known.innehaver
            && g.party(e).is_some_and(|p| p.is_unit_type("ENK"))
            && !out.contains(&e)
        {
            out.push(e);
        }
    }
    out
}

/// The parties a record given by `from` is repeated for (§4.5–6): its sub-units, and,
/// for an ENK, its living owners (for the owner-rule roles only; see [`records`]).
pub fn repeated_to(w: &World, from: NodeId) -> impl Iterator<Item = NodeId> + '_ {
    w.graph.sub_units(from).chain(enk_owners(w, from))
}

/// Whether an assignment with `role` yields records at all: the main-unit link is
/// structure, and `supplier` is never a connection (as in Altinn's connection query).
fn yields_records(c: &Catalog, role: RoleId) -> bool {
    !c.is_main_unit_link(role) && role != c.known.supplier
}

/// The parties whose records can end up as records for `target` after repetition: the
/// target itself, its main unit, and (for a living person) the ENKs they own.
fn sources_for(w: &World, target: NodeId) -> Vec<NodeId> {
    let mut s = vec![target];
    if let Some(m) = w.graph.main_unit(target) {
        s.push(m);
    }
    for e in owned_enks(w, target) {
        if !s.contains(&e) {
            s.push(e);
        }
    }
    s
}

/// Sources with more outgoing edges than this are asked pair by pair in [`records`].
/// A snapshot loads a node's outgoing edges next to each other, so reading a few
/// hundred costs less than the few cache misses of walking the other end's list; on
/// the Norway world the check p99 was lowest at 256 (of 32, 128, 256 and 1 024).
const SHORT_OUT: usize = 256;

/// Edges out of one node: (edge, target, weight).
type OutList<'g> = Vec<(EdgeId, NodeId, &'g Edge)>;

/// The edges out of `s` when there are at most [`SHORT_OUT`].
fn short_outgoing(w: &World, s: NodeId) -> Option<OutList<'_>> {
    let mut out = Vec::new();
    for e in w.graph.outgoing(s) {
        if out.len() == SHORT_OUT {
            return None;
        }
        out.push(e);
    }
    Some(out)
}

/// Every record by which `x` acts for some party; with `target`, only those for it.
pub fn records(w: &World, x: NodeId, target: Option<NodeId>) -> Vec<Record> {
    records_with::<false, false>(w, x, target, SourceLists::Counted)
}

/// The records of `x` for `target` — the same as `records(w, x, Some(target))`, up to
/// their order — for a write's actor check, where `target` (an organisation, say) may
/// have hundreds of edges that after a write are read through the delta's maps (a tree
/// lookup per edge), and the actor may hold many key roles. A source of `target` is
/// asked pair by pair ([`crate::graph::Graph::between_by`], walking the shorter list as
/// the counts say) unless reading its outgoing list costs no more; a list that is read is
/// scanned once for all the key-role holders (sorted), not once per holder. The checks
/// keep [`records`], whose warm short lists suit a large unchanged base.
pub fn actor_records(w: &World, x: NodeId, target: NodeId) -> Vec<Record> {
    actor_records_by(w, x, target, SourceLists::Counted)
}

/// How [`actor_records_by`] finds the edges out of a source of its target.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceLists {
    /// Read a source's outgoing list when the counts say that costs less than asking
    /// pair by pair (what [`actor_records`] does).
    Counted,
    /// Read every source's list that is not too long to read (at most 256 edges).
    Read,
    /// Ask every source pair by pair.
    Pairwise,
}

/// [`actor_records`] with the choice of how sources are read given (the equivalence
/// test runs every choice against [`records`]: each must give the same records).
#[doc(hidden)]
pub fn actor_records_by(w: &World, x: NodeId, target: NodeId, lists: SourceLists) -> Vec<Record> {
    records_with::<true, false>(w, x, Some(target), lists)
}

/// The records of [`actor_records`] that the delegation check counts
/// ([`Record::counts_for_delegation`]), and only those — the same multiset as
/// `actor_records(w, x, target)` filtered by it — for a write's actor check, which
/// asks the delegation check and nothing else of most writes. It skips what the
/// delegation check never counts: RoleMap (path 3; a general manager's role maps to
/// some twenty roles, most of a write's records), client delegations (path 4) and the
/// owner rule (path 6, and with it the ENKs a person target owns as sources).
pub fn actor_delegation_records(w: &World, x: NodeId, target: NodeId) -> Vec<Record> {
    actor_delegation_records_by(w, x, target, SourceLists::Counted)
}

/// [`actor_delegation_records`] with the choice of how sources are read given (for
/// the equivalence test, as [`actor_records_by`]).
#[doc(hidden)]
pub fn actor_delegation_records_by(w: &World, x: NodeId, target: NodeId, lists: SourceLists) -> Vec<Record> {
    records_with::<true, true>(w, x, Some(target), lists)
}

/// [`records`], or with `PAIRWISE` [`actor_records_by`]: the one implementation of §4's
/// paths; the flag (and, with it, `lists`) only chooses how the edges from a source to
/// a node are found. With `COUNTED` (and a target) only the records the delegation
/// check counts are made ([`actor_delegation_records`]): paths 3, 4 and 6 are skipped,
/// and so are the sources only path 6 reads (a person target's ENKs).
fn records_with<const PAIRWISE: bool, const COUNTED: bool>(
    w: &World,
    x: NodeId,
    target: Option<NodeId>,
    lists: SourceLists,
) -> Vec<Record> {
    let c = w.catalog;
    let g = &w.graph;
    let sources = target.map(|t| {
        if COUNTED {
            // Records from an ENK the target owns reach it only through the owner
            // rule; from its main unit, through path 5.
            let mut s = vec![t];
            s.extend(g.main_unit(t));
            s
        } else {
            sources_for(w, t)
        }
    });
    // The edges out of each source, read once when there are few: every lookup below
    // (the subject, each key-role holder) is then a scan of a short warm list instead
    // of a walk of the other end's edges, which on a large world is a cache miss per
    // node and edge touched. A source with many edges (with `PAIRWISE`, one that the
    // counts say is cheaper to ask) is asked pair by pair.
    //
    // `PAIRWISE` reads the key-role holders first, then reads a source's list only when
    // that costs less than asking pair by pair, as the counts say (no walk): reading
    // costs the list's length; pair by pair, paths 1 and 4 each walk the shorter of the
    // list and the subject's incoming edges, and path 2 the shorter of the list and
    // each holder's incoming edges — nothing for the source itself, whose key-role
    // holders' records from it would be edges to itself. A write's actor is typically
    // the organisation's own manager: the organisation is both the source and the
    // holder, the actor has a few incoming edges, and the organisation's list (read,
    // after a write to it, through the delta's maps: a tree lookup per edge) is not
    // read at all.
    let held_first: Option<Vec<(NodeId, RoleId)>> =
        PAIRWISE.then(|| g.key_roles_held(x).map(|(_, h, k)| (h, k.role)).collect());
    let source_edges: Vec<(NodeId, Option<OutList<'_>>)> = sources
        .iter()
        .flatten()
        .map(|s| {
            let list = match &held_first {
                None => short_outgoing(w, *s),
                Some(held) => {
                    // The count is known: a list too long to read is not walked at all,
                    // and one that is read is allocated once.
                    let out = g.out_degree(*s);
                    let read = out <= SHORT_OUT
                        && match lists {
                            SourceLists::Read => true,
                            SourceLists::Pairwise => false,
                            SourceLists::Counted => {
                                let mut pairwise = 2 * out.min(g.in_degree(x));
                                for (h, _) in held.iter().filter(|(h, _)| h != s) {
                                    if pairwise > out {
                                        break;
                                    }
                                    pairwise += out.min(g.in_degree(*h));
                                }
                                out < pairwise
                            }
                        };
                    read.then(|| {
                        let mut l = Vec::with_capacity(out);
                        l.extend(g.outgoing(*s));
                        l
                    })
                }
            };
            (*s, list)
        })
        .collect();
    // A write's actor has a few records; growing the list from empty reallocates.
    let mut base: Vec<Record> = if PAIRWISE {
        Vec::with_capacity(16)
    } else {
        Vec::new()
    };

    // Edges from a source to `to`, or every edge into `to` when there is no target.
    let edges_into = |to: NodeId| {
        let from_sources = source_edges.iter().flat_map(move |(s, list)| {
            let short = list.as_ref().map(|l| {
                l.iter()
                    .filter(move |(_, t, _)| *t == to)
                    .map(move |(e, _, edge)| (*e, *s, *edge))
            });
            let long = list
                .is_none()
                .then(|| g.between_by(*s, to, PAIRWISE).map(move |(e, edge)| (e, *s, edge)));
            short.into_iter().flatten().chain(long.into_iter().flatten())
        });
        let all = sources.is_none().then(|| g.incoming(to)).into_iter().flatten();
        from_sources.chain(all)
    };

    // Path 1: direct assignments, and the implicit privatperson of a living person.
    for (e, from, edge) in edges_into(x) {
        if let Edge::Assignment(a) = edge
            && yields_records(c, a.role)
        {
            base.push(Record {
                from,
                role: a.role,
                packages: packages_of(w, a.role, Some(edge), from),
                origin: Origin::Direct { edge: e },
                mapped_from: None,
                repeat: None,
            });
        }
    }
    // The sources first: reading the subject's node is a cache miss on a large world,
    // and the subject is rarely one of its target's sources.
    if sources.as_ref().is_none_or(|ss| ss.contains(&x)) && g.party(x).is_some_and(|p| p.is_living_person()) {
        let role = c.known.privatperson;
        base.push(Record {
            from: x,
            role,
            packages: packages_carried(w, role, &PackageSet::EMPTY, x),
            origin: Origin::SelfPerson,
            mapped_from: None,
            repeat: None,
        });
    }

    // Path 2: key roles, one hop. The key-role edges are read in a loop of their own
    // first: each is a cache miss on a large world, and with nothing else in the loop
    // the processor has several of them in flight at once.
    let held: Vec<(NodeId, RoleId)> = match held_first {
        Some(h) => h,
        None => g.key_roles_held(x).map(|(_, h, k)| (h, k.role)).collect(),
    };
    // One inherited record: assignment `e` (`from` → `holder`), through `key_role`.
    let key_record = |holder: NodeId, key_role: RoleId, e: EdgeId, from: NodeId, edge: &Edge| {
        let Edge::Assignment(a) = edge else { return None };
        if !yields_records(c, a.role) {
            return None;
        }
        // IKS exception (b): the participant's DTPR role on an IKS is not inherited.
        if a.role == c.known.deltaker_delt_ansvar && is_iks(w, from) {
            return None;
        }
        Some(Record {
            from,
            role: a.role,
            packages: packages_of(w, a.role, Some(edge), from),
            origin: Origin::KeyRole {
                edge: e,
                holder,
                key_role,
            },
            mapped_from: None,
            repeat: None,
        })
    };
    // IKS exception (a): a DTPR holder of an IKS does not inherit through it.
    let inherits =
        |holder: NodeId, key_role: RoleId| !(key_role == c.known.deltaker_delt_ansvar && is_iks(w, holder));
    if PAIRWISE {
        // A source's list, when read, is scanned once for every holder; a source with
        // a long list is asked pair by pair.
        let held: Vec<(NodeId, RoleId)> = held.into_iter().filter(|(h, k)| inherits(*h, *k)).collect();
        let mut holders: Vec<NodeId> = Vec::new();
        if source_edges.iter().any(|(_, l)| l.is_some()) {
            holders.extend(held.iter().map(|(h, _)| *h));
            holders.sort_unstable();
            holders.dedup();
        }
        for (s, list) in source_edges.iter().filter(|_| !held.is_empty()) {
            match list {
                Some(l) => {
                    for (e, t, edge) in l.iter().filter(|(_, t, _)| holders.binary_search(t).is_ok()) {
                        for (holder, key_role) in held.iter().filter(|(h, _)| h == t) {
                            base.extend(key_record(*holder, *key_role, *e, *s, edge));
                        }
                    }
                }
                None => {
                    for (holder, key_role) in &held {
                        for (e, edge) in g.between_by(*s, *holder, true) {
                            base.extend(key_record(*holder, *key_role, e, *s, edge));
                        }
                    }
                }
            }
        }
    } else {
        for (holder, key_role) in held {
            if !inherits(holder, key_role) {
                continue;
            }
            for (e, from, edge) in edges_into(holder) {
                base.extend(key_record(holder, key_role, e, from, edge));
            }
        }
    }

    // Path 3: RoleMap, once, on direct and key-role records.
    if !COUNTED {
        let mut mapped = Vec::new();
        for r in &base {
            for g_role in c.role_map_of(r.role) {
                if w.a2_retired && c.is_altinn2_role(*g_role) {
                    continue;
                }
                mapped.push(Record {
                    from: r.from,
                    role: *g_role,
                    packages: packages_carried(w, *g_role, &PackageSet::EMPTY, r.from),
                    origin: r.origin,
                    mapped_from: Some(r.role),
                    repeat: None,
                });
            }
        }
        base.extend(mapped);
    }

    // Path 4: client delegations.
    if !COUNTED {
        for (e, from, edge) in edges_into(x) {
            if let Edge::Delegation(d) = edge {
                base.push(Record {
                    from,
                    role: d.role,
                    packages: d.packages,
                    origin: Origin::Delegation {
                        edge: e,
                        facilitator: d.facilitator,
                    },
                    mapped_from: None,
                    repeat: None,
                });
            }
        }
    }

    // Paths 5 and 6: repetitions of the records above.
    let sub_unit_repeat = |r: &Record, s: NodeId| {
        let mut rep = r.clone();
        rep.from = s;
        rep.repeat = Some(Repeat::SubUnit { main: r.from });
        if !matches!(r.origin, Origin::Delegation { .. }) {
            rep.packages = packages_carried(w, r.role, &r.packages, s);
        }
        rep
    };
    let owner_repeat = |r: &Record, owner: NodeId| {
        let mut rep = r.clone();
        rep.from = owner;
        rep.repeat = Some(Repeat::Owner { enk: r.from });
        rep
    };
    let mut out = Vec::new();
    match (target, &sources) {
        // Every record comes from a source of the target: path 5 repeats those of its
        // main unit to it, path 6 those of an ENK it owns (a person's sources).
        (Some(t), Some(sources)) => {
            let main = g.main_unit(t);
            // Each source once, with how often its owners name the target.
            let mut owner_of: Vec<(NodeId, usize)> = Vec::new();
            if !COUNTED {
                for s in sources {
                    if !owner_of.iter().any(|(o, _)| o == s) {
                        owner_of.push((*s, enk_owners(w, *s).iter().filter(|o| **o == t).count()));
                    }
                }
                owner_of.retain(|(_, n)| *n > 0);
            }
            for r in &base {
                if main == Some(r.from) {
                    out.push(sub_unit_repeat(r, t));
                }
                if !owner_of.is_empty() && c.is_owner_rule_role(r.role) {
                    for (_, n) in owner_of.iter().filter(|(s, _)| *s == r.from) {
                        out.extend((0..*n).map(|_| owner_repeat(r, t)));
                    }
                }
            }
        }
        // Many records share a giver (a role and its RoleMap roles), so the giver's
        // sub-units and owners are looked up once.
        _ => {
            let mut repeat_targets: rustc_hash::FxHashMap<NodeId, (Vec<NodeId>, Vec<NodeId>)> =
                Default::default();
            for r in &base {
                let (subs, owners) = repeat_targets
                    .entry(r.from)
                    .or_insert_with(|| (g.sub_units(r.from).collect(), enk_owners(w, r.from)));
                // Path 5: main unit → sub-units.
                for s in subs.iter() {
                    out.push(sub_unit_repeat(r, *s));
                }
                // Path 6: the owner of an ENK, for accountant and auditor records.
                if !owners.is_empty() && c.is_owner_rule_role(r.role) {
                    for owner in owners.iter() {
                        out.push(owner_repeat(r, *owner));
                    }
                }
            }
        }
    }
    base.extend(out);
    if let Some(t) = target {
        base.retain(|r| r.from == t);
    }
    base
}

/// The effective rights of `x` for `f`.
pub fn rights(w: &World, x: NodeId, f: NodeId) -> Rights {
    let recs = records(w, x, Some(f));
    let mut r = Rights::default();
    for rec in &recs {
        r.roles.extend(rec.held_role());
        r.packages.union_with(&rec.packages);
    }
    r.records = recs;
    r
}

/// The resource grants a record carries (resource → actions): those of a direct or
/// key-role assignment, or of a client delegation; RoleMap records carry none.
pub fn resource_grants<'a>(w: &'a World, rec: &Record) -> Option<&'a BTreeMap<NodeId, Actions>> {
    if rec.mapped_from.is_some() {
        return None;
    }
    match rec.origin {
        Origin::Direct { edge } | Origin::KeyRole { edge, .. } => {
            w.graph.assignment(edge).map(|a| &a.resources)
        }
        Origin::Delegation { edge, .. } => match w.graph.edge(edge) {
            Some(Edge::Delegation(d)) => Some(&d.resources),
            _ => None,
        },
        Origin::SelfPerson => None,
    }
}

/// Resource grant actions a record carries for resource `res` (and, with `instance`,
/// instance grant actions for that instance).
fn grant_actions<'a>(w: &'a World, rec: &Record, res: NodeId, instance: Option<&str>) -> Vec<&'a Actions> {
    let mut out: Vec<&Actions> = resource_grants(w, rec)
        .and_then(|m| m.get(&res))
        .into_iter()
        .collect();
    if let Some(i) = instance
        && rec.mapped_from.is_none()
        && !matches!(rec.repeat, Some(Repeat::SubUnit { .. }))
        && let Origin::Direct { edge } | Origin::KeyRole { edge, .. } = rec.origin
        && let Some(acts) = w
            .graph
            .assignment(edge)
            .and_then(|a| a.instances.get(&(res, i.to_string())))
    {
        out.push(acts);
    }
    out
}

/// Whether a policy token is matched by these roles and packages. The carriers
/// `rettighetshaver`, `appstyrt-rettighetshaver` and `agent` are not effective roles
/// (the `rights` query leaves them out, and the decision point's information point never
/// adds them, as Altinn's does not): a token naming one matches nobody.
pub fn token_matches(w: &World, t: Token, roles: &RoleSet, packages: &PackageSet) -> bool {
    match t {
        Token::Package(p) => packages.contains(p),
        Token::Role(r) => {
            let k = &w.catalog.known;
            roles.contains(r)
                && ![k.rettighetshaver, k.appstyrt_rettighetshaver, k.agent].contains(&r)
                && !(w.a2_retired && w.catalog.is_altinn2_role(r))
        }
    }
}

/// Whether the policy of `res` lets someone with these roles and packages do `action`.
pub fn policy_permits(
    w: &World,
    res: &Resource,
    action: &str,
    roles: &RoleSet,
    packages: &PackageSet,
) -> bool {
    res.rules.iter().any(|rule| {
        rule.actions.contains(action) && rule.any_of.iter().any(|t| token_matches(w, *t, roles, packages))
    })
}

/// Whether the resource or instance grants the records carry cover `action` on `res`
/// (the fallback of the decision order, `decide::order`).
pub fn grants_permit(w: &World, recs: &[Record], res: NodeId, action: &str, instance: Option<&str>) -> bool {
    recs.iter().any(|r| {
        grant_actions(w, r, res, instance)
            .into_iter()
            .any(|acts| acts.contains(action))
    })
}

/// The (resource, action) candidates of the records at resource level: actions of
/// `rules` naming a role or package held, and actions of resource grants (instance
/// grants are per instance and not listed). `decide::permitted_actions` decides each.
pub fn rule_and_grant_actions(w: &World, recs: &[Record]) -> BTreeSet<(NodeId, String)> {
    let mut roles = RoleSet::EMPTY;
    let mut packages = PackageSet::EMPTY;
    for r in recs {
        roles.extend(r.held_role());
        packages.union_with(&r.packages);
    }
    let mut out = BTreeSet::new();
    if !roles.is_empty() || !packages.is_empty() {
        for (n, res) in w.graph.resources() {
            for rule in &res.rules {
                if rule
                    .any_of
                    .iter()
                    .any(|t| token_matches(w, *t, &roles, &packages))
                {
                    for a in &rule.actions {
                        out.insert((n, a.clone()));
                    }
                }
            }
        }
    }
    for r in recs {
        for (res, acts) in resource_grants(w, r).into_iter().flatten() {
            for a in acts {
                out.insert((*res, a.clone()));
            }
        }
    }
    out
}

/// One entry of the authorized-parties answer.
#[derive(Debug, Clone)]
pub struct AuthorizedParty {
    pub party: NodeId,
    /// For a sub-unit: its main unit.
    pub main_unit: Option<NodeId>,
    pub roles: RoleSet,
    pub packages: PackageSet,
}

/// Every party `x` can act for, in the order first reached.
pub fn authorized_parties(w: &World, x: NodeId) -> Vec<AuthorizedParty> {
    let recs = records(w, x, None);
    let mut index: rustc_hash::FxHashMap<NodeId, usize> = Default::default();
    let mut out: Vec<AuthorizedParty> = Vec::new();
    for r in recs {
        let i = *index.entry(r.from).or_insert_with(|| {
            out.push(AuthorizedParty {
                party: r.from,
                main_unit: w.graph.main_unit(r.from),
                roles: RoleSet::EMPTY,
                packages: PackageSet::EMPTY,
            });
            out.len() - 1
        });
        if let Some(e) = out.get_mut(i) {
            e.roles.extend(r.held_role());
            e.packages.union_with(&r.packages);
        }
    }
    out
}

/// The subjects that may hold something for `f`: everyone whose records can start at `f`.
pub fn candidate_subjects(w: &World, f: NodeId) -> BTreeSet<NodeId> {
    let c = w.catalog;
    let g = &w.graph;
    let mut out = BTreeSet::new();
    if g.party(f).is_some_and(|p| p.is_living_person()) {
        out.insert(f);
    }
    for s in sources_for(w, f) {
        for (_, to, edge) in g.outgoing(s) {
            match edge {
                Edge::Assignment(a) if yields_records(c, a.role) => {
                    out.insert(to);
                    for (_, holder, e2) in g.outgoing(to) {
                        if let Edge::Assignment(k) = e2
                            && c.is_key_role(k.role)
                        {
                            out.insert(holder);
                        }
                    }
                }
                Edge::Delegation(_) => {
                    out.insert(to);
                }
                _ => {}
            }
        }
    }
    out
}

/// Every subject that holds package `p` for party `f` (the reverse query).
pub fn holders(w: &World, f: NodeId, p: PackageId) -> Vec<NodeId> {
    candidate_subjects(w, f)
        .into_iter()
        .filter(|x| rights(w, *x, f).packages.contains(p))
        .collect()
}

fn entity_type_of(w: &World, n: NodeId) -> Option<EntityType> {
    match w.graph.party(n)?.kind {
        PartyKind::Organisation => Some(EntityType::Organisation),
        PartyKind::Person => Some(EntityType::Person),
        PartyKind::SystemUser => None,
    }
}

/// Why a delegation check said no (or how it said yes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelegationVerdict {
    Yes,
    NotAssignable,
    WrongEntityType,
    NotHeld,
}

/// The delegation check (§5): may `u`, acting for `party`, grant package `p`?
pub fn can_delegate_package(w: &World, u: NodeId, party: NodeId, p: PackageId) -> DelegationVerdict {
    match package_refusal(w, party, p) {
        Some(v) => v,
        None => held_verdict(held_delegable_packages(w, u, party), p),
    }
}

/// [`can_delegate_package`] answered from `u`'s side ([`actor_delegation_records`]: the
/// delegation check counts no other records): the same verdict, for a write's actor
/// check.
pub fn actor_can_delegate_package(w: &World, u: NodeId, party: NodeId, p: PackageId) -> DelegationVerdict {
    match package_refusal(w, party, p) {
        Some(v) => v,
        None => held_verdict(
            held_delegable_in(w, u, party, &actor_delegation_records(w, u, party)),
            p,
        ),
    }
}

/// [`can_delegate_package`] given `u`'s records for `party` (`records(w, u,
/// Some(party))`, [`actor_records`], or [`actor_delegation_records`]: the records it
/// counts), for a caller that reads them for more than one question.
pub fn can_delegate_package_in(
    w: &World,
    u: NodeId,
    party: NodeId,
    p: PackageId,
    recs: &[Record],
) -> DelegationVerdict {
    match package_refusal(w, party, p) {
        Some(v) => v,
        None => held_verdict(held_delegable_in(w, u, party, recs), p),
    }
}

/// The package's own conditions of the delegation check: why `p` cannot be passed on
/// at `party` by anyone, or None.
fn package_refusal(w: &World, party: NodeId, p: PackageId) -> Option<DelegationVerdict> {
    let pkg = w.catalog.package(p);
    if !pkg.is_assignable {
        return Some(DelegationVerdict::NotAssignable);
    }
    if entity_type_of(w, party) != Some(pkg.entity_type) {
        return Some(DelegationVerdict::WrongEntityType);
    }
    None
}

fn held_verdict(held: PackageSet, p: PackageId) -> DelegationVerdict {
    if held.contains(p) {
        DelegationVerdict::Yes
    } else {
        DelegationVerdict::NotHeld
    }
}

/// The packages `u` holds for `party` in a way that lets them pass each on (§5), before
/// the package's own conditions (`is_assignable`, entity type): a package grant (except
/// the main administrator package), a role's `can_delegate` rows, and for a holder of
/// `hovedadministrator` its template. [`can_delegate_package`] is this plus those
/// conditions; the cut-off report asks it once per candidate instead of once per package.
pub fn held_delegable_packages(w: &World, u: NodeId, party: NodeId) -> PackageSet {
    held_delegable_in(w, u, party, &records(w, u, Some(party)))
}

/// [`held_delegable_packages`] given `u`'s records for `party` (`records(w, u,
/// Some(party))`).
fn held_delegable_in(w: &World, u: NodeId, party: NodeId, recs: &[Record]) -> PackageSet {
    let c = w.catalog;
    let admin_pkg = c.known.hovedadministrator;
    let ut = unit_type(w, party);
    let mut main_admin = false;
    let mut out = PackageSet::EMPTY;
    // §11.3: for a person party, what U ≠ P holds passes on only with the access
    // manager's package for P from the same sources.
    let person_party = u != party && w.graph.party(party).is_some_and(|p| p.kind == PartyKind::Person);
    let mut access_manager = false;
    for r in recs {
        if !r.counts_for_delegation() {
            continue;
        }
        if r.packages.contains(c.known.innbygger_tilgangsstyring) {
            access_manager = true;
        }
        if r.packages.contains(admin_pkg) {
            main_admin = true;
        }
        if c.is_rightholder(r.role) {
            // A package grant always counts as can_delegate, except the main
            // administrator package, which passes on only when held through a role.
            let mut granted = r.packages;
            granted.remove(admin_pkg);
            out.union_with(&granted);
        } else {
            out.union_with(&c.role_delegable_packages(r.role, ut));
        }
    }
    if main_admin {
        let mut template = c.main_admin_template(ut);
        template.remove(admin_pkg);
        out.union_with(&template);
    }
    if person_party && !access_manager {
        return PackageSet::EMPTY;
    }
    out
}

/// Whether `u` is an access manager of person `p` (domain.md §11.4): `u` ≠ `p` holds
/// `innbygger-tilgangsstyring-privatperson` for `p` through one of §5's sources (a
/// direct assignment or a key role; never a client delegation).
pub fn is_person_access_manager(w: &World, u: NodeId, p: NodeId) -> bool {
    u != p
        && w.graph.party(p).is_some_and(|x| x.kind == PartyKind::Person)
        && manages_person_in(w, &records(w, u, Some(p)))
}

/// [`is_person_access_manager`] given `u`'s records for `p` (`records(w, u, Some(p))`,
/// or only those the delegation check counts: [`actor_delegation_records`]).
pub fn is_person_access_manager_in(w: &World, u: NodeId, p: NodeId, recs: &[Record]) -> bool {
    u != p && w.graph.party(p).is_some_and(|x| x.kind == PartyKind::Person) && manages_person_in(w, recs)
}

fn manages_person_in(w: &World, recs: &[Record]) -> bool {
    recs.iter()
        .any(|r| r.counts_for_delegation() && r.packages.contains(w.catalog.known.innbygger_tilgangsstyring))
}

/// The packages someone at `party` may pass on (§5): the union of
/// [`held_delegable_packages`] over every subject, read straight from the assignments
/// out of the party and its main unit (and a living person's own `privatperson`). The
/// records the delegation check counts are direct and key-role records of those
/// assignments (repeated to the sub-unit); a key-role holder inherits exactly the record
/// of the assignment's receiver, so the receivers alone make up the union. The cut-off
/// report asks this once per party instead of resolving every candidate. For a person
/// party (§11.3 makes the condition per subject) it is the union over the candidate
/// subjects themselves; a person has few.
pub fn delegable_at(w: &World, party: NodeId) -> PackageSet {
    let c = w.catalog;
    let g = &w.graph;
    if g.party(party).is_some_and(|p| p.kind == PartyKind::Person) {
        let mut out = PackageSet::EMPTY;
        for u in candidate_subjects(w, party) {
            out.union_with(&held_delegable_packages(w, u, party));
        }
        return out;
    }
    let admin_pkg = c.known.hovedadministrator;
    let ut = unit_type(w, party);
    let mut main_admin = false;
    let mut out = PackageSet::EMPTY;
    // (role, packages of its record) of every record that counts.
    let mut counted: Vec<(RoleId, PackageSet)> = Vec::new();
    if g.party(party).is_some_and(|p| p.is_living_person()) {
        let role = c.known.privatperson;
        counted.push((role, packages_carried(w, role, &PackageSet::EMPTY, party)));
    }
    for s in std::iter::once(party).chain(g.main_unit(party)) {
        for (_, _, edge) in g.outgoing(s) {
            if let Edge::Assignment(a) = edge
                && yields_records(c, a.role)
            {
                counted.push((a.role, packages_of(w, a.role, Some(edge), party)));
            }
        }
    }
    for (role, packages) in counted {
        if packages.contains(admin_pkg) {
            main_admin = true;
        }
        if c.is_rightholder(role) {
            let mut granted = packages;
            granted.remove(admin_pkg);
            out.union_with(&granted);
        } else {
            out.union_with(&c.role_delegable_packages(role, ut));
        }
    }
    if main_admin {
        let mut template = c.main_admin_template(ut);
        template.remove(admin_pkg);
        out.union_with(&template);
    }
    out
}

/// Does `x` hold package `p` for `f`?
pub fn has_package(w: &World, x: NodeId, f: NodeId, p: PackageId) -> bool {
    records(w, x, Some(f)).iter().any(|r| r.packages.contains(p))
}

/// [`has_package`] read from `x`'s side ([`actor_records`]): the same answer, for a
/// write's actor check.
pub fn actor_has_package(w: &World, x: NodeId, f: NodeId, p: PackageId) -> bool {
    actor_records(w, x, f).iter().any(|r| r.packages.contains(p))
}

/// Does `x` hold role `role` for `f` (key-role and RoleMap paths included)?
pub fn has_role(w: &World, x: NodeId, f: NodeId, role: RoleId) -> bool {
    records(w, x, Some(f)).iter().any(|r| r.held_role() == Some(role))
}

/// A human-readable derivation of one record: the chain of edges it rests on.
pub fn describe(w: &World, x: NodeId, r: &Record) -> String {
    let c = w.catalog;
    let id = |n: NodeId| w.graph.ext_id(n).to_string();
    let role = |r: RoleId| c.role(r).code.clone();
    let (origin_from, tail) = match r.repeat {
        Some(Repeat::SubUnit { main }) => (
            main,
            format!(
                "; repeated for sub-unit `{}` of main unit `{}`",
                id(r.from),
                id(main)
            ),
        ),
        Some(Repeat::Owner { enk }) => (
            enk,
            format!(
                "; repeated for `{}`, living owner (innehaver) of ENK `{}`",
                id(r.from),
                id(enk)
            ),
        ),
        None => (r.from, String::new()),
    };
    let base_role = r.mapped_from.unwrap_or(r.role);
    let mut s = match r.origin {
        Origin::Direct { .. } => format!(
            "direct: `{}` → `{}` as {}",
            id(origin_from),
            id(x),
            role(base_role)
        ),
        Origin::SelfPerson => format!("self: `{}` holds {} for themself", id(x), role(base_role)),
        Origin::KeyRole { holder, key_role, .. } => format!(
            "key role: `{}` → `{}` as {}, and `{}` → `{}` as key role {}",
            id(origin_from),
            id(holder),
            role(base_role),
            id(holder),
            id(x),
            role(key_role)
        ),
        Origin::Delegation { facilitator, .. } => format!(
            "client delegation: `{}` → `{}` as {}, forwarded by facilitator `{}` to agent `{}`",
            id(origin_from),
            id(facilitator),
            role(base_role),
            id(facilitator),
            id(x)
        ),
    };
    if let Some(from_role) = r.mapped_from {
        s.push_str(&format!("; RoleMap {} → {}", role(from_role), role(r.role)));
    }
    s.push_str(&tail);
    s
}

/// One edge of a derivation path, by external ids and catalogue codes.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct Link {
    pub from: String,
    pub to: String,
    /// The role code of the edge.
    pub role: String,
    /// The facilitator of a client delegation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// `assignment`, `self`, `key_role`, `client_delegation`, `role_map`, `main_unit`
    /// (sub-unit → main unit, the record repeated for the sub-unit) or `enk_owner`
    /// (ENK → its living owner).
    pub reason: String,
}

/// The edges one record rests on, in the order they are followed from the party that
/// gives to the subject (for a repeat: the main-unit or owner link last).
pub fn derivation(w: &World, x: NodeId, r: &Record) -> Vec<Link> {
    let c = w.catalog;
    let id = |n: NodeId| w.graph.ext_id(n).to_string();
    let role = |r: RoleId| c.role(r).code.clone();
    let link = |from: NodeId, to: NodeId, r: String, via: Option<NodeId>, reason: &str| Link {
        from: id(from),
        to: id(to),
        role: r,
        via: via.map(id),
        reason: reason.to_string(),
    };
    let origin_from = match r.repeat {
        Some(Repeat::SubUnit { main }) => main,
        Some(Repeat::Owner { enk }) => enk,
        None => r.from,
    };
    let base_role = r.mapped_from.unwrap_or(r.role);
    let mut out = match r.origin {
        Origin::Direct { .. } => vec![link(origin_from, x, role(base_role), None, "assignment")],
        Origin::SelfPerson => vec![link(x, x, role(base_role), None, "self")],
        Origin::KeyRole { holder, key_role, .. } => vec![
            link(origin_from, holder, role(base_role), None, "assignment"),
            link(holder, x, role(key_role), None, "key_role"),
        ],
        Origin::Delegation { facilitator, .. } => vec![
            link(origin_from, facilitator, role(base_role), None, "assignment"),
            link(
                origin_from,
                x,
                role(base_role),
                Some(facilitator),
                "client_delegation",
            ),
        ],
    };
    if r.mapped_from.is_some() {
        out.push(link(origin_from, x, role(r.role), None, "role_map"));
    }
    match r.repeat {
        Some(Repeat::SubUnit { main }) => {
            out.push(link(r.from, main, role(c.known.hovedenhet), None, "main_unit"))
        }
        Some(Repeat::Owner { enk }) => {
            out.push(link(enk, r.from, role(c.known.innehaver), None, "enk_owner"))
        }
        None => {}
    }
    out
}

/// The derivation paths behind "x holds package p for f" (empty when it does not).
pub fn explain_package(w: &World, x: NodeId, f: NodeId, p: PackageId) -> Vec<String> {
    records(w, x, Some(f))
        .iter()
        .filter(|r| r.packages.contains(p))
        .map(|r| describe(w, x, r))
        .collect()
}

/// The derivation paths behind "x holds role `role` for f".
pub fn explain_role(w: &World, x: NodeId, f: NodeId, role: RoleId) -> Vec<String> {
    records(w, x, Some(f))
        .iter()
        .filter(|r| r.held_role() == Some(role))
        .map(|r| describe(w, x, r))
        .collect()
}

/// The clients an agent acts for through facilitator `f`'s client delegations.
pub fn clients(w: &World, f: NodeId, agent: NodeId) -> BTreeSet<NodeId> {
    w.graph
        .incoming(agent)
        .filter_map(|(_, c, e)| match e {
            Edge::Delegation(d) if d.facilitator == f => Some(c),
            _ => None,
        })
        .collect()
}
