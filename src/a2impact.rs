//! The Altinn 2 cut-off report (`delegraph a2-impact`): who would lose which permit on
//! which service when Altinn 2 roles are retired, what each permit rests on today, and
//! what would restore it — the packages the same policy names, and who at the party may
//! grant one of them.
//!
//! The cut-off (`retire_a2_roles`) removes every record whose role is an Altinn 2 role:
//! migrated assignments, records inherited or repeated from them, client delegations
//! built on them, and RoleMap records that map to them; and Altinn 2 tokens match
//! nobody. So instead of simulating over the whole world, the report visits only the
//! (subject, party) pairs where some Altinn 2 role is held, and compares the permits of
//! their records with and without those records. `tests/it` checks it against
//! `simulate` of `retire_a2_roles`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use serde::Serialize;

use crate::graph::{Edge, NodeId, Token};
use crate::model::PackageId;
use crate::resolve::{self, DelegationVerdict, Record};
use crate::world::World;

/// Which resources to report on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only resources of this service owner.
    pub owner: Option<String>,
    /// Only this resource.
    pub resource: Option<String>,
}

/// One permit that the cut-off would take away.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct LostPermit {
    pub owner: String,
    pub resource: String,
    pub subject: String,
    pub party: String,
    pub action: String,
    /// The derivations of the Altinn 2 roles the permit rests on today.
    pub rests_on: Vec<String>,
    /// Packages the same policy names for this action: holding one restores the permit.
    pub restoring_packages: Vec<String>,
    /// Who at the party may grant one of those packages (§5).
    pub grantors: Vec<String>,
}

/// Per resource: permits (among the pairs that hold an Altinn 2 role) kept and lost.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ResourceSummary {
    pub owner: String,
    pub resource: String,
    pub kept: usize,
    pub lost: usize,
    /// Lost permits that one grant of a named package by a known grantor would restore.
    pub restorable_by_one_grant: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub pairs_examined: usize,
    /// How many permits would be lost (also when `lost` is not kept).
    pub lost_count: usize,
    pub resources: Vec<ResourceSummary>,
    pub lost: Vec<LostPermit>,
}

impl Report {
    pub fn total_lost(&self) -> usize {
        self.lost_count
    }
    pub fn total_kept(&self) -> usize {
        self.resources.iter().map(|r| r.kept).sum()
    }
    pub fn total_restorable(&self) -> usize {
        self.resources.iter().map(|r| r.restorable_by_one_grant).sum()
    }
}

/// The (subject, party) pairs where some Altinn 2 role may be held.
fn candidate_pairs(w: &World) -> BTreeSet<(NodeId, NodeId)> {
    let c = w.catalog;
    let g = &w.graph;
    let gives_a2 = |r| c.is_altinn2_role(r) || c.role_map_of(r).iter().any(|m| c.is_altinn2_role(*m));
    let mut pairs = BTreeSet::new();
    let mut add = |subjects: &[NodeId], from: NodeId, owner_rule: bool| {
        let mut parties = vec![from];
        parties.extend(g.sub_units(from));
        if owner_rule && g.party(from).is_some_and(|p| p.is_unit_type("ENK")) {
            for (_, o, e) in g.outgoing(from) {
                if let Edge::Assignment(a) = e
                    && a.role == c.known.innehaver
                {
                    parties.push(o);
                }
            }
        }
        for s in subjects {
            for p in &parties {
                pairs.insert((*s, *p));
            }
        }
    };
    for (n, p) in g.parties() {
        // Persons hold privatperson for themselves, which RoleMap maps to Altinn 2 roles.
        if p.is_living_person() && gives_a2(c.known.privatperson) {
            add(&[n], n, false);
        }
        for (_, to, e) in g.outgoing(n) {
            let (role, is_delegation) = match e {
                Edge::Assignment(a) => (a.role, false),
                Edge::Delegation(d) => (d.role, true),
                Edge::MainUnit(_) => continue,
            };
            if !gives_a2(role) {
                continue;
            }
            let mut subjects = vec![to];
            if !is_delegation {
                for (_, holder, e2) in g.outgoing(to) {
                    if let Edge::Assignment(k) = e2
                        && c.is_key_role(k.role)
                    {
                        subjects.push(holder);
                    }
                }
            }
            add(&subjects, n, c.is_owner_rule_role(role));
        }
    }
    pairs
}

/// Builds the report; `progress(done, total)` is called as pairs are examined.
pub fn report(w: &World, filter: &Filter, progress: impl FnMut(usize, usize)) -> Report {
    let mut lost = Vec::new();
    let mut r = report_streaming(w, filter, progress, |l| lost.push(l));
    lost.sort();
    r.lost = lost;
    r
}

/// Builds the report, handing each lost permit to `sink` as it is found instead of
/// keeping it (a Norway-scale cut-off loses far more permits than are worth holding in
/// memory); the returned report has the totals and per-resource counts, and an empty
/// `lost` list.
pub fn report_streaming(
    w: &World,
    filter: &Filter,
    mut progress: impl FnMut(usize, usize),
    mut sink: impl FnMut(LostPermit),
) -> Report {
    let c = w.catalog;
    let g = &w.graph;
    // Resources whose policy names an Altinn 2 role, with the filter applied.
    let resources: Vec<(NodeId, String, String)> = g
        .resources()
        .filter(|(_, r)| filter.resource.as_ref().is_none_or(|f| *f == r.id))
        .filter(|(_, r)| filter.owner.as_ref().is_none_or(|o| r.owner.as_ref() == Some(o)))
        .filter(|(_, r)| {
            r.rules.iter().any(|rule| {
                rule.any_of
                    .iter()
                    .any(|t| matches!(t, Token::Role(x) if c.is_altinn2_role(*x)))
            })
        })
        .map(|(n, r)| (n, r.id.clone(), r.owner.clone().unwrap_or_default()))
        .collect();
    let mut out = Report::default();
    let mut summaries: BTreeMap<NodeId, ResourceSummary> = resources
        .iter()
        .map(|(n, id, owner)| {
            (
                *n,
                ResourceSummary {
                    owner: owner.clone(),
                    resource: id.clone(),
                    ..Default::default()
                },
            )
        })
        .collect();
    if resources.is_empty() || w.a2_retired {
        out.resources = summaries.into_values().collect();
        return out;
    }
    let pairs = candidate_pairs(w);
    out.pairs_examined = pairs.len();
    let mut grantors_cache: HashMap<(NodeId, PackageId), Vec<String>> = HashMap::new();
    let total = pairs.len();
    for (i, (x, f)) in pairs.into_iter().enumerate() {
        if i % 1024 == 0 {
            progress(i, total);
        }
        let recs = resolve::records(w, x, Some(f));
        let (after, a2recs): (Vec<Record>, Vec<Record>) =
            recs.into_iter().partition(|r| !c.is_altinn2_role(r.role));
        if a2recs.is_empty() {
            continue;
        }
        let mut all = after.clone();
        all.extend(a2recs.iter().cloned());
        for (rn, rid, owner) in &resources {
            let Some(res) = g.resource(*rn) else { continue };
            let actions: BTreeSet<&String> = res.rules.iter().flat_map(|r| r.actions.iter()).collect();
            for action in actions {
                if !resolve::permits_with(w, &all, *rn, action, None) {
                    continue;
                }
                // Without the Altinn 2 records no Altinn 2 token can match.
                let kept = resolve::permits_with(w, &after, *rn, action, None);
                let s = summaries.entry(*rn).or_default();
                if kept {
                    s.kept += 1;
                    continue;
                }
                s.lost += 1;
                // What it rests on: the Altinn 2 records whose role a rule for it names.
                let named: BTreeSet<crate::model::RoleId> = res
                    .rules
                    .iter()
                    .filter(|r| r.actions.contains(action))
                    .flat_map(|r| r.any_of.iter())
                    .filter_map(|t| match t {
                        Token::Role(r) => Some(*r),
                        Token::Package(_) => None,
                    })
                    .collect();
                let rests_on: Vec<String> = a2recs
                    .iter()
                    .filter(|r| named.contains(&r.role))
                    .map(|r| resolve::describe(w, x, r))
                    .collect();
                let restoring: Vec<PackageId> = res
                    .rules
                    .iter()
                    .filter(|r| r.actions.contains(action))
                    .flat_map(|r| r.any_of.iter())
                    .filter_map(|t| match t {
                        Token::Package(p) => Some(*p),
                        Token::Role(_) => None,
                    })
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let mut grantors = BTreeSet::new();
                for p in &restoring {
                    let list = grantors_cache.entry((f, *p)).or_insert_with(|| {
                        resolve::candidate_subjects(w, f)
                            .into_iter()
                            .filter(|u| resolve::can_delegate_package(w, *u, f, *p) == DelegationVerdict::Yes)
                            .map(|u| g.ext_id(u).to_string())
                            .collect()
                    });
                    grantors.extend(list.iter().cloned());
                }
                if !restoring.is_empty() && !grantors.is_empty() {
                    s.restorable_by_one_grant += 1;
                }
                out.lost_count += 1;
                sink(LostPermit {
                    owner: owner.clone(),
                    resource: rid.clone(),
                    subject: g.ext_id(x).to_string(),
                    party: g.ext_id(f).to_string(),
                    action: action.clone(),
                    rests_on,
                    restoring_packages: restoring.iter().map(|p| c.package(*p).code.clone()).collect(),
                    grantors: grantors.into_iter().collect(),
                });
            }
        }
    }
    progress(total, total);
    out.resources = summaries.into_values().collect();
    out
}

/// The report as a readable table, totals first.
pub fn to_table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Altinn 2 cut-off: {} permit(s) lost, {} kept, {} restorable by one grant ({} subject/party pairs examined)",
        r.total_lost(),
        r.total_kept(),
        r.total_restorable(),
        r.pairs_examined
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<16} {:<36} {:>8} {:>8} {:>12}",
        "owner", "resource", "kept", "lost", "restorable"
    );
    for x in &r.resources {
        let _ = writeln!(
            s,
            "{:<16} {:<36} {:>8} {:>8} {:>12}",
            x.owner, x.resource, x.kept, x.lost, x.restorable_by_one_grant
        );
    }
    if !r.lost.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "lost permits (subject for party: resource/action — restore with; grantors):"
        );
        for l in &r.lost {
            let _ = writeln!(
                s,
                "  {} for {}: {}/{} — restore with {}; grantors {}",
                l.subject,
                l.party,
                l.resource,
                l.action,
                if l.restoring_packages.is_empty() {
                    "(no package in the policy)".to_string()
                } else {
                    l.restoring_packages.join(" or ")
                },
                if l.grantors.is_empty() {
                    "(none)".to_string()
                } else {
                    l.grantors.join(", ")
                }
            );
            for p in &l.rests_on {
                let _ = writeln!(s, "      rests on {p}");
            }
        }
    }
    s
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// The header of the CSV of lost permits.
pub const CSV_HEADER: &str = "owner,resource,subject,party,action,rests_on,restoring_packages,grantors";

/// The lost permits as CSV, one row each.
pub fn to_csv(r: &Report) -> String {
    let mut s = format!("{CSV_HEADER}\n");
    for l in &r.lost {
        s.push_str(&csv_row(l));
    }
    s
}

/// One lost permit as a CSV line (with its newline).
pub fn csv_row(l: &LostPermit) -> String {
    let mut s = String::new();
    {
        let row = [
            l.owner.clone(),
            l.resource.clone(),
            l.subject.clone(),
            l.party.clone(),
            l.action.clone(),
            l.rests_on.join(" | "),
            l.restoring_packages.join(" "),
            l.grantors.join(" "),
        ];
        let _ = writeln!(
            s,
            "{}",
            row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(",")
        );
    }
    s
}

fn xml_escape(v: &str) -> String {
    v.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal stacked bar chart per resource: kept, lost but restorable by one grant,
/// lost with no single-grant fix.
pub fn to_svg(r: &Report) -> String {
    let rows = &r.resources;
    let max = rows.iter().map(|x| x.kept + x.lost).max().unwrap_or(0).max(1) as f64;
    let (left, width, bar, gap, top) = (260.0, 560.0, 22.0, 10.0, 60.0);
    let height = top + rows.len() as f64 * (bar + gap) + 50.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = left + width + 120.0
    );
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">Altinn 2 cut-off: permits per resource ({} lost, {} kept)</text>"#,
        r.total_lost(),
        r.total_kept()
    );
    let legend = [
        ("#4c9a2a", "kept"),
        ("#e8a33d", "lost, restorable by one grant"),
        ("#c0392b", "lost"),
    ];
    for (i, (colour, label)) in legend.iter().enumerate() {
        let x = 10.0 + i as f64 * 220.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="32" width="12" height="12" fill="{colour}"/><text x="{}" y="42">{label}</text>"#,
            x + 16.0
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let y = top + i as f64 * (bar + gap);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{} / {}</text>"#,
            left - 8.0,
            y + bar * 0.7,
            xml_escape(&row.owner),
            xml_escape(&row.resource)
        );
        let restorable = row.restorable_by_one_grant as f64;
        let hard = (row.lost - row.restorable_by_one_grant) as f64;
        let mut x = left;
        for (n, colour) in [
            (row.kept as f64, "#4c9a2a"),
            (restorable, "#e8a33d"),
            (hard, "#c0392b"),
        ] {
            let w = n / max * width;
            if w > 0.0 {
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="{bar}" fill="{colour}"/>"#
                );
            }
            x += w;
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}">{} kept, {} lost</text>"#,
            x + 6.0,
            y + bar * 0.7,
            row.kept,
            row.lost
        );
    }
    s.push_str("</svg>\n");
    s
}
