//! The Altinn catalogue: roles, access packages, areas, RolePackage and RoleMap.
//!
//! The data lives in the project's own files under `catalog/` (built from the reference
//! dump by `tools/build_catalog.py`) and is compiled into the binary, so nothing at run
//! time needs the reference folder. Roles and packages get dense ids ([`RoleId`],
//! [`PackageId`]) so that sets of them are small bitsets.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::model::{EntityType, Error, ErrorCode, PackageId, RoleId};

/// Where a role comes from; decides who may create or remove assignments of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Altinn 3 roles (rettighetshaver, agent, privatperson, ...).
    Altinn3,
    /// Enhetsregisteret, the business register (ER).
    Ccr,
    /// The guardianship authority.
    Cra,
    /// Legacy Altinn 2 roles.
    Altinn2,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub code: String,
    pub urn: String,
    pub legacy_code: Option<String>,
    pub name: String,
    pub name_nb: String,
    pub provider: Provider,
    pub is_key_role: bool,
    pub is_assignable: bool,
}

#[derive(Debug, Clone)]
pub struct Package {
    pub code: String,
    pub urn: String,
    pub name: String,
    pub name_nb: String,
    pub area: String,
    pub entity_type: EntityType,
    pub is_assignable: bool,
    pub is_delegable: bool,
}

#[derive(Debug, Clone)]
pub struct Area {
    pub urn: String,
    pub name: String,
    pub name_nb: String,
    pub group: String,
}

/// One RolePackage row: holding `role` at F gives `package` at F.
#[derive(Debug, Clone)]
pub struct RolePackageRow {
    pub role: RoleId,
    pub package: PackageId,
    /// The row applies only when F has this unit type.
    pub unit_type: Option<String>,
    pub has_access: bool,
    pub can_delegate: bool,
}

/// A set of packages as a bitset (the catalogue has 223; room for 256).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PackageSet([u64; 4]);

impl PackageSet {
    pub const EMPTY: PackageSet = PackageSet([0; 4]);
    pub fn insert(&mut self, p: PackageId) {
        let i = usize::from(p.0);
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
    pub fn remove(&mut self, p: PackageId) {
        let i = usize::from(p.0);
        if let Some(w) = self.0.get_mut(i / 64) {
            *w &= !(1 << (i % 64));
        }
    }
    pub fn contains(&self, p: PackageId) -> bool {
        let i = usize::from(p.0);
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    pub fn union_with(&mut self, other: &PackageSet) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a |= *b;
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    /// The packages in both sets.
    pub fn intersection(&self, other: &PackageSet) -> PackageSet {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a &= *b;
        }
        out
    }
    pub fn intersects(&self, other: &PackageSet) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }
    pub fn iter(&self) -> impl Iterator<Item = PackageId> + '_ {
        (0..256u16)
            .filter(|i| self.contains(PackageId(*i)))
            .map(PackageId)
    }
}

impl FromIterator<PackageId> for PackageSet {
    fn from_iter<T: IntoIterator<Item = PackageId>>(iter: T) -> Self {
        let mut s = PackageSet::EMPTY;
        for p in iter {
            s.insert(p);
        }
        s
    }
}

/// A set of roles as a bitset (the catalogue has 148; room for 256).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RoleSet([u64; 4]);

impl RoleSet {
    pub const EMPTY: RoleSet = RoleSet([0; 4]);
    pub fn insert(&mut self, r: RoleId) {
        let i = usize::from(r.0);
        if let Some(w) = self.0.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }
    pub fn contains(&self, r: RoleId) -> bool {
        let i = usize::from(r.0);
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    /// The roles in both sets.
    pub fn intersection(&self, other: &RoleSet) -> RoleSet {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a &= *b;
        }
        out
    }
    pub fn intersects(&self, other: &RoleSet) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }
    pub fn iter(&self) -> impl Iterator<Item = RoleId> + '_ {
        (0..256u16).filter(|i| self.contains(RoleId(*i))).map(RoleId)
    }
}

impl Extend<RoleId> for RoleSet {
    fn extend<T: IntoIterator<Item = RoleId>>(&mut self, iter: T) {
        for r in iter {
            self.insert(r);
        }
    }
}

/// Precomputed RolePackage rows of one role.
#[derive(Debug, Clone, Default)]
struct RoleRows {
    access: PackageSet,
    delegate: PackageSet,
    /// Rows with a unit-type condition: (unit type, package, has_access, can_delegate).
    conditional: Vec<(String, PackageId, bool, bool)>,
}

/// Well-known roles and packages the rules name.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub rettighetshaver: RoleId,
    pub appstyrt_rettighetshaver: RoleId,
    pub agent: RoleId,
    pub supplier: RoleId,
    pub hovedadministrator_role: RoleId,
    pub privatperson: RoleId,
    pub hovedenhet: RoleId,
    pub ikke_naeringsdrivende_hovedenhet: RoleId,
    pub innehaver: RoleId,
    pub deltaker_delt_ansvar: RoleId,
    pub hovedadministrator: PackageId,
    pub tilgangsstyrer: PackageId,
    pub klientadministrator: PackageId,
    // --- §10–§11 ---
    /// Asked of the actor of every supplier event (domain.md §10, choice 10).
    pub maskinporten_administrator: PackageId,
    /// The access manager of a person (domain.md §11.3–§11.4).
    pub innbygger_tilgangsstyring: PackageId,
}

#[derive(Debug)]
pub struct Catalog {
    pub roles: Vec<Role>,
    pub packages: Vec<Package>,
    pub areas: Vec<Area>,
    pub role_packages: Vec<RolePackageRow>,
    /// RoleMap rows (has → gets).
    pub role_map: Vec<(RoleId, RoleId)>,
    pub known: Known,
    role_rows: Vec<RoleRows>,
    role_map_of: Vec<Vec<RoleId>>,
    /// ENK owner rule roles: REGN, REVI and the Altinn 2 accountant/auditor roles.
    owner_rule_roles: Vec<RoleId>,
    role_index: HashMap<String, RoleId>,
    package_index: HashMap<String, PackageId>,
}

#[derive(Deserialize)]
struct RawRole {
    code: String,
    urn: String,
    legacy_code: Option<String>,
    name: String,
    name_nb: String,
    provider: String,
    is_key_role: bool,
    is_assignable: bool,
}

#[derive(Deserialize)]
struct RawPackage {
    code: String,
    urn: String,
    name: String,
    name_nb: String,
    area: String,
    entity_type: EntityType,
    is_assignable: bool,
    is_delegable: bool,
}

#[derive(Deserialize)]
struct RawArea {
    urn: String,
    name: String,
    name_nb: String,
    group: String,
}

#[derive(Deserialize)]
struct RawRolePackage {
    role: String,
    package: String,
    unit_type: Option<String>,
    has_access: bool,
    can_delegate: bool,
}

#[derive(Deserialize)]
struct RawRoleMap {
    has: String,
    gets: String,
}

/// Loading failures only happen when the committed catalogue files are inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalogue file `{0}` is not valid: {1}")]
    Parse(&'static str, serde_json::Error),
    #[error("catalogue names unknown {0} `{1}`")]
    Dangling(&'static str, String),
    #[error("catalogue has more {0} than the engine supports")]
    TooMany(&'static str),
}

const ROLES_JSON: &str = include_str!("../catalog/roles.json");
const PACKAGES_JSON: &str = include_str!("../catalog/packages.json");
const AREAS_JSON: &str = include_str!("../catalog/areas.json");
const ROLE_PACKAGES_JSON: &str = include_str!("../catalog/role_packages.json");
const ROLE_MAP_JSON: &str = include_str!("../catalog/role_map.json");

static BUILTIN: OnceLock<Catalog> = OnceLock::new();

impl Catalog {
    /// The catalogue compiled into the binary.
    pub fn builtin() -> &'static Catalog {
        BUILTIN.get_or_init(|| match Catalog::load_builtin() {
            Ok(c) => c,
            // The files are committed and checked by a test; failing here means the
            // build itself is broken, which no caller could recover from.
            #[allow(clippy::panic)]
            Err(e) => panic!("built-in catalogue is broken: {e}"),
        })
    }

    fn load_builtin() -> Result<Catalog, CatalogError> {
        let roles: Vec<RawRole> =
            serde_json::from_str(ROLES_JSON).map_err(|e| CatalogError::Parse("roles.json", e))?;
        let packages: Vec<RawPackage> =
            serde_json::from_str(PACKAGES_JSON).map_err(|e| CatalogError::Parse("packages.json", e))?;
        let areas: Vec<RawArea> =
            serde_json::from_str(AREAS_JSON).map_err(|e| CatalogError::Parse("areas.json", e))?;
        let rps: Vec<RawRolePackage> = serde_json::from_str(ROLE_PACKAGES_JSON)
            .map_err(|e| CatalogError::Parse("role_packages.json", e))?;
        let maps: Vec<RawRoleMap> =
            serde_json::from_str(ROLE_MAP_JSON).map_err(|e| CatalogError::Parse("role_map.json", e))?;
        if roles.len() > 256 {
            return Err(CatalogError::TooMany("roles"));
        }
        if packages.len() > 256 {
            return Err(CatalogError::TooMany("packages"));
        }
        if roles.len() > usize::from(u16::MAX) {
            return Err(CatalogError::TooMany("roles"));
        }

        let roles: Vec<Role> = roles
            .into_iter()
            .map(|r| Role {
                provider: match r.provider.as_str() {
                    "sys-ccr" => Provider::Ccr,
                    "sys-cra" => Provider::Cra,
                    "sys-altinn2" => Provider::Altinn2,
                    _ => Provider::Altinn3,
                },
                code: r.code,
                urn: r.urn,
                legacy_code: r.legacy_code,
                name: r.name,
                name_nb: r.name_nb,
                is_key_role: r.is_key_role,
                is_assignable: r.is_assignable,
            })
            .collect();
        let packages: Vec<Package> = packages
            .into_iter()
            .map(|p| Package {
                code: p.code,
                urn: p.urn,
                name: p.name,
                name_nb: p.name_nb,
                area: p.area,
                entity_type: p.entity_type,
                is_assignable: p.is_assignable,
                is_delegable: p.is_delegable,
            })
            .collect();
        let areas = areas
            .into_iter()
            .map(|a| Area {
                urn: a.urn,
                name: a.name,
                name_nb: a.name_nb,
                group: a.group,
            })
            .collect();

        // Codes and URNs first, so that no legacy code can shadow another role's own code.
        let mut role_index = HashMap::new();
        for (i, r) in roles.iter().enumerate() {
            let id = RoleId(i as u16);
            role_index.insert(r.code.to_lowercase(), id);
            role_index.insert(r.urn.to_lowercase(), id);
        }
        for (i, r) in roles.iter().enumerate() {
            let id = RoleId(i as u16);
            if let Some(l) = &r.legacy_code {
                role_index.entry(l.to_lowercase()).or_insert(id);
                role_index
                    .entry(format!("urn:altinn:rolecode:{}", l.to_lowercase()))
                    .or_insert(id);
            }
            // Every role may be named `urn:altinn:rolecode:CODE` by its own code too, the
            // way Altinn 2 roles are.
            role_index
                .entry(format!("urn:altinn:rolecode:{}", r.code.to_lowercase()))
                .or_insert(id);
        }
        let mut package_index = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            let id = PackageId(i as u16);
            package_index.insert(p.code.to_lowercase(), id);
            package_index.insert(p.urn.to_lowercase(), id);
            package_index
                .entry(format!("urn:altinn:accesspackage:{}", p.code.to_lowercase()))
                .or_insert(id);
        }

        let role = |code: &str| -> Result<RoleId, CatalogError> {
            role_index
                .get(&code.to_lowercase())
                .copied()
                .ok_or_else(|| CatalogError::Dangling("role", code.to_string()))
        };
        let package = |code: &str| -> Result<PackageId, CatalogError> {
            package_index
                .get(&code.to_lowercase())
                .copied()
                .ok_or_else(|| CatalogError::Dangling("package", code.to_string()))
        };

        let mut role_packages = Vec::with_capacity(rps.len());
        let mut role_rows = vec![RoleRows::default(); roles.len()];
        for r in rps {
            let row = RolePackageRow {
                role: role(&r.role)?,
                package: package(&r.package)?,
                unit_type: r.unit_type,
                has_access: r.has_access,
                can_delegate: r.can_delegate,
            };
            if let Some(rr) = role_rows.get_mut(usize::from(row.role.0)) {
                match &row.unit_type {
                    None => {
                        if row.has_access {
                            rr.access.insert(row.package);
                        }
                        if row.can_delegate {
                            rr.delegate.insert(row.package);
                        }
                    }
                    Some(u) => {
                        rr.conditional
                            .push((u.clone(), row.package, row.has_access, row.can_delegate))
                    }
                }
            }
            role_packages.push(row);
        }
        let mut role_map = Vec::with_capacity(maps.len());
        let mut role_map_of = vec![Vec::new(); roles.len()];
        for m in maps {
            let (h, g) = (role(&m.has)?, role(&m.gets)?);
            role_map.push((h, g));
            if let Some(v) = role_map_of.get_mut(usize::from(h.0)) {
                v.push(g);
            }
        }
        let known = Known {
            rettighetshaver: role("rettighetshaver")?,
            appstyrt_rettighetshaver: role("appstyrt-rettighetshaver")?,
            agent: role("agent")?,
            supplier: role("supplier")?,
            hovedadministrator_role: role("urn:altinn:role:hovedadministrator")?,
            privatperson: role("privatperson")?,
            hovedenhet: role("hovedenhet")?,
            ikke_naeringsdrivende_hovedenhet: role("ikke-naeringsdrivende-hovedenhet")?,
            innehaver: role("innehaver")?,
            deltaker_delt_ansvar: role("deltaker-delt-ansvar")?,
            hovedadministrator: package("urn:altinn:accesspackage:hovedadministrator")?,
            tilgangsstyrer: package("tilgangsstyrer")?,
            klientadministrator: package("klientadministrator")?,
            maskinporten_administrator: package("maskinporten-administrator")?,
            innbygger_tilgangsstyring: package("innbygger-tilgangsstyring-privatperson")?,
        };
        let owner_rule_roles = [
            "regnskapsforer",
            "revisor",
            "a0237",
            "a0238",
            "a0239",
            "a0240",
            "a0241",
        ]
        .iter()
        .map(|c| role(c))
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Catalog {
            roles,
            packages,
            areas,
            role_packages,
            role_map,
            known,
            role_rows,
            role_map_of,
            owner_rule_roles,
            role_index,
            package_index,
        })
    }

    /// A role by code, legacy code (any case) or URN.
    pub fn role_id(&self, name: &str) -> Option<RoleId> {
        self.role_index.get(&name.trim().to_lowercase()).copied()
    }

    /// A package by code or URN.
    pub fn package_id(&self, name: &str) -> Option<PackageId> {
        self.package_index.get(&name.trim().to_lowercase()).copied()
    }

    /// `unknown_role` for `name`, with a "did you mean" among the role codes.
    pub fn unknown_role(&self, name: &str) -> Error {
        let hint = crate::model::hint(name, self.roles.iter().map(|r| r.code.as_str()));
        Error::new(
            ErrorCode::UnknownRole,
            format!("no role `{name}` in the catalogue{hint}"),
        )
    }

    /// `unknown_package` for `name`, with a "did you mean" among the package codes.
    pub fn unknown_package(&self, name: &str) -> Error {
        let hint = crate::model::hint(name, self.packages.iter().map(|p| p.code.as_str()));
        Error::new(
            ErrorCode::UnknownPackage,
            format!("no access package `{name}` in the catalogue{hint}"),
        )
    }

    pub fn role(&self, id: RoleId) -> &Role {
        // INVARIANT: RoleIds are only made by this catalogue, from indices of `roles`.
        &self.roles[usize::from(id.0)]
    }

    pub fn package(&self, id: PackageId) -> &Package {
        // INVARIANT: PackageIds are only made by this catalogue, from indices of `packages`.
        &self.packages[usize::from(id.0)]
    }

    /// Packages a holder of `role` may use at a party of `unit_type` (rows with has_access).
    pub fn role_packages(&self, role: RoleId, unit_type: Option<&str>) -> PackageSet {
        self.rows_of(role, unit_type, true)
    }

    /// Packages a holder of `role` may pass on at a party of `unit_type` (can_delegate).
    pub fn role_delegable_packages(&self, role: RoleId, unit_type: Option<&str>) -> PackageSet {
        self.rows_of(role, unit_type, false)
    }

    /// Packages a holder of `role` may use at a party of some unit type: every row with
    /// has_access, whatever its unit-type condition.
    pub fn role_packages_any_unit_type(&self, role: RoleId) -> PackageSet {
        let Some(rr) = self.role_rows.get(usize::from(role.0)) else {
            return PackageSet::EMPTY;
        };
        let mut set = rr.access;
        for (_, p, has_access, _) in &rr.conditional {
            if *has_access {
                set.insert(*p);
            }
        }
        set
    }

    fn rows_of(&self, role: RoleId, unit_type: Option<&str>, access: bool) -> PackageSet {
        let Some(rr) = self.role_rows.get(usize::from(role.0)) else {
            return PackageSet::EMPTY;
        };
        let mut set = if access { rr.access } else { rr.delegate };
        if let Some(u) = unit_type {
            for (cond, p, has_access, can_delegate) in &rr.conditional {
                if cond.eq_ignore_ascii_case(u) && if access { *has_access } else { *can_delegate } {
                    set.insert(*p);
                }
            }
        }
        set
    }

    /// The roles RoleMap gives a holder of `role` (one step).
    pub fn role_map_of(&self, role: RoleId) -> &[RoleId] {
        self.role_map_of
            .get(usize::from(role.0))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn is_key_role(&self, role: RoleId) -> bool {
        self.role(role).is_key_role
    }

    pub fn is_owner_rule_role(&self, role: RoleId) -> bool {
        self.owner_rule_roles.contains(&role)
    }

    pub fn is_main_unit_link(&self, role: RoleId) -> bool {
        role == self.known.hovedenhet || role == self.known.ikke_naeringsdrivende_hovedenhet
    }

    /// Rightholder-like roles carry package, resource and instance grants.
    pub fn is_rightholder(&self, role: RoleId) -> bool {
        role == self.known.rettighetshaver || role == self.known.appstyrt_rettighetshaver
    }

    /// The roles that arrive only from the registers (ER and guardianship).
    pub fn is_register_role(&self, role: RoleId) -> bool {
        matches!(self.role(role).provider, Provider::Ccr | Provider::Cra)
    }

    pub fn is_altinn2_role(&self, role: RoleId) -> bool {
        self.role(role).provider == Provider::Altinn2
    }

    /// Roles a rights listing never reports (scenario-format.md `rights`).
    pub fn is_unreported_role(&self, role: RoleId) -> bool {
        role == self.known.rettighetshaver || role == self.known.agent
    }

    /// The packages the `hovedadministrator` template rows let a main administrator grant.
    pub fn main_admin_template(&self, unit_type: Option<&str>) -> PackageSet {
        self.rows_of(self.known.hovedadministrator_role, unit_type, false)
    }

    /// Roles that give `package` (for lookups): (role, unit-type condition, row).
    pub fn roles_giving(&self, package: PackageId) -> impl Iterator<Item = &RolePackageRow> {
        self.role_packages.iter().filter(move |r| r.package == package)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_every_row_of_the_reference() {
        let c = Catalog::builtin();
        assert_eq!(c.roles.len(), 148);
        assert_eq!(c.packages.len(), 223);
        assert_eq!(c.areas.len(), 49);
        assert_eq!(c.role_packages.len(), 1285);
        assert_eq!(c.role_map.len(), 304);
        assert_eq!(c.roles.iter().filter(|r| r.is_key_role).count(), 8);
    }

    #[test]
    fn lookups_accept_code_legacy_code_and_urn() {
        let c = Catalog::builtin();
        let dagl = c.role_id("daglig-leder");
        assert!(dagl.is_some());
        assert_eq!(c.role_id("DAGL"), dagl);
        assert_eq!(c.role_id("urn:altinn:external-role:ccr:daglig-leder"), dagl);
        assert_eq!(c.role_id("urn:altinn:rolecode:dagl"), dagl);
        assert_eq!(c.role_id("FFØR"), c.role_id("forretningsforer"));
        assert_eq!(
            c.package_id("urn:altinn:accesspackage:skattegrunnlag"),
            c.package_id("skattegrunnlag")
        );
        assert!(
            c.package_id("vergemal-namsmannen-tvangsfullbyrdelse-forliksradet")
                .is_some()
        );
    }
}

/// Text reports for `delegraph catalog`.
pub mod report {
    use std::fmt::Write;

    use super::{Catalog, Provider};
    use crate::model::RoleId;

    fn provider(p: Provider) -> &'static str {
        match p {
            Provider::Altinn3 => "Altinn 3",
            Provider::Ccr => "Enhetsregisteret (ER)",
            Provider::Cra => "guardianship register",
            Provider::Altinn2 => "Altinn 2 (legacy)",
        }
    }

    /// The counts of everything in the catalogue.
    pub fn summary(c: &Catalog) -> String {
        let mut s = String::new();
        let count = |p: Provider| c.roles.iter().filter(|r| r.provider == p).count();
        let _ = writeln!(s, "roles:        {}", c.roles.len());
        for p in [Provider::Ccr, Provider::Cra, Provider::Altinn2, Provider::Altinn3] {
            let _ = writeln!(s, "  {:<24}{}", provider(p), count(p));
        }
        let _ = writeln!(s, "packages:     {}", c.packages.len());
        let org = c
            .packages
            .iter()
            .filter(|p| p.entity_type == crate::model::EntityType::Organisation)
            .count();
        let _ = writeln!(s, "  given by organisations  {org}");
        let _ = writeln!(s, "  given by persons        {}", c.packages.len() - org);
        let _ = writeln!(s, "areas:        {}", c.areas.len());
        let _ = writeln!(s, "RolePackage:  {} rows", c.role_packages.len());
        let _ = writeln!(s, "RoleMap:      {} rows", c.role_map.len());
        let keys: Vec<&str> = c
            .roles
            .iter()
            .filter(|r| r.is_key_role)
            .map(|r| r.code.as_str())
            .collect();
        let _ = writeln!(s, "key roles:    {}", keys.join(", "));
        s
    }

    /// What a role is and what it gives.
    pub fn role(c: &Catalog, id: RoleId) -> String {
        let r = c.role(id);
        let mut s = String::new();
        let _ = writeln!(s, "role {} — {} ({})", r.code, r.name, r.name_nb);
        let _ = writeln!(s, "  urn:          {}", r.urn);
        if let Some(l) = &r.legacy_code {
            let _ = writeln!(s, "  legacy code:  {l}");
        }
        let _ = writeln!(s, "  provider:     {}", provider(r.provider));
        let _ = writeln!(s, "  key role:     {}", if r.is_key_role { "yes" } else { "no" });
        let _ = writeln!(
            s,
            "  assignable:   {}",
            if r.is_assignable {
                "yes (through the API)"
            } else {
                "no"
            }
        );
        let rows: Vec<_> = c.role_packages.iter().filter(|row| row.role == id).collect();
        let _ = writeln!(s, "  gives {} package row(s):", rows.len());
        for row in rows {
            let p = c.package(row.package);
            let _ = writeln!(s, "    {:<48} {}", p.code, row_flags(row));
        }
        let maps = c.role_map_of(id);
        if !maps.is_empty() {
            let names: Vec<&str> = maps.iter().map(|g| c.role(*g).code.as_str()).collect();
            let _ = writeln!(s, "  RoleMap also gives: {}", names.join(", "));
        }
        s
    }

    /// A RolePackage row's flags and condition, e.g. `access, can delegate (only at unit type NUF)`.
    fn row_flags(row: &super::RolePackageRow) -> String {
        let mut flags = Vec::new();
        if row.has_access {
            flags.push("access");
        }
        if row.can_delegate {
            flags.push("can delegate");
        }
        let cond = row
            .unit_type
            .as_deref()
            .map(|u| format!(" (only at unit type {u})"))
            .unwrap_or_default();
        format!("{}{cond}", flags.join(", "))
    }

    /// What a package is and which roles give it.
    pub fn package(c: &Catalog, id: crate::model::PackageId) -> String {
        let p = c.package(id);
        let mut s = String::new();
        let _ = writeln!(s, "package {} — {} ({})", p.code, p.name, p.name_nb);
        let _ = writeln!(s, "  urn:          {}", p.urn);
        let _ = writeln!(s, "  area:         {}", p.area);
        let _ = writeln!(s, "  given by:     {:?}", p.entity_type);
        let _ = writeln!(
            s,
            "  assignable:   {}",
            if p.is_assignable { "yes" } else { "no" }
        );
        let _ = writeln!(
            s,
            "  delegable:    {}",
            if p.is_delegable {
                "yes (may be forwarded to agents)"
            } else {
                "no"
            }
        );
        let rows: Vec<_> = c.roles_giving(id).collect();
        let _ = writeln!(s, "  given by {} role row(s):", rows.len());
        for row in rows {
            let r = c.role(row.role);
            let _ = writeln!(s, "    {:<40} {}", r.code, row_flags(row));
        }
        s
    }
}
