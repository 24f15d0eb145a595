//! What is shared between instances, in one place.
//!
//! | state | per instance | shared |
//! |---|---|---|
//! | sockets, rooms, the hub | yes | – |
//! | messages, check-ins, users, tokens, revocations, presence log | – | the database |
//! | the user directory (role, status, token generation) | a cache | the database; `UserChanged` events, a miss loads the row |
//! | revoked tokens | a cache | the database; `TokensRevoked` events |
//! | presence | a replica | facts through the broker (`realtime::presence`) |
//! | check-in stats | the last seen | computed from the database, one version sequence there |
//! | uploads | – | the shared data directory |
//! | liveness, the sweeper duty | – | Redis keys `<prefix>node:<id>`, `<prefix>duty` |
//!
//! One instance at a time holds the duty (a Redis lock with expiry and a fencing token):
//! it runs the sweeper (timeouts, stats recomputation, stale check-ins, orphan uploads,
//! token pruning) and watches the other instances' liveness keys; an instance whose key
//! is gone has its users taken offline with `node_lost`. With one instance (no Redis) it
//! always holds the duty.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use tokio::sync::mpsc;

use crate::broker::redis::RedisConn;
use crate::broker::{Incoming, Remote};
use crate::domain::events::{Envelope, Event, InstanceId, Notice};
use crate::realtime::hub::{Hub, RecheckAll};
use crate::realtime::presence::{NodeGone, PresenceServer, Republish, SocketHolders};
use crate::state::AppState;

/// An instance's liveness key lives this long unless renewed.
const LIVENESS_TTL: Duration = Duration::from_millis(1500);
/// The duty lock lives this long unless renewed.
const DUTY_TTL: Duration = Duration::from_millis(2000);
/// How often keys are renewed and the duty and the other instances are checked.
const TICK: Duration = Duration::from_millis(250);
/// A liveness key must be missing this long before its instance counts as lost.
const LOST_AFTER: Duration = Duration::from_millis(500);
/// A new duty holder (also after Redis came back empty) declares no instance lost
/// before every live instance has had the time to set its key again.
const GRACE: Duration = LIVENESS_TTL;
/// Nor does it sweep before the others' socket tables (every 2 s) and heartbeats (every
/// second, and all of them again after Redis was away) have reached it.
const SWEEP_GRACE: Duration = Duration::from_millis(3000);
// Worst case from a SIGKILL to `node_lost`: the duty holder itself died, its lock
// expires (DUTY_TTL), another takes it within a TICK, waits GRACE (by then the dead
// key has been missing long enough): 2.0 + 0.25 + 1.5 = 3.75 s, plus a TICK.

/// Renews the duty only for its holder (the value names the holder and its fence).
const RENEW: &str = r#"
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"#;

/// This instance's place in the deployment.
pub struct Cluster {
    instance: InstanceId,
    redis: Option<(RedisConn, String)>,
    duty: AtomicBool,
}

impl Cluster {
    /// One instance: it holds every duty.
    pub fn single(instance: InstanceId) -> Cluster {
        Cluster {
            instance,
            redis: None,
            duty: AtomicBool::new(true),
        }
    }

    /// One of several instances sharing Redis.
    pub fn redis(instance: InstanceId, conn: RedisConn, prefix: &str) -> Cluster {
        Cluster {
            instance,
            redis: Some((conn, prefix.to_string())),
            duty: AtomicBool::new(false),
        }
    }

    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    pub fn clustered(&self) -> bool {
        self.redis.is_some()
    }

    /// Whether this instance holds the sweeper duty now (and has held it long enough to
    /// know every instance's sockets and heartbeats).
    pub fn holds_duty(&self) -> bool {
        self.duty.load(Ordering::Acquire)
    }
}

/// Starts what several instances need: the consumer of other instances' events, the
/// liveness key, the duty lock and the watch of the other instances.
pub fn start(state: &AppState, hub: Addr<Hub>, presence: Addr<PresenceServer>) {
    if let Some(remote) = state.broker.subscribe() {
        actix_web::rt::spawn(consume(state.clone(), hub, presence.clone(), remote));
    }
    if state.cluster.redis.is_some() {
        actix_web::rt::spawn(keep_alive(state.cluster.clone()));
        actix_web::rt::spawn(hold_duty(state.cluster.clone(), presence));
    }
}

/// Other instances' events, in the order they were received: what must be known before
/// the hub acts (a user's new role, a revoked token, the newest stats) is taken in first.
async fn consume(
    state: AppState,
    hub: Addr<Hub>,
    presence: Addr<PresenceServer>,
    mut remote: mpsc::Receiver<Remote>,
) {
    let (to_hub, to_presence) = (hub.clone().recipient(), presence.clone().recipient());
    while let Some(item) = remote.recv().await {
        let envelope = match item {
            Remote::Event(e) => e,
            Remote::Reconnected => {
                presence.do_send(Republish);
                resync(&state, &hub).await;
                continue;
            }
        };
        match &envelope.event {
            Event::UserChanged { user } => {
                crate::domain::directory::reload(&state, *user).await;
            }
            Event::TokensRevoked { jtis } => {
                state.revoked.revoke(jtis.iter().cloned());
            }
            Event::Room(room) => {
                for item in &room.items {
                    if let Notice::StatsUpdate { stats } = &item.notice {
                        state.stats.adopt(stats);
                    }
                }
            }
            Event::Presence(_) => {
                forward(&to_presence, envelope).await;
                continue;
            }
        }
        forward(&to_hub, envelope).await;
    }
}

/// Queues the event in the actor's mailbox at once, in order; waits only while the
/// mailbox is full (no round trip per event).
async fn forward(to: &actix::Recipient<Incoming>, envelope: Arc<Envelope>) {
    crate::broker::deliver_local(to, envelope).await;
}

/// After Redis was away: changes made elsewhere meanwhile were not heard of. Reload the
/// directory and the revocations, and check every socket again.
async fn resync(state: &AppState, hub: &Addr<Hub>) {
    let now = crate::time::to_db(crate::time::now());
    let loaded = state
        .db
        .read(move |c| {
            let rows = crate::db::users::list(c)?;
            let revoked = crate::db::users::load_revoked(c, now)?;
            Ok((rows, revoked))
        })
        .await;
    match loaded {
        Ok((rows, revoked)) => {
            for row in &rows {
                state.directory.upsert(row);
            }
            state.revoked.revoke(
                revoked
                    .into_iter()
                    .map(|(jti, exp)| (jti, exp.and_utc().timestamp())),
            );
            log::info!(
                "redis is back: reloaded {} users and the revocations",
                rows.len()
            );
        }
        Err(e) => log::error!("redis is back, but reloading users failed: {e}"),
    }
    let _ = hub.send(RecheckAll).await;
}

/// Renews this instance's liveness key for the life of the process.
async fn keep_alive(cluster: Arc<Cluster>) {
    let Some((conn, prefix)) = &cluster.redis else {
        return;
    };
    let key = format!("{prefix}node:{}", cluster.instance);
    let mut failing = false;
    loop {
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key)
            .arg(1)
            .arg("PX")
            .arg(LIVENESS_TTL.as_millis() as u64);
        match conn.query::<()>(&cmd).await {
            Ok(()) if failing => {
                failing = false;
                log::info!("liveness key renewed again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                log::error!("cannot renew this instance's liveness key: {e}");
            }
            Err(_) => {}
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Takes the duty when it is free, renews it while held, and while held watches the
/// other instances. Every change of hands is logged once.
async fn hold_duty(cluster: Arc<Cluster>, presence: Addr<PresenceServer>) {
    let Some((conn, prefix)) = &cluster.redis else {
        return;
    };
    let key = format!("{prefix}duty");
    let fence_key = format!("{prefix}duty:fence");
    let renew = redis::Script::new(RENEW);
    let mut token: Option<String> = None;
    let mut held_since = Instant::now();
    let mut missing: HashMap<InstanceId, Instant> = HashMap::new();
    loop {
        let held = match &token {
            Some(t) => conn
                .script::<i64>(
                    &renew,
                    &[&key],
                    &[t.clone(), DUTY_TTL.as_millis().to_string()],
                )
                .await
                .map(|n| n == 1),
            None => try_take(conn, &key, &fence_key, cluster.instance)
                .await
                .map(|t| {
                    if let Some((t, fence)) = t {
                        token = Some(t);
                        held_since = Instant::now();
                        missing.clear();
                        log::info!(
                            "took the sweeper duty (fence {fence}): this instance runs the sweeps \
                         and watches the others"
                        );
                        true
                    } else {
                        false
                    }
                }),
        };
        let held = match held {
            Ok(h) => h,
            Err(e) => {
                if token.is_some() {
                    log::error!("cannot renew the sweeper duty ({e}): giving it up");
                }
                false
            }
        };
        if !held && token.take().is_some() {
            cluster.duty.store(false, Ordering::Release);
            log::warn!("lost the sweeper duty; another instance takes it over");
        }
        if held {
            let sweeps = held_since.elapsed() >= SWEEP_GRACE;
            cluster.duty.store(sweeps, Ordering::Release);
            let may_declare = held_since.elapsed() >= GRACE;
            watch(conn, prefix, &presence, &mut missing, may_declare).await;
        }
        tokio::time::sleep(TICK).await;
    }
}

/// `SET NX` with a new fencing token; `Some((value, fence))` when taken.
async fn try_take(
    conn: &RedisConn,
    key: &str,
    fence_key: &str,
    me: InstanceId,
) -> Result<Option<(String, u64)>, String> {
    let holder: Option<String> = conn.query(redis::cmd("GET").arg(key)).await?;
    if holder.is_some() {
        return Ok(None);
    }
    let fence: u64 = conn.query(redis::cmd("INCR").arg(fence_key)).await?;
    let value = format!("{me}:{fence}");
    let mut cmd = redis::cmd("SET");
    cmd.arg(key)
        .arg(&value)
        .arg("NX")
        .arg("PX")
        .arg(DUTY_TTL.as_millis() as u64);
    let set: Option<String> = conn.query(&cmd).await?;
    Ok(set.map(|_| (value, fence)))
}

/// Checks the liveness keys of the instances that hold sockets; one missing for
/// [`LOST_AFTER`] is lost: its users go offline with `node_lost`, once.
async fn watch(
    conn: &RedisConn,
    prefix: &str,
    presence: &Addr<PresenceServer>,
    missing: &mut HashMap<InstanceId, Instant>,
    may_declare: bool,
) {
    let Ok(holders) = presence.send(SocketHolders).await else {
        return;
    };
    missing.retain(|i, _| holders.contains(i));
    for instance in holders {
        let alive: Result<i64, String> = conn
            .query(redis::cmd("EXISTS").arg(format!("{prefix}node:{instance}")))
            .await;
        match alive {
            Ok(1) => {
                missing.remove(&instance);
            }
            Ok(_) => {
                let since = *missing.entry(instance).or_insert_with(Instant::now);
                if may_declare && since.elapsed() >= LOST_AFTER {
                    missing.remove(&instance);
                    let n = presence.send(NodeGone(instance)).await.unwrap_or(0);
                    log::warn!(
                        "instance {instance} stopped renewing its liveness key: lost, {n} users \
                         offline (node_lost)"
                    );
                }
            }
            Err(_) => return,
        }
    }
}
