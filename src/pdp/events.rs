//! The decision point's events: `policy`, `instance`, `access_list`, and the
//! access-list fields of `resource`. Each change is pushed on the transaction's undo
//! log, so a refused event changes nothing.

use std::sync::Arc;

use super::state::{Instance, ListMember, PdpUndo};
use super::{CompiledPolicy, app_owner, compile_policy};
use crate::event::{Event, ResourceEvent};
use crate::graph::Resource;
use crate::model::{Error, ErrorCode, PartyKind, Result};
use crate::mutate::Tx;

fn set_policy(tx: &mut Tx<'_>, resource: &str, p: Option<Arc<CompiledPolicy>>) {
    let old = match &p {
        Some(p) => tx.w.pdp.policies.insert(resource.to_string(), p.clone()),
        None => tx.w.pdp.policies.remove(resource),
    };
    tx.push_pdp_undo(PdpUndo::Policy(resource.to_string(), old));
}

/// Applies `policy`, `instance` and `access_list`.
pub(crate) fn apply(tx: &mut Tx<'_>, ev: &Event) -> Result<()> {
    match ev {
        Event::Policy(p) => {
            if p.resource.trim().is_empty() {
                return Err(Error::invalid("`resource` must not be empty"));
            }
            let compiled = compile_policy(&p.xml)
                .map_err(|e| Error::invalid(format!("policy for `{}`: {e}", p.resource)))?;
            let res = match tx
                .w
                .graph
                .resource_node(&p.resource)
                .and_then(|n| tx.w.graph.resource(n))
            {
                Some(r) => Resource {
                    rules: Vec::new(),
                    ..r.clone()
                },
                None => Resource {
                    id: p.resource.clone(),
                    owner: app_owner(&p.resource).map(str::to_string),
                    delegable: true,
                    rules: Vec::new(),
                    kind: Default::default(),
                },
            };
            tx.put_resource(res);
            set_policy(tx, &p.resource, Some(Arc::new(compiled)));
            Ok(())
        }
        Event::Instance(i) => {
            let Some((party_id, guid)) = i.id.split_once('/') else {
                return Err(Error::invalid(format!(
                    "instance id `{}` is not `{{party_id}}/{{guid}}`",
                    i.id
                )));
            };
            if party_id.trim().parse::<i64>().is_err() || guid.trim().is_empty() {
                return Err(Error::invalid(format!(
                    "instance id `{}` is not `{{party_id}}/{{guid}}`",
                    i.id
                )));
            }
            if tx.w.graph.party_node(&i.party).is_none() {
                return Err(Error::unknown_party(&i.party));
            }
            if tx.w.graph.resource_node(&i.resource).is_none() {
                return Err(Error::unknown_resource(&i.resource));
            }
            let inst = Instance {
                id: i.id.clone(),
                resource: i.resource.clone(),
                party: i.party.clone(),
                task: i.task.clone(),
                end_event: i.end_event.clone(),
            };
            let old = tx.w.pdp.instances.insert(i.id.clone(), inst);
            tx.push_pdp_undo(PdpUndo::Instance(i.id.clone(), old));
            Ok(())
        }
        Event::AccessList(l) => {
            if l.owner.trim().is_empty() || l.id.trim().is_empty() {
                return Err(Error::invalid("an access list needs an `owner` and an `id`"));
            }
            let mut members = Vec::with_capacity(l.members.len());
            for m in &l.members {
                let n =
                    tx.w.graph
                        .party_node(&m.org)
                        .ok_or_else(|| Error::unknown_party(&m.org))?;
                if tx.w.graph.party(n).map(|p| p.kind) != Some(PartyKind::Organisation) {
                    return Err(Error::invalid(format!(
                        "access list member `{}` is not an organisation",
                        m.org
                    )));
                }
                members.push(ListMember {
                    org: m.org.clone(),
                    actions: m.actions.as_ref().map(|a| a.iter().cloned().collect()),
                });
            }
            let key = (l.owner.clone(), l.id.clone());
            let old = tx.w.pdp.put_list(key.clone(), Some(members));
            tx.push_pdp_undo(PdpUndo::AccessList(key, old));
            Ok(())
        }
        _ => Err(Error::new(ErrorCode::InvalidInput, "not a decision-point event")),
    }
}

/// The decision point's part of a `resource` event: its access-list fields, and a new
/// rule list replaces an XACML policy.
pub(crate) fn on_resource_event(tx: &mut Tx<'_>, r: &ResourceEvent) -> Result<()> {
    if !r.rules.is_empty() && tx.w.pdp.policies.contains_key(&r.id) {
        set_policy(tx, &r.id, None);
    }
    if r.access_lists.is_some() || r.access_list_mode.is_some() {
        let old = tx.w.pdp.resource_lists.get(&r.id).cloned();
        let mut new = old.clone().unwrap_or_default();
        if let Some(l) = &r.access_lists {
            new.lists = l.clone();
        }
        if let Some(m) = &r.access_list_mode {
            new.enabled = m == "enabled";
        }
        tx.w.pdp.resource_lists.insert(r.id.clone(), new);
        tx.push_pdp_undo(PdpUndo::ResourceLists(r.id.clone(), old));
    }
    Ok(())
}
