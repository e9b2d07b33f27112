//! `delegraph serve`: configuration from flags and environment, then the HTTP API.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use delegraph::api::auth::{Auth, JwtAuth};
use delegraph::api::limits::Limits;
use delegraph::api::{ServerConfig, serve};
use delegraph::partition::Store;
use delegraph::partition::journal::MemoryJournal;
use delegraph::world::World;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Partition actors owning the write path.
    #[arg(long, default_value_t = 2)]
    partitions: usize,
    /// HTTP worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Directory of the write-ahead log and checkpoints (accepted; the log is wired in
    /// by the persistence layer, until then writes are kept in memory only).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Snapshot to load at start (accepted; wired in by the persistence layer).
    #[arg(long, value_name = "FILE")]
    snapshot: Option<PathBuf>,
    /// HS256: a file holding the shared secret (or set DELEGRAPH_JWT_HS256_SECRET).
    #[arg(long, value_name = "FILE")]
    jwt_hs256_secret_file: Option<PathBuf>,
    /// RS256: the issuer's public key, PEM (or set DELEGRAPH_JWT_RS256_PUBLIC_KEY_FILE).
    #[arg(long, value_name = "FILE", env = "DELEGRAPH_JWT_RS256_PUBLIC_KEY_FILE")]
    jwt_rs256_public_key: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "DELEGRAPH_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "DELEGRAPH_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Development mode: no authentication at all. Never use it outside a laptop.
    #[arg(long)]
    dev_no_auth: bool,
    /// Allow `POST /v1/admin/reset` (scope admin) to empty the world, for
    /// `delegraph test --server`.
    #[arg(long)]
    allow_reset: bool,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most events in one batch.
    #[arg(long, default_value_t = Limits::default().max_batch_events)]
    max_batch_events: usize,
    /// Longest a request may take, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
}

fn auth(a: &ServeArgs) -> anyhow::Result<Auth> {
    let secret = match (
        &a.jwt_hs256_secret_file,
        std::env::var("DELEGRAPH_JWT_HS256_SECRET"),
    ) {
        (Some(f), _) => Some(
            std::fs::read(f)
                .with_context(|| format!("cannot read the HS256 secret `{}`", f.display()))?
                .trim_ascii()
                .to_vec(),
        ),
        (None, Ok(s)) => Some(s.into_bytes()),
        (None, Err(_)) => None,
    };
    let jwt = match (secret, &a.jwt_rs256_public_key) {
        (Some(_), Some(_)) => bail!("configure either an HS256 secret or an RS256 public key, not both"),
        (Some(s), None) => Some(JwtAuth::hs256(&s)?),
        (None, Some(f)) => {
            let pem = std::fs::read(f)
                .with_context(|| format!("cannot read the RS256 public key `{}`", f.display()))?;
            Some(JwtAuth::rs256_pem(&pem)?)
        }
        (None, None) => None,
    };
    match (jwt, a.dev_no_auth) {
        (Some(_), true) => bail!("`--dev-no-auth` and a JWT key exclude each other"),
        (Some(mut j), false) => {
            if let Some(i) = &a.jwt_issuer {
                j = j.issuer(i);
            }
            if let Some(au) = &a.jwt_audience {
                j = j.audience(au);
            }
            Ok(Auth::Jwt(Box::new(j)))
        }
        (None, true) => {
            let banner = "WARNING: --dev-no-auth: AUTHENTICATION IS OFF. Every request has every scope, \
                          writes and admin included. Development only.";
            eprintln!("{banner}");
            tracing::warn!("{banner}");
            Ok(Auth::Disabled)
        }
        (None, false) => bail!(
            "no JWT key configured: set DELEGRAPH_JWT_HS256_SECRET, --jwt-hs256-secret-file or \
             --jwt-rs256-public-key, or switch authentication off explicitly with --dev-no-auth"
        ),
    }
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let auth = auth(&a)?;
    if let Some(d) = &a.data_dir {
        eprintln!(
            "note: --data-dir `{}` is accepted but the write-ahead log is not wired in yet: writes are kept in memory only",
            d.display()
        );
    }
    if let Some(s) = &a.snapshot {
        eprintln!(
            "note: --snapshot `{}` is accepted but snapshot loading is not wired in yet: starting from an empty world",
            s.display()
        );
    }
    let limits = Limits {
        max_body_bytes: a.max_body_bytes,
        max_batch_events: a.max_batch_events,
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        ..Limits::default()
    };
    let config = ServerConfig {
        partitions: a.partitions.max(1),
        limits,
        auth,
        allow_reset: a.allow_reset,
        workers: a.workers,
    };
    let listener = TcpListener::bind(&a.bind).with_context(|| format!("cannot listen on `{}`", a.bind))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "delegraph listening on http://{addr} ({} partitions); API browser at http://{addr}/docs",
        config.partitions
    );
    let store = Arc::new(Store::new(World::new(), Arc::new(MemoryJournal::new())));
    actix_web::rt::System::new()
        .block_on(serve(config, store, listener))
        .context("the server stopped with an error")?;
    eprintln!("delegraph stopped");
    Ok(())
}
