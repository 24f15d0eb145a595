//! One lane per worker thread: the hub's deliveries to the sockets of that thread.
//!
//! The hub runs on its own thread and the sessions on the HTTP workers'. Telling each
//! recipient itself would be a push into another thread's mailbox and a wake-up of that
//! thread per socket; instead the hub sends one message per worker thread and delivery,
//! naming the sockets of that thread, and the lane queues the shared frames in each
//! socket's port (`realtime::port`) on their own thread: no message to the session at
//! all, unless a gap is to be filled from storage or the socket is to be closed.
//!
//! The lane also applies the slow-consumer policy, with the socket at hand: a socket
//! whose unsent bytes would pass `SPOTTER_WS_MAX_BUFFER_BYTES`, or whose queue would pass
//! `SPOTTER_WS_QUEUE` frames, is closed with 4029, except for stats frames, which are
//! coalesced (the newest is kept and retried). One delivery always fits a socket that
//! has nothing queued, however big it is.

use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::hub::{batch_bytes, Batch, Disconnect, SocketId, ToSession};
use super::ordering::Gap;
use super::port::{self, Port, Refused};
use super::protocol::CLOSE_TOO_SLOW;
use crate::db::UserId;
use crate::metrics::Metrics;

/// How often stats frames that could not be delivered are retried.
const STATS_RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// Deliveries a lane may have waiting (the hub closes their recipients with 4029 when
/// it is full: a worker that far behind cannot keep up).
pub const LANE_MAILBOX: usize = 16_384;

static NEXT_LANE: AtomicU32 = AtomicU32::new(1);

/// Which lane a session is on: the hub groups a delivery's recipients by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaneId(u32);

/// A lane: its id and where to send it deliveries.
#[derive(Clone)]
pub struct LaneHandle {
    pub id: LaneId,
    pub addr: Addr<Lane>,
}

thread_local! {
    static LANE: RefCell<Option<LaneHandle>> = const { RefCell::new(None) };
}

/// What a socket may have queued before chat and events close it (4029).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Unsent bytes.
    pub bytes: usize,
    /// Frames queued and not yet written; also what may wait behind a join or a gap.
    pub frames: usize,
}

/// This thread's lane, started on first use. Call it from the thread (arbiter) whose
/// sessions it serves.
pub fn current(hub: Recipient<Disconnect>, metrics: Arc<Metrics>, caps: Caps) -> LaneHandle {
    LANE.with(|lane| {
        let mut lane = lane.borrow_mut();
        match &*lane {
            // A lane lives as long as its thread's arbiter; a thread that runs another
            // system later (tests do) gets a new one.
            Some(handle) if handle.addr.connected() => handle.clone(),
            _ => {
                let handle = LaneHandle {
                    id: LaneId(NEXT_LANE.fetch_add(1, Ordering::Relaxed)),
                    addr: Lane::new(hub, metrics, caps).start(),
                };
                *lane = Some(handle.clone());
                handle
            }
        }
    })
}

struct Local {
    user: UserId,
    /// The session, for closes and gap fills.
    addr: Recipient<ToSession>,
    fill: Recipient<Fill>,
    port: Rc<Port>,
    /// The newest stats frame that did not fit.
    pending_stats: Option<Batch>,
}

/// The lane actor.
pub struct Lane {
    sessions: HashMap<SocketId, Local>,
    /// Whether some session holds a stats frame that did not fit: retried every
    /// `STATS_RETRY_INTERVAL` while any does (an idle lane sets no timer).
    stats_waiting: bool,
    /// Whether that retry is scheduled.
    retry_scheduled: bool,
    hub: Recipient<Disconnect>,
    metrics: Arc<Metrics>,
    caps: Caps,
}

impl Lane {
    fn new(hub: Recipient<Disconnect>, metrics: Arc<Metrics>, caps: Caps) -> Lane {
        Lane {
            sessions: HashMap::default(),
            stats_waiting: false,
            retry_scheduled: false,
            hub,
            metrics,
            caps,
        }
    }

    /// Queues a delivery in one socket's port, or applies the slow-consumer policy.
    fn deliver_to(&mut self, id: SocketId, frames: &Batch, bytes: usize, coalescible: bool) {
        let Some(local) = self.sessions.get_mut(&id) else {
            return;
        };
        // Bytes, not deliveries, are what a frozen client makes grow. One delivery always
        // fits when nothing is waiting, however big it is.
        let unsent = local.port.outflow().unsent();
        let queued = local.port.queued();
        let over_bytes = unsent > 0 && unsent + bytes > self.caps.bytes;
        let over_frames = queued > 0 && queued + frames.len() > self.caps.frames;
        if over_bytes || over_frames {
            if coalescible {
                local.pending_stats = Some(frames.clone());
                self.stats_waiting = true;
                self.metrics.ws_stats_coalesced.inc();
            } else if over_bytes {
                self.too_slow(id, &format!("{unsent} bytes unsent"));
            } else {
                self.too_slow(id, &format!("{queued} frames queued"));
            }
            return;
        }
        match local
            .port
            .deliver(id, frames.iter().cloned(), self.caps.frames)
        {
            Ok(gaps) => {
                if coalescible {
                    local.pending_stats = None;
                }
                self.metrics.ws_frames_out.inc_by(frames.len() as u64);
                for gap in gaps {
                    local.fill.do_send(Fill { gap });
                }
            }
            Err(Refused::Overflow) => self.too_slow(id, "too many frames waiting behind a gap"),
            // The session is stopping; its own Disconnect is on its way to the hub.
            Err(Refused::Closed) => {
                self.sessions.remove(&id);
            }
        }
    }

    /// Closes a socket that cannot keep up (4029): it gets nothing more from here, and
    /// the hub forgets it.
    fn too_slow(&mut self, id: SocketId, why: &str) {
        let Some(local) = self.sessions.remove(&id) else {
            return;
        };
        log::warn!(
            "session {} of user {} is too slow ({why}): closing with 4029",
            id.session,
            local.user
        );
        self.metrics.ws_slow_closed.inc();
        local.port.close_with(CLOSE_TOO_SLOW, "too slow to keep up");
        // `do_send` ignores the mailbox bound on purpose: the close must get through.
        local.addr.do_send(ToSession::Close {
            code: CLOSE_TOO_SLOW,
            reason: "too slow to keep up".into(),
        });
        // A client that does not read would never get to the close: cut it off.
        local.port.outflow().cut_off();
        self.hub.do_send(Disconnect { id });
    }

    fn retry_pending_stats(&mut self) {
        let pending: Vec<(SocketId, Batch)> = self
            .sessions
            .iter()
            .filter_map(|(id, l)| l.pending_stats.clone().map(|b| (*id, b)))
            .collect();
        self.stats_waiting = false;
        for (id, frames) in pending {
            let bytes = batch_bytes(&frames);
            self.deliver_to(id, &frames, bytes, true);
        }
    }

    /// Retries the waiting stats frames in `STATS_RETRY_INTERVAL`, again and again while
    /// some still do not fit.
    fn schedule_retry(&mut self, ctx: &mut Context<Self>) {
        if !self.stats_waiting || self.retry_scheduled {
            return;
        }
        self.retry_scheduled = true;
        ctx.run_later(STATS_RETRY_INTERVAL, |lane, ctx| {
            lane.retry_scheduled = false;
            lane.retry_pending_stats();
            lane.schedule_retry(ctx);
        });
    }
}

impl Actor for Lane {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(LANE_MAILBOX);
    }
}

/// A session of this thread authenticated: deliveries for it come through this lane,
/// into the port it left for it ([`port::hand_over`]). Sent before the session's
/// `Connect` to the hub, so it is here before any delivery.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub id: SocketId,
    pub user: UserId,
    pub addr: Recipient<ToSession>,
    pub fill: Recipient<Fill>,
}

/// A delivery was ahead of the socket's next `seq`: fill the gap from storage (what came
/// after it waits in the port meanwhile).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fill {
    pub gap: Gap,
}

/// A session of this thread is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub id: SocketId,
}

/// Frames for some of this lane's sessions, in order, shared by all of them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LaneDeliver {
    pub frames: Batch,
    /// The frames' bytes, as counted against each socket's buffer cap.
    pub bytes: usize,
    /// Stats only: a slow dashboard may skip it for a newer one.
    pub coalescible: bool,
    pub targets: Vec<SocketId>,
}

/// One message for one session of this lane, behind the deliveries sent before it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct LaneSend {
    pub id: SocketId,
    pub msg: ToSession,
}

impl Handler<LaneSend> for Lane {
    type Result = ();

    fn handle(&mut self, msg: LaneSend, _: &mut Context<Self>) {
        match msg.msg {
            ToSession::Close { .. } => {
                // Closed: it gets nothing more from here (what is queued still goes out,
                // before the close frame), and a client that does not read (it would
                // never get to the close) is cut off.
                if let Some(local) = self.sessions.remove(&msg.id) {
                    if let ToSession::Close { code, reason } = &msg.msg {
                        local.port.close_with(*code, reason);
                    }
                    local.addr.do_send(msg.msg);
                    local.port.outflow().cut_off();
                }
            }
            ToSession::Frames { frames } => {
                // Counted like any delivery, though it skips the caps: a control notice
                // gets through even when the queue is full.
                let Some(local) = self.sessions.get(&msg.id) else {
                    return;
                };
                match local
                    .port
                    .deliver(msg.id, frames.iter().cloned(), usize::MAX)
                {
                    Ok(gaps) => {
                        for gap in gaps {
                            local.fill.do_send(Fill { gap });
                        }
                    }
                    Err(_) => {
                        self.sessions.remove(&msg.id);
                    }
                }
            }
        }
    }
}

impl Handler<Register> for Lane {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        let Some(port) = port::take(msg.id) else {
            log::error!(
                "session {} registered without a port: it gets no deliveries",
                msg.id.session
            );
            return;
        };
        self.sessions.insert(
            msg.id,
            Local {
                user: msg.user,
                addr: msg.addr,
                fill: msg.fill,
                port,
                pending_stats: None,
            },
        );
    }
}

impl Handler<Unregister> for Lane {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        self.sessions.remove(&msg.id);
    }
}

impl Handler<LaneDeliver> for Lane {
    type Result = ();

    fn handle(&mut self, msg: LaneDeliver, ctx: &mut Context<Self>) {
        for id in msg.targets {
            self.deliver_to(id, &msg.frames, msg.bytes, msg.coalescible);
        }
        self.schedule_retry(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::ConversationId;
    use crate::domain::events::InstanceId;
    use crate::realtime::hub::tests::Probe;
    use crate::realtime::hub::{FrameKind, Outbound};
    use crate::realtime::outflow::Outflow;
    use std::sync::Mutex;

    const C: ConversationId = ConversationId(1);

    /// Records the sessions the lane tells the hub about.
    struct HubStub(Arc<Mutex<Vec<SocketId>>>);
    impl Actor for HubStub {
        type Context = Context<Self>;
    }
    impl Handler<Disconnect> for HubStub {
        type Result = ();
        fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(msg.id);
        }
    }

    fn frames(text: &str, kind: FrameKind) -> Batch {
        vec![Outbound {
            wire: port::framed(text.as_bytes()),
            kind,
            skip: None,
        }]
        .into()
    }

    fn chat(text: &str, seq: i64) -> Batch {
        frames(
            text,
            FrameKind::Chat {
                conversation: C,
                seq,
            },
        )
    }

    struct Setup {
        lane: LaneHandle,
        id: SocketId,
        port: Rc<Port>,
        /// What the session was told: closes and fills.
        told: Arc<Mutex<Vec<String>>>,
        gone: Arc<Mutex<Vec<SocketId>>>,
    }

    fn setup(caps: Caps) -> Setup {
        let gone = Arc::new(Mutex::new(Vec::new()));
        let hub = HubStub(gone.clone()).start();
        let lane = current(hub.recipient(), Arc::new(Metrics::new()), caps);
        let told = Arc::new(Mutex::new(Vec::new()));
        let probe = Probe(told.clone()).start();
        let id = SocketId {
            instance: InstanceId(1),
            session: 7,
        };
        let port = Port::new(Arc::new(Outflow::new(None, Duration::from_secs(60))));
        port.streams(|s| {
            s.begin_join(C);
            s.joined(C, 0);
        });
        port::hand_over(id, port.clone());
        lane.addr.do_send(Register {
            id,
            user: UserId(1),
            addr: probe.clone().recipient(),
            fill: probe.recipient(),
        });
        Setup {
            lane,
            id,
            port,
            told,
            gone,
        }
    }

    fn caps(bytes: usize) -> Caps {
        Caps {
            bytes,
            frames: 1024,
        }
    }

    fn deliver(s: &Setup, batch: Batch, coalescible: bool) {
        let bytes = batch_bytes(&batch);
        s.lane.addr.do_send(LaneDeliver {
            frames: batch,
            bytes,
            coalescible,
            targets: vec![s.id],
        });
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// A socket whose unsent bytes would pass the cap is closed with 4029, the hub is
    /// told, and nothing more reaches it.
    #[actix::test]
    async fn over_the_byte_cap_a_chat_frame_closes_with_4029() {
        let s = setup(caps(100));
        deliver(&s, chat("first", 1), false);
        settle().await;
        // Nothing has left: the first frame's bytes are still counted, and 200 more pass
        // the cap.
        deliver(&s, chat(&"x".repeat(200), 2), false);
        deliver(&s, chat("after", 3), false);
        settle().await;
        assert_eq!(s.port.take_texts(), ["first", "close 4029"]);
        assert_eq!(*s.told.lock().unwrap(), ["close 4029"]);
        assert!(s.port.is_closed());
        assert_eq!(*s.gone.lock().unwrap(), vec![s.id]);
    }

    /// The same when frames, not bytes, pile up: past `SPOTTER_WS_QUEUE` queued frames.
    #[actix::test]
    async fn over_the_frame_cap_a_chat_frame_closes_with_4029() {
        let s = setup(Caps {
            bytes: 1 << 20,
            frames: 16,
        });
        for seq in 1..=17 {
            deliver(&s, chat(&format!("m{seq}"), seq), false);
        }
        settle().await;
        let queued = s.port.take_texts();
        assert_eq!(queued.len(), 17, "16 frames, then the close");
        assert_eq!(queued[16], "close 4029");
        assert_eq!(*s.told.lock().unwrap(), ["close 4029"]);
        assert_eq!(*s.gone.lock().unwrap(), vec![s.id]);
    }

    /// Stats over the cap are not a reason to close: the newest waits and is sent once
    /// there is room, the ones it replaced never.
    #[actix::test]
    async fn over_the_byte_cap_stats_are_coalesced_and_retried() {
        let s = setup(caps(100));
        s.port.send_text(&"y".repeat(88));
        deliver(
            &s,
            frames(&format!("stats 1 {}", "x".repeat(20)), FrameKind::Stats),
            true,
        );
        deliver(
            &s,
            frames(&format!("stats 2 {}", "x".repeat(20)), FrameKind::Stats),
            true,
        );
        settle().await;
        assert_eq!(s.port.queued(), 1, "only the socket's own frame");
        // The socket's writer catches up.
        s.port.take_texts();
        tokio::time::sleep(STATS_RETRY_INTERVAL * 2).await;
        let seen = s.port.take_texts();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with("stats 2"), "{seen:?}");
        assert!(s.gone.lock().unwrap().is_empty(), "not closed");
    }

    /// A close from the hub comes behind the deliveries sent before it (they stay
    /// queued, and the writer writes them before the close frame), and nothing is queued
    /// after it.
    #[actix::test]
    async fn a_close_stays_behind_earlier_deliveries() {
        let s = setup(caps(1 << 20));
        deliver(&s, frames("before", FrameKind::Event), false);
        s.lane.addr.do_send(LaneSend {
            id: s.id,
            msg: ToSession::Close {
                code: 4001,
                reason: "token revoked".into(),
            },
        });
        deliver(&s, frames("after", FrameKind::Event), false);
        settle().await;
        assert_eq!(s.port.take_texts(), ["before", "close 4001"]);
        assert_eq!(*s.told.lock().unwrap(), ["close 4001"]);
        assert!(s.port.is_closed());
    }

    /// A delivery ahead of the socket's next seq asks the session to fill the gap, and
    /// waits, with everything after it, until the fill is in.
    #[actix::test]
    async fn a_gap_is_filled_before_what_came_after_it() {
        let s = setup(caps(1 << 20));
        deliver(&s, chat("m1", 1), false);
        deliver(&s, chat("m3", 3), false);
        deliver(&s, chat("m4", 4), false);
        settle().await;
        assert_eq!(s.port.take_texts(), ["m1"]);
        assert_eq!(*s.told.lock().unwrap(), ["fill 1..2"]);
        let gap = Gap {
            conversation: C,
            after: 1,
            upto: 2,
        };
        let waited = s.port.filled(gap, UserId(1), None);
        s.port.deliver(s.id, waited, 16).unwrap();
        let seen = s.port.take_texts();
        assert!(seen[0].contains("resync_required"), "{seen:?}");
        assert_eq!(seen[1..], ["m3", "m4"]);
    }
}
