//! The state of system users and requests inside the world ([`World::sys`]) and how to
//! undo one change to it. The events that change it are in [`crate::sysuser`], one
//! layer up (they go through the transaction); this module knows the world only.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, FixedOffset};
use imbl::{OrdMap, OrdSet};

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
    // INVARIANT: changed only through `put_request`, which keeps `by_key`.
    pub requests: OrdMap<String, Request>,
    /// The packages of each agent system user created by an approved request.
    pub agent_packages: OrdMap<String, PackageSet>,
    /// [`RequestBody::key`] → the requests with that key, by id: what a new request is
    /// compared with for a duplicate, without a walk of every request.
    by_key: OrdMap<String, OrdSet<String>>,
}

impl SysState {
    /// Puts or removes request `id`, keeping the index; returns what was there.
    pub(crate) fn put_request(&mut self, id: String, r: Option<Request>) -> Option<Request> {
        let new_keys = r.as_ref().map(|n| n.body.keys()).unwrap_or_default();
        for k in &new_keys {
            self.by_key.entry(k.clone()).or_default().insert(id.clone());
        }
        let old = put(&mut self.requests, id.clone(), r);
        for key in old.iter().flat_map(|o| o.body.keys()) {
            if new_keys.contains(&key) {
                continue;
            }
            let empty = self.by_key.get_mut(&key).is_some_and(|ids| {
                ids.remove(&id);
                ids.is_empty()
            });
            if empty {
                self.by_key.remove(&key);
            }
        }
        old
    }

    /// The requests with any of `keys` ([`RequestBody::keys`]), in id order, each once.
    pub(crate) fn requests_with(&self, keys: &[String]) -> Vec<&Request> {
        let ids: std::collections::BTreeSet<&String> =
            keys.iter().filter_map(|k| self.by_key.get(k)).flatten().collect();
        ids.into_iter().filter_map(|id| self.requests.get(id)).collect()
    }
}

impl RequestBody {
    /// What a duplicate of this request shares with it: system, party and external
    /// reference (an empty one is none), and apart the system user it names, for a
    /// system-user request; the system user for a change request; from and to for an
    /// access request.
    pub(crate) fn keys(&self) -> Vec<String> {
        match self {
            RequestBody::SystemUser {
                system,
                party,
                external_ref,
                system_user,
                ..
            } => vec![
                Self::system_user_key(system, party, external_ref.as_deref().filter(|r| !r.is_empty())),
                Self::named_user_key(system_user),
            ],
            RequestBody::Change { system_user, .. } => vec![Self::change_key(system_user)],
            RequestBody::Access { from, to, .. } => vec![Self::access_key(from, to)],
        }
    }

    pub(crate) fn named_user_key(system_user: &str) -> String {
        format!("u\0{system_user}")
    }

    pub(crate) fn system_user_key(system: &str, party: &str, external_ref: Option<&str>) -> String {
        match external_ref {
            Some(r) => format!("s\0{system}\0{party}\0+{r}"),
            None => format!("s\0{system}\0{party}\0-"),
        }
    }

    pub(crate) fn change_key(system_user: &str) -> String {
        format!("c\0{system_user}")
    }

    pub(crate) fn access_key(from: &str, to: &str) -> String {
        format!("a\0{from}\0{to}")
    }
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
            w.sys.put_request(k, v);
        }
        SysUndo::AgentPackages(k, v) => {
            put(&mut w.sys.agent_packages, k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, n: u64) -> Request {
        let pick = |k: u64| ["a", "b", "c"][(k % 3) as usize].to_string();
        let body = match n % 3 {
            0 => RequestBody::SystemUser {
                system: pick(n / 3),
                party: pick(n / 9),
                kind: SystemUserKind::Standard,
                system_user: pick(n / 27),
                rights: RightSet::default(),
                redirect_url: None,
                external_ref: [None, Some(String::new()), Some("r".to_string())][(n / 81 % 3) as usize]
                    .clone(),
            },
            1 => RequestBody::Change {
                system_user: pick(n / 3),
                add: RightSet::default(),
                remove: RightSet::default(),
                redirect_url: None,
            },
            _ => RequestBody::Access {
                from: pick(n / 3),
                to: pick(n / 9),
                target: AccessTarget::Resource {
                    resource: "x".into(),
                    action: "read".into(),
                },
                by: None,
            },
        };
        Request {
            id: id.to_string(),
            body,
            state: State::Pending,
            created: None,
            escalated_by: None,
            answered_by: None,
        }
    }

    /// The index answers exactly what a walk of every request would, through puts that
    /// replace a request by one of another kind and removals.
    #[test]
    fn the_request_index_finds_what_a_walk_of_every_request_finds() {
        let mut s = SysState::default();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = format!("r{}", x % 40);
            let r = (!x.is_multiple_of(5)).then(|| request(&id, x >> 8));
            s.put_request(id, r);
            let mut keys: Vec<String> = s.requests.values().flat_map(|r| r.body.keys()).collect();
            keys.push(RequestBody::change_key("nobody"));
            for k in keys {
                let walk: Vec<&str> = s
                    .requests
                    .values()
                    .filter(|r| r.body.keys().contains(&k))
                    .map(|r| r.id.as_str())
                    .collect();
                let found: Vec<&str> = s
                    .requests_with(std::slice::from_ref(&k))
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect();
                assert_eq!(found, walk, "key {k:?}");
            }
        }
        assert!(s.by_key.values().all(|ids| !ids.is_empty()));
    }
}
