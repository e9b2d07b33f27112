//! Schema versions 4 and 5: one file, many sections, read and written in parallel.
//!
//! ```text
//! magic, version (5), header_len, header, header_crc    as in versions 1 to 3
//! section*              the global section, then the parties of partitions 0..P, then
//!                       their edges; each a run of blocks:
//!   raw_len    u32 LE   length of the decompressed block (at most MAX_BLOCK)
//!   comp_len   u32 LE   length of the compressed bytes
//!   crc        u32 LE   crc32 of raw_len, comp_len and the compressed bytes
//!   bytes               lz4 block-compressed frames, each `len u32 LE` + one rmp `Record`
//! footer       rmp      Footer { partitions, sections: [SectionEntry] }
//! footer_len   u32 LE
//! footer_crc   u32 LE   crc32 of footer_len and the footer
//! end magic    8 bytes  "DELEGIDX"
//! ```
//!
//! A party's partition is [`partition_of`] its id among the P partitions the writer chose
//! ([`DEFAULT_PARTITIONS`]); an edge lives with its source party (the `from` of an
//! assignment, the client of a delegation, the sub-unit of a main-unit link). Each
//! section entry of the footer gives the section's offset, length, crc32 of all its
//! bytes and the counts of the records it holds. The sections are contiguous, in the
//! order above, from the end of the header to the footer, so every byte of the file is
//! under a checksum.
//!
//! Why a partition has two sections: edges name parties of other partitions, so every
//! node must exist before any edge is resolved. The loader decodes the global section
//! and every partition's parties on all cores, adds the nodes (room reserved from the
//! footer's counts), then decodes every partition's edges on all cores and adds them.
//!
//! Version 4 edge records are the stream's `Record`s, naming parties by external id,
//! resolved against the finished id maps. Version 5 (written now) names a party in an
//! edge by its *place*: `partition << 32 | position` in that partition's parties
//! section (the parties of a section are in node order), and the source by its
//! position alone, since it is in the section's own partition. The loader keeps the
//! node each party got, by place, and resolves an edge by indexing: on a Norway-scale
//! world the id lookups (two cache misses each, millions of them) were the largest
//! cost of a load. A section's edges come in source order, so that the duplicate
//! checks (no edge twice, one main unit per sub-unit) need only one source's edges at
//! a time.
//! The global section holds what is not a party's: resources, the system-user and
//! decision-point state, and last the `World` record; new kinds of record go there
//! unless they belong to one party.
//!
//! Records are framed by their length so that a frame can be decoded with borrowed
//! strings and skipped without decoding.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::{
    BLOCK_TARGET, Counts, Header, Loaded, Loader, MAX_BLOCK, Record, Result, SnapshotReader, bad,
    count_but_edges, count_edges, resource_record, state_records, u32_at,
};
use crate::catalog::{Catalog, PackageSet};
use crate::graph::{
    Actions, Assignment, Delegation, Edge, NodeId, PartBuilder, Party, PreparedParties, partition_of,
};
use crate::model::{PackageId, PartyKind, RoleId, SystemUserKind};
use crate::persist::error::SnapshotError;
use crate::world::World;

/// The first schema version written in sections.
pub const SECTIONED_VERSION: u32 = 4;
/// The first schema version whose edge records name parties by place (the version
/// written).
pub const PLACED_VERSION: u32 = 5;
/// The number of partitions a snapshot is written in unless told otherwise: enough
/// for every core of a large machine to have work while loading, small enough that
/// a tiny world's empty sections cost nothing to speak of. Fixed (not the number of
/// cores) so that one world always gives the same file.
pub const DEFAULT_PARTITIONS: u32 = 16;
/// The most partitions a reader accepts.
pub const MAX_PARTITIONS: u32 = 4096;
const END_MAGIC: [u8; 8] = *b"DELEGIDX";
const TRAILER: u64 = 16;
const MAX_FOOTER: u32 = 16 << 20;

/// What a section holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SectionKind {
    /// Resources, the system-user and decision-point state, the `World` record.
    Global,
    /// The parties of one partition.
    Parties,
    /// The edges whose source party is in one partition.
    Edges,
}

/// One section of a version 4 file, as the footer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionEntry {
    pub kind: SectionKind,
    /// The partition (0 for the global section).
    pub partition: u32,
    /// Where the section starts in the file, and its length in bytes.
    pub offset: u64,
    pub len: u64,
    /// crc32 of the section's bytes.
    pub crc: u32,
    /// The records it holds.
    pub counts: Counts,
}

/// The footer of a version 4 file: its index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub partitions: u32,
    pub sections: Vec<SectionEntry>,
}

/// A section's name in messages: `global`, `parties 3 of 16`, `edges 3 of 16`.
fn section_name(kind: SectionKind, partition: u32, partitions: u32) -> String {
    match kind {
        SectionKind::Global => "global".to_string(),
        SectionKind::Parties => format!("parties {partition} of {partitions}"),
        SectionKind::Edges => format!("edges {partition} of {partitions}"),
    }
}

fn in_section(e: &SectionEntry, partitions: u32) -> impl Fn(SnapshotError) -> SnapshotError {
    let name = section_name(e.kind, e.partition, partitions);
    let offset = e.offset;
    move |error| SnapshotError::Section {
        name: name.clone(),
        offset,
        error: Box::new(error),
    }
}

fn workers(jobs: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs)
        .max(1)
}

/// Runs `job(i)` for every `i < jobs` on all cores; results in job order. Stops handing
/// out jobs after the first error, which is returned (the lowest-numbered one seen).
fn run_jobs<T: Send>(jobs: usize, job: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let out: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..jobs).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers(jobs) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = job(i);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut o) = out.lock()
                        && let Some(slot) = o.get_mut(i)
                    {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    let out = out
        .into_inner()
        .map_err(|_| SnapshotError::Corrupt("a worker thread panicked".into()))?;
    let mut v = Vec::with_capacity(jobs);
    let mut first_err = None;
    for r in out {
        match r {
            Some(Ok(t)) => v.push(t),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None if v.len() == jobs => Ok(v),
        None => Err(SnapshotError::Corrupt("a worker thread panicked".into())),
    }
}

pub(super) mod verify;

// ---------------------------------------------------------------- writing

/// Encodes the records of one section into checksummed blocks in memory.
struct SectionWriter {
    out: Vec<u8>,
    block: Vec<u8>,
    counts: Counts,
}

impl SectionWriter {
    fn new() -> SectionWriter {
        SectionWriter {
            out: Vec::new(),
            block: Vec::with_capacity(BLOCK_TARGET + 4096),
            counts: Counts::default(),
        }
    }

    fn push(&mut self, r: &Record) -> Result<()> {
        self.counts.add(r);
        let at = self.block.len();
        self.block.extend_from_slice(&[0; 4]);
        rmp_serde::encode::write(&mut self.block, r).map_err(|e| SnapshotError::Encode(e.to_string()))?;
        self.frame(at)
    }

    /// Appends one record given by a borrowed mirror (the caller counts it).
    fn push_ser<T: Serialize>(&mut self, r: &T) -> Result<()> {
        let at = self.block.len();
        self.block.extend_from_slice(&[0; 4]);
        rmp_serde::encode::write(&mut self.block, r).map_err(|e| SnapshotError::Encode(e.to_string()))?;
        self.frame(at)
    }

    /// Fills in the length of the frame that starts at `at` and flushes a full block.
    fn frame(&mut self, at: usize) -> Result<()> {
        // A checkpoint encodes on background threads: give way to waiting readers.
        crate::background::pace_checkpoint();
        let len = self.block.len() - at - 4;
        if len > MAX_BLOCK as usize / 2 {
            return Err(SnapshotError::Encode("a record is larger than 32 MiB".into()));
        }
        if let Some(slot) = self.block.get_mut(at..at + 4) {
            slot.copy_from_slice(&(len as u32).to_le_bytes());
        }
        if self.block.len() >= BLOCK_TARGET {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        super::write_block(&mut self.out, &self.block)?;
        self.block.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<(Vec<u8>, Counts)> {
        self.flush()?;
        Ok((self.out, self.counts))
    }
}

// Borrowed mirrors of the records for writing. A party record's variant name, fields
// and their order are those of [`Record`] (rmp writes a variant by its name and a
// struct as an array), so its bytes are the owned record's without copying a string;
// grants are written as arrays of the fields of `ResourceGrant` and `InstanceGrant`.

#[derive(Serialize)]
struct PartyOut<'a> {
    id: &'a str,
    kind: PartyKind,
    name: Option<&'a str>,
    unit_type: Option<&'a str>,
    org_no: Option<&'a str>,
    ssn: Option<&'a str>,
    alive: bool,
    system_user_kind: Option<SystemUserKind>,
    owner: Option<&'a str>,
    system: Option<&'a str>,
    uuid: Option<&'a str>,
    party_id: Option<i64>,
    user_id: Option<i64>,
}

impl<'a> PartyOut<'a> {
    fn of(p: &'a Party) -> PartyOut<'a> {
        PartyOut {
            id: &p.id,
            kind: p.kind,
            name: p.name.as_deref(),
            unit_type: p.unit_type.as_deref(),
            org_no: p.org_no.as_deref(),
            ssn: p.ssn.as_deref(),
            alive: p.alive,
            system_user_kind: p.system_user_kind(),
            owner: p.owner(),
            system: p.system(),
            uuid: p.uuid(),
            party_id: p.party_id,
            user_id: p.user_id,
        }
    }
}

/// The party variant of [`Record`], by the same name.
#[derive(Serialize)]
enum PartyRecordOut<'a> {
    Party(PartyOut<'a>),
}

/// Package codes of a set, as an array.
struct CodesOut<'a>(&'a PackageSet, &'a Catalog);

impl Serialize for CodesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for p in self.0.iter() {
            seq.serialize_element(self.1.package(p).code.as_str())?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct GrantOut<'a> {
    resource: &'a str,
    actions: &'a Actions,
}

/// Resource grants (resource node → actions), as an array of [`GrantOut`].
struct GrantsOut<'a>(&'a std::collections::BTreeMap<NodeId, Actions>, &'a World);

impl Serialize for GrantsOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let g = &self.1.graph;
        s.collect_seq(self.0.iter().map(|(n, actions)| GrantOut {
            resource: g.ext_id(*n),
            actions,
        }))
    }
}

#[derive(Serialize)]
struct InstanceOut<'a> {
    resource: &'a str,
    instance: &'a str,
    actions: &'a Actions,
}

/// Instance grants ((resource node, instance) → actions), as an array of
/// [`InstanceOut`].
struct InstancesOut<'a>(
    &'a std::collections::BTreeMap<(NodeId, String), Actions>,
    &'a World,
);

impl Serialize for InstancesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let g = &self.1.graph;
        s.collect_seq(self.0.iter().map(|((n, instance), actions)| InstanceOut {
            resource: g.ext_id(*n),
            instance,
            actions,
        }))
    }
}

// The edge records of version 5: a party is named by its place, `partition << 32 |
// position in that partition's parties section`, the source by its position alone (it
// is in the section's own partition). Roles, packages and resources by code and id,
// as before.

#[derive(Serialize)]
struct AssignmentOut<'a> {
    from: u32,
    to: u64,
    role: &'a str,
    packages: CodesOut<'a>,
    resources: GrantsOut<'a>,
    instances: InstancesOut<'a>,
}

#[derive(Serialize)]
struct DelegationOut<'a> {
    client: u32,
    facilitator: u64,
    agent: u64,
    role: &'a str,
    packages: CodesOut<'a>,
    resources: GrantsOut<'a>,
}

#[derive(Serialize)]
struct MainUnitOut<'a> {
    sub: u32,
    main: u64,
    role: &'a str,
}

#[derive(Serialize)]
enum EdgeOut<'a> {
    Assignment(AssignmentOut<'a>),
    Delegation(DelegationOut<'a>),
    MainUnit(MainUnitOut<'a>),
}

/// The parties of every partition in node order (a party's position in its list is its
/// position in its parties section), and every party's place by graph part and slot, so
/// that an edge's ends are placed by one indexed read (no id hashed, no search).
struct Places {
    homes: Vec<Vec<NodeId>>,
    at: Vec<Vec<u64>>,
}

/// Not a party's place (a resource's slot, or a slot no node holds).
const NO_PLACE: u64 = u64::MAX;

impl Places {
    /// Each of `k` workers hashes the ids of every k-th party (reading an id is a cache
    /// miss on a large world, walking the node array is not); the places are then given
    /// in node order.
    fn of(g: &crate::graph::Graph, p: usize) -> Result<Places> {
        let k = workers(usize::MAX);
        let parts = run_jobs(k, |j| {
            Ok(g.parties()
                .skip(j)
                .step_by(k)
                .map(|(n, party)| {
                    crate::background::pace_checkpoint();
                    (n, partition_of(&party.id, p) as u32)
                })
                .collect::<Vec<_>>())
        })?;
        let mut sizes = vec![0usize; p];
        for (_, part) in parts.iter().flatten() {
            if let Some(s) = sizes.get_mut(*part as usize) {
                *s += 1;
            }
        }
        let mut homes: Vec<Vec<NodeId>> = sizes.iter().map(|s| Vec::with_capacity(*s)).collect();
        let mut at: Vec<Vec<u64>> = (0..g.partitions())
            .map(|i| vec![NO_PLACE; g.part_slots(i)])
            .collect();
        // Party i of the walk is the (i / k)-th of worker i % k: round robin is node order.
        let mut its: Vec<_> = parts.iter().map(|v| v.iter()).collect();
        'walk: loop {
            for it in its.iter_mut() {
                let Some((n, part)) = it.next() else {
                    break 'walk;
                };
                let (Some(h), Some(slot)) = (
                    homes.get_mut(*part as usize),
                    at.get_mut(n.part()).and_then(|v| v.get_mut(n.slot())),
                ) else {
                    return Err(SnapshotError::Encode("a party outside its graph's parts".into()));
                };
                *slot = (u64::from(*part) << 32) | h.len() as u64;
                h.push(*n);
            }
        }
        Ok(Places { homes, at })
    }

    /// The parties of partition `j`, in place order.
    fn home(&self, j: usize) -> &[NodeId] {
        self.homes.get(j).map_or(&[][..], |v| v.as_slice())
    }

    /// The place of party `t` (partition << 32 | position).
    fn of_party(&self, g: &crate::graph::Graph, t: NodeId) -> Result<u64> {
        self.at
            .get(t.part())
            .and_then(|v| v.get(t.slot()))
            .copied()
            .filter(|p| *p != NO_PLACE)
            .ok_or_else(|| SnapshotError::Encode(format!("an edge names `{}`, not a party", g.ext_id(t))))
    }
}

/// Encodes the edges leaving the parties of one partition (`home`, in place order).
fn write_edges(sw: &mut SectionWriter, w: &World, places: &Places, home: &[NodeId]) -> Result<()> {
    let g = &w.graph;
    let c = w.catalog;
    for (from, n) in home.iter().enumerate() {
        let from = u32::try_from(from).map_err(|e| SnapshotError::Encode(e.to_string()))?;
        for (_, t, e) in g.outgoing(*n) {
            let r = match e {
                Edge::Assignment(a) => {
                    sw.counts.assignments += 1;
                    EdgeOut::Assignment(AssignmentOut {
                        from,
                        to: places.of_party(g, t)?,
                        role: &c.role(a.role).code,
                        packages: CodesOut(&a.packages, c),
                        resources: GrantsOut(&a.resources, w),
                        instances: InstancesOut(&a.instances, w),
                    })
                }
                Edge::Delegation(d) => {
                    sw.counts.delegations += 1;
                    EdgeOut::Delegation(DelegationOut {
                        client: from,
                        facilitator: places.of_party(g, d.facilitator)?,
                        agent: places.of_party(g, t)?,
                        role: &c.role(d.role).code,
                        packages: CodesOut(&d.packages, c),
                        resources: GrantsOut(&d.resources, w),
                    })
                }
                Edge::MainUnit(role) => {
                    sw.counts.main_units += 1;
                    EdgeOut::MainUnit(MainUnitOut {
                        sub: from,
                        main: places.of_party(g, t)?,
                        role: &c.role(*role).code,
                    })
                }
            };
            sw.push_ser(&r)?;
        }
    }
    Ok(())
}

/// What every section of one snapshot is encoded against: the partition count, every
/// party's place, and the counts of the whole file (its header). Made once per snapshot
/// ([`Plan::of`]); the sections can then be encoded by whoever owns their parties
/// ([`encode_section`]: the server's partition actors) and put together with
/// [`write_sections`].
pub struct Plan {
    partitions: u32,
    places: Places,
    counts: Counts,
}

impl Plan {
    /// Places the parties of `w` in `partitions` partitions (1 to [`MAX_PARTITIONS`]) and
    /// counts what the file will hold, on all cores.
    pub fn of(w: &World, partitions: u32) -> Result<Plan> {
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(SnapshotError::Encode(format!(
                "{partitions} partitions: between 1 and {MAX_PARTITIONS}"
            )));
        }
        let p = partitions as usize;
        let places = Places::of(&w.graph, p)?;
        // The edges are counted on all cores, a partition at a time.
        let mut counts = count_but_edges(w);
        for c in run_jobs(p, |j| {
            let mut c = Counts::default();
            for n in places.home(j) {
                crate::background::pace_checkpoint();
                count_edges(w, *n, &mut c);
            }
            Ok(c)
        })? {
            counts = counts.plus(&c);
        }
        Ok(Plan {
            partitions,
            places,
            counts,
        })
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The parties of partition `j`, in place order (all in one part of the graph when
    /// the graph's part count divides the partition count).
    pub fn parties_of(&self, j: u32) -> &[NodeId] {
        self.places.home(j as usize)
    }

    /// Every section of the file, in file order.
    pub fn sections(&self) -> impl Iterator<Item = (SectionKind, u32)> + use<> {
        let p = self.partitions;
        std::iter::once((SectionKind::Global, 0))
            .chain((0..p).map(|i| (SectionKind::Parties, i)))
            .chain((0..p).map(|i| (SectionKind::Edges, i)))
    }
}

/// One section, encoded (its checksummed blocks) with the records it holds.
pub struct Encoded {
    pub kind: SectionKind,
    pub partition: u32,
    pub bytes: Vec<u8>,
    pub counts: Counts,
}

/// Encodes one section of the snapshot of `w` planned by `plan` (which must have been
/// made from `w`).
pub fn encode_section(w: &World, plan: &Plan, kind: SectionKind, part: u32) -> Result<Encoded> {
    let g = &w.graph;
    let mut sw = SectionWriter::new();
    let home = plan.places.home(part as usize);
    match kind {
        SectionKind::Global => {
            for (_, r) in g.resources() {
                sw.push(&Record::Resource(resource_record(r)))?;
            }
            for r in state_records(w) {
                sw.push(&r)?;
            }
        }
        SectionKind::Parties => {
            for n in home {
                if let Some(party) = g.party(*n) {
                    sw.counts.parties += 1;
                    sw.push_ser(&PartyRecordOut::Party(PartyOut::of(party)))?;
                }
            }
        }
        SectionKind::Edges => write_edges(&mut sw, w, &plan.places, home)?,
    }
    let (bytes, counts) = sw.finish()?;
    Ok(Encoded {
        kind,
        partition: part,
        bytes,
        counts,
    })
}

/// The header of a file planned by `plan`.
fn header_of(plan: &Plan, last_seq: u64) -> Header {
    Header {
        created_at: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        last_seq,
        counts: plan.counts,
        compression: "lz4-block".to_string(),
        engine: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Appends one section at `offset` and its footer entry.
fn put_section<W: Write>(
    out: &mut W,
    offset: &mut u64,
    entries: &mut Vec<SectionEntry>,
    e: Encoded,
) -> Result<()> {
    out.write_all(&e.bytes)?;
    entries.push(SectionEntry {
        kind: e.kind,
        partition: e.partition,
        offset: *offset,
        len: e.bytes.len() as u64,
        crc: crc32fast::hash(&e.bytes),
        counts: e.counts,
    });
    *offset += e.bytes.len() as u64;
    Ok(())
}

/// Checks what was written against the header and ends the file with its footer.
fn finish_file<W: Write>(mut out: W, plan: &Plan, entries: Vec<SectionEntry>) -> Result<(W, Counts)> {
    let total = entries.iter().fold(Counts::default(), |t, e| t.plus(&e.counts));
    if total != plan.counts {
        return Err(SnapshotError::Encode(format!(
            "counted {:?} before writing but wrote {total:?}",
            plan.counts
        )));
    }
    let footer = rmp_serde::to_vec(&Footer {
        partitions: plan.partitions,
        sections: entries,
    })
    .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let len = u32::try_from(footer.len())
        .ok()
        .filter(|l| *l <= MAX_FOOTER)
        .ok_or_else(|| SnapshotError::Encode("footer too large".into()))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(&footer);
    out.write_all(&footer)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&crc.finalize().to_le_bytes())?;
    out.write_all(&END_MAGIC)?;
    out.flush()?;
    Ok((out, total))
}

/// Writes the file planned by `plan` from its sections, encoded elsewhere (each exactly
/// once, in any order).
pub fn write_sections<W: Write>(
    mut out: W,
    plan: &Plan,
    last_seq: u64,
    sections: Vec<Encoded>,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, Counts)> {
    let p = plan.partitions;
    let at = |kind: SectionKind, j: u32| match kind {
        SectionKind::Global if j == 0 => Some(0),
        SectionKind::Parties if j < p => Some(1 + j as usize),
        SectionKind::Edges if j < p => Some(1 + (p + j) as usize),
        _ => None,
    };
    let mut slots: Vec<Option<Encoded>> = (0..1 + 2 * p as usize).map(|_| None).collect();
    for e in sections {
        let name = section_name(e.kind, e.partition, p);
        let slot = at(e.kind, e.partition)
            .and_then(|i| slots.get_mut(i))
            .ok_or_else(|| SnapshotError::Encode(format!("section `{name}` is not in the plan")))?;
        if slot.replace(e).is_some() {
            return Err(SnapshotError::Encode(format!("section `{name}` encoded twice")));
        }
    }
    let mut offset = super::write_prefix(&mut out, PLACED_VERSION, &header_of(plan, last_seq))?;
    let mut entries = Vec::with_capacity(slots.len());
    let mut done = 0;
    for ((kind, part), e) in plan.sections().zip(slots) {
        let e = e.ok_or_else(|| {
            SnapshotError::Encode(format!(
                "section `{}` was not encoded",
                section_name(kind, part, plan.partitions)
            ))
        })?;
        done += e.counts.total();
        put_section(&mut out, &mut offset, &mut entries, e)?;
        progress(done);
    }
    finish_file(out, plan, entries)
}

/// Writes a world as a version 5 file in `partitions` partitions, encoding the sections
/// on all cores and writing each as soon as those before it are; returns the output
/// and the counts written.
pub fn write_world<W: Write>(
    w: &World,
    mut out: W,
    last_seq: u64,
    partitions: u32,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, Counts)> {
    let plan = Plan::of(w, partitions)?;
    let mut offset = super::write_prefix(&mut out, PLACED_VERSION, &header_of(&plan, last_seq))?;
    let kinds: Vec<(SectionKind, u32)> = plan.sections().collect();
    let jobs = kinds.len();
    let encode = |j: usize| -> Result<Encoded> {
        let (kind, part) = kinds.get(j).copied().ok_or(SnapshotError::Truncated("section"))?;
        encode_section(w, &plan, kind, part)
    };
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Encoded>)>();
    let mut entries = Vec::with_capacity(jobs);
    let written: Result<()> = std::thread::scope(|s| {
        for _ in 0..workers(jobs) {
            let tx = tx.clone();
            let (next, failed, encode) = (&next, &failed, &encode);
            s.spawn(move || {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= jobs || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = encode(j);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if tx.send((j, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Sections are written in job order as they arrive.
        let mut pending = std::collections::BTreeMap::new();
        let mut want = 0;
        let mut done = 0;
        for (j, r) in rx.iter() {
            let r = match r {
                Ok(x) => x,
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            };
            pending.insert(j, r);
            while let Some(e) = pending.remove(&want) {
                done += e.counts.total();
                put_section(&mut out, &mut offset, &mut entries, e)?;
                progress(done);
                want += 1;
            }
        }
        if want != jobs {
            return Err(SnapshotError::Encode("a section was not written".into()));
        }
        Ok(())
    });
    written?;
    finish_file(out, &plan, entries)
}

// ---------------------------------------------------------------- reading

/// Where a version 4 file is read from: its bytes in memory, or a file that each worker
/// opens for itself (so no file position is shared between threads).
pub(super) trait Source: Sync {
    fn len(&self) -> u64;
    fn open(&self, offset: u64, len: u64) -> Result<Box<dyn Read + '_>>;
}

pub(super) struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn open(&self, offset: u64, len: u64) -> Result<Box<dyn Read + '_>> {
        let slice = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(offset.saturating_add(len)).ok())
            .and_then(|(a, b)| self.0.get(a..b))
            .ok_or(SnapshotError::Truncated("a section runs past the end"))?;
        Ok(Box::new(slice))
    }
}

pub(super) struct FileAt<'a> {
    pub path: &'a Path,
    pub len: u64,
}

impl Source for FileAt<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn open(&self, offset: u64, len: u64) -> Result<Box<dyn Read + '_>> {
        use std::io::Seek;
        let mut f = std::fs::File::open(self.path)?;
        f.seek(std::io::SeekFrom::Start(offset))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f.take(len))))
    }
}

fn read_exact<R: Read + ?Sized>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated(what),
        _ => SnapshotError::Io(e),
    })
}

/// Reads and checks the footer; returns it with the header and where the header ends.
fn read_index(src: &dyn Source) -> Result<(Header, u32, u64, Footer)> {
    let rd = SnapshotReader::new(src.open(0, src.len())?)?;
    let (header, version, start) = (rd.header.clone(), rd.version, rd.offset);
    let len = src.len();
    let no_footer = || {
        SnapshotError::Corrupt(
            "the file does not end with a footer: it is truncated or has data after the last block".into(),
        )
    };
    if len < start + TRAILER {
        return Err(no_footer());
    }
    let mut t = [0u8; TRAILER as usize];
    read_exact(&mut *src.open(len - TRAILER, TRAILER)?, &mut t, "footer")?;
    if t.get(8..) != Some(&END_MAGIC[..]) {
        return Err(no_footer());
    }
    let flen = u32_at(&t, 0);
    let want = u32_at(&t, 4);
    if flen > MAX_FOOTER || u64::from(flen) > len - TRAILER - start {
        return Err(SnapshotError::Corrupt(format!(
            "footer length {flen} does not fit the file"
        )));
    }
    let at = len - TRAILER - u64::from(flen);
    let mut f = vec![0u8; flen as usize];
    read_exact(&mut *src.open(at, u64::from(flen))?, &mut f, "footer")?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&flen.to_le_bytes());
    crc.update(&f);
    if crc.finalize() != want {
        return Err(SnapshotError::Checksum {
            what: "footer",
            offset: at,
        });
    }
    let footer: Footer =
        rmp_serde::from_slice(&f).map_err(|e| SnapshotError::Corrupt(format!("footer: {e}")))?;
    check_index(&footer, &header, start, at)?;
    Ok((header, version, start, footer))
}

/// The footer lists exactly the global section and two per partition, in file order,
/// contiguous from `start` to `end`, with counts that add up to the header's.
fn check_index(f: &Footer, h: &Header, start: u64, end: u64) -> Result<()> {
    let p = f.partitions;
    if p == 0 || p > MAX_PARTITIONS {
        return Err(SnapshotError::Corrupt(format!("footer names {p} partitions")));
    }
    let expected = std::iter::once((SectionKind::Global, 0))
        .chain((0..p).map(|i| (SectionKind::Parties, i)))
        .chain((0..p).map(|i| (SectionKind::Edges, i)));
    if f.sections.len() != 1 + 2 * p as usize {
        return Err(SnapshotError::Corrupt(format!(
            "footer lists {} sections for {p} partitions",
            f.sections.len()
        )));
    }
    let mut at = start;
    let mut total = Counts::default();
    for (e, (kind, part)) in f.sections.iter().zip(expected) {
        let name = section_name(kind, part, p);
        if (e.kind, e.partition) != (kind, part) {
            return Err(SnapshotError::Corrupt(format!(
                "footer lists `{}` where `{name}` belongs",
                section_name(e.kind, e.partition, p)
            )));
        }
        if e.offset != at {
            return Err(SnapshotError::Corrupt(format!(
                "section `{name}` starts at byte {} instead of {at}",
                e.offset
            )));
        }
        at = at.saturating_add(e.len);
        let c = e.counts;
        let fits = match kind {
            SectionKind::Global => {
                c.parties == 0 && c.assignments == 0 && c.delegations == 0 && c.main_units == 0
            }
            SectionKind::Parties => c.total() == c.parties,
            SectionKind::Edges => c.total() == c.assignments + c.delegations + c.main_units,
        };
        if !fits {
            return Err(SnapshotError::Corrupt(format!(
                "section `{name}` claims records it cannot hold: {c:?}"
            )));
        }
        total = total.plus(&c);
    }
    if at != end {
        return Err(SnapshotError::Corrupt(format!(
            "sections end at byte {at}, the footer starts at byte {end}"
        )));
    }
    if total != h.counts {
        return Err(SnapshotError::Corrupt(format!(
            "header counts {:?} differ from the sections' {total:?}",
            h.counts
        )));
    }
    Ok(())
}

/// Streams one section's blocks, checking each block's checksum, then the section's
/// length and checksum; `each` gets every decompressed block.
fn read_section(src: &dyn Source, e: &SectionEntry, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut input = src.open(e.offset, e.len)?;
    let mut crc = crc32fast::Hasher::new();
    let mut comp = Vec::new();
    let mut block = Vec::new();
    let mut pos = 0u64;
    while pos < e.len {
        let mut fixed = [0u8; 12];
        read_exact(&mut *input, &mut fixed, "block header")?;
        let raw_len = u32_at(&fixed, 0);
        let comp_len = u32_at(&fixed, 4);
        let want = u32_at(&fixed, 8);
        let here = e.offset + pos;
        if raw_len > MAX_BLOCK || comp_len > MAX_BLOCK || 12 + u64::from(comp_len) > e.len - pos {
            return Err(SnapshotError::Corrupt(format!(
                "block at byte {here} claims {raw_len} bytes ({comp_len} compressed), over the limit"
            )));
        }
        comp.resize(comp_len as usize, 0);
        read_exact(&mut *input, &mut comp, "block")?;
        crc.update(&fixed);
        crc.update(&comp);
        let mut bc = crc32fast::Hasher::new();
        bc.update(&fixed[..8]);
        bc.update(&comp);
        if bc.finalize() != want {
            return Err(SnapshotError::Checksum {
                what: "block",
                offset: here,
            });
        }
        block.resize(raw_len as usize, 0);
        let n = lz4_flex::block::decompress_into(&comp, &mut block).map_err(|err| {
            SnapshotError::Corrupt(format!("block at byte {here} does not decompress: {err}"))
        })?;
        if n != raw_len as usize {
            return Err(SnapshotError::Corrupt(format!(
                "block at byte {here} decompresses to {n} bytes, header says {raw_len}"
            )));
        }
        each(&block)?;
        pos += 12 + u64::from(comp_len);
    }
    if crc.finalize() != e.crc {
        return Err(SnapshotError::Checksum {
            what: "section",
            offset: e.offset,
        });
    }
    Ok(())
}

/// The record frames of a block: (index within the section, bytes of one record).
fn frames(block: &[u8], index: &mut u64, mut each: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
    let mut pos = 0usize;
    while pos < block.len() {
        let len = block
            .get(pos..pos + 4)
            .map(|b| u32_at(b, 0) as usize)
            .ok_or_else(|| bad(*index, "cut in its length".into()))?;
        let rec = block
            .get(pos + 4..pos + 4 + len)
            .ok_or_else(|| bad(*index, format!("frame of {len} bytes runs past its block")))?;
        each(*index, rec)?;
        *index += 1;
        pos += 4 + len;
    }
    Ok(())
}

fn decode_record(index: u64, rec: &[u8]) -> Result<Record> {
    rmp_serde::from_slice(rec).map_err(|e| bad(index, e.to_string()))
}

// A borrowed mirror of the party record (the same fields in the same order), decoded
// without allocating; the party's own strings are then made once, at their final size.

#[derive(Deserialize, Debug, PartialEq)]
struct PartyRef<'a> {
    id: &'a str,
    kind: PartyKind,
    name: Option<&'a str>,
    unit_type: Option<&'a str>,
    org_no: Option<&'a str>,
    ssn: Option<&'a str>,
    alive: bool,
    system_user_kind: Option<SystemUserKind>,
    owner: Option<&'a str>,
    system: Option<&'a str>,
    uuid: Option<&'a str>,
    party_id: Option<i64>,
    user_id: Option<i64>,
}

/// The party variant of [`Record`], by the same name.
#[derive(Deserialize)]
enum PartyRecordRef<'a> {
    #[serde(borrow)]
    Party(PartyRef<'a>),
}

/// A cursor over the MessagePack bytes of one record, for the shapes rmp-serde writes
/// a party record in (see [`party_fast`]).
struct Mp<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Mp<'a> {
    fn byte(&mut self) -> Option<u8> {
        let x = *self.b.get(self.at)?;
        self.at += 1;
        Some(x)
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |v, x| v << 8 | u64::from(*x)))
    }
    fn str(&mut self) -> Option<&'a str> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.be(1)? as usize,
            0xda => self.be(2)? as usize,
            0xdb => self.be(4)? as usize,
            _ => return None,
        };
        let s = self.take(len)?;
        if s.is_ascii() {
            // SAFETY: ASCII bytes are valid UTF-8.
            Some(unsafe { std::str::from_utf8_unchecked(s) })
        } else {
            std::str::from_utf8(s).ok()
        }
    }
    fn nil(&mut self) -> bool {
        if self.peek() == Some(0xc0) {
            self.at += 1;
            return true;
        }
        false
    }
    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        if self.nil() {
            return Some(None);
        }
        self.str().map(Some)
    }
    fn int(&mut self) -> Option<i64> {
        Some(match self.byte()? {
            m @ 0x00..=0x7f => i64::from(m),
            m @ 0xe0..=0xff => i64::from(m as i8),
            0xcc => self.be(1)? as i64,
            0xcd => self.be(2)? as i64,
            0xce => self.be(4)? as i64,
            0xcf => i64::try_from(self.be(8)?).ok()?,
            0xd0 => i64::from(self.be(1)? as u8 as i8),
            0xd1 => i64::from(self.be(2)? as u16 as i16),
            0xd2 => i64::from(self.be(4)? as u32 as i32),
            0xd3 => self.be(8)? as i64,
            _ => return None,
        })
    }
    fn uint(&mut self) -> Option<u64> {
        Some(match self.byte()? {
            m @ 0x00..=0x7f => u64::from(m),
            0xcc => self.be(1)?,
            0xcd => self.be(2)?,
            0xce => self.be(4)?,
            0xcf => self.be(8)?,
            _ => return None,
        })
    }
    fn array(&mut self) -> Option<usize> {
        Some(match self.byte()? {
            m @ 0x90..=0x9f => usize::from(m & 0x0f),
            0xdc => self.be(2)? as usize,
            0xdd => self.be(4)? as usize,
            _ => return None,
        })
    }
    /// An array of `n` items read by `item` (room for at most what the bytes left can
    /// hold: a corrupt length allocates nothing large).
    fn items<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let n = self.array()?;
        if n > self.b.len() - self.at {
            return None;
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(item(self)?);
        }
        Some(v)
    }
    fn opt_int(&mut self) -> Option<Option<i64>> {
        if self.nil() {
            return Some(None);
        }
        self.int().map(Some)
    }
}

/// A party record decoded without serde, for the one shape the writer gives it (a map
/// of one entry `Party` → an array of the 13 fields of [`PartyRef`], unit variants by
/// name): on a medium world rmp-serde's generic decoding was a third of a load's
/// instructions. None for anything else, which the caller then decodes with rmp-serde
/// (the same answer, or its error).
fn party_fast(rec: &[u8]) -> Option<PartyRef<'_>> {
    let mut m = Mp { b: rec, at: 0 };
    if m.byte()? != 0x81 || m.str()? != "Party" || m.byte()? != 0x9d {
        return None;
    }
    let id = m.str()?;
    let kind = match m.str()? {
        "person" => PartyKind::Person,
        "organisation" => PartyKind::Organisation,
        "system_user" => PartyKind::SystemUser,
        _ => return None,
    };
    let name = m.opt_str()?;
    let unit_type = m.opt_str()?;
    let org_no = m.opt_str()?;
    let ssn = m.opt_str()?;
    let alive = match m.byte()? {
        0xc2 => false,
        0xc3 => true,
        _ => return None,
    };
    let system_user_kind = match m.opt_str()? {
        None => None,
        Some("standard") => Some(SystemUserKind::Standard),
        Some("agent") => Some(SystemUserKind::Agent),
        Some(_) => return None,
    };
    let owner = m.opt_str()?;
    let system = m.opt_str()?;
    let uuid = m.opt_str()?;
    let party_id = m.opt_int()?;
    let user_id = m.opt_int()?;
    (m.at == rec.len()).then_some(PartyRef {
        id,
        kind,
        name,
        unit_type,
        org_no,
        ssn,
        alive,
        system_user_kind,
        owner,
        system,
        uuid,
        party_id,
        user_id,
    })
}

/// A resource grant of an edge record (`[resource, [action]]`), without serde.
fn grant<'a>(m: &mut Mp<'a>) -> Option<GrantRef<'a>> {
    if m.array()? != 2 {
        return None;
    }
    let resource = m.str()?;
    let actions = m.items(Mp::str)?;
    Some(GrantRef { resource, actions })
}

/// An instance grant of an assignment record (`[resource, instance, [action]]`).
fn instance_grant<'a>(m: &mut Mp<'a>) -> Option<InstanceGrantRef<'a>> {
    if m.array()? != 3 {
        return None;
    }
    let resource = m.str()?;
    let instance = m.str()?;
    let actions = m.items(Mp::str)?;
    Some(InstanceGrantRef {
        resource,
        instance,
        actions,
    })
}

/// The head of an edge record, an enum as rmp-serde writes it (`{variant: [fields]}`):
/// the reader after it, the variant and its number of fields.
fn variant_head(rec: &[u8]) -> Option<(Mp<'_>, &str, usize)> {
    let mut m = Mp { b: rec, at: 0 };
    if m.byte()? != 0x81 {
        return None;
    }
    let variant = m.str()?;
    let fields = m.array()?;
    Some((m, variant, fields))
}

/// An edge record of version 4 (parties by external id) decoded without serde, as
/// [`edge_fast`] does for version 5.
fn edge_ref_fast(rec: &[u8]) -> Option<EdgeRef<'_>> {
    let (mut m, variant, fields) = variant_head(rec)?;
    let e = match (variant, fields) {
        ("Assignment", 6) => EdgeRef::Assignment(AssignmentRef {
            from: m.str()?,
            to: m.str()?,
            role: m.str()?,
            packages: m.items(Mp::str)?,
            resources: m.items(grant)?,
            instances: m.items(instance_grant)?,
        }),
        ("Delegation", 6) => EdgeRef::Delegation(DelegationRef {
            client: m.str()?,
            facilitator: m.str()?,
            agent: m.str()?,
            role: m.str()?,
            packages: m.items(Mp::str)?,
            resources: m.items(grant)?,
        }),
        ("MainUnit", 3) => EdgeRef::MainUnit(MainUnitRef {
            sub: m.str()?,
            main: m.str()?,
            role: m.str()?,
        }),
        _ => return None,
    };
    (m.at == rec.len()).then_some(e)
}

/// An edge record of version 5 decoded without serde, for the shapes the writer gives
/// (as [`party_fast`]: None for anything else, left to rmp-serde).
fn edge_fast(rec: &[u8]) -> Option<EdgeAt<'_>> {
    let (mut m, variant, fields) = variant_head(rec)?;
    let e = match (variant, fields) {
        ("Assignment", 6) => EdgeAt::Assignment(AssignmentAt {
            from: u32::try_from(m.uint()?).ok()?,
            to: m.uint()?,
            role: m.str()?,
            packages: m.items(Mp::str)?,
            resources: m.items(grant)?,
            instances: m.items(instance_grant)?,
        }),
        ("Delegation", 6) => EdgeAt::Delegation(DelegationAt {
            client: u32::try_from(m.uint()?).ok()?,
            facilitator: m.uint()?,
            agent: m.uint()?,
            role: m.str()?,
            packages: m.items(Mp::str)?,
            resources: m.items(grant)?,
        }),
        ("MainUnit", 3) => EdgeAt::MainUnit(MainUnitAt {
            sub: u32::try_from(m.uint()?).ok()?,
            main: m.uint()?,
            role: m.str()?,
        }),
        _ => return None,
    };
    (m.at == rec.len()).then_some(e)
}

/// The parties of one partition, checked, one by one to `each`.
fn decode_parties(
    src: &dyn Source,
    e: &SectionEntry,
    partitions: u32,
    mut each: impl FnMut(Party) -> Result<()>,
) -> Result<()> {
    let mut index = 0;
    let mut n = 0u64;
    let own = |s: Option<&str>| s.map(Box::<str>::from);
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            let p = match party_fast(rec) {
                Some(p) => p,
                None => {
                    let PartyRecordRef::Party(p) = rmp_serde::from_slice(rec)
                        .map_err(|err| bad(i, format!("not a party record in a parties section: {err}")))?;
                    p
                }
            };
            crate::model::check_id("party id", p.id).map_err(|err| bad(i, err.message))?;
            if partition_of(p.id, partitions as usize) != e.partition as usize {
                return Err(bad(i, format!("party `{}` belongs to another partition", p.id)));
            }
            n += 1;
            let mut party = Party::new(p.id, p.kind);
            party.name = own(p.name);
            party.unit_type = own(p.unit_type);
            party.org_no = own(p.org_no);
            party.ssn = own(p.ssn);
            party.alive = p.alive;
            party.party_id = p.party_id;
            party.user_id = p.user_id;
            party.set_system_user_kind(p.system_user_kind);
            party.set_owner(p.owner.map(str::to_string));
            party.set_system(p.system.map(str::to_string));
            party.set_uuid(p.uuid.map(str::to_string));
            each(party)
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

/// The parties of one partition, checked and made ready for the graph.
fn read_parties(src: &dyn Source, e: &SectionEntry, partitions: u32) -> Result<PreparedParties> {
    let mut out = PreparedParties::with_capacity(e.counts.parties as usize);
    decode_parties(src, e, partitions, |p| {
        out.push(p);
        Ok(())
    })?;
    Ok(out)
}

/// The records of the global section, checked to belong there.
fn read_global(src: &dyn Source, e: &SectionEntry) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut index = 0;
    let mut seen = Counts::default();
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            let r = decode_record(i, rec)?;
            if matches!(
                r,
                Record::Party(_)
                    | Record::Assignment(_)
                    | Record::Delegation(_)
                    | Record::MainUnit(_)
                    | Record::End(_)
            ) {
                return Err(bad(i, "a party, edge or end record in the global section".into()));
            }
            seen.add(&r);
            out.push(r);
            Ok(())
        })
    })?;
    if seen != e.counts {
        return Err(SnapshotError::Corrupt(format!(
            "records {seen:?} where the footer says {:?}",
            e.counts
        )));
    }
    Ok(out)
}

// Borrowed mirrors of the edge records: the same fields in the same order (records are
// rmp arrays), decoded without allocating the ids and codes they name.

#[derive(Deserialize, Debug, PartialEq)]
struct GrantRef<'a> {
    resource: &'a str,
    #[serde(borrow)]
    actions: Vec<&'a str>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct InstanceGrantRef<'a> {
    resource: &'a str,
    instance: &'a str,
    #[serde(borrow)]
    actions: Vec<&'a str>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct AssignmentRef<'a> {
    from: &'a str,
    to: &'a str,
    role: &'a str,
    #[serde(borrow)]
    packages: Vec<&'a str>,
    #[serde(borrow)]
    resources: Vec<GrantRef<'a>>,
    #[serde(borrow)]
    instances: Vec<InstanceGrantRef<'a>>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct DelegationRef<'a> {
    client: &'a str,
    facilitator: &'a str,
    agent: &'a str,
    role: &'a str,
    #[serde(borrow)]
    packages: Vec<&'a str>,
    #[serde(borrow)]
    resources: Vec<GrantRef<'a>>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct MainUnitRef<'a> {
    sub: &'a str,
    main: &'a str,
    role: &'a str,
}

/// The edge variants of [`Record`], by the same names.
#[derive(Deserialize, Debug, PartialEq)]
enum EdgeRef<'a> {
    #[serde(borrow)]
    Assignment(AssignmentRef<'a>),
    #[serde(borrow)]
    Delegation(DelegationRef<'a>),
    #[serde(borrow)]
    MainUnit(MainUnitRef<'a>),
}

/// Resolves the names in edge records against a world whose nodes are all present.
struct Resolve<'w> {
    w: &'w World,
    /// Where the resources are, when the world does not hold them yet (a file loaded
    /// part by part: see [`Plan`]).
    resources: Option<&'w FxHashMap<String, NodeId>>,
    partitions: usize,
    partition: usize,
    index: u64,
    last_source: Option<(&'w str, NodeId)>,
    /// Role and package codes as written → their ids: an edge section names a few dozen
    /// codes millions of times, and the catalogue's lookup lowercases a copy of the
    /// code and hashes it with SipHash each time.
    roles: std::cell::RefCell<FxHashMap<String, RoleId>>,
    packages: std::cell::RefCell<FxHashMap<String, PackageId>>,
}

impl<'w> Resolve<'w> {
    fn party(&self, id: &str) -> Result<NodeId> {
        self.w
            .graph
            .party_node(id)
            .ok_or_else(|| bad(self.index, format!("names unknown party `{id}`")))
    }
    /// The source of an edge: a party of this section's partition.
    fn source(&mut self, id: &str) -> Result<NodeId> {
        if let Some((s, n)) = self.last_source
            && s == id
        {
            return Ok(n);
        }
        if partition_of(id, self.partitions) != self.partition {
            return Err(bad(
                self.index,
                format!("an edge of `{id}` in another partition's section"),
            ));
        }
        let n = self.party(id)?;
        let g = &self.w.graph;
        self.last_source = Some((g.ext_id(n), n));
        Ok(n)
    }
    fn resource(&self, id: &str) -> Result<NodeId> {
        match self.resources {
            Some(m) => m.get(id).copied(),
            None => self.w.graph.resource_node(id),
        }
        .ok_or_else(|| bad(self.index, format!("names unknown resource `{id}`")))
    }
    fn role(&self, code: &str) -> Result<RoleId> {
        if let Some(r) = self.roles.borrow().get(code) {
            return Ok(*r);
        }
        let r = self
            .w
            .catalog
            .role_id(code)
            .ok_or_else(|| bad(self.index, format!("names unknown role `{code}`")))?;
        self.roles.borrow_mut().insert(code.to_string(), r);
        Ok(r)
    }
    fn package(&self, code: &str) -> Result<PackageId> {
        if let Some(p) = self.packages.borrow().get(code) {
            return Ok(*p);
        }
        let p = self
            .w
            .catalog
            .package_id(code)
            .ok_or_else(|| bad(self.index, format!("names unknown package `{code}`")))?;
        self.packages.borrow_mut().insert(code.to_string(), p);
        Ok(p)
    }
    /// The weight of an assignment edge (versions 4 and 5 name the same grants alike).
    fn assignment(
        &self,
        role: RoleId,
        packages: &[&str],
        resources: &[GrantRef<'_>],
        instances: &[InstanceGrantRef<'_>],
    ) -> Result<Assignment> {
        let mut by_instance = std::collections::BTreeMap::new();
        for g in instances {
            by_instance.insert(
                (self.resource(g.resource)?, g.instance.to_string()),
                g.actions.iter().map(|x| x.to_string()).collect(),
            );
        }
        Ok(Assignment {
            role,
            packages: self.packages(packages)?,
            resources: self.grants(resources)?,
            instances: by_instance,
        })
    }

    fn packages(&self, codes: &[&str]) -> Result<PackageSet> {
        codes.iter().map(|p| self.package(p)).collect()
    }
    fn grants(&self, gs: &[GrantRef<'_>]) -> Result<std::collections::BTreeMap<NodeId, Actions>> {
        gs.iter()
            .map(|g| {
                Ok((
                    self.resource(g.resource)?,
                    g.actions.iter().map(|a| a.to_string()).collect(),
                ))
            })
            .collect()
    }
}

type FullEdge = (NodeId, NodeId, Edge);

/// The edges of one partition, resolved to nodes and checked (no duplicate edge, one
/// main unit per sub-unit: both are keyed by the source, so one section sees them all).
fn read_edges(src: &dyn Source, e: &SectionEntry, w: &World, partitions: u32) -> Result<Vec<FullEdge>> {
    let c = e.counts;
    let mut out = Vec::with_capacity((c.assignments + c.delegations + c.main_units) as usize);
    let mut index = 0;
    let mut seen = Counts::default();
    let mut assignments: FxHashSet<(NodeId, NodeId, RoleId)> = FxHashSet::default();
    let mut delegations: FxHashSet<(NodeId, NodeId, NodeId, RoleId)> = FxHashSet::default();
    let mut subs: FxHashSet<NodeId> = FxHashSet::default();
    let mut r = Resolve {
        w,
        resources: None,
        partitions: partitions as usize,
        partition: e.partition as usize,
        index: 0,
        last_source: None,
        roles: Default::default(),
        packages: Default::default(),
    };
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            r.index = i;
            let edge: EdgeRef<'_> = match edge_ref_fast(rec) {
                Some(e) => e,
                None => rmp_serde::from_slice(rec)
                    .map_err(|err| bad(i, format!("not an edge record in an edges section: {err}")))?,
            };
            match edge {
                EdgeRef::Assignment(a) => {
                    seen.assignments += 1;
                    let from = r.source(a.from)?;
                    let to = r.party(a.to)?;
                    let role = r.role(a.role)?;
                    if !assignments.insert((from, to, role)) {
                        return Err(bad(
                            i,
                            format!("duplicate assignment `{}` → `{}` ({})", a.from, a.to, a.role),
                        ));
                    }
                    let edge = r.assignment(role, &a.packages, &a.resources, &a.instances)?;
                    out.push((from, to, Edge::Assignment(edge)));
                }
                EdgeRef::Delegation(d) => {
                    seen.delegations += 1;
                    let client = r.source(d.client)?;
                    let facilitator = r.party(d.facilitator)?;
                    let agent = r.party(d.agent)?;
                    let role = r.role(d.role)?;
                    if !delegations.insert((client, agent, facilitator, role)) {
                        return Err(bad(i, "duplicate delegation".into()));
                    }
                    let edge = Delegation {
                        facilitator,
                        role,
                        packages: r.packages(&d.packages)?,
                        resources: r.grants(&d.resources)?,
                    };
                    out.push((client, agent, Edge::Delegation(edge)));
                }
                EdgeRef::MainUnit(m) => {
                    seen.main_units += 1;
                    let sub = r.source(m.sub)?;
                    let main = r.party(m.main)?;
                    let role = r.role(m.role)?;
                    if !subs.insert(sub) {
                        return Err(bad(i, format!("`{}` has two main units", m.sub)));
                    }
                    out.push((sub, main, Edge::MainUnit(role)));
                }
            }
            Ok(())
        })
    })?;
    if seen != c {
        return Err(SnapshotError::Corrupt(format!(
            "records {seen:?} where the footer says {c:?}"
        )));
    }
    Ok(out)
}

// The edge records of version 5 (see `AssignmentOut`), borrowed.

#[derive(Deserialize, Debug, PartialEq)]
struct AssignmentAt<'a> {
    from: u32,
    to: u64,
    role: &'a str,
    #[serde(borrow)]
    packages: Vec<&'a str>,
    #[serde(borrow)]
    resources: Vec<GrantRef<'a>>,
    #[serde(borrow)]
    instances: Vec<InstanceGrantRef<'a>>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct DelegationAt<'a> {
    client: u32,
    facilitator: u64,
    agent: u64,
    role: &'a str,
    #[serde(borrow)]
    packages: Vec<&'a str>,
    #[serde(borrow)]
    resources: Vec<GrantRef<'a>>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct MainUnitAt<'a> {
    sub: u32,
    main: u64,
    role: &'a str,
}

#[derive(Deserialize, Debug, PartialEq)]
enum EdgeAt<'a> {
    #[serde(borrow)]
    Assignment(AssignmentAt<'a>),
    #[serde(borrow)]
    Delegation(DelegationAt<'a>),
    #[serde(borrow)]
    MainUnit(MainUnitAt<'a>),
}

impl<'a> EdgeAt<'a> {
    /// Record `i` of an edges section, decoded borrowed.
    fn decode(i: u64, rec: &'a [u8]) -> Result<EdgeAt<'a>> {
        if let Some(e) = edge_fast(rec) {
            return Ok(e);
        }
        rmp_serde::from_slice(rec)
            .map_err(|err| bad(i, format!("not an edge record in an edges section: {err}")))
    }

    /// Its source's place in the section's partition (the key edges are ordered by).
    fn source(&self) -> u32 {
        match self {
            EdgeAt::Assignment(a) => a.from,
            EdgeAt::Delegation(d) => d.client,
            EdgeAt::MainUnit(m) => m.sub,
        }
    }
}

/// What one edge of a source says, for the duplicate checks at the end of its group:
/// (kind, receiver, facilitator or receiver, role).
type EdgeKey = (u8, NodeId, NodeId, RoleId);

/// The edges of the same source: none may repeat another, at most one main unit.
fn check_group(w: &World, source: NodeId, keys: &mut Vec<EdgeKey>, index: u64) -> Result<()> {
    keys.sort_unstable();
    let id = || w.graph.ext_id(source).to_string();
    if keys.iter().filter(|k| k.0 == 2).count() > 1 {
        return Err(bad(index, format!("`{}` has two main units", id())));
    }
    if let Some(k) = keys
        .windows(2)
        .find(|p| p.first() == p.get(1))
        .and_then(|p| p.first())
    {
        let what = if k.0 == 0 { "assignment" } else { "delegation" };
        return Err(bad(
            index,
            format!(
                "duplicate {what} `{}` → `{}` ({})",
                id(),
                w.graph.ext_id(k.1),
                w.catalog.role(k.3).code
            ),
        ));
    }
    keys.clear();
    Ok(())
}

/// The edges of one partition in a version 5 file, resolved by place against the nodes
/// the parties got (`placed`, by partition and position) and checked: sources in
/// place order (so that all of a source's edges are together), no duplicate edge, one
/// main unit per sub-unit.
fn read_edges_placed(
    src: &dyn Source,
    e: &SectionEntry,
    w: &World,
    placed: &[Vec<NodeId>],
) -> Result<Vec<FullEdge>> {
    let c = e.counts;
    let mut out = Vec::with_capacity((c.assignments + c.delegations + c.main_units) as usize);
    let mut index = 0;
    let mut seen = Counts::default();
    let own = placed.get(e.partition as usize).map_or(&[][..], |v| v.as_slice());
    let mut r = Resolve {
        w,
        resources: None,
        partitions: placed.len(),
        partition: e.partition as usize,
        index: 0,
        last_source: None,
        roles: Default::default(),
        packages: Default::default(),
    };
    let mut group: Option<(u32, NodeId)> = None;
    let mut keys: Vec<EdgeKey> = Vec::new();
    let mut last = 0;
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            r.index = i;
            last = i;
            let edge = EdgeAt::decode(i, rec)?;
            let from = edge.source();
            let source = match group {
                Some((at, n)) if at == from => n,
                Some((at, _)) if at > from => {
                    return Err(bad(
                        i,
                        format!("source {from} after source {at}: edges out of order"),
                    ));
                }
                _ => {
                    if let Some((_, n)) = group {
                        check_group(w, n, &mut keys, i)?;
                    }
                    let n = own.get(from as usize).copied().ok_or_else(|| {
                        bad(
                            i,
                            format!(
                                "names party {from} of partition {}, which does not exist",
                                e.partition
                            ),
                        )
                    })?;
                    group = Some((from, n));
                    n
                }
            };
            let party = |at: u64| -> Result<NodeId> {
                let (p, k) = ((at >> 32) as usize, (at & 0xffff_ffff) as usize);
                placed.get(p).and_then(|v| v.get(k)).copied().ok_or_else(|| {
                    bad(
                        i,
                        format!("names party {k} of partition {p}, which does not exist"),
                    )
                })
            };
            match edge {
                EdgeAt::Assignment(a) => {
                    seen.assignments += 1;
                    let to = party(a.to)?;
                    let role = r.role(a.role)?;
                    keys.push((0, to, to, role));
                    let edge = r.assignment(role, &a.packages, &a.resources, &a.instances)?;
                    out.push((source, to, Edge::Assignment(edge)));
                }
                EdgeAt::Delegation(d) => {
                    seen.delegations += 1;
                    let facilitator = party(d.facilitator)?;
                    let agent = party(d.agent)?;
                    let role = r.role(d.role)?;
                    keys.push((1, agent, facilitator, role));
                    let edge = Delegation {
                        facilitator,
                        role,
                        packages: r.packages(&d.packages)?,
                        resources: r.grants(&d.resources)?,
                    };
                    out.push((source, agent, Edge::Delegation(edge)));
                }
                EdgeAt::MainUnit(m) => {
                    seen.main_units += 1;
                    let main = party(m.main)?;
                    let role = r.role(m.role)?;
                    keys.push((2, main, main, role));
                    out.push((source, main, Edge::MainUnit(role)));
                }
            }
            Ok(())
        })
    })?;
    if let Some((_, n)) = group {
        check_group(w, n, &mut keys, last)?;
    }
    if seen != c {
        return Err(SnapshotError::Corrupt(format!(
            "records {seen:?} where the footer says {c:?}"
        )));
    }
    Ok(out)
}

/// What the first phase of a load decodes from one section.
enum Decoded {
    Global(Vec<Record>),
    Parties(PreparedParties),
}

/// Reads a version 4 file: global section and parties on all cores, then the nodes,
/// then the edges on all cores, then the edges into the graph.
pub(super) fn read_world(
    src: &dyn Source,
    parts: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(World, Loaded)> {
    if let Some(plan) = plan(src, parts)? {
        let built = run_jobs(plan.parts, |j| build_part(src, &plan, j))?;
        progress(plan.header.counts.total());
        return finish_parts(plan, built, src.len());
    }
    let (header, version, _, footer) = read_index(src)?;
    let p = footer.partitions;
    let secs = &footer.sections;
    let (globals, rest) = secs.split_at(1);
    let (party_secs, edge_secs) = rest.split_at(p as usize);
    let first: Vec<&SectionEntry> = globals.iter().chain(party_secs).collect();
    let decoded = run_jobs(first.len(), |j| {
        let e = first.get(j).ok_or(SnapshotError::Truncated("section"))?;
        match e.kind {
            SectionKind::Global => read_global(src, e).map(Decoded::Global),
            _ => read_parties(src, e, p).map(Decoded::Parties),
        }
        .map_err(in_section(e, p))
    })?;
    let c = header.counts;
    // Into a graph of `parts` parts: with as many sections, each goes to its part whole.
    let mut loader = Loader::with_partitions(parts);
    loader.world.graph.reserve(
        c.parties as usize,
        c.resources as usize,
        (c.assignments + c.delegations + c.main_units) as usize,
    );
    let mut done = 0u64;
    let mut global = Vec::new();
    let mut batches = Vec::with_capacity(party_secs.len());
    for d in decoded {
        match d {
            Decoded::Global(v) => global = v,
            Decoded::Parties(v) => {
                done += v.len() as u64;
                batches.push(v);
            }
        }
    }
    let placed = loader
        .world
        .graph
        .add_prepared(batches)
        .map_err(|id| SnapshotError::Corrupt(format!("duplicate party `{id}`")))?;
    progress(done);
    let in_global = globals.first().map(|e| in_section(e, p));
    let wrap = |err| match &in_global {
        Some(f) => f(err),
        None => err,
    };
    for rec in global {
        loader.add(rec).map_err(wrap)?;
        done += 1;
    }
    progress(done);
    let world = &loader.world;
    let edges = run_jobs(edge_secs.len(), |j| {
        let e = edge_secs.get(j).ok_or(SnapshotError::Truncated("section"))?;
        if version >= PLACED_VERSION {
            read_edges_placed(src, e, world, &placed)
        } else {
            read_edges(src, e, world, p)
        }
        .map_err(in_section(e, p))
    })?;
    drop(placed);
    done += edges.iter().map(|v| v.len() as u64).sum::<u64>();
    loader.world.graph.add_edges(edges);
    progress(done);
    let world = loader.finish()?;
    Ok((
        world,
        Loaded {
            header,
            version,
            bytes: src.len(),
        },
    ))
}

// ---------------------------------------------------------------- loading part by part

/// How a version 5 file is loaded into a graph of `parts` parts, each part built whole
/// by a worker of its own from its own sections ([`build_part`]), then the parts put
/// together ([`finish_parts`]). Possible when the file's partitions fall whole into the
/// parts (`parts` divides their number: file partition `s` is then graph part
/// `s % parts`, both being the same FNV hash modulo): then every party's node is known
/// from the footer's counts alone (the parties of part `j` are those of its file
/// partitions in order), so a part resolves its edges without waiting for the others,
/// and the resources' nodes (after the parties of their part) from the global section.
pub(super) struct PartsPlan {
    header: Header,
    version: u32,
    footer: Footer,
    parts: usize,
    /// Per file partition: its parties, and the index in its graph part of the first.
    counts: Vec<usize>,
    first: Vec<usize>,
    /// Per graph part: its parties and its resources.
    part_parties: Vec<usize>,
    part_resources: Vec<usize>,
    /// Resource id → the node it gets when the global section is added.
    resources: FxHashMap<String, NodeId>,
    global: Vec<Record>,
}

/// The plan to load `src` into `parts` parts, or None when it cannot be loaded part by
/// part (an older version, or `parts` does not divide the file's partitions).
pub(super) fn plan(src: &dyn Source, parts: usize) -> Result<Option<PartsPlan>> {
    let (header, version, _, footer) = read_index(src)?;
    let p = footer.partitions as usize;
    if version < PLACED_VERSION || parts == 0 || parts > crate::graph::MAX_PARTS || !p.is_multiple_of(parts) {
        return Ok(None);
    }
    let global = match footer.sections.first() {
        Some(e) => read_global(src, e).map_err(in_section(e, footer.partitions))?,
        None => return Err(SnapshotError::Truncated("section")),
    };
    let mut counts = vec![0; p];
    let mut first = vec![0; p];
    let mut part_parties = vec![0; parts];
    // The footer was checked: parties sections 0..p follow the global section.
    for e in footer.sections.iter().skip(1).take(p) {
        let s = e.partition as usize;
        let j = s % parts;
        let (Some(c), Some(f), Some(n)) = (counts.get_mut(s), first.get_mut(s), part_parties.get_mut(j))
        else {
            continue;
        };
        *c = e.counts.parties as usize;
        *f = *n;
        *n += *c;
    }
    let mut part_resources = vec![0; parts];
    let mut resources = FxHashMap::default();
    for r in &global {
        if let Record::Resource(r) = r {
            let j = partition_of(&r.id, parts);
            if let (Some(n), Some(k)) = (part_parties.get(j), part_resources.get_mut(j)) {
                resources.insert(r.id.clone(), NodeId::placed(j, n + *k));
                *k += 1;
            }
        }
    }
    Ok(Some(PartsPlan {
        header,
        version,
        footer,
        parts,
        counts,
        first,
        part_parties,
        part_resources,
        resources,
        global,
    }))
}

/// How many items go from a decoding thread to a building one at a time: small enough
/// that the memory of a chunk is reused (malloc's arena, not fresh pages), large enough
/// that the hand-over costs nothing to speak of.
const CHUNK: usize = 2048;

/// What a decoding thread hands over, a chunk at a time.
struct Chunks<T> {
    tx: std::sync::mpsc::SyncSender<Vec<T>>,
    buf: Vec<T>,
}

impl<T> Chunks<T> {
    fn push(&mut self, t: T) -> Result<()> {
        self.buf.push(t);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(full)
            .map_err(|_| SnapshotError::Corrupt("the loader stopped".into()))
    }
}

/// Runs `produce` on a second thread, handing what it makes to `consume` on this one
/// chunk by chunk (decoding beside building). The first error stops both: the
/// consumer's if it failed (the producer then fails to hand over), else the producer's.
fn pipe<T: Send>(
    produce: impl FnOnce(&mut Chunks<T>) -> Result<()> + Send,
    mut consume: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<T>>(4);
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            let mut c = Chunks {
                tx,
                buf: Vec::with_capacity(CHUNK),
            };
            produce(&mut c).and_then(|()| c.flush())
        });
        let mut res = Ok(());
        'all: for chunk in rx.iter() {
            for t in chunk {
                if let Err(e) = consume(t) {
                    res = Err(e);
                    break 'all;
                }
            }
        }
        drop(rx);
        let produced = h
            .join()
            .unwrap_or_else(|_| Err(SnapshotError::Corrupt("a worker thread panicked".into())));
        res.and(produced)
    })
}

/// Builds graph part `j` of the plan from its own sections: its parties decoded on a
/// second thread while this one adds them, then its edges the same way (resolved by
/// place against the plan, checked as in [`read_edges_placed`]).
pub(super) fn build_part(src: &dyn Source, plan: &PartsPlan, j: usize) -> Result<PartBuilder> {
    let p = plan.footer.partitions;
    let pn = p as usize;
    let secs = &plan.footer.sections;
    let mine = |kind: SectionKind| -> Vec<&SectionEntry> {
        secs.iter()
            .filter(|e| e.kind == kind && e.partition as usize % plan.parts == j)
            .collect()
    };
    let (party_secs, edge_secs) = (mine(SectionKind::Parties), mine(SectionKind::Edges));
    let parties = plan.part_parties.get(j).copied().unwrap_or(0);
    let edges: usize = edge_secs
        .iter()
        .map(|e| (e.counts.assignments + e.counts.delegations + e.counts.main_units) as usize)
        .sum();
    let resources = plan.part_resources.get(j).copied().unwrap_or(0);
    let mut b = PartBuilder::new(j, plan.parts, parties, resources, edges);
    // The parties are decoded on a second thread; this one adds their nodes and gathers
    // their ids and identifiers, put into the maps on a third thread during the edges.
    let mut idents = b.take_idents();
    pipe(
        |out: &mut Chunks<Party>| {
            for e in &party_secs {
                decode_parties(src, e, p, |party| out.push(party)).map_err(in_section(e, p))?;
            }
            Ok(())
        },
        |party| {
            idents.add(&party, b.next_node());
            b.add_party(party);
            Ok(())
        },
    )?;

    if b.party_count() != parties {
        return Err(SnapshotError::Corrupt(format!(
            "part {j}: {} parties where the footer says {parties}",
            b.party_count()
        )));
    }
    // Only the catalogue of this world is read (roles, packages); the resources come
    // from the plan.
    let names = World::new();
    let place = |s: usize, k: usize| -> Option<NodeId> {
        let (c, f) = (plan.counts.get(s)?, plan.first.get(s)?);
        (k < *c).then(|| NodeId::placed(s % plan.parts, f + k))
    };
    // The identifier maps are filled on a third thread meanwhile (the edges do not
    // need them): a tight loop of inserts, which overlap their cache misses.
    let edges = std::thread::scope(|s| {
        let indexer = s.spawn(move || {
            let done = idents.index();
            (idents, done)
        });
        let edges = pipe(
            |out: &mut Chunks<FullEdge>| {
                for e in &edge_secs {
                    decode_edges_at(e, src, &names, &plan.resources, pn, &place, out)
                        .map_err(in_section(e, p))?;
                }
                Ok(())
            },
            |(from, to, w)| {
                b.add_edge(from, to, w);
                Ok(())
            },
        );
        match indexer.join() {
            Ok((idents, done)) => {
                b.put_idents(idents);
                done.map_err(|id| SnapshotError::Corrupt(format!("duplicate party `{id}`")))?;
            }
            Err(_) => return Err(SnapshotError::Corrupt("a worker thread panicked".into())),
        }
        edges
    });
    edges?;
    Ok(b)
}

/// The edges of one partition's section by place (see [`read_edges_placed`], which
/// checks the same), to `out`.
fn decode_edges_at(
    e: &SectionEntry,
    src: &dyn Source,
    names: &World,
    resources: &FxHashMap<String, NodeId>,
    partitions: usize,
    place: &(dyn Fn(usize, usize) -> Option<NodeId> + Sync),
    out: &mut Chunks<FullEdge>,
) -> Result<()> {
    let c = e.counts;
    let mut index = 0;
    let mut seen = Counts::default();
    let s = e.partition as usize;
    let mut r = Resolve {
        w: names,
        resources: Some(resources),
        partitions,
        partition: s,
        index: 0,
        last_source: None,
        roles: Default::default(),
        packages: Default::default(),
    };
    // (source position, its node) of the current group, and its edges' keys: (kind,
    // receiver, facilitator or receiver, role), the parties by place.
    let mut group: Option<(u32, NodeId)> = None;
    let mut keys: Vec<(u8, u64, u64, RoleId)> = Vec::new();
    let mut last = 0;
    let named = |at: u64| format!("party {} of partition {}", at & 0xffff_ffff, at >> 32);
    let check = |keys: &mut Vec<(u8, u64, u64, RoleId)>, source: u32, index: u64| -> Result<()> {
        let source = (s as u64) << 32 | u64::from(source);
        keys.sort_unstable();
        if keys.iter().filter(|k| k.0 == 2).count() > 1 {
            return Err(bad(index, format!("{} has two main units", named(source))));
        }
        if let Some(k) = keys
            .windows(2)
            .find(|p| p.first() == p.get(1))
            .and_then(|p| p.first())
        {
            let what = if k.0 == 0 { "assignment" } else { "delegation" };
            return Err(bad(
                index,
                format!(
                    "duplicate {what} {} → {} ({})",
                    named(source),
                    named(k.1),
                    names.catalog.role(k.3).code
                ),
            ));
        }
        keys.clear();
        Ok(())
    };
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            r.index = i;
            last = i;
            let edge = EdgeAt::decode(i, rec)?;
            let from = edge.source();
            let source = match group {
                Some((at, n)) if at == from => n,
                Some((at, _)) if at > from => {
                    return Err(bad(
                        i,
                        format!("source {from} after source {at}: edges out of order"),
                    ));
                }
                _ => {
                    if let Some((at, _)) = group {
                        check(&mut keys, at, i)?;
                    }
                    let n = place(s, from as usize).ok_or_else(|| {
                        bad(
                            i,
                            format!("names party {from} of partition {s}, which does not exist"),
                        )
                    })?;
                    group = Some((from, n));
                    n
                }
            };
            let party = |at: u64| -> Result<NodeId> {
                let (p, k) = ((at >> 32) as usize, (at & 0xffff_ffff) as usize);
                place(p, k).ok_or_else(|| {
                    bad(
                        i,
                        format!("names party {k} of partition {p}, which does not exist"),
                    )
                })
            };
            match edge {
                EdgeAt::Assignment(a) => {
                    seen.assignments += 1;
                    let to = party(a.to)?;
                    let role = r.role(a.role)?;
                    keys.push((0, a.to, a.to, role));
                    let edge = r.assignment(role, &a.packages, &a.resources, &a.instances)?;
                    out.push((source, to, Edge::Assignment(edge)))
                }
                EdgeAt::Delegation(d) => {
                    seen.delegations += 1;
                    let facilitator = party(d.facilitator)?;
                    let agent = party(d.agent)?;
                    let role = r.role(d.role)?;
                    keys.push((1, d.agent, d.facilitator, role));
                    let edge = Delegation {
                        facilitator,
                        role,
                        packages: r.packages(&d.packages)?,
                        resources: r.grants(&d.resources)?,
                    };
                    out.push((source, agent, Edge::Delegation(edge)))
                }
                EdgeAt::MainUnit(m) => {
                    seen.main_units += 1;
                    let main = party(m.main)?;
                    let role = r.role(m.role)?;
                    keys.push((2, m.main, m.main, role));
                    out.push((source, main, Edge::MainUnit(role)))
                }
            }
        })
    })?;
    if let Some((at, _)) = group {
        check(&mut keys, at, last)?;
    }
    if seen != c {
        return Err(SnapshotError::Corrupt(format!(
            "records {seen:?} where the footer says {c:?}"
        )));
    }
    Ok(())
}

/// The world of the parts built by [`build_part`] (part `j` the `j`-th): the parts put
/// together, then the global section's records added (the resources land where the
/// plan placed them; checked).
pub(super) fn finish_parts(plan: PartsPlan, built: Vec<PartBuilder>, bytes: u64) -> Result<(World, Loaded)> {
    let PartsPlan {
        header,
        version,
        footer,
        parts,
        resources,
        global,
        ..
    } = plan;
    if built.len() != parts {
        return Err(SnapshotError::Corrupt(format!(
            "{} parts built of {parts}",
            built.len()
        )));
    }
    let graph = crate::graph::Graph::from_builders(built).map_err(SnapshotError::Corrupt)?;
    let mut loader = Loader::with_partitions(parts);
    loader.world.graph = graph;
    loader.edges_apart = true;
    let Some(g) = footer.sections.first() else {
        return Err(SnapshotError::Truncated("section"));
    };
    let wrap = in_section(g, footer.partitions);
    for rec in global {
        loader.add(rec).map_err(&wrap)?;
    }
    for (id, n) in &resources {
        if loader.world.graph.resource_node(id) != Some(*n) {
            return Err(wrap(SnapshotError::Corrupt(format!(
                "resource `{id}` is not where the edges were resolved to"
            ))));
        }
    }
    let world = loader.finish()?;
    Ok((
        world,
        Loaded {
            header,
            version,
            bytes,
        },
    ))
}

/// A version 5 file opened to be loaded part by part: [`PartsLoad::build`] builds one
/// part of the graph from that part's own sections (the caller runs one per part, each
/// on a worker of its own: the partition actors of `serve` and `snapshot load` do),
/// then [`PartsLoad::finish`] puts the parts together into the world. The codec knows
/// records and graph parts, not who runs the builds.
pub struct PartsLoad {
    plan: PartsPlan,
    path: std::path::PathBuf,
    len: u64,
}

impl PartsLoad {
    /// Opens `path` to be loaded into `parts` parts; None when it cannot be loaded part
    /// by part (a version before 5, or `parts` does not divide the file's partitions):
    /// [`super::load_in`] loads any file.
    pub fn open(path: &Path, parts: usize) -> Result<Option<PartsLoad>> {
        let inner = || {
            let mut f = std::fs::File::open(path)?;
            let mut first = [0u8; 12];
            let got = f.read(&mut first)?;
            let len = f.metadata()?.len();
            if super::version_of(first.get(..got).unwrap_or_default()).is_none_or(|v| v < PLACED_VERSION) {
                return Ok(None);
            }
            let src = FileAt { path, len };
            Ok(plan(&src, parts)?.map(|plan| PartsLoad {
                plan,
                path: path.to_path_buf(),
                len,
            }))
        };
        inner().map_err(|e: SnapshotError| e.at(path))
    }

    /// How many parts the graph is loaded into.
    pub fn parts(&self) -> usize {
        self.plan.parts
    }

    /// Builds part `part` (on the caller's thread and one more).
    pub fn build(&self, part: usize) -> Result<PartBuilder> {
        let src = FileAt {
            path: &self.path,
            len: self.len,
        };
        build_part(&src, &self.plan, part).map_err(|e| e.at(&self.path))
    }

    /// The world of the built parts (part `j` the `j`-th).
    pub fn finish(self, built: Vec<PartBuilder>) -> Result<(World, Loaded)> {
        let path = self.path;
        finish_parts(self.plan, built, self.len).map_err(|e| e.at(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(p: &Party) -> Vec<u8> {
        rmp_serde::to_vec(&PartyRecordOut::Party(PartyOut::of(p))).unwrap_or_default()
    }

    fn by_serde(rec: &[u8]) -> Option<PartyRef<'_>> {
        let PartyRecordRef::Party(p) = rmp_serde::from_slice(rec).ok()?;
        Some(p)
    }

    /// Parties of every shape the writer gives: the fast decoder reads each as rmp-serde
    /// does.
    #[test]
    fn party_records_decode_as_rmp_serde_decodes_them() {
        let mut parties = vec![Party::new("p0", PartyKind::Person)];
        let mut kari = Party::new("kari-nordmann", PartyKind::Person);
        kari.name = Some("Kåre Ødegård".into());
        kari.ssn = Some("01014000000".into());
        kari.party_id = Some(50_000_000);
        kari.user_id = Some(i64::MAX);
        kari.alive = false;
        parties.push(kari);
        let mut org = Party::new("o1", PartyKind::Organisation);
        org.unit_type = Some("AS".into());
        org.org_no = Some("910000001".into());
        org.set_uuid(Some("A1B2C3D4-0000-4000-8000-000000000001".into()));
        org.party_id = Some(-1);
        org.user_id = Some(i64::MIN);
        org.name = Some("x".repeat(40_000).into());
        parties.push(org);
        for (i, k) in [SystemUserKind::Standard, SystemUserKind::Agent]
            .into_iter()
            .enumerate()
        {
            let mut su = Party::new(&format!("su{i}"), PartyKind::SystemUser);
            su.set_system_user_kind(Some(k));
            su.set_owner(Some("o1".into()));
            su.set_system(Some("vendor-system".repeat(20)));
            su.party_id = Some(200 + 70_000 * i as i64);
            su.user_id = Some(-200 - 70_000 * i as i64);
            parties.push(su);
        }
        for p in &parties {
            let rec = record(p);
            let fast = party_fast(&rec);
            assert!(fast.is_some(), "{p:?} not read by the fast path");
            assert_eq!(fast, by_serde(&rec), "{p:?}");
        }
    }

    /// The edge records as the writer shapes them (variant name → array of fields;
    /// grants as arrays), from a mirror of tuples.
    #[derive(serde::Serialize)]
    #[allow(clippy::type_complexity)]
    enum EdgeMirror<'a> {
        Assignment(
            (
                u32,
                u64,
                &'a str,
                Vec<&'a str>,
                Vec<(&'a str, Vec<&'a str>)>,
                Vec<(&'a str, &'a str, Vec<&'a str>)>,
            ),
        ),
        Delegation((u32, u64, u64, &'a str, Vec<&'a str>, Vec<(&'a str, Vec<&'a str>)>)),
        MainUnit((u32, u64, &'a str)),
    }

    #[derive(serde::Serialize)]
    #[allow(clippy::type_complexity)]
    enum EdgeMirror4<'a> {
        Assignment(
            (
                &'a str,
                &'a str,
                &'a str,
                Vec<&'a str>,
                Vec<(&'a str, Vec<&'a str>)>,
                Vec<(&'a str, &'a str, Vec<&'a str>)>,
            ),
        ),
        Delegation(
            (
                &'a str,
                &'a str,
                &'a str,
                &'a str,
                Vec<&'a str>,
                Vec<(&'a str, Vec<&'a str>)>,
            ),
        ),
        MainUnit((&'a str, &'a str, &'a str)),
    }

    #[test]
    fn edge_records_decode_as_rmp_serde_decodes_them() {
        let long = "r".repeat(300);
        let edges = [
            EdgeMirror::Assignment((0, 0, "daglig-leder", vec![], vec![], vec![])),
            EdgeMirror::Assignment((
                u32::MAX,
                (15 << 32) | 70_000,
                "regnskapsforer",
                vec!["regnskapsforer-lonn", "ansvarlig-revisor"],
                vec![("skatt-mva", vec!["read", "write"]), (&long, vec![])],
                vec![("skatt-mva", "inst-1", vec!["sign"])],
            )),
            EdgeMirror::Delegation((
                7,
                u64::MAX,
                300,
                "revisor",
                vec!["revisormedarbeider"],
                vec![("a", vec!["b"])],
            )),
            EdgeMirror::MainUnit((65_536, 1 << 40, "hovedenhet")),
        ];
        for e in &edges {
            let rec = rmp_serde::to_vec(e).unwrap_or_default();
            let fast = edge_fast(&rec);
            assert!(fast.is_some(), "not read by the fast path: {rec:?}");
            let serde: Option<EdgeAt<'_>> = rmp_serde::from_slice(&rec).ok();
            assert_eq!(fast, serde);
            assert!(edge_fast(&rec[..rec.len() - 1]).is_none());
        }
        // The same shapes with parties by external id (version 4).
        let refs = [
            (
                "Assignment",
                rmp_serde::to_vec(&EdgeMirror4::Assignment((
                    "o1",
                    "p0",
                    "daglig-leder",
                    vec!["lonn"],
                    vec![("skatt-mva", vec!["read"])],
                    vec![("skatt-mva", "i-1", vec![])],
                ))),
            ),
            (
                "Delegation",
                rmp_serde::to_vec(&EdgeMirror4::Delegation((
                    "o1",
                    "o2",
                    "p1",
                    "regnskapsforer",
                    vec![],
                    vec![],
                ))),
            ),
            (
                "MainUnit",
                rmp_serde::to_vec(&EdgeMirror4::MainUnit(("o3", "o1", "hovedenhet"))),
            ),
        ];
        for (what, rec) in refs {
            let rec = rec.unwrap_or_default();
            let fast = edge_ref_fast(&rec);
            assert!(fast.is_some(), "{what} not read by the fast path");
            let serde: Option<EdgeRef<'_>> = rmp_serde::from_slice(&rec).ok();
            assert_eq!(fast, serde, "{what}");
        }
        // A source that does not fit 32 bits is left to rmp-serde (which refuses it).
        let rec = rmp_serde::to_vec(&EdgeMirror::MainUnit((0, 1, "x"))).unwrap_or_default();
        let mut wide = rec.clone();
        wide.splice(11..12, [0xcf, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(edge_fast(&wide).is_none());
        assert!(rmp_serde::from_slice::<EdgeAt<'_>>(&wide).is_err());
    }

    /// A record of another shape (cut short, a byte too many, another variant) is left
    /// to rmp-serde.
    #[test]
    fn other_records_are_left_to_rmp_serde() {
        let rec = record(&Party::new("p0", PartyKind::Person));
        assert!(party_fast(&rec[..rec.len() - 1]).is_none());
        let mut longer = rec.clone();
        longer.push(0xc0);
        assert!(party_fast(&longer).is_none());
        let mut other = rec;
        if let Some(b) = other.get_mut(2) {
            *b = b'Q';
        }
        assert!(party_fast(&other).is_none());
    }
}
