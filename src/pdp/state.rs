//! The decision point's state inside the world: compiled policies, instances and access
//! lists, and how to undo one change to them (the transaction's rollback calls
//! `undo`; the events that change them are in [`super::events`]).

use std::collections::BTreeSet;

use imbl::HashMap;
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
    pub access_lists: HashMap<(String, String), Vec<ListMember>>,
    pub resource_lists: HashMap<String, ResourceLists>,
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
        PdpUndo::AccessList(k, old) => restore(&mut s.access_lists, k, old),
        PdpUndo::ResourceLists(k, old) => restore(&mut s.resource_lists, k, old),
    }
}
