//! Evaluation of compiled policies against one individual request: targets (standard
//! or the Altinn way, domain.md §8.2), conditions and their functions, every standard
//! combining algorithm, obligations and advice.

use std::cmp::Ordering;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Timelike};

use super::policy::{
    ACTION_ID, Alg, AllOf, AttrValue, CAT_ACTION, CAT_ENVIRONMENT, Child, CompiledPolicy, DT_DATE,
    DT_DATETIME, DT_DOUBLE, DT_INTEGER, DT_STRING, DT_TIME, Designator, Effect, Expr, Match, ObligationExpr,
    Policy, PolicySet, Root, Rule, Target, expand_datatype, short_datatype,
};
use super::request::Category;
use super::response::{
    Assignment, Decision, Obligation, ResultItem, STATUS_MISSING, STATUS_OK, STATUS_PROCESSING,
};

/// Why an expression could not be evaluated: a status code and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub code: &'static str,
    pub msg: String,
}

fn processing(msg: impl Into<String>) -> Fault {
    Fault {
        code: STATUS_PROCESSING,
        msg: msg.into(),
    }
}

type R<T> = Result<T, Fault>;

/// How target matches are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetMode {
    /// XACML 3.0: every AnyOf must match, an AnyOf matches when one AllOf does.
    Standard,
    /// Altinn's PDP: category by category, any AllOf of the target (domain.md §8.2).
    Altinn,
}

/// What an evaluation may consult besides the request.
pub struct Ctx<'a> {
    pub cats: &'a [Category],
    pub now: DateTime<FixedOffset>,
    pub mode: TargetMode,
    /// Policies that `PolicyIdReference`/`PolicySetIdReference` may name.
    pub repo: &'a [CompiledPolicy],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dec {
    Permit,
    Deny,
    Na,
    IndD,
    IndP,
    IndDp,
}

#[derive(Debug, Clone)]
struct Out {
    d: Dec,
    fault: Option<Fault>,
    obl: Vec<Obligation>,
    adv: Vec<Obligation>,
    ids: Vec<(bool, String, String)>,
}

impl Out {
    fn new(d: Dec) -> Out {
        Out {
            d,
            fault: None,
            obl: Vec::new(),
            adv: Vec::new(),
            ids: Vec::new(),
        }
    }
    fn ind(e: Effect, f: Fault) -> Out {
        Out {
            fault: Some(f),
            ..Out::new(match e {
                Effect::Permit => Dec::IndP,
                Effect::Deny => Dec::IndD,
            })
        }
    }
    fn ind_d(d: Dec, f: Option<Fault>) -> Out {
        Out {
            fault: f,
            ..Out::new(d)
        }
    }
}

#[derive(Debug, Clone)]
enum Val {
    One(AttrValue),
    Bag(Vec<AttrValue>),
    Func(String),
}

enum M {
    Yes,
    No,
    Ind(Fault),
}

/// Evaluates a compiled policy for one individual request.
pub fn evaluate(p: &CompiledPolicy, ctx: &Ctx<'_>) -> ResultItem {
    let out = match &p.root {
        Root::Policy(pol) => ctx.policy(pol),
        Root::Set(s) => ctx.policy_set(s, 0),
    };
    finish(out)
}

fn finish(out: Out) -> ResultItem {
    let decision = match out.d {
        Dec::Permit => Decision::Permit,
        Dec::Deny => Decision::Deny,
        Dec::Na => Decision::NotApplicable,
        _ => Decision::Indeterminate,
    };
    let mut r = ResultItem::new(decision);
    if decision == Decision::Indeterminate {
        let f = out.fault.unwrap_or_else(|| processing("indeterminate"));
        r.status_code = f.code.to_string();
        r.status_message = Some(f.msg);
    } else {
        r.status_code = STATUS_OK.to_string();
    }
    if matches!(decision, Decision::Permit | Decision::Deny) {
        r.obligations = out.obl;
        r.advice = out.adv;
    }
    r.policy_ids = out.ids;
    r
}

const TYPES: &[&str] = &[
    "dayTimeDuration",
    "yearMonthDuration",
    "base64Binary",
    "rfc822Name",
    "hexBinary",
    "ipAddress",
    "x500Name",
    "dateTime",
    "boolean",
    "integer",
    "dnsName",
    "string",
    "double",
    "anyURI",
    "time",
    "date",
];

fn split_type(f: &str) -> Option<(&'static str, &str)> {
    TYPES
        .iter()
        .filter_map(|t| {
            f.strip_prefix(t)
                .and_then(|r| r.strip_prefix('-'))
                .map(|r| (*t, r))
        })
        .max_by_key(|(t, _)| t.len())
}

// ----------------------------------------------------------------------------------
// Typed values

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum T {
    S(String),
    B(bool),
    I(i64),
    F(f64),
    /// Nanoseconds (time of day normalised to UTC, dateTime since the epoch).
    N(i128),
    Date(NaiveDate),
    Dur(i128),
}

fn parse_tz(s: &str) -> (String, i64) {
    if let Some(b) = s.strip_suffix('Z') {
        return (b.to_string(), 0);
    }
    if s.len() > 6 {
        let (b, tz) = s.split_at(s.len() - 6);
        let tb = tz.as_bytes();
        if (tb[0] == b'+' || tb[0] == b'-') && tb[3] == b':' {
            let h: i64 = tz[1..3].parse().unwrap_or(0);
            let m: i64 = tz[4..6].parse().unwrap_or(0);
            let sign = if tb[0] == b'-' { -1 } else { 1 };
            return (b.to_string(), sign * (h * 3600 + m * 60));
        }
    }
    (s.to_string(), 0)
}

fn parse_duration(s: &str) -> Option<i128> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let s = s.strip_prefix('P')?;
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut total: f64 = 0.0;
    let mut num = String::new();
    for ch in date.chars() {
        match ch {
            '0'..='9' | '.' => num.push(ch),
            'Y' => total += num.parse::<f64>().ok()? * 12.0 * 2_629_746.0 * 1000.0,
            'M' => total += num.parse::<f64>().ok()? * 2_629_746.0 * 1000.0,
            'D' => total += num.parse::<f64>().ok()? * 86_400_000.0,
            _ => return None,
        }
        if ch.is_ascii_alphabetic() {
            num.clear();
        }
    }
    if let Some(t) = time {
        for ch in t.chars() {
            match ch {
                '0'..='9' | '.' => num.push(ch),
                'H' => total += num.parse::<f64>().ok()? * 3_600_000.0,
                'M' => total += num.parse::<f64>().ok()? * 60_000.0,
                'S' => total += num.parse::<f64>().ok()? * 1000.0,
                _ => return None,
            }
            if ch.is_ascii_alphabetic() {
                num.clear();
            }
        }
    }
    if !num.is_empty() {
        return None;
    }
    let v = total.round() as i128;
    Some(if neg { -v } else { v })
}

fn typed(ty: &str, v: &str) -> R<T> {
    let bad = || processing(format!("`{v}` is not a valid {ty}"));
    let s = v.trim();
    Ok(match ty {
        "string" | "anyURI" | "ipAddress" | "dnsName" => T::S(v.to_string()),
        "x500Name" => T::S(x500_rdns(s).join(",")),
        "hexBinary" => T::S(s.to_lowercase()),
        "base64Binary" => T::S(s.chars().filter(|c| !c.is_whitespace()).collect()),
        "rfc822Name" => match s.split_once('@') {
            Some((l, d)) => T::S(format!("{l}@{}", d.to_lowercase())),
            None => T::S(s.to_string()),
        },
        "boolean" => match s {
            "true" | "1" => T::B(true),
            "false" | "0" => T::B(false),
            _ => return Err(bad()),
        },
        "integer" => T::I(s.trim_start_matches('+').parse().map_err(|_| bad())?),
        "double" => T::F(match s {
            "INF" => f64::INFINITY,
            "-INF" => f64::NEG_INFINITY,
            _ => s.parse().map_err(|_| bad())?,
        }),
        "time" => {
            let (b, off) = parse_tz(s);
            let t = chrono::NaiveTime::parse_from_str(&b, "%H:%M:%S%.f").map_err(|_| bad())?;
            let secs = i128::from(t.num_seconds_from_midnight()) - i128::from(off);
            T::N(secs.rem_euclid(86_400) * 1_000_000_000 + i128::from(t.nanosecond()))
        }
        "date" => {
            let (b, _) = parse_tz(s);
            T::Date(NaiveDate::parse_from_str(&b, "%Y-%m-%d").map_err(|_| bad())?)
        }
        "dateTime" => {
            let (b, off) = parse_tz(s);
            let t = NaiveDateTime::parse_from_str(&b, "%Y-%m-%dT%H:%M:%S%.f").map_err(|_| bad())?;
            let u = t.and_utc();
            T::N(
                (i128::from(u.timestamp()) - i128::from(off)) * 1_000_000_000
                    + i128::from(u.timestamp_subsec_nanos()),
            )
        }
        "dayTimeDuration" => T::Dur(parse_duration(s).ok_or_else(bad)?),
        "yearMonthDuration" => T::Dur(i128::from(parse_months(s).ok_or_else(bad)?)),
        _ => T::S(v.to_string()),
    })
}

fn dt_uri(ty: &str) -> String {
    expand_datatype(ty)
}

fn check_type(ty: &str, v: &AttrValue) -> R<()> {
    if short_datatype(&v.dt) == ty {
        Ok(())
    } else {
        Err(processing(format!(
            "a {ty} function got a value of type {}",
            v.dt
        )))
    }
}

fn one(v: &Val) -> R<&AttrValue> {
    match v {
        Val::One(a) => Ok(a),
        _ => Err(processing("expected a single value")),
    }
}

fn bag(v: &Val) -> R<&[AttrValue]> {
    match v {
        Val::Bag(b) => Ok(b),
        _ => Err(processing("expected a bag")),
    }
}

fn as_bool(v: &Val) -> R<bool> {
    let a = one(v)?;
    check_type("boolean", a)?;
    match typed("boolean", &a.v)? {
        T::B(b) => Ok(b),
        _ => Err(processing("not a boolean")),
    }
}

fn eq_typed(ty: &str, a: &AttrValue, b: &AttrValue) -> R<bool> {
    Ok(match (typed(ty, &a.v)?, typed(ty, &b.v)?) {
        // Value identity (XML Schema), not IEEE comparison: NaN equals NaN.
        (T::F(x), T::F(y)) if x.is_nan() && y.is_nan() => true,
        (x, y) => x == y,
    })
}

/// The relative distinguished names of an X.500 name, normalised (trimmed, lower case).
fn x500_rdns(s: &str) -> Vec<String> {
    s.split(',')
        .map(|rdn| match rdn.split_once('=') {
            Some((k, v)) => format!("{}={}", k.trim().to_lowercase(), v.trim().to_lowercase()),
            None => rdn.trim().to_lowercase(),
        })
        .collect()
}

/// A yearMonthDuration in months.
fn parse_months(s: &str) -> Option<i64> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut rest = s.strip_prefix('P')?;
    let mut months = 0i64;
    if let Some(i) = rest.find('Y') {
        months += rest[..i].parse::<i64>().ok()? * 12;
        rest = &rest[i + 1..];
    }
    if let Some(i) = rest.find('M') {
        months += rest[..i].parse::<i64>().ok()?;
        rest = &rest[i + 1..];
    }
    if !rest.is_empty() {
        return None;
    }
    Some(if neg { -months } else { months })
}

/// Adds a duration to a date or dateTime (lexical forms), keeping its time zone.
fn add_duration(ty: &str, v: &str, dur_ty: &str, dur: &str, sign: i64) -> R<String> {
    let bad = || processing(format!("cannot add `{dur}` to `{v}`"));
    let (base, off) = parse_tz(v.trim());
    let tz = &v.trim()[base.len()..];
    let (date_fmt, out_fmt) = if ty == "date" {
        ("%Y-%m-%d", "%Y-%m-%d")
    } else {
        ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f")
    };
    let _ = off;
    let t = if ty == "date" {
        NaiveDate::parse_from_str(&base, date_fmt)
            .map_err(|_| bad())?
            .and_hms_opt(0, 0, 0)
            .ok_or_else(bad)?
    } else {
        NaiveDateTime::parse_from_str(&base, date_fmt).map_err(|_| bad())?
    };
    let out = if dur_ty == "yearMonthDuration" {
        let m = parse_months(dur.trim()).ok_or_else(bad)? * sign;
        let months = chrono::Months::new(m.unsigned_abs() as u32);
        if m >= 0 {
            t.checked_add_months(months)
        } else {
            t.checked_sub_months(months)
        }
        .ok_or_else(bad)?
    } else {
        let ms = parse_duration(dur.trim()).ok_or_else(bad)? as i64 * sign;
        t.checked_add_signed(chrono::TimeDelta::milliseconds(ms))
            .ok_or_else(bad)?
    };
    Ok(format!("{}{tz}", out.format(out_fmt)))
}

fn bool_val(b: bool) -> Val {
    Val::One(AttrValue::boolean(b))
}

fn int_of(a: &AttrValue) -> R<i64> {
    match typed("integer", &a.v)? {
        T::I(i) => Ok(i),
        _ => Err(processing("not an integer")),
    }
}

fn dbl_of(a: &AttrValue) -> R<f64> {
    match typed("double", &a.v)? {
        T::F(f) => Ok(f),
        _ => Err(processing("not a double")),
    }
}

fn fmt_double(f: f64) -> String {
    if f.is_infinite() {
        if f > 0.0 { "INF".into() } else { "-INF".into() }
    } else {
        format!("{f:?}")
    }
}

impl<'a> Ctx<'a> {
    // ------------------------------------------------------------------------------
    // Attributes

    fn designator(&self, d: &Designator) -> R<Vec<AttrValue>> {
        let mut out = Vec::new();
        for c in self.cats.iter().filter(|c| c.category == d.category) {
            for a in &c.attrs {
                if a.id != d.id || (d.issuer.is_some() && a.issuer != d.issuer) {
                    continue;
                }
                for v in &a.values {
                    if *v.dt == *d.dt {
                        out.push(v.clone());
                    } else if self.mode == TargetMode::Altinn {
                        out.push(AttrValue::new(&d.dt, v.v.clone()));
                    }
                }
            }
        }
        if out.is_empty() && d.category == CAT_ENVIRONMENT {
            let now = self.now;
            let v = match d.id.as_str() {
                "urn:oasis:names:tc:xacml:1.0:environment:current-time" if d.dt == DT_TIME => {
                    Some(now.format("%H:%M:%S%.f%:z").to_string())
                }
                "urn:oasis:names:tc:xacml:1.0:environment:current-date" if d.dt == DT_DATE => {
                    Some(now.format("%Y-%m-%d%:z").to_string())
                }
                "urn:oasis:names:tc:xacml:1.0:environment:current-dateTime" if d.dt == DT_DATETIME => {
                    Some(now.format("%Y-%m-%dT%H:%M:%S%.f%:z").to_string())
                }
                _ => None,
            };
            if let Some(v) = v {
                out.push(AttrValue::new(&d.dt, v));
            }
        }
        if out.is_empty() && d.must_be_present {
            return Err(Fault {
                code: STATUS_MISSING,
                msg: format!("missing attribute {} in category {}", d.id, d.category),
            });
        }
        Ok(out)
    }

    /// When `attr` is read with `MustBePresent="true"` and the request has no value
    /// for it: the missing-attribute fault. No work for the usual designator without
    /// MustBePresent.
    fn required_missing(&self, attr: &Expr) -> Option<Fault> {
        match attr {
            Expr::Designator(d) if d.must_be_present => self.designator(d).err(),
            Expr::Selector {
                must_be_present: true,
                ..
            } => Some(Fault {
                code: STATUS_MISSING,
                msg: "AttributeSelector is not supported".into(),
            }),
            _ => None,
        }
    }

    // ------------------------------------------------------------------------------
    // Targets

    /// `string-equal` and `string-equal-ignore-case` of string values (the matches of
    /// every Altinn policy), compared in place: the same answer as the general path
    /// below without building a bag or calling through [`Ctx::call`]. None when the
    /// match is not of that kind, or when a missing attribute must be reported.
    fn match_string(&self, m: &Match) -> Option<M> {
        let Expr::Designator(d) = &m.attr else {
            return None;
        };
        let ignore_case = match m.func.as_str() {
            "string-equal" => false,
            "string-equal-ignore-case" => true,
            _ => return None,
        };
        if &*m.value.dt != DT_STRING || d.dt != DT_STRING {
            return None;
        }
        let altinn = self.mode == TargetMode::Altinn;
        let role_code = altinn && d.id == "urn:altinn:rolecode";
        let want = m.value.v.as_str();
        let mut seen = false;
        for c in self.cats.iter().filter(|c| c.category == d.category) {
            for a in &c.attrs {
                if a.id != d.id || (d.issuer.is_some() && a.issuer != d.issuer) {
                    continue;
                }
                for v in &a.values {
                    if *v.dt != *d.dt && !altinn {
                        continue;
                    }
                    seen = true;
                    let hit = if role_code {
                        want.trim().eq_ignore_ascii_case(v.v.trim())
                    } else if ignore_case {
                        if want.is_ascii() && v.v.is_ascii() {
                            want.eq_ignore_ascii_case(&v.v)
                        } else {
                            want.to_lowercase() == v.v.to_lowercase()
                        }
                    } else {
                        want == v.v
                    };
                    if hit {
                        return Some(M::Yes);
                    }
                }
            }
        }
        if !seen && d.must_be_present {
            return None;
        }
        Some(M::No)
    }

    fn match_(&self, m: &Match) -> M {
        if let Some(r) = self.match_string(m) {
            return r;
        }
        let values = match &m.attr {
            Expr::Designator(d) => self.designator(d),
            Expr::Selector { must_be_present, .. } => {
                if *must_be_present {
                    Err(Fault {
                        code: STATUS_MISSING,
                        msg: "AttributeSelector is not supported".into(),
                    })
                } else {
                    Ok(Vec::new())
                }
            }
            _ => Err(processing("a match needs a designator")),
        };
        let values = match values {
            Ok(v) => v,
            Err(f) => return M::Ind(f),
        };
        let altinn = self.mode == TargetMode::Altinn;
        let ignore_case = altinn && matches!(&m.attr, Expr::Designator(d) if d.id == "urn:altinn:rolecode");
        let mut fault = None;
        for v in &values {
            let r = if ignore_case {
                Ok(bool_val(m.value.v.trim().eq_ignore_ascii_case(v.v.trim())))
            } else if altinn && let Some(eq) = altinn_equality(&m.func, &m.value.v, &v.v) {
                Ok(bool_val(eq))
            } else {
                self.call(&m.func, vec![Val::One(m.value.clone()), Val::One(v.clone())])
            };
            match r.and_then(|r| as_bool(&r)) {
                Ok(true) => return M::Yes,
                Ok(false) => {}
                Err(f) => fault = Some(f),
            }
        }
        match fault {
            Some(f) => M::Ind(f),
            None => M::No,
        }
    }

    fn all_of(&self, a: &AllOf) -> M {
        let mut fault = None;
        for m in &a.0 {
            match self.match_(m) {
                M::Yes => {}
                M::No => return M::No,
                M::Ind(f) => fault = Some(f),
            }
        }
        match fault {
            Some(f) => M::Ind(f),
            None => M::Yes,
        }
    }

    fn target(&self, t: &Target) -> M {
        if self.mode == TargetMode::Altinn {
            return self.target_altinn(t);
        }
        let mut fault = None;
        for any in &t.0 {
            let mut ok = false;
            let mut f2 = None;
            for all in &any.0 {
                match self.all_of(all) {
                    M::Yes => {
                        ok = true;
                        break;
                    }
                    M::No => {}
                    M::Ind(f) => f2 = Some(f),
                }
            }
            if !ok {
                match f2 {
                    Some(f) => fault = Some(f),
                    None => return M::No,
                }
            }
        }
        match fault {
            Some(f) => M::Ind(f),
            None => M::Yes,
        }
    }

    /// The Altinn way: per category, some AllOf anywhere in the target has all of its
    /// matches of that category satisfied; categories never mentioned match anything.
    fn target_altinn(&self, t: &Target) -> M {
        // A match that must find a value and finds none makes the rule Indeterminate,
        // whatever the other categories say (Altinn's RequiredAttributeMissing).
        for m in
            t.0.iter()
                .flat_map(|any| any.0.iter().flat_map(|all| all.0.iter()))
        {
            if let Some(f) = self.required_missing(&m.attr) {
                return M::Ind(f);
            }
        }
        let mut cats: Vec<&str> = Vec::new();
        for any in &t.0 {
            for all in &any.0 {
                for m in &all.0 {
                    if !cats.contains(&m.category()) {
                        cats.push(m.category());
                    }
                }
            }
        }
        for cat in cats {
            let found = t.0.iter().flat_map(|any| any.0.iter()).any(|all| {
                let mut ms = all.0.iter().filter(|m| m.category() == cat).peekable();
                ms.peek().is_some() && ms.all(|m| matches!(self.match_(m), M::Yes))
            });
            if !found {
                return M::No;
            }
        }
        M::Yes
    }

    // ------------------------------------------------------------------------------
    // Rules, policies, policy sets

    fn obligations(&self, list: &[ObligationExpr], e: Effect, vars: Option<&Policy>, out: &mut Out) -> R<()> {
        for o in list.iter().filter(|o| o.effect == e) {
            let mut assignments = Vec::new();
            for a in &o.assignments {
                let values = match self.eval(&a.expr, vars)? {
                    Val::One(v) => vec![v],
                    Val::Bag(b) => b,
                    Val::Func(_) => return Err(processing("a function is not an attribute value")),
                };
                for value in values {
                    assignments.push(Assignment {
                        id: a.id.clone(),
                        category: a.category.clone(),
                        issuer: a.issuer.clone(),
                        value,
                    });
                }
            }
            let ob = Obligation {
                id: o.id.clone(),
                assignments,
            };
            if o.advice {
                out.adv.push(ob);
            } else {
                out.obl.push(ob);
            }
        }
        Ok(())
    }

    fn rule(&self, r: &Rule, p: &Policy) -> Out {
        match self.target(&r.target) {
            M::No => return Out::new(Dec::Na),
            M::Ind(f) => return Out::ind(r.effect, f),
            M::Yes => {}
        }
        if let Some(c) = &r.condition {
            match self.eval(c, Some(p)).and_then(|v| as_bool(&v)) {
                Ok(true) => {}
                Ok(false) => return Out::new(Dec::Na),
                Err(f) => return Out::ind(r.effect, f),
            }
        }
        let mut out = Out::new(match r.effect {
            Effect::Permit => Dec::Permit,
            Effect::Deny => Dec::Deny,
        });
        if let Err(f) = self.obligations(&r.obligations, r.effect, Some(p), &mut out) {
            return Out::ind(r.effect, f);
        }
        out
    }

    fn action_values(&self) -> Vec<&str> {
        self.cats
            .iter()
            .filter(|c| c.category == CAT_ACTION)
            .flat_map(|c| c.values(ACTION_ID))
            .map(|v| v.v.as_str())
            .collect()
    }

    fn policy(&self, p: &Policy) -> Out {
        // Altinn checks every rule's resource matches first: one that must find a value
        // and finds none makes the whole policy Indeterminate (domain.md §8.2).
        if self.mode == TargetMode::Altinn {
            for d in &p.required_resource {
                if let Err(f) = self.designator(d) {
                    return Out::ind_d(Dec::IndDp, Some(f));
                }
            }
        }
        let t = self.target(&p.target);
        if matches!(t, M::No) {
            return Out::new(Dec::Na);
        }
        let cands = p.index.candidates(&self.action_values());
        let rules: Vec<&Rule> = match &cands {
            Some(ix) => ix.iter().filter_map(|i| p.rules.get(*i)).collect(),
            None => p.rules.iter().collect(),
        };
        let mut out = combine(p.alg, false, rules.len(), |i| match rules.get(i) {
            Some(r) => self.rule(r, p),
            None => Out::new(Dec::Na),
        });
        if let M::Ind(f) = t {
            return target_indeterminate(out, f);
        }
        self.finish_policy(&mut out, &p.obligations, Some(p), false, &p.id, &p.version);
        out
    }

    fn finish_policy(
        &self,
        out: &mut Out,
        obls: &[ObligationExpr],
        p: Option<&Policy>,
        set: bool,
        id: &str,
        version: &str,
    ) {
        let e = match out.d {
            Dec::Permit => Effect::Permit,
            Dec::Deny => Effect::Deny,
            _ => return,
        };
        if let Err(f) = self.obligations(obls, e, p, out) {
            *out = Out::ind(e, f);
            return;
        }
        out.ids.push((set, id.to_string(), version.to_string()));
    }

    fn child(&self, c: &Child, depth: usize) -> Out {
        match c {
            Child::Policy(p) => self.policy(p),
            Child::Set(s) => self.policy_set(s, depth + 1),
            Child::Ref { set, id } => {
                if depth > 16 {
                    return Out::ind_d(Dec::IndDp, Some(processing("policy references nest too deep")));
                }
                match self.repo.iter().find(|c| c.root.id() == id) {
                    Some(cp) => match (&cp.root, set) {
                        (Root::Policy(p), false) => self.policy(p),
                        (Root::Set(s), true) => self.policy_set(s, depth + 1),
                        _ => Out::ind_d(
                            Dec::IndDp,
                            Some(processing(format!("reference `{id}` names the wrong kind"))),
                        ),
                    },
                    None => Out::ind_d(
                        Dec::IndDp,
                        Some(processing(format!("unknown policy reference `{id}`"))),
                    ),
                }
            }
        }
    }

    fn child_target(&self, c: &Child) -> M {
        match c {
            Child::Policy(p) => self.target(&p.target),
            Child::Set(s) => self.target(&s.target),
            Child::Ref { id, .. } => match self.repo.iter().find(|c| c.root.id() == id) {
                Some(cp) => match &cp.root {
                    Root::Policy(p) => self.target(&p.target),
                    Root::Set(s) => self.target(&s.target),
                },
                None => M::Ind(processing(format!("unknown policy reference `{id}`"))),
            },
        }
    }

    fn policy_set(&self, s: &PolicySet, depth: usize) -> Out {
        let t = self.target(&s.target);
        if matches!(t, M::No) {
            return Out::new(Dec::Na);
        }
        let mut out = if s.alg == Alg::OnlyOneApplicable {
            let mut chosen = None;
            let mut bad = None;
            for c in &s.children {
                match self.child_target(c) {
                    M::No => {}
                    M::Ind(f) => {
                        bad = Some(f);
                        break;
                    }
                    M::Yes => {
                        if chosen.is_some() {
                            bad = Some(processing("more than one policy is applicable"));
                            break;
                        }
                        chosen = Some(c);
                    }
                }
            }
            match (bad, chosen) {
                (Some(f), _) => Out::ind_d(Dec::IndDp, Some(f)),
                (None, Some(c)) => self.child(c, depth),
                (None, None) => Out::new(Dec::Na),
            }
        } else {
            combine(s.alg, true, s.children.len(), |i| match s.children.get(i) {
                Some(c) => self.child(c, depth),
                None => Out::new(Dec::Na),
            })
        };
        if let M::Ind(f) = t {
            return target_indeterminate(out, f);
        }
        self.finish_policy(&mut out, &s.obligations, None, true, &s.id, &s.version);
        out
    }

    // ------------------------------------------------------------------------------
    // Expressions

    fn eval(&self, e: &Expr, p: Option<&Policy>) -> R<Val> {
        match e {
            Expr::Value(v) => Ok(Val::One(v.clone())),
            Expr::Designator(d) => Ok(Val::Bag(self.designator(d)?)),
            Expr::Selector { must_be_present, .. } => {
                if *must_be_present {
                    Err(Fault {
                        code: STATUS_MISSING,
                        msg: "AttributeSelector is not supported".into(),
                    })
                } else {
                    Ok(Val::Bag(Vec::new()))
                }
            }
            Expr::Function(f) => Ok(Val::Func(f.clone())),
            Expr::VarRef(id) => match p.and_then(|p| p.vars.get(id)) {
                Some(e) => self.eval(e, p),
                None => Err(processing(format!("unknown variable `{id}`"))),
            },
            Expr::Apply { func, args } => match func.as_str() {
                "and" => {
                    for a in args {
                        if !as_bool(&self.eval(a, p)?)? {
                            return Ok(bool_val(false));
                        }
                    }
                    Ok(bool_val(true))
                }
                "or" => {
                    for a in args {
                        if as_bool(&self.eval(a, p)?)? {
                            return Ok(bool_val(true));
                        }
                    }
                    Ok(bool_val(false))
                }
                "n-of" => {
                    let Some((n, rest)) = args.split_first() else {
                        return Err(processing("n-of needs arguments"));
                    };
                    let n = int_of(one(&self.eval(n, p)?)?)?;
                    if n > rest.len() as i64 {
                        return Err(processing("n-of: n is larger than the number of arguments"));
                    }
                    let mut hit = 0;
                    for a in rest {
                        if hit >= n {
                            break;
                        }
                        if as_bool(&self.eval(a, p)?)? {
                            hit += 1;
                        }
                    }
                    Ok(bool_val(hit >= n))
                }
                _ => {
                    let vals = args.iter().map(|a| self.eval(a, p)).collect::<R<Vec<_>>>()?;
                    self.call(func, vals)
                }
            },
        }
    }

    fn apply_fn(&self, f: &str, args: Vec<AttrValue>) -> R<bool> {
        as_bool(&self.call(f, args.into_iter().map(Val::One).collect())?)
    }

    /// Calls a function (by local name) on evaluated arguments.
    fn call(&self, f: &str, args: Vec<Val>) -> R<Val> {
        let n = args.len();
        let arity = |k: usize| -> R<()> {
            if n == k {
                Ok(())
            } else {
                Err(processing(format!("{f} takes {k} arguments, got {n}")))
            }
        };
        match f {
            "not" => {
                arity(1)?;
                return Ok(bool_val(!as_bool(&args[0])?));
            }
            "round" | "floor" => {
                arity(1)?;
                let a = one(&args[0])?;
                check_type("double", a)?;
                let x = dbl_of(a)?;
                let r = if f == "round" { x.round() } else { x.floor() };
                return Ok(Val::One(AttrValue::new(DT_DOUBLE, fmt_double(r))));
            }
            "any-of" | "all-of" => {
                let Some((Val::Func(g), rest)) = args.split_first() else {
                    return Err(processing(format!("{f} needs a function first")));
                };
                let bi = rest
                    .iter()
                    .position(|v| matches!(v, Val::Bag(_)))
                    .ok_or_else(|| processing(format!("{f} needs a bag")))?;
                let items = bag(&rest[bi])?.to_vec();
                for it in items {
                    let call_args: Vec<AttrValue> = rest
                        .iter()
                        .enumerate()
                        .map(|(i, v)| if i == bi { Ok(it.clone()) } else { one(v).cloned() })
                        .collect::<R<_>>()?;
                    let r = self.apply_fn(g, call_args)?;
                    if f == "any-of" && r {
                        return Ok(bool_val(true));
                    }
                    if f == "all-of" && !r {
                        return Ok(bool_val(false));
                    }
                }
                return Ok(bool_val(f == "all-of"));
            }
            "any-of-any" | "all-of-any" | "any-of-all" | "all-of-all" => {
                let Some((Val::Func(g), rest)) = args.split_first() else {
                    return Err(processing(format!("{f} needs a function first")));
                };
                let lists: Vec<Vec<AttrValue>> = rest
                    .iter()
                    .map(|v| match v {
                        Val::One(a) => Ok(vec![a.clone()]),
                        Val::Bag(b) => Ok(b.clone()),
                        Val::Func(_) => Err(processing("unexpected function")),
                    })
                    .collect::<R<_>>()?;
                if f == "any-of-any" {
                    // Any combination of one element from each argument.
                    let mut idx = vec![0usize; lists.len()];
                    if lists.iter().any(|l| l.is_empty()) {
                        return Ok(bool_val(false));
                    }
                    loop {
                        let call: Vec<AttrValue> =
                            idx.iter().zip(&lists).map(|(i, l)| l[*i].clone()).collect();
                        if self.apply_fn(g, call)? {
                            return Ok(bool_val(true));
                        }
                        let mut k = 0;
                        loop {
                            if k == idx.len() {
                                return Ok(bool_val(false));
                            }
                            idx[k] += 1;
                            if idx[k] < lists[k].len() {
                                break;
                            }
                            idx[k] = 0;
                            k += 1;
                        }
                    }
                }
                if lists.len() != 2 {
                    return Err(processing(format!("{f} takes a function and two bags")));
                }
                let (a, b) = (&lists[0], &lists[1]);
                let test = |x: &AttrValue, y: &AttrValue| self.apply_fn(g, vec![x.clone(), y.clone()]);
                let r = match f {
                    "all-of-any" => {
                        let mut all = true;
                        for x in a {
                            let mut any = false;
                            for y in b {
                                if test(x, y)? {
                                    any = true;
                                    break;
                                }
                            }
                            all &= any;
                        }
                        all
                    }
                    "any-of-all" => {
                        let mut any = false;
                        for x in a {
                            let mut all = true;
                            for y in b {
                                all &= test(x, y)?;
                            }
                            if all {
                                any = true;
                                break;
                            }
                        }
                        any
                    }
                    _ => {
                        let mut all = true;
                        for x in a {
                            for y in b {
                                all &= test(x, y)?;
                            }
                        }
                        all
                    }
                };
                return Ok(bool_val(r));
            }
            "map" => {
                let [Val::Func(g), Val::Bag(items)] = args.as_slice() else {
                    return Err(processing("map takes a function and a bag"));
                };
                let mut out = Vec::new();
                for it in items {
                    out.push(one(&self.call(g, vec![Val::One(it.clone())])?)?.clone());
                }
                return Ok(Val::Bag(out));
            }
            _ => {}
        }
        let (ty, op) = split_type(f).ok_or_else(|| processing(format!("unsupported function `{f}`")))?;
        let dt = dt_uri(ty);
        match op {
            "match" if ty == "rfc822Name" => {
                arity(2)?;
                let (pat, v) = (one(&args[0])?, one(&args[1])?);
                check_type("string", pat)?;
                check_type(ty, v)?;
                let pat = pat.v.trim();
                let (local, domain) = v.v.trim().split_once('@').unwrap_or(("", v.v.trim()));
                let domain = domain.to_lowercase();
                let r = if let Some((pl, pd)) = pat.split_once('@') {
                    pl == local && pd.to_lowercase() == domain
                } else if pat.starts_with('.') {
                    domain.ends_with(&pat.to_lowercase())
                } else {
                    domain == pat.to_lowercase()
                };
                Ok(bool_val(r))
            }
            "match" if ty == "x500Name" => {
                arity(2)?;
                let (a, b) = (one(&args[0])?, one(&args[1])?);
                check_type(ty, a)?;
                check_type(ty, b)?;
                let (a, b) = (x500_rdns(&a.v), x500_rdns(&b.v));
                Ok(bool_val(b.len() >= a.len() && b[b.len() - a.len()..] == a[..]))
            }
            _ if (op.starts_with("add-") || op.starts_with("subtract-"))
                && (ty == "date" || ty == "dateTime") =>
            {
                arity(2)?;
                let (d, dur) = (one(&args[0])?, one(&args[1])?);
                check_type(ty, d)?;
                let dur_ty = op.split_once('-').map(|x| x.1).unwrap_or_default();
                check_type(dur_ty, dur)?;
                let sign = if op.starts_with("add-") { 1 } else { -1 };
                Ok(Val::One(AttrValue::new(
                    &dt,
                    add_duration(ty, &d.v, dur_ty, &dur.v, sign)?,
                )))
            }
            "equal" | "equal-ignore-case" => {
                arity(2)?;
                let (a, b) = (one(&args[0])?, one(&args[1])?);
                check_type(ty, a)?;
                check_type(ty, b)?;
                let r = if op == "equal-ignore-case" {
                    a.v.to_lowercase() == b.v.to_lowercase()
                } else {
                    eq_typed(ty, a, b)?
                };
                Ok(bool_val(r))
            }
            "greater-than" | "greater-than-or-equal" | "less-than" | "less-than-or-equal" => {
                arity(2)?;
                let (a, b) = (one(&args[0])?, one(&args[1])?);
                check_type(ty, a)?;
                check_type(ty, b)?;
                let o = typed(ty, &a.v)?
                    .partial_cmp(&typed(ty, &b.v)?)
                    .ok_or_else(|| processing("values cannot be compared"))?;
                Ok(bool_val(match op {
                    "greater-than" => o == Ordering::Greater,
                    "greater-than-or-equal" => o != Ordering::Less,
                    "less-than" => o == Ordering::Less,
                    _ => o != Ordering::Greater,
                }))
            }
            "one-and-only" => {
                arity(1)?;
                let b = bag(&args[0])?;
                match b {
                    [x] => {
                        check_type(ty, x)?;
                        Ok(Val::One(x.clone()))
                    }
                    _ => Err(processing(format!(
                        "{f}: the bag has {} values, not one",
                        b.len()
                    ))),
                }
            }
            "bag-size" => {
                arity(1)?;
                let b = bag(&args[0])?;
                Ok(Val::One(AttrValue::new(DT_INTEGER, b.len().to_string())))
            }
            "is-in" => {
                arity(2)?;
                let a = one(&args[0])?;
                check_type(ty, a)?;
                let b = bag(&args[1])?;
                for x in b {
                    if eq_typed(ty, a, x)? {
                        return Ok(bool_val(true));
                    }
                }
                Ok(bool_val(false))
            }
            "bag" => {
                let mut out = Vec::new();
                for a in &args {
                    let a = one(a)?;
                    check_type(ty, a)?;
                    out.push(a.clone());
                }
                Ok(Val::Bag(out))
            }
            "intersection" | "union" | "at-least-one-member-of" | "subset" | "set-equals" => {
                let contains = |b: &[AttrValue], x: &AttrValue| -> R<bool> {
                    for y in b {
                        if eq_typed(ty, x, y)? {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                };
                let bags = args
                    .iter()
                    .map(|a| bag(a).map(<[AttrValue]>::to_vec))
                    .collect::<R<Vec<_>>>()?;
                let (a, b) = match bags.as_slice() {
                    [a, b] => (a.clone(), b.clone()),
                    [a, rest @ ..] if op == "union" && !rest.is_empty() => (a.clone(), rest.concat()),
                    _ => return Err(processing(format!("{f} takes two bags"))),
                };
                let set = |v: &[AttrValue]| -> R<Vec<AttrValue>> {
                    let mut out: Vec<AttrValue> = Vec::new();
                    for x in v {
                        if !contains(&out, x)? {
                            out.push(x.clone());
                        }
                    }
                    Ok(out)
                };
                match op {
                    "intersection" => {
                        let mut out = Vec::new();
                        for x in set(&a)? {
                            if contains(&b, &x)? {
                                out.push(x);
                            }
                        }
                        Ok(Val::Bag(out))
                    }
                    "union" => {
                        let all: Vec<AttrValue> = a.iter().chain(b.iter()).cloned().collect();
                        Ok(Val::Bag(set(&all)?))
                    }
                    "at-least-one-member-of" => {
                        for x in &a {
                            if contains(&b, x)? {
                                return Ok(bool_val(true));
                            }
                        }
                        Ok(bool_val(false))
                    }
                    "subset" => {
                        for x in &a {
                            if !contains(&b, x)? {
                                return Ok(bool_val(false));
                            }
                        }
                        Ok(bool_val(true))
                    }
                    _ => {
                        for x in &a {
                            if !contains(&b, x)? {
                                return Ok(bool_val(false));
                            }
                        }
                        for x in &b {
                            if !contains(&a, x)? {
                                return Ok(bool_val(false));
                            }
                        }
                        Ok(bool_val(true))
                    }
                }
            }
            "add" | "subtract" | "multiply" | "divide" | "mod" | "abs" => {
                let vals: Vec<&AttrValue> = args.iter().map(one).collect::<R<_>>()?;
                for v in &vals {
                    check_type(ty, v)?;
                }
                if ty == "integer" {
                    let xs: Vec<i64> = vals.iter().map(|v| int_of(v)).collect::<R<_>>()?;
                    let r = match (op, xs.as_slice()) {
                        ("add", _) => xs.iter().try_fold(0i64, |a, b| a.checked_add(*b)),
                        ("multiply", _) => xs.iter().try_fold(1i64, |a, b| a.checked_mul(*b)),
                        ("subtract", [a, b]) => a.checked_sub(*b),
                        ("divide", [a, b]) => a.checked_div(*b),
                        ("mod", [a, b]) => a.checked_rem(*b),
                        ("abs", [a]) => a.checked_abs(),
                        _ => return Err(processing(format!("bad arguments to {f}"))),
                    }
                    .ok_or_else(|| processing(format!("{f}: arithmetic error")))?;
                    Ok(Val::One(AttrValue::new(DT_INTEGER, r.to_string())))
                } else {
                    let xs: Vec<f64> = vals.iter().map(|v| dbl_of(v)).collect::<R<_>>()?;
                    let r = match (op, xs.as_slice()) {
                        ("add", _) => xs.iter().sum(),
                        ("multiply", _) => xs.iter().product(),
                        ("subtract", [a, b]) => a - b,
                        ("divide", [_, b]) if *b == 0.0 => return Err(processing("division by zero")),
                        ("divide", [a, b]) => a / b,
                        ("abs", [a]) => a.abs(),
                        _ => return Err(processing(format!("bad arguments to {f}"))),
                    };
                    Ok(Val::One(AttrValue::new(DT_DOUBLE, fmt_double(r))))
                }
            }
            "to-double" => {
                arity(1)?;
                let a = one(&args[0])?;
                check_type(ty, a)?;
                Ok(Val::One(AttrValue::new(DT_DOUBLE, fmt_double(int_of(a)? as f64))))
            }
            "to-integer" => {
                arity(1)?;
                let a = one(&args[0])?;
                check_type(ty, a)?;
                Ok(Val::One(AttrValue::new(
                    DT_INTEGER,
                    (dbl_of(a)?.trunc() as i64).to_string(),
                )))
            }
            "regexp-match" => {
                arity(2)?;
                let (pat, v) = (one(&args[0])?, one(&args[1])?);
                check_type("string", pat)?;
                check_type(ty, v)?;
                let re = regex::Regex::new(&pat.v)
                    .map_err(|e| processing(format!("bad regular expression: {e}")))?;
                Ok(bool_val(re.is_match(&v.v)))
            }
            "normalize-space" | "normalize-to-lower-case" => {
                arity(1)?;
                let a = one(&args[0])?;
                check_type(ty, a)?;
                let v = if op == "normalize-space" {
                    a.v.trim().to_string()
                } else {
                    a.v.to_lowercase()
                };
                Ok(Val::One(AttrValue::new(&dt, v)))
            }
            "concatenate" => {
                let mut s = String::new();
                for a in &args {
                    let a = one(a)?;
                    check_type(ty, a)?;
                    s.push_str(&a.v);
                }
                Ok(Val::One(AttrValue::new(&dt, s)))
            }
            "starts-with" | "ends-with" | "contains" => {
                arity(2)?;
                let (needle, hay) = (one(&args[0])?, one(&args[1])?);
                check_type("string", needle)?;
                check_type(ty, hay)?;
                Ok(bool_val(match op {
                    "starts-with" => hay.v.starts_with(&needle.v),
                    "ends-with" => hay.v.ends_with(&needle.v),
                    _ => hay.v.contains(&needle.v),
                }))
            }
            "substring" => {
                arity(3)?;
                let s = one(&args[0])?;
                check_type(ty, s)?;
                let b = int_of(one(&args[1])?)?;
                let e = int_of(one(&args[2])?)?;
                let chars: Vec<char> = s.v.chars().collect();
                let end = if e == -1 { chars.len() as i64 } else { e };
                if b < 0 || end < b || end > chars.len() as i64 {
                    return Err(processing("substring out of range"));
                }
                Ok(Val::One(AttrValue::new(
                    DT_STRING,
                    chars[b as usize..end as usize].iter().collect::<String>(),
                )))
            }
            "from-string" => {
                arity(1)?;
                let a = one(&args[0])?;
                check_type("string", a)?;
                typed(ty, a.v.trim())?;
                Ok(Val::One(AttrValue::new(&dt, a.v.trim().to_string())))
            }
            _ if op.starts_with("from-") && ty == "string" => {
                arity(1)?;
                let a = one(&args[0])?;
                check_type(&op[5..], a)?;
                Ok(Val::One(AttrValue::new(DT_STRING, a.v.trim().to_string())))
            }
            "in-range" => {
                arity(3)?;
                let v: Vec<&AttrValue> = args.iter().map(one).collect::<R<_>>()?;
                let t: Vec<T> = v.iter().map(|x| typed("time", &x.v)).collect::<R<_>>()?;
                let (x, lo, hi) = (&t[0], &t[1], &t[2]);
                let r = if lo <= hi {
                    lo <= x && x <= hi
                } else {
                    x >= lo || x <= hi
                };
                Ok(bool_val(r))
            }
            _ => Err(processing(format!("unsupported function `{f}`"))),
        }
    }
}

/// The equality Altinn's PDP applies inside a Match where XACML would report an error
/// (domain.md §8.2): `integer-one-and-only` compares two integers, `string-is-in` two
/// strings, and `time-equal` given a date-time compares the times of day (as written,
/// offsets dropped). None for every other function.
fn altinn_equality(func: &str, policy_value: &str, request_value: &str) -> Option<bool> {
    match func {
        "integer-one-and-only" => {
            let int = |s: &str| s.trim().trim_start_matches('+').parse::<i64>().ok();
            Some(matches!((int(policy_value), int(request_value)), (Some(a), Some(b)) if a == b))
        }
        "string-is-in" => Some(policy_value == request_value),
        "time-equal" if policy_value.contains('T') || request_value.contains('T') => {
            let time_of_day = |s: &str| {
                let s = s.trim();
                let t = s.rsplit_once('T').map_or(s, |(_, t)| t);
                if !t.is_ascii() {
                    return None;
                }
                let (local, _) = parse_tz(t);
                chrono::NaiveTime::parse_from_str(&local, "%H:%M:%S%.f").ok()
            };
            Some(
                matches!((time_of_day(policy_value), time_of_day(request_value)), (Some(a), Some(b)) if a == b),
            )
        }
        _ => None,
    }
}

/// A policy whose own target was Indeterminate (XACML 3.0 §7.12).
fn target_indeterminate(out: Out, f: Fault) -> Out {
    match out.d {
        Dec::Na => Out::new(Dec::Na),
        Dec::Permit => Out::ind_d(Dec::IndP, Some(f)),
        Dec::Deny => Out::ind_d(Dec::IndD, Some(f)),
        d => Out::ind_d(d, out.fault.or(Some(f))),
    }
}

/// Combines `n` children, evaluated lazily in order by `eval`, by the algorithms of
/// XACML 3.0 appendix C (`policy_level`: combining policies rather than rules, which
/// matters for the legacy overrides algorithms and for only-one-applicable).
fn combine(alg: Alg, policy_level: bool, n: usize, eval: impl Fn(usize) -> Out) -> Out {
    match alg {
        Alg::DenyOverrides | Alg::LegacyDenyOverrides => overrides(
            Dec::Deny,
            alg == Alg::LegacyDenyOverrides && policy_level,
            n,
            eval,
        ),
        Alg::PermitOverrides | Alg::LegacyPermitOverrides => overrides(
            Dec::Permit,
            alg == Alg::LegacyPermitOverrides && policy_level,
            n,
            eval,
        ),
        // only-one-applicable selects a policy by its target (see `policy_set`); it is
        // no rule-combining algorithm, and Altinn answers a policy using it so with
        // Indeterminate (domain.md §8.2).
        Alg::OnlyOneApplicable if !policy_level => Out::ind_d(
            Dec::IndDp,
            Some(processing(
                "only-one-applicable is not a rule-combining algorithm",
            )),
        ),
        Alg::Unknown => Out::ind_d(Dec::IndDp, Some(processing("unknown combining algorithm"))),
        Alg::FirstApplicable | Alg::OnlyOneApplicable => {
            for i in 0..n {
                let o = eval(i);
                if o.d != Dec::Na {
                    return o;
                }
            }
            Out::new(Dec::Na)
        }
        Alg::DenyUnlessPermit | Alg::PermitUnlessDeny => {
            let (win, other) = if alg == Alg::DenyUnlessPermit {
                (Dec::Permit, Dec::Deny)
            } else {
                (Dec::Deny, Dec::Permit)
            };
            let mut rest = Out::new(other);
            for i in 0..n {
                let o = eval(i);
                if o.d == win {
                    return o;
                }
                if o.d == other {
                    rest.obl.extend(o.obl);
                    rest.adv.extend(o.adv);
                    rest.ids.extend(o.ids);
                }
            }
            rest
        }
    }
}

/// deny-overrides (`win` = Deny) and permit-overrides (`win` = Permit), XACML 3.0 C.2
/// and C.3. `legacy`: the XACML 1.x/2.0 policy-level variants of C.5 and C.7 — an
/// Indeterminate policy counts as Deny under legacy deny-overrides, and under legacy
/// permit-overrides a Deny beats an Indeterminate. At rule level the legacy variants
/// reach the same decisions as the 3.0 ones (an Indeterminate rule's extended kind is
/// its effect), so they share this code.
fn overrides(win: Dec, legacy: bool, n: usize, eval: impl Fn(usize) -> Out) -> Out {
    let (ind_win, ind_lose, lose) = if win == Dec::Deny {
        (Dec::IndD, Dec::IndP, Dec::Permit)
    } else {
        (Dec::IndP, Dec::IndD, Dec::Deny)
    };
    let mut any_lose = false;
    let (mut iw, mut il, mut idp) = (false, false, false);
    let mut fault = None;
    let mut acc = Out::new(lose);
    for i in 0..n {
        let o = eval(i);
        if o.d == win {
            return o;
        }
        if o.d == lose {
            any_lose = true;
            acc.obl.extend(o.obl);
            acc.adv.extend(o.adv);
            acc.ids.extend(o.ids);
        } else if o.d == ind_win {
            iw = true;
            fault = fault.or(o.fault);
        } else if o.d == ind_lose {
            il = true;
            fault = fault.or(o.fault);
        } else if o.d == Dec::IndDp {
            idp = true;
            fault = fault.or(o.fault);
        }
    }
    let any_ind = iw || il || idp;
    if legacy && win == Dec::Deny && any_ind {
        return Out::new(Dec::Deny);
    }
    if legacy && win == Dec::Permit && any_lose {
        return acc;
    }
    if idp || (iw && (il || any_lose)) {
        return Out::ind_d(Dec::IndDp, fault);
    }
    if iw {
        return Out::ind_d(ind_win, fault);
    }
    if any_lose {
        return acc;
    }
    if il {
        return Out::ind_d(ind_lose, fault);
    }
    Out::new(Dec::Na)
}

/// The combiner against XACML 3.0 appendix C over every sequence of up to three child
/// outcomes (Permit, Deny, NotApplicable, Indeterminate{D}, {P}, {DP}; so every pair in
/// both orders). The expected values come from the appendix's pseudo-code, transcribed
/// below on its own small decision type without reference to [`combine`].
#[cfg(test)]
mod appendix_c {
    use super::{Alg, Dec, Out, combine};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[allow(clippy::enum_variant_names)]
    enum D {
        Permit,
        Deny,
        NotApplicable,
        IndD,
        IndP,
        IndDP,
        /// The plain Indeterminate of the legacy (XACML 1.x/2.0) algorithms.
        Ind,
    }

    const OUTCOMES: [D; 6] = [D::Permit, D::Deny, D::NotApplicable, D::IndD, D::IndP, D::IndDP];

    fn is_ind(d: D) -> bool {
        matches!(d, D::IndD | D::IndP | D::IndDP | D::Ind)
    }

    // C.2 Deny-overrides.
    fn deny_overrides(ds: &[D]) -> D {
        let (mut at_least_one_error_d, mut at_least_one_error_p) = (false, false);
        let (mut at_least_one_error_dp, mut at_least_one_permit) = (false, false);
        for &decision in ds {
            if decision == D::Deny {
                return D::Deny;
            }
            if decision == D::Permit {
                at_least_one_permit = true;
                continue;
            }
            if decision == D::NotApplicable {
                continue;
            }
            if decision == D::IndD {
                at_least_one_error_d = true;
                continue;
            }
            if decision == D::IndP {
                at_least_one_error_p = true;
                continue;
            }
            if decision == D::IndDP {
                at_least_one_error_dp = true;
                continue;
            }
        }
        if at_least_one_error_dp {
            return D::IndDP;
        }
        if at_least_one_error_d && (at_least_one_error_p || at_least_one_permit) {
            return D::IndDP;
        }
        if at_least_one_error_d {
            return D::IndD;
        }
        if at_least_one_permit {
            return D::Permit;
        }
        if at_least_one_error_p {
            return D::IndP;
        }
        D::NotApplicable
    }

    // C.4 Permit-overrides.
    fn permit_overrides(ds: &[D]) -> D {
        let (mut at_least_one_error_d, mut at_least_one_error_p) = (false, false);
        let (mut at_least_one_error_dp, mut at_least_one_deny) = (false, false);
        for &decision in ds {
            if decision == D::Deny {
                at_least_one_deny = true;
                continue;
            }
            if decision == D::Permit {
                return D::Permit;
            }
            if decision == D::NotApplicable {
                continue;
            }
            if decision == D::IndD {
                at_least_one_error_d = true;
                continue;
            }
            if decision == D::IndP {
                at_least_one_error_p = true;
                continue;
            }
            if decision == D::IndDP {
                at_least_one_error_dp = true;
                continue;
            }
        }
        if at_least_one_error_dp {
            return D::IndDP;
        }
        if at_least_one_error_p && (at_least_one_error_d || at_least_one_deny) {
            return D::IndDP;
        }
        if at_least_one_error_p {
            return D::IndP;
        }
        if at_least_one_deny {
            return D::Deny;
        }
        if at_least_one_error_d {
            return D::IndD;
        }
        D::NotApplicable
    }

    // C.6 Deny-unless-permit.
    fn deny_unless_permit(ds: &[D]) -> D {
        for &decision in ds {
            if decision == D::Permit {
                return D::Permit;
            }
        }
        D::Deny
    }

    // C.7 Permit-unless-deny.
    fn permit_unless_deny(ds: &[D]) -> D {
        for &decision in ds {
            if decision == D::Deny {
                return D::Deny;
            }
        }
        D::Permit
    }

    // C.8 / C.9 First-applicable (rules and policies alike).
    fn first_applicable(ds: &[D]) -> D {
        for &decision in ds {
            if decision == D::Deny {
                return D::Deny;
            }
            if decision == D::Permit {
                return D::Permit;
            }
            if decision == D::NotApplicable {
                continue;
            }
            if is_ind(decision) {
                return decision;
            }
        }
        D::NotApplicable
    }

    // C.11 Legacy deny-overrides for rules: an Indeterminate rule's effect is Deny
    // exactly when its extended Indeterminate is {D}.
    fn legacy_deny_overrides_rules(ds: &[D]) -> D {
        let (mut at_least_one_error, mut potential_deny, mut at_least_one_permit) = (false, false, false);
        for &decision in ds {
            if decision == D::Deny {
                return D::Deny;
            }
            if decision == D::Permit {
                at_least_one_permit = true;
                continue;
            }
            if decision == D::NotApplicable {
                continue;
            }
            if is_ind(decision) {
                at_least_one_error = true;
                if decision == D::IndD {
                    potential_deny = true;
                }
                continue;
            }
        }
        if potential_deny {
            return D::Ind;
        }
        if at_least_one_permit {
            return D::Permit;
        }
        if at_least_one_error {
            return D::Ind;
        }
        D::NotApplicable
    }

    // C.12 Legacy deny-overrides for policies.
    fn legacy_deny_overrides_policies(ds: &[D]) -> D {
        let mut at_least_one_permit = false;
        for &decision in ds {
            if decision == D::Deny {
                return D::Deny;
            }
            if decision == D::Permit {
                at_least_one_permit = true;
                continue;
            }
            if decision == D::NotApplicable {
                continue;
            }
            if is_ind(decision) {
                return D::Deny;
            }
        }
        if at_least_one_permit {
            return D::Permit;
        }
        D::NotApplicable
    }

    // C.14 Legacy permit-overrides for rules.
    fn legacy_permit_overrides_rules(ds: &[D]) -> D {
        let (mut at_least_one_error, mut potential_permit, mut at_least_one_deny) = (false, false, false);
        for &decision in ds {
            if decision == D::Deny {
                at_least_one_deny = true;
                continue;
            }
            if decision == D::Permit {
                return D::Permit;
            }
            if decision == D::NotApplicable {
                continue;
            }
            if is_ind(decision) {
                at_least_one_error = true;
                if decision == D::IndP {
                    potential_permit = true;
                }
                continue;
            }
        }
        if potential_permit {
            return D::Ind;
        }
        if at_least_one_deny {
            return D::Deny;
        }
        if at_least_one_error {
            return D::Ind;
        }
        D::NotApplicable
    }

    // C.15 Legacy permit-overrides for policies.
    fn legacy_permit_overrides_policies(ds: &[D]) -> D {
        let (mut at_least_one_error, mut at_least_one_deny) = (false, false);
        for &decision in ds {
            if decision == D::Deny {
                at_least_one_deny = true;
                continue;
            }
            if decision == D::Permit {
                return D::Permit;
            }
            if decision == D::NotApplicable {
                continue;
            }
            if is_ind(decision) {
                at_least_one_error = true;
                continue;
            }
        }
        if at_least_one_deny {
            return D::Deny;
        }
        if at_least_one_error {
            return D::Ind;
        }
        D::NotApplicable
    }

    fn to_dec(d: D) -> Dec {
        match d {
            D::Permit => Dec::Permit,
            D::Deny => Dec::Deny,
            D::NotApplicable => Dec::Na,
            D::IndD => Dec::IndD,
            D::IndP => Dec::IndP,
            D::IndDP | D::Ind => Dec::IndDp,
        }
    }

    fn from_dec(d: Dec) -> D {
        match d {
            Dec::Permit => D::Permit,
            Dec::Deny => D::Deny,
            Dec::Na => D::NotApplicable,
            Dec::IndD => D::IndD,
            Dec::IndP => D::IndP,
            Dec::IndDp => D::IndDP,
        }
    }

    /// Every sequence of up to three outcomes.
    fn sequences() -> Vec<Vec<D>> {
        let mut out = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for s in &last {
                for d in OUTCOMES {
                    let mut s2: Vec<D> = s.clone();
                    s2.push(d);
                    next.push(s2);
                }
            }
            out.extend(next.iter().cloned());
            last = next;
        }
        out
    }

    fn run(alg: Alg, policy_level: bool, ds: &[D]) -> D {
        let out = combine(alg, policy_level, ds.len(), |i| {
            Out::new(ds.get(i).copied().map_or(Dec::Na, to_dec))
        });
        from_dec(out.d)
    }

    #[test]
    fn every_algorithm_agrees_with_appendix_c() {
        type Expected = fn(&[D]) -> D;
        // (algorithm, at policy level, the appendix, compare the extended Indeterminate)
        let table: [(Alg, bool, Expected, bool); 16] = [
            (Alg::DenyOverrides, false, deny_overrides, true),
            (Alg::DenyOverrides, true, deny_overrides, true),
            (Alg::PermitOverrides, false, permit_overrides, true),
            (Alg::PermitOverrides, true, permit_overrides, true),
            (Alg::DenyUnlessPermit, false, deny_unless_permit, true),
            (Alg::DenyUnlessPermit, true, deny_unless_permit, true),
            (Alg::PermitUnlessDeny, false, permit_unless_deny, true),
            (Alg::PermitUnlessDeny, true, permit_unless_deny, true),
            (Alg::FirstApplicable, false, first_applicable, true),
            (Alg::FirstApplicable, true, first_applicable, true),
            (
                Alg::LegacyDenyOverrides,
                false,
                legacy_deny_overrides_rules,
                false,
            ),
            (
                Alg::LegacyDenyOverrides,
                true,
                legacy_deny_overrides_policies,
                false,
            ),
            (
                Alg::LegacyPermitOverrides,
                false,
                legacy_permit_overrides_rules,
                false,
            ),
            (
                Alg::LegacyPermitOverrides,
                true,
                legacy_permit_overrides_policies,
                false,
            ),
            // Not a rule-combining algorithm (domain.md §8.2), and an unknown one.
            (Alg::OnlyOneApplicable, false, |_| D::Ind, false),
            (Alg::Unknown, true, |_| D::Ind, false),
        ];
        let collapse = |d: D| if is_ind(d) { D::Ind } else { d };
        let mut checked = 0;
        for (alg, policy_level, expected, extended) in table {
            for s in sequences() {
                // A rule is never Indeterminate{DP}: the legacy rule algorithms read an
                // Indeterminate rule's effect, which {DP} does not have.
                let legacy_rules =
                    !policy_level && matches!(alg, Alg::LegacyDenyOverrides | Alg::LegacyPermitOverrides);
                if legacy_rules && s.contains(&D::IndDP) {
                    continue;
                }
                let (want, got) = (expected(&s), run(alg, policy_level, &s));
                if extended {
                    assert_eq!(got, want, "{alg:?} (policy level {policy_level}) over {s:?}");
                } else {
                    assert_eq!(
                        collapse(got),
                        collapse(want),
                        "{alg:?} (policy level {policy_level}) over {s:?}"
                    );
                }
                checked += 1;
            }
        }
        assert!(checked > 3000, "{checked}");
    }
}
