//! The router: every route, the body limit, auth, and the layer that counts, times and logs
//! each request.

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use super::auth;
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
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
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
