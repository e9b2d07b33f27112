//! System users and requests (domain.md §7): the system register, vendor requests for
//! standard and agent system users, change requests, the clients of agent system users,
//! and request access ("be om tilgang").
//!
//! The state ([`state`], on the world layer of ARCHITECTURE.md: it imports no
//! `mutate`) lives in [`World::sys`]; every change to it goes through the transaction's
//! undo log ([`SysUndo`]), so a refused event changes nothing and `simulate` can roll
//! back. What a system user may do is never stored here: a standard system user acts
//! for its owner through an ordinary rightholder assignment owner → system user, and an
//! agent system user through ordinary client delegations, so the resolver and the
//! cascades of §6 see them like any other grant.
//!
//! A request's time-out is not stored either: a pending system-user request counts as
//! timed out once the engine clock ([`World::now`]) is [`REQUEST_LIFETIME_DAYS`] or more
//! past its creation, so moving the clock is the only thing that makes it time out.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;

use crate::catalog::{Catalog, PackageSet};
use crate::event::{
    AccessRequestEvent, ChangeRequestEvent, ClientEvent, Event, GrantEvent, RequestActionEvent, ResourceRef,
    RightsSpec, SystemEvent, SystemUserRequestEvent,
};
use crate::graph::{Actions, Assignment, Delegation, Edge, EdgeKey, NodeId, Party};
use crate::model::{EntityType, Error, ErrorCode, PackageId, PartyKind, Result, RoleId, SystemUserKind};
use crate::mutate::{self, Tx};
use crate::resolve::{self, DelegationVerdict};
use crate::world::World;

/// A pending system-user or change request times out this many days after it was made.
pub const REQUEST_LIFETIME_DAYS: i64 = 10;

pub mod state;

use state::put;
pub(crate) use state::undo;
pub use state::{AccessTarget, Request, RequestBody, RightSet, State, Status, SysState, SysUndo, System};

fn set_system(tx: &mut Tx<'_>, s: System) {
    let id = s.id.clone();
    let old = put(&mut tx.w.sys.systems, id.clone(), Some(s));
    tx.push_sys_undo(SysUndo::System(id, old));
}

fn set_request(tx: &mut Tx<'_>, r: Request) {
    let id = r.id.clone();
    let old = tx.w.sys.put_request(id.clone(), Some(r));
    tx.push_sys_undo(SysUndo::Request(id, old));
}

fn set_agent_packages(tx: &mut Tx<'_>, su: &str, p: PackageSet) {
    let old = put(&mut tx.w.sys.agent_packages, su.to_string(), Some(p));
    tx.push_sys_undo(SysUndo::AgentPackages(su.to_string(), old));
}

// ----------------------------------------------------------------------------------
// Small lookups

fn party(w: &World, id: &str) -> Result<NodeId> {
    w.graph.party_node(id).ok_or_else(|| Error::unknown_party(id))
}

fn package(c: &Catalog, name: &str) -> Result<PackageId> {
    c.package_id(name).ok_or_else(|| c.unknown_package(name))
}

fn non_empty(field: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(Error::invalid(format!("`{field}` must not be empty")));
    }
    Ok(())
}

fn actions(field: &str, v: &[String]) -> Result<Actions> {
    if v.is_empty() {
        return Err(Error::invalid(format!("`{field}` must name at least one action")));
    }
    let mut out = Actions::new();
    for a in v {
        non_empty(field, a)?;
        out.insert(a.trim().to_lowercase());
    }
    Ok(out)
}

fn kind_of(w: &World, n: NodeId) -> Option<PartyKind> {
    w.graph.party(n).map(|p| p.kind)
}

fn codes(c: &Catalog, s: &PackageSet) -> String {
    s.iter()
        .map(|p| format!("`{}`", c.package(p).code))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Does `x` act for `f` at all (is `f` among the authorized parties of `x`)?
fn acts_for(w: &World, x: NodeId, f: NodeId) -> bool {
    x == f || !resolve::records(w, x, Some(f)).is_empty()
}

fn holds(w: &World, x: NodeId, f: NodeId, p: PackageId) -> bool {
    resolve::has_package(w, x, f, p)
}

fn get_request(w: &World, id: &str) -> Result<Request> {
    w.sys
        .requests
        .get(id)
        .cloned()
        .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("no request `{id}`")))
}

fn get_system<'w>(w: &'w World, id: &str) -> Result<&'w System> {
    w.sys
        .systems
        .get(id)
        .ok_or_else(|| Error::new(ErrorCode::NotFound, format!("no system `{id}`")))
}

/// Whether a request has passed its lifetime by the engine clock.
fn timed_out(w: &World, r: &Request) -> bool {
    if matches!(r.body, RequestBody::Access { .. }) {
        return false;
    }
    match (w.now, r.created) {
        (Some(now), Some(made)) => now >= made + Duration::days(REQUEST_LIFETIME_DAYS),
        _ => false,
    }
}

/// The status of a request, with the time-out applied.
pub fn status(w: &World, r: &Request) -> Status {
    match r.state {
        State::Pending if timed_out(w, r) => Status::TimedOut,
        State::Pending => Status::Pending,
        State::Draft => Status::Draft,
        State::Accepted => Status::Accepted,
        State::Approved => Status::Approved,
        State::Rejected => Status::Rejected,
        State::Withdrawn => Status::Withdrawn,
    }
}

/// The status of request `id` (`not_found` when there is none).
pub fn request_status(w: &World, id: &str) -> Result<Status> {
    get_request(w, id).map(|r| status(w, &r))
}

fn require_pending(w: &World, r: &Request, what: &str) -> Result<()> {
    let s = status(w, r);
    if s != Status::Pending {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("request `{}` is {}: it cannot be {what}", r.id, s.as_str()),
        ));
    }
    Ok(())
}

/// The actions of a resource's policy (what "the whole resource" means).
fn policy_actions(w: &World, res: NodeId) -> Actions {
    w.graph
        .resource(res)
        .map(|r| r.rules.iter().flat_map(|x| x.actions.iter().cloned()).collect())
        .unwrap_or_default()
}

/// Resolves named rights: packages by code or URN, resources with their actions (the
/// actions named, else those the system registered, else those of the policy).
fn rights_of(
    w: &World,
    packages: Option<&[String]>,
    resources: Option<&[ResourceRef]>,
    system: Option<&System>,
) -> Result<RightSet> {
    let c = w.catalog;
    for r in resources.unwrap_or(&[]) {
        non_empty("resource", r.id())?;
        if let Some(a) = r.actions() {
            actions("actions", a)?;
        }
    }
    let mut out = RightSet::default();
    for p in packages.unwrap_or(&[]) {
        out.packages.insert(package(c, p)?);
    }
    // Every reference is looked up before what needs a look-up is judged (the order of
    // faults: `unknown_*` before the structure).
    for r in resources.unwrap_or(&[]) {
        let id = r.id().trim();
        if w.graph.resource_node(id).is_none() {
            return Err(Error::unknown_resource(id));
        }
    }
    for r in resources.unwrap_or(&[]) {
        let id = r.id().trim();
        let n = w
            .graph
            .resource_node(id)
            .ok_or_else(|| Error::unknown_resource(id))?;
        let acts = match r.actions() {
            Some(a) => actions("actions", a)?,
            None => match system.and_then(|s| s.resources.get(id)).cloned().flatten() {
                Some(a) => a,
                None => policy_actions(w, n),
            },
        };
        if acts.is_empty() {
            return Err(Error::invalid(format!(
                "resource `{id}` has no actions in its policy: name the `actions`"
            )));
        }
        out.resources.entry(id.to_string()).or_default().extend(acts);
    }
    Ok(out)
}

/// The shape of named resources (a non-empty id, and a non-empty list of non-empty
/// actions when actions are named): checked before any look-up, as the order of faults
/// puts the event's own shape first.
fn resources_shape(resources: Option<&[ResourceRef]>) -> Result<()> {
    for r in resources.unwrap_or(&[]) {
        non_empty("resource", r.id())?;
        if let Some(a) = r.actions() {
            actions("actions", a)?;
        }
    }
    Ok(())
}

/// Refuses rights the system did not register.
fn within_system(c: &Catalog, s: &System, r: &RightSet) -> Result<()> {
    let mut extra = r.packages;
    for p in s.packages.iter() {
        extra.remove(p);
    }
    if !extra.is_empty() {
        return Err(Error::invalid(format!(
            "system `{}` did not register package(s) {}",
            s.id,
            codes(c, &extra)
        )));
    }
    for (res, acts) in &r.resources {
        let ok = match s.resources.get(res) {
            None => false,
            Some(None) => true,
            Some(Some(allowed)) => acts.is_subset(allowed),
        };
        if !ok {
            return Err(Error::invalid(format!(
                "system `{}` did not register resource `{res}` with those actions",
                s.id
            )));
        }
    }
    Ok(())
}

fn check_redirect(s: &System, url: Option<&String>) -> Result<()> {
    if let Some(u) = url
        && !s.redirect_urls.contains(u.trim())
    {
        return Err(Error::invalid(format!(
            "redirect url `{u}` is not registered by system `{}`",
            s.id
        )));
    }
    Ok(())
}

/// Packages that cannot be given from an organisation to a system user.
fn not_assignable_to_system_user(c: &Catalog, r: &RightSet) -> Result<()> {
    let representative = c.package_id("virksomhetens-representant-skjemaoppgaver");
    for p in r.packages.iter() {
        let pkg = c.package(p);
        if !pkg.is_assignable || pkg.entity_type != EntityType::Organisation || Some(p) == representative {
            return Err(Error::new(
                ErrorCode::NotAssignable,
                format!(
                    "package `{}` cannot be given by an organisation to a system user",
                    pkg.code
                ),
            ));
        }
    }
    Ok(())
}

/// Resources a system user can never be given (§9.1, §10.1): a consent resource is
/// consented to and a Maskinporten scope resource passes on only by `delegate_scope`, so
/// asking for one, or approving a request for one, is `not_assignable` as `grant` is.
/// A structure fault: reported before the approver's right.
fn not_grantable_resources(w: &World, r: &RightSet) -> Result<()> {
    for res in r.resources.keys() {
        if let Some(n) = w.graph.resource_node(res) {
            crate::consent::refuse_grant_of_consent_resource(w, n)?;
            crate::supplier::refuse_scope_grant(w, n)?;
        }
    }
    Ok(())
}

fn not_delegable_packages(c: &Catalog, p: &PackageSet) -> Result<()> {
    let bad: PackageSet =
        p.iter()
            .filter(|x| !c.package(*x).is_delegable)
            .fold(PackageSet::EMPTY, |mut s, x| {
                s.insert(x);
                s
            });
    if !bad.is_empty() {
        return Err(Error::new(
            ErrorCode::NotDelegable,
            format!(
                "an agent system user holds only delegable packages; not delegable: {}",
                codes(c, &bad)
            ),
        ));
    }
    Ok(())
}

// ----------------------------------------------------------------------------------
// The events

/// Applies one system-user or request event inside the transaction.
pub(crate) fn apply(tx: &mut Tx<'_>, ev: &Event) -> Result<()> {
    match ev {
        Event::System(e) => register_system(tx, e),
        Event::SystemUserRequest(e) => system_user_request(tx, e),
        Event::ChangeRequest(e) => change_request(tx, e),
        Event::AccessRequest(e) => access_request(tx, e),
        Event::Approve(e) => answer(tx, e, true),
        Event::Reject(e) => answer(tx, e, false),
        Event::Confirm(e) => confirm_or_withdraw(tx, e, true),
        Event::Withdraw(e) => confirm_or_withdraw(tx, e, false),
        Event::Escalate(e) => escalate(tx, e),
        Event::AddClient(e) => add_client(tx, e),
        Event::RemoveClient(e) => remove_client(tx, e),
        other => Err(Error::invalid(format!(
            "`{}` is not a system-user or request event",
            other.name()
        ))),
    }
}

fn register_system(tx: &mut Tx<'_>, e: &SystemEvent) -> Result<()> {
    non_empty("id", &e.id)?;
    non_empty("vendor", &e.vendor)?;
    for u in e.redirect_urls.as_deref().unwrap_or(&[]) {
        non_empty("redirect_urls", u)?;
    }
    // Shape, then the references, then what needs a look-up (the order of faults).
    let mut resources = BTreeMap::new();
    for r in e.resources.as_deref().unwrap_or(&[]) {
        non_empty("resources", r.id())?;
        let acts = r.actions().map(|a| actions("actions", a)).transpose()?;
        resources.insert(r.id().trim().to_string(), acts);
    }
    let w = &*tx.w;
    let vendor = party(w, &e.vendor)?;
    let mut packages = PackageSet::EMPTY;
    for p in e.packages.as_deref().unwrap_or(&[]) {
        packages.insert(package(w.catalog, p)?);
    }
    for r in resources.keys() {
        if w.graph.resource_node(r).is_none() {
            return Err(Error::unknown_resource(r));
        }
    }
    if kind_of(w, vendor) != Some(PartyKind::Organisation) {
        return Err(Error::invalid(format!(
            "vendor `{}` of a system must be an organisation",
            e.vendor
        )));
    }
    if let Some(old) = w.sys.systems.get(&e.id)
        && old.vendor != e.vendor
    {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "system `{}` is registered by vendor `{}`, not `{}`",
                e.id, old.vendor, e.vendor
            ),
        ));
    }
    let s = System {
        id: e.id.clone(),
        vendor: e.vendor.clone(),
        name: e.name.clone(),
        packages,
        resources,
        redirect_urls: e
            .redirect_urls
            .iter()
            .flatten()
            .map(|u| u.trim().to_string())
            .collect(),
    };
    if w.sys.systems.get(&e.id) != Some(&s) {
        set_system(tx, s);
    }
    Ok(())
}

/// Refuses a request id that is taken.
fn fresh_request_id(w: &World, id: &str) -> Result<()> {
    if w.sys.requests.contains_key(id) {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("request id `{id}` is already in use"),
        ));
    }
    Ok(())
}

fn system_user_request(tx: &mut Tx<'_>, e: &SystemUserRequestEvent) -> Result<()> {
    non_empty("id", &e.id)?;
    non_empty("system_user", &e.system_user)?;
    let no_packages = e.packages.as_deref().unwrap_or(&[]).is_empty();
    let no_resources = e.resources.as_deref().unwrap_or(&[]).is_empty();
    if e.kind == SystemUserKind::Agent && !no_resources {
        return Err(Error::invalid(
            "an agent system user holds packages only: drop `resources`",
        ));
    }
    if no_packages && no_resources {
        return Err(Error::invalid(
            "a system-user request must ask for at least one package or resource",
        ));
    }
    resources_shape(e.resources.as_deref())?;
    let w = &*tx.w;
    let c = w.catalog;
    // References (an unknown system ranks with them), then what needs a look-up.
    let system = get_system(w, &e.system)?;
    let p = party(w, &e.party)?;
    let rights = rights_of(w, e.packages.as_deref(), e.resources.as_deref(), Some(system))?;
    check_redirect(system, e.redirect_url.as_ref())?;
    if kind_of(w, p) != Some(PartyKind::Organisation) {
        return Err(Error::invalid(format!(
            "a system user is owned by an organisation, and `{}` is not one",
            e.party
        )));
    }
    within_system(c, system, &rights)?;
    match e.kind {
        SystemUserKind::Standard => {
            not_assignable_to_system_user(c, &rights)?;
            not_grantable_resources(w, &rights)?;
        }
        SystemUserKind::Agent => not_delegable_packages(c, &rights.packages)?,
    }
    // State.
    fresh_request_id(w, &e.id)?;
    if w.graph.party_node(&e.system_user).is_some() {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("a party `{}` exists already", e.system_user),
        ));
    }
    // An empty reference is a missing one (missing equals missing, §7).
    let ext_ref = e.external_ref.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let similar = [
        RequestBody::system_user_key(&e.system, &e.party, ext_ref),
        RequestBody::named_user_key(&e.system_user),
    ];
    for r in w.sys.requests_with(&similar) {
        let RequestBody::SystemUser {
            system,
            party,
            system_user,
            external_ref,
            ..
        } = &r.body
        else {
            continue;
        };
        let st = status(w, r);
        let same_key = *system == e.system
            && *party == e.party
            && external_ref.as_deref().filter(|r| !r.is_empty()) == ext_ref;
        if st == Status::Pending && same_key {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "request `{}` for system `{}` and party `{}` is still pending",
                    r.id, e.system, e.party
                ),
            ));
        }
        if st == Status::Accepted && same_key && w.graph.party_node(system_user).is_some() {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "party `{}` already has system user `{system_user}` for system `{}`",
                    e.party, e.system
                ),
            ));
        }
        if st == Status::Pending && *system_user == e.system_user {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!(
                    "pending request `{}` already names system user `{}`",
                    r.id, e.system_user
                ),
            ));
        }
    }
    let req = Request {
        id: e.id.clone(),
        body: RequestBody::SystemUser {
            system: e.system.clone(),
            party: e.party.clone(),
            kind: e.kind,
            system_user: e.system_user.clone(),
            rights,
            redirect_url: e.redirect_url.as_ref().map(|u| u.trim().to_string()),
            external_ref: ext_ref.map(str::to_string),
        },
        state: State::Pending,
        created: w.now,
        escalated_by: None,
        answered_by: None,
    };
    set_request(tx, req);
    Ok(())
}

/// A standard system user and its owner.
fn standard_system_user(w: &World, id: &str) -> Result<(NodeId, NodeId, Option<String>)> {
    let su = party(w, id)?;
    let p = w.graph.party(su).ok_or_else(|| Error::unknown_party(id))?;
    if p.kind != PartyKind::SystemUser || p.system_user_kind() != Some(SystemUserKind::Standard) {
        return Err(Error::invalid(format!("`{id}` is not a standard system user")));
    }
    let owner = p
        .owner()
        .ok_or_else(|| Error::invalid(format!("system user `{id}` has no owner")))?;
    Ok((su, party(w, owner)?, p.system().map(str::to_string)))
}

fn change_request(tx: &mut Tx<'_>, e: &ChangeRequestEvent) -> Result<()> {
    non_empty("id", &e.id)?;
    non_empty("system_user", &e.system_user)?;
    let empty = RightsSpec::default();
    let (add, remove) = (
        e.add.as_ref().unwrap_or(&empty),
        e.remove.as_ref().unwrap_or(&empty),
    );
    let named = |r: &RightsSpec| {
        !r.packages.as_deref().unwrap_or(&[]).is_empty() || !r.resources.as_deref().unwrap_or(&[]).is_empty()
    };
    if !named(add) && !named(remove) {
        return Err(Error::invalid(
            "a change request must `add` or `remove` at least one package or resource",
        ));
    }
    resources_shape(add.resources.as_deref())?;
    resources_shape(remove.resources.as_deref())?;
    let w = &*tx.w;
    let c = w.catalog;
    // References, then what needs a look-up (the order of faults).
    let su = party(w, &e.system_user)?;
    let system_id = w.graph.party(su).and_then(|p| p.system()).map(str::to_string);
    let system = system_id.as_deref().map(|s| get_system(w, s)).transpose()?;
    let add = rights_of(w, add.packages.as_deref(), add.resources.as_deref(), system)?;
    let remove = rights_of(w, remove.packages.as_deref(), remove.resources.as_deref(), system)?;
    standard_system_user(w, &e.system_user)?;
    if let Some(s) = system {
        check_redirect(s, e.redirect_url.as_ref())?;
    }
    if let Some(s) = system {
        within_system(c, s, &add)?;
    }
    not_assignable_to_system_user(c, &add)?;
    not_grantable_resources(w, &add)?;
    // State.
    fresh_request_id(w, &e.id)?;
    for r in w.sys.requests_with(&[RequestBody::change_key(&e.system_user)]) {
        if let RequestBody::Change {
            system_user,
            add: a,
            remove: rm,
            ..
        } = &r.body
            && *system_user == e.system_user
            && *a == add
            && *rm == remove
            && status(w, r) == Status::Pending
        {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("the same change request `{}` is still pending", r.id),
            ));
        }
    }
    let req = Request {
        id: e.id.clone(),
        body: RequestBody::Change {
            system_user: e.system_user.clone(),
            add,
            remove,
            redirect_url: e.redirect_url.as_ref().map(|u| u.trim().to_string()),
        },
        state: State::Pending,
        created: w.now,
        escalated_by: None,
        answered_by: None,
    };
    set_request(tx, req);
    Ok(())
}

fn access_request(tx: &mut Tx<'_>, e: &AccessRequestEvent) -> Result<()> {
    non_empty("id", &e.id)?;
    match (&e.package, &e.resource, &e.action) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => {}
        _ => {
            return Err(Error::invalid(
                "an access request names a `package`, or a `resource` and an `action`",
            ));
        }
    }
    if let Some(a) = &e.action {
        non_empty("action", a)?;
    }
    if e.from == e.to {
        return Err(Error::invalid(format!(
            "`{}` cannot ask itself for access",
            e.from
        )));
    }
    let w = &*tx.w;
    let c = w.catalog;
    let (from, to) = (party(w, &e.from)?, party(w, &e.to)?);
    let by = e.by.as_deref().map(|b| party(w, b)).transpose()?;
    let target = match (&e.package, &e.resource, &e.action) {
        (Some(p), _, _) => AccessTarget::Package(package(c, p)?),
        (None, Some(r), Some(a)) => {
            if w.graph.resource_node(r).is_none() {
                return Err(Error::unknown_resource(r));
            }
            AccessTarget::Resource {
                resource: r.clone(),
                action: a.trim().to_lowercase(),
            }
        }
        _ => return Err(Error::invalid("an access request names what it asks for")),
    };
    // Structure: what is asked for must be something `to` can give.
    match &target {
        AccessTarget::Package(p) => {
            let pkg = c.package(*p);
            let giver = match kind_of(w, to) {
                Some(PartyKind::Organisation) => Some(EntityType::Organisation),
                Some(PartyKind::Person) => Some(EntityType::Person),
                _ => None,
            };
            if !pkg.is_assignable || giver != Some(pkg.entity_type) {
                return Err(Error::new(
                    ErrorCode::NotAssignable,
                    format!("package `{}` cannot be given by `{}`", pkg.code, e.to),
                ));
            }
        }
        AccessTarget::Resource { resource, .. } => {
            if let Some(n) = w.graph.resource_node(resource) {
                crate::consent::refuse_grant_of_consent_resource(w, n)?;
                // §10.1: a scope resource is never asked for in an access request.
                crate::supplier::refuse_scope_grant(w, n)?;
            }
            let delegable = w
                .graph
                .resource_node(resource)
                .and_then(|n| w.graph.resource(n))
                .is_some_and(|r| r.delegable);
            if !delegable {
                return Err(Error::new(
                    ErrorCode::NotDelegable,
                    format!("resource `{resource}` is not delegable"),
                ));
            }
        }
    }
    // The actor, and the connection the request needs.
    let draft = e.draft.unwrap_or(false);
    if let Some(b) = by
        && !draft
        && !acts_for(w, b, from)
    {
        return Err(Error::not_authorized(format!(
            "`{}` does not act for `{}` and cannot ask on its behalf",
            w.graph.ext_id(b),
            e.from
        )));
    }
    // An end user's request needs a connection; a service owner's draft does not (and
    // confirming it does not check again).
    if !draft && !acts_for(w, from, to) {
        return Err(Error::not_authorized(format!(
            "`{}` has no connection to `{}`: `{}` is not among its authorized parties",
            e.from, e.to, e.to
        )));
    }
    // State.
    fresh_request_id(w, &e.id)?;
    for r in w.sys.requests_with(&[RequestBody::access_key(&e.from, &e.to)]) {
        if let RequestBody::Access {
            from: f,
            to: t,
            target: x,
            ..
        } = &r.body
            && *f == e.from
            && *t == e.to
            && *x == target
            && matches!(r.state, State::Draft | State::Pending)
        {
            return Err(Error::new(
                ErrorCode::Conflict,
                format!("request `{}` asks for the same and is still open", r.id),
            ));
        }
    }
    let req = Request {
        id: e.id.clone(),
        body: RequestBody::Access {
            from: e.from.clone(),
            to: e.to.clone(),
            target,
            by: e.by.clone(),
        },
        state: if draft { State::Draft } else { State::Pending },
        created: w.now,
        escalated_by: None,
        answered_by: None,
    };
    set_request(tx, req);
    Ok(())
}

/// The rights of `r` that `by` may not pass on for `party` (§5).
fn not_delegable_by(w: &World, by: NodeId, party: NodeId, r: &RightSet) -> Vec<String> {
    let c = w.catalog;
    let mut out = Vec::new();
    for p in r.packages.iter() {
        if resolve::can_delegate_package(w, by, party, p) != DelegationVerdict::Yes {
            out.push(format!("package `{}`", c.package(p).code));
        }
    }
    for (res, acts) in &r.resources {
        let n = w.graph.resource_node(res);
        for a in acts {
            if !n.is_some_and(|n| crate::decide::can_delegate_resource(w, by, party, n, a)) {
                out.push(format!("`{a}` on resource `{res}`"));
            }
        }
    }
    out
}

fn refuse_all(w: &World, by: NodeId, party: NodeId, missing: &[String]) -> Error {
    Error::not_authorized(format!(
        "`{}` may not delegate {} for `{}`, so nothing is approved",
        w.graph.ext_id(by),
        missing.join(", "),
        w.graph.ext_id(party)
    ))
}

fn answer(tx: &mut Tx<'_>, e: &RequestActionEvent, approve: bool) -> Result<()> {
    non_empty("request", &e.request)?;
    let w = &*tx.w;
    let req = get_request(w, &e.request)?;
    let by = party(w, &e.by)?;
    let mut req = match &req.body {
        RequestBody::SystemUser { .. } => answer_system_user(tx, req, by, approve)?,
        RequestBody::Change { .. } => answer_change(tx, req, by, approve)?,
        RequestBody::Access { .. } => answer_access(tx, req, by, approve)?,
    };
    req.answered_by = Some(e.by.clone());
    set_request(tx, req);
    Ok(())
}

/// May `by` reject a system-user request to `party`: someone who could approve it, or
/// an access manager (a client administrator for an agent request)?
fn may_reject(w: &World, by: NodeId, party: NodeId, kind: SystemUserKind, rights: &RightSet) -> bool {
    let k = w.catalog.known;
    match kind {
        SystemUserKind::Agent => holds(w, by, party, k.klientadministrator),
        SystemUserKind::Standard => {
            holds(w, by, party, k.tilgangsstyrer) || not_delegable_by(w, by, party, rights).is_empty()
        }
    }
}

/// §7: a person of the party approves or rejects a system-user (or change) request; an
/// organisation, a system user (the vendor's machine) or a dead person never does.
/// Checked with the approver, after the request's structure (the order of faults).
fn require_living_person(w: &World, by: NodeId, req: &Request) -> Result<()> {
    let living_person = w
        .graph
        .party(by)
        .is_some_and(|p| p.kind == PartyKind::Person && p.alive);
    if living_person {
        return Ok(());
    }
    Err(Error::not_authorized(format!(
        "`{}` is not a living person: only a person of the party answers request `{}`",
        w.graph.ext_id(by),
        req.id
    )))
}

fn answer_system_user(tx: &mut Tx<'_>, mut req: Request, by: NodeId, approve: bool) -> Result<Request> {
    let w = &*tx.w;
    let c = w.catalog;
    let RequestBody::SystemUser {
        system,
        party: owner_id,
        kind,
        system_user,
        rights,
        ..
    } = req.body.clone()
    else {
        return Err(Error::invalid("not a system-user request"));
    };
    let owner = party(w, &owner_id)?;
    if !approve {
        require_living_person(w, by, &req)?;
        if !may_reject(w, by, owner, kind, &rights) {
            return Err(Error::not_authorized(format!(
                "`{}` may not answer requests for system users of `{owner_id}`",
                w.graph.ext_id(by)
            )));
        }
        require_pending(w, &req, "rejected")?;
        req.state = State::Rejected;
        return Ok(req);
    }
    // Structure, then the approver (all or nothing), then state.
    match kind {
        SystemUserKind::Agent => {
            not_delegable_packages(c, &rights.packages)?;
            require_living_person(w, by, &req)?;
            if !holds(w, by, owner, c.known.klientadministrator) {
                return Err(Error::not_authorized(format!(
                    "`{}` does not hold klientadministrator for `{owner_id}`",
                    w.graph.ext_id(by)
                )));
            }
        }
        SystemUserKind::Standard => {
            not_grantable_resources(w, &rights)?;
            require_living_person(w, by, &req)?;
            let missing = not_delegable_by(w, by, owner, &rights);
            if !missing.is_empty() {
                return Err(refuse_all(w, by, owner, &missing));
            }
        }
    }
    require_pending(w, &req, "approved")?;
    if w.graph.party_node(&system_user).is_some() {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("a party `{system_user}` exists already"),
        ));
    }
    let name = w.sys.systems.get(&system).and_then(|s| s.name.clone());
    let mut p = Party::new(&system_user, PartyKind::SystemUser);
    p.set_system_user_kind(Some(kind));
    p.set_owner(Some(owner_id.clone()));
    p.set_system(Some(system.clone()));
    p.name = name.map(Into::into);
    tx.add_party(p);
    match kind {
        SystemUserKind::Standard => give(tx, &owner_id, &system_user, &rights, true)?,
        SystemUserKind::Agent => set_agent_packages(tx, &system_user, rights.packages),
    }
    req.state = State::Accepted;
    Ok(req)
}

/// Grants (or revokes) `rights` on the rightholder assignment `from → to`, as an
/// administrative import: the approver was checked already.
fn give(tx: &mut Tx<'_>, from: &str, to: &str, rights: &RightSet, grant: bool) -> Result<()> {
    let c = tx.w.catalog;
    let base = GrantEvent {
        from: from.to_string(),
        to: to.to_string(),
        package: None,
        resource: None,
        instance: None,
        actions: None,
        by: None,
        cascade: None,
    };
    let mut evs = Vec::new();
    for p in rights.packages.iter() {
        evs.push(GrantEvent {
            package: Some(c.package(p).code.clone()),
            ..base.clone()
        });
    }
    for (r, acts) in &rights.resources {
        evs.push(GrantEvent {
            resource: Some(r.clone()),
            actions: Some(acts.iter().cloned().collect()),
            ..base.clone()
        });
    }
    for g in evs {
        let ev = if grant { Event::Grant(g) } else { Event::Revoke(g) };
        mutate::apply_in(tx, &ev)?;
    }
    Ok(())
}

/// The rights granted on the rightholder assignment `owner → su`.
fn held_rights(w: &World, owner: NodeId, su: NodeId) -> RightSet {
    let mut out = RightSet::default();
    let Some(a) = w
        .graph
        .find_assignment(owner, su, w.catalog.known.rettighetshaver)
        .and_then(|e| w.graph.assignment(e))
    else {
        return out;
    };
    out.packages = a.packages;
    for (r, acts) in &a.resources {
        out.resources.insert(w.graph.ext_id(*r).to_string(), acts.clone());
    }
    out
}

fn answer_change(tx: &mut Tx<'_>, mut req: Request, by: NodeId, approve: bool) -> Result<Request> {
    let w = &*tx.w;
    let RequestBody::Change {
        system_user,
        add,
        remove,
        ..
    } = req.body.clone()
    else {
        return Err(Error::invalid("not a change request"));
    };
    let (_, owner, _) = standard_system_user(w, &system_user)?;
    let owner_id = w.graph.ext_id(owner).to_string();
    if approve {
        not_grantable_resources(w, &add)?;
    }
    require_living_person(w, by, &req)?;
    let manager = holds(w, by, owner, w.catalog.known.tilgangsstyrer);
    let missing_add = not_delegable_by(w, by, owner, &add);
    let missing_remove = if manager {
        Vec::new()
    } else {
        not_delegable_by(w, by, owner, &remove)
    };
    if !approve {
        let could_approve = missing_add.is_empty() && missing_remove.is_empty();
        if !(manager || could_approve) {
            return Err(Error::not_authorized(format!(
                "`{}` may not answer change requests for system users of `{owner_id}`",
                w.graph.ext_id(by)
            )));
        }
        require_pending(w, &req, "rejected")?;
        req.state = State::Rejected;
        return Ok(req);
    }
    let missing: Vec<String> = missing_add.into_iter().chain(missing_remove).collect();
    if !missing.is_empty() {
        return Err(refuse_all(w, by, owner, &missing));
    }
    require_pending(w, &req, "approved")?;
    // Both lists are read against the rights the system user holds now (a right may
    // stand in both): what `add` names and it lacks is added, what `remove` names and
    // it holds is removed.
    let su = party(w, &system_user)?;
    let held = held_rights(w, owner, su);
    let (to_add, to_remove) = (add.minus(&held), remove.within(&held));
    give(tx, &owner_id, &system_user, &to_add, true)?;
    give(tx, &owner_id, &system_user, &to_remove, false)?;
    req.state = State::Accepted;
    Ok(req)
}

fn answer_access(tx: &mut Tx<'_>, mut req: Request, by: NodeId, approve: bool) -> Result<Request> {
    let w = &*tx.w;
    let c = w.catalog;
    let RequestBody::Access {
        from: from_id,
        to: to_id,
        target,
        by: made_by,
    } = req.body.clone()
    else {
        return Err(Error::invalid("not an access request"));
    };
    let (from, to) = (party(w, &from_id)?, party(w, &to_id)?);
    let by_id = w.graph.ext_id(by).to_string();
    if !approve {
        if !acts_for(w, by, to) {
            return Err(Error::not_authorized(format!(
                "only the asked party `{to_id}` may reject request `{}`",
                req.id
            )));
        }
        require_pending(w, &req, "rejected")?;
        req.state = State::Rejected;
        return Ok(req);
    }
    let own = by == from || made_by.as_deref() == Some(by_id.as_str());
    if own && !holds(w, by, to, c.known.hovedadministrator) {
        return Err(Error::not_authorized(format!(
            "`{by_id}` cannot approve its own request `{}` without hovedadministrator for `{to_id}`",
            req.id
        )));
    }
    let may = match &target {
        AccessTarget::Package(p) => resolve::can_delegate_package(w, by, to, *p) == DelegationVerdict::Yes,
        AccessTarget::Resource { resource, action } => w
            .graph
            .resource_node(resource)
            .is_some_and(|n| crate::decide::can_delegate_resource(w, by, to, n, action)),
    };
    if !may {
        return Err(Error::not_authorized(format!(
            "`{by_id}` may not give what request `{}` asks for on behalf of `{to_id}`",
            req.id
        )));
    }
    require_pending(w, &req, "approved")?;
    let mut g = GrantEvent {
        from: to_id,
        to: from_id,
        package: None,
        resource: None,
        instance: None,
        actions: None,
        by: Some(by_id),
        cascade: None,
    };
    match target {
        AccessTarget::Package(p) => g.package = Some(c.package(p).code.clone()),
        AccessTarget::Resource { resource, action } => {
            g.resource = Some(resource);
            g.actions = Some(vec![action]);
        }
    }
    mutate::apply_in(tx, &Event::Grant(g))?;
    req.state = State::Approved;
    Ok(req)
}

fn confirm_or_withdraw(tx: &mut Tx<'_>, e: &RequestActionEvent, confirm: bool) -> Result<()> {
    non_empty("request", &e.request)?;
    let verb = if confirm { "confirm" } else { "withdraw" };
    let w = &*tx.w;
    let mut req = get_request(w, &e.request)?;
    let by = party(w, &e.by)?;
    let RequestBody::Access { from, .. } = &req.body else {
        return Err(Error::invalid(format!(
            "only access requests can be {verb}ed: `{}` is a system-user request",
            e.request
        )));
    };
    let asker = party(w, from)?;
    if !acts_for(w, by, asker) {
        return Err(Error::not_authorized(format!(
            "only the asker `{from}` may {verb} request `{}`",
            e.request
        )));
    }
    let ok = matches!(
        (confirm, req.state),
        (true, State::Draft) | (false, State::Draft | State::Pending)
    );
    if !ok {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "request `{}` is {}: it cannot be {verb}ed",
                e.request,
                status(w, &req).as_str()
            ),
        ));
    }
    req.state = if confirm { State::Pending } else { State::Withdrawn };
    set_request(tx, req);
    Ok(())
}

fn escalate(tx: &mut Tx<'_>, e: &RequestActionEvent) -> Result<()> {
    non_empty("request", &e.request)?;
    let w = &*tx.w;
    let mut req = get_request(w, &e.request)?;
    let by = party(w, &e.by)?;
    let owner_id = match &req.body {
        RequestBody::SystemUser { party, .. } => party.clone(),
        RequestBody::Change { system_user, .. } => {
            let (_, owner, _) = standard_system_user(w, system_user)?;
            w.graph.ext_id(owner).to_string()
        }
        RequestBody::Access { .. } => {
            return Err(Error::invalid(format!(
                "only system-user requests can be escalated: `{}` is an access request",
                e.request
            )));
        }
    };
    let owner = party(w, &owner_id)?;
    if !acts_for(w, by, owner) {
        return Err(Error::not_authorized(format!(
            "`{}` does not act for `{owner_id}`",
            e.by
        )));
    }
    require_pending(w, &req, "escalated")?;
    if req.escalated_by.is_none() {
        req.escalated_by = Some(e.by.clone());
        set_request(tx, req);
    }
    Ok(())
}

/// The access managers a request is escalated to: the holders of `tilgangsstyrer` for
/// the party (empty when the request is not escalated).
pub fn escalated_to(w: &World, id: &str) -> Result<BTreeSet<NodeId>> {
    let req = get_request(w, id)?;
    if req.escalated_by.is_none() {
        return Ok(BTreeSet::new());
    }
    let owner = match &req.body {
        RequestBody::SystemUser { party, .. } => w.graph.party_node(party),
        RequestBody::Change { system_user, .. } => standard_system_user(w, system_user).ok().map(|x| x.1),
        RequestBody::Access { .. } => None,
    };
    Ok(owner
        .map(|o| {
            resolve::holders(w, o, w.catalog.known.tilgangsstyrer)
                .into_iter()
                .collect()
        })
        .unwrap_or_default())
}

// ----------------------------------------------------------------------------------
// Agent system users and their clients

/// An agent system user, its owner (the facilitator) and its packages: those of the
/// approved request, or of its system when it was created directly by a `party` event.
pub fn agent_system_user(w: &World, id: &str) -> Result<(NodeId, NodeId, PackageSet)> {
    let su = party(w, id)?;
    let p = w.graph.party(su).ok_or_else(|| Error::unknown_party(id))?;
    if p.kind != PartyKind::SystemUser || p.system_user_kind() != Some(SystemUserKind::Agent) {
        return Err(Error::new(
            ErrorCode::InvalidAgent,
            format!("`{id}` is not an agent system user"),
        ));
    }
    let owner = p.owner().ok_or_else(|| {
        Error::new(
            ErrorCode::InvalidAgent,
            format!("agent system user `{id}` has no owner"),
        )
    })?;
    let owner = party(w, owner)?;
    let packages = match w.sys.agent_packages.get(id) {
        Some(s) => *s,
        None => p
            .system()
            .and_then(|s| w.sys.systems.get(s))
            .map(|s| s.packages)
            .unwrap_or_default(),
    };
    Ok((su, owner, packages))
}

/// The clients attached to agent system user `id`.
pub fn clients_of(w: &World, id: &str) -> Result<BTreeSet<NodeId>> {
    let (su, f, _) = agent_system_user(w, id)?;
    Ok(resolve::clients(w, f, su))
}

/// The packages the facilitator holds from the client through one client assignment:
/// its role's packages (unit-type rows checked against the client) or, for a
/// rightholder assignment, the packages granted on it.
fn carried(w: &World, client: NodeId, a: &Assignment) -> PackageSet {
    resolve::packages_carried(w, a.role, &a.packages, client)
}

/// For each package, a client assignment `client → f` through which `f` holds it,
/// grouped by the assignment's role; or the packages `f` does not hold from `client`.
fn client_plan(
    w: &World,
    f: NodeId,
    client: NodeId,
    packages: &PackageSet,
) -> std::result::Result<BTreeMap<RoleId, PackageSet>, PackageSet> {
    let c = w.catalog;
    let mut assignments: Vec<(RoleId, PackageSet)> = w
        .graph
        .between(client, f)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Edge::Assignment(a) if a.role != c.known.agent && a.role != c.known.supplier => {
                Some((a.role, carried(w, client, a)))
            }
            _ => None,
        })
        .collect();
    assignments.sort_by_key(|(r, _)| *r);
    let mut plan: BTreeMap<RoleId, PackageSet> = BTreeMap::new();
    let mut missing = PackageSet::EMPTY;
    for p in packages.iter() {
        match assignments.iter().find(|(_, held)| held.contains(p)) {
            Some((role, _)) => plan.entry(*role).or_default().insert(p),
            None => missing.insert(p),
        }
    }
    if missing.is_empty() {
        Ok(plan)
    } else {
        Err(missing)
    }
}

/// Whether `f` can be a client's facilitator here: the client is an organisation or a
/// person other than the facilitator (a person's citizen packages are `is_delegable`,
/// and "an organisation that received one may forward it to its agents in a client
/// delegation", domain.md §11.2; §7 asks only that the facilitator hold every package).
fn is_client_candidate(w: &World, f: NodeId, client: NodeId) -> bool {
    client != f
        && matches!(
            kind_of(w, client),
            Some(PartyKind::Organisation | PartyKind::Person)
        )
}

/// The clients that `add_client` would accept for agent system user `id`.
pub fn addable_clients(w: &World, id: &str) -> Result<BTreeSet<NodeId>> {
    let c = w.catalog;
    let (su, f, packages) = agent_system_user(w, id)?;
    if packages.is_empty() || packages.iter().any(|p| !c.package(p).is_delegable) {
        return Ok(BTreeSet::new());
    }
    let current = resolve::clients(w, f, su);
    let sources: BTreeSet<NodeId> = w
        .graph
        .incoming(f)
        .filter(|(_, _, e)| matches!(e, Edge::Assignment(_)))
        .map(|(_, s, _)| s)
        .collect();
    Ok(sources
        .into_iter()
        .filter(|s| is_client_candidate(w, f, *s) && !current.contains(s))
        .filter(|s| client_plan(w, f, *s, &packages).is_ok())
        .collect())
}

fn add_client(tx: &mut Tx<'_>, e: &ClientEvent) -> Result<()> {
    non_empty("system_user", &e.system_user)?;
    non_empty("client", &e.client)?;
    let w = &*tx.w;
    let c = w.catalog;
    party(w, &e.system_user)?;
    let client = party(w, &e.client)?;
    let by = e.by.as_deref().map(|b| party(w, b)).transpose()?;
    let (su, f, packages) = agent_system_user(w, &e.system_user)?;
    if !is_client_candidate(w, f, client) {
        return Err(Error::invalid(format!(
            "`{}` cannot be a client of `{}`: a client is another organisation or a person",
            e.client,
            w.graph.ext_id(f)
        )));
    }
    if packages.is_empty() {
        return Err(Error::invalid(format!(
            "agent system user `{}` has no packages to forward",
            e.system_user
        )));
    }
    not_delegable_packages(c, &packages)?;
    let plan = client_plan(w, f, client, &packages).map_err(|missing| {
        Error::new(
            ErrorCode::NotDelegable,
            format!(
                "`{}` does not hold {} from `{}`, and agent system user `{}` needs every one of its packages",
                w.graph.ext_id(f),
                codes(c, &missing),
                e.client,
                e.system_user
            ),
        )
    })?;
    if let Some(b) = by
        && !holds(w, b, f, c.known.klientadministrator)
    {
        return Err(Error::not_authorized(format!(
            "`{}` does not hold klientadministrator for `{}`",
            w.graph.ext_id(b),
            w.graph.ext_id(f)
        )));
    }
    if resolve::clients(w, f, su).contains(&client) {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!("`{}` is already a client of `{}`", e.client, e.system_user),
        ));
    }
    // The agent assignment facilitator → system user, made on the first client.
    let agent_key = EdgeKey::Assignment {
        from: f,
        to: su,
        role: c.known.agent,
    };
    if tx.edge(agent_key).is_none() {
        tx.set_edge(agent_key, Some(Edge::Assignment(Assignment::new(c.known.agent))));
    }
    for (role, pk) in plan {
        let key = EdgeKey::Delegation {
            client,
            agent: su,
            facilitator: f,
            role,
        };
        tx.set_edge(
            key,
            Some(Edge::Delegation(Delegation {
                facilitator: f,
                role,
                packages: pk,
                resources: BTreeMap::new(),
            })),
        );
    }
    Ok(())
}

fn remove_client(tx: &mut Tx<'_>, e: &ClientEvent) -> Result<()> {
    non_empty("system_user", &e.system_user)?;
    non_empty("client", &e.client)?;
    let w = &*tx.w;
    let c = w.catalog;
    party(w, &e.system_user)?;
    let client = party(w, &e.client)?;
    let by = e.by.as_deref().map(|b| party(w, b)).transpose()?;
    let (su, f, _) = agent_system_user(w, &e.system_user)?;
    if let Some(b) = by
        && !holds(w, b, f, c.known.klientadministrator)
    {
        return Err(Error::not_authorized(format!(
            "`{}` does not hold klientadministrator for `{}`",
            w.graph.ext_id(b),
            w.graph.ext_id(f)
        )));
    }
    let keys: Vec<EdgeKey> = w
        .graph
        .between(client, su)
        .into_iter()
        .filter_map(|(id, edge)| match edge {
            Edge::Delegation(d) if d.facilitator == f => w.graph.key_of(id),
            _ => None,
        })
        .collect();
    for k in keys {
        tx.set_edge(k, None);
    }
    Ok(())
}
