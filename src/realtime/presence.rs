//! The presence actor (PresenceServer): one online state per user, fed by logins, HTTP
//! heartbeats and live sockets. Heartbeats only touch memory; `last_seen` and every
//! transition reach the database in batches (write-behind), flushed on a timer, by the
//! sweeper and on shutdown. Transitions are published to the presence room in the order
//! they happen.
//!
//! A heartbeat of a user who is already online does not even message the actor: it is
//! noted on the [`SeenBoard`], which the actor takes in every second and before each
//! sweep, flush and snapshot. (A message would wake the actor's thread, a system call per
//! heartbeat.) Only a heartbeat that brings a user online goes to the actor as a `Touch`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::broker::{Broker, BrokerEvent};
use crate::db::users::PresenceWrite;
use crate::db::{Db, UserId};
use crate::domain::directory::Directory;
use crate::metrics::Metrics;
use crate::realtime::hub::{Deliver, FrameKind, SocketPresence};
use crate::realtime::presence_pending::PendingTransitions;
use crate::realtime::protocol::ServerFrame;
use crate::realtime::rooms::RoomKey;

/// Transitions waiting to be written after which a flush starts at once. While the
/// database is down they are bounded differently: one row per user
/// ([`PendingTransitions`]).
const WRITE_BEHIND_SOFT_LIMIT: usize = 50_000;
/// The presence mailbox: heartbeats wait when it is full.
const PRESENCE_MAILBOX: usize = 16_384;

/// How often the actor takes in the heartbeats noted on the board.
const BOARD_INTERVAL: Duration = Duration::from_secs(1);

/// Heartbeats of online users, noted by the HTTP workers and taken in by the actor. Both
/// maps hold at most one entry per user.
#[derive(Default)]
pub struct SeenBoard {
    /// Who is online; kept by the actor on every transition.
    online: RwLock<HashSet<UserId>>,
    /// The newest heartbeat of each user since the actor last looked.
    seen: Mutex<HashMap<UserId, DateTime<Utc>>>,
}

impl SeenBoard {
    /// Notes a heartbeat at `at`; false when the user is not online (then the caller sends
    /// a [`Touch`], which brings them online).
    pub fn note(&self, user: UserId, at: DateTime<Utc>) -> bool {
        if !self
            .online
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&user)
        {
            return false;
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let e = seen.entry(user).or_insert(at);
        *e = (*e).max(at);
        true
    }

    fn take(&self) -> HashMap<UserId, DateTime<Utc>> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Marks the user online or offline. Going offline keeps what was noted: a heartbeat
    /// that raced with a timeout brings the user back at the actor's next look.
    fn set(&self, user: UserId, online: bool) {
        let mut set = self.online.write().unwrap_or_else(|p| p.into_inner());
        if online {
            set.insert(user);
        } else {
            set.remove(&user);
        }
    }
}

/// Why a user's presence changed (PROTOCOL §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Login,
    Heartbeat,
    Socket,
    Logout,
    Timeout,
    AccountStatus,
    NodeLost,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Login => "login",
            Reason::Heartbeat => "heartbeat",
            Reason::Socket => "socket",
            Reason::Logout => "logout",
            Reason::Timeout => "timeout",
            Reason::AccountStatus => "account_status",
            Reason::NodeLost => "node_lost",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    online: bool,
    sockets: u32,
    last_seen: DateTime<Utc>,
}

/// The presence actor.
pub struct PresenceServer {
    users: HashMap<UserId, Entry>,
    /// Newest `last_seen` not yet written, per user.
    unflushed: HashMap<UserId, (bool, DateTime<Utc>)>,
    /// Transitions not yet written to `presence_log`: in order, or one per user (the
    /// latest, with a count) while the database is down.
    transitions: PendingTransitions,
    flush_lock: Arc<tokio::sync::Mutex<()>>,
    /// A timed flush is being written: the next one waits for it, so that an outage
    /// does not pile up a batch per interval.
    flushing: bool,
    /// The order of changes, for [`PresenceWrite::seq`].
    next_seq: u64,
    timeout: chrono::Duration,
    flush_interval: Duration,
    board: Arc<SeenBoard>,
    db: Db,
    broker: Arc<dyn Broker>,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
}

impl PresenceServer {
    pub fn new(
        db: Db,
        broker: Arc<dyn Broker>,
        directory: Arc<Directory>,
        metrics: Arc<Metrics>,
        timeout: Duration,
        flush_interval: Duration,
        board: Arc<SeenBoard>,
    ) -> PresenceServer {
        PresenceServer {
            users: HashMap::new(),
            unflushed: HashMap::new(),
            transitions: PendingTransitions::default(),
            flush_lock: Arc::new(tokio::sync::Mutex::new(())),
            flushing: false,
            next_seq: 0,
            timeout: chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::seconds(120)),
            flush_interval,
            board,
            db,
            broker,
            directory,
            metrics,
        }
    }

    /// Restores presence after a restart from what was stored: users seen within the
    /// timeout stay online (and time out normally), the others that were marked online
    /// were lost with the previous process.
    pub fn restore(
        &mut self,
        stored: &[(UserId, bool, Option<DateTime<Utc>>)],
        ctx: &mut Context<Self>,
    ) {
        let now = crate::time::now();
        for (user, online, last_seen) in stored {
            let Some(seen) = last_seen else { continue };
            let active = self
                .directory
                .get(*user)
                .is_some_and(|e| e.status.is_active());
            if *online && active && now - *seen < self.timeout {
                self.board.set(*user, true);
                self.users.insert(
                    *user,
                    Entry {
                        online: true,
                        sockets: 0,
                        last_seen: *seen,
                    },
                );
            } else if *online {
                self.users.insert(
                    *user,
                    Entry {
                        online: true,
                        sockets: 0,
                        last_seen: *seen,
                    },
                );
                self.transition(*user, false, Reason::NodeLost, now, ctx);
            }
        }
        self.update_gauge();
    }

    fn update_gauge(&self) {
        self.metrics
            .presence_online
            .set(self.users.values().filter(|e| e.online).count() as i64);
    }

    fn transition(
        &mut self,
        user: UserId,
        online: bool,
        reason: Reason,
        at: DateTime<Utc>,
        ctx: &mut Context<Self>,
    ) {
        let entry = self.users.entry(user).or_insert(Entry {
            online: !online,
            sockets: 0,
            last_seen: at,
        });
        entry.online = online;
        entry.last_seen = at;
        self.board.set(user, online);
        self.unflushed.insert(user, (online, at));
        self.transitions.push(PresenceWrite {
            user_id: user,
            is_online: online,
            last_seen: crate::time::to_db(at),
            reason: Some(reason.as_str()),
            coalesced: 1,
            seq: self.next_seq,
        });
        self.next_seq += 1;
        self.metrics
            .presence_transitions
            .with_label_values(&[if online { "true" } else { "false" }, reason.as_str()])
            .inc();
        self.update_gauge();
        log::info!(
            "presence: user {user} {} ({})",
            if online { "online" } else { "offline" },
            reason.as_str()
        );
        let frame = ServerFrame::PresenceUpdate {
            user_id: user,
            is_online: online,
            last_seen: Some(at),
            reason: reason.as_str(),
        };
        let event = BrokerEvent::Deliver(Deliver::to_room(
            RoomKey::Presence,
            &frame,
            FrameKind::Event,
        ));
        // `wait`, not `spawn`: updates reach the hub in the order they happen. The broker
        // queues at once, so this only holds the actor while the hub's mailbox is full.
        ctx.wait(self.broker.publish(event).into_actor(self));
        if self.transitions.len() > WRITE_BEHIND_SOFT_LIMIT {
            self.flush(ctx);
        }
    }

    /// Marks a user seen at `at` (never moving `last_seen` back); brings them online with
    /// `reason` if they were offline.
    fn touch(&mut self, user: UserId, reason: Reason, at: DateTime<Utc>, ctx: &mut Context<Self>) {
        match self.users.get_mut(&user) {
            Some(e) if e.online => {
                e.last_seen = e.last_seen.max(at);
                let seen = e.last_seen;
                self.unflushed.insert(user, (true, seen));
            }
            _ => self.transition(user, true, reason, at, ctx),
        }
    }

    /// Takes in the heartbeats noted on the board.
    fn absorb(&mut self, ctx: &mut Context<Self>) {
        for (user, at) in self.board.take() {
            self.touch(user, Reason::Heartbeat, at, ctx);
        }
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) -> usize {
        self.absorb(ctx);
        let now = crate::time::now();
        let stale: Vec<UserId> = self
            .users
            .iter()
            .filter(|(_, e)| e.online && e.sockets == 0 && now - e.last_seen >= self.timeout)
            .map(|(id, _)| *id)
            .collect();
        for user in &stale {
            // A heartbeat noted after `absorb` above stays on the board and brings the
            // user back at the next look, as a `heartbeat` after this `timeout`.
            self.transition(*user, false, Reason::Timeout, now, ctx);
        }
        // Forget offline users with no sockets: they come back through `touch`.
        self.users.retain(|_, e| e.online || e.sockets > 0);
        stale.len()
    }

    /// Takes everything not yet written: transitions in order, then the newest `last_seen`
    /// of each user.
    fn take_batch(&mut self) -> Vec<PresenceWrite> {
        let mut batch = self.transitions.take();
        for (user, (online, at)) in self.unflushed.drain() {
            batch.push(PresenceWrite {
                user_id: user,
                is_online: online,
                last_seen: crate::time::to_db(at),
                reason: None,
                coalesced: 1,
                seq: 0,
            });
        }
        batch
    }

    /// A future that writes `batch`; batches are written one at a time, in the order they
    /// were taken (the lock is fair), so a newer `last_seen` is never overwritten by an older.
    fn write_batch(
        &self,
        batch: Vec<PresenceWrite>,
    ) -> impl std::future::Future<Output = Result<(), (Vec<PresenceWrite>, crate::error::AppError)>>
    {
        let db = self.db.clone();
        let lock = self.flush_lock.clone();
        async move {
            let _turn = lock.lock().await;
            let keep = batch.clone();
            db.write(move |conn| crate::db::users::write_presence(conn, &batch))
                .await
                .map_err(|e| (keep, e))
        }
    }

    /// Puts a failed batch's transitions back in front of what came since: nothing is lost,
    /// and until a write succeeds each user keeps only their latest transition (with the
    /// count of those it stands for), so an outage cannot grow the buffer without bound.
    fn requeue(&mut self, failed: Vec<PresenceWrite>, e: crate::error::AppError) {
        log::warn!(
            "presence flush of {} changes failed, will retry: {e}",
            failed.len()
        );
        self.metrics.presence_flush_failures.inc();
        let mut transitions = Vec::with_capacity(failed.len());
        for w in failed {
            if w.reason.is_some() {
                transitions.push(w);
            } else {
                self.unflushed
                    .entry(w.user_id)
                    .or_insert((w.is_online, crate::time::from_db(w.last_seen)));
            }
        }
        self.transitions.requeue(transitions);
    }

    /// A batch was stored: the database is back.
    fn stored(&mut self) {
        if self.transitions.coalescing() {
            log::info!("presence: the database is back, writing transitions one by one again");
        }
        self.transitions.write_succeeded();
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.absorb(ctx);
        if self.flushing || (self.unflushed.is_empty() && self.transitions.is_empty()) {
            return;
        }
        self.flushing = true;
        let batch = self.take_batch();
        let fut = self.write_batch(batch);
        ctx.spawn(fut.into_actor(self).map(|res, act, _| {
            act.flushing = false;
            match res {
                Ok(()) => act.stored(),
                Err((failed, e)) => act.requeue(failed, e),
            }
        }));
    }
}

impl Actor for PresenceServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(PRESENCE_MAILBOX);
        ctx.run_interval(self.flush_interval, |act, ctx| act.flush(ctx));
        ctx.run_interval(BOARD_INTERVAL, |act, ctx| act.absorb(ctx));
    }
}

/// A login, heartbeat or socket ping: the user was seen at `at`. Callers need not wait for
/// it: a heartbeat answers with its own `at` while the touch waits in the mailbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Touch {
    pub user: UserId,
    pub reason: Reason,
    pub at: DateTime<Utc>,
}

impl Touch {
    /// `user` seen now.
    pub fn now(user: UserId, reason: Reason) -> Touch {
        Touch {
            user,
            reason,
            at: crate::time::now(),
        }
    }
}

impl Handler<Touch> for PresenceServer {
    type Result = ();

    fn handle(&mut self, msg: Touch, ctx: &mut Context<Self>) {
        self.touch(msg.user, msg.reason, msg.at, ctx);
    }
}

/// A user's first socket on this instance opened.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SocketUp(pub UserId);

impl Handler<SocketUp> for PresenceServer {
    type Result = ();

    fn handle(&mut self, msg: SocketUp, ctx: &mut Context<Self>) {
        self.touch(msg.0, Reason::Socket, crate::time::now(), ctx);
        if let Some(e) = self.users.get_mut(&msg.0) {
            e.sockets += 1;
        }
    }
}

/// A user's last socket on this instance closed: silence starts now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SocketDown(pub UserId);

impl Handler<SocketDown> for PresenceServer {
    type Result = ();

    fn handle(&mut self, msg: SocketDown, _: &mut Context<Self>) {
        if let Some(e) = self.users.get_mut(&msg.0) {
            e.sockets = e.sockets.saturating_sub(1);
            if e.online {
                e.last_seen = crate::time::now();
                self.unflushed.insert(msg.0, (true, e.last_seen));
            }
        }
    }
}

/// The user logged out, or their account was made non-active: offline now (unless
/// `keep_online`, when another session of theirs is live).
#[derive(Message)]
#[rtype(result = "()")]
pub struct GoOffline {
    pub user: UserId,
    pub reason: Reason,
    pub keep_online: bool,
}

impl Handler<GoOffline> for PresenceServer {
    type Result = ();

    fn handle(&mut self, msg: GoOffline, ctx: &mut Context<Self>) {
        if msg.keep_online {
            return;
        }
        // Heartbeats noted before the logout count before it, not after.
        self.absorb(ctx);
        if self.users.get(&msg.user).is_some_and(|e| e.online) {
            self.transition(msg.user, false, msg.reason, crate::time::now(), ctx);
        }
    }
}

/// Marks silent users offline (the sweeper's job). Answers how many went offline.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Sweep;

impl Handler<Sweep> for PresenceServer {
    type Result = usize;

    fn handle(&mut self, _: Sweep, ctx: &mut Context<Self>) -> usize {
        let n = self.sweep(ctx);
        self.flush(ctx);
        n
    }
}

/// Starts a write-behind flush now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for PresenceServer {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }
}

/// Writes everything pending now and answers when it is stored (shutdown, presence log).
#[derive(Message)]
#[rtype(result = "Result<(), crate::error::AppError>")]
pub struct FlushNow;

impl Handler<FlushNow> for PresenceServer {
    type Result = ResponseActFuture<Self, Result<(), crate::error::AppError>>;

    fn handle(&mut self, _: FlushNow, ctx: &mut Context<Self>) -> Self::Result {
        self.absorb(ctx);
        let batch = self.take_batch();
        let fut = self.write_batch(batch);
        Box::pin(fut.into_actor(self).map(|res, act, _| match res {
            Ok(()) => {
                act.stored();
                Ok(())
            }
            Err((failed, e)) => {
                let msg = e.to_string();
                act.requeue(failed, e);
                Err(crate::error::AppError::Unavailable(msg))
            }
        }))
    }
}

/// Every known user's live state: `(is_online, last_seen)`.
#[derive(Message)]
#[rtype(result = "HashMap<UserId, (bool, Option<DateTime<Utc>>)>")]
pub struct Snapshot;

impl Handler<Snapshot> for PresenceServer {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, ctx: &mut Context<Self>) -> Self::Result {
        self.absorb(ctx);
        MessageResult(
            self.users
                .iter()
                .map(|(id, e)| (*id, (e.online, Some(e.last_seen))))
                .collect(),
        )
    }
}

/// Restores stored presence at start-up.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore(pub Vec<(UserId, bool, Option<DateTime<Utc>>)>);

impl Handler<Restore> for PresenceServer {
    type Result = ();

    fn handle(&mut self, msg: Restore, ctx: &mut Context<Self>) {
        self.restore(&msg.0, ctx);
    }
}

/// The hub's view of presence: socket transitions become presence messages.
pub struct HubPresence(pub Addr<PresenceServer>);

impl SocketPresence for HubPresence {
    fn first_socket(&self, user: UserId) {
        // One message per socket transition, bounded by the number of sockets: `do_send`
        // so that the hub never waits on presence.
        self.0.do_send(SocketUp(user));
    }

    fn last_socket_closed(&self, user: UserId) {
        self.0.do_send(SocketDown(user));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_takes_heartbeats_of_online_users_only() {
        let board = SeenBoard::default();
        let (u, v) = (UserId(1), UserId(2));
        let t0 = crate::time::now();
        let t1 = t0 + chrono::Duration::seconds(30);
        // Offline: the caller must bring the user online through the actor.
        assert!(!board.note(u, t0));
        board.set(u, true);
        assert!(board.note(u, t1));
        assert!(board.note(u, t0), "an older heartbeat is noted too");
        assert!(!board.note(v, t1));
        // The newest time is kept, once.
        assert_eq!(board.take(), HashMap::from([(u, t1)]));
        assert!(board.take().is_empty());
        // Going offline stops noting but keeps what was noted (a heartbeat that raced
        // with the timeout brings the user back).
        assert!(board.note(u, t1));
        board.set(u, false);
        assert!(!board.note(u, t0));
        assert_eq!(board.take(), HashMap::from([(u, t1)]));
    }
}
