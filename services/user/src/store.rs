//! The `users` table.

use mall_domain::Email;
use mall_storage::Db;
use mall_tokens::Role;

use crate::UserError;
use crate::credentials::{Password, hash_password};

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: i64,
}

type Row = (i64, String, String, String, i64);

fn from_row((id, email, password_hash, role, created_at): Row) -> Result<UserRow, UserError> {
    let role = role.parse().map_err(UserError::Internal)?;
    Ok(UserRow { id, email, password_hash, role, created_at })
}

pub async fn insert(db: &Db, email: &Email, password_hash: &str, role: Role) -> Result<UserRow, UserError> {
    let result =
        sqlx::query("INSERT INTO users (email, password_hash, role, created_at) VALUES (?, ?, ?, ?)")
            .bind(email.as_str())
            .bind(password_hash)
            .bind(role.as_str())
            .bind(mall_storage::now_unix())
            .execute(db.pool())
            .await;
    match result {
        Ok(_) => find_by_email(db, email)
            .await?
            .ok_or_else(|| UserError::Internal("inserted user vanished".into())),
        Err(e) if mall_storage::is_unique_violation(&e) => Err(UserError::EmailTaken),
        Err(e) => Err(e.into()),
    }
}

pub async fn find_by_email(db: &Db, email: &Email) -> Result<Option<UserRow>, UserError> {
    let row: Option<Row> =
        sqlx::query_as("SELECT id, email, password_hash, role, created_at FROM users WHERE email = ?")
            .bind(email.as_str())
            .fetch_optional(db.pool())
            .await?;
    row.map(from_row).transpose()
}

pub async fn find_by_id(db: &Db, id: i64) -> Result<Option<UserRow>, UserError> {
    let row: Option<Row> =
        sqlx::query_as("SELECT id, email, password_hash, role, created_at FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    row.map(from_row).transpose()
}

/// What seeding the admin account did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminSeed {
    /// A new admin was created; the password is the one to tell the operator of `mall up`.
    Created { user_id: i64, password: String },
    /// The account existed; it is an admin now, with the configured password if one was given.
    Existing { user_id: i64 },
}

/// Makes sure `email` is an admin account. With `password` given it becomes the account's password;
/// without one a new account gets a generated password (returned once) and an existing one keeps its own.
pub async fn seed_admin(db: &Db, email: &str, password: Option<&str>) -> Result<AdminSeed, UserError> {
    let email = Email::parse(email)?;
    let password = password.map(Password::parse).transpose()?;
    if let Some(user) = find_by_email(db, &email).await? {
        let hash = match &password {
            Some(p) => Some(hash_blocking(p.as_str().to_owned()).await?),
            None => None,
        };
        sqlx::query("UPDATE users SET role = ?, password_hash = COALESCE(?, password_hash) WHERE id = ?")
            .bind(Role::Admin.as_str())
            .bind(hash)
            .bind(user.id)
            .execute(db.pool())
            .await?;
        return Ok(AdminSeed::Existing { user_id: user.id });
    }
    let password = match password {
        Some(p) => p.as_str().to_owned(),
        // 122 random bits from the OS generator, as 32 hex characters.
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    let hash = hash_blocking(password.clone()).await?;
    match insert(db, &email, &hash, Role::Admin).await {
        Ok(user) => Ok(AdminSeed::Created { user_id: user.id, password }),
        // Another replica seeded it first.
        Err(UserError::EmailTaken) => Box::pin(seed_admin(db, email.as_str(), None)).await,
        Err(e) => Err(e),
    }
}

/// Argon2 is deliberately slow: keep it off the async workers. (Seeding hashes once at start, outside
/// any client's request; requests hash through the service's bounded slots.)
async fn hash_blocking(password: String) -> Result<String, UserError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| UserError::Internal(format!("hashing task failed: {e}")))?
}
