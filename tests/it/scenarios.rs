//! The shared acceptance scenarios, run in-process. They live in `../shared/scenarios`
//! beside the repository; when that folder is absent the test says so and skips.

use std::path::{Path, PathBuf};

use delegraph::scenario;

fn shared_scenarios() -> Option<Vec<PathBuf>> {
    crate::partitions::yaml_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/scenarios"))
}

/// Scenario files that need parts of the engine not built yet, with the reason.
const PENDING: &[(&str, &str)] = &[];

#[test]
fn shared_scenarios_pass() {
    let Some(files) = shared_scenarios() else {
        eprintln!("SKIPPED: ../shared/scenarios is not beside the repository");
        return;
    };
    assert!(
        !files.is_empty(),
        "no scenario files found in ../shared/scenarios"
    );
    let mut report = scenario::Report::default();
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some((_, why)) = PENDING.iter().find(|(p, _)| *p == name) {
            eprintln!("skipped {name}: needs {why}");
            continue;
        }
        report.merge(scenario::run_file(f));
    }
    let lines: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(report.failed, 0, "failed steps:\n{}", lines.join("\n"));
    assert!(report.passed > 100, "too few steps ran: {}", report.passed);
}

/// The project's own scenario files (`tests/scenarios/*.yaml`) must all pass.
#[test]
fn own_scenarios_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let Ok(rd) = std::fs::read_dir(&dir) else { return };
    let mut report = scenario::Report::default();
    for f in rd.filter_map(|e| e.ok().map(|e| e.path())) {
        if f.extension().is_some_and(|x| x == "yaml") {
            report.merge(scenario::run_file(&f));
        }
    }
    let lines: Vec<String> = report.failures.iter().map(|f| f.to_string()).collect();
    assert_eq!(report.failed, 0, "failed steps:\n{}", lines.join("\n"));
}
