//! Account changes reach live sockets and old tokens at once (issue #10): a demoted admin's
//! socket loses the admin rooms, a new password or a suspension revokes every earlier
//! token, reactivation revives none, and the last active admin cannot be taken away.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::common::*;

fn refresh(app: &TestApp, refresh: &str) -> (u16, Value) {
    app.call(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({ "refresh_token": refresh })),
    )
}

/// Reads frames for `wait` and answers those of type `kind`.
fn frames_of(ws: &mut Ws, kind: &str, wait: Duration) -> Vec<Value> {
    let deadline = std::time::Instant::now() + wait;
    let mut found = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Some(f) = ws.next_within(Duration::from_millis(50)) {
            if f["type"] == kind {
                found.push(f);
            }
        }
    }
    found
}

fn demoted_admin_socket_loses_admin_rooms(app: &TestApp) {
    let root = app.admin();
    let second = app.user("admin");
    let mut ws = app.ws_auth(&second);
    ws.send_ref("subscribe_presence", "sp", json!({}));
    ws.expect("presence_snapshot");
    ws.send_ref("join_general_attendance", "ga", json!({}));
    ws.expect("general_attendance_joined");

    let (status, body) = patch(app, &root.token, second.id, json!({"role": "member"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["role"], "member");
    // Told of each room it left, in whatever order.
    let mut left = Vec::new();
    while left.len() < 3 {
        let f = ws
            .next_within(WAIT)
            .expect("a frame saying which room was left");
        left.push(f["type"].as_str().unwrap().to_string());
    }
    left.sort();
    assert_eq!(
        left,
        [
            "checkins_unsubscribed",
            "general_attendance_left",
            "presence_unsubscribed"
        ]
    );

    // Presence changes and attendance no longer reach the socket.
    let someone = app.user("trainer");
    let (status, body) = app.post(
        "/api/attendance",
        &root.token,
        json!({"employee_id": someone.id, "status": "present"}),
    );
    assert_eq!(status, 201, "{body}");
    ws.expect_none("presence_update", Duration::from_millis(700));
    ws.expect_none("general_attendance_update", Duration::from_millis(300));

    // Every later frame runs on the current role.
    ws.send_ref("subscribe_presence", "sp2", json!({}));
    let f = ws.expect("error");
    assert_eq!(f["ref"], "sp2");
    assert_eq!(f["payload"]["code"], "forbidden", "{f}");
    ws.send_ref("join_general_attendance", "ga2", json!({}));
    let f = ws.expect("error");
    assert_eq!(f["payload"]["code"], "forbidden", "{f}");

    // A refreshed token does not bring the rights back.
    let (status, pair) = refresh(app, &second.refresh);
    assert_eq!(status, 200, "{pair}");
    ws.send_ref(
        "refresh_token",
        "rt",
        json!({ "token": pair["access_token"] }),
    );
    ws.expect("token_refreshed");
    ws.send_ref("subscribe_presence", "sp3", json!({}));
    assert_eq!(ws.expect("error")["payload"]["code"], "forbidden");
    let _ = app.user("member");
    ws.expect_none("presence_update", Duration::from_millis(500));

    // Promoted again, the socket may subscribe again.
    let (status, _) = patch(app, &root.token, second.id, json!({"role": "admin"}));
    assert_eq!(status, 200);
    ws.send_ref("subscribe_presence", "sp4", json!({}));
    ws.expect("presence_snapshot");
}

/// A demotion racing with subscriptions: whatever order they land in, once the PATCH has
/// answered the socket is in no admin room. Many rounds, so that a race shows.
fn demotion_racing_with_subscribe_never_leaves_the_socket_in(app: &TestApp) {
    let root = app.admin();
    let second = app.user("admin");
    let mut ws = app.ws_auth(&second);
    for round in 0..15 {
        let (status, _) = patch(app, &root.token, second.id, json!({"role": "admin"}));
        assert_eq!(status, 200);
        for i in 0..4 {
            ws.send_ref("subscribe_presence", &format!("s{round}-{i}"), json!({}));
        }
        let (status, _) = patch(app, &root.token, second.id, json!({"role": "trainer"}));
        assert_eq!(status, 200);
        // Drain the replies to the subscriptions, then make a presence change.
        let _ = frames_of(&mut ws, "presence_snapshot", Duration::from_millis(300));
        let _ = app.login(&root.username, ADMIN_PASSWORD);
        let other = app.user("member");
        let _ = app.login(&other.username, PASSWORD);
        let updates = frames_of(&mut ws, "presence_update", Duration::from_millis(400));
        assert!(
            updates.is_empty(),
            "round {round}: a demoted socket still gets presence: {updates:?}"
        );
    }
}

fn password_reset_revokes_every_earlier_token_and_socket(app: &TestApp) {
    let root = app.admin();
    let member = app.user("member");
    let mut ws = app.ws_auth(&member);
    let (status, body) = patch(
        app,
        &root.token,
        member.id,
        json!({"password": "a-new-password-1"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(ws.expect_close(), 4001);
    let (status, body) = app.get("/api/users/me", &member.token);
    assert_eq!(status, 401, "old access token: {body}");
    assert_error(&body, "unauthorized");
    let (status, body) = refresh(app, &member.refresh);
    assert_eq!(status, 401, "old refresh token: {body}");
    let mut old = app.ws(Some(&member.token));
    assert_eq!(old.expect_close(), 4001);
    let (status, _) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": member.username, "password": PASSWORD})),
    );
    assert_eq!(status, 401, "old password");
    let fresh = app.login(&member.username, "a-new-password-1");
    let (status, _) = app.get("/api/users/me", &fresh.token);
    assert_eq!(status, 200);
    let (status, _) = refresh(app, &fresh.refresh);
    assert_eq!(status, 200);
}

fn reactivation_revives_no_earlier_token(app: &TestApp) {
    let root = app.admin();
    for status_name in ["suspended", "banned", "inactive"] {
        let member = app.user("member");
        let mut ws = app.ws_auth(&member);
        let (status, body) = patch(
            app,
            &root.token,
            member.id,
            json!({"account_status": status_name}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(ws.expect_close(), 4003, "{status_name}");
        let (status, body) = app.get("/api/users/me", &member.token);
        assert_eq!(status, 403, "{status_name}: {body}");
        let (status, body) = patch(
            app,
            &root.token,
            member.id,
            json!({"account_status": "active"}),
        );
        assert_eq!(status, 200, "{body}");
        let (status, body) = app.get("/api/users/me", &member.token);
        assert_eq!(
            status, 401,
            "{status_name}, then active: old access token {body}"
        );
        let (status, _) = refresh(app, &member.refresh);
        assert_eq!(status, 401, "{status_name}, then active: old refresh token");
        let mut old = app.ws(Some(&member.token));
        assert_eq!(old.expect_close(), 4001);
        let again = app.login(&member.username, PASSWORD);
        let (status, _) = app.get("/api/users/me", &again.token);
        assert_eq!(status, 200);
    }
}

fn last_active_admin_cannot_be_taken_away(app: &TestApp) {
    let root = app.admin();
    for body in [
        json!({"role": "member"}),
        json!({"account_status": "suspended"}),
        json!({"account_status": "banned"}),
        json!({"account_status": "inactive"}),
    ] {
        let (status, answer) = patch(app, &root.token, root.id, body.clone());
        assert_eq!(status, 409, "{body}: {answer}");
        assert_error(&answer, "conflict");
    }
    // Other changes to the last admin still work.
    let (status, _) = patch(app, &root.token, root.id, json!({"display_name": "Boss"}));
    assert_eq!(status, 200);

    // Three admins demoting and suspending each other and themselves with 60 requests at
    // once, many times: whatever order they land in, an active admin always stays.
    let mut refused = 0;
    for round in 0..6 {
        let mut admins: Vec<(i64, String, &str)> =
            vec![(root.id, root.username.clone(), ADMIN_PASSWORD)];
        for _ in 0..2 {
            let o = app.user("admin");
            admins.push((o.id, o.username, PASSWORD));
        }
        let tokens: Vec<String> = admins
            .iter()
            .map(|(_, name, password)| app.login(name, password).token)
            .collect();
        let threads: Vec<_> = (0..60)
            .map(|i| {
                let base = app.base.clone();
                let token = tokens[i % 3].clone();
                let id = admins[(i / 3) % 3].0;
                let body = if i % 2 == 0 {
                    json!({"role": "trainer"})
                } else {
                    json!({"account_status": "suspended"})
                };
                std::thread::spawn(move || {
                    let res = ureq::patch(&format!("{base}/api/users/{id}"))
                        .set("Authorization", &format!("Bearer {token}"))
                        .timeout(WAIT)
                        .send_json(body);
                    match res {
                        Ok(r) => r.status(),
                        Err(ureq::Error::Status(s, _)) => s,
                        Err(e) => panic!("{e}"),
                    }
                })
            })
            .collect();
        let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            statuses.iter().all(|s| [200, 401, 403, 409].contains(s)),
            "round {round}: {statuses:?}"
        );
        refused += statuses.iter().filter(|s| **s == 409).count();
        // Who is still an active admin: each logs in and says.
        let survivors: Vec<(Login, i64)> = admins
            .iter()
            .filter_map(|(id, name, password)| {
                let (status, body) = app.call(
                    "POST",
                    "/api/auth/login",
                    None,
                    Some(json!({"username": name, "password": password})),
                );
                (status == 200 && body["user"]["role"] == "admin")
                    .then(|| (app.login(name, password), *id))
            })
            .collect();
        assert!(!survivors.is_empty(), "round {round}: no active admin left");
        // Root becomes the one admin again for the next round.
        let (survivor, _) = &survivors[0];
        let (status, body) = patch(
            app,
            &survivor.token,
            root.id,
            json!({"role": "admin", "account_status": "active"}),
        );
        assert_eq!(status, 200, "{body}");
        let fresh_root = app.login(&root.username, ADMIN_PASSWORD);
        for (_, id) in &survivors {
            if *id != root.id {
                let (status, body) = patch(app, &fresh_root.token, *id, json!({"role": "member"}));
                assert_eq!(status, 200, "{body}");
            }
        }
    }
    assert!(refused > 0, "the last-admin rule was never reached");
}

both_backends!(
    demoted_admin_socket_loses_admin_rooms,
    demotion_racing_with_subscribe_never_leaves_the_socket_in,
    password_reset_revokes_every_earlier_token_and_socket,
    reactivation_revives_no_earlier_token,
    last_active_admin_cannot_be_taken_away,
);

fn sockets_per_user_are_capped(app: &TestApp) {
    let member = app.user("member");
    let mut open: Vec<Ws> = (0..3).map(|_| app.ws_auth(&member)).collect();
    let mut extra = app.ws(Some(&member.token));
    assert_eq!(extra.expect_close(), 4008);
    // The open ones still work.
    for ws in &mut open {
        ws.send_ref("ping", "p", json!({}));
        ws.expect("pong");
    }
    // One closed frees a place.
    open.pop().unwrap().close();
    eventually(WAIT, "a free socket place", || {
        let mut ws = app.ws(Some(&member.token));
        match ws.next_within(Duration::from_secs(2)) {
            Some(f) if f["type"] == "authentication_success" => {
                ws.send_ref("ping", "p", json!({}));
                (ws.next_within(Duration::from_secs(2)).is_some() && ws.closed.is_none())
                    .then_some(())
            }
            _ => None,
        }
    });
}

#[test]
fn sockets_per_user_cap() {
    sockets_per_user_are_capped(&TestApp::start(
        Backend::Sqlite,
        &[("SPOTTER_WS_MAX_PER_USER", "3")],
    ));
}
