//! Snapshots, the durable store and recovery, through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use delegraph::event::Event;
use delegraph::persist::{Durable, DurableError, invariants, snapshot};
use delegraph::resolve;
use delegraph::world::World;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn ev(json: &str) -> Event {
    Event::from_json(serde_json::from_str(json).unwrap()).unwrap()
}

fn node(w: &World, id: &str) -> delegraph::graph::NodeId {
    w.graph
        .party_node(id)
        .unwrap_or_else(|| panic!("no party `{id}`"))
}

fn has(w: &World, x: &str, f: &str, package: &str) -> bool {
    let p = w.catalog.package_id(package).unwrap();
    resolve::has_package(w, node(w, x), node(w, f), p)
}

/// The committed fixture is read on every run: if the format changes without a new
/// schema version (and a reader for the old one), this fails.
#[test]
fn fixture_v1_snapshot_still_loads_and_answers() {
    let path = repo("graph-snapshots/fixture-v1.snap");
    let (w, loaded) = snapshot::load(&path, &mut |_| {}).unwrap();
    assert_eq!(loaded.version, 1);
    let c = loaded.header.counts;
    assert_eq!(
        (c.parties, c.resources, c.assignments, c.delegations, c.main_units),
        (8, 2, 7, 1, 1)
    );
    assert!(invariants::violations(&w).is_empty());
    assert_eq!(
        w.now.map(|t| t.to_rfc3339()).as_deref(),
        Some("2026-01-15T08:00:00+01:00")
    );
    assert!(!w.a2_retired);
    let g = &w.graph;
    assert_eq!(g.main_unit(node(&w, "fjord-bergen")), Some(node(&w, "fjord-as")));
    assert!(!g.party(node(&w, "anne")).unwrap().alive);
    assert_eq!(g.party(node(&w, "ola")).unwrap().party_id, Some(50001));
    assert!(has(&w, "kari", "fjord-as", "skattegrunnlag"));
    assert!(has(&w, "ola", "fjord-as", "skattegrunnlag"));
    assert!(!has(&w, "ola", "fjord-as", "regnskapsforer-lonn"));
    assert!(has(&w, "per", "fjord-as", "regnskapsforer-lonn"));
    assert!(!has(&w, "lise", "fjord-as", "skattegrunnlag"));
    let mva = g.resource_node("ske-mva").unwrap();
    let ola = node(&w, "ola");
    let fjord = node(&w, "fjord-as");
    assert!(resolve::permits(&w, ola, fjord, mva, "read", None));
    assert!(!resolve::permits(&w, ola, fjord, mva, "write", None));
    assert!(resolve::permits(
        &w,
        ola,
        fjord,
        mva,
        "write",
        Some("2026-01/mva-1")
    ));
    assert!(
        !g.resource(g.resource_node("nav-sykmelding").unwrap())
            .unwrap()
            .delegable
    );
}

/// The fixture snapshot holds exactly the world its JSON Lines source builds.
#[test]
fn fixture_v1_snapshot_matches_its_source() {
    let text = std::fs::read_to_string(repo("graph-snapshots/fixture-v1.jsonl")).unwrap();
    let mut built = World::new();
    delegraph::persist::import::import(&mut built, text.as_bytes(), &mut |_| {}).unwrap();
    let (loaded, _) = snapshot::load(&repo("graph-snapshots/fixture-v1.snap"), &mut |_| {}).unwrap();
    let dump = |w: &World| {
        let mut v: Vec<String> = snapshot::records(w).map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    assert_eq!(
        dump(&built),
        dump(&loaded),
        "rebuild graph-snapshots/fixture-v1.snap only together with a schema version bump"
    );
}

#[test]
fn sample_snapshot_loads_and_is_sound() {
    let (w, _) = snapshot::load(&repo("graph-snapshots/sample.snap"), &mut |_| {}).unwrap();
    assert!(w.graph.party_count() > 200);
    assert!(invariants::violations(&w).is_empty());
}

fn setup_events() -> Vec<Event> {
    vec![
        ev(r#"{"party": {"id": "org", "kind": "organisation", "unit_type": "AS"}}"#),
        ev(r#"{"party": {"id": "firm", "kind": "organisation", "unit_type": "AS"}}"#),
        ev(r#"{"party": {"id": "kari", "kind": "person"}}"#),
        ev(r#"{"register_role": {"from": "org", "to": "firm", "role": "regnskapsforer"}}"#),
        ev(r#"{"add_agent": {"facilitator": "firm", "agent": "kari"}}"#),
        ev(
            r#"{"delegate": {"client": "org", "facilitator": "firm", "agent": "kari", "role": "regnskapsforer", "packages": ["regnskapsforer-lonn"]}}"#,
        ),
    ]
}

#[test]
fn acknowledged_batches_survive_reopen_and_refused_ones_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        assert_eq!(s.apply_batch(&setup_events()).unwrap(), 1);
        let refused = s.apply_batch(&[
            ev(r#"{"party": {"id": "x", "kind": "person"}}"#),
            ev(r#"{"register_role": {"from": "nobody", "to": "x", "role": "daglig-leder"}}"#),
        ]);
        assert!(matches!(refused, Err(DurableError::Refused(_))));
        assert_eq!(s.last_seq().unwrap(), 1);
        assert_eq!(
            s.apply_batch(&[ev(r#"{"party": {"id": "y", "kind": "person"}}"#)])
                .unwrap(),
            2
        );
    }
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.recovery().replayed, 2);
    assert_eq!(s.last_seq().unwrap(), 2);
    s.read(|w| {
        assert!(has(w, "kari", "org", "regnskapsforer-lonn"));
        assert!(w.graph.party_node("x").is_none());
        assert!(w.graph.party_node("y").is_some());
    })
    .unwrap();
}

#[test]
fn checkpoint_writes_a_snapshot_and_retires_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
        assert_eq!(s.checkpoint().unwrap(), 1);
        s.apply_batch(&[ev(
            r#"{"unregister_role": {"from": "org", "to": "firm", "role": "regnskapsforer"}}"#,
        )])
        .unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "snap-00000000000000000001.snap"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "wal-00000000000000000001.log"),
        "{names:?}"
    );
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.recovery().snapshot_seq, 1);
    assert_eq!(s.recovery().replayed, 1);
    s.read(|w| {
        assert!(!has(w, "kari", "org", "regnskapsforer-lonn"));
        assert!(invariants::violations(w).is_empty());
    })
    .unwrap();
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v.pop().unwrap()
}

#[test]
fn a_torn_log_tail_is_truncated_and_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
    }
    // A record that was being written when the power went: valid length and checksum
    // fields but only half of the payload.
    let rec = delegraph::persist::wal::encode_record(
        2,
        &[ev(
            r#"{"unregister_role": {"from": "org", "to": "firm", "role": "regnskapsforer"}}"#,
        )],
    )
    .unwrap();
    let seg = newest_segment(dir.path());
    let before = std::fs::metadata(&seg).unwrap().len();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, &rec[..rec.len() / 2]).unwrap();
    drop(f);
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.recovery().truncated_bytes, (rec.len() / 2) as u64);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), before);
    assert_eq!(s.last_seq().unwrap(), 1);
    s.read(|w| assert!(has(w, "kari", "org", "regnskapsforer-lonn")))
        .unwrap();
    // The store goes on from there: the next batch gets sequence 2.
    assert_eq!(
        s.apply_batch(&[ev(r#"{"party": {"id": "z", "kind": "person"}}"#)])
            .unwrap(),
        2
    );
}

#[test]
fn corruption_before_the_newest_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = delegraph::persist::Options { segment_limit: 64 };
    {
        let s = Durable::open_with(dir.path(), opts.clone()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
        s.apply_batch(&[ev(r#"{"party": {"id": "y", "kind": "person"}}"#)])
            .unwrap();
    }
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 2, "{segs:?}");
    let first = &segs[0];
    let mut bytes = std::fs::read(first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(first, bytes).unwrap();
    let e = Durable::open_with(dir.path(), opts).err().unwrap();
    assert!(e.to_string().contains("is corrupt"), "{e}");
}

#[test]
fn concurrent_writers_share_syncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let threads = 8;
    let per = 100;
    {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
        let mut seqs: Vec<u64> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let s = &s;
                    sc.spawn(move || {
                        (0..per)
                            .map(|i| {
                                let e =
                                    ev(&format!(r#"{{"party": {{"id": "p{t}-{i}", "kind": "person"}}}}"#));
                                s.apply_batch(&[e]).unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), threads * per);
    }
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.last_seq().unwrap(), (threads * per) as u64 + 1);
    s.read(|w| assert_eq!(w.graph.party_count(), 3 + threads * per))
        .unwrap();
}

/// Everything a subject can do, by external id: for every party it acts for, the
/// roles and packages, and the permitted actions on every resource.
fn answers(w: &World, subject: &str) -> Vec<String> {
    let g = &w.graph;
    let x = node(w, subject);
    let mut out = Vec::new();
    for ap in resolve::authorized_parties(w, x) {
        let f = ap.party;
        let r = resolve::rights(w, x, f);
        let roles: Vec<&str> = r
            .roles
            .iter()
            .map(|id| w.catalog.role(*id).code.as_str())
            .collect();
        let packages: Vec<&str> = r
            .packages
            .iter()
            .map(|p| w.catalog.package(p).code.as_str())
            .collect();
        out.push(format!("{} roles={roles:?} packages={packages:?}", g.ext_id(f)));
        for (res, rr) in g.resources() {
            for action in ["read", "write", "sign"] {
                if resolve::permits(w, x, f, res, action, None) {
                    out.push(format!("{} {} {action}", g.ext_id(f), rr.id));
                }
            }
        }
    }
    out.sort();
    out
}

/// Acceptance: a world saved and loaded answers every query exactly as the original.
#[test]
fn loaded_sample_answers_exactly_as_the_imported_world() {
    let text = std::fs::read_to_string(repo("graph-snapshots/sample.jsonl")).unwrap();
    let mut original = World::new();
    delegraph::persist::import::import(&mut original, text.as_bytes(), &mut |_| {}).unwrap();
    let bytes = snapshot::encode(&original, 0).unwrap();
    let loaded = snapshot::decode(&bytes).unwrap();
    let mut compared = 0;
    for (_, p) in original.graph.parties() {
        assert_eq!(
            answers(&original, &p.id),
            answers(&loaded, &p.id),
            "answers for `{}` differ",
            p.id
        );
        compared += 1;
    }
    assert!(compared > 300);
    // The reverse query too, for every party and a few packages.
    for package in ["regnskapsforer-lonn", "skattegrunnlag", "krav-og-utlegg"] {
        let pk = original.catalog.package_id(package).unwrap();
        for (f, p) in original.graph.parties() {
            let ids = |w: &World, f| {
                let mut v: Vec<String> = resolve::holders(w, f, pk)
                    .into_iter()
                    .map(|n| w.graph.ext_id(n).to_string())
                    .collect();
                v.sort();
                v
            };
            assert_eq!(
                ids(&original, f),
                ids(&loaded, node(&loaded, &p.id)),
                "holders of {package}"
            );
        }
    }
}

/// Regression: with the newest snapshot unreadable, an older one must not be loaded
/// when the log that would bridge the two has been retired.
#[test]
fn an_unreadable_newest_snapshot_is_not_silently_replaced_by_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
        s.checkpoint().unwrap();
        s.apply_batch(&[ev(r#"{"party": {"id": "y", "kind": "person"}}"#)])
            .unwrap();
        s.checkpoint().unwrap();
    }
    // Put an old snapshot back (as if it had survived) and break the newest one.
    let old = snapshot::encode(&World::new(), 0).unwrap();
    std::fs::write(dir.path().join("snap-00000000000000000000.snap"), old).unwrap();
    let newest = dir.path().join("snap-00000000000000000002.snap");
    let mut b = std::fs::read(&newest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&newest, b).unwrap();
    let e = Durable::open(dir.path()).err().unwrap();
    assert!(e.to_string().contains("missing records"), "{e}");
}
