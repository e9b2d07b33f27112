//! `delegraph generate`: a deterministic generator of realistic worlds.
//!
//! The generator writes a stream of [`Event`]s (the import vocabulary of
//! scenario-format.md) that builds a world resembling Norway's authorization data: persons,
//! organisations with a realistic spread of ER unit types and sub-units, key roles and
//! board members, accounting, audit and business-manager firms with heavy-tailed client
//! lists, employees as agents with client delegations, rightholder grants of packages,
//! resources with policies, resource and instance grants, Altinn 2 roles, guardianships
//! and a few deaths.
//!
//! Every event it makes is one the engine accepts (`mutate::apply` refuses none; a test
//! checks this), and the same [`Params`] (seed included) always give the same stream.
//!
//! The stream is produced phase by phase and handed to a sink one event at a time, so a
//! Norway-scale stream never sits in memory; the generator itself keeps only a few bytes
//! per organisation. [`generate`] is the entry point; the command line (flags, progress
//! bars, timings) is the binary's `cli::generate`.
//!
//! With [`Params::consents`] > 0 (off by default, so that other worlds stay as they were)
//! a last phase before the deaths adds consent (domain.md §9): a handful of consent
//! resources, banks and other consumers with a heavy tail, a few operators
//! (`handled_by`), and that many consent requests, mostly from persons answering for
//! themselves, some from organisations answered by their managing director (now and then
//! named as `required_delegator`). Most are accepted; some stay created, are rejected,
//! revoked or used (a one-time consent is used up), and some run out: the engine clock
//! moves through 90 days while the requests come in, so short ones are reported expired
//! at the end.
//!
//! System users (standard and agent) are not generated yet: see `Gen::system_users`.

use std::collections::BTreeMap;
use std::fmt;

use crate::catalog::Catalog;
use crate::event::{
    AgentEvent, ClockEvent, ConsentActionEvent, ConsentRequestEvent, ConsentRightSpec, DelegateEvent,
    DiedEvent, Event, GrantEvent, PartyEvent, ResourceEvent, RoleEvent, RuleSpec, UseConsentEvent,
};
use crate::model::{EntityType, PartyKind};

// ----------------------------------------------------------------------------------
// A small deterministic PRNG (xoshiro256**, seeded through splitmix64). Written here so
// that the stream for a seed never changes with a dependency upgrade.

/// The generator's random numbers: xoshiro256** seeded by splitmix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `seed`; different `stream`s give independent sequences, so each
    /// phase has its own and changing one phase's sizes leaves the others' choices alone.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut x = seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut s = [0u64; 4];
        for v in &mut s {
            *v = splitmix64(&mut x);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A number in `0..n` (0 when `n` is 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// An index into a collection of `n` items.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice (the first when empty slices are impossible by
    /// construction; callers pass constant, non-empty tables).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.index(items.len()))
    }

    /// A count from a small discrete distribution: `weights[k]` is the weight of `k`.
    pub fn count(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut u = self.below(u64::from(total)) as u32;
        for (k, w) in weights.iter().enumerate() {
            if u < *w {
                return k;
            }
            u -= *w;
        }
        0
    }
}

/// Sampling from fixed weights by binary search over the cumulative sums.
#[derive(Debug, Clone)]
struct Weighted {
    cum: Vec<f64>,
}

impl Weighted {
    fn new(weights: impl IntoIterator<Item = f64>) -> Weighted {
        let mut acc = 0.0;
        let cum = weights
            .into_iter()
            .map(|w| {
                acc += w.max(0.0);
                acc
            })
            .collect();
        Weighted { cum }
    }
    /// Zipf weights `1 / (k + 1)^s` for ranks `0..n`: the heavy tail of firm sizes.
    fn zipf(n: usize, s: f64) -> Weighted {
        Weighted::new((0..n).map(|k| 1.0 / ((k + 1) as f64).powf(s)))
    }
    fn total(&self) -> f64 {
        self.cum.last().copied().unwrap_or(0.0)
    }
    fn weight(&self, k: usize) -> f64 {
        let hi = self.cum.get(k).copied().unwrap_or(0.0);
        let lo = if k == 0 {
            0.0
        } else {
            self.cum.get(k - 1).copied().unwrap_or(0.0)
        };
        hi - lo
    }
    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit() * self.total();
        self.cum
            .partition_point(|c| *c <= u)
            .min(self.cum.len().saturating_sub(1))
    }
}

// ----------------------------------------------------------------------------------
// Parameters

/// Size presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// About 1 000 persons: for tests and examples.
    Small,
    /// About 100 000 persons.
    Medium,
    /// Norway: 5.56 M persons, 1.3 M organisations, 0.3 M sub-units.
    Norway,
}

/// What to generate. Rates are per party of the kind named; counts are absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub seed: u64,
    pub persons: u64,
    /// Main units (every organisation that is not a sub-unit).
    pub orgs: u64,
    /// Sub-units (BEDR/AAFY), each under one main unit.
    pub sub_units: u64,
    pub resources: u64,
    /// Accounting firms (REGN); default `orgs / 260`.
    pub accounting_firms: u64,
    /// Audit firms (REVI); default `orgs / 2000`.
    pub audit_firms: u64,
    /// Business managers (FFØR for housing co-operatives and condominiums).
    pub managers: u64,
    /// Zipf exponent of firm sizes (1.0: the largest of 5 000 firms has ~11 % of clients).
    pub firm_skew: f64,
    /// Clients per accounting/audit employee (decides how many agents a firm has).
    pub clients_per_agent: u64,
    /// Share of persons who are under guardianship.
    pub guardianship_rate: f64,
    /// Share of persons who die at the end of the stream.
    pub death_rate: f64,
    /// Share of persons who grant citizen packages to another person.
    pub person_grant_rate: f64,
    /// Name the acting person (`by`, the firm's CEO) on agent and delegation events, so
    /// that they go through the authorization check, as they would through the API.
    pub with_actor: bool,
    /// Give parties names (costs memory in the world: off for lean benchmarks).
    pub names: bool,
    /// Consent requests to generate (domain.md §9); 0, the default, adds no consent
    /// resource, request or clock event, so the world is the same as without consents.
    pub consents: u64,
}

impl Params {
    pub fn for_scale(scale: Scale) -> Params {
        let (persons, orgs, sub_units, resources) = match scale {
            Scale::Small => (1_000, 250, 60, 30),
            Scale::Medium => (100_000, 23_000, 5_400, 300),
            Scale::Norway => (5_562_363, 1_300_000, 300_000, 3_000),
        };
        Params::sized(persons, orgs, sub_units, resources)
    }

    /// Parameters for the given sizes, with firm counts derived from `orgs`.
    pub fn sized(persons: u64, orgs: u64, sub_units: u64, resources: u64) -> Params {
        Params {
            seed: 1,
            persons,
            orgs,
            sub_units,
            resources,
            accounting_firms: (orgs / 260).max(3),
            audit_firms: (orgs / 2000).max(2),
            managers: (orgs / 4000).max(1),
            firm_skew: 1.0,
            clients_per_agent: 30,
            guardianship_rate: 0.008,
            death_rate: 0.002,
            person_grant_rate: 0.05,
            with_actor: true,
            names: true,
            consents: 0,
        }
    }
}

// ----------------------------------------------------------------------------------
// Tables: unit types, roles and packages the generator draws from.

/// A main-unit type with its share (per 100 000 organisations) and the chances that an
/// organisation of it has an accountant, an auditor, a business manager and grants.
struct UnitType {
    code: &'static str,
    weight: u32,
    regn: f64,
    revi: f64,
    ffor: f64,
    grants: f64,
}

const fn ut(code: &'static str, weight: u32, regn: f64, revi: f64, ffor: f64, grants: f64) -> UnitType {
    UnitType {
        code,
        weight,
        regn,
        revi,
        ffor,
        grants,
    }
}

/// Main-unit types and their shares. Municipalities, counties and IKS are placed by
/// count, not by share (see [`Gen::plan_orgs`]).
const UNIT_TYPES: &[UnitType] = &[
    ut("ENK", 38_000, 0.45, 0.02, 0.0, 0.15),
    ut("AS", 34_000, 0.80, 0.35, 0.0, 0.60),
    ut("ASA", 25, 0.30, 1.00, 0.0, 0.95),
    ut("NUF", 1_500, 0.60, 0.20, 0.05, 0.40),
    ut("ANS", 1_300, 0.60, 0.05, 0.0, 0.30),
    ut("DA", 900, 0.60, 0.05, 0.0, 0.30),
    ut("KS", 300, 0.70, 0.20, 0.0, 0.40),
    ut("SA", 500, 0.50, 0.60, 0.0, 0.50),
    ut("BRL", 1_000, 0.15, 1.00, 0.85, 0.30),
    ut("ESEK", 2_500, 0.10, 0.30, 0.50, 0.15),
    ut("STI", 600, 0.50, 1.00, 0.0, 0.40),
    ut("FLI", 14_000, 0.10, 0.03, 0.0, 0.20),
    ut("SAM", 1_200, 0.30, 0.05, 0.0, 0.15),
    ut("ANNA", 500, 0.20, 0.05, 0.0, 0.10),
    ut("STAT", 60, 0.0, 0.0, 0.0, 0.90),
    ut("SF", 20, 0.20, 1.00, 0.0, 0.90),
    ut("KF", 60, 0.20, 1.00, 0.0, 0.80),
    ut("PK", 5, 0.20, 1.00, 0.0, 0.90),
];

/// Unit types placed by count: (code, organisations per one of them, minimum, maximum).
const COUNTED_TYPES: &[(&str, u64, u64, u64)] = &[
    ("KOMM", 3_640, 2, 357),
    ("FYLK", 86_000, 0, 15),
    ("IKS", 5_000, 1, 260),
];

const COMMERCIAL: &[&str] = &[
    "ENK", "AS", "ASA", "NUF", "ANS", "DA", "KS", "SA", "SF", "KF", "IKS",
];

/// Packages rightholders are most often given by organisations.
const POPULAR_ORG_PACKAGES: &[&str] = &[
    "a-ordning",
    "lonn",
    "sykefravaer",
    "ansettelsesforhold",
    "merverdiavgift",
    "skattegrunnlag",
    "skatt-naering",
    "regnskap-okonomi-rapport",
    "post-til-virksomheten-med-taushetsbelagt-innhold",
    "ordinaer-post-til-virksomheten",
    "tilgangsstyrer",
    "krav-og-utlegg",
    "toll",
    "pensjon",
    "permisjon",
    "oppgi-naermeste-leder",
    "aksjer-og-eierforhold",
    "starte-drive-endre-avvikle-virksomhet",
    "byggesoknad",
    "kjoretoy",
];

/// Packages a client grants its accounting firm directly (rightholder client relation).
const CLIENT_GRANT_PACKAGES: &[&str] = &["a-ordning", "lonn", "merverdiavgift", "skattegrunnlag"];

const REGN_PACKAGE_SETS: &[&[&str]] = &[
    &["regnskapsforer-uten-signeringsrettighet"],
    &["regnskapsforer-med-signeringsrettighet"],
    &["regnskapsforer-med-signeringsrettighet", "regnskapsforer-lonn"],
    &["regnskapsforer-uten-signeringsrettighet", "regnskapsforer-lonn"],
    &["regnskapsforer-lonn"],
];
const REVI_PACKAGE_SETS: &[&[&str]] = &[
    &["ansvarlig-revisor"],
    &["revisormedarbeider"],
    &["ansvarlig-revisor", "revisormedarbeider"],
];

/// Altinn 2 roles organisations still had delegated to persons at the migration.
const A2_PERSON_ROLES: &[&str] = &[
    "utinn", "signe", "priut", "a0212", "a0236", "a0278", "loper", "komab", "pasig", "a0293", "a0294",
    "a0298", "uihtl", "uiluf", "siskd", "hvask",
];
/// Altinn 2 accountant roles (client → accounting firm).
const A2_FIRM_ROLES: &[&str] = &["a0237", "a0238", "a0239"];

const SERVICE_OWNERS: &[&str] = &[
    "skd",
    "nav",
    "brg",
    "ssb",
    "udir",
    "dibk",
    "mattilsynet",
    "sfv",
    "kartverket",
    "politiet",
    "lanekassen",
    "arbeidstilsynet",
    "toll",
    "digdir",
    "helfo",
    "husbanken",
    "fiskdir",
    "miljodir",
];
const SERVICE_TOPICS: &[&str] = &[
    "mva-melding",
    "skattemelding",
    "a-melding",
    "krav-og-betalinger",
    "aarsregnskap",
    "sykmelding",
    "refusjon",
    "tilskudd",
    "soknad",
    "rapportering",
    "tilsyn",
    "innsyn",
    "melding",
    "bekreftelse",
    "registrering",
    "endring",
];
const ACTIONS: &[&str] = &[
    "read",
    "write",
    "sign",
    "instantiate",
    "confirm",
    "delete",
    "access",
];
/// Role tokens policies name: role URNs and legacy role codes.
const POLICY_ROLE_TOKENS: &[&str] = &[
    "urn:altinn:external-role:ccr:daglig-leder",
    "urn:altinn:external-role:ccr:styreleder",
    "urn:altinn:external-role:ccr:innehaver",
    "urn:altinn:external-role:ccr:regnskapsforer",
    "urn:altinn:external-role:ccr:revisor",
    "urn:altinn:rolecode:dagl",
    "urn:altinn:rolecode:lede",
    "urn:altinn:rolecode:regna",
    "urn:altinn:rolecode:utinn",
    "urn:altinn:rolecode:a0237",
    "urn:altinn:rolecode:signe",
    "urn:altinn:rolecode:priut",
];

/// A consent resource the generator makes with `--consents` (domain.md §9.1).
struct ConsentRes {
    id: &'static str,
    owner: &'static str,
    one_time: bool,
    /// Rules: (actions, any-of tokens): who may consent to these actions for a party.
    rules: &'static [(&'static [&'static str], &'static [&'static str])],
    /// Whether an organisation's managing director (or an ENK's owner) may consent to it
    /// for the organisation: its rules name a role or package those roles give.
    for_orgs: bool,
}

const SKATTEGRUNNLAG: &str = "urn:altinn:accesspackage:skattegrunnlag";
const INNBYGGER_SKATT: &str = "urn:altinn:accesspackage:innbygger-skatteforhold-privatpersoner";
const FINANSIERING: &str = "urn:altinn:accesspackage:finansiering-og-forsikring";
const INNBYGGER_BANK: &str = "urn:altinn:accesspackage:innbygger-bank-finans";

/// The consent resources: income data and a tax return for banks, a bank's loan
/// application (naming the managing director's role too), employment data a person
/// shares, and a one-time credit check.
const CONSENT_RESOURCES: &[ConsentRes] = &[
    ConsentRes {
        id: "skd-inntekt-samtykke",
        owner: "skd",
        one_time: false,
        rules: &[(&["consent"], &[SKATTEGRUNNLAG, INNBYGGER_SKATT])],
        for_orgs: true,
    },
    ConsentRes {
        id: "bank-laanesoknad-samtykke",
        owner: "skd",
        one_time: false,
        rules: &[(
            &["consent"],
            &[
                "urn:altinn:external-role:ccr:daglig-leder",
                FINANSIERING,
                INNBYGGER_BANK,
            ],
        )],
        for_orgs: true,
    },
    ConsentRes {
        id: "skd-skattemelding-samtykke",
        owner: "skd",
        one_time: false,
        rules: &[(&["read", "consent"], &[SKATTEGRUNNLAG, INNBYGGER_SKATT])],
        for_orgs: true,
    },
    ConsentRes {
        id: "nav-aareg-samtykke",
        owner: "nav",
        one_time: false,
        rules: &[(&["consent"], &["urn:altinn:accesspackage:innbygger-arbeidsliv"])],
        for_orgs: false,
    },
    ConsentRes {
        id: "bank-kredittsjekk-engangs",
        owner: "skd",
        one_time: true,
        rules: &[(&["consent"], &[FINANSIERING, INNBYGGER_BANK])],
        for_orgs: true,
    },
];

/// The generator's first engine clock (the consent phase moves it on).
const START_CLOCK: &str = "2025-06-02T08:00:00+02:00";
/// Days the clock moves through while the consent requests come in.
const CONSENT_DAYS: u64 = 90;

const FIRST_NAMES: &[&str] = &[
    "Kari", "Ola", "Ingrid", "Lars", "Anne", "Jon", "Marit", "Per", "Sigrid", "Nils", "Liv", "Knut", "Hilde",
    "Arne", "Astrid", "Bjørn", "Eva", "Tor", "Nora", "Emil", "Sofie", "Jakob", "Ida", "Henrik",
];
const LAST_NAMES: &[&str] = &[
    "Nordmann",
    "Hansen",
    "Johansen",
    "Olsen",
    "Larsen",
    "Andersen",
    "Pedersen",
    "Nilsen",
    "Kristiansen",
    "Jensen",
    "Karlsen",
    "Johnsen",
    "Pettersen",
    "Eriksen",
    "Berg",
    "Haugen",
    "Hagen",
    "Dahl",
    "Lie",
    "Moen",
];
const ORG_WORDS: &[&str] = &[
    "Fjord",
    "Nord",
    "Vest",
    "Fjell",
    "Havn",
    "Skog",
    "Bygg",
    "Data",
    "Regnskap",
    "Transport",
    "Elektro",
    "Maskin",
    "Eiendom",
    "Handel",
    "Consult",
    "Marin",
    "Agro",
    "Helse",
    "Kraft",
    "Design",
    "Bakeri",
    "Rør",
    "Vekst",
    "Sol",
    "Nordlys",
    "Tind",
    "Bølge",
    "Fossen",
];

// ----------------------------------------------------------------------------------
// Progress and summary

/// Progress reporting, phase by phase (the command line shows progress bars).
pub trait Progress {
    fn phase(&mut self, name: &str, total: u64);
    fn inc(&mut self, n: u64);
    fn finish(&mut self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&mut self, _: &str, _: u64) {}
    fn inc(&mut self, _: u64) {}
}

/// What the generator made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Events per event name.
    pub events: BTreeMap<&'static str, u64>,
    pub persons: u64,
    /// Main units per unit type.
    pub unit_types: BTreeMap<&'static str, u64>,
    /// Sub-units per unit type (BEDR, AAFY).
    pub sub_units: BTreeMap<&'static str, u64>,
    /// Register roles per role code.
    pub register_roles: BTreeMap<&'static str, u64>,
    /// Altinn 2 role assignments per code.
    pub a2_roles: BTreeMap<&'static str, u64>,
    /// Clients of each accounting firm (REGN), by firm rank.
    pub accounting_clients: Vec<u64>,
    /// Clients of each audit firm (REVI), by firm rank.
    pub audit_clients: Vec<u64>,
    /// Clients of each business manager (FFØR), by rank.
    pub manager_clients: Vec<u64>,
    pub agents: u64,
    pub client_delegations: u64,
    pub package_grants: u64,
    pub resource_grants: u64,
    pub instance_grants: u64,
    pub guardianships: u64,
    pub deaths: u64,
    /// Consent requests by the status reported at the end of the stream (`expired` for
    /// those created or accepted whose `valid_to` the final clock has passed).
    pub consents: BTreeMap<&'static str, u64>,
}

impl Summary {
    pub fn total_events(&self) -> u64 {
        self.events.values().sum()
    }
}

fn median(v: &[u64]) -> u64 {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.get(s.len() / 2).copied().unwrap_or(0)
}

fn firm_line(f: &mut fmt::Formatter<'_>, name: &str, v: &[u64]) -> fmt::Result {
    let total: u64 = v.iter().sum();
    let max = v.iter().copied().max().unwrap_or(0);
    let big = v.iter().filter(|c| **c >= 20_000).count();
    writeln!(
        f,
        "  {name:<22} {:>9} firms, {total:>10} clients; largest {max}, median {}, {big} with 20 000+",
        v.len(),
        median(v)
    )
}

fn map_line<K: fmt::Display>(f: &mut fmt::Formatter<'_>, name: &str, m: &BTreeMap<K, u64>) -> fmt::Result {
    let mut v: Vec<(&K, &u64)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    let mut parts: Vec<String> = v.iter().take(16).map(|(k, n)| format!("{k} {n}")).collect();
    if v.len() > 16 {
        let rest: u64 = v.iter().skip(16).map(|(_, n)| **n).sum();
        parts.push(format!("{} more kinds {rest}", v.len() - 16));
    }
    writeln!(f, "  {name:<22} {}", parts.join(", "))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "generated {} events", self.total_events())?;
        map_line(f, "events", &self.events)?;
        writeln!(f, "  {:<22} {}", "persons", self.persons)?;
        let orgs: u64 = self.unit_types.values().sum();
        writeln!(f, "  {:<22} {orgs}", "main units")?;
        map_line(f, "  by unit type", &self.unit_types)?;
        let subs: u64 = self.sub_units.values().sum();
        writeln!(f, "  {:<22} {subs}", "sub-units")?;
        map_line(f, "  by unit type", &self.sub_units)?;
        map_line(f, "register roles", &self.register_roles)?;
        map_line(f, "altinn 2 roles", &self.a2_roles)?;
        firm_line(f, "accounting (REGN)", &self.accounting_clients)?;
        firm_line(f, "audit (REVI)", &self.audit_clients)?;
        firm_line(f, "business mgr (FFØR)", &self.manager_clients)?;
        writeln!(f, "  {:<22} {}", "agents", self.agents)?;
        writeln!(f, "  {:<22} {}", "client delegations", self.client_delegations)?;
        writeln!(f, "  {:<22} {}", "package grants", self.package_grants)?;
        writeln!(f, "  {:<22} {}", "resource grants", self.resource_grants)?;
        writeln!(f, "  {:<22} {}", "instance grants", self.instance_grants)?;
        writeln!(f, "  {:<22} {}", "guardianships", self.guardianships)?;
        if !self.consents.is_empty() {
            map_line(f, "consents", &self.consents)?;
        }
        write!(f, "  {:<22} {}", "deaths", self.deaths)
    }
}

// ----------------------------------------------------------------------------------
// The generator

const NONE: u32 = u32::MAX;
const FLAG_ACCOUNTING: u8 = 1;
const FLAG_AUDIT: u8 = 2;
const FLAG_MANAGER: u8 = 4;

/// One firm kind: its firms (org indices by rank), how clients choose among them and
/// their agents.
struct Firms {
    orgs: Vec<u32>,
    pick: Weighted,
    /// Agents of firm k: `agents[agent_start[k]..agent_start[k + 1]]` (person indices).
    agent_start: Vec<usize>,
    agents: Vec<u32>,
    clients: Vec<u64>,
}

impl Firms {
    fn agents_of(&self, k: usize) -> &[u32] {
        let a = self.agent_start.get(k).copied().unwrap_or(0);
        let b = self.agent_start.get(k + 1).copied().unwrap_or(a);
        self.agents.get(a..b).unwrap_or(&[])
    }
}

/// The consent phase's state: consumers and operators, and the revocations and uses
/// waiting for their hour.
struct ConsentCx {
    consumers: Vec<u32>,
    pick: Weighted,
    operators: Vec<u32>,
    /// The engine clock at the end of the phase.
    end: chrono::DateTime<chrono::FixedOffset>,
    /// Hour of the phase → events due then.
    later: BTreeMap<u64, Vec<Event>>,
}

struct Gen<'p, 'q, F, E>
where
    F: FnMut(Event) -> Result<(), E>,
{
    p: &'p Params,
    sink: F,
    progress: &'q mut dyn Progress,
    sum: Summary,
    /// Unit type of each organisation (index into `type_codes`).
    org_type: Vec<u8>,
    type_codes: Vec<&'static str>,
    /// The CEO (person index) of each main unit, or NONE.
    org_ceo: Vec<u32>,
    org_flags: Vec<u8>,
    /// Indices of municipalities.
    komm: Vec<u32>,
    /// Organisation packages that may be granted to a person, popular ones first.
    popular: Vec<&'static str>,
    assignable_org: Vec<&'static str>,
    citizen: Vec<&'static str>,
    cra_roles: Vec<&'static str>,
    /// Resources: id and the actions its rules name.
    resources: Vec<(String, Vec<&'static str>)>,
}

/// Generates the world `p` describes, handing each event to `sink` in order.
///
/// The sink's first error stops the generator and is returned.
pub fn generate<E>(
    p: &Params,
    progress: &mut dyn Progress,
    sink: impl FnMut(Event) -> Result<(), E>,
) -> Result<Summary, E> {
    let catalog = Catalog::builtin();
    let known = |codes: &[&'static str]| -> Vec<&'static str> {
        codes
            .iter()
            .copied()
            .filter(|c| catalog.package_id(c).is_some())
            .collect()
    };
    let popular = known(POPULAR_ORG_PACKAGES);
    let mut assignable_org = Vec::new();
    let mut citizen = Vec::new();
    for pk in &catalog.packages {
        if !pk.is_assignable {
            continue;
        }
        match pk.entity_type {
            EntityType::Organisation => assignable_org.push(pk.code.as_str()),
            EntityType::Person if pk.code.starts_with("innbygger-") => citizen.push(pk.code.as_str()),
            EntityType::Person => {}
        }
    }
    let cra_roles = catalog
        .roles
        .iter()
        .filter(|r| r.provider == crate::catalog::Provider::Cra)
        .map(|r| r.code.as_str())
        .collect();
    let mut g = Gen {
        p,
        sink,
        progress,
        sum: Summary::default(),
        org_type: Vec::new(),
        type_codes: Vec::new(),
        org_ceo: Vec::new(),
        org_flags: Vec::new(),
        komm: Vec::new(),
        popular,
        assignable_org,
        citizen,
        cra_roles,
        resources: Vec::new(),
    };
    g.run()?;
    g.progress.finish();
    Ok(g.sum)
}

/// Generates into a vector (for tests and small worlds).
pub fn generate_vec(p: &Params) -> Vec<Event> {
    let mut out = Vec::new();
    let _ = generate(p, &mut NoProgress, |e| {
        out.push(e);
        Ok::<(), std::convert::Infallible>(())
    });
    out
}

fn person_id(i: u32) -> String {
    format!("p{i}")
}
fn org_id(i: u32) -> String {
    format!("o{i}")
}

fn party(id: String, kind: PartyKind) -> PartyEvent {
    PartyEvent {
        id,
        kind,
        name: None,
        unit_type: None,
        main_unit: None,
        org_no: None,
        ssn: None,
        system_user_kind: None,
        owner: None,
        system: None,
        uuid: None,
        party_id: None,
        user_id: None,
    }
}

/// A synthetic national id: birth date (ddmmyy) from the index, then a serial and two
/// digits standing in for the check digits (not valid ones: test data).
fn ssn(i: u32) -> String {
    let day_index = i64::from(i / 1000) * 5;
    let base = chrono::NaiveDate::from_ymd_opt(1940, 1, 1).unwrap_or_default();
    let d = base + chrono::Duration::days(day_index % 30_000);
    let serial = i % 1000;
    let check = (i.wrapping_mul(2_654_435_761) >> 8) % 100;
    format!("{}{serial:03}{check:02}", d.format("%d%m%y"))
}

fn grant_package(from: String, to: String, package: &str) -> Event {
    Event::Grant(GrantEvent {
        from,
        to,
        package: Some(package.to_string()),
        resource: None,
        instance: None,
        actions: None,
        by: None,
        cascade: None,
    })
}

impl<'p, 'q, F, E> Gen<'p, 'q, F, E>
where
    F: FnMut(Event) -> Result<(), E>,
{
    fn emit(&mut self, ev: Event) -> Result<(), E> {
        *self.sum.events.entry(ev.name()).or_default() += 1;
        (self.sink)(ev)
    }

    fn register(&mut self, from: String, to: String, role: &'static str) -> Result<(), E> {
        *self.sum.register_roles.entry(role).or_default() += 1;
        self.emit(Event::RegisterRole(RoleEvent {
            from,
            to,
            role: role.to_string(),
        }))
    }

    fn rng(&self, stream: u64) -> Rng {
        Rng::new(self.p.seed, stream)
    }

    fn n_persons(&self) -> u32 {
        self.p.persons.min(u64::from(u32::MAX - 1)) as u32
    }
    fn n_main(&self) -> u32 {
        self.org_type.len().min(self.main_count()) as u32
    }
    fn main_count(&self) -> usize {
        self.p.orgs.min(u64::from(u32::MAX / 2)) as usize
    }

    /// A person for a role: most uniformly, some from a small pool of people who hold
    /// many roles (professional board members, serial founders).
    fn some_person(&self, rng: &mut Rng) -> u32 {
        let n = self.n_persons();
        if n == 0 {
            return 0;
        }
        if rng.chance(0.15) {
            let pool = (n / 50).max(1);
            rng.below(u64::from(pool)) as u32 * 50 % n
        } else {
            rng.below(u64::from(n)) as u32
        }
    }

    fn type_of(&self, org: u32) -> &'static str {
        self.org_type
            .get(org as usize)
            .and_then(|t| self.type_codes.get(usize::from(*t)))
            .copied()
            .unwrap_or("AS")
    }

    fn spec_of(&self, org: u32) -> Option<&'static UnitType> {
        let code = self.type_of(org);
        UNIT_TYPES.iter().find(|u| u.code == code)
    }

    fn run(&mut self) -> Result<(), E> {
        if self.p.persons == 0 {
            return Ok(());
        }
        self.emit(Event::Clock(ClockEvent {
            now: START_CLOCK.to_string(),
            forward_only: None,
        }))?;
        self.resources_phase()?;
        self.persons_phase()?;
        self.plan_orgs();
        self.orgs_phase()?;
        self.sub_units_phase()?;
        let mut acc = self.choose_firms(self.p.accounting_firms, FLAG_ACCOUNTING, 30);
        let mut aud = self.choose_firms(self.p.audit_firms, FLAG_AUDIT, 31);
        let mut mgr = self.choose_firms(self.p.managers, FLAG_MANAGER, 32);
        self.org_roles_phase()?;
        // Agents are sized by the clients each firm is expected to get.
        let regn_share: f64 = (0..self.n_main())
            .map(|o| self.spec_of(o).map_or(0.0, |s| s.regn))
            .sum();
        let revi_share: f64 = (0..self.n_main())
            .map(|o| self.spec_of(o).map_or(0.0, |s| s.revi))
            .sum();
        self.agents_phase("accounting agents", &mut acc, regn_share, 40)?;
        self.agents_phase("audit agents", &mut aud, revi_share, 41)?;
        self.clients_phase(&mut acc, &mut aud, &mut mgr)?;
        self.sum.accounting_clients = acc.clients;
        self.sum.audit_clients = aud.clients;
        self.sum.manager_clients = mgr.clients;
        self.grants_phase()?;
        self.person_grants_phase()?;
        self.a2_phase()?;
        self.guardianship_phase()?;
        self.system_users()?;
        self.consents_phase()?;
        self.deaths_phase()?;
        Ok(())
    }

    fn resources_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(1);
        let n = self.p.resources;
        self.progress.phase("resources", n);
        for i in 0..n {
            let owner = rng.pick(SERVICE_OWNERS).copied().unwrap_or("skd");
            let topic = rng.pick(SERVICE_TOPICS).copied().unwrap_or("melding");
            let id = format!("{owner}-{topic}-{i}");
            let n_rules = 1 + rng.count(&[50, 35, 15]);
            let mut rules = Vec::with_capacity(n_rules);
            let mut all_actions: Vec<&'static str> = Vec::new();
            let person_service = rng.chance(0.1);
            for _ in 0..n_rules {
                let mut actions: Vec<&'static str> = Vec::new();
                for _ in 0..1 + rng.count(&[40, 40, 20]) {
                    let a = rng.pick(ACTIONS).copied().unwrap_or("read");
                    if !actions.contains(&a) {
                        actions.push(a);
                    }
                }
                let mut any_of: Vec<String> = Vec::new();
                for _ in 0..1 + rng.count(&[30, 40, 20, 10]) {
                    let t = if person_service {
                        match rng.pick(&self.citizen) {
                            Some(c) => format!("urn:altinn:accesspackage:{c}"),
                            None => "urn:altinn:role:privatperson".to_string(),
                        }
                    } else if rng.chance(0.25) {
                        rng.pick(POLICY_ROLE_TOKENS)
                            .copied()
                            .unwrap_or("urn:altinn:rolecode:dagl")
                            .to_string()
                    } else {
                        let pk = if rng.chance(0.7) {
                            rng.pick(&self.popular)
                        } else {
                            rng.pick(&self.assignable_org)
                        };
                        format!("urn:altinn:accesspackage:{}", pk.copied().unwrap_or("a-ordning"))
                    };
                    if !any_of.contains(&t) {
                        any_of.push(t);
                    }
                }
                for a in &actions {
                    if !all_actions.contains(a) {
                        all_actions.push(a);
                    }
                }
                rules.push(RuleSpec {
                    actions: actions.iter().map(|a| a.to_string()).collect(),
                    any_of,
                });
            }
            self.emit(Event::Resource(ResourceEvent {
                id: id.clone(),
                owner: Some(owner.to_string()),
                delegable: Some(rng.chance(0.9)),
                rules,
                access_lists: None,
                access_list_mode: None,
                kind: None,
                one_time: None,
                scopes: None,
            }))?;
            self.resources.push((id, all_actions));
            self.progress.inc(1);
        }
        Ok(())
    }

    fn persons_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(2);
        let n = self.n_persons();
        self.progress.phase("persons", u64::from(n));
        for i in 0..n {
            let mut ev = party(person_id(i), PartyKind::Person);
            if self.p.names {
                let first = rng.pick(FIRST_NAMES).copied().unwrap_or("Kari");
                let last = rng.pick(LAST_NAMES).copied().unwrap_or("Nordmann");
                ev.name = Some(format!("{first} {last}"));
            }
            ev.ssn = Some(ssn(i));
            ev.party_id = Some(50_000_000 + i64::from(i));
            ev.user_id = Some(20_000_000 + i64::from(i));
            self.emit(Event::Party(ev))?;
            self.sum.persons += 1;
            self.progress.inc(1);
        }
        Ok(())
    }

    /// Decides every main unit's unit type (no events): counted types first, the rest
    /// drawn by share.
    fn plan_orgs(&mut self) {
        let mut rng = self.rng(3);
        let n = self.main_count();
        let mut codes: Vec<&'static str> = UNIT_TYPES.iter().map(|u| u.code).collect();
        codes.extend(COUNTED_TYPES.iter().map(|c| c.0));
        codes.extend(["BEDR", "AAFY"]);
        self.type_codes = codes;
        let idx = |codes: &[&str], c: &str| codes.iter().position(|x| *x == c).unwrap_or(0) as u8;
        let mut types = Vec::with_capacity(n + self.p.sub_units as usize);
        for (code, per, min, max) in COUNTED_TYPES {
            let k = (self.p.orgs / per).clamp(*min, *max) as usize;
            let t = idx(&self.type_codes, code);
            for _ in 0..k.min(n.saturating_sub(types.len())) {
                if *code == "KOMM" {
                    self.komm.push(types.len() as u32);
                }
                types.push(t);
            }
        }
        let pick = Weighted::new(UNIT_TYPES.iter().map(|u| f64::from(u.weight)));
        while types.len() < n {
            types.push(pick.sample(&mut rng) as u8);
        }
        self.org_type = types;
        self.org_ceo = vec![NONE; n];
        self.org_flags = vec![0; n];
    }

    fn org_name(&self, rng: &mut Rng, code: &str) -> Option<String> {
        if !self.p.names {
            return None;
        }
        let a = rng.pick(ORG_WORDS).copied().unwrap_or("Nord");
        let b = rng.pick(ORG_WORDS).copied().unwrap_or("Bygg");
        Some(format!("{a}{} {code}", b.to_lowercase()))
    }

    fn orgs_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(4);
        let n = self.n_main();
        self.progress.phase("organisations", u64::from(n));
        for i in 0..n {
            let code = self.type_of(i);
            let mut ev = party(org_id(i), PartyKind::Organisation);
            ev.name = match code {
                "KOMM" => self.p.names.then(|| format!("Kommune {i}")),
                _ => self.org_name(&mut rng, code),
            };
            ev.unit_type = Some(code.to_string());
            ev.org_no = Some(format!("{}", 310_000_000 + u64::from(i)));
            ev.party_id = Some(60_000_000 + i64::from(i));
            self.emit(Event::Party(ev))?;
            *self.sum.unit_types.entry(code).or_default() += 1;
            self.progress.inc(1);
        }
        Ok(())
    }

    fn sub_units_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(5);
        let main = self.n_main();
        let n = self.p.sub_units.min(u64::from(u32::MAX / 2)) as u32;
        self.progress.phase("sub-units", u64::from(n));
        if main == 0 {
            return Ok(());
        }
        let bedr = self.type_codes.iter().position(|c| *c == "BEDR").unwrap_or(0) as u8;
        let aafy = self.type_codes.iter().position(|c| *c == "AAFY").unwrap_or(0) as u8;
        for j in 0..n {
            // Municipalities have many sub-units (schools, care homes); ENKs few.
            let m = loop {
                let m = if !self.komm.is_empty() && rng.chance(0.08) {
                    self.komm.get(rng.index(self.komm.len())).copied().unwrap_or(0)
                } else {
                    rng.below(u64::from(main)) as u32
                };
                if self.type_of(m) != "ENK" || rng.chance(0.25) {
                    break m;
                }
            };
            let main_code = self.type_of(m);
            let commercial = COMMERCIAL.contains(&main_code);
            let aafy_unit = !commercial && rng.chance(0.7);
            let code = if aafy_unit { "AAFY" } else { "BEDR" };
            let idx = main + j;
            let mut ev = party(org_id(idx), PartyKind::Organisation);
            ev.name = self.p.names.then(|| format!("Avdeling {j}"));
            ev.unit_type = Some(code.to_string());
            ev.main_unit = Some(org_id(m));
            ev.org_no = Some(format!("{}", 310_000_000 + u64::from(idx)));
            ev.party_id = Some(60_000_000 + i64::from(idx));
            self.emit(Event::Party(ev))?;
            self.org_type.push(if aafy_unit { aafy } else { bedr });
            *self.sum.sub_units.entry(code).or_default() += 1;
            self.progress.inc(1);
        }
        Ok(())
    }

    /// Chooses `n` firms among limited companies (no events): each gets a rank, and
    /// clients pick firms by a Zipf law over the ranks.
    fn choose_firms(&mut self, n: u64, flag: u8, stream: u64) -> Firms {
        let mut rng = self.rng(stream);
        let main = self.n_main();
        let mut orgs = Vec::new();
        let mut tries = 0u64;
        while (orgs.len() as u64) < n && main > 0 && tries < n.saturating_mul(200).max(1000) {
            tries += 1;
            let o = rng.below(u64::from(main)) as u32;
            let relaxed = tries > n.saturating_mul(100);
            let ok_type = matches!(self.type_of(o), "AS" | "ANS" | "DA") || relaxed;
            if let Some(f) = self.org_flags.get_mut(o as usize)
                && *f == 0
                && ok_type
            {
                *f |= flag;
                orgs.push(o);
            }
        }
        let pick = Weighted::zipf(orgs.len(), self.p.firm_skew);
        let k = orgs.len();
        Firms {
            orgs,
            pick,
            agent_start: vec![0; k + 1],
            agents: Vec::new(),
            clients: vec![0; k],
        }
    }

    fn org_roles_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(6);
        let n = self.n_main();
        self.progress.phase("register roles", u64::from(n));
        for o in 0..n {
            self.roles_of(&mut rng, o)?;
            self.progress.inc(1);
        }
        Ok(())
    }

    fn board(&mut self, rng: &mut Rng, o: u32, members: &[u32]) -> Result<(), E> {
        let n = rng.count(members);
        for _ in 0..n {
            let p = self.some_person(rng);
            self.register(org_id(o), person_id(p), "styremedlem")?;
        }
        if n > 0 && rng.chance(0.5) {
            let p = self.some_person(rng);
            self.register(org_id(o), person_id(p), "varamedlem")?;
        }
        Ok(())
    }

    /// The register roles of main unit `o`: key roles, board, contact persons.
    fn roles_of(&mut self, rng: &mut Rng, o: u32) -> Result<(), E> {
        let code = self.type_of(o);
        let is_firm = self.org_flags.get(o as usize).copied().unwrap_or(0) != 0;
        let id = org_id(o);
        let mut ceo = None;
        match code {
            "ENK" => {
                let p = self.some_person(rng);
                self.register(id.clone(), person_id(p), "innehaver")?;
                if is_firm {
                    ceo = Some(p);
                }
            }
            "AS" | "ASA" | "SA" | "SF" | "KF" | "PK" => {
                let big = code != "AS";
                if is_firm || big || rng.chance(0.75) {
                    ceo = Some(self.some_person(rng));
                }
                // In a small AS the CEO is often the chair too.
                let chair = match ceo {
                    Some(c) if !big && rng.chance(0.55) => c,
                    _ => self.some_person(rng),
                };
                self.register(id.clone(), person_id(chair), "styreleder")?;
                let members: &[u32] = if big {
                    &[0, 0, 10, 30, 30, 20, 10]
                } else {
                    &[45, 25, 20, 10]
                };
                self.board(rng, o, members)?;
                if rng.chance(if big { 0.6 } else { 0.1 }) {
                    let p = self.some_person(rng);
                    self.register(id.clone(), person_id(p), "nestleder")?;
                }
                // Signature and procuration rights.
                if rng.chance(if big { 0.5 } else { 0.12 }) {
                    for _ in 0..1 + rng.count(&[60, 30, 10]) {
                        let p = self.some_person(rng);
                        self.register(id.clone(), person_id(p), "signerer")?;
                    }
                }
                if rng.chance(if big { 0.3 } else { 0.04 }) {
                    let p = self.some_person(rng);
                    self.register(id.clone(), person_id(p), "prokurist")?;
                }
            }
            "NUF" => {
                let p = self.some_person(rng);
                self.register(id.clone(), person_id(p), "norsk-representant")?;
                if is_firm || rng.chance(0.4) {
                    ceo = Some(self.some_person(rng));
                }
                let p = self.some_person(rng);
                self.register(id.clone(), person_id(p), "kontaktperson-nuf")?;
            }
            "ANS" | "DA" => {
                let role = if code == "ANS" {
                    "deltaker-fullt-ansvar"
                } else {
                    "deltaker-delt-ansvar"
                };
                for _ in 0..2 + rng.count(&[60, 30, 10]) {
                    let p = self.some_person(rng);
                    self.register(id.clone(), person_id(p), role)?;
                }
                if is_firm || rng.chance(0.3) {
                    ceo = Some(self.some_person(rng));
                }
            }
            "KS" => {
                // The general partner is usually a limited company.
                let m = self.n_main();
                let gp = (0..20)
                    .map(|_| rng.below(u64::from(m)) as u32)
                    .find(|x| *x != o && self.type_of(*x) == "AS");
                match gp {
                    Some(x) => self.register(id.clone(), org_id(x), "komplementar")?,
                    None => {
                        let p = self.some_person(rng);
                        self.register(id.clone(), person_id(p), "komplementar")?;
                    }
                }
                if rng.chance(0.5) {
                    ceo = Some(self.some_person(rng));
                }
                let p = self.some_person(rng);
                self.register(id.clone(), person_id(p), "styreleder")?;
            }
            "BRL" | "ESEK" | "STI" | "FLI" | "SAM" | "ANNA" => {
                let p = self.some_person(rng);
                self.register(id.clone(), person_id(p), "styreleder")?;
                self.board(rng, o, &[20, 30, 30, 20])?;
                if code == "STI" && rng.chance(0.4) || is_firm {
                    ceo = Some(self.some_person(rng));
                }
                if code == "FLI" && rng.chance(0.6) {
                    let p = self.some_person(rng);
                    self.register(id.clone(), person_id(p), "kontaktperson")?;
                }
            }
            "KOMM" | "FYLK" => {
                ceo = Some(self.some_person(rng));
                let p = self.some_person(rng);
                self.register(id.clone(), person_id(p), "kontaktperson-kommune")?;
            }
            "IKS" => {
                ceo = Some(self.some_person(rng));
                let p = self.some_person(rng);
                self.register(id.clone(), person_id(p), "styreleder")?;
                self.board(rng, o, &[0, 20, 40, 40])?;
                // The owner municipalities take part with divided liability.
                let mut owners: Vec<u32> = Vec::new();
                for _ in 0..2 + rng.count(&[40, 30, 20, 10]) {
                    if let Some(k) = self.komm.get(rng.index(self.komm.len())).copied()
                        && !owners.contains(&k)
                    {
                        owners.push(k);
                    }
                }
                for k in owners {
                    self.register(id.clone(), org_id(k), "deltaker-delt-ansvar")?;
                }
            }
            _ => {
                let p = self.some_person(rng);
                self.register(id.clone(), person_id(p), "styreleder")?;
            }
        }
        if let Some(c) = ceo {
            if code != "ENK" {
                self.register(id, person_id(c), "daglig-leder")?;
            }
            if let Some(slot) = self.org_ceo.get_mut(o as usize) {
                *slot = c;
            }
        }
        Ok(())
    }

    /// Employees of each firm become its agents (`add_agent`), as many as the firm's
    /// expected client count needs.
    fn agents_phase(
        &mut self,
        name: &str,
        firms: &mut Firms,
        expected_clients: f64,
        stream: u64,
    ) -> Result<(), E> {
        let mut rng = self.rng(stream);
        let total_w = firms.pick.total();
        self.progress.phase(name, firms.orgs.len() as u64);
        let cpa = self.p.clients_per_agent.max(1) as f64;
        let mut start = Vec::with_capacity(firms.orgs.len() + 1);
        let mut agents = Vec::new();
        for (k, f) in firms.orgs.clone().into_iter().enumerate() {
            start.push(agents.len());
            let expected = if total_w > 0.0 {
                expected_clients * firms.pick.weight(k) / total_w
            } else {
                0.0
            };
            let n = ((expected / cpa).round() as u64).max(1);
            let by = self.actor(f);
            for _ in 0..n {
                let a = self.some_person(&mut rng);
                self.emit(Event::AddAgent(AgentEvent {
                    facilitator: org_id(f),
                    agent: person_id(a),
                    cascade: None,
                    by: by.clone(),
                }))?;
                agents.push(a);
                self.sum.agents += 1;
            }
            self.progress.inc(1);
        }
        start.push(agents.len());
        firms.agent_start = start;
        firms.agents = agents;
        Ok(())
    }

    /// The person acting for a firm on agent events: its CEO (or ENK owner).
    fn actor(&self, firm: u32) -> Option<String> {
        if !self.p.with_actor {
            return None;
        }
        match self.org_ceo.get(firm as usize).copied() {
            Some(c) if c != NONE && self.type_of(firm) != "ENK" => Some(person_id(c)),
            _ => None,
        }
    }

    /// Picks a firm for client `o` (never the client itself).
    fn firm_for(firms: &Firms, rng: &mut Rng, o: u32) -> Option<usize> {
        if firms.orgs.is_empty() {
            return None;
        }
        let k = firms.pick.sample(rng);
        if firms.orgs.get(k) == Some(&o) {
            let k2 = (k + 1) % firms.orgs.len();
            return (firms.orgs.get(k2) != Some(&o)).then_some(k2);
        }
        Some(k)
    }

    fn delegate(
        &mut self,
        client: u32,
        firm: u32,
        agent: u32,
        role: &str,
        packages: &[&str],
    ) -> Result<(), E> {
        let by = self.actor(firm);
        self.sum.client_delegations += 1;
        self.emit(Event::Delegate(DelegateEvent {
            client: org_id(client),
            facilitator: org_id(firm),
            agent: person_id(agent),
            role: Some(role.to_string()),
            packages: Some(packages.iter().map(|p| p.to_string()).collect()),
            resources: None,
            by,
        }))
    }

    /// Accounting, audit and business-manager clients, with client delegations to the
    /// firms' agents.
    fn clients_phase(&mut self, acc: &mut Firms, aud: &mut Firms, mgr: &mut Firms) -> Result<(), E> {
        let mut rng = self.rng(7);
        let n = self.n_main();
        self.progress.phase("clients", u64::from(n));
        for o in 0..n {
            let Some(spec) = self.spec_of(o) else {
                self.progress.inc(1);
                continue;
            };
            if rng.chance(spec.regn)
                && let Some(k) = Self::firm_for(acc, &mut rng, o)
            {
                let f = acc.orgs.get(k).copied().unwrap_or(0);
                self.register(org_id(o), org_id(f), "regnskapsforer")?;
                if let Some(c) = acc.clients.get_mut(k) {
                    *c += 1;
                }
                let agents = acc.agents_of(k).to_vec();
                let n_agents = if agents.is_empty() {
                    0
                } else {
                    rng.count(&[5, 40, 35, 12, 8])
                };
                for _ in 0..n_agents {
                    let a = agents.get(rng.index(agents.len())).copied().unwrap_or(0);
                    let set = rng.pick(REGN_PACKAGE_SETS).copied().unwrap_or(&[]);
                    self.delegate(o, f, a, "regnskapsforer", set)?;
                }
                // Some clients also make the firm a rightholder of payroll or VAT
                // packages, which the firm forwards on the rightholder assignment.
                if !agents.is_empty() && rng.chance(0.05) {
                    let pk = rng.pick(CLIENT_GRANT_PACKAGES).copied().unwrap_or("a-ordning");
                    self.sum.package_grants += 1;
                    self.emit(grant_package(org_id(o), org_id(f), pk))?;
                    let a = agents.get(rng.index(agents.len())).copied().unwrap_or(0);
                    self.delegate(o, f, a, "rettighetshaver", &[pk])?;
                }
                if rng.chance(0.03) {
                    let r = rng.pick(A2_FIRM_ROLES).copied().unwrap_or("a0237");
                    self.a2(org_id(o), org_id(f), r)?;
                }
            }
            if rng.chance(spec.revi)
                && let Some(k) = Self::firm_for(aud, &mut rng, o)
            {
                let f = aud.orgs.get(k).copied().unwrap_or(0);
                self.register(org_id(o), org_id(f), "revisor")?;
                if let Some(c) = aud.clients.get_mut(k) {
                    *c += 1;
                }
                let agents = aud.agents_of(k).to_vec();
                if !agents.is_empty() && rng.chance(0.8) {
                    let a = agents.get(rng.index(agents.len())).copied().unwrap_or(0);
                    let set = rng.pick(REVI_PACKAGE_SETS).copied().unwrap_or(&[]);
                    self.delegate(o, f, a, "revisor", set)?;
                }
            }
            if rng.chance(spec.ffor)
                && let Some(k) = Self::firm_for(mgr, &mut rng, o)
            {
                let f = mgr.orgs.get(k).copied().unwrap_or(0);
                self.register(org_id(o), org_id(f), "forretningsforer")?;
                if let Some(c) = mgr.clients.get_mut(k) {
                    *c += 1;
                }
            }
            self.progress.inc(1);
        }
        Ok(())
    }

    fn a2(&mut self, from: String, to: String, role: &'static str) -> Result<(), E> {
        *self.sum.a2_roles.entry(role).or_default() += 1;
        self.emit(Event::A2Role(RoleEvent {
            from,
            to,
            role: role.to_string(),
        }))
    }

    /// Rightholder grants from organisations: packages to persons (sometimes the main
    /// administrator package), resource grants and instance grants.
    fn grants_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(8);
        let n = self.org_type.len() as u32;
        let main = self.n_main();
        self.progress.phase("grants", u64::from(n));
        for o in 0..n {
            let rate = if o < main {
                self.spec_of(o).map_or(0.1, |s| s.grants)
            } else {
                0.1
            };
            if !rng.chance(rate) {
                self.progress.inc(1);
                continue;
            }
            if o < main && rng.chance(0.1) {
                let p = self.some_person(&mut rng);
                self.sum.package_grants += 1;
                self.emit(grant_package(org_id(o), person_id(p), "hovedadministrator"))?;
            }
            // Large employers hand out packages to many employees.
            let big = o < main
                && matches!(
                    self.type_of(o),
                    "ASA" | "STAT" | "KOMM" | "FYLK" | "SF" | "KF" | "IKS" | "PK"
                );
            let recipients = if big {
                10 + rng.below(150) as usize
            } else {
                1 + rng.count(&[40, 22, 13, 9, 6, 4, 3, 2, 1])
            };
            for _ in 0..recipients {
                let to = self.some_person(&mut rng);
                for _ in 0..1 + rng.count(&[45, 30, 15, 10]) {
                    let pk = if rng.chance(0.8) {
                        rng.pick(&self.popular)
                    } else {
                        rng.pick(&self.assignable_org)
                    }
                    .copied()
                    .unwrap_or("a-ordning");
                    self.sum.package_grants += 1;
                    self.emit(grant_package(org_id(o), person_id(to), pk))?;
                }
            }
            if !self.resources.is_empty() && rng.chance(0.25) {
                let to = self.some_person(&mut rng);
                let (res, acts) = self
                    .resources
                    .get(rng.index(self.resources.len()))
                    .cloned()
                    .unwrap_or_default();
                let actions = self.some_actions(&mut rng, &acts);
                self.sum.resource_grants += 1;
                self.emit(Event::Grant(GrantEvent {
                    from: org_id(o),
                    to: person_id(to),
                    package: None,
                    resource: Some(res),
                    instance: None,
                    actions: Some(actions),
                    by: None,
                    cascade: None,
                }))?;
            }
            if !self.resources.is_empty() && rng.chance(0.12) {
                let to = self.some_person(&mut rng);
                let (res, acts) = self
                    .resources
                    .get(rng.index(self.resources.len()))
                    .cloned()
                    .unwrap_or_default();
                let actions = self.some_actions(&mut rng, &acts);
                let instance = format!(
                    "{}/{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                    60_000_000 + u64::from(o),
                    rng.next_u64() as u32,
                    rng.below(0x1_0000),
                    rng.below(0x1000),
                    rng.below(0x1000),
                    rng.next_u64() >> 16
                );
                self.sum.instance_grants += 1;
                self.emit(Event::Grant(GrantEvent {
                    from: org_id(o),
                    to: person_id(to),
                    package: None,
                    resource: Some(res),
                    instance: Some(instance),
                    actions: Some(actions),
                    by: None,
                    cascade: None,
                }))?;
            }
            self.progress.inc(1);
        }
        Ok(())
    }

    /// A non-empty subset of a resource's actions.
    fn some_actions(&self, rng: &mut Rng, acts: &[&'static str]) -> Vec<String> {
        let mut out: Vec<String> = acts
            .iter()
            .filter(|_| rng.chance(0.5))
            .map(|a| a.to_string())
            .collect();
        if out.is_empty() {
            out.push(rng.pick(acts).copied().unwrap_or("read").to_string());
        }
        out
    }

    /// Persons granting citizen packages to another person (a spouse, a grown child).
    fn person_grants_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(9);
        let n = self.n_persons();
        self.progress.phase("person grants", u64::from(n));
        if n < 2 {
            return Ok(());
        }
        for i in 0..n {
            if rng.chance(self.p.person_grant_rate) {
                let mut to = rng.below(u64::from(n)) as u32;
                if to == i {
                    to = (to + 1) % n;
                }
                for _ in 0..1 + rng.count(&[60, 30, 10]) {
                    let pk = rng
                        .pick(&self.citizen)
                        .copied()
                        .unwrap_or("innbygger-skatteforhold-privatpersoner");
                    self.sum.package_grants += 1;
                    self.emit(grant_package(person_id(i), person_id(to), pk))?;
                }
            }
            self.progress.inc(1);
        }
        Ok(())
    }

    /// Altinn 2 roles organisations had given persons before the migration.
    fn a2_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(10);
        let n = self.n_main();
        self.progress.phase("altinn 2 roles", u64::from(n));
        for o in 0..n {
            if rng.chance(0.08) {
                for _ in 0..1 + rng.count(&[70, 20, 10]) {
                    let p = self.some_person(&mut rng);
                    let r = rng.pick(A2_PERSON_ROLES).copied().unwrap_or("utinn");
                    self.a2(org_id(o), person_id(p), r)?;
                }
            }
            self.progress.inc(1);
        }
        Ok(())
    }

    /// Guardianships from the guardianship register: ward → guardian, with the CRA
    /// roles of the mandate.
    fn guardianship_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(11);
        let n = self.n_persons();
        let wards = ((f64::from(n) * self.p.guardianship_rate) as u64).min(u64::from(n));
        self.progress.phase("guardianships", wards);
        if n < 2 || self.cra_roles.is_empty() {
            return Ok(());
        }
        for _ in 0..wards {
            let ward = rng.below(u64::from(n)) as u32;
            let mut guardian = self.some_person(&mut rng);
            if guardian == ward {
                guardian = (guardian + 1) % n;
            }
            self.sum.guardianships += 1;
            for _ in 0..1 + rng.count(&[30, 30, 25, 15]) {
                let r = rng.pick(&self.cra_roles).copied().unwrap_or("nav-arbeid");
                self.register(person_id(ward), person_id(guardian), r)?;
            }
            self.progress.inc(1);
        }
        Ok(())
    }

    /// Hook for standard and agent system users (vendor systems, requests, client
    /// lists). Not generated yet: system-user events are not in the engine's vocabulary.
    fn system_users(&mut self) -> Result<(), E> {
        Ok(())
    }

    /// Consumers of consents (banks and lenders, by rank: clients pick them by a Zipf
    /// law) and operators that handle consents for them: distinct limited companies.
    fn consent_orgs(&self, rng: &mut Rng) -> (Vec<u32>, Vec<u32>) {
        let main = self.n_main();
        let consumers = (self.p.orgs / 20_000).max(3) as usize;
        let operators = (self.p.orgs / 100_000).max(1) as usize;
        let want = (consumers + operators).min(main as usize);
        let mut chosen: Vec<u32> = Vec::with_capacity(want);
        let mut tries = 0u64;
        while chosen.len() < want && main > 0 {
            tries += 1;
            let o = rng.below(u64::from(main)) as u32;
            let relaxed = tries > 10_000;
            if (relaxed || matches!(self.type_of(o), "ASA" | "AS" | "SA")) && !chosen.contains(&o) {
                chosen.push(o);
            }
        }
        let ops = chosen.split_off(consumers.min(chosen.len()));
        (chosen, ops)
    }

    /// Consent (domain.md §9): the consent resources, then `p.consents` requests from
    /// persons and organisations to consumers, answered, revoked and used through the
    /// ordinary events while the engine clock moves through [`CONSENT_DAYS`] days, one
    /// hour at a time. Revocations and uses come within 14 days of the answer (and so
    /// within the consent's 30 days or more).
    fn consents_phase(&mut self) -> Result<(), E> {
        let n = self.p.consents;
        if n == 0 {
            return Ok(());
        }
        self.progress.phase("consents", n);
        if self.n_persons() == 0 || self.n_main() < 2 {
            return Ok(());
        }
        for r in CONSENT_RESOURCES {
            self.emit(Event::Resource(ResourceEvent {
                id: r.id.to_string(),
                owner: Some(r.owner.to_string()),
                delegable: None,
                rules: r
                    .rules
                    .iter()
                    .map(|(actions, any_of)| RuleSpec {
                        actions: actions.iter().map(|a| a.to_string()).collect(),
                        any_of: any_of.iter().map(|t| t.to_string()).collect(),
                    })
                    .collect(),
                access_lists: None,
                access_list_mode: None,
                kind: Some(crate::event::ResourceKind::Consent),
                one_time: r.one_time.then_some(true),
                scopes: None,
            }))?;
        }
        let (consumers, operators) = self.consent_orgs(&mut self.rng(14));
        let Ok(start) = chrono::DateTime::parse_from_rfc3339(START_CLOCK) else {
            return Ok(());
        };
        let steps = CONSENT_DAYS * 24;
        let hour = |step: u64| start + chrono::Duration::hours(step as i64);
        let mut cx = ConsentCx {
            pick: Weighted::zipf(consumers.len(), 1.0),
            consumers,
            operators,
            end: hour((n - 1) * steps / n),
            later: BTreeMap::new(),
        };
        let mut rng = self.rng(13);
        let mut at_step = 0;
        for i in 0..n {
            let step = i * steps / n;
            if step != at_step {
                // What falls due up to the next hour happens before the clock moves on:
                // after the answer and before it is due (so before `valid_to`).
                while let Some(entry) = cx.later.first_entry() {
                    if *entry.key() > step {
                        break;
                    }
                    for ev in entry.remove() {
                        self.emit(ev)?;
                    }
                }
                at_step = step;
                self.emit(Event::Clock(ClockEvent {
                    now: hour(step).to_rfc3339(),
                    forward_only: None,
                }))?;
            }
            self.consent(&mut rng, &mut cx, i, step, hour(step))?;
            self.progress.inc(1);
        }
        // What falls due after the last hour happens at it (before it is due).
        for (_, evs) in std::mem::take(&mut cx.later) {
            for ev in evs {
                self.emit(ev)?;
            }
        }
        Ok(())
    }

    /// One consent request at `now` (hour `step` of the consent phase) and what becomes
    /// of it.
    fn consent(
        &mut self,
        rng: &mut Rng,
        cx: &mut ConsentCx,
        i: u64,
        step: u64,
        now: chrono::DateTime<chrono::FixedOffset>,
    ) -> Result<(), E> {
        let k = cx.pick.sample(rng);
        let to = cx.consumers.get(k).copied().unwrap_or(0);
        let handled_by = if rng.chance(0.2) {
            rng.pick(&cx.operators).copied()
        } else {
            None
        };
        // Who is asked: mostly a person, sometimes an organisation with a managing
        // director (who answers for it).
        let mut org_from = None;
        if rng.chance(0.15) {
            for _ in 0..8 {
                let o = rng.below(u64::from(self.n_main())) as u32;
                let ceo = self.org_ceo.get(o as usize).copied().unwrap_or(NONE);
                if ceo != NONE && o != to && Some(o) != handled_by {
                    org_from = Some((o, ceo));
                    break;
                }
            }
        }
        let (from, answerer) = match org_from {
            Some((o, ceo)) => (org_id(o), person_id(ceo)),
            None => {
                let p = person_id(rng.below(u64::from(self.n_persons())) as u32);
                (p.clone(), p)
            }
        };
        let required_delegator = (org_from.is_some() && rng.chance(0.5)).then(|| answerer.clone());
        // What is asked: the one-time credit check alone, or one or two others.
        let one_time = rng.chance(0.12);
        let candidates: Vec<&ConsentRes> = CONSENT_RESOURCES
            .iter()
            .filter(|r| r.one_time == one_time && (org_from.is_none() || r.for_orgs))
            .collect();
        let mut rights: Vec<ConsentRightSpec> = Vec::new();
        for _ in 0..if rng.chance(0.3) { 2 } else { 1 } {
            let Some(r) = rng.pick(&candidates) else { break };
            if rights.iter().any(|x| x.resource == r.id) {
                continue;
            }
            let named: Vec<&str> = r.rules.iter().flat_map(|(a, _)| a.iter().copied()).collect();
            let mut actions: Vec<String> = named
                .iter()
                .filter(|_| rng.chance(0.6))
                .map(|a| a.to_string())
                .collect();
            if actions.is_empty() {
                actions.push(named.first().copied().unwrap_or("consent").to_string());
            }
            rights.push(ConsentRightSpec {
                resource: r.id.to_string(),
                actions,
            });
        }
        // Most run 30 days to two years; one in ten only a few days.
        let short = rng.chance(0.1);
        let valid_to = if short {
            now + chrono::Duration::hours(24 + rng.below(20 * 24) as i64)
        } else {
            now + chrono::Duration::days(30 + rng.below(700) as i64)
        };
        let id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{i:012x}",
            rng.next_u64() as u32,
            rng.below(0x1_0000),
            rng.below(0x1000),
            0x8000 | rng.below(0x4000)
        );
        let holder = match handled_by {
            Some(h) if rng.chance(0.5) => org_id(h),
            _ => org_id(to),
        };
        self.emit(Event::ConsentRequest(ConsentRequestEvent {
            id: id.clone(),
            from,
            to: org_id(to),
            handled_by: handled_by.map(org_id),
            required_delegator,
            rights,
            valid_to: valid_to.to_rfc3339(),
        }))?;
        let by = self.p.with_actor.then_some(answerer);
        let answer = |consent: &str| ConsentActionEvent {
            consent: consent.to_string(),
            by: by.clone(),
        };
        let u = rng.unit();
        let stored = if u < 0.06 {
            "created"
        } else if u < 0.13 {
            self.emit(Event::RejectConsent(answer(&id)))?;
            "rejected"
        } else {
            self.emit(Event::AcceptConsent(answer(&id)))?;
            let v = rng.unit();
            let mut later = |ev: Event, rng: &mut Rng| {
                let due = step + 1 + rng.below(14 * 24);
                cx.later.entry(due).or_default().push(ev);
            };
            let use_it = || {
                Event::UseConsent(UseConsentEvent {
                    consent: id.clone(),
                    by: holder.clone(),
                })
            };
            if short {
                "accepted"
            } else if v < 0.1 {
                later(Event::RevokeConsent(answer(&id)), rng);
                "revoked"
            } else if one_time && v < 0.7 {
                later(use_it(), rng);
                "used"
            } else if !one_time && v < 0.3 {
                // An ordinary consent stays accepted when used (once or twice).
                for _ in 0..1 + rng.below(2) {
                    later(use_it(), rng);
                }
                "accepted"
            } else {
                "accepted"
            }
        };
        let reported = match stored {
            "created" | "accepted" if cx.end > valid_to => "expired",
            s => s,
        };
        *self.sum.consents.entry(reported).or_default() += 1;
        Ok(())
    }

    fn deaths_phase(&mut self) -> Result<(), E> {
        let mut rng = self.rng(12);
        let n = self.n_persons();
        let k = (f64::from(n) * self.p.death_rate) as u64;
        self.progress.phase("deaths", k);
        for _ in 0..k {
            let p = rng.below(u64::from(n)) as u32;
            self.sum.deaths += 1;
            self.emit(Event::Died(DiedEvent { person: person_id(p) }))?;
            self.progress.inc(1);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::mutate;
    use crate::world::World;

    fn small(seed: u64) -> Params {
        let mut p = Params::for_scale(Scale::Small);
        p.seed = seed;
        p
    }

    #[test]
    fn same_seed_same_stream() {
        let a = generate_vec(&small(7));
        let b = generate_vec(&small(7));
        assert!(!a.is_empty());
        assert_eq!(a, b);
        let c = generate_vec(&small(8));
        assert_ne!(a, c, "another seed gives another world");
    }

    #[test]
    fn small_worlds_apply_without_refusals() {
        for seed in [1, 2, 3] {
            let mut w = World::new();
            let mut refused = Vec::new();
            let summary = generate(&small(seed), &mut NoProgress, |ev| {
                if let Err(e) = mutate::apply(&mut w, &ev) {
                    refused.push(format!("{e:?} {ev:?}"));
                }
                Ok::<(), std::convert::Infallible>(())
            })
            .unwrap();
            assert!(
                refused.is_empty(),
                "seed {seed}: {} refused, first: {}",
                refused.len(),
                refused[0]
            );
            assert_eq!(w.graph.party_count() as u64, 1_000 + 250 + 60);
            // Every kind the brief asks for is there.
            for kind in [
                "party",
                "register_role",
                "a2_role",
                "resource",
                "grant",
                "add_agent",
                "delegate",
                "died",
            ] {
                assert!(
                    summary.events.get(kind).copied().unwrap_or(0) > 0,
                    "no `{kind}` events"
                );
            }
            assert!(summary.client_delegations > 0 && summary.resource_grants > 0);
            assert!(summary.instance_grants > 0 && summary.guardianships > 0);
            assert!(summary.sub_units.get("BEDR").copied().unwrap_or(0) > 0);
        }
    }

    fn with_consents(seed: u64, n: u64) -> Params {
        let mut p = small(seed);
        p.consents = n;
        p
    }

    #[test]
    fn consents_apply_without_refusals_and_reach_every_status() {
        for seed in [1, 2] {
            let mut w = World::new();
            let mut refused = Vec::new();
            let summary = generate(&with_consents(seed, 3_000), &mut NoProgress, |ev| {
                if let Err(e) = mutate::apply(&mut w, &ev) {
                    refused.push(format!("{e:?} {ev:?}"));
                }
                Ok::<(), std::convert::Infallible>(())
            })
            .unwrap();
            assert!(
                refused.is_empty(),
                "seed {seed}: {} refused, first: {}",
                refused.len(),
                refused[0]
            );
            assert_eq!(w.consent.len(), 3_000);
            // The engine reports the status the generator meant for every consent.
            let mut reported: BTreeMap<&str, u64> = BTreeMap::new();
            for c in w.consent.consents.values() {
                *reported
                    .entry(crate::consent::status(&w, c).as_str())
                    .or_default() += 1;
            }
            assert_eq!(reported, summary.consents);
            for s in ["created", "accepted", "rejected", "revoked", "used", "expired"] {
                assert!(
                    reported.get(s).copied().unwrap_or(0) > 0,
                    "no {s} consent: {reported:?}"
                );
            }
            assert!(
                reported["accepted"] * 2 > 3_000,
                "most are accepted: {reported:?}"
            );
            let cs: Vec<_> = w.consent.consents.values().collect();
            let org =
                |n: crate::graph::NodeId| w.graph.party(n).map(|p| p.kind) == Some(PartyKind::Organisation);
            assert!(cs.iter().any(|c| org(c.from) && c.required_delegator.is_some()));
            assert!(cs.iter().any(|c| org(c.from) && c.required_delegator.is_none()));
            assert!(cs.iter().any(|c| c.handled_by.is_some()));
            assert!(cs.iter().any(|c| c.one_time) && cs.iter().any(|c| c.rights.len() == 2));
            // Answers went through the acceptance check: they name who answered.
            assert!(
                cs.iter()
                    .all(|c| c.state != crate::consent::Status::Accepted || c.accepted_by.is_some())
            );
            // An ordinary consent used stays accepted, with its `used` entries.
            assert!(cs.iter().any(|c| {
                !c.one_time
                    && c.state == crate::consent::Status::Accepted
                    && c.entries.iter().any(|e| e.what == crate::consent::Status::Used)
            }));
        }
    }

    #[test]
    fn consents_leave_the_rest_of_the_world_alone() {
        let plain = generate_vec(&small(1));
        let with = generate_vec(&with_consents(1, 500));
        assert!(with.len() > plain.len() + 500);
        let consent_phase = |i: usize, e: &Event| match e {
            Event::ConsentRequest(_)
            | Event::AcceptConsent(_)
            | Event::RejectConsent(_)
            | Event::RevokeConsent(_)
            | Event::UseConsent(_) => true,
            Event::Resource(r) => r.kind == Some(crate::event::ResourceKind::Consent),
            Event::Clock(_) => i > 0,
            _ => false,
        };
        let rest: Vec<Event> = with
            .into_iter()
            .enumerate()
            .filter(|(i, e)| !consent_phase(*i, e))
            .map(|(_, e)| e)
            .collect();
        assert_eq!(rest, plain);
        assert_eq!(
            generate_vec(&with_consents(1, 500)),
            generate_vec(&with_consents(1, 500))
        );
    }

    #[test]
    fn firm_sizes_are_heavy_tailed() {
        let p = Params::sized(40_000, 10_000, 2_000, 50);
        let s = generate(&p, &mut NoProgress, |_| Ok::<(), std::convert::Infallible>(())).unwrap();
        let v = &s.accounting_clients;
        assert_eq!(v.len() as u64, p.accounting_firms);
        let max = v.iter().copied().max().unwrap();
        let med = median(v);
        assert!(max > 10 * med.max(1), "largest {max}, median {med}");
        // Most clients of the largest firm are delegated to agents.
        assert!(s.client_delegations > v.iter().sum::<u64>() / 2);
    }

    #[test]
    fn tables_name_catalogue_entries() {
        let c = Catalog::builtin();
        let packages = POPULAR_ORG_PACKAGES
            .iter()
            .chain(CLIENT_GRANT_PACKAGES)
            .chain(REGN_PACKAGE_SETS.iter().flat_map(|s| s.iter()))
            .chain(REVI_PACKAGE_SETS.iter().flat_map(|s| s.iter()));
        for p in packages {
            assert!(c.package_id(p).is_some(), "unknown package {p}");
        }
        for r in A2_PERSON_ROLES.iter().chain(A2_FIRM_ROLES) {
            let id = c.role_id(r).unwrap_or_else(|| panic!("unknown role {r}"));
            assert!(c.is_altinn2_role(id), "{r} is not an Altinn 2 role");
        }
        for t in POLICY_ROLE_TOKENS {
            assert!(mutate::parse_token(c, t).is_ok(), "bad token {t}");
        }
        for r in CONSENT_RESOURCES {
            for t in r.rules.iter().flat_map(|(_, any_of)| any_of.iter()) {
                assert!(mutate::parse_token(c, t).is_ok(), "bad token {t} in {}", r.id);
            }
        }
    }

    #[test]
    fn events_round_trip_as_json_lines() {
        for ev in generate_vec(&small(1)) {
            let line = serde_json::to_string(&ev).unwrap();
            assert!(!line.contains('\n'));
            let back = Event::from_json(serde_json::from_str(&line).unwrap()).unwrap();
            assert_eq!(back, ev);
        }
    }

    #[test]
    fn presets_match_norway_scale() {
        let p = Params::for_scale(Scale::Norway);
        assert_eq!(p.persons, 5_562_363);
        assert_eq!(p.orgs, 1_300_000);
        assert_eq!(p.sub_units, 300_000);
        assert_eq!(Params::for_scale(Scale::Medium).persons, 100_000);
    }

    #[test]
    fn rng_is_in_range_and_stable() {
        let mut r = Rng::new(42, 0);
        for n in [1u64, 2, 7, 1000] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
        let a: Vec<u64> = (0..4).map(|_| Rng::new(1, 2).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut z = Weighted::zipf(100, 1.0);
        let mut counts = [0u32; 100];
        for _ in 0..10_000 {
            counts[z.sample(&mut r)] += 1;
        }
        assert!(counts[0] > counts[50] * 10);
        z = Weighted::new([0.0, 1.0]);
        assert_eq!(z.sample(&mut r), 1);
    }
}
