//! The `AuthService` gRPC implementation.

use std::sync::Arc;
use std::time::Duration;

use mall_proto::auth::v1 as pb;
use mall_proto::auth::v1::auth_service_server::AuthService;
use mall_storage::{Cache, Db};
use mall_tokens::{Claims, Role, TokenError, now_unix, revoked_key};
use tonic::{Request, Response, Status};

use crate::keys::Keys;
use crate::{AuthError, Config};

pub struct Auth {
    ttl_secs: i64,
    keys: Arc<Keys>,
    cache: Cache,
}

impl Auth {
    pub async fn new(config: &Config, db: Db, cache: Cache) -> Result<Auth, AuthError> {
        let ttl_secs = i64::try_from(config.token_ttl.as_secs()).unwrap_or(i64::MAX);
        if ttl_secs < 1 {
            return Err(AuthError::Config("the token lifetime must be at least one second".into()));
        }
        let keys = Keys::open(
            config.keys_file.as_deref(),
            config.signing_key_pem.as_deref(),
            db,
            ttl_secs,
            config.reload,
        )
        .await?;
        Ok(Auth { ttl_secs, keys, cache })
    }

    /// Verifies signature and expiry (a key id the set does not know reloads it first), then the
    /// denylist.
    async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let now = now_unix();
        let claims = match self.keys.current().verifier.verify(token, now) {
            Err(TokenError::UnknownKey(kid)) => self.keys.knowing(&kid).await.verifier.verify(token, now)?,
            verified => verified?,
        };
        if self.cache.exists(&revoked_key(&claims.jti)).await? {
            return Err(AuthError::Revoked);
        }
        Ok(claims)
    }
}

pub fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Customer => pb::Role::Customer,
        Role::Admin => pb::Role::Admin,
    }
}

fn claims_to_proto(c: &Claims) -> Result<pb::Claims, AuthError> {
    Ok(pb::Claims {
        user_id: c.user_id()?,
        role: role_to_proto(c.role).into(),
        jti: c.jti.clone(),
        issued_at: c.iat,
        expires_at: c.exp,
    })
}

#[tonic::async_trait]
impl AuthService for Auth {
    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        let req = request.into_inner();
        if req.user_id <= 0 {
            return Err(AuthError::InvalidArgument("user_id must be positive".into()).into());
        }
        let role = match pb::Role::try_from(req.role) {
            Ok(pb::Role::Customer) => Role::Customer,
            Ok(pb::Role::Admin) => Role::Admin,
            _ => return Err(AuthError::InvalidArgument("role must be customer or admin".into()).into()),
        };
        let claims = Claims::new(req.user_id, role, now_unix(), self.ttl_secs);
        let token = self.keys.current().signing.sign(&claims).map_err(AuthError::from)?;
        tracing::info!(user_id = req.user_id, role = %role, jti = %claims.jti, "token issued");
        Ok(Response::new(pb::IssueTokenResponse { token, claims: Some(claims_to_proto(&claims)?) }))
    }

    async fn verify_token(
        &self,
        request: Request<pb::VerifyTokenRequest>,
    ) -> Result<Response<pb::VerifyTokenResponse>, Status> {
        let claims = self.verify(&request.into_inner().token).await?;
        Ok(Response::new(pb::VerifyTokenResponse { claims: Some(claims_to_proto(&claims)?) }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let claims = self.verify(&request.into_inner().token).await?;
        let remaining = claims.remaining(now_unix()).max(1) as u64;
        self.cache
            .set(&revoked_key(&claims.jti), b"1", Duration::from_secs(remaining))
            .await
            .map_err(AuthError::from)?;
        tracing::info!(jti = %claims.jti, "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn list_public_keys(
        &self,
        request: Request<pb::ListPublicKeysRequest>,
    ) -> Result<Response<pb::ListPublicKeysResponse>, Status> {
        let kid = request.into_inner().kid;
        let set = if kid.is_empty() { self.keys.current() } else { self.keys.knowing(&kid).await };
        let keys = set
            .published(now_unix())
            .map(|k| pb::PublicKey {
                kid: k.kid.clone(),
                alg: mall_tokens::ALGORITHM.into(),
                key: k.key.to_vec(),
                retires_at: k.retires_at.unwrap_or(0),
            })
            .collect();
        Ok(Response::new(pb::ListPublicKeysResponse { keys }))
    }
}
