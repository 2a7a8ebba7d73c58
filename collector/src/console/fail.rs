//! Error pages: a refused read is a 403 naming the role needed, bad input a
//! 400 saying what is wrong.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use tonic::Code;

use super::html::esc;

/// Why a page could not be served.
#[derive(Debug)]
pub enum Failure {
    /// The API refused or failed the call.
    Api(tonic::Status),
    /// The form's input is invalid.
    Input(String),
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Failure::Api(s)
    }
}

impl From<crate::when::WhenError> for Failure {
    fn from(e: crate::when::WhenError) -> Self {
        Failure::Input(e.to_string())
    }
}

fn error_page(code: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · wiretrail</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\"></head><body><main id=\"main\">\
         <h1>{t}</h1><p class=\"error\" role=\"alert\">{m}</p><p><a href=\"/search\">Back to search</a></p>\
         </main></body></html>\n",
        t = esc(title),
        m = esc(message)
    );
    (code, Html(body)).into_response()
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::Input(m) => error_page(StatusCode::BAD_REQUEST, "Invalid input", &m),
            Failure::Api(s) => {
                let (code, title) = match s.code() {
                    Code::PermissionDenied => (StatusCode::FORBIDDEN, "Forbidden"),
                    Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "Not signed in"),
                    Code::InvalidArgument => (StatusCode::BAD_REQUEST, "Invalid input"),
                    Code::NotFound => (StatusCode::NOT_FOUND, "Not found"),
                    Code::OutOfRange => (StatusCode::NOT_FOUND, "Not found"),
                    Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "Busy"),
                    _ => (StatusCode::BAD_GATEWAY, "Collector error"),
                };
                if code == StatusCode::BAD_GATEWAY {
                    tracing::warn!(status = %s, "console: API call failed");
                }
                error_page(code, title, s.message())
            }
        }
    }
}

/// Unknown paths.
pub async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "No such page.")
}
