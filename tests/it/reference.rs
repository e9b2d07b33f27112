//! A deliberately naive reference model of the rules of domain.md: resolution (§4), the
//! delegation check (§5), and enough of the mutations (§3, §6) to follow random event
//! sequences; system users and requests (§7), consent (§9), Maskinporten suppliers (§10)
//! and citizen power of attorney (§11), with the engine clock for consent expiry.
//!
//! It is written from the spec text, not from the engine, so that the two can disagree:
//! plain vectors of assignments and delegations, every query a loop over all of them,
//! no indexes, no graph library. It takes only catalogue *data* from the engine
//! (`Catalog::builtin()`: roles, packages, RolePackage and RoleMap rows, lookups by
//! name) and never calls `delegraph::resolve` or `delegraph::mutate`.
//!
//! Where the spec leaves a choice open, the model follows the engine's documented
//! choice; each such place says so in a comment starting `Spec choice:`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use chrono::{DateTime, FixedOffset};

use delegraph::catalog::{Catalog, Provider, RolePackageRow};
use delegraph::event::{Event, GrantEvent, ResourceEvent};
use delegraph::model::{EntityType, ErrorCode, PackageId, PartyKind, RoleId};

/// Actions on one resource.
pub type Acts = BTreeSet<String>;

#[derive(Debug, Clone)]
pub struct Party {
    pub kind: PartyKind,
    pub unit_type: Option<String>,
    pub main_unit: Option<String>,
    pub alive: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub from: String,
    pub to: String,
    pub role: RoleId,
    /// Package grants (only on rightholder assignments).
    pub packages: BTreeSet<PackageId>,
    /// Resource grants: resource id → actions (only on rightholder assignments).
    pub resources: BTreeMap<String, Acts>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delegation {
    pub client: String,
    pub facilitator: String,
    pub agent: String,
    /// The role of the client assignment client → facilitator.
    pub role: RoleId,
    pub packages: BTreeSet<PackageId>,
    pub resources: BTreeMap<String, Acts>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Token {
    Package(PackageId),
    Role(RoleId),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub actions: Acts,
    pub any_of: Vec<Token>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub delegable: bool,
    pub owner: Option<String>,
    pub rules: Vec<Rule>,
    /// An XACML policy (replaces `rules`), in the meaning the test gave its document.
    pub policy: Option<Policy>,
    /// Access lists of the owner, and whether access-list mode is on.
    pub lists: Vec<String>,
    pub list_mode: bool,
}

/// The effect of an XACML rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Permit,
    Deny,
}

/// One XACML rule of the shape the property tests write: it applies to an action it
/// lists, for a subject holding one of `any_of` (anyone when empty).
#[derive(Debug, Clone)]
pub struct PolicyRule {
    pub effect: Effect,
    pub actions: Acts,
    pub any_of: Vec<Token>,
}

/// An XACML policy with the deny-overrides rule-combining algorithm.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<PolicyRule>,
}

/// A decision of the policy step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Permit,
    Deny,
    NotApplicable,
}

/// An access-list member: an organisation and its action filter (None: every action).
pub type ListMember = (String, Option<Acts>);

/// The whole reference world.
#[derive(Debug, Clone)]
pub struct RefWorld {
    pub parties: BTreeMap<String, Party>,
    pub assignments: Vec<Assignment>,
    pub delegations: Vec<Delegation>,
    pub resources: BTreeMap<String, Resource>,
    pub a2_retired: bool,
    /// (owner, list id) → members: organisation and its action filter (None: all).
    pub access_lists: BTreeMap<(String, String), Vec<ListMember>>,
    /// The meaning of each XACML document the test hands the engine: the reference
    /// does not read XML, it is told what each document says.
    pub policy_texts: BTreeMap<String, Policy>,
    /// System id → the packages it registered.
    pub systems: BTreeMap<String, BTreeSet<PackageId>>,
    /// Request id → request (system-user, change and access requests).
    pub requests: BTreeMap<String, Request>,
    /// Standard system user → (owner, system).
    pub system_users: BTreeMap<String, (String, String)>,
    // §10: scope resources → their scopes; (consumer, supplier) → delegated resources.
    pub scope_resources: BTreeMap<String, BTreeSet<String>>,
    pub suppliers: BTreeMap<(String, String), BTreeSet<String>>,
    // §9: the engine clock, consent resources → one-time, consents by id.
    pub now: Option<DateTime<FixedOffset>>,
    pub consent_resources: BTreeMap<String, bool>,
    pub consents: BTreeMap<String, RefConsent>,
}

/// A request's state (§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqState {
    Draft,
    Pending,
    Accepted,
    Approved,
    Rejected,
    Withdrawn,
}

impl ReqState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReqState::Draft => "draft",
            ReqState::Pending => "pending",
            ReqState::Accepted => "accepted",
            ReqState::Approved => "approved",
            ReqState::Rejected => "rejected",
            ReqState::Withdrawn => "withdrawn",
        }
    }
}

/// What an access request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessTarget {
    Package(PackageId),
    Resource(String, String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    SystemUser {
        system: String,
        party: String,
        system_user: String,
        packages: BTreeSet<PackageId>,
        external_ref: Option<String>,
    },
    Change {
        system_user: String,
        add: BTreeSet<PackageId>,
        remove: BTreeSet<PackageId>,
    },
    Access {
        from: String,
        to: String,
        target: AccessTarget,
        by: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Request {
    pub body: RequestBody,
    pub state: ReqState,
}

/// How a record was found (§4 paths 1, 2, 4, and the implicit `privatperson`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    SelfPerson,
    Direct,
    KeyRole,
    ClientDelegation,
}

/// One way by which a subject acts for `from`.
#[derive(Debug, Clone)]
pub struct Record {
    pub from: String,
    pub role: RoleId,
    pub packages: BTreeSet<PackageId>,
    pub resources: BTreeMap<String, Acts>,
    pub how: How,
    /// Made by RoleMap (path 3).
    pub mapped: bool,
    /// Repeated from a main unit to a sub-unit (path 5).
    pub for_sub_unit: bool,
    /// Repeated from an ENK to its owner (path 6).
    pub for_owner: bool,
}

/// An assignment's identity: (from, to, role).
type AssignmentKey = (String, String, RoleId);
/// A client delegation's identity: (client, facilitator, agent, client assignment role).
type DelegationKey = (String, String, String, RoleId);

/// What a successful event removed (simulate's `removed` counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub assignments: usize,
    pub delegations: usize,
}

fn cat() -> &'static Catalog {
    Catalog::builtin()
}

/// A catalogue role by name. The names the rules use are looked up once per thread
/// (only to keep the test fast).
fn role(code: &'static str) -> RoleId {
    thread_local! {
        static SEEN: std::cell::RefCell<BTreeMap<&'static str, RoleId>> = const { std::cell::RefCell::new(BTreeMap::new()) };
    }
    SEEN.with(|m| {
        *m.borrow_mut()
            .entry(code)
            .or_insert_with(|| match cat().role_id(code) {
                Some(r) => r,
                None => panic!("reference: role `{code}` missing from the catalogue"),
            })
    })
}

fn package(code: &'static str) -> PackageId {
    match cat().package_id(code) {
        Some(p) => p,
        None => panic!("reference: package `{code}` missing from the catalogue"),
    }
}

fn lookup_token_role(name: &str) -> RoleId {
    match cat().role_id(name) {
        Some(r) => r,
        None => panic!("reference: role `{name}` missing from the catalogue"),
    }
}

fn lookup_token_package(name: &str) -> PackageId {
    match cat().package_id(name) {
        Some(p) => p,
        None => panic!("reference: package `{name}` missing from the catalogue"),
    }
}

fn provider(r: RoleId) -> Provider {
    cat().role(r).provider
}

fn is_a2(r: RoleId) -> bool {
    provider(r) == Provider::Altinn2
}

fn is_rightholder(r: RoleId) -> bool {
    r == role("rettighetshaver") || r == role("appstyrt-rettighetshaver")
}

/// The packages the RolePackage rows of `r` give at a party of `unit_type`: rows with
/// `has_access` (or, with `delegate`, rows with `can_delegate`); a row with a unit-type
/// condition only when the unit type matches.
fn rows(r: RoleId, unit_type: Option<&str>, delegate: bool) -> BTreeSet<PackageId> {
    // The RolePackage rows grouped by role, once (only to keep the test fast).
    static BY_ROLE: OnceLock<BTreeMap<RoleId, Vec<&'static RolePackageRow>>> = OnceLock::new();
    let by_role = BY_ROLE.get_or_init(|| {
        let mut m: BTreeMap<RoleId, Vec<&'static RolePackageRow>> = BTreeMap::new();
        for row in &cat().role_packages {
            m.entry(row.role).or_default().push(row);
        }
        m
    });
    let mut out = BTreeSet::new();
    for row in by_role.get(&r).into_iter().flatten() {
        let applies = match (&row.unit_type, unit_type) {
            (None, _) => true,
            (Some(cond), Some(u)) => cond.eq_ignore_ascii_case(u),
            (Some(_), None) => false,
        };
        let flag = if delegate {
            row.can_delegate
        } else {
            row.has_access
        };
        if applies && flag {
            out.insert(row.package);
        }
    }
    out
}

/// RoleMap, one step.
fn role_map(r: RoleId) -> Vec<RoleId> {
    cat()
        .role_map
        .iter()
        .filter(|(has, _)| *has == r)
        .map(|(_, gets)| *gets)
        .collect()
}

fn is_owner_rule_role(r: RoleId) -> bool {
    [
        "regnskapsforer",
        "revisor",
        "a0237",
        "a0238",
        "a0239",
        "a0240",
        "a0241",
    ]
    .iter()
    .any(|c| role(c) == r)
}

pub fn parse_token(t: &str) -> Token {
    if t.to_lowercase().starts_with("urn:altinn:accesspackage:") {
        Token::Package(lookup_token_package(t))
    } else {
        Token::Role(lookup_token_role(t))
    }
}

impl RefWorld {
    pub fn new() -> RefWorld {
        RefWorld {
            parties: BTreeMap::new(),
            assignments: Vec::new(),
            delegations: Vec::new(),
            resources: BTreeMap::new(),
            a2_retired: false,
            access_lists: BTreeMap::new(),
            policy_texts: BTreeMap::new(),
            systems: BTreeMap::new(),
            requests: BTreeMap::new(),
            system_users: BTreeMap::new(),
            scope_resources: BTreeMap::new(),
            suppliers: BTreeMap::new(),
            now: None,
            consent_resources: BTreeMap::new(),
            consents: BTreeMap::new(),
        }
    }

    pub fn add_person(&mut self, id: &str) {
        self.parties.insert(
            id.to_string(),
            Party {
                kind: PartyKind::Person,
                unit_type: None,
                main_unit: None,
                alive: true,
            },
        );
    }

    pub fn add_org(&mut self, id: &str, unit_type: &str, main_unit: Option<&str>) {
        self.parties.insert(
            id.to_string(),
            Party {
                kind: PartyKind::Organisation,
                unit_type: Some(unit_type.to_string()),
                main_unit: main_unit.map(str::to_string),
                alive: true,
            },
        );
    }

    pub fn add_resource(&mut self, ev: &ResourceEvent) {
        let rules = ev
            .rules
            .iter()
            .map(|r| Rule {
                actions: r.actions.iter().map(|a| a.to_lowercase()).collect(),
                any_of: r.any_of.iter().map(|t| parse_token(t)).collect(),
            })
            .collect();
        // A `resource` event replaces the resource; a non-empty rule list replaces an
        // XACML policy; the list fields change only when given.
        if ev.kind == Some(delegraph::event::ResourceKind::MaskinportenSchema) {
            let scopes = ev.scopes.iter().flatten().cloned().collect();
            self.scope_resources.insert(ev.id.clone(), scopes);
        } else {
            self.scope_resources.remove(&ev.id);
        }
        if ev.kind == Some(delegraph::event::ResourceKind::Consent) {
            self.consent_resources
                .insert(ev.id.clone(), ev.one_time.unwrap_or(false));
        } else {
            self.consent_resources.remove(&ev.id);
        }
        let old = self.resources.get(&ev.id).cloned();
        let policy = old
            .as_ref()
            .and_then(|o| o.policy.clone())
            .filter(|_| ev.rules.is_empty());
        self.resources.insert(
            ev.id.clone(),
            Resource {
                delegable: ev.delegable.unwrap_or(true),
                owner: ev.owner.clone(),
                rules,
                policy,
                lists: ev
                    .access_lists
                    .clone()
                    .or_else(|| old.as_ref().map(|o| o.lists.clone()))
                    .unwrap_or_default(),
                list_mode: match &ev.access_list_mode {
                    Some(m) => m == "enabled",
                    None => old.as_ref().is_some_and(|o| o.list_mode),
                },
            },
        );
    }

    fn unit_type(&self, id: &str) -> Option<&str> {
        self.parties.get(id).and_then(|p| p.unit_type.as_deref())
    }

    fn is_unit_type(&self, id: &str, t: &str) -> bool {
        self.unit_type(id).is_some_and(|u| u.eq_ignore_ascii_case(t))
    }

    fn is_living_person(&self, id: &str) -> bool {
        self.parties
            .get(id)
            .is_some_and(|p| p.kind == PartyKind::Person && p.alive)
    }

    fn sub_units_of(&self, id: &str) -> Vec<String> {
        self.parties
            .iter()
            .filter(|(_, p)| p.main_unit.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect()
    }

    // ------------------------------------------------------------------------------
    // §4 Resolution

    /// The packages an assignment gives at its giver (§4.1).
    fn assignment_packages(&self, a: &Assignment) -> BTreeSet<PackageId> {
        if is_rightholder(a.role) {
            a.packages.clone()
        } else {
            rows(a.role, self.unit_type(&a.from), false)
        }
    }

    fn record_of(&self, a: &Assignment, how: How) -> Record {
        Record {
            from: a.from.clone(),
            role: a.role,
            packages: self.assignment_packages(a),
            resources: if is_rightholder(a.role) {
                a.resources.clone()
            } else {
                BTreeMap::new()
            },
            how,
            mapped: false,
            for_sub_unit: false,
            for_owner: false,
        }
    }

    /// Every record by which `x` acts for anyone.
    pub fn records(&self, x: &str) -> Vec<Record> {
        let dtpr = role("deltaker-delt-ansvar");
        let mut base = Vec::new();

        // A living person holds privatperson for themself (§1).
        if self.is_living_person(x) {
            let pp = role("privatperson");
            base.push(Record {
                from: x.to_string(),
                role: pp,
                packages: rows(pp, None, false),
                resources: BTreeMap::new(),
                how: How::SelfPerson,
                mapped: false,
                for_sub_unit: false,
                for_owner: false,
            });
        }
        // 1. Direct.
        for a in &self.assignments {
            if a.to == x {
                base.push(self.record_of(a, How::Direct));
            }
        }
        // 2. Key role, one hop: F → O with r, O → X with a key role.
        for k in &self.assignments {
            if k.to != x || !cat().role(k.role).is_key_role {
                continue;
            }
            let o = &k.from;
            // Spec choice: the IKS exception blocks both a DTPR holder of an IKS
            // inheriting what the IKS received, and a key-role holder of a participant
            // inheriting the participant's DTPR role on an IKS.
            if k.role == dtpr && self.is_unit_type(o, "IKS") {
                continue;
            }
            for a in &self.assignments {
                if &a.to != o {
                    continue;
                }
                if a.role == dtpr && self.is_unit_type(&a.from, "IKS") {
                    continue;
                }
                base.push(self.record_of(a, How::KeyRole));
            }
        }
        // 3. RoleMap, once, on what we have so far (never on client delegations).
        let mut mapped = Vec::new();
        for r in &base {
            for g in role_map(r.role) {
                // Spec choice: after the Altinn 2 cut-off, RoleMap no longer yields
                // Altinn 2 roles (the engine drops them from records).
                if self.a2_retired && is_a2(g) {
                    continue;
                }
                mapped.push(Record {
                    from: r.from.clone(),
                    role: g,
                    packages: rows(g, self.unit_type(&r.from), false),
                    resources: BTreeMap::new(),
                    how: r.how,
                    mapped: true,
                    for_sub_unit: false,
                    for_owner: false,
                });
            }
        }
        base.extend(mapped);
        // 4. Client delegations.
        for d in &self.delegations {
            if d.agent == x {
                base.push(Record {
                    from: d.client.clone(),
                    role: d.role,
                    packages: d.packages.clone(),
                    resources: d.resources.clone(),
                    how: How::ClientDelegation,
                    mapped: false,
                    for_sub_unit: false,
                    for_owner: false,
                });
            }
        }
        // 5 and 6: repetitions of records 1–4.
        let mut out = base.clone();
        for r in &base {
            for s in self.sub_units_of(&r.from) {
                let mut rep = r.clone();
                rep.from = s.clone();
                rep.for_sub_unit = true;
                if r.how != How::ClientDelegation && !is_rightholder(r.role) {
                    rep.packages = rows(r.role, self.unit_type(&s), false);
                }
                out.push(rep);
            }
            if is_owner_rule_role(r.role) && self.is_unit_type(&r.from, "ENK") {
                for a in &self.assignments {
                    if a.from == r.from && a.role == role("innehaver") && self.is_living_person(&a.to) {
                        let mut rep = r.clone();
                        rep.from = a.to.clone();
                        rep.for_owner = true;
                        out.push(rep);
                    }
                }
            }
        }
        out
    }

    pub fn records_for(&self, x: &str, f: &str) -> Vec<Record> {
        self.records(x).into_iter().filter(|r| r.from == f).collect()
    }

    /// The roles a set of records holds. A client delegation gives no role (§4.4).
    pub fn roles_of(recs: &[&Record]) -> BTreeSet<RoleId> {
        recs.iter()
            .filter(|r| r.how != How::ClientDelegation)
            .map(|r| r.role)
            .collect()
    }

    pub fn packages_of(recs: &[&Record]) -> BTreeSet<PackageId> {
        recs.iter().flat_map(|r| r.packages.iter().copied()).collect()
    }

    fn token_matches(&self, t: Token, roles: &BTreeSet<RoleId>, pkgs: &BTreeSet<PackageId>) -> bool {
        match t {
            Token::Package(p) => pkgs.contains(&p),
            // Spec choice: the carriers are not effective roles (`rights` leaves them
            // out; the decision point never adds them): a token naming one matches nobody.
            Token::Role(r) => {
                roles.contains(&r)
                    && !["rettighetshaver", "appstyrt-rettighetshaver", "agent"]
                        .map(role)
                        .contains(&r)
                    && !(self.a2_retired && is_a2(r))
            }
        }
    }

    /// The resource decision of §4 over records of a subject for party `f`: the policy
    /// (rules: Permit or NotApplicable; XACML: deny-overrides over the rules that apply),
    /// on NotApplicable the resource grants, and a Permit on a resource in access-list
    /// mode stands only for an organisation on one of its lists admitting the action.
    pub fn permits_with(&self, recs: &[&Record], f: &str, res: &str, action: &str) -> bool {
        // §9.5: records never permit on a consent resource (only a consent does).
        !self.consent_resources.contains_key(res) && self.policy_permits(recs, f, res, action)
    }

    /// The decision order of [`Self::permits_with`] for any resource, a consent
    /// resource's rules included (read only by the consent acceptance check, §9.4).
    fn policy_permits(&self, recs: &[&Record], f: &str, res: &str, action: &str) -> bool {
        let Some(resource) = self.resources.get(res) else {
            return false;
        };
        let roles = Self::roles_of(recs);
        let pkgs = Self::packages_of(recs);
        let holds = |any_of: &[Token]| any_of.iter().any(|t| self.token_matches(*t, &roles, &pkgs));
        let mut d = match &resource.policy {
            Some(p) => {
                let applies: Vec<&PolicyRule> = p
                    .rules
                    .iter()
                    .filter(|r| r.actions.contains(action) && (r.any_of.is_empty() || holds(&r.any_of)))
                    .collect();
                if applies.iter().any(|r| r.effect == Effect::Deny) {
                    Decision::Deny
                } else if applies.iter().any(|r| r.effect == Effect::Permit) {
                    Decision::Permit
                } else {
                    Decision::NotApplicable
                }
            }
            None => {
                if resource
                    .rules
                    .iter()
                    .any(|rule| rule.actions.contains(action) && holds(&rule.any_of))
                {
                    Decision::Permit
                } else {
                    Decision::NotApplicable
                }
            }
        };
        if d == Decision::NotApplicable
            && recs
                .iter()
                .any(|r| !r.mapped && r.resources.get(res).is_some_and(|acts| acts.contains(action)))
        {
            d = Decision::Permit;
        }
        d == Decision::Permit && (!resource.list_mode || self.on_list(resource, f, action))
    }

    /// Whether party `f` is an organisation on one of the resource's lists whose action
    /// filter admits `action`.
    fn on_list(&self, res: &Resource, f: &str, action: &str) -> bool {
        if self.parties.get(f).map(|p| p.kind) != Some(PartyKind::Organisation) {
            return false;
        }
        let owner = res.owner.clone().unwrap_or_default();
        res.lists.iter().any(|l| {
            self.access_lists
                .get(&(owner.clone(), l.clone()))
                .is_some_and(|ms| {
                    ms.iter()
                        .any(|(org, acts)| org == f && acts.as_ref().is_none_or(|a| a.contains(action)))
                })
        })
    }

    /// Every action named for `res` by its policy or by any grant of it.
    pub fn actions_named(&self, res: &str) -> Acts {
        let mut out = Acts::new();
        if let Some(r) = self.resources.get(res) {
            for rule in &r.rules {
                out.extend(rule.actions.iter().cloned());
            }
            for rule in r.policy.iter().flat_map(|p| p.rules.iter()) {
                out.extend(rule.actions.iter().cloned());
            }
        }
        for a in &self.assignments {
            if let Some(x) = a.resources.get(res) {
                out.extend(x.iter().cloned());
            }
        }
        for d in &self.delegations {
            if let Some(x) = d.resources.get(res) {
                out.extend(x.iter().cloned());
            }
        }
        out
    }

    // ------------------------------------------------------------------------------
    // §5 The delegation check

    /// Records that count for the delegation check: direct or key role (or those at
    /// the main unit, i.e. repeated for a sub-unit); never client delegations, RoleMap
    /// or the owner rule.
    fn delegation_records<'a>(recs: &[&'a Record]) -> Vec<&'a Record> {
        recs.iter()
            .copied()
            .filter(|r| {
                // Spec choice: the person's own privatperson counts like a direct
                // assignment (a citizen may pass on their own citizen packages).
                matches!(r.how, How::Direct | How::KeyRole | How::SelfPerson) && !r.mapped && !r.for_owner
            })
            .collect()
    }

    fn entity_type(&self, id: &str) -> Option<EntityType> {
        match self.parties.get(id)?.kind {
            PartyKind::Person => Some(EntityType::Person),
            PartyKind::Organisation => Some(EntityType::Organisation),
            PartyKind::SystemUser => None,
        }
    }

    pub fn can_delegate_package(&self, u: &str, p: &str, pkg: PackageId) -> bool {
        let recs = self.records_for(u, p);
        self.can_delegate_package_with(u, &recs.iter().collect::<Vec<_>>(), p, pkg)
    }

    /// §11.3–§11.4: `u` ≠ `p`, `p` a person, and `u` holds
    /// `innbygger-tilgangsstyring-privatperson` for `p` through a record the delegation
    /// check counts (`recs` are `u`'s records for `p`).
    fn is_person_access_manager(&self, u: &str, recs: &[&Record], p: &str) -> bool {
        u != p
            && self.entity_type(p) == Some(EntityType::Person)
            && Self::delegation_records(recs).iter().any(|r| {
                r.packages
                    .contains(&package("innbygger-tilgangsstyring-privatperson"))
            })
    }

    /// §11.3: for a person party, a user other than the person passes on only as the
    /// person's access manager.
    fn person_party_allows(&self, u: &str, recs: &[&Record], p: &str) -> bool {
        u == p || self.entity_type(p) != Some(EntityType::Person) || self.is_person_access_manager(u, recs, p)
    }

    /// The delegation check over `recs`, the records of the user `u` for party `p`.
    pub fn can_delegate_package_with(&self, u: &str, recs: &[&Record], p: &str, pkg: PackageId) -> bool {
        let c = cat();
        let info = c.package(pkg);
        if !info.is_assignable || self.entity_type(p) != Some(info.entity_type) {
            return false;
        }
        if !self.person_party_allows(u, recs, p) {
            return false;
        }
        let admin = package("urn:altinn:accesspackage:hovedadministrator");
        let ut = self.unit_type(p);
        let recs = Self::delegation_records(recs);
        for r in &recs {
            if is_rightholder(r.role) {
                if pkg != admin && r.packages.contains(&pkg) {
                    return true;
                }
            } else if rows(r.role, ut, true).contains(&pkg) {
                return true;
            }
        }
        let holds_admin = recs.iter().any(|r| r.packages.contains(&admin));
        holds_admin
            && pkg != admin
            && rows(role("urn:altinn:role:hovedadministrator"), ut, true).contains(&pkg)
    }

    pub fn can_delegate_resource(&self, u: &str, p: &str, res: &str, action: &str) -> bool {
        let recs = self.records_for(u, p);
        self.can_delegate_resource_with(u, &recs.iter().collect::<Vec<_>>(), p, res, action)
    }

    /// The resource delegation check over `recs`, the records of the user for party
    /// `p`: the resource is delegable and the user is permitted the action for `p` (the
    /// policy, the grants and the access lists) through records other than client
    /// delegations — RoleMap records and the main-unit and owner repeats count.
    pub fn can_delegate_resource_with(
        &self,
        u: &str,
        recs: &[&Record],
        p: &str,
        res: &str,
        action: &str,
    ) -> bool {
        if !self.resources.get(res).is_some_and(|r| r.delegable) {
            return false;
        }
        if !self.person_party_allows(u, recs, p) {
            return false;
        }
        let counted: Vec<&Record> = recs
            .iter()
            .copied()
            .filter(|r| r.how != How::ClientDelegation)
            .collect();
        self.permits_with(&counted, p, res, action)
    }

    fn holds_package(&self, x: &str, f: &str, pkg: PackageId) -> bool {
        self.records_for(x, f).iter().any(|r| r.packages.contains(&pkg))
    }

    // ------------------------------------------------------------------------------
    // §3, §6 Mutations

    fn party_exists(&self, id: &str) -> Result<(), ErrorCode> {
        if self.parties.contains_key(id) {
            Ok(())
        } else {
            Err(ErrorCode::UnknownParty)
        }
    }

    fn lookup_role(name: &str) -> Result<RoleId, ErrorCode> {
        cat().role_id(name).ok_or(ErrorCode::UnknownRole)
    }

    fn lookup_package(name: &str) -> Result<PackageId, ErrorCode> {
        cat().package_id(name).ok_or(ErrorCode::UnknownPackage)
    }

    fn lookup_resource(&self, id: &str) -> Result<(), ErrorCode> {
        if self.resources.contains_key(id) {
            Ok(())
        } else {
            Err(ErrorCode::UnknownResource)
        }
    }

    fn find_assignment(&self, from: &str, to: &str, r: RoleId) -> Option<usize> {
        self.assignments
            .iter()
            .position(|a| a.from == from && a.to == to && a.role == r)
    }

    /// Delegations built on the assignment from → to with role r: as client assignment,
    /// or (for an agent assignment) as agent assignment.
    fn built_on(&self, d: &Delegation, from: &str, to: &str, r: RoleId) -> bool {
        (d.client == from && d.facilitator == to && d.role == r)
            || (r == role("agent") && d.facilitator == from && d.agent == to)
    }

    fn remove_assignment(&mut self, from: &str, to: &str, r: RoleId) {
        let ds = std::mem::take(&mut self.delegations);
        self.delegations = ds
            .into_iter()
            .filter(|d| !self.built_on(d, from, to, r))
            .collect();
        self.assignments
            .retain(|a| !(a.from == from && a.to == to && a.role == r));
    }

    fn add_assignment(&mut self, from: &str, to: &str, r: RoleId) {
        if self.find_assignment(from, to, r).is_none() {
            self.assignments.push(Assignment {
                from: from.to_string(),
                to: to.to_string(),
                role: r,
                packages: BTreeSet::new(),
                resources: BTreeMap::new(),
            });
        }
    }

    /// May `by` remove these grants of from → to (§5 "who may do what")?
    fn may_remove(&self, by: &str, from: &str, to: &str, what: &[What]) -> bool {
        if by == to || self.holds_package(by, from, package("tilgangsstyrer")) {
            return true;
        }
        // §11.4: a person's outgoing grants are theirs and their access managers'.
        if self.entity_type(from) == Some(EntityType::Person) {
            let recs = self.records_for(by, from);
            if by == from || self.is_person_access_manager(by, &recs.iter().collect::<Vec<_>>(), from) {
                return true;
            }
        }
        !what.is_empty()
            && what.iter().all(|w| match w {
                What::Package(p) => self.can_delegate_package(by, from, *p),
                What::Resource(r, acts) => acts.iter().all(|a| self.can_delegate_resource(by, from, r, a)),
            })
    }

    fn require_client_admin(&self, by: Option<&String>, f: &str) -> Result<(), ErrorCode> {
        match by {
            Some(b) if !self.holds_package(b, f, package("klientadministrator")) => {
                Err(ErrorCode::NotAuthorized)
            }
            _ => Ok(()),
        }
    }

    /// The identities of every assignment and client delegation (for removed counts).
    fn keys(&self) -> (BTreeSet<AssignmentKey>, BTreeSet<DelegationKey>) {
        (
            self.assignments
                .iter()
                .map(|a| (a.from.clone(), a.to.clone(), a.role))
                // §10: a supplier relationship is an assignment with role `supplier`.
                .chain(
                    self.suppliers
                        .keys()
                        .map(|(c, s)| (c.clone(), s.clone(), role("supplier"))),
                )
                .collect(),
            self.delegations
                .iter()
                .map(|d| (d.client.clone(), d.facilitator.clone(), d.agent.clone(), d.role))
                .collect(),
        )
    }

    /// Applies an event; a refused event changes nothing.
    pub fn apply(&mut self, ev: &Event) -> Result<Removed, ErrorCode> {
        let mut next = self.clone();
        next.apply_in(ev)?;
        let (a0, d0) = self.keys();
        let (a1, d1) = next.keys();
        *self = next;
        Ok(Removed {
            assignments: a0.difference(&a1).count(),
            delegations: d0.difference(&d1).count(),
        })
    }

    fn apply_in(&mut self, ev: &Event) -> Result<(), ErrorCode> {
        match ev {
            Event::RegisterRole(r) | Event::UnregisterRole(r) => {
                let add = matches!(ev, Event::RegisterRole(_));
                if r.from == r.to {
                    return Err(ErrorCode::InvalidInput);
                }
                self.party_exists(&r.from)?;
                self.party_exists(&r.to)?;
                let ro = Self::lookup_role(&r.role)?;
                if !matches!(provider(ro), Provider::Ccr | Provider::Cra) {
                    return Err(ErrorCode::NotAssignable);
                }
                if add {
                    self.add_assignment(&r.from, &r.to, ro);
                } else {
                    // The register removing a role always cascades.
                    self.remove_assignment(&r.from, &r.to, ro);
                }
                Ok(())
            }
            Event::A2Role(r) | Event::RemoveA2Role(r) => {
                let add = matches!(ev, Event::A2Role(_));
                if r.from == r.to {
                    return Err(ErrorCode::InvalidInput);
                }
                self.party_exists(&r.from)?;
                self.party_exists(&r.to)?;
                let ro = Self::lookup_role(&r.role)?;
                if !is_a2(ro) || (add && self.a2_retired) {
                    return Err(ErrorCode::NotAssignable);
                }
                if add {
                    self.add_assignment(&r.from, &r.to, ro);
                } else {
                    self.remove_assignment(&r.from, &r.to, ro);
                }
                Ok(())
            }
            Event::Grant(g) => self.grant(g),
            Event::Revoke(g) => self.revoke(g),
            Event::RemoveConnection(ev) => {
                self.party_exists(&ev.from)?;
                self.party_exists(&ev.to)?;
                if let Some(b) = &ev.by {
                    self.party_exists(b)?;
                }
                let rh = role("rettighetshaver");
                let Some(i) = self.find_assignment(&ev.from, &ev.to, rh) else {
                    // Nothing to remove: still only for those who may remove an
                    // emptied connection (the actor ranks before state).
                    if let Some(b) = &ev.by
                        && !self.may_remove(b, &ev.from, &ev.to, &[])
                    {
                        return Err(ErrorCode::NotAuthorized);
                    }
                    return Ok(());
                };
                let a = self.assignments[i].clone();
                let mut what: Vec<What> = a.packages.iter().map(|p| What::Package(*p)).collect();
                what.extend(
                    a.resources
                        .iter()
                        .map(|(r, x)| What::Resource(r.clone(), x.clone())),
                );
                if let Some(b) = &ev.by
                    && !self.may_remove(b, &ev.from, &ev.to, &what)
                {
                    return Err(ErrorCode::NotAuthorized);
                }
                let deps = self
                    .delegations
                    .iter()
                    .any(|d| self.built_on(d, &ev.from, &ev.to, rh));
                if (!what.is_empty() || deps) && ev.cascade != Some(true) {
                    return Err(ErrorCode::HasDependants);
                }
                self.remove_assignment(&ev.from, &ev.to, rh);
                Ok(())
            }
            Event::AddAgent(a) => {
                self.party_exists(&a.facilitator)?;
                self.party_exists(&a.agent)?;
                if let Some(b) = &a.by {
                    self.party_exists(b)?;
                }
                self.check_agent(&a.facilitator, &a.agent)?;
                self.require_client_admin(a.by.as_ref(), &a.facilitator)?;
                self.add_assignment(&a.facilitator, &a.agent, role("agent"));
                Ok(())
            }
            Event::RemoveAgent(a) => {
                self.party_exists(&a.facilitator)?;
                self.party_exists(&a.agent)?;
                if let Some(b) = &a.by {
                    self.party_exists(b)?;
                }
                self.require_client_admin(a.by.as_ref(), &a.facilitator)?;
                let ag = role("agent");
                if self.find_assignment(&a.facilitator, &a.agent, ag).is_none() {
                    return Ok(());
                }
                let deps = self
                    .delegations
                    .iter()
                    .any(|d| d.facilitator == a.facilitator && d.agent == a.agent);
                if deps && a.cascade == Some(false) {
                    return Err(ErrorCode::HasDependants);
                }
                self.remove_assignment(&a.facilitator, &a.agent, ag);
                Ok(())
            }
            Event::Delegate(d) => self.delegate(d),
            Event::Undelegate(d) => {
                self.party_exists(&d.client)?;
                self.party_exists(&d.facilitator)?;
                self.party_exists(&d.agent)?;
                if let Some(b) = &d.by {
                    self.party_exists(b)?;
                }
                let ro = d.role.as_deref().map(Self::lookup_role).transpose()?;
                let pkgs = d
                    .packages
                    .iter()
                    .flatten()
                    .map(|p| Self::lookup_package(p))
                    .collect::<Result<Vec<_>, _>>()?;
                for r in d.resources.iter().flatten() {
                    self.lookup_resource(r.id())?;
                }
                self.require_client_admin(d.by.as_ref(), &d.facilitator)?;
                let all = d.packages.is_none() && d.resources.is_none();
                for x in &mut self.delegations {
                    if x.client != d.client
                        || x.facilitator != d.facilitator
                        || x.agent != d.agent
                        || ro.is_some_and(|r| r != x.role)
                    {
                        continue;
                    }
                    if all {
                        x.packages.clear();
                        x.resources.clear();
                        continue;
                    }
                    for p in &pkgs {
                        x.packages.remove(p);
                    }
                    for r in d.resources.iter().flatten() {
                        match r.actions() {
                            None => {
                                x.resources.remove(r.id());
                            }
                            Some(acts) => {
                                if let Some(held) = x.resources.get_mut(r.id()) {
                                    held.retain(|h| !acts.iter().any(|a| a.to_lowercase() == *h));
                                    if held.is_empty() {
                                        x.resources.remove(r.id());
                                    }
                                }
                            }
                        }
                    }
                }
                // An emptied client delegation is removed (§3).
                self.delegations
                    .retain(|x| !x.packages.is_empty() || !x.resources.is_empty());
                Ok(())
            }
            Event::Died(d) => {
                self.party_exists(&d.person)?;
                let p = &self.parties[&d.person];
                if p.kind != PartyKind::Person {
                    return Err(ErrorCode::InvalidInput);
                }
                if !p.alive {
                    return Ok(());
                }
                let removable = |r: RoleId| {
                    r == role("rettighetshaver") || r == role("appstyrt-rettighetshaver") || is_a2(r)
                };
                let doomed: Vec<(String, String, RoleId)> = self
                    .assignments
                    .iter()
                    .filter(|a| {
                        (a.from == d.person && removable(a.role))
                            || (a.to == d.person && (removable(a.role) || a.role == role("agent")))
                    })
                    .map(|a| (a.from.clone(), a.to.clone(), a.role))
                    .collect();
                for (f, t, r) in doomed {
                    self.remove_assignment(&f, &t, r);
                }
                if let Some(p) = self.parties.get_mut(&d.person) {
                    p.alive = false;
                }
                Ok(())
            }
            Event::RetireA2Roles(_) => {
                let doomed: Vec<(String, String, RoleId)> = self
                    .assignments
                    .iter()
                    .filter(|a| is_a2(a.role))
                    .map(|a| (a.from.clone(), a.to.clone(), a.role))
                    .collect();
                for (f, t, r) in doomed {
                    self.remove_assignment(&f, &t, r);
                }
                self.a2_retired = true;
                Ok(())
            }
            Event::Resource(r) => {
                self.add_resource(r);
                Ok(())
            }
            Event::Policy(p) => {
                let policy = self
                    .policy_texts
                    .get(&p.xml)
                    .cloned()
                    .ok_or(ErrorCode::InvalidInput)?;
                let res = self.resources.entry(p.resource.clone()).or_insert(Resource {
                    delegable: true,
                    owner: None,
                    rules: Vec::new(),
                    policy: None,
                    lists: Vec::new(),
                    list_mode: false,
                });
                res.rules.clear();
                res.policy = Some(policy);
                Ok(())
            }
            Event::AccessList(l) => {
                let mut members = Vec::new();
                for m in &l.members {
                    self.party_exists(&m.org)?;
                    if self.parties[&m.org].kind != PartyKind::Organisation {
                        return Err(ErrorCode::InvalidInput);
                    }
                    members.push((
                        m.org.clone(),
                        m.actions.as_ref().map(|a| a.iter().cloned().collect()),
                    ));
                }
                self.access_lists.insert((l.owner.clone(), l.id.clone()), members);
                Ok(())
            }
            Event::System(e) => {
                self.party_exists(&e.vendor)?;
                let pk = e
                    .packages
                    .iter()
                    .flatten()
                    .map(|p| Self::lookup_package(p))
                    .collect::<Result<_, _>>()?;
                self.systems.insert(e.id.clone(), pk);
                Ok(())
            }
            Event::SystemUserRequest(e) => self.system_user_request(e),
            Event::ChangeRequest(e) => self.change_request(e),
            Event::AccessRequest(e) => self.access_request(e),
            Event::Approve(e) | Event::Reject(e) => self.answer(e, matches!(ev, Event::Approve(_))),
            Event::Confirm(e) | Event::Withdraw(e) => {
                self.confirm_or_withdraw(e, matches!(ev, Event::Confirm(_)))
            }
            Event::AddSupplier(e) | Event::RemoveSupplier(e) => {
                self.supplier_event(e, matches!(ev, Event::AddSupplier(_)))
            }
            Event::DelegateScope(e) | Event::UndelegateScope(e) => {
                self.scope_event(e, matches!(ev, Event::DelegateScope(_)))
            }
            Event::Clock(c) => {
                let t = DateTime::parse_from_rfc3339(c.now.trim()).map_err(|_| ErrorCode::InvalidInput)?;
                // A forward-only tick never moves the clock back.
                if c.forward_only != Some(true) || self.now.is_none_or(|cur| cur < t) {
                    self.now = Some(t);
                }
                Ok(())
            }
            Event::ConsentRequest(e) => self.consent_request(e),
            Event::AcceptConsent(e) => self.answer_consent(e, CState::Accepted),
            Event::RejectConsent(e) => self.answer_consent(e, CState::Rejected),
            Event::RevokeConsent(e) => self.revoke_consent(e),
            Event::UseConsent(e) => self.use_consent(e),
            other => panic!("reference does not model `{}` events", other.name()),
        }
    }

    // ------------------------------------------------------------------------------
    // §10 Maskinporten scope delegation

    fn both_organisations(&self, c: &str, s: &str) -> Result<(), ErrorCode> {
        let org = |x: &str| self.parties[x].kind == PartyKind::Organisation;
        if org(c) && org(s) {
            Ok(())
        } else {
            Err(ErrorCode::InvalidInput)
        }
    }

    /// `by` holds maskinporten-administrator for one of `parties` (any path).
    fn mp_admin(&self, by: Option<&String>, parties: &[&str]) -> Result<(), ErrorCode> {
        match by {
            Some(b)
                if !parties
                    .iter()
                    .any(|p| self.holds_package(b, p, package("maskinporten-administrator"))) =>
            {
                Err(ErrorCode::NotAuthorized)
            }
            _ => Ok(()),
        }
    }

    fn supplier_event(&mut self, e: &delegraph::event::SupplierEvent, add: bool) -> Result<(), ErrorCode> {
        if (add && e.cascade.is_some()) || e.consumer == e.supplier {
            return Err(ErrorCode::InvalidInput);
        }
        self.party_exists(&e.consumer)?;
        self.party_exists(&e.supplier)?;
        if let Some(b) = &e.by {
            self.party_exists(b)?;
        }
        self.both_organisations(&e.consumer, &e.supplier)?;
        let key = (e.consumer.clone(), e.supplier.clone());
        if add {
            self.mp_admin(e.by.as_ref(), &[&e.consumer])?;
            self.suppliers.entry(key).or_default();
            return Ok(());
        }
        self.mp_admin(e.by.as_ref(), &[&e.consumer, &e.supplier])?;
        match self.suppliers.get(&key) {
            None => Ok(()),
            Some(d) if !d.is_empty() && e.cascade != Some(true) => Err(ErrorCode::HasDependants),
            Some(_) => {
                self.suppliers.remove(&key);
                Ok(())
            }
        }
    }

    fn scope_event(&mut self, e: &delegraph::event::ScopeEvent, delegate: bool) -> Result<(), ErrorCode> {
        if e.consumer == e.supplier {
            return Err(ErrorCode::InvalidInput);
        }
        self.party_exists(&e.consumer)?;
        self.party_exists(&e.supplier)?;
        self.lookup_resource(&e.resource)?;
        if let Some(b) = &e.by {
            self.party_exists(b)?;
        }
        let key = (e.consumer.clone(), e.supplier.clone());
        if !delegate {
            self.both_organisations(&e.consumer, &e.supplier)?;
            self.mp_admin(e.by.as_ref(), &[&e.consumer, &e.supplier])?;
            if let Some(d) = self.suppliers.get_mut(&key) {
                d.remove(&e.resource);
            }
            return Ok(());
        }
        if !self.suppliers.contains_key(&key) {
            return Err(ErrorCode::NotFound);
        }
        self.both_organisations(&e.consumer, &e.supplier)?;
        if !self.scope_resources.contains_key(&e.resource) {
            return Err(ErrorCode::NotAssignable);
        }
        let res = &self.resources[&e.resource];
        if !res.delegable {
            return Err(ErrorCode::NotDelegable);
        }
        // The policy's actions (grants of a scope resource cannot exist).
        let acts = self.actions_named(&e.resource);
        if res.list_mode {
            let owner = res.owner.clone().unwrap_or_default();
            let listed = res.lists.iter().any(|l| {
                self.access_lists
                    .get(&(owner.clone(), l.clone()))
                    .is_some_and(|ms| {
                        ms.iter().any(|(org, f)| {
                            org == &e.consumer
                                && f.as_ref().is_none_or(|f| acts.iter().all(|a| f.contains(a)))
                        })
                    })
            });
            if !listed {
                return Err(ErrorCode::NotDelegable);
            }
        }
        if let Some(b) = &e.by {
            self.mp_admin(Some(b), &[&e.consumer])?;
            if !acts
                .iter()
                .all(|a| self.can_delegate_resource(b, &e.consumer, &e.resource, a))
            {
                return Err(ErrorCode::NotAuthorized);
            }
        }
        self.suppliers.entry(key).or_default().insert(e.resource.clone());
        Ok(())
    }

    /// `scope_delegations` (§10.5): (consumer, supplier, resource) matching every filter.
    pub fn scope_delegations(
        &self,
        consumer: Option<&str>,
        supplier: Option<&str>,
        scope: Option<&str>,
    ) -> BTreeSet<(String, String, String)> {
        let mut out = BTreeSet::new();
        for ((c, s), rs) in &self.suppliers {
            for r in rs {
                let lists = |x: &str| self.scope_resources.get(r).is_some_and(|ss| ss.contains(x));
                if consumer.is_none_or(|x| x == c)
                    && supplier.is_none_or(|x| x == s)
                    && scope.is_none_or(lists)
                {
                    out.insert((c.clone(), s.clone(), r.clone()));
                }
            }
        }
        out
    }

    fn check_agent(&self, f: &str, agent: &str) -> Result<(), ErrorCode> {
        if self.parties[f].kind != PartyKind::Organisation {
            return Err(ErrorCode::InvalidInput);
        }
        if !self.is_living_person(agent) || agent == f {
            return Err(ErrorCode::InvalidAgent);
        }
        Ok(())
    }

    /// Shape and references of a grant or revoke.
    fn grant_what(&self, g: &GrantEvent) -> Result<What, ErrorCode> {
        if g.from == g.to {
            return Err(ErrorCode::InvalidInput);
        }
        self.party_exists(&g.from)?;
        self.party_exists(&g.to)?;
        if let Some(b) = &g.by {
            self.party_exists(b)?;
        }
        match (&g.package, &g.resource) {
            (Some(p), None) => Ok(What::Package(Self::lookup_package(p)?)),
            (None, Some(r)) => {
                self.lookup_resource(r)?;
                let acts = g.actions.iter().flatten().map(|a| a.to_lowercase()).collect();
                Ok(What::Resource(r.clone(), acts))
            }
            _ => Err(ErrorCode::InvalidInput),
        }
    }

    fn grant(&mut self, g: &GrantEvent) -> Result<(), ErrorCode> {
        let what = self.grant_what(g)?;
        // §11.2: a person never grants to a system user (a lookup: after references).
        if self.parties[&g.from].kind == PartyKind::Person
            && self.parties[&g.to].kind == PartyKind::SystemUser
        {
            return Err(ErrorCode::InvalidInput);
        }
        match &what {
            What::Package(p) => {
                let info = cat().package(*p);
                if !info.is_assignable || self.entity_type(&g.from) != Some(info.entity_type) {
                    return Err(ErrorCode::NotAssignable);
                }
                // Spec choice (engine rule): the main administrator and company
                // representative packages go to people, never to an organisation.
                let to_org = self.parties[&g.to].kind == PartyKind::Organisation;
                let person_only = *p == package("urn:altinn:accesspackage:hovedadministrator")
                    || *p == package("virksomhetens-representant-skjemaoppgaver");
                if to_org && person_only {
                    return Err(ErrorCode::NotAssignable);
                }
            }
            What::Resource(r, _) => {
                // §9.1, §10.1: consent and scope resources are never granted.
                if self.scope_resources.contains_key(r) || self.consent_resources.contains_key(r) {
                    return Err(ErrorCode::NotAssignable);
                }
                if g.by.is_some() && !self.resources[r].delegable {
                    return Err(ErrorCode::NotDelegable);
                }
            }
        }
        if let Some(b) = &g.by {
            let ok = match &what {
                What::Package(p) => self.can_delegate_package(b, &g.from, *p),
                What::Resource(r, acts) => acts.iter().all(|a| self.can_delegate_resource(b, &g.from, r, a)),
            };
            if !ok {
                return Err(ErrorCode::NotAuthorized);
            }
        }
        let rh = role("rettighetshaver");
        self.add_assignment(&g.from, &g.to, rh);
        let Some(i) = self.find_assignment(&g.from, &g.to, rh) else {
            return Err(ErrorCode::InvalidInput);
        };
        let a = &mut self.assignments[i];
        match what {
            What::Package(p) => {
                a.packages.insert(p);
            }
            What::Resource(r, acts) => a.resources.entry(r).or_default().extend(acts),
        }
        Ok(())
    }

    fn revoke(&mut self, g: &GrantEvent) -> Result<(), ErrorCode> {
        let what = self.grant_what(g)?;
        if let Some(b) = &g.by
            && !self.may_remove(b, &g.from, &g.to, std::slice::from_ref(&what))
        {
            return Err(ErrorCode::NotAuthorized);
        }
        let rh = role("rettighetshaver");
        let Some(i) = self.find_assignment(&g.from, &g.to, rh) else {
            return Ok(());
        };
        let carries = |pk: &BTreeSet<PackageId>, rs: &BTreeMap<String, Acts>| match &what {
            What::Package(p) => pk.contains(p),
            What::Resource(r, acts) => rs.get(r).is_some_and(|x| x.iter().any(|a| acts.contains(a))),
        };
        let a = &self.assignments[i];
        if !carries(&a.packages, &a.resources) {
            return Ok(());
        }
        let copies = self
            .delegations
            .iter()
            .any(|d| self.built_on(d, &g.from, &g.to, rh) && carries(&d.packages, &d.resources));
        if copies && g.cascade == Some(false) {
            return Err(ErrorCode::HasDependants);
        }
        let strip = |pk: &mut BTreeSet<PackageId>, rs: &mut BTreeMap<String, Acts>| match &what {
            What::Package(p) => {
                pk.remove(p);
            }
            What::Resource(r, acts) => {
                if let Some(x) = rs.get_mut(r) {
                    x.retain(|a| !acts.contains(a));
                    if x.is_empty() {
                        rs.remove(r);
                    }
                }
            }
        };
        let (from, to) = (g.from.clone(), g.to.clone());
        let mut ds = std::mem::take(&mut self.delegations);
        for d in &mut ds {
            if d.client == from && d.facilitator == to && d.role == rh {
                strip(&mut d.packages, &mut d.resources);
            }
        }
        ds.retain(|d| !d.packages.is_empty() || !d.resources.is_empty());
        self.delegations = ds;
        let a = &mut self.assignments[i];
        strip(&mut a.packages, &mut a.resources);
        // An emptied rightholder assignment stays (§3).
        Ok(())
    }

    fn delegate(&mut self, d: &delegraph::event::DelegateEvent) -> Result<(), ErrorCode> {
        let Some(role_name) = &d.role else {
            return Err(ErrorCode::InvalidInput);
        };
        let named_pkgs = d.packages.clone().unwrap_or_default();
        let named_res = d.resources.clone().unwrap_or_default();
        if named_pkgs.is_empty() && named_res.is_empty() {
            return Err(ErrorCode::InvalidInput);
        }
        self.party_exists(&d.client)?;
        self.party_exists(&d.facilitator)?;
        self.party_exists(&d.agent)?;
        if let Some(b) = &d.by {
            self.party_exists(b)?;
        }
        let ro = Self::lookup_role(role_name)?;
        let pkgs = named_pkgs
            .iter()
            .map(|p| Self::lookup_package(p))
            .collect::<Result<Vec<_>, _>>()?;
        for r in &named_res {
            self.lookup_resource(r.id())?;
        }
        self.check_agent(&d.facilitator, &d.agent)?;
        if self
            .find_assignment(&d.facilitator, &d.agent, role("agent"))
            .is_none()
        {
            return Err(ErrorCode::InvalidAgent);
        }
        // What the facilitator holds from the client through that very assignment.
        let client_assignment = self
            .find_assignment(&d.client, &d.facilitator, ro)
            .map(|i| self.assignments[i].clone());
        let held: BTreeSet<PackageId> = client_assignment
            .as_ref()
            .map(|a| self.assignment_packages(a))
            .unwrap_or_default();
        for p in &pkgs {
            if !cat().package(*p).is_delegable || !held.contains(p) {
                return Err(ErrorCode::NotDelegable);
            }
        }
        let mut fwd_res: BTreeMap<String, Acts> = BTreeMap::new();
        for r in &named_res {
            let granted = client_assignment.as_ref().and_then(|a| a.resources.get(r.id()));
            let wanted: Option<Acts> = r.actions().map(|a| a.iter().map(|x| x.to_lowercase()).collect());
            let ok = self.resources[r.id()].delegable
                && granted.is_some_and(|g| wanted.as_ref().is_none_or(|w| w.is_subset(g)));
            if !ok {
                return Err(ErrorCode::NotDelegable);
            }
            let acts = wanted.or_else(|| granted.cloned()).unwrap_or_default();
            fwd_res.entry(r.id().to_string()).or_default().extend(acts);
        }
        self.require_client_admin(d.by.as_ref(), &d.facilitator)?;
        let pos = self.delegations.iter().position(|x| {
            x.client == d.client && x.facilitator == d.facilitator && x.agent == d.agent && x.role == ro
        });
        let i = match pos {
            Some(i) => i,
            None => {
                self.delegations.push(Delegation {
                    client: d.client.clone(),
                    facilitator: d.facilitator.clone(),
                    agent: d.agent.clone(),
                    role: ro,
                    packages: BTreeSet::new(),
                    resources: BTreeMap::new(),
                });
                self.delegations.len() - 1
            }
        };
        let x = &mut self.delegations[i];
        x.packages.extend(pkgs);
        for (r, a) in fwd_res {
            x.resources.entry(r).or_default().extend(a);
        }
        Ok(())
    }
}

/// What a grant, revoke or connection removal names.
#[derive(Debug, Clone)]
enum What {
    Package(PackageId),
    Resource(String, Acts),
}

// ----------------------------------------------------------------------------------
// §7 System users (standard, packages only) and requests

impl RefWorld {
    /// Is `f` among the authorized parties of `x` (or `x` itself)?
    fn acts_for(&self, x: &str, f: &str) -> bool {
        x == f || !self.records_for(x, f).is_empty()
    }

    fn fresh_request(&self, id: &str) -> Result<(), ErrorCode> {
        if self.requests.contains_key(id) {
            Err(ErrorCode::Conflict)
        } else {
            Ok(())
        }
    }

    /// Packages a system user of an organisation may be given.
    fn assignable_to_system_user(p: PackageId) -> bool {
        let info = cat().package(p);
        info.is_assignable
            && info.entity_type == EntityType::Organisation
            && p != package("virksomhetens-representant-skjemaoppgaver")
    }

    fn packages_named(names: Option<&Vec<String>>) -> Result<BTreeSet<PackageId>, ErrorCode> {
        names
            .into_iter()
            .flatten()
            .map(|p| Self::lookup_package(p))
            .collect()
    }

    fn system_user_request(&mut self, e: &delegraph::event::SystemUserRequestEvent) -> Result<(), ErrorCode> {
        if e.packages.as_deref().unwrap_or(&[]).is_empty() && e.resources.as_deref().unwrap_or(&[]).is_empty()
        {
            return Err(ErrorCode::InvalidInput);
        }
        let registered = self.systems.get(&e.system).cloned().ok_or(ErrorCode::NotFound)?;
        self.party_exists(&e.party)?;
        if self.parties[&e.party].kind != PartyKind::Organisation {
            return Err(ErrorCode::InvalidInput);
        }
        let pk = Self::packages_named(e.packages.as_ref())?;
        // Only rights the system registered.
        if !pk.is_subset(&registered) {
            return Err(ErrorCode::InvalidInput);
        }
        if !pk.iter().all(|p| Self::assignable_to_system_user(*p)) {
            return Err(ErrorCode::NotAssignable);
        }
        self.fresh_request(&e.id)?;
        if self.parties.contains_key(&e.system_user) {
            return Err(ErrorCode::Conflict);
        }
        // One system user per (system, party, external_ref): against pending requests
        // and accepted ones whose system user still exists.
        let ext = e.external_ref.as_deref().map(str::trim);
        for r in self.requests.values() {
            if let RequestBody::SystemUser {
                system,
                party,
                system_user,
                external_ref,
                ..
            } = &r.body
            {
                let same = *system == e.system && *party == e.party && external_ref.as_deref() == ext;
                let exists = self.parties.contains_key(system_user);
                if same && (r.state == ReqState::Pending || (r.state == ReqState::Accepted && exists)) {
                    return Err(ErrorCode::Conflict);
                }
                // Spec choice (engine): two pending requests cannot name one system user.
                if r.state == ReqState::Pending && *system_user == e.system_user {
                    return Err(ErrorCode::Conflict);
                }
            }
        }
        self.requests.insert(
            e.id.clone(),
            Request {
                body: RequestBody::SystemUser {
                    system: e.system.clone(),
                    party: e.party.clone(),
                    system_user: e.system_user.clone(),
                    packages: pk,
                    external_ref: ext.map(str::to_string),
                },
                state: ReqState::Pending,
            },
        );
        Ok(())
    }

    fn change_request(&mut self, e: &delegraph::event::ChangeRequestEvent) -> Result<(), ErrorCode> {
        let named = |r: &Option<delegraph::event::RightsSpec>| {
            r.as_ref().is_some_and(|r| {
                !r.packages.as_deref().unwrap_or(&[]).is_empty()
                    || !r.resources.as_deref().unwrap_or(&[]).is_empty()
            })
        };
        if !named(&e.add) && !named(&e.remove) {
            return Err(ErrorCode::InvalidInput);
        }
        self.party_exists(&e.system_user)?;
        let Some((_, system)) = self.system_users.get(&e.system_user).cloned() else {
            return Err(ErrorCode::InvalidInput);
        };
        let registered = self.systems.get(&system).cloned().ok_or(ErrorCode::NotFound)?;
        let add = Self::packages_named(e.add.as_ref().and_then(|r| r.packages.as_ref()))?;
        let remove = Self::packages_named(e.remove.as_ref().and_then(|r| r.packages.as_ref()))?;
        // What it adds must be registered; what it removes need not be.
        if !add.is_subset(&registered) {
            return Err(ErrorCode::InvalidInput);
        }
        if !add.iter().all(|p| Self::assignable_to_system_user(*p)) {
            return Err(ErrorCode::NotAssignable);
        }
        self.fresh_request(&e.id)?;
        let body = RequestBody::Change {
            system_user: e.system_user.clone(),
            add,
            remove,
        };
        if self
            .requests
            .values()
            .any(|r| r.state == ReqState::Pending && r.body == body)
        {
            return Err(ErrorCode::Conflict);
        }
        self.requests.insert(
            e.id.clone(),
            Request {
                body,
                state: ReqState::Pending,
            },
        );
        Ok(())
    }

    fn access_request(&mut self, e: &delegraph::event::AccessRequestEvent) -> Result<(), ErrorCode> {
        match (&e.package, &e.resource, &e.action) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            _ => return Err(ErrorCode::InvalidInput),
        }
        if e.from == e.to {
            return Err(ErrorCode::InvalidInput);
        }
        self.party_exists(&e.from)?;
        self.party_exists(&e.to)?;
        if let Some(b) = &e.by {
            self.party_exists(b)?;
        }
        let target = match (&e.package, &e.resource, &e.action) {
            (Some(p), _, _) => AccessTarget::Package(Self::lookup_package(p)?),
            (None, Some(r), Some(a)) => {
                self.lookup_resource(r)?;
                AccessTarget::Resource(r.clone(), a.trim().to_lowercase())
            }
            _ => return Err(ErrorCode::InvalidInput),
        };
        match &target {
            AccessTarget::Package(p) => {
                let info = cat().package(*p);
                if !info.is_assignable || self.entity_type(&e.to) != Some(info.entity_type) {
                    return Err(ErrorCode::NotAssignable);
                }
            }
            AccessTarget::Resource(r, _) => {
                if self.scope_resources.contains_key(r) || self.consent_resources.contains_key(r) {
                    return Err(ErrorCode::NotAssignable);
                }
                if !self.resources[r].delegable {
                    return Err(ErrorCode::NotDelegable);
                }
            }
        }
        // An end user's request needs a connection; a service owner's draft does not.
        let draft = e.draft.unwrap_or(false);
        if let Some(b) = &e.by
            && !draft
            && !self.acts_for(b, &e.from)
        {
            return Err(ErrorCode::NotAuthorized);
        }
        if !draft && !self.acts_for(&e.from, &e.to) {
            return Err(ErrorCode::NotAuthorized);
        }
        self.fresh_request(&e.id)?;
        let open = self.requests.values().any(|r| {
            matches!(r.state, ReqState::Draft | ReqState::Pending)
                && matches!(&r.body, RequestBody::Access { from, to, target: t, .. }
                    if *from == e.from && *to == e.to && *t == target)
        });
        if open {
            return Err(ErrorCode::Conflict);
        }
        self.requests.insert(
            e.id.clone(),
            Request {
                body: RequestBody::Access {
                    from: e.from.clone(),
                    to: e.to.clone(),
                    target,
                    by: e.by.clone(),
                },
                state: if draft { ReqState::Draft } else { ReqState::Pending },
            },
        );
        Ok(())
    }

    fn pending(r: &Request) -> Result<(), ErrorCode> {
        if r.state == ReqState::Pending {
            Ok(())
        } else {
            Err(ErrorCode::Conflict)
        }
    }

    fn all_delegable(&self, by: &str, party: &str, pk: &BTreeSet<PackageId>) -> bool {
        pk.iter().all(|p| self.can_delegate_package(by, party, *p))
    }

    /// Grants (or revokes) packages owner → system user as an administrative import.
    fn give(&mut self, from: &str, to: &str, pk: &BTreeSet<PackageId>, grant: bool) -> Result<(), ErrorCode> {
        for p in pk {
            let g = GrantEvent {
                from: from.to_string(),
                to: to.to_string(),
                package: Some(cat().package(*p).code.clone()),
                resource: None,
                instance: None,
                actions: None,
                by: None,
                cascade: None,
            };
            if grant {
                self.grant(&g)?;
            } else {
                self.revoke(&g)?;
            }
        }
        Ok(())
    }

    /// The packages granted owner → system user.
    fn su_packages(&self, owner: &str, su: &str) -> BTreeSet<PackageId> {
        self.find_assignment(owner, su, role("rettighetshaver"))
            .map(|i| self.assignments[i].packages.clone())
            .unwrap_or_default()
    }

    fn answer(&mut self, e: &delegraph::event::RequestActionEvent, approve: bool) -> Result<(), ErrorCode> {
        let mut req = self
            .requests
            .get(&e.request)
            .cloned()
            .ok_or(ErrorCode::NotFound)?;
        self.party_exists(&e.by)?;
        let by = e.by.as_str();
        // §7: only a (living) person of the party answers a system-user or change request.
        let person = self.parties[by].kind == PartyKind::Person && self.parties[by].alive;
        if !matches!(req.body, RequestBody::Access { .. }) && !person {
            return Err(ErrorCode::NotAuthorized);
        }
        let manager = |me: &Self, party: &str| me.holds_package(by, party, package("tilgangsstyrer"));
        match req.body.clone() {
            RequestBody::SystemUser {
                system,
                party,
                system_user,
                packages,
                ..
            } => {
                let could = self.all_delegable(by, &party, &packages);
                if !approve {
                    if !(manager(self, &party) || could) {
                        return Err(ErrorCode::NotAuthorized);
                    }
                    Self::pending(&req)?;
                    req.state = ReqState::Rejected;
                } else {
                    // All or nothing.
                    if !could {
                        return Err(ErrorCode::NotAuthorized);
                    }
                    Self::pending(&req)?;
                    if self.parties.contains_key(&system_user) {
                        return Err(ErrorCode::Conflict);
                    }
                    self.parties.insert(
                        system_user.clone(),
                        Party {
                            kind: PartyKind::SystemUser,
                            unit_type: None,
                            main_unit: None,
                            alive: true,
                        },
                    );
                    self.system_users
                        .insert(system_user.clone(), (party.clone(), system));
                    self.give(&party, &system_user, &packages, true)?;
                    req.state = ReqState::Accepted;
                }
            }
            RequestBody::Change {
                system_user,
                add,
                remove,
            } => {
                let Some((owner, _)) = self.system_users.get(&system_user).cloned() else {
                    return Err(ErrorCode::InvalidInput);
                };
                let mgr = manager(self, &owner);
                let ok_add = self.all_delegable(by, &owner, &add);
                let ok_remove = mgr || self.all_delegable(by, &owner, &remove);
                if !approve {
                    if !(mgr || (ok_add && ok_remove)) {
                        return Err(ErrorCode::NotAuthorized);
                    }
                    Self::pending(&req)?;
                    req.state = ReqState::Rejected;
                } else {
                    if !(ok_add && ok_remove) {
                        return Err(ErrorCode::NotAuthorized);
                    }
                    Self::pending(&req)?;
                    // Both lists read against what the system user holds now.
                    let held = self.su_packages(&owner, &system_user);
                    let to_add: BTreeSet<PackageId> = add.difference(&held).copied().collect();
                    let to_remove: BTreeSet<PackageId> = remove.intersection(&held).copied().collect();
                    self.give(&owner, &system_user, &to_add, true)?;
                    self.give(&owner, &system_user, &to_remove, false)?;
                    req.state = ReqState::Accepted;
                }
            }
            RequestBody::Access {
                from,
                to,
                target,
                by: made_by,
            } => {
                if !approve {
                    if !self.acts_for(by, &to) {
                        return Err(ErrorCode::NotAuthorized);
                    }
                    Self::pending(&req)?;
                    req.state = ReqState::Rejected;
                } else {
                    let own = by == from || made_by.as_deref() == Some(by);
                    if own
                        && !self.holds_package(
                            by,
                            &to,
                            package("urn:altinn:accesspackage:hovedadministrator"),
                        )
                    {
                        return Err(ErrorCode::NotAuthorized);
                    }
                    let may = match &target {
                        AccessTarget::Package(p) => self.can_delegate_package(by, &to, *p),
                        AccessTarget::Resource(r, a) => self.can_delegate_resource(by, &to, r, a),
                    };
                    if !may {
                        return Err(ErrorCode::NotAuthorized);
                    }
                    Self::pending(&req)?;
                    let mut g = GrantEvent {
                        from: to.clone(),
                        to: from.clone(),
                        package: None,
                        resource: None,
                        instance: None,
                        actions: None,
                        by: Some(by.to_string()),
                        cascade: None,
                    };
                    match target {
                        AccessTarget::Package(p) => g.package = Some(cat().package(p).code.clone()),
                        AccessTarget::Resource(r, a) => {
                            g.resource = Some(r);
                            g.actions = Some(vec![a]);
                        }
                    }
                    self.grant(&g)?;
                    req.state = ReqState::Approved;
                }
            }
        }
        self.requests.insert(e.request.clone(), req);
        Ok(())
    }

    fn confirm_or_withdraw(
        &mut self,
        e: &delegraph::event::RequestActionEvent,
        confirm: bool,
    ) -> Result<(), ErrorCode> {
        let mut req = self
            .requests
            .get(&e.request)
            .cloned()
            .ok_or(ErrorCode::NotFound)?;
        self.party_exists(&e.by)?;
        let RequestBody::Access { from, .. } = &req.body else {
            return Err(ErrorCode::InvalidInput);
        };
        // Only the asker; confirming a draft does not check the connection again.
        if !self.acts_for(&e.by, from) {
            return Err(ErrorCode::NotAuthorized);
        }
        let ok = matches!(
            (confirm, req.state),
            (true, ReqState::Draft) | (false, ReqState::Draft | ReqState::Pending)
        );
        if !ok {
            return Err(ErrorCode::Conflict);
        }
        req.state = if confirm {
            ReqState::Pending
        } else {
            ReqState::Withdrawn
        };
        self.requests.insert(e.request.clone(), req);
        Ok(())
    }
}

// ----------------------------------------------------------------------------------
// §9 Consent

/// A consent's status (§9.3). `Expired` is never stored, only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CState {
    Created,
    Accepted,
    Rejected,
    Revoked,
    Used,
    Expired,
}

impl CState {
    pub fn as_str(self) -> &'static str {
        match self {
            CState::Created => "created",
            CState::Accepted => "accepted",
            CState::Rejected => "rejected",
            CState::Revoked => "revoked",
            CState::Used => "used",
            CState::Expired => "expired",
        }
    }
}

/// One entry of a consent's event list (§9.6).
#[derive(Debug, Clone, PartialEq)]
pub struct CEntry {
    pub what: CState,
    pub by: Option<String>,
    pub at: Option<DateTime<FixedOffset>>,
}

/// A consent request and what became of it.
#[derive(Debug, Clone)]
pub struct RefConsent {
    pub from: String,
    pub to: String,
    pub handled_by: Option<String>,
    pub required_delegator: Option<String>,
    /// Consent resource → actions (lower case).
    pub rights: BTreeMap<String, Acts>,
    pub valid_to: DateTime<FixedOffset>,
    pub one_time: bool,
    /// The stored state (never `Expired`).
    pub state: CState,
    pub accepted_by: Option<String>,
    pub entries: Vec<CEntry>,
}

impl RefConsent {
    /// `to` and, when it has one, `handled_by`: who holds the consent (§9.5).
    pub fn held_by(&self, x: &str) -> bool {
        self.to == x || self.handled_by.as_deref() == Some(x)
    }
}

/// The answer of `consent_check` (§9.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CCheck {
    Yes,
    NotFound,
    NotAuthorized,
    Conflict,
}

impl RefWorld {
    /// The reported status: a created or accepted consent is expired while the clock is
    /// later than `valid_to` (valid up to and including that instant); without a clock
    /// nothing expires.
    pub fn consent_status(&self, c: &RefConsent) -> CState {
        let late = self.now.is_some_and(|now| now > c.valid_to);
        match c.state {
            CState::Created | CState::Accepted if late => CState::Expired,
            s => s,
        }
    }

    /// The event list with the derived `expired` entry at `valid_to` (§9.6).
    pub fn consent_events(&self, c: &RefConsent) -> Vec<CEntry> {
        let mut out = c.entries.clone();
        if self.now.is_some_and(|now| now > c.valid_to) {
            out.push(CEntry {
                what: CState::Expired,
                by: None,
                at: Some(c.valid_to),
            });
        }
        out
    }

    /// §9.4(b) for one right: `u` holds `action` on `res` for `from` by the resource's
    /// rules through records other than client delegations, with §11.3 for a person
    /// `from`; the `delegable` flag is not consulted.
    fn may_consent(&self, u: &str, from: &str, res: &str, action: &str) -> bool {
        let recs = self.records_for(u, from);
        let recs: Vec<&Record> = recs.iter().collect();
        if !self.person_party_allows(u, &recs, from) {
            return false;
        }
        let counted: Vec<&Record> = recs
            .into_iter()
            .filter(|r| r.how != How::ClientDelegation)
            .collect();
        self.policy_permits(&counted, from, res, action)
    }

    /// §9.4(b): a living person who is `from`, or who may consent to every requested
    /// action for `from`.
    fn passes_consent_rights(&self, c: &RefConsent, u: &str) -> bool {
        self.is_living_person(u)
            && (u == c.from
                || c.rights
                    .iter()
                    .all(|(res, acts)| acts.iter().all(|a| self.may_consent(u, &c.from, res, a))))
    }

    /// The acceptance check (§9.4): the required delegator, if named, and 9.4(b).
    pub fn may_answer_consent(&self, c: &RefConsent, u: &str) -> bool {
        c.required_delegator.as_deref().is_none_or(|rd| rd == u) && self.passes_consent_rights(c, u)
    }

    /// Who may revoke (§9.3): `from` itself, an access manager of `from` (`tilgangsstyrer`
    /// for an organisation as in §5's revoke rule; for a person §11.4), or whoever passes
    /// 9.4(b) (the required delegator not asked).
    fn may_revoke_consent(&self, c: &RefConsent, u: &str) -> bool {
        if !self.is_living_person(u) {
            return false;
        }
        let manager = match self.parties.get(&c.from).map(|p| p.kind) {
            Some(PartyKind::Organisation) => self.holds_package(u, &c.from, package("tilgangsstyrer")),
            Some(PartyKind::Person) => {
                let recs = self.records_for(u, &c.from);
                self.is_person_access_manager(u, &recs.iter().collect::<Vec<_>>(), &c.from)
            }
            _ => false,
        };
        u == c.from || manager || self.passes_consent_rights(c, u)
    }

    /// `consent_check` (§9.7): the candidates are the consent `id` (when its `from` and
    /// holder fit) or every consent from `from` held by `to`; the answer and, for a yes,
    /// every consent that permits.
    pub fn consent_check(
        &self,
        from: &str,
        to: &str,
        res: &str,
        action: &str,
        id: Option<&str>,
    ) -> (CCheck, BTreeSet<String>) {
        let candidates: Vec<(&String, &RefConsent)> = self
            .consents
            .iter()
            .filter(|(k, c)| id.is_none_or(|i| i == k.as_str()) && c.from == from && c.held_by(to))
            .collect();
        if candidates.is_empty() {
            return (CCheck::NotFound, BTreeSet::new());
        }
        let covering: Vec<&(&String, &RefConsent)> = candidates
            .iter()
            .filter(|(_, c)| c.rights.get(res).is_some_and(|a| a.contains(action)))
            .collect();
        if covering.is_empty() {
            return (CCheck::NotAuthorized, BTreeSet::new());
        }
        let valid: BTreeSet<String> = covering
            .iter()
            .filter(|(_, c)| self.consent_status(c) == CState::Accepted)
            .map(|(k, _)| (*k).clone())
            .collect();
        if valid.is_empty() {
            (CCheck::Conflict, valid)
        } else {
            (CCheck::Yes, valid)
        }
    }

    /// `check` on a consent resource (§9.5): a valid consent from `party` held by
    /// `subject` names the action on the resource; nothing else permits.
    pub fn consent_permits(&self, subject: &str, party: &str, res: &str, action: &str) -> bool {
        self.consents.values().any(|c| {
            c.from == party
                && c.held_by(subject)
                && self.consent_status(c) == CState::Accepted
                && c.rights.get(res).is_some_and(|a| a.contains(action))
        })
    }

    fn consent_request(&mut self, e: &delegraph::event::ConsentRequestEvent) -> Result<(), ErrorCode> {
        // Shape.
        let blank = |s: &str| s.trim().is_empty();
        if blank(&e.id)
            || blank(&e.from)
            || blank(&e.to)
            || e.handled_by.as_deref().is_some_and(blank)
            || e.required_delegator.as_deref().is_some_and(blank)
            || e.from == e.to
            || e.handled_by.as_ref() == Some(&e.to)
            || e.rights.is_empty()
        {
            return Err(ErrorCode::InvalidInput);
        }
        let mut rights: BTreeMap<String, Acts> = BTreeMap::new();
        for r in &e.rights {
            if blank(&r.resource) || r.actions.is_empty() || r.actions.iter().any(|a| blank(a)) {
                return Err(ErrorCode::InvalidInput);
            }
            let acts = r.actions.iter().map(|a| a.trim().to_lowercase()).collect();
            if rights.insert(r.resource.clone(), acts).is_some() {
                return Err(ErrorCode::InvalidInput);
            }
        }
        let valid_to =
            DateTime::parse_from_rfc3339(e.valid_to.trim()).map_err(|_| ErrorCode::InvalidInput)?;
        // References.
        self.party_exists(&e.from)?;
        self.party_exists(&e.to)?;
        for x in e.handled_by.iter().chain(&e.required_delegator) {
            self.party_exists(x)?;
        }
        for res in rights.keys() {
            self.lookup_resource(res)?;
        }
        // Structure. Spec choice (engine): the resources' kind is reported first, then
        // the look-ups of the same rank (parties' kinds, actions, one-time, the clock).
        if rights.keys().any(|r| !self.consent_resources.contains_key(r)) {
            return Err(ErrorCode::NotAssignable);
        }
        let kind = |x: &str| self.parties[x].kind;
        let bad_kinds = !matches!(kind(&e.from), PartyKind::Person | PartyKind::Organisation)
            || kind(&e.to) != PartyKind::Organisation
            || e.handled_by
                .as_deref()
                .is_some_and(|h| kind(h) != PartyKind::Organisation)
            || e.required_delegator
                .as_deref()
                .is_some_and(|p| kind(p) != PartyKind::Person);
        let unnamed = rights
            .iter()
            .any(|(res, acts)| !acts.is_subset(&self.actions_named(res)));
        let one_time: BTreeSet<bool> = rights.keys().map(|r| self.consent_resources[r]).collect();
        let too_late = self.now.is_some_and(|now| valid_to <= now);
        if bad_kinds || unnamed || one_time.len() > 1 || too_late {
            return Err(ErrorCode::InvalidInput);
        }
        // State: consent ids are their own namespace.
        if self.consents.contains_key(&e.id) {
            return Err(ErrorCode::Conflict);
        }
        let creator = e.handled_by.clone().unwrap_or_else(|| e.to.clone());
        self.consents.insert(
            e.id.clone(),
            RefConsent {
                from: e.from.clone(),
                to: e.to.clone(),
                handled_by: e.handled_by.clone(),
                required_delegator: e.required_delegator.clone(),
                rights,
                valid_to,
                one_time: one_time.contains(&true),
                state: CState::Created,
                accepted_by: None,
                entries: vec![CEntry {
                    what: CState::Created,
                    by: Some(creator),
                    at: self.now,
                }],
            },
        );
        Ok(())
    }

    /// The consent and the acting person of an answer or a revocation: shape, the
    /// consent (`not_found`), `by` (`unknown_party`), `by` a person (`invalid_input`).
    fn consent_and_person(&self, e: &delegraph::event::ConsentActionEvent) -> Result<RefConsent, ErrorCode> {
        if e.consent.trim().is_empty() || e.by.as_deref().is_some_and(|b| b.trim().is_empty()) {
            return Err(ErrorCode::InvalidInput);
        }
        let c = self
            .consents
            .get(&e.consent)
            .cloned()
            .ok_or(ErrorCode::NotFound)?;
        if let Some(b) = &e.by {
            self.party_exists(b)?;
            if self.parties[b].kind != PartyKind::Person {
                return Err(ErrorCode::InvalidInput);
            }
        }
        Ok(c)
    }

    fn record_consent(
        &mut self,
        id: &str,
        mut c: RefConsent,
        state: CState,
        what: CState,
        by: Option<String>,
    ) {
        c.state = state;
        c.entries.push(CEntry {
            what,
            by,
            at: self.now,
        });
        self.consents.insert(id.to_string(), c);
    }

    /// `accept_consent` / `reject_consent`: the acceptance check, then `created`.
    fn answer_consent(
        &mut self,
        e: &delegraph::event::ConsentActionEvent,
        to: CState,
    ) -> Result<(), ErrorCode> {
        let mut c = self.consent_and_person(e)?;
        if let Some(b) = &e.by
            && !self.may_answer_consent(&c, b)
        {
            return Err(ErrorCode::NotAuthorized);
        }
        if self.consent_status(&c) != CState::Created {
            return Err(ErrorCode::Conflict);
        }
        if to == CState::Accepted {
            c.accepted_by = e.by.clone();
        }
        self.record_consent(&e.consent, c, to, to, e.by.clone());
        Ok(())
    }

    /// `revoke_consent`: who may, then `accepted` (not expired).
    fn revoke_consent(&mut self, e: &delegraph::event::ConsentActionEvent) -> Result<(), ErrorCode> {
        let c = self.consent_and_person(e)?;
        if let Some(b) = &e.by
            && !self.may_revoke_consent(&c, b)
        {
            return Err(ErrorCode::NotAuthorized);
        }
        if self.consent_status(&c) != CState::Accepted {
            return Err(ErrorCode::Conflict);
        }
        self.record_consent(&e.consent, c, CState::Revoked, CState::Revoked, e.by.clone());
        Ok(())
    }

    /// `use_consent`: by the consumer or its operator, of a valid consent; a one-time
    /// consent is used up, another stays accepted; a `used` entry either way.
    fn use_consent(&mut self, e: &delegraph::event::UseConsentEvent) -> Result<(), ErrorCode> {
        if e.consent.trim().is_empty() || e.by.trim().is_empty() {
            return Err(ErrorCode::InvalidInput);
        }
        let c = self
            .consents
            .get(&e.consent)
            .cloned()
            .ok_or(ErrorCode::NotFound)?;
        self.party_exists(&e.by)?;
        if !c.held_by(&e.by) {
            return Err(ErrorCode::NotAuthorized);
        }
        if self.consent_status(&c) != CState::Accepted {
            return Err(ErrorCode::Conflict);
        }
        let state = if c.one_time {
            CState::Used
        } else {
            CState::Accepted
        };
        self.record_consent(&e.consent, c, state, CState::Used, Some(e.by.clone()));
        Ok(())
    }
}
