//! Reading a version 5 file back without building a world: what a checkpoint does
//! before it retires anything behind the previous snapshot.
//!
//! A full load builds a second world beside the live one (on a national world, gigabytes
//! for seconds, and the allocator's and the page tables' work on every core). This reads
//! every byte instead, section by section, and checks what can be checked from the file
//! alone:
//!
//! * the header, the footer and its index (as a load does), every block's and every
//!   section's crc32;
//! * every record decodes, is of a kind its section may hold, and the counts of every
//!   section match the footer's (so the header's too);
//! * the global section: exactly one `World` record, no resource twice, every resource
//!   rule's token known to the catalogue;
//! * a parties section: every id is a valid id of this partition, none twice;
//! * an edges section: its sources in place order and within the section's partition,
//!   every party named by place exists (its partition's parties section holds that many
//!   records), every role and package is in the catalogue, every granted resource is one
//!   of the global section's, no edge twice from one source, at most one main unit per
//!   sub-unit.
//!
//! Not checked (they need the world): the system-user, decision-point, consent and
//! supplier records' references to parties and the identifiers' uniqueness across
//! parties. The snapshot was encoded from a world that held them, so the read-back is
//! about what the bytes say after they reached the disk.
//!
//! The sections are read by at most `threads` workers, each of which may lower its own
//! priority first, so a checkpoint's read-back leaves the other cores to the readers.

use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use super::{
    EdgeAt, GrantRef, InstanceGrantRef, PLACED_VERSION, PartyRecordRef, SectionEntry, SectionKind, Source,
    decode_record, frames, in_section, read_index, read_section,
};
use crate::catalog::Catalog;
use crate::graph::partition_of;
use crate::persist::error::SnapshotError;
use crate::persist::snapshot::{Counts, Header, Record, Result, bad};

/// What a read-back found: the file's header and schema version.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub version: u32,
    /// Records read, over every section.
    pub records: u64,
}

/// Reads a version 5 (or later) file back section by section (see the module doc) on at
/// most `threads` workers; `on_thread` runs first on each worker (to lower its priority).
pub(in crate::persist::snapshot) fn verify(
    src: &dyn Source,
    threads: usize,
    on_thread: &(dyn Fn() + Sync),
) -> Result<Verified> {
    let (header, version, _, footer) = read_index(src)?;
    if version < PLACED_VERSION {
        return Err(SnapshotError::Corrupt(format!(
            "schema version {version}: only version {PLACED_VERSION} on is read back by sections"
        )));
    }
    let p = footer.partitions;
    let secs = &footer.sections;
    let catalog = Catalog::builtin();
    let global = secs.first().ok_or(SnapshotError::Truncated("section"))?;
    let resources = verify_global(src, global, catalog).map_err(in_section(global, p))?;
    // The parties each partition holds, from the footer (its parties sections are
    // checked against these counts below, so an edge's place is checked against what
    // the file really holds).
    let sizes: Vec<u64> = secs
        .iter()
        .filter(|e| e.kind == SectionKind::Parties)
        .map(|e| e.counts.parties)
        .collect();
    let rest = secs.get(1..).unwrap_or_default();
    let check = |e: &SectionEntry| -> Result<()> {
        match e.kind {
            SectionKind::Parties => verify_parties(src, e, p),
            SectionKind::Edges => verify_edges(src, e, &sizes, &resources, catalog),
            SectionKind::Global => Err(SnapshotError::Corrupt("a second global section".into())),
        }
        .map_err(in_section(e, p))
    };
    on_each(rest.len(), threads, on_thread, |j| match rest.get(j) {
        Some(e) => check(e),
        None => Err(SnapshotError::Truncated("section")),
    })?;
    Ok(Verified {
        records: header.counts.total(),
        header,
        version,
    })
}

/// Runs `job(j)` for every `j < jobs` on at most `threads` threads, stopping at the first
/// error; returns the error of the lowest-numbered failed job.
fn on_each(
    jobs: usize,
    threads: usize,
    on_thread: &(dyn Fn() + Sync),
    job: impl Fn(usize) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first: Mutex<Option<(usize, SnapshotError)>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, jobs.max(1)) {
            s.spawn(|| {
                on_thread();
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Err(e) = job(j) {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut f) = first.lock()
                            && f.as_ref().is_none_or(|(at, _)| j < *at)
                        {
                            *f = Some((j, e));
                        }
                    }
                }
            });
        }
    });
    match first.into_inner() {
        Ok(None) if next.load(Ordering::Relaxed) >= jobs => Ok(()),
        Ok(Some((_, e))) => Err(e),
        _ => Err(SnapshotError::Corrupt("a verifying thread panicked".into())),
    }
}

/// The global section: its records decode and belong there, one `World` record, no
/// resource twice and every rule token known. Returns the resources' ids.
fn verify_global(src: &dyn Source, e: &SectionEntry, catalog: &'static Catalog) -> Result<FxHashSet<String>> {
    let mut index = 0;
    let mut seen = Counts::default();
    let mut worlds = 0u32;
    let mut resources = FxHashSet::default();
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            crate::background::pace_checkpoint();
            let r = decode_record(i, rec)?;
            match &r {
                Record::Party(_)
                | Record::Assignment(_)
                | Record::Delegation(_)
                | Record::MainUnit(_)
                | Record::End(_) => {
                    return Err(bad(i, "a party, edge or end record in the global section".into()));
                }
                Record::World(_) => worlds += 1,
                Record::Resource(res) => {
                    crate::model::check_id("resource id", &res.id).map_err(|err| bad(i, err.message))?;
                    for rule in &res.rules {
                        for t in &rule.any_of {
                            crate::mutate::parse_token(catalog, t).map_err(|err| bad(i, err.to_string()))?;
                        }
                    }
                    if !resources.insert(res.id.clone()) {
                        return Err(bad(i, format!("duplicate resource `{}`", res.id)));
                    }
                }
                _ => {}
            }
            seen.add(&r);
            Ok(())
        })
    })?;
    if seen != e.counts {
        return Err(SnapshotError::Corrupt(format!(
            "records {seen:?} where the footer says {:?}",
            e.counts
        )));
    }
    if worlds != 1 {
        return Err(SnapshotError::Corrupt(format!(
            "{worlds} world records (one expected)"
        )));
    }
    Ok(resources)
}

/// A set of ids held in one string: a hash of each id to where it is, the rare id whose
/// hash another id already has kept aside.
#[derive(Default)]
struct Ids {
    text: String,
    at: FxHashMap<u64, (usize, usize)>,
    aside: Vec<String>,
}

impl Ids {
    /// Adds `id`; false if it was there.
    fn insert(&mut self, id: &str) -> bool {
        let h = FxBuildHasher.hash_one(id);
        match self.at.get(&h) {
            None => {
                self.at.insert(h, (self.text.len(), id.len()));
                self.text.push_str(id);
                true
            }
            Some(&(a, n)) if self.text.get(a..a + n) == Some(id) => false,
            Some(_) if self.aside.iter().any(|s| s == id) => false,
            Some(_) => {
                self.aside.push(id.to_string());
                true
            }
        }
    }
}

/// A parties section: every record a party of this partition with a valid id, none
/// twice, as many as the footer says.
fn verify_parties(src: &dyn Source, e: &SectionEntry, partitions: u32) -> Result<()> {
    let mut index = 0;
    let mut ids = Ids::default();
    let mut n = 0u64;
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            crate::background::pace_checkpoint();
            let PartyRecordRef::Party(p) = rmp_serde::from_slice(rec)
                .map_err(|err| bad(i, format!("not a party record in a parties section: {err}")))?;
            crate::model::check_id("party id", p.id).map_err(|err| bad(i, err.message))?;
            if partition_of(p.id, partitions as usize) != e.partition as usize {
                return Err(bad(i, format!("party `{}` belongs to another partition", p.id)));
            }
            if !ids.insert(p.id) {
                return Err(bad(i, format!("duplicate party `{}`", p.id)));
            }
            n += 1;
            Ok(())
        })
    })?;
    if n != e.counts.parties {
        return Err(SnapshotError::Corrupt(format!(
            "{n} parties where the footer says {}",
            e.counts.parties
        )));
    }
    Ok(())
}

/// An edges section of a version 5 file (see the module doc).
fn verify_edges(
    src: &dyn Source,
    e: &SectionEntry,
    sizes: &[u64],
    resources: &FxHashSet<String>,
    catalog: &'static Catalog,
) -> Result<()> {
    let own = sizes.get(e.partition as usize).copied().unwrap_or(0);
    let mut index = 0;
    let mut seen = Counts::default();
    // The source whose edges are being read, and what each of them says:
    // (kind, receiver, facilitator or receiver, role).
    let mut group: Option<u32> = None;
    let mut keys: Vec<(u8, u64, u64, u16)> = Vec::new();
    let mut last = 0;
    let check_group = |keys: &mut Vec<(u8, u64, u64, u16)>, source: u32, i: u64| -> Result<()> {
        keys.sort_unstable();
        if keys.iter().filter(|k| k.0 == 2).count() > 1 {
            return Err(bad(
                i,
                format!("party {source} of partition {} has two main units", e.partition),
            ));
        }
        if keys.windows(2).any(|w| w.first() == w.get(1)) {
            return Err(bad(
                i,
                format!("party {source} of partition {} has an edge twice", e.partition),
            ));
        }
        keys.clear();
        Ok(())
    };
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            crate::background::pace_checkpoint();
            last = i;
            let edge = EdgeAt::decode(i, rec)?;
            let from = edge.source();
            match group {
                Some(at) if at == from => {}
                Some(at) if at > from => {
                    return Err(bad(
                        i,
                        format!("source {from} after source {at}: edges out of order"),
                    ));
                }
                _ => {
                    if let Some(at) = group {
                        check_group(&mut keys, at, i)?;
                    }
                    if u64::from(from) >= own {
                        return Err(bad(
                            i,
                            format!(
                                "names party {from} of partition {}, which does not exist",
                                e.partition
                            ),
                        ));
                    }
                    group = Some(from);
                }
            }
            let party = |at: u64| -> Result<u64> {
                let (p, k) = (at >> 32, at & 0xffff_ffff);
                match sizes.get(p as usize) {
                    Some(n) if k < *n => Ok(at),
                    _ => Err(bad(
                        i,
                        format!("names party {k} of partition {p}, which does not exist"),
                    )),
                }
            };
            let role = |code: &str| -> Result<u16> {
                catalog
                    .role_id(code)
                    .map(|r| r.0)
                    .ok_or_else(|| bad(i, format!("names unknown role `{code}`")))
            };
            let packages = |codes: &[&str]| -> Result<()> {
                match codes.iter().find(|c| catalog.package_id(c).is_none()) {
                    Some(c) => Err(bad(i, format!("names unknown package `{c}`"))),
                    None => Ok(()),
                }
            };
            let resource = |id: &str| -> Result<()> {
                if resources.contains(id) {
                    Ok(())
                } else {
                    Err(bad(i, format!("names unknown resource `{id}`")))
                }
            };
            let grants = |gs: &[GrantRef<'_>]| gs.iter().try_for_each(|g| resource(g.resource));
            let instances = |gs: &[InstanceGrantRef<'_>]| gs.iter().try_for_each(|g| resource(g.resource));
            match edge {
                EdgeAt::Assignment(a) => {
                    seen.assignments += 1;
                    let to = party(a.to)?;
                    keys.push((0, to, to, role(a.role)?));
                    packages(&a.packages)?;
                    grants(&a.resources)?;
                    instances(&a.instances)?;
                }
                EdgeAt::Delegation(d) => {
                    seen.delegations += 1;
                    let facilitator = party(d.facilitator)?;
                    let agent = party(d.agent)?;
                    keys.push((1, agent, facilitator, role(d.role)?));
                    packages(&d.packages)?;
                    grants(&d.resources)?;
                }
                EdgeAt::MainUnit(m) => {
                    seen.main_units += 1;
                    let main = party(m.main)?;
                    keys.push((2, main, main, role(m.role)?));
                }
            }
            Ok(())
        })
    })?;
    if let Some(at) = group {
        check_group(&mut keys, at, last)?;
    }
    if seen != e.counts {
        return Err(SnapshotError::Corrupt(format!(
            "records {seen:?} where the footer says {:?}",
            e.counts
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The checks that a damaged but well-checksummed file would need: edges section
    //! built here record by record.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::super::{
        AssignmentOut, Bytes, CodesOut, EdgeOut, GrantsOut, InstancesOut, MainUnitOut, SectionWriter,
    };
    use super::*;
    use crate::catalog::PackageSet;
    use crate::world::World;

    /// An edges section of partition 0 holding `edges` (source position, receiver place,
    /// role code; a receiver of `u64::MAX` makes a main-unit link to place 0 instead).
    fn section(edges: &[(u32, u64, &str)]) -> (Vec<u8>, SectionEntry) {
        let w = World::new();
        let empty = PackageSet::default();
        let grants = Default::default();
        let instances = Default::default();
        let mut sw = SectionWriter::new();
        for &(from, to, role) in edges {
            let r = if to == u64::MAX {
                sw.counts.main_units += 1;
                EdgeOut::MainUnit(MainUnitOut {
                    sub: from,
                    main: 0,
                    role,
                })
            } else {
                sw.counts.assignments += 1;
                EdgeOut::Assignment(AssignmentOut {
                    from,
                    to,
                    role,
                    packages: CodesOut(&empty, w.catalog),
                    resources: GrantsOut(&grants, &w),
                    instances: InstancesOut(&instances, &w),
                })
            };
            sw.push_ser(&r).unwrap();
        }
        let (bytes, counts) = sw.finish().unwrap();
        let e = SectionEntry {
            kind: SectionKind::Edges,
            partition: 0,
            offset: 0,
            len: bytes.len() as u64,
            crc: crc32fast::hash(&bytes),
            counts,
        };
        (bytes, e)
    }

    fn check(edges: &[(u32, u64, &str)], sizes: &[u64]) -> Result<()> {
        let (bytes, e) = section(edges);
        verify_edges(
            &Bytes(&bytes),
            &e,
            sizes,
            &FxHashSet::default(),
            Catalog::builtin(),
        )
    }

    fn role() -> &'static str {
        &Catalog::builtin().role(crate::model::RoleId(0)).code
    }

    #[test]
    fn well_formed_edges_pass() {
        let r = role();
        check(&[(0, 1, r), (0, (1 << 32) | 2, r), (1, u64::MAX, r)], &[2, 3]).unwrap();
    }

    #[test]
    fn a_place_past_its_partition_is_refused() {
        let r = role();
        let e = check(&[(0, (1 << 32) | 3, r)], &[2, 3]).unwrap_err().to_string();
        assert!(
            e.contains("names party 3 of partition 1, which does not exist"),
            "{e}"
        );
        let e = check(&[(0, 5 << 32, r)], &[2, 3]).unwrap_err().to_string();
        assert!(e.contains("partition 5, which does not exist"), "{e}");
        let e = check(&[(2, 0, r)], &[2, 3]).unwrap_err().to_string();
        assert!(e.contains("names party 2 of partition 0"), "{e}");
    }

    #[test]
    fn duplicates_disorder_and_unknown_codes_are_refused() {
        let r = role();
        let e = check(&[(0, 1, r), (0, 1, r)], &[2]).unwrap_err().to_string();
        assert!(e.contains("has an edge twice"), "{e}");
        let e = check(&[(0, u64::MAX, r), (0, u64::MAX, r)], &[2])
            .unwrap_err()
            .to_string();
        assert!(e.contains("two main units"), "{e}");
        let e = check(&[(1, 0, r), (0, 1, r)], &[2]).unwrap_err().to_string();
        assert!(e.contains("out of order"), "{e}");
        let e = check(&[(0, 1, "no-such-role")], &[2]).unwrap_err().to_string();
        assert!(e.contains("unknown role `no-such-role`"), "{e}");
    }

    #[test]
    fn a_count_that_differs_from_the_footer_is_refused() {
        let r = role();
        let (bytes, mut e) = section(&[(0, 1, r)]);
        e.counts.assignments += 1;
        let err = verify_edges(
            &Bytes(&bytes),
            &e,
            &[2],
            &FxHashSet::default(),
            Catalog::builtin(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("where the footer says"), "{err}");
    }
}
