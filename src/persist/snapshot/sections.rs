//! Schema version 4: one file, many sections, read and written in parallel.
//!
//! ```text
//! magic, version (4), header_len, header, header_crc    as in versions 1 to 3
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
//! footer's counts), then decodes every partition's edges on all cores against the
//! finished id maps (borrowed strings: no allocation for ids or codes) and adds them.
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

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use super::{
    BLOCK_TARGET, Counts, Header, Loaded, Loader, MAX_BLOCK, Record, Result, SnapshotReader, bad, count,
    edge_records, party_record, resource_record, state_records, u32_at,
};
use crate::catalog::PackageSet;
use crate::graph::{Actions, Assignment, Delegation, Edge, NodeId, Party, PreparedParties, partition_of};
use crate::model::RoleId;
use crate::persist::error::SnapshotError;
use crate::world::World;

/// The first schema version written in sections.
pub const SECTIONED_VERSION: u32 = 4;
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

/// Writes a world as a version 4 file in `partitions` partitions, encoding the sections
/// on all cores; returns the output and the counts written.
pub fn write_world<W: Write>(
    w: &World,
    mut out: W,
    last_seq: u64,
    partitions: u32,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, Counts)> {
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(SnapshotError::Encode(format!(
            "{partitions} partitions: between 1 and {MAX_PARTITIONS}"
        )));
    }
    let header = Header {
        created_at: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        last_seq,
        counts: count(w),
        compression: "lz4-block".to_string(),
        engine: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut offset = super::write_prefix(&mut out, SECTIONED_VERSION, &header)?;
    let p = partitions as usize;
    let g = &w.graph;
    let mut homes: Vec<Vec<NodeId>> = vec![Vec::new(); p];
    for (n, party) in g.parties() {
        if let Some(h) = homes.get_mut(partition_of(&party.id, p)) {
            h.push(n);
        }
    }
    let jobs = 1 + 2 * p;
    let kind_of = |j: usize| match j {
        0 => (SectionKind::Global, 0),
        j if j <= p => (SectionKind::Parties, j - 1),
        j => (SectionKind::Edges, j - 1 - p),
    };
    let encode = |j: usize| -> Result<(Vec<u8>, Counts)> {
        let mut sw = SectionWriter::new();
        let (kind, part) = kind_of(j);
        let home = homes.get(part).map_or(&[][..], |v| v.as_slice());
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
                        sw.push(&Record::Party(party_record(party)))?;
                    }
                }
            }
            SectionKind::Edges => {
                for n in home {
                    for r in edge_records(w, *n) {
                        sw.push(&r)?;
                    }
                }
            }
        }
        sw.finish()
    };
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<(Vec<u8>, Counts)>)>();
    let mut entries = Vec::with_capacity(jobs);
    let mut total = Counts::default();
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
        for (j, r) in rx.iter() {
            let r = match r {
                Ok(x) => x,
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            };
            pending.insert(j, r);
            while let Some((bytes, counts)) = pending.remove(&want) {
                let (kind, part) = kind_of(want);
                out.write_all(&bytes)?;
                entries.push(SectionEntry {
                    kind,
                    partition: part as u32,
                    offset,
                    len: bytes.len() as u64,
                    crc: crc32fast::hash(&bytes),
                    counts,
                });
                offset += bytes.len() as u64;
                total = total.plus(&counts);
                progress(total.total());
                want += 1;
            }
        }
        if want != jobs {
            return Err(SnapshotError::Encode("a section was not written".into()));
        }
        Ok(())
    });
    written?;
    if total != header.counts {
        return Err(SnapshotError::Encode(format!(
            "counted {:?} before writing but wrote {total:?}",
            header.counts
        )));
    }
    let footer = rmp_serde::to_vec(&Footer {
        partitions,
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

/// The parties of one partition, checked and made ready for the graph.
fn read_parties(src: &dyn Source, e: &SectionEntry, partitions: u32) -> Result<PreparedParties> {
    let mut out = PreparedParties::with_capacity(e.counts.parties as usize);
    let mut index = 0;
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            let Record::Party(p) = decode_record(i, rec)? else {
                return Err(bad(i, "not a party record in a parties section".into()));
            };
            crate::model::check_id("party id", &p.id).map_err(|err| bad(i, err.message))?;
            if partition_of(&p.id, partitions as usize) != e.partition as usize {
                return Err(bad(i, format!("party `{}` belongs to another partition", p.id)));
            }
            out.push(Party {
                id: p.id,
                kind: p.kind,
                name: p.name,
                unit_type: p.unit_type,
                org_no: p.org_no,
                ssn: p.ssn,
                alive: p.alive,
                system_user_kind: p.system_user_kind,
                owner: p.owner,
                system: p.system,
                uuid: p.uuid,
                party_id: p.party_id,
                user_id: p.user_id,
            });
            Ok(())
        })
    })?;
    if out.len() as u64 != e.counts.parties {
        return Err(SnapshotError::Corrupt(format!(
            "{} parties where the footer says {}",
            out.len(),
            e.counts.parties
        )));
    }
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

#[derive(Deserialize)]
struct GrantRef<'a> {
    resource: &'a str,
    #[serde(borrow)]
    actions: Vec<&'a str>,
}

#[derive(Deserialize)]
struct InstanceGrantRef<'a> {
    resource: &'a str,
    instance: &'a str,
    #[serde(borrow)]
    actions: Vec<&'a str>,
}

#[derive(Deserialize)]
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

#[derive(Deserialize)]
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

#[derive(Deserialize)]
struct MainUnitRef<'a> {
    sub: &'a str,
    main: &'a str,
    role: &'a str,
}

/// The edge variants of [`Record`], by the same names.
#[derive(Deserialize)]
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
    partitions: usize,
    partition: usize,
    index: u64,
    last_source: Option<(&'w str, NodeId)>,
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
        self.w
            .graph
            .resource_node(id)
            .ok_or_else(|| bad(self.index, format!("names unknown resource `{id}`")))
    }
    fn role(&self, code: &str) -> Result<RoleId> {
        self.w
            .catalog
            .role_id(code)
            .ok_or_else(|| bad(self.index, format!("names unknown role `{code}`")))
    }
    fn packages(&self, codes: &[&str]) -> Result<PackageSet> {
        codes
            .iter()
            .map(|p| {
                self.w
                    .catalog
                    .package_id(p)
                    .ok_or_else(|| bad(self.index, format!("names unknown package `{p}`")))
            })
            .collect()
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
        partitions: partitions as usize,
        partition: e.partition as usize,
        index: 0,
        last_source: None,
    };
    read_section(src, e, |block| {
        frames(block, &mut index, |i, rec| {
            r.index = i;
            let edge: EdgeRef<'_> = rmp_serde::from_slice(rec)
                .map_err(|err| bad(i, format!("not an edge record in an edges section: {err}")))?;
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
                    let mut instances = std::collections::BTreeMap::new();
                    for g in &a.instances {
                        instances.insert(
                            (r.resource(g.resource)?, g.instance.to_string()),
                            g.actions.iter().map(|x| x.to_string()).collect(),
                        );
                    }
                    let edge = Assignment {
                        role,
                        packages: r.packages(&a.packages)?,
                        resources: r.grants(&a.resources)?,
                        instances,
                    };
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
    loader
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
        read_edges(src, e, world, p).map_err(in_section(e, p))
    })?;
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
