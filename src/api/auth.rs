//! Bearer-token authentication: JWTs signed with HS256 (a shared secret) or RS256 (the
//! issuer's public key), and three scopes.
//!
//! Scopes are hierarchical: `delegraph:admin` includes `delegraph:write`, which includes
//! `delegraph:read`. They are read from the `scope` claim (space-separated, RFC 8693)
//! or the `scp` claim (a string or a list). `exp` is required; `iss` and `aud` are
//! checked when configured. Without a key the server does not start unless the
//! development mode (`--dev-no-auth`) is switched on explicitly.

use actix_web::HttpRequest;
use actix_web::http::header::AUTHORIZATION;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::problem::{Problem, ProblemCode};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "delegraph:read",
            Scope::Write => "delegraph:write",
            Scope::Admin => "delegraph:admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "delegraph:read" => Some(Scope::Read),
            "delegraph:write" => Some(Scope::Write),
            "delegraph:admin" => Some(Scope::Admin),
            _ => None,
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
        JwtAuth { key, validation }
    }

    /// Also require `iss` to be `issuer`.
    pub fn issuer(mut self, issuer: &str) -> JwtAuth {
        self.validation.set_issuer(&[issuer]);
        self
    }

    /// Also require `aud` to include `audience`.
    pub fn audience(mut self, audience: &str) -> JwtAuth {
        self.validation.set_audience(&[audience]);
        self.validation.validate_aud = true;
        self
    }

    fn scopes(&self, token: &str) -> Result<Vec<Scope>, Problem> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            Problem::new(
                ProblemCode::Unauthenticated,
                format!("the bearer token is not valid: {e}"),
            )
        })?;
        let c = data.claims;
        let mut words: Vec<String> = Vec::new();
        if let Some(s) = c.scope {
            words.extend(s.split_whitespace().map(str::to_string));
        }
        match c.scp {
            Some(ScpClaim::One(s)) => words.extend(s.split_whitespace().map(str::to_string)),
            Some(ScpClaim::Many(v)) => words.extend(v),
            None => {}
        }
        Ok(words.iter().filter_map(|w| Scope::parse(w)).collect())
    }
}

#[derive(Deserialize)]
struct Claims {
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
    /// Lets the request through when its token grants `need`: 401 without a valid
    /// token, 403 with too little scope.
    pub fn require(&self, req: &HttpRequest, need: Scope) -> Result<(), Problem> {
        let jwt = match self {
            Auth::Disabled => return Ok(()),
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
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::new(
                    ProblemCode::Unauthenticated,
                    "the `Authorization` header is not `Bearer <token>`",
                )
            })?;
        let scopes = jwt.scopes(token)?;
        if scopes.iter().any(|s| *s >= need) {
            Ok(())
        } else {
            Err(Problem::new(
                ProblemCode::InsufficientScope,
                format!("this route needs scope `{}`", need.as_str()),
            ))
        }
    }
}
