//! `stylize serve`: the packaged networks as an HTTP inference service.
//!
//! Packages are loaded and verified once; the server then listens and answers the Open
//! Inference Protocol V2 (`/v2/…`), KServe V1 (`/v1/models/{m}:predict`) and a plain image-bytes
//! `POST /stylize?style=`. Every image goes through the batch stage's own decoding, forward pass
//! and encoding (`engine.rs`), so a response is byte-identical to the batch stage's file.
//! Forward passes run in bounded lanes behind a bounded queue (`lanes.rs`); SIGTERM stops
//! accepting, lets in-flight requests finish (at most `--drain-s`) and exits 143.

mod app;
mod args;
mod auth;
mod drain;
mod engine;
mod error;
mod lanes;
mod metrics;
mod models;
mod routes;
mod shutdown;
mod state;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Parser;
use kubestyle_manifest::StageError;
use kubestyle_manifest::cancel;
use kubestyle_manifest::telemetry::init_tracing;

pub use args::{ServeArgs, is_serve};
pub use error::ServeError;

use shutdown::Stop;

/// The `stylize serve …` process: `argv` with `serve` as its first argument.
pub fn main(argv: Vec<std::ffi::OsString>) -> ExitCode {
    // Replaces the stage's exit-at-once hook: a panic in a request is that request's 500 (the
    // task is caught), not the server's end; one outside a request ends the process with exit 1
    // (below), never 101.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(
            "internal error: bug: {}",
            info.to_string().replace('\n', " ")
        );
    }));
    match std::panic::catch_unwind(move || serve_main(argv)) {
        Ok(code) => code,
        Err(_) => ExitCode::from(kubestyle_manifest::ExitStatus::Internal.code()),
    }
}

fn serve_main(argv: Vec<std::ffi::OsString>) -> ExitCode {
    let args = ServeArgs::parse_from(argv.into_iter().skip(1));
    init_tracing();
    let stop = Stop::new();
    let drain = args.drain();
    let hook = stop.clone();
    if let Err(code) = cancel::install_or_exit(move |_| hook.request_and_wait(drain)) {
        return code;
    }
    cancel::finish(run(args, stop), drain + std::time::Duration::from_secs(2))
}

/// Load the packages, listen, and serve until `stop` is requested; then drain.
pub fn run(args: ServeArgs, stop: Stop) -> Result<(), StageError> {
    let scratch = args.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    if !scratch.is_dir() {
        return Err(StageError::Usage(format!(
            "--scratch-dir {}: not a directory",
            scratch.display()
        )));
    }
    let token = args
        .token_file
        .as_deref()
        .map(auth::Token::read)
        .transpose()?;
    let models = models::Models::load(args.batch(scratch.clone()))?;
    let lanes = args.lanes.unwrap_or_else(rayon::current_num_threads).max(1);
    let metrics = Arc::new(metrics::Metrics::new());
    let lanes = Arc::new(
        lanes::Lanes::new(lanes, args.queue, Arc::clone(&metrics)).map_err(StageError::Internal)?,
    );
    let state = state::AppState::new(state::Inner {
        models: Arc::new(models),
        lanes,
        metrics,
        token,
        timeout: args.timeout()?,
        scratch,
        draining: AtomicBool::new(false),
    });
    let app = app::router(state.clone(), args.max_body_bytes);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| StageError::Internal(format!("the async runtime: {e}")))?;
    let signal = stop.clone();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| StageError::Usage(format!("--listen {}: {e}", args.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StageError::Internal(format!("the listening address: {e}")))?;
        tracing::info!(
            "listening on http://{addr} ({} lanes, queue {}, models: {})",
            state.lanes.lanes(),
            args.queue,
            state.models.names().join(", ")
        );
        let drained = state.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                signal.requested().await;
                drained
                    .draining
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                tracing::info!("stopping: no new connections; finishing the requests in flight");
            })
            .await
            .map_err(|e| StageError::Internal(format!("the server: {e}")))?;
        tracing::info!("drained: every request answered");
        Ok::<(), StageError>(())
    })?;
    stop.done();
    Ok(())
}
