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
