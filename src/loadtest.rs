//! `delegraph loadtest`: drives a running delegraph server over loopback with a mix of
//! checks, batched checks, authorized-parties queries and writes, bounded in requests
//! and in time, and reports throughput and latency percentiles (HDR histograms).
//!
//! The requests are drawn from a snapshot of the world the server holds, so they name
//! parties and packages that exist: each check asks about a (subject, party, package)
//! that the snapshot says holds, or (one in four) a package the subject does not hold.
//! Writes are one-event batches: each connection alternately grants and revokes its own
//! (organisation → person, package), with `by` one who may delegate the package for the
//! organisation, so every write changes something and the world ends as it began. Only loopback targets are accepted: this is a tool
//! for measuring one's own server, never for sending load elsewhere.

use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};

use crate::resolve;
use crate::world::World;

/// What to send, and how much of it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    pub token: Option<String>,
    /// Stop after this many requests in all ...
    pub requests: u64,
    /// ... or after this long, whichever comes first.
    pub duration: Duration,
    /// Concurrent connections (one thread each).
    pub concurrency: usize,
    /// Weights of the request kinds.
    pub mix: Mix,
    /// Checks per batched request.
    pub batch_size: usize,
    pub seed: u64,
    /// Background work to run alongside the load, measured on its own.
    pub during: Option<During>,
}

/// Work that `--during` runs alongside the load, on its own connections, until the
/// load ends; its latencies are reported in a table of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum During {
    /// A loop of `POST /v1/simulate`, alternating the end of a REGN relationship of the
    /// biggest accounting firm (`unregister_role` client → firm, `regnskapsforer`) and
    /// `retire_a2_roles`, each answer listing at most 100 entries.
    Simulate,
    /// A loop of `GET /v1/a2-impact?limit=100`.
    A2Impact,
    /// A loop of `POST /v1/admin/checkpoint` (needs an admin token; writes a snapshot
    /// when the server has `--data-dir`).
    Checkpoint,
    /// A burst of one-event write batches (`grant`, then `revoke` of the same package)
    /// from [`WRITE_CONNECTIONS`] connections, back to back.
    Writes,
    /// A burst of distinct grants from [`WRITE_CONNECTIONS`] connections, back to back:
    /// each connection grants its share of the load's grant pairs (up to
    /// [`MAX_WRITES`] in all) one after another, then revokes them in the same order,
    /// and again. The graph's changes since its bases grow to thousands of entries, so
    /// the partitions fold them into new bases (compaction) while it runs when the
    /// server's `--delta-bound` is below that.
    Grants,
}

/// Connections of `--during writes`.
pub const WRITE_CONNECTIONS: usize = 4;

impl During {
    pub fn parse(s: &str) -> Result<During, String> {
        Ok(match s.trim() {
            "simulate" => During::Simulate,
            "a2-impact" => During::A2Impact,
            "checkpoint" => During::Checkpoint,
            "writes" => During::Writes,
            "grants" => During::Grants,
            other => {
                return Err(format!(
                    "unknown background work `{other}` (simulate, a2-impact, checkpoint, writes, grants)"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            During::Simulate => "simulate",
            During::A2Impact => "a2-impact",
            During::Checkpoint => "checkpoint",
            During::Writes => "writes",
            During::Grants => "grants",
        }
    }

    /// A burst of writes, sent from [`WRITE_CONNECTIONS`] connections.
    fn writes(self) -> bool {
        matches!(self, During::Writes | During::Grants)
    }
}

/// Relative weights of the request kinds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mix {
    pub check: u32,
    pub batch: u32,
    pub authorized_parties: u32,
    pub events: u32,
}

impl Mix {
    /// Parses `check=70,batch=20,authorized_parties=9,events=1`.
    pub fn parse(s: &str) -> Result<Mix, String> {
        let mut m = Mix {
            check: 0,
            batch: 0,
            authorized_parties: 0,
            events: 0,
        };
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not KIND=WEIGHT"))?;
            let v: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("weight `{v}` is not a whole number"))?;
            match k.trim() {
                "check" => m.check = v,
                "batch" => m.batch = v,
                "authorized_parties" => m.authorized_parties = v,
                "events" => m.events = v,
                other => {
                    return Err(format!(
                        "unknown request kind `{other}` (check, batch, authorized_parties, events)"
                    ));
                }
            }
        }
        if m.check + m.batch + m.authorized_parties + m.events == 0 {
            return Err("the mix has no weight at all".into());
        }
        Ok(m)
    }
}

/// Latency percentiles of one request kind, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct KindReport {
    pub kind: &'static str,
    pub requests: u64,
    pub errors: u64,
    /// Decisions answered (a batch counts its checks).
    pub decisions: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub server: String,
    pub concurrency: usize,
    pub mix: Mix,
    pub batch_size: usize,
    pub elapsed_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub decisions_per_s: f64,
    /// The load tester's own CPU time (user, system seconds) while the load ran (not
    /// while it read the snapshot and drew its questions); None where not measured.
    pub client_cpu_s: Option<(f64, f64)>,
    /// The server's CPU time (user + system seconds) while the load ran, from its
    /// `/metrics` (`process_cpu_seconds_total`); None when it does not publish it. It
    /// includes the `--during` work's. On a shared machine a rate moves with whatever
    /// else runs; the CPU per request moves less.
    pub server_cpu_s: Option<f64>,
    pub kinds: Vec<KindReport>,
    /// The background work's latencies (`--during`), one row per request kind it sent.
    pub during: Option<DuringReport>,
}

/// What the background work did while the load ran.
#[derive(Debug, Clone, Serialize)]
pub struct DuringReport {
    pub work: During,
    pub kinds: Vec<KindReport>,
    /// Answers by HTTP status (`0`: no answer), e.g. 413 for a simulation past its budget.
    pub statuses: std::collections::BTreeMap<u16, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "refusing to send load to `{0}`: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed"
    )]
    NotLoopback(String),
    #[error("server `{0}` is not a valid http URL")]
    BadUrl(String),
    #[error("the snapshot holds no subject with an authorized party to ask about")]
    NothingToAsk,
    #[error("server `{0}` does not answer /healthz: {1}")]
    Unreachable(String, String),
}

/// Checks that `server` names a loopback address (after name resolution).
pub fn require_loopback(server: &str) -> Result<(), LoadError> {
    let rest = server
        .strip_prefix("http://")
        .ok_or_else(|| LoadError::BadUrl(server.to_string()))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let with_port = if hostport.starts_with('[') || hostport.matches(':').count() == 1 {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addrs: Vec<IpAddr> = with_port
        .to_socket_addrs()
        .map_err(|_| LoadError::BadUrl(server.to_string()))?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() || !addrs.iter().all(IpAddr::is_loopback) {
        return Err(LoadError::NotLoopback(server.to_string()));
    }
    Ok(())
}

/// A small deterministic generator (xorshift*), so runs are repeatable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// The questions to ask, drawn from the world.
struct Pool {
    /// (from, to, package, by) for grant/revoke pairs, no two alike.
    writes: Vec<(String, String, String, String)>,
    /// (client, firm): a REGN relationship of the accounting firm with most clients.
    regn: Option<(String, String)>,
    /// The JSON bodies, written once: one per check, one per subject (authorized
    /// parties) and a (grant, revoke) pair per write, so a request costs the client a
    /// copy.
    bodies: Bodies,
}

struct Bodies {
    checks: Vec<String>,
    subjects: Vec<String>,
    writes: Vec<(String, String)>,
}

impl Bodies {
    fn of(
        checks: &[(String, String, String, bool)],
        subjects: &[String],
        writes: &[(String, String, String, String)],
    ) -> Bodies {
        let write = |what: &str, (f, t, p, by): &(String, String, String, String)| {
            json!([{ what: {"from": f, "to": t, "package": p, "by": by} }]).to_string()
        };
        Bodies {
            checks: checks
                .iter()
                .map(|(s, p, pk, _)| json!({"subject": s, "party": p, "package": pk}).to_string())
                .collect(),
            subjects: subjects
                .iter()
                .map(|s| json!({ "subject": s }).to_string())
                .collect(),
            writes: writes
                .iter()
                .map(|w| (write("grant", w), write("revoke", w)))
                .collect(),
        }
    }
}

/// A REGN relationship (client → firm, `regnskapsforer`) of the firm with most clients.
fn biggest_regn(w: &World) -> Option<(String, String)> {
    let regn = w.catalog.role_id("regnskapsforer")?;
    let g = &w.graph;
    let mut clients: std::collections::HashMap<crate::graph::NodeId, (usize, crate::graph::NodeId)> =
        std::collections::HashMap::new();
    for (n, _) in g.parties() {
        for (_, to, e) in g.outgoing(n) {
            if let crate::graph::Edge::Assignment(a) = e
                && a.role == regn
            {
                let c = clients.entry(to).or_insert((0, n));
                c.0 += 1;
                if g.ext_id(n) < g.ext_id(c.1) {
                    c.1 = n;
                }
            }
        }
    }
    // Most clients; ties broken by the firm's id, so the choice is repeatable.
    let (firm, (_, client)) = clients
        .into_iter()
        .max_by(|a, b| (a.1.0, g.ext_id(b.0)).cmp(&(b.1.0, g.ext_id(a.0))))?;
    Some((g.ext_id(client).to_string(), g.ext_id(firm).to_string()))
}

fn pool(w: &World, seed: u64) -> Result<Pool, LoadError> {
    let c = w.catalog;
    let mut rng = Rng(seed | 1);
    let parties: Vec<_> = w.graph.parties().map(|(n, _)| n).collect();
    let mut checks = Vec::new();
    let mut subjects = Vec::new();
    let mut writes = Vec::new();
    let mut written = std::collections::HashSet::new();
    let mut actors = std::collections::HashSet::new();
    let ulykke = c.package_id("ulykke");
    let tries = parties.len().min(20_000);
    for _ in 0..tries {
        let x = parties[rng.below(parties.len())];
        let aps = resolve::authorized_parties(w, x);
        if aps.is_empty() {
            continue;
        }
        let xid = w.graph.ext_id(x).to_string();
        subjects.push(xid.clone());
        let ap = &aps[rng.below(aps.len())];
        let fid = w.graph.ext_id(ap.party).to_string();
        let held: Vec<_> = ap.packages.iter().collect();
        if let Some(p) = held.get(rng.below(held.len().max(1))) {
            checks.push((xid.clone(), fid.clone(), c.package(*p).code.clone(), true));
        }
        let p = c
            .packages
            .get(rng.below(c.packages.len()))
            .map(|p| p.code.clone())
            .unwrap_or_default();
        checks.push((xid.clone(), fid.clone(), p, false));
        // A write: the organisation gives one of its own packages to this subject.
        if let Some(from) = w.graph.party(ap.party)
            && from.kind == crate::model::PartyKind::Organisation
            && ap.party != x
            && w.graph
                .party(x)
                .is_some_and(|p| p.kind == crate::model::PartyKind::Person)
            && let Some(pk) = ulykke
            && writes.len() < MAX_WRITES
            && !written.contains(&(ap.party, x))
            && !actors.contains(&(ap.party, x))
            && let holders = resolve::holders(w, ap.party, pk)
            && !holders.contains(&x)
            && let Some(by) = holders.into_iter().find(|u| {
                *u != x
                    && !written.contains(&(ap.party, *u))
                    && resolve::can_delegate_package(w, *u, ap.party, pk) == resolve::DelegationVerdict::Yes
            })
        {
            // No actor of an organisation is also a receiver for it: a revoke of the
            // pool would otherwise take away the right its actor grants with, and that
            // actor's next grant would be (rightly) refused. Nor does a receiver hold the
            // package already: its revoke would take away a right the world gave (one
            // another actor may grant through).
            written.insert((ap.party, x));
            actors.insert((ap.party, by));
            let by = w.graph.ext_id(by).to_string();
            writes.push((fid, xid, "ulykke".to_string(), by));
        }
    }
    if checks.is_empty() {
        return Err(LoadError::NothingToAsk);
    }
    Ok(Pool {
        bodies: Bodies::of(&checks, &subjects, &writes),
        writes,
        regn: biggest_regn(w),
    })
}

/// At most this many distinct grant/revoke pairs are drawn.
pub const MAX_WRITES: usize = 4096;

const KINDS: [&str; 4] = ["check", "batch", "authorized_parties", "events"];

/// Per request kind, per thread: (latencies, requests, errors, decisions).
type KindStats = [(Option<Histogram<u64>>, u64, u64, u64); 4];

/// Runs the plan against the server; `progress(done)` is called now and then.
pub fn run(w: &World, plan: &Plan, progress: &(dyn Fn(u64) + Sync)) -> Result<Report, LoadError> {
    require_loopback(&plan.server)?;
    let pool = Arc::new(pool(w, plan.seed)?);
    let base = plan.server.trim_end_matches('/').to_string();
    // What the client itself costs per request must stay small beside the server's, and
    // it shares the cores with the server: the load threads each keep one connection of
    // their own ([`Conn`]: a request is one write of bodies written beforehand, the
    // answer one read, where ureq writes head and body apart and probes the connection
    // twice before reusing it). The write burst of `--during writes` (thousands of
    // requests a second) uses `Conn`s too. The health check and the other background
    // work (a few requests a second) go through ureq:
    // * every connection goes back to the pool after its request, so each background
    //   connection stays open (ureq keeps 3 idle connections per host by default; a
    //   request that finds none opens a new one);
    // * no timeout covers the address lookup: with one (e.g. a global timeout) ureq
    //   resolves on a new thread for every request, pooled connection or not. The
    //   target is a loopback address (`require_loopback`), so the lookup is a parse;
    //   every step after it has the 30 s limit.
    let connections = plan.concurrency.max(1) + WRITE_CONNECTIONS + 1;
    let limit = Some(Duration::from_secs(30));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(limit)
        .timeout_send_request(limit)
        .timeout_send_body(limit)
        .timeout_recv_response(limit)
        .timeout_recv_body(limit)
        .max_idle_connections(connections)
        .max_idle_connections_per_host(connections)
        .build()
        .into();
    agent
        .get(&format!("{base}/healthz"))
        .call()
        .map_err(|e| LoadError::Unreachable(base.clone(), e.to_string()))?;
    let target = Target::of(&base, plan.token.as_deref())?;
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = crate::background::process_cpu_time();
    let server_before = server_cpu(&agent, &base, plan.token.as_deref());
    let start = Instant::now();
    let deadline = start + plan.duration;
    let weights = [
        plan.mix.check,
        plan.mix.batch,
        plan.mix.authorized_parties,
        plan.mix.events,
    ];
    let total_weight: u32 = weights.iter().sum();
    let (results, background): (Vec<KindStats>, Vec<DuringStats>) = std::thread::scope(|s| {
        let background: Vec<_> = match plan.during {
            None => Vec::new(),
            Some(work) => {
                let conns = if work.writes() { WRITE_CONNECTIONS } else { 1 };
                (0..conns)
                    .map(|c| {
                        let (pool, stop, agent, base, target) =
                            (pool.clone(), stop.clone(), agent.clone(), base.clone(), &target);
                        s.spawn(move || {
                            let to = Server {
                                agent: &agent,
                                target,
                                base: &base,
                                token: plan.token.as_deref(),
                            };
                            during_loop(work, c, &pool, &to, &stop)
                        })
                    })
                    .collect()
            }
        };
        let handles: Vec<_> = (0..plan.concurrency.max(1))
            .map(|t| {
                let (pool, sent, stop) = (pool.clone(), sent.clone(), stop.clone());
                let mut conn = Conn::new(&target);
                s.spawn(move || {
                    let mut rng = Rng(plan.seed.wrapping_add(t as u64 * 7919) | 1);
                    let mut stats: KindStats = std::array::from_fn(|_| (histogram(), 0, 0, 0));
                    let mut writer = Writer {
                        next: t,
                        step: plan.concurrency.max(1),
                        revoke: false,
                    };
                    let mut body = String::new();
                    loop {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        let n = sent.fetch_add(1, Ordering::Relaxed);
                        if n >= plan.requests {
                            break;
                        }
                        let mut pick = (rng.next() % u64::from(total_weight)) as u32;
                        let mut kind = 0;
                        for (i, wgt) in weights.iter().enumerate() {
                            if pick < *wgt {
                                kind = i;
                                break;
                            }
                            pick -= wgt;
                        }
                        let (path, decisions) =
                            request(&pool, kind, plan.batch_size, &mut rng, &mut writer, &mut body);
                        let t0 = Instant::now();
                        let ok = conn
                            .post(path, &body)
                            .is_ok_and(|status| (200..300).contains(&status));
                        let us = t0.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                        if let Some(st) = stats.get_mut(kind) {
                            if let Some(h) = st.0.as_mut() {
                                let _ = h.record(us.max(1));
                            }
                            st.1 += 1;
                            if ok {
                                st.3 += decisions;
                            } else {
                                st.2 += 1;
                            }
                        }
                        if n % 1000 == 0 {
                            progress(n);
                        }
                    }
                    stats
                })
            })
            .collect();
        let results = handles.into_iter().filter_map(|h| h.join().ok()).collect();
        // The load is over: the background work stops after the request it is in.
        stop.store(true, Ordering::Relaxed);
        (
            results,
            background.into_iter().filter_map(|h| h.join().ok()).collect(),
        )
    });
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let client_cpu_s = match (cpu_before, crate::background::process_cpu_time()) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };
    let server_cpu_s = server_before
        .zip(server_cpu(&agent, &base, plan.token.as_deref()))
        .map(|(a, b)| b - a);
    let mut kinds = Vec::new();
    let (mut requests, mut errors, mut decisions) = (0, 0, 0);
    for (k, name) in KINDS.iter().enumerate() {
        let Some(mut h) = histogram() else { continue };
        let (mut n, mut e, mut d) = (0, 0, 0);
        for r in &results {
            if let Some(st) = r.get(k) {
                if let Some(x) = &st.0 {
                    let _ = h.add(x);
                }
                n += st.1;
                e += st.2;
                d += st.3;
            }
        }
        if n == 0 {
            continue;
        }
        requests += n;
        errors += e;
        decisions += d;
        kinds.push(KindReport {
            kind: name,
            requests: n,
            errors: e,
            decisions: d,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        });
    }
    Ok(Report {
        server: plan.server.clone(),
        concurrency: plan.concurrency,
        mix: plan.mix,
        batch_size: plan.batch_size,
        elapsed_s: elapsed,
        requests,
        errors,
        requests_per_s: requests as f64 / elapsed,
        decisions_per_s: decisions as f64 / elapsed,
        client_cpu_s,
        server_cpu_s,
        kinds,
        during: plan.during.map(|work| during_report(work, background)),
    })
}

/// What one background connection measured: per request kind (name, latencies,
/// requests, errors), and the answers by status.
struct DuringStats {
    kinds: Vec<(&'static str, Option<Histogram<u64>>, u64, u64)>,
    statuses: std::collections::BTreeMap<u16, u64>,
}

/// Where the background work goes: the ureq agent, the target of a [`Conn`], the base
/// URL and the token.
#[derive(Clone, Copy)]
struct Server<'a> {
    agent: &'a ureq::Agent,
    target: &'a Target,
    base: &'a str,
    token: Option<&'a str>,
}

/// One background connection: sends its work back to back until `stop`.
fn during_loop(work: During, conn: usize, pool: &Pool, to: &Server<'_>, stop: &AtomicBool) -> DuringStats {
    let Server {
        agent,
        target,
        base,
        token,
    } = *to;
    // (kind, method is GET, path, body)
    let mut script: Vec<(&'static str, bool, String, Value)> = Vec::new();
    // A write burst's bodies, one per script entry: the pool's, written once.
    let mut write_bodies: Vec<&str> = Vec::new();
    match work {
        During::Simulate => {
            if let Some((client, firm)) = &pool.regn {
                script.push((
                    "simulate regn",
                    false,
                    "/v1/simulate".into(),
                    json!({"event": {"unregister_role": {"from": client, "to": firm, "role": "regnskapsforer"}}, "limit": 100}),
                ));
            }
            script.push((
                "simulate retire_a2",
                false,
                "/v1/simulate".into(),
                json!({"event": {"retire_a2_roles": {}}, "limit": 100}),
            ));
        }
        During::A2Impact => script.push(("a2-impact", true, "/v1/a2-impact?limit=100".into(), Value::Null)),
        During::Checkpoint => script.push(("checkpoint", false, "/v1/admin/checkpoint".into(), Value::Null)),
        During::Writes => {
            // One pair of the pool: its grant, then its revoke.
            if let Some((grant, revoke)) = pool.bodies.writes.get(conn * 7 % pool.writes.len().max(1)) {
                write_bodies.push(grant);
                write_bodies.push(revoke);
                script.push(("write grant", false, "/v1/events".into(), Value::Null));
                script.push(("write revoke", false, "/v1/events".into(), Value::Null));
            }
        }
        During::Grants => {
            // This connection's pairs: conn, conn + WRITE_CONNECTIONS, ... (no other
            // connection's), all granted, then all revoked.
            let mine: Vec<_> = pool
                .bodies
                .writes
                .iter()
                .skip(conn)
                .step_by(WRITE_CONNECTIONS)
                .collect();
            for (grant, _) in &mine {
                write_bodies.push(grant);
                script.push(("write grant", false, "/v1/events".into(), Value::Null));
            }
            for (_, revoke) in &mine {
                write_bodies.push(revoke);
                script.push(("write revoke", false, "/v1/events".into(), Value::Null));
            }
        }
    }
    // One latency table per kind of request (the script may hold many of a kind).
    let mut out = DuringStats {
        kinds: Vec::new(),
        statuses: std::collections::BTreeMap::new(),
    };
    let slots: Vec<usize> = script
        .iter()
        .map(|(k, ..)| match out.kinds.iter().position(|s| s.0 == *k) {
            Some(i) => i,
            None => {
                out.kinds.push((*k, histogram(), 0, 0));
                out.kinds.len() - 1
            }
        })
        .collect();
    if script.is_empty() {
        return out;
    }
    // A write burst sends thousands of requests a second, so it goes through a [`Conn`]
    // with the pool's bodies, like the load: through ureq its client cost (a few times a
    // load request's) took the cores from the readers it measures.
    let mut direct = work.writes().then(|| Conn::new(target));
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let k = i % script.len();
        i += 1;
        let Some((_, get, path, body)) = script.get(k) else {
            break;
        };
        let t0 = Instant::now();
        let status = match direct.as_mut().filter(|_| !*get) {
            Some(c) => c
                .post(path, write_bodies.get(k).copied().unwrap_or_default())
                .unwrap_or(0),
            None => through_ureq(agent, &format!("{base}{path}"), token, *get, body),
        };
        let us = t0.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        *out.statuses.entry(status).or_default() += 1;
        if let Some(st) = slots.get(k).and_then(|&slot| out.kinds.get_mut(slot)) {
            if let Some(h) = st.1.as_mut() {
                let _ = h.record(us.max(1));
            }
            st.2 += 1;
            if !(200..300).contains(&status) {
                st.3 += 1;
            }
        }
        if !(200..300).contains(&status) && status != 413 {
            // A refusal that is not the budget's (busy, unavailable): do not spin.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    out
}

/// One background request through ureq (a GET, or a POST of `body`, empty when null):
/// the answer's status, 0 when there was none.
fn through_ureq(agent: &ureq::Agent, url: &str, token: Option<&str>, get: bool, body: &Value) -> u16 {
    let res = if get {
        let mut req = agent.get(url);
        if let Some(tok) = token {
            req = req.header("Authorization", format!("Bearer {tok}"));
        }
        req.call()
    } else {
        let mut req = agent.post(url).content_type("application/json");
        if let Some(tok) = token {
            req = req.header("Authorization", format!("Bearer {tok}"));
        }
        if body.is_null() {
            req.send_empty()
        } else {
            req.send(body.to_string())
        }
    };
    match res {
        Ok(mut r) => {
            let _ = r.body_mut().read_to_vec();
            r.status().as_u16()
        }
        Err(_) => 0,
    }
}

fn during_report(work: During, stats: Vec<DuringStats>) -> DuringReport {
    let mut statuses = std::collections::BTreeMap::new();
    let mut by_kind: Vec<(&'static str, Option<Histogram<u64>>, u64, u64)> = Vec::new();
    for st in stats {
        for (code, n) in st.statuses {
            *statuses.entry(code).or_default() += n;
        }
        for (name, h, n, e) in st.kinds {
            let at = match by_kind.iter().position(|k| k.0 == name) {
                Some(i) => i,
                None => {
                    by_kind.push((name, histogram(), 0, 0));
                    by_kind.len() - 1
                }
            };
            if let Some(k) = by_kind.get_mut(at) {
                if let (Some(all), Some(h)) = (k.1.as_mut(), h.as_ref()) {
                    let _ = all.add(h);
                }
                k.2 += n;
                k.3 += e;
            }
        }
    }
    let kinds = by_kind
        .into_iter()
        .filter(|k| k.2 > 0)
        .filter_map(|(name, h, n, e)| {
            let h = h?;
            Some(KindReport {
                kind: name,
                requests: n,
                errors: e,
                decisions: 0,
                p50_us: h.value_at_quantile(0.50),
                p90_us: h.value_at_quantile(0.90),
                p99_us: h.value_at_quantile(0.99),
                p999_us: h.value_at_quantile(0.999),
                max_us: h.max(),
            })
        })
        .collect();
    DuringReport {
        work,
        kinds,
        statuses,
    }
}

/// A latency histogram from 1 µs to 60 s with three significant digits (only an
/// impossible bound could make it fail).
fn histogram() -> Option<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok()
}

/// The writes of one connection: the pairs `next`, `next + step`, ... of the pool (no
/// other connection's), each granted, then revoked.
struct Writer {
    next: usize,
    step: usize,
    revoke: bool,
}

/// One request of `kind`, its JSON body written into `body`: (path, decisions it asks
/// for). The bodies are the pool's, written once ([`Bodies`]).
fn request(
    pool: &Pool,
    kind: usize,
    batch: usize,
    rng: &mut Rng,
    writer: &mut Writer,
    body: &mut String,
) -> (&'static str, u64) {
    let checks = &pool.bodies.checks;
    body.clear();
    match kind {
        0 => {
            body.push_str(&checks[rng.below(checks.len())]);
            ("/v1/check", 1)
        }
        1 => {
            body.push_str(r#"{"checks":["#);
            for i in 0..batch.max(1) {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&checks[rng.below(checks.len())]);
            }
            body.push_str("]}");
            ("/v1/check/batch", batch.max(1) as u64)
        }
        2 => {
            let subjects = &pool.bodies.subjects;
            body.push_str(&subjects[rng.below(subjects.len())]);
            ("/v1/authorized_parties", 1)
        }
        _ => match pool.bodies.writes.get(writer.next % pool.writes.len().max(1)) {
            // One event, acting as `by`: the grant, then (next time) its revoke.
            Some((grant, revoke)) => {
                body.push_str(if writer.revoke { revoke } else { grant });
                if writer.revoke {
                    writer.next += writer.step;
                }
                writer.revoke = !writer.revoke;
                ("/v1/events", 1)
            }
            None => {
                body.push_str(&checks[rng.below(checks.len())]);
                ("/v1/check", 1)
            }
        },
    }
}

/// Where the load goes: the server's address, and the head every request starts with.
struct Target {
    addrs: Vec<std::net::SocketAddr>,
    /// The path prefix of the server's URL (usually empty).
    prefix: String,
    /// The header lines after the request line, before `content-length`.
    headers: String,
}

impl Target {
    fn of(base: &str, token: Option<&str>) -> Result<Target, LoadError> {
        let bad = || LoadError::BadUrl(base.to_string());
        let rest = base.strip_prefix("http://").ok_or_else(bad)?;
        let (hostport, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let with_port = if hostport.starts_with('[') || hostport.matches(':').count() == 1 {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let addrs: Vec<_> = with_port.to_socket_addrs().map_err(|_| bad())?.collect();
        if addrs.is_empty() {
            return Err(bad());
        }
        let mut headers = format!(
            "host: {hostport}\r\nuser-agent: delegraph-loadtest\r\ncontent-type: application/json\r\n"
        );
        if let Some(t) = token {
            headers.push_str(&format!("authorization: Bearer {t}\r\n"));
        }
        Ok(Target {
            addrs,
            prefix: prefix.to_string(),
            headers,
        })
    }
}

/// One kept-alive HTTP/1.1 connection of a load thread. A request goes out whole in one
/// write — head and body together, as a client that buffers its request sends it — and
/// the answer is read by its `content-length`. Any failure drops the connection; the
/// next request opens a new one.
struct Conn {
    addrs: Vec<std::net::SocketAddr>,
    prefix: String,
    headers: String,
    stream: Option<std::net::TcpStream>,
    out: Vec<u8>,
    input: Vec<u8>,
}

/// Longest answer head read (the API's are a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;

impl Conn {
    fn new(t: &Target) -> Conn {
        Conn {
            addrs: t.addrs.clone(),
            prefix: t.prefix.clone(),
            headers: t.headers.clone(),
            stream: None,
            out: Vec::with_capacity(1024),
            input: Vec::with_capacity(4096),
        }
    }

    /// POSTs `body` (JSON) to `path`; the answer's status.
    fn post(&mut self, path: &str, body: &str) -> std::io::Result<u16> {
        use std::io::Write;
        self.out.clear();
        let _ = write!(
            self.out,
            "POST {}{path} HTTP/1.1\r\n{}content-length: {}\r\n\r\n",
            self.prefix,
            self.headers,
            body.len()
        );
        self.out.extend_from_slice(body.as_bytes());
        let answer = self.exchange();
        if !matches!(answer, Ok((_, true))) {
            self.stream = None;
        }
        answer.map(|(status, _)| status)
    }

    /// Sends `out` and reads one answer: (status, whether the connection stays open).
    fn exchange(&mut self) -> std::io::Result<(u16, bool)> {
        use std::io::{Error, ErrorKind, Read, Write};
        let limit = Some(Duration::from_secs(30));
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let s = std::net::TcpStream::connect(&self.addrs[..])?;
                s.set_nodelay(true)?;
                s.set_read_timeout(limit)?;
                s.set_write_timeout(limit)?;
                self.stream.insert(s)
            }
        };
        stream.write_all(&self.out)?;
        let bad = |what: &str| Error::new(ErrorKind::InvalidData, what.to_string());
        let input = &mut self.input;
        input.clear();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            let from = input.len().saturating_sub(3);
            input.extend_from_slice(&chunk[..n]);
            if let Some(i) = input[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                break from + i + 4;
            }
            if input.len() > MAX_HEAD {
                return Err(bad("the answer's head is too long"));
            }
        };
        let head =
            std::str::from_utf8(&input[..head_end]).map_err(|_| bad("the answer's head is not text"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| bad("no HTTP/1.1 status line"))?;
        let (mut length, mut keep) = (None, true);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                keep = false;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(bad("a chunked answer"));
            }
        }
        let want = head_end + length.ok_or_else(|| bad("no content-length"))?;
        while input.len() < want {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            input.extend_from_slice(&chunk[..n]);
        }
        // Nothing was asked beyond this answer: anything more is not HTTP we speak.
        Ok((status, keep && input.len() == want))
    }
}

/// The server's CPU seconds so far, from its `/metrics` (`process_cpu_seconds_total`);
/// None when it does not answer them or does not publish the figure.
fn server_cpu(agent: &ureq::Agent, base: &str, token: Option<&str>) -> Option<f64> {
    let mut req = agent.get(&format!("{base}/metrics"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut r = req.call().ok()?;
    if r.status() != 200 {
        return None;
    }
    let text = r.body_mut().read_to_string().ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// The report as text.
pub fn to_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} requests in {:.1} s ({:.0} req/s, {:.0} decisions/s), {} errors, {} connections, batch {}",
        r.requests, r.elapsed_s, r.requests_per_s, r.decisions_per_s, r.errors, r.concurrency, r.batch_size
    );
    if let Some((user, sys)) = r.client_cpu_s {
        let per = |t: f64| t * 1e6 / r.requests.max(1) as f64;
        let _ = writeln!(
            s,
            "client CPU during the load: {:.2} s user + {:.2} s system = {:.1} µs per request ({:.1} + {:.1})",
            user,
            sys,
            per(user + sys),
            per(user),
            per(sys)
        );
    }
    if let Some(cpu) = r.server_cpu_s {
        let _ = writeln!(
            s,
            "server CPU during the load: {:.2} s = {:.1} µs per request",
            cpu,
            cpu * 1e6 / r.requests.max(1) as f64
        );
    }
    let _ = writeln!(
        s,
        "{:<20} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "kind", "requests", "errors", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for k in &r.kinds {
        let _ = writeln!(
            s,
            "{:<20} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            k.kind, k.requests, k.errors, k.p50_us, k.p90_us, k.p99_us, k.p999_us, k.max_us
        );
    }
    if let Some(d) = &r.during {
        let statuses: Vec<String> = d.statuses.iter().map(|(c, n)| format!("{c}: {n}")).collect();
        let _ = writeln!(
            s,
            "during {} (answers by status: {}):",
            d.work.as_str(),
            if statuses.is_empty() {
                "none".to_string()
            } else {
                statuses.join(", ")
            }
        );
        for k in &d.kinds {
            let _ = writeln!(
                s,
                "{:<20} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
                k.kind, k.requests, k.errors, k.p50_us, k.p90_us, k.p99_us, k.p999_us, k.max_us
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(require_loopback("http://127.0.0.1:8080").is_ok());
        assert!(require_loopback("http://localhost:8080").is_ok());
        assert!(require_loopback("http://[::1]:8080").is_ok());
        assert!(matches!(
            require_loopback("http://10.0.0.1:8080"),
            Err(LoadError::NotLoopback(_))
        ));
        assert!(matches!(
            require_loopback("http://192.168.1.2"),
            Err(LoadError::NotLoopback(_))
        ));
        assert!(matches!(
            require_loopback("https://127.0.0.1"),
            Err(LoadError::BadUrl(_))
        ));
    }

    #[test]
    fn mix_parses_and_refuses_nonsense() {
        let m = Mix::parse("check=70,batch=20,authorized_parties=9,events=1");
        assert!(m.is_ok_and(|m| m.check == 70 && m.events == 1));
        assert!(Mix::parse("check=x").is_err());
        assert!(Mix::parse("teleport=1").is_err());
        assert!(Mix::parse("check=0").is_err());
    }

    #[test]
    fn during_parses_its_five_kinds_and_refuses_others() {
        for w in ["simulate", "a2-impact", "checkpoint", "writes", "grants"] {
            assert_eq!(During::parse(w).map(During::as_str), Ok(w));
        }
        assert!(During::parse("compaction").is_err());
    }
}
