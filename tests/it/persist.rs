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
    assert!(delegraph::decide::permits(&w, ola, fjord, mva, "read", None));
    assert!(!delegraph::decide::permits(&w, ola, fjord, mva, "write", None));
    assert!(delegraph::decide::permits(
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

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Small segments: every group starts a new one, so checkpoints can retire some.
fn small_segments() -> delegraph::persist::Options {
    delegraph::persist::Options {
        segment_limit: 64,
        ..Default::default()
    }
}

/// Three batches with a checkpoint after each, on small segments: snapshots 2 and 3
/// are kept, and the log from record 3 on.
fn three_checkpoints(dir: &Path) {
    let s = Durable::open_with(dir, small_segments()).unwrap();
    s.apply_batch(&setup_events()).unwrap();
    assert_eq!(s.checkpoint().unwrap(), 1);
    s.apply_batch(&[ev(r#"{"party": {"id": "y", "kind": "person"}}"#)])
        .unwrap();
    assert_eq!(s.checkpoint().unwrap(), 2);
    s.apply_batch(&[ev(
        r#"{"unregister_role": {"from": "org", "to": "firm", "role": "regnskapsforer"}}"#,
    )])
    .unwrap();
    assert_eq!(s.checkpoint().unwrap(), 3);
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
    assert!(
        files(dir.path()).contains(&"snap-00000000000000000001.snap".to_string()),
        "{:?}",
        files(dir.path())
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

/// Two snapshots are kept, and the log behind the older one is retired only once the
/// newer one read back.
#[test]
fn checkpoints_keep_two_snapshots_and_the_log_from_the_older() {
    let dir = tempfile::tempdir().unwrap();
    three_checkpoints(dir.path());
    let names = files(dir.path());
    let snaps: Vec<&String> = names.iter().filter(|n| n.ends_with(".snap")).collect();
    assert_eq!(
        snaps,
        ["snap-00000000000000000002.snap", "snap-00000000000000000003.snap"],
        "{names:?}"
    );
    // Segments holding only records 1 and 2 are gone; record 3 is still in the log.
    assert!(
        !names.contains(&"wal-00000000000000000001.log".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"wal-00000000000000000002.log".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"wal-00000000000000000003.log".to_string()),
        "{names:?}"
    );
    let s = Durable::open_with(dir.path(), small_segments()).unwrap();
    assert_eq!((s.recovery().snapshot_seq, s.recovery().replayed), (3, 0));
}

/// Named test: a corrupt newest snapshot falls back to the older one plus the log, and
/// the world is the same.
#[test]
fn two_snapshots_kept_and_a_corrupt_newest_falls_back_to_the_older() {
    let dir = tempfile::tempdir().unwrap();
    three_checkpoints(dir.path());
    let expected = {
        let s = Durable::open_with(dir.path(), small_segments()).unwrap();
        s.read(|w| answers(w, "kari")).unwrap()
    };
    assert!(expected.iter().any(|a| a.starts_with("kari ")), "{expected:?}");
    let newest = dir.path().join("snap-00000000000000000003.snap");
    let mut b = std::fs::read(&newest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&newest, b).unwrap();
    let s = Durable::open_with(dir.path(), small_segments()).unwrap();
    let r = s.recovery();
    assert_eq!(r.snapshot_seq, 2, "fell back to the older snapshot");
    assert_eq!(r.replayed, 1, "and replayed record 3 from the log");
    assert_eq!(r.skipped_snapshots.len(), 1, "{:?}", r.skipped_snapshots);
    assert!(
        r.skipped_snapshots[0].contains("snap-00000000000000000003.snap"),
        "{:?}",
        r.skipped_snapshots
    );
    assert_eq!(s.read(|w| answers(w, "kari")).unwrap(), expected);
    s.read(|w| {
        assert!(w.graph.party_node("y").is_some());
        assert!(!has(w, "kari", "org", "regnskapsforer-lonn"));
    })
    .unwrap();
    assert_eq!(
        s.apply_batch(&[ev(r#"{"party": {"id": "z", "kind": "person"}}"#)])
            .unwrap(),
        4
    );
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

/// Where a segment's records end: the log reserves blocks ahead of them (zeros), so the
/// file's length says nothing.
fn records_end(seg: &Path) -> u64 {
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let first: u64 = name["wal-".len()..name.len() - ".log".len()].parse().unwrap();
    delegraph::persist::wal::scan_segment(seg, first)
        .unwrap()
        .valid_len
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
    let before = records_end(&seg);
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(before)).unwrap();
    std::io::Write::write_all(&mut f, &rec[..rec.len() / 2]).unwrap();
    drop(f);
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.recovery().truncated_bytes, (rec.len() / 2) as u64);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), before);
    assert_eq!(records_end(&seg), before);
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

/// Whether `fallocate` reserves blocks in `dir` (as the log asks it to on Linux).
fn can_reserve(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::create(dir.join("reserve-probe")).unwrap();
        // SAFETY: `fallocate` on a descriptor `f` owns and keeps open for the call.
        let ok = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 4096) } == 0;
        drop(f);
        std::fs::remove_file(dir.join("reserve-probe")).unwrap();
        ok
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

/// The log reserves its newest segment's blocks ahead of the records (zeros, so a
/// group's sync does not also grow the file); a reopen reads exactly the records, says
/// nothing was truncated, and goes on appending after them. A segment that is full is
/// cut to its records before the next one starts.
#[test]
fn the_reserve_ahead_of_the_records_is_not_a_torn_tail_and_older_segments_have_none() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
    }
    let seg = newest_segment(dir.path());
    let end = records_end(&seg);
    let size = std::fs::metadata(&seg).unwrap().len();
    if can_reserve(dir.path()) {
        assert!(
            size > end,
            "the log reserved nothing past its records ({size} bytes)"
        );
    } else {
        eprintln!("SKIPPED (reserve): this file system does not reserve blocks (fallocate)");
        assert_eq!(size, end);
    }
    for i in 0..3 {
        let s = Durable::open(dir.path()).unwrap();
        assert_eq!(s.recovery().truncated_bytes, 0, "reopen {i}");
        assert_eq!(s.last_seq().unwrap(), 1 + i);
        s.apply_batch(&[ev(&format!(r#"{{"party": {{"id": "q{i}", "kind": "person"}}}}"#))])
            .unwrap();
    }
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.last_seq().unwrap(), 4);
    s.read(|w| assert!(w.graph.party_node("q2").is_some())).unwrap();
    drop(s);
    // Small segments: every one before the newest ends with its last record.
    let dir = tempfile::tempdir().unwrap();
    let opts = delegraph::persist::Options {
        segment_limit: 1024,
        ..Default::default()
    };
    {
        let s = Durable::open_with(dir.path(), opts.clone()).unwrap();
        for i in 0..40 {
            s.apply_batch(&[ev(&format!(r#"{{"party": {{"id": "p{i}", "kind": "person"}}}}"#))])
                .unwrap();
        }
    }
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 2, "{segs:?}");
    for p in &segs[..segs.len() - 1] {
        assert_eq!(std::fs::metadata(p).unwrap().len(), records_end(p), "{p:?}");
    }
    let s = Durable::open_with(dir.path(), opts).unwrap();
    assert_eq!(s.last_seq().unwrap(), 40);
    assert_eq!(s.recovery().truncated_bytes, 0);
}

/// The log appends right after its records, and refuses to open a segment with other
/// bytes after them (recovery cuts those first): it never writes after what it did not
/// write, where a later recovery would take its groups for a torn tail.
#[test]
fn the_log_never_appends_after_bytes_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
    }
    let seg = newest_segment(dir.path());
    let end = records_end(&seg);
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(end)).unwrap();
    std::io::Write::write_all(&mut f, b"junk").unwrap();
    drop(f);
    match delegraph::persist::wal::Wal::open(dir.path(), 1, 64 << 20) {
        Ok(_) => panic!("the log opened a segment with bytes after its records"),
        Err(e) => assert!(e.to_string().contains("recover the log"), "{e}"),
    }
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.recovery().truncated_bytes, 4);
    assert_eq!(
        s.apply_batch(&[ev(r#"{"party": {"id": "z", "kind": "person"}}"#)])
            .unwrap(),
        2
    );
    drop(s);
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!((s.last_seq().unwrap(), s.recovery().truncated_bytes), (2, 0));
}

#[test]
fn corruption_before_the_newest_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = delegraph::persist::Options {
        segment_limit: 64,
        ..Default::default()
    };
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

/// Named test: a flipped byte in the middle of the newest log segment (acknowledged
/// records, with later groups after them) refuses recovery with the segment, the
/// offset and the reason, and truncates nothing.
#[test]
fn a_flipped_byte_in_the_middle_of_the_newest_segment_refuses_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
        for i in 0..20 {
            s.apply_batch(&[ev(&format!(r#"{{"party": {{"id": "p{i}", "kind": "person"}}}}"#))])
                .unwrap();
        }
    }
    let seg = newest_segment(dir.path());
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = records_end(&seg) as usize / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let e = Durable::open(dir.path()).err().unwrap();
    let m = e.to_string();
    assert!(m.contains(&name), "names the segment: {m}");
    assert!(m.contains("is corrupt at byte"), "gives the offset: {m}");
    assert!(
        m.contains("is not the last one") || m.contains("a later group follows"),
        "says why it is not a torn tail: {m}"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was truncated");
    // The same damage in the last group is a torn write: cut, quietly.
    let dir2 = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir2.path()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
        s.apply_batch(&[ev(r#"{"party": {"id": "y", "kind": "person"}}"#)])
            .unwrap();
    }
    let seg2 = newest_segment(dir2.path());
    let mut b = std::fs::read(&seg2).unwrap();
    let last = records_end(&seg2) as usize - 2;
    b[last] ^= 0x01;
    std::fs::write(&seg2, &b).unwrap();
    let s = Durable::open(dir2.path()).unwrap();
    assert!(s.recovery().truncated_bytes > 0);
    assert_eq!(s.last_seq().unwrap(), 1);
}

/// Rewrites a segment (current format) from `batches`, one group per record, with
/// valid checksums throughout.
fn rewrite_segment(path: &Path, first: u64, batches: &[delegraph::persist::wal::Batch]) {
    use delegraph::persist::wal;
    let mut out = wal::segment_header(first).to_vec();
    for b in batches {
        let rec = wal::encode_record_with(b.seq, &b.events, b.digest).unwrap();
        out.extend(wal::encode_group(b.seq, &[rec]).unwrap());
    }
    std::fs::write(path, out).unwrap();
}

/// Named test: a record whose events were swapped (it still parses, its checksums are
/// recomputed) no longer does what its outcome digest says, and replay stops there.
#[test]
fn the_outcome_digest_fails_replay_on_a_tampered_record() {
    use delegraph::persist::wal;
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&setup_events()).unwrap();
        // Ends the client relationship: the delegation goes with it.
        s.apply_batch(&[ev(
            r#"{"unregister_role": {"from": "org", "to": "firm", "role": "regnskapsforer"}}"#,
        )])
        .unwrap();
        s.apply_batch(&[ev(r#"{"party": {"id": "y", "kind": "person"}}"#)])
            .unwrap();
    }
    let seg = newest_segment(dir.path());
    let scan = wal::scan_segment(&seg, 1).unwrap();
    assert_eq!(scan.batches.len(), 3);
    assert!(scan.batches.iter().all(|b| b.digest.is_some()));
    let mut batches = scan.batches.clone();
    // Same sequence number and digest, another (valid) event that removes nothing.
    batches[1].events = vec![ev(r#"{"party": {"id": "intruder", "kind": "person"}}"#)];
    rewrite_segment(&seg, 1, &batches);
    let rescan = wal::scan_segment(&seg, 1).unwrap();
    assert_eq!(rescan.tail, wal::Tail::Clean, "every checksum is valid");
    assert!(rescan.damage.is_none());
    assert_eq!(rescan.batches.len(), 3);
    let e = Durable::open(dir.path()).err().unwrap();
    assert!(matches!(e, DurableError::Digest { seq: 2, .. }), "{e}");
    let m = e.to_string();
    assert!(m.contains("log record 2"), "{m}");
    assert!(m.contains("outcome digest"), "{m}");
    // Untampered, the same records replay.
    rewrite_segment(&seg, 1, &scan.batches);
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.recovery().replayed, 3);
}

/// A log written before digests and groups (format version 1) still replays, and new
/// records go to a new segment of the current format.
#[test]
fn a_version_1_log_still_replays() {
    use delegraph::persist::wal;
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = wal::MAGIC.to_vec();
    bytes.extend(1u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(wal::encode_record(1, &setup_events()).unwrap());
    bytes.extend(wal::encode_record(2, &[ev(r#"{"party": {"id": "y", "kind": "person"}}"#)]).unwrap());
    std::fs::write(wal::segment_path(dir.path(), 1), bytes).unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        assert_eq!(s.recovery().replayed, 2);
        s.read(|w| assert!(has(w, "kari", "org", "regnskapsforer-lonn")))
            .unwrap();
        assert_eq!(
            s.apply_batch(&[ev(r#"{"party": {"id": "z", "kind": "person"}}"#)])
                .unwrap(),
            3
        );
    }
    let v2 = wal::scan_segment(&wal::segment_path(dir.path(), 3), 3).unwrap();
    assert_eq!(v2.version, wal::LOG_VERSION);
    assert_eq!(v2.batches.len(), 1);
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.recovery().replayed, 3);
    s.read(|w| assert!(w.graph.party_node("z").is_some())).unwrap();
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
                if delegraph::decide::permits(w, x, f, res, action, None) {
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

/// Regression: with the kept snapshots unreadable, an older one must not be loaded
/// when the log that would bridge it to them has been retired.
#[test]
fn an_unreadable_newest_snapshot_is_not_silently_replaced_by_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    three_checkpoints(dir.path());
    // Put an old snapshot back (as if it had survived) and break both kept ones.
    let old = snapshot::encode(&World::new(), 0).unwrap();
    std::fs::write(dir.path().join("snap-00000000000000000000.snap"), old).unwrap();
    for n in [2, 3] {
        let p = dir.path().join(format!("snap-{n:020}.snap"));
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0xff;
        std::fs::write(&p, b).unwrap();
    }
    let e = Durable::open_with(dir.path(), small_segments()).err().unwrap();
    let m = e.to_string();
    assert!(m.contains("could be read"), "{m}");
    assert!(m.contains("cannot stand in"), "{m}");
}

/// Every query about system users, by external id: request statuses, clients and
/// addable clients of every system user, clients per facilitator and agent.
fn sys_answers(w: &World) -> Vec<String> {
    use delegraph::query::{self, AddableClientsQuery, ClientsQuery, Query, RequestStatusQuery};
    let mut qs: Vec<Query> = w
        .sys
        .requests
        .keys()
        .map(|id| Query::RequestStatus(RequestStatusQuery { request: id.clone() }))
        .collect();
    for (_, p) in w.graph.parties() {
        if p.system_user_kind().is_some() {
            qs.push(Query::Clients(ClientsQuery {
                system_user: Some(p.id.to_string()),
                facilitator: None,
                agent: None,
            }));
            qs.push(Query::AddableClients(AddableClientsQuery {
                system_user: p.id.to_string(),
            }));
        }
    }
    for su in w.sys.agent_packages.keys() {
        for (_, f) in w.graph.parties() {
            qs.push(Query::Clients(ClientsQuery {
                system_user: None,
                facilitator: Some(f.id.to_string()),
                agent: Some(su.clone()),
            }));
        }
    }
    qs.iter()
        .map(|q| format!("{q:?} => {:?}", query::evaluate(w, q)))
        .collect()
}

/// Schema version 2: the system-user state (systems, requests in every state, agent
/// system users) survives save and load, and every query about it answers the same.
#[test]
fn system_user_state_survives_a_snapshot() {
    let sources = [
        repo("tests/scenarios/system-users-and-requests.yaml"),
        repo("../shared/scenarios/06-agent-system-user-clients.yaml"),
        repo("../shared/scenarios/11-standard-system-user-request.yaml"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut statuses = std::collections::BTreeSet::new();
    let mut agents = 0;
    let mut loaded_any = 0;
    for src in sources.iter().filter(|p| p.exists()) {
        let original = delegraph::load::load_world(src).unwrap();
        assert!(!original.sys.systems.is_empty(), "{}", src.display());
        let path = dir.path().join("sys.snap");
        let counts = snapshot::save(&original, &path, 3, &mut |_| {}).unwrap();
        assert_eq!(counts.systems, original.sys.systems.len() as u64);
        assert_eq!(counts.requests, original.sys.requests.len() as u64);
        assert_eq!(
            counts.agent_system_users,
            original.sys.agent_packages.len() as u64
        );
        let (loaded, l) = snapshot::load(&path, &mut |_| {}).unwrap();
        assert_eq!(l.version, snapshot::SCHEMA_VERSION);
        // Sorted: a version 4 file lists parties by partition, so a loaded world may
        // walk its parties in another order; the answers must be the same.
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let before = sorted(sys_answers(&original));
        assert!(!before.is_empty());
        assert_eq!(before, sorted(sys_answers(&loaded)), "{}", src.display());
        let recs = |w: &World| {
            let mut v: Vec<String> = snapshot::records(w).map(|r| format!("{r:?}")).collect();
            v.sort();
            v
        };
        assert_eq!(recs(&original), recs(&loaded), "{}", src.display());
        for r in original.sys.requests.values() {
            statuses.insert(delegraph::sysuser::status(&original, r).as_str());
        }
        agents += original.sys.agent_packages.len();
        loaded_any += 1;
    }
    assert!(loaded_any >= 1);
    // Pending requests of these scenarios end up timed out by their clock: the stored
    // state is still `pending`, and the derived status must survive as well.
    for s in ["accepted", "rejected", "timed_out"] {
        assert!(statuses.contains(s), "no {s} request among {statuses:?}");
    }
    assert!(agents > 0, "no agent system user");
}

// ----------------------------------------------------------------------------------
// Schema version 3: the decision point's state

/// Every `decide` request of a scenario file, with its endpoint.
fn decide_requests(path: &Path) -> Vec<(delegraph::pdp::Api, serde_json::Value)> {
    let doc: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.get("decide"))
        .map(|d| {
            let api = match d.get("api").and_then(serde_json::Value::as_str) {
                Some("external") => delegraph::pdp::Api::External,
                _ => delegraph::pdp::Api::Internal,
            };
            (api, d["request"].clone())
        })
        .collect()
}

fn decisions_of(w: &World, requests: &[(delegraph::pdp::Api, serde_json::Value)]) -> Vec<String> {
    requests
        .iter()
        .map(|(api, r)| delegraph::pdp::decide_json_api(w, r, *api).to_string())
        .collect()
}

/// Policies, instances, access lists and resources' list settings survive save and
/// load: the state is equal, and every request of the decision-point scenario gets the
/// same answer (before version 3 the policies were lost, and the Permits with them).
#[test]
fn decision_point_state_survives_a_snapshot() {
    let src = repo("tests/scenarios/pdp-decisions.yaml");
    let original = delegraph::load::load_world(&src).unwrap();
    let pdp = &original.pdp;
    assert_eq!(
        (
            pdp.policies.len(),
            pdp.instances.len(),
            pdp.access_lists.len(),
            pdp.resource_lists.len()
        ),
        (2, 2, 1, 1),
        "the scenario's decision-point state"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pdp.snap");
    let counts = snapshot::save(&original, &path, 0, &mut |_| {}).unwrap();
    assert_eq!(
        (
            counts.policies,
            counts.instances,
            counts.access_lists,
            counts.resource_lists
        ),
        (2, 2, 1, 1)
    );
    let (loaded, l) = snapshot::load(&path, &mut |_| {}).unwrap();
    assert_eq!(l.version, snapshot::SCHEMA_VERSION);
    assert_eq!(l.header.counts, counts);
    assert_eq!(loaded.pdp, original.pdp);
    let requests = decide_requests(&src);
    assert!(requests.len() >= 10);
    let before = decisions_of(&original, &requests);
    assert!(
        before.iter().filter(|a| a.contains("\"Permit\"")).count() >= 5,
        "{before:?}"
    );
    assert_eq!(before, decisions_of(&loaded, &requests));
    let recs = |w: &World| {
        let mut v: Vec<String> = snapshot::records(w).map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    assert_eq!(recs(&original), recs(&loaded));
}

/// A version 2 file cannot smuggle in decision-point records: they are refused with
/// their record index, not half-loaded.
#[test]
fn a_decision_point_record_in_a_version_2_file_is_refused() {
    let original = delegraph::load::load_world(&repo("tests/scenarios/pdp-decisions.yaml")).unwrap();
    let mut bytes = snapshot::encode_stream(&original, 0).unwrap();
    // Rewrite the version to 2 and the header checksum with it.
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[8..16 + len]);
    bytes[16 + len..20 + len].copy_from_slice(&crc.finalize().to_le_bytes());
    let Err(e) = snapshot::decode(&bytes) else {
        panic!("a version 2 file with a policy record loaded")
    };
    assert!(
        e.to_string()
            .contains("decision-point record in a version 2 file"),
        "{e}"
    );
}

/// A policy written through the durable log survives recovery by replay, and then by
/// a checkpoint's snapshot; so do an instance and an access list.
#[test]
fn a_policy_written_through_the_log_survives_replay_and_checkpoint() {
    let events: Vec<Event> = super::pdp_http::world()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Event::from_json(v.clone()).unwrap())
        .collect();
    let per_reads = super::pdp_http::json_request("1003", "read");
    let decision = |s: &Durable| {
        s.read(|w| delegraph::pdp::json::decisions(&delegraph::pdp::decide_json(w, &per_reads)))
            .unwrap()
    };
    let permit = vec![Some(delegraph::pdp::Decision::Permit)];
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&events).unwrap();
        assert_eq!(decision(&s), permit);
    }
    let state = {
        let s = Durable::open(dir.path()).unwrap();
        assert_eq!(s.recovery().replayed, 1);
        assert_eq!(decision(&s), permit, "after replay");
        assert_eq!(s.checkpoint().unwrap(), 1);
        s.apply_batch(&[
            ev(r#"{"instance": {"id": "50003/7a1c6a4e-0000-4000-8000-000000000001", "resource": "app_ttd_regnskap", "party": "bergen", "task": "Task_1"}}"#),
            ev(r#"{"access_list": {"owner": "ttd", "id": "godkjente", "members": [{"org": "bergen", "actions": ["read"]}]}}"#),
            ev(r#"{"resource": {"id": "app_ttd_regnskap", "owner": "ttd", "access_lists": ["godkjente"], "access_list_mode": "enabled"}}"#),
        ])
        .unwrap();
        s.checkpoint().unwrap();
        s.read(|w| w.pdp.clone()).unwrap()
    };
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!((s.recovery().snapshot_seq, s.recovery().replayed), (2, 0));
    assert_eq!(decision(&s), permit, "after loading the checkpoint");
    assert_eq!(s.read(|w| w.pdp.clone()).unwrap(), state);
    assert_eq!(state.instances.len(), 1);
    assert!(state.resource_lists["app_ttd_regnskap"].enabled);
}

/// `serve --checkpoint-bytes` checkpoints by log size while serving: after a few writes
/// past the limit a snapshot appears without a shutdown, and a server killed afterwards
/// recovers from it.
#[test]
fn serve_checkpoints_by_log_size_while_serving() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_delegraph"))
        .args([
            "serve",
            "--dev-no-auth",
            "--bind",
            "127.0.0.1:0",
            "--checkpoint-bytes",
            "1",
            "--clock-interval-secs",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut url = None;
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.split("listening on ").nth(1) {
            url = rest.split_whitespace().next().map(str::to_string);
            break;
        }
        line.clear();
    }
    let url = url.expect("the server printed its address");
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |body: &str| {
        let mut r = agent
            .post(format!("{url}/v1/events"))
            .content_type("application/json")
            .send(body.to_string())
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            200,
            "{}",
            r.body_mut().read_to_string().unwrap()
        );
    };
    post(r#"[{"party": {"id": "org", "kind": "organisation", "unit_type": "AS"}}]"#);
    post(r#"[{"party": {"id": "kari", "kind": "person"}}]"#);
    let snapshot = || {
        files(dir.path())
            .into_iter()
            .any(|n| n.starts_with("snap-") && n.ends_with(".snap"))
    };
    // The checkpoint thread looks every half second; allow a busy machine a minute.
    let start = std::time::Instant::now();
    while !snapshot() && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(snapshot(), "no checkpoint while serving: {:?}", files(dir.path()));
    post(r#"[{"party": {"id": "bo", "kind": "person"}}]"#);
    child.kill().unwrap();
    child.wait().unwrap();
    let s = Durable::open(dir.path()).unwrap();
    assert!(s.recovery().snapshot_seq >= 1, "{:?}", s.recovery());
    assert_eq!(s.last_seq().unwrap(), 3);
    s.read(|w| assert!(w.graph.party_node("bo").is_some())).unwrap();
}

// ----------------------------------------------------------------------------------
// Schema version 4: scope resources, suppliers and scope delegations (domain.md §10)

fn supplier_events() -> Vec<Event> {
    [
        r#"{"party": {"id": "ttd", "kind": "organisation", "unit_type": "ORGL"}}"#,
        r#"{"party": {"id": "ape", "kind": "organisation", "unit_type": "AS"}}"#,
        r#"{"party": {"id": "sky", "kind": "organisation", "unit_type": "AS"}}"#,
        r#"{"party": {"id": "orkan", "kind": "organisation", "unit_type": "AS"}}"#,
        r#"{"resource": {"id": "mva-api", "kind": "maskinporten_schema", "owner": "ttd", "scopes": ["ske:mva", "ske:felles"], "rules": [{"actions": ["scopeaccess"], "any_of": ["urn:altinn:accesspackage:maskinporten-scopes"]}]}}"#,
        r#"{"resource": {"id": "kort-api", "kind": "maskinporten_schema", "owner": "ttd", "scopes": ["ske:kort", "ske:felles"], "rules": [{"actions": ["scopeaccess"], "any_of": ["urn:altinn:accesspackage:maskinporten-scopes"]}]}}"#,
        r#"{"resource": {"id": "tom-api", "kind": "maskinporten_schema", "owner": "ttd", "rules": []}}"#,
        r#"{"add_supplier": {"consumer": "ape", "supplier": "sky"}}"#,
        r#"{"add_supplier": {"consumer": "ape", "supplier": "orkan"}}"#,
        r#"{"add_supplier": {"consumer": "orkan", "supplier": "sky"}}"#,
        r#"{"delegate_scope": {"consumer": "ape", "supplier": "sky", "resource": "mva-api"}}"#,
        r#"{"delegate_scope": {"consumer": "ape", "supplier": "sky", "resource": "kort-api"}}"#,
        r#"{"delegate_scope": {"consumer": "orkan", "supplier": "sky", "resource": "kort-api"}}"#,
    ]
    .iter()
    .map(|s| ev(s))
    .collect()
}

/// Every lookup of the supplier state, as one comparable text.
fn supplier_answers(w: &World) -> Vec<String> {
    use delegraph::supplier;
    let mut out = Vec::new();
    for p in ["ape", "sky", "orkan", "ttd"] {
        out.push(format!("suppliers {p}: {:?}", supplier::suppliers(w, p).unwrap()));
        out.push(format!("consumers {p}: {:?}", supplier::consumers(w, p).unwrap()));
        out.push(format!(
            "by consumer {p}: {:?}",
            supplier::scope_delegations(w, Some(p), None, None).unwrap()
        ));
    }
    for s in ["ske:mva", "ske:kort", "ske:felles", "ske:ingen"] {
        out.push(format!(
            "by scope {s}: {:?}",
            supplier::scope_delegations(w, None, None, Some(s)).unwrap()
        ));
    }
    out.push(format!(
        "sky for ape, ske:felles: {:?}",
        supplier::scope_delegations(w, Some("ape"), Some("sky"), Some("ske:felles")).unwrap()
    ));
    out
}

/// Scope resources, supplier relationships (with and without delegations) and scope
/// delegations survive save and load: every lookup answers the same, the records are
/// equal, and the counts are in the header.
#[test]
fn supplier_state_survives_a_snapshot() {
    let mut original = World::new();
    delegraph::mutate::apply_batch(&mut original, &supplier_events()).unwrap();
    let before = supplier_answers(&original);
    assert!(
        before.iter().any(|a| a.contains("kort-api")) && before.iter().any(|a| a.contains("orkan")),
        "{before:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("suppliers.snap");
    let counts = snapshot::save(&original, &path, 0, &mut |_| {}).unwrap();
    assert_eq!((counts.scope_resources, counts.suppliers), (3, 3));
    let (loaded, l) = snapshot::load(&path, &mut |_| {}).unwrap();
    assert_eq!(l.version, snapshot::SCHEMA_VERSION);
    assert_eq!(l.header.counts, counts);
    assert_eq!(before, supplier_answers(&loaded));
    let recs = |w: &World| {
        let mut v: Vec<String> = snapshot::records(w).map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    assert_eq!(recs(&original), recs(&loaded));
    // The loaded world goes on like the original: a removal cascades the same way.
    let remove = ev(r#"{"remove_supplier": {"consumer": "ape", "supplier": "sky", "cascade": true}}"#);
    let mut a = original.clone();
    let mut b = loaded;
    let oa = delegraph::mutate::apply(&mut a, &remove).unwrap();
    let ob = delegraph::mutate::apply(&mut b, &remove).unwrap();
    assert_eq!(oa, ob);
    assert_eq!(oa.removed_assignments.len(), 1);
    assert_eq!(supplier_answers(&a), supplier_answers(&b));
    assert_ne!(supplier_answers(&a), before);
}

/// A version 3 file cannot carry supplier records: refused with the record's index.
#[test]
fn a_supplier_record_in_a_version_3_file_is_refused() {
    let mut w = World::new();
    delegraph::mutate::apply_batch(&mut w, &supplier_events()).unwrap();
    // The stream layout is written as version 3, which has no supplier records.
    let bytes = snapshot::encode_stream(&w, 0).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 3);
    let Err(e) = snapshot::decode(&bytes) else {
        panic!("a version 3 file with supplier records loaded")
    };
    assert!(
        e.to_string().contains("supplier record in a version 3 file"),
        "{e}"
    );
}

/// The supplier events go through the durable log: replayed after a restart, and then
/// kept by a checkpoint's snapshot.
#[test]
fn supplier_events_survive_replay_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let s = Durable::open(dir.path()).unwrap();
        s.apply_batch(&supplier_events()).unwrap();
        s.read(supplier_answers).unwrap()
    };
    {
        let s = Durable::open(dir.path()).unwrap();
        assert_eq!(s.recovery().replayed, 1);
        assert_eq!(s.read(supplier_answers).unwrap(), before, "after replay");
        s.checkpoint().unwrap();
    }
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.recovery().replayed, 0);
    assert_eq!(s.read(supplier_answers).unwrap(), before, "after the checkpoint");
}

/// The log's flusher answers the writers itself, right after each sync (no publisher
/// thread): many batches staged at once are each answered once durable, with tokens in
/// staging order, and batches still staged when the store is dropped are applied,
/// made durable and answered before it is gone — recovery then has every one.
#[test]
fn staged_writes_are_answered_by_the_log_even_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let staged = |s: &Durable, from: usize, to: usize| -> Vec<delegraph::partition::Ticket> {
        (from..to)
            .map(|i| {
                let e = ev(&format!(r#"{{"party": {{"id": "p{i}", "kind": "person"}}}}"#));
                s.store().stage(std::sync::Arc::new(vec![e]))
            })
            .collect()
    };
    let (first, late) = {
        let s = Durable::open(dir.path()).unwrap();
        let first = staged(&s, 0, 200);
        let seqs: Vec<u64> = first.into_iter().map(|t| t.wait().unwrap().seq).collect();
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
        assert_eq!(s.store().visible(), 200);
        // Answered while the store goes away.
        (seqs, staged(&s, 200, 300))
    };
    assert_eq!(first.len(), 200);
    for (i, t) in late.into_iter().enumerate() {
        let c = t.wait().unwrap();
        assert_eq!(c.seq, 201 + i as u64);
        assert!(c.token >= c.seq);
    }
    let s = Durable::open(dir.path()).unwrap();
    assert_eq!(s.last_seq().unwrap(), 300);
    s.read(|w| assert!((0..300).all(|i| w.graph.party_node(&format!("p{i}")).is_some())))
        .unwrap();
}

/// A power cut while the newest segment was created can leave it with its length but
/// not its bytes (zeros or noise where the header should be). Nothing in it was
/// acknowledged, so recovery rewrites it and goes on; a garbled header with records
/// after it is still refused.
#[test]
fn a_new_segment_whose_header_never_landed_is_rewritten() {
    let noise: Vec<u8> = (0..30u8).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    for (what, content) in [
        ("7 bytes of noise", vec![0xab; 7]),
        ("20 zero bytes", vec![0u8; 20]),
        ("30 bytes of noise", noise),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Durable::open(dir.path()).unwrap();
            s.apply_batch(&[ev(r#"{"party": {"id": "p1", "kind": "person"}}"#)])
                .unwrap();
        }
        let seg = delegraph::persist::wal::segment_path(dir.path(), 2);
        std::fs::write(&seg, &content).unwrap();
        {
            let s = Durable::open(dir.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(s.last_seq().unwrap(), 1, "{what}");
            assert_eq!(s.recovery().truncated_bytes, content.len() as u64, "{what}");
            s.apply_batch(&[ev(r#"{"party": {"id": "p2", "kind": "person"}}"#)])
                .unwrap();
        }
        let s = Durable::open(dir.path()).unwrap();
        assert_eq!(
            s.last_seq().unwrap(),
            2,
            "{what}: the rewritten segment takes writes"
        );
    }
    // Records after a garbled header: acknowledged writes, so refused.
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Durable::open(dir.path()).unwrap();
        for i in 0..3 {
            s.apply_batch(&[ev(&format!(r#"{{"party": {{"id": "p{i}", "kind": "person"}}}}"#))])
                .unwrap();
        }
    }
    let seg = newest_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[..20].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    let e = Durable::open(dir.path()).err().unwrap();
    assert!(e.to_string().contains("is not a delegraph log segment"), "{e}");
}
