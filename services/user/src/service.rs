//! The `UserService` gRPC implementation.

use std::sync::OnceLock;

use mall_domain::{Email, UserId};
use mall_proto::auth::v1::Role as PbRole;
use mall_proto::user::v1 as pb;
use mall_proto::user::v1::user_service_server::UserService;
use mall_runtime::WorkLimit;
use mall_storage::Db;
use mall_tokens::Role;
use tonic::{Request, Response, Status};

use crate::UserError;
use crate::credentials::{Password, hash_password, verify_password};
use crate::store::{self, UserRow};

pub struct Users {
    db: Db,
    /// Every argon2 hash and verification of a client's request runs in one of its slots: each costs
    /// 19 MiB and tens of milliseconds of a CPU, so unbounded they take all of both.
    hashing: WorkLimit,
}

impl Users {
    pub fn new(db: Db, hashing: WorkLimit) -> Users {
        Users { db, hashing }
    }

    async fn hash(&self, password: String) -> Result<String, UserError> {
        self.hashing.run_blocking(move || hash_password(&password)).await?
    }

    async fn register(&self, req: pb::RegisterRequest) -> Result<UserRow, UserError> {
        let email = Email::parse(&req.email)?;
        let password = Password::parse(&req.password)?;
        if req.password != req.confirm_password {
            return Err(UserError::InvalidArgument("password and confirm_password do not match".into()));
        }
        let hash = self.hash(password.as_str().to_owned()).await?;
        let user = store::insert(&self.db, &email, &hash, Role::Customer).await?;
        tracing::info!(user_id = user.id, "user registered");
        Ok(user)
    }

    async fn login(&self, req: pb::LoginRequest) -> Result<UserRow, UserError> {
        // A malformed email cannot belong to anyone: the same answer as a wrong password.
        let Ok(email) = Email::parse(&req.email) else {
            return Err(UserError::WrongCredentials);
        };
        let user = store::find_by_email(&self.db, &email).await?;
        // Verify against a real hash even for an unknown email, so timing does not tell who exists.
        let phc = match &user {
            Some(u) => u.password_hash.clone(),
            None => self.dummy_hash().await?,
        };
        let password = req.password;
        let matches = self.hashing.run_blocking(move || verify_password(&password, &phc)).await?;
        match user {
            Some(user) if matches => Ok(user),
            _ => Err(UserError::WrongCredentials),
        }
    }

    /// A real hash to verify against for an unknown email, made once (in a hashing slot).
    async fn dummy_hash(&self) -> Result<String, UserError> {
        static DUMMY: OnceLock<String> = OnceLock::new();
        if let Some(h) = DUMMY.get() {
            return Ok(h.clone());
        }
        let h = self.hash("not the password of anyone".into()).await?;
        Ok(DUMMY.get_or_init(|| h).clone())
    }
}

fn to_proto(u: &UserRow) -> pb::User {
    let role = match u.role {
        Role::Customer => PbRole::Customer,
        Role::Admin => PbRole::Admin,
    };
    pb::User { user_id: u.id, email: u.email.clone(), role: role.into(), created_at: u.created_at }
}

#[tonic::async_trait]
impl UserService for Users {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let user = Users::register(self, request.into_inner()).await?;
        Ok(Response::new(pb::RegisterResponse { user: Some(to_proto(&user)) }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::LoginResponse>, Status> {
        let user = Users::login(self, request.into_inner()).await?;
        Ok(Response::new(pb::LoginResponse { user: Some(to_proto(&user)) }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        let id = UserId::new(request.into_inner().user_id).map_err(UserError::from)?;
        let user = store::find_by_id(&self.db, id.get()).await?.ok_or(UserError::NotFound)?;
        Ok(Response::new(pb::GetUserResponse { user: Some(to_proto(&user)) }))
    }
}
