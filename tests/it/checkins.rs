//! Check-ins and live statistics (issue #5): dashboards' broadcasts, who may check whom
//! in, one open check-in per member, idempotent retries, the sweeper's recomputation and
//! its auto-close of stale check-ins. Each test runs on SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, Timelike, Utc};
use diesel::prelude::*;
use serde_json::{json, Value};

use crate::both_backends;
use crate::common::*;

/// Defines a test that runs on SQLite and again on PostgreSQL with extra environment:
/// `both_backends_with_env!(&[("SPOTTER_X", "1")], name);` with `fn name(app: &TestApp)`.
#[macro_export]
macro_rules! both_backends_with_env {
    ($env:expr, $($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::common::{Backend, TestApp};
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() {
                super::$name(&TestApp::start(Backend::Sqlite, $env));
            }
            #[test]
            fn postgres() {
                if let Some(app) = TestApp::try_start(Backend::Postgres, $env) {
                    super::$name(&app);
                }
            }
        }
    )*};
}

const SWEEP_EVERY_SECOND: &[(&str, &str)] = &[("SPOTTER_SWEEP_INTERVAL_SECS", "1")];

pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(body["error"]["message"].is_string(), "body: {body}");
}

/// Reads frames for `wait` and fails on any of the `kinds`.
pub fn assert_quiet(ws: &mut Ws, kinds: &[&str], wait: Duration) {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(f) = ws.next_within(Duration::from_millis(100)) {
            let kind = f["type"].as_str().unwrap_or_default();
            assert!(!kinds.contains(&kind), "unexpected frame {f}");
        }
    }
}

/// The socket still answers after an error.
pub fn assert_alive(ws: &mut Ws) {
    ws.send_ref("ping", "alive", json!({}));
    let pong = ws.expect("pong");
    assert_eq!(pong["ref"], "alive");
}

/// Reads frames until one of each of `kinds` arrived, in any order (a sender's reply and
/// the room's broadcast race each other); answers them in the order of `kinds`.
pub fn expect_each(ws: &mut Ws, kinds: &[&str]) -> Vec<Value> {
    let mut found: Vec<Option<Value>> = vec![None; kinds.len()];
    let deadline = Instant::now() + WAIT;
    while found.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "not all of {kinds:?} within {WAIT:?}"
        );
        if let Some(f) = ws.next_within(Duration::from_millis(100)) {
            if let Some(i) = kinds.iter().position(|k| f["type"] == *k) {
                found[i].get_or_insert(f);
            }
        }
        assert!(ws.closed.is_none(), "socket closed waiting for {kinds:?}");
    }
    found.into_iter().flatten().collect()
}

/// The next `stats_update` whose stats satisfy `ok`, skipping older ones.
fn stats_until(ws: &mut Ws, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let f = ws.expect("stats_update");
        let stats = &f["payload"]["stats"];
        if ok(stats) {
            return stats.clone();
        }
    }
    panic!("no stats_update with {what} within {WAIT:?}");
}

fn version(stats: &Value) -> i64 {
    stats["version"].as_i64().expect("integer version")
}

/// A counter of `/metrics`, 0 when absent.
fn metric(app: &TestApp, line_start: &str) -> f64 {
    let text = ureq::get(&app.url("/metrics"))
        .timeout(WAIT)
        .call()
        .expect("metrics")
        .into_string()
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().expect("metric value"))
        .unwrap_or(0.0)
}

/// A direct connection to the server's database, for changes made behind its back.
enum Direct {
    Sqlite(diesel::SqliteConnection),
    Pg(diesel::PgConnection),
}

macro_rules! on_db {
    ($d:expr, $c:ident => $body:expr) => {
        match $d {
            Direct::Sqlite($c) => $body,
            Direct::Pg($c) => $body,
        }
    };
}

fn direct(app: &TestApp) -> Direct {
    let url = app
        .env
        .iter()
        .find(|(k, _)| k == "SPOTTER_DATABASE_URL")
        .map(|(_, v)| v.clone())
        .expect("database url");
    match url.strip_prefix("sqlite://") {
        Some(path) => {
            let mut c = diesel::SqliteConnection::establish(path).expect("open sqlite");
            diesel::connection::SimpleConnection::batch_execute(
                &mut c,
                "PRAGMA busy_timeout = 5000",
            )
            .expect("busy timeout");
            Direct::Sqlite(c)
        }
        None => Direct::Pg(diesel::PgConnection::establish(&url).expect("open postgres")),
    }
}

fn db_now() -> NaiveDateTime {
    let n = Utc::now();
    chrono::DateTime::from_timestamp_micros(n.timestamp_micros())
        .unwrap()
        .naive_utc()
}

use spotter::db::schema::checkins;

fn insert_open_checkin(app: &TestApp, member: i64, at: NaiveDateTime, by: i64) -> i64 {
    on_db!(&mut direct(app), c => diesel::insert_into(checkins::table)
        .values((
            checkins::member_id.eq(member),
            checkins::location.eq(Some("side door")),
            checkins::checked_in_at.eq(at),
            checkins::created_by.eq(by),
        ))
        .returning(checkins::id)
        .get_result::<i64>(c)
        .expect("insert check-in"))
}

fn close_checkin(app: &TestApp, id: i64, at: NaiveDateTime) {
    on_db!(&mut direct(app), c => diesel::update(checkins::table.find(id))
        .set(checkins::checked_out_at.eq(Some(at)))
        .execute(c)
        .expect("close check-in"));
}

fn move_checked_in_at(app: &TestApp, id: i64, at: NaiveDateTime) {
    on_db!(&mut direct(app), c => diesel::update(checkins::table.find(id))
        .set(checkins::checked_in_at.eq(at))
        .execute(c)
        .expect("move check-in"));
}

/// `(checked_out_at is set, auto_closed)` of a check-in.
fn closed_state(app: &TestApp, id: i64) -> (bool, bool) {
    let (out, auto): (Option<NaiveDateTime>, bool) = on_db!(&mut direct(app), c => checkins::table
        .find(id)
        .select((checkins::checked_out_at, checkins::auto_closed))
        .first(c)
        .expect("read check-in"));
    (out.is_some(), auto)
}

fn today() -> String {
    Utc::now().date_naive().format("%Y-%m-%d").to_string()
}

fn dashboards_see_check_ins_and_stats(app: &TestApp) {
    let admin = app.admin();
    let staff = app.user("staff");
    let device = app.user("device");
    let member = app.user("member");

    let mut dashboards: Vec<Ws> = [&admin, &staff, &device]
        .iter()
        .map(|l| {
            let mut ws = app.ws_auth(l);
            let init = ws.expect("initial_stats");
            assert_eq!(init["payload"]["stats"]["currently_checked_in"], 0);
            ws
        })
        .collect();
    let (_, before) = app.get("/api/checkins/stats", &staff.token);
    let v0 = version(&before);
    assert_eq!(before["by_hour"].as_array().unwrap().len(), 24);

    // Front desk checks the member in over HTTP.
    let (status, checkin) = app.post(
        "/api/checkins",
        &staff.token,
        json!({"member_id": member.id, "location": "Main floor", "notes": "first visit"}),
    );
    assert_eq!(status, 201, "{checkin}");
    assert_eq!(checkin["member_id"], member.id);
    assert_eq!(checkin["member_name"], "Test member");
    assert_eq!(checkin["location"], "Main floor");
    assert_eq!(checkin["notes"], "first visit");
    assert!(checkin["checked_in_at"].as_str().unwrap().ends_with('Z'));
    assert!(checkin["checked_out_at"].is_null());
    assert!(checkin["id"].is_i64());
    let hour = Utc::now().hour() as usize;

    let mut last_version = v0;
    for ws in dashboards.iter_mut() {
        let ev = ws.expect("member_checked_in");
        assert_eq!(ev["payload"]["checkin"], checkin);
        let stats = ws.expect("stats_update")["payload"]["stats"].clone();
        assert_eq!(stats["currently_checked_in"], 1, "{stats}");
        assert_eq!(stats["today_check_ins"], 1);
        assert_eq!(stats["today_unique_members"], 1);
        assert_eq!(stats["by_location"], json!({"Main floor": 1}));
        let by_hour = stats["by_hour"].as_array().unwrap();
        assert_eq!(by_hour.len(), 24);
        // The hour may have turned between the request and this line.
        assert!(
            by_hour[hour] == 1 || by_hour[(hour + 23) % 24] == 1,
            "{stats}"
        );
        assert!(version(&stats) > v0);
        last_version = version(&stats);
    }
    let (status, stats) = app.get("/api/checkins/stats", &admin.token);
    assert_eq!(status, 200);
    assert_eq!(stats["currently_checked_in"], 1);
    assert_eq!(version(&stats), last_version);

    // Already in: 409 over HTTP and over the socket, which stays open.
    let (status, body) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 409);
    assert_error(&body, "conflict");
    let dev = &mut dashboards[2];
    dev.send_ref("check_in", "again", json!({"member_id": member.id}));
    let err = dev.expect("error");
    assert_eq!(err["ref"], "again");
    assert_eq!(err["payload"]["code"], "conflict");
    assert_alive(dev);

    // The turnstile checks the member out over the socket.
    dev.send_ref("check_out", "out-1", json!({"member_id": member.id}));
    let frames = expect_each(
        dev,
        &["check_out_success", "member_checked_out", "stats_update"],
    );
    let ok = &frames[0];
    assert_eq!(ok["ref"], "out-1");
    let out = ok["payload"]["checkin"].clone();
    assert_eq!(out["id"], checkin["id"]);
    assert!(out["checked_out_at"].is_string());
    assert!(frames[1].get("ref").is_none(), "a broadcast carries no ref");
    for (i, ws) in dashboards.iter_mut().enumerate() {
        let (ev, stats) = if i == 2 {
            (frames[1].clone(), frames[2]["payload"]["stats"].clone())
        } else {
            let ev = ws.expect("member_checked_out");
            (ev, ws.expect("stats_update")["payload"]["stats"].clone())
        };
        assert_eq!(ev["payload"]["checkin"], out);
        assert_eq!(stats["currently_checked_in"], 0, "{stats}");
        assert_eq!(stats["today_check_ins"], 1);
        assert_eq!(stats["by_location"], json!({}));
        assert!(stats["avg_visit_minutes_today"].as_f64().unwrap() >= 0.0);
        assert!(version(&stats) > last_version);
    }

    // Not checked in any more: 409.
    let (status, body) = app.post(
        "/api/checkins/checkout",
        &staff.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 409);
    assert_error(&body, "conflict");

    // In again over the socket (no location: "unknown"), out again over HTTP.
    let dev = &mut dashboards[2];
    dev.send_ref("check_in", "in-2", json!({"member_id": member.id}));
    let ok = dev.expect("check_in_success");
    assert_eq!(ok["ref"], "in-2");
    assert!(ok["payload"]["checkin"]["location"].is_null());
    let stats = stats_until(&mut dashboards[0], "two check-ins", |s| {
        s["today_check_ins"] == 2
    });
    assert_eq!(stats["by_location"], json!({"unknown": 1}));
    assert_eq!(stats["today_unique_members"], 1);
    let (status, out) = app.post(
        "/api/checkins/checkout",
        &admin.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 200, "{out}");
    assert!(out["checked_out_at"].is_string());

    // The day's list, by date and member; bad dates are refused.
    let (status, list) = app.get(&format!("/api/checkins?date={}", today()), &staff.token);
    assert_eq!(status, 200, "{list}");
    let items = list["checkins"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], checkin["id"]);
    assert!(items.iter().all(|c| c["checked_out_at"].is_string()));
    let (_, list) = app.get(
        &format!("/api/checkins?member_id={}", member.id),
        &admin.token,
    );
    assert_eq!(list["checkins"].as_array().unwrap().len(), 2);
    let (_, list) = app.get(
        &format!("/api/checkins?member_id={}", admin.id),
        &admin.token,
    );
    assert_eq!(list["checkins"], json!([]));
    let (_, list) = app.get("/api/checkins?date=2020-01-01", &admin.token);
    assert_eq!(list["checkins"], json!([]));
    for bad in ["2026-13-01", "yesterday", "2026-1-5"] {
        let (status, body) = app.get(&format!("/api/checkins?date={bad}"), &admin.token);
        assert_eq!(status, 422, "{bad}: {body}");
        assert_error(&body, "validation_failed");
    }
    let (status, body) = app.get("/api/checkins?member_id=abc", &admin.token);
    assert_eq!(status, 422);
    assert_error(&body, "validation_failed");

    // Stats and lists are for staff and admins.
    for who in [&member, &device] {
        let (status, body) = app.get("/api/checkins/stats", &who.token);
        assert_eq!(status, 403);
        assert_error(&body, "forbidden");
        let (status, _) = app.get("/api/checkins", &who.token);
        assert_eq!(status, 403);
    }
    let (status, _) = app.call("GET", "/api/checkins/stats", None, None);
    assert_eq!(status, 401);
    assert_eq!(
        metric(app, r#"spotter_checkins_total{action="check_in"}"#),
        2.0
    );
    assert_eq!(
        metric(app, r#"spotter_checkins_total{action="check_out"}"#),
        2.0
    );

    // A dashboard that unsubscribes hears nothing more until it subscribes again.
    let admin_ws = &mut dashboards[0];
    admin_ws.send_ref("unsubscribe_checkins", "u", json!({}));
    assert_eq!(admin_ws.expect("checkins_unsubscribed")["ref"], "u");
    let (status, _) = app.post(
        "/api/checkins",
        &staff.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 201);
    dashboards[1].expect("member_checked_in");
    let admin_ws = &mut dashboards[0];
    assert_quiet(
        admin_ws,
        &["member_checked_in", "stats_update"],
        Duration::from_millis(800),
    );
    admin_ws.send_ref("subscribe_checkins", "s", json!({}));
    let init = admin_ws.expect("initial_stats");
    assert_eq!(init["ref"], "s");
    assert_eq!(init["payload"]["stats"]["currently_checked_in"], 1);
    assert_eq!(init["payload"]["stats"]["today_check_ins"], 3);
}

fn who_may_check_in(app: &TestApp) {
    let admin = app.admin();
    let member = app.user("member");
    let other = app.user("member");
    let trainer = app.user("trainer");

    // A member checks themself in and out, over HTTP and over the socket.
    let (status, body) = app.post(
        "/api/checkins",
        &member.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = app.post(
        "/api/checkins/checkout",
        &member.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 200, "{body}");
    let mut ws = app.ws_auth(&member);
    ws.send_ref(
        "check_in",
        "self",
        json!({"member_id": member.id, "location": "pool"}),
    );
    assert_eq!(
        ws.expect("check_in_success")["payload"]["checkin"]["location"],
        "pool"
    );

    // Members do not watch the front desk.
    ws.send_ref("subscribe_checkins", "watch", json!({}));
    assert_eq!(ws.expect("error")["payload"]["code"], "forbidden");

    // …and check nobody else in.
    let (status, body) = app.post(
        "/api/checkins",
        &member.token,
        json!({"member_id": other.id}),
    );
    assert_eq!(status, 403);
    assert_error(&body, "forbidden");
    ws.send_ref("check_in", "other", json!({"member_id": other.id}));
    let err = ws.expect("error");
    assert_eq!(err["ref"], "other");
    assert_eq!(err["payload"]["code"], "forbidden");
    ws.send_ref("check_out", "other-out", json!({"member_id": other.id}));
    assert_eq!(ws.expect("error")["payload"]["code"], "forbidden");
    assert_alive(&mut ws);
    let (status, _) = app.post(
        "/api/checkins/checkout",
        &member.token,
        json!({"member_id": other.id}),
    );
    assert_eq!(status, 403);
    // Trainers are not front desk.
    let (status, body) = app.post(
        "/api/checkins",
        &trainer.token,
        json!({"member_id": other.id}),
    );
    assert_eq!(status, 403);
    assert_error(&body, "forbidden");

    // Unknown member 404; not a member 422; bad input 422 / 400.
    let (status, body) = app.post("/api/checkins", &admin.token, json!({"member_id": 987654}));
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let (status, body) = app.post(
        "/api/checkins/checkout",
        &admin.token,
        json!({"member_id": 987654}),
    );
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let (status, body) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": trainer.id}),
    );
    assert_eq!(status, 422);
    assert_error(&body, "validation_failed");
    let (status, body) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": other.id, "location": "x".repeat(101)}),
    );
    assert_eq!(status, 422);
    assert_error(&body, "validation_failed");
    let (status, body) = app.post("/api/checkins", &admin.token, json!({"location": "desk"}));
    assert_eq!(status, 422);
    assert_error(&body, "validation_failed");
    let (status, body) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": other.id, "idempotency_key": ""}),
    );
    assert_eq!(status, 422);
    assert_error(&body, "validation_failed");
    let resp = ureq::post(&app.url("/api/checkins"))
        .set("Authorization", &format!("Bearer {}", admin.token))
        .set("Content-Type", "application/json")
        .timeout(WAIT)
        .send_string("{not json");
    match resp {
        Err(ureq::Error::Status(400, r)) => {
            let body: Value = r.into_json().unwrap();
            assert_error(&body, "invalid_request");
        }
        other => panic!("malformed JSON: {other:?}"),
    }
    let (_, list) = app.get(
        &format!("/api/checkins?member_id={}", other.id),
        &admin.token,
    );
    assert_eq!(
        list["checkins"],
        json!([]),
        "nothing stored by refused requests"
    );

    // A non-active member cannot be checked in.
    let (status, _) = app.call(
        "PATCH",
        &format!("/api/users/{}", other.id),
        Some(&admin.token),
        Some(json!({"account_status": "inactive"})),
    );
    assert_eq!(status, 200);
    let (status, body) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": other.id}),
    );
    assert_eq!(status, 403);
    assert_error(&body, "account_inactive");

    // One open check-in per member, also when eight desks try at once.
    let racer = app.user("member");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    app.post(
                        "/api/checkins",
                        &admin.token,
                        json!({"member_id": racer.id}),
                    )
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
    let (_, stats) = app.get("/api/checkins/stats", &admin.token);
    // The member (pool) and the racer are in.
    assert_eq!(stats["currently_checked_in"], 2, "{stats}");
    assert_eq!(stats["by_location"], json!({"pool": 1, "unknown": 1}));
}

fn idempotent_retries(app: &TestApp) {
    let admin = app.admin();
    let staff = app.user("staff");
    let device = app.user("device");
    let member = app.user("member");
    let other = app.user("member");
    let mut dash = app.ws_auth(&admin);
    dash.expect("initial_stats");

    let req = json!({"member_id": member.id, "location": "desk", "idempotency_key": "visit-1"});
    let (status, first) = app.post("/api/checkins", &staff.token, req.clone());
    assert_eq!(status, 201, "{first}");
    dash.expect("member_checked_in");
    let stats = dash.expect("stats_update")["payload"]["stats"].clone();

    // The retry answers the same record and changes nothing.
    let (status, again) = app.post("/api/checkins", &staff.token, req.clone());
    assert_eq!(status, 201, "{again}");
    assert_eq!(again, first);
    let (status, again) = app.post("/api/checkins", &device.token, req.clone());
    assert_eq!(status, 201);
    assert_eq!(again["id"], first["id"]);
    assert_quiet(
        &mut dash,
        &["member_checked_in", "stats_update"],
        Duration::from_millis(1500),
    );
    let (_, now) = app.get("/api/checkins/stats", &admin.token);
    assert_eq!(now["version"], stats["version"]);
    assert_eq!(now["today_check_ins"], 1);
    let (_, list) = app.get(
        &format!("/api/checkins?member_id={}", member.id),
        &admin.token,
    );
    assert_eq!(list["checkins"].as_array().unwrap().len(), 1);

    // The key belongs to that check-in: another member's request with it is refused.
    let (status, body) = app.post(
        "/api/checkins",
        &staff.token,
        json!({"member_id": other.id, "idempotency_key": "visit-1"}),
    );
    assert_eq!(status, 409);
    assert_error(&body, "conflict");

    // Over the socket: the retry gets check_in_success with the same record again.
    let mut turnstile = app.ws_auth(&device);
    turnstile.expect("initial_stats");
    let payload = json!({"member_id": other.id, "idempotency_key": "visit-2"});
    turnstile.send_ref("check_in", "t1", payload.clone());
    let a = turnstile.expect("check_in_success");
    turnstile.send_ref("check_in", "t2", payload);
    let b = turnstile.expect("check_in_success");
    assert_eq!(b["ref"], "t2");
    assert_eq!(a["payload"]["checkin"], b["payload"]["checkin"]);
    dash.expect("member_checked_in");
    let stats = dash.expect("stats_update")["payload"]["stats"].clone();
    assert_eq!(stats["currently_checked_in"], 2);
    assert_quiet(
        &mut dash,
        &["member_checked_in", "stats_update"],
        Duration::from_millis(1000),
    );

    // After the visit ended, a late retry still answers the original record (now closed)
    // and does not check the member in again.
    let (status, _) = app.post(
        "/api/checkins/checkout",
        &staff.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 200);
    let (status, late) = app.post("/api/checkins", &staff.token, req);
    assert_eq!(status, 201);
    assert_eq!(late["id"], first["id"]);
    assert!(late["checked_out_at"].is_string());
    let (_, stats) = app.get("/api/checkins/stats", &admin.token);
    assert_eq!(stats["currently_checked_in"], 1);
    assert_eq!(stats["today_check_ins"], 2);
}

both_backends!(
    dashboards_see_check_ins_and_stats,
    who_may_check_in,
    idempotent_retries
);

fn sweeper_corrects_drift(app: &TestApp) {
    let admin = app.admin();
    let member = app.user("member");
    let mut dash = app.ws_auth(&admin);
    let initial = dash.expect("initial_stats")["payload"]["stats"].clone();
    assert_eq!(initial["currently_checked_in"], 0);

    // A check-in written straight into the database: the live numbers do not know it.
    let id = insert_open_checkin(app, member.id, db_now(), admin.id);
    let stats = stats_until(&mut dash, "the inserted check-in", |s| {
        s["currently_checked_in"] == 1
    });
    assert!(version(&stats) > version(&initial), "{stats}");
    assert_eq!(stats["today_check_ins"], 1);
    assert_eq!(stats["today_unique_members"], 1);
    assert_eq!(stats["by_location"], json!({"side door": 1}));
    let (_, live) = app.get("/api/checkins/stats", &admin.token);
    assert_eq!(live["currently_checked_in"], 1);

    // Closed behind the server's back: corrected again, with a higher version.
    close_checkin(app, id, db_now());
    let closed = stats_until(&mut dash, "the closed check-in", |s| {
        s["currently_checked_in"] == 0
    });
    assert!(version(&closed) > version(&stats));
    assert_eq!(closed["today_check_ins"], 1);
    assert_eq!(closed["by_location"], json!({}));
    let corrected = r#"spotter_stats_recomputations_total{outcome="corrected"}"#;
    assert!(metric(app, corrected) >= 2.0);

    // Changes made through Spotter keep the live numbers equal to the database's: the
    // sweeps that follow find nothing to correct.
    let (status, _) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 201);
    let (status, _) = app.post(
        "/api/checkins/checkout",
        &admin.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 200);
    let (status, _) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 201);
    let before = metric(app, corrected);
    let unchanged = r#"spotter_stats_recomputations_total{outcome="unchanged"}"#;
    let runs = metric(app, unchanged);
    eventually(WAIT, "three more sweeps", || {
        (metric(app, unchanged) >= runs + 3.0).then_some(())
    });
    assert_eq!(
        metric(app, corrected),
        before,
        "live stats drifted from the database"
    );
    let (_, stats) = app.get("/api/checkins/stats", &admin.token);
    assert_eq!(stats["currently_checked_in"], 1);
    assert_eq!(stats["today_check_ins"], 3);
}

fn sweeper_closes_stale_check_ins(app: &TestApp) {
    let admin = app.admin();
    let stale = app.user("member");
    let recent = app.user("member");
    let mut dash = app.ws_auth(&admin);
    dash.expect("initial_stats");

    let (_, old) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": stale.id}),
    );
    let (_, fresh) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": recent.id}),
    );
    let old_id = old["id"].as_i64().unwrap();
    let fresh_id = fresh["id"].as_i64().unwrap();
    // One was opened 13 hours ago (over the 12-hour default), the other 11 hours ago.
    let now = db_now();
    move_checked_in_at(app, old_id, now - chrono::Duration::hours(13));
    move_checked_in_at(app, fresh_id, now - chrono::Duration::hours(11));

    let closed = dash.expect("member_checked_out");
    let checkin = &closed["payload"]["checkin"];
    assert_eq!(checkin["id"], old_id);
    assert_eq!(checkin["member_id"], stale.id);
    assert!(checkin["checked_out_at"].is_string());
    let stats = stats_until(&mut dash, "one left in", |s| s["currently_checked_in"] == 1);
    assert_eq!(stats["currently_checked_in"], 1);
    assert_eq!(closed_state(app, old_id), (true, true));
    assert_eq!(
        metric(app, r#"spotter_checkins_total{action="auto_close"}"#),
        1.0
    );

    // A couple more sweeps: the recent one stays open, nothing else is closed.
    assert_quiet(
        &mut dash,
        &["member_checked_out"],
        Duration::from_millis(2500),
    );
    assert_eq!(closed_state(app, fresh_id), (false, false));
    // The stale member can come back.
    let (status, body) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": stale.id}),
    );
    assert_eq!(status, 201, "{body}");
}

/// Desks checking members in and out concurrently while the sweeper recomputes every
/// second: the live numbers never drift from the database's.
fn concurrent_changes_do_not_drift(app: &TestApp) {
    let admin = app.admin();
    let members: Vec<Login> = (0..6).map(|_| app.user("member")).collect();
    let corrected = r#"spotter_stats_recomputations_total{outcome="corrected"}"#;
    std::thread::scope(|s| {
        for (i, m) in members.iter().enumerate() {
            let token = admin.token.clone();
            s.spawn(move || {
                for round in 0..5 {
                    let location = format!("zone-{}", (i + round) % 3);
                    let (status, body) = app.post(
                        "/api/checkins",
                        &token,
                        json!({"member_id": m.id, "location": location}),
                    );
                    assert_eq!(status, 201, "{body}");
                    if round < 4 {
                        let (status, body) =
                            app.post("/api/checkins/checkout", &token, json!({"member_id": m.id}));
                        assert_eq!(status, 200, "{body}");
                    }
                }
            });
        }
    });
    let unchanged = r#"spotter_stats_recomputations_total{outcome="unchanged"}"#;
    let runs = metric(app, unchanged);
    eventually(WAIT, "two more sweeps", || {
        (metric(app, unchanged) >= runs + 2.0).then_some(())
    });
    assert_eq!(metric(app, corrected), 0.0, "live stats drifted");
    let (_, stats) = app.get("/api/checkins/stats", &admin.token);
    assert_eq!(stats["currently_checked_in"], 6, "{stats}");
    assert_eq!(stats["today_check_ins"], 30);
    assert_eq!(stats["today_unique_members"], 6);
    let in_zones: i64 = stats["by_location"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(in_zones, 6);
}

crate::both_backends_with_env!(
    SWEEP_EVERY_SECOND,
    sweeper_corrects_drift,
    sweeper_closes_stale_check_ins,
    concurrent_changes_do_not_drift
);

/// At start the statistics are computed from the database, and `version` keeps growing
/// across the restart.
fn stats_survive_a_restart(app: &mut TestApp) {
    let admin = app.admin();
    let member = app.user("member");
    let gone = app.user("member");
    for m in [&member, &gone] {
        let (status, _) = app.post(
            "/api/checkins",
            &admin.token,
            json!({"member_id": m.id, "location": "gym"}),
        );
        assert_eq!(status, 201);
    }
    let (status, _) = app.post(
        "/api/checkins/checkout",
        &admin.token,
        json!({"member_id": gone.id}),
    );
    assert_eq!(status, 200);
    let (_, before) = app.get("/api/checkins/stats", &admin.token);

    app.restart();
    let admin = app.admin();
    let mut dash = app.ws_auth(&admin);
    let after = dash.expect("initial_stats")["payload"]["stats"].clone();
    for field in [
        "currently_checked_in",
        "today_check_ins",
        "today_unique_members",
        "avg_visit_minutes_today",
        "by_location",
        "by_hour",
    ] {
        assert_eq!(after[field], before[field], "{field}: {before} vs {after}");
    }
    assert_eq!(after["currently_checked_in"], 1);
    assert_eq!(after["by_location"], json!({"gym": 1}));
    assert!(version(&after) > version(&before), "{before} vs {after}");
    // Still one open check-in per member after the restart.
    let (status, _) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": member.id}),
    );
    assert_eq!(status, 409);
}

mod stats_survive_a_restart {
    use crate::common::TestApp;

    #[test]
    fn sqlite() {
        super::stats_survive_a_restart(&mut TestApp::sqlite());
    }

    #[test]
    fn postgres() {
        if let Some(mut app) = TestApp::postgres() {
            super::stats_survive_a_restart(&mut app);
        }
    }
}
