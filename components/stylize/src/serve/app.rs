//! The router: every route, the body limit, auth, draining unread bodies, and the layer that counts, times and logs
//! each request.

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;

use super::auth;
use super::drain;
use super::error::ServeError;
use super::metrics::{RequestLabels, RouteLabels};
use super::routes::{health, raw, v1, v2};
use super::state::AppState;

pub(crate) fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2", get(health::server_metadata))
        .route("/v2/models/{model}", get(health::model_metadata))
        .route("/v2/models/{model}/ready", get(health::model_ready))
        .route("/v2/models/{model}/infer", post(v2::infer))
        .route("/v1/models/{model}", get(v1::model_ready).post(v1::predict))
        .route("/stylize", post(raw::stylize))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        // Last resort: a panic in a handler answers 500 (counted and logged by `observe`,
        // outside it) instead of dropping the connection.
        .layer(CatchPanicLayer::custom(panic_response))
        // Whatever answered early (413, 401, 404, a panic) left part of the body unread: read
        // it, bounded, so that the client still writing it gets the answer.
        .layer(middleware::from_fn(drain::unread))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The answer to a request whose handler panicked (the panic hook has logged where).
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ServeError::Internal("a bug: the request's handler panicked".into()).into_response()
}

async fn not_found(method: Method, req: Request) -> ServeError {
    ServeError::NoRoute(format!("{method} {}", req.uri().path()))
}

async fn method_not_allowed(method: Method, req: Request) -> ServeError {
    ServeError::MethodNotAllowed(format!("{method} is not allowed on {}", req.uri().path()))
}

/// Count, time and log every request (its route, never its headers: no token in the logs).
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let secs = t0.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method: method.clone(),
            status,
        })
        .inc();
    s.metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(secs);
    tracing::info!(
        method,
        path,
        route,
        status,
        ms = (secs * 1e4).round() / 10.0,
        "request"
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Promise: a handler's panic is answered 500 with the `{"error": …}` shape.
    #[test]
    fn a_panic_is_a_500_with_an_error_body() {
        let r = panic_response(Box::new("boom"));
        assert_eq!(r.status().as_u16(), 500);
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
