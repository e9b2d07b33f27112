//! The Altinn 2 cut-off report agrees with `simulate` of `retire_a2_roles`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use delegraph::a2impact;
use delegraph::event::{Empty, Event};
use delegraph::mutate::{self, Access};
use delegraph::world::World;

fn world_before_cutoff() -> delegraph::world::World {
    world_before_cutoff_of("a2-cutoff.yaml")
}

/// A scenario of `tests/scenarios`, up to (not including) its cut-off.
pub(crate) fn world_before_cutoff_of(name: &str) -> delegraph::world::World {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name);
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

/// The lost resource permits `simulate` of `retire_a2_roles` predicts.
fn lost_by_simulate(w: &mut World) -> BTreeSet<(String, String, String, String)> {
    let sim = mutate::simulate(w, &Event::RetireA2Roles(Empty {})).unwrap();
    sim.lost
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
        .collect()
}

fn lost_by_report(r: &a2impact::Report) -> BTreeSet<(String, String, String, String)> {
    r.lost
        .iter()
        .map(|l| {
            (
                l.subject.clone(),
                l.party.clone(),
                l.resource.clone(),
                l.action.clone(),
            )
        })
        .collect()
}

#[test]
fn report_lists_exactly_the_permits_simulate_says_are_lost() {
    let mut w = world_before_cutoff();
    let report = a2impact::report(&w, &a2impact::Filter::default(), |_, _| {});
    let from_report = lost_by_report(&report);
    let from_simulate = lost_by_simulate(&mut w);
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

#[test]
fn a_policy_naming_an_altinn2_role_and_a_package_loses_the_role_holders() {
    let mut w = world_before_cutoff_of("a2-cutoff-policy.yaml");
    let report = a2impact::report(&w, &a2impact::Filter::default(), |_, _| {});
    let from_report = lost_by_report(&report);
    assert_eq!(from_report, lost_by_simulate(&mut w));
    let write = |s: &str| {
        (
            s.to_string(),
            "fjord".to_string(),
            "app_skd_mva".to_string(),
            "write".to_string(),
        )
    };
    assert_eq!(from_report, BTreeSet::from([write("clerk")]));
    let l = &report.lost[0];
    assert_eq!(l.owner, "skd");
    assert_eq!(
        l.restoring_packages,
        vec!["ordinaer-post-til-virksomheten".to_string()]
    );
    // The CEO may pass the package on by her role; `modern` holds it as a grant.
    assert_eq!(l.grantors, vec!["ceo".to_string(), "modern".to_string()]);
    assert!(l.rests_on.iter().any(|p| p.contains("signe")), "{:?}", l.rests_on);
    assert_eq!(report.total_restorable(), 1);
    // The CEO's write (SIGNE through RoleMap, and the package) is kept.
    assert!(report.total_kept() >= 1);
}

#[test]
fn listing_the_first_n_keeps_the_counts_and_lists_the_first_in_pair_order() {
    let w = world_before_cutoff();
    let all = a2impact::report(&w, &a2impact::Filter::default(), |_, _| {});
    let mut first = Vec::new();
    let counted = a2impact::report_streaming(
        &w,
        &a2impact::Filter::default(),
        a2impact::Listing::First(1),
        |_, _| {},
        |l| first.push(l),
    );
    assert_eq!(counted.total_lost(), all.total_lost());
    assert_eq!(counted.total_kept(), all.total_kept());
    assert_eq!(counted.total_restorable(), all.total_restorable());
    assert_eq!(first.len(), 1);
    assert!(all.lost.contains(&first[0]));
}

/// A resource's `rules` as an Altinn XACML policy: one Permit rule per rule, its tokens
/// as subject matches (the role URN or role code split at its last `:`).
fn xacml_of(r: &delegraph::graph::Resource) -> String {
    let m = |value: &str, attr: &str, cat: &str| {
        format!(
            r#"<Match MatchId="urn:oasis:names:tc:xacml:3.0:function:string-equal-ignore-case"><AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">{value}</AttributeValue><AttributeDesignator AttributeId="{attr}" Category="{cat}" DataType="http://www.w3.org/2001/XMLSchema#string"/></Match>"#
        )
    };
    let subject = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject";
    let mut rules = String::new();
    for (i, rule) in r.rules.iter().enumerate() {
        let subjects: String = rule
            .written
            .iter()
            .filter_map(|t| t.rsplit_once(':'))
            .map(|(attr, value)| format!("<AllOf>{}</AllOf>", m(value, attr, subject)))
            .collect();
        let actions: String = rule
            .actions
            .iter()
            .map(|a| {
                format!(
                    "<AllOf>{}</AllOf>",
                    m(
                        a,
                        "urn:oasis:names:tc:xacml:1.0:action:action-id",
                        "urn:oasis:names:tc:xacml:3.0:attribute-category:action"
                    )
                )
            })
            .collect();
        let resource = m(
            &r.id,
            "urn:altinn:resource",
            "urn:oasis:names:tc:xacml:3.0:attribute-category:resource",
        );
        rules.push_str(&format!(
            r#"<Rule RuleId="r{i}" Effect="Permit"><Target><AnyOf>{subjects}</AnyOf><AnyOf><AllOf>{resource}</AllOf></AnyOf><AnyOf>{actions}</AnyOf></Target></Rule>"#
        ));
    }
    format!(
        r#"<Policy xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicyId="p" Version="1.0" RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides"><Target/>{rules}</Policy>"#
    )
}

/// Per resource (kept, lost, restorable), counted the slow way: every subject, every
/// party it acts for with an Altinn 2 record, every action, one decision at a time.
fn naive_counts(w: &World, resources: &[String]) -> BTreeMap<String, (usize, usize, usize)> {
    use delegraph::pdp::records as pdp_records;
    use delegraph::resolve::{self, DelegationVerdict};
    let c = w.catalog;
    let g = &w.graph;
    let mut out: BTreeMap<String, (usize, usize, usize)> =
        resources.iter().map(|r| (r.clone(), (0, 0, 0))).collect();
    for (x, _) in g.parties() {
        let parties: BTreeSet<_> = resolve::records(w, x, None).iter().map(|r| r.from).collect();
        for f in parties {
            let recs = resolve::records(w, x, Some(f));
            if !recs.iter().any(|r| c.is_altinn2_role(r.role)) {
                continue;
            }
            let after: Vec<_> = recs
                .iter()
                .filter(|r| !c.is_altinn2_role(r.role))
                .cloned()
                .collect();
            for id in resources {
                let rn = g.resource_node(id).unwrap();
                let res = g.resource(rn).unwrap();
                let policy = w.pdp.policies.get(id);
                let actions: BTreeSet<String> = match policy {
                    Some(p) => pdp_records::policy_actions(p),
                    None => res.rules.iter().flat_map(|r| r.actions.iter().cloned()).collect(),
                };
                for a in actions {
                    let permits = |rs: &[delegraph::resolve::Record]| {
                        delegraph::decide::permits_with(w, rs, f, rn, &a, None)
                    };
                    if !permits(&recs) {
                        continue;
                    }
                    let e = out.get_mut(id).unwrap();
                    if permits(&after) {
                        e.0 += 1;
                        continue;
                    }
                    e.1 += 1;
                    let restoring: Vec<_> = match policy {
                        Some(p) => pdp_records::permit_rule_tokens(c, p, &a).1.iter().collect(),
                        None => res
                            .rules
                            .iter()
                            .filter(|r| r.actions.contains(&a))
                            .flat_map(|r| r.any_of.iter())
                            .filter_map(|t| match t {
                                delegraph::graph::Token::Package(p) => Some(*p),
                                delegraph::graph::Token::Role(_) => None,
                            })
                            .collect(),
                    };
                    let restorable = restoring.iter().any(|p| {
                        resolve::candidate_subjects(w, f)
                            .into_iter()
                            .any(|u| resolve::can_delegate_package(w, u, f, *p) == DelegationVerdict::Yes)
                    });
                    if restorable {
                        e.2 += 1;
                    }
                }
            }
        }
    }
    out
}

/// Property: on generated worlds (some resources turned into XACML policies), the report
/// lists exactly what `simulate` of the cut-off says is lost, and its per-resource counts
/// are those of the slow one-decision-at-a-time model.
#[test]
fn report_agrees_with_simulate_and_a_naive_count_on_generated_worlds() {
    use delegraph::generate::{Params, Scale, generate_vec};
    for seed in [1, 7] {
        let mut p = Params::for_scale(Scale::Small);
        p.seed = seed;
        p.names = false;
        let mut w = World::new();
        for ev in generate_vec(&p) {
            mutate::apply(&mut w, &ev).unwrap();
        }
        let policies: Vec<Event> = w
            .graph
            .resources()
            .step_by(2)
            .map(|(_, r)| {
                Event::Policy(delegraph::event::PolicyEvent {
                    resource: r.id.clone(),
                    xml: xacml_of(r),
                })
            })
            .collect();
        assert!(!policies.is_empty());
        for ev in &policies {
            mutate::apply(&mut w, ev).unwrap();
        }
        // What someone at a party may pass on, read from the party's edges, is the union
        // over every candidate of what each may pass on.
        for (f, _) in w.graph.parties() {
            let mut union = delegraph::catalog::PackageSet::EMPTY;
            for u in delegraph::resolve::candidate_subjects(&w, f) {
                union.union_with(&delegraph::resolve::held_delegable_packages(&w, u, f));
            }
            assert_eq!(
                delegraph::resolve::delegable_at(&w, f),
                union,
                "seed {seed}: `{}`",
                w.graph.ext_id(f)
            );
        }
        let report = a2impact::report(&w, &a2impact::Filter::default(), |_, _| {});
        assert!(
            report.total_lost() > 0,
            "seed {seed}: the world should lose something"
        );
        assert!(
            report
                .resources
                .iter()
                .any(|r| w.pdp.policies.contains_key(&r.resource) && r.lost > 0),
            "seed {seed}: some XACML resource should lose permits"
        );
        let resources: Vec<String> = report.resources.iter().map(|r| r.resource.clone()).collect();
        let naive = naive_counts(&w, &resources);
        for r in &report.resources {
            assert_eq!(
                naive[&r.resource],
                (r.kept, r.lost, r.restorable_by_one_grant),
                "seed {seed}: counts of `{}`",
                r.resource
            );
        }
        assert_eq!(report.lost.len(), report.total_lost());
        // Without a listing the pairs are counted by class (the fast path): same counts.
        let counted = a2impact::report_streaming(
            &w,
            &a2impact::Filter::default(),
            a2impact::Listing::First(0),
            |_, _| {},
            |_| {},
        );
        for (a, b) in report.resources.iter().zip(&counted.resources) {
            assert_eq!(
                (a.kept, a.lost, a.restorable_by_one_grant),
                (b.kept, b.lost, b.restorable_by_one_grant),
                "seed {seed}: class counts of `{}`",
                a.resource
            );
        }
        assert_eq!(counted.total_lost(), report.total_lost());
        assert_eq!(lost_by_report(&report), lost_by_simulate(&mut w), "seed {seed}");
    }
}
