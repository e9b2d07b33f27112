//! The compiled form of an XACML 3.0 policy: a tree of targets, rules and expressions
//! that evaluation walks without touching XML, plus an index of a policy's rules by the
//! action values their targets require.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// The XML Schema namespace of the primitive data types.
pub const XS: &str = "http://www.w3.org/2001/XMLSchema#";
pub const DT_STRING: &str = "http://www.w3.org/2001/XMLSchema#string";
pub const DT_BOOLEAN: &str = "http://www.w3.org/2001/XMLSchema#boolean";
pub const DT_INTEGER: &str = "http://www.w3.org/2001/XMLSchema#integer";
pub const DT_DOUBLE: &str = "http://www.w3.org/2001/XMLSchema#double";
pub const DT_TIME: &str = "http://www.w3.org/2001/XMLSchema#time";
pub const DT_DATE: &str = "http://www.w3.org/2001/XMLSchema#date";
pub const DT_DATETIME: &str = "http://www.w3.org/2001/XMLSchema#dateTime";

pub const CAT_SUBJECT: &str = "urn:oasis:names:tc:xacml:1.0:subject-category:access-subject";
pub const CAT_RESOURCE: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:resource";
pub const CAT_ACTION: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:action";
pub const CAT_ENVIRONMENT: &str = "urn:oasis:names:tc:xacml:3.0:attribute-category:environment";
pub const ACTION_ID: &str = "urn:oasis:names:tc:xacml:1.0:action:action-id";

/// Altinn's attribute ids.
pub const A_RESOURCE: &str = "urn:altinn:resource";
pub const A_ORG: &str = "urn:altinn:org";
pub const A_APP: &str = "urn:altinn:app";
pub const A_INSTANCE: &str = "urn:altinn:instance-id";
/// An instance named as a resource attribute: `{party_id}/{guid}`, or a bare `{guid}`
/// of the resource party (domain.md §8.8).
pub const A_RESOURCE_INSTANCE: &str = "urn:altinn:resource:instance-id";
pub const A_TASK: &str = "urn:altinn:task";
pub const A_END_EVENT: &str = "urn:altinn:end-event";
pub const A_PARTYID: &str = "urn:altinn:partyid";
pub const A_USERID: &str = "urn:altinn:userid";
pub const A_ROLECODE: &str = "urn:altinn:rolecode";
pub const A_PACKAGE: &str = "urn:altinn:accesspackage";
pub const A_PARTYTYPE: &str = "urn:altinn:partytype";
pub const A_ACCESS_LIST: &str = "urn:altinn:access-list";
pub const A_SYSTEMUSER: &str = "urn:altinn:systemuser:uuid";
pub const A_ORGNO: &str = "urn:altinn:organization:identifier-no";
pub const A_SSN: &str = "urn:altinn:person:identifier-no";

/// Expands a short data type (`string`, `integer`, `rfc822Name`, ...) to its URI; a
/// full URI is kept as it is.
pub fn expand_datatype(dt: &str) -> String {
    let dt = dt.trim();
    if dt.contains(':') || dt.contains('#') {
        return dt.to_string();
    }
    match dt {
        "dayTimeDuration" | "yearMonthDuration" | "rfc822Name" | "x500Name" | "ipAddress" | "dnsName"
        | "xpathExpression" => {
            let ns = if dt.ends_with("Duration") || dt == "xpathExpression" {
                "urn:oasis:names:tc:xacml:3.0:data-type:"
            } else if dt == "ipAddress" || dt == "dnsName" {
                "urn:oasis:names:tc:xacml:2.0:data-type:"
            } else {
                "urn:oasis:names:tc:xacml:1.0:data-type:"
            };
            format!("{ns}{dt}")
        }
        _ => format!("{XS}{dt}"),
    }
}

/// The short name of a data type URI (`string` for `...XMLSchema#string`).
pub fn short_datatype(dt: &str) -> &str {
    match dt.rfind(['#', ':']) {
        Some(i) => &dt[i + 1..],
        None => dt,
    }
}

/// The standard data types, shared without allocating.
const STANDARD_TYPES: &[&str] = &[
    DT_STRING,
    DT_BOOLEAN,
    DT_INTEGER,
    DT_DOUBLE,
    DT_TIME,
    DT_DATE,
    DT_DATETIME,
    "http://www.w3.org/2001/XMLSchema#anyURI",
    "http://www.w3.org/2001/XMLSchema#hexBinary",
    "http://www.w3.org/2001/XMLSchema#base64Binary",
    "urn:oasis:names:tc:xacml:3.0:data-type:dayTimeDuration",
    "urn:oasis:names:tc:xacml:3.0:data-type:yearMonthDuration",
    "urn:oasis:names:tc:xacml:1.0:data-type:rfc822Name",
    "urn:oasis:names:tc:xacml:1.0:data-type:x500Name",
    "urn:oasis:names:tc:xacml:2.0:data-type:ipAddress",
    "urn:oasis:names:tc:xacml:2.0:data-type:dnsName",
];

/// A data type URI: one of the standard ones (no allocation, so a decision that adds
/// hundreds of string values allocates only the values), or any other, shared.
#[derive(Clone)]
pub struct Dt(DtRepr);

#[derive(Clone)]
enum DtRepr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Dt {
    pub fn new(dt: &str) -> Dt {
        match STANDARD_TYPES.iter().find(|t| **t == dt) {
            Some(t) => Dt(DtRepr::Static(t)),
            None => Dt(DtRepr::Shared(Arc::from(dt))),
        }
    }
}

impl std::ops::Deref for Dt {
    type Target = str;
    fn deref(&self) -> &str {
        match &self.0 {
            DtRepr::Static(s) => s,
            DtRepr::Shared(s) => s,
        }
    }
}

impl PartialEq for Dt {
    fn eq(&self, other: &Dt) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Dt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Dt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// An attribute value: its data type (a URI) and its lexical form.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrValue {
    pub dt: Dt,
    pub v: String,
}

impl AttrValue {
    pub fn new(dt: &str, v: impl Into<String>) -> AttrValue {
        AttrValue {
            dt: Dt::new(dt),
            v: v.into(),
        }
    }
    pub fn string(v: impl Into<String>) -> AttrValue {
        AttrValue::new(DT_STRING, v)
    }
    pub fn boolean(b: bool) -> AttrValue {
        AttrValue::new(DT_BOOLEAN, if b { "true" } else { "false" })
    }
}

/// Where a policy reads an attribute from the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Designator {
    pub category: String,
    pub id: String,
    pub dt: String,
    pub issuer: Option<String>,
    pub must_be_present: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Value(AttrValue),
    Designator(Designator),
    /// An AttributeSelector (XPath into request content): not supported, so it always
    /// evaluates to an empty bag (or missing-attribute when it must be present).
    Selector {
        category: String,
        dt: String,
        must_be_present: bool,
    },
    /// A function application; `func` is the local name (`string-equal`).
    Apply {
        func: String,
        args: Vec<Expr>,
    },
    /// A function passed to a higher-order function.
    Function(String),
    VarRef(String),
}

/// The local name of a function or algorithm identifier (after the last `:`).
pub fn local_name(id: &str) -> &str {
    match id.rfind(':') {
        Some(i) => &id[i + 1..],
        None => id,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Local name of the match function.
    pub func: String,
    pub value: AttrValue,
    pub attr: Expr,
}

impl Match {
    /// The category and attribute id the match reads.
    pub fn category(&self) -> &str {
        match &self.attr {
            Expr::Designator(d) => &d.category,
            Expr::Selector { category, .. } => category,
            _ => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct AllOf(pub Vec<Match>);
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnyOf(pub Vec<AllOf>);
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target(pub Vec<AnyOf>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Permit,
    Deny,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssignmentExpr {
    pub id: String,
    pub category: Option<String>,
    pub issuer: Option<String>,
    pub expr: Expr,
}

/// An ObligationExpression or AdviceExpression.
#[derive(Debug, Clone, PartialEq)]
pub struct ObligationExpr {
    pub id: String,
    pub effect: Effect,
    pub advice: bool,
    pub assignments: Vec<AssignmentExpr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub effect: Effect,
    pub target: Target,
    pub condition: Option<Expr>,
    pub obligations: Vec<ObligationExpr>,
}

/// The combining algorithms (rule- and policy-combining identifiers are accepted alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    DenyOverrides,
    PermitOverrides,
    FirstApplicable,
    OnlyOneApplicable,
    DenyUnlessPermit,
    PermitUnlessDeny,
    /// XACML 1.x/2.0 deny-overrides (ordered or not): at policy level an
    /// Indeterminate child counts as Deny.
    LegacyDenyOverrides,
    LegacyPermitOverrides,
    /// An identifier the decision point does not know: the policy is kept, and every
    /// evaluation of it is Indeterminate (domain.md §8.4, as Altinn's combiner).
    Unknown,
}

impl Alg {
    /// The algorithm an identifier names; [`Alg::Unknown`] for any other identifier.
    pub fn parse(id: &str) -> Alg {
        let id = id.trim();
        if !(id.contains("rule-combining-algorithm") || id.contains("policy-combining-algorithm")) {
            return Alg::Unknown;
        }
        let legacy = id.contains(":1.0:") || id.contains(":1.1:");
        match local_name(id) {
            "deny-overrides" | "ordered-deny-overrides" if legacy => Alg::LegacyDenyOverrides,
            "permit-overrides" | "ordered-permit-overrides" if legacy => Alg::LegacyPermitOverrides,
            "deny-overrides" | "ordered-deny-overrides" => Alg::DenyOverrides,
            "permit-overrides" | "ordered-permit-overrides" => Alg::PermitOverrides,
            "first-applicable" => Alg::FirstApplicable,
            "only-one-applicable" => Alg::OnlyOneApplicable,
            "deny-unless-permit" => Alg::DenyUnlessPermit,
            "permit-unless-deny" => Alg::PermitUnlessDeny,
            _ => Alg::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    pub version: String,
    pub target: Target,
    pub alg: Alg,
    pub rules: Vec<Rule>,
    pub vars: HashMap<String, Expr>,
    pub obligations: Vec<ObligationExpr>,
    pub index: ActionIndex,
    /// The resource attributes that a match of the policy's or a rule's target reads
    /// with `MustBePresent="true"`: in Altinn's target mode a request lacking one makes
    /// the whole policy Indeterminate (domain.md §8.2). Empty for almost every policy.
    pub required_resource: Vec<Designator>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    pub id: String,
    pub version: String,
    pub target: Target,
    pub alg: Alg,
    pub children: Vec<Child>,
    pub obligations: Vec<ObligationExpr>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Child {
    Policy(Policy),
    Set(PolicySet),
    /// A reference to a policy (false) or policy set (true) by id, resolved through the
    /// evaluation's repository.
    Ref {
        set: bool,
        id: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Root {
    Policy(Policy),
    Set(PolicySet),
}

impl Root {
    pub fn id(&self) -> &str {
        match self {
            Root::Policy(p) => &p.id,
            Root::Set(s) => &s.id,
        }
    }
}

/// A policy compiled once: the tree, and the subject attribute ids its matches and
/// conditions read (the information point looks up only those).
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    pub root: Root,
    pub subject_attrs: BTreeSet<String>,
    subject_values: HashMap<String, Option<BTreeSet<String>>>,
    roles: Vec<(crate::model::RoleId, &'static str, String)>,
    /// The packages the policy can match, when it reads packages only through string
    /// matches; None when every held package must be offered.
    packages: Option<crate::catalog::PackageSet>,
    /// The document it was compiled from, when it is a world's policy: snapshots write
    /// the document and compile it again on load, so the compiled tree never needs a
    /// stable encoding of its own. None for policies compiled for one evaluation.
    pub source: Option<std::sync::Arc<str>>,
}

/// The rules of a policy by the action values their targets require: a rule whose
/// target needs `action-id` equal to one of a few values is listed under each of them
/// (lower case); every other rule is in `any`. A decision combines only the rules listed
/// under its action and those in `any`, in policy order; the others cannot match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ActionIndex {
    pub by_action: HashMap<String, Vec<usize>>,
    pub any: Vec<usize>,
}

fn is_equality(func: &str) -> bool {
    matches!(func, "string-equal" | "string-equal-ignore-case")
}

fn is_action_match(m: &Match) -> bool {
    matches!(&m.attr, Expr::Designator(d) if d.category == CAT_ACTION && d.id == ACTION_ID)
        && is_equality(&m.func)
}

/// The action values a target requires, when it pins them: some AnyOf (standard
/// semantics) or the set of AllOfs naming the action category (the Altinn way) where
/// every AllOf has an `action-id` equality match.
pub fn pinned_actions(t: &Target) -> Option<BTreeSet<String>> {
    // The Altinn way: AllOfs that mention the action category at all.
    let mut any_action_allof = false;
    let mut all_pinned = true;
    let mut values = BTreeSet::new();
    for any in &t.0 {
        for all in &any.0 {
            let mentions = all.0.iter().any(|m| m.category() == CAT_ACTION);
            if !mentions {
                continue;
            }
            any_action_allof = true;
            let pins: Vec<&Match> = all.0.iter().filter(|m| is_action_match(m)).collect();
            if pins.is_empty() {
                all_pinned = false;
            }
            for m in pins {
                values.insert(m.value.v.to_lowercase());
            }
        }
    }
    if !any_action_allof || !all_pinned {
        return None;
    }
    // Standard semantics: some AnyOf must consist only of AllOfs pinning the action,
    // otherwise an AllOf without an action match could let any action through.
    let standard_pins =
        t.0.iter()
            .any(|any| !any.0.is_empty() && any.0.iter().all(|all| all.0.iter().any(is_action_match)));
    if standard_pins { Some(values) } else { None }
}

/// The resource-category designators read with `MustBePresent="true"` by the matches of
/// a policy's target and its rules' targets (see [`Policy::required_resource`]).
pub fn required_resource(target: &Target, rules: &[Rule]) -> Vec<Designator> {
    let mut out: Vec<Designator> = Vec::new();
    let targets = std::iter::once(target).chain(rules.iter().map(|r| &r.target));
    for m in targets.flat_map(|t| {
        t.0.iter()
            .flat_map(|any| any.0.iter().flat_map(|all| all.0.iter()))
    }) {
        if let Expr::Designator(d) = &m.attr
            && d.must_be_present
            && d.category == CAT_RESOURCE
            && !out.contains(d)
        {
            out.push(d.clone());
        }
    }
    out
}

impl ActionIndex {
    pub fn build(rules: &[Rule]) -> ActionIndex {
        let mut ix = ActionIndex::default();
        for (i, r) in rules.iter().enumerate() {
            match pinned_actions(&r.target) {
                Some(vals) => {
                    for v in vals {
                        ix.by_action.entry(v).or_default().push(i);
                    }
                }
                None => ix.any.push(i),
            }
        }
        ix
    }

    /// The rules that can apply to a request with these action values, in policy order
    /// (None: every rule).
    pub fn candidates(&self, actions: &[&str]) -> Option<Vec<usize>> {
        if actions.is_empty() {
            return None;
        }
        let mut out: Vec<usize> = self.any.clone();
        for a in actions {
            if let Some(v) = self.by_action.get(&a.to_lowercase()) {
                out.extend_from_slice(v);
            }
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }
}

/// What a policy reads of the subject: the attribute ids, and per id the values it can
/// ever match (None when some function other than a string match in a target sees it).
#[derive(Debug, Clone, PartialEq, Default)]
struct Reads {
    attrs: BTreeSet<String>,
    values: HashMap<String, Option<BTreeSet<String>>>,
}

impl Reads {
    fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Designator(d) if d.category.contains("subject-category") => {
                self.attrs.insert(d.id.clone());
                self.values.insert(d.id.clone(), None);
            }
            Expr::Apply { args, .. } => args.iter().for_each(|a| self.expr(a)),
            _ => {}
        }
    }

    fn target(&mut self, t: &Target) {
        for any in &t.0 {
            for all in &any.0 {
                for m in &all.0 {
                    match &m.attr {
                        // MustBePresent sees the whole bag, so it keeps every value.
                        Expr::Designator(d)
                            if d.category.contains("subject-category")
                                && matches!(m.func.as_str(), "string-equal" | "string-equal-ignore-case")
                                && *m.value.dt == *DT_STRING
                                && !d.must_be_present =>
                        {
                            self.attrs.insert(d.id.clone());
                            if let Some(vals) = self
                                .values
                                .entry(d.id.clone())
                                .or_insert_with(|| Some(BTreeSet::new()))
                            {
                                vals.insert(m.value.v.trim().to_lowercase());
                            }
                        }
                        other => self.expr(other),
                    }
                }
            }
        }
    }

    fn policy(&mut self, p: &Policy) {
        self.target(&p.target);
        for r in &p.rules {
            self.target(&r.target);
            if let Some(c) = &r.condition {
                self.expr(c);
            }
        }
        p.vars.values().for_each(|e| self.expr(e));
    }

    fn set(&mut self, s: &PolicySet) {
        self.target(&s.target);
        for c in &s.children {
            match c {
                Child::Policy(p) => self.policy(p),
                Child::Set(s) => self.set(s),
                Child::Ref { .. } => {}
            }
        }
    }
}

impl CompiledPolicy {
    pub fn new(root: Root) -> CompiledPolicy {
        let mut reads = Reads::default();
        match &root {
            Root::Policy(p) => reads.policy(p),
            Root::Set(s) => reads.set(s),
        }
        let roles = role_values(&reads.values);
        let packages = package_filter(&reads.values);
        CompiledPolicy {
            root,
            subject_attrs: reads.attrs,
            subject_values: reads.values,
            roles,
            packages,
            source: None,
        }
    }

    /// The packages worth offering to this policy (None: all).
    pub fn package_filter(&self) -> Option<&crate::catalog::PackageSet> {
        self.packages.as_ref()
    }

    /// Every (role, attribute id, value) by which a holder of the role can meet this
    /// policy's subject matches, ordered by attribute id and value.
    pub fn role_values(&self) -> &[(crate::model::RoleId, &'static str, String)] {
        &self.roles
    }

    /// The values of a subject attribute that this policy can ever match, lower-cased:
    /// Some when the attribute is read only by `string-equal(-ignore-case)` matches in
    /// targets, so a value outside the set cannot change a decision. None when it is
    /// not read or read in some other way.
    pub fn subject_values(&self, id: &str) -> Option<&BTreeSet<String>> {
        self.subject_values.get(id).and_then(Option::as_ref)
    }

    /// Whether the policy's subject matches read this attribute id.
    pub fn reads_subject(&self, id: &str) -> bool {
        self.subject_attrs.contains(id)
    }
}

/// For a policy being compiled: every (role, attribute id, value) of the catalogue's
/// roles — the legacy code under `urn:altinn:rolecode` (lower case) and the role URN
/// split into attribute id and value — that the policy reads and can match. `reads`
/// has an entry per attribute id the policy reads: None when any value may matter,
/// Some(set) when only values in the (lower-cased) set can.
pub(crate) fn role_values(
    reads: &std::collections::HashMap<String, Option<std::collections::BTreeSet<String>>>,
) -> Vec<(crate::model::RoleId, &'static str, String)> {
    let c = crate::catalog::Catalog::builtin();
    let wanted = |id: &str, v: &str| match reads.get(id) {
        None => false,
        Some(None) => true,
        Some(Some(set)) => set.contains(&v.to_lowercase()),
    };
    let mut out = Vec::new();
    for (i, role) in c.roles.iter().enumerate() {
        let id = crate::model::RoleId(i as u16);
        if let Some(l) = &role.legacy_code {
            let v = l.to_lowercase();
            if wanted(A_ROLECODE, &v) {
                out.push((id, A_ROLECODE, v));
            }
        }
        if let Some((prefix, code)) = role.urn.rsplit_once(':') {
            let v = if prefix == A_ROLECODE {
                code.to_lowercase()
            } else {
                code.to_string()
            };
            if wanted(prefix, &v) {
                out.push((id, prefix, v));
            }
        }
    }
    out.sort_by(|a, b| (a.1, &a.2).cmp(&(b.1, &b.2)));
    out
}

/// For a policy being compiled: the catalogue's packages whose code the policy can
/// match, when it reads `urn:altinn:accesspackage` only through string matches.
pub(crate) fn package_filter(
    reads: &std::collections::HashMap<String, Option<std::collections::BTreeSet<String>>>,
) -> Option<crate::catalog::PackageSet> {
    let Some(Some(named)) = reads.get(A_PACKAGE) else {
        return None;
    };
    let c = crate::catalog::Catalog::builtin();
    let mut set = crate::catalog::PackageSet::EMPTY;
    for (i, p) in c.packages.iter().enumerate() {
        if named.contains(&p.code.to_lowercase()) {
            set.insert(crate::model::PackageId(i as u16));
        }
    }
    Some(set)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    const HEAD: &str = r#"<Policy xmlns="urn:oasis:names:tc:xacml:3.0:core:schema:wd-17" PolicyId="p" Version="1.0" RuleCombiningAlgId="urn:oasis:names:tc:xacml:3.0:rule-combining-algorithm:deny-overrides"><Target/>"#;
    const PKG: &str = "urn:altinn:accesspackage";

    fn subject_match(func: &str, value: &str) -> String {
        format!(
            r#"<Match MatchId="urn:oasis:names:tc:xacml:1.0:function:{func}"><AttributeValue DataType="http://www.w3.org/2001/XMLSchema#string">{value}</AttributeValue><AttributeDesignator AttributeId="{PKG}" Category="urn:oasis:names:tc:xacml:1.0:subject-category:access-subject" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/></Match>"#
        )
    }

    fn rule(target: &str, condition: &str) -> String {
        format!(
            r#"<Rule RuleId="r" Effect="Permit"><Target><AnyOf><AllOf>{target}</AllOf></AnyOf></Target>{condition}</Rule>"#
        )
    }

    fn compile(rules: &[String]) -> super::CompiledPolicy {
        let xml = format!("{HEAD}{}</Policy>", rules.concat());
        super::super::xml::parse_policy(xml.as_bytes()).unwrap()
    }

    #[test]
    fn values_read_only_by_string_matches_are_known() {
        let p = compile(&[
            rule(&subject_match("string-equal", "Regnskapsforer-Lonn"), ""),
            rule(&subject_match("string-equal-ignore-case", "skatt"), ""),
        ]);
        let v: Vec<&str> = p
            .subject_values(PKG)
            .unwrap()
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(v, ["regnskapsforer-lonn", "skatt"]);
        assert!(p.subject_values("urn:altinn:rolecode").is_none());
    }

    #[test]
    fn role_values_are_those_a_policy_names() {
        let code = |v: &str| subject_match("string-equal-ignore-case", v).replace(PKG, "urn:altinn:rolecode");
        let p = compile(&[rule(&code(" REGN "), "")]);
        let c = crate::catalog::Catalog::builtin();
        let got: Vec<(&str, &str, &str)> = p
            .role_values()
            .iter()
            .map(|(r, id, v)| (c.role(*r).code.as_str(), *id, v.as_str()))
            .collect();
        assert_eq!(got, [("regnskapsforer", "urn:altinn:rolecode", "regn")]);
        // MustBePresent sees the whole bag: every role's code is offered.
        let p = compile(&[rule(
            &code("REGN").replace(r#"MustBePresent="false""#, r#"MustBePresent="true""#),
            "",
        )]);
        assert!(p.subject_values("urn:altinn:rolecode").is_none());
        assert!(p.role_values().len() > 40);
    }

    #[test]
    fn values_seen_by_a_condition_or_another_function_are_not() {
        let bag_size = format!(
            r#"<Condition><Apply FunctionId="urn:oasis:names:tc:xacml:1.0:function:integer-greater-than"><Apply FunctionId="urn:oasis:names:tc:xacml:1.0:function:string-bag-size"><AttributeDesignator AttributeId="{PKG}" Category="urn:oasis:names:tc:xacml:1.0:subject-category:access-subject" DataType="http://www.w3.org/2001/XMLSchema#string" MustBePresent="false"/></Apply><AttributeValue DataType="http://www.w3.org/2001/XMLSchema#integer">3</AttributeValue></Apply></Condition>"#
        );
        let p = compile(&[rule(&subject_match("string-equal", "skatt"), &bag_size)]);
        assert!(p.reads_subject(PKG));
        assert!(p.subject_values(PKG).is_none());
        let p = compile(&[rule(&subject_match("string-starts-with", "skatt"), "")]);
        assert!(p.subject_values(PKG).is_none());
    }
}
