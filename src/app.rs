//! Building and running the server: storage, actors, HTTP, and a graceful shutdown that
//! closes every socket with 4200 and flushes presence before exiting.

use std::sync::Arc;

use actix::prelude::*;
use actix_web::middleware::from_fn;
use actix_web::{web, App};

use crate::auth::jwt::{load_or_create_secret, JwtKeys};
use crate::auth::revocation::RevocationList;
use crate::auth::throttle::LoginThrottle;
use crate::broker::memory::MemoryBroker;
use crate::broker::Broker;
use crate::config::Config;
use crate::db::Db;
use crate::domain::directory::Directory;
use crate::domain::users::{CreateUser, UserView};
use crate::error::{AppError, AppResult};
use crate::jobs::sweeper::Sweeper;
use crate::metrics::Metrics;
use crate::realtime::hub::{CloseAll, Hub};
use crate::realtime::presence::{HubPresence, PresenceHandle, PresenceServer, Restore, SeenBoard};
use crate::state::AppState;

/// Opens the database and runs pending migrations.
pub fn open_db(config: &Config) -> AppResult<Db> {
    let db = Db::connect(&config.database_url, config.db_pool_size)?;
    let n = db.migrate()?;
    if n > 0 {
        log::info!("applied {n} migration(s) ({})", db.backend_name());
    }
    Ok(db)
}

/// On a database with no users, creates `admin` (PROTOCOL §1).
fn bootstrap_admin(db: &Db, config: &Config) -> AppResult<()> {
    let mut conn = db.write_conn()?;
    if crate::db::users::count(&mut conn)? > 0 {
        return Ok(());
    }
    let (password, generated) = match &config.admin_password {
        Some(p) => (p.clone(), false),
        None => {
            use rand::distributions::{Alphanumeric, DistString};
            (
                Alphanumeric.sample_string(&mut rand::thread_rng(), 20),
                true,
            )
        }
    };
    let req = CreateUser {
        username: "admin".into(),
        password: password.clone(),
        role: "admin".into(),
        display_name: Some("Administrator".into()),
    };
    crate::domain::users::create_user(&mut conn, &req)?;
    if generated {
        log::warn!("created user admin with the generated password {password} (shown once; set SPOTTER_ADMIN_PASSWORD to choose it)");
    } else {
        log::info!("created user admin with the password from SPOTTER_ADMIN_PASSWORD");
    }
    Ok(())
}

/// Everything `serve` starts, before the HTTP server.
pub struct Started {
    pub state: AppState,
    pub sweeper: Addr<Sweeper>,
    /// Starts the hub and the chat publisher on the thread that calls it first.
    pub hub_runner: HubRunner,
}

/// The hub and the chat publisher, waiting for the thread they will run on. `serve` runs
/// them on the first HTTP worker, beside the sessions of that worker's lane: a committed
/// message then wakes one worker thread (publisher, hub and that lane in one go) and
/// the other worker's lane, where on a thread of their own it woke that thread too, a
/// context switch per message at everyday rates (BENCHMARKS.md, issue 14). Messages
/// sent to the hub before it runs wait in its mailbox.
#[derive(Clone)]
pub struct HubRunner(Arc<std::sync::Mutex<Option<RunHub>>>);

/// What starts the hub and the publisher on the calling thread.
type RunHub = Box<dyn FnOnce() + Send>;

impl HubRunner {
    /// Runs the hub here (on this thread's arbiter), unless it runs already.
    pub fn run_here(&self) {
        let run = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(run) = run {
            run();
        }
    }
}

/// Builds the state and starts the actors (inside a running actix system).
pub async fn start(config: Config) -> AppResult<Started> {
    let config = Arc::new(config);
    let cfg = config.clone();
    let (db, rows, revoked, secret) = web::block(move || -> AppResult<_> {
        let db = open_db(&cfg)?;
        bootstrap_admin(&db, &cfg)?;
        let stale = crate::domain::files::remove_stale_temp_files(&cfg.data_dir);
        if stale > 0 {
            log::warn!("removed {stale} unfinished upload(s) left by an earlier run");
        }
        let mut conn = db.read_conn()?;
        let rows = crate::db::users::list(&mut conn)?;
        let revoked =
            crate::db::users::load_revoked(&mut conn, crate::time::to_db(crate::time::now()))?;
        let secret =
            load_or_create_secret(cfg.jwt_secret.as_deref(), &cfg.data_dir).map_err(|e| {
                AppError::Unavailable(format!("SPOTTER_DATA_DIR: cannot keep the JWT secret: {e}"))
            })?;
        Ok((db, rows, revoked, secret))
    })
    .await??;

    let metrics = Arc::new(Metrics::new());
    let directory = Arc::new(Directory::load(&rows));
    let revocations = RevocationList::default();
    revocations.revoke(
        revoked
            .into_iter()
            .map(|(jti, exp)| (jti, exp.and_utc().timestamp())),
    );

    // The hub and presence know each other: create presence's address first.
    let presence_ctx = Context::<PresenceServer>::new();
    let presence = presence_ctx.address();
    let hub_actor = Hub::new(
        Arc::new(HubPresence(presence.clone())),
        metrics.clone(),
        directory.clone(),
        config.ws_max_per_user,
    );
    let (hub_tx, hub_rx) = actix::dev::channel::channel::<Hub>(crate::realtime::hub::HUB_MAILBOX);
    let hub = Addr::new(hub_tx);
    // One instance: the in-process broker. Several (SPOTTER_REDIS_URL): the Redis broker,
    // whose other instances' events arrive on `remote` (`crate::cluster`).
    let instance = crate::domain::events::InstanceId::random();
    let (broker, cluster): (Arc<dyn Broker>, _) = match &config.redis_url {
        Some(url) => {
            let conn = crate::broker::redis::RedisConn::new(url).map_err(AppError::Unavailable)?;
            let prefix = match config.redis_prefix.as_str() {
                p if p.is_empty() || p.ends_with(':') => p.to_string(),
                p => format!("{p}:"),
            };
            let broker = crate::broker::redis::RedisBroker::start(
                conn.clone(),
                &prefix,
                instance,
                hub.clone().recipient(),
                metrics.clone(),
            );
            log::info!("instance {instance}: several instances share Redis (prefix {prefix:?})");
            (
                Arc::new(broker),
                crate::cluster::Cluster::redis(instance, conn, &prefix),
            )
        }
        None => (
            Arc::new(MemoryBroker::new(instance, hub.clone().recipient())),
            crate::cluster::Cluster::single(instance),
        ),
    };
    let cluster = Arc::new(cluster);
    let seen = Arc::new(SeenBoard::default());
    let presence_actor = PresenceServer::new(
        cluster.clustered(),
        db.clone(),
        broker.clone(),
        directory.clone(),
        metrics.clone(),
        config.heartbeat_timeout,
        config.flush_interval,
        seen.clone(),
    );
    presence_ctx.run(presence_actor);
    let stored: Vec<_> = rows
        .iter()
        .map(|r| (r.id, r.is_online, r.last_seen.map(crate::time::from_db)))
        .collect();
    presence.do_send(Restore(stored));

    let db_for_chat = db.clone();
    let state = AppState {
        ws_gate: crate::realtime::gate::Gate::new(config.ws_max_unauthenticated_per_addr),
        throttle: Arc::new(LoginThrottle::new(
            config.login_max_failures,
            config.login_window,
            config.login_max_concurrent_per_addr,
        )),
        config,
        db,
        jwt: Arc::new(JwtKeys::new(&secret)),
        revoked: Arc::new(revocations),
        directory,
        metrics,
        hub: hub.clone(),
        presence: Arc::new(PresenceHandle::new(presence.clone(), seen, hub.clone())),
        broker,
        cluster,
        chat: Arc::new(crate::domain::chat::ChatState::new(&db_for_chat)?),
        stats: Default::default(),
    };
    crate::domain::checkins::init(&state).await?;
    let publisher_state = state.clone();
    let hub_runner = HubRunner(Arc::new(std::sync::Mutex::new(Some(Box::new(move || {
        Context::with_receiver(hub_rx).run(hub_actor);
        crate::domain::chat::start_publisher(&publisher_state);
    })))));
    crate::cluster::start(&state, hub, presence);
    state.db.start_checkpointer();
    let sweeper = Sweeper::new(state.clone()).start();
    Ok(Started {
        state,
        sweeper,
        hub_runner,
    })
}

/// Notes each connection's TCP socket, so that a session can cut off a client that stops
/// reading (`realtime::outflow`).
fn note_socket(tcp: &actix_web::rt::net::TcpStream, ext: &mut actix_web::dev::Extensions) {
    use std::os::fd::AsRawFd;
    ext.insert(crate::realtime::outflow::ConnSocket(tcp.as_raw_fd()));
}

/// The app every request is answered by, one per worker (and one more per worker for the
/// WebSocket handshakes, `http::takeover`).
fn app(
    data: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let st = data.get_ref().clone();
    App::new()
        .app_data(data)
        .configure(move |c| crate::http::configure(c, &st))
        .wrap(from_fn(crate::http::drain::read_small_bodies))
        .wrap(from_fn(crate::http::observe))
        .wrap(from_fn(crate::http::headers::security))
        .wrap(from_fn(crate::http::normalize_path))
}

/// The listening socket (SO_REUSEADDR, a backlog of 1,024 as actix-web's own).
fn listen(bind: &str) -> std::io::Result<std::net::TcpListener> {
    let addr: std::net::SocketAddr = bind
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// `spotter serve`: runs until SIGTERM/SIGINT, then drains.
pub async fn serve(config: Config) -> std::io::Result<()> {
    use actix_service::{IntoServiceFactory, ServiceFactoryExt};
    use actix_web::http::KeepAlive;
    let bind = config.bind.clone();
    let drain = config.drain;
    let started = start(config)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let state = started.state.clone();
    let data = web::Data::new(state.clone());
    let listener = listen(&bind)?;
    let addr = listener.local_addr()?;
    // What actix-web's HttpServer builds, with one addition: WebSocket handshakes go to
    // `http::takeover`, which gives the socket the bare connection (`realtime::wire`).
    let mut builder = actix_web::dev::Server::build()
        .disable_signals()
        .shutdown_timeout(drain.as_secs());
    let shutdown = builder.graceful_shutdown_signal();
    let hub_runner = started.hub_runner.clone();
    builder = builder.listen("spotter", listener, move || {
        // Called on each worker's thread as it starts: the first one runs the hub.
        hub_runner.run_here();
        let data = data.clone();
        let shutdown = shutdown.clone();
        let upgrade_data = data.clone();
        actix_http::HttpService::build()
            .keep_alive(KeepAlive::default())
            .client_request_timeout(std::time::Duration::from_secs(5))
            .client_disconnect_timeout(std::time::Duration::from_secs(1))
            // A realtime server writes small frames: no Nagle delay waiting for the ACK.
            .tcp_nodelay(true)
            .local_addr(addr)
            .graceful_shutdown_signal(move || {
                let signal = shutdown.clone();
                async move { signal.notified().await }
            })
            .on_connect_ext(|io: &actix_web::rt::net::TcpStream, ext| note_socket(io, ext))
            .upgrade(crate::http::takeover::service(move || {
                app(upgrade_data.clone()).into_factory()
            }))
            .finish(actix_service::map_config(
                app(data)
                    .into_factory()
                    .map_err(|e: actix_web::Error| e.error_response()),
                |_| actix_web::dev::AppConfig::default(),
            ))
            .tcp()
    })?;
    log::info!(
        "listening on http://{addr} ({} storage)",
        state.db.backend_name()
    );
    let server = builder.run();
    let handle = server.handle();

    let st = state.clone();
    actix_web::rt::spawn(async move {
        wait_for_signal().await;
        log::info!(
            "shutting down: closing sockets with 4200, draining for up to {}s",
            drain.as_secs()
        );
        match st
            .hub
            .send(CloseAll {
                code: crate::realtime::session::CLOSE_RESTARTING,
                reason: "server restarting".into(),
            })
            .await
        {
            Ok(n) => log::info!("closed {n} sockets"),
            Err(e) => log::error!("hub did not answer: {e}"),
        }
        // The sockets run in tasks of their own (`realtime::wire`): wait for them to
        // finish their close before the workers stop.
        let closed = async {
            while crate::realtime::wire::live() > 0 {
                actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        let start = std::time::Instant::now();
        if actix_web::rt::time::timeout(drain, closed).await.is_err() {
            log::warn!(
                "{} sockets still open after the drain time",
                crate::realtime::wire::live()
            );
        }
        let stop = handle.stop(true);
        let left = drain.saturating_sub(start.elapsed());
        if actix_web::rt::time::timeout(left, stop).await.is_err() {
            log::warn!("drain time ran out; stopping now");
        }
    });
    server.await?;
    match state.presence.flush_now().await {
        Ok(()) => log::info!("presence flushed"),
        Err(e) => log::error!("final presence flush failed: {e}"),
    }
    drop(started);
    log::info!("bye");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `spotter user create`: creates a user and returns its JSON.
pub fn cli_create_user(config: &Config, req: CreateUser) -> AppResult<UserView> {
    let db = open_db(config)?;
    let mut conn = db.write_conn()?;
    let row = crate::domain::users::create_user(&mut conn, &req)?;
    Ok(UserView::from_row(&row, Some((false, None))))
}

/// `spotter demo`: loads the demo gym ([`crate::demo`]); answers the logins to print.
pub fn cli_demo(config: &Config) -> AppResult<Vec<crate::demo::DemoLogin>> {
    let db = open_db(config)?;
    bootstrap_admin(&db, config)?;
    let mut conn = db.write_conn()?;
    crate::demo::load(&mut conn, config)
}
