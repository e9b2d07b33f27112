//! Who acts in each event, and which scope sending it needs: the one table of the API's
//! actor binding (README "Authentication", and the OpenAPI description of
//! `POST /v1/events`).
//!
//! | acts | events | scope |
//! |---|---|---|
//! | an end user, named by `by` | `grant`, `revoke`, `remove_connection`, `add_agent`, `remove_agent`, `delegate`, `undelegate`, `access_request`, `add_client`, `remove_client`, `accept_consent`, `reject_consent`, `revoke_consent`, `add_supplier`, `remove_supplier`, `delegate_scope`, `undelegate_scope`, and (`by` required) `approve`, `reject`, `confirm`, `withdraw`, `escalate` | `delegraph:act` as `by` itself, `delegraph:write` for any `by`; without `by` (an administrative import) `delegraph:import` |
//! | a vendor, consumer or service owner organisation | `system`, `system_user_request`, `change_request`, `consent_request`, `use_consent`, an `access_request` with `draft: true` (also `delegraph:import`) | `delegraph:write` |
//! | a register or the administration | `party`, `register_role`, `unregister_role`, `a2_role`, `remove_a2_role`, `died`, `retire_a2_roles`, `clock`, `resource`, `policy`, `instance`, `access_list` | `delegraph:import` |
//!
//! An end-user token (`delegraph:act`, its `sub` a party id) acts only as that party:
//! an event of the first row without `by` gets `by` = `sub`, one with another `by` is
//! refused (`not_authorized`), and the other rows need scopes it does not have
//! (`insufficient_scope`). `delegraph:admin` includes every scope. A refused event
//! refuses its whole batch: nothing changes.

use serde_json::Value;

use super::auth::{Caller, Scope};
use super::problem::{Problem, ProblemCode};
use crate::event::Event;
use crate::model::{ErrorCode, quote};

/// Who acts in one event, with access to the field that names them.
#[derive(Debug)]
pub enum Acting<'a> {
    /// An end user named by an optional `by`; without it, an administrative import.
    Person(&'a mut Option<String>),
    /// An end user named by a `by` the event requires.
    PersonRequired(&'a mut String),
    /// A vendor or consumer organisation (a backend's event).
    Organisation,
    /// A register or the administration: nobody acting in person.
    Register,
}

/// The table: who acts in `ev`. Exhaustive, so a new event kind must be placed here.
pub fn acting(ev: &mut Event) -> Acting<'_> {
    match ev {
        Event::Grant(e) | Event::Revoke(e) => Acting::Person(&mut e.by),
        Event::RemoveConnection(e) => Acting::Person(&mut e.by),
        Event::AddAgent(e) | Event::RemoveAgent(e) => Acting::Person(&mut e.by),
        Event::Delegate(e) | Event::Undelegate(e) => Acting::Person(&mut e.by),
        // A draft is a service owner's (domain.md §7: it needs no connection), so a
        // backend's: an end user's own request is created pending.
        Event::AccessRequest(e) if e.draft == Some(true) => Acting::Organisation,
        Event::AccessRequest(e) => Acting::Person(&mut e.by),
        Event::AddClient(e) | Event::RemoveClient(e) => Acting::Person(&mut e.by),
        // §10: the consumer's (or the supplier's) Maskinporten administrator.
        Event::AddSupplier(e) | Event::RemoveSupplier(e) => Acting::Person(&mut e.by),
        Event::DelegateScope(e) | Event::UndelegateScope(e) => Acting::Person(&mut e.by),
        Event::Approve(e)
        | Event::Reject(e)
        | Event::Confirm(e)
        | Event::Withdraw(e)
        | Event::Escalate(e) => Acting::PersonRequired(&mut e.by),
        Event::System(_) | Event::SystemUserRequest(_) | Event::ChangeRequest(_) => Acting::Organisation,
        // Consent (domain.md §9): the person answering or revoking is the token's `sub`;
        // the consumer (or its operator) asks for and uses a consent as a backend.
        Event::AcceptConsent(e) | Event::RejectConsent(e) | Event::RevokeConsent(e) => {
            Acting::Person(&mut e.by)
        }
        Event::ConsentRequest(_) | Event::UseConsent(_) => Acting::Organisation,
        Event::Party(_)
        | Event::RegisterRole(_)
        | Event::UnregisterRole(_)
        | Event::A2Role(_)
        | Event::RemoveA2Role(_)
        | Event::Died(_)
        | Event::RetireA2Roles(_)
        | Event::Clock(_)
        | Event::Resource(_)
        | Event::Policy(_)
        | Event::Instance(_)
        | Event::AccessList(_) => Acting::Register,
    }
}

/// The scope sending `ev` needs by the table: `act` for an event that names a `by`
/// (an end-user token only as that very party), `write` for an organisation's,
/// `import` for one with nobody acting.
pub fn scope_needed(ev: &mut Event) -> Scope {
    match acting(ev) {
        Acting::Person(Some(_)) | Acting::PersonRequired(_) => Scope::Act,
        Acting::Organisation => Scope::Write,
        Acting::Person(None) | Acting::Register => Scope::Import,
    }
}

/// Binds one event to its caller: fills `by` from an end-user token's `sub` and refuses
/// what the caller may not send. `write` and `admin` may name any `by`.
pub fn bind(caller: &Caller, ev: &mut Event) -> Result<(), Problem> {
    let name = ev.name();
    // A service owner's draft may also come in an administrative import, as before.
    let draft = matches!(ev, Event::AccessRequest(e) if e.draft == Some(true));
    let any_by = caller.has(Scope::Write);
    let as_sub = caller.has(Scope::Act).then_some(caller.sub.as_deref()).flatten();
    let refuse_scope = |need: Scope| {
        Problem::new(
            ProblemCode::InsufficientScope,
            format!("`{name}` needs scope `{}`", need.as_str()),
        )
    };
    let other = |by: &str, sub: &str| {
        Problem::new(
            ProblemCode::Spec(ErrorCode::NotAuthorized),
            format!(
                "`{name}` names `by` `{}`, but this token acts only as `{}` (its `sub`)",
                quote(by),
                quote(sub)
            ),
        )
    };
    let no_sub = || {
        Problem::new(
            ProblemCode::Spec(ErrorCode::NotAuthorized),
            format!(
                "`{name}`: a `delegraph:act` token acts as the party in its `sub` claim, and this one has none"
            ),
        )
    };
    match acting(ev) {
        Acting::Person(by) => match by {
            Some(_) if any_by => Ok(()),
            Some(b) => match as_sub {
                Some(s) if s == b.as_str() => Ok(()),
                Some(s) => Err(other(b, s)),
                None if caller.has(Scope::Act) => Err(no_sub()),
                None => Err(refuse_scope(Scope::Act)),
            },
            None if caller.has(Scope::Import) => Ok(()),
            None => match as_sub {
                // An end user's event without `by` acts as the token's party.
                Some(s) if !any_by => {
                    // The id rule holds for what the token brings as for the body.
                    crate::model::check_id("the token's `sub`", s)?;
                    *by = Some(s.to_string());
                    Ok(())
                }
                _ if caller.has(Scope::Act) && !any_by => Err(no_sub()),
                _ => Err(refuse_scope(Scope::Import)),
            },
        },
        Acting::PersonRequired(b) => {
            if any_by {
                return Ok(());
            }
            match as_sub {
                Some(s) if s == b.as_str() => Ok(()),
                Some(s) => Err(other(b, s)),
                None if caller.has(Scope::Act) => Err(no_sub()),
                None => Err(refuse_scope(Scope::Act)),
            }
        }
        Acting::Organisation if draft && caller.has(Scope::Import) => Ok(()),
        Acting::Organisation => caller
            .require(Scope::Write)
            .map_err(|_| refuse_scope(Scope::Write)),
        Acting::Register => caller
            .require(Scope::Import)
            .map_err(|_| refuse_scope(Scope::Import)),
    }
}

/// Decodes one event of a batch for `caller`: an end-user token's event that requires
/// `by` and leaves it out gets the token's `sub` before decoding; then [`bind`].
pub fn decode(caller: &Caller, v: Value) -> Result<Event, Problem> {
    let filled = match (&v, caller.has(Scope::Write), caller.sub.as_deref()) {
        (Value::Object(m), false, Some(sub)) if caller.has(Scope::Act) && m.len() == 1 => {
            m.iter().next().and_then(|(k, body)| match body {
                Value::Object(f) if !f.contains_key("by") => {
                    let mut f = f.clone();
                    f.insert("by".into(), Value::String(sub.to_string()));
                    let mut one = serde_json::Map::new();
                    one.insert(k.clone(), Value::Object(f));
                    Some(Value::Object(one))
                }
                _ => None,
            })
        }
        _ => None,
    };
    // Only an event whose `by` is required is decoded with the filled-in `by`: every
    // other one is decoded as sent, and `bind` fills an optional `by` itself.
    let mut ev = match filled.map(Event::from_json) {
        Some(Ok(mut ev)) => {
            if matches!(acting(&mut ev), Acting::PersonRequired(_)) {
                ev
            } else {
                Event::from_json(v)?
            }
        }
        _ => Event::from_json(v)?,
    };
    bind(caller, &mut ev)?;
    Ok(ev)
}

/// Decodes a whole batch for `caller`; the first refused event refuses it, its index in
/// the message.
pub fn decode_batch(caller: &Caller, items: Vec<Value>) -> Result<Vec<Event>, Problem> {
    let mut events = Vec::with_capacity(items.len());
    for (i, v) in items.into_iter().enumerate() {
        let ev = decode(caller, v).map_err(|mut p| {
            p.detail = format!("event {i}: {}", p.detail);
            p
        })?;
        events.push(ev);
    }
    Ok(events)
}

/// Binds a batch read already ([`crate::event::typed_batch`]) to `caller`, as
/// [`decode_batch`] does after decoding: the first refused event refuses it, its index in
/// the message. (The kinds read that way name `by` as optional, so the filling of a
/// required `by` in [`decode`] does not arise.)
pub fn bind_batch(caller: &Caller, mut events: Vec<Event>) -> Result<Vec<Event>, Problem> {
    for (i, ev) in events.iter_mut().enumerate() {
        bind(caller, ev).map_err(|mut p| {
            p.detail = format!("event {i}: {}", p.detail);
            p
        })?;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use crate::event::{Event, typed_batch};

    /// The general reading of a batch, as the HTTP route takes it: strict JSON, a list,
    /// each item through [`Event::from_json`].
    fn general(body: &[u8]) -> Option<Vec<Event>> {
        match super::super::strict::parse(body, 32).ok()? {
            serde_json::Value::Array(items) => items.into_iter().map(|v| Event::from_json(v).ok()).collect(),
            _ => None,
        }
    }

    /// The typed reading answers only what the general reading answers, and the same.
    fn agrees(body: &[u8]) -> bool {
        match typed_batch(body) {
            None => true,
            Some(t) => general(body).is_some_and(|g| g == t),
        }
    }

    const READ: &[&str] = &[
        r#"[{"grant": {"from": "o1", "to": "p1", "package": "ulykke", "by": "p2"}}]"#,
        r#"[{"revoke": {"by": "p2", "to": "p1", "from": "o1", "package": "ulykke", "cascade": true}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "resource": "r", "actions": ["read", "write"]}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "resource": "r", "instance": "i", "actions": []}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "package": "ulykke", "by": null, "cascade": null}}]"#,
        r#" [ {"grant":{"from":"o\u0031","to":"p1","package":"\u00e6\u00f8\u00e5"}} ] "#,
        r#"[{"remove_connection": {"from": "o1", "to": "p1", "cascade": false, "by": "p2"}}]"#,
        r#"[{"add_agent": {"facilitator": "o1", "agent": "p1"}}, {"remove_agent": {"facilitator": "o1", "agent": "p1", "by": "p2"}}]"#,
        r#"[{"register_role": {"from": "o1", "to": "p1", "role": "daglig-leder"}}, {"unregister_role": {"from": "o1", "to": "p1", "role": "x"}}]"#,
        r#"[{"a2_role": {"from": "o1", "to": "p1", "role": "A"}}, {"remove_a2_role": {"from": "o1", "to": "p1", "role": "A"}}]"#,
        r#"[{"died": {"person": "p1"}}]"#,
        r#"[]"#,
    ];

    const REFUSED_OR_GENERAL: &[&str] = &[
        // unknown and repeated fields, repeated keys, two events in one item
        r#"[{"grant": {"from": "o1", "to": "p1", "package": "ulykke", "color": "red"}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "by": "p2", "by": "p3"}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "by": "p2", "by": null}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1"}, "grant": {"from": "o1", "to": "p1"}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1"}, "revoke": {"from": "o1", "to": "p1"}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "actions": ["a"], "actions": ["b"]}}]"#,
        // missing fields, wrong types, null bodies, unknown events
        r#"[{"grant": {"from": "o1"}}]"#,
        r#"[{"grant": {"from": 1, "to": "p1"}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "cascade": "yes"}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "actions": "read"}}]"#,
        r#"[{"grant": null}]"#,
        r#"[{"died": {}}]"#,
        r#"[{"teleport": {"from": "o1"}}]"#,
        r#"[{}]"#,
        r#"["grant"]"#,
        r#"[null]"#,
        // the id rule: control and bidirectional-override characters, overlong ids
        r#"[{"grant": {"from": "o\u0007", "to": "p1"}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "by": "p\u202e2"}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1", "actions": ["a\u0000"]}}]"#,
        r#"[{"died": {"person": "\u2066p"}}]"#,
        // not a list of events, not JSON, trailing text
        r#"{"grant": {"from": "o1", "to": "p1"}}"#,
        r#"[{"grant": {"from": "o1", "to": "p1"}}] []"#,
        r#"[{"grant": {"from": "o1", "to": "p1"}},]"#,
        r#"[{"grant": {"from": "o1", "to": "p1""#,
        r#"[{"grant": {"from": "\ud800", "to": "p1"}}]"#,
        // other kinds take the general reading
        r#"[{"party": {"id": "p1", "kind": "person"}}]"#,
        r#"[{"grant": {"from": "o1", "to": "p1"}}, {"party": {"id": "p1", "kind": "person"}}]"#,
        r#"[{"approve": {"id": "r1", "by": "p1"}}]"#,
        r#"[{"retire_a2_roles": null}]"#,
    ];

    #[test]
    fn typed_batch_agrees_with_the_general_reading() {
        for text in READ {
            let t = typed_batch(text.as_bytes());
            assert!(t.is_some(), "the typed reading should read {text}");
            assert!(agrees(text.as_bytes()), "{text}");
        }
        for text in REFUSED_OR_GENERAL {
            assert!(typed_batch(text.as_bytes()).is_none(), "{text}");
        }
        let long = format!(
            r#"[{{"died": {{"person": "{}"}}}}]"#,
            "p".repeat(crate::model::MAX_ID_BYTES + 1)
        );
        assert!(typed_batch(long.as_bytes()).is_none() && general(long.as_bytes()).is_none());
        let at_limit = format!(
            r#"[{{"died": {{"person": "{}"}}}}]"#,
            "p".repeat(crate::model::MAX_ID_BYTES)
        );
        assert!(typed_batch(at_limit.as_bytes()).is_some() && agrees(at_limit.as_bytes()));
        let invalid_utf8 = b"[{\"died\": {\"person\": \"p\xff\"}}]";
        assert!(typed_batch(invalid_utf8).is_none() && general(invalid_utf8).is_none());
    }

    #[test]
    fn typed_batch_agrees_on_mutated_batches() {
        // Every text one edit away from a readable batch: the two readings never differ.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = br#"{}[]",:\ u0aenull7truefalse"#;
        let (mut read, mut tried) = (0, 0);
        for text in READ {
            let bytes = text.as_bytes();
            for _ in 0..400 {
                let mut b = bytes.to_vec();
                let at = (next() % b.len() as u64) as usize;
                let c = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => {
                        b.remove(at);
                    }
                    1 => b.insert(at, c),
                    _ => b[at] = c,
                }
                tried += 1;
                if typed_batch(&b).is_some() {
                    read += 1;
                }
                assert!(agrees(&b), "{}", String::from_utf8_lossy(&b));
            }
        }
        // Some edits keep a readable batch (e.g. inside an id), so the comparison bit.
        assert!(read > 0 && read < tried, "{read} of {tried}");
    }
}
