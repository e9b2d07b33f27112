//! An XACML policy's answer over a given set of records: the policy step of
//! `crate::decide` for `check`, `simulate`, the resource delegation check and the
//! Altinn 2 cut-off report (the grant fallback and the access lists follow in
//! `decide::order`). The records are handed in instead of resolved, and the request
//! names only the resource and the action (no instance, no party attribute: a policy
//! that matches on the party id is evaluated without it).
//!
//! It also reads a compiled policy as the rule view the reports need: which actions its
//! rules pin, and which roles and packages its Permit rules name for an action.

use std::collections::BTreeSet;

use super::eval::{self, Ctx, TargetMode};
use super::pip::{self, A_PACKAGE, A_RESOURCE, A_ROLECODE};
use super::policy::{
    ACTION_ID, AllOf, AttrValue, CAT_ACTION, CAT_RESOURCE, CAT_SUBJECT, Child, CompiledPolicy, Effect, Expr,
    Policy, PolicySet, Root, Target,
};
use super::request::Category;
use super::response::Decision;
use crate::catalog::{Catalog, PackageSet, RoleSet};
use crate::resolve::Record;
use crate::world::World;

/// The policy's own answer (before the grant fallback and the access lists) to a request
/// for `action` on `resource`, with the subject's roles and packages taken from `recs`.
pub fn policy_decision(
    w: &World,
    resource: &str,
    policy: &CompiledPolicy,
    recs: &[Record],
    action: &str,
) -> Decision {
    let mut subject = Category::new(CAT_SUBJECT);
    pip::add_rights(w, policy, recs, &mut subject);
    let mut res = Category::new(CAT_RESOURCE);
    res.add(A_RESOURCE, None, false, vec![AttrValue::string(resource)]);
    let mut act = Category::new(CAT_ACTION);
    act.add(ACTION_ID, None, false, vec![AttrValue::string(action)]);
    let mut ind = vec![subject, res, act];
    pip::normalise_resource(w, &mut ind);
    eval::evaluate(
        policy,
        &Ctx {
            cats: &ind,
            now: pip::now_of(w),
            mode: TargetMode::Altinn,
            repo: &[],
        },
    )
    .decision
}

fn policies_of<'a>(root: &'a Root, out: &mut Vec<&'a Policy>) {
    fn set<'a>(s: &'a PolicySet, out: &mut Vec<&'a Policy>) {
        for c in &s.children {
            match c {
                Child::Policy(p) => out.push(p),
                Child::Set(s) => set(s, out),
                Child::Ref { .. } => {}
            }
        }
    }
    match root {
        Root::Policy(p) => out.push(p),
        Root::Set(s) => set(s, out),
    }
}

/// The actions the policy's rules pin (lower case, from the action index). A rule that
/// pins no action applies to any, but names none, so it adds nothing here.
pub fn policy_actions(policy: &CompiledPolicy) -> BTreeSet<String> {
    let mut ps = Vec::new();
    policies_of(&policy.root, &mut ps);
    ps.iter()
        .flat_map(|p| p.index.by_action.keys().cloned())
        .collect()
}

/// A subject match value as a role or a package of the catalogue: `urn:altinn:rolecode`
/// values are legacy codes, `urn:altinn:accesspackage` values package codes, and other
/// role attribute ids are URN prefixes (`urn:altinn:external-role:ccr` + `daglig-leder`).
fn token_of(c: &Catalog, attr_id: &str, value: &str, roles: &mut RoleSet, packages: &mut PackageSet) {
    if attr_id == A_PACKAGE {
        if let Some(p) = c.package_id(value) {
            packages.insert(p);
        }
    } else if attr_id == A_ROLECODE {
        if let Some(r) = c
            .role_id(&format!("{A_ROLECODE}:{value}"))
            .or_else(|| c.role_id(value))
        {
            roles.insert(r);
        }
    } else if let Some(r) = c.role_id(&format!("{attr_id}:{value}")) {
        roles.insert(r);
    }
}

fn target_tokens(c: &Catalog, t: &Target, roles: &mut RoleSet, packages: &mut PackageSet) {
    for AllOf(matches) in t.0.iter().flat_map(|any| any.0.iter()) {
        for m in matches {
            if let Expr::Designator(d) = &m.attr
                && d.category == CAT_SUBJECT
            {
                token_of(c, &d.id, m.value.v.trim(), roles, packages);
            }
        }
    }
}

/// The roles and packages the Permit rules that can apply to `action` name in their
/// subject matches: the rule view of a policy (what a permit for `action` may rest on,
/// and which packages would give it).
pub fn permit_rule_tokens(c: &Catalog, policy: &CompiledPolicy, action: &str) -> (RoleSet, PackageSet) {
    let (mut roles, mut packages) = (RoleSet::EMPTY, PackageSet::EMPTY);
    let mut ps = Vec::new();
    policies_of(&policy.root, &mut ps);
    for p in ps {
        let rules = p.index.candidates(&[action]).unwrap_or_default();
        for rule in rules.into_iter().filter_map(|i| p.rules.get(i)) {
            if rule.effect == Effect::Permit {
                target_tokens(c, &rule.target, &mut roles, &mut packages);
            }
        }
    }
    (roles, packages)
}

fn expr_values<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
    match e {
        Expr::Value(v) => out.push(v.v.trim()),
        Expr::Apply { args, .. } => args.iter().for_each(|a| expr_values(a, out)),
        _ => {}
    }
}

/// Every role and package a policy names anywhere: subject matches of every target
/// (policy and rules, Permit or Deny) and string values in conditions. A change to a
/// role or package the policy never names cannot change its answer.
pub fn mentioned_tokens(c: &Catalog, policy: &CompiledPolicy) -> (RoleSet, PackageSet) {
    let (mut roles, mut packages) = (RoleSet::EMPTY, PackageSet::EMPTY);
    let mut ps = Vec::new();
    policies_of(&policy.root, &mut ps);
    if let Root::Set(s) = &policy.root {
        target_tokens(c, &s.target, &mut roles, &mut packages);
    }
    for p in ps {
        target_tokens(c, &p.target, &mut roles, &mut packages);
        let mut values = Vec::new();
        for rule in &p.rules {
            target_tokens(c, &rule.target, &mut roles, &mut packages);
            if let Some(cond) = &rule.condition {
                expr_values(cond, &mut values);
            }
        }
        p.vars.values().for_each(|e| expr_values(e, &mut values));
        for v in values {
            roles.extend(c.role_id(v));
            roles.extend(c.role_id(&format!("{A_ROLECODE}:{v}")));
            if let Some(p) = c.package_id(v) {
                packages.insert(p);
            }
        }
    }
    (roles, packages)
}
