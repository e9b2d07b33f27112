//! Shared vocabulary of the engine: dense catalogue ids, party kinds and the error type.
//!
//! Nothing here knows about petgraph or the catalogue's contents; every other module
//! builds on these types.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A role of the catalogue, as a dense index into [`crate::catalog::Catalog::roles`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoleId(pub u16);

/// An access package of the catalogue, as a dense index into
/// [`crate::catalog::Catalog::packages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PackageId(pub u16);

/// What kind of party a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartyKind {
    Person,
    /// Also read as `organization`, the decision point's spelling (`urn:altinn:partytype`).
    #[serde(alias = "organization")]
    Organisation,
    SystemUser,
}

impl PartyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PartyKind::Person => "person",
            PartyKind::Organisation => "organisation",
            PartyKind::SystemUser => "system_user",
        }
    }
}

/// The two kinds of system user (domain.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemUserKind {
    Standard,
    Agent,
}

/// The kind of party a package is given *from* (the catalogue's entity type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityType {
    Organisation,
    Person,
}

/// The error codes of `spec/scenario-format.md`. Each maps to exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidInput,
    UnknownParty,
    UnknownRole,
    UnknownPackage,
    UnknownResource,
    NotAssignable,
    NotDelegable,
    NotAuthorized,
    HasDependants,
    InvalidAgent,
    NotFound,
    Conflict,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidInput,
        ErrorCode::UnknownParty,
        ErrorCode::UnknownRole,
        ErrorCode::UnknownPackage,
        ErrorCode::UnknownResource,
        ErrorCode::NotAssignable,
        ErrorCode::NotDelegable,
        ErrorCode::NotAuthorized,
        ErrorCode::HasDependants,
        ErrorCode::InvalidAgent,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::UnknownParty => "unknown_party",
            ErrorCode::UnknownRole => "unknown_role",
            ErrorCode::UnknownPackage => "unknown_package",
            ErrorCode::UnknownResource => "unknown_resource",
            ErrorCode::NotAssignable => "not_assignable",
            ErrorCode::NotDelegable => "not_delegable",
            ErrorCode::NotAuthorized => "not_authorized",
            ErrorCode::HasDependants => "has_dependants",
            ErrorCode::InvalidAgent => "invalid_agent",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
        }
    }

    /// The one HTTP status each code is answered with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidInput => 400,
            ErrorCode::UnknownParty
            | ErrorCode::UnknownRole
            | ErrorCode::UnknownPackage
            | ErrorCode::UnknownResource => 422,
            ErrorCode::NotAssignable | ErrorCode::NotDelegable | ErrorCode::InvalidAgent => 422,
            ErrorCode::NotAuthorized => 403,
            ErrorCode::HasDependants | ErrorCode::Conflict => 409,
            ErrorCode::NotFound => 404,
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused event or query: one code of the spec and a message that says what was
/// wrong with the input (lowercase, user input in backticks, no final period).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// For `has_dependants`: a description of each dependant that blocked the removal.
    pub dependants: Vec<String>,
    /// The index of the refused event in its batch ([`crate::mutate::apply_batch`] sets
    /// it), so that a caller of `POST /v1/events` with many events learns which one.
    pub event: Option<usize>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            dependants: Vec::new(),
            event: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidInput, message)
    }
    pub fn unknown_party(id: &str) -> Self {
        Error::new(ErrorCode::UnknownParty, format!("no party with id `{id}`"))
    }
    pub fn unknown_resource(id: &str) -> Self {
        Error::new(ErrorCode::UnknownResource, format!("no resource with id `{id}`"))
    }
    pub fn not_authorized(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::NotAuthorized, message)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `s` is a uuid in its usual form: 8-4-4-4-12 hexadecimal digits, either case.
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The candidate closest to `name` within a small edit distance (at most 2, and at most
/// a third of the name's length), for "did you mean" hints. Ties go to the first.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name = name.trim().to_lowercase();
    let limit = (name.chars().count() / 3).clamp(1, 2);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let d = edit_distance(&name, &c.to_lowercase());
        if d > 0 && d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `; did you mean `x`?` when there is a close candidate, else nothing.
pub fn hint<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(name, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The longest id (and any other string of an event or query) accepted, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// How many characters of a refused input an error message quotes.
pub const QUOTE_CHARS: usize = 40;

/// Whether `c` may appear in an id: not a control character (C0, DEL, C1), not a line or
/// paragraph separator, not a bidirectional embedding, override or isolate (which
/// reorder what a terminal or a page shows).
pub fn id_char_allowed(c: char) -> bool {
    !(c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
}

/// The rule every id obeys at every entry (HTTP, import, scenario files, snapshots): at
/// most [`MAX_ID_BYTES`] bytes, and only characters [`id_char_allowed`] lets through.
/// `what` names the field in the error.
pub fn check_id(what: &str, id: &str) -> Result<()> {
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long, more than the limit of {MAX_ID_BYTES}: `{}`",
            id.len(),
            quote(id)
        )));
    }
    if let Some(c) = id.chars().find(|c| !id_char_allowed(*c)) {
        return Err(Error::invalid(format!(
            "{what} holds the character U+{:04X}, which ids may not hold (control and bidirectional-override characters): `{}`",
            c as u32,
            quote(id)
        )));
    }
    Ok(())
}

/// Checks every key and every string of a JSON event or query body with [`check_id`],
/// except the values of the keys in `free` (e.g. a policy's XML document), which are
/// documents rather than ids. Nesting is bounded by the callers' depth limits.
pub fn check_strings(v: &serde_json::Value, free: &[&str]) -> Result<()> {
    match v {
        serde_json::Value::String(s) => check_id("a value", s),
        serde_json::Value::Array(a) => a.iter().try_for_each(|x| check_strings(x, free)),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                check_id("a key", k)?;
                if free.contains(&k.as_str()) {
                    continue;
                }
                check_strings(x, free)
                    .map_err(|e| Error::invalid(format!("`{}`: {}", quote(k), e.message)))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads scalars of an event or query body the way a file author means them: a key whose
/// value is `null` is absent (as in the decision point's JSON profile), and a number
/// stands for its text (`org_no: 310000001`, `id: 42`, `expect: [1001]`: ids are free
/// strings, and YAML writes digits without quotes), except under the keys in `numeric`,
/// whose values are numbers (`party_id`, a `limit`, counts). Applied before the typed
/// reading, which then sees only strings where the vocabulary has strings.
pub fn normalise_scalars(v: serde_json::Value, numeric: &[&str]) -> serde_json::Value {
    use serde_json::Value;
    // Every query over HTTP comes here: a body of strings only (nearly all) is not rebuilt.
    if !loose_scalars(&v, numeric) {
        return v;
    }
    match v {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Array(a) => Value::Array(a.into_iter().map(|x| normalise_scalars(x, numeric)).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| {
                    let x = if numeric.contains(&k.as_str()) {
                        x
                    } else {
                        normalise_scalars(x, numeric)
                    };
                    (k, x)
                })
                .collect(),
        ),
        other => other,
    }
}

/// Whether [`normalise_scalars`] would change anything in `v`: a number outside the
/// `numeric` keys, or a key whose value is `null`.
fn loose_scalars(v: &serde_json::Value, numeric: &[&str]) -> bool {
    use serde_json::Value;
    match v {
        Value::Number(_) => true,
        Value::Array(a) => a.iter().any(|x| loose_scalars(x, numeric)),
        Value::Object(m) => m
            .iter()
            .any(|(k, x)| x.is_null() || (!numeric.contains(&k.as_str()) && loose_scalars(x, numeric))),
        _ => false,
    }
}

/// Deserialises an optional integer written as a number or as a string of digits
/// (`party_id: 50001` or `party_id: "50001"`); anything else is refused saying so.
pub fn int_or_digits<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<i64>, D::Error> {
    struct IntOrDigits;
    impl<'v> serde::de::Visitor<'v> for IntOrDigits {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer (a number, or a string of digits)")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is too large for an id")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
            v.trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| E::custom(format!("expected an integer, got `{}`", quote(v))))
        }
        fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'v>>(
            self,
            d: D2,
        ) -> std::result::Result<Self::Value, D2::Error> {
            d.deserialize_any(self)
        }
    }
    d.deserialize_any(IntOrDigits)
}

/// A short, printable form of any input for an error message: at most [`QUOTE_CHARS`]
/// characters (then `…`), every character an id may not hold escaped as `\u{..}`.
pub fn quote(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == QUOTE_CHARS {
            out.push('…');
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// `s` with every character an id may not hold escaped as `\u{..}` (whole, not cut):
/// what the command line prints of anything read from a file or a server.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    if id_char_allowed(c) {
        out.push(c);
    } else {
        use std::fmt::Write;
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_are_not() {
        let names = ["register_role", "grant", "revoke"];
        assert_eq!(did_you_mean("regster_role", names), Some("register_role"));
        assert_eq!(did_you_mean("grnt", names), Some("grant"));
        assert_eq!(did_you_mean("party", names), None);
        assert_eq!(did_you_mean("grant", names), None);
    }
}
