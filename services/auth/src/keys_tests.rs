//! The key set's sources, its reloads (on paused time) and what a bad keys file does.

use std::time::Duration;

use mall_testkit::TestDb;
use mall_tokens::{Claims, Role, SigningKey, TokenError};
use serde_json::json;

use super::*;

const NOW: i64 = 1_800_000_000;

/// A keys file's text: (key, signs, retiresAt).
pub(crate) fn file_text(keys: &[(&SigningKey, bool, Option<i64>)]) -> String {
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|(key, signs, retires_at)| match retires_at {
            Some(at) => json!({ "pem": key.to_pkcs8_pem(), "signs": signs, "retiresAt": at }),
            None => json!({ "pem": key.to_pkcs8_pem(), "signs": signs }),
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn kids(set: &KeySet, now: i64) -> Vec<String> {
    let mut kids: Vec<String> = set.published(now).map(|k| k.kid.clone()).collect();
    kids.sort();
    kids
}

fn sorted(keys: &[&SigningKey]) -> Vec<String> {
    let mut kids: Vec<String> = keys.iter().map(|k| k.kid().to_owned()).collect();
    kids.sort();
    kids
}

#[test]
fn a_keys_file_names_one_signer_and_keys_that_retire() {
    let (a, b, c) = (SigningKey::generate(), SigningKey::generate(), SigningKey::generate());
    let text = file_text(&[(&a, false, Some(NOW + 60)), (&b, true, None), (&c, false, Some(NOW))]);
    let set = parse_file(&text, NOW).unwrap();
    assert_eq!(set.signing.kid(), b.kid());
    assert_eq!(kids(&set, NOW), sorted(&[&a, &b]), "c retires at NOW: neither published nor kept");
    assert_eq!(set.keys.iter().find(|k| k.kid == a.kid()).unwrap().retires_at, Some(NOW + 60));
    assert_eq!(kids(&set, NOW + 60), sorted(&[&b]), "a is not published from its retirement on");

    // A token of a verifies until a retires, and not after.
    let token = a.sign(&Claims::new(1, Role::Customer, NOW, 3600)).unwrap();
    assert!(set.verifier.verify(&token, NOW + 59).is_ok());
    assert_eq!(set.verifier.verify(&token, NOW + 60), Err(TokenError::RetiredKey(a.kid().to_owned())));

    // Unknown fields are ignored; "signs" defaults to false.
    let text = json!({ "keys": [{ "pem": a.to_pkcs8_pem(), "signs": true, "note": "x" },
                                { "pem": b.to_pkcs8_pem() }] })
    .to_string();
    let set = parse_file(&text, NOW).unwrap();
    assert_eq!((set.signing.kid(), set.keys.len()), (a.kid(), 2));
}

#[test]
fn a_bad_keys_file_is_refused_with_the_reason() {
    let (a, b) = (SigningKey::generate(), SigningKey::generate());
    let refused = |text: &str| parse_file(text, NOW).err().expect("refused");
    assert!(matches!(refused("not json"), KeyFileError::Json(_)));
    assert!(matches!(refused("{}"), KeyFileError::Json(_)));
    assert!(matches!(refused(r#"{"keys":[]}"#), KeyFileError::Signers(0)));
    assert!(matches!(refused(&file_text(&[(&a, false, None)])), KeyFileError::Signers(0)));
    assert!(matches!(refused(&file_text(&[(&a, true, None), (&b, true, None)])), KeyFileError::Signers(2)));
    assert!(matches!(
        refused(&file_text(&[(&a, true, None), (&a, false, None)])),
        KeyFileError::Duplicate(_)
    ));
    assert!(matches!(refused(&file_text(&[(&a, true, Some(NOW + 5))])), KeyFileError::SignerRetires(_)));
    let bad_pem = json!({ "keys": [{ "pem": a.to_pkcs8_pem(), "signs": true }, { "pem": "nope" }] });
    assert!(matches!(refused(&bad_pem.to_string()), KeyFileError::BadKey { index: 1, .. }));
}

async fn stored_kids(db: &Db) -> Vec<String> {
    let mut kids: Vec<String> =
        sqlx::query_scalar("SELECT kid FROM signing_keys").fetch_all(db.pool()).await.unwrap();
    kids.sort();
    kids
}

async fn store(db: &Db, key: &SigningKey, created_at: i64) {
    sqlx::query("INSERT INTO signing_keys (kid, private_key_pem, created_at) VALUES (?, ?, ?)")
        .bind(key.kid())
        .bind(key.to_pkcs8_pem())
        .bind(created_at)
        .execute(db.pool())
        .await
        .unwrap();
}

/// Long timers and no gap: only the test makes the set reload.
const BY_HAND: KeyReload = KeyReload {
    file_every: Duration::from_secs(3600),
    database_every: Duration::from_secs(3600),
    unknown_kid_gap: Duration::ZERO,
};

#[tokio::test]
async fn the_file_is_reloaded_for_an_unknown_kid_and_a_bad_file_keeps_the_last_good_set() {
    let t = TestDb::sqlite(&crate::migrations()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let (a, b) = (SigningKey::generate(), SigningKey::generate());
    // An older auth copied the configured key into the database: it goes at start.
    store(&t.db, &a, 1).await;
    std::fs::write(&path, file_text(&[(&a, true, None)])).unwrap();
    let keys = Keys::open(Some(&path), None, t.db.clone(), 3600, BY_HAND).await.unwrap();
    assert_eq!(keys.current().signing.kid(), a.kid());
    assert!(stored_kids(&t.db).await.is_empty(), "a configured key is not kept in the database");

    // The operator adds b as the signer: the first token of b's makes auth read the file again.
    std::fs::write(&path, file_text(&[(&a, false, None), (&b, true, None)])).unwrap();
    assert_eq!(keys.knowing(a.kid()).await.signing.kid(), a.kid(), "a known kid reloads nothing");
    let set = keys.knowing(b.kid()).await;
    assert_eq!(set.signing.kid(), b.kid());
    assert_eq!(kids(&set, mall_storage::now_unix()), sorted(&[&a, &b]));

    // Broken in every way: the last good set stays.
    for broken in [
        "{\"keys\": [".to_owned(),
        file_text(&[(&a, true, None), (&b, true, None)]),
        file_text(&[(&a, false, None), (&b, false, None)]),
        r#"{"keys":[]}"#.to_owned(),
    ] {
        std::fs::write(&path, &broken).unwrap();
        let set = keys.knowing("some-other-kid").await;
        assert_eq!(set.signing.kid(), b.kid(), "{broken}");
        assert_eq!(kids(&set, mall_storage::now_unix()), sorted(&[&a, &b]), "{broken}");
    }
    std::fs::remove_file(&path).unwrap();
    assert_eq!(keys.reload().await.signing.kid(), b.kid(), "a missing file keeps the set too");

    // a retires (written in the past): gone at the next reload.
    std::fs::write(&path, file_text(&[(&a, false, Some(1)), (&b, true, None)])).unwrap();
    let set = keys.reload().await;
    assert!(!set.verifier.knows(a.kid()));
    assert_eq!(kids(&set, mall_storage::now_unix()), sorted(&[&b]));
    assert!(stored_kids(&t.db).await.is_empty(), "nothing configured is ever written");

    // A file that is broken at start leaves nothing to serve: auth does not start.
    std::fs::write(&path, "garbage").unwrap();
    let refused = Keys::open(Some(&path), None, t.db.clone(), 3600, BY_HAND).await;
    assert!(matches!(refused, Err(AuthError::Config(_))));
    t.drop_database().await;
}

/// Lets the timers that are due fire, and the reload task run: a short sleep, which the paused clock
/// reaches only after every earlier timer.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn the_file_is_reloaded_on_a_timer_and_unknown_kids_reload_at_most_once_per_gap() {
    let t = TestDb::sqlite(&crate::migrations()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.json");
    let (a, b, c) = (SigningKey::generate(), SigningKey::generate(), SigningKey::generate());
    std::fs::write(&path, file_text(&[(&a, true, None)])).unwrap();
    let reload = KeyReload {
        file_every: Duration::from_secs(10),
        database_every: Duration::from_secs(30),
        unknown_kid_gap: Duration::from_secs(1),
    };
    let keys = Keys::open(Some(&path), None, t.db.clone(), 3600, reload).await.unwrap();
    // From here on the clock moves only when the test says so (the file source needs no database).
    tokio::time::pause();

    std::fs::write(&path, file_text(&[(&a, false, None), (&b, true, None)])).unwrap();
    tokio::time::advance(Duration::from_millis(9_900)).await;
    settle().await;
    assert_eq!(keys.current().signing.kid(), a.kid(), "not yet: the timer has not fired");
    tokio::time::advance(Duration::from_millis(100)).await;
    settle().await;
    assert_eq!(keys.current().signing.kid(), b.kid(), "read again after 10 s");

    // Unknown kids: the first reloads at once; another within the gap does not.
    std::fs::write(&path, file_text(&[(&b, true, None), (&c, false, None)])).unwrap();
    assert!(keys.knowing(c.kid()).await.verifier.knows(c.kid()));
    let (d, e) = (SigningKey::generate(), SigningKey::generate());
    std::fs::write(&path, file_text(&[(&b, true, None), (&d, false, None), (&e, false, None)])).unwrap();
    tokio::time::advance(Duration::from_millis(900)).await;
    assert!(!keys.knowing(d.kid()).await.verifier.knows(d.kid()), "within a second of the last");
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(keys.knowing(d.kid()).await.verifier.knows(d.kid()), "a second later");
    // A kid that an earlier reload brought is known without another.
    std::fs::write(&path, file_text(&[(&b, true, None)])).unwrap();
    let set = keys.knowing(e.kid()).await;
    assert!(set.verifier.knows(e.kid()), "e came with the reload for d");

    drop(keys);
    tokio::time::advance(Duration::from_secs(10)).await;
    settle().await;
    t.drop_database().await;
}

#[tokio::test]
async fn a_configured_key_is_the_whole_set_and_is_not_stored() {
    let t = TestDb::sqlite(&crate::migrations()).await;
    let generated = Keys::open(None, None, t.db.clone(), 3600, BY_HAND).await.unwrap();
    let stored = generated.current().signing.kid().to_owned();
    assert_eq!(stored_kids(&t.db).await, vec![stored.clone()]);

    let configured = SigningKey::generate();
    let keys = Keys::open(None, Some(&configured.to_pkcs8_pem()), t.db.clone(), 3600, BY_HAND).await.unwrap();
    let set = keys.current();
    assert_eq!(set.signing.kid(), configured.kid());
    assert_eq!(kids(&set, NOW), vec![configured.kid().to_owned()], "the database's key is not used");
    assert_eq!(stored_kids(&t.db).await, vec![stored], "the configured key is not written");
    assert_eq!(keys.knowing("whatever").await.signing.kid(), configured.kid());
    t.drop_database().await;
}

async fn database_retirement(db: Db) {
    let ttl = 600;
    let now = mall_storage::now_unix();
    let (k1, k2, k3) = (SigningKey::generate(), SigningKey::generate(), SigningKey::generate());
    // k1 was replaced by k2 more than a token lifetime ago; k2 by k3 less than one ago.
    store(&db, &k1, now - 5000).await;
    store(&db, &k2, now - 2000).await;
    store(&db, &k3, now - 100).await;
    let keys = Keys::open(None, None, db.clone(), ttl, BY_HAND).await.unwrap();
    let set = keys.current();
    assert_eq!(set.signing.kid(), k3.kid(), "the newest signs");
    assert_eq!(kids(&set, now), sorted(&[&k2, &k3]), "k1 is retired");
    let k2_public = set.keys.iter().find(|k| k.kid == k2.kid()).unwrap();
    assert_eq!(k2_public.retires_at, Some(now - 100 + ttl), "a lifetime after k3 was created");
    assert_eq!(set.keys.iter().find(|k| k.kid == k3.kid()).unwrap().retires_at, None);

    let old = k1.sign(&Claims::new(1, Role::Customer, now, ttl)).unwrap();
    assert!(matches!(set.verifier.verify(&old, now), Err(TokenError::UnknownKey(_))));
    let mid = k2.sign(&Claims::new(1, Role::Customer, now, ttl)).unwrap();
    assert!(set.verifier.verify(&mid, now).is_ok());
    assert!(matches!(set.verifier.verify(&mid, now - 100 + ttl), Err(TokenError::RetiredKey(_))));

    // Another replica adds a newer key: a token of it makes this one read the database again.
    let k4 = SigningKey::generate();
    store(&db, &k4, now).await;
    let set = keys.knowing(k4.kid()).await;
    assert_eq!(set.signing.kid(), k4.kid());
    assert_eq!(set.keys.iter().find(|k| k.kid == k3.kid()).unwrap().retires_at, Some(now + ttl));
    assert_eq!(stored_kids(&db).await.len(), 4, "nothing is deleted in database mode");
}

#[tokio::test]
async fn database_keys_retire_a_lifetime_after_a_newer_one_on_sqlite() {
    let t = TestDb::sqlite(&crate::migrations()).await;
    database_retirement(t.db.clone()).await;
    t.drop_database().await;
}

#[tokio::test]
async fn database_keys_retire_a_lifetime_after_a_newer_one_on_mariadb() {
    let Some(t) = TestDb::mariadb(&crate::migrations()).await else { return };
    database_retirement(t.db.clone()).await;
    t.drop_database().await;
}
