//! The request context: categories of attributes, and the individual requests of a
//! multi-request.

use std::collections::HashMap;

use super::error::PdpError;
use super::policy::AttrValue;

/// Which endpoint asks: the internal decision endpoint or the external authorize one
/// (which also accepts a national id as the subject).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    #[default]
    Internal,
    External,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attribute {
    pub id: String,
    pub issuer: Option<String>,
    /// IncludeInResult: echo the attribute in the result.
    pub include: bool,
    pub values: Vec<AttrValue>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Category {
    pub category: String,
    /// The `xml:id` (XML) or `Id` (JSON) that multi-request references name.
    pub xml_id: Option<String>,
    pub attrs: Vec<Attribute>,
}

impl Category {
    pub fn new(category: &str) -> Category {
        Category {
            category: category.to_string(),
            ..Category::default()
        }
    }

    /// Adds values to the attribute with this id and issuer, merging repeated ids into
    /// one bag.
    pub fn add(&mut self, id: &str, issuer: Option<&str>, include: bool, values: Vec<AttrValue>) {
        match self
            .attrs
            .iter_mut()
            .find(|a| a.id == id && a.issuer.as_deref() == issuer)
        {
            Some(a) => {
                a.include |= include;
                a.values.extend(values);
            }
            None => self.attrs.push(Attribute {
                id: id.to_string(),
                issuer: issuer.map(str::to_string),
                include,
                values,
            }),
        }
    }

    /// The values of an attribute id (any issuer).
    pub fn values<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a AttrValue> + 'a {
        self.attrs
            .iter()
            .filter(move |a| a.id == id)
            .flat_map(|a| a.values.iter())
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub categories: Vec<Category>,
    /// MultiRequests: each entry lists the ids of the categories of one request.
    pub multi: Vec<Vec<String>>,
    pub return_policy_ids: bool,
    pub combined: bool,
}

/// One individual request: its categories, each category once.
pub type Individual = Vec<Category>;

/// `cats` merged into one individual request: categories by their id, and within one,
/// a later attribute into the first with its id and issuer (as [`Category::add`]), in
/// the order first seen. Hashed, so thousands of repeated categories or attributes cost
/// linear time (a linear search each was seconds for a few megabytes).
fn merged<'a>(cats: impl IntoIterator<Item = &'a Category>) -> Individual {
    type Key<'a> = (&'a str, Option<&'a str>);
    let mut out: Individual = Vec::new();
    let mut cat_at: HashMap<&'a str, usize> = HashMap::new();
    let mut attr_at: Vec<HashMap<Key<'a>, usize>> = Vec::new();
    for c in cats {
        let (i, first) = match cat_at.get(c.category.as_str()) {
            Some(&i) => (i, false),
            None => {
                cat_at.insert(&c.category, out.len());
                out.push(Category {
                    category: c.category.clone(),
                    xml_id: None,
                    attrs: Vec::new(),
                });
                attr_at.push(HashMap::new());
                (out.len() - 1, true)
            }
        };
        for a in &c.attrs {
            let key = (a.id.as_str(), a.issuer.as_deref());
            match attr_at[i].get(&key) {
                // The first category of an id is taken as it is (repeated ids in it
                // stay apart, as before); later ones merge into the first match.
                Some(&j) if !first => {
                    let x = &mut out[i].attrs[j];
                    x.include |= a.include;
                    x.values.extend(a.values.iter().cloned());
                }
                found => {
                    if found.is_none() {
                        attr_at[i].insert(key, out[i].attrs.len());
                    }
                    out[i].attrs.push(a.clone());
                }
            }
        }
    }
    out
}

/// The most individual requests one multi-request may hold.
pub const MAX_INDIVIDUAL: usize = 10_000;

/// The most attributes and attribute values a multi-request's individual requests may
/// hold together (a category named by several references counts once for each). Each
/// individual request copies its categories and is decided on the request's thread, so
/// without it a few hundred kilobytes (one long attribute list named by thousands of
/// references) cost seconds of CPU, or all the memory.
pub const MAX_EXPANDED_VALUES: usize = 200_000;

impl Request {
    /// The individual requests, in order: one per multi-request reference, or the
    /// request itself. A reference to an unknown id is a syntax error for the whole
    /// request; more than [`MAX_INDIVIDUAL`] individual requests, or more than
    /// [`MAX_EXPANDED_VALUES`] attributes and values in them, a processing error
    /// (nothing is decided).
    pub fn individual(&self) -> Result<Vec<Individual>, PdpError> {
        if self.multi.is_empty() {
            return Ok(vec![merged(&self.categories)]);
        }
        if self.multi.len() > MAX_INDIVIDUAL {
            return Err(PdpError::Processing(format!(
                "the request holds {} individual requests, more than the limit of {MAX_INDIVIDUAL}",
                self.multi.len()
            )));
        }
        // Each category with its size: attributes and their values (an attribute without
        // a value is copied into every request that names it, too).
        let by_id: HashMap<&str, (&Category, usize)> = self
            .categories
            .iter()
            .rev()
            .filter_map(|c| {
                let size = c.attrs.len() + c.attrs.iter().map(|a| a.values.len()).sum::<usize>();
                Some((c.xml_id.as_deref()?, (c, size)))
            })
            .collect();
        let mut picked = Vec::with_capacity(self.multi.len());
        let mut size = 0usize;
        for refs in &self.multi {
            let mut cats = Vec::with_capacity(refs.len());
            for r in refs {
                let (c, n) = by_id.get(r.as_str()).ok_or_else(|| {
                    PdpError::Syntax(format!("a multi-request names an unknown category id `{r}`"))
                })?;
                size = size.saturating_add(*n);
                if size > MAX_EXPANDED_VALUES {
                    return Err(PdpError::Processing(format!(
                        "the individual requests hold more than the limit of {MAX_EXPANDED_VALUES} attributes and values together"
                    )));
                }
                cats.push(*c);
            }
            picked.push(cats);
        }
        Ok(picked.into_iter().map(merged).collect())
    }
}

/// A request Altinn's context handler refuses before any policy is read (domain.md §8
/// item 7): a subject or resource category that is missing or has no attribute value;
/// a system user id beside any other subject attribute, or one that is not a uuid;
/// conflicting subject ids (a user id with a national id; on the external endpoint an
/// organisation number with either); a national id on the internal endpoint. The
/// internal endpoint reports these as syntax errors, the external as processing errors.
/// A subject that is well-formed but unknown is not an error.
pub fn check_altinn(ind: &Individual, api: Api) -> Result<(), PdpError> {
    use super::policy::{A_ORGNO, A_SSN, A_SYSTEMUSER, A_USERID};
    use super::policy::{CAT_RESOURCE, CAT_SUBJECT};
    let external = api == Api::External;
    let fail = |msg: String| {
        Err(if external {
            PdpError::Processing(msg)
        } else {
            PdpError::Syntax(msg)
        })
    };
    let with_values = |cat: &str| {
        ind.iter()
            .find(|c| c.category == cat)
            .filter(|c| c.attrs.iter().any(|a| !a.values.is_empty()))
    };
    let Some(subject) = with_values(CAT_SUBJECT) else {
        return fail("the request has no subject attributes".into());
    };
    let Some(resource) = with_values(CAT_RESOURCE) else {
        return fail("the request has no resource attributes".into());
    };
    let has = |c: &Category, id: &str| c.values(id).next().is_some();
    if has(subject, A_SYSTEMUSER) {
        if subject
            .attrs
            .iter()
            .any(|a| a.id != A_SYSTEMUSER && !a.values.is_empty())
        {
            return fail(format!("`{A_SYSTEMUSER}` goes alone in the subject"));
        }
        let mut values = subject.values(A_SYSTEMUSER);
        let ok = values.next().is_some_and(|v| crate::model::is_uuid(v.v.trim())) && values.next().is_none();
        if !ok {
            return fail(format!("`{A_SYSTEMUSER}` is one uuid"));
        }
    }
    if !external {
        for c in [subject, resource] {
            if has(c, A_SSN) {
                return fail(format!("the decision endpoint does not take `{A_SSN}`"));
            }
        }
    }
    let orgno = has(subject, A_ORGNO) || has(subject, "urn:altinn:organizationnumber");
    let (user, ssn) = (has(subject, A_USERID), has(subject, A_SSN));
    if (user && ssn) || (external && orgno && (user || ssn)) {
        return fail("the subject names conflicting ids".into());
    }
    Ok(())
}
