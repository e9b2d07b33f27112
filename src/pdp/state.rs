//! The decision point's state inside the world: compiled policies, instances and access
//! lists, and how to undo one change to them (the transaction's rollback calls
//! `undo`; the events that change them are in [`super::events`]).

use std::collections::BTreeSet;

use imbl::{HashMap, OrdSet};
use std::sync::Arc;

use super::policy::CompiledPolicy;
use crate::world::World;

/// An instance of an app or resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub resource: String,
    /// External id of the owning party.
    pub party: String,
    pub task: Option<String>,
    pub end_event: Option<String>,
}

/// A member of an access list; `actions` None means every action.
#[derive(Debug, Clone, PartialEq)]
pub struct ListMember {
    pub org: String,
    pub actions: Option<BTreeSet<String>>,
}

/// A resource's access-list settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceLists {
    pub lists: Vec<String>,
    pub enabled: bool,
}

/// The decision point's state. Its maps are persistent (`imbl`): a version shares them
/// with the next, and a write copies only the paths it changes (a plain map was copied
/// whole on the first change of every version: 80 ms per write at 100 000 instances).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PdpState {
    /// Compiled XACML policy per resource id.
    // INVARIANT: every policy here has its `source` (it came from a `policy` event or a
    // snapshot record), so a snapshot can write it back.
    pub policies: HashMap<String, Arc<CompiledPolicy>>,
    pub instances: HashMap<String, Instance>,
    /// (service owner, list id) → members.
    // INVARIANT: changed only through `put_list`, which keeps the two indexes below.
    pub access_lists: HashMap<(String, String), Vec<ListMember>>,
    pub resource_lists: HashMap<String, ResourceLists>,
    /// List id → the owners with a list of that id (a resource without an owner names
    /// a list by its id alone).
    owners_of_list: HashMap<String, OrdSet<String>>,
    /// Member organisation → the lists it is on (the subject's `urn:altinn:access-list`
    /// values).
    lists_of_member: HashMap<String, OrdSet<(String, String)>>,
}

impl PdpState {
    /// Puts or removes an access list, keeping the indexes; returns what was there.
    pub(crate) fn put_list(
        &mut self,
        key: (String, String),
        members: Option<Vec<ListMember>>,
    ) -> Option<Vec<ListMember>> {
        if let Some(ms) = &members {
            self.owners_of_list
                .entry(key.1.clone())
                .or_default()
                .insert(key.0.clone());
            for m in ms {
                self.lists_of_member
                    .entry(m.org.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        let old = match &members {
            Some(ms) => self.access_lists.insert(key.clone(), ms.clone()),
            None => self.access_lists.remove(&key),
        };
        for m in old.iter().flatten() {
            if members.iter().flatten().any(|n| n.org == m.org) {
                continue;
            }
            let empty = self.lists_of_member.get_mut(&m.org).is_some_and(|ls| {
                ls.remove(&key);
                ls.is_empty()
            });
            if empty {
                self.lists_of_member.remove(&m.org);
            }
        }
        if members.is_none() && old.is_some() {
            let empty = self.owners_of_list.get_mut(&key.1).is_some_and(|os| {
                os.remove(&key.0);
                os.is_empty()
            });
            if empty {
                self.owners_of_list.remove(&key.1);
            }
        }
        old
    }

    /// The owners that have a list named `id`.
    pub(crate) fn owners_of_list(&self, id: &str) -> impl Iterator<Item = &String> {
        self.owners_of_list.get(id).into_iter().flatten()
    }

    /// The lists (owner, id) that `org` is a member of.
    pub(crate) fn lists_of_member(&self, org: &str) -> impl Iterator<Item = &(String, String)> {
        self.lists_of_member.get(org).into_iter().flatten()
    }
}

/// How to undo one change to [`PdpState`].
#[derive(Debug, Clone)]
pub enum PdpUndo {
    Policy(String, Option<Arc<CompiledPolicy>>),
    Instance(String, Option<Instance>),
    AccessList((String, String), Option<Vec<ListMember>>),
    ResourceLists(String, Option<ResourceLists>),
}

fn restore<K: std::hash::Hash + Eq + Clone, V: Clone>(m: &mut HashMap<K, V>, k: K, old: Option<V>) {
    match old {
        Some(v) => {
            m.insert(k, v);
        }
        None => {
            m.remove(&k);
        }
    }
}

/// Undoes one change (called by the transaction's rollback).
pub(crate) fn undo(w: &mut World, u: PdpUndo) {
    let s = &mut w.pdp;
    match u {
        PdpUndo::Policy(k, old) => restore(&mut s.policies, k, old),
        PdpUndo::Instance(k, old) => restore(&mut s.instances, k, old),
        PdpUndo::AccessList(k, old) => {
            s.put_list(k, old);
        }
        PdpUndo::ResourceLists(k, old) => restore(&mut s.resource_lists, k, old),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two list indexes answer exactly what a walk of every list would, through
    /// replacements, removals (a rollback's) and members that come and go.
    #[test]
    fn the_list_indexes_find_what_a_walk_of_every_list_finds() {
        let mut s = PdpState::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let names = ["a", "b", "c", "d"];
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (
                names[(x % 3) as usize].to_string(),
                names[(x / 3 % 4) as usize].to_string(),
            );
            let members = (!x.is_multiple_of(7)).then(|| {
                names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| x >> (8 + i) & 1 == 1)
                    .map(|(_, o)| ListMember {
                        org: (*o).to_string(),
                        actions: None,
                    })
                    .collect::<Vec<_>>()
            });
            s.put_list(key, members);
            for n in names {
                let mut owners: Vec<&String> = s
                    .access_lists
                    .keys()
                    .filter(|(_, id)| id == n)
                    .map(|(o, _)| o)
                    .collect();
                owners.sort();
                assert_eq!(s.owners_of_list(n).collect::<Vec<_>>(), owners, "list {n}");
                let mut lists: Vec<&(String, String)> = s
                    .access_lists
                    .iter()
                    .filter(|(_, ms)| ms.iter().any(|m| m.org == n))
                    .map(|(k, _)| k)
                    .collect();
                lists.sort();
                assert_eq!(s.lists_of_member(n).collect::<Vec<_>>(), lists, "member {n}");
            }
        }
    }
}
