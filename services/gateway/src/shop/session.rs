//! Who is browsing, and the proof that a form was sent from one of our pages.
//!
//! - The session is the API's own JWT, kept in the `mall_session` cookie: `HttpOnly` (no script reads
//!   it), `SameSite=Lax` (other sites' forms do not carry it), `Secure` when the request came over
//!   TLS through a trusted proxy, and as long-lived as the token. It is checked like a bearer token
//!   (signature, expiry, revocation), so logging out anywhere ends it.
//! - Every form that changes something carries the `csrf` field, which must equal the `mall_csrf`
//!   cookie (a random value set on the first page; `SameSite=Strict`, `HttpOnly`): another site can
//!   make a browser send our cookies but can neither read nor set them, so it cannot fill the field.
//!   A request whose `Origin` is another site's is refused too.
//!
//! [`edge`] runs around every storefront request: it reads both cookies into a [`Visit`], sets the
//! form cookie when it is new, and gives every page its security headers.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, SameSite};
use mall_tokens::{Role, now_unix};
use serde::de::DeserializeOwned;

use super::pages::Problem;
use crate::AppState;

pub const SESSION_COOKIE: &str = "mall_session";
pub const CSRF_COOKIE: &str = "mall_csrf";

/// The storefront's Content-Security-Policy: nothing inline, nothing from elsewhere but pictures
/// (an admin may give a product an https picture URL).
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' https: data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in shopper.
#[derive(Debug, Clone)]
pub struct Shopper {
    pub user_id: i64,
    pub role: Role,
    pub token: String,
}

impl Shopper {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// One request's view of the session.
#[derive(Debug, Clone)]
pub struct Visit {
    pub shopper: Option<Shopper>,
    /// The value every form of this page carries in its `csrf` field.
    pub csrf: String,
    /// The request came over TLS (cookies are then `Secure`).
    pub secure: bool,
    /// The path and query, for "log in and come back here".
    pub here: String,
}

impl FromRequestParts<AppState> for Visit {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Visit>().cloned().ok_or(Problem::Internal)
    }
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = Cookie<'_>> {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
}

fn fresh_csrf() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Over TLS: a proxy we trust says so (`X-Forwarded-Proto: https`).
fn came_over_tls(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.trusted_proxies > 0
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next_back().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")))
}

/// A request from a page of another site: its `Origin` names another host than ours.
fn foreign_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return true };
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    origin == "null" || !origin_host.eq_ignore_ascii_case(host)
}

/// Around every storefront request (see the module).
pub async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let secure = came_over_tls(&state, headers);
    let mut session = None;
    let mut csrf = None;
    for c in cookies(headers) {
        match c.name() {
            SESSION_COOKIE => session = Some(c.value().to_owned()),
            CSRF_COOKIE if c.value().len() == 43 => csrf = Some(c.value().to_owned()),
            _ => {}
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD && foreign_origin(headers) {
        return with_headers(
            Problem::Forbidden("this form was sent from another site".into()).into_response(),
        );
    }
    let mut stale_session = false;
    let shopper = match session {
        Some(token) => match state.tokens.check(&token).await {
            Ok(claims) => match claims.user_id() {
                Ok(user_id) => Some(Shopper { user_id, role: claims.role, token }),
                Err(_) => None,
            },
            Err(crate::ApiError::Unavailable(msg)) => {
                return with_headers(Problem::Unavailable(msg).into_response());
            }
            Err(_) => {
                stale_session = true;
                None
            }
        },
        None => None,
    };
    let new_csrf = csrf.is_none();
    let csrf = csrf.unwrap_or_else(fresh_csrf);
    let here = req.uri().path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    req.extensions_mut().insert(Visit { shopper, csrf: csrf.clone(), secure, here });

    let mut response = next.run(req).await;
    if new_csrf {
        let cookie = Cookie::build((CSRF_COOKIE, csrf))
            .path("/")
            .http_only(true)
            .secure(secure)
            .same_site(SameSite::Strict)
            .build();
        append_cookie(&mut response, &cookie);
    }
    if stale_session && !response.headers().contains_key(header::SET_COOKIE) {
        append_cookie(&mut response, &ended_session(secure));
    }
    with_headers(response)
}

fn with_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

pub fn append_cookie(response: &mut Response, cookie: &Cookie<'_>) {
    if let Ok(value) = HeaderValue::try_from(cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The session cookie for a token that expires at `expires_at` (Unix seconds).
pub fn session_cookie(token: String, expires_at: i64, secure: bool) -> Cookie<'static> {
    let max_age = (expires_at - now_unix()).max(0);
    Cookie::build((SESSION_COOKIE, token))
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(cookie::time::Duration::seconds(max_age))
        .build()
}

/// The cookie that ends the session in the browser.
pub fn ended_session(secure: bool) -> Cookie<'static> {
    let mut c = session_cookie(String::new(), 0, secure);
    c.make_removal();
    c
}

/// A form posted from one of our pages: its fields as `T`, once its `csrf` field matched the cookie.
pub struct Form<T>(pub T);

#[derive(serde::Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Compares without stopping at the first difference, so that timing tells nothing of the token.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl<T: DeserializeOwned> FromRequest<AppState> for Form<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let expected = req.extensions().get::<Visit>().map(|v| v.csrf.clone()).ok_or(Problem::Internal)?;
        let body = Bytes::from_request(req, state).await.map_err(|_| Problem::BadForm)?;
        let field: CsrfField = serde_urlencoded::from_bytes(&body).map_err(|_| Problem::BadForm)?;
        if !same_token(&field.csrf, &expected) {
            return Err(Problem::Forbidden(
                "this form has expired or was not sent from this shop: reload the page and try again".into(),
            ));
        }
        serde_urlencoded::from_bytes(&body).map(Form).map_err(|_| Problem::BadForm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", "a"));
    }

    #[test]
    fn other_sites_are_foreign() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example:8889"));
        assert!(!foreign_origin(&h), "no Origin: a same-site navigation or an old browser");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://shop.example:8889"));
        assert!(!foreign_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(foreign_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(foreign_origin(&h));
    }

    #[test]
    fn session_cookie_flags() {
        let c = session_cookie("t".into(), now_unix() + 60, false).to_string();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"), "{c}");
        assert!(!c.contains("Secure"), "{c}");
        let c = session_cookie("t".into(), now_unix() + 60, true).to_string();
        assert!(c.contains("Secure"), "{c}");
    }
}
