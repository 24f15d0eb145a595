//! Bad input at the live server (issue 12): thousands of random frames at one socket while
//! two others chat, and random bodies and query strings at every JSON endpoint. Each gets
//! the contract's error (never `internal`, never a 5xx), nothing else is disturbed, and the
//! server keeps serving. Random but repeatable: the seed is printed.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::*;

/// The error codes a client may see for bad input (PROTOCOL §3, §4).
const INPUT_ERRORS: &[&str] = &[
    "invalid_request",
    "unauthorized",
    "invalid_credentials",
    "forbidden",
    "account_inactive",
    "not_found",
    "conflict",
    "too_large",
    "unsupported_media_type",
    "validation_failed",
    "rate_limited",
];

const FRAME_TYPES: &[&str] = &[
    "authenticate",
    "refresh_token",
    "ping",
    "heartbeat",
    "join_conversation",
    "leave_conversation",
    "send_message",
    "typing",
    "read_receipt",
    "check_in",
    "check_out",
    "subscribe_checkins",
    "unsubscribe_checkins",
    "join_attendance_room",
    "leave_attendance_room",
    "join_general_attendance",
    "leave_general_attendance",
    "subscribe_presence",
    "unsubscribe_presence",
];

const FIELDS: &[&str] = &[
    "token",
    "timestamp",
    "conversation_id",
    "since_seq",
    "content",
    "client_msg_id",
    "attachment_id",
    "is_typing",
    "seq",
    "member_id",
    "location",
    "notes",
    "idempotency_key",
    "employee_id",
    "username",
    "password",
    "role",
    "display_name",
    "account_status",
    "refresh_token",
    "peer_id",
    "status",
    "device",
];

fn seed() -> u64 {
    let seed = std::env::var("SPOTTER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("fuzz seed: {seed} (SPOTTER_FUZZ_SEED={seed} repeats this run)");
    seed
}

/// A JSON number no i64 holds, as text.
fn huge_number(rng: &mut StdRng) -> String {
    match rng.gen_range(0..5) {
        0 => "1e400".into(),
        1 => "-99999999999999999999999".into(),
        2 => "9223372036854775808".into(),
        3 => format!(
            "{}.{}e{}",
            rng.gen::<u32>(),
            rng.gen::<u16>(),
            rng.gen_range(-400..400)
        ),
        _ => "1".repeat(rng.gen_range(20..400)),
    }
}

/// Random JSON text: values of every type, real field names, nulls, huge numbers, odd and
/// long strings, some deep nesting.
fn json_text(rng: &mut StdRng, depth: u32) -> String {
    let pick = if depth > 3 {
        rng.gen_range(0..7)
    } else {
        rng.gen_range(0..10)
    };
    match pick {
        0 => "null".into(),
        1 => rng.gen::<bool>().to_string(),
        2 => rng.gen::<i64>().to_string(),
        3 => huge_number(rng),
        4 => Value::from(random_string(rng)).to_string(),
        5 => format!(
            "\"{}\"",
            ["\\ud800", "\\u0000", "\\udfff\\ud800", "\\\"", "\u{feff}"][rng.gen_range(0..5)]
        ),
        6 => rng.gen_range(-3i64..100).to_string(),
        7 => {
            let n = rng.gen_range(0..5);
            let items: Vec<String> = (0..n).map(|_| json_text(rng, depth + 1)).collect();
            format!("[{}]", items.join(","))
        }
        8 => {
            let n = rng.gen_range(0..6);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    let key = if rng.gen_bool(0.8) {
                        FIELDS[rng.gen_range(0..FIELDS.len())].to_string()
                    } else {
                        random_string(rng)
                    };
                    format!("{}:{}", Value::from(key), json_text(rng, depth + 1))
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        _ => {
            let n = rng.gen_range(100..3000);
            let (open, close) = if rng.gen() {
                ("[", "]")
            } else {
                ("{\"a\":", "}")
            };
            format!("{}1{}", open.repeat(n), close.repeat(n))
        }
    }
}

fn random_string(rng: &mut StdRng) -> String {
    match rng.gen_range(0..6) {
        0 => String::new(),
        1 => "x".repeat(rng.gen_range(4000..20_000)),
        2 => "é".repeat(rng.gen_range(1..5000)),
        3 => (0..rng.gen_range(1..40))
            .map(|_| char::from_u32(rng.gen_range(0..0x11_0000)).unwrap_or('\u{fffd}'))
            .collect(),
        _ => (0..rng.gen_range(1..20))
            .map(|_| rng.gen_range(b' '..=b'~') as char)
            .collect(),
    }
}

/// A random client frame: garbage, a broken envelope, or a real type with a random payload.
fn random_frame(rng: &mut StdRng) -> String {
    match rng.gen_range(0..10) {
        0 => String::from_utf8_lossy(
            &(0..rng.gen_range(0..200))
                .map(|_| rng.gen())
                .collect::<Vec<u8>>(),
        )
        .into_owned(),
        1 => json_text(rng, 0),
        2 => format!(
            r#"{{"type":{},"ref":{},"payload":{}}}"#,
            json_text(rng, 2),
            json_text(rng, 2),
            json_text(rng, 1)
        ),
        _ => {
            let kind = FRAME_TYPES[rng.gen_range(0..FRAME_TYPES.len())];
            let mut fields = Vec::new();
            for _ in 0..rng.gen_range(0..5) {
                let f = FIELDS[rng.gen_range(0..FIELDS.len())];
                fields.push(format!("\"{f}\":{}", json_text(rng, 1)));
            }
            format!(
                r#"{{"type":"{kind}","ref":"f{}","payload":{{{}}}}}"#,
                rng.gen::<u32>(),
                fields.join(",")
            )
        }
    }
}

fn assert_input_error(f: &Value, context: &str) {
    let code = f["payload"]["code"].as_str().unwrap_or("");
    assert!(
        INPUT_ERRORS.contains(&code),
        "error frame with code {code:?} for {context}: {f}"
    );
    assert!(f["payload"]["message"].is_string(), "{f}");
}

#[test]
fn random_frames_at_a_live_socket_while_others_chat() {
    let mut rng = StdRng::seed_from_u64(seed());
    let app = TestApp::start(
        Backend::Sqlite,
        &[
            ("SPOTTER_WS_RATE_PER_SEC", "100000"),
            ("SPOTTER_WS_BURST", "100000"),
        ],
    );
    let fuzzer = app.user("member");
    let trainer = app.user("trainer");
    let member = app.user("member");
    let (status, conv) = app.post(
        "/api/chat/conversations",
        &member.token,
        json!({"peer_id": trainer.id}),
    );
    assert!(status == 200 || status == 201, "{conv}");
    let conv = conv["id"].as_i64().unwrap();

    // The chat: the trainer sends, the member must receive every message, in order.
    const MESSAGES: usize = 300;
    let chat_app_base = app.ws_base.clone();
    let _ = chat_app_base;
    let mut sender = app.ws_auth(&trainer);
    let mut receiver = app.ws_auth(&member);
    for ws in [&mut sender, &mut receiver] {
        ws.send_ref("join_conversation", "j", json!({"conversation_id": conv}));
        ws.expect("conversation_joined");
    }
    let chat = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..MESSAGES {
            sender.send_ref(
                "send_message",
                &format!("m{i}"),
                json!({"conversation_id": conv, "content": format!("hello {i}"), "client_msg_id": format!("c{i}")}),
            );
            let ack = sender.expect("message_ack");
            assert_eq!(ack["ref"], format!("m{i}"));
            acked.push(ack["payload"]["message"]["seq"].as_i64().unwrap());
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let mut received = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while received.len() < MESSAGES && Instant::now() < deadline {
            if let Some(f) = receiver.next_within(Duration::from_millis(200)) {
                if f["type"] == "new_message" {
                    received.push(f["payload"]["message"]["seq"].as_i64().unwrap());
                }
            }
        }
        (acked, received)
    });

    // Meanwhile: a few thousand random frames at another socket, read as they come back.
    let mut ws = app.ws_auth(&fuzzer);
    const FRAMES: usize = 3000;
    let mut errors = 0;
    for i in 0..FRAMES {
        let frame = random_frame(&mut rng);
        if frame.len() > 60 * 1024 {
            continue; // a frame over 64 KiB closes with 1009: tested elsewhere
        }
        ws.send_raw(&frame);
        if i % 25 == 24 {
            while let Some(f) = ws.next_within(Duration::from_millis(20)) {
                if f["type"] == "error" {
                    errors += 1;
                    assert_input_error(&f, "a random frame");
                }
            }
            assert!(
                ws.closed.is_none(),
                "the fuzzed socket was closed: {:?}",
                ws.closed
            );
        }
    }
    while let Some(f) = ws.next_within(Duration::from_millis(300)) {
        if f["type"] == "error" {
            errors += 1;
            assert_input_error(&f, "a random frame");
        }
    }
    assert!(
        errors > FRAMES / 2,
        "most random frames are refused ({errors})"
    );
    // Binary frames are refused with an error frame; the socket stays open.
    ws.send_binary(vec![0xff, 0xfe, 0x00, 0xc3]);
    assert_input_error(&ws.expect("error"), "a binary frame");
    ws.send_ref("ping", "alive", json!({}));
    assert_eq!(ws.expect("pong")["ref"], "alive");

    let (acked, received) = chat.join().unwrap();
    let expected: Vec<i64> = (1..=MESSAGES as i64).collect();
    assert_eq!(acked, expected, "every message acked, seqs without gaps");
    assert_eq!(
        received, expected,
        "the other side got every message, in order"
    );

    // Invalid UTF-8 in a text frame breaks the WebSocket protocol itself: that socket is
    // failed (RFC 6455 §8.1), and only that one.
    let mut broken = app.ws_auth(&fuzzer);
    broken.send_invalid_utf8_text(&[b'{', 0xff, 0xfe, b'}']);
    let code = broken.expect_close();
    assert!(
        code == 1002 || code == 1007 || code == 1006,
        "close code {code}"
    );
    ws.send_ref("ping", "still", json!({}));
    assert_eq!(ws.expect("pong")["ref"], "still");

    // Healthy: liveness, readiness, and a fresh login.
    assert_eq!(app.call("GET", "/healthz", None, None).0, 200);
    assert_eq!(app.call("GET", "/readyz", None, None).0, 200);
    app.login(&member.username, PASSWORD);
    assert!(!app.log().contains("panicked"), "a panic in the log");
}

/// One raw HTTP request; answers (status, body as JSON or a string).
fn raw(app: &TestApp, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    let mut req = ureq::request(method, &app.url(path)).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    req = req.set("Content-Type", "application/json");
    let res = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = res.status();
    let text = res.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn random_body(rng: &mut StdRng, fields: &[&str]) -> Vec<u8> {
    match rng.gen_range(0..8) {
        0 => (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
        1 => json_text(rng, 0).into_bytes(),
        2 => {
            // Invalid UTF-8 inside a string.
            let mut b = format!("{{\"{}\":\"", fields[0]).into_bytes();
            b.extend([0xff, 0xfe, 0xc3, 0x28]);
            b.extend(b"\"}");
            b
        }
        _ => {
            let mut parts = Vec::new();
            for f in fields {
                if rng.gen_bool(0.7) {
                    parts.push(format!("\"{f}\":{}", json_text(rng, 1)));
                }
            }
            format!("{{{}}}", parts.join(",")).into_bytes()
        }
    }
}

fn assert_no_5xx(status: u16, body: &Value, what: &str) {
    assert!(status < 500, "{what}: {status} {body}");
    if status >= 400 {
        let code = body["error"]["code"].as_str().unwrap_or("");
        assert!(INPUT_ERRORS.contains(&code), "{what}: {status} {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
}

#[test]
fn random_bodies_and_queries_get_contract_errors() {
    let mut rng = StdRng::seed_from_u64(seed());
    let app = TestApp::sqlite();
    let admin = app.admin();
    let victim = app.user("member");
    let trainer = app.user("trainer");
    let device = app.user("device");
    let patch = format!("/api/users/{}", victim.id);
    // (method, path, token, fields of the body)
    let endpoints: Vec<(&str, String, Option<String>, &[&str])> = vec![
        (
            "POST",
            "/api/auth/login".into(),
            None,
            &["username", "password"],
        ),
        ("POST", "/api/auth/refresh".into(), None, &["refresh_token"]),
        (
            "POST",
            "/api/users".into(),
            Some(admin.token.clone()),
            &["username", "password", "role", "display_name"],
        ),
        (
            "PATCH",
            patch,
            Some(admin.token.clone()),
            &["account_status", "role", "display_name", "password"],
        ),
        (
            "POST",
            "/api/chat/conversations".into(),
            Some(trainer.token.clone()),
            &["peer_id"],
        ),
        (
            "POST",
            "/api/chat/messages".into(),
            Some(trainer.token.clone()),
            &[
                "conversation_id",
                "content",
                "client_msg_id",
                "attachment_id",
            ],
        ),
        (
            "POST",
            "/api/chat/read".into(),
            Some(trainer.token.clone()),
            &["conversation_id", "seq"],
        ),
        (
            "POST",
            "/api/checkins".into(),
            Some(device.token.clone()),
            &["member_id", "location", "notes", "idempotency_key"],
        ),
        (
            "POST",
            "/api/checkins/checkout".into(),
            Some(device.token.clone()),
            &["member_id"],
        ),
        (
            "POST",
            "/api/attendance".into(),
            Some(admin.token.clone()),
            &[
                "employee_id",
                "status",
                "device",
                "timestamp",
                "idempotency_key",
            ],
        ),
        (
            "POST",
            "/api/users/heartbeat".into(),
            Some(trainer.token.clone()),
            &["status"],
        ),
    ];
    for (method, path, token, fields) in &endpoints {
        for _ in 0..120 {
            let body = random_body(&mut rng, fields);
            let (status, answer) = raw(&app, method, path, token.as_deref(), &body);
            assert_no_5xx(
                status,
                &answer,
                &format!(
                    "{method} {path} {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            );
        }
    }
    // The random PATCHes may have given the victim a valid new password, status or role:
    // put them back so that they can log in below.
    let (status, answer) = app.call(
        "PATCH",
        &format!("/api/users/{}", victim.id),
        Some(&admin.token),
        Some(json!({"account_status": "active", "role": "member", "password": PASSWORD})),
    );
    assert_eq!(status, 200, "{answer}");
    // Logout with random bodies, as a user who logs in again after each success.
    let mut user = app.login(&victim.username, PASSWORD);
    for _ in 0..60 {
        let body = random_body(&mut rng, &["refresh_token"]);
        let (status, answer) = raw(&app, "POST", "/api/auth/logout", Some(&user.token), &body);
        assert_no_5xx(status, &answer, "logout");
        if status == 204 {
            user = app.login(&victim.username, PASSWORD);
        }
    }
    // Random query strings on every GET that reads one.
    let gets: &[(&str, &[&str], &str)] = &[
        (
            "/api/chat/history",
            &[
                "conversation_id",
                "before_seq",
                "after_seq",
                "limit",
                "userId",
                "trainerId",
            ],
            "trainer",
        ),
        ("/api/users/all-users", &["role", "online", "q"], "admin"),
        ("/api/checkins", &["date", "member_id"], "admin"),
        ("/api/attendance", &["date", "employee_id"], "admin"),
        ("/api/trainers", &["q"], "trainer"),
    ];
    let values = |rng: &mut StdRng| -> String {
        match rng.gen_range(0..8) {
            0 => huge_number(rng),
            1 => rng.gen::<i64>().to_string(),
            2 => "".into(),
            3 => "%FF%FE%00".into(),
            4 => "2026-02-30".into(),
            5 => "-1".into(),
            6 => "x".repeat(rng.gen_range(1..5000)),
            _ => format!("{}", rng.gen_range(0..5)),
        }
    };
    for (path, params, who) in gets {
        let token = if *who == "admin" {
            &admin.token
        } else {
            &trainer.token
        };
        for _ in 0..100 {
            let mut q = Vec::new();
            for p in *params {
                if rng.gen_bool(0.6) {
                    q.push(format!("{p}={}", values(&mut rng)));
                }
            }
            let url = format!("{path}?{}", q.join("&"));
            let (status, answer) = raw(&app, "GET", &url, Some(token), b"");
            assert_no_5xx(
                status,
                &answer,
                &format!("GET {}", url.chars().take(200).collect::<String>()),
            );
        }
    }
    assert_eq!(app.call("GET", "/healthz", None, None).0, 200);
    app.login(&trainer.username, PASSWORD);
    assert!(!app.log().contains("panicked"), "a panic in the log");
}
