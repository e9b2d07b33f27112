//! The state of consents inside the world ([`World::consent`]): the consents, their
//! index, their reported status and the lookup the decision on a consent resource makes
//! ([`holds`]), and how to undo one change. The events that change it are in
//! [`crate::consent`], one layer up (they go through the transaction); this module knows
//! the world only.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use imbl::OrdMap;

use crate::graph::{Actions, NodeId};
use crate::world::World;

/// A consent's status. Stored states are every status but `Expired`, which is derived;
/// the entries of the event list use the same words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Accepted,
    Rejected,
    Revoked,
    Used,
    Expired,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Created,
        Status::Accepted,
        Status::Rejected,
        Status::Revoked,
        Status::Used,
        Status::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Revoked => "revoked",
            Status::Used => "used",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One entry of a consent's event list (§9.6).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub what: Status,
    /// Who: the consumer or operator (`created`, `used`), the person (`accepted`,
    /// `rejected`, `revoked`); none for an import or the derived `expired`.
    pub by: Option<NodeId>,
    /// The engine clock when it happened (none while the clock is unset).
    pub at: Option<DateTime<FixedOffset>>,
}

/// A consent request and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Consent {
    pub id: String,
    /// The party asked.
    pub from: NodeId,
    /// The consumer.
    pub to: NodeId,
    /// The operator that runs the consent for the consumer.
    pub handled_by: Option<NodeId>,
    /// The one person who may answer.
    pub required_delegator: Option<NodeId>,
    /// Consent resource (external id) → actions (lower case).
    pub rights: BTreeMap<String, Actions>,
    pub valid_to: DateTime<FixedOffset>,
    /// Whether its resources are one-time: used up by the first use.
    pub one_time: bool,
    /// The stored state (never `Expired`).
    pub state: Status,
    /// The person who accepted it (none for an import).
    pub accepted_by: Option<NodeId>,
    /// What happened, in order (the derived `expired` entry is not stored).
    pub entries: Vec<Entry>,
}

impl Consent {
    /// The parties that hold this consent when it is valid: `to` and `handled_by`.
    pub fn holders(&self) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::once(self.to).chain(self.handled_by)
    }
}

/// Every consent, by id, and the index that answers `consent_check`.
#[derive(Debug, Clone, Default)]
pub struct ConsentState {
    pub consents: OrdMap<String, Arc<Consent>>,
    /// (from, holder) → the consents from `from` that `holder` holds as `to` or
    /// `handled_by`, by id. The index holds the consents themselves, so a lookup is one
    /// search among integer pairs and never a search among the ids of every consent
    /// (at 1 M consents that search alone cost microseconds of cache misses).
    pub by_holder: OrdMap<(NodeId, NodeId), OrdMap<String, Arc<Consent>>>,
}

impl ConsentState {
    /// Puts or removes one consent, keeping the index; returns what was there.
    pub(super) fn put(&mut self, id: &str, new: Option<Arc<Consent>>) -> Option<Arc<Consent>> {
        let old = match &new {
            Some(c) => self.consents.insert(id.to_string(), c.clone()),
            None => self.consents.remove(id),
        };
        if let Some(o) = &old {
            for h in o.holders() {
                let key = (o.from, h);
                let empty = match self.by_holder.get_mut(&key) {
                    Some(ids) => {
                        ids.remove(id);
                        ids.is_empty()
                    }
                    None => false,
                };
                if empty {
                    self.by_holder.remove(&key);
                }
            }
        }
        if let Some(c) = &new {
            for h in c.holders() {
                self.by_holder
                    .entry((c.from, h))
                    .or_default()
                    .insert(id.to_string(), c.clone());
            }
        }
        old
    }

    /// The consents from `from` that `holder` holds as `to` or `handled_by`.
    pub fn from_to(&self, from: NodeId, holder: NodeId) -> impl Iterator<Item = &Arc<Consent>> + '_ {
        self.by_holder
            .get(&(from, holder))
            .into_iter()
            .flat_map(|cs| cs.values())
    }

    pub fn len(&self) -> usize {
        self.consents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.consents.is_empty()
    }

    /// Adds a consent read from a snapshot (the loader checks duplicates first).
    pub fn insert_loaded(&mut self, c: Consent) {
        let id = c.id.clone();
        self.put(&id, Some(Arc::new(c)));
    }
}

/// How to undo one change: the consent's previous value.
#[derive(Debug)]
pub struct ConsentUndo(pub(super) String, pub(super) Option<Arc<Consent>>);

/// Restores one consent (called by the transaction's rollback).
pub(crate) fn undo(w: &mut World, u: ConsentUndo) {
    w.consent.put(&u.0, u.1);
}

/// The reported status: the stored one, or `expired` for a created or accepted consent
/// while the engine clock is later than `valid_to` (valid up to and including it).
pub fn status(w: &World, c: &Consent) -> Status {
    match c.state {
        Status::Created | Status::Accepted if w.now.is_some_and(|now| now > c.valid_to) => Status::Expired,
        s => s,
    }
}

/// Valid now: the reported status is `accepted`.
pub fn is_valid(w: &World, c: &Consent) -> bool {
    status(w, c) == Status::Accepted
}

/// Does `t` hold a valid consent from `f` for `action` on consent resource `resource`
/// (§9.5)? `action` is in lower case.
pub fn holds(w: &World, t: NodeId, f: NodeId, resource: &str, action: &str) -> bool {
    w.consent
        .from_to(f, t)
        .any(|c| is_valid(w, c) && c.rights.get(resource).is_some_and(|a| a.contains(action)))
}
