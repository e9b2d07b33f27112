//! The delegraph command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Generate a realistic world (deterministic, seeded): build it in memory and print
    /// statistics, or write its events as JSON Lines with --jsonl.
    Generate(delegraph::generate::GenerateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Generate(args) => match delegraph::generate::run(&args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
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
    }
}
