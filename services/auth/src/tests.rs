//! The auth service over real gRPC: keys kept across restarts, issue/verify/revoke, on SQLite with the
//! in-process cache always and on MariaDB with Redis when configured (always in CI).

use std::time::Duration;

use mall_proto::auth::v1 as pb;
use mall_proto::auth::v1::auth_service_client::AuthServiceClient;
use mall_runtime::PeerChannel;
use mall_storage::{Cache, Db};
use mall_testkit::TestDb;
use tonic::Code;

use crate::{Config, startup};

async fn start(
    db: &Db,
    cache: &Cache,
    config: Config,
) -> (AuthServiceClient<PeerChannel>, mall_runtime::CancellationToken) {
    let shutdown = mall_runtime::CancellationToken::new();
    let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
    let served = startup(
        config,
        db.clone(),
        cache.clone(),
        mall_runtime::Access::unchecked(),
        listener,
        shutdown.clone(),
    )
    .await
    .unwrap();
    let channel = mall_runtime::channel(&served.addr.to_string()).unwrap();
    (AuthServiceClient::new(channel), shutdown)
}

async fn check_auth(db: Db, cache: Cache) {
    let (mut auth, stop) = start(&db, &cache, Config::default()).await;
    let keys = auth.list_public_keys(pb::ListPublicKeysRequest {}).await.unwrap().into_inner().keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].alg, "EdDSA");
    assert_eq!(keys[0].key.len(), 32);

    let issued = auth
        .issue_token(pb::IssueTokenRequest { user_id: 7, role: pb::Role::Admin.into() })
        .await
        .unwrap()
        .into_inner();
    let claims = issued.claims.unwrap();
    assert_eq!((claims.user_id, claims.role()), (7, pb::Role::Admin));
    assert_eq!(claims.expires_at - claims.issued_at, 24 * 3600);

    let verified = auth.verify_token(pb::VerifyTokenRequest { token: issued.token.clone() }).await.unwrap();
    assert_eq!(verified.into_inner().claims.unwrap().jti, claims.jti);

    // Bad requests.
    let e = auth.issue_token(pb::IssueTokenRequest { user_id: 0, role: 1 }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = auth.issue_token(pb::IssueTokenRequest { user_id: 1, role: 0 }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = auth.verify_token(pb::VerifyTokenRequest { token: "garbage".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Revocation, written to the shared cache.
    auth.revoke_token(pb::RevokeTokenRequest { token: issued.token.clone() }).await.unwrap();
    let e = auth.verify_token(pb::VerifyTokenRequest { token: issued.token.clone() }).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "token revoked"));
    assert!(cache.exists(&mall_tokens::revoked_key(&claims.jti)).await.unwrap());

    // A restart keeps the key: tokens issued before still verify, and the revocation still holds.
    let other =
        auth.issue_token(pb::IssueTokenRequest { user_id: 8, role: 1 }).await.unwrap().into_inner().token;
    stop.cancel();
    let (mut auth, stop) = start(&db, &cache, Config::default()).await;
    let again = auth.list_public_keys(pb::ListPublicKeysRequest {}).await.unwrap().into_inner().keys;
    assert_eq!(again, keys, "the signing key survives a restart");
    assert!(auth.verify_token(pb::VerifyTokenRequest { token: other }).await.is_ok());
    assert!(auth.verify_token(pb::VerifyTokenRequest { token: issued.token }).await.is_err());
    stop.cancel();

    // A configured key signs from then on; the old key still verifies what it signed.
    let configured = mall_tokens::SigningKey::generate();
    let config =
        Config { token_ttl: Duration::from_secs(60), signing_key_pem: Some(configured.to_pkcs8_pem()) };
    let (mut auth, stop) = start(&db, &cache, config).await;
    let fresh = auth.issue_token(pb::IssueTokenRequest { user_id: 9, role: 1 }).await.unwrap().into_inner();
    assert_eq!(mall_tokens::Verifier::kid_of(&fresh.token).unwrap(), configured.kid());
    let c = fresh.claims.unwrap();
    assert_eq!(c.expires_at - c.issued_at, 60);
    let keys = auth.list_public_keys(pb::ListPublicKeysRequest {}).await.unwrap().into_inner().keys;
    assert_eq!(keys.len(), 2);
    stop.cancel();

    let bad = Config { token_ttl: Duration::from_secs(60), signing_key_pem: Some("not a key".into()) };
    let listener = mall_runtime::bind("127.0.0.1:0").await.unwrap();
    let result = startup(
        bad,
        db.clone(),
        cache.clone(),
        mall_runtime::Access::unchecked(),
        listener,
        mall_runtime::CancellationToken::new(),
    )
    .await;
    assert!(result.is_err(), "a bad configured key is refused at start");
}

#[tokio::test]
async fn auth_on_sqlite_and_memory() {
    let t = TestDb::sqlite(&crate::migrations()).await;
    check_auth(t.db.clone(), Cache::memory(&mall_testkit::unique_name("t"))).await;
    t.drop_database().await;
}

#[tokio::test]
async fn auth_on_mariadb_and_redis() {
    let Some(t) = TestDb::mariadb(&crate::migrations()).await else { return };
    let Some(cache) = mall_testkit::redis_cache().await else { return };
    check_auth(t.db.clone(), cache).await;
    t.drop_database().await;
}
