//! Logging in, registering and logging out. A successful login or registration sets the session
//! cookie and sends the shopper back where they were going.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use mall_proto::auth::v1::RevokeTokenRequest;
use maud::{Markup, html};
use serde::Deserialize;

use super::catalog::categories;
use super::pages::{
    Input, Problem, Refusal, csrf, error_at, field, form_error, frame, general_error, local_path, respond,
    see_other,
};
use super::session::{Form, Visit, append_cookie, ended_session, session_cookie};
use crate::AppState;
use crate::error::ApiError;
use crate::limit::ClientAddr;
use crate::routes::identity::{create_account, sign_in};

#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct RegisterForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm_password: String,
    next: Option<String>,
}

fn next_field(next: &str) -> Markup {
    html! { input type="hidden" name="next" value=(next); }
}

fn login_view(visit: &Visit, email: &str, next: &str, failure: Option<&Refusal>) -> Markup {
    let on = |name| error_at(failure, name);
    html! {
        div class="narrow" {
            h1 { "Log in" }
            (form_error(general_error(failure)))
            form id="login-form" action="/shop/login" method="post" novalidate {
                (csrf(visit))
                (next_field(next))
                (field("Email", "email", email, Input::of("email").required().autocomplete("email"), on("email")))
                (field("Password", "password", "", Input::of("password").required().autocomplete("current-password"), on("password")))
                button id="login-button" type="submit" class="primary" { "Log in" }
            }
            p { "New here? " a href={ "/shop/register?next=" (super::pages::encode(next)) } { "Create an account" } }
        }
    }
}

fn register_view(visit: &Visit, email: &str, next: &str, failure: Option<&Refusal>) -> Markup {
    let on = |name| error_at(failure, name);
    html! {
        div class="narrow" {
            h1 { "Create an account" }
            (form_error(general_error(failure)))
            form id="register-form" action="/shop/register" method="post" novalidate {
                (csrf(visit))
                (next_field(next))
                (field("Email", "email", email, Input::of("email").required().autocomplete("email"), on("email")))
                (field("Password (8 to 128 characters)", "password", "", Input::of("password").required().autocomplete("new-password"), on("password")))
                (field("Repeat the password", "confirm_password", "", Input::of("password").required().autocomplete("new-password"), on("confirm_password")))
                button id="register-button" type="submit" class="primary" { "Create account" }
            }
            p { "Have an account? " a href={ "/shop/login?next=" (super::pages::encode(next)) } { "Log in" } }
        }
    }
}

pub async fn login_form(
    State(state): State<AppState>,
    visit: Visit,
    Query(q): Query<NextQuery>,
) -> Result<Response, Problem> {
    let categories = categories(&state).await;
    let next = local_path(q.next.as_deref());
    Ok(respond(
        StatusCode::OK,
        frame(Some(&visit), &categories, "Log in", login_view(&visit, "", next, None)),
    ))
}

pub async fn register_form(
    State(state): State<AppState>,
    visit: Visit,
    Query(q): Query<NextQuery>,
) -> Result<Response, Problem> {
    let categories = categories(&state).await;
    let next = local_path(q.next.as_deref());
    let main = register_view(&visit, "", next, None);
    Ok(respond(StatusCode::OK, frame(Some(&visit), &categories, "Create an account", main)))
}

/// A failure the form shows; anything else (a service down, the rate limit) is a page of its own.
fn shown_on_form(e: ApiError, fields: &[&'static str]) -> Result<Refusal, Problem> {
    match e {
        ApiError::WrongCredentials => Ok(Refusal {
            status: StatusCode::UNAUTHORIZED,
            field: None,
            message: "wrong email or password".into(),
        }),
        other => Refusal::from_api(other, fields),
    }
}

/// Signed in: the session cookie, and on to `next`.
fn signed_in(visit: &Visit, token: String, expires_at: i64, next: &str) -> Response {
    let mut response = see_other(next);
    append_cookie(&mut response, &session_cookie(token, expires_at, visit.secure));
    response
}

pub async fn login(
    State(state): State<AppState>,
    visit: Visit,
    ClientAddr(client): ClientAddr,
    Form(f): Form<LoginForm>,
) -> Result<Response, Problem> {
    let next = local_path(f.next.as_deref()).to_owned();
    match sign_in(&state, client, f.email.clone(), f.password).await {
        Ok((token, expires_at)) => Ok(signed_in(&visit, token, expires_at, &next)),
        Err(e) => {
            let failure = shown_on_form(e, &["email", "password"])?;
            let categories = categories(&state).await;
            let main = login_view(&visit, &f.email, &next, Some(&failure));
            Ok(respond(failure.status, frame(Some(&visit), &categories, "Log in", main)))
        }
    }
}

pub async fn register(
    State(state): State<AppState>,
    visit: Visit,
    ClientAddr(client): ClientAddr,
    Form(f): Form<RegisterForm>,
) -> Result<Response, Problem> {
    let next = local_path(f.next.as_deref()).to_owned();
    let created =
        create_account(&state, client, f.email.clone(), f.password.clone(), f.confirm_password).await;
    let failure = match created {
        Ok(_) => match sign_in(&state, client, f.email.clone(), f.password).await {
            Ok((token, expires_at)) => return Ok(signed_in(&visit, token, expires_at, &next)),
            Err(e) => shown_on_form(e, &[])?,
        },
        Err(ApiError::Conflict(_)) => {
            Refusal::on(StatusCode::CONFLICT, "email", "an account with this email exists already: log in")
        }
        Err(e) => shown_on_form(e, &["email", "password", "confirm_password"])?,
    };
    let categories = categories(&state).await;
    let main = register_view(&visit, &f.email, &next, Some(&failure));
    Ok(respond(failure.status, frame(Some(&visit), &categories, "Create an account", main)))
}

#[derive(Deserialize)]
pub struct Nothing {}

pub async fn logout(
    State(state): State<AppState>,
    visit: Visit,
    Form(_): Form<Nothing>,
) -> Result<Response, Problem> {
    if let Some(shopper) = &visit.shopper {
        state.auth.clone().revoke_token(RevokeTokenRequest { token: shopper.token.clone() }).await?;
    }
    let mut response = see_other("/");
    append_cookie(&mut response, &ended_session(visit.secure));
    Ok(response)
}
