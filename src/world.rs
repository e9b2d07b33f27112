//! The world: the graph plus the little global state the rules need (the engine's
//! clock and whether the Altinn 2 cut-off has happened).

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};

use crate::catalog::Catalog;
use crate::graph::Graph;

/// A world is cheap to clone (O(1)): the graph is a shared base plus a persistent delta,
/// and the system-user and decision-point states are shared until one of them changes
/// ([`Shared`]). A published version is a clone the writer no longer touches.
#[derive(Debug, Clone)]
pub struct World {
    pub graph: Graph,
    pub catalog: &'static Catalog,
    /// The engine's notion of the current time, set by `clock` events.
    pub now: Option<DateTime<FixedOffset>>,
    /// Set by `retire_a2_roles`: policy tokens naming Altinn 2 roles match nobody.
    pub a2_retired: bool,
    /// The system register, system-user and access requests (domain.md §7).
    pub sys: Shared<crate::sysuser::state::SysState>,
    /// XACML policies, instances and access lists of the decision point (domain.md §8).
    pub pdp: Shared<crate::pdp::state::PdpState>,
    /// Consents and their index (domain.md §9): global state, not per partition.
    pub consent: Shared<crate::consent::state::ConsentState>,
    /// Scope resources, supplier relationships and scope delegations (domain.md §10).
    pub suppliers: Shared<crate::supplier::state::SupplierState>,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    /// An empty world whose graph is one part.
    pub fn new() -> World {
        World::with_partitions(1)
    }

    /// An empty world whose graph has `p` parts (at least 1; see `graph`).
    pub fn with_partitions(p: usize) -> World {
        World {
            graph: Graph::with_partitions(p),
            catalog: Catalog::builtin(),
            now: None,
            a2_retired: false,
            sys: Shared::default(),
            pdp: Shared::default(),
            consent: Shared::default(),
            suppliers: Shared::default(),
        }
    }
}

/// A value shared between clones of a world and copied on its first change in one of
/// them (`Arc::make_mut` behind `DerefMut`), so code reads and writes it as a plain
/// field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shared<T>(Arc<T>);

impl<T> Shared<T> {
    pub fn new(v: T) -> Shared<T> {
        Shared(Arc::new(v))
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Clone> std::ops::DerefMut for Shared<T> {
    fn deref_mut(&mut self) -> &mut T {
        Arc::make_mut(&mut self.0)
    }
}
