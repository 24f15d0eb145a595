//! Abuse the server must absorb (issue 10): login floods, over-long usernames, forged
//! forwarding headers, made-up methods and paths on `/metrics`, file permissions, upload
//! quotas and orphans, bodies left unread on kept-alive connections, memory at rest.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A TCP connection to the app from a chosen loopback address (all of 127.0.0.0/8 is
/// local on Linux), so that tests can be several clients.
pub fn connect_from(app: &TestApp, from: Ipv4Addr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let server: SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let SocketAddr::V4(server) = server else {
        panic!("the test server listens on IPv4")
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns until it is handed to
    // TcpStream (which then closes it); the addresses live across each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(from, 0);
        let rc = libc::bind(fd, &local as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "bind {from}: {}", std::io::Error::last_os_error());
        let remote = sockaddr(*server.ip(), server.port());
        let rc = libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
    }
}

/// One parsed HTTP/1.1 response.
#[allow(dead_code)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

#[allow(dead_code)]
impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writes one request on `stream` and reads its response (Content-Length bodies only).
pub fn raw_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).expect("write request");
    read_response(stream)
}

fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).expect("header line");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').expect("header");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf).expect("body");
    let text = String::from_utf8_lossy(&buf).to_string();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    RawResponse {
        status,
        headers,
        body,
    }
}

/// A login from `from` on a fresh connection.
fn login_from(app: &TestApp, from: Ipv4Addr, username: &str, password: &str) -> RawResponse {
    let mut s = connect_from(app, from);
    let body = json!({"username": username, "password": password}).to_string();
    raw_request(
        &mut s,
        "POST",
        "/api/auth/login",
        &[
            ("Content-Type", "application/json"),
            ("Connection", "close"),
        ],
        &body,
    )
}

const HOME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn login_failures_logged(app: &TestApp) -> usize {
    app.log().matches("login failed for").count()
}

#[test]
fn concurrent_wrong_logins_check_at_most_the_limit() {
    let app = Arc::new(TestApp::sqlite());
    let victim = app.user("member");
    let failures_before = login_failures_logged(&app);
    let n = 60;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (app, barrier, name) = (app.clone(), barrier.clone(), victim.username.clone());
            std::thread::spawn(move || {
                let mut s = connect_from(&app, HOME);
                let body = json!({"username": name, "password": format!("guess-{i}-xxxx")});
                let body = body.to_string();
                barrier.wait();
                let r = raw_request(
                    &mut s,
                    "POST",
                    "/api/auth/login",
                    &[("Content-Type", "application/json")],
                    &body,
                );
                (r.status, r.body)
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let checked = results.iter().filter(|(s, _)| *s == 401).count();
    let refused = results.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(checked + refused, n, "only 401 or 429: {results:?}");
    assert!(checked >= 1, "some attempts are checked");
    assert!(
        checked <= 10,
        "{checked} passwords were checked, the limit is 10"
    );
    for (status, body) in &results {
        assert_error(
            body,
            if *status == 401 {
                "invalid_credentials"
            } else {
                "rate_limited"
            },
        );
    }
    let hashed = login_failures_logged(&app) - failures_before;
    assert!(hashed <= 10, "{hashed} failed logins were checked");

    // Once the guesser has used up the limit (the flood mostly hit the bound on hashes in
    // flight), its address is locked out for this user, and nobody else is.
    for _ in checked..10 {
        let r = login_from(&app, HOME, &victim.username, "wrong-wrong");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = login_from(&app, HOME, &victim.username, PASSWORD);
    assert_eq!(r.status, 429, "{}", r.body);
    let r = login_from(&app, ELSEWHERE, &victim.username, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["id"], victim.id);
}

#[test]
fn a_success_clears_the_count_for_its_address() {
    let app = TestApp::start(Backend::Sqlite, &[("SPOTTER_LOGIN_MAX_FAILURES", "3")]);
    let user = app.user("member");
    for _ in 0..2 {
        assert_eq!(
            login_from(&app, HOME, &user.username, "wrong-wrong").status,
            401
        );
    }
    assert_eq!(login_from(&app, HOME, &user.username, PASSWORD).status, 200);
    for i in 0..3 {
        let r = login_from(&app, HOME, &user.username, "wrong-wrong");
        assert_eq!(r.status, 401, "failure {i} after a success: {}", r.body);
    }
    let r = login_from(&app, HOME, &user.username, PASSWORD);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_error(&r.body, "rate_limited");
}

#[test]
fn an_address_is_limited_across_usernames() {
    let app = TestApp::start(Backend::Sqlite, &[("SPOTTER_LOGIN_MAX_FAILURES", "2")]);
    // 2 per (username, address), 10 per address.
    for i in 0..10 {
        let r = login_from(&app, ELSEWHERE, &format!("nobody{i}"), "wrong-wrong");
        assert_eq!(r.status, 401, "{}", r.body);
    }
    let r = login_from(&app, ELSEWHERE, "admin", ADMIN_PASSWORD);
    assert_eq!(r.status, 429, "{}", r.body);
    let r = login_from(&app, HOME, "admin", ADMIN_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn long_usernames_are_refused_before_hashing_and_never_logged() {
    let app = TestApp::sqlite();
    let admin = app.admin();
    let long: String = "q".repeat(20_000);
    let failures_before = login_failures_logged(&app);
    let started = Instant::now();
    let (status, body) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": long, "password": "whatever-123"})),
    );
    let took = started.elapsed();
    assert_eq!(status, 422, "{body}");
    assert_error(&body, "validation_failed");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert_eq!(
        login_failures_logged(&app),
        failures_before,
        "nothing was hashed"
    );
    // 65 characters is one too many; 64 is checked as usual.
    let (status, _) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": "q".repeat(65), "password": "whatever-123"})),
    );
    assert_eq!(status, 422);
    let (status, body) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": "q".repeat(64), "password": "whatever-123"})),
    );
    assert_eq!(status, 401, "{body}");
    assert_error(&body, "invalid_credentials");
    // Creating one is refused too.
    let (status, body) = app.post(
        "/api/users",
        &admin.token,
        json!({"username": long, "password": PASSWORD, "role": "member"}),
    );
    assert_eq!(status, 422, "{body}");
    assert_error(&body, "validation_failed");
    let (status, _) = app.post(
        "/api/users",
        &admin.token,
        json!({"username": "q".repeat(65), "password": PASSWORD, "role": "member"}),
    );
    assert_eq!(status, 422);
    // Neither request put the name in the log (at most the 64 characters of the
    // ordinary failed login).
    assert!(
        !app.log().contains(&"q".repeat(65)),
        "a long username reached the log"
    );
}

fn login_via(app: &TestApp, forwarded_for: &str, username: &str, password: &str) -> u16 {
    let res = ureq::post(&app.url("/api/auth/login"))
        .set("X-Forwarded-For", forwarded_for)
        .timeout(WAIT)
        .send_json(json!({"username": username, "password": password}));
    match res {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("login: {e}"),
    }
}

#[test]
fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let proxied = TestApp::start(
        Backend::Sqlite,
        &[
            ("SPOTTER_LOGIN_MAX_FAILURES", "2"),
            ("SPOTTER_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    for _ in 0..2 {
        assert_eq!(login_via(&proxied, "10.0.0.1", "admin", "wrong-wrong"), 401);
    }
    assert_eq!(
        login_via(&proxied, "10.0.0.1", "admin", ADMIN_PASSWORD),
        429
    );
    // A forged entry to the left of what the proxy appended changes nothing.
    assert_eq!(
        login_via(&proxied, "10.9.9.9, 10.0.0.1", "admin", ADMIN_PASSWORD),
        429
    );
    assert_eq!(
        login_via(&proxied, "10.0.0.2", "admin", ADMIN_PASSWORD),
        200
    );

    // Without trusted proxies the header is the client's word: ignored.
    let direct = TestApp::start(Backend::Sqlite, &[("SPOTTER_LOGIN_MAX_FAILURES", "2")]);
    for i in 0..2 {
        let forged = format!("10.0.0.{i}");
        assert_eq!(login_via(&direct, &forged, "admin", "wrong-wrong"), 401);
    }
    assert_eq!(login_via(&direct, "10.0.0.7", "admin", ADMIN_PASSWORD), 429);
}

/// Series on the metrics page (sample lines).
fn metric_series(app: &TestApp) -> (usize, usize) {
    let page = ureq::get(&app.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    let series = page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    (series, page.len())
}

/// A request with any method on a fresh connection; answers the status.
fn any_method(app: &TestApp, method: &str, path: &str) -> u16 {
    let mut s = connect_from(app, HOME);
    raw_request(&mut s, method, path, &[("Connection", "close")], "").status
}

#[test]
fn made_up_methods_and_paths_add_no_metric_series() {
    let app = TestApp::sqlite();
    let shapes = |i: usize| {
        [
            (format!("BREW{i}"), format!("/nowhere/{i}")),
            (format!("X-{i}"), "/api/users/me".to_string()),
            ("GET".to_string(), format!("/no/such/{i}/path")),
            ("DELETE".to_string(), format!("/api/nothing-{i}")),
        ]
    };
    // Every shape once, so that its `other` series exist.
    for (method, path) in shapes(0) {
        any_method(&app, &method, &path);
    }
    metric_series(&app); // `GET /metrics` has its own series.
    let (before, size_before) = metric_series(&app);
    for i in 1..=50 {
        for (method, path) in shapes(i) {
            let status = any_method(&app, &method, &path);
            assert!((400..500).contains(&status), "{method} {path}: {status}");
        }
    }
    let (after, size_after) = metric_series(&app);
    assert_eq!(after, before, "200 odd requests added series");
    assert!(
        size_after < size_before + 2048,
        "the page grew from {size_before} to {size_after} bytes"
    );
    let page = ureq::get(&app.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(!page.contains("BREW"), "a made-up method became a label");
    assert!(!page.contains("/nowhere/"), "a path became a label");
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The process umask, for the duration of a test that needs it (the spawned server
/// inherits it).
#[cfg(unix)]
struct Umask(libc::mode_t);

#[cfg(unix)]
impl Umask {
    fn set(mask: libc::mode_t) -> Umask {
        // SAFETY: umask only swaps the process's file-creation mask.
        Umask(unsafe { libc::umask(mask) })
    }
}

#[cfg(unix)]
impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as above, putting the previous mask back.
        unsafe { libc::umask(self.0) };
    }
}

#[cfg(unix)]
#[test]
fn database_secret_and_uploads_are_private_whatever_the_umask() {
    let app = {
        let _open = Umask::set(0);
        // No configured secret: the server generates and keeps one in the data dir.
        TestApp::start(Backend::Sqlite, &[("SPOTTER_JWT_SECRET", "")])
    };
    let user = app.user("member");
    let (status, file) = crate::files::upload(&app, &user.token, "p.png", crate::files::PNG);
    assert_eq!(status, 201, "{file}");
    let root = app.dir.path();
    let data = root.join("data");
    let id = file["id"].as_i64().unwrap().to_string();
    assert_eq!(mode(&root.join("spotter.db")), 0o600, "database");
    for extra in ["spotter.db-wal", "spotter.db-shm"] {
        let p = root.join(extra);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{extra}");
        }
    }
    assert_eq!(mode(&data), 0o700, "data dir");
    assert_eq!(mode(&data.join("jwt_secret")), 0o600, "secret");
    assert_eq!(mode(&data.join("uploads")), 0o700, "uploads dir");
    assert_eq!(mode(&data.join("uploads").join(&id)), 0o600, "upload");
}

fn upload_status(app: &TestApp, token: &str) -> (u16, Value) {
    crate::files::upload(app, token, "p.png", crate::files::PNG)
}

fn files_on_disk(app: &TestApp) -> Vec<String> {
    match std::fs::read_dir(app.dir.path().join("data/uploads")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Room for exactly two test PNGs (67 bytes each).
const TWO_PNGS: &[(&str, &str)] = &[("SPOTTER_UPLOAD_QUOTA_BYTES", "200")];

fn uploads_have_a_per_user_quota(app: &TestApp) {
    let user = app.user("member");
    for _ in 0..2 {
        assert_eq!(upload_status(app, &user.token).0, 201);
    }
    let (status, body) = upload_status(app, &user.token);
    assert_eq!(status, 413, "{body}");
    assert_error(&body, "too_large");
    assert_eq!(files_on_disk(app).len(), 2, "{:?}", files_on_disk(app));
    // The quota is per user.
    let other = app.user("member");
    assert_eq!(upload_status(app, &other.token).0, 201);

    // Concurrent uploads cannot pass it either.
    let racer = app.user("member");
    let results: Vec<(u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| upload_status(app, &racer.token)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(stored, 2, "{results:?}");
    for (status, body) in &results {
        if *status != 201 {
            assert_eq!(*status, 413, "{body}");
            assert_error(body, "too_large");
        }
    }
    let on_disk = files_on_disk(app);
    assert_eq!(
        on_disk.len(),
        5,
        "nothing half-written is left: {on_disk:?}"
    );
}
crate::both_backends!(env: TWO_PNGS; uploads_have_a_per_user_quota);

fn download_status(app: &TestApp, id: &Value) -> u16 {
    match ureq::get(&app.url(&format!("/api/files/{id}"))).call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("download: {e}"),
    }
}

fn unattached_uploads_are_removed(app: &TestApp) {
    let trainer = app.user("trainer");
    let member = app.user("member");
    let (_, kept) = upload_status(app, &member.token);
    let (_, orphan) = upload_status(app, &member.token);
    let uploaded = Instant::now();
    let (status, conv) = app.post(
        "/api/chat/conversations",
        &member.token,
        json!({"peer_id": trainer.id}),
    );
    assert!(status == 200 || status == 201, "{conv}");
    let (status, body) = app.post(
        "/api/chat/messages",
        &member.token,
        json!({"conversation_id": conv["id"], "content": "look", "client_msg_id": "o1",
               "attachment_id": kept["id"]}),
    );
    assert_eq!(status, 201, "{body}");
    // Sweeps run every second; the orphan is younger than its 3 s for a while.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(uploaded.elapsed()));
    assert_eq!(
        download_status(app, &orphan["id"]),
        200,
        "removed too early"
    );
    eventually(WAIT, "the orphan upload to go", || {
        (download_status(app, &orphan["id"]) == 404).then_some(())
    });
    assert!(uploaded.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        download_status(app, &kept["id"]),
        200,
        "an attachment stays"
    );
    let on_disk = files_on_disk(app);
    assert_eq!(on_disk, vec![kept["id"].to_string()], "the bytes went too");
    // Its bytes no longer count against the quota (two fit again).
    let (status, body) = upload_status(app, &member.token);
    assert_eq!(status, 201, "{body}");
}
crate::both_backends!(env: &[
    ("SPOTTER_UPLOAD_ORPHAN_SECS", "3"),
    ("SPOTTER_SWEEP_INTERVAL_SECS", "1"),
    ("SPOTTER_UPLOAD_QUOTA_BYTES", "200"),
]; unattached_uploads_are_removed);

/// Posts on one kept-alive connection; every answer must keep it open.
fn posts_on_one_connection(app: &TestApp, token: &str, path: &str, body: &str, n: usize) {
    let mut s = connect_from(app, HOME);
    let auth = format!("Bearer {token}");
    for i in 0..n {
        let r = raw_request(
            &mut s,
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        );
        assert!(
            (200..300).contains(&r.status),
            "{path} #{i}: {} {}",
            r.status,
            r.body
        );
        assert_ne!(
            r.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("close"),
            "{path} #{i} closed the connection"
        );
    }
}

#[test]
fn bodies_a_handler_ignores_keep_the_connection_alive() {
    let app = TestApp::sqlite();
    let user = app.user("member");
    posts_on_one_connection(&app, &user.token, "/api/users/heartbeat", "{}", 5);
    posts_on_one_connection(&app, &user.token, "/api/users/heartbeat/", "{}", 3);
    posts_on_one_connection(&app, &user.token, "/api/users/heartbeat", "", 3);
    // Chunked bodies too.
    let mut s = connect_from(&app, HOME);
    for i in 0..3 {
        let req = format!(
            "POST /api/users/heartbeat HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n",
            user.token
        );
        s.write_all(req.as_bytes()).unwrap();
        let r = read_response(&mut s);
        assert!((200..300).contains(&r.status), "chunked #{i}: {}", r.status);
        assert_ne!(r.header("connection"), Some("close"), "chunked #{i}");
    }
    // A logout with a body that says nothing, then more requests on that connection.
    let other = app.login(&user.username, PASSWORD);
    let mut s = connect_from(&app, HOME);
    let auth = format!("Bearer {}", other.token);
    let r = raw_request(
        &mut s,
        "POST",
        "/api/auth/logout",
        &[("Authorization", &auth)],
        "{}",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = raw_request(
        &mut s,
        "POST",
        "/api/users/heartbeat",
        &[("Authorization", &auth)],
        "{}",
    );
    assert_eq!(
        r.status, 401,
        "the same connection answers, the token is revoked"
    );
    // Bigger bodies still arrive whole (a JSON body past the small-body bound).
    let admin = app.admin();
    let long_name = "n".repeat(60);
    let padding = " ".repeat(40 * 1024);
    let body = format!(
        r#"{{"username":"big_{}","password":"{PASSWORD}","role":"member","display_name":"{long_name}"}}{padding}"#,
        uuid_like()
    );
    let mut s = connect_from(&app, HOME);
    let auth = format!("Bearer {}", admin.token);
    let r = raw_request(
        &mut s,
        "POST",
        "/api/users",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["display_name"], long_name.as_str());
    // The same past the bound in chunks: what was read first, then the rest.
    let body = body.replace("big_", "big2_");
    let mut req = format!(
        "POST /api/users HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for piece in body.as_bytes().chunks(7000) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            std::str::from_utf8(piece).unwrap()
        ));
    }
    req.push_str("0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["display_name"], long_name.as_str());
}

/// The server's resident memory in KiB (Linux).
fn rss_kib(app: &TestApp) -> u64 {
    let pid = app.pid().expect("server running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[cfg(target_os = "linux")]
#[test]
fn memory_at_rest_after_100_logins_stays_small() {
    let app = TestApp::sqlite();
    let at_start = rss_kib(&app);
    // Four at a time, so that both hasher threads work.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    app.admin();
                }
            });
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let at_rest = rss_kib(&app);
    eprintln!("RSS: {at_start} KiB at start, {at_rest} KiB at rest after 100 logins");
    assert!(
        at_rest < 64 * 1024,
        "{at_rest} KiB at rest after 100 logins (started at {at_start} KiB)"
    );
}
