//! Graph snapshots: the project's own versioned schema, keyed by external ids.
//!
//! # Layout of a file (schema versions 1 to 3; version 4 below)
//!
//! ```text
//! magic        8 bytes  "DELEGSNP"
//! version      u32 LE   schema version (5; 1 to 4 are still read)
//! header_len   u32 LE   length of the header (at most 64 KiB)
//! header       rmp      Header { created_at, last_seq, counts, compression, engine }
//! header_crc   u32 LE   crc32 of version, header_len and header
//! block*                one or more blocks of records, each:
//!   raw_len    u32 LE   length of the decompressed block (at most MAX_BLOCK)
//!   comp_len   u32 LE   length of the compressed bytes
//!   crc        u32 LE   crc32 of raw_len, comp_len and the compressed bytes
//!   bytes               lz4 block-compressed concatenation of rmp records
//! ```
//!
//! The records come in a fixed order: parties and resources first (so that every edge
//! names nodes that exist), then assignments, client delegations and main-unit links,
//! then (version 2) the system-user state of [`World::sys`]: systems, requests and the
//! packages of agent system users, then (version 3) the decision point's state of
//! [`World::pdp`]: policies, instances, access lists and resources' access-list settings,
//! then (version 4) the scope resources and supplier relationships of
//! [`World::suppliers`], then one `World` record, and last one `End` record with the counts of what came
//! before. Nothing may follow the block that holds `End`.
//!
//! Why this shape: the file is written and read as a stream (one block of about
//! 1 MiB in memory at a time, never the whole file); each block is checked before it
//! is decompressed, so a flipped bit is reported as a checksum error with its offset
//! rather than as a confusing decode error; and a record never spans two blocks, so a
//! reader can decode a block alone.
//!
//! # Versioning
//!
//! Records are rmp-serde in its compact (array) form, so their shape is fixed by the
//! schema version. A new kind of record (system users, requests) or a new field is a
//! new version: add a variant to [`Record`], bump [`SCHEMA_VERSION`], keep reading
//! the old versions. A file whose version this build does not know is refused with
//! [`SnapshotError::UnsupportedVersion`]. The committed fixture
//! `graph-snapshots/fixture-v1.snap` is loaded by a test on every run so that an
//! accidental change of the format fails CI.
//!
//! Version 2 added the `System`, `Request` and `AgentSystemUser` records (appended
//! after `End` in [`Record`], so the variant numbers of version 1 are unchanged) and
//! their three counts (defaulted to 0 when a version 1 header is read). A version 1
//! file holds no system-user state and loads with an empty [`World::sys`].
//!
//! Version 3 added the `Policy`, `Instance`, `AccessList` and `ResourceLists` records
//! and their four counts, the same way. A policy is stored as the XACML document it was
//! compiled from and compiled again on load: the compiled tree has no encoding to keep
//! stable, and the document is what the `policy` event carried. A version 1 or 2 file
//! loads with an empty [`World::pdp`] (those versions did not save it).
//!
//! Version 4 added consent (domain.md §9): the `ResourceKind` record (the kind of a
//! resource that is not a service, after the decision point's records) and the
//! `Consent` record (a consent of [`World::consent`] with its event list), and their two
//! counts. An older file holds only services and no consent.
//! Version 4 added the `ScopeResource` and `Supplier` records of [`World::suppliers`]
//! (domain.md §10) and their two counts, the same way: a scope resource's scopes, and
//! one record per supplier relationship with the scope resources delegated on it. They
//! come after the decision point's records. Older files load with no suppliers.
//! Version 4 also keeps the records and the header but not the single stream: the file is a
//! global section, then the parties of each partition, then the edges of each partition
//! (an edge lives with its source party), each section a run of the blocks above with
//! its own crc32, and a footer index at the end (offsets, lengths, checksums and counts
//! of every section) so that sections are written and read on all cores. The layout is
//! described in `snapshot/sections.rs`; [`SnapshotWriter`] still writes the stream layout, as
//! version 3, for tests and tools. `graph-snapshots/fixture-v4.snap` is its committed
//! fixture.
//!
//! Version 5 keeps the layout of version 4 and its party records, but its edge records
//! name parties by place (partition and position in that partition's parties section)
//! instead of by external id, so that a load resolves them by indexing rather than by
//! hashing and comparing millions of ids (`snapshot/sections.rs`).
//! `graph-snapshots/fixture-v5.snap` is its committed fixture; version 4 is still read.
//!
//! INVARIANT: nothing of petgraph's layout (node or edge indices) is written; parties
//! and resources are named by external id, roles and packages by catalogue code.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::background::Paced;
use crate::catalog::{Catalog, PackageSet};
use crate::graph::{Assignment, Delegation, Edge, NodeId, Party, Resource, Rule};
use crate::model::{PartyKind, SystemUserKind};
use crate::mutate::parse_token;
use crate::pdp::{Instance, ListMember, PdpState, ResourceLists};
use crate::persist::error::SnapshotError;
use crate::sysuser::{AccessTarget, Request, RequestBody, RightSet, State, System};
use crate::world::World;

/// The magic bytes every snapshot starts with.
pub const MAGIC: [u8; 8] = *b"DELEGSNP";
mod sections;

pub use sections::{
    DEFAULT_PARTITIONS, Encoded, Footer, MAX_PARTITIONS, PLACED_VERSION, PartsLoad, Plan, SECTIONED_VERSION,
    SectionEntry, SectionKind, encode_section, write_sections,
};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 5;
/// The newest version of the stream layout (one run of blocks ended by an `End` record),
/// which [`SnapshotWriter`] still writes for tests and tools.
pub const STREAM_VERSION: u32 = 3;
/// The oldest schema version this build reads.
pub const MIN_SCHEMA_VERSION: u32 = 1;
/// A block is flushed once its records reach this size.
const BLOCK_TARGET: usize = 1 << 20;
/// The largest decompressed block a reader accepts (a single record may exceed
/// the 1 MiB block target, but nothing legitimate comes near this).
pub const MAX_BLOCK: u32 = 64 << 20;
const MAX_HEADER: u32 = 64 << 10;

type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// How many records of each kind a snapshot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub parties: u64,
    pub resources: u64,
    pub assignments: u64,
    pub delegations: u64,
    pub main_units: u64,
    /// Version 2 on; absent (0) in a version 1 header.
    #[serde(default)]
    pub systems: u64,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub agent_system_users: u64,
    /// Version 3 on; absent (0) in a version 1 or 2 header.
    #[serde(default)]
    pub policies: u64,
    #[serde(default)]
    pub instances: u64,
    #[serde(default)]
    pub access_lists: u64,
    #[serde(default)]
    pub resource_lists: u64,
    /// Version 4 on; absent (0) before.
    #[serde(default)]
    pub resource_kinds: u64,
    #[serde(default)]
    pub consents: u64,
    #[serde(default)]
    pub scope_resources: u64,
    #[serde(default)]
    pub suppliers: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.parties
            + self.resources
            + self.assignments
            + self.delegations
            + self.main_units
            + self.systems
            + self.requests
            + self.agent_system_users
            + self.policies
            + self.instances
            + self.access_lists
            + self.resource_lists
            + self.resource_kinds
            + self.consents
            + self.scope_resources
            + self.suppliers
    }

    /// The sum of two counts.
    pub fn plus(&self, o: &Counts) -> Counts {
        Counts {
            parties: self.parties + o.parties,
            resources: self.resources + o.resources,
            assignments: self.assignments + o.assignments,
            delegations: self.delegations + o.delegations,
            main_units: self.main_units + o.main_units,
            systems: self.systems + o.systems,
            requests: self.requests + o.requests,
            agent_system_users: self.agent_system_users + o.agent_system_users,
            policies: self.policies + o.policies,
            instances: self.instances + o.instances,
            access_lists: self.access_lists + o.access_lists,
            resource_lists: self.resource_lists + o.resource_lists,
            resource_kinds: self.resource_kinds + o.resource_kinds,
            consents: self.consents + o.consents,
            scope_resources: self.scope_resources + o.scope_resources,
            suppliers: self.suppliers + o.suppliers,
        }
    }

    /// Counts one record (the `World` and `End` records are not counted).
    fn add(&mut self, r: &Record) {
        match r {
            Record::Party(_) => self.parties += 1,
            Record::Resource(_) => self.resources += 1,
            Record::Assignment(_) => self.assignments += 1,
            Record::Delegation(_) => self.delegations += 1,
            Record::MainUnit(_) => self.main_units += 1,
            Record::System(_) => self.systems += 1,
            Record::Request(_) => self.requests += 1,
            Record::AgentSystemUser(_) => self.agent_system_users += 1,
            Record::Policy(_) => self.policies += 1,
            Record::Instance(_) => self.instances += 1,
            Record::AccessList(_) => self.access_lists += 1,
            Record::ResourceLists(_) => self.resource_lists += 1,
            Record::ResourceKind(_) => self.resource_kinds += 1,
            Record::Consent(_) => self.consents += 1,
            Record::ScopeResource(_) => self.scope_resources += 1,
            Record::Supplier(_) => self.suppliers += 1,
            Record::World(_) | Record::End(_) => {}
        }
    }
}

/// The snapshot header, readable without decompressing anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// When the snapshot was written (RFC 3339, UTC).
    pub created_at: String,
    /// The last write-ahead log sequence number whose effect the snapshot holds
    /// (0 for a snapshot not made by a durable store).
    pub last_seq: u64,
    pub counts: Counts,
    /// The block compression (`lz4-block`).
    pub compression: String,
    /// The delegraph version that wrote the file.
    pub engine: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartyRecord {
    pub id: String,
    pub kind: PartyKind,
    pub name: Option<String>,
    pub unit_type: Option<String>,
    pub org_no: Option<String>,
    pub ssn: Option<String>,
    pub alive: bool,
    pub system_user_kind: Option<SystemUserKind>,
    pub owner: Option<String>,
    pub system: Option<String>,
    pub uuid: Option<String>,
    pub party_id: Option<i64>,
    pub user_id: Option<i64>,
}

/// A rule of a resource policy: actions and the tokens as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub actions: Vec<String>,
    pub any_of: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    pub id: String,
    pub owner: Option<String>,
    pub delegable: bool,
    pub rules: Vec<RuleRecord>,
}

/// A resource grant: resource id and actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceGrant {
    pub resource: String,
    pub actions: Vec<String>,
}

/// An instance grant: resource id, instance id and actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceGrant {
    pub resource: String,
    pub instance: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentRecord {
    pub from: String,
    pub to: String,
    /// Role code of the catalogue.
    pub role: String,
    /// Package codes of the catalogue.
    pub packages: Vec<String>,
    pub resources: Vec<ResourceGrant>,
    pub instances: Vec<InstanceGrant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegationRecord {
    pub client: String,
    pub facilitator: String,
    pub agent: String,
    /// Role code of the client assignment.
    pub role: String,
    pub packages: Vec<String>,
    pub resources: Vec<ResourceGrant>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MainUnitRecord {
    pub sub: String,
    pub main: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldRecord {
    /// The engine clock (RFC 3339), if set.
    pub now: Option<String>,
    pub a2_retired: bool,
}

/// Packages (catalogue codes) and resource grants of a system, request or change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RightsRecord {
    pub packages: Vec<String>,
    pub resources: Vec<ResourceGrant>,
}

/// A resource a system may ask for; `actions: None` is every action of its policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemResourceRecord {
    pub resource: String,
    pub actions: Option<Vec<String>>,
}

/// A system of the system register (version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemRecord {
    pub id: String,
    pub vendor: String,
    pub name: Option<String>,
    pub packages: Vec<String>,
    pub resources: Vec<SystemResourceRecord>,
    pub redirect_urls: Vec<String>,
}

/// What an access request asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccessTargetRecord {
    Package(String),
    Resource { resource: String, action: String },
}

/// The body of a request, keyed by external ids and catalogue codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestBodyRecord {
    SystemUser {
        system: String,
        party: String,
        kind: SystemUserKind,
        system_user: String,
        rights: RightsRecord,
        redirect_url: Option<String>,
        external_ref: Option<String>,
    },
    Change {
        system_user: String,
        add: RightsRecord,
        remove: RightsRecord,
        redirect_url: Option<String>,
    },
    Access {
        from: String,
        to: String,
        target: AccessTargetRecord,
        by: Option<String>,
    },
}

/// A system-user, change or access request (version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    /// `draft`, `pending`, `accepted`, `approved`, `rejected` or `withdrawn` (time-out is
    /// derived from the clock, never stored).
    pub state: String,
    /// The engine clock when the request was made (RFC 3339).
    pub created: Option<String>,
    pub escalated_by: Option<String>,
    pub answered_by: Option<String>,
    pub body: RequestBodyRecord,
}

/// The packages of an agent system user created by an approved request (version 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSystemUserRecord {
    pub system_user: String,
    pub packages: Vec<String>,
}

/// A resource's XACML policy: the document it was compiled from (version 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub resource: String,
    pub xml: String,
}

/// An instance of an app or resource (version 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// `{party_id}/{guid}`.
    pub id: String,
    pub resource: String,
    /// External id of the owning party.
    pub party: String,
    pub task: Option<String>,
    pub end_event: Option<String>,
}

/// A member of an access list; `actions: None` is every action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListMemberRecord {
    pub org: String,
    pub actions: Option<Vec<String>>,
}

/// A service owner's access list (version 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessListRecord {
    /// The service owner's code.
    pub owner: String,
    pub id: String,
    pub members: Vec<ListMemberRecord>,
}

/// A resource's access-list settings (version 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceListsRecord {
    pub resource: String,
    pub lists: Vec<String>,
    pub enabled: bool,
}

/// The kind of a resource that is not a service (version 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceKindRecord {
    pub resource: String,
    /// `consent`.
    pub kind: String,
    pub one_time: bool,
}

/// One entry of a consent's event list (version 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentEntryRecord {
    /// `created`, `accepted`, `rejected`, `revoked` or `used`.
    pub event: String,
    pub by: Option<String>,
    /// RFC 3339.
    pub at: Option<String>,
}

/// A consent (version 4). `expired` is derived from the clock, never stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub id: String,
    pub from: String,
    pub to: String,
    pub handled_by: Option<String>,
    pub required_delegator: Option<String>,
    pub rights: Vec<ResourceGrant>,
    /// RFC 3339.
    pub valid_to: String,
    pub one_time: bool,
    /// `created`, `accepted`, `rejected`, `revoked` or `used`.
    pub state: String,
    pub accepted_by: Option<String>,
    pub entries: Vec<ConsentEntryRecord>,
}

/// A Maskinporten scope resource's scopes (version 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopeResourceRecord {
    pub resource: String,
    pub scopes: Vec<String>,
}

/// A supplier relationship consumer → supplier and the scope resources delegated on
/// it (version 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupplierRecord {
    pub consumer: String,
    pub supplier: String,
    pub resources: Vec<String>,
}

/// One record of the stream. New kinds are appended at the end: records are encoded
/// by variant number, so reordering would break old files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    Party(PartyRecord),
    Resource(ResourceRecord),
    Assignment(AssignmentRecord),
    Delegation(DelegationRecord),
    MainUnit(MainUnitRecord),
    World(WorldRecord),
    End(Counts),
    // Version 2.
    System(SystemRecord),
    Request(RequestRecord),
    AgentSystemUser(AgentSystemUserRecord),
    // Version 3.
    Policy(PolicyRecord),
    Instance(InstanceRecord),
    AccessList(AccessListRecord),
    ResourceLists(ResourceListsRecord),
    // Version 4.
    ResourceKind(ResourceKindRecord),
    Consent(ConsentRecord),
    ScopeResource(ScopeResourceRecord),
    Supplier(SupplierRecord),
}

fn state_str(s: State) -> &'static str {
    match s {
        State::Draft => "draft",
        State::Pending => "pending",
        State::Accepted => "accepted",
        State::Approved => "approved",
        State::Rejected => "rejected",
        State::Withdrawn => "withdrawn",
    }
}

fn parse_state(s: &str) -> Option<State> {
    [
        State::Draft,
        State::Pending,
        State::Accepted,
        State::Approved,
        State::Rejected,
        State::Withdrawn,
    ]
    .into_iter()
    .find(|x| state_str(*x) == s)
}

fn package_codes(c: &Catalog, p: &PackageSet) -> Vec<String> {
    p.iter().map(|id| c.package(id).code.clone()).collect()
}

fn rights_record(c: &Catalog, r: &RightSet) -> RightsRecord {
    RightsRecord {
        packages: package_codes(c, &r.packages),
        resources: r
            .resources
            .iter()
            .map(|(res, a)| ResourceGrant {
                resource: res.clone(),
                actions: a.iter().cloned().collect(),
            })
            .collect(),
    }
}

fn system_record(c: &Catalog, s: &System) -> SystemRecord {
    SystemRecord {
        id: s.id.clone(),
        vendor: s.vendor.clone(),
        name: s.name.clone(),
        packages: package_codes(c, &s.packages),
        resources: s
            .resources
            .iter()
            .map(|(r, a)| SystemResourceRecord {
                resource: r.clone(),
                actions: a.as_ref().map(|a| a.iter().cloned().collect()),
            })
            .collect(),
        redirect_urls: s.redirect_urls.iter().cloned().collect(),
    }
}

fn request_record(c: &Catalog, r: &Request) -> RequestRecord {
    let body = match &r.body {
        RequestBody::SystemUser {
            system,
            party,
            kind,
            system_user,
            rights,
            redirect_url,
            external_ref,
        } => RequestBodyRecord::SystemUser {
            system: system.clone(),
            party: party.clone(),
            kind: *kind,
            system_user: system_user.clone(),
            rights: rights_record(c, rights),
            redirect_url: redirect_url.clone(),
            external_ref: external_ref.clone(),
        },
        RequestBody::Change {
            system_user,
            add,
            remove,
            redirect_url,
        } => RequestBodyRecord::Change {
            system_user: system_user.clone(),
            add: rights_record(c, add),
            remove: rights_record(c, remove),
            redirect_url: redirect_url.clone(),
        },
        RequestBody::Access { from, to, target, by } => RequestBodyRecord::Access {
            from: from.clone(),
            to: to.clone(),
            target: match target {
                AccessTarget::Package(p) => AccessTargetRecord::Package(c.package(*p).code.clone()),
                AccessTarget::Resource { resource, action } => AccessTargetRecord::Resource {
                    resource: resource.clone(),
                    action: action.clone(),
                },
            },
            by: by.clone(),
        },
    };
    RequestRecord {
        id: r.id.clone(),
        state: state_str(r.state).to_string(),
        created: r.created.map(|t| t.to_rfc3339()),
        escalated_by: r.escalated_by.clone(),
        answered_by: r.answered_by.clone(),
        body,
    }
}

fn party_record(p: &Party) -> PartyRecord {
    PartyRecord {
        id: p.id.to_string(),
        kind: p.kind,
        name: p.name.as_deref().map(str::to_string),
        unit_type: p.unit_type.as_deref().map(str::to_string),
        org_no: p.org_no.as_deref().map(str::to_string),
        ssn: p.ssn.as_deref().map(str::to_string),
        alive: p.alive,
        system_user_kind: p.system_user_kind(),
        owner: p.owner().map(str::to_string),
        system: p.system().map(str::to_string),
        uuid: p.uuid().map(str::to_string),
        party_id: p.party_id,
        user_id: p.user_id,
    }
}

fn resource_record(r: &Resource) -> ResourceRecord {
    ResourceRecord {
        id: r.id.clone(),
        owner: r.owner.clone(),
        delegable: r.delegable,
        rules: r
            .rules
            .iter()
            .map(|rule| RuleRecord {
                actions: rule.actions.iter().cloned().collect(),
                any_of: rule.written.clone(),
            })
            .collect(),
    }
}

/// Every record of a world, in file order, produced lazily (nothing is collected).
pub fn records(w: &World) -> impl Iterator<Item = Record> + '_ {
    let g = &w.graph;
    let parties = g.parties().map(|(_, p)| Record::Party(party_record(p)));
    let resources = g.resources().map(|(_, r)| Record::Resource(resource_record(r)));
    let edges = g.parties().flat_map(move |(n, _)| edge_records(w, n));
    parties.chain(resources).chain(edges).chain(state_records(w))
}

/// The records of the edges leaving party `n` (its assignments given, client
/// delegations from it as the client, its main-unit link).
fn edge_records(w: &World, n: NodeId) -> impl Iterator<Item = Record> + '_ {
    let g = &w.graph;
    let c = w.catalog;
    let grants = move |m: &std::collections::BTreeMap<NodeId, crate::graph::Actions>| {
        m.iter()
            .map(|(n, a)| ResourceGrant {
                resource: g.ext_id(*n).to_string(),
                actions: a.iter().cloned().collect(),
            })
            .collect::<Vec<_>>()
    };
    g.outgoing(n).map(move |(_, t, e)| match e {
        Edge::Assignment(a) => Record::Assignment(AssignmentRecord {
            from: g.ext_id(n).to_string(),
            to: g.ext_id(t).to_string(),
            role: c.role(a.role).code.clone(),
            packages: a.packages.iter().map(|p| c.package(p).code.clone()).collect(),
            resources: grants(&a.resources),
            instances: a
                .instances
                .iter()
                .map(|((r, i), acts)| InstanceGrant {
                    resource: g.ext_id(*r).to_string(),
                    instance: i.clone(),
                    actions: acts.iter().cloned().collect(),
                })
                .collect(),
        }),
        Edge::Delegation(d) => Record::Delegation(DelegationRecord {
            client: g.ext_id(n).to_string(),
            facilitator: g.ext_id(d.facilitator).to_string(),
            agent: g.ext_id(t).to_string(),
            role: c.role(d.role).code.clone(),
            packages: d.packages.iter().map(|p| c.package(p).code.clone()).collect(),
            resources: grants(&d.resources),
        }),
        Edge::MainUnit(role) => Record::MainUnit(MainUnitRecord {
            sub: g.ext_id(n).to_string(),
            main: g.ext_id(t).to_string(),
            role: c.role(*role).code.clone(),
        }),
    })
}

/// The records of the state beside the graph, in file order: the system-user state,
/// the decision point's, and last the `World` record. (A version 4 file keeps them,
/// with the resources, in its global section.)
fn state_records(w: &World) -> impl Iterator<Item = Record> + '_ {
    let c = w.catalog;
    let systems = w
        .sys
        .systems
        .values()
        .map(move |s| Record::System(system_record(c, s)));
    let requests = w
        .sys
        .requests
        .values()
        .map(move |r| Record::Request(request_record(c, r)));
    let agents = w.sys.agent_packages.iter().map(move |(id, p)| {
        Record::AgentSystemUser(AgentSystemUserRecord {
            system_user: id.clone(),
            packages: package_codes(c, p),
        })
    });
    let world = std::iter::once(Record::World(WorldRecord {
        now: w.now.map(|t| t.to_rfc3339()),
        a2_retired: w.a2_retired,
    }));
    systems
        .chain(requests)
        .chain(agents)
        .chain(pdp_records(&w.pdp))
        .chain(consent_records(w))
        .chain(supplier_records(w))
        .chain(world)
}

/// The consent records (version 4): the kinds of consent resources, then the consents
/// in id order.
fn consent_records(w: &World) -> impl Iterator<Item = Record> + '_ {
    let g = &w.graph;
    let kinds = g.resources().filter_map(|(_, r)| match r.kind {
        crate::graph::ResourceKind::Service => None,
        crate::graph::ResourceKind::Consent { one_time } => Some(Record::ResourceKind(ResourceKindRecord {
            resource: r.id.clone(),
            kind: "consent".to_string(),
            one_time,
        })),
    });
    let id = move |n: NodeId| g.ext_id(n).to_string();
    let consents = w.consent.consents.values().map(move |c| {
        Record::Consent(ConsentRecord {
            id: c.id.clone(),
            from: id(c.from),
            to: id(c.to),
            handled_by: c.handled_by.map(id),
            required_delegator: c.required_delegator.map(id),
            rights: c
                .rights
                .iter()
                .map(|(r, a)| ResourceGrant {
                    resource: r.clone(),
                    actions: a.iter().cloned().collect(),
                })
                .collect(),
            valid_to: c.valid_to.to_rfc3339(),
            one_time: c.one_time,
            state: c.state.as_str().to_string(),
            accepted_by: c.accepted_by.map(id),
            entries: c
                .entries
                .iter()
                .map(|e| ConsentEntryRecord {
                    event: e.what.as_str().to_string(),
                    by: e.by.map(id),
                    at: e.at.map(|t| t.to_rfc3339()),
                })
                .collect(),
        })
    });
    kinds.chain(consents)
}

/// The decision point's records, in key order (the state's maps are unordered; sorted,
/// two saves of one world give the same records). A policy without its document cannot
/// be written and is left out, which [`write_world`] reports as a count mismatch rather
/// than saving a world that has lost it.
fn pdp_records(s: &PdpState) -> impl Iterator<Item = Record> + '_ {
    fn sorted<'a, K: Ord + 'a, V: 'a>(m: impl IntoIterator<Item = (&'a K, &'a V)>) -> Vec<(&'a K, &'a V)> {
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }
    let policies = sorted(&s.policies).into_iter().filter_map(|(r, p)| {
        let xml = p.source.as_deref()?;
        Some(Record::Policy(PolicyRecord {
            resource: r.clone(),
            xml: xml.to_string(),
        }))
    });
    let instances = sorted(&s.instances).into_iter().map(|(_, i)| {
        Record::Instance(InstanceRecord {
            id: i.id.clone(),
            resource: i.resource.clone(),
            party: i.party.clone(),
            task: i.task.clone(),
            end_event: i.end_event.clone(),
        })
    });
    let lists = sorted(&s.access_lists).into_iter().map(|((owner, id), members)| {
        Record::AccessList(AccessListRecord {
            owner: owner.clone(),
            id: id.clone(),
            members: members
                .iter()
                .map(|m| ListMemberRecord {
                    org: m.org.clone(),
                    actions: m.actions.as_ref().map(|a| a.iter().cloned().collect()),
                })
                .collect(),
        })
    });
    let settings = sorted(&s.resource_lists).into_iter().map(|(r, l)| {
        Record::ResourceLists(ResourceListsRecord {
            resource: r.clone(),
            lists: l.lists.clone(),
            enabled: l.enabled,
        })
    });
    policies.chain(instances).chain(lists).chain(settings)
}

/// The records of [`World::suppliers`]: scope resources, then relationships (in
/// node order, which is the order of the state's maps).
fn supplier_records(w: &World) -> impl Iterator<Item = Record> + '_ {
    let g = &w.graph;
    let scopes = w.suppliers.scope_resources().map(move |(r, scopes)| {
        Record::ScopeResource(ScopeResourceRecord {
            resource: g.ext_id(r).to_string(),
            scopes: scopes.to_vec(),
        })
    });
    let pairs = w.suppliers.pairs().map(move |(c, s, set)| {
        Record::Supplier(SupplierRecord {
            consumer: g.ext_id(c).to_string(),
            supplier: g.ext_id(s).to_string(),
            resources: set.iter().map(|r| g.ext_id(*r).to_string()).collect(),
        })
    });
    scopes.chain(pairs)
}

/// Counts the records of a world (one pass over the edges).
pub fn count(w: &World) -> Counts {
    let g = &w.graph;
    let mut k = count_but_edges(w);
    for (n, _) in g.parties() {
        count_edges(w, n, &mut k);
    }
    k
}

/// Counts the edges leaving party `n` into `k`.
fn count_edges(w: &World, n: NodeId, k: &mut Counts) {
    for (_, _, e) in w.graph.outgoing(n) {
        match e {
            Edge::Assignment(_) => k.assignments += 1,
            Edge::Delegation(_) => k.delegations += 1,
            Edge::MainUnit(_) => k.main_units += 1,
        }
    }
}

/// Counts the records of a world but its edges (no pass over the graph).
fn count_but_edges(w: &World) -> Counts {
    let g = &w.graph;
    Counts {
        parties: g.party_count() as u64,
        resources: g.resource_count() as u64,
        systems: w.sys.systems.len() as u64,
        requests: w.sys.requests.len() as u64,
        agent_system_users: w.sys.agent_packages.len() as u64,
        policies: w.pdp.policies.len() as u64,
        instances: w.pdp.instances.len() as u64,
        access_lists: w.pdp.access_lists.len() as u64,
        resource_lists: w.pdp.resource_lists.len() as u64,
        resource_kinds: g
            .resources()
            .filter(|(_, r)| r.kind != crate::graph::ResourceKind::Service)
            .count() as u64,
        consents: w.consent.len() as u64,
        scope_resources: w.suppliers.scope_resources().count() as u64,
        suppliers: w.suppliers.relationships() as u64,
        ..Counts::default()
    }
}

/// Writes the magic bytes, the version and the checksummed header; returns the bytes
/// written.
fn write_prefix<W: Write>(out: &mut W, version: u32, header: &Header) -> Result<u64> {
    let h = rmp_serde::to_vec(header).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let len = u32::try_from(h.len())
        .ok()
        .filter(|l| *l <= MAX_HEADER)
        .ok_or_else(|| SnapshotError::Encode("header too large".into()))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&version.to_le_bytes());
    crc.update(&len.to_le_bytes());
    crc.update(&h);
    out.write_all(&MAGIC)?;
    out.write_all(&version.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&h)?;
    out.write_all(&crc.finalize().to_le_bytes())?;
    Ok(16 + u64::from(len) + 4)
}

/// Compresses one block and writes it with its lengths and checksum.
fn write_block<W: Write>(out: &mut W, block: &[u8]) -> Result<()> {
    let comp = lz4_flex::block::compress(block);
    let raw_len = u32::try_from(block.len()).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let comp_len = u32::try_from(comp.len()).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&raw_len.to_le_bytes());
    crc.update(&comp_len.to_le_bytes());
    crc.update(&comp);
    out.write_all(&raw_len.to_le_bytes())?;
    out.write_all(&comp_len.to_le_bytes())?;
    out.write_all(&crc.finalize().to_le_bytes())?;
    out.write_all(&comp)?;
    Ok(())
}

/// Writes records as a stream of checksummed, compressed blocks (the layout of versions
/// 1 to 3, written as version 3).
pub struct SnapshotWriter<W: Write> {
    out: W,
    block: Vec<u8>,
    counts: Counts,
    done: bool,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the file header (of a version 3 file: the stream layout); records follow
    /// with [`SnapshotWriter::write`].
    pub fn new(mut out: W, header: &Header) -> Result<Self> {
        write_prefix(&mut out, STREAM_VERSION, header)?;
        Ok(SnapshotWriter {
            out,
            block: Vec::with_capacity(BLOCK_TARGET + 4096),
            counts: Counts::default(),
            done: false,
        })
    }

    /// Appends one record (the `End` record is written by [`SnapshotWriter::finish`]).
    pub fn write(&mut self, r: &Record) -> Result<()> {
        if let Record::End(_) = r {
            return Err(SnapshotError::Encode("`End` is written by finish".into()));
        }
        self.counts.add(r);
        self.push(r)
    }

    fn push(&mut self, r: &Record) -> Result<()> {
        let before = self.block.len();
        rmp_serde::encode::write(&mut self.block, r).map_err(|e| SnapshotError::Encode(e.to_string()))?;
        if self.block.len() - before > MAX_BLOCK as usize / 2 {
            return Err(SnapshotError::Encode("a record is larger than 32 MiB".into()));
        }
        if self.block.len() >= BLOCK_TARGET {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        write_block(&mut self.out, &self.block)?;
        self.block.clear();
        Ok(())
    }

    /// Writes the `End` record, flushes the last block and returns the output.
    pub fn finish(mut self) -> Result<(W, Counts)> {
        let counts = self.counts;
        self.push(&Record::End(counts))?;
        self.flush_block()?;
        self.done = true;
        self.out.flush()?;
        Ok((self.out, counts))
    }
}

/// Reads a snapshot as a stream of records, checking every block's checksum before it
/// is decompressed and the final counts against the `End` record.
pub struct SnapshotReader<R: Read> {
    input: R,
    header: Header,
    version: u32,
    offset: u64,
    block: Vec<u8>,
    comp: Vec<u8>,
    pos: usize,
    seen: Counts,
    index: u64,
    ended: bool,
}

fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SnapshotError::Truncated(what),
        _ => SnapshotError::Io(e),
    })
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(i..i + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the magic bytes, the version and the header.
    pub fn new(mut input: R) -> Result<Self> {
        let mut fixed = [0u8; 16];
        read_exact_or(&mut input, &mut fixed, "no complete header")?;
        if fixed.get(..8) != Some(&MAGIC[..]) {
            return Err(SnapshotError::BadMagic);
        }
        let version = u32_at(&fixed, 8);
        if !(MIN_SCHEMA_VERSION..=SCHEMA_VERSION).contains(&version) {
            return Err(SnapshotError::UnsupportedVersion {
                found: version,
                min: MIN_SCHEMA_VERSION,
                max: SCHEMA_VERSION,
            });
        }
        let len = u32_at(&fixed, 12);
        if len > MAX_HEADER {
            return Err(SnapshotError::Corrupt(format!(
                "header length {len} exceeds the limit"
            )));
        }
        let mut h = vec![0u8; len as usize];
        read_exact_or(&mut input, &mut h, "header")?;
        let mut c = [0u8; 4];
        read_exact_or(&mut input, &mut c, "header checksum")?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&version.to_le_bytes());
        crc.update(&len.to_le_bytes());
        crc.update(&h);
        if crc.finalize() != u32::from_le_bytes(c) {
            return Err(SnapshotError::Checksum {
                what: "header",
                offset: 16,
            });
        }
        let header: Header =
            rmp_serde::from_slice(&h).map_err(|e| SnapshotError::Corrupt(format!("header: {e}")))?;
        Ok(SnapshotReader {
            input,
            header,
            version,
            offset: 16 + u64::from(len) + 4,
            block: Vec::new(),
            comp: Vec::new(),
            pos: 0,
            seen: Counts::default(),
            index: 0,
            ended: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Loads the next block; false at a clean end of input.
    fn next_block(&mut self) -> Result<bool> {
        let mut fixed = [0u8; 12];
        let mut got = 0;
        while got < fixed.len() {
            let slot = fixed.get_mut(got..).unwrap_or_default();
            match self.input.read(slot) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if got == 0 {
            return Ok(false);
        }
        if got < fixed.len() {
            return Err(SnapshotError::Truncated("block header"));
        }
        let raw_len = u32_at(&fixed, 0);
        let comp_len = u32_at(&fixed, 4);
        let want = u32_at(&fixed, 8);
        if raw_len > MAX_BLOCK || comp_len > MAX_BLOCK {
            return Err(SnapshotError::Corrupt(format!(
                "block at byte {} claims {raw_len} bytes ({comp_len} compressed), over the limit",
                self.offset
            )));
        }
        self.comp.resize(comp_len as usize, 0);
        read_exact_or(&mut self.input, &mut self.comp, "block")?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&raw_len.to_le_bytes());
        crc.update(&comp_len.to_le_bytes());
        crc.update(&self.comp);
        if crc.finalize() != want {
            return Err(SnapshotError::Checksum {
                what: "block",
                offset: self.offset,
            });
        }
        self.block.resize(raw_len as usize, 0);
        let n = lz4_flex::block::decompress_into(&self.comp, &mut self.block).map_err(|e| {
            SnapshotError::Corrupt(format!("block at byte {} does not decompress: {e}", self.offset))
        })?;
        if n != raw_len as usize {
            return Err(SnapshotError::Corrupt(format!(
                "block at byte {} decompresses to {n} bytes, header says {raw_len}",
                self.offset
            )));
        }
        self.offset += 12 + u64::from(comp_len);
        self.pos = 0;
        Ok(true)
    }

    /// The next record, or None after the `End` record (whose counts are checked).
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        if self.ended {
            return Ok(None);
        }
        if self.version >= SECTIONED_VERSION {
            return Err(SnapshotError::Corrupt(format!(
                "a version {} file is read by sections, not as a stream",
                self.version
            )));
        }
        while self.pos >= self.block.len() {
            if !self.next_block()? {
                return Err(SnapshotError::Truncated("no end record"));
            }
        }
        let mut rest = self.block.get(self.pos..).unwrap_or_default();
        let before = rest.len();
        let rec: Record = rmp_serde::from_read(&mut rest).map_err(|e| SnapshotError::BadRecord {
            index: self.index,
            message: e.to_string(),
        })?;
        self.pos += before - rest.len();
        self.index += 1;
        self.seen.add(&rec);
        if let Record::End(c) = &rec {
            if *c != self.seen {
                return Err(SnapshotError::Corrupt(format!(
                    "end record counts {c:?} differ from the records read {:?}",
                    self.seen
                )));
            }
            if *c != self.header.counts {
                return Err(SnapshotError::Corrupt(format!(
                    "header counts {:?} differ from the records read {c:?}",
                    self.header.counts
                )));
            }
            if self.pos != self.block.len() {
                return Err(SnapshotError::Corrupt("data after the end record".into()));
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(SnapshotError::Corrupt("data after the last block".into()));
            }
            self.ended = true;
            return Ok(None);
        }
        if self.version < 2
            && matches!(
                rec,
                Record::System(_) | Record::Request(_) | Record::AgentSystemUser(_)
            )
        {
            return Err(bad(
                self.index - 1,
                "a system-user record in a version 1 file".into(),
            ));
        }
        if self.version < 3
            && matches!(
                rec,
                Record::Policy(_) | Record::Instance(_) | Record::AccessList(_) | Record::ResourceLists(_)
            )
        {
            return Err(bad(
                self.index - 1,
                format!("a decision-point record in a version {} file", self.version),
            ));
        }
        if self.version < 4 && matches!(rec, Record::ResourceKind(_) | Record::Consent(_)) {
            return Err(bad(
                self.index - 1,
                format!("a consent record in a version {} file", self.version),
            ));
        }
        if self.version < 4 && matches!(rec, Record::ScopeResource(_) | Record::Supplier(_)) {
            return Err(bad(
                self.index - 1,
                format!("a supplier record in a version {} file", self.version),
            ));
        }
        Ok(Some(rec))
    }
}

fn bad(index: u64, message: String) -> SnapshotError {
    SnapshotError::BadRecord { index, message }
}

/// Rebuilds a world from a stream of records through the graph facade.
///
/// Every reference is resolved by external id or catalogue code; a record naming
/// something unknown, a duplicate id or an edge before its nodes is an error.
pub struct Loader {
    world: World,
    index: u64,
    saw_world: bool,
    /// The last party looked up as an edge's source: the writer emits edges grouped by
    /// source, so this saves one id lookup per edge on load.
    last_source: Option<(String, NodeId)>,
    /// The edges were built apart from the records (a version 5 file loaded part by
    /// part): the global section's resources may come after them.
    edges_apart: bool,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new()
    }
}

impl Loader {
    pub fn new() -> Loader {
        Loader::with_partitions(1)
    }

    /// A loader that builds a world whose graph has `p` parts.
    pub fn with_partitions(p: usize) -> Loader {
        Loader {
            world: World::with_partitions(p),
            index: 0,
            saw_world: false,
            last_source: None,
            edges_apart: false,
        }
    }

    fn party(&self, id: &str) -> Result<NodeId> {
        self.world
            .graph
            .party_node(id)
            .ok_or_else(|| bad(self.index, format!("names unknown party `{id}`")))
    }
    fn source(&mut self, id: &str) -> Result<NodeId> {
        if let Some((s, n)) = &self.last_source
            && s == id
        {
            return Ok(*n);
        }
        let n = self.party(id)?;
        self.last_source = Some((id.to_string(), n));
        Ok(n)
    }
    fn resource(&self, id: &str) -> Result<NodeId> {
        self.world
            .graph
            .resource_node(id)
            .ok_or_else(|| bad(self.index, format!("names unknown resource `{id}`")))
    }
    fn role(&self, code: &str) -> Result<crate::model::RoleId> {
        self.world
            .catalog
            .role_id(code)
            .ok_or_else(|| bad(self.index, format!("names unknown role `{code}`")))
    }
    fn packages(&self, codes: &[String]) -> Result<crate::catalog::PackageSet> {
        codes
            .iter()
            .map(|p| {
                self.world
                    .catalog
                    .package_id(p)
                    .ok_or_else(|| bad(self.index, format!("names unknown package `{p}`")))
            })
            .collect()
    }
    fn grants(
        &self,
        gs: &[ResourceGrant],
    ) -> Result<std::collections::BTreeMap<NodeId, crate::graph::Actions>> {
        gs.iter()
            .map(|g| Ok((self.resource(&g.resource)?, g.actions.iter().cloned().collect())))
            .collect()
    }
    fn no_edges_yet(&self, what: &str) -> Result<()> {
        if (self.world.graph.edge_count() > 0 && !self.edges_apart) || self.saw_world {
            return Err(bad(self.index, format!("{what} after the edges")));
        }
        Ok(())
    }

    fn rights(&self, r: RightsRecord) -> Result<RightSet> {
        Ok(RightSet {
            packages: self.packages(&r.packages)?,
            resources: r
                .resources
                .into_iter()
                .map(|g| (g.resource, g.actions.into_iter().collect()))
                .collect(),
        })
    }

    fn request(&self, r: RequestRecord) -> Result<Request> {
        let body = match r.body {
            RequestBodyRecord::SystemUser {
                system,
                party,
                kind,
                system_user,
                rights,
                redirect_url,
                external_ref,
            } => RequestBody::SystemUser {
                system,
                party,
                kind,
                system_user,
                rights: self.rights(rights)?,
                redirect_url,
                external_ref,
            },
            RequestBodyRecord::Change {
                system_user,
                add,
                remove,
                redirect_url,
            } => RequestBody::Change {
                system_user,
                add: self.rights(add)?,
                remove: self.rights(remove)?,
                redirect_url,
            },
            RequestBodyRecord::Access { from, to, target, by } => RequestBody::Access {
                from,
                to,
                target: match target {
                    AccessTargetRecord::Package(p) => AccessTarget::Package(
                        self.world
                            .catalog
                            .package_id(&p)
                            .ok_or_else(|| bad(self.index, format!("names unknown package `{p}`")))?,
                    ),
                    AccessTargetRecord::Resource { resource, action } => {
                        AccessTarget::Resource { resource, action }
                    }
                },
                by,
            },
        };
        let state = parse_state(&r.state)
            .ok_or_else(|| bad(self.index, format!("unknown request state `{}`", r.state)))?;
        let created = match r.created {
            None => None,
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map_err(|e| bad(self.index, format!("request time `{t}`: {e}")))?,
            ),
        };
        Ok(Request {
            id: r.id,
            body,
            state,
            created,
            escalated_by: r.escalated_by,
            answered_by: r.answered_by,
        })
    }

    fn consent(&self, c: ConsentRecord) -> Result<crate::consent::Consent> {
        use crate::consent::{Entry, Status};
        let time = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| bad(self.index, format!("consent time `{t}`: {e}")))
        };
        let status = |s: &str| {
            Status::parse(s)
                .filter(|s| *s != Status::Expired)
                .ok_or_else(|| bad(self.index, format!("unknown consent state `{s}`")))
        };
        let opt = |p: &Option<String>| p.as_deref().map(|p| self.party(p)).transpose();
        let mut rights = std::collections::BTreeMap::new();
        for g in c.rights {
            self.resource(&g.resource)?;
            rights.insert(g.resource, g.actions.into_iter().collect());
        }
        let mut entries = Vec::with_capacity(c.entries.len());
        for e in &c.entries {
            entries.push(Entry {
                what: status(&e.event)?,
                by: opt(&e.by)?,
                at: e.at.as_deref().map(time).transpose()?,
            });
        }
        Ok(crate::consent::Consent {
            from: self.party(&c.from)?,
            to: self.party(&c.to)?,
            handled_by: opt(&c.handled_by)?,
            required_delegator: opt(&c.required_delegator)?,
            rights,
            valid_to: time(&c.valid_to)?,
            one_time: c.one_time,
            state: status(&c.state)?,
            accepted_by: opt(&c.accepted_by)?,
            entries,
            id: c.id,
        })
    }

    /// Adds one record to the world being built.
    pub fn add(&mut self, rec: Record) -> Result<()> {
        if self.saw_world {
            return Err(bad(self.index, "record after the world record".into()));
        }
        // The id rule of every entry (length, characters) holds for the ids a snapshot
        // introduces; the records that refer to them are checked by lookup.
        let new_id = match &rec {
            Record::Party(p) => Some(("party id", p.id.as_str())),
            Record::Resource(r) => Some(("resource id", r.id.as_str())),
            Record::System(s) => Some(("system id", s.id.as_str())),
            Record::Request(r) => Some(("request id", r.id.as_str())),
            Record::Instance(i) => Some(("instance id", i.id.as_str())),
            Record::AccessList(l) => Some(("access list id", l.id.as_str())),
            Record::Consent(c) => Some(("consent id", c.id.as_str())),
            _ => None,
        };
        if let Some((what, id)) = new_id {
            crate::model::check_id(what, id).map_err(|e| bad(self.index, e.message))?;
        }
        match rec {
            Record::Party(p) => {
                self.no_edges_yet("party")?;
                if self.world.graph.party_node(&p.id).is_some() {
                    return Err(bad(self.index, format!("duplicate party `{}`", p.id)));
                }
                let mut party = Party::new(&p.id, p.kind);
                party.name = p.name.map(Into::into);
                party.unit_type = p.unit_type.map(Into::into);
                party.org_no = p.org_no.map(Into::into);
                party.ssn = p.ssn.map(Into::into);
                party.alive = p.alive;
                party.set_system_user_kind(p.system_user_kind);
                party.set_owner(p.owner);
                party.set_system(p.system);
                party.set_uuid(p.uuid);
                party.party_id = p.party_id;
                party.user_id = p.user_id;
                self.world.graph.add_party(party);
            }
            Record::Resource(r) => {
                self.no_edges_yet("resource")?;
                if self.world.graph.resource_node(&r.id).is_some() {
                    return Err(bad(self.index, format!("duplicate resource `{}`", r.id)));
                }
                let mut rules = Vec::with_capacity(r.rules.len());
                for rule in r.rules {
                    let any_of = rule
                        .any_of
                        .iter()
                        .map(|t| parse_token(self.world.catalog, t))
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|e| bad(self.index, e.to_string()))?;
                    rules.push(Rule {
                        actions: rule.actions.into_iter().collect(),
                        any_of,
                        written: rule.any_of,
                    });
                }
                self.world.graph.add_resource(Resource {
                    id: r.id,
                    owner: r.owner,
                    delegable: r.delegable,
                    rules,
                    kind: crate::graph::ResourceKind::Service,
                });
            }
            Record::Assignment(a) => {
                let from = self.source(&a.from)?;
                let to = self.party(&a.to)?;
                let role = self.role(&a.role)?;
                if self.world.graph.find_assignment(from, to, role).is_some() {
                    return Err(bad(
                        self.index,
                        format!("duplicate assignment `{}` → `{}` ({})", a.from, a.to, a.role),
                    ));
                }
                let mut instances = std::collections::BTreeMap::new();
                for i in &a.instances {
                    instances.insert(
                        (self.resource(&i.resource)?, i.instance.clone()),
                        i.actions.iter().cloned().collect(),
                    );
                }
                let edge = Assignment {
                    role,
                    packages: self.packages(&a.packages)?,
                    resources: self.grants(&a.resources)?,
                    instances,
                };
                self.world.graph.add_edge(from, to, Edge::Assignment(edge));
            }
            Record::Delegation(d) => {
                let client = self.source(&d.client)?;
                let facilitator = self.party(&d.facilitator)?;
                let agent = self.party(&d.agent)?;
                let role = self.role(&d.role)?;
                if self
                    .world
                    .graph
                    .find_delegation(client, agent, facilitator, role)
                    .is_some()
                {
                    return Err(bad(self.index, "duplicate delegation".into()));
                }
                let edge = Delegation {
                    facilitator,
                    role,
                    packages: self.packages(&d.packages)?,
                    resources: self.grants(&d.resources)?,
                };
                self.world.graph.add_edge(client, agent, Edge::Delegation(edge));
            }
            Record::MainUnit(m) => {
                let sub = self.source(&m.sub)?;
                let main = self.party(&m.main)?;
                let role = self.role(&m.role)?;
                if self.world.graph.main_unit(sub).is_some() {
                    return Err(bad(self.index, format!("`{}` has two main units", m.sub)));
                }
                self.world.graph.add_edge(sub, main, Edge::MainUnit(role));
            }
            Record::World(w) => {
                self.world.now = match w.now {
                    None => None,
                    Some(t) => Some(
                        chrono::DateTime::parse_from_rfc3339(&t)
                            .map_err(|e| bad(self.index, format!("clock `{t}`: {e}")))?,
                    ),
                };
                self.world.a2_retired = w.a2_retired;
                self.saw_world = true;
            }
            Record::System(s) => {
                if self.world.sys.systems.contains_key(&s.id) {
                    return Err(bad(self.index, format!("duplicate system `{}`", s.id)));
                }
                let mut resources = std::collections::BTreeMap::new();
                for r in s.resources {
                    resources.insert(r.resource, r.actions.map(|a| a.into_iter().collect()));
                }
                let system = System {
                    id: s.id.clone(),
                    vendor: s.vendor,
                    name: s.name,
                    packages: self.packages(&s.packages)?,
                    resources,
                    redirect_urls: s.redirect_urls.into_iter().collect(),
                };
                self.world.sys.systems.insert(s.id, system);
            }
            Record::Request(r) => {
                if self.world.sys.requests.contains_key(&r.id) {
                    return Err(bad(self.index, format!("duplicate request `{}`", r.id)));
                }
                let request = self.request(r)?;
                self.world.sys.put_request(request.id.clone(), Some(request));
            }
            Record::AgentSystemUser(a) => {
                if self.world.sys.agent_packages.contains_key(&a.system_user) {
                    return Err(bad(
                        self.index,
                        format!("duplicate agent system user `{}`", a.system_user),
                    ));
                }
                let packages = self.packages(&a.packages)?;
                self.world.sys.agent_packages.insert(a.system_user, packages);
            }
            Record::Policy(p) => {
                self.resource(&p.resource)?;
                if self.world.pdp.policies.contains_key(&p.resource) {
                    return Err(bad(self.index, format!("duplicate policy of `{}`", p.resource)));
                }
                let compiled = crate::pdp::compile_policy(&p.xml)
                    .map_err(|e| bad(self.index, format!("policy of `{}`: {e}", p.resource)))?;
                self.world.pdp.policies.insert(p.resource, Arc::new(compiled));
            }
            Record::Instance(i) => {
                self.party(&i.party)?;
                self.resource(&i.resource)?;
                if self.world.pdp.instances.contains_key(&i.id) {
                    return Err(bad(self.index, format!("duplicate instance `{}`", i.id)));
                }
                self.world.pdp.instances.insert(
                    i.id.clone(),
                    Instance {
                        id: i.id,
                        resource: i.resource,
                        party: i.party,
                        task: i.task,
                        end_event: i.end_event,
                    },
                );
            }
            Record::AccessList(l) => {
                let key = (l.owner, l.id);
                if self.world.pdp.access_lists.contains_key(&key) {
                    return Err(bad(
                        self.index,
                        format!("duplicate access list `{}:{}`", key.0, key.1),
                    ));
                }
                let mut members = Vec::with_capacity(l.members.len());
                for m in l.members {
                    self.party(&m.org)?;
                    members.push(ListMember {
                        org: m.org,
                        actions: m.actions.map(|a| a.into_iter().collect()),
                    });
                }
                self.world.pdp.put_list(key, Some(members));
            }
            Record::ResourceLists(r) => {
                self.resource(&r.resource)?;
                if self.world.pdp.resource_lists.contains_key(&r.resource) {
                    return Err(bad(
                        self.index,
                        format!("duplicate access-list settings of `{}`", r.resource),
                    ));
                }
                self.world.pdp.resource_lists.insert(
                    r.resource,
                    ResourceLists {
                        lists: r.lists,
                        enabled: r.enabled,
                    },
                );
            }
            Record::ResourceKind(k) => {
                let n = self.resource(&k.resource)?;
                let kind = match k.kind.as_str() {
                    "consent" => crate::graph::ResourceKind::Consent { one_time: k.one_time },
                    other => return Err(bad(self.index, format!("unknown resource kind `{other}`"))),
                };
                match self.world.graph.resource_mut(n) {
                    Some(r) if r.kind == crate::graph::ResourceKind::Service => r.kind = kind,
                    _ => {
                        return Err(bad(
                            self.index,
                            format!("duplicate kind of resource `{}`", k.resource),
                        ));
                    }
                }
            }
            Record::Consent(c) => {
                if self.world.consent.consents.contains_key(&c.id) {
                    return Err(bad(self.index, format!("duplicate consent `{}`", c.id)));
                }
                let consent = self.consent(c)?;
                self.world.consent.insert_loaded(consent);
            }
            Record::ScopeResource(r) => {
                let n = self.resource(&r.resource)?;
                if self.world.suppliers.is_scope_resource(n) {
                    return Err(bad(
                        self.index,
                        format!("duplicate scope resource `{}`", r.resource),
                    ));
                }
                crate::supplier::set_scopes(&mut self.world.suppliers, n, Some(r.scopes));
            }
            Record::Supplier(r) => {
                let (c, s) = (self.party(&r.consumer)?, self.party(&r.supplier)?);
                if self.world.suppliers.pair(c, s).is_some() {
                    return Err(bad(
                        self.index,
                        format!("duplicate supplier `{}` → `{}`", r.consumer, r.supplier),
                    ));
                }
                let mut set = imbl::OrdSet::new();
                for id in &r.resources {
                    set.insert(self.resource(id)?);
                }
                crate::supplier::set_pair(&mut self.world.suppliers, c, s, Some(set));
            }
            Record::End(_) => return Err(bad(self.index, "unexpected end record".into())),
        }
        self.index += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<World> {
        if !self.saw_world {
            return Err(SnapshotError::Corrupt("no world record".into()));
        }
        Ok(self.world)
    }
}

/// What loading a snapshot gives back besides the world.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub header: Header,
    pub version: u32,
    pub bytes: u64,
}

/// Reads a whole snapshot from a stream and rebuilds the world (a version 4 file is
/// read into memory first: its index is at the end). `progress` is called with the
/// number of records read so far.
pub fn read_world<R: Read>(mut input: R, progress: &mut dyn FnMut(u64)) -> Result<(World, Loaded)> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    decode_with(&bytes, 1, progress)
}

/// The schema version named by a file's first bytes, if they are a snapshot's.
fn version_of(bytes: &[u8]) -> Option<u32> {
    (bytes.get(..8) == Some(&MAGIC[..]) && bytes.len() >= 12).then(|| u32_at(bytes, 8))
}

fn decode_with(bytes: &[u8], parts: usize, progress: &mut dyn FnMut(u64)) -> Result<(World, Loaded)> {
    match version_of(bytes) {
        Some(v) if v >= SECTIONED_VERSION => sections::read_world(&sections::Bytes(bytes), parts, progress),
        _ => read_stream(bytes, parts, progress),
    }
}

/// Reads a file of the stream layout (versions 1 to 3) record by record.
fn read_stream<R: Read>(input: R, parts: usize, progress: &mut dyn FnMut(u64)) -> Result<(World, Loaded)> {
    let mut rd = SnapshotReader::new(input)?;
    let mut loader = Loader::with_partitions(parts);
    let mut n = 0u64;
    while let Some(rec) = rd.next_record()? {
        loader.add(rec)?;
        n += 1;
        if n.is_multiple_of(65_536) {
            progress(n);
        }
    }
    progress(n);
    let world = loader.finish()?;
    Ok((
        world,
        Loaded {
            header: rd.header.clone(),
            version: rd.version,
            bytes: rd.offset,
        },
    ))
}

/// Decodes a snapshot held in memory (used by tests and the fuzz target).
pub fn decode(bytes: &[u8]) -> Result<World> {
    decode_in(bytes, 1)
}

/// [`decode`] into a world whose graph has `parts` parts.
pub fn decode_in(bytes: &[u8], parts: usize) -> Result<World> {
    decode_with(bytes, parts, &mut |_| {}).map(|(w, _)| w)
}

/// `w` with its graph in `parts` parts: the same world rebuilt record by record (node
/// ids change; every answer stays the same), or a clone when the count is already that.
pub fn repartitioned(w: &World, parts: usize) -> Result<World> {
    if w.graph.partitions() == parts.clamp(1, crate::graph::MAX_PARTS) {
        return Ok(w.clone());
    }
    let mut loader = Loader::with_partitions(parts);
    for rec in records(w) {
        loader.add(rec)?;
    }
    loader.finish()
}

/// Writes a world to a stream in the current version (sections of
/// [`DEFAULT_PARTITIONS`] partitions, encoded on all cores); returns the counts written.
pub fn write_world<W: Write>(
    w: &World,
    out: W,
    last_seq: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, Counts)> {
    sections::write_world(w, out, last_seq, DEFAULT_PARTITIONS, progress)
}

/// [`write_world`] in `partitions` partitions (1 to [`MAX_PARTITIONS`]).
pub fn write_world_in<W: Write>(
    w: &World,
    out: W,
    last_seq: u64,
    partitions: u32,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, Counts)> {
    sections::write_world(w, out, last_seq, partitions, progress)
}

/// Writes a world in the stream layout of version 3 (one run of blocks): what this
/// build wrote before sections; for tests and tools that need the older layout.
pub fn write_stream<W: Write>(
    w: &World,
    out: W,
    last_seq: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(W, Counts)> {
    let header = Header {
        created_at: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        last_seq,
        counts: count(w),
        compression: "lz4-block".to_string(),
        engine: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut wr = SnapshotWriter::new(out, &header)?;
    let mut n = 0u64;
    for rec in records(w) {
        wr.write(&rec)?;
        n += 1;
        if n.is_multiple_of(65_536) {
            progress(n);
        }
    }
    progress(n);
    let (out, counts) = wr.finish()?;
    if counts != header.counts {
        return Err(SnapshotError::Encode(format!(
            "counted {:?} before writing but wrote {counts:?}",
            header.counts
        )));
    }
    Ok((out, counts))
}

/// Encodes a world into memory (tests and tools; files should use [`save`]).
pub fn encode(w: &World, last_seq: u64) -> Result<Vec<u8>> {
    write_world(w, Vec::new(), last_seq, &mut |_| {}).map(|(v, _)| v)
}

/// Encodes a world into memory in the version 3 stream layout ([`write_stream`]).
pub fn encode_stream(w: &World, last_seq: u64) -> Result<Vec<u8>> {
    write_stream(w, Vec::new(), last_seq, &mut |_| {}).map(|(v, _)| v)
}

/// Fsyncs a directory so that a rename or an unlink in it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Saves a world atomically: written to a temporary file beside `path`, fsynced,
/// renamed over `path`, and the directory fsynced. A crash at any point leaves either
/// the old file or the new one, never a mix; a left-over `*.tmp` is garbage.
pub fn save(w: &World, path: &Path, last_seq: u64, progress: &mut dyn FnMut(u64)) -> Result<Counts> {
    save_in(w, path, last_seq, DEFAULT_PARTITIONS, progress)
}

/// [`save`] in `partitions` partitions.
pub fn save_in(
    w: &World,
    path: &Path,
    last_seq: u64,
    partitions: u32,
    progress: &mut dyn FnMut(u64),
) -> Result<Counts> {
    save_with(path, |out| write_world_in(w, out, last_seq, partitions, progress))
}

/// [`save`] of the file planned by `plan` from sections encoded elsewhere (the server's
/// partition actors encode theirs; see [`write_sections`]).
pub fn save_sections(
    path: &Path,
    plan: &Plan,
    last_seq: u64,
    sections: Vec<Encoded>,
    progress: &mut dyn FnMut(u64),
) -> Result<Counts> {
    save_with(path, |out| {
        write_sections(out, plan, last_seq, sections, progress)
    })
}

/// The atomic save of [`save`] around `write`, which writes the whole file.
fn save_with(
    path: &Path,
    write: impl FnOnce(BufWriter<Paced<File>>) -> Result<(BufWriter<Paced<File>>, Counts)>,
) -> Result<Counts> {
    let inner = || -> Result<Counts> {
        let dir = parent_of(path);
        let name = path
            .file_name()
            .ok_or_else(|| SnapshotError::Encode("the path names no file".into()))?;
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        let file = File::create(&tmp)?;
        let result = (|| {
            // The kernel gets the bytes in pieces, with a pause for waiting readers
            // between them when a checkpoint writes on a background thread.
            let (buf, counts) = write(BufWriter::with_capacity(1 << 20, Paced(file)))?;
            let file = buf
                .into_inner()
                .map_err(|e| SnapshotError::Io(e.into_error()))?
                .into_inner();
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, path)?;
            sync_dir(&dir)?;
            Ok(counts)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    };
    inner().map_err(|e| e.at(path))
}

/// Like [`read_world`], with reading, checking, decompressing and decoding on a second
/// thread while this one builds the graph (the two halves cost about the same).
pub fn read_world_pipelined<R: Read + Send>(
    input: R,
    progress: &mut dyn FnMut(u64),
) -> Result<(World, Loaded)> {
    pipelined(input, 1, progress)
}

fn pipelined<R: Read + Send>(
    input: R,
    parts: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<(World, Loaded)> {
    const CHUNK: usize = 4096;
    let mut rd = SnapshotReader::new(input)?;
    let header = rd.header.clone();
    let version = rd.version;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Record>>>(8);
    std::thread::scope(|s| {
        let decoder = s.spawn(move || {
            loop {
                let mut chunk = Vec::with_capacity(CHUNK);
                let mut end = false;
                while chunk.len() < CHUNK {
                    match rd.next_record() {
                        Ok(Some(r)) => chunk.push(r),
                        Ok(None) => {
                            end = true;
                            break;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return rd.offset;
                        }
                    }
                }
                if tx.send(Ok(chunk)).is_err() || end {
                    return rd.offset;
                }
            }
        });
        let mut loader = Loader::with_partitions(parts);
        let mut n = 0u64;
        let mut result = Ok(());
        for chunk in rx.iter() {
            match chunk {
                Ok(recs) => {
                    for rec in recs {
                        if let Err(e) = loader.add(rec) {
                            result = Err(e);
                            break;
                        }
                        n += 1;
                        if n.is_multiple_of(65_536) {
                            progress(n);
                        }
                    }
                }
                Err(e) => result = Err(e),
            }
            if result.is_err() {
                break;
            }
        }
        // Dropping the receiver stops the decoder at its next send.
        drop(rx);
        let bytes = decoder
            .join()
            .map_err(|_| SnapshotError::Corrupt("the decoder thread panicked".into()))?;
        result?;
        progress(n);
        let world = loader.finish()?;
        Ok((
            world,
            Loaded {
                header,
                version,
                bytes,
            },
        ))
    })
}

/// Loads a snapshot file: a version 4 file by sections on all cores (each worker reads
/// its sections through its own handle), an older one streamed through a buffered
/// reader and decoded on a second thread.
pub fn load(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<(World, Loaded)> {
    load_in(path, 1, progress)
}

/// [`load`] into a world whose graph has `parts` parts (a version 4 file written in as
/// many partitions loads each section straight into its part).
pub fn load_in(path: &Path, parts: usize, progress: &mut dyn FnMut(u64)) -> Result<(World, Loaded)> {
    let mut inner = || {
        let mut f = File::open(path)?;
        let mut first = [0u8; 12];
        let got = f.read(&mut first)?;
        let len = f.metadata()?.len();
        if version_of(first.get(..got).unwrap_or_default()).is_some_and(|v| v >= SECTIONED_VERSION) {
            return sections::read_world(&sections::FileAt { path, len }, parts, progress);
        }
        let f = File::open(path)?;
        pipelined(BufReader::with_capacity(1 << 20, f), parts, progress)
    };
    inner().map_err(|e| e.at(path))
}

/// Reads only the header of a snapshot file.
pub fn read_header(path: &Path) -> Result<(Header, u32)> {
    let inner = || {
        let f = File::open(path)?;
        let rd = SnapshotReader::new(BufReader::new(f))?;
        Ok((rd.header.clone(), rd.version))
    };
    inner().map_err(|e: SnapshotError| e.at(path))
}

pub use sections::verify::Verified;

/// Reads a snapshot file back without building a world (`snapshot/sections/verify.rs`:
/// every checksum, every record decoded, the counts and the references that the file
/// alone can check), on at most `threads` workers that each call `on_thread` first. A
/// file of a version before 5 is loaded whole instead (a world is built and dropped).
pub fn verify_file(path: &Path, threads: usize, on_thread: &(dyn Fn() + Sync)) -> Result<Verified> {
    let (header, version) = read_header(path)?;
    if version < PLACED_VERSION {
        let (_, loaded) = load(path, &mut |_| {})?;
        return Ok(Verified {
            records: loaded.header.counts.total(),
            header: loaded.header,
            version: loaded.version,
        });
    }
    let inner = || {
        let len = std::fs::metadata(path)?.len();
        let v = sections::verify::verify(&sections::FileAt { path, len }, threads, on_thread)?;
        if v.header != header {
            return Err(SnapshotError::Corrupt(
                "the header changed while it was read".into(),
            ));
        }
        Ok(v)
    };
    inner().map_err(|e: SnapshotError| e.at(path))
}
