//! Bearer-token authentication: JWTs signed with HS256 (a shared secret) or RS256 (the
//! issuer's public key), five scopes, and who the caller is.
//!
//! The scopes (README "Authentication"; which event needs which: [`super::actor`]):
//!
//! * `delegraph:read` — queries and decisions;
//! * `delegraph:act` — an end user's token: its `sub` claim is a party id, and its
//!   events act as that party only (`by` taken from `sub`, refused when it differs);
//! * `delegraph:write` — a backend acting for its users: events naming any `by`, and
//!   the vendor and consumer events; includes `delegraph:act` (for any party) and
//!   `delegraph:read`;
//! * `delegraph:import` — registers and administration: the events with no acting
//!   person (imports without `by` included); includes nothing else;
//! * `delegraph:admin` — every scope, and `POST /v1/admin/reset`.
//!
//! Scopes are read from the `scope` claim (space-separated, RFC 8693) or the `scp`
//! claim (a string or a list). `exp` is required; `nbf` is honoured and an `iat` in the
//! future refused, each with the configured leeway (default
//! [`DEFAULT_LEEWAY_SECS`]); `iss` and `aud` are checked when configured. A refused
//! token gets a 401 that says what is wrong in our words. Without a key the server does
//! not start unless the development mode (`--dev-no-auth`) is switched on explicitly.

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::problem::{Problem, ProblemCode};

/// The clock skew tolerated on `exp`, `nbf` and `iat` unless configured otherwise.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;

/// A scope a token may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Act,
    Write,
    Import,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 5] = [Scope::Read, Scope::Act, Scope::Write, Scope::Import, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "delegraph:read",
            Scope::Act => "delegraph:act",
            Scope::Write => "delegraph:write",
            Scope::Import => "delegraph:import",
            Scope::Admin => "delegraph:admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether a token carrying `self` has `other` too: the one place the nesting is
    /// decided (admin ⊇ everything; write ⊇ act and read; import, act and read are
    /// alone).
    pub fn includes(self, other: Scope) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Write => matches!(other, Scope::Write | Scope::Act | Scope::Read),
            Scope::Import => other == Scope::Import,
            Scope::Act => other == Scope::Act,
            Scope::Read => other == Scope::Read,
        }
    }
}

/// Who sent a request: the scopes of the token and its `sub` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scopes: Vec<Scope>,
    /// The `sub` claim: for a `delegraph:act` token, the party id the caller acts as.
    pub sub: Option<String>,
}

impl Caller {
    /// A caller with every scope (development mode, and the in-process tools).
    pub fn admin() -> Caller {
        Caller {
            scopes: vec![Scope::Admin],
            sub: None,
        }
    }

    /// Whether any scope of the token includes `need`.
    pub fn has(&self, need: Scope) -> bool {
        self.scopes.iter().any(|s| s.includes(need))
    }

    /// Lets the request through when the token grants `need`; 403 otherwise.
    pub fn require(&self, need: Scope) -> Result<(), Problem> {
        if self.has(need) {
            Ok(())
        } else {
            Err(Problem::new(
                ProblemCode::InsufficientScope,
                format!("this needs scope `{}`", need.as_str()),
            ))
        }
    }
}

/// A key that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("the RS256 public key is not a valid PEM RSA public key: {0}")]
    BadPublicKey(jsonwebtoken::errors::Error),
    #[error("the HS256 secret is empty")]
    EmptySecret,
}

/// How requests are authenticated.
#[derive(Clone)]
pub enum Auth {
    /// Development mode: every request has every scope. Never the default.
    Disabled,
    Jwt(Box<JwtAuth>),
}

/// A JWT validator.
#[derive(Clone)]
pub struct JwtAuth {
    key: DecodingKey,
    validation: Validation,
}

impl JwtAuth {
    /// Tokens signed with HS256 and `secret`.
    pub fn hs256(secret: &[u8]) -> Result<JwtAuth, AuthConfigError> {
        if secret.is_empty() {
            return Err(AuthConfigError::EmptySecret);
        }
        Ok(JwtAuth::with(DecodingKey::from_secret(secret), Algorithm::HS256))
    }

    /// Tokens signed with RS256; `pem` is the issuer's public key.
    pub fn rs256_pem(pem: &[u8]) -> Result<JwtAuth, AuthConfigError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(AuthConfigError::BadPublicKey)?;
        Ok(JwtAuth::with(key, Algorithm::RS256))
    }

    fn with(key: DecodingKey, alg: Algorithm) -> JwtAuth {
        let mut validation = Validation::new(alg);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = DEFAULT_LEEWAY_SECS;
        JwtAuth { key, validation }
    }

    /// The clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub fn leeway(mut self, secs: u64) -> JwtAuth {
        self.validation.leeway = secs;
        self
    }

    /// Also require `iss` to be `issuer` (a token without `iss` is refused too).
    pub fn issuer(mut self, issuer: &str) -> JwtAuth {
        self.validation.set_issuer(&[issuer]);
        self.validation.required_spec_claims.insert("iss".into());
        self
    }

    /// Also require `aud` to include `audience` (a token without `aud` is refused too).
    pub fn audience(mut self, audience: &str) -> JwtAuth {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self
    }

    /// Validates `token` and reads who it is; a refusal says why in our own words.
    fn caller(&self, token: &str) -> Result<Caller, Problem> {
        let refuse =
            |why: String| Problem::new(ProblemCode::Unauthenticated, format!("the bearer token {why}"));
        self.check_header(token).map_err(refuse)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            // The JWT library says only that some claim had the wrong shape, or calls an
            // `exp` it could not read missing; its checks of the shape come after the
            // signature's, so the claims can be read to name the culprit.
            let kind = e.kind();
            let shape = matches!(
                kind,
                ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) | ErrorKind::MissingRequiredClaim(_)
            );
            // The library reads the header's registered fields before the signature: one
            // of the wrong type (`"typ": 5`) is the header's fault, not the claims'.
            if matches!(kind, ErrorKind::Json(_)) && jsonwebtoken::decode_header(token).is_err() {
                return refuse(
                    "has a header whose fields have the wrong shape (e.g. `typ` or `kid` not a string)"
                        .into(),
                );
            }
            refuse(
                shape
                    .then(|| bad_claim(token))
                    .flatten()
                    .unwrap_or_else(|| refusal(kind)),
            )
        })?;
        let c = data.claims;
        if let Some(iat) = c.iat {
            let now = jsonwebtoken::get_current_timestamp();
            if iat > now.saturating_add(self.validation.leeway) {
                return Err(Problem::new(
                    ProblemCode::Unauthenticated,
                    "the bearer token says it was issued in the future (`iat`)",
                ));
            }
        }
        let mut words: Vec<String> = Vec::new();
        if let Some(s) = c.scope {
            words.extend(s.split_whitespace().map(str::to_string));
        }
        match c.scp {
            Some(ScpClaim::One(s)) => words.extend(s.split_whitespace().map(str::to_string)),
            Some(ScpClaim::Many(v)) => words.extend(v),
            None => {}
        }
        Ok(Caller {
            scopes: words.iter().filter_map(|w| Scope::parse(w)).collect(),
            sub: c.sub,
        })
    }
}

impl JwtAuth {
    /// Reads the token's header before the JWT library does, for the refusals it words
    /// misleadingly (an unsigned token would be "claims of the wrong shape") or lets
    /// through (a header without `alg`, which RFC 7515 §4.1.1 requires, is read as HS256).
    /// The signature is still checked by the library, against the configured algorithm.
    fn check_header(&self, token: &str) -> Result<(), String> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("is not a well-formed JWT (three base64url parts joined by `.`)".into());
        };
        let header = base64url(header)
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .ok_or("has a header that is not base64url-encoded JSON")?;
        let header = header
            .as_object()
            .ok_or("has a header that is not a JSON object")?;
        let expected = match self.validation.algorithms.first() {
            Some(Algorithm::RS256) => "RS256",
            _ => "HS256",
        };
        match header.get("alg") {
            None => return Err("has no algorithm (`alg`) in its header".into()),
            Some(serde_json::Value::String(a)) if a.eq_ignore_ascii_case("none") => {
                return Err(format!("is not signed (its `alg` is `{a}`)"));
            }
            Some(serde_json::Value::String(a)) if a == expected => {}
            Some(serde_json::Value::String(a)) => {
                return Err(format!(
                    "is signed with `{}`, and this server takes only `{expected}`",
                    crate::model::quote(a)
                ));
            }
            Some(_) => return Err("has an `alg` that is not a string".into()),
        }
        // RFC 7515 §4.1.11: a `crit` header names extensions the recipient must
        // understand, and this server understands none.
        if header.contains_key("crit") {
            return Err("names critical header extensions (`crit`) this server does not understand".into());
        }
        Ok(())
    }
}

/// Which claim of a token (its signature verified) has the wrong shape, in our words;
/// None when the claims look right (then the library's refusal stands).
fn bad_claim(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims = base64url(payload).and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let Some(serde_json::Value::Object(claims)) = claims else {
        return Some("has a payload that is not a JSON object of claims".into());
    };
    for (name, what) in [
        ("exp", "an expiry (`exp`)"),
        ("nbf", "a start (`nbf`)"),
        ("iat", "an issue time (`iat`)"),
    ] {
        match claims.get(name) {
            None if name == "exp" => return Some("has no expiry (`exp`)".into()),
            None => {}
            Some(v) if v.as_u64().is_none() => {
                return Some(format!(
                    "has {what} of `{}`, not a whole number of seconds since 1970",
                    crate::model::quote(&v.to_string())
                ));
            }
            Some(_) => {}
        }
    }
    match claims.get("sub") {
        None | Some(serde_json::Value::Null | serde_json::Value::String(_)) => {}
        Some(_) => return Some("has a `sub` that is not a string".into()),
    }
    match claims.get("scope") {
        None | Some(serde_json::Value::Null | serde_json::Value::String(_)) => {}
        Some(_) => return Some("has a `scope` that is not a string of space-separated scopes".into()),
    }
    match claims.get("scp") {
        None | Some(serde_json::Value::Null | serde_json::Value::String(_)) => {}
        Some(serde_json::Value::Array(v)) if v.iter().all(serde_json::Value::is_string) => {}
        Some(_) => return Some("has an `scp` that is neither a string nor a list of strings".into()),
    }
    None
}

/// Decodes base64url without padding (RFC 7515 §2); None when `s` is not that.
fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A lone 6-bit group cannot end a byte string.
    (bits != 6).then_some(out)
}

/// Why a token was refused, without the JWT library's wording.
fn refusal(kind: &ErrorKind) -> String {
    let why = match kind {
        ErrorKind::ExpiredSignature => "has expired (`exp`)",
        ErrorKind::ImmatureSignature => "is not valid yet (`nbf`)",
        ErrorKind::InvalidSignature => "has a signature that does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            "is not signed with the algorithm this server expects"
        }
        ErrorKind::InvalidIssuer => "comes from another issuer (`iss`)",
        ErrorKind::InvalidAudience => "is meant for another audience (`aud`)",
        ErrorKind::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => "has no expiry (`exp`)",
            "iss" => "has no issuer (`iss`)",
            "aud" => "has no audience (`aud`)",
            "nbf" => "has no `nbf`",
            _ => "lacks a claim this server requires",
        },
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => "has claims of the wrong shape",
        _ => "is not a well-formed JWT",
    };
    why.to_string()
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<ScpClaim>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ScpClaim {
    One(String),
    Many(Vec<String>),
}

impl Auth {
    /// Who sent the request: every scope in development mode; otherwise the valid
    /// bearer token's scopes and `sub`, or 401.
    pub fn caller(&self, req: &HttpRequest) -> Result<Caller, Problem> {
        let jwt = match self {
            Auth::Disabled => return Ok(Caller::admin()),
            Auth::Jwt(j) => j,
        };
        let header = req
            .headers()
            .get(AUTHORIZATION)
            .ok_or_else(|| Problem::new(ProblemCode::Unauthenticated, "no `Authorization: Bearer` token"))?;
        let value = header.to_str().map_err(|_| {
            Problem::new(
                ProblemCode::Unauthenticated,
                "the `Authorization` header is not ASCII",
            )
        })?;
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        let token = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .and_then(|_| value.get(7..))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::new(
                    ProblemCode::Unauthenticated,
                    "the `Authorization` header is not `Bearer <token>`",
                )
            })?;
        jwt.caller(token)
    }

    /// Lets the request through when its token grants `need`: 401 without a valid
    /// token, 403 with too little scope.
    pub fn require(&self, req: &HttpRequest, need: Scope) -> Result<Caller, Problem> {
        let caller = self.caller(req)?;
        caller.require(need)?;
        Ok(caller)
    }
}
