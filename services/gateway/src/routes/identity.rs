//! Accounts: `/register`, `/login`, `/logout`, `/user/me`.

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
    limit::attempt(&state.cache, &state.config.limits, "register", client, &body.email).await?;
    let user = state
        .users
        .clone()
        .register(RegisterRequest {
            email: body.email,
            password: body.password,
            confirm_password: body.confirm_password,
        })
        .await?
        .into_inner()
        .user
        .ok_or(ApiError::Internal)?;
    Ok(created(json!({ "user_id": user.user_id })).msg("registered"))
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
    limit::attempt(&state.cache, &state.config.limits, "login", client, &body.email).await?;
    let user = state
        .users
        .clone()
        .login(LoginRequest { email: body.email, password: body.password })
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
    Ok(ok(json!({
        "token": issued.token,
        "token_type": "Bearer",
        "expires_at": rfc3339(expires_at),
    })))
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
