//! `resolve::actor_records` (a write's actor check, answered from the actor's side)
//! against `resolve::records` (the check path's answer): on random worlds of the model-
//! based property test (key roles, main units and sub-units, an ENK and its owner,
//! client delegations, rightholder grants with and without `by`, access-manager packages
//! — `tilgangsstyrer`, `innbygger-tilgangsstyring-privatperson` — and re-delegation),
//! for every (subject, party) pair and every package of the test vocabulary, the two
//! must give the same records (as multisets: their order may differ) and the same
//! delegation verdicts — whichever way the actor's side finds a source's edges (its
//! list read, or pair by pair: `resolve::SourceLists`); `resolve::actor_delegation_records`
//! must give exactly the records of `records` that the delegation check counts
//! (`Record::counts_for_delegation`). Part of the history is applied
//! after the world is shared, so that the lookups also go through the graph's delta, and
//! the worlds have 1 or 3 graph partitions (remote edges).

use std::cell::Cell;

use delegraph::graph::NodeId;
use delegraph::mutate;
use delegraph::resolve::{self, DelegationVerdict, Origin, Record, Repeat, SourceLists};
use delegraph::world::World;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use crate::prop::{Op, PACKAGES, concretize, config, op_strategy, setup_events, setup_reference};
use crate::reference::RefWorld;

/// How often the compared answers had each shape, over all cases: the comparison would
/// pass vacuously if the worlds never reached them.
#[derive(Default)]
struct Seen {
    key_role: Cell<u64>,
    sub_unit: Cell<u64>,
    owner: Cell<u64>,
    delegation: Cell<u64>,
    role_map: Cell<u64>,
    yes: Cell<u64>,
    no: Cell<u64>,
    /// Pairs with records the delegation check does not count (and
    /// `actor_delegation_records` leaves out).
    not_counted: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

fn sorted(recs: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = recs.iter().map(|r| format!("{r:?}")).collect();
    v.sort();
    v
}

/// Compares the two answers for every pair of parties of `w`.
fn compare_all(w: &World, seen: &Seen) -> Result<(), String> {
    let c = w.catalog;
    let parties: Vec<NodeId> = w.graph.parties().map(|(n, _)| n).collect();
    let packages: Vec<_> = PACKAGES.iter().filter_map(|p| c.package_id(p)).collect();
    for &x in &parties {
        for &t in &parties {
            let old = resolve::records(w, x, Some(t));
            let counted: Vec<Record> = old
                .iter()
                .filter(|r| r.counts_for_delegation())
                .cloned()
                .collect();
            // The counted choice, and each source read or asked pair by pair throughout.
            for lists in [SourceLists::Counted, SourceLists::Read, SourceLists::Pairwise] {
                let new = resolve::actor_records_by(w, x, t, lists);
                if sorted(&old) != sorted(&new) {
                    return Err(format!(
                        "records of `{}` for `{}`: records {old:?}, actor_records ({lists:?}) {new:?}",
                        w.graph.ext_id(x),
                        w.graph.ext_id(t)
                    ));
                }
                // Only the records the delegation check counts, and all of them.
                let new = resolve::actor_delegation_records_by(w, x, t, lists);
                if sorted(&counted) != sorted(&new) {
                    return Err(format!(
                        "counted records of `{}` for `{}`: records {counted:?}, actor_delegation_records ({lists:?}) {new:?}",
                        w.graph.ext_id(x),
                        w.graph.ext_id(t)
                    ));
                }
            }
            if counted.len() < old.len() {
                bump(&seen.not_counted);
            }
            for r in &old {
                match (r.origin, r.repeat) {
                    (_, Some(Repeat::SubUnit { .. })) => bump(&seen.sub_unit),
                    (_, Some(Repeat::Owner { .. })) => bump(&seen.owner),
                    (Origin::KeyRole { .. }, _) => bump(&seen.key_role),
                    (Origin::Delegation { .. }, _) => bump(&seen.delegation),
                    _ => {}
                }
                if r.mapped_from.is_some() {
                    bump(&seen.role_map);
                }
            }
            for &p in &packages {
                let a = resolve::can_delegate_package(w, x, t, p);
                let b = resolve::actor_can_delegate_package(w, x, t, p);
                if a != b {
                    return Err(format!(
                        "may `{}` pass on `{}` for `{}`: can_delegate_package {a:?}, actor_can_delegate_package {b:?}",
                        w.graph.ext_id(x),
                        c.package(p).code,
                        w.graph.ext_id(t)
                    ));
                }
                bump(if a == DelegationVerdict::Yes {
                    &seen.yes
                } else {
                    &seen.no
                });
            }
        }
    }
    Ok(())
}

/// Applies the skeleton and `ops` (refused events change nothing), sharing the world
/// half-way, and compares after each half.
fn run(parts: usize, ops: &[Op], seen: &Seen) -> Result<(), String> {
    let mut w = World::with_partitions(parts);
    let setup = setup_events();
    for e in &setup {
        mutate::apply(&mut w, e).map_err(|e| format!("setup refused: {e}"))?;
    }
    let mut r = RefWorld::new();
    setup_reference(&mut r, &setup);
    let mut shared = None;
    let mut log = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if i == ops.len() / 2 {
            compare_all(&w, seen).map_err(|m| format!("{m}\nafter: {log:#?}"))?;
            // Later changes go to the delta of each part.
            shared = Some(w.clone());
        }
        let e = concretize(op, &r);
        // The reference follows the engine, so that later operations pick from what
        // exists (the property test checks that the two agree).
        let _ = mutate::apply(&mut w, &e);
        let _ = r.apply(&e);
        log.push(format!("{e:?}"));
    }
    compare_all(&w, seen).map_err(|m| format!("{m}\nafter: {log:#?}"))?;
    drop(shared);
    Ok(())
}

#[test]
fn actor_records_equal_records_on_random_worlds() {
    let seen = Seen::default();
    let mut runner = TestRunner::new(config(300));
    let strategy = (
        proptest::collection::vec(op_strategy(), 1..60),
        prop_oneof![Just(1usize), Just(3usize)],
    );
    let result = runner.run(&strategy, |(ops, parts)| {
        run(parts, &ops, &seen).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The comparison reached every kind of record and both verdicts.
    for (what, n) in [
        ("key-role records", seen.key_role.get()),
        ("sub-unit repeats", seen.sub_unit.get()),
        ("owner repeats", seen.owner.get()),
        ("client-delegation records", seen.delegation.get()),
        ("RoleMap records", seen.role_map.get()),
        ("`Yes` verdicts", seen.yes.get()),
        ("refusals", seen.no.get()),
        (
            "records the delegation check does not count",
            seen.not_counted.get(),
        ),
    ] {
        assert!(n > 0, "the random worlds never gave {what}");
    }
}

/// A revoke's actor check reads first only the records the delegation check counts, and
/// the others only to find `tilgangsstyrer` through them: a holder of the main
/// administrator role (RoleMap gives it `daglig-leder`, whose `tilgangsstyrer` the
/// delegation check does not count) may not pass on a package its own role's rows do
/// not let it, but may still take that package's grant away, as an access manager of
/// the organisation.
#[test]
fn an_access_manager_through_rolemap_alone_may_revoke_but_not_grant() {
    let ev = |v: serde_json::Value| delegraph::event::Event::from_json(v).unwrap();
    let mut w = World::new();
    for e in [
        serde_json::json!({"party": {"id": "org", "kind": "organisation", "unit_type": "AS"}}),
        serde_json::json!({"party": {"id": "boss", "kind": "person"}}),
        serde_json::json!({"party": {"id": "per", "kind": "person"}}),
        serde_json::json!({"party": {"id": "ola", "kind": "person"}}),
        serde_json::json!({"grant": {"from": "org", "to": "per", "package": "konkursbo-lesetilgang"}}),
    ] {
        mutate::apply(&mut w, &ev(e)).unwrap();
    }
    let c = w.catalog;
    let [org, boss, per] = ["org", "boss", "per"].map(|id| w.graph.party_node(id).unwrap());
    // The main administrator role is no register role: no event gives it.
    let role = c.known.hovedadministrator_role;
    w.graph.set_edge(
        delegraph::graph::EdgeKey::Assignment {
            from: org,
            to: boss,
            role,
        },
        Some(delegraph::graph::Edge::Assignment(
            delegraph::graph::Assignment::new(role),
        )),
    );
    let recs = resolve::records(&w, boss, Some(org));
    let tilgangsstyrer = c.package_id("tilgangsstyrer").unwrap();
    assert!(
        recs.iter()
            .any(|r| r.packages.contains(tilgangsstyrer) && r.mapped_from == Some(role)),
        "boss holds tilgangsstyrer through RoleMap: {recs:?}"
    );
    assert!(
        !resolve::actor_delegation_records(&w, boss, org)
            .iter()
            .any(|r| r.packages.contains(tilgangsstyrer)),
        "the delegation check counts no record with tilgangsstyrer"
    );
    let pkg = c.package_id("konkursbo-lesetilgang").unwrap();
    assert_eq!(
        resolve::can_delegate_package(&w, boss, org, pkg),
        DelegationVerdict::NotHeld
    );
    let write = |verb: &str, by: &str| {
        ev(
            serde_json::json!({verb: {"from": "org", "to": "ola", "package": "konkursbo-lesetilgang", "by": by}}),
        )
    };
    let refused = mutate::apply(&mut w, &write("grant", "boss")).unwrap_err();
    assert_eq!(refused.code, delegraph::model::ErrorCode::NotAuthorized);
    let revoke = |by: &str| {
        ev(
            serde_json::json!({"revoke": {"from": "org", "to": "per", "package": "konkursbo-lesetilgang", "by": by}}),
        )
    };
    let refused = mutate::apply(&mut w, &revoke("ola")).unwrap_err();
    assert_eq!(refused.code, delegraph::model::ErrorCode::NotAuthorized);
    assert!(resolve::rights(&w, per, org).packages.contains(pkg));
    let out = mutate::apply(&mut w, &revoke("boss")).unwrap();
    assert!(out.changed);
    assert!(!resolve::rights(&w, per, org).packages.contains(pkg));
}
