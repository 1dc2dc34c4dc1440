//! The user store and admin seeding, on SQLite always and on MariaDB when configured (always in CI).

use mall_domain::Email;
use mall_storage::Db;
use mall_testkit::TestDb;
use mall_tokens::Role;

use crate::UserError;
use crate::credentials::verify_password;
use crate::store::{self, AdminSeed, seed_admin};

async fn check_store(db: &Db) {
    let email = Email::parse("Eve@Example.com").unwrap();
    let user = store::insert(db, &email, "hash-1", Role::Customer).await.unwrap();
    assert!(user.id > 0);
    assert_eq!(user.email, "eve@example.com");
    assert_eq!(user.role, Role::Customer);
    assert!(user.created_at > 1_700_000_000);

    let again = store::insert(db, &email, "hash-2", Role::Customer).await;
    assert!(matches!(again, Err(UserError::EmailTaken)), "{again:?}");

    let other =
        store::insert(db, &Email::parse("frank@example.com").unwrap(), "h", Role::Customer).await.unwrap();
    assert_ne!(other.id, user.id);
    assert_eq!(store::find_by_id(db, user.id).await.unwrap().unwrap().email, "eve@example.com");
    assert_eq!(store::find_by_email(db, &email).await.unwrap().unwrap().id, user.id);
    assert!(store::find_by_id(db, 999_999).await.unwrap().is_none());
}

async fn check_admin_seed(db: &Db) {
    // Generated password on creation, returned once and valid.
    let seeded = seed_admin(db, "Boss@Example.com", None).await.unwrap();
    let AdminSeed::Created { user_id, password } = seeded else { panic!("expected a new admin: {seeded:?}") };
    let row = store::find_by_id(db, user_id).await.unwrap().unwrap();
    assert_eq!(row.role, Role::Admin);
    assert!(verify_password(&password, &row.password_hash));

    // Seeding again without a password keeps the password; with one, sets it.
    assert_eq!(seed_admin(db, "boss@example.com", None).await.unwrap(), AdminSeed::Existing { user_id });
    assert!(verify_password(
        &password,
        &store::find_by_id(db, user_id).await.unwrap().unwrap().password_hash
    ));
    seed_admin(db, "boss@example.com", Some("a-new-password")).await.unwrap();
    let row = store::find_by_id(db, user_id).await.unwrap().unwrap();
    assert!(verify_password("a-new-password", &row.password_hash));
    assert!(!verify_password(&password, &row.password_hash));

    // An existing customer named as admin is promoted.
    let c =
        store::insert(db, &Email::parse("promote@example.com").unwrap(), "h", Role::Customer).await.unwrap();
    seed_admin(db, "promote@example.com", None).await.unwrap();
    assert_eq!(store::find_by_id(db, c.id).await.unwrap().unwrap().role, Role::Admin);

    // Bad configuration is an error, not a panic.
    assert!(seed_admin(db, "not-an-email", None).await.is_err());
    assert!(seed_admin(db, "ok@example.com", Some("short")).await.is_err());
}

#[tokio::test]
async fn store_on_sqlite() {
    let t = TestDb::sqlite(&crate::migrations()).await;
    check_store(&t.db).await;
    check_admin_seed(&t.db).await;
    t.drop_database().await;
}

#[tokio::test]
async fn store_on_mariadb() {
    let Some(t) = TestDb::mariadb(&crate::migrations()).await else { return };
    check_store(&t.db).await;
    check_admin_seed(&t.db).await;
    t.drop_database().await;
}
