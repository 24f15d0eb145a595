//! Chat (issue #4): conversations, gap-free seqs under concurrency, idempotent sends,
//! reconnect recovery, typing, read receipts, unread counts, history paging, attachments,
//! and participants-only access. Each test runs on SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::both_backends;
use crate::common::*;

/// A trainer, a member and their conversation.
struct Pair {
    trainer: Login,
    member: Login,
    conv: i64,
}

fn pair(app: &TestApp) -> Pair {
    let trainer = app.user("trainer");
    let member = app.user("member");
    let conv = open(app, &member, trainer.id);
    Pair {
        trainer,
        member,
        conv,
    }
}

fn send(app: &TestApp, login: &Login, conv: i64, content: &str, cmid: &str) -> Value {
    let (status, body) = app.post(
        "/api/chat/messages",
        &login.token,
        json!({"conversation_id": conv, "content": content, "client_msg_id": cmid}),
    );
    assert_eq!(status, 201, "{body}");
    body
}

/// A socket of `login` joined to `conv`; answers it and the `conversation_joined` payload.
fn joined(app: &TestApp, login: &Login, conv: i64, since: Option<i64>) -> (Ws, Value) {
    let mut ws = app.ws_auth(login);
    let mut payload = json!({ "conversation_id": conv });
    if let Some(s) = since {
        payload["since_seq"] = json!(s);
    }
    ws.send_ref("join_conversation", "j", payload);
    let f = ws.expect("conversation_joined");
    assert_eq!(f["ref"], "j");
    (ws, f["payload"].clone())
}

fn seqs(messages: &Value) -> Vec<i64> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

fn error_code(f: &Value) -> &str {
    assert_eq!(f["type"], "error", "{f}");
    f["payload"]["code"].as_str().unwrap()
}

fn conversations(app: &TestApp, login: &Login) -> Vec<Value> {
    let (status, body) = app.get("/api/chat/conversations", &login.token);
    assert_eq!(status, 200, "{body}");
    body["conversations"].as_array().unwrap().clone()
}

fn chatting_both_ways(app: &TestApp) {
    let p = pair(app);
    // A new, empty conversation is listed, with the peer as a user object.
    let list = conversations(app, &p.trainer);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], p.conv);
    assert_eq!(list[0]["peer"]["id"], p.member.id);
    assert_eq!(list[0]["peer"]["role"], "member");
    assert!(list[0]["last_message"].is_null());
    assert_eq!(list[0]["unread_count"], 0);
    assert_eq!(list[0]["last_read_seq"], 0);
    // Opening it again finds the same one, from either side.
    assert_eq!(open(app, &p.trainer, p.member.id), p.conv);

    let (mut t, j) = joined(app, &p.trainer, p.conv, None);
    assert_eq!(j["last_seq"], 0);
    assert_eq!(j["recovered"], true);
    let (mut m, _) = joined(app, &p.member, p.conv, None);
    let (mut m2, _) = joined(app, &p.member, p.conv, None);

    m.send_ref(
        "send_message",
        "s1",
        json!({"conversation_id": p.conv, "content": "hi coach", "client_msg_id": "m-1"}),
    );
    let ack = m.expect("message_ack");
    assert_eq!(ack["ref"], "s1");
    assert_eq!(ack["payload"]["client_msg_id"], "m-1");
    let msg = &ack["payload"]["message"];
    assert_eq!(msg["seq"], 1);
    assert_eq!(msg["conversation_id"], p.conv);
    assert_eq!(msg["sender_id"], p.member.id);
    assert_eq!(msg["content"], "hi coach");
    assert!(msg["attachment"].is_null());
    assert!(msg["created_at"].as_str().unwrap().ends_with('Z'));
    let got = t.expect("new_message");
    assert_eq!(got["payload"]["message"], *msg);
    // The sender's other socket gets it too; the sending socket only got the ack.
    assert_eq!(m2.expect("new_message")["payload"]["message"]["seq"], 1);
    m.expect_none("new_message", Duration::from_millis(300));

    t.send(
        "send_message",
        json!({"conversation_id": p.conv, "content": "hello!", "client_msg_id": "t-1"}),
    );
    assert_eq!(t.expect("message_ack")["payload"]["message"]["seq"], 2);
    let got = m.expect("new_message");
    assert_eq!(got["payload"]["message"]["seq"], 2);
    assert_eq!(got["payload"]["message"]["sender_id"], p.trainer.id);
    assert_eq!(m2.expect("new_message")["payload"]["message"]["seq"], 2);

    // REST sends reach every socket in the room.
    send(app, &p.member, p.conv, "via http", "m-2");
    for ws in [&mut t, &mut m, &mut m2] {
        assert_eq!(ws.expect("new_message")["payload"]["message"]["seq"], 3);
    }

    // Leaving stops the deliveries.
    m2.send("leave_conversation", json!({"conversation_id": p.conv}));
    m2.expect("conversation_left");
    send(app, &p.trainer, p.conv, "after leave", "t-2");
    assert_eq!(m.expect("new_message")["payload"]["message"]["seq"], 4);
    m2.expect_none("new_message", Duration::from_millis(300));

    // The socket alias joins the conversation after authentication.
    let mut alias = app.ws_path(
        &format!("/ws/conversations/{}", p.conv),
        Some(&p.member.token),
    );
    assert_eq!(
        alias.expect("conversation_joined")["payload"]["last_seq"],
        4
    );

    let list = conversations(app, &p.member);
    assert_eq!(list[0]["last_message"]["seq"], 4);
    assert_eq!(list[0]["last_message"]["content"], "after leave");

    let (_, metrics) = app.call("GET", "/metrics", None, None);
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("spotter_chat_messages_total 4"),
        "metrics: {metrics}"
    );
}

fn seq_order_under_concurrency(app: &TestApp) {
    let p = pair(app);
    let (mut observer, _) = joined(app, &p.trainer, p.conv, None);
    let per_sender = 25;
    std::thread::scope(|s| {
        for (who, login) in [("rm", &p.member), ("rt", &p.trainer)] {
            s.spawn(move || {
                for i in 0..per_sender {
                    send(
                        app,
                        login,
                        p.conv,
                        &format!("{who} {i}"),
                        &format!("{who}-{i}"),
                    );
                }
            });
        }
        for (who, login) in [("wm", &p.member), ("wt", &p.trainer)] {
            s.spawn(move || {
                let mut ws = app.ws_auth(login);
                for i in 0..per_sender {
                    ws.send(
                        "send_message",
                        json!({"conversation_id": p.conv, "content": format!("{who} {i}"),
                               "client_msg_id": format!("{who}-{i}")}),
                    );
                }
                let mut last = 0;
                for _ in 0..per_sender {
                    let ack = ws.expect("message_ack");
                    let seq = ack["payload"]["message"]["seq"].as_i64().unwrap();
                    // One socket's messages are stored in the order it sent them.
                    assert!(seq > last, "acks out of order: {seq} after {last}");
                    last = seq;
                }
            });
        }
    });
    let total = 4 * per_sender as i64;
    // A room member sees every message once, in seq order.
    let mut seen = Vec::new();
    while seen.len() < total as usize {
        let f = observer.expect("new_message");
        seen.push(f["payload"]["message"]["seq"].as_i64().unwrap());
    }
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    observer.expect_none("new_message", Duration::from_millis(300));
    let (status, page) = app.get(
        &format!(
            "/api/chat/history?conversation_id={}&after_seq=0&limit=200",
            p.conv
        ),
        &p.member.token,
    );
    assert_eq!(status, 200);
    assert_eq!(seqs(&page["messages"]), (1..=total).collect::<Vec<_>>());
    let mut ids: Vec<String> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["client_msg_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total as usize);
    assert_eq!(
        conversations(app, &p.member)[0]["last_message"]["seq"],
        total
    );
}

fn idempotent_resend(app: &TestApp) {
    let p = pair(app);
    let (mut observer, _) = joined(app, &p.trainer, p.conv, None);
    let first = send(app, &p.member, p.conv, "once", "dup-1");
    assert_eq!(first["seq"], 1);
    assert_eq!(observer.expect("new_message")["payload"]["message"], first);
    // The same client_msg_id again, over HTTP and over the socket: the original, no broadcast.
    let again = send(app, &p.member, p.conv, "once (retry)", "dup-1");
    assert_eq!(again, first);
    let mut ws = app.ws_auth(&p.member);
    ws.send_ref(
        "send_message",
        "retry",
        json!({"conversation_id": p.conv, "content": "once", "client_msg_id": "dup-1"}),
    );
    let ack = ws.expect("message_ack");
    assert_eq!(ack["ref"], "retry");
    assert_eq!(ack["payload"]["message"], first);
    observer.expect_none("new_message", Duration::from_millis(500));
    // The key is the sender's own: the trainer may use the same one.
    let other = send(app, &p.trainer, p.conv, "mine", "dup-1");
    assert_eq!(other["seq"], 2);
    let next = send(app, &p.member, p.conv, "twice", "dup-2");
    assert_eq!(next["seq"], 3);
    let (_, page) = app.get(
        &format!("/api/chat/history?conversation_id={}", p.conv),
        &p.member.token,
    );
    assert_eq!(seqs(&page["messages"]), vec![1, 2, 3]);
    // The same new message sent 60 times at once (repeats of it meet in one group
    // commit, where the insert declines them): one message, every answer the original.
    let answers: Vec<Value> = std::thread::scope(|s| {
        let sends: Vec<_> = (0..60)
            .map(|_| s.spawn(|| send(app, &p.member, p.conv, "at once", "dup-par")))
            .collect();
        sends.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(answers[0]["seq"], 4);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    let (_, page) = app.get(
        &format!("/api/chat/history?conversation_id={}", p.conv),
        &p.member.token,
    );
    assert_eq!(seqs(&page["messages"]), vec![1, 2, 3, 4]);
}

fn reconnect_recovers_missed(app: &TestApp) {
    let p = pair(app);
    let (mut m, _) = joined(app, &p.member, p.conv, None);
    send(app, &p.trainer, p.conv, "before", "t-0");
    let last_seen = m.expect("new_message")["payload"]["message"]["seq"]
        .as_i64()
        .unwrap();
    m.close();
    drop(m);
    for i in 1..=5 {
        send(
            app,
            &p.trainer,
            p.conv,
            &format!("missed {i}"),
            &format!("t-{i}"),
        );
    }
    let (mut m, j) = joined(app, &p.member, p.conv, Some(last_seen));
    assert_eq!(j["recovered"], true);
    assert_eq!(j["last_seq"], 6);
    assert_eq!(seqs(&j["missed"]), vec![2, 3, 4, 5, 6]);
    let contents: Vec<&str> = j["missed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        vec!["missed 1", "missed 2", "missed 3", "missed 4", "missed 5"]
    );
    // Live messages continue after the missed ones, without repeats.
    send(app, &p.trainer, p.conv, "live 1", "t-6");
    send(app, &p.trainer, p.conv, "live 2", "t-7");
    assert_eq!(m.expect("new_message")["payload"]["message"]["seq"], 7);
    assert_eq!(m.expect("new_message")["payload"]["message"]["seq"], 8);
    m.expect_none("new_message", Duration::from_millis(300));
    // Nothing missed: an empty list.
    let (_, j) = joined(app, &p.member, p.conv, Some(8));
    assert_eq!(j["missed"], json!([]));
    assert_eq!(j["recovered"], true);
}

fn too_many_missed_needs_resync(app: &TestApp) {
    let p = pair(app);
    let n = 501;
    for i in 1..=n {
        send(app, &p.trainer, p.conv, &format!("m{i}"), &format!("t-{i}"));
    }
    let (mut m, j) = joined(app, &p.member, p.conv, Some(0));
    assert_eq!(j["recovered"], false);
    assert_eq!(j["missed"], json!([]));
    assert_eq!(j["last_seq"], n);
    let e = m.expect("error");
    assert_eq!(error_code(&e), "resync_required");
    assert_eq!(e["ref"], "j");
    // Live messages still flow.
    send(app, &p.trainer, p.conv, "after", "t-after");
    assert_eq!(m.expect("new_message")["payload"]["message"]["seq"], n + 1);
    // Exactly 500 missed is still recovered.
    let (mut m2, j) = joined(app, &p.member, p.conv, Some(n + 1 - 500));
    assert_eq!(j["recovered"], true);
    assert_eq!(
        seqs(&j["missed"]),
        ((n + 2 - 500)..=(n + 1)).collect::<Vec<_>>()
    );
    m2.expect_none("error", Duration::from_millis(300));
}

fn typing_and_receipts(app: &TestApp) {
    let p = pair(app);
    let (mut t, _) = joined(app, &p.trainer, p.conv, None);
    let (mut m, _) = joined(app, &p.member, p.conv, None);
    let (mut m2, _) = joined(app, &p.member, p.conv, None);

    m.send(
        "typing",
        json!({"conversation_id": p.conv, "is_typing": true}),
    );
    let f = t.expect("typing");
    assert_eq!(
        f["payload"],
        json!({"conversation_id": p.conv, "user_id": p.member.id, "is_typing": true})
    );
    // Throttled: a repeat within 2 s is not broadcast; a change is.
    m.send(
        "typing",
        json!({"conversation_id": p.conv, "is_typing": true}),
    );
    t.expect_none("typing", Duration::from_millis(500));
    m.send(
        "typing",
        json!({"conversation_id": p.conv, "is_typing": false}),
    );
    assert_eq!(t.expect("typing")["payload"]["is_typing"], false);
    // The typist's own sockets hear nothing.
    m.expect_none("typing", Duration::from_millis(200));
    m2.expect_none("typing", Duration::from_millis(200));

    // Expiry: a typing indicator that is never stopped goes away after 6 s.
    t.send(
        "typing",
        json!({"conversation_id": p.conv, "is_typing": true}),
    );
    let started = Instant::now();
    assert_eq!(m.expect("typing")["payload"]["is_typing"], true);
    let f = m.expect("typing");
    assert_eq!(f["payload"]["is_typing"], false);
    assert_eq!(f["payload"]["user_id"], p.trainer.id);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(5500) && waited < Duration::from_secs(9),
        "expired after {waited:?}"
    );
    t.expect_none("typing", Duration::from_millis(200));

    // Read receipts: the peer and the reader's other sockets hear of it, not the socket
    // that sent it.
    send(app, &p.trainer, p.conv, "one", "t-1");
    send(app, &p.trainer, p.conv, "two", "t-2");
    m.send("read_receipt", json!({"conversation_id": p.conv, "seq": 2}));
    let r = t.expect("read_receipt");
    assert_eq!(
        r["payload"],
        json!({"conversation_id": p.conv, "user_id": p.member.id, "seq": 2})
    );
    assert_eq!(m2.expect("read_receipt")["payload"]["seq"], 2);
    m.expect_none("read_receipt", Duration::from_millis(300));
    // Markers only move forward: an older seq changes nothing.
    m.send("read_receipt", json!({"conversation_id": p.conv, "seq": 1}));
    t.expect_none("read_receipt", Duration::from_millis(400));
    // And never past the last message.
    send(app, &p.trainer, p.conv, "three", "t-3");
    let (status, _) = app.post(
        "/api/chat/read",
        &p.member.token,
        json!({"conversation_id": p.conv, "seq": 99}),
    );
    assert_eq!(status, 204);
    assert_eq!(t.expect("read_receipt")["payload"]["seq"], 3);
    let list = conversations(app, &p.member);
    assert_eq!(list[0]["last_read_seq"], 3);
    assert_eq!(list[0]["unread_count"], 0);
}

fn unread_counts_agree(app: &TestApp) {
    let admin = app.admin();
    let trainer = app.user("trainer");
    let m1 = app.user("member");
    let m2 = app.user("member");
    let m3 = app.user("member");
    // Assignments are the admins'.
    for m in [&m1, &m3] {
        let (status, body) = app.call(
            "PUT",
            &format!("/api/trainers/{}/clients/{}", trainer.id, m.id),
            Some(&admin.token),
            None,
        );
        assert_eq!(status, 204, "{body}");
    }
    let (status, _) = app.call(
        "PUT",
        &format!("/api/trainers/{}/clients/{}", trainer.id, m2.id),
        Some(&trainer.token),
        None,
    );
    assert_eq!(status, 403);
    let (status, body) = app.call(
        "PUT",
        &format!("/api/trainers/{}/clients/{}", m1.id, m2.id),
        Some(&admin.token),
        None,
    );
    assert_eq!(status, 422, "{body}");
    let (status, _) = app.call(
        "PUT",
        &format!("/api/trainers/{}/clients/999999", trainer.id),
        Some(&admin.token),
        None,
    );
    assert_eq!(status, 404);

    let c1 = open(app, &m1, trainer.id);
    let c2 = open(app, &m2, trainer.id);
    for i in 0..3 {
        send(app, &m1, c1, "from m1", &format!("a{i}"));
    }
    for i in 0..2 {
        send(app, &m2, c2, "from m2", &format!("b{i}"));
    }

    let check = |expect: &[(i64, i64)]| {
        let convs = conversations(app, &trainer);
        let (status, body) = app.get("/api/trainer/clients", &trainer.token);
        assert_eq!(status, 200, "{body}");
        let clients = body["clients"].as_array().unwrap().clone();
        for (conv, unread) in expect {
            let c = convs
                .iter()
                .find(|c| c["id"] == *conv)
                .expect("conversation listed");
            assert_eq!(c["unread_count"], *unread, "conversations: {c}");
            let k = clients
                .iter()
                .find(|k| k["conversation_id"] == *conv)
                .expect("client listed");
            assert_eq!(k["unread_count"], *unread, "clients: {k}");
            assert_eq!(k["last_message"], c["last_message"]);
            assert_eq!(k["id"], c["peer"]["id"]);
            assert_eq!(k["username"], c["peer"]["username"]);
        }
        clients
    };
    let clients = check(&[(c1, 3), (c2, 2)]);
    // Assigned (m1, m3) and with history (m2); m3 has no conversation yet.
    assert_eq!(clients.len(), 3, "{clients:?}");
    let k3 = clients.iter().find(|k| k["id"] == m3.id).unwrap();
    assert!(k3["conversation_id"].is_null());
    assert_eq!(k3["unread_count"], 0);
    assert!(k3["last_message"].is_null());
    assert_eq!(k3["role"], "member");
    assert!(k3["is_online"].is_boolean());

    // Sending moves the sender's marker: the trainer has read m1's messages.
    send(app, &trainer, c1, "reply", "r1");
    let (status, _) = app.post(
        "/api/chat/read",
        &trainer.token,
        json!({"conversation_id": c2, "seq": 1}),
    );
    assert_eq!(status, 204);
    check(&[(c1, 0), (c2, 1)]);
    let mine = conversations(app, &m1);
    assert_eq!(mine[0]["unread_count"], 1);
    assert_eq!(mine[0]["last_read_seq"], 3);

    // Only trainers have clients.
    let (status, _) = app.get("/api/trainer/clients", &m1.token);
    assert_eq!(status, 403);
    // Unassigning: m3 leaves the list; twice is a 404.
    let path = format!("/api/trainers/{}/clients/{}", trainer.id, m3.id);
    assert_eq!(app.call("DELETE", &path, Some(&admin.token), None).0, 204);
    assert_eq!(app.call("DELETE", &path, Some(&admin.token), None).0, 404);
    let (_, body) = app.get("/api/trainer/clients", &trainer.token);
    assert!(body["clients"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["id"] != m3.id));
}

fn history_paging(app: &TestApp) {
    let p = pair(app);
    for i in 1..=25 {
        let who = if i % 2 == 0 { &p.trainer } else { &p.member };
        send(app, who, p.conv, &format!("n{i}"), &format!("c{i}"));
    }
    let page = |q: &str| {
        let (status, body) = app.get(
            &format!("/api/chat/history?conversation_id={}{q}", p.conv),
            &p.member.token,
        );
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(body["conversation_id"], p.conv);
        (seqs(&body["messages"]), body["has_more"].as_bool().unwrap())
    };
    assert_eq!(page("&limit=10"), ((16..=25).collect(), true));
    assert_eq!(page("&limit=10&before_seq=16"), ((6..=15).collect(), true));
    assert_eq!(page("&limit=10&before_seq=6"), ((1..=5).collect(), false));
    assert_eq!(page("&limit=10&after_seq=0"), ((1..=10).collect(), true));
    assert_eq!(page("&limit=10&after_seq=10"), ((11..=20).collect(), true));
    assert_eq!(page("&limit=10&after_seq=20"), ((21..=25).collect(), false));
    assert_eq!(page("&limit=5&after_seq=20"), ((21..=25).collect(), false));
    assert_eq!(page(""), ((1..=25).collect(), false));
    assert_eq!(page("&after_seq=25"), (vec![], false));

    for bad in ["&limit=0", "&limit=201", "&before_seq=5&after_seq=1"] {
        let (status, body) = app.get(
            &format!("/api/chat/history?conversation_id={}{bad}", p.conv),
            &p.member.token,
        );
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "validation_failed");
    }
    let (status, _) = app.get("/api/chat/history", &p.member.token);
    assert_eq!(status, 400);

    // The seed clients' form finds the same conversation.
    let (status, body) = app.get(
        &format!(
            "/api/chat/history?userId={}&trainerId={}&limit=3",
            p.member.id, p.trainer.id
        ),
        &p.trainer.token,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["conversation_id"], p.conv);
    assert_eq!(seqs(&body["messages"]), vec![23, 24, 25]);
    assert_eq!(body["has_more"], true);

    // Content is 1..4000 characters (not bytes).
    let long: String = "é".repeat(4000);
    assert_eq!(send(app, &p.member, p.conv, &long, "long")["seq"], 26);
    for (content, cmid) in [(String::new(), "empty"), ("x".repeat(4001), "too-long")] {
        let (status, body) = app.post(
            "/api/chat/messages",
            &p.member.token,
            json!({"conversation_id": p.conv, "content": content, "client_msg_id": cmid}),
        );
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "validation_failed");
    }
    let (status, _) = app.post(
        "/api/chat/messages",
        &p.member.token,
        json!({"conversation_id": p.conv, "content": "no key"}),
    );
    assert_eq!(status, 422);
}

fn outsider_is_refused(app: &TestApp) {
    let p = pair(app);
    send(app, &p.trainer, p.conv, "private", "t-1");
    let outsider = app.user("member");
    let conv = p.conv;

    let mut ws = app.ws_auth(&outsider);
    ws.send_ref("join_conversation", "j", json!({"conversation_id": conv}));
    let e = ws.expect("error");
    assert_eq!(error_code(&e), "forbidden");
    assert_eq!(e["ref"], "j");
    ws.send_ref(
        "send_message",
        "s",
        json!({"conversation_id": conv, "content": "let me in", "client_msg_id": "o-1"}),
    );
    assert_eq!(error_code(&ws.expect("error")), "forbidden");
    ws.send_ref(
        "typing",
        "t",
        json!({"conversation_id": conv, "is_typing": true}),
    );
    assert_eq!(error_code(&ws.expect("error")), "forbidden");
    ws.send_ref(
        "read_receipt",
        "r",
        json!({"conversation_id": conv, "seq": 1}),
    );
    assert_eq!(error_code(&ws.expect("error")), "forbidden");
    // Not in the room: nothing of the conversation reaches the outsider.
    send(app, &p.trainer, conv, "still private", "t-2");
    ws.expect_none("new_message", Duration::from_millis(300));

    let (status, body) = app.get(
        &format!("/api/chat/history?conversation_id={conv}"),
        &outsider.token,
    );
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = app.get(
        &format!(
            "/api/chat/history?userId={}&trainerId={}",
            p.member.id, p.trainer.id
        ),
        &outsider.token,
    );
    assert_eq!(status, 403);
    let (status, _) = app.post(
        "/api/chat/messages",
        &outsider.token,
        json!({"conversation_id": conv, "content": "hi", "client_msg_id": "o-2"}),
    );
    assert_eq!(status, 403);
    let (status, _) = app.post(
        "/api/chat/read",
        &outsider.token,
        json!({"conversation_id": conv, "seq": 1}),
    );
    assert_eq!(status, 403);
    assert!(conversations(app, &outsider).is_empty());
    // Admins are no exception: participants only.
    let admin = app.admin();
    let (status, _) = app.get(
        &format!("/api/chat/history?conversation_id={conv}"),
        &admin.token,
    );
    assert_eq!(status, 403);

    // Unknown conversations are 404 everywhere.
    let (status, body) = app.get("/api/chat/history?conversation_id=999999", &outsider.token);
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    ws.send("join_conversation", json!({"conversation_id": 999999}));
    assert_eq!(error_code(&ws.expect("error")), "not_found");
    let (status, _) = app.post(
        "/api/chat/messages",
        &outsider.token,
        json!({"conversation_id": 999999, "content": "hi", "client_msg_id": "o-3"}),
    );
    assert_eq!(status, 404);

    // Two members cannot open a conversation; nor can anyone with themselves or a ghost.
    let (status, body) = app.post(
        "/api/chat/conversations",
        &outsider.token,
        json!({"peer_id": p.member.id}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, _) = app.post(
        "/api/chat/conversations",
        &p.trainer.token,
        json!({"peer_id": p.trainer.id}),
    );
    assert_eq!(status, 422);
    let (status, _) = app.post(
        "/api/chat/conversations",
        &p.trainer.token,
        json!({"peer_id": 999999}),
    );
    assert_eq!(status, 404);
    // A trainer may talk to a trainer.
    let other = app.user("trainer");
    open(app, &p.trainer, other.id);
}

fn attachments(app: &TestApp) {
    let p = pair(app);
    let (status, file) = crate::files::upload(app, &p.member.token, "pic.png", crate::files::PNG);
    assert_eq!(status, 201, "{file}");
    let (status, body) = app.post(
        "/api/chat/messages",
        &p.member.token,
        json!({"conversation_id": p.conv, "content": "look", "client_msg_id": "a1",
               "attachment_id": file["id"]}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["attachment"], file);
    let (_, page) = app.get(
        &format!("/api/chat/history?conversation_id={}", p.conv),
        &p.trainer.token,
    );
    assert_eq!(page["messages"][0]["attachment"], file);
    // Someone else's file, or no file at all, cannot be attached.
    let (status, body) = app.post(
        "/api/chat/messages",
        &p.trainer.token,
        json!({"conversation_id": p.conv, "content": "mine?", "client_msg_id": "a2",
               "attachment_id": file["id"]}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, _) = app.post(
        "/api/chat/messages",
        &p.member.token,
        json!({"conversation_id": p.conv, "content": "ghost", "client_msg_id": "a3",
               "attachment_id": 12345}),
    );
    assert_eq!(status, 404);
    // Nothing was stored by the refused sends.
    let (_, page) = app.get(
        &format!("/api/chat/history?conversation_id={}", p.conv),
        &p.trainer.token,
    );
    assert_eq!(seqs(&page["messages"]), vec![1]);
}

/// A socket that sends without waiting for acks: every send is answered, in the order
/// sent (a repeat with the original message, a bad one with an error), and the peer gets
/// each new message once, in seq order; the sending socket gets no `new_message` of its own.
fn pipelined_sends_are_answered_in_order(app: &TestApp) {
    let p = pair(app);
    let (mut peer, _) = joined(app, &p.trainer, p.conv, None);
    let (mut sender, _) = joined(app, &p.member, p.conv, None);
    let total = 30;
    for i in 0..total {
        let (content, cmid) = match i {
            10 => (String::new(), "bad".to_string()),
            20 => ("again".to_string(), "m-5".to_string()),
            _ => (format!("m {i}"), format!("m-{i}")),
        };
        sender.send_ref(
            "send_message",
            &format!("r{i}"),
            json!({"conversation_id": p.conv, "content": content, "client_msg_id": cmid}),
        );
    }
    let mut seq = 0;
    let mut seq_of_5 = 0;
    for i in 0..total {
        let f = sender
            .next_within(Duration::from_secs(10))
            .expect("a reply");
        assert_eq!(f["ref"], format!("r{i}"), "replies out of order: {f}");
        match i {
            10 => assert_eq!(error_code(&f), "validation_failed"),
            20 => {
                assert_eq!(f["type"], "message_ack", "{f}");
                assert_eq!(f["payload"]["message"]["seq"], seq_of_5);
            }
            _ => {
                assert_eq!(f["type"], "message_ack", "{f}");
                let s = f["payload"]["message"]["seq"].as_i64().unwrap();
                assert_eq!(s, seq + 1, "{f}");
                seq = s;
                if i == 5 {
                    seq_of_5 = s;
                }
            }
        }
    }
    let stored = total as i64 - 2;
    assert_eq!(seq, stored);
    let got: Vec<i64> = (0..stored)
        .map(|_| {
            peer.expect("new_message")["payload"]["message"]["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(got, (1..=stored).collect::<Vec<_>>());
    peer.expect_none("new_message", Duration::from_millis(300));
    sender.expect_none("new_message", Duration::from_millis(100));
}

both_backends!(
    chatting_both_ways,
    pipelined_sends_are_answered_in_order,
    seq_order_under_concurrency,
    idempotent_resend,
    reconnect_recovers_missed,
    too_many_missed_needs_resync,
    typing_and_receipts,
    unread_counts_agree,
    history_paging,
    outsider_is_refused,
    attachments,
);

fn sending_ends_typing(app: &TestApp) {
    let p = pair(app);
    let (mut t, _) = joined(app, &p.trainer, p.conv, None);
    let (mut m, _) = joined(app, &p.member, p.conv, None);
    m.send(
        "typing",
        json!({"conversation_id": p.conv, "is_typing": true}),
    );
    assert_eq!(t.expect("typing")["payload"]["is_typing"], true);
    m.send(
        "send_message",
        json!({"conversation_id": p.conv, "content": "done typing", "client_msg_id": "te-1"}),
    );
    m.expect("message_ack");
    assert_eq!(
        t.expect("new_message")["payload"]["message"]["content"],
        "done typing"
    );
    let f = t.expect("typing");
    assert_eq!(
        f["payload"]["is_typing"], false,
        "the message took the indicator down"
    );
    assert_eq!(f["payload"]["user_id"], p.member.id);
}

both_backends!(sending_ends_typing);

/// A member opening a chat with a trainer: the trainer's sockets hear of it at once
/// (`conversation_created`), the member's other sockets too; opening it again says
/// nothing.
fn a_new_conversation_is_announced_to_both(app: &TestApp) {
    let trainer = app.user("trainer");
    let member = app.user("member");
    let mut trainer_ws = app.ws_auth(&trainer);
    let mut member_other = app.ws_auth(&member);
    let conv = open(app, &member, trainer.id);
    for ws in [&mut trainer_ws, &mut member_other] {
        let f = ws.expect("conversation_created");
        assert_eq!(f["payload"]["conversation_id"], conv);
        assert_eq!(f["payload"]["created_by"], member.id);
    }
    assert_eq!(open(app, &member, trainer.id), conv);
    trainer_ws.expect_none("conversation_created", Duration::from_millis(500));
}

both_backends!(a_new_conversation_is_announced_to_both);
