//! `delegraph query KIND`: one question to the engine, against a snapshot (default: the
//! bundled sample) or a running server, through the very query code of the HTTP API and
//! the scenario runner (`delegraph::query`, `api::client::HttpBackend`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::{Map, Value};

use delegraph::query::{Answer, Query};
use delegraph::scenario::Backend;

/// The kinds of question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// May `--subject` use a package, a role, or an action on a resource for `--party`?
    Check,
    /// The effective packages and roles of `--subject` for `--party`.
    Rights,
    /// Every party `--subject` can act for.
    AuthorizedParties,
    /// Every subject holding `--package` for `--party`.
    Holders,
    /// May `--by`, acting for `--party`, pass on a package or an action?
    CanDelegate,
    /// Why (or why not) `--subject` has a package, role or resource action for `--party`.
    Explain,
    /// What one event would remove, computed without changing anything.
    Simulate,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Check => "check",
            Kind::Rights => "rights",
            Kind::AuthorizedParties => "authorized_parties",
            Kind::Holders => "holders",
            Kind::CanDelegate => "can_delegate",
            Kind::Explain => "explain",
            Kind::Simulate => "simulate",
        }
    }
}

#[derive(Args, Debug, Default)]
pub struct QueryArgs {
    /// What to ask.
    #[arg(value_enum)]
    pub kind: Option<Kind>,
    /// For `simulate`: the event's name when it is given as flags (`--from`, `--to`,
    /// `--role`, ...), e.g. `unregister_role`.
    #[arg(value_name = "EVENT")]
    pub event_name: Option<String>,
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub party: Option<String>,
    #[arg(long)]
    pub package: Option<String>,
    #[arg(long)]
    pub role: Option<String>,
    #[arg(long)]
    pub resource: Option<String>,
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub instance: Option<String>,
    #[arg(long)]
    pub by: Option<String>,
    /// For `simulate`: the event as JSON, e.g. `{"unregister_role": {"from": ..}}`.
    #[arg(long, value_name = "JSON")]
    pub event: Option<String>,
    /// Event field (with `simulate EVENT`).
    #[arg(long)]
    pub from: Option<String>,
    /// Event field (with `simulate EVENT`).
    #[arg(long)]
    pub to: Option<String>,
    /// Event field (with `simulate EVENT`).
    #[arg(long)]
    pub client: Option<String>,
    /// Event field (with `simulate EVENT`).
    #[arg(long)]
    pub facilitator: Option<String>,
    /// Event field (with `simulate EVENT`).
    #[arg(long)]
    pub agent: Option<String>,
    /// Event field (with `simulate EVENT`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub packages: Vec<String>,
    /// Event field (with `simulate EVENT`).
    #[arg(long)]
    pub cascade: bool,
    /// For `simulate`: list at most this many entries of each list (the counts are
    /// complete).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    /// The world to ask: a snapshot (.snap), JSON Lines (.jsonl) or scenario (.yaml).
    /// Default: the bundled sample, graph-snapshots/sample.snap.
    #[arg(long, value_name = "FILE", conflicts_with = "server")]
    pub snapshot: Option<PathBuf>,
    /// Ask a running server instead, e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Bearer token for `--server` (scope `delegraph:read`); or set DELEGRAPH_TOKEN.
    #[arg(long, env = "DELEGRAPH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the answer as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Builds the query from the flags, by the spec's field names.
fn build(args: &QueryArgs, kind: Kind) -> anyhow::Result<Query> {
    let mut m = Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.to_string(), Value::String(v.clone()));
        }
    };
    if kind == Kind::Simulate {
        let event: Value = match (&args.event, &args.event_name) {
            (Some(json), None) => {
                serde_json::from_str(json).map_err(|e| anyhow::anyhow!("--event is not JSON: {e}"))?
            }
            (None, Some(name)) => {
                put("from", &args.from);
                put("to", &args.to);
                put("role", &args.role);
                put("client", &args.client);
                put("facilitator", &args.facilitator);
                put("agent", &args.agent);
                put("party", &args.party);
                put("subject", &args.subject);
                put("package", &args.package);
                put("resource", &args.resource);
                put("by", &args.by);
                if !args.packages.is_empty() {
                    m.insert("packages".into(), Value::from(args.packages.clone()));
                }
                if args.cascade {
                    m.insert("cascade".into(), Value::Bool(true));
                }
                let mut ev = Map::new();
                ev.insert(name.clone(), Value::Object(std::mem::take(&mut m)));
                Value::Object(ev)
            }
            (Some(_), Some(_)) => {
                anyhow::bail!("give the event as --event JSON or as EVENT and flags, not both")
            }
            (None, None) => anyhow::bail!(
                "`simulate` needs an event: --event '{{\"unregister_role\": {{...}}}}' or e.g. \
                 `simulate unregister_role --from A --to B --role R`"
            ),
        };
        let mut body = Map::new();
        body.insert("event".into(), event);
        body.insert("limit".into(), Value::from(args.limit));
        return parse(kind, Value::Object(body));
    }
    if let Some(e) = &args.event_name {
        anyhow::bail!("unexpected argument `{e}` (only `simulate` takes an event name)");
    }
    put("subject", &args.subject);
    put("party", &args.party);
    put("package", &args.package);
    put("role", &args.role);
    put("resource", &args.resource);
    put("action", &args.action);
    put("instance", &args.instance);
    put("by", &args.by);
    parse(kind, Value::Object(m))
}

fn parse(kind: Kind, body: Value) -> anyhow::Result<Query> {
    let q = Query::parse(kind.name(), body).ok_or_else(|| anyhow::anyhow!("unknown query"))?;
    // Field errors from serde name query fields; say them as flags.
    q.map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message.replace("field `", "flag `--")))
}

/// Asks the question; exit status 0 for a yes (allowed, or a non-empty answer), 1 for a
/// no, 2 for an error.
pub fn run(args: QueryArgs) -> ExitCode {
    match ask(&args) {
        Ok((text, yes)) => {
            print!("{text}");
            if yes { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The printed answer and whether it is a yes.
pub fn ask(args: &QueryArgs) -> anyhow::Result<(String, bool)> {
    let Some(kind) = args.kind else {
        anyhow::bail!(
            "which query? one of check, rights, authorized-parties, holders, can-delegate, explain, simulate \
             (see `delegraph query --help`)"
        );
    };
    let q = build(args, kind)?;
    let answer = match &args.server {
        Some(url) => delegraph::api::client::HttpBackend::new(url, args.token.clone()).query(&q),
        None => {
            let mut w = match &args.snapshot {
                Some(p) => super::load_world(p)?,
                None => super::load_sample()?.0,
            };
            delegraph::query::evaluate_mut(&mut w, &q)
        }
    }
    .map_err(|e| anyhow::anyhow!("{}: {}", e.code, e.message))?;
    Ok(output(&q, &answer, args.json))
}

/// The output of one answer: human text, or one JSON document with `--json`.
pub fn output(q: &Query, a: &Answer, json: bool) -> (String, bool) {
    let (text, yes) = super::render::answer(q, a);
    if json {
        let body = a.body().map(|v| v.to_string()).unwrap_or_default();
        return (format!("{body}\n"), yes);
    }
    (text, yes)
}
