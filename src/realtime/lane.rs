//! One lane per worker thread: the hub's deliveries to the sessions of that thread.
//!
//! The hub runs on its own thread and the sessions on the HTTP workers'. Telling each
//! recipient itself would be a push into another thread's mailbox and a wake-up of that
//! thread per socket; instead the hub sends one message per worker thread and delivery,
//! naming the sessions of that thread, and the lane hands the shared frames to each of
//! them on their own thread, where a mailbox push is a local one.
//!
//! The lane also applies the slow-consumer policy, with the session at hand: a socket
//! whose unsent bytes would pass `SPOTTER_WS_MAX_BUFFER_BYTES`, or whose mailbox
//! (`SPOTTER_WS_QUEUE` deliveries) is full, is closed with 4029, except for stats frames,
//! which are coalesced (the newest is kept and retried).

use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::hub::{batch_bytes, Batch, Disconnect, SocketId, ToSession};
use super::outflow::Outflow;
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

/// This thread's lane, started on first use. Call it from the thread (arbiter) whose
/// sessions it serves. `max_buffer_bytes`: the unsent bytes one socket may have before
/// chat and events close it (4029).
pub fn current(
    hub: Recipient<Disconnect>,
    metrics: Arc<Metrics>,
    max_buffer_bytes: usize,
) -> LaneHandle {
    LANE.with(|lane| {
        let mut lane = lane.borrow_mut();
        match &*lane {
            // A lane lives as long as its thread's arbiter; a thread that runs another
            // system later (tests do) gets a new one.
            Some(handle) if handle.addr.connected() => handle.clone(),
            _ => {
                let handle = LaneHandle {
                    id: LaneId(NEXT_LANE.fetch_add(1, Ordering::Relaxed)),
                    addr: Lane::new(hub, metrics, max_buffer_bytes).start(),
                };
                *lane = Some(handle.clone());
                handle
            }
        }
    })
}

struct Local {
    user: UserId,
    addr: Recipient<ToSession>,
    outflow: Arc<Outflow>,
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
    max_buffer_bytes: usize,
}

impl Lane {
    fn new(hub: Recipient<Disconnect>, metrics: Arc<Metrics>, max_buffer_bytes: usize) -> Lane {
        Lane {
            sessions: HashMap::default(),
            stats_waiting: false,
            retry_scheduled: false,
            hub,
            metrics,
            max_buffer_bytes,
        }
    }

    /// Hands a delivery to one session, or applies the slow-consumer policy.
    fn deliver_to(&mut self, id: SocketId, frames: &Batch, bytes: usize, coalescible: bool) {
        let Some(local) = self.sessions.get_mut(&id) else {
            return;
        };
        // Bytes, not deliveries, are what a frozen client makes grow. One delivery always
        // fits when nothing is waiting, however big it is.
        let unsent = local.outflow.unsent();
        if unsent > 0 && unsent + bytes > self.max_buffer_bytes {
            if coalescible {
                local.pending_stats = Some(frames.clone());
                self.stats_waiting = true;
                self.metrics.ws_stats_coalesced.inc();
            } else {
                self.too_slow(id, &format!("{unsent} bytes unsent"));
            }
            return;
        }
        local.outflow.queued(bytes);
        let sent = local.addr.try_send(ToSession::Frames {
            frames: frames.clone(),
            bytes,
        });
        if sent.is_err() {
            local.outflow.unqueued(bytes);
        }
        match sent {
            Ok(()) => {
                if coalescible {
                    local.pending_stats = None;
                }
                self.metrics.ws_frames_out.inc_by(frames.len() as u64);
            }
            Err(SendError::Full(_)) if coalescible => {
                local.pending_stats = Some(frames.clone());
                self.stats_waiting = true;
                self.metrics.ws_stats_coalesced.inc();
            }
            Err(SendError::Full(_)) => self.too_slow(id, "mailbox full"),
            // The session is stopping; its own Disconnect is on its way to the hub.
            Err(SendError::Closed(_)) => {
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
        // `do_send` ignores the mailbox bound on purpose: the close must get through.
        local.addr.do_send(ToSession::Close {
            code: CLOSE_TOO_SLOW,
            reason: "too slow to keep up".into(),
        });
        // A client that does not read would never get to the close: cut it off.
        local.outflow.cut_off();
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

/// A session of this thread authenticated: deliveries for it come through this lane.
/// Sent before the session's `Connect` to the hub, so it is here before any delivery.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub id: SocketId,
    pub user: UserId,
    pub addr: Recipient<ToSession>,
    pub outflow: Arc<Outflow>,
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
        if matches!(msg.msg, ToSession::Close { .. }) {
            // Closed: it gets nothing more from here, and a client that does not read
            // (it would never get to the close) is cut off.
            if let Some(local) = self.sessions.remove(&msg.id) {
                local.addr.do_send(msg.msg);
                local.outflow.cut_off();
            }
        } else if let Some(local) = self.sessions.get(&msg.id) {
            if let ToSession::Frames { bytes, .. } = &msg.msg {
                // Counted like any delivery, though it skips the caps: a control notice
                // gets through even when the mailbox is full.
                local.outflow.queued(*bytes);
            }
            local.addr.do_send(msg.msg);
        }
    }
}

impl Handler<Register> for Lane {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        self.sessions.insert(
            msg.id,
            Local {
                user: msg.user,
                addr: msg.addr,
                outflow: msg.outflow,
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
    use crate::domain::events::InstanceId;
    use crate::realtime::hub::tests::Probe;
    use crate::realtime::hub::{FrameKind, Outbound};
    use std::sync::Mutex;

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
            text: text.into(),
            kind,
            skip: None,
        }]
        .into()
    }

    struct Setup {
        lane: LaneHandle,
        id: SocketId,
        outflow: Arc<Outflow>,
        seen: Arc<Mutex<Vec<String>>>,
        gone: Arc<Mutex<Vec<SocketId>>>,
    }

    fn setup(max_buffer_bytes: usize) -> Setup {
        let gone = Arc::new(Mutex::new(Vec::new()));
        let hub = HubStub(gone.clone()).start();
        let lane = current(hub.recipient(), Arc::new(Metrics::new()), max_buffer_bytes);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let probe = Probe(seen.clone()).start();
        let id = SocketId {
            instance: InstanceId(1),
            session: 7,
        };
        let outflow = Arc::new(Outflow::new(None, Duration::from_secs(60)));
        lane.addr.do_send(Register {
            id,
            user: UserId(1),
            addr: probe.recipient(),
            outflow: outflow.clone(),
        });
        Setup {
            lane,
            id,
            outflow,
            seen,
            gone,
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
        let s = setup(100);
        let chat = FrameKind::Chat {
            conversation: crate::db::ConversationId(1),
            seq: 1,
        };
        deliver(&s, frames("first", chat), false);
        settle().await;
        assert_eq!(*s.seen.lock().unwrap(), vec!["first".to_string()]);
        // Nothing has left: the 5 bytes are still counted, and 200 more pass the cap.
        deliver(&s, frames(&"x".repeat(200), chat), false);
        deliver(&s, frames("after", chat), false);
        settle().await;
        assert_eq!(
            *s.seen.lock().unwrap(),
            vec!["first".to_string(), "close 4029".to_string()]
        );
        assert_eq!(*s.gone.lock().unwrap(), vec![s.id]);
    }

    /// Stats over the cap are not a reason to close: the newest waits and is sent once
    /// there is room, the ones it replaced never.
    #[actix::test]
    async fn over_the_byte_cap_stats_are_coalesced_and_retried() {
        let s = setup(100);
        s.outflow.queued(90);
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
        assert!(s.seen.lock().unwrap().is_empty());
        // The socket's writer catches up.
        s.outflow.unqueued(90);
        tokio::time::sleep(STATS_RETRY_INTERVAL * 2).await;
        let seen = s.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with("stats 2"), "{seen:?}");
        assert!(s.gone.lock().unwrap().is_empty(), "not closed");
    }

    /// A close from the hub reaches the session behind the deliveries sent before it,
    /// and the session gets nothing after it.
    #[actix::test]
    async fn a_close_stays_behind_earlier_deliveries() {
        let s = setup(1 << 20);
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
        assert_eq!(
            *s.seen.lock().unwrap(),
            vec!["before".to_string(), "close 4001".to_string()]
        );
    }
}
