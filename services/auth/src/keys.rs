//! The signing key: configured, or generated once and kept in the database so tokens survive restarts
//! and every replica signs with the same key.

use mall_storage::Db;
use mall_tokens::{PublicKey, SigningKey};

use crate::AuthError;

/// The key to sign with and every key that verifies (the signing one included).
pub struct KeySet {
    pub signing: SigningKey,
    pub public: Vec<PublicKey>,
}

pub async fn load(db: &Db, configured_pem: Option<&str>) -> Result<KeySet, AuthError> {
    let signing = match configured_pem {
        Some(pem) => {
            let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| AuthError::Config(e.to_string()))?;
            insert_if_missing(db, &key).await?;
            key
        }
        None => match newest(db).await? {
            Some(key) => key,
            None => {
                // Two replicas may race here; the key id is the primary key, and both re-read the newest.
                insert_if_missing(db, &SigningKey::generate()).await?;
                newest(db).await?.ok_or_else(|| AuthError::Config("no signing key after insert".into()))?
            }
        },
    };
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT private_key_pem FROM signing_keys").fetch_all(db.pool()).await?;
    let mut public = Vec::with_capacity(rows.len());
    for (pem,) in rows {
        match SigningKey::from_pkcs8_pem(&pem) {
            Ok(key) => public.push(key.public_key()),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable stored signing key"),
        }
    }
    Ok(KeySet { signing, public })
}

async fn newest(db: &Db) -> Result<Option<SigningKey>, AuthError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT private_key_pem FROM signing_keys ORDER BY created_at DESC, kid LIMIT 1")
            .fetch_optional(db.pool())
            .await?;
    row.map(|(pem,)| SigningKey::from_pkcs8_pem(&pem).map_err(|e| AuthError::Config(e.to_string())))
        .transpose()
}

async fn insert_if_missing(db: &Db, key: &SigningKey) -> Result<(), AuthError> {
    let result = sqlx::query("INSERT INTO signing_keys (kid, private_key_pem, created_at) VALUES (?, ?, ?)")
        .bind(key.kid())
        .bind(key.to_pkcs8_pem())
        .bind(mall_storage::now_unix())
        .execute(db.pool())
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if mall_storage::is_unique_violation(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
