//! Snapshots by partition (schema versions 4 and 5) through the public API: the committed
//! fixtures, every partition count giving the same world, the older stream layout still
//! read, and damaged sections or footers refused with a message that names them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use delegraph::persist::{invariants, snapshot};
use delegraph::world::World;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn from_jsonl(p: &str) -> World {
    let text = std::fs::read_to_string(repo(p)).unwrap();
    let mut w = World::new();
    delegraph::persist::import::import(&mut w, text.as_bytes(), &mut |_| {}).unwrap();
    w
}

/// Every record of a world, sorted: two worlds with the same dump hold the same state.
fn dump(w: &World) -> Vec<String> {
    let mut v: Vec<String> = snapshot::records(w).map(|r| format!("{r:?}")).collect();
    v.sort();
    v
}

fn encode_in(w: &World, partitions: u32) -> Vec<u8> {
    snapshot::write_world_in(w, Vec::new(), 0, partitions, &mut |_| {})
        .unwrap()
        .0
}

/// The footer of a version 4 file, read the way the format says (for the tests to aim
/// their damage).
fn footer(bytes: &[u8]) -> snapshot::Footer {
    let n = bytes.len();
    let flen = u32::from_le_bytes(bytes[n - 16..n - 12].try_into().unwrap()) as usize;
    rmp_serde::from_slice(&bytes[n - 16 - flen..n - 16]).unwrap()
}

fn section(f: &snapshot::Footer, kind: snapshot::SectionKind, partition: u32) -> &snapshot::SectionEntry {
    f.sections
        .iter()
        .find(|s| s.kind == kind && s.partition == partition)
        .unwrap()
}

/// The committed fixture of the current layout is read on every run: a change of the
/// format without a new schema version fails here.
#[test]
fn fixture_v4_snapshot_matches_its_source() {
    let (loaded, l) = snapshot::load(&repo("graph-snapshots/fixture-v4.snap"), &mut |_| {}).unwrap();
    assert_eq!(l.version, 4);
    let c = l.header.counts;
    assert_eq!(
        (c.parties, c.resources, c.assignments, c.delegations, c.main_units),
        (8, 2, 7, 1, 1)
    );
    assert!(invariants::violations(&loaded).is_empty());
    let built = from_jsonl("graph-snapshots/fixture-v1.jsonl");
    assert_eq!(
        dump(&built),
        dump(&loaded),
        "rebuild graph-snapshots/fixture-v4.snap only together with a schema version bump"
    );
    assert_eq!(loaded.now, built.now);
    // The same world from the version 1 file.
    let (v1, l1) = snapshot::load(&repo("graph-snapshots/fixture-v1.snap"), &mut |_| {}).unwrap();
    assert_eq!(l1.version, 1);
    assert_eq!(dump(&v1), dump(&loaded));
}

/// The committed fixture of version 5 (edges naming parties by place) holds the same
/// world as its source and as the version 4 fixture.
#[test]
fn fixture_v5_snapshot_matches_its_source() {
    let (loaded, l) = snapshot::load(&repo("graph-snapshots/fixture-v5.snap"), &mut |_| {}).unwrap();
    assert_eq!(l.version, 5);
    let c = l.header.counts;
    assert_eq!(
        (c.parties, c.resources, c.assignments, c.delegations, c.main_units),
        (8, 2, 7, 1, 1)
    );
    assert!(invariants::violations(&loaded).is_empty());
    let built = from_jsonl("graph-snapshots/fixture-v1.jsonl");
    assert_eq!(
        dump(&built),
        dump(&loaded),
        "rebuild graph-snapshots/fixture-v5.snap only together with a schema version bump"
    );
    let (v4, _) = snapshot::load(&repo("graph-snapshots/fixture-v4.snap"), &mut |_| {}).unwrap();
    assert_eq!(dump(&v4), dump(&loaded));
}

/// `delegraph snapshot upgrade` writes an older file in the current version, with the
/// same world.
#[test]
fn snapshot_upgrade_writes_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("up.snap");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_delegraph"))
        .args(["snapshot", "upgrade"])
        .arg(repo("graph-snapshots/fixture-v4.snap"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("schema version 4"), "{text}");
    let (up, l) = snapshot::load(&out, &mut |_| {}).unwrap();
    assert_eq!(l.version, snapshot::SCHEMA_VERSION);
    let (v4, _) = snapshot::load(&repo("graph-snapshots/fixture-v4.snap"), &mut |_| {}).unwrap();
    assert_eq!(dump(&up), dump(&v4));
}

#[test]
fn the_bundled_sample_is_in_the_current_version() {
    let (_, version) = snapshot::read_header(&repo("graph-snapshots/sample.snap")).unwrap();
    assert_eq!(version, snapshot::SCHEMA_VERSION);
}

/// However many partitions a world is written in, the same world comes back.
#[test]
fn every_partition_count_gives_the_same_world() {
    let w = delegraph::load::load_world(&repo("tests/scenarios/system-users-and-requests.yaml")).unwrap();
    let sample = from_jsonl("graph-snapshots/sample.jsonl");
    for w in [&w, &sample] {
        let want = dump(w);
        assert!(want.len() > 20);
        for p in [1, 2, 7, 16, 64] {
            let bytes = encode_in(w, p);
            let f = footer(&bytes);
            assert_eq!(f.partitions, p);
            assert_eq!(f.sections.len(), 1 + 2 * p as usize);
            let back = snapshot::decode(&bytes).unwrap();
            assert_eq!(dump(&back), want, "{p} partitions");
            assert!(invariants::violations(&back).is_empty());
        }
    }
}

/// Every party sits in the section of its partition, and its edges beside it.
#[test]
fn parties_and_edges_sit_in_their_partition() {
    let w = from_jsonl("graph-snapshots/sample.jsonl");
    let bytes = encode_in(&w, 8);
    let f = footer(&bytes);
    let mut parties = 0;
    let mut edges = 0;
    for s in &f.sections {
        match s.kind {
            snapshot::SectionKind::Parties => parties += s.counts.parties,
            snapshot::SectionKind::Edges => {
                edges += s.counts.assignments + s.counts.delegations + s.counts.main_units
            }
            snapshot::SectionKind::Global => {
                assert_eq!(s.counts.resources, w.graph.resource_count() as u64)
            }
        }
    }
    assert_eq!(parties, w.graph.party_count() as u64);
    assert_eq!(edges, w.graph.edge_count() as u64);
    // More than one partition has parties: the hash spreads them.
    let used = f
        .sections
        .iter()
        .filter(|s| s.kind == snapshot::SectionKind::Parties && s.counts.parties > 0)
        .count();
    assert!(used > 4, "{used} of 8 partitions hold parties");
}

/// The stream layout of versions 1 to 3 is still read (and still written, as version 3,
/// for tools).
#[test]
fn the_stream_layout_still_round_trips() {
    let w = from_jsonl("graph-snapshots/sample.jsonl");
    let bytes = snapshot::encode_stream(&w, 5).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.snap");
    std::fs::write(&path, &bytes).unwrap();
    let (back, l) = snapshot::load(&path, &mut |_| {}).unwrap();
    assert_eq!(l.version, 3);
    assert_eq!(l.header.last_seq, 5);
    assert_eq!(dump(&back), dump(&w));
    assert_eq!(dump(&snapshot::decode(&bytes).unwrap()), dump(&w));
}

/// A file loads the same through the file reader (a handle per worker) and from memory.
#[test]
fn a_saved_file_loads_by_sections() {
    let w = from_jsonl("graph-snapshots/sample.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.snap");
    let counts = snapshot::save_in(&w, &path, 9, 3, &mut |_| {}).unwrap();
    let (back, l) = snapshot::load(&path, &mut |_| {}).unwrap();
    assert_eq!(l.version, snapshot::SCHEMA_VERSION);
    assert_eq!(l.header.last_seq, 9);
    assert_eq!(l.header.counts, counts);
    assert_eq!(l.bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(dump(&back), dump(&w));
}

/// A flipped byte inside a section is refused with the name of that section.
#[test]
fn a_corrupt_section_is_refused_by_name() {
    let w = from_jsonl("graph-snapshots/sample.jsonl");
    let bytes = encode_in(&w, 4);
    let f = footer(&bytes);
    let cases = [
        (snapshot::SectionKind::Edges, 2, "section `edges 2 of 4`"),
        (snapshot::SectionKind::Parties, 1, "section `parties 1 of 4`"),
        (snapshot::SectionKind::Global, 0, "section `global`"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (kind, p, name) in cases {
        let s = section(&f, kind, p);
        assert!(s.len > 40, "{name} is too small to damage: {s:?}");
        let mut b = bytes.clone();
        b[(s.offset + s.len / 2) as usize] ^= 0x40;
        let e = snapshot::decode(&b).unwrap_err().to_string();
        assert!(e.contains(name), "{e}");
        assert!(e.contains("checksum mismatch"), "{e}");
        // The same from a file, with the file's name in front.
        let path = dir.path().join("bad.snap");
        std::fs::write(&path, &b).unwrap();
        let e = snapshot::load(&path, &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("bad.snap") && e.contains(name), "{e}");
    }
}

/// A file whose footer is cut, or whose footer does not match its checksum, is refused.
#[test]
fn a_truncated_or_damaged_footer_is_refused() {
    let w = from_jsonl("graph-snapshots/fixture-v1.jsonl");
    let bytes = encode_in(&w, 2);
    let n = bytes.len();
    for cut in [1, 8, 16, 17, 40] {
        let e = snapshot::decode(&bytes[..n - cut]).unwrap_err().to_string();
        assert!(e.contains("does not end with a footer"), "cut {cut}: {e}");
    }
    // The footer's bytes flipped: its checksum catches it.
    let mut b = bytes.clone();
    b[n - 20] ^= 1;
    let e = snapshot::decode(&b).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch in footer"), "{e}");
    // A footer length past the start of the file.
    let mut b = bytes.clone();
    b[n - 16..n - 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = snapshot::decode(&b).unwrap_err().to_string();
    assert!(e.contains("footer length"), "{e}");
}

/// The checks of the index itself: sections must tile the file and add up to the header.
#[test]
fn an_index_that_does_not_fit_the_file_is_refused() {
    let w = from_jsonl("graph-snapshots/fixture-v1.jsonl");
    let bytes = encode_in(&w, 2);
    let n = bytes.len();
    let f = footer(&bytes);
    let rewrite = |f: &snapshot::Footer| {
        let start = f.sections[0].offset as usize;
        let end = f.sections.last().map(|s| s.offset + s.len).unwrap() as usize;
        let mut b = bytes[..end].to_vec();
        let fb = rmp_serde::to_vec(f).unwrap();
        let len = fb.len() as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&len.to_le_bytes());
        crc.update(&fb);
        b.extend_from_slice(&fb);
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&crc.finalize().to_le_bytes());
        b.extend_from_slice(&bytes[n - 8..]);
        assert!(start > 0);
        b
    };
    // Unchanged, the rewritten file loads: the cases below fail for their change only.
    assert_eq!(dump(&snapshot::decode(&rewrite(&f)).unwrap()), dump(&w));
    let mut swapped = f.clone();
    swapped.sections.swap(1, 2);
    let e = snapshot::decode(&rewrite(&swapped)).unwrap_err().to_string();
    assert!(e.contains("where `parties 0 of 2` belongs"), "{e}");
    let mut miscounted = f.clone();
    miscounted.sections[1].counts.parties += 1;
    let e = snapshot::decode(&rewrite(&miscounted)).unwrap_err().to_string();
    assert!(e.contains("header counts"), "{e}");
    let mut moved = f.clone();
    moved.sections[2].offset += 1;
    let e = snapshot::decode(&rewrite(&moved)).unwrap_err().to_string();
    assert!(e.contains("starts at byte"), "{e}");
}

/// A file loads into a graph of any number of parts: section by section into the parts
/// when the counts agree, routed by `partition_of` when they differ; the same world
/// comes back either way, and so it does from a world re-partitioned in memory.
#[test]
fn a_file_loads_into_any_number_of_graph_parts() {
    let w = from_jsonl("graph-snapshots/sample.jsonl");
    let want = dump(&w);
    for p in [1, 7, 16] {
        let bytes = encode_in(&w, p);
        for parts in [1, 3, 7, 16] {
            let back = snapshot::decode_in(&bytes, parts).unwrap();
            assert_eq!(back.graph.partitions(), parts);
            assert_eq!(dump(&back), want, "{p} sections into {parts} parts");
            assert!(invariants::violations(&back).is_empty());
            assert_eq!(back.graph.party_count(), w.graph.party_count());
            assert_eq!(back.graph.edge_count(), w.graph.edge_count());
        }
    }
    let re = snapshot::repartitioned(&w, 5).unwrap();
    assert_eq!(re.graph.partitions(), 5);
    assert_eq!(dump(&re), want);
}

/// A version 5 file loaded by the partitions' loading actors (one part each) gives the
/// same world as its records, for part counts that divide the file's partitions, and
/// (through the threads) for one that does not; a damaged section is refused by name.
#[test]
fn partition_actors_load_their_parts_of_a_file() {
    let w = from_jsonl("graph-snapshots/sample.jsonl");
    let want = dump(&w);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.snap");
    snapshot::save_in(&w, &path, 0, 4, &mut |_| {}).unwrap();
    for parts in [1, 2, 4, 3] {
        let by_parts = snapshot::PartsLoad::open(&path, parts).unwrap();
        assert_eq!(by_parts.is_some(), parts != 3, "{parts} parts");
        let (back, l) = delegraph::partition::load_snapshot(&path, parts).unwrap();
        assert_eq!(l.version, snapshot::SCHEMA_VERSION);
        assert_eq!(back.graph.partitions(), parts);
        assert_eq!(dump(&back), want, "{parts} parts");
        assert!(invariants::violations(&back).is_empty());
        assert_eq!(back.graph.edge_count(), w.graph.edge_count());
    }
    let bytes = std::fs::read(&path).unwrap();
    let f = footer(&bytes);
    let s = section(&f, snapshot::SectionKind::Edges, 1);
    let mut b = bytes.clone();
    b[(s.offset + s.len / 2) as usize] ^= 0x40;
    let bad = dir.path().join("bad.snap");
    std::fs::write(&bad, &b).unwrap();
    let e = delegraph::partition::load_snapshot(&bad, 2)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad.snap") && e.contains("section `edges 1 of 4`"),
        "{e}"
    );
}

/// A loaded world keeps no list of each party's identifiers: they are read from the
/// party. Changing one afterwards (in place, and in a copy's delta) still drops the old
/// value and indexes the new one.
#[test]
fn identifiers_of_a_loaded_party_follow_its_changes() {
    use delegraph::graph::IdentKind;
    let w = from_jsonl("graph-snapshots/sample.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.snap");
    snapshot::save_in(&w, &path, 0, 4, &mut |_| {}).unwrap();
    for parts in [1, 2] {
        for shared in [false, true] {
            let (loaded, _) = delegraph::partition::load_snapshot(&path, parts).unwrap();
            let (n, old) = loaded
                .graph
                .parties()
                .find_map(|(n, p)| Some((n, p.org_no.clone()?)))
                .expect("a party with an organisation number");
            assert_eq!(loaded.graph.party_by_ident(IdentKind::OrgNo, &old), Some(n));
            // Unshared, a change goes into the base in place; shared, into a delta.
            let mut g = loaded.graph.clone();
            let kept = shared.then_some(loaded);
            for new in ["999000111", "999000222"] {
                let before = g.party(n).unwrap().org_no.clone().unwrap();
                g.party_mut(n).unwrap().org_no = Some(new.into());
                g.reindex_party(n);
                assert_eq!(
                    g.party_by_ident(IdentKind::OrgNo, &before),
                    None,
                    "{parts} {shared}"
                );
                assert_eq!(
                    g.party_by_ident(IdentKind::OrgNo, new),
                    Some(n),
                    "{parts} {shared}"
                );
            }
            if let Some(k) = kept {
                assert_eq!(k.graph.party_by_ident(IdentKind::OrgNo, &old), Some(n));
            }
        }
    }
}
