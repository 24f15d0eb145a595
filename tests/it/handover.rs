//! The connection hand-over after a WebSocket handshake (`http::takeover`,
//! `realtime::wire`): what the client sent with its handshake is not lost, frames split
//! across reads or larger than one read arrive whole, and a refused upgrade gets the
//! contract's error and a closed connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A client text frame (masked, as RFC 6455 requires of clients).
fn client_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut out = vec![0x81];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn handshake(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn connect(app: &TestApp) -> TcpStream {
    let addr = app.base.trim_start_matches("http://");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp
}

/// Reads up to the end of the response head: (the head, what came after it).
fn read_head(tcp: &mut TcpStream) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = got.split_off(end + 4);
            return (String::from_utf8_lossy(&got).into_owned(), rest);
        }
        let n = tcp.read(&mut buf).expect("read the response head");
        assert!(n > 0, "connection closed before the response head: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn frames_sent_with_the_handshake_are_not_lost() {
    let app = TestApp::sqlite();
    let admin = app.admin();
    // The handshake and the first frames in one write: the server reads them together,
    // and the frames are already in the HTTP reader's hands when the socket takes over.
    // Repeated: a run where they happen to arrive apart proves nothing.
    for round in 0..20 {
        let mut tcp = connect(&app);
        let mut bytes = handshake("/ws").into_bytes();
        let auth = json!({"type": "authenticate", "ref": format!("a{round}"),
                          "payload": {"token": admin.token}});
        bytes.extend(client_frame(&auth.to_string()));
        let ping =
            json!({"type": "ping", "ref": format!("p{round}"), "payload": {"timestamp": round}});
        bytes.extend(client_frame(&ping.to_string()));
        tcp.write_all(&bytes).unwrap();
        let (head, rest) = read_head(&mut tcp);
        assert!(head.starts_with("HTTP/1.1 101"), "round {round}: {head}");
        let mut ws = Ws::from_raw(tcp, rest);
        let ok = ws.expect("authentication_success");
        assert_eq!(ok["ref"], format!("a{round}"));
        let pong = ws.expect("pong");
        assert_eq!(pong["ref"], format!("p{round}"));
        assert_eq!(pong["payload"]["timestamp"], round);
        ws.close();
    }
}

#[test]
fn frames_split_across_reads_or_larger_than_one_read_arrive_whole() {
    let app = TestApp::sqlite();
    let admin = app.admin();
    let mut tcp = connect(&app);
    tcp.write_all(handshake(&format!("/ws?token={}", admin.token)).as_bytes())
        .unwrap();
    let (head, rest) = read_head(&mut tcp);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let writer = tcp.try_clone().unwrap();
    let mut ws = Ws::from_raw(tcp, rest);
    ws.expect("authentication_success");
    // A 60 KB frame (the server reads at most 16 KiB at a time), written in pieces of
    // 1,000 bytes with pauses, so that it arrives in many reads.
    let pad = "x".repeat(60_000);
    let big = json!({"type": "ping", "ref": "big", "payload": {"timestamp": 7, "pad": pad}});
    let frame = client_frame(&big.to_string());
    assert!(frame.len() > 60_000 && frame.len() < 64 * 1024);
    let mut writer = writer;
    for piece in frame.chunks(1000) {
        writer.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let answer = ws.expect_ref("big");
    assert!(
        answer["type"] == "pong" || answer["type"] == "error",
        "the big frame was read whole and answered: {answer}"
    );
    // Then many small frames in one write: each is answered, in order.
    let mut burst = Vec::new();
    for i in 0..20 {
        let ping = json!({"type": "ping", "ref": format!("s{i}"), "payload": {"timestamp": i}});
        burst.extend(client_frame(&ping.to_string()));
    }
    writer.write_all(&burst).unwrap();
    for i in 0..20 {
        let pong = ws.expect("pong");
        assert_eq!(pong["ref"], format!("s{i}"));
    }
}

#[test]
fn refused_upgrades_get_the_contracts_error_and_a_closed_connection() {
    let app = TestApp::sqlite();
    let cases: [(&str, String, u16); 3] = [
        ("an unknown path", handshake("/ws/nowhere"), 404),
        (
            "a conversation id that is not a number",
            handshake("/ws/conversations/abc"),
            404,
        ),
        (
            "no Sec-WebSocket-Key",
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
                .to_string(),
            400,
        ),
    ];
    for (what, request, status) in cases {
        let mut tcp = connect(&app);
        tcp.write_all(request.as_bytes()).unwrap();
        let mut all = Vec::new();
        let deadline = Instant::now() + WAIT;
        // Read to the end: the server closes the connection after the answer.
        let mut buf = [0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "{what}: connection not closed");
            match tcp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{what}: {e} after {:?}", String::from_utf8_lossy(&all)),
            }
        }
        let text = String::from_utf8_lossy(&all).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a response");
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {head}"
        );
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("connection: close"), "{what}: {head}");
        let body: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body:?}"));
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
    }
    // The server still serves everyone else.
    let admin = app.admin();
    let mut ws = app.ws(Some(&admin.token));
    ws.expect("authentication_success");
}

#[test]
fn shutdown_closes_every_socket_with_4200_before_the_workers_stop() {
    // The sockets run in tasks of their own after the hand-over; the drain waits for
    // them, so that none is dropped with its close frame unwritten. Many sockets, so
    // that some are still closing when the HTTP workers are told to stop.
    let mut app = TestApp::start(Backend::Sqlite, &[("SPOTTER_WS_MAX_PER_USER", "0")]);
    let users: Vec<Login> = (0..4).map(|_| app.user("member")).collect();
    let mut sockets: Vec<Ws> = (0..400).map(|i| app.ws_auth(&users[i % 4])).collect();
    let status = app.stop().expect("server was running");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let codes: Vec<u16> = sockets.iter_mut().map(|ws| ws.expect_close()).collect();
    let wrong: Vec<_> = codes.iter().filter(|c| **c != 4200).collect();
    assert!(
        wrong.is_empty(),
        "{} of {} sockets closed otherwise, first: {:?}",
        wrong.len(),
        codes.len(),
        &wrong[..wrong.len().min(5)]
    );
}
