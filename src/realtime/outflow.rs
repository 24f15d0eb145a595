//! What one socket has queued and not yet written, in bytes, and how a socket that stops
//! reading is cut off (PROTOCOL §1, `SPOTTER_WS_MAX_BUFFER_BYTES`).
//!
//! Everything is counted: the hub adds a delivery's bytes before it enters the session's
//! mailbox, and they stay counted while the session hands them to its WebSocket context
//! and until the socket's writer (`realtime::wire`) has put them in the kernel and asked
//! for more. The writer asks only when its last chunk is wholly written, so what is
//! uncounted is at most the kernel's socket buffer; a client that never reads keeps the
//! writer from asking, so its count only grows, and the hub cuts it off past the cap.
//!
//! A socket closed by the server is given a grace period to flush its close frame; one
//! that still has not read by then has its TCP connection shut down, so that a frozen
//! client cannot keep a session, its mailbox and its buffers alive. The watchdog that
//! does it is started by the close, not with the socket: an idle socket pays nothing
//! for it.

use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

/// One socket's unsent output, shared by the lane (which adds), the session (which hands
/// bytes to its context) and the response body (which sees them leave).
#[derive(Default)]
pub struct Outflow {
    /// Bytes queued or buffered and not yet written by the socket's writer.
    unsent: AtomicUsize,
    /// Bytes the session handed to its context since the body last yielded.
    handed: AtomicUsize,
    /// The connection's TCP socket and how long a closed socket has to go.
    conn: Option<ConnSocket>,
    grace: Duration,
    /// The server closed the socket: its watchdog is running.
    cut: AtomicBool,
    /// The response body is gone (the connection ended or is ending).
    finished: AtomicBool,
}

impl Outflow {
    /// The outflow of a socket on `conn`, cut `grace` after the server closes it.
    pub fn new(conn: Option<ConnSocket>, grace: Duration) -> Outflow {
        Outflow {
            conn,
            grace,
            ..Outflow::default()
        }
    }

    pub fn unsent(&self) -> usize {
        self.unsent.load(Ordering::Acquire)
    }

    /// The hub is about to queue `bytes` for this socket.
    pub fn queued(&self, bytes: usize) {
        self.unsent.fetch_add(bytes, Ordering::AcqRel);
    }

    /// A queued delivery did not enter the mailbox after all.
    pub fn unqueued(&self, bytes: usize) {
        self.release(bytes);
    }

    /// The session wrote (or dropped) a delivery of `bytes` into its context.
    pub fn handed(&self, bytes: usize) {
        self.handed.fetch_add(bytes, Ordering::AcqRel);
    }

    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.unsent.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// The server closed the socket: unless its connection has ended `grace` from now,
    /// shut it down. Call it on the session's own thread (the session's or its lane's
    /// code): the watchdog runs there, so that the connection's descriptor cannot be
    /// closed and reused between its check and the shutdown.
    pub fn cut_off(self: &Arc<Self>) {
        if self.cut.swap(true, Ordering::AcqRel) {
            return;
        }
        actix_web::rt::spawn(self.clone().watchdog());
    }

    async fn watchdog(self: Arc<Self>) {
        tokio::time::sleep(self.grace).await;
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        if let Some(conn) = self.conn {
            log::warn!(
                "socket fd {} did not take its close within {:?}: shutting the connection down",
                conn.0,
                self.grace
            );
            conn.shutdown();
        }
    }
}

/// The TCP socket under a connection, noted when it is accepted, so that a session can cut
/// off a client that stopped reading.
#[derive(Debug, Clone, Copy)]
pub struct ConnSocket(pub RawFd);

impl ConnSocket {
    fn shutdown(self) {
        // SAFETY: shutdown(2) takes a descriptor and flags and touches no memory; the
        // descriptor belongs to the live connection of the caller's session (see
        // `Outflow::watchdog`).
        unsafe {
            libc::shutdown(self.0, libc::SHUT_RDWR);
        }
    }
}

/// What a socket writes: the WebSocket context's stream, releasing from the count what
/// the writer has written each time it asks for more.
pub struct CountedBody<S> {
    inner: S,
    outflow: Arc<Outflow>,
    /// Bytes in the chunk last yielded: released when the writer asks again.
    in_writer: usize,
}

impl<S> CountedBody<S> {
    pub fn new(inner: S, outflow: Arc<Outflow>) -> CountedBody<S> {
        CountedBody {
            inner,
            outflow,
            in_writer: 0,
        }
    }
}

impl<S, E> Stream for CountedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Asked again: the writer's buffer is below its limit, the last chunk has left.
        this.outflow.release(std::mem::take(&mut this.in_writer));
        let polled = Pin::new(&mut this.inner).poll_next(cx);
        let handed = this.outflow.handed.swap(0, Ordering::AcqRel);
        match &polled {
            Poll::Ready(Some(Ok(_))) => this.in_writer = handed,
            _ => this.outflow.release(handed),
        }
        polled
    }
}

impl<S> Drop for CountedBody<S> {
    fn drop(&mut self) {
        self.outflow.finished.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[actix::test]
    async fn bytes_stay_counted_until_the_writer_asks_again() {
        let outflow = Arc::new(Outflow::default());
        let chunks: Vec<Result<Bytes, ()>> =
            vec![Ok(Bytes::from_static(b"x")), Ok(Bytes::from_static(b"y"))];
        let mut body = CountedBody::new(futures_util::stream::iter(chunks), outflow.clone());
        outflow.queued(100);
        outflow.handed(100);
        assert!(body.next().await.is_some());
        assert_eq!(outflow.unsent(), 100, "still in the writer's buffer");
        assert!(body.next().await.is_some());
        assert_eq!(outflow.unsent(), 0, "the writer asked again: it has left");
    }
}
