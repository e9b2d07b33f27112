//! Human output of query answers: one renderer for `delegraph query` and the demo, so
//! that what the demo prints is exactly what the command prints.

use std::fmt::Write;

use delegraph::query::{Answer, Chain, Query};

/// An answer as text, and whether it is a yes (allowed, or a non-empty list) for the
/// exit status.
pub fn answer(q: &Query, a: &Answer) -> (String, bool) {
    let mut s = String::new();
    let yes = match (q, a) {
        (Query::Check(q), Answer::Check(a)) => {
            let what = match (&q.package, &q.role, &q.resource) {
                (Some(p), _, _) => format!("package `{p}`"),
                (_, Some(r), _) => format!("role `{r}`"),
                (_, _, Some(r)) => resource_phrase(r, q.action.as_deref(), q.instance.as_deref()),
                _ => String::new(),
            };
            let (word, verb) = match (q.resource.is_some(), a.allowed) {
                (true, true) => ("permit", "may use"),
                (true, false) => ("deny", "may not use"),
                (false, true) => ("yes", "holds"),
                (false, false) => ("no", "does not hold"),
            };
            let _ = writeln!(s, "{word}: `{}` {verb} {what} for `{}`", q.subject, q.party);
            a.allowed
        }
        (Query::Rights(q), Answer::Rights(a)) => {
            let _ = writeln!(s, "`{}` acting for `{}`:", q.subject, q.party);
            list(&mut s, "packages", &a.packages);
            list(&mut s, "roles", &a.roles);
            !(a.packages.is_empty() && a.roles.is_empty())
        }
        (Query::AuthorizedParties(q), Answer::AuthorizedParties(a)) => {
            let _ = writeln!(s, "`{}` can act for {} parties:", q.subject, a.parties.len());
            let rows: Vec<[String; 4]> = a
                .parties
                .iter()
                .map(|p| {
                    [
                        p.party.clone(),
                        p.main_unit.clone().unwrap_or_else(|| "-".into()),
                        p.packages.len().to_string(),
                        if p.roles.is_empty() {
                            "-".into()
                        } else {
                            p.roles.join(", ")
                        },
                    ]
                })
                .collect();
            table(&mut s, ["party", "main unit", "packages", "roles"], &rows);
            !a.parties.is_empty()
        }
        (Query::Holders(q), Answer::Holders(a)) => {
            let _ = writeln!(
                s,
                "{} subject(s) hold package `{}` for `{}`:",
                a.holders.len(),
                q.package,
                q.party
            );
            for h in &a.holders {
                let _ = writeln!(s, "  {h}");
            }
            !a.holders.is_empty()
        }
        (Query::CanDelegate(q), Answer::CanDelegate(a)) => {
            let what = match (&q.package, &q.resource) {
                (Some(p), _) => format!("package `{p}`"),
                (_, Some(r)) => resource_phrase(r, q.action.as_deref(), None),
                _ => String::new(),
            };
            if a.allowed {
                let _ = writeln!(s, "yes: `{}` may pass on {what} for `{}`", q.by, q.party);
            } else {
                let why = a.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                let _ = writeln!(s, "no: `{}` may not pass on {what} for `{}`{why}", q.by, q.party);
            }
            a.allowed
        }
        (Query::Explain(q), Answer::Explain(a)) => {
            let what = match (&q.package, &q.role, &q.resource) {
                (Some(p), _, _) => format!("package `{p}`"),
                (_, Some(r), _) => format!("role `{r}`"),
                (_, _, Some(r)) => resource_phrase(r, q.action.as_deref(), q.instance.as_deref()),
                _ => String::new(),
            };
            if a.allowed {
                let _ = writeln!(
                    s,
                    "yes: `{}` has {what} for `{}`, by {} path(s):",
                    q.subject,
                    q.party,
                    a.chains.len()
                );
                for (i, c) in a.chains.iter().enumerate() {
                    let _ = writeln!(s, "  {}. {}", i + 1, c.text);
                    for line in draw(c) {
                        let _ = writeln!(s, "       {line}");
                    }
                }
            } else {
                let _ = writeln!(s, "no: `{}` does not have {what} for `{}`", q.subject, q.party);
                if let Some(m) = &a.missing {
                    let _ = writeln!(s, "  missing link: {m}");
                }
            }
            a.allowed
        }
        (Query::Simulate(_), Answer::Simulate(a)) => {
            let _ = writeln!(
                s,
                "would remove {} assignment(s) and {} client delegation(s); {} access(es) lost",
                a.removed_assignments_count, a.removed_delegations_count, a.lost_count
            );
            if a.truncated {
                let _ = writeln!(
                    s,
                    "  (the lists below are cut at the limit; the counts are complete)"
                );
            }
            for r in &a.removed_assignments {
                let _ = writeln!(s, "  removed assignment  {} ──{}──▶ {}", r.from, r.role, r.to);
            }
            for d in &a.removed_delegations {
                let _ = writeln!(
                    s,
                    "  removed delegation  {} ══client delegation══▶ {} (via {})",
                    d.client, d.agent, d.facilitator
                );
            }
            if !a.lost.is_empty() {
                // One row per (subject, party): the packages, then each resource's actions.
                let mut groups: std::collections::BTreeMap<(&str, &str), Lost<'_>> = Default::default();
                for l in &a.lost {
                    let g = groups.entry((&l.subject, &l.party)).or_default();
                    match (&l.package, &l.resource, &l.action) {
                        (Some(p), _, _) => g.0.push(p),
                        (_, Some(r), Some(act)) => g.1.push((r, act)),
                        _ => {}
                    }
                }
                let rows: Vec<[String; 3]> = groups
                    .into_iter()
                    .map(|((subject, party), (packages, actions))| {
                        let mut what: Vec<String> = packages.into_iter().map(str::to_string).collect();
                        let mut by_res: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
                        for (r, act) in actions {
                            by_res.entry(r).or_default().push(act);
                        }
                        what.extend(
                            by_res
                                .into_iter()
                                .map(|(r, acts)| format!("{r} ({})", acts.join("/"))),
                        );
                        [subject.to_string(), party.to_string(), what.join(", ")]
                    })
                    .collect();
                table(&mut s, ["loses", "for", "packages and resource actions"], &rows);
            }
            !(a.lost.is_empty() && a.removed_assignments.is_empty() && a.removed_delegations.is_empty())
        }
        (_, other) => {
            let _ = writeln!(s, "{}", other.body().map(|v| v.to_string()).unwrap_or_default());
            true
        }
    };
    (s, yes)
}

/// What one (subject, party) loses: packages, and (resource, action) pairs.
type Lost<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

fn resource_phrase(r: &str, action: Option<&str>, instance: Option<&str>) -> String {
    let mut s = format!("`{}` on `{r}`", action.unwrap_or("?"));
    if let Some(i) = instance {
        let _ = write!(s, " (instance `{i}`)");
    }
    s
}

fn list(s: &mut String, label: &str, items: &[String]) {
    let _ = writeln!(s, "  {label} ({}):", items.len());
    for i in items {
        let _ = writeln!(s, "    {i}");
    }
}

/// A table with a header row, columns padded to their widest cell.
pub fn table<const N: usize>(s: &mut String, header: [&str; N], rows: &[[String; N]]) {
    let mut width = header.map(|h| h.chars().count());
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |s: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::from(" ");
        for (c, w) in cells.zip(width) {
            let _ = write!(out, " {c:<w$}");
        }
        let _ = writeln!(s, "{}", out.trim_end());
    };
    line(s, &mut header.iter().copied());
    for r in rows {
        line(s, &mut r.iter().map(String::as_str));
    }
}

/// A derivation path drawn as a chain of parties joined by their edges, e.g.
/// `fjord ──regnskapsforer──▶ tind-regnskap ──daglig-leder (key role)──▶ kari`.
pub fn draw(c: &Chain) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut start = String::new();
    let mut end = String::new();
    let mut prefix = String::new();
    for e in &c.edges {
        match e.reason.as_str() {
            "main_unit" if e.to == start => {
                prefix = format!("{} ─(sub-unit of)─▶ ", e.from);
            }
            "enk_owner" if e.from == start => {
                prefix = format!("{} ◀─({} of ENK)─ ", e.to, e.role);
            }
            "role_map" => {
                let _ = write!(cur, " [RoleMap: {}]", e.role);
            }
            "self" => {
                cur = format!("{} holds {} for themself", e.from, e.role);
                start.clone_from(&e.from);
                end.clone_from(&e.to);
            }
            "client_delegation" if e.via.as_deref() == Some(end.as_str()) => {
                let _ = write!(cur, " ══client delegation══▶ {}", e.to);
                end.clone_from(&e.to);
            }
            "key_role" if e.from == end => {
                let _ = write!(cur, " ──{} (key role)──▶ {}", e.role, e.to);
                end.clone_from(&e.to);
            }
            _ if !cur.is_empty() && e.from == end => {
                let _ = write!(cur, " ──{}──▶ {}", e.role, e.to);
                end.clone_from(&e.to);
            }
            _ => {
                if !cur.is_empty() {
                    lines.push(std::mem::take(&mut cur));
                }
                let via = e
                    .via
                    .as_deref()
                    .map(|v| format!(" (via {v})"))
                    .unwrap_or_default();
                cur = format!("{} ──{}──▶ {}{via}", e.from, e.role, e.to);
                start.clone_from(&e.from);
                end.clone_from(&e.to);
            }
        }
    }
    if !cur.is_empty() {
        lines.push(format!("{prefix}{cur}"));
    }
    lines
}
