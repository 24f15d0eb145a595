//! A WebSocket's bytes once the handshake is answered: the connection is taken over from
//! the HTTP/1 dispatcher (`http::takeover`) and read and written here, so that an idle
//! socket holds no buffer at all.
//!
//! actix-http's dispatcher keeps a read and a write buffer of 8 KiB for every connection
//! for as long as it lives (a constant in actix-http 3); for a WebSocket that mostly waits
//! that was most of what a socket cost. Here a read waits for readiness first and then
//! reads into one buffer per thread, keeping only the bytes that came; a write hands the
//! frames queued in the socket's port (`realtime::port`) straight to the kernel, several
//! in one `writev` when several wait. The session actor and its context stay where they
//! were (`realtime::session`): this module gives the context a stream coming in, and
//! writes the port's frames and the context's own chunks (pings, pongs, the close frame).
//!
//! Order: what the port holds when a context chunk comes out was queued before it, so it
//! is written first; a port is closed before its close frame, so nothing follows it.
//!
//! Back-pressure: the context is polled (and so the session reads the client's frames)
//! only once everything before is wholly in the kernel, so a client that stops reading
//! stops its session, and the port's byte count (`realtime::outflow`) grows until the lane
//! cuts it off.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::rt::net::TcpStream;
use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use futures_util::Stream;

use super::port::Port;

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

/// The chunks a socket's WebSocket context writes: pings, pongs, the close frame.
pub type Frames = Pin<Box<dyn Stream<Item = Result<Bytes, actix_web::Error>>>>;

/// How to run a socket once its connection is handed over: given what the client sends,
/// answers what to write. Carried by the `101` response (its extensions).
pub struct Takeover {
    port: Rc<Port>,
    start: Box<dyn FnOnce(Reader) -> Frames>,
    /// Counted from the handshake's answer on, so that a socket between its `101` and its
    /// first poll is waited for too.
    live: Live,
}

impl Takeover {
    pub fn new(port: Rc<Port>, start: impl FnOnce(Reader) -> Frames + 'static) -> Takeover {
        Takeover {
            port,
            start: Box::new(start),
            live: Live::enter(),
        }
    }

    /// Runs the socket on `tcp` until it ends; `early` is what the client sent after its
    /// handshake that was already read.
    pub async fn run(self, tcp: TcpStream, early: Bytes) {
        let Takeover {
            port,
            start,
            live: _live,
        } = self;
        let tcp = Rc::new(tcp);
        let reader = Reader {
            tcp: tcp.clone(),
            early: (!early.is_empty()).then_some(early),
            eof: false,
        };
        let frames = start(reader);
        {
            // Until this is dropped, a watchdog may shut the connection down.
            let _ended = port.outflow().ended();
            let wake = Arc::new(ContextWake::default());
            Writer {
                tcp: &tcp,
                port: &port,
                frames,
                waker: Waker::from(wake.clone()),
                wake,
                pending: Bytes::new(),
                ended: false,
            }
            .await;
        }
        // The session is gone or going: nothing it still queues is written.
        port.close();
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

/// Writes the port's frames and the context's chunks until the context ends or the
/// connection fails.
struct Writer<'a> {
    tcp: &'a TcpStream,
    port: &'a Port,
    frames: Frames,
    /// Whether the context was woken since it was last polled, and its waker: a frame
    /// queued in the port wakes the writer but not the context, which is left alone
    /// (its mailbox, its stream and its timers are not looked at for each frame).
    wake: Arc<ContextWake>,
    waker: Waker,
    /// The rest of the context's chunk being written.
    pending: Bytes,
    /// The context has ended: what it wrote last was its last.
    ended: bool,
}

impl Future for Writer<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.wake.task.register(cx.waker());
        // Running now: frames queued from here on are written before it waits again.
        this.port.clear_waker();
        loop {
            // The port's frames first: they were queued before the chunk in `pending`.
            while !this.port.is_empty() {
                if ready!(this.tcp.poll_write_ready(cx)).is_err() {
                    return Poll::Ready(());
                }
                match this.port.write_to(this.tcp) {
                    Ok(0) => {
                        log::debug!("socket write wrote nothing: closing");
                        return Poll::Ready(());
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        log::debug!("socket write failed: {e}");
                        return Poll::Ready(());
                    }
                }
            }
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
            if this.ended {
                return Poll::Ready(());
            }
            if !this.wake.woken.swap(false, Ordering::AcqRel) {
                if this.port.is_empty() {
                    // Nothing runs in between (one thread): the next frame queued, or
                    // anything that wakes the context, wakes the writer.
                    this.port.set_waker(cx.waker());
                    return Poll::Pending;
                }
                continue;
            }
            match this
                .frames
                .as_mut()
                .poll_next(&mut Context::from_waker(&this.waker))
            {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.pending = chunk;
                    // It may have more: asked again once this chunk is written.
                    this.wake.woken.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Err(e))) => {
                    log::debug!("socket output failed: {e}");
                    return Poll::Ready(());
                }
                // Anything queued before the end still goes out.
                Poll::Ready(None) => this.ended = true,
                // Frames the session queued in this poll are written next.
                Poll::Pending => {}
            }
        }
    }
}

/// The waker the writer polls the context with: notes that the context has something to
/// do, and wakes the writer's task.
struct ContextWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Default for ContextWake {
    fn default() -> ContextWake {
        // Polled once at the start, as any future is.
        ContextWake {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl Wake for ContextWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
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
