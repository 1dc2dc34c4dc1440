//! Key rotation through auth's keys file, seen by two gateways in front of one auth: while both keys
//! are in the file, tokens of either verify at both; once the old key's retiresAt has passed, its
//! tokens get 401 with "log in again"; a broken file keeps the last good set.

use std::path::Path;
use std::time::Duration;

use mall_tokens::{Claims, Role, SigningKey, Verifier, now_unix};
use serde_json::json;

use crate::helpers::*;

/// What the operator writes: (key, signs, retiresAt).
fn write_keys(path: &Path, keys: &[(&SigningKey, bool, Option<i64>)]) {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(key, signs, retires_at)| {
            let mut entry = json!({ "pem": key.to_pkcs8_pem(), "signs": signs });
            if let Some(at) = retires_at {
                entry["retiresAt"] = json!(at);
            }
            entry
        })
        .collect();
    // As a Secret volume updates: the new content appears whole.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({ "keys": keys }).to_string()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn kid(token: &str) -> String {
    Verifier::kid_of(token).unwrap()
}

/// A token the test signs itself with `key`: what a token of a key auth has never seen looks like.
fn signed_by(key: &SigningKey, user_id: i64) -> String {
    key.sign(&Claims::new(user_id, Role::Customer, now_unix(), 3600)).unwrap()
}

/// Auth reloads for an unknown key id at most once a second: wait that out, then show each gateway a
/// token of a key nobody knows, so that it fetches the keys (and auth reads its file again).
async fn make_everyone_look(app: &TestApp, gateways: &[&str], user_id: i64) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stranger = signed_by(&SigningKey::generate(), user_id);
    for gateway in gateways {
        let reply = app.get_at(gateway, "/user/me", Some(&stranger)).await;
        reply.assert_error(401, 40101);
        assert_eq!(reply.body["msg"], mall_gateway::LOG_IN_AGAIN);
    }
}

async fn check_rotation(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let (old, new) = (SigningKey::generate(), SigningKey::generate());
    write_keys(&path, &[(&old, true, None)]);
    // Each gateway fetches as soon as it meets an unknown key (the 5 s gap is unit-tested), and
    // never on its timer during the test.
    let keys = mall_gateway::KeyRefresh { unknown_kid_gap: Duration::ZERO, every: Duration::from_secs(3600) };
    let options = Options { backend, auth_keys_file: Some(path.clone()), keys, ..Options::default() };
    let Some(app) = spawn_with(options).await else { return };
    let second = app
        .another_gateway(mall_gateway::Config {
            limits: Options::default().limits,
            keys,
            ..mall_gateway::Config::default()
        })
        .await;
    let gateways = [app.url.as_str(), second.url.as_str()];

    let email = format!("{}@example.com", mall_testkit::unique_name("rot"));
    assert_eq!(app.register(&email).await.status, 201);
    let login = async |app: &TestApp| {
        let reply = app.login(&email, PASSWORD).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.data()["token"].as_str().unwrap().to_owned()
    };
    let old_token = login(&app).await;
    assert_eq!(kid(&old_token), old.kid());
    let me = app.get("/user/me", Some(&old_token)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let user_id = me.data()["user_id"].as_i64().unwrap();
    for gateway in gateways {
        assert_eq!(app.get_at(gateway, "/user/me", Some(&old_token)).await.status, 200, "{gateway}");
    }

    // The operator adds the new key as the signer and keeps the old one verifying. The first token of
    // the new key that a gateway meets makes it fetch the keys, and auth read its file.
    write_keys(&path, &[(&old, false, None), (&new, true, None)]);
    let early = signed_by(&new, user_id);
    let reply = app.get_at(second.url.as_str(), "/user/me", Some(&early)).await;
    assert_eq!(
        reply.status, 200,
        "a token of the new key verifies as soon as it is in the file: {}",
        reply.body
    );
    let new_token = login(&app).await;
    assert_eq!(kid(&new_token), new.kid(), "auth signs with the new key");
    for gateway in gateways {
        for (which, token) in [("old", &old_token), ("new", &new_token), ("new, early", &early)] {
            let reply = app.get_at(gateway, "/user/me", Some(token)).await;
            assert_eq!(reply.status, 200, "{which} token at {gateway}: {}", reply.body);
        }
    }

    // A broken file (a half-written edit, two signers) keeps the last good set.
    for broken in [
        "{\"keys\": [".to_owned(),
        json!({ "keys": [{ "pem": old.to_pkcs8_pem(), "signs": true },
                         { "pem": new.to_pkcs8_pem(), "signs": true }] })
        .to_string(),
    ] {
        std::fs::write(&path, &broken).unwrap();
        make_everyone_look(&app, &gateways, user_id).await;
        assert_eq!(kid(&login(&app).await), new.kid());
        for gateway in gateways {
            for token in [&old_token, &new_token] {
                assert_eq!(app.get_at(gateway, "/user/me", Some(token)).await.status, 200, "{broken}");
            }
        }
    }

    // The old key retires (its retiresAt written in the past): once the gateways have looked again,
    // its tokens get 401 and are told to log in again; the new key's tokens are unaffected.
    write_keys(&path, &[(&old, false, Some(now_unix() - 60)), (&new, true, None)]);
    make_everyone_look(&app, &gateways, user_id).await;
    for gateway in gateways {
        let reply = app.get_at(gateway, "/user/me", Some(&old_token)).await;
        reply.assert_error(401, 40101);
        assert_eq!(reply.body["msg"], mall_gateway::LOG_IN_AGAIN, "at {gateway}");
        assert_eq!(app.get_at(gateway, "/user/me", Some(&new_token)).await.status, 200, "at {gateway}");
    }
    // Logging in again gives a token that works everywhere.
    let again = login(&app).await;
    for gateway in gateways {
        assert_eq!(app.get_at(gateway, "/user/me", Some(&again)).await.status, 200);
    }

    second.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn keys_rotate_through_the_file_on_sqlite_and_memory() {
    check_rotation(Backend::Embedded).await;
}

#[tokio::test]
async fn keys_rotate_through_the_file_on_mariadb_and_redis() {
    check_rotation(Backend::Servers).await;
}
