//! The drain on SIGTERM/SIGINT: the signal thread ([`kubestyle_manifest::cancel`]) asks the
//! server to stop and waits (at most `--drain-s`) until every in-flight request is answered;
//! then the process exits 143 (130 for SIGINT).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// Stop requested (async side) and drain finished (signal-thread side).
#[derive(Clone, Debug)]
pub struct Stop {
    requested: Arc<watch::Sender<bool>>,
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    pub fn new() -> Stop {
        Stop {
            requested: Arc::new(watch::channel(false).0),
            done: Arc::new((Mutex::new(false), Condvar::new())),
        }
    }

    /// From the signal thread: ask the server to stop and wait until it has drained, or
    /// `max_wait` has passed.
    pub fn request_and_wait(&self, max_wait: Duration) {
        self.requested.send_replace(true);
        let (done, cv) = &*self.done;
        let guard = done.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, timeout) = cv
            .wait_timeout_while(guard, max_wait, |d| !*d)
            .unwrap_or_else(PoisonError::into_inner);
        if timeout.timed_out() && !*guard {
            tracing::warn!(
                "requests still in flight after {max_wait:?} (--drain-s): exiting anyway"
            );
        }
    }

    /// Resolves once a stop is requested.
    pub(crate) async fn requested(&self) {
        let mut rx = self.requested.subscribe();
        let _ = rx.wait_for(|&stop| stop).await;
    }

    /// The server has drained.
    pub(crate) fn done(&self) {
        let (done, cv) = &*self.done;
        *done.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
    }
}
