//! Unit tests of the decoders: round trips, and truncated or corrupted bytes give
//! errors, never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

use super::error::{RecordError, SnapshotError};
use super::import::parse_line;
use super::snapshot::{self, Record};
use super::wal::{self, Tail};
use crate::event::Event;
use crate::world::World;

const FIXTURE: &str = include_str!("../../graph-snapshots/fixture-v1.jsonl");

fn fixture_events() -> Vec<Event> {
    FIXTURE.lines().filter_map(|l| parse_line(l).unwrap()).collect()
}

fn fixture_world() -> World {
    let mut w = World::new();
    for e in fixture_events() {
        crate::mutate::apply(&mut w, &e).unwrap();
    }
    w
}

/// Every record of a world, sorted, as a canonical form to compare worlds by.
fn canonical(w: &World) -> Vec<String> {
    let mut v: Vec<String> = snapshot::records(w)
        .map(|r| {
            let r = match r {
                Record::Assignment(mut a) => {
                    a.packages.sort();
                    Record::Assignment(a)
                }
                other => other,
            };
            format!("{r:?}")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn snapshot_round_trips_the_world() {
    let w = fixture_world();
    let bytes = snapshot::encode(&w, 7).unwrap();
    let back = snapshot::decode(&bytes).unwrap();
    assert_eq!(canonical(&w), canonical(&back));
    assert_eq!(back.now, w.now);
    assert_eq!(back.a2_retired, w.a2_retired);
}

#[test]
fn snapshot_truncated_anywhere_is_an_error() {
    let bytes = snapshot::encode(&fixture_world(), 0).unwrap();
    for cut in 0..bytes.len() {
        let r = snapshot::decode(&bytes[..cut]);
        assert!(
            r.is_err(),
            "a snapshot cut at {cut} of {} bytes was accepted",
            bytes.len()
        );
    }
}

#[test]
fn snapshot_with_any_flipped_byte_is_an_error() {
    let bytes = snapshot::encode(&fixture_world(), 0).unwrap();
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x5a;
        assert!(snapshot::decode(&b).is_err(), "byte {i} flipped was accepted");
    }
}

#[test]
fn snapshot_with_trailing_bytes_is_an_error() {
    let mut bytes = snapshot::encode(&fixture_world(), 0).unwrap();
    bytes.push(0);
    let e = snapshot::decode(&bytes).unwrap_err();
    assert!(e.to_string().contains("after the last block"), "{e}");
}

#[test]
fn snapshot_of_an_unknown_version_is_refused_clearly() {
    let mut bytes = snapshot::encode(&fixture_world(), 0).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    let e = snapshot::decode(&bytes).unwrap_err();
    assert!(
        matches!(e, SnapshotError::UnsupportedVersion { found: 99, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("version `99` is not supported"), "{e}");
}

#[test]
fn not_a_snapshot_is_refused() {
    let e = snapshot::decode(b"{\"party\": {}}\n and more text here").unwrap_err();
    assert!(matches!(e, SnapshotError::BadMagic), "{e:?}");
}

#[test]
fn empty_world_round_trips() {
    let w = World::new();
    let back = snapshot::decode(&snapshot::encode(&w, 0).unwrap()).unwrap();
    assert_eq!(back.graph.party_count(), 0);
}

#[test]
fn snapshot_save_is_atomic_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.snap");
    std::fs::File::create(&path).unwrap().write_all(b"old").unwrap();
    snapshot::save(&fixture_world(), &path, 3, &mut |_| {}).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let (_, loaded) = snapshot::load(&path, &mut |_| {}).unwrap();
    assert_eq!(loaded.header.last_seq, 3);
}

/// Every event of the fixture, the project's scenarios and the shared scenarios
/// survives the log encoding, and together they cover every event kind.
#[test]
fn log_records_round_trip_every_event() {
    let mut events = fixture_events();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.join("tests/scenarios"), root.join("../shared/scenarios")] {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for f in rd.flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            let Ok(doc) = serde_yaml::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            for step in doc["steps"].as_array().into_iter().flatten() {
                let mut step = step.clone();
                if let Some(m) = step.as_object_mut()
                    && let Some(body) = m.values_mut().next().and_then(|b| b.as_object_mut())
                {
                    body.remove("expect_error");
                }
                if let Ok(e) = Event::from_json(step) {
                    events.push(e);
                }
            }
        }
    }
    assert!(events.len() > 20);
    let seen: std::collections::BTreeSet<&str> = events.iter().map(Event::name).collect();
    // Names of the vocabulary this build does not implement yet have no variant to log.
    let implemented = |n: &str| {
        let probe = serde_json::json!({ n: {} });
        !matches!(Event::from_json(probe), Err(e) if e.message.contains("not supported"))
    };
    let missing: Vec<&&str> = crate::event::EVENT_NAMES
        .iter()
        .filter(|n| !seen.contains(**n) && implemented(n))
        .collect();
    assert!(missing.is_empty(), "no log round trip for {missing:?}");
    // A number in an event stands for its text unless its key is one of
    // `NUMERIC_FIELDS` (`Event::from_json`): a numeric field missing from that list
    // would be turned into text and refused.
    fn numbers_outside(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Number(_) if !crate::event::NUMERIC_FIELDS.contains(&key) => {
                out.push(key.to_string())
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| numbers_outside(x, key, out)),
            serde_json::Value::Object(m) => m.iter().for_each(|(k, x)| numbers_outside(x, k, out)),
            _ => {}
        }
    }
    for e in &events {
        let mut keys = Vec::new();
        numbers_outside(&serde_json::to_value(e).unwrap(), "", &mut keys);
        assert!(
            keys.is_empty(),
            "`{}` has numeric fields {keys:?} not in NUMERIC_FIELDS",
            e.name()
        );
        assert!(
            Event::from_json(serde_json::to_value(e).unwrap()).is_ok_and(|back| back == *e),
            "{e:?}"
        );
    }
    for (i, e) in events.iter().enumerate() {
        let rec = wal::encode_record(i as u64 + 1, std::slice::from_ref(e)).unwrap();
        let (b, used) = wal::decode_record(&rec).unwrap();
        assert_eq!(used, rec.len());
        assert_eq!(b.seq, i as u64 + 1);
        assert_eq!(&b.events[0], e, "event {i} changed in the log");
    }
}

#[test]
fn log_torn_and_corrupt_tails_are_detected() {
    let evs = fixture_events();
    let mut body = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        body.extend(wal::encode_record(i as u64 + 1, std::slice::from_ref(e)).unwrap());
    }
    let (all, tail) = wal::decode_records(&body);
    assert_eq!(all.len(), evs.len());
    assert_eq!(tail, Tail::Clean);
    for cut in 0..body.len() {
        let (got, tail) = wal::decode_records(&body[..cut]);
        assert!(got.len() <= evs.len());
        if tail == Tail::Clean {
            // Only a cut exactly between records is clean.
            let whole: usize = got
                .iter()
                .map(|b| wal::encode_record(b.seq, &b.events).unwrap().len())
                .sum();
            assert_eq!(whole, cut);
        }
    }
    for i in 0..body.len() {
        let mut b = body.clone();
        b[i] ^= 0x01;
        let (got, tail) = wal::decode_records(&b);
        assert!(got.len() < evs.len(), "flipped byte {i} went unnoticed");
        assert!(matches!(tail, Tail::Bad { .. }));
    }
}

#[test]
fn log_record_with_a_huge_length_is_refused_without_allocating() {
    let mut b = vec![0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0];
    b.extend([0u8; 16]);
    assert!(matches!(wal::decode_record(&b), Err(RecordError::TooLong(_))));
    assert!(matches!(
        wal::decode_record(&[1, 2]),
        Err(RecordError::Incomplete { .. })
    ));
}

#[test]
fn import_lines_refuse_bad_input_with_a_clear_error() {
    assert_eq!(parse_line("   ").unwrap(), None);
    assert_eq!(parse_line("# comment").unwrap(), None);
    for bad in [
        "{",
        "[]",
        "{}",
        "{\"no_such_event\": {}}",
        "{\"party\": {\"id\": \"x\"}}",
        "{\"party\": {\"id\": \"x\", \"kind\": \"person\", \"colour\": \"red\"}}",
        "{\"a\": 1, \"b\": 2}",
        "\"party\"",
    ] {
        let e = parse_line(bad).unwrap_err();
        assert_eq!(e.code, crate::model::ErrorCode::InvalidInput, "{bad}: {e}");
    }
}

#[test]
fn import_reports_the_line_of_a_refused_event() {
    let text = "{\"party\": {\"id\": \"a\", \"kind\": \"person\"}}\n\n{\"register_role\": {\"from\": \"a\", \"to\": \"nobody\", \"role\": \"daglig-leder\"}}\n";
    let mut w = World::new();
    let e = super::import::import(&mut w, text.as_bytes(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().starts_with("line 3: unknown_party"), "{e}");
}

#[test]
fn pipelined_load_reports_decoder_and_loader_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A checksum error found by the decoder thread.
    let mut bytes = snapshot::encode(&fixture_world(), 0).unwrap();
    let mid = bytes.len() - 10;
    bytes[mid] ^= 0xff;
    let path = dir.path().join("flipped.snap");
    std::fs::write(&path, &bytes).unwrap();
    let e = snapshot::load(&path, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("flipped.snap"), "{e}");
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    // A reference the loader cannot resolve, in a file whose checksums are all valid.
    let header = snapshot::Header {
        created_at: "2026-01-01T00:00:00Z".into(),
        last_seq: 0,
        counts: snapshot::Counts {
            assignments: 1,
            ..Default::default()
        },
        compression: "lz4-block".into(),
        engine: "test".into(),
    };
    let mut w = snapshot::SnapshotWriter::new(Vec::new(), &header).unwrap();
    w.write(&Record::Assignment(snapshot::AssignmentRecord {
        from: "ghost".into(),
        to: "nobody".into(),
        role: "daglig-leder".into(),
        packages: vec![],
        resources: vec![],
        instances: vec![],
    }))
    .unwrap();
    let (bytes, _) = w.finish().unwrap();
    let path = dir.path().join("dangling.snap");
    std::fs::write(&path, &bytes).unwrap();
    let e = snapshot::load(&path, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("unknown party `ghost`"), "{e}");
    assert!(snapshot::decode(&bytes).is_err());
}

/// A version 2 segment body of the fixture's events, one record per event, in `groups`
/// groups; with each group's end (byte offset) and last record.
fn grouped_body(groups: usize) -> (Vec<u8>, Vec<(usize, u64)>) {
    let events = fixture_events();
    let mut body = Vec::new();
    let mut ends = Vec::new();
    let mut seq = 1u64;
    for chunk in events.chunks(events.len().div_ceil(groups)).take(groups) {
        let recs: Vec<Vec<u8>> = chunk
            .iter()
            .enumerate()
            .map(|(i, e)| wal::encode_record_with(seq + i as u64, std::slice::from_ref(e), Some(7)).unwrap())
            .collect();
        body.extend(wal::encode_group(seq, &recs).unwrap());
        seq += chunk.len() as u64;
        ends.push((body.len(), seq - 1));
    }
    assert_eq!(ends.len(), groups);
    (body, ends)
}

/// A version 2 body of five groups: a cut anywhere is a torn tail (never damage) and
/// keeps exactly the whole groups before it; a flipped byte in any group but the last
/// is damage (never a quiet truncation); one in the last group is a torn tail.
#[test]
fn log_groups_tell_a_torn_tail_from_damage_before_it() {
    let (body, ends) = grouped_body(5);
    let seq = ends[4].1 + 1;
    let (all, tail, damage) = wal::decode_groups(&body, 1);
    assert_eq!((all.len() as u64, tail, damage), (seq - 1, Tail::Clean, None));
    for cut in 0..body.len() {
        let (got, tail, damage) = wal::decode_groups(&body[..cut], 1);
        assert_eq!(damage, None, "cut at {cut}");
        let whole = ends.iter().rfind(|(e, _)| *e <= cut).map_or(0, |(_, s)| *s);
        assert_eq!(got.len() as u64, whole, "cut at {cut}");
        assert_eq!(
            tail == Tail::Clean,
            ends.iter().any(|(e, _)| *e == cut) || cut == 0
        );
    }
    let last_start = ends[3].0;
    for at in 0..body.len() {
        let mut b = body.clone();
        b[at] ^= 0x40;
        let (_, tail, damage) = wal::decode_groups(&b, 1);
        if at < last_start {
            assert!(
                damage.is_some(),
                "flip at {at} before the last group was not refused"
            );
        } else {
            assert_eq!(damage, None, "flip at {at} in the last group");
            assert!(matches!(tail, Tail::Bad { .. }), "flip at {at}");
        }
    }
}

/// Zeros from a group boundary to the end are the log's reserve of blocks (written only
/// later): a clean end after the whole groups, however many zeros. Zeros that start
/// inside a group (its lost last bytes) are still a torn tail.
#[test]
fn zeros_after_whole_groups_are_a_clean_end_and_zeros_inside_a_group_are_not() {
    let (body, ends) = grouped_body(3);
    for (end, last) in [(0, 0), (ends[0].0, ends[0].1), (ends[2].0, ends[2].1)] {
        for zeros in [1, 23, 24, 25, 4096] {
            let mut b = body[..end].to_vec();
            b.resize(end + zeros, 0);
            let (got, tail, damage) = wal::decode_groups(&b, 1);
            assert_eq!(
                (got.len() as u64, tail, damage),
                (last, Tail::Clean, None),
                "{zeros} zeros after {end} bytes"
            );
        }
    }
    // Zeros in place of a whole group, or of its header alone, with a later group after
    // them: damage, never a clean end.
    for (from, to) in [(ends[0].0, ends[1].0), (ends[0].0, ends[0].0 + wal::GROUP_HEADER)] {
        let mut b = body.clone();
        b[from..to].fill(0);
        b.resize(body.len() + 4096, 0);
        let (got, _, damage) = wal::decode_groups(&b, 1);
        assert!(damage.is_some(), "zeros over {from}..{to} before a later group");
        assert_eq!(got.len() as u64, ends[0].1);
    }
    let mut b = body[..ends[2].0 - 3].to_vec();
    b.resize(ends[2].0 + 4096, 0);
    let (got, tail, damage) = wal::decode_groups(&b, 1);
    assert_eq!(damage, None);
    assert_eq!(got.len() as u64, ends[1].1);
    assert!(
        matches!(tail, Tail::Bad { offset, .. } if offset == ends[1].0 as u64),
        "{tail:?}"
    );
}

/// A torn last group followed by noise (what a power cut can leave: the file longer than
/// what reached the disk) is a torn tail wherever the tear and however long the noise,
/// also when the noise runs past the group's declared end: nothing valid follows, so
/// nothing acknowledged is lost by cutting it. The crash test met exactly this.
#[test]
fn a_torn_last_group_followed_by_noise_is_a_torn_tail() {
    let events = fixture_events();
    let (body, ends) = grouped_body(3);
    let last_start = ends[1].0;
    let before_last = wal::decode_groups(&body[..last_start], 1).0.len();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let record = wal::encode_record(u64::MAX, &events[..1]).unwrap();
    let len = body.len() - last_start;
    for tear in (last_start + 1..body.len()).step_by(len.div_ceil(97).max(1)) {
        for noise_len in [1, 9, 64, body.len() - tear, body.len() - tear + 1, 3 * len] {
            let noise: Vec<u8> = if next() % 2 == 0 {
                (0..noise_len).map(|_| next() as u8).collect()
            } else {
                record.iter().copied().cycle().take(noise_len).collect()
            };
            let mut b = body[..tear].to_vec();
            b.extend(&noise);
            let (got, tail, damage) = wal::decode_groups(&b, 1);
            assert_eq!(damage, None, "tear at {tear}, {noise_len} bytes of noise");
            assert!(
                matches!(tail, Tail::Bad { offset, .. } if offset == last_start as u64),
                "tear at {tear}: cut where the last group starts"
            );
            assert_eq!(got.len(), before_last, "tear at {tear}, {noise_len} bytes");
        }
    }
}

/// An id of 24 printable ASCII bytes that is a valid group header (magic, length, record
/// number, count, checksum): what a hostile caller could put inside a group.
fn id_spelling_a_group_header() -> String {
    let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for a in alnum {
        for b in alnum {
            for c in alnum {
                let mut h = [b'0'; 24];
                h[..4].copy_from_slice(&wal::GROUP_MAGIC);
                h[4..7].copy_from_slice(&[*a, *b, *c]);
                let crc = crc32fast::hash(&h[..20]).to_le_bytes();
                if crc.iter().all(|x| alnum.contains(x)) {
                    h[20..].copy_from_slice(&crc);
                    return String::from_utf8(h.to_vec()).unwrap();
                }
            }
        }
    }
    panic!("no id spells a group header");
}

fn person(id: &str) -> Event {
    Event::from_json(serde_json::json!({"party": {"id": id, "kind": "person"}})).unwrap()
}

/// A party whose id spells a valid group header, inside a last group that a crash tore:
/// after the tear come noise past the group's end (the imitated power cut) or zeros in
/// place of its lost last bytes (a real one). Either way it is a torn tail, cut where
/// the group starts: a caller cannot make recovery refuse to start.
#[test]
fn an_id_that_spells_a_group_header_does_not_make_a_torn_group_damage() {
    let fake = id_spelling_a_group_header();
    assert!(wal::GroupHeader::decode(fake.as_bytes()).is_ok());
    let mut body = wal::encode_group(1, &[wal::encode_record(1, &[person("setup")]).unwrap()]).unwrap();
    let start = body.len();
    let mut events = vec![person(&fake)];
    events.extend((0..40).map(|i| person(&format!("filler-{i:03}-{}", "x".repeat(60)))));
    body.extend(wal::encode_group(2, &[wal::encode_record(2, &events).unwrap()]).unwrap());
    let end = body.len();
    let at = body
        .windows(fake.len())
        .position(|w| w == fake.as_bytes())
        .unwrap();
    assert!(at > start && at + fake.len() < end);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    for tear in (at + fake.len()..end).step_by(97) {
        let mut torn = body[..tear].to_vec();
        torn.extend(noise(end - tear + 8));
        let mut lost = body.clone();
        lost[tear..].fill(0);
        for (what, b) in [("noise", torn), ("zeros", lost)] {
            let (got, tail, damage) = wal::decode_groups(&b, 1);
            assert_eq!(damage, None, "tear at {tear}, then {what}");
            assert_eq!(got.len(), 1, "tear at {tear}, then {what}");
            assert!(
                matches!(tail, Tail::Bad { offset, .. } if offset == start as u64),
                "tear at {tear}, then {what}: {tail:?}"
            );
        }
    }
}

/// Damage across the end of one group and the header of the last (zeros, as a bad
/// sector reads): the last group's records are still there, so both groups were
/// acknowledged, and recovery refuses rather than drop them.
#[test]
fn damage_across_the_last_two_groups_is_refused() {
    let mut body = Vec::new();
    let mut ends = Vec::new();
    for seq in 1..=3u64 {
        let events: Vec<Event> = (0..5).map(|i| person(&format!("p{seq}-{i}"))).collect();
        body.extend(wal::encode_group(seq, &[wal::encode_record(seq, &events).unwrap()]).unwrap());
        ends.push(body.len());
    }
    let b2 = ends[1];
    // (Zeros in the last group's header alone cannot be told from a torn write that lost
    // the header's sector: that group is dropped, as the module doc of `wal` says.)
    for (from, to) in [(b2 - 16, b2 + 24), (b2 - 1, b2 + 1), (b2 - 40, b2 + 3)] {
        let mut b = body.clone();
        b[from..to].fill(0);
        let (_, _, damage) = wal::decode_groups(&b, 1);
        assert!(
            damage.is_some(),
            "zeros at {from}..{to} were taken for a torn tail"
        );
    }
}
