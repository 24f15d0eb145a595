//! A WebSocket's bytes once the handshake is answered: the connection is taken over from
//! the HTTP/1 dispatcher (`http::takeover`) and read and written here, so that an idle
//! socket holds no buffer at all.
//!
//! actix-http's dispatcher keeps a read and a write buffer of 8 KiB for every connection
//! for as long as it lives (a constant in actix-http 3); for a WebSocket that mostly waits
//! that was most of what a socket cost. Here a read waits for readiness first and then
//! reads into one buffer per thread, keeping only the bytes that came; a write hands the
//! WebSocket context's chunk straight to the kernel. The session actor and its context
//! stay where they were (`realtime::session`): this module sees a stream of chunks going
//! out and gives one coming in.
//!
//! Back-pressure is what it was: the next chunk is taken from the context only when the
//! last one is wholly in the kernel, so a client that stops reading stops its session's
//! output, and the byte count of `realtime::outflow` grows until the hub cuts it off.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::rt::net::TcpStream;
use bytes::{Buf, Bytes};
use futures_util::Stream;

/// The most one read takes from the kernel (into the thread's buffer, not the socket's).
const READ_CHUNK: usize = 16 * 1024;
/// After the last frame, how long the peer has to close its side before the connection
/// is dropped (reading and discarding meanwhile, so that our close frame is not lost to
/// a reset).
const LINGER: Duration = Duration::from_secs(1);

/// Sockets being driven here now (the shutdown drain waits for them).
static LIVE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// The chunks a socket writes: its WebSocket context's output.
pub type Frames = Pin<Box<dyn Stream<Item = Result<Bytes, actix_web::Error>>>>;

/// How to run a socket once its connection is handed over: given what the client sends,
/// answers what to write. Carried by the `101` response (its extensions).
pub struct Takeover {
    start: Box<dyn FnOnce(Reader) -> Frames>,
    /// Counted from the handshake's answer on, so that a socket between its `101` and its
    /// first poll is waited for too.
    live: Live,
}

impl Takeover {
    pub fn new(start: impl FnOnce(Reader) -> Frames + 'static) -> Takeover {
        Takeover {
            start: Box::new(start),
            live: Live::enter(),
        }
    }

    /// Runs the socket on `tcp` until it ends; `early` is what the client sent after its
    /// handshake that was already read.
    pub async fn run(self, tcp: TcpStream, early: Bytes) {
        let Takeover { start, live: _live } = self;
        let tcp = Rc::new(tcp);
        let reader = Reader {
            tcp: tcp.clone(),
            early: (!early.is_empty()).then_some(early),
            eof: false,
        };
        let frames = start(reader);
        Writer {
            tcp: &tcp,
            frames,
            pending: Bytes::new(),
        }
        .await;
        linger(&tcp).await;
    }
}

/// Counts a socket in [`LIVE`] while it runs.
struct Live;

impl Live {
    fn enter() -> Live {
        LIVE.fetch_add(1, Ordering::AcqRel);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many taken-over sockets are still running.
pub fn live() -> usize {
    LIVE.load(Ordering::Acquire)
}

/// What the client sends, as the WebSocket context reads it.
pub struct Reader {
    tcp: Rc<TcpStream>,
    early: Option<Bytes>,
    eof: bool,
}

impl Stream for Reader {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(early) = self.early.take() {
            return Poll::Ready(Some(Ok(early)));
        }
        if self.eof {
            return Poll::Ready(None);
        }
        loop {
            if let Err(e) = ready!(self.tcp.poll_read_ready(cx)) {
                self.eof = true;
                return Poll::Ready(Some(Err(PayloadError::Io(e))));
            }
            let read = READ_BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                self.tcp
                    .try_read(&mut buf)
                    .map(|n| Bytes::copy_from_slice(&buf[..n]))
            });
            match read {
                Ok(chunk) if chunk.is_empty() => {
                    self.eof = true;
                    return Poll::Ready(None);
                }
                Ok(chunk) => return Poll::Ready(Some(Ok(chunk))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    self.eof = true;
                    return Poll::Ready(Some(Err(PayloadError::Io(e))));
                }
            }
        }
    }
}

/// Writes the context's chunks, one at a time, until the context ends or the connection
/// fails.
struct Writer<'a> {
    tcp: &'a TcpStream,
    frames: Frames,
    /// The rest of the chunk being written.
    pending: Bytes,
}

impl Future for Writer<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            while !this.pending.is_empty() {
                if ready!(this.tcp.poll_write_ready(cx)).is_err() {
                    return Poll::Ready(());
                }
                match this.tcp.try_write(&this.pending) {
                    Ok(0) => {
                        log::debug!("socket write wrote nothing: closing");
                        return Poll::Ready(());
                    }
                    Ok(n) => this.pending.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        log::debug!("socket write failed: {e}");
                        return Poll::Ready(());
                    }
                }
            }
            match ready!(this.frames.as_mut().poll_next(cx)) {
                Some(Ok(chunk)) => this.pending = chunk,
                Some(Err(e)) => {
                    log::debug!("socket output failed: {e}");
                    return Poll::Ready(());
                }
                None => return Poll::Ready(()),
            }
        }
    }
}

/// The last frame is out: say so (FIN), and give the peer [`LINGER`] to close its side,
/// discarding what it still sends.
async fn linger(tcp: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on the descriptor of a stream this function borrows.
    unsafe {
        libc::shutdown(tcp.as_raw_fd(), libc::SHUT_WR);
    }
    let drain = async {
        loop {
            if tcp.readable().await.is_err() {
                return;
            }
            let read = READ_BUF.with(|buf| tcp.try_read(&mut buf.borrow_mut()));
            match read {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
