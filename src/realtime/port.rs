//! A socket's way out, on its own thread: its chat order (`realtime::ordering`) and the
//! WebSocket frames it has queued, ready to write.
//!
//! The lane, the session and the socket's writer (`realtime::wire`) all run on the
//! socket's worker thread, so they share one port (an `Rc`) instead of passing messages:
//! a delivery is checked against the socket's order and its frames are queued here by the
//! lane, with no mailbox push, no wake-up of the session actor and no copy. A server
//! frame is unmasked, so a broadcast is framed once (`framed`) and the same bytes are
//! queued for every recipient; the writer hands them to the kernel, several at once when
//! several wait.
//!
//! Everything the socket sends as text goes through here, the session's own replies
//! included, so the wire order is the order frames were queued. Pings, pongs and the close
//! frame still come from the session's WebSocket context; the writer writes what is
//! queued here before the context's next chunk, and a port is closed before its close
//! frame is written, so nothing follows the close.
//!
//! Every queued byte is counted in the socket's [`Outflow`] until the writer has put it in
//! the kernel; the lane closes a socket whose count or queue passes its cap (4029).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;

use actix_http::ws::{OpCode, Parser};
use actix_web::rt::net::TcpStream;
use bytes::{Buf, Bytes, BytesMut};
use rustc_hash::FxHashMap as HashMap;

use super::hub::{Outbound, SocketId};
use super::ordering::{self, Gap, Overflow, Streams};
use super::outflow::Outflow;
use crate::db::UserId;
use crate::domain::chat::Message;

/// The most frames one write hands to the kernel.
const WRITE_BATCH: usize = 32;

/// A text frame as it goes on the wire from the server: header and payload, unmasked.
pub fn framed(text: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 10);
    Parser::write_message(&mut buf, text, OpCode::Text, true, false);
    buf.freeze()
}

/// The payload of a frame made by [`framed`].
pub fn payload(wire: &[u8]) -> &[u8] {
    let header = match wire.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    wire.get(header..).unwrap_or_default()
}

/// Why a port took nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The socket is closing: it gets nothing more.
    Closed,
    /// More frames waited behind a join or a gap fill than the socket may queue.
    Overflow,
}

/// One socket's port.
pub struct Port {
    outflow: Arc<Outflow>,
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    streams: Streams,
    /// Framed frames not yet (wholly) written, oldest first.
    queue: VecDeque<Bytes>,
    /// The writer, waiting for frames (taken by the frame that wakes it).
    waker: Option<Waker>,
    closed: bool,
    close_sent: bool,
}

impl Port {
    pub fn new(outflow: Arc<Outflow>) -> Rc<Port> {
        Rc::new(Port {
            outflow,
            inner: RefCell::default(),
        })
    }

    pub fn outflow(&self) -> &Arc<Outflow> {
        &self.outflow
    }

    /// Frames queued and not yet wholly written.
    pub fn queued(&self) -> usize {
        self.inner.borrow().queue.len()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.borrow().closed
    }

    /// Takes nothing more; what is queued is still written.
    pub fn close(&self) {
        self.inner.borrow_mut().closed = true;
    }

    /// Queues the close frame right behind what is queued (so that a client sees the
    /// frames before a close and the close together), then takes nothing more.
    pub fn close_with(&self, code: u16, reason: &str) {
        let mut inner = self.inner.borrow_mut();
        if inner.closed {
            return;
        }
        let mut buf = BytesMut::new();
        Parser::write_close(
            &mut buf,
            Some(actix_http::ws::CloseReason {
                code: actix_http::ws::CloseCode::Other(code),
                description: Some(reason.to_string()),
            }),
            false,
        );
        self.push(&mut inner, buf.freeze());
        inner.closed = true;
        inner.close_sent = true;
    }

    /// Whether the close frame was queued here ([`Port::close_with`]).
    pub fn close_sent(&self) -> bool {
        self.inner.borrow().close_sent
    }

    /// The socket's chat order, for the session's joins, leaves and own messages.
    pub fn streams<R>(&self, f: impl FnOnce(&mut Streams) -> R) -> R {
        f(&mut self.inner.borrow_mut().streams)
    }

    /// Queues a text frame of the session's own (a reply, an ack, an error).
    pub fn send_text(&self, text: &str) {
        let mut inner = self.inner.borrow_mut();
        if !inner.closed {
            self.push(&mut inner, framed(text.as_bytes()));
        }
    }

    /// Takes frames from the hub in this socket's order and queues what is to be sent
    /// now. Answers the gaps the session is to fill from storage (the frames behind a gap
    /// wait here meanwhile).
    pub fn deliver(
        &self,
        me: SocketId,
        frames: impl IntoIterator<Item = Outbound>,
        max_waiting: usize,
    ) -> Result<Vec<Gap>, Refused> {
        let mut inner = self.inner.borrow_mut();
        if inner.closed {
            return Err(Refused::Closed);
        }
        let mut out = ordering::Out::new();
        let mut gaps = Vec::new();
        for frame in frames {
            match inner.streams.accept(me, frame, max_waiting, &mut out) {
                Ok(None) => {}
                Ok(Some(gap)) => gaps.push(gap),
                Err(Overflow) => {
                    inner.closed = true;
                    return Err(Refused::Overflow);
                }
            }
        }
        for wire in out {
            self.push(&mut inner, wire);
        }
        Ok(gaps)
    }

    /// A gap's fill came back: queues it (see [`Streams::filled`]) and answers the frames
    /// that waited behind it, to be delivered again.
    pub fn filled(&self, gap: Gap, user: UserId, messages: Option<Vec<Message>>) -> Vec<Outbound> {
        let mut inner = self.inner.borrow_mut();
        if inner.closed {
            return Vec::new();
        }
        let mut out = ordering::Out::new();
        let waited = inner.streams.filled(gap, user, messages, &mut out);
        for wire in out {
            self.push(&mut inner, wire);
        }
        waited
    }

    fn push(&self, inner: &mut Inner, wire: Bytes) {
        self.outflow.queued(wire.len());
        inner.queue.push_back(wire);
        // Once: the writer writes everything queued meanwhile when it runs.
        if let Some(waker) = inner.waker.take() {
            waker.wake();
        }
    }

    /// The writer runs: no need to wake it.
    pub(super) fn clear_waker(&self) {
        self.inner.borrow_mut().waker = None;
    }

    /// Whether the writer has nothing of this port's to write.
    pub(super) fn is_empty(&self) -> bool {
        self.inner.borrow().queue.is_empty()
    }

    /// The writer has written everything and waits: wake it on the next frame.
    pub(super) fn set_waker(&self, waker: &Waker) {
        let mut inner = self.inner.borrow_mut();
        match &inner.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.waker = Some(waker.clone()),
        }
    }

    /// Writes what the kernel takes of the queued frames, without waiting; the bytes
    /// written leave the socket's count.
    pub(super) fn write_to(&self, tcp: &TcpStream) -> io::Result<usize> {
        let mut inner = self.inner.borrow_mut();
        let queue = &mut inner.queue;
        let written = if queue.len() == 1 {
            tcp.try_write(&queue[0])?
        } else {
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let n = queue
                .iter()
                .zip(slices.iter_mut())
                .map(|(wire, slice)| *slice = IoSlice::new(wire))
                .count();
            tcp.try_write_vectored(&slices[..n])?
        };
        let mut left = written;
        while left > 0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                queue.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
        drop(inner);
        self.outflow.written(written);
        Ok(written)
    }

    /// Empties the queue as if it were written (tests read what a socket would send).
    #[cfg(test)]
    pub(crate) fn take_texts(&self) -> Vec<String> {
        let wires: Vec<Bytes> = self.inner.borrow_mut().queue.drain(..).collect();
        self.outflow.written(wires.iter().map(|w| w.len()).sum());
        wires
            .iter()
            .map(|w| match w[0] {
                // A close frame: its code.
                0x88 => {
                    let p = payload(w);
                    format!("close {}", u16::from_be_bytes([p[0], p[1]]))
                }
                _ => String::from_utf8_lossy(payload(w)).into_owned(),
            })
            .collect()
    }
}

thread_local! {
    /// Ports of this thread's sessions on their way to the lane (an `Rc` cannot travel in
    /// an actor message): put here by the session, taken by the lane's `Register`.
    static HANDOVER: RefCell<HashMap<SocketId, Rc<Port>>> = RefCell::default();
}

/// Leaves a session's port for its lane, which takes it with [`take`].
pub fn hand_over(id: SocketId, port: Rc<Port>) {
    HANDOVER.with(|h| h.borrow_mut().insert(id, port));
}

/// The port a session of this thread left for its lane.
pub fn take(id: SocketId) -> Option<Rc<Port>> {
    HANDOVER.with(|h| h.borrow_mut().remove(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_at_every_header_size() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 70_000] {
            let text = "x".repeat(len);
            let wire = framed(text.as_bytes());
            assert_eq!(payload(&wire), text.as_bytes(), "length {len}");
            assert_eq!(wire[0], 0x81, "FIN + text");
            assert_eq!(wire[1] & 0x80, 0, "unmasked");
        }
    }

    #[test]
    fn a_closed_port_takes_nothing_and_counts_nothing() {
        let outflow = Arc::new(Outflow::new(None, std::time::Duration::from_secs(1)));
        let port = Port::new(outflow.clone());
        port.send_text("one");
        assert_eq!(outflow.unsent(), framed(b"one").len());
        port.close();
        port.send_text("two");
        assert_eq!(port.take_texts(), ["one"]);
        assert_eq!(
            port.deliver(
                SocketId {
                    instance: crate::domain::events::InstanceId(1),
                    session: 1
                },
                std::iter::empty(),
                16
            ),
            Err(Refused::Closed)
        );
    }
}
