//! The test harness: `TestApp` starts the real `spotter` binary on a random port with its
//! own data directory and database (a fresh SQLite file, or a fresh PostgreSQL database),
//! and talks to it over HTTP and WebSocket like any client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub const ADMIN_PASSWORD: &str = "admin-password-123";
pub const PASSWORD: &str = "password-123";
/// How long a helper waits for a frame or a state before failing the test.
pub const WAIT: Duration = Duration::from_secs(10);

/// Which database a test app runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server.
pub struct TestApp {
    pub base: String,
    pub ws_base: String,
    pub backend: Backend,
    pub env: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    pg_db: Option<String>,
}

fn pg_admin_url() -> String {
    std::env::var("SPOTTER_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// True in CI, where a missing PostgreSQL (or Redis) fails a test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false")
        .unwrap_or(false)
}

fn pg_exec(sql: &str) -> Result<(), String> {
    use diesel::{Connection, RunQueryDsl};
    let mut conn = diesel::PgConnection::establish(&format!("{}/postgres", pg_admin_url()))
        .map_err(|e| e.to_string())?;
    diesel::sql_query(sql)
        .execute(&mut conn)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

impl TestApp {
    /// A server on a fresh SQLite database.
    pub fn sqlite() -> TestApp {
        Self::start(Backend::Sqlite, &[])
    }

    /// A server on a fresh PostgreSQL database; `None` (loudly) when PostgreSQL cannot be
    /// reached outside CI. In CI a missing PostgreSQL fails the test.
    pub fn postgres() -> Option<TestApp> {
        Self::try_start(Backend::Postgres, &[])
    }

    pub fn start(backend: Backend, env: &[(&str, &str)]) -> TestApp {
        Self::try_start(backend, env).expect("backend available")
    }

    pub fn try_start(backend: Backend, env: &[(&str, &str)]) -> Option<TestApp> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vars: Vec<(String, String)> = vec![
            ("SPOTTER_BIND".into(), "127.0.0.1:0".into()),
            (
                "SPOTTER_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("SPOTTER_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
            (
                "SPOTTER_JWT_SECRET".into(),
                "test-secret-that-is-long-enough-0123456789".into(),
            ),
            ("SPOTTER_DRAIN_SECS".into(), "3".into()),
            ("RUST_LOG".into(), "info,actix_server=warn".into()),
        ];
        let mut pg_db = None;
        match backend {
            Backend::Sqlite => vars.push((
                "SPOTTER_DATABASE_URL".into(),
                format!("sqlite://{}", dir.path().join("spotter.db").display()),
            )),
            Backend::Postgres => {
                let name = format!("spotter_t_{}", uuid_like());
                if let Err(e) = pg_exec(&format!("CREATE DATABASE {name}")) {
                    if in_ci() {
                        panic!("PostgreSQL is required in CI but unreachable: {e}");
                    }
                    eprintln!("\n!!! SKIPPED: PostgreSQL not reachable at {} ({e}); this test did NOT run on PostgreSQL !!!\n", pg_admin_url());
                    return None;
                }
                vars.push((
                    "SPOTTER_DATABASE_URL".into(),
                    format!("{}/{name}", pg_admin_url()),
                ));
                pg_db = Some(name);
            }
        }
        override_env(&mut vars, env);
        let mut app = TestApp {
            base: String::new(),
            ws_base: String::new(),
            backend,
            env: vars,
            dir,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            pg_db,
        };
        app.spawn();
        Some(app)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spotter"));
        cmd.arg("serve")
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn spotter");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on http://").nth(1) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_string());
                    }
                }
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => panic!("server did not start; log:\n{}", self.log()),
        };
        self.base = format!("http://{addr}");
        self.ws_base = format!("ws://{addr}");
        self.child = Some(child);
    }

    /// Another instance of the same deployment: this one's settings (database, JWT secret,
    /// data directory, …) with `env` on top, on its own port and in its own working
    /// directory. The database is this one's, so the sibling drops none when it goes.
    pub fn sibling(&self, env: &[(&str, &str)]) -> TestApp {
        let mut vars = self.env.clone();
        override_env(&mut vars, env);
        let mut app = TestApp {
            base: String::new(),
            ws_base: String::new(),
            backend: self.backend,
            env: vars,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            pg_db: None,
        };
        app.spawn();
        app
    }

    /// SIGKILL: the process dies at once, without draining or closing its sockets.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's resident memory, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!(
            "/proc/{}/status",
            self.pid().expect("server running")
        ))
        .expect("/proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and starts it again on the same data (new port).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// One HTTP call; answers (status, JSON body or Null).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call_within(method, path, token, body, WAIT)
    }

    /// [`TestApp::call`] with its own timeout (for calls that may wait on a stalled store).
    pub fn call_within(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        timeout: Duration,
    ) -> (u16, Value) {
        let mut req = ureq::request(method, &self.url(path)).timeout(timeout);
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, Some(token), None)
    }

    pub fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(token), Some(body))
    }

    /// Logs in; panics unless it works.
    pub fn login(&self, username: &str, password: &str) -> Login {
        let (status, body) = self.call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"username": username, "password": password})),
        );
        assert_eq!(status, 200, "login {username}: {body}");
        Login {
            token: body["access_token"].as_str().unwrap().to_string(),
            refresh: body["refresh_token"].as_str().unwrap().to_string(),
            id: body["user"]["id"].as_i64().unwrap(),
            username: username.to_string(),
        }
    }

    pub fn admin(&self) -> Login {
        self.login("admin", ADMIN_PASSWORD)
    }

    /// Creates a user of `role` through the admin API and logs them in.
    pub fn user(&self, role: &str) -> Login {
        let admin = self.admin();
        let username = format!("{role}_{}", uuid_like());
        let (status, body) = self.post(
            "/api/users",
            &admin.token,
            json!({"username": username, "password": PASSWORD, "role": role, "display_name": format!("Test {role}")}),
        );
        assert_eq!(status, 201, "create {role}: {body}");
        self.login(&username, PASSWORD)
    }

    /// Opens a socket; authenticated by `?token=` when given.
    pub fn ws(&self, token: Option<&str>) -> Ws {
        self.ws_path("/ws", token)
    }

    pub fn ws_path(&self, path: &str, token: Option<&str>) -> Ws {
        let url = match token {
            Some(t) => format!("{}{}?token={}", self.ws_base, path, t),
            None => format!("{}{}", self.ws_base, path),
        };
        let (socket, _) = tungstenite::connect(url).expect("ws connect");
        if let MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        Ws {
            socket,
            closed: None,
        }
    }

    /// An authenticated socket, with `authentication_success` (and `initial_stats` for
    /// dashboards) already read.
    pub fn ws_auth(&self, login: &Login) -> Ws {
        let mut ws = self.ws(Some(&login.token));
        ws.expect("authentication_success");
        ws
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test shows what its server said last.
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!("--- server {} log (last 60 lines) ---\n{tail}", self.base);
            let port = self.base.rsplit(':').next().unwrap_or("0").to_string();
            let _ = std::fs::write(
                std::env::temp_dir().join(format!("spotter-{port}.log")),
                &log,
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(db) = &self.pg_db {
            let _ = pg_exec(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }
}

/// A logged-in user.
#[derive(Debug, Clone)]
pub struct Login {
    pub token: String,
    pub refresh: String,
    pub id: i64,
    pub username: String,
}

/// A test socket. Every wait has a deadline.
pub struct Ws {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    /// The close code once the server closed the socket.
    pub closed: Option<u16>,
}

impl Ws {
    /// A socket on a connection whose handshake the test made itself; `leftover` is what
    /// it read past the response head.
    pub fn from_raw(stream: TcpStream, leftover: Vec<u8>) -> Ws {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let socket = WebSocket::from_partially_read(
            MaybeTlsStream::Plain(stream),
            leftover,
            tungstenite::protocol::Role::Client,
            None,
        );
        Ws {
            socket,
            closed: None,
        }
    }

    /// Sends any frame; false once the server has closed the socket.
    pub fn send_message(&mut self, msg: Message) -> bool {
        self.socket.send(msg).is_ok()
    }

    pub fn send_raw(&mut self, text: &str) {
        self.socket
            .send(Message::Text(text.to_string()))
            .expect("ws send");
    }

    pub fn send_binary(&mut self, data: Vec<u8>) {
        self.socket
            .send(Message::Binary(data))
            .expect("ws send binary");
    }

    /// A text frame whose payload is not UTF-8 (which the protocol forbids).
    pub fn send_invalid_utf8_text(&mut self, data: &[u8]) {
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        use tungstenite::protocol::frame::Frame;
        let frame = Frame::message(data.to_vec(), OpCode::Data(Data::Text), true);
        self.socket
            .send(Message::Frame(frame))
            .expect("ws send raw frame");
    }

    pub fn send(&mut self, kind: &str, payload: Value) {
        self.send_raw(&json!({"type": kind, "payload": payload}).to_string());
    }

    pub fn send_ref(&mut self, kind: &str, reference: &str, payload: Value) {
        self.send_raw(&json!({"type": kind, "ref": reference, "payload": payload}).to_string());
    }

    /// How long one read waits for a frame (100 ms unless changed).
    pub fn set_read_timeout(&mut self, wait: Duration) {
        if let MaybeTlsStream::Plain(s) = self.socket.get_ref() {
            s.set_read_timeout(Some(wait)).unwrap();
        }
    }

    /// One read: the next text frame if one arrives within the read timeout.
    pub fn try_next(&mut self) -> Option<Value> {
        if self.closed.is_some() {
            return None;
        }
        match self.socket.read() {
            Ok(Message::Text(t)) => Some(serde_json::from_str(&t).expect("server sends JSON")),
            Ok(Message::Close(frame)) => {
                self.closed = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                None
            }
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(_) => {
                self.closed.get_or_insert(1006);
                None
            }
        }
    }

    /// The next text frame within `wait`, or None (also None once closed).
    pub fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.closed.is_some() {
                return None;
            }
            match self.socket.read() {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("server sends JSON"))
                }
                Ok(Message::Close(frame)) => {
                    self.closed = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(tungstenite::Error::ConnectionClosed)
                | Err(tungstenite::Error::AlreadyClosed) => {
                    self.closed.get_or_insert(1006);
                }
                Err(e) => {
                    self.closed.get_or_insert(1006);
                    eprintln!("ws read error: {e}");
                }
            }
        }
        None
    }

    /// The next frame of type `kind`, skipping others; panics after `WAIT`.
    pub fn expect(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(f) = self.next_within(Duration::from_millis(200)) {
                if f["type"] == kind {
                    return f;
                }
                seen.push(f["type"].to_string());
            }
            if let Some(code) = self.closed {
                panic!("socket closed ({code}) while waiting for {kind}; saw {seen:?}");
            }
        }
        panic!("no {kind} frame within {WAIT:?}; saw {seen:?}");
    }

    /// The next frame that answers `reference`, of whatever type.
    pub fn expect_ref(&mut self, reference: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(f) = self.next_within(Duration::from_millis(200)) {
                if f["ref"] == reference {
                    return f;
                }
            }
            if let Some(code) = self.closed {
                panic!("socket closed ({code}) while waiting for ref {reference}");
            }
        }
        panic!("no answer to ref {reference} within {WAIT:?}");
    }

    /// Asserts that no frame of type `kind` arrives within `wait`.
    pub fn expect_none(&mut self, kind: &str, wait: Duration) {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(f) = self.next_within(Duration::from_millis(100)) {
                assert_ne!(f["type"], kind, "unexpected frame {f}");
            }
        }
    }

    /// Waits for the server to close the socket; answers the close code.
    pub fn expect_close(&mut self) -> u16 {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline && self.closed.is_none() {
            let _ = self.next_within(Duration::from_millis(100));
        }
        self.closed
            .unwrap_or_else(|| panic!("socket not closed within {WAIT:?}"))
    }

    pub fn close(&mut self) {
        let _ = self.socket.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }));
    }
}

/// A short random suffix for names.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{:x}{:x}{}",
        std::process::id(),
        t & 0xffffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Asserts the contract's error shape with this code.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["message"].is_string(), "body: {body}");
}

/// Polls `f` until it returns Some, or panics after `wait`.
pub fn eventually<T>(wait: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Defines a test that runs on SQLite and again on PostgreSQL: `both_backends!(name);`
/// with `fn name(app: &TestApp)`.
/// `both_backends!(env: SETTINGS; name, …)` starts the servers with extra variables.
#[macro_export]
macro_rules! both_backends {
    (env: $env:expr; $($name:ident),* $(,)?) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() {
                super::$name(&$crate::common::TestApp::start($crate::common::Backend::Sqlite, $env));
            }
            #[test]
            fn postgres() {
                if let Some(app) = $crate::common::TestApp::try_start($crate::common::Backend::Postgres, $env) {
                    super::$name(&app);
                }
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {
        $crate::both_backends!(env: &[]; $($name),*);
    };
}

/// Opens (gets or creates) the direct conversation of `login` with `peer`.
pub fn open(app: &TestApp, login: &Login, peer: i64) -> i64 {
    let (status, body) = app.post(
        "/api/chat/conversations",
        &login.token,
        json!({ "peer_id": peer }),
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    body["id"].as_i64().unwrap()
}

/// `PATCH /api/users/{id}` with `body`.
pub fn patch(app: &TestApp, token: &str, id: i64, body: Value) -> (u16, Value) {
    app.call(
        "PATCH",
        &format!("/api/users/{id}"),
        Some(token),
        Some(body),
    )
}

/// Sets each of `env` in `vars`, replacing what was there.
fn override_env(vars: &mut Vec<(String, String)>, env: &[(&str, &str)]) {
    for (k, v) in env {
        vars.retain(|(key, _)| key != k);
        vars.push((k.to_string(), v.to_string()));
    }
}
