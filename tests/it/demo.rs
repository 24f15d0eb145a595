//! `spotter demo` and `spotter demo --live` against the real server: the demo day is
//! there (people in now across two locations, a by-hour shape, a late arrival,
//! conversations with an image), loading twice changes nothing, and the live driver moves
//! the numbers through the public API.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::io::Read;

use crate::common::*;

/// Each test needs its own app to stop and restart around `spotter demo`.
macro_rules! on_both {
    ($($name:ident),*) => {$(
        mod $name {
            use crate::common::{Backend, TestApp};
            #[test]
            fn sqlite() {
                super::$name(TestApp::start(Backend::Sqlite, &[]));
            }
            #[test]
            fn postgres() {
                if let Some(app) = TestApp::try_start(Backend::Postgres, &[]) {
                    super::$name(app);
                }
            }
        }
    )*};
}

on_both!(demo_loads_a_believable_day, live_demo_moves_the_gym);

/// Runs `spotter <args>` on the app's database and data dir.
fn spotter(app: &TestApp, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spotter"));
    cmd.args(args)
        .current_dir(app.dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(app.env.iter().cloned());
    cmd
}

/// Loads the demo into a fresh app: start (migrations, admin), stop, `spotter demo`, start.
pub fn load_demo(app: &mut TestApp) {
    app.stop();
    let out = spotter(app, &["demo"]).output().expect("spotter demo");
    assert!(
        out.status.success(),
        "demo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.restart();
}

/// Starts `spotter demo --live` against the app for `secs` seconds.
pub fn start_live(app: &TestApp, secs: f64) -> Child {
    spotter(
        app,
        &[
            "demo",
            "--live",
            "--url",
            &app.base,
            "--pace",
            "0.2",
            "--for",
            &secs.to_string(),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spotter demo --live")
}

fn demo_login(app: &TestApp, username: &str) -> Login {
    let role = username.split('.').next().unwrap();
    app.login(username, &format!("{role}-demo-pass"))
}

fn demo_loads_a_believable_day(mut app: TestApp) {
    load_demo(&mut app);
    let app = &mut app;
    let admin = app.admin();
    let (status, stats) = app.get("/api/checkins/stats", &admin.token);
    assert_eq!(status, 200, "{stats}");
    let in_now = stats["currently_checked_in"].as_i64().unwrap();
    assert!(in_now >= 4, "members in now: {stats}");
    let locations = stats["by_location"].as_object().unwrap();
    assert_eq!(locations.len(), 2, "two locations: {stats}");
    let by_hour: i64 = stats["by_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert!(by_hour > in_now, "{stats}");
    assert_eq!(by_hour, stats["today_check_ins"].as_i64().unwrap());

    // Attendance today: a late arrival, and others on time.
    let (_, att) = app.get("/api/attendance", &admin.token);
    let records = att["records"].as_array().unwrap();
    assert!(records.iter().any(|r| r["isLate"] == true), "{att}");
    assert!(records.iter().any(|r| r["isLate"] == false), "{att}");
    // Yesterday is a whole day, for the date picker.
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    let (_, old) = app.get(&format!("/api/checkins?date={yesterday}"), &admin.token);
    assert!(old["checkins"].as_array().unwrap().len() >= 20, "{old}");

    // Trainers and their members; conversations with history; one image.
    let anna = demo_login(app, "trainer.anna");
    let (_, clients) = app.get("/api/trainer/clients", &anna.token);
    assert!(
        clients["clients"].as_array().unwrap().len() >= 3,
        "{clients}"
    );
    let emma = demo_login(app, "member.emma");
    let (_, convs) = app.get("/api/chat/conversations", &emma.token);
    let conv = convs["conversations"][0]["id"].as_i64().unwrap();
    let (_, history) = app.get(
        &format!("/api/chat/history?conversation_id={conv}"),
        &emma.token,
    );
    let messages = history["messages"].as_array().unwrap();
    assert!(messages.len() >= 4, "{history}");
    let image = messages
        .iter()
        .find_map(|m| m["attachment"]["url"].as_str())
        .unwrap_or_else(|| panic!("no image in {history}"))
        .to_string();
    let resp = ureq::get(&app.url(&image)).call().expect("image");
    assert_eq!(resp.content_type(), "image/png");
    // A member's unread count shows on the last message.
    let (_, trainers) = app.get("/api/trainers", &emma.token);
    assert_eq!(trainers["trainers"][0]["assigned"], true, "{trainers}");

    // The suspended member is refused at the desk, with the reason.
    let (_, code) = app.get(
        "/api/users/me/checkin-code",
        &demo_login(app, "member.carla").token,
    );
    assert_eq!(code["code"].as_str().unwrap().len(), 6);
    let (status, _) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(serde_json::json!({"username": "member.olga", "password": "member-demo-pass"})),
    );
    assert_eq!(status, 403);

    // Loading twice adds nothing.
    let count = |a: &TestApp| {
        let t = a.admin();
        let (_, s) = a.get("/api/checkins/stats", &t.token);
        let (_, c) = a.get(
            "/api/chat/conversations",
            &demo_login(a, "trainer.anna").token,
        );
        let (_, u) = a.get("/api/users/all-users", &t.token);
        (
            s["today_check_ins"].clone(),
            c["conversations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["id"].clone(), c["last_message"]["seq"].clone()))
                .collect::<Vec<_>>(),
            u["counts"]["total"].clone(),
        )
    };
    let before = count(app);
    load_demo(app);
    assert_eq!(count(app), before);
}

fn live_demo_moves_the_gym(mut app: TestApp) {
    load_demo(&mut app);
    let admin = app.admin();
    let (_, before) = app.get("/api/checkins/stats", &admin.token);
    let trainers: Vec<Login> = ["trainer.anna", "trainer.ben", "trainer.chloe"]
        .iter()
        .map(|t| demo_login(&app, t))
        .collect();
    // Every message the trainers' clients have: the sum of the last seqs.
    let messages = |a: &TestApp| -> i64 {
        trainers
            .iter()
            .map(|t| {
                let (_, c) = a.get("/api/trainer/clients", &t.token);
                c["clients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|c| c["last_message"]["seq"].as_i64())
                    .sum::<i64>()
            })
            .sum()
    };
    let seq_before = messages(&app);
    let mut live = start_live(&app, 4.0);
    let status = eventually(Duration::from_secs(30), "the live demo to finish", || {
        live.try_wait().expect("wait")
    });
    let mut err = String::new();
    live.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    assert!(!err.contains("WARN"), "the live demo hit errors: {err}");
    assert!(
        err.contains("at Studio (socket)"),
        "the studio door checks in over its socket: {err}"
    );
    let (_, after) = app.get("/api/checkins/stats", &admin.token);
    assert_ne!(before["version"], after["version"], "{before} vs {after}");
    assert!(
        after["today_check_ins"].as_i64() > before["today_check_ins"].as_i64(),
        "{before} vs {after}"
    );
    assert!(messages(&app) > seq_before, "no message in: {err}");
}
