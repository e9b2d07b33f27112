//! XACML 3.0 in XML: policies and requests in, responses out. Elements are matched by
//! local name, so documents with or without the `xacml:` prefix (or any other) read the
//! same; a byte-order mark or UTF-16 encoding is handled before parsing.

use std::collections::HashMap;
use std::fmt::Write as _;

use roxmltree::{Document, Node};

use super::error::PdpError;
use super::policy::{
    AllOf, AnyOf, AssignmentExpr, AttrValue, Child, CompiledPolicy, Designator, Effect, Expr, Match,
    ObligationExpr, Policy, PolicySet, Root, Rule, Target, expand_datatype, local_name,
};
use super::request::{Attribute, Category, Request};
use super::response::{Decision, Response};

/// Decodes document bytes: UTF-8 with or without a BOM, or UTF-16 (either order, with a
/// BOM or guessed from the first character). The XML declaration is dropped because it
/// may name an encoding that no longer holds.
pub fn decode(bytes: &[u8]) -> Result<String, PdpError> {
    let utf16 = |b: &[u8], le: bool| -> Result<String, PdpError> {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|c| {
                if le {
                    u16::from_le_bytes([c[0], c[1]])
                } else {
                    u16::from_be_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16(&units).map_err(|e| PdpError::Syntax(format!("invalid UTF-16: {e}")))
    };
    let text = match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => std::str::from_utf8(rest)
            .map(str::to_string)
            .map_err(|e| PdpError::Syntax(format!("invalid UTF-8: {e}")))?,
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true)?,
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false)?,
        [0, b, ..] if *b != 0 => utf16(bytes, false)?,
        [a, 0, ..] if *a != 0 => utf16(bytes, true)?,
        _ => std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|e| PdpError::Syntax(format!("invalid UTF-8: {e}")))?,
    };
    let text = text.trim_start_matches('\u{feff}');
    let t = text.trim_start();
    if t.starts_with("<?xml")
        && let Some(end) = t.find("?>")
    {
        return Ok(t[end + 2..].to_string());
    }
    Ok(text.to_string())
}

fn parse_doc(text: &str) -> Result<Document<'_>, PdpError> {
    Document::parse(text).map_err(|e| PdpError::Syntax(format!("not well-formed XML: {e}")))
}

fn name<'a>(n: &Node<'a, '_>) -> &'a str {
    n.tag_name().name()
}

fn children<'a, 'i>(n: Node<'a, 'i>) -> impl Iterator<Item = Node<'a, 'i>> {
    n.children().filter(|c| c.is_element())
}

fn req_attr(n: &Node<'_, '_>, a: &str) -> Result<String, PdpError> {
    n.attribute(a)
        .map(str::to_string)
        .ok_or_else(|| PdpError::Syntax(format!("<{}> lacks the required attribute {a}", name(n))))
}

fn text_of(n: &Node<'_, '_>) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<String>()
}

fn bool_attr(n: &Node<'_, '_>, a: &str) -> bool {
    n.attribute(a)
        .is_some_and(|v| v.trim() == "true" || v.trim() == "1")
}

// ----------------------------------------------------------------------------------
// Policies

/// The deepest a policy document's elements may nest (Altinn's policies nest about ten
/// deep). Compiling and evaluating a policy recurse through its elements, so without a
/// bound a policy of a few hundred kilobytes overflows the thread's stack.
pub const MAX_POLICY_DEPTH: usize = 64;

/// The most expression nodes a policy document's conditions and obligations (every
/// policy of a set together) may amount to with every variable reference replaced by
/// its definition: what one decision may have to evaluate. Variables that refer to each
/// other twice over grow it exponentially. (Bag functions such as `any-of-all` still
/// cost the product of the request's bags, which the body's size bounds.)
pub const MAX_POLICY_EXPANSION: usize = 100_000;

/// Parses and compiles a policy or policy set document: refused (a syntax error) when it
/// nests deeper than [`MAX_POLICY_DEPTH`], when a variable refers to itself (directly or
/// through others), or when its expressions expand past [`MAX_POLICY_DEPTH`] levels or
/// [`MAX_POLICY_EXPANSION`] nodes.
pub fn parse_policy(bytes: &[u8]) -> Result<CompiledPolicy, PdpError> {
    let text = decode(bytes)?;
    let doc = parse_doc(&text)?;
    let root = doc.root_element();
    let mut budget = MAX_POLICY_EXPANSION;
    let deepest = element_depth(root);
    if deepest > MAX_POLICY_DEPTH {
        return Err(PdpError::Syntax(format!(
            "the policy nests its elements {deepest} deep, more than the limit of {MAX_POLICY_DEPTH}"
        )));
    }
    let r = match name(&root) {
        "Policy" => Root::Policy(policy(root, &mut budget)?),
        "PolicySet" => Root::Set(policy_set(root, &mut budget)?),
        other => {
            return Err(PdpError::Syntax(format!(
                "expected <Policy> or <PolicySet>, got <{other}>"
            )));
        }
    };
    Ok(CompiledPolicy::new(r))
}

/// How deep elements nest below and including `n`, without recursion: each node's
/// depth is its parent's plus one, and a parent comes before its children in document
/// order.
fn element_depth(n: Node<'_, '_>) -> usize {
    let slots = n.descendants().map(|d| d.id().get_usize() + 1).max().unwrap_or(0);
    let mut depth = vec![0usize; slots];
    let mut deepest = 0;
    for d in n.descendants().filter(|d| d.is_element()) {
        let above = d
            .parent()
            .and_then(|p| depth.get(p.id().get_usize()).copied())
            .unwrap_or(0);
        depth[d.id().get_usize()] = above + 1;
        deepest = deepest.max(above + 1);
    }
    deepest
}

/// The size of an expression with its variable references expanded: nodes and depth.
#[derive(Clone, Copy, Default)]
struct Expanded {
    nodes: usize,
    depth: usize,
}

/// Checks a policy's variables and expressions against [`MAX_POLICY_EXPANSION`] and
/// [`MAX_POLICY_DEPTH`], and that no variable refers to itself. Each variable is sized
/// once (`sized`); `open` holds the variables being sized, a cycle's witness. `level` is
/// how deep `e` sits in the expansion, so the walk itself never nests deeper than the
/// limit.
fn check_expansion(p: &Policy, budget: &mut usize) -> Result<(), PdpError> {
    fn too_deep() -> PdpError {
        PdpError::Syntax(format!(
            "the policy's expressions nest more than {MAX_POLICY_DEPTH} deep with their variables expanded"
        ))
    }
    fn too_big() -> PdpError {
        PdpError::Syntax(format!(
            "the policy's expressions hold more than {MAX_POLICY_EXPANSION} nodes with their variables expanded"
        ))
    }
    fn size<'a>(
        e: &'a Expr,
        level: usize,
        p: &'a Policy,
        sized: &mut HashMap<&'a str, Expanded>,
        open: &mut Vec<&'a str>,
    ) -> Result<Expanded, PdpError> {
        if level >= MAX_POLICY_DEPTH {
            return Err(too_deep());
        }
        let out = match e {
            Expr::Apply { args, .. } => {
                let mut sum = Expanded { nodes: 1, depth: 0 };
                for a in args {
                    let x = size(a, level + 1, p, sized, open)?;
                    sum.nodes = sum.nodes.saturating_add(x.nodes);
                    sum.depth = sum.depth.max(x.depth);
                }
                Expanded {
                    nodes: sum.nodes,
                    depth: sum.depth + 1,
                }
            }
            Expr::VarRef(id) => {
                if let Some(x) = sized.get(id.as_str()) {
                    *x
                } else if let Some(at) = open.iter().position(|v| *v == id.as_str()) {
                    let mut chain = open[at..].to_vec();
                    chain.push(id);
                    return Err(PdpError::Syntax(format!(
                        "variable `{id}` refers to itself ({})",
                        chain.join(" → ")
                    )));
                } else if let Some(def) = p.vars.get(id) {
                    open.push(id);
                    let x = size(def, level + 1, p, sized, open)?;
                    open.pop();
                    let x = Expanded {
                        nodes: x.nodes.saturating_add(1),
                        depth: x.depth + 1,
                    };
                    sized.insert(id, x);
                    x
                } else {
                    // An unknown variable is answered at evaluation (a processing error).
                    Expanded { nodes: 1, depth: 1 }
                }
            }
            _ => Expanded { nodes: 1, depth: 1 },
        };
        if level + out.depth > MAX_POLICY_DEPTH {
            return Err(too_deep());
        }
        if out.nodes > MAX_POLICY_EXPANSION {
            return Err(too_big());
        }
        Ok(out)
    }
    let (mut sized, mut open) = (HashMap::new(), Vec::new());
    let mut ids: Vec<&String> = p.vars.keys().collect();
    ids.sort();
    let var_refs: Vec<Expr> = ids.into_iter().map(|id| Expr::VarRef(id.clone())).collect();
    let exprs = p
        .rules
        .iter()
        .flat_map(|r| {
            r.condition
                .iter()
                .chain(r.obligations.iter().flat_map(assignments))
        })
        .chain(p.obligations.iter().flat_map(assignments));
    // What a decision evaluates counts against the budget...
    for e in exprs {
        let nodes = size(e, 0, p, &mut sized, &mut open)?.nodes;
        *budget = budget.checked_sub(nodes).ok_or_else(too_big)?;
    }
    // ...and a variable nobody uses is still checked for cycles and size.
    for e in &var_refs {
        size(e, 0, p, &mut sized, &mut open)?;
    }
    Ok(())
}

fn assignments(o: &ObligationExpr) -> impl Iterator<Item = &Expr> {
    o.assignments.iter().map(|a| &a.expr)
}

fn alg_of(n: &Node<'_, '_>, attr: &str) -> Result<super::policy::Alg, PdpError> {
    // An unknown identifier is kept: evaluation answers Indeterminate (domain.md §8.4).
    Ok(super::policy::Alg::parse(&req_attr(n, attr)?))
}

/// `budget`: the expression nodes the rest of the document may still expand to
/// ([`MAX_POLICY_EXPANSION`] for the whole document, every policy of a set together).
fn policy(n: Node<'_, '_>, budget: &mut usize) -> Result<Policy, PdpError> {
    let id = req_attr(&n, "PolicyId")?;
    let alg = alg_of(&n, "RuleCombiningAlgId")?;
    let mut p = Policy {
        id,
        version: n.attribute("Version").unwrap_or("1.0").to_string(),
        target: Target::default(),
        alg,
        rules: Vec::new(),
        vars: HashMap::new(),
        obligations: Vec::new(),
        index: Default::default(),
        required_resource: Vec::new(),
    };
    let mut seen_target = false;
    for c in children(n) {
        match name(&c) {
            "Target" => {
                p.target = target(c)?;
                seen_target = true;
            }
            "Rule" => p.rules.push(rule(c)?),
            "VariableDefinition" => {
                let vid = req_attr(&c, "VariableId")?;
                let e = children(c)
                    .next()
                    .ok_or_else(|| PdpError::Syntax("empty <VariableDefinition>".into()))?;
                p.vars.insert(vid, expr(e)?);
            }
            "ObligationExpressions" | "AdviceExpressions" => p.obligations.extend(obligations(c)?),
            "Description"
            | "PolicyIssuer"
            | "PolicyDefaults"
            | "CombinerParameters"
            | "RuleCombinerParameters" => {}
            other => return Err(PdpError::Syntax(format!("unexpected <{other}> in <Policy>"))),
        }
    }
    if !seen_target {
        return Err(PdpError::Syntax("<Policy> lacks its <Target>".into()));
    }
    check_expansion(&p, budget)?;
    p.index = super::policy::ActionIndex::build(&p.rules);
    p.required_resource = super::policy::required_resource(&p.target, &p.rules);
    Ok(p)
}

fn policy_set(n: Node<'_, '_>, budget: &mut usize) -> Result<PolicySet, PdpError> {
    let mut s = PolicySet {
        id: req_attr(&n, "PolicySetId")?,
        version: n.attribute("Version").unwrap_or("1.0").to_string(),
        target: Target::default(),
        alg: alg_of(&n, "PolicyCombiningAlgId")?,
        children: Vec::new(),
        obligations: Vec::new(),
    };
    for c in children(n) {
        match name(&c) {
            "Target" => s.target = target(c)?,
            "Policy" => s.children.push(Child::Policy(policy(c, budget)?)),
            "PolicySet" => s.children.push(Child::Set(policy_set(c, budget)?)),
            "PolicyIdReference" => s.children.push(Child::Ref {
                set: false,
                id: text_of(&c).trim().to_string(),
            }),
            "PolicySetIdReference" => s.children.push(Child::Ref {
                set: true,
                id: text_of(&c).trim().to_string(),
            }),
            "ObligationExpressions" | "AdviceExpressions" => s.obligations.extend(obligations(c)?),
            _ => {}
        }
    }
    Ok(s)
}

fn rule(n: Node<'_, '_>) -> Result<Rule, PdpError> {
    let effect = match req_attr(&n, "Effect")?.trim() {
        "Permit" => Effect::Permit,
        "Deny" => Effect::Deny,
        other => return Err(PdpError::Syntax(format!("unknown rule effect `{other}`"))),
    };
    let mut r = Rule {
        id: req_attr(&n, "RuleId")?,
        effect,
        target: Target::default(),
        condition: None,
        obligations: Vec::new(),
    };
    for c in children(n) {
        match name(&c) {
            "Target" => r.target = target(c)?,
            "Condition" => {
                let e = children(c)
                    .next()
                    .ok_or_else(|| PdpError::Syntax("empty <Condition>".into()))?;
                r.condition = Some(expr(e)?);
            }
            "ObligationExpressions" | "AdviceExpressions" => r.obligations.extend(obligations(c)?),
            "Description" => {}
            other => return Err(PdpError::Syntax(format!("unexpected <{other}> in <Rule>"))),
        }
    }
    Ok(r)
}

fn target(n: Node<'_, '_>) -> Result<Target, PdpError> {
    let mut t = Target::default();
    for any in children(n) {
        if name(&any) != "AnyOf" {
            return Err(PdpError::Syntax(format!(
                "unexpected <{}> in <Target>",
                name(&any)
            )));
        }
        let mut a = AnyOf::default();
        for all in children(any) {
            if name(&all) != "AllOf" {
                return Err(PdpError::Syntax(format!(
                    "unexpected <{}> in <AnyOf>",
                    name(&all)
                )));
            }
            let mut al = AllOf::default();
            for m in children(all) {
                al.0.push(match_(m)?);
            }
            if al.0.is_empty() {
                return Err(PdpError::Syntax("an <AllOf> needs at least one <Match>".into()));
            }
            a.0.push(al);
        }
        t.0.push(a);
    }
    Ok(t)
}

fn match_(n: Node<'_, '_>) -> Result<Match, PdpError> {
    if name(&n) != "Match" {
        return Err(PdpError::Syntax(format!("unexpected <{}> in <AllOf>", name(&n))));
    }
    let func = local_name(&req_attr(&n, "MatchId")?).to_string();
    let mut value = None;
    let mut attr = None;
    for c in children(n) {
        match name(&c) {
            "AttributeValue" => value = Some(attr_value(&c)?),
            "AttributeDesignator" | "AttributeSelector" => attr = Some(expr(c)?),
            other => return Err(PdpError::Syntax(format!("unexpected <{other}> in <Match>"))),
        }
    }
    match (value, attr) {
        (Some(value), Some(attr)) => Ok(Match { func, value, attr }),
        _ => Err(PdpError::Syntax(
            "a <Match> needs an <AttributeValue> and a designator or selector".into(),
        )),
    }
}

fn attr_value(n: &Node<'_, '_>) -> Result<AttrValue, PdpError> {
    let dt = expand_datatype(&req_attr(n, "DataType")?);
    Ok(AttrValue::new(&dt, text_of(n)))
}

fn expr(n: Node<'_, '_>) -> Result<Expr, PdpError> {
    Ok(match name(&n) {
        "AttributeValue" => Expr::Value(attr_value(&n)?),
        "AttributeDesignator" => Expr::Designator(Designator {
            category: req_attr(&n, "Category")?,
            id: req_attr(&n, "AttributeId")?,
            dt: expand_datatype(&req_attr(&n, "DataType")?),
            issuer: n.attribute("Issuer").map(str::to_string),
            must_be_present: bool_attr(&n, "MustBePresent"),
        }),
        "AttributeSelector" => Expr::Selector {
            category: req_attr(&n, "Category")?,
            dt: expand_datatype(&req_attr(&n, "DataType")?),
            must_be_present: bool_attr(&n, "MustBePresent"),
        },
        "Apply" => {
            let func = local_name(&req_attr(&n, "FunctionId")?).to_string();
            let args = children(n)
                .filter(|c| name(c) != "Description")
                .map(expr)
                .collect::<Result<Vec<_>, _>>()?;
            Expr::Apply { func, args }
        }
        "Function" => Expr::Function(local_name(&req_attr(&n, "FunctionId")?).to_string()),
        "VariableReference" => Expr::VarRef(req_attr(&n, "VariableId")?),
        other => return Err(PdpError::Syntax(format!("unexpected expression <{other}>"))),
    })
}

fn obligations(n: Node<'_, '_>) -> Result<Vec<ObligationExpr>, PdpError> {
    let mut out = Vec::new();
    for c in children(n) {
        let advice = match name(&c) {
            "ObligationExpression" => false,
            "AdviceExpression" => true,
            other => {
                return Err(PdpError::Syntax(format!(
                    "unexpected <{other}> among obligations"
                )));
            }
        };
        let (id_attr, eff_attr) = if advice {
            ("AdviceId", "AppliesTo")
        } else {
            ("ObligationId", "FulfillOn")
        };
        let effect = match req_attr(&c, eff_attr)?.trim() {
            "Permit" => Effect::Permit,
            "Deny" => Effect::Deny,
            other => return Err(PdpError::Syntax(format!("unknown effect `{other}`"))),
        };
        let mut assignments = Vec::new();
        for a in children(c) {
            if name(&a) != "AttributeAssignmentExpression" {
                continue;
            }
            let e = children(a)
                .next()
                .ok_or_else(|| PdpError::Syntax("empty <AttributeAssignmentExpression>".into()))?;
            assignments.push(AssignmentExpr {
                id: req_attr(&a, "AttributeId")?,
                category: a.attribute("Category").map(str::to_string),
                issuer: a.attribute("Issuer").map(str::to_string),
                expr: expr(e)?,
            });
        }
        out.push(ObligationExpr {
            id: req_attr(&c, id_attr)?,
            effect,
            advice,
            assignments,
        });
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------
// Requests

/// Parses a request document.
pub fn parse_request(bytes: &[u8]) -> Result<Request, PdpError> {
    let text = decode(bytes)?;
    let doc = parse_doc(&text)?;
    let root = doc.root_element();
    if name(&root) != "Request" {
        return Err(PdpError::Syntax(format!(
            "expected <Request>, got <{}>",
            name(&root)
        )));
    }
    let mut req = Request {
        return_policy_ids: bool_attr(&root, "ReturnPolicyIdList"),
        combined: bool_attr(&root, "CombinedDecision"),
        ..Request::default()
    };
    for c in children(root) {
        match name(&c) {
            "Attributes" => {
                let mut cat = Category {
                    category: req_attr(&c, "Category")?,
                    xml_id: c
                        .attributes()
                        .find(|a| a.name() == "id")
                        .map(|a| a.value().to_string()),
                    attrs: Vec::new(),
                };
                for a in children(c) {
                    match name(&a) {
                        "Attribute" => {
                            let mut values = Vec::new();
                            for v in children(a) {
                                if name(&v) == "AttributeValue" {
                                    values.push(attr_value(&v)?);
                                }
                            }
                            cat.attrs.push(Attribute {
                                id: req_attr(&a, "AttributeId")?,
                                issuer: a.attribute("Issuer").map(str::to_string),
                                include: bool_attr(&a, "IncludeInResult"),
                                values,
                            });
                        }
                        "Content" => {}
                        other => {
                            return Err(PdpError::Syntax(format!("unexpected <{other}> in <Attributes>")));
                        }
                    }
                }
                req.categories.push(cat);
            }
            "MultiRequests" => {
                for r in children(c) {
                    if name(&r) != "RequestReference" {
                        continue;
                    }
                    let refs = children(r)
                        .filter(|x| name(x) == "AttributesReference")
                        .map(|x| req_attr(&x, "ReferenceId"))
                        .collect::<Result<Vec<_>, _>>()?;
                    req.multi.push(refs);
                }
            }
            "RequestDefaults" => {}
            other => return Err(PdpError::Syntax(format!("unexpected <{other}> in <Request>"))),
        }
    }
    Ok(req)
}

// ----------------------------------------------------------------------------------
// Responses

pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// Writes a response document.
pub fn write_response(r: &Response) -> String {
    let mut o = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Response xmlns=\"urn:oasis:names:tc:xacml:3.0:core:schema:wd-17\">",
    );
    for res in &r.results {
        o.push_str("<Result><Decision>");
        o.push_str(match res.decision {
            Decision::Permit => "Permit",
            Decision::Deny => "Deny",
            Decision::NotApplicable => "NotApplicable",
            Decision::Indeterminate => "Indeterminate",
        });
        o.push_str("</Decision>");
        let _ = write!(o, "<Status><StatusCode Value=\"{}\"/>", escape(&res.status_code));
        if let Some(m) = &res.status_message {
            let _ = write!(o, "<StatusMessage>{}</StatusMessage>", escape(m));
        }
        o.push_str("</Status>");
        for (tag, list, id_attr) in [
            ("Obligation", &res.obligations, "ObligationId"),
            ("Advice", &res.advice, "AdviceId"),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = write!(o, "<{tag}s>");
            for ob in list {
                let _ = write!(o, "<{tag} {id_attr}=\"{}\">", escape(&ob.id));
                for a in &ob.assignments {
                    let _ = write!(
                        o,
                        "<AttributeAssignment AttributeId=\"{}\" DataType=\"{}\"",
                        escape(&a.id),
                        escape(&a.value.dt)
                    );
                    if let Some(c) = &a.category {
                        let _ = write!(o, " Category=\"{}\"", escape(c));
                    }
                    if let Some(i) = &a.issuer {
                        let _ = write!(o, " Issuer=\"{}\"", escape(i));
                    }
                    let _ = write!(o, ">{}</AttributeAssignment>", escape(&a.value.v));
                }
                let _ = write!(o, "</{tag}>");
            }
            let _ = write!(o, "</{tag}s>");
        }
        for cat in &res.attributes {
            let _ = write!(o, "<Attributes Category=\"{}\">", escape(&cat.category));
            for a in &cat.attrs {
                let _ = write!(
                    o,
                    "<Attribute IncludeInResult=\"true\" AttributeId=\"{}\"",
                    escape(&a.id)
                );
                if let Some(i) = &a.issuer {
                    let _ = write!(o, " Issuer=\"{}\"", escape(i));
                }
                o.push('>');
                for v in &a.values {
                    let _ = write!(
                        o,
                        "<AttributeValue DataType=\"{}\">{}</AttributeValue>",
                        escape(&v.dt),
                        escape(&v.v)
                    );
                }
                o.push_str("</Attribute>");
            }
            o.push_str("</Attributes>");
        }
        if !res.policy_ids.is_empty() {
            o.push_str("<PolicyIdentifierList>");
            for (set, id, version) in &res.policy_ids {
                let tag = if *set {
                    "PolicySetIdReference"
                } else {
                    "PolicyIdReference"
                };
                let _ = write!(o, "<{tag} Version=\"{}\">{}</{tag}>", escape(version), escape(id));
            }
            o.push_str("</PolicyIdentifierList>");
        }
        o.push_str("</Result>");
    }
    o.push_str("</Response>");
    o
}

/// Parses a response document (used to compare against expected responses).
pub fn parse_response(bytes: &[u8]) -> Result<Response, PdpError> {
    let text = decode(bytes)?;
    let doc = parse_doc(&text)?;
    let root = doc.root_element();
    let mut out = Response::default();
    for r in children(root).filter(|c| name(c) == "Result") {
        let mut res = super::response::ResultItem::new(Decision::NotApplicable);
        for c in children(r) {
            match name(&c) {
                "Decision" => {
                    res.decision = match text_of(&c).trim() {
                        "Permit" => Decision::Permit,
                        "Deny" => Decision::Deny,
                        "NotApplicable" => Decision::NotApplicable,
                        _ => Decision::Indeterminate,
                    }
                }
                "Status" => {
                    if let Some(sc) = children(c).find(|x| name(x) == "StatusCode") {
                        res.status_code = sc.attribute("Value").unwrap_or_default().to_string();
                    }
                }
                "Obligations" | "AssociatedAdvice" => {
                    for ob in children(c) {
                        let id = ob
                            .attribute("ObligationId")
                            .or_else(|| ob.attribute("AdviceId"))
                            .unwrap_or_default()
                            .to_string();
                        let assignments = children(ob)
                            .map(|a| super::response::Assignment {
                                id: a.attribute("AttributeId").unwrap_or_default().to_string(),
                                category: a.attribute("Category").map(str::to_string),
                                issuer: a.attribute("Issuer").map(str::to_string),
                                value: AttrValue::new(
                                    &expand_datatype(a.attribute("DataType").unwrap_or("string")),
                                    text_of(&a),
                                ),
                            })
                            .collect();
                        let o = super::response::Obligation { id, assignments };
                        if name(&c) == "Obligations" {
                            res.obligations.push(o);
                        } else {
                            res.advice.push(o);
                        }
                    }
                }
                "Attributes" => {
                    let mut cat = Category {
                        category: c.attribute("Category").unwrap_or_default().to_string(),
                        xml_id: None,
                        attrs: Vec::new(),
                    };
                    for a in children(c).filter(|a| name(a) == "Attribute") {
                        cat.attrs.push(Attribute {
                            id: a.attribute("AttributeId").unwrap_or_default().to_string(),
                            issuer: a.attribute("Issuer").map(str::to_string),
                            include: true,
                            values: children(a)
                                .filter(|v| name(v) == "AttributeValue")
                                .map(|v| {
                                    AttrValue::new(
                                        &expand_datatype(v.attribute("DataType").unwrap_or("string")),
                                        text_of(&v),
                                    )
                                })
                                .collect(),
                        });
                    }
                    res.attributes.push(cat);
                }
                _ => {}
            }
        }
        out.results.push(res);
    }
    Ok(out)
}
