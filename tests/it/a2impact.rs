//! The Altinn 2 cut-off report agrees with `simulate` of `retire_a2_roles`.

use std::collections::BTreeSet;
use std::path::Path;

use delegraph::a2impact;
use delegraph::event::{Empty, Event};
use delegraph::mutate::{self, Access};

fn world_before_cutoff() -> delegraph::world::World {
    // The repository's own cut-off scenario, up to (not including) the cut-off itself.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/a2-cutoff.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.find("  - retire_a2_roles: {}").unwrap();
    let dir = std::env::temp_dir().join(format!("delegraph-a2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Tests run in parallel threads of one process: one file each.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = dir.join(format!("world-{n}.yaml"));
    std::fs::write(&file, &text[..cut]).unwrap();
    delegraph::load::load_world(&file).unwrap()
}

#[test]
fn report_lists_exactly_the_permits_simulate_says_are_lost() {
    let mut w = world_before_cutoff();
    let report = a2impact::report(&w, &a2impact::Filter::default(), |_, _| {});
    let from_report: BTreeSet<(String, String, String, String)> = report
        .lost
        .iter()
        .map(|l| {
            (
                l.subject.clone(),
                l.party.clone(),
                l.resource.clone(),
                l.action.clone(),
            )
        })
        .collect();
    let sim = mutate::simulate(&mut w, &Event::RetireA2Roles(Empty {})).unwrap();
    let from_simulate: BTreeSet<(String, String, String, String)> = sim
        .lost
        .iter()
        .filter_map(|a| match a {
            Access::Resource {
                subject,
                party,
                resource,
                action,
            } => Some((subject.clone(), party.clone(), resource.clone(), action.clone())),
            Access::Package { .. } => None,
        })
        .collect();
    assert_eq!(from_report, from_simulate);
    assert_eq!(from_report.len(), 2);
}

#[test]
fn a_lost_permit_names_the_restoring_package_and_its_grantors() {
    let w = world_before_cutoff();
    let report = a2impact::report(&w, &a2impact::Filter::default(), |_, _| {});
    let mailbox = report
        .lost
        .iter()
        .find(|l| l.resource == "ske-postkasse")
        .unwrap();
    assert_eq!(mailbox.subject, "old-hand");
    assert_eq!(
        mailbox.restoring_packages,
        vec!["ordinaer-post-til-virksomheten".to_string()]
    );
    // The CEO holds the package through her role (can_delegate); the two rightholders
    // were given it directly, and a package grant always counts as can_delegate.
    assert_eq!(
        mailbox.grantors,
        vec!["both".to_string(), "ceo".to_string(), "modern".to_string()]
    );
    assert!(mailbox.rests_on.iter().any(|p| p.contains("signe")));
    // A policy that names no package leaves nothing to restore with.
    let brg = report
        .lost
        .iter()
        .find(|l| l.resource == "brg-endringsmelding")
        .unwrap();
    assert!(brg.restoring_packages.is_empty());
    let svg = a2impact::to_svg(&report);
    assert!(svg.starts_with("<svg") && svg.contains("ske-postkasse"));
    let csv = a2impact::to_csv(&report);
    assert_eq!(csv.lines().count(), 1 + report.lost.len());
}

#[test]
fn filters_by_owner_and_resource() {
    let w = world_before_cutoff();
    let only_skd = a2impact::Filter {
        owner: Some("skd".into()),
        resource: None,
    };
    let r = a2impact::report(&w, &only_skd, |_, _| {});
    assert!(r.lost.iter().all(|l| l.owner == "skd"));
    assert_eq!(r.resources.len(), 1);
    let only_brg = a2impact::Filter {
        owner: None,
        resource: Some("brg-endringsmelding".into()),
    };
    let r = a2impact::report(&w, &only_brg, |_, _| {});
    assert_eq!(r.lost.len(), 1);
}
