//! What one socket has queued and not yet written, in bytes, and how a socket that stops
//! reading is cut off (PROTOCOL §1, `SPOTTER_WS_MAX_BUFFER_BYTES`).
//!
//! Every text frame is counted from when it is queued in the socket's port
//! (`realtime::port`) until the socket's writer (`realtime::wire`) has put it in the
//! kernel, so what is uncounted is at most the kernel's socket buffer; a client that never
//! reads keeps the writer from writing, so its count only grows, and its lane cuts it off
//! past the cap.
//!
//! A socket closed by the server is given a grace period to flush its close frame; one
//! that still has not read by then has its TCP connection shut down, so that a frozen
//! client cannot keep a session, its queue and its buffers alive. The watchdog that
//! does it is started by the close, not with the socket: an idle socket pays nothing
//! for it.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One socket's unsent output, counted by its port (which adds) and its writer (which
/// sees bytes leave).
#[derive(Default)]
pub struct Outflow {
    /// Bytes queued and not yet written by the socket's writer.
    unsent: AtomicUsize,
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

    /// `bytes` were queued for this socket.
    pub fn queued(&self, bytes: usize) {
        self.unsent.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The writer put `bytes` in the kernel.
    pub fn written(&self, bytes: usize) {
        if bytes > 0 {
            self.unsent.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// The connection has ended (or is ending) while `Ended` lives no more: a watchdog
    /// started later finds nothing to cut.
    pub fn ended(self: &Arc<Self>) -> Ended {
        Ended(self.clone())
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

/// Marks its outflow's connection as ended when dropped.
pub struct Ended(Arc<Outflow>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.finished.store(true, Ordering::Release);
    }
}
