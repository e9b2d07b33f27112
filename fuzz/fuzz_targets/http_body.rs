//! The HTTP API's body parsing path, without the sockets: any bytes go through the strict
//! JSON parser (depth limit, duplicate keys, UTF-8); a parsed body is decoded as a batch
//! of events for an administrator and for an end user (the actor binding), and as every
//! query. Never a panic; and whatever the strict parser takes, `serde_json` reads the
//! same (it only refuses more).
#![no_main]

use libfuzzer_sys::fuzz_target;

use delegraph::api::actor;
use delegraph::api::auth::{Caller, Scope};
use delegraph::api::strict;
use delegraph::query::Query;

const QUERIES: [&str; 10] = [
    "check",
    "authorized_parties",
    "rights",
    "can_delegate",
    "holders",
    "clients",
    "request_status",
    "addable_clients",
    "explain",
    "simulate",
];

fuzz_target!(|data: &[u8]| {
    let Ok(v) = strict::parse(data, 32) else {
        return;
    };
    let loose: serde_json::Value = match serde_json::from_slice(data) {
        Ok(l) => l,
        Err(e) => panic!("the strict parser took what serde_json refuses: {e}"),
    };
    assert_eq!(v, loose, "the strict parser read another value");
    let end_user = Caller {
        scopes: vec![Scope::Act],
        sub: Some("kari".into()),
    };
    match &v {
        serde_json::Value::Array(items) => {
            let _ = actor::decode_batch(&Caller::admin(), items.clone());
            if let Ok(events) = actor::decode_batch(&end_user, items.clone()) {
                // An end user's batch holds only events that act as `sub`.
                for mut ev in events {
                    match actor::acting(&mut ev) {
                        actor::Acting::Person(Some(by)) => assert_eq!(by, "kari"),
                        actor::Acting::PersonRequired(by) => assert_eq!(by, "kari"),
                        other => panic!("an end user sent {other:?}"),
                    }
                }
            }
        }
        serde_json::Value::Object(_) => {
            for q in QUERIES {
                let _ = Query::parse(q, v.clone());
            }
        }
        _ => {}
    }
});
