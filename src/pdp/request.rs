//! The request context: categories of attributes, and the individual requests of a
//! multi-request.

use super::PdpError;
use super::policy::AttrValue;

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

fn merge_into(out: &mut Individual, c: &Category) {
    match out.iter_mut().find(|x| x.category == c.category) {
        Some(x) => {
            for a in &c.attrs {
                x.add(&a.id, a.issuer.as_deref(), a.include, a.values.clone());
            }
        }
        None => out.push(Category {
            category: c.category.clone(),
            xml_id: None,
            attrs: c.attrs.clone(),
        }),
    }
}

impl Request {
    /// The individual requests, in order: one per multi-request reference, or the
    /// request itself. A reference to an unknown id is a syntax error for the whole
    /// request.
    pub fn individual(&self) -> Result<Vec<Individual>, PdpError> {
        if self.multi.is_empty() {
            let mut one = Vec::new();
            for c in &self.categories {
                merge_into(&mut one, c);
            }
            return Ok(vec![one]);
        }
        let mut out = Vec::with_capacity(self.multi.len());
        for refs in &self.multi {
            let mut one = Vec::new();
            for r in refs {
                let c = self
                    .categories
                    .iter()
                    .find(|c| c.xml_id.as_deref() == Some(r.as_str()))
                    .ok_or_else(|| {
                        PdpError::Syntax(format!("a multi-request names an unknown category id `{r}`"))
                    })?;
                merge_into(&mut one, c);
            }
            out.push(one);
        }
        Ok(out)
    }
}
