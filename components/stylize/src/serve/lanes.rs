//! Bounded concurrency: `lanes` forward passes at a time, as the batch stage runs them (a small
//! image on one core in a lane of its own, a larger one on every core, alone), and a bounded
//! queue in front of them: one request more than it holds is answered 503 at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ServeError;
use super::metrics::Metrics;

pub(crate) struct Lanes {
    lanes: usize,
    permits: Arc<Semaphore>,
    queue_limit: usize,
    waiting: AtomicUsize,
    /// One single-thread pool per lane (a lane's forward pass runs on one core).
    pools: Mutex<Vec<rayon::ThreadPool>>,
    metrics: Arc<Metrics>,
}

/// A place in the queue, given back when the request leaves it (its lane found, or dropped on
/// a timeout or a closed connection).
struct Queued<'a>(&'a Lanes);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let n = self.0.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.metrics.queue_depth.set(n as i64);
    }
}

/// Counts a forward pass in the in-flight gauge until dropped (a panic included).
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(m: &'a Metrics) -> Self {
        m.in_flight.inc();
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

impl Lanes {
    pub(crate) fn new(
        lanes: usize,
        queue_limit: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Lanes, String> {
        let pools = (0..lanes)
            .map(|_| rayon::ThreadPoolBuilder::new().num_threads(1).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a compute thread: {e}"))?;
        Ok(Lanes {
            lanes,
            permits: Arc::new(Semaphore::new(lanes)),
            queue_limit,
            waiting: AtomicUsize::new(0),
            pools: Mutex::new(pools),
            metrics,
        })
    }

    pub(crate) fn lanes(&self) -> usize {
        self.lanes
    }

    /// `n` lanes: at once if free, else after the requests queued before it; `Busy` when the
    /// queue is full.
    async fn acquire(&self, n: u32) -> Result<OwnedSemaphorePermit, ServeError> {
        if let Ok(p) = self.permits.clone().try_acquire_many_owned(n) {
            return Ok(p);
        }
        let place = self.waiting.fetch_add(1, Ordering::SeqCst);
        let queued = Queued(self);
        if place >= self.queue_limit {
            return Err(ServeError::Busy);
        }
        self.metrics.queue_depth.set(place as i64 + 1);
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| ServeError::Unavailable("shutting down".into()))?;
        drop(queued);
        Ok(permit)
    }

    /// Run `f` (a forward pass) in one lane on one core (`in_lane`), or on every core alone.
    /// A small image that finds every lane free and nobody queued takes them all and runs on
    /// every core too (one client alone gets the whole machine, as the batch stage's single
    /// image does; under load each request keeps to its lane). The lanes stay taken until `f`
    /// returns, even if the request gives up waiting for it.
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        in_lane: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServeError> {
        let all = u32::try_from(self.lanes).unwrap_or(u32::MAX);
        let idle = if in_lane && self.lanes > 1 && self.waiting.load(Ordering::SeqCst) == 0 {
            self.permits.clone().try_acquire_many_owned(all).ok()
        } else {
            None
        };
        let in_lane = in_lane && idle.is_none();
        let permit = match idle {
            Some(p) => p,
            None => self.acquire(if in_lane { 1 } else { all }).await?,
        };
        let me = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _busy = InFlight::enter(&me.metrics);
            if in_lane {
                let pool = me
                    .pools
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop();
                match pool {
                    Some(pool) => {
                        let out = pool.install(f);
                        me.pools
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(pool);
                        out
                    }
                    // Cannot happen (a permit per pool), but then run it here.
                    None => f(),
                }
            } else {
                f()
            }
        });
        task.await
            .map_err(|e| ServeError::Internal(format!("the forward pass failed: {e}")))
    }
}
