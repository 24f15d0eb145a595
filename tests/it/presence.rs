//! Presence (issue #3): logins, heartbeats and sockets keep users online; the sweeper
//! takes silent ones offline; non-active accounts are always offline; the admin's live
//! stream and the presence log.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::common::*;

/// Short timeouts: 2 s of silence, a sweep every second.
const FAST: &[(&str, &str)] = &[
    ("SPOTTER_HEARTBEAT_TIMEOUT_SECS", "2"),
    ("SPOTTER_SWEEP_INTERVAL_SECS", "1"),
    ("SPOTTER_FLUSH_INTERVAL_SECS", "1"),
];

fn online(app: &TestApp, admin: &str, id: i64) -> bool {
    let (status, body) = app.get("/api/users/all-users", admin);
    assert_eq!(status, 200);
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == id)
        .expect("listed")["is_online"]
        .as_bool()
        .unwrap()
}

/// The presence log of `id` as (is_online, reason), oldest first.
pub fn log_reasons(app: &TestApp, admin: &str, id: i64) -> Vec<(bool, String)> {
    let (status, body) = app.get(&format!("/api/users/{id}/presence-log"), admin);
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["at"].is_string());
            (
                e["is_online"].as_bool().unwrap(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn silent_users_time_out(app: &TestApp) {
    let admin = app.admin();
    let silent = app.user("member");
    let beating = app.user("trainer");
    let socketed = app.user("member");
    let _ws = app.ws_auth(&socketed);
    assert!(online(app, &admin.token, silent.id), "online on login");
    // For 4 s (twice the timeout) one user heartbeats, one only holds a socket.
    for _ in 0..8 {
        let (status, body) = app.call("POST", "/api/users/heartbeat/", Some(&beating.token), None);
        assert_eq!(status, 200);
        assert_eq!(body["status"], "online");
        assert!(body["last_seen"].is_string());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        !online(app, &admin.token, silent.id),
        "silent user offline after timeout + sweep"
    );
    assert!(
        online(app, &admin.token, beating.id),
        "heartbeating user stays online"
    );
    assert!(
        online(app, &admin.token, socketed.id),
        "a socket keeps its user online"
    );
    let reasons = log_reasons(app, &admin.token, silent.id);
    assert_eq!(
        reasons,
        vec![(true, "login".to_string()), (false, "timeout".to_string())]
    );
    // A heartbeat brings the silent user back.
    assert_eq!(
        app.call("POST", "/api/users/heartbeat", Some(&silent.token), None)
            .0,
        200
    );
    assert!(online(app, &admin.token, silent.id));
    assert_eq!(
        log_reasons(app, &admin.token, silent.id).last().unwrap(),
        &(true, "heartbeat".to_string())
    );
}

fn all_users_filters_and_counts(app: &TestApp) {
    let admin = app.admin();
    let t = app.user("trainer");
    let m = app.user("member");
    let (status, _) = app.call("POST", "/api/auth/logout", Some(&m.token), None);
    assert_eq!(status, 204);
    let (_, body) = app.get("/api/users/all-users?role=trainer", &admin.token);
    assert!(body["users"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["role"] == "trainer"));
    assert!(body["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["id"] == t.id));
    let (_, body) = app.get("/api/users/all-users?online=false", &admin.token);
    let users = body["users"].as_array().unwrap();
    assert!(users.iter().all(|u| u["is_online"] == false));
    assert!(
        users.iter().any(|u| u["id"] == m.id),
        "logged-out user is offline"
    );
    assert_eq!(body["counts"]["online"], 0);
    assert_eq!(
        body["counts"]["total"].as_u64().unwrap() as usize,
        users.len()
    );
    let (_, body) = app.get(
        &format!("/api/users/all-users?q={}", &t.username[..12]),
        &admin.token,
    );
    assert!(body["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["id"] == t.id));
    let (_, body) = app.get("/api/users/all-users", &admin.token);
    let c = &body["counts"];
    assert_eq!(
        c["total"].as_u64().unwrap(),
        c["online"].as_u64().unwrap() + c["offline"].as_u64().unwrap()
    );
    let (status, body) = app.get("/api/users/all-users?online=maybe", &admin.token);
    assert_eq!(status, 422, "{body}");
}

both_backends!(env: FAST; silent_users_time_out);
both_backends!(all_users_filters_and_counts);

fn next_update(ws: &mut Ws) -> Value {
    ws.expect("presence_update")["payload"].clone()
}

#[test]
fn admin_sees_presence_live_in_order() {
    let app = TestApp::start(Backend::Sqlite, FAST);
    let admin = app.admin();
    let mut watch = app.ws_auth(&admin);
    watch.send_ref("subscribe_presence", "sp", json!({}));
    let snap = watch.expect("presence_snapshot");
    assert_eq!(snap["ref"], "sp");
    let users = snap["payload"]["users"].as_array().unwrap();
    assert!(users
        .iter()
        .any(|u| u["username"] == "admin" && u["is_online"] == true));

    // Login → online (login); the trainer's socket adds nothing (already online);
    // logout with no live socket of another session → offline (logout).
    let member = app.user("member");
    let up = next_update(&mut watch);
    assert_eq!(
        (
            up["user_id"].as_i64(),
            up["is_online"].as_bool(),
            up["reason"].as_str()
        ),
        (Some(member.id), Some(true), Some("login"))
    );
    assert!(up["last_seen"].is_string());
    app.call("POST", "/api/auth/logout", Some(&member.token), None);
    let down = next_update(&mut watch);
    assert_eq!(
        (
            down["user_id"].as_i64(),
            down["is_online"].as_bool(),
            down["reason"].as_str()
        ),
        (Some(member.id), Some(false), Some("logout"))
    );

    // A socket brings a user online (reason socket) after a timeout took them offline.
    let trainer = app.user("trainer");
    assert_eq!(next_update(&mut watch)["reason"], "login");
    let off = next_update(&mut watch);
    assert_eq!(
        (off["user_id"].as_i64(), off["reason"].as_str()),
        (Some(trainer.id), Some("timeout"))
    );
    let mut tws = app.ws_auth(&trainer);
    let on = next_update(&mut watch);
    assert_eq!(
        (
            on["user_id"].as_i64(),
            on["is_online"].as_bool(),
            on["reason"].as_str()
        ),
        (Some(trainer.id), Some(true), Some("socket"))
    );
    // Closing the socket starts the silence: offline by timeout after it.
    tws.close();
    let off = next_update(&mut watch);
    assert_eq!(
        (off["user_id"].as_i64(), off["reason"].as_str()),
        (Some(trainer.id), Some("timeout"))
    );

    // Suspension: offline with reason account_status.
    let staff = app.user("staff");
    assert_eq!(next_update(&mut watch)["reason"], "login");
    app.call(
        "PATCH",
        &format!("/api/users/{}", staff.id),
        Some(&admin.token),
        Some(json!({"account_status": "suspended"})),
    );
    let off = next_update(&mut watch);
    assert_eq!(
        (off["user_id"].as_i64(), off["reason"].as_str()),
        (Some(staff.id), Some("account_status"))
    );

    // The sweeper's work is in the log.
    let reasons = log_reasons(&app, &admin.token, trainer.id);
    assert_eq!(
        reasons,
        vec![
            (true, "login".to_string()),
            (false, "timeout".to_string()),
            (true, "socket".to_string()),
            (false, "timeout".to_string())
        ]
    );
    // Non-active users are listed offline even if they were online a moment ago.
    assert!(!online(&app, &admin.token, staff.id));
}

#[test]
fn write_behind_loses_nothing_on_a_clean_shutdown() {
    // The periodic flush never runs during this test: only the shutdown flush can save it.
    let mut app = TestApp::start(
        Backend::Sqlite,
        &[
            ("SPOTTER_FLUSH_INTERVAL_SECS", "3600"),
            ("SPOTTER_SWEEP_INTERVAL_SECS", "3600"),
        ],
    );
    let member = app.user("member");
    std::thread::sleep(Duration::from_millis(50));
    let (status, beat) = app.call("POST", "/api/users/heartbeat", Some(&member.token), None);
    assert_eq!(status, 200);
    let last_seen = beat["last_seen"].as_str().unwrap().to_string();
    app.restart();
    let admin = app.admin();
    let (_, body) = app.get("/api/users/all-users", &admin.token);
    let m = body["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == member.id)
        .unwrap()
        .clone();
    assert_eq!(
        m["last_seen"],
        last_seen.as_str(),
        "the heartbeat's last_seen was written at shutdown"
    );
    assert_eq!(
        m["is_online"], true,
        "still within the timeout after the restart"
    );
    let reasons = log_reasons(&app, &admin.token, member.id);
    assert_eq!(reasons.first().unwrap(), &(true, "login".to_string()));
}
