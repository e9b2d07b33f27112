//! Side by side: delegraph against the status quo (PostgreSQL, Altinn-shaped tables,
//! queried with unions and joins) and against AWS Cedar (`cedar-policy`), on the same
//! generated world, in one run.
//!
//! Generates a world with a fixed seed, loads it into PostgreSQL (COPY) and into a Cedar
//! entity store, cross-checks the answers of all three on a deterministic sample (a
//! mismatch fails the run), then times each query kind and prints a ratio table.
//! Driven by `scripts/compare.sh`; built only with `--features compare`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use cedar_policy as cedar;
use clap::Parser;
use delegraph::catalog::{Catalog, PackageSet};
use delegraph::generate::{self, Params, Rng, Scale};
use delegraph::graph::{Edge, NodeId};
use delegraph::model::{PackageId, PartyKind, RoleId};
use delegraph::mutate;
use delegraph::resolve;
use delegraph::world::World;

#[derive(Parser, Debug)]
#[command(about = "delegraph vs PostgreSQL vs Cedar on one generated world")]
struct Args {
    /// World size preset.
    #[arg(long, value_enum, default_value = "small")]
    scale: Scale,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// libpq connection string of an empty PostgreSQL database (loopback only).
    #[arg(
        long,
        default_value = "host=127.0.0.1 port=54329 user=delegraph dbname=postgres"
    )]
    pg: String,
    /// Subjects per kind in the sample (ordinary persons, agents, CEOs of big firms).
    #[arg(long, default_value_t = 40)]
    subjects: usize,
    /// Timed iterations per query kind for the in-memory engines (delegraph, Cedar).
    #[arg(long, default_value_t = 20_000)]
    iters: usize,
    /// Timed iterations per query kind for PostgreSQL (each is a round trip).
    #[arg(long, default_value_t = 2_000)]
    pg_iters: usize,
    /// Write the result table (Markdown) here.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the latency-distribution plot (SVG) here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// PostgreSQL `plan_cache_mode` for the session: the queries are big unions whose
    /// planning costs more than their execution, so generic plans are the default.
    #[arg(long, default_value = "force_generic_plan")]
    plan_cache_mode: String,
    /// Print PostgreSQL's plans (EXPLAIN ANALYZE) for one subject of each kind and stop.
    #[arg(long)]
    explain: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !args.pg.contains("127.0.0.1") && !args.pg.contains("localhost") && !args.pg.contains("::1") {
        bail!("refusing a PostgreSQL target that is not loopback: {}", args.pg);
    }
    let mut params = Params::for_scale(args.scale);
    params.seed = args.seed;
    params.names = false;

    let t = Instant::now();
    let mut w = World::new();
    let mut refused = 0u64;
    generate::generate(&params, &mut generate::NoProgress, |e| {
        if mutate::apply(&mut w, &e).is_err() {
            refused += 1;
        }
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(|e| anyhow!("{e:?}"))?;
    eprintln!(
        "world: {:?} seed {}: {} parties, {} edges ({} events refused) in {:.1?}",
        args.scale,
        args.seed,
        w.graph.party_count(),
        w.graph.edge_count(),
        refused,
        t.elapsed()
    );

    let ex = Export::of(&w)?;
    let sample = Sample::pick(&w, &ex, args.subjects, args.seed);
    eprintln!(
        "sample: {} persons, {} agents, {} CEOs of big firms (largest has {} REGN clients), {} checks",
        sample.persons.len(),
        sample.agents.len(),
        sample.ceos.len(),
        sample.largest_firm_clients,
        sample.checks.len()
    );

    // PostgreSQL: load.
    let mut pg = postgres::Client::connect(&args.pg, postgres::NoTls)
        .with_context(|| format!("connecting to PostgreSQL at {}", args.pg))?;
    let t = Instant::now();
    ex.load_pg(&mut pg)?;
    eprintln!("postgres: loaded and indexed in {:.1?}", t.elapsed());
    pg.batch_execute(&format!("SET plan_cache_mode = {}", args.plan_cache_mode))?;
    let sql = Sql::prepare(&mut pg, &w)?;

    // Cedar: entities and policies.
    let t = Instant::now();
    let principals: Vec<NodeId> = sample
        .persons
        .iter()
        .chain(&sample.agents)
        .chain(&sample.ceos)
        .copied()
        .collect();
    let resources: Vec<NodeId> = sample
        .checks
        .iter()
        .map(|c| c.1)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let ced = CedarPeer::build(&w, false, &principals, &resources)?;
    eprintln!(
        "cedar (RolePackage as policies): {} entities in the sample's slice (of {} for the whole world), {} policies in {:.1?}",
        ced.entity_count,
        ced.total_entities,
        ced.policy_count,
        t.elapsed()
    );
    let t = Instant::now();
    let ced_h = CedarPeer::build(&w, true, &principals, &resources)?;
    eprintln!(
        "cedar (RolePackage folded into the hierarchy): {} entities in the sample's slice, {} policies in {:.1?}",
        ced_h.entity_count,
        ced_h.policy_count,
        t.elapsed()
    );

    if args.explain {
        for x in [sample.persons.first(), sample.agents.first(), sample.ceos.first()]
            .into_iter()
            .flatten()
        {
            let f = sample.checks.iter().find(|c| c.0 == *x).map_or(*x, |c| c.1);
            for (q, params) in [
                (&sql.parties_text, vec![ex.id_of[x].to_string()]),
                (
                    &sql.check_text,
                    vec![ex.id_of[x].to_string(), ex.id_of[&f].to_string(), "1".into()],
                ),
            ] {
                let mut text = q.clone();
                for (i, v) in params.iter().enumerate().rev() {
                    text = text.replace(&format!("${}", i + 1), v);
                }
                println!("--- {} ---", w.graph.ext_id(*x));
                for row in pg.query(&format!("EXPLAIN (ANALYZE, BUFFERS) {text}"), &[])? {
                    let line: String = row.get(0);
                    println!("{line}");
                }
            }
        }
        return Ok(());
    }

    // Cross-check before any timing.
    cross_check(&w, &ex, &sample, &mut pg, &sql, &[&ced, &ced_h])?;

    // Timing.
    let mut results: Vec<KindResult> = Vec::new();
    let c = w.catalog;
    {
        let checks = &sample.checks;
        let n = checks.len();
        let mut k = KindResult::new("check package (X, F, p)", n);
        k.delegraph = Some(time(args.iters, |i| {
            let (x, f, p) = checks[i % n];
            std::hint::black_box(resolve::has_package(&w, x, f, p));
        }));
        k.cedar = Some(time(args.iters, |i| {
            let (x, f, p) = checks[i % n];
            std::hint::black_box(ced.check(&w, x, f, p, c));
        }));
        k.cedar_h = Some(time(args.iters, |i| {
            let (x, f, p) = checks[i % n];
            std::hint::black_box(ced_h.check(&w, x, f, p, c));
        }));
        let mut err = None;
        k.postgres = Some(time(args.pg_iters, |i| {
            let (x, f, p) = checks[i % n];
            if let Err(e) = sql.check(&mut pg, &ex, x, f, p) {
                err.get_or_insert(e);
            }
        }));
        if let Some(e) = err {
            return Err(e);
        }
        results.push(k);
    }
    for (name, subjects, scale_down) in [
        ("authorized parties, ordinary person", &sample.persons, 1),
        (
            "authorized parties, agent of an accounting firm",
            &sample.agents,
            1,
        ),
        (
            "authorized parties, CEO of a big accounting firm",
            &sample.ceos,
            20,
        ),
    ] {
        if subjects.is_empty() {
            continue;
        }
        let n = subjects.len();
        let mut k = KindResult::new(name, n);
        k.delegraph = Some(time((args.iters / scale_down).max(50), |i| {
            std::hint::black_box(resolve::authorized_parties(&w, subjects[i % n]));
        }));
        let mut err = None;
        k.postgres = Some(time((args.pg_iters / scale_down / 2).max(20), |i| {
            if let Err(e) = sql.authorized_parties(&mut pg, &ex, subjects[i % n]) {
                err.get_or_insert(e);
            }
        }));
        if let Some(e) = err {
            return Err(e);
        }
        results.push(k);
    }

    let table = render_table(&args, &w, &sample, &results);
    println!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, render_svg(&args, &results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------
// Export: the world as Altinn-shaped rows with dense integer ids.

struct Export {
    /// Entity id (1-based) of each party node.
    id_of: HashMap<NodeId, i64>,
    node_of: Vec<NodeId>,
    entity: String,
    role: String,
    package: String,
    rolepackage: String,
    rolemap: String,
    assignment: String,
    assignmentpackage: String,
    resource: String,
    assignmentresource: String,
    delegation: String,
    delegationpackage: String,
    counts: BTreeMap<&'static str, u64>,
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "\\N".to_string(), |v| v.to_string())
}

impl Export {
    fn of(w: &World) -> Result<Export> {
        let c = w.catalog;
        let g = &w.graph;
        let mut ex = Export {
            id_of: HashMap::new(),
            node_of: Vec::new(),
            entity: String::new(),
            role: String::new(),
            package: String::new(),
            rolepackage: String::new(),
            rolemap: String::new(),
            assignment: String::new(),
            assignmentpackage: String::new(),
            resource: String::new(),
            assignmentresource: String::new(),
            delegation: String::new(),
            delegationpackage: String::new(),
            counts: BTreeMap::new(),
        };
        for (n, _) in g.parties() {
            ex.node_of.push(n);
            ex.id_of.insert(n, ex.node_of.len() as i64);
        }
        for (i, n) in ex.node_of.iter().enumerate() {
            let Some(p) = g.party(*n) else { continue };
            let kind = match p.kind {
                PartyKind::Person => "person",
                PartyKind::Organisation => "organisation",
                PartyKind::SystemUser => "system_user",
            };
            let parent = g.main_unit(*n).and_then(|m| ex.id_of.get(&m).copied());
            writeln!(
                ex.entity,
                "{}\t{}\t{}\t{}\t{}\t{}",
                i + 1,
                p.id,
                kind,
                opt(p.unit_type.as_deref().map(str::to_lowercase)),
                opt(parent),
                p.alive
            )?;
        }
        for (i, r) in c.roles.iter().enumerate() {
            writeln!(ex.role, "{i}\t{}\t{}", r.code, r.is_key_role)?;
        }
        for (i, p) in c.packages.iter().enumerate() {
            writeln!(ex.package, "{i}\t{}", p.code)?;
        }
        for (i, r) in c.role_packages.iter().enumerate() {
            writeln!(
                ex.rolepackage,
                "{i}\t{}\t{}\t{}\t{}\t{}",
                r.role.0,
                r.package.0,
                opt(r.unit_type.as_deref().map(str::to_lowercase)),
                r.has_access,
                r.can_delegate
            )?;
        }
        for (has, gets) in &c.role_map {
            writeln!(ex.rolemap, "{}\t{}", has.0, gets.0)?;
        }
        let mut res_id: HashMap<NodeId, i64> = HashMap::new();
        for (n, r) in g.resources() {
            let id = res_id.len() as i64 + 1;
            res_id.insert(n, id);
            writeln!(ex.resource, "{id}\t{}", r.id)?;
        }
        // Assignments first (delegations point at them).
        let mut asg_id: HashMap<(NodeId, NodeId, RoleId), i64> = HashMap::new();
        let mut next = 0i64;
        for from in &ex.node_of {
            for (_, to, e) in g.outgoing(*from) {
                let Edge::Assignment(a) = e else { continue };
                next += 1;
                asg_id.insert((*from, to, a.role), next);
                writeln!(
                    ex.assignment,
                    "{next}\t{}\t{}\t{}",
                    ex.id_of[from], ex.id_of[&to], a.role.0
                )?;
                for p in a.packages.iter() {
                    writeln!(ex.assignmentpackage, "{next}\t{}", p.0)?;
                }
                for (r, acts) in &a.resources {
                    if let Some(rid) = res_id.get(r) {
                        for act in acts {
                            writeln!(ex.assignmentresource, "{next}\t{rid}\t{act}")?;
                        }
                    }
                }
            }
        }
        ex.counts.insert("assignment", next as u64);
        let mut dn = 0i64;
        for client in &ex.node_of {
            for (_, agent, e) in g.outgoing(*client) {
                let Edge::Delegation(d) = e else { continue };
                let from_a = asg_id.get(&(*client, d.facilitator, d.role));
                let to_a = asg_id.get(&(d.facilitator, agent, c.known.agent));
                let (Some(fa), Some(ta)) = (from_a, to_a) else {
                    bail!(
                        "delegation {} → {} via {} has no client or agent assignment",
                        g.ext_id(*client),
                        g.ext_id(agent),
                        g.ext_id(d.facilitator)
                    );
                };
                dn += 1;
                writeln!(ex.delegation, "{dn}\t{fa}\t{ta}\t{}", ex.id_of[&d.facilitator])?;
                for p in d.packages.iter() {
                    writeln!(ex.delegationpackage, "{dn}\t{}", p.0)?;
                }
            }
        }
        ex.counts.insert("delegation", dn as u64);
        ex.counts.insert("entity", ex.node_of.len() as u64);
        Ok(ex)
    }

    fn load_pg(&self, pg: &mut postgres::Client) -> Result<()> {
        pg.batch_execute(SCHEMA)?;
        for (table, data) in [
            ("entity", &self.entity),
            ("role", &self.role),
            ("package", &self.package),
            ("rolepackage", &self.rolepackage),
            ("rolemap", &self.rolemap),
            ("resource", &self.resource),
            ("assignment", &self.assignment),
            ("assignmentpackage", &self.assignmentpackage),
            ("assignmentresource", &self.assignmentresource),
            ("delegation", &self.delegation),
            ("delegationpackage", &self.delegationpackage),
        ] {
            let mut w = pg.copy_in(&format!("COPY {table} FROM STDIN"))?;
            w.write_all(data.as_bytes())?;
            w.finish().with_context(|| format!("COPY {table}"))?;
        }
        pg.batch_execute(INDEXES)?;
        Ok(())
    }
}

/// Altinn's table shapes (dbo.entity, dbo.assignment, ...), with integer keys.
const SCHEMA: &str = "
DROP TABLE IF EXISTS delegationpackage, delegation, assignmentresource, assignmentpackage,
  assignment, resource, rolemap, rolepackage, package, role, entity CASCADE;
CREATE TABLE entity (
  id bigint PRIMARY KEY, ext text NOT NULL, kind text NOT NULL,
  variant text, parent_id bigint, alive boolean NOT NULL);
CREATE TABLE role (id int PRIMARY KEY, code text NOT NULL, is_key_role boolean NOT NULL);
CREATE TABLE package (id int PRIMARY KEY, code text NOT NULL);
CREATE TABLE rolepackage (
  id int PRIMARY KEY, role_id int NOT NULL, package_id int NOT NULL,
  variant text, has_access boolean NOT NULL, can_delegate boolean NOT NULL);
CREATE TABLE rolemap (has_role_id int NOT NULL, get_role_id int NOT NULL);
CREATE TABLE resource (id bigint PRIMARY KEY, ext text NOT NULL);
CREATE TABLE assignment (
  id bigint PRIMARY KEY, from_id bigint NOT NULL, to_id bigint NOT NULL, role_id int NOT NULL);
CREATE TABLE assignmentpackage (assignment_id bigint NOT NULL, package_id int NOT NULL);
CREATE TABLE assignmentresource (assignment_id bigint NOT NULL, resource_id bigint NOT NULL, action text NOT NULL);
CREATE TABLE delegation (
  id bigint PRIMARY KEY, from_assignment bigint NOT NULL, to_assignment bigint NOT NULL,
  facilitator_id bigint NOT NULL);
CREATE TABLE delegationpackage (delegation_id bigint NOT NULL, package_id int NOT NULL);
";

const INDEXES: &str = "
CREATE UNIQUE INDEX assignment_to_from_role ON assignment (to_id, from_id, role_id);
CREATE INDEX assignment_from_role ON assignment (from_id, role_id);
CREATE INDEX entity_parent ON entity (parent_id) WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX assignmentpackage_pk ON assignmentpackage (assignment_id, package_id);
CREATE INDEX assignmentresource_asg ON assignmentresource (assignment_id);
CREATE INDEX delegation_to ON delegation (to_assignment);
CREATE INDEX delegation_from ON delegation (from_assignment);
CREATE UNIQUE INDEX delegationpackage_pk ON delegationpackage (delegation_id, package_id);
CREATE INDEX rolepackage_role ON rolepackage (role_id, package_id) WHERE has_access;
CREATE INDEX rolemap_has ON rolemap (has_role_id);
ANALYZE;
";

// ------------------------------------------------------------------------------------
// The SQL: the bounded paths of domain.md §4 as unions and joins.

struct Sql {
    check: postgres::Statement,
    parties: postgres::Statement,
    check_text: String,
    parties_text: String,
}

fn id_list(ids: impl IntoIterator<Item = RoleId>) -> String {
    let v: Vec<String> = ids.into_iter().map(|r| r.0.to_string()).collect();
    if v.is_empty() { "-1".into() } else { v.join(", ") }
}

/// The records CTEs for subject `$1`. With `givers`, the direct, key-role and delegation
/// paths only start at the parties in the CTE `givers` (the target, its main unit, the
/// ENKs it owns), which is how the check narrows the search.
fn records_sql(c: &Catalog, restrict: bool) -> String {
    let k = &c.known;
    let structural = id_list([k.hovedenhet, k.ikke_naeringsdrivende_hovedenhet, k.supplier]);
    let owner_roles = id_list(
        (0..c.roles.len())
            .filter_map(|i| u16::try_from(i).ok().map(RoleId))
            .filter(|r| c.is_owner_rule_role(*r)),
    );
    let dtpr = k.deltaker_delt_ansvar.0;
    let pp = k.privatperson.0;
    let agent = k.agent.0;
    let inn = k.innehaver.0;
    let only = |col: &str| {
        if restrict {
            format!("AND {col} IN (SELECT id FROM givers)")
        } else {
            String::new()
        }
    };
    let givers = if restrict {
        format!(
            "givers AS (
  SELECT $2::bigint AS id
  UNION ALL SELECT e.parent_id FROM entity e WHERE e.id = $2 AND e.parent_id IS NOT NULL
  UNION ALL SELECT o.from_id FROM assignment o
    JOIN entity enk ON enk.id = o.from_id AND enk.variant = 'enk'
    JOIN entity me ON me.id = o.to_id AND me.kind = 'person' AND me.alive
    WHERE o.to_id = $2 AND o.role_id = {inn}
),"
        )
    } else {
        String::new()
    };
    format!(
        "WITH {givers}
base AS (
  -- 1. direct: F -> X
  SELECT a.from_id AS giver, a.role_id, a.id AS asg_id
  FROM assignment a
  WHERE a.to_id = $1 AND a.role_id NOT IN ({structural}) {only_a}
  UNION ALL
  -- 2. key role: F -> O, O -> X with a key role (one hop; IKS exception both ways)
  SELECT a.from_id, a.role_id, a.id
  FROM assignment k
  JOIN role kr ON kr.id = k.role_id AND kr.is_key_role
  JOIN entity o ON o.id = k.from_id
  JOIN assignment a ON a.to_id = k.from_id AND a.role_id NOT IN ({structural}) {only_a}
  JOIN entity f ON f.id = a.from_id
  WHERE k.to_id = $1
    AND NOT (k.role_id = {dtpr} AND o.variant IS NOT DISTINCT FROM 'iks')
    AND NOT (a.role_id = {dtpr} AND f.variant IS NOT DISTINCT FROM 'iks')
  UNION ALL
  -- the privatperson role every living person holds for themself
  SELECT e.id, {pp}, NULL::bigint FROM entity e
  WHERE e.id = $1 AND e.kind = 'person' AND e.alive {only_e}
),
recs AS (
  SELECT giver, role_id, asg_id, NULL::bigint AS dlg_id FROM base
  UNION ALL
  -- 3. RoleMap, once, on direct and key-role records
  SELECT b.giver, m.get_role_id, NULL::bigint, NULL::bigint
  FROM base b JOIN rolemap m ON m.has_role_id = b.role_id
  UNION ALL
  -- 4. client delegation: C -> F (client assignment), F -> X (agent), delegation
  SELECT ca.from_id, ca.role_id, NULL::bigint, d.id
  FROM assignment ta
  JOIN delegation d ON d.to_assignment = ta.id
  JOIN assignment ca ON ca.id = d.from_assignment {only_ca}
  WHERE ta.to_id = $1 AND ta.role_id = {agent}
),
expanded AS (
  SELECT r.giver AS party, r.giver AS ctx, r.role_id, r.asg_id, r.dlg_id FROM recs r
  UNION ALL
  -- 5. main unit -> sub-units (RolePackage variant evaluated at the sub-unit)
  SELECT s.id, s.id, r.role_id, r.asg_id, r.dlg_id
  FROM recs r JOIN entity s ON s.parent_id = r.giver
  UNION ALL
  -- 6. ENK -> its living owner, for accountant/auditor records
  SELECT o.to_id, r.giver, r.role_id, r.asg_id, r.dlg_id
  FROM recs r
  JOIN entity enk ON enk.id = r.giver AND enk.variant = 'enk'
  JOIN assignment o ON o.from_id = r.giver AND o.role_id = {inn}
  JOIN entity ow ON ow.id = o.to_id AND ow.kind = 'person' AND ow.alive
  WHERE r.role_id IN ({owner_roles})
)",
        only_a = only("a.from_id"),
        only_e = only("e.id"),
        only_ca = only("ca.from_id"),
    )
}

fn packages_lateral(c: &Catalog) -> String {
    let k = &c.known;
    let rightholder = id_list([k.rettighetshaver, k.appstyrt_rettighetshaver]);
    format!(
        "(
  SELECT ap.package_id FROM assignmentpackage ap
  WHERE x.role_id IN ({rightholder}) AND ap.assignment_id = x.asg_id
  UNION ALL
  SELECT dp.package_id FROM delegationpackage dp WHERE dp.delegation_id = x.dlg_id
  UNION ALL
  SELECT rp.package_id FROM rolepackage rp JOIN entity ce ON ce.id = x.ctx
  WHERE x.dlg_id IS NULL AND x.role_id NOT IN ({rightholder}) AND rp.role_id = x.role_id
    AND rp.has_access AND (rp.variant IS NULL OR rp.variant = ce.variant)
)"
    )
}

impl Sql {
    fn prepare(pg: &mut postgres::Client, w: &World) -> Result<Sql> {
        let c = w.catalog;
        let check = format!(
            "{}
SELECT EXISTS (
  SELECT 1 FROM expanded x
  WHERE x.party = $2 AND $3::int IN {}
)",
            records_sql(c, true),
            packages_lateral(c)
        );
        let parties = format!(
            "{}
SELECT DISTINCT x.party, pk.package_id
FROM expanded x LEFT JOIN LATERAL {} pk(package_id) ON true",
            records_sql(c, false),
            packages_lateral(c)
        );
        Ok(Sql {
            check: pg.prepare(&check).context("preparing the check query")?,
            parties: pg
                .prepare(&parties)
                .context("preparing the authorized-parties query")?,
            check_text: check,
            parties_text: parties,
        })
    }

    fn check(
        &self,
        pg: &mut postgres::Client,
        ex: &Export,
        x: NodeId,
        f: NodeId,
        p: PackageId,
    ) -> Result<bool> {
        let row = pg.query_one(&self.check, &[&ex.id_of[&x], &ex.id_of[&f], &i32::from(p.0)])?;
        Ok(row.get(0))
    }

    /// Every party `x` can act for, with the packages held there.
    fn authorized_parties(
        &self,
        pg: &mut postgres::Client,
        ex: &Export,
        x: NodeId,
    ) -> Result<BTreeMap<i64, BTreeSet<u16>>> {
        let mut out: BTreeMap<i64, BTreeSet<u16>> = BTreeMap::new();
        for row in pg.query(&self.parties, &[&ex.id_of[&x]])? {
            let party: i64 = row.get(0);
            let pkg: Option<i32> = row.get(1);
            let e = out.entry(party).or_default();
            if let Some(p) = pkg {
                e.insert(u16::try_from(p)?);
            }
        }
        Ok(out)
    }
}

fn engine_parties(w: &World, ex: &Export, x: NodeId) -> BTreeMap<i64, BTreeSet<u16>> {
    resolve::authorized_parties(w, x)
        .into_iter()
        .map(|ap| (ex.id_of[&ap.party], ap.packages.iter().map(|p| p.0).collect()))
        .collect()
}

// ------------------------------------------------------------------------------------
// Cedar: parties as entities, grants as parents, one policy per package.

/// Cedar's hierarchy is transitive, while §4 allows exactly one key-role hop and one
/// RoleMap step. So each path gets its own entity type and no chain can form:
///
/// * `Party::"X"` is in `RoleAt::"F|r"` (X holds r for F directly), in `KeyOf::"O"`
///   (X holds a key role on O), in `Asg::"n"` (a rightholder assignment to X) and in
///   `Dlg::"n"` (a client delegation to X).
/// * `KeyOf::"O"` is in whatever O received directly (`RoleAt`, `Asg`): one hop.
/// * `RoleAt::"F|r"` is in `Mapped::"F|g"` for RoleMap r → g, in `RoleAt::"S|r"` for each
///   sub-unit S of F, and (F an ENK, r REGN/REVI-like) in `PkgAt::"P|p"` for the owner P
///   with the packages r gives at the ENK.
/// * `Asg` and `Dlg` are in `PkgAt::"F|p"` for the packages they carry (and the same for
///   sub-units and, for delegations, the ENK owner).
///
/// The policy for package p then asks: is the principal in `PkgAt::"F|p"`, or in a role
/// group of F whose role gives p at F's unit type (RolePackage rows, one disjunct each)?
struct CedarPeer {
    entities: cedar::Entities,
    policies: cedar::PolicySet,
    authorizer: cedar::Authorizer,
    party_uid: HashMap<NodeId, cedar::EntityUid>,
    action_uid: Vec<cedar::EntityUid>,
    use_action: cedar::EntityUid,
    fold: bool,
    entity_count: usize,
    total_entities: usize,
    policy_count: usize,
}

fn uid(ty: &str, id: &str) -> Result<cedar::EntityUid> {
    Ok(cedar::EntityUid::from_type_name_and_id(
        cedar::EntityTypeName::from_str(ty).map_err(|e| anyhow!("entity type {ty}: {e}"))?,
        cedar::EntityId::new(id),
    ))
}

#[derive(Default)]
struct Node {
    parents: HashSet<String>,
}

#[derive(Default)]
struct CedarBuild {
    /// Entity (as "Type\u{0}id") → parents (same encoding).
    nodes: BTreeMap<String, Node>,
    /// Party ext id → role code → group entities (RoleAt / Mapped) that exist.
    roles: HashMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Party ext id → package code → PkgAt entity.
    pkgs: HashMap<String, BTreeMap<String, String>>,
}

fn key(ty: &str, id: &str) -> String {
    format!("{ty}\u{0}{id}")
}

impl CedarBuild {
    fn edge(&mut self, child: &str, parent: &str) {
        self.nodes.entry(parent.to_string()).or_default();
        self.nodes
            .entry(child.to_string())
            .or_default()
            .parents
            .insert(parent.to_string());
    }
    fn pkg_at(&mut self, party: &str, pkg: &str) -> String {
        let k = key("PkgAt", &format!("{party}|{pkg}"));
        self.pkgs
            .entry(party.to_string())
            .or_default()
            .insert(pkg.to_string(), k.clone());
        k
    }
    fn group(&mut self, ty: &str, party: &str, role: &str) -> String {
        let k = key(ty, &format!("{party}|{role}"));
        self.roles
            .entry(party.to_string())
            .or_default()
            .entry(role.to_string())
            .or_default()
            .insert(k.clone());
        k
    }
}

impl CedarPeer {
    /// With `fold`, RolePackage rows become hierarchy edges too (a role group is in
    /// `PkgAt::"F|p"` for each package its role gives at F's unit type) and one policy
    /// remains: `principal in resource`, asked with resource `PkgAt::"F|p"`.
    fn build(w: &World, fold: bool, principals: &[NodeId], resources: &[NodeId]) -> Result<CedarPeer> {
        let c = w.catalog;
        let g = &w.graph;
        let k = &c.known;
        let ext = |n: NodeId| g.ext_id(n).to_string();
        let is_enk = |n: NodeId| g.party(n).is_some_and(|p| p.is_unit_type("ENK"));
        let is_iks = |n: NodeId| g.party(n).is_some_and(|p| p.is_unit_type("IKS"));
        let unit = |n: NodeId| g.party(n).and_then(|p| p.unit_type.clone());
        let owners = |n: NodeId| -> Vec<NodeId> {
            if !is_enk(n) {
                return vec![];
            }
            g.outgoing(n)
                .filter_map(|(_, o, e)| match e {
                    Edge::Assignment(a)
                        if a.role == k.innehaver && g.party(o).is_some_and(|p| p.is_living_person()) =>
                    {
                        Some(o)
                    }
                    _ => None,
                })
                .collect()
        };
        let mut b = CedarBuild::default();
        // Parties on which someone holds a key role (the sources of key-role edges).
        let has_key_holders: HashSet<NodeId> = g
            .parties()
            .flat_map(|(n, _)| g.key_roles_held(n).map(|(_, o, _)| o).collect::<Vec<_>>())
            .collect();
        // Role groups: (party, role) → made once, with their RoleMap, sub-unit and owner edges.
        let mut made: HashSet<(NodeId, RoleId, bool)> = HashSet::new();
        let mut ensure_group = |b: &mut CedarBuild, f: NodeId, r: RoleId, mapped: bool| -> String {
            let ty = if mapped { "Mapped" } else { "RoleAt" };
            let me = b.group(ty, &ext(f), &c.role(r).code);
            if !made.insert((f, r, mapped)) {
                return me;
            }
            if !mapped {
                for gr in c.role_map_of(r) {
                    let m = b.group("Mapped", &ext(f), &c.role(*gr).code);
                    b.edge(&me, &m);
                    // The mapped group repeats like any other record.
                    for s in g.sub_units(f) {
                        let ms = b.group("Mapped", &ext(s), &c.role(*gr).code);
                        b.edge(&m, &ms);
                    }
                    if c.is_owner_rule_role(*gr) {
                        for o in owners(f) {
                            for p in c.role_packages(*gr, unit(f).as_deref()).iter() {
                                let pk = b.pkg_at(&ext(o), &c.package(p).code);
                                b.edge(&m, &pk);
                            }
                        }
                    }
                }
            }
            for s in g.sub_units(f) {
                let rs = b.group(ty, &ext(s), &c.role(r).code);
                b.edge(&me, &rs);
            }
            if c.is_owner_rule_role(r) {
                for o in owners(f) {
                    for p in c.role_packages(r, unit(f).as_deref()).iter() {
                        let pk = b.pkg_at(&ext(o), &c.package(p).code);
                        b.edge(&me, &pk);
                    }
                }
            }
            me
        };
        let explicit = |b: &mut CedarBuild, grant: &str, f: NodeId, pkgs: &PackageSet, owner_rule: bool| {
            let mut at = vec![f];
            at.extend(g.sub_units(f));
            if owner_rule {
                at.extend(owners(f));
            }
            for t in at {
                for p in pkgs.iter() {
                    let pk = b.pkg_at(&ext(t), &c.package(p).code);
                    b.edge(grant, &pk);
                }
            }
        };
        for (x, party) in g.parties() {
            let me = key("Party", &ext(x));
            b.nodes.entry(me.clone()).or_default();
            if party.is_living_person() {
                let grp = ensure_group(&mut b, x, k.privatperson, false);
                b.edge(&me, &grp);
            }
            for (e, f, edge) in g.incoming(x) {
                match edge {
                    Edge::Assignment(a) => {
                        if c.is_main_unit_link(a.role) || a.role == k.supplier {
                            continue;
                        }
                        let holder_key = has_key_holders.contains(&x).then(|| key("KeyOf", &ext(x)));
                        let iks_b = a.role == k.deltaker_delt_ansvar && is_iks(f);
                        let target = if c.is_rightholder(a.role) {
                            let grant = key("Asg", &format!("{e:?}"));
                            explicit(&mut b, &grant, f, &a.packages, false);
                            for gr in c.role_map_of(a.role) {
                                let m = ensure_group(&mut b, f, *gr, true);
                                b.edge(&grant, &m);
                            }
                            grant
                        } else {
                            ensure_group(&mut b, f, a.role, false)
                        };
                        b.edge(&me, &target);
                        if let Some(hk) = holder_key
                            && !iks_b
                        {
                            b.edge(&hk, &target);
                        }
                        if c.is_key_role(a.role) && !(a.role == k.deltaker_delt_ansvar && is_iks(f)) {
                            let kf = key("KeyOf", &ext(f));
                            b.edge(&me, &kf);
                        }
                    }
                    Edge::Delegation(d) => {
                        let grant = key("Dlg", &format!("{e:?}"));
                        explicit(&mut b, &grant, f, &d.packages, c.is_owner_rule_role(d.role));
                        b.edge(&me, &grant);
                    }
                    Edge::MainUnit(_) => {}
                }
            }
        }

        // The slice of the store the sampled requests need: the principals with all their
        // ancestors, and the resources. (The whole medium world as cedar-policy entities
        // outgrows this machine's memory; Cedar's own guidance is to pass the entities a
        // request needs, so this is how it would be deployed.)
        let total_entities = b.nodes.len();
        let mut keep: HashSet<String> = HashSet::new();
        let mut stack: Vec<String> = principals
            .iter()
            .chain(resources)
            .map(|n| key("Party", &ext(*n)))
            .collect();
        while let Some(k) = stack.pop() {
            if let Some(node) = b.nodes.get(&k)
                && keep.insert(k)
            {
                stack.extend(node.parents.iter().cloned());
            }
        }
        if fold {
            let groups: Vec<String> = keep
                .iter()
                .filter(|k| k.starts_with("RoleAt\u{0}") || k.starts_with("Mapped\u{0}"))
                .cloned()
                .collect();
            for gk in groups {
                let Some((_, id)) = gk.split_once('\u{0}') else {
                    continue;
                };
                let Some((party, code)) = id.split_once('|') else {
                    continue;
                };
                let (Some(n), Some(r)) = (g.party_node(party), c.role_id(code)) else {
                    continue;
                };
                for p in c.role_packages(r, unit(n).as_deref()).iter() {
                    let pk = b.pkg_at(party, &c.package(p).code);
                    b.edge(&gk, &pk);
                    keep.insert(pk);
                }
            }
        }

        // Entities.
        let mut ents = Vec::with_capacity(b.nodes.len());
        let split = |k: &str| -> Result<cedar::EntityUid> {
            let (ty, id) = k.split_once('\u{0}').ok_or_else(|| anyhow!("bad key"))?;
            uid(ty, id)
        };
        let mut party_uid = HashMap::new();
        for (n, p) in g.parties() {
            party_uid.insert(n, uid("Party", &p.id)?);
        }
        let party_nodes: HashMap<String, NodeId> = g.parties().map(|(n, p)| (p.id.clone(), n)).collect();
        for (kk, node) in &b.nodes {
            if !keep.contains(kk) {
                continue;
            }
            let u = split(kk)?;
            let parents: HashSet<cedar::EntityUid> =
                node.parents.iter().map(|p| split(p)).collect::<Result<_>>()?;
            let is_party = kk.starts_with("Party\u{0}");
            if !is_party {
                ents.push(cedar::Entity::new_no_attrs(u, parents));
                continue;
            }
            let id = &kk["Party\u{0}".len()..];
            let variant = party_nodes
                .get(id)
                .and_then(|n| unit(*n))
                .map(|v| v.to_lowercase())
                .unwrap_or_default();
            let mut roles = Vec::new();
            if let Some(rs) = b.roles.get(id) {
                for (code, groups) in rs {
                    let set: Vec<cedar::RestrictedExpression> = groups
                        .iter()
                        .map(|gk| split(gk).map(cedar::RestrictedExpression::new_entity_uid))
                        .collect::<Result<_>>()?;
                    roles.push((code.clone(), cedar::RestrictedExpression::new_set(set)));
                }
            }
            let mut pk = Vec::new();
            if let Some(ps) = b.pkgs.get(id) {
                for (code, pkk) in ps {
                    pk.push((
                        code.clone(),
                        cedar::RestrictedExpression::new_entity_uid(split(pkk)?),
                    ));
                }
            }
            let attrs = HashMap::from([
                (
                    "variant".to_string(),
                    cedar::RestrictedExpression::new_string(variant),
                ),
                (
                    "roles".to_string(),
                    cedar::RestrictedExpression::new_record(roles)?,
                ),
                ("pkgs".to_string(), cedar::RestrictedExpression::new_record(pk)?),
            ]);
            ents.push(cedar::Entity::new(u, attrs, parents)?);
        }
        let entity_count = ents.len();
        let entities = cedar::Entities::from_entities(ents, None)?;

        // Policies: one per package.
        let mut text = String::new();
        let mut policy_count = 0;
        let mut action_uid = Vec::new();
        for (i, p) in c.packages.iter().enumerate() {
            action_uid.push(uid("Action", &p.code)?);
            if fold {
                continue;
            }
            let pid = PackageId(u16::try_from(i)?);
            let mut terms = vec![format!(
                "(resource.pkgs has \"{0}\" && principal in resource.pkgs[\"{0}\"])",
                p.code
            )];
            for row in c
                .role_packages
                .iter()
                .filter(|r| r.package == pid && r.has_access)
            {
                let code = &c.role(row.role).code;
                let cond =
                    format!("resource.roles has \"{code}\" && principal in resource.roles[\"{code}\"]");
                match &row.unit_type {
                    None => terms.push(format!("({cond})")),
                    Some(v) => terms.push(format!(
                        "(resource.variant == \"{}\" && {cond})",
                        v.to_lowercase()
                    )),
                }
            }
            writeln!(
                text,
                "permit(principal, action == Action::\"{}\", resource) when {{\n  {}\n}};",
                p.code,
                terms.join("\n  || ")
            )?;
            policy_count += 1;
        }
        if fold {
            text = "permit(principal, action == Action::\"use\", resource) when { principal in resource };\n"
                .into();
            policy_count = 1;
        }
        let policies = cedar::PolicySet::from_str(&text).map_err(|e| anyhow!("cedar policies: {e}"))?;
        Ok(CedarPeer {
            entities,
            policies,
            authorizer: cedar::Authorizer::new(),
            party_uid,
            action_uid,
            use_action: uid("Action", "use")?,
            fold,
            entity_count,
            total_entities,
            policy_count,
        })
    }

    fn check(&self, w: &World, x: NodeId, f: NodeId, p: PackageId, c: &Catalog) -> bool {
        if self.fold {
            let Some(pu) = self.party_uid.get(&x) else {
                return false;
            };
            let Ok(res) = uid("PkgAt", &format!("{}|{}", w.graph.ext_id(f), c.package(p).code)) else {
                return false;
            };
            let Ok(req) = cedar::Request::new(
                pu.clone(),
                self.use_action.clone(),
                res,
                cedar::Context::empty(),
                None,
            ) else {
                return false;
            };
            return self
                .authorizer
                .is_authorized(&req, &self.policies, &self.entities)
                .decision()
                == cedar::Decision::Allow;
        }
        let (Some(pu), Some(fu), Some(au)) = (
            self.party_uid.get(&x),
            self.party_uid.get(&f),
            self.action_uid.get(usize::from(p.0)),
        ) else {
            return false;
        };
        let Ok(req) = cedar::Request::new(pu.clone(), au.clone(), fu.clone(), cedar::Context::empty(), None)
        else {
            return false;
        };
        self.authorizer
            .is_authorized(&req, &self.policies, &self.entities)
            .decision()
            == cedar::Decision::Allow
    }
}

// ------------------------------------------------------------------------------------
// The sample.

struct Sample {
    persons: Vec<NodeId>,
    agents: Vec<NodeId>,
    ceos: Vec<NodeId>,
    largest_firm_clients: usize,
    checks: Vec<(NodeId, NodeId, PackageId)>,
}

impl Sample {
    fn pick(w: &World, ex: &Export, per_kind: usize, seed: u64) -> Sample {
        let c = w.catalog;
        let g = &w.graph;
        let k = &c.known;
        let mut rng = Rng::new(seed, 0xC0FFEE);
        let regn = c.role_id("regnskapsforer");
        let dagl = c.role_id("daglig-leder");
        let mut persons_all = Vec::new();
        let mut agents_all = Vec::new();
        let mut firms: Vec<(usize, NodeId)> = Vec::new();
        for n in &ex.node_of {
            let Some(p) = g.party(*n) else { continue };
            match p.kind {
                PartyKind::Person if p.alive => {
                    if g.incoming(*n)
                        .any(|(_, _, e)| matches!(e, Edge::Assignment(a) if a.role == k.agent))
                    {
                        agents_all.push(*n);
                    } else {
                        persons_all.push(*n);
                    }
                }
                PartyKind::Organisation => {
                    let regn_clients = g
                        .incoming(*n)
                        .filter(|(_, _, e)| matches!(e, Edge::Assignment(a) if Some(a.role) == regn))
                        .count();
                    if regn_clients > 0 {
                        firms.push((regn_clients, *n));
                    }
                }
                _ => {}
            }
        }
        firms.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let largest_firm_clients = firms.first().map_or(0, |f| f.0);
        let mut ceos = Vec::new();
        for (_, f) in firms.iter().take(per_kind.min(5)) {
            for (_, to, e) in g.outgoing(*f) {
                if matches!(e, Edge::Assignment(a) if Some(a.role) == dagl) && !ceos.contains(&to) {
                    ceos.push(to);
                }
            }
        }
        let mut draw = |all: &[NodeId]| -> Vec<NodeId> {
            let mut out = Vec::new();
            if all.is_empty() {
                return out;
            }
            for _ in 0..per_kind.min(all.len()) {
                out.push(all[rng.index(all.len())]);
            }
            out
        };
        let persons = draw(&persons_all);
        let agents = draw(&agents_all);
        // Checks: for each subject, parties it can act for (with a held package and a
        // random package) and a random party (mostly a no).
        let mut checks = Vec::new();
        let npk = c.packages.len();
        for x in persons.iter().chain(&agents).chain(&ceos) {
            let aps = resolve::authorized_parties(w, *x);
            for _ in 0..4 {
                if aps.is_empty() {
                    break;
                }
                let ap = &aps[rng.index(aps.len())];
                let held: Vec<PackageId> = ap.packages.iter().collect();
                if !held.is_empty() {
                    checks.push((*x, ap.party, held[rng.index(held.len())]));
                }
                checks.push((*x, ap.party, PackageId(rng.index(npk) as u16)));
            }
            let f = ex.node_of[rng.index(ex.node_of.len())];
            checks.push((*x, f, PackageId(rng.index(npk) as u16)));
        }
        Sample {
            persons,
            agents,
            ceos,
            largest_firm_clients,
            checks,
        }
    }
}

// ------------------------------------------------------------------------------------
// Cross-check.

fn cross_check(
    w: &World,
    ex: &Export,
    s: &Sample,
    pg: &mut postgres::Client,
    sql: &Sql,
    peers: &[&CedarPeer],
) -> Result<()> {
    let g = &w.graph;
    let c = w.catalog;
    let mut yes = 0;
    for (x, f, p) in &s.checks {
        let d = resolve::has_package(w, *x, *f, *p);
        let q = sql.check(pg, ex, *x, *f, *p)?;
        let cd: Vec<bool> = peers.iter().map(|ced| ced.check(w, *x, *f, *p, c)).collect();
        if d != q || cd.iter().any(|v| *v != d) {
            bail!(
                "MISMATCH check package {} for ({} acting for {}): delegraph {d}, postgres {q}, cedar (policies, hierarchy) {cd:?}\n  explain: {:?}",
                c.package(*p).code,
                g.ext_id(*x),
                g.ext_id(*f),
                resolve::explain_package(w, *x, *f, *p)
            );
        }
        yes += usize::from(d);
    }
    let mut parties = 0;
    for x in s.persons.iter().chain(&s.agents).chain(&s.ceos) {
        let d = engine_parties(w, ex, *x);
        let q = sql.authorized_parties(pg, ex, *x)?;
        if d != q {
            let only_d: Vec<_> = d.iter().filter(|(k, v)| q.get(k) != Some(v)).take(3).collect();
            let only_q: Vec<_> = q.iter().filter(|(k, v)| d.get(k) != Some(v)).take(3).collect();
            let name = |id: i64| g.ext_id(ex.node_of[(id - 1) as usize]).to_string();
            bail!(
                "MISMATCH authorized parties of {}: delegraph {} parties, postgres {}\n  delegraph only/different: {:?}\n  postgres only/different: {:?}",
                g.ext_id(*x),
                d.len(),
                q.len(),
                only_d.iter().map(|(k, v)| (name(**k), v)).collect::<Vec<_>>(),
                only_q.iter().map(|(k, v)| (name(**k), v)).collect::<Vec<_>>()
            );
        }
        parties += d.len();
    }
    eprintln!(
        "cross-check: {} package checks ({} yes) equal in delegraph, PostgreSQL and Cedar; authorized parties of {} subjects ({} party entries, packages included) equal in delegraph and PostgreSQL",
        s.checks.len(),
        yes,
        s.persons.len() + s.agents.len() + s.ceos.len(),
        parties
    );
    Ok(())
}

// ------------------------------------------------------------------------------------
// Timing and reporting.

fn time(iters: usize, mut f: impl FnMut(usize)) -> Vec<u64> {
    // Warm up on a tenth, then measure each call.
    for i in 0..(iters / 10).max(1) {
        f(i);
    }
    let mut out = Vec::with_capacity(iters);
    for i in 0..iters {
        let t = Instant::now();
        f(i);
        out.push(t.elapsed().as_nanos() as u64);
    }
    out.sort_unstable();
    out
}

fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct KindResult {
    name: &'static str,
    sample: usize,
    delegraph: Option<Vec<u64>>,
    postgres: Option<Vec<u64>>,
    cedar: Option<Vec<u64>>,
    cedar_h: Option<Vec<u64>>,
}

impl KindResult {
    fn new(name: &'static str, sample: usize) -> KindResult {
        KindResult {
            name,
            sample,
            delegraph: None,
            postgres: None,
            cedar: None,
            cedar_h: None,
        }
    }
}

fn fmt_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

fn cell(v: &Option<Vec<u64>>) -> (String, String) {
    match v {
        Some(s) => (fmt_ns(pct(s, 0.5)), fmt_ns(pct(s, 0.99))),
        None => ("n/a".into(), "n/a".into()),
    }
}

fn ratio(peer: &Option<Vec<u64>>, base: &Option<Vec<u64>>, q: f64) -> String {
    match (peer, base) {
        (Some(p), Some(b)) if pct(b, q) > 0 => format!("{:.0}×", pct(p, q) as f64 / pct(b, q) as f64),
        _ => "n/a".into(),
    }
}

fn render_table(args: &Args, w: &World, s: &Sample, rs: &[KindResult]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "World: `{:?}` preset, seed {}: {} parties, {} edges; largest accounting firm has {} REGN clients.\n",
        args.scale,
        args.seed,
        w.graph.party_count(),
        w.graph.edge_count(),
        s.largest_firm_clients
    );
    let _ = writeln!(
        t,
        "| query | sample | delegraph p50 | delegraph p99 | PostgreSQL p50 | PostgreSQL p99 | Cedar (policies) p50 | p99 | Cedar (hierarchy) p50 | p99 | PG ÷ delegraph (p50 / p99) | Cedar (policies) ÷ delegraph | Cedar (hierarchy) ÷ delegraph |"
    );
    let _ = writeln!(
        t,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rs {
        let (d50, d99) = cell(&r.delegraph);
        let (p50, p99) = cell(&r.postgres);
        let (c50, c99) = cell(&r.cedar);
        let (h50, h99) = cell(&r.cedar_h);
        let _ = writeln!(
            t,
            "| {} | {} | {d50} | {d99} | {p50} | {p99} | {c50} | {c99} | {h50} | {h99} | {} / {} | {} / {} | {} / {} |",
            r.name,
            r.sample,
            ratio(&r.postgres, &r.delegraph, 0.5),
            ratio(&r.postgres, &r.delegraph, 0.99),
            ratio(&r.cedar, &r.delegraph, 0.5),
            ratio(&r.cedar, &r.delegraph, 0.99),
            ratio(&r.cedar_h, &r.delegraph, 0.5),
            ratio(&r.cedar_h, &r.delegraph, 0.99),
        );
    }
    let _ = writeln!(
        t,
        "\nIterations: check {} in delegraph and each Cedar, {} in PostgreSQL; authorized parties of persons and agents {} in delegraph, {} in PostgreSQL; of the CEOs a twentieth of those; each kind cycles over its sample after a warm-up of a tenth. PostgreSQL is queried over loopback TCP with prepared statements, so its figures include one round trip.",
        args.iters,
        args.pg_iters,
        args.iters,
        (args.pg_iters / 2).max(20),
    );
    t
}

/// Cumulative latency distributions (log x), one panel per query kind.
fn render_svg(args: &Args, rs: &[KindResult]) -> String {
    let pw = 460.0;
    let ph = 260.0;
    let cols = 2usize;
    let rows = rs.len().div_ceil(cols);
    let (wd, ht) = (pw * cols as f64 + 20.0, ph * rows as f64 + 50.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{wd}\" height=\"{ht}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(s, "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"14\">Latency CDF, {:?} world, seed {} — delegraph (blue), PostgreSQL (red), Cedar policies (green), Cedar hierarchy (orange); x log scale</text>",
        args.scale, args.seed
    );
    for (i, r) in rs.iter().enumerate() {
        let ox = 10.0 + pw * (i % cols) as f64;
        let oy = 35.0 + ph * (i / cols) as f64;
        let (l, t, wdt, hgt) = (ox + 45.0, oy + 20.0, pw - 70.0, ph - 60.0);
        let all: Vec<u64> = [&r.delegraph, &r.postgres, &r.cedar, &r.cedar_h]
            .iter()
            .filter_map(|v| v.as_ref())
            .flat_map(|v| [v.first().copied().unwrap_or(1), v.last().copied().unwrap_or(1)])
            .collect();
        let lo = (all.iter().copied().min().unwrap_or(1).max(1) as f64)
            .log10()
            .floor();
        let hi = (all.iter().copied().max().unwrap_or(10).max(10) as f64)
            .log10()
            .ceil();
        let xs = |ns: u64| l + ((ns.max(1) as f64).log10() - lo) / (hi - lo).max(1.0) * wdt;
        let _ = writeln!(
            s,
            "<text x=\"{l}\" y=\"{}\" font-size=\"12\">{}</text>",
            t - 6.0,
            r.name
        );
        let _ = writeln!(
            s,
            "<rect x=\"{l}\" y=\"{t}\" width=\"{wdt}\" height=\"{hgt}\" fill=\"none\" stroke=\"#888\"/>"
        );
        let mut e = lo as i32;
        while e <= hi as i32 {
            let x = xs(10u64.pow(e.max(0) as u32));
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{t}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                t + hgt,
                t + hgt + 14.0,
                fmt_ns(10u64.pow(e.max(0) as u32))
            );
            e += 1;
        }
        for (q, label) in [(0.0, "0"), (0.5, "0.5"), (0.99, "0.99"), (1.0, "1")] {
            let y = t + hgt - q * hgt;
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
                l - 4.0,
                y + 4.0
            );
        }
        for (v, color) in [
            (&r.delegraph, "#1f5fbf"),
            (&r.postgres, "#c0392b"),
            (&r.cedar, "#2e8b57"),
            (&r.cedar_h, "#e67e22"),
        ] {
            let Some(v) = v else { continue };
            let n = v.len();
            let step = (n / 400).max(1);
            let mut pts = String::new();
            for (j, ns) in v
                .iter()
                .enumerate()
                .step_by(step)
                .chain(std::iter::once((n - 1, &v[n - 1])))
            {
                let y = t + hgt - (j as f64 + 1.0) / n as f64 * hgt;
                let _ = write!(pts, "{:.1},{:.1} ", xs(*ns), y);
            }
            let _ = writeln!(
                s,
                "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\"/>"
            );
        }
    }
    let _ = writeln!(s, "</svg>");
    s
}
