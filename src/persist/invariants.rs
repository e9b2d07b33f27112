//! Structural invariants of a world that every committed state satisfies. Used by
//! `snapshot verify` and by the crash test (a cascade seen half-applied breaks them).

use crate::graph::Edge;
use crate::world::World;

/// Every broken invariant, described; empty when the world is sound.
///
/// * a client delegation has its client assignment (client → facilitator with the
///   delegation's role) and its agent assignment (facilitator → agent, role `agent`);
/// * a client delegation forwards something (an empty one is removed);
/// * a sub-unit has at most one main unit, and it is an organisation;
/// * a supplier relationship joins two organisations and its indexes agree (§10).
pub fn violations(w: &World) -> Vec<String> {
    let g = &w.graph;
    let agent = w.catalog.known.agent;
    let mut out = Vec::new();
    for (n, _) in g.parties() {
        let mut mains = 0;
        for (_, t, e) in g.outgoing(n) {
            match e {
                Edge::Delegation(d) => {
                    let name = format!(
                        "delegation `{}` → `{}` via `{}`",
                        g.ext_id(n),
                        g.ext_id(t),
                        g.ext_id(d.facilitator)
                    );
                    if g.find_assignment(n, d.facilitator, d.role).is_none() {
                        out.push(format!("{name} has no client assignment"));
                    }
                    if g.find_assignment(d.facilitator, t, agent).is_none() {
                        out.push(format!("{name} has no agent assignment"));
                    }
                    if d.is_empty() {
                        out.push(format!("{name} forwards nothing"));
                    }
                }
                Edge::MainUnit(_) => {
                    mains += 1;
                    if g.party(t).is_none() {
                        out.push(format!("main unit of `{}` is not a party", g.ext_id(n)));
                    }
                }
                Edge::Assignment(_) => {}
            }
        }
        if mains > 1 {
            out.push(format!("`{}` has {mains} main units", g.ext_id(n)));
        }
    }
    // §10: supplier relationships and their indexes.
    out.extend(crate::supplier::violations(w));
    out
}
