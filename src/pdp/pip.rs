//! The context handler and the graph as policy information point (domain.md §8):
//! normalise the resource (instance, app, resource registry id), find the subject and
//! the party by any legacy identifier, add what the policy's subject matches ask about
//! from the resolver, evaluate, then fall back to grants and apply access lists.

use chrono::{DateTime, FixedOffset, Utc};

use super::eval::{self, Ctx, TargetMode};
use super::policy::{ACTION_ID, AttrValue, CAT_ACTION, CAT_RESOURCE, CAT_SUBJECT, DT_STRING};
use super::request::{Api, Category, Individual, Request};
use super::response::{Decision, Response, ResultItem};
use crate::decide;
use crate::graph::{IdentKind, NodeId};
use crate::model::PartyKind;
use crate::resolve::{self, Origin, Record};
use crate::world::World;

pub use super::policy::{
    A_ACCESS_LIST, A_APP, A_END_EVENT, A_INSTANCE, A_ORG, A_ORGNO, A_PACKAGE, A_PARTYID, A_PARTYTYPE,
    A_RESOURCE, A_RESOURCE_INSTANCE, A_ROLECODE, A_SSN, A_SYSTEMUSER, A_TASK, A_USERID,
};

const UUID_IDS: &[&str] = &[
    "urn:altinn:party:uuid",
    "urn:altinn:person:uuid",
    "urn:altinn:organization:uuid",
    A_SYSTEMUSER,
];

fn cat<'a>(ind: &'a Individual, name: &str) -> Option<&'a Category> {
    ind.iter().find(|c| c.category == name)
}

fn cat_mut<'a>(ind: &'a mut Individual, name: &str) -> &'a mut Category {
    let pos = match ind.iter().position(|c| c.category == name) {
        Some(p) => p,
        None => {
            ind.push(Category::new(name));
            ind.len() - 1
        }
    };
    &mut ind[pos]
}

fn add_missing(c: &mut Category, id: &str, v: &str) {
    if c.values(id).next().is_none() {
        c.add(id, None, false, vec![AttrValue::string(v)]);
    }
}

/// A party named by a legacy identifier attribute.
fn party_by(w: &World, id: &str, v: &str, api: Api) -> Option<NodeId> {
    let g = &w.graph;
    match id {
        A_PARTYID => g.party_by_ident(IdentKind::PartyId, v),
        A_USERID => g.party_by_ident(IdentKind::UserId, v),
        A_ORGNO | "urn:altinn:organizationnumber" => g.party_by_ident(IdentKind::OrgNo, v),
        A_SSN if api == Api::External => g.party_by_ident(IdentKind::Ssn, v),
        // A system user without a `uuid` is named by its id; a uuid matches in any case,
        // so an id that is a uuid does too.
        A_SYSTEMUSER => g.party_by_ident(IdentKind::Uuid, v).or_else(|| {
            [v.to_string(), v.to_ascii_lowercase(), v.to_ascii_uppercase()]
                .iter()
                .find_map(|id| g.party_node(id))
                .filter(|n| g.party(*n).is_some_and(|p| p.kind == PartyKind::SystemUser))
        }),
        _ if UUID_IDS.contains(&id) => g.party_by_ident(IdentKind::Uuid, v),
        _ => None,
    }
}

fn subject_of(w: &World, ind: &Individual, api: Api) -> Option<NodeId> {
    let c = cat(ind, CAT_SUBJECT)?;
    let ids = [
        A_USERID,
        A_SYSTEMUSER,
        "urn:altinn:person:uuid",
        "urn:altinn:party:uuid",
        "urn:altinn:organization:uuid",
        A_PARTYID,
        A_ORGNO,
        "urn:altinn:organizationnumber",
        A_SSN,
    ];
    ids.iter()
        .find_map(|id| c.values(id).find_map(|v| party_by(w, id, v.v.trim(), api)))
}

/// The resource id, the resource party and the instance, after normalising the
/// resource category in place (instance → party, task, app; app ↔ org+app).
pub(crate) fn normalise_resource(
    w: &World,
    ind: &mut Individual,
) -> (Option<String>, Option<NodeId>, Option<String>) {
    let res_cat = cat_mut(ind, CAT_RESOURCE);
    let mut party = None;
    let mut resource: Option<String> = None;
    let res_iid = res_cat
        .values(A_RESOURCE_INSTANCE)
        .next()
        .map(|v| v.v.trim().to_string());
    let iid = res_cat
        .values(A_INSTANCE)
        .next()
        .map(|v| v.v.trim().to_string())
        .or_else(|| res_iid.clone().filter(|v| v.contains('/')));
    // A named instance counts for the instance-grant fallback whether or not an
    // `instance` event registered it; a registered one also gives resource and party.
    let mut instance = iid.clone();
    if let Some(iid) = iid
        && let Some(inst) = w.pdp.instances.get(&iid)
    {
        resource = Some(inst.resource.clone());
        party = w.graph.party_node(&inst.party);
        if let Some(t) = &inst.task {
            add_missing(res_cat, A_TASK, t);
        }
        if let Some(e) = &inst.end_event {
            add_missing(res_cat, A_END_EVENT, e);
        }
        if let Some(pid) = party.and_then(|n| w.graph.party(n)).and_then(|p| p.party_id) {
            add_missing(res_cat, A_PARTYID, &pid.to_string());
        }
    }
    if resource.is_none() {
        resource = res_cat.values(A_RESOURCE).next().map(|v| v.v.trim().to_string());
    }
    if resource.is_none()
        && let (Some(o), Some(a)) = (
            res_cat.values(A_ORG).next().map(|v| v.v.trim().to_string()),
            res_cat.values(A_APP).next().map(|v| v.v.trim().to_string()),
        )
    {
        resource = Some(format!("app_{o}_{a}"));
    }
    if let Some(r) = &resource {
        if let Some(rest) = r.strip_prefix("app_")
            && let Some((o, a)) = rest.split_once('_')
        {
            add_missing(res_cat, A_ORG, o);
            add_missing(res_cat, A_APP, a);
        }
        add_missing(res_cat, A_RESOURCE, r);
    }
    if party.is_none() {
        let ids = [
            A_PARTYID,
            "urn:altinn:party:uuid",
            A_ORGNO,
            "urn:altinn:organizationnumber",
            A_SSN,
        ];
        party = ids.iter().find_map(|id| {
            res_cat
                .values(id)
                .find_map(|v| party_by(w, id, v.v.trim(), Api::External))
        });
    }
    if instance.is_none()
        && let Some(guid) = res_iid
        && let Some(pid) = party.and_then(|n| w.graph.party(n)).and_then(|p| p.party_id)
    {
        instance = Some(format!("{pid}/{guid}"));
    }
    (resource, party, instance)
}

/// The attributes of an individual request marked IncludeInResult.
pub fn echoed(ind: &Individual) -> Vec<Category> {
    ind.iter()
        .filter_map(|c| {
            let attrs: Vec<_> = c.attrs.iter().filter(|a| a.include).cloned().collect();
            (!attrs.is_empty()).then(|| Category {
                category: c.category.clone(),
                xml_id: None,
                attrs,
            })
        })
        .collect()
}

/// Adds the subject's roles and packages for the party, for exactly the attribute ids
/// the policy reads.
pub(crate) fn add_rights(w: &World, policy: &super::CompiledPolicy, recs: &[Record], subj: &mut Category) {
    let c = w.catalog;
    let k = &c.known;
    let mut held = crate::catalog::RoleSet::EMPTY;
    let mut packages = crate::catalog::PackageSet::EMPTY;
    for r in recs {
        packages.union_with(&r.packages);
        // A client delegation forwards packages, never the client's role itself.
        if matches!(r.origin, Origin::Delegation { .. }) {
            continue;
        }
        if [k.rettighetshaver, k.appstyrt_rettighetshaver, k.agent].contains(&r.role) {
            continue;
        }
        if w.a2_retired && c.is_altinn2_role(r.role) {
            continue;
        }
        held.insert(r.role);
    }
    let mut last: Option<(&str, &str)> = None;
    for (role, id, v) in policy.role_values() {
        if held.contains(*role) && last != Some((id, v)) {
            subj.add(id, None, false, vec![AttrValue::string(v.clone())]);
            last = Some((id, v));
        }
    }
    if policy.reads_subject(A_PACKAGE) {
        // Only the packages the policy can match (when it reads packages through string
        // matches alone, none of them MustBePresent): a manager holding a hundred
        // packages adds the few named.
        if let Some(f) = policy.package_filter() {
            packages = packages.intersection(f);
        }
        let vals: Vec<AttrValue> = packages
            .iter()
            .map(|p| AttrValue::string(c.package(p).code.clone()))
            .collect();
        if !vals.is_empty() {
            subj.add(A_PACKAGE, None, false, vals);
        }
    }
}

/// The organisation a subject acts as (itself, or a system user's owner).
fn subject_org(w: &World, x: NodeId) -> Option<NodeId> {
    let p = w.graph.party(x)?;
    match p.kind {
        PartyKind::Organisation => Some(x),
        PartyKind::SystemUser => p.owner().and_then(|o| w.graph.party_node(o)),
        PartyKind::Person => None,
    }
}

/// Whether organisation `org` is on one of the resource's lists for every action.
/// Actions are compared in lower case, as everywhere else (ARCHITECTURE.md): a list
/// admitting `ScopeAccess` admits the rule action `scopeaccess`.
pub(crate) fn on_list(w: &World, resource: &str, org: NodeId, actions: &[String]) -> bool {
    let Some(cfg) = w.pdp.resource_lists.get(resource) else {
        return true;
    };
    let owner = w
        .graph
        .resource_node(resource)
        .and_then(|n| w.graph.resource(n))
        .and_then(|r| r.owner.clone())
        .or_else(|| super::app_owner(resource).map(str::to_string))
        .unwrap_or_default();
    let org_id = w.graph.ext_id(org);
    let admitted = |members: &Vec<super::state::ListMember>| {
        members.iter().any(|m| {
            m.org == org_id
                && m.actions
                    .as_ref()
                    .is_none_or(|a| actions.iter().all(|x| admits(a, x)))
        })
    };
    cfg.lists.iter().any(|l| {
        // A list is named by its id among the resource owner's lists. A resource without
        // an owner names a list by its id whoever owns it; and `{owner}:{id}` (the form
        // the decision point's `urn:altinn:access-list` values take) names one list.
        if let Some(members) = w.pdp.access_lists.get(&(owner.clone(), l.clone())) {
            return admitted(members);
        }
        if let Some((lo, lid)) = l.split_once(':')
            && let Some(members) = w.pdp.access_lists.get(&(lo.to_string(), lid.to_string()))
        {
            return admitted(members);
        }
        owner.is_empty()
            && w.pdp.owners_of_list(l).any(|o| {
                w.pdp
                    .access_lists
                    .get(&(o.clone(), l.clone()))
                    .is_some_and(admitted)
            })
    })
}

/// Whether a membership's action filter names `action`, in any case.
fn admits<'a>(filter: impl IntoIterator<Item = &'a String>, action: &str) -> bool {
    let action = action.trim().to_lowercase();
    filter.into_iter().any(|f| f.trim().to_lowercase() == action)
}

pub(crate) fn now_of(w: &World) -> DateTime<FixedOffset> {
    w.now.unwrap_or_else(|| {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        DateTime::<Utc>::from_timestamp(d.as_secs() as i64, d.subsec_nanos())
            .unwrap_or_default()
            .fixed_offset()
    })
}

/// Decides one individual request against the world.
pub fn decide_one(w: &World, original: &Individual, api: Api) -> ResultItem {
    if let Err(e) = super::request::check_altinn(original, api) {
        return ResultItem::error(e.status(), e.message());
    }
    decide_owned(w, original.clone(), api)
}

/// Decides one individual request, enriching it in place.
fn decide_owned(w: &World, mut ind: Individual, api: Api) -> ResultItem {
    let echo = echoed(&ind);
    let (resource, party, instance) = normalise_resource(w, &mut ind);
    let subject = subject_of(w, &ind, api);
    let actions: Vec<String> = cat(&ind, CAT_ACTION)
        .map(|c| c.values(ACTION_ID).map(|v| v.v.clone()).collect())
        .unwrap_or_default();
    let policy = resource.as_ref().and_then(|r| w.pdp.policies.get(r)).cloned();
    // Altinn finds no policy: Indeterminate, not NotApplicable (domain.md §8 item 7).
    if policy.is_none()
        && resource
            .as_ref()
            .and_then(|r| w.graph.resource_node(r))
            .and_then(|n| w.graph.resource(n))
            .is_none_or(|r| r.rules.is_empty())
    {
        let mut r = ResultItem::error(
            super::response::STATUS_PROCESSING,
            format!(
                "no policy for resource `{}`",
                resource.as_deref().unwrap_or_default()
            ),
        );
        r.attributes = echo;
        return r;
    }
    let mut recs: Option<Vec<Record>> = None;
    if let (Some(x), Some(f)) = (subject, party) {
        recs = Some(resolve::records(w, x, Some(f)));
    }
    if let Some(p) = &policy {
        let subj = cat_mut(&mut ind, CAT_SUBJECT);
        if let Some(r) = &recs {
            add_rights(w, p, r, subj);
        }
        if party.is_none()
            && resource.is_some()
            && let Some(x) = subject
        {
            if p.reads_subject(A_PARTYTYPE) {
                let t = match w.graph.party(x).map(|p| p.kind) {
                    Some(PartyKind::Person) => Some("person"),
                    Some(PartyKind::Organisation) => Some("organization"),
                    _ => None,
                };
                if let Some(t) = t {
                    subj.add(A_PARTYTYPE, None, false, vec![AttrValue::new(DT_STRING, t)]);
                }
            }
            if p.reads_subject(A_ACCESS_LIST)
                && let Some(org) = subject_org(w, x)
            {
                let id = w.graph.ext_id(org);
                let mut vals: Vec<String> = w
                    .pdp
                    .lists_of_member(id)
                    .map(|(o, l)| format!("{o}:{l}"))
                    .collect();
                vals.sort();
                subj.add(
                    A_ACCESS_LIST,
                    None,
                    false,
                    vals.into_iter().map(AttrValue::string).collect(),
                );
            }
        }
    }
    // The decision order (crate::decide): the policy (an XACML policy evaluated over
    // the whole request context, or a `rules` list over the subject's records), the
    // grants on NotApplicable, then the access lists.
    let res_node = resource.as_ref().and_then(|r| w.graph.resource_node(r));
    // A consent resource is decided by consents alone (§8.10, §9.5).
    if let Some(rn) = res_node
        && let Some(d) = decide::consent_decision(w, subject, party, rn, &actions)
    {
        let mut r = ResultItem::new(d);
        r.attributes = echo;
        return r;
    }
    let policy_answer = |form: decide::Form<'_>| match form {
        decide::Form::Xacml(p) => {
            let mut r = eval::evaluate(
                p,
                &Ctx {
                    cats: &ind,
                    now: now_of(w),
                    mode: TargetMode::Altinn,
                    repo: &[],
                },
            );
            r.policy_ids.clear();
            r
        }
        decide::Form::Rules(res) => {
            let (roles, packages) = recs.as_deref().map(decide::held).unwrap_or_default();
            ResultItem::new(decide::rules_decision(w, res, &actions, &roles, &packages))
        }
        decide::Form::Missing => ResultItem::new(Decision::NotApplicable),
    };
    let form = match &resource {
        Some(r) => decide::form(w, r),
        None => decide::Form::Missing,
    };
    let grants = || {
        !actions.is_empty()
            && match (&recs, res_node) {
                (Some(recs), Some(rn)) => actions
                    .iter()
                    .all(|a| resolve::grants_permit(w, recs, rn, a, instance.as_deref())),
                _ => false,
            }
    };
    // The access lists judge the party, or for a request without one the subject's
    // organisation.
    let lists = || {
        let org = match party {
            Some(f) => Some(f),
            None => subject.and_then(|x| subject_org(w, x)),
        };
        resource
            .as_deref()
            .is_none_or(|r| decide::lists_allow(w, r, org, &actions))
    };
    let mut result = decide::order(policy_answer(form), grants, lists);
    result.attributes = echo;
    result
}

/// Decides a request (every individual request of a multi-request, in order).
pub fn decide(w: &World, req: &Request, api: Api) -> Response {
    let list = match req.individual() {
        Ok(list) => list,
        Err(e) => return e.to_response(),
    };
    // One malformed individual request makes the whole answer one Indeterminate.
    if let Some(e) = list
        .iter()
        .find_map(|ind| super::request::check_altinn(ind, api).err())
    {
        return e.to_response();
    }
    Response {
        results: list.into_iter().map(|ind| decide_owned(w, ind, api)).collect(),
    }
}
