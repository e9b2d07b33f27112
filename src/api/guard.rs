//! Checks on a request before its body is read: the media type of a body, and that a
//! state-changing request does not come from another site's page in a browser.
//!
//! A web page may send a "simple" cross-site POST (`text/plain`, no preflight) to
//! `localhost`; with `--dev-no-auth` that would be enough to write. So every route with
//! a JSON body takes `application/json` only (415 otherwise; a browser must ask first
//! for that media type, and this server answers no CORS preflight), and the routes that
//! change the world refuse a request whose `Sec-Fetch-Site` or `Origin` shows another
//! site (403 `not_authorized`), whatever the authentication mode. Without
//! authentication, a browser must reach any route, reads included, through an IP address
//! or `localhost`: a page on a name its owner points at this address (DNS rebinding) is
//! same-origin by both headers ([`rebinding`]).

use actix_web::HttpRequest;
use actix_web::http::header::{CONTENT_TYPE, HOST, ORIGIN};

use super::problem::{Problem, ProblemCode};
use crate::model::{ErrorCode, quote};

/// The media type of the body, lower case, without parameters (empty when absent).
pub fn media_type(req: &HttpRequest) -> String {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The `charset` parameter of the `Content-Type`, lower case, if any.
fn charset(req: &HttpRequest) -> Option<String> {
    let ct = req.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
    })
}

/// Refuses a body that is not `application/json`, or that declares a charset other than
/// UTF-8 (415).
pub fn json_body(req: &HttpRequest) -> Result<(), Problem> {
    let media = media_type(req);
    if media == "application/json" {
        return match charset(req) {
            Some(c) if c != "utf-8" && c != "utf8" => Err(Problem::new(
                ProblemCode::UnsupportedMediaType,
                format!("a JSON body is UTF-8, not `charset={}`", quote(&c)),
            )),
            _ => Ok(()),
        };
    }
    let got = if media.is_empty() {
        "no Content-Type".to_string()
    } else {
        format!("`{}`", quote(&media))
    };
    Err(Problem::new(
        ProblemCode::UnsupportedMediaType,
        format!("the body must be `application/json`, got {got}"),
    ))
}

/// Refuses a request a browser sent from another site's page: `Sec-Fetch-Site` other
/// than `same-origin` or `none`, or an `Origin` whose host is not the one asked.
/// Clients that are not browsers send neither header and pass.
pub fn same_origin(req: &HttpRequest) -> Result<(), Problem> {
    let refuse = |why: String| {
        Problem::new(
            ProblemCode::Spec(ErrorCode::NotAuthorized),
            format!("a cross-site request from a browser may not change the world: {why}"),
        )
    };
    if let Some(site) = req.headers().get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default().trim().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Err(refuse(format!("`Sec-Fetch-Site: {}`", quote(&site))));
        }
    }
    let host = host(req);
    if let Some(origin) = req.headers().get(ORIGIN) {
        let origin = origin.to_str().unwrap_or_default().trim();
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .map(|h| h.trim_end_matches('/'));
        if host.is_empty() || origin_host.is_none_or(|h| !h.eq_ignore_ascii_case(host)) {
            return Err(refuse(format!(
                "`Origin: {}` is not this server (`{}`)",
                quote(origin),
                quote(host)
            )));
        }
    }
    Ok(())
}

/// Without authentication, refuses any request a browser sends through a name that a
/// DNS answer could point at this server (DNS rebinding): such a page is same-origin by
/// every header, so it could read the world, and write it, as if it were local. A
/// browser (a request with `Sec-Fetch-Site` or `Origin`) must come through an IP address
/// or `localhost`; other clients send neither header and pass. Checked for every route
/// (`observe`), reads included.
pub fn rebinding(req: &HttpRequest, open: bool) -> Result<(), Problem> {
    if !open {
        return Ok(());
    }
    let from_browser = req.headers().contains_key("sec-fetch-site") || req.headers().contains_key(ORIGIN);
    let host = host(req);
    if from_browser && !unreboundable(host) {
        return Err(Problem::new(
            ProblemCode::Spec(ErrorCode::NotAuthorized),
            format!(
                "with `--dev-no-auth` a browser may reach this server only through an IP address or `localhost`, not `Host: {}`",
                quote(host)
            ),
        ));
    }
    Ok(())
}

/// The request's `Host` header, trimmed (empty when absent or not text).
fn host(req: &HttpRequest) -> &str {
    req.headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .trim()
}

/// Whether a `Host` header names an IP address or `localhost` (or a name under it),
/// with or without a port: names a DNS answer cannot move to this server.
fn unreboundable(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        return rest
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || name.ends_with(".localhost")
}
