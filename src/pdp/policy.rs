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

/// An attribute value: its data type (a URI) and its lexical form.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrValue {
    pub dt: Arc<str>,
    pub v: String,
}

impl AttrValue {
    pub fn new(dt: &str, v: impl Into<String>) -> AttrValue {
        AttrValue {
            dt: Arc::from(dt),
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
}

impl Alg {
    pub fn parse(id: &str) -> Option<Alg> {
        let id = id.trim();
        if !(id.contains("rule-combining-algorithm") || id.contains("policy-combining-algorithm")) {
            return None;
        }
        let legacy = id.contains(":1.0:") || id.contains(":1.1:");
        Some(match local_name(id) {
            "deny-overrides" | "ordered-deny-overrides" if legacy => Alg::LegacyDenyOverrides,
            "permit-overrides" | "ordered-permit-overrides" if legacy => Alg::LegacyPermitOverrides,
            "deny-overrides" | "ordered-deny-overrides" => Alg::DenyOverrides,
            "permit-overrides" | "ordered-permit-overrides" => Alg::PermitOverrides,
            "first-applicable" => Alg::FirstApplicable,
            "only-one-applicable" => Alg::OnlyOneApplicable,
            "deny-unless-permit" => Alg::DenyUnlessPermit,
            "permit-unless-deny" => Alg::PermitUnlessDeny,
            _ => return None,
        })
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

fn collect_expr(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::Designator(d) if d.category.contains("subject-category") => {
            out.insert(d.id.clone());
        }
        Expr::Apply { args, .. } => args.iter().for_each(|a| collect_expr(a, out)),
        _ => {}
    }
}

fn collect_target(t: &Target, out: &mut BTreeSet<String>) {
    for any in &t.0 {
        for all in &any.0 {
            for m in &all.0 {
                collect_expr(&m.attr, out);
            }
        }
    }
}

fn collect_policy(p: &Policy, out: &mut BTreeSet<String>) {
    collect_target(&p.target, out);
    for r in &p.rules {
        collect_target(&r.target, out);
        if let Some(c) = &r.condition {
            collect_expr(c, out);
        }
    }
    p.vars.values().for_each(|e| collect_expr(e, out));
}

fn collect_set(s: &PolicySet, out: &mut BTreeSet<String>) {
    collect_target(&s.target, out);
    for c in &s.children {
        match c {
            Child::Policy(p) => collect_policy(p, out),
            Child::Set(s) => collect_set(s, out),
            Child::Ref { .. } => {}
        }
    }
}

impl CompiledPolicy {
    pub fn new(root: Root) -> CompiledPolicy {
        let mut subject_attrs = BTreeSet::new();
        match &root {
            Root::Policy(p) => collect_policy(p, &mut subject_attrs),
            Root::Set(s) => collect_set(s, &mut subject_attrs),
        }
        CompiledPolicy {
            root,
            subject_attrs,
            source: None,
        }
    }

    /// Whether the policy's subject matches read this attribute id.
    pub fn reads_subject(&self, id: &str) -> bool {
        self.subject_attrs.contains(id)
    }
}
