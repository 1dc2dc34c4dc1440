//! Every way a token can be wrong gets a 401 in the envelope, never a 500.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::helpers::*;

fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    (header, claims)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// A token with the given header and claims, signed by a key the mall has never seen.
fn signed_by_stranger(header_kid: &str, claims: &Value) -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let der = key.to_pkcs8_der().unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(header_kid.to_owned());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

#[tokio::test]
async fn bad_tokens_get_401() {
    let app = spawn_app().await;
    let (_, token) = app.customer().await;
    let (header, claims) = parts(&token);
    let kid = header["kid"].as_str().unwrap();

    // Missing, or not a bearer token.
    app.get("/user/me", None).await.assert_error(401, 40101);
    let basic =
        app.client.get(format!("{}/user/me", app.url)).header("authorization", "Basic YTpi").send().await;
    assert_eq!(basic.unwrap().status(), 401);
    for malformed in ["abc", "a.b.c", "", "...", "eyJhbGciOiJFZERTQSJ9.e30.AAAA"] {
        app.get("/user/me", Some(malformed)).await.assert_error(401, 40101);
    }

    // alg none, with and without a kid.
    let none = format!("{}.{}.", b64(&json!({ "alg": "none", "typ": "JWT", "kid": kid })), b64(&claims));
    app.get("/user/me", Some(&none)).await.assert_error(401, 40101);
    let none = format!("{}.{}.", b64(&json!({ "alg": "none" })), b64(&claims));
    app.get("/user/me", Some(&none)).await.assert_error(401, 40101);

    // Forged: our kid, another key. And another key with its own kid.
    app.get("/user/me", Some(&signed_by_stranger(kid, &claims))).await.assert_error(401, 40101);
    app.get("/user/me", Some(&signed_by_stranger("their-key", &claims))).await.assert_error(401, 40101);

    // Tampered: promote ourselves to admin, keep the signature.
    let mut promoted = claims.clone();
    promoted["role"] = json!("admin");
    let sig = token.rsplit('.').next().unwrap();
    let tampered = format!("{}.{}.{}", token.split('.').next().unwrap(), b64(&promoted), sig);
    app.get("/user/me", Some(&tampered)).await.assert_error(401, 40101);

    // HS256 with the public key as the secret (the classic confusion attack).
    let hs = format!("{}.{}.{}", b64(&json!({ "alg": "HS256", "kid": kid })), b64(&claims), sig);
    app.get("/user/me", Some(&hs)).await.assert_error(401, 40101);

    // The real token still works after all that.
    assert_eq!(app.get("/user/me", Some(&token)).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn expired_tokens_get_401() {
    // Expiry has whole-second resolution: a 3 s token lives between 2 and 3 s.
    let app = spawn_with(Options { token_ttl: std::time::Duration::from_secs(3), ..Options::default() })
        .await
        .unwrap();
    let (_, token) = app.customer().await;
    assert_eq!(app.get("/user/me", Some(&token)).await.status, 200, "fresh token works (and is now cached)");
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    app.get("/user/me", Some(&token)).await.assert_error(401, 40102);
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_token_stays_revoked_for_every_gateway_sharing_the_cache() {
    // Two requests with the same token: the second is served from the verified-token cache, which
    // must still consult the denylist.
    let app = spawn_app().await;
    let (_, token) = app.customer().await;
    assert_eq!(app.get("/user/me", Some(&token)).await.status, 200);
    assert_eq!(app.get("/user/me", Some(&token)).await.status, 200);
    assert_eq!(app.post_json("/logout", &json!({}), Some(&token)).await.status, 200);
    app.get("/user/me", Some(&token)).await.assert_error(401, 40103);
    app.stop().await;
}
