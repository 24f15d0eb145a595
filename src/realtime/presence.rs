//! The presence actor (PresenceServer): one online state per user, fed by logins, HTTP
//! heartbeats and live sockets. Heartbeats only touch memory; `last_seen` and every
//! transition reach the database in batches (write-behind), flushed on a timer, by the
//! sweeper and on shutdown. Transitions are published to the presence room in the order
//! they happen.
//!
//! Several instances: each instance's actor is a replica of the cluster's presence. Its
//! own inputs (logins, heartbeats, sockets) it applies and publishes as facts
//! ([`PresenceFact`]); the other instances' facts it applies silently. A user is online
//! while any instance holds a socket of theirs or a heartbeat is fresh. The instance that
//! decides a transition announces it (the `presence_update` frame and the presence log):
//! the one that saw the login, heartbeat or logout; timeouts and lost instances are decided
//! by the sweeper duty's holder only (`crate::cluster`). Replicas converge through a
//! periodic table of each instance's sockets.
//!
//! Not exactly once across instances: when two instances bring the same user online
//! within one Redis round trip (a login on one, a socket on the other), each decides the
//! transition before it hears of the other's, and both announce `is_online: true`. The
//! state converges; the duplicate announcement is what a client sees.
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

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use crate::broker::{Broker, Incoming};
use crate::db::users::PresenceWrite;
use crate::db::{Db, UserId};
use crate::domain::directory::Directory;
pub use crate::domain::events::Reason;
use crate::domain::events::{Event, InstanceId, Notice, PresenceFact, RoomEvent};
use crate::domain::presence::{Live, Presence};
use crate::domain::rooms::RoomKey;
use crate::error::{AppError, AppResult};
use crate::metrics::Metrics;
use crate::realtime::hub::SocketPresence;
use crate::realtime::presence_pending::PendingTransitions;

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

/// How often each instance publishes its whole socket table.
const SOCKET_TABLE_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Entry {
    online: bool,
    /// Live sockets per instance (this one included).
    sockets: Vec<(InstanceId, u32)>,
    last_seen: DateTime<Utc>,
}

impl Entry {
    fn new(online: bool, at: DateTime<Utc>) -> Entry {
        Entry {
            online,
            sockets: Vec::new(),
            last_seen: at,
        }
    }

    fn has_sockets(&self) -> bool {
        self.sockets.iter().any(|(_, n)| *n > 0)
    }

    fn sockets_on(&self, instance: InstanceId) -> u32 {
        self.sockets
            .iter()
            .find(|(i, _)| *i == instance)
            .map_or(0, |(_, n)| *n)
    }

    fn set_sockets(&mut self, instance: InstanceId, n: u32) {
        self.sockets.retain(|(i, _)| *i != instance);
        if n > 0 {
            self.sockets.push((instance, n));
        }
    }
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
    /// This instance.
    me: InstanceId,
    /// When this instance last saw each user (login, heartbeat): told again to the other
    /// replicas after Redis was away, so that none times out a user it did not hear of.
    local_seen: HashMap<UserId, DateTime<Utc>>,
    /// Several instances share presence (facts are published).
    clustered: bool,
    timeout: chrono::Duration,
    flush_interval: Duration,
    board: Arc<SeenBoard>,
    db: Db,
    broker: Arc<dyn Broker>,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
}

impl PresenceServer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        clustered: bool,
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
            me: broker.instance(),
            local_seen: HashMap::new(),
            clustered,
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
            if *online && active && (now - *seen < self.timeout || self.clustered) {
                // With several instances, a stale one may still have a socket elsewhere:
                // the duty holder times it out once the socket tables are known (it sweeps
                // only after holding the duty for a while, `crate::cluster`).
                self.board.set(*user, true);
                self.users.insert(*user, Entry::new(true, *seen));
            } else if *online {
                self.users.insert(*user, Entry::new(true, *seen));
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
        let entry = self.users.entry(user).or_insert(Entry::new(!online, at));
        entry.online = online;
        entry.last_seen = at;
        self.board.set(user, online);
        self.publish_fact(
            PresenceFact::Changed {
                user,
                online,
                reason,
                at,
            },
            ctx,
        );
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
        let notice = Notice::PresenceUpdate {
            user_id: user,
            is_online: online,
            last_seen: Some(at),
            reason,
        };
        let event = Event::Room(RoomEvent::one(RoomKey::Presence, notice));
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
        if self.clustered {
            let seen = self.local_seen.entry(user).or_insert(at);
            *seen = (*seen).max(at);
        }
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
        let seen = self.board.take();
        if seen.is_empty() {
            return;
        }
        let mut users = Vec::with_capacity(seen.len());
        for (user, at) in seen {
            self.touch(user, Reason::Heartbeat, at, ctx);
            users.push((user, at.timestamp_micros()));
        }
        self.publish_fact(PresenceFact::Seen { users }, ctx);
    }

    /// Tells the other instances' replicas (nothing to do with one instance).
    fn publish_fact(&self, fact: PresenceFact, ctx: &mut Context<Self>) {
        if self.clustered {
            ctx.wait(self.broker.publish(Event::Presence(fact)).into_actor(self));
        }
    }

    /// A change of this instance's sockets of `user`.
    fn local_sockets(&mut self, user: UserId, n: u32, ctx: &mut Context<Self>) {
        let me = self.me;
        if let Some(e) = self.users.get_mut(&user) {
            e.set_sockets(me, n);
        }
        self.publish_fact(PresenceFact::Sockets { user, count: n }, ctx);
    }

    /// This instance's sockets, for the other replicas.
    fn socket_table(&self) -> Vec<(UserId, u32)> {
        self.users
            .iter()
            .filter_map(|(id, e)| {
                let n = e.sockets_on(self.me);
                (n > 0).then_some((*id, n))
            })
            .collect()
    }

    /// Another instance's fact, applied silently (that instance announced what it decided).
    fn apply_fact(&mut self, origin: InstanceId, fact: PresenceFact, ctx: &mut Context<Self>) {
        match fact {
            PresenceFact::Changed {
                user, online, at, ..
            } => {
                let e = self.users.entry(user).or_insert(Entry::new(online, at));
                e.online = online;
                e.last_seen = e.last_seen.max(at);
                self.board.set(user, online);
                // Taken offline (a lost instance, a timeout decided elsewhere) while this
                // instance holds a live socket of theirs: they are online, say so.
                if !online && e.sockets_on(self.me) > 0 {
                    self.transition(user, true, Reason::Socket, crate::time::now(), ctx);
                }
            }
            PresenceFact::Seen { users } => {
                for (user, micros) in users {
                    let Some(at) = DateTime::from_timestamp_micros(micros) else {
                        continue;
                    };
                    let e = self.users.entry(user).or_insert(Entry::new(false, at));
                    if !e.online && at > e.last_seen {
                        // Online through that instance (which announced it).
                        e.online = true;
                        self.board.set(user, true);
                    }
                    e.last_seen = e.last_seen.max(at);
                }
            }
            PresenceFact::Sockets { user, count } => {
                let now = crate::time::now();
                let e = self.users.entry(user).or_insert(Entry::new(false, now));
                e.set_sockets(origin, count);
                if count > 0 && !e.online {
                    e.online = true;
                    e.last_seen = now;
                    self.board.set(user, true);
                } else if count == 0 {
                    // Silence starts now, as for a local socket.
                    e.last_seen = e.last_seen.max(now);
                }
            }
            PresenceFact::SocketTable { users } => {
                let table: HashMap<UserId, u32> = users.into_iter().collect();
                for (user, e) in self.users.iter_mut() {
                    if !table.contains_key(user) && e.sockets_on(origin) > 0 {
                        e.set_sockets(origin, 0);
                        e.last_seen = e.last_seen.max(crate::time::now());
                    }
                }
                let now = crate::time::now();
                for (user, n) in table {
                    let e = self.users.entry(user).or_insert(Entry::new(true, now));
                    e.set_sockets(origin, n);
                    if !e.online {
                        e.online = true;
                        e.last_seen = now;
                        self.board.set(user, true);
                    }
                }
            }
            PresenceFact::NodeLost { instance } => {
                for e in self.users.values_mut() {
                    e.set_sockets(instance, 0);
                }
            }
        }
        self.update_gauge();
    }

    /// The duty holder found `instance` dead: its sockets are gone, and each user who
    /// has no socket left anywhere goes offline with `node_lost`, announced once, here.
    fn node_lost(&mut self, instance: InstanceId, ctx: &mut Context<Self>) -> usize {
        self.publish_fact(PresenceFact::NodeLost { instance }, ctx);
        let now = crate::time::now();
        let mut lost = Vec::new();
        for (user, e) in self.users.iter_mut() {
            if e.sockets_on(instance) > 0 {
                e.set_sockets(instance, 0);
                if e.online && !e.has_sockets() {
                    lost.push(*user);
                }
            }
        }
        for user in &lost {
            self.transition(*user, false, Reason::NodeLost, now, ctx);
        }
        lost.len()
    }

    fn sweep(&mut self, ctx: &mut Context<Self>) -> usize {
        self.absorb(ctx);
        let now = crate::time::now();
        let stale: Vec<UserId> = self
            .users
            .iter()
            .filter(|(_, e)| e.online && !e.has_sockets() && now - e.last_seen >= self.timeout)
            .map(|(id, _)| *id)
            .collect();
        for user in &stale {
            // A heartbeat noted after `absorb` above stays on the board and brings the
            // user back at the next look, as a `heartbeat` after this `timeout`.
            self.transition(*user, false, Reason::Timeout, now, ctx);
        }
        // Forget offline users with no sockets: they come back through `touch`.
        self.users.retain(|_, e| e.online || e.has_sockets());
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
        if self.clustered {
            ctx.run_interval(SOCKET_TABLE_INTERVAL, |act, ctx| {
                let users = act.socket_table();
                act.publish_fact(PresenceFact::SocketTable { users }, ctx);
                let cutoff = crate::time::now() - act.timeout;
                act.local_seen.retain(|_, at| *at > cutoff);
            });
        }
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
        self.local_sockets(msg.0, 1, ctx);
    }
}

/// A user's last socket on this instance closed: silence starts now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SocketDown(pub UserId);

impl Handler<SocketDown> for PresenceServer {
    type Result = ();

    fn handle(&mut self, msg: SocketDown, ctx: &mut Context<Self>) {
        if let Some(e) = self.users.get_mut(&msg.0) {
            if e.online {
                e.last_seen = crate::time::now();
                self.unflushed.insert(msg.0, (true, e.last_seen));
            }
        }
        self.local_sockets(msg.0, 0, ctx);
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
        // Online as long as a socket of theirs is live on any instance.
        if self
            .users
            .get(&msg.user)
            .is_some_and(|e| e.online && !e.has_sockets())
        {
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

/// Another instance's event: presence facts are applied here.
impl Handler<Incoming> for PresenceServer {
    type Result = ();

    fn handle(&mut self, msg: Incoming, ctx: &mut Context<Self>) {
        if msg.0.origin == self.me {
            return;
        }
        if let Event::Presence(fact) = &msg.0.event {
            self.apply_fact(msg.0.origin, fact.clone(), ctx);
        }
    }
}

/// Redis is back after an outage: tell the other replicas again what they may have missed
/// of this instance (its sockets, and whom it saw within the timeout).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Republish;

impl Handler<Republish> for PresenceServer {
    type Result = ();

    fn handle(&mut self, _: Republish, ctx: &mut Context<Self>) {
        let cutoff = crate::time::now() - self.timeout;
        self.local_seen.retain(|_, at| *at > cutoff);
        let users = self
            .local_seen
            .iter()
            .map(|(u, at)| (*u, at.timestamp_micros()))
            .collect();
        self.publish_fact(PresenceFact::Seen { users }, ctx);
        let users = self.socket_table();
        self.publish_fact(PresenceFact::SocketTable { users }, ctx);
    }
}

/// The duty holder found an instance dead. Answers how many users went offline.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct NodeGone(pub InstanceId);

impl Handler<NodeGone> for PresenceServer {
    type Result = usize;

    fn handle(&mut self, msg: NodeGone, ctx: &mut Context<Self>) -> usize {
        self.node_lost(msg.0, ctx)
    }
}

/// The other instances that hold sockets, as this replica knows them.
#[derive(Message)]
#[rtype(result = "Vec<InstanceId>")]
pub struct SocketHolders;

impl Handler<SocketHolders> for PresenceServer {
    type Result = MessageResult<SocketHolders>;

    fn handle(&mut self, _: SocketHolders, _: &mut Context<Self>) -> Self::Result {
        let mut all: Vec<InstanceId> = self
            .users
            .values()
            .flat_map(|e| e.sockets.iter().map(|(i, _)| *i))
            .filter(|i| *i != self.me)
            .collect();
        all.sort_unstable();
        all.dedup();
        MessageResult(all)
    }
}

/// Presence as the domain sees it: the actor's address and the heartbeat board.
pub struct PresenceHandle {
    pub addr: Addr<PresenceServer>,
    board: Arc<SeenBoard>,
    hub: Addr<crate::realtime::hub::Hub>,
}

impl PresenceHandle {
    pub fn new(
        addr: Addr<PresenceServer>,
        board: Arc<SeenBoard>,
        hub: Addr<crate::realtime::hub::Hub>,
    ) -> PresenceHandle {
        PresenceHandle { addr, board, hub }
    }
}

impl Presence for PresenceHandle {
    fn login(&self, user: UserId) -> BoxFuture<'static, ()> {
        let request = self.addr.send(Touch::now(user, Reason::Login));
        async move {
            let _ = request.await;
        }
        .boxed()
    }

    fn heartbeat(&self, user: UserId, at: DateTime<Utc>) -> BoxFuture<'static, AppResult<()>> {
        // Memory only, and no round trip: an online user's heartbeat is noted on the
        // board; one that brings the user online is queued to the actor (waiting only
        // while its mailbox is full).
        if self.board.note(user, at) {
            return futures_util::future::ready(Ok(())).boxed();
        }
        let touch = Touch {
            user,
            reason: Reason::Heartbeat,
            at,
        };
        match self.addr.try_send(touch) {
            Ok(()) => futures_util::future::ready(Ok(())).boxed(),
            Err(SendError::Full(touch)) => {
                let request = self.addr.send(touch);
                async move {
                    request
                        .await
                        .map_err(|e| AppError::internal(format!("presence: {e}")))
                }
                .boxed()
            }
            Err(SendError::Closed(_)) => {
                futures_util::future::ready(Err(AppError::internal("presence actor stopped")))
                    .boxed()
            }
        }
    }

    fn go_offline(&self, user: UserId, reason: Reason, keep_online: bool) {
        self.addr.do_send(GoOffline {
            user,
            reason,
            keep_online,
        });
    }

    fn other_live_socket(&self, user: UserId, except_jti: String) -> BoxFuture<'static, bool> {
        let request = self.hub.send(crate::realtime::hub::HasLiveSocket {
            user,
            except_jti: Some(except_jti),
        });
        async move { request.await.unwrap_or(false) }.boxed()
    }

    fn snapshot(&self) -> BoxFuture<'static, Live> {
        let request = self.addr.send(Snapshot);
        async move {
            match request.await {
                Ok(live) => live,
                Err(e) => {
                    log::warn!("presence did not answer, showing stored presence: {e}");
                    Live::new()
                }
            }
        }
        .boxed()
    }

    fn sweep(&self) -> BoxFuture<'static, AppResult<usize>> {
        let request = self.addr.send(Sweep);
        async move {
            request
                .await
                .map_err(|e| AppError::internal(format!("presence: {e}")))
        }
        .boxed()
    }

    fn flush_now(&self) -> BoxFuture<'static, AppResult<()>> {
        let request = self.addr.send(FlushNow);
        async move {
            request
                .await
                .map_err(|e| AppError::internal(format!("presence: {e}")))?
        }
        .boxed()
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
