//! The delegraph command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod persist_cli;

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
    },
    /// Show the built-in catalogue, or look up one role or package.
    ///
    /// Without a name: the counts of roles, packages, areas, RolePackage and RoleMap
    /// rows. With a name: a role (by code, legacy code in any case, or URN) with the
    /// packages it gives, or a package (by code or URN) with the roles that give it.
    Catalog {
        /// A role or package to look up, e.g. `DAGL`, `daglig-leder`, `skattegrunnlag`.
        name: Option<String>,
    },
    /// Save, load, verify or describe graph snapshots.
    #[command(subcommand)]
    Snapshot(persist_cli::SnapshotCommand),
    /// Apply a JSON Lines event file in order and save the world as a snapshot.
    Import(persist_cli::ImportArgs),
    /// Crash-test child: applies random batches to a durable store until killed.
    #[command(name = "__crash-child", hide = true)]
    CrashChild(persist_cli::CrashChildArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Snapshot(cmd) => persist_cli::snapshot_command(cmd),
        Command::Import(args) => persist_cli::import_command(args),
        Command::CrashChild(args) => persist_cli::crash_child(args),
        Command::Test { files } => {
            let mut report = delegraph::scenario::Report::default();
            for f in &files {
                report.merge(delegraph::scenario::run_file(f));
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
