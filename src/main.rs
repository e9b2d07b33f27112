//! The delegraph command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod serve;

#[derive(Parser)]
#[command(
    name = "delegraph",
    version,
    about = "An in-memory rights resolver for Altinn-style authorization"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files and report every failed step.
    ///
    /// Prints one line per failed step (file, step, expected, got) and a closing line
    /// `N passed, M failed`; exits 0 only when every step passes.
    Test {
        /// Scenario files (YAML, see the scenario format).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Run the files against a running server (e.g. `http://127.0.0.1:8080`) instead
        /// of in-process. The server must run with `--allow-reset` (each file starts from
        /// an empty world).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Bearer token for `--server` (scope `delegraph:admin`); or set DELEGRAPH_TOKEN.
        #[arg(long, env = "DELEGRAPH_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Serve the HTTP API (see the README's "Serving" section).
    Serve(serve::ServeArgs),
    /// Show the built-in catalogue, or look up one role or package.
    ///
    /// Without a name: the counts of roles, packages, areas, RolePackage and RoleMap
    /// rows. With a name: a role (by code, legacy code in any case, or URN) with the
    /// packages it gives, or a package (by code or URN) with the roles that give it.
    Catalog {
        /// A role or package to look up, e.g. `DAGL`, `daglig-leder`, `skattegrunnlag`.
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Test { files, server, token } => {
            let mut report = delegraph::scenario::Report::default();
            let mut http = server.map(|url| delegraph::api::client::HttpBackend::new(&url, token));
            for f in &files {
                report.merge(match &mut http {
                    Some(b) => delegraph::scenario::run_file_on(b, f),
                    None => delegraph::scenario::run_file(f),
                });
            }
            for f in &report.failures {
                println!("{f}");
            }
            println!("{} passed, {} failed", report.passed, report.failed);
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Catalog { name } => {
            use delegraph::catalog::{Catalog, report};
            let c = Catalog::builtin();
            match name {
                None => print!("{}", report::summary(c)),
                Some(n) => {
                    let role = c.role_id(&n);
                    let package = c.package_id(&n);
                    if role.is_none() && package.is_none() {
                        eprintln!("error: no role or package named `{n}` in the catalogue");
                        return ExitCode::FAILURE;
                    }
                    if let Some(r) = role {
                        print!("{}", report::role(c, r));
                    }
                    if let Some(p) = package {
                        print!("{}", report::package(c, p));
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}
