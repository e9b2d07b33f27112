//! `resolve::actor_records` (a write's actor check, answered from the actor's side)
//! against `resolve::records` (the check path's answer): on random worlds of the model-
//! based property test (key roles, main units and sub-units, an ENK and its owner,
//! client delegations, rightholder grants with and without `by`, access-manager packages
//! — `tilgangsstyrer`, `innbygger-tilgangsstyring-privatperson` — and re-delegation),
//! for every (subject, party) pair and every package of the test vocabulary, the two
//! must give the same records (as multisets: their order may differ) and the same
//! delegation verdicts — whichever way the actor's side finds a source's edges (its
//! list read, or pair by pair: `resolve::SourceLists`). Part of the history is applied
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
    ] {
        assert!(n > 0, "the random worlds never gave {what}");
    }
}
