//! The success half of the envelope: `{"code": 0, "msg": "ok", "data": ...}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

pub struct Ok<T> {
    status: StatusCode,
    msg: &'static str,
    data: T,
}

/// 200 with `data`.
pub fn ok<T: Serialize>(data: T) -> Ok<T> {
    Ok { status: StatusCode::OK, msg: "ok", data }
}

/// 201 for a created resource.
pub fn created<T: Serialize>(data: T) -> Ok<T> {
    Ok { status: StatusCode::CREATED, msg: "created", data }
}

impl<T> Ok<T> {
    pub fn msg(mut self, msg: &'static str) -> Self {
        self.msg = msg;
        self
    }
}

impl<T: Serialize> IntoResponse for Ok<T> {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({ "code": 0, "msg": self.msg, "data": self.data }))).into_response()
    }
}
