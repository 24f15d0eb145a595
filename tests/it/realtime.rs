//! The socket (issue #3): authentication, the envelope, bad frames, limits, close codes,
//! token expiry and refresh, shutdown.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[test]
fn authenticates_by_query_or_frame() {
    let app = TestApp::sqlite();
    let admin = app.admin();
    // By query string.
    let mut ws = app.ws(Some(&admin.token));
    let ok = ws.expect("authentication_success");
    assert_eq!(ok["payload"]["user"]["username"], "admin");
    // Admins are dashboards: they get the stats on connect.
    ws.expect("initial_stats");

    // By frame, with frames before it refused but the socket kept open.
    let mut ws = app.ws_path("/ws/chat/", None);
    ws.send_ref("ping", "early", json!({}));
    let err = ws.expect("error");
    assert_eq!(err["payload"]["code"], "unauthorized");
    assert_eq!(err["ref"], "early");
    ws.send_ref("authenticate", "a1", json!({"token": admin.token}));
    let ok = ws.expect("authentication_success");
    assert_eq!(ok["ref"], "a1");
    ws.send_ref("ping", "p1", json!({"timestamp": 12345}));
    let pong = ws.expect("pong");
    assert_eq!(pong["ref"], "p1");
    assert_eq!(pong["payload"]["timestamp"], 12345);
    ws.send_ref("heartbeat", "h1", json!({}));
    assert_eq!(ws.expect("heartbeat_ack")["ref"], "h1");
}

#[test]
fn refused_sockets_are_closed_with_their_code() {
    let app = TestApp::start(Backend::Sqlite, &[("SPOTTER_WS_AUTH_TIMEOUT_SECS", "1")]);
    // A bad token: upgraded, then closed with 4001.
    let mut ws = app.ws(Some("not-a-token"));
    assert_eq!(ws.expect_close(), 4001);
    // A bad token in the frame.
    let mut ws = app.ws(None);
    ws.send("authenticate", json!({"token": "nope"}));
    assert_eq!(ws.expect_close(), 4001);
    // No authentication in time.
    let mut ws = app.ws(None);
    assert_eq!(ws.expect_close(), 4001);
}

#[test]
fn bad_frames_get_errors_and_the_socket_stays_usable() {
    let app = TestApp::sqlite();
    let member = app.user("member");
    let mut ws = app.ws_auth(&member);
    let cases = [
        ("not json at all", "invalid_request"),
        ("[1,2,3]", "invalid_request"),
        (r#"{"payload":{}}"#, "invalid_request"),
        (r#"{"type":"teleport","ref":"t"}"#, "invalid_request"),
        (
            r#"{"type":"join_conversation","payload":{}}"#,
            "validation_failed",
        ),
        (
            r#"{"type":"send_message","payload":{"conversation_id":"x"}}"#,
            "validation_failed",
        ),
    ];
    for (text, code) in cases {
        ws.send_raw(text);
        let err = ws.expect("error");
        assert_eq!(err["payload"]["code"], code, "{text}");
        assert!(err["payload"]["message"].is_string());
    }
    // The ref comes back on errors too.
    ws.send_raw(r#"{"type":"teleport","ref":"r-9"}"#);
    assert_eq!(ws.expect("error")["ref"], "r-9");
    // Members may not watch presence or the general attendance room.
    ws.send_ref("subscribe_presence", "sp", json!({}));
    let err = ws.expect("error");
    assert_eq!(err["payload"]["code"], "forbidden");
    assert_eq!(err["ref"], "sp");
    ws.send("join_general_attendance", json!({}));
    assert_eq!(ws.expect("error")["payload"]["code"], "forbidden");
    ws.send("subscribe_checkins", json!({}));
    assert_eq!(ws.expect("error")["payload"]["code"], "forbidden");
    // Still open and working.
    ws.send_ref("ping", "still", json!({}));
    assert_eq!(ws.expect("pong")["ref"], "still");
}

#[test]
fn oversized_frames_close_with_1009() {
    let app = TestApp::sqlite();
    let member = app.user("member");
    let mut ws = app.ws_auth(&member);
    ws.send_raw(&format!(
        r#"{{"type":"ping","payload":{{"x":"{}"}}}}"#,
        "y".repeat(70 * 1024)
    ));
    assert_eq!(ws.expect_close(), 1009);
}

#[test]
fn floods_are_rate_limited_without_disturbing_others() {
    let app = TestApp::start(
        Backend::Sqlite,
        &[("SPOTTER_WS_RATE_PER_SEC", "5"), ("SPOTTER_WS_BURST", "10")],
    );
    let flooder = app.user("member");
    let calm = app.user("member");
    let mut bad = app.ws_auth(&flooder);
    let mut good = app.ws_auth(&calm);
    for i in 0..200 {
        bad.send_raw(&format!("garbage {i}"));
    }
    // The flooder is told, then cut off with 4008.
    let mut saw_rate_limited = false;
    while bad.closed.is_none() {
        match bad.next_within(Duration::from_millis(500)) {
            Some(f) if f["payload"]["code"] == "rate_limited" => saw_rate_limited = true,
            Some(_) => {}
            None => break,
        }
    }
    assert!(saw_rate_limited, "the flooder is told it is rate limited");
    assert_eq!(bad.expect_close(), 4008);
    // The other socket is unaffected.
    for i in 0..5 {
        good.send_ref("ping", &format!("g{i}"), json!({}));
        assert_eq!(good.expect("pong")["ref"], format!("g{i}"));
    }
}

#[test]
fn suspension_closes_every_socket_with_4003() {
    let app = TestApp::sqlite();
    let admin = app.admin();
    let member = app.user("member");
    let mut a = app.ws_auth(&member);
    let mut b = app.ws_auth(&member);
    let (status, _) = app.call(
        "PATCH",
        &format!("/api/users/{}", member.id),
        Some(&admin.token),
        Some(json!({"account_status": "banned"})),
    );
    assert_eq!(status, 200);
    assert_eq!(a.expect_close(), 4003);
    assert_eq!(b.expect_close(), 4003);
    // And a new socket is refused with 4003 too.
    let mut c = app.ws(Some(&member.token));
    assert_eq!(c.expect_close(), 4003);
}

#[test]
fn logout_closes_that_tokens_sockets_with_4001() {
    let app = TestApp::sqlite();
    let member = app.user("member");
    let other_login = app.login(&member.username, PASSWORD);
    let mut ws = app.ws_auth(&member);
    let mut other = app.ws_auth(&other_login);
    let (status, _) = app.call("POST", "/api/auth/logout", Some(&member.token), None);
    assert_eq!(status, 204);
    assert_eq!(ws.expect_close(), 4001);
    // The other session's socket lives on.
    other.send_ref("ping", "alive", json!({}));
    assert_eq!(other.expect("pong")["ref"], "alive");
    // The revoked token cannot open a new socket.
    let mut again = app.ws(Some(&member.token));
    assert_eq!(again.expect_close(), 4001);
}

#[test]
fn tokens_expire_on_sockets_unless_refreshed() {
    let app = TestApp::start(Backend::Sqlite, &[("SPOTTER_ACCESS_TTL_SECS", "4")]);
    let member = app.user("member");
    // Less than a minute left: token_expiring at once, then 4001 at expiry.
    let mut ws = app.ws_auth(&member);
    let warn = ws.expect("token_expiring");
    assert!(warn["payload"]["expires_at"].is_string());
    let mut kept = app.ws_auth(&member);
    kept.expect("token_expiring");

    // Two seconds later the second socket moves to a fresh token (valid 4 s from now).
    std::thread::sleep(Duration::from_secs(2));
    let (status, pair) = app.call(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": member.refresh})),
    );
    assert_eq!(status, 200);
    kept.send_ref(
        "refresh_token",
        "rt",
        json!({"token": pair["access_token"]}),
    );
    let ack = kept.expect("token_refreshed");
    assert_eq!(ack["ref"], "rt");
    assert!(ack["payload"]["expires_at"].is_string());

    assert_eq!(
        ws.expect_close(),
        4001,
        "the unrefreshed socket closes at expiry"
    );
    kept.send_ref("ping", "after", json!({}));
    assert_eq!(
        kept.expect("pong")["ref"],
        "after",
        "the refreshed one lives on"
    );

    // A token of another user is refused.
    let other = app.user("member");
    kept.send("refresh_token", json!({"token": other.token}));
    assert_eq!(kept.expect("error")["payload"]["code"], "forbidden");
}

#[test]
fn shutdown_closes_sockets_with_4200() {
    let mut app = TestApp::sqlite();
    let member = app.user("member");
    let mut ws = app.ws_auth(&member);
    let status = app.stop().expect("server was running");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert_eq!(ws.expect_close(), 4200);
    assert!(app.log().contains("presence flushed"), "{}", app.log());
}

#[test]
fn silent_sockets_are_closed() {
    let app = TestApp::start(
        Backend::Sqlite,
        &[("SPOTTER_WS_PING_SECS", "1"), ("SPOTTER_WS_IDLE_SECS", "2")],
    );
    let member = app.user("member");
    let mut ws = app.ws_auth(&member);
    // Not reading means not answering the server's pings.
    std::thread::sleep(Duration::from_secs(4));
    let code = ws.expect_close();
    assert_eq!(code, 1000, "idle socket closed normally");
    // A socket that keeps reading (and so answers pings) stays open past the idle time.
    let mut alive = app.ws_auth(&member);
    let _ = alive.next_within(Duration::from_secs(4));
    alive.send_ref("ping", "x", json!({}));
    assert_eq!(alive.expect("pong")["ref"], "x");
}

#[test]
fn browser_origins_are_checked() {
    let app = TestApp::start(
        Backend::Sqlite,
        &[(
            "SPOTTER_ALLOWED_ORIGINS",
            "https://gym.example, http://localhost:3000",
        )],
    );
    let member = app.user("member");
    let open = |origin: &str| {
        use tungstenite::client::IntoClientRequest;
        let mut req = format!("{}/ws?token={}", app.ws_base, member.token)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        let (socket, _) = tungstenite::connect(req).expect("upgraded");
        socket
    };
    let mut bad = open("https://evil.example");
    let code = loop {
        match bad.read() {
            Ok(tungstenite::Message::Close(f)) => break f.map(|f| u16::from(f.code)).unwrap_or(0),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, 4003);
    let mut good = open("https://gym.example");
    match good.read().expect("a frame") {
        tungstenite::Message::Text(t) => assert!(t.contains("authentication_success"), "{t}"),
        other => panic!("{other:?}"),
    }
}

/// A client TCP socket with a tiny receive buffer, so that a client that stops reading
/// backs up into the server quickly.
pub(crate) fn tiny_window_socket(addr: &str) -> std::net::TcpStream {
    use std::net::SocketAddr;
    use std::os::fd::FromRawFd;
    let addr: SocketAddr = addr.parse().unwrap();
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 test server")
    };
    // SAFETY: plain socket calls on a fresh descriptor that the TcpStream then owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of_val(&size) as libc::socklen_t,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of_val(&sa) as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect");
        std::net::TcpStream::from_raw_fd(fd)
    }
}

fn metric(app: &TestApp, name: &str) -> f64 {
    let text = ureq::get(&app.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn slow_consumers_are_cut_off_and_others_get_everything() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let app = TestApp::start(Backend::Sqlite, &[("SPOTTER_WS_QUEUE", "16")]);
    let trainer = app.user("trainer");
    let member = app.user("member");
    let (_, conv) = app.post(
        "/api/chat/conversations",
        &member.token,
        json!({"peer_id": trainer.id}),
    );
    let conv = conv["id"].as_i64().unwrap();

    // The slow socket joins, then never reads again until the end.
    let addr = app.base.trim_start_matches("http://").to_string();
    let stream = tiny_window_socket(&addr);
    let url = format!("{}/ws?token={}", app.ws_base, member.token);
    let (mut slow, _) = tungstenite::client(url, stream).expect("handshake");
    slow.send(tungstenite::Message::Text(
        json!({"type": "join_conversation", "payload": {"conversation_id": conv}}).to_string(),
    ))
    .unwrap();
    loop {
        if let tungstenite::Message::Text(t) = slow.read().unwrap() {
            if t.contains("conversation_joined") {
                break;
            }
        }
    }

    // A healthy socket in the same room reads everything, on its own thread.
    let mut healthy = app.ws_auth(&member);
    healthy.send("join_conversation", json!({"conversation_id": conv}));
    healthy.expect("conversation_joined");
    let seen = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(f) = healthy.next_within(Duration::from_millis(100)) {
                    if f["type"] == "new_message" {
                        seen.lock()
                            .unwrap()
                            .push(f["payload"]["message"]["seq"].as_i64().unwrap());
                    }
                }
            }
        })
    };

    let body = "x".repeat(4000);
    let mut sent = 0;
    while metric(&app, "spotter_ws_slow_closed_total") < 1.0 {
        for _ in 0..25 {
            sent += 1;
            let (status, _) = app.post(
                "/api/chat/messages",
                &trainer.token,
                json!({"conversation_id": conv, "content": body, "client_msg_id": format!("flood-{sent}")}),
            );
            assert_eq!(status, 201);
        }
        assert!(sent < 5000, "the slow socket was never cut off");
    }
    eventually(WAIT, "the healthy socket to get every message", || {
        (seen.lock().unwrap().len() == sent).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let seqs = seen.lock().unwrap().clone();
    assert_eq!(
        seqs,
        (1..=sent as i64).collect::<Vec<_>>(),
        "in order, no gaps, no repeats"
    );

    // The slow socket, read at last: what was queued, then 4029.
    slow.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = 0;
    let code = loop {
        match slow.read() {
            Ok(tungstenite::Message::Text(_)) => got += 1,
            Ok(tungstenite::Message::Close(f)) => break f.map(|f| u16::from(f.code)).unwrap_or(0),
            Ok(_) => {}
            Err(e) => panic!("no close frame after {got} frames: {e}"),
        }
    };
    assert_eq!(code, 4029);
    assert!(
        got < sent,
        "the slow socket was cut off before the end ({got} of {sent})"
    );
}
