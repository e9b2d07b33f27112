//! The XACML JSON profile: requests in, responses out. Property names are read
//! case-insensitively, `DataType` may be omitted (inferred from the JSON value) or
//! short (`string`, `integer`), repeated attribute ids in one category are merged into
//! one bag, and `MultiRequests` name categories by their `Id`.

use serde_json::{Map, Value, json};

use super::error::PdpError;
use super::policy::{
    AttrValue, CAT_ACTION, CAT_ENVIRONMENT, CAT_RESOURCE, CAT_SUBJECT, DT_BOOLEAN, DT_DOUBLE, DT_INTEGER,
    DT_STRING, expand_datatype,
};
use super::request::{Category, Request};
use super::response::{Decision, Response};

/// A property by name, case-insensitively; `null` counts as absent (domain.md §8.9).
fn get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(key) && !v.is_null())
        .map(|(_, v)| v)
}

/// A value or an array of values, `null`s left out.
fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().filter(|x| !x.is_null()).collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

const SHORTHANDS: &[(&str, &str)] = &[
    ("AccessSubject", CAT_SUBJECT),
    ("Action", CAT_ACTION),
    ("Resource", CAT_RESOURCE),
    ("Environment", CAT_ENVIRONMENT),
    (
        "RecipientSubject",
        "urn:oasis:names:tc:xacml:1.0:subject-category:recipient-subject",
    ),
    (
        "IntermediarySubject",
        "urn:oasis:names:tc:xacml:1.0:subject-category:intermediary-subject",
    ),
    (
        "Codebase",
        "urn:oasis:names:tc:xacml:1.0:subject-category:codebase",
    ),
    (
        "RequestingMachine",
        "urn:oasis:names:tc:xacml:1.0:subject-category:requesting-machine",
    ),
];

fn lexical(v: &Value) -> Result<(String, &'static str), PdpError> {
    Ok(match v {
        Value::String(s) => (s.clone(), DT_STRING),
        Value::Bool(b) => (b.to_string(), DT_BOOLEAN),
        Value::Number(n) if n.is_i64() || n.is_u64() => (n.to_string(), DT_INTEGER),
        Value::Number(n) => (n.to_string(), DT_DOUBLE),
        other => {
            return Err(PdpError::Syntax(format!(
                "an attribute value cannot be `{other}`"
            )));
        }
    })
}

fn category(v: &Value, cat_id: Option<&str>) -> Result<Category, PdpError> {
    let m = v
        .as_object()
        .ok_or_else(|| PdpError::Syntax("a category is an object".into()))?;
    let cat_id = match cat_id {
        Some(c) => c.to_string(),
        None => get(m, "CategoryId")
            .and_then(Value::as_str)
            .ok_or_else(|| PdpError::Syntax("a category lacks its CategoryId".into()))?
            .to_string(),
    };
    let mut c = Category::new(&cat_id);
    c.xml_id = get(m, "Id").and_then(Value::as_str).map(str::to_string);
    // Where each (id, issuer) went: repeated ids merge into one bag (hashed: thousands of
    // distinct ids would otherwise cost a search each).
    let mut at: std::collections::HashMap<(String, Option<String>), usize> = std::collections::HashMap::new();
    for a in get(m, "Attribute").map(as_list).unwrap_or_default() {
        let am = a
            .as_object()
            .ok_or_else(|| PdpError::Syntax("an attribute is an object".into()))?;
        let id = get(am, "AttributeId")
            .and_then(Value::as_str)
            .ok_or_else(|| PdpError::Syntax("an attribute lacks its AttributeId".into()))?;
        let dt = get(am, "DataType").and_then(Value::as_str).map(expand_datatype);
        let issuer = get(am, "Issuer").and_then(Value::as_str);
        let include = get(am, "IncludeInResult")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let raw =
            get(am, "Value").ok_or_else(|| PdpError::Syntax(format!("attribute `{id}` lacks its Value")))?;
        let mut values = Vec::new();
        for v in as_list(raw) {
            let (lex, inferred) = lexical(v)?;
            values.push(AttrValue::new(dt.as_deref().unwrap_or(inferred), lex));
        }
        match at.entry((id.to_string(), issuer.map(str::to_string))) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let x = &mut c.attrs[*e.get()];
                x.include |= include;
                x.values.extend(values);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(c.attrs.len());
                c.attrs.push(super::request::Attribute {
                    id: id.to_string(),
                    issuer: issuer.map(str::to_string),
                    include,
                    values,
                });
            }
        }
    }
    Ok(c)
}

/// The first object in `v` that holds two keys differing only in case (`Value` and
/// `value`): properties are read case-insensitively, so such a request would be read
/// by one of them while a proxy or an audit log may read the other. Walks without
/// recursion.
fn twice_in_any_case(v: &Value) -> Option<(String, String)> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                let mut seen: std::collections::HashMap<String, &String> = std::collections::HashMap::new();
                for k in m.keys() {
                    if let Some(first) = seen.insert(k.to_ascii_lowercase(), k) {
                        return Some((first.clone(), k.clone()));
                    }
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    None
}

/// Parses a JSON-profile request (`{"Request": {...}}`); a request that names a
/// property twice in different cases is a syntax error.
pub fn parse_request(v: &Value) -> Result<Request, PdpError> {
    if let Some((a, b)) = twice_in_any_case(v) {
        return Err(PdpError::Syntax(format!(
            "the request names one property twice, as `{a}` and as `{b}` (property names are read in any case)"
        )));
    }
    let root = v
        .as_object()
        .ok_or_else(|| PdpError::Syntax("a request is a JSON object".into()))?;
    let r = get(root, "Request")
        .and_then(Value::as_object)
        .ok_or_else(|| PdpError::Syntax("the request lacks its `Request` object".into()))?;
    let mut req = Request {
        return_policy_ids: get(r, "ReturnPolicyIdList")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        combined: get(r, "CombinedDecision")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..Request::default()
    };
    for (k, v) in r.iter().filter(|(_, v)| !v.is_null()) {
        if let Some((_, cat)) = SHORTHANDS.iter().find(|(s, _)| s.eq_ignore_ascii_case(k)) {
            for c in as_list(v) {
                req.categories.push(category(c, Some(cat))?);
            }
        } else if k.eq_ignore_ascii_case("Category") {
            for c in as_list(v) {
                req.categories.push(category(c, None)?);
            }
        } else if k.eq_ignore_ascii_case("MultiRequests") {
            let m = v
                .as_object()
                .ok_or_else(|| PdpError::Syntax("MultiRequests is an object".into()))?;
            for rr in get(m, "RequestReference").map(as_list).unwrap_or_default() {
                let refs = rr
                    .as_object()
                    .and_then(|o| get(o, "ReferenceId"))
                    .map(as_list)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| PdpError::Syntax("a ReferenceId is a string".into()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                req.multi.push(refs);
            }
        }
    }
    // Altinn reads `MultiRequests` with fewer than two references as one request over
    // all categories (domain.md §8.9).
    if req.multi.len() < 2 {
        req.multi.clear();
    }
    Ok(req)
}

fn value_json(v: &AttrValue) -> Value {
    Value::String(v.v.clone())
}

/// Writes a JSON-profile response (`{"Response": [...]}`), shaped as Altinn's.
pub fn write_response(r: &Response) -> Value {
    let results: Vec<Value> = r
        .results
        .iter()
        .map(|res| {
            let mut o = Map::new();
            o.insert("Decision".into(), json!(res.decision.as_str()));
            let mut status = Map::new();
            status.insert("StatusCode".into(), json!({"Value": res.status_code}));
            if let Some(m) = &res.status_message {
                status.insert("StatusMessage".into(), json!(m));
            }
            o.insert("Status".into(), Value::Object(status));
            for (key, list) in [
                ("Obligations", &res.obligations),
                ("AssociateAdvice", &res.advice),
            ] {
                if list.is_empty() {
                    continue;
                }
                let items: Vec<Value> = list
                    .iter()
                    .map(|ob| {
                        let asg: Vec<Value> = ob
                            .assignments
                            .iter()
                            .map(|a| {
                                let mut m = Map::new();
                                m.insert("AttributeId".into(), json!(a.id));
                                m.insert("Value".into(), value_json(&a.value));
                                m.insert("DataType".into(), json!(&*a.value.dt));
                                if let Some(c) = &a.category {
                                    m.insert("Category".into(), json!(c));
                                }
                                if let Some(i) = &a.issuer {
                                    m.insert("Issuer".into(), json!(i));
                                }
                                Value::Object(m)
                            })
                            .collect();
                        json!({"Id": ob.id, "AttributeAssignment": asg})
                    })
                    .collect();
                o.insert(key.into(), Value::Array(items));
            }
            if !res.attributes.is_empty() {
                let cats: Vec<Value> = res
                    .attributes
                    .iter()
                    .map(|c| {
                        let attrs: Vec<Value> = c
                            .attrs
                            .iter()
                            .flat_map(|a| {
                                a.values.iter().map(move |v| {
                                    let mut m = Map::new();
                                    m.insert("AttributeId".into(), json!(a.id));
                                    m.insert("Value".into(), value_json(v));
                                    m.insert("DataType".into(), json!(&*v.dt));
                                    if let Some(i) = &a.issuer {
                                        m.insert("Issuer".into(), json!(i));
                                    }
                                    m.insert("IncludeInResult".into(), json!(true));
                                    Value::Object(m)
                                })
                            })
                            .collect();
                        json!({"CategoryId": c.category, "Attribute": attrs})
                    })
                    .collect();
                o.insert("Category".into(), Value::Array(cats));
            }
            if !res.policy_ids.is_empty() {
                let refs: Vec<Value> = res
                    .policy_ids
                    .iter()
                    .map(|(_, id, v)| json!({"Id": id, "Version": v}))
                    .collect();
                o.insert("PolicyIdentifierList".into(), json!({"PolicyIdReference": refs}));
            }
            Value::Object(o)
        })
        .collect();
    json!({ "Response": results })
}

/// The decisions of a JSON-profile response, in order.
pub fn decisions(v: &Value) -> Vec<Option<Decision>> {
    let list = v
        .as_object()
        .and_then(|m| get(m, "Response"))
        .map(as_list)
        .unwrap_or_default();
    list.into_iter()
        .map(|r| {
            r.as_object()
                .and_then(|m| get(m, "Decision"))
                .and_then(Value::as_str)
                .and_then(Decision::parse)
        })
        .collect()
}

fn results(v: &Value) -> Vec<&Value> {
    v.as_object()
        .and_then(|m| get(m, "Response"))
        .map(as_list)
        .unwrap_or_default()
}

/// The status messages of a JSON-profile response (for failure reports).
pub fn status_messages(v: &Value) -> Vec<String> {
    results(v)
        .into_iter()
        .filter_map(|r| {
            let s = r.as_object().and_then(|m| get(m, "Status"))?.as_object()?;
            get(s, "StatusMessage")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// Per result, the ids of its obligations.
pub fn obligation_ids(v: &Value) -> Vec<std::collections::BTreeSet<String>> {
    results(v)
        .into_iter()
        .map(|r| {
            r.as_object()
                .and_then(|m| get(m, "Obligations"))
                .map(as_list)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|o| {
                    o.as_object()
                        .and_then(|m| get(m, "Id").or_else(|| get(m, "ObligationId")))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
        .collect()
}
