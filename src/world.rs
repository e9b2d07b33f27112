//! The world: the graph plus the little global state the rules need (the engine's
//! clock and whether the Altinn 2 cut-off has happened).

use chrono::{DateTime, FixedOffset};

use crate::catalog::Catalog;
use crate::graph::Graph;

#[derive(Debug, Clone)]
pub struct World {
    pub graph: Graph,
    pub catalog: &'static Catalog,
    /// The engine's notion of the current time, set by `clock` events.
    pub now: Option<DateTime<FixedOffset>>,
    /// Set by `retire_a2_roles`: policy tokens naming Altinn 2 roles match nobody.
    pub a2_retired: bool,
    /// The system register, system-user and access requests (domain.md §7).
    pub sys: crate::sysuser::SysState,
    /// XACML policies, instances and access lists of the decision point (domain.md §8).
    pub pdp: crate::pdp::PdpState,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    pub fn new() -> World {
        World {
            graph: Graph::new(),
            catalog: Catalog::builtin(),
            now: None,
            a2_retired: false,
            sys: crate::sysuser::SysState::default(),
            pdp: crate::pdp::PdpState::default(),
        }
    }
}
