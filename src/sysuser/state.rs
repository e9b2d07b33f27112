//! The state of system users and requests inside the world ([`World::sys`]) and how to
//! undo one change to it. The events that change it are in [`crate::sysuser`], one
//! layer up (they go through the transaction); this module knows the world only.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, FixedOffset};
use imbl::OrdMap;

use crate::catalog::PackageSet;
use crate::graph::Actions;
use crate::model::{PackageId, SystemUserKind};
use crate::world::World;

/// Packages and resource actions named by a system, a request or a change request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RightSet {
    pub packages: PackageSet,
    /// Resource (external id) → actions.
    pub resources: BTreeMap<String, Actions>,
}

impl RightSet {
    /// The rights of `self` that `other` lacks.
    pub fn minus(&self, other: &RightSet) -> RightSet {
        let mut out = RightSet {
            packages: self.packages,
            resources: BTreeMap::new(),
        };
        for p in other.packages.iter() {
            out.packages.remove(p);
        }
        for (r, acts) in &self.resources {
            let rest: Actions = match other.resources.get(r) {
                Some(o) => acts.difference(o).cloned().collect(),
                None => acts.clone(),
            };
            if !rest.is_empty() {
                out.resources.insert(r.clone(), rest);
            }
        }
        out
    }

    /// The rights of `self` that `other` has too.
    pub fn within(&self, other: &RightSet) -> RightSet {
        let mut out = RightSet {
            packages: self.packages.intersection(&other.packages),
            resources: BTreeMap::new(),
        };
        for (r, acts) in &self.resources {
            if let Some(o) = other.resources.get(r) {
                let both: Actions = acts.intersection(o).cloned().collect();
                if !both.is_empty() {
                    out.resources.insert(r.clone(), both);
                }
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.resources.is_empty()
    }
}

/// A vendor's system and the rights it may ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct System {
    pub id: String,
    /// The vendor organisation (external id).
    pub vendor: String,
    pub name: Option<String>,
    pub packages: PackageSet,
    /// Resource (external id) → the actions the system may ask for (None: every action
    /// of the resource's policy).
    pub resources: BTreeMap<String, Option<Actions>>,
    pub redirect_urls: BTreeSet<String>,
}

/// The stored state of a request; `timed_out` is derived (see [`super::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Draft,
    Pending,
    Accepted,
    Approved,
    Rejected,
    Withdrawn,
}

/// A request's status as the `request_status` query reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Draft,
    Pending,
    Accepted,
    Approved,
    Rejected,
    Withdrawn,
    TimedOut,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Draft,
        Status::Pending,
        Status::Accepted,
        Status::Approved,
        Status::Rejected,
        Status::Withdrawn,
        Status::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Pending => "pending",
            Status::Accepted => "accepted",
            Status::Approved => "approved",
            Status::Rejected => "rejected",
            Status::Withdrawn => "withdrawn",
            Status::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// What an access request asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessTarget {
    Package(PackageId),
    Resource { resource: String, action: String },
}

/// The three kinds of request.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    /// A vendor asks `party` for a system user of `system`.
    SystemUser {
        system: String,
        party: String,
        kind: SystemUserKind,
        system_user: String,
        rights: RightSet,
        redirect_url: Option<String>,
        external_ref: Option<String>,
    },
    /// A vendor asks to change the rights of a standard system user.
    Change {
        system_user: String,
        add: RightSet,
        remove: RightSet,
        redirect_url: Option<String>,
    },
    /// `from` asks `to` for access; `by` is who made the request.
    Access {
        from: String,
        to: String,
        target: AccessTarget,
        by: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: String,
    pub body: RequestBody,
    pub state: State,
    /// The engine clock when the request was made (None when no clock was set).
    pub created: Option<DateTime<FixedOffset>>,
    /// Who passed the request on to the party's access managers.
    pub escalated_by: Option<String>,
    /// Who approved or rejected it.
    pub answered_by: Option<String>,
}

/// The system register and the requests. Its maps are persistent (`imbl`): a version
/// shares them with the next, and a write copies only the paths it changes.
#[derive(Debug, Clone, Default)]
pub struct SysState {
    pub systems: OrdMap<String, System>,
    pub requests: OrdMap<String, Request>,
    /// The packages of each agent system user created by an approved request.
    pub agent_packages: OrdMap<String, PackageSet>,
}

/// How to undo one change to [`SysState`]: the previous value of an entry.
#[derive(Debug)]
pub enum SysUndo {
    System(String, Option<System>),
    Request(String, Option<Request>),
    AgentPackages(String, Option<PackageSet>),
}

pub(crate) fn put<V: Clone>(map: &mut OrdMap<String, V>, k: String, v: Option<V>) -> Option<V> {
    match v {
        Some(v) => map.insert(k, v),
        None => map.remove(&k),
    }
}

/// Restores one entry (called by the transaction's rollback).
pub(crate) fn undo(w: &mut World, u: SysUndo) {
    match u {
        SysUndo::System(k, v) => {
            put(&mut w.sys.systems, k, v);
        }
        SysUndo::Request(k, v) => {
            put(&mut w.sys.requests, k, v);
        }
        SysUndo::AgentPackages(k, v) => {
            put(&mut w.sys.agent_packages, k, v);
        }
    }
}
