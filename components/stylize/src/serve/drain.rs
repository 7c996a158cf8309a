//! Reading what a request left unread, so that its client gets the answer.
//!
//! A request answered before its body was read (413 over `--max-body-bytes`, 401, 404) drops
//! the rest of the body. hyper then closes the connection with those bytes still in the
//! socket: the kernel answers with a reset, and a client that is still writing its body sees
//! "broken pipe" or "connection reset" instead of the status (nginx's `lingering_close` exists
//! for the same reason). Here the unread rest is handed back when the handler drops it, and is
//! read and discarded — at most [`DRAIN_BYTES`], for at most [`DRAIN_TIME`] — before the answer
//! goes out. Past either bound the connection is closed as before.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// At most this much of a rejected body is read before the answer is sent.
pub(crate) const DRAIN_BYTES: u64 = 64 << 20;
/// At most this long is spent reading it.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Where a body that was dropped before its end is handed back.
type Slot = Arc<Mutex<Option<Body>>>;

/// The request's body, which hands its unread rest back to [`unread`] when dropped.
struct Returning {
    inner: Option<Body>,
    slot: Slot,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), http_body::Body::size_hint)
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(b) = self.inner.take()
            && !http_body::Body::is_end_stream(&b)
        {
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(b);
        }
    }
}

/// Middleware: run the request, then read what its handler left of the body (bounded) before
/// the answer is sent.
pub(crate) async fn unread(req: Request, next: Next) -> Response {
    let slot = Slot::default();
    let req = req.map(|b| {
        Body::new(Returning {
            inner: Some(b),
            slot: slot.clone(),
        })
    });
    let resp = next.run(req).await;
    let rest = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(rest) = rest {
        let read = drain(rest, DRAIN_BYTES, DRAIN_TIME).await;
        tracing::debug!(bytes = read, "read the unread rest of a request body");
    }
    resp
}

/// Read and discard `body` until its end, an error, `max_bytes` or `max_time`; how many bytes
/// were read.
async fn drain(mut body: Body, max_bytes: u64, max_time: Duration) -> u64 {
    let mut read = 0u64;
    let _ = tokio::time::timeout(max_time, async {
        while read <= max_bytes {
            match body.frame().await {
                Some(Ok(frame)) => {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => break,
            }
        }
    })
    .await;
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` frames of `size` zero bytes.
    struct Chunks {
        n: usize,
        size: usize,
    }

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.n == 0 {
                return Poll::Ready(None);
            }
            self.n -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; self.size])))))
        }
        fn is_end_stream(&self) -> bool {
            self.n == 0
        }
    }

    /// Promise: a dropped, unfinished body is handed back and drained within its bounds; a
    /// finished one is not handed back.
    #[tokio::test]
    async fn an_unfinished_body_is_handed_back_and_drained_within_its_bounds() {
        let slot = Slot::default();
        let mut b = Returning {
            inner: Some(Body::new(Chunks { n: 4, size: 1000 })),
            slot: slot.clone(),
        };
        let first = Pin::new(&mut b).frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap().len(), 1000);
        drop(b);
        let rest = slot.lock().unwrap().take().expect("handed back");
        assert_eq!(drain(rest, DRAIN_BYTES, DRAIN_TIME).await, 3000);

        // The byte bound: reading stops once past it.
        let body = Body::new(Chunks { n: 10, size: 1000 });
        assert_eq!(drain(body, 2500, DRAIN_TIME).await, 3000);

        // A body read to its end is not handed back.
        let slot = Slot::default();
        let mut b = Returning {
            inner: Some(Body::new(Chunks { n: 2, size: 10 })),
            slot: slot.clone(),
        };
        while Pin::new(&mut b).frame().await.is_some() {}
        drop(b);
        assert!(slot.lock().unwrap().is_none());
    }
}
