//! The console's stylesheet and script, compiled into the binary.

use axum::http::header;
use axum::response::IntoResponse;

/// `/assets/console.css`.
pub async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("assets/console.css"))
}

/// `/assets/console.js`.
pub async fn js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("assets/console.js"))
}
