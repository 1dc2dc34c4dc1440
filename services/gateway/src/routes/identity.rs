//! Accounts: `/register`, `/login`, `/logout`, `/user/me`.

use std::net::IpAddr;

use axum::extract::State;
use axum::response::IntoResponse;
use mall_proto::auth::v1::{IssueTokenRequest, RevokeTokenRequest};
use mall_proto::user::v1::{GetUserRequest, LoginRequest, RegisterRequest, User};
use serde::Deserialize;
use serde_json::json;

use crate::auth::CurrentUser;
use crate::envelope::{created, ok};
use crate::error::ApiError;
use crate::input::JsonOrForm;
use crate::limit::ClientAddr;
use crate::{AppState, limit, rfc3339};

#[derive(Deserialize)]
pub struct RegisterBody {
    email: String,
    password: String,
    confirm_password: String,
}

pub async fn register(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    JsonOrForm(body): JsonOrForm<RegisterBody>,
) -> Result<impl IntoResponse, ApiError> {
    let user_id = create_account(&state, client, body.email, body.password, body.confirm_password).await?;
    Ok(created(json!({ "user_id": user_id })).msg("registered"))
}

/// Registers a customer (counted against the register limits); their user id.
pub(crate) async fn create_account(
    state: &AppState,
    client: IpAddr,
    email: String,
    password: String,
    confirm_password: String,
) -> Result<i64, ApiError> {
    limit::attempt(&state.cache, &state.config.limits, "register", client, &email).await?;
    let user = state
        .users
        .clone()
        .register(RegisterRequest { email, password, confirm_password })
        .await?
        .into_inner()
        .user
        .ok_or(ApiError::Internal)?;
    Ok(user.user_id)
}

#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    JsonOrForm(body): JsonOrForm<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let (token, expires_at) = sign_in(&state, client, body.email, body.password).await?;
    Ok(ok(json!({
        "token": token,
        "token_type": "Bearer",
        "expires_at": rfc3339(expires_at),
    })))
}

/// Checks the password (counted against the login limits) and issues a token: the token and when it
/// expires (Unix seconds).
pub(crate) async fn sign_in(
    state: &AppState,
    client: IpAddr,
    email: String,
    password: String,
) -> Result<(String, i64), ApiError> {
    limit::attempt(&state.cache, &state.config.limits, "login", client, &email).await?;
    let user = state
        .users
        .clone()
        .login(LoginRequest { email, password })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unauthenticated => ApiError::WrongCredentials,
            _ => ApiError::from(s),
        })?
        .into_inner()
        .user
        .ok_or(ApiError::Internal)?;
    let issued = state
        .auth
        .clone()
        .issue_token(IssueTokenRequest { user_id: user.user_id, role: user.role })
        .await?
        .into_inner();
    let expires_at = issued.claims.map(|c| c.expires_at).unwrap_or_default();
    Ok((issued.token, expires_at))
}

pub async fn logout(State(state): State<AppState>, user: CurrentUser) -> Result<impl IntoResponse, ApiError> {
    state.auth.clone().revoke_token(RevokeTokenRequest { token: user.token }).await?;
    Ok(ok(json!({ "revoked": true })).msg("logged out"))
}

pub async fn me(State(state): State<AppState>, user: CurrentUser) -> Result<impl IntoResponse, ApiError> {
    let found = state
        .users
        .clone()
        .get_user(GetUserRequest { user_id: user.user_id })
        .await
        .map_err(|s| match s.code() {
            // A valid token for an account that no longer exists identifies nobody.
            tonic::Code::NotFound => ApiError::Unauthenticated("this account no longer exists".into()),
            _ => ApiError::from(s),
        })?
        .into_inner()
        .user
        .ok_or(ApiError::Internal)?;
    Ok(ok(profile(&found)))
}

fn profile(u: &User) -> serde_json::Value {
    let role = match u.role() {
        mall_proto::auth::v1::Role::Admin => "admin",
        _ => "customer",
    };
    json!({ "user_id": u.user_id, "email": u.email, "role": role, "created_at": rfc3339(u.created_at) })
}
