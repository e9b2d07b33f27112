//! A checkpoint's read-back (`snapshot::verify_file`): every section read and checked
//! without building a world; damage is refused with the section's name, and files of
//! the older versions are checked by loading them.

use std::path::{Path, PathBuf};

use delegraph::persist::snapshot;
use delegraph::world::World;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn sample() -> World {
    let text = std::fs::read_to_string(repo("graph-snapshots/sample.jsonl")).unwrap();
    let mut w = World::new();
    delegraph::persist::import::import(&mut w, text.as_bytes(), &mut |_| {}).unwrap();
    w
}

fn footer(bytes: &[u8]) -> snapshot::Footer {
    let n = bytes.len();
    let flen = u32::from_le_bytes(bytes[n - 16..n - 12].try_into().unwrap()) as usize;
    rmp_serde::from_slice(&bytes[n - 16 - flen..n - 16]).unwrap()
}

fn verify(path: &Path) -> Result<snapshot::Verified, String> {
    snapshot::verify_file(path, 2, &|| {}).map_err(|e| e.to_string())
}

#[test]
fn a_saved_world_reads_back_with_its_counts() {
    let w = sample();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.snap");
    let counts = snapshot::save(&w, &path, 42, &mut |_| {}).unwrap();
    let v = verify(&path).unwrap();
    assert_eq!(v.version, snapshot::SCHEMA_VERSION);
    assert_eq!(v.header.last_seq, 42);
    assert_eq!(v.header.counts, counts);
    assert_eq!(v.records, counts.total());
    assert!(counts.parties > 0 && counts.assignments > 0);
}

/// A flipped byte in any section, or in the footer, or a cut file, is refused; the
/// message names the file and the section.
#[test]
fn damage_anywhere_is_refused_by_name() {
    let w = sample();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.snap");
    snapshot::save_in(&w, &good, 7, 4, &mut |_| {}).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let f = footer(&bytes);
    let bad = dir.path().join("bad.snap");
    let mut damaged = 0;
    for s in &f.sections {
        if s.len < 40 {
            continue;
        }
        let mut b = bytes.clone();
        b[(s.offset + s.len / 2) as usize] ^= 0x20;
        std::fs::write(&bad, &b).unwrap();
        let e = verify(&bad).unwrap_err();
        assert!(e.contains("bad.snap") && e.contains("checksum mismatch"), "{e}");
        assert!(e.contains("section `"), "{e}");
        damaged += 1;
    }
    assert!(
        damaged >= 5,
        "only {damaged} sections were large enough to damage"
    );
    let n = bytes.len();
    let mut b = bytes.clone();
    b[n - 20] ^= 1;
    std::fs::write(&bad, &b).unwrap();
    assert!(verify(&bad).unwrap_err().contains("footer"));
    std::fs::write(&bad, &bytes[..n - 100]).unwrap();
    assert!(verify(&bad).is_err());
}

/// Files of the older versions are still checked (by a full load).
#[test]
fn older_versions_are_read_back_by_loading() {
    for (file, version) in [
        ("fixture-v1.snap", 1),
        ("fixture-v4.snap", 4),
        ("fixture-v5.snap", 5),
    ] {
        let v = verify(&repo(&format!("graph-snapshots/{file}"))).unwrap();
        assert_eq!(v.version, version, "{file}");
        assert!(v.records > 0, "{file}");
    }
}

/// `serve`'s checkpoint: each partition actor encodes its partitions' sections, the
/// checkpoint the global one; the file is in a multiple of the graph's part count (at
/// least 16 partitions) and holds the served world exactly.
#[test]
fn partition_actors_encode_a_checkpoint_that_loads_back_the_world() {
    use delegraph::api::auth::Auth;
    use delegraph::api::{ServerConfig, spawn};
    let w = sample();
    let want = {
        let mut v: Vec<String> = snapshot::records(&w).map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    for (parts, partitions) in [(1, 16), (2, 16), (3, 18)] {
        let dir = tempfile::tempdir().unwrap();
        let opts = delegraph::persist::Options {
            partitions: parts,
            ..Default::default()
        };
        let (_, log, _) = delegraph::persist::recover(dir.path(), &opts).unwrap();
        let config = ServerConfig {
            partitions: parts,
            auth: Auth::Disabled,
            workers: Some(1),
            ..ServerConfig::default()
        };
        let world = snapshot::repartitioned(&w, parts).unwrap();
        let server = spawn(config, "127.0.0.1:0", world, std::sync::Arc::new(log)).expect("server starts");
        assert_eq!(server.store.checkpoint().unwrap(), Some(0));
        server.stop();
        let path = dir.path().join(format!("snap-{:020}.snap", 0));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(footer(&bytes).partitions, partitions, "{parts} parts");
        verify(&path).unwrap();
        let (back, loaded) = snapshot::load_in(&path, parts, &mut |_| {}).unwrap();
        assert_eq!(loaded.version, snapshot::SCHEMA_VERSION);
        let mut got: Vec<String> = snapshot::records(&back).map(|r| format!("{r:?}")).collect();
        got.sort();
        assert_eq!(got, want, "{parts} parts");
    }
}
