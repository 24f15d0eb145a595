//! The Redis broker: several instances, one channel.
//!
//! An event published here goes to this instance's hub at once (as with the in-process
//! broker) and, serialized once, into a queue bounded in bytes, from which one task
//! PUBLISHes to `<prefix>events` in order. One subscriber connection reads that channel and
//! hands every other instance's event, in order, to [`crate::cluster`].
//!
//! When Redis goes away, this instance keeps serving its own sockets: local delivery never
//! waits on Redis. Events for the other instances are dropped while it is away (they were
//! stored; clients recover them with `since_seq`), the outage is logged once, `/readyz`
//! answers 503, and both tasks reconnect with backoff; the subscriber tells the cluster
//! when it is back, so that state that may have been missed is reloaded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, Semaphore};

use super::{deliver_local, Broker, Incoming, Remote};
use crate::domain::events::{Envelope, Event, InstanceId};

/// Bytes of serialized events waiting to be published; beyond it events for the other
/// instances are dropped (and counted) until Redis catches up.
const QUEUE_BYTES: usize = 32 << 20;
/// Events received from Redis waiting for the cluster task.
const INBOX: usize = 65_536;
/// How long a Redis call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// One lazily (re)made connection to Redis, shared by every short command (publishing,
/// liveness keys, the duty lock, readiness). The connection manager reconnects by itself
/// once it exists; until Redis has answered once, each use tries to make it.
#[derive(Clone)]
pub struct RedisConn {
    client: redis::Client,
    conn: Arc<tokio::sync::Mutex<Option<ConnectionManager>>>,
}

impl RedisConn {
    pub fn new(url: &str) -> Result<RedisConn, String> {
        let client = redis::Client::open(url).map_err(|e| format!("SPOTTER_REDIS_URL: {e}"))?;
        Ok(RedisConn {
            client,
            conn: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// The shared connection, made now if there is none yet.
    pub async fn get(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX.as_millis() as u64);
        let made = tokio::time::timeout(
            CALL_TIMEOUT,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| "redis: connect timed out".to_string())?
        .map_err(|e| format!("redis: {e}"))?;
        *slot = Some(made.clone());
        Ok(made)
    }

    /// Runs one command with a timeout.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.get().await?;
        match tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err("redis: command timed out".into()),
        }
    }

    /// Runs a Lua script with a timeout.
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<T, String> {
        let mut conn = self.get().await?;
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(a);
        }
        match tokio::time::timeout(CALL_TIMEOUT, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err("redis: script timed out".into()),
        }
    }
}

/// Health of the two connections, and the one-line-per-outage logging.
struct Health {
    subscribed: AtomicBool,
    publish_failing: AtomicBool,
    /// Events for other instances dropped (queue full or Redis away) since the last log.
    dropped: AtomicU64,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Health {
    fn drop_one(&self) -> u64 {
        self.metrics.broker_dropped.inc();
        self.dropped.fetch_add(1, Ordering::Relaxed)
    }
}

/// The Redis broker.
pub struct RedisBroker {
    instance: InstanceId,
    hub: Recipient<Incoming>,
    outbox: mpsc::UnboundedSender<Vec<u8>>,
    budget: Arc<Semaphore>,
    health: Arc<Health>,
    conn: RedisConn,
    remote: std::sync::Mutex<Option<mpsc::Receiver<Remote>>>,
}

impl RedisBroker {
    /// Starts the publishing and subscribing tasks (on the current actix arbiter); other
    /// instances' events arrive on the receiver [`Broker::subscribe`] hands out.
    pub fn start(
        conn: RedisConn,
        prefix: &str,
        instance: InstanceId,
        hub: Recipient<Incoming>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> RedisBroker {
        let channel = format!("{prefix}events");
        let (outbox, queued) = mpsc::unbounded_channel();
        let (inbox, remote) = mpsc::channel(INBOX);
        let budget = Arc::new(Semaphore::new(QUEUE_BYTES));
        let health = Arc::new(Health {
            subscribed: AtomicBool::new(false),
            publish_failing: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            metrics,
        });
        actix_web::rt::spawn(publisher(
            conn.clone(),
            channel.clone(),
            queued,
            budget.clone(),
            health.clone(),
        ));
        actix_web::rt::spawn(subscriber(
            conn.client.clone(),
            channel,
            instance,
            inbox,
            health.clone(),
        ));
        RedisBroker {
            instance,
            hub,
            outbox,
            budget,
            health,
            conn,
            remote: std::sync::Mutex::new(Some(remote)),
        }
    }

    /// Serializes once and queues for the other instances; drops when the queue is full.
    fn send_out(&self, envelope: &Envelope) {
        let bytes = match serde_json::to_vec(envelope) {
            Ok(b) => b,
            Err(e) => {
                log::error!("redis: cannot serialize an event: {e}");
                return;
            }
        };
        let n = bytes.len().min(QUEUE_BYTES) as u32;
        match self.budget.try_acquire_many(n) {
            Ok(permit) => {
                permit.forget();
                if self.outbox.send(bytes).is_err() {
                    self.budget.add_permits(n as usize);
                }
            }
            Err(_) => {
                if self.health.drop_one() == 0 {
                    log::warn!(
                        "redis: publish queue full ({QUEUE_BYTES} bytes): events for other \
                         instances are dropped until it drains (clients recover with since_seq)"
                    );
                }
            }
        }
    }
}

impl Broker for RedisBroker {
    fn instance(&self) -> InstanceId {
        self.instance
    }

    fn publish(&self, event: Event) -> BoxFuture<'static, ()> {
        let local = !matches!(event, Event::Presence(_));
        let envelope = Arc::new(Envelope {
            origin: self.instance,
            event,
        });
        self.send_out(&envelope);
        if local {
            deliver_local(&self.hub, envelope)
        } else {
            futures_util::future::ready(()).boxed()
        }
    }

    fn check(&self) -> BoxFuture<'static, Result<(), String>> {
        let conn = self.conn.clone();
        let health = self.health.clone();
        async move {
            let pong: String = conn.query(&redis::cmd("PING")).await?;
            if pong != "PONG" {
                return Err(format!("redis: PING answered {pong:?}"));
            }
            if !health.subscribed.load(Ordering::Relaxed) {
                return Err("redis: not subscribed to the event channel".into());
            }
            Ok(())
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn subscribe(&self) -> Option<mpsc::Receiver<Remote>> {
        self.remote.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Publishes queued events in order. While Redis fails, events are dropped without trying
/// until the backoff has passed, so that the queue drains and local service goes on.
async fn publisher(
    conn: RedisConn,
    channel: String,
    mut queued: mpsc::UnboundedReceiver<Vec<u8>>,
    budget: Arc<Semaphore>,
    health: Arc<Health>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut retry_at: Option<tokio::time::Instant> = None;
    while let Some(bytes) = queued.recv().await {
        let n = bytes.len().min(QUEUE_BYTES);
        let waiting = retry_at.is_some_and(|at| tokio::time::Instant::now() < at);
        if waiting {
            health.drop_one();
        } else {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(&channel).arg(&bytes[..]);
            match conn.query::<i64>(&cmd).await {
                Ok(_) => {
                    health.metrics.broker_published.inc();
                    if health.publish_failing.swap(false, Ordering::Relaxed) {
                        log::info!(
                            "redis: publishing again ({} events for other instances were dropped meanwhile)",
                            health.dropped.swap(0, Ordering::Relaxed)
                        );
                    }
                    backoff = BACKOFF_MIN;
                    retry_at = None;
                }
                Err(e) => {
                    if !health.publish_failing.swap(true, Ordering::Relaxed) {
                        log::error!(
                            "redis: publishing failed ({e}); this instance keeps serving its own \
                             sockets, other instances miss its events until Redis is back"
                        );
                    }
                    health.drop_one();
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        budget.add_permits(n);
    }
}

/// Reads the event channel for the life of the process, reconnecting with backoff.
async fn subscriber(
    client: redis::Client,
    channel: String,
    me: InstanceId,
    inbox: mpsc::Sender<Remote>,
    health: Arc<Health>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut ever = false;
    let mut down_logged = false;
    loop {
        let attempt = async {
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|e| format!("redis: {e}"))?;
            pubsub
                .subscribe(&channel)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            Ok::<_, String>(pubsub)
        };
        match tokio::time::timeout(CALL_TIMEOUT, attempt).await {
            Ok(Ok(pubsub)) => {
                health.subscribed.store(true, Ordering::Relaxed);
                backoff = BACKOFF_MIN;
                if ever {
                    log::info!("redis: subscribed to {channel} again");
                    if inbox.send(Remote::Reconnected).await.is_err() {
                        return;
                    }
                } else {
                    log::info!("redis: subscribed to {channel} as instance {me}");
                }
                ever = true;
                let mut stream = pubsub.into_on_message();
                while let Some(msg) = stream.next().await {
                    let envelope: Envelope = match serde_json::from_slice(msg.get_payload_bytes()) {
                        Ok(e) => e,
                        Err(e) => {
                            log::error!("redis: an event on {channel} cannot be read: {e}");
                            continue;
                        }
                    };
                    if envelope.origin == me {
                        continue;
                    }
                    if inbox.send(Remote::Event(Arc::new(envelope))).await.is_err() {
                        return;
                    }
                }
                health.subscribed.store(false, Ordering::Relaxed);
                log::error!(
                    "redis: the subscription to {channel} ended; reconnecting (this instance \
                     keeps serving its own sockets)"
                );
                down_logged = true;
            }
            Ok(Err(e)) => {
                health.subscribed.store(false, Ordering::Relaxed);
                if !down_logged {
                    log::error!("redis: cannot subscribe to {channel}: {e}; retrying");
                    down_logged = true;
                }
            }
            Err(_) => {
                health.subscribed.store(false, Ordering::Relaxed);
                if !down_logged {
                    log::error!("redis: subscribing to {channel} timed out; retrying");
                    down_logged = true;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
