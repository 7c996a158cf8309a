//! What every handler reads: the models, the lanes, the metrics and the server's settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::auth::Token;
use super::engine::{self, Output};
use super::error::ServeError;
use super::lanes::Lanes;
use super::metrics::Metrics;
use super::models::{Models, resolve_style};

#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) models: Arc<Models>,
    pub(crate) lanes: Arc<Lanes>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) token: Option<Token>,
    pub(crate) timeout: Duration,
    pub(crate) scratch: PathBuf,
    /// Set once the server stops taking requests (SIGTERM): readiness turns false.
    pub(crate) draining: AtomicBool,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub(crate) fn new(inner: Inner) -> AppState {
        AppState(Arc::new(inner))
    }

    pub(crate) fn ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
    }

    /// One image of a request through the batch stage's code, within `--timeout-s` (waiting for
    /// a lane included): model `model` (the only one when `None`), style `style` (style 0 when
    /// `None`).
    pub(crate) async fn stylize(
        &self,
        model: Option<&str>,
        style: Option<&str>,
        image: Vec<u8>,
    ) -> Result<Output, ServeError> {
        if !self.ready() {
            return Err(ServeError::Unavailable(
                "draining: the server is stopping".into(),
            ));
        }
        let idx = {
            let pkg = match model {
                Some(m) => self.models.get(m)?,
                None => self.models.only()?,
            };
            self.models
                .packages
                .iter()
                .position(|p| std::ptr::eq(p, pkg))
                .ok_or_else(|| ServeError::Internal("model lookup".into()))?
        };
        let style = resolve_style(&self.models.packages[idx], style)?;
        let secs = self.timeout.as_secs_f64();
        let work = async {
            let (models, scratch) = (Arc::clone(&self.models), self.scratch.clone());
            let prepared = tokio::task::spawn_blocking(move || {
                engine::prepare(&image, &scratch, &models.batch)
            })
            .await
            .map_err(|e| ServeError::Internal(format!("reading the image: {e}")))??;
            let lane = engine::in_lane(
                &self.models.compute,
                &self.models.batch,
                self.lanes.lanes(),
                prepared.pixels,
            );
            let models = Arc::clone(&self.models);
            self.lanes
                .run(lane, move || {
                    let pkg = &models.packages[idx];
                    engine::run(prepared, pkg, &style, &models.compute, &models.batch)
                })
                .await?
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ServeError::Timeout(secs))?
    }
}
