//! Attendance (issue #5): records by admins and devices, lateness on both sides of the
//! shift start, the employee and general rooms with their permissions, idempotent
//! retries and who may list what. Each test runs on SQLite and on PostgreSQL.

use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::checkins::{assert_alive, assert_error, assert_quiet};
use crate::common::*;

const DAY: &str = "2026-01-15";

fn at(time: &str) -> String {
    format!("{DAY}T{time}Z")
}

fn post_record(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, record) = app.post("/api/attendance", token, body.clone());
    assert_eq!(status, 201, "{body} -> {record}");
    record
}

/// The next `kind` frame carrying the record `id`, skipping other records.
fn expect_record(ws: &mut Ws, kind: &str, id: &Value) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        let f = ws.expect(kind);
        if &f["payload"]["record"]["id"] == id {
            return f["payload"]["record"].clone();
        }
    }
    panic!("no {kind} for record {id} within {WAIT:?}");
}

fn rooms_and_lateness(app: &TestApp) {
    let admin = app.admin();
    let device = app.user("device");
    let staff = app.user("staff");
    let trainer = app.user("trainer");
    let member = app.user("member");

    let mut trainer_ws = app.ws_auth(&trainer);
    let mut staff_ws = app.ws_auth(&staff);
    let mut admin_ws = app.ws_auth(&admin);
    let mut member_ws = app.ws_auth(&member);

    // An employee joins their own room; staff and admins join anyone's.
    trainer_ws.send_ref(
        "join_attendance_room",
        "own",
        json!({"employee_id": trainer.id}),
    );
    let joined = trainer_ws.expect("attendance_room_joined");
    assert_eq!(joined["ref"], "own");
    assert_eq!(joined["payload"]["employee_id"], trainer.id);
    staff_ws.send("join_attendance_room", json!({"employee_id": trainer.id}));
    staff_ws.expect("attendance_room_joined");
    admin_ws.send("join_attendance_room", json!({"employee_id": staff.id}));
    admin_ws.expect("attendance_room_joined");

    // Members and other employees are refused (403), and their sockets stay open.
    member_ws.send_ref(
        "join_attendance_room",
        "m",
        json!({"employee_id": trainer.id}),
    );
    let err = member_ws.expect("error");
    assert_eq!(err["ref"], "m");
    assert_eq!(err["payload"]["code"], "forbidden");
    trainer_ws.send_ref(
        "join_attendance_room",
        "t",
        json!({"employee_id": staff.id}),
    );
    assert_eq!(trainer_ws.expect("error")["payload"]["code"], "forbidden");
    // Staff asking for a room of someone who is not an employee: 404.
    staff_ws.send("join_attendance_room", json!({"employee_id": member.id}));
    assert_eq!(staff_ws.expect("error")["payload"]["code"], "not_found");

    // The general room is for admins only.
    for ws in [&mut member_ws, &mut staff_ws, &mut trainer_ws] {
        ws.send_ref("join_general_attendance", "g", json!({}));
        let err = ws.expect("error");
        assert_eq!(err["ref"], "g");
        assert_eq!(err["payload"]["code"], "forbidden");
        assert_alive(ws);
    }
    admin_ws.send_ref("join_general_attendance", "g", json!({}));
    assert_eq!(admin_ws.expect("general_attendance_joined")["ref"], "g");

    // 09:00:00 is on time; the device's username is the record's device by default.
    let on_time = post_record(
        app,
        &device.token,
        json!({"employee_id": trainer.id, "status": "present", "timestamp": at("09:00:00")}),
    );
    assert_eq!(on_time["employee_id"], trainer.id);
    assert_eq!(on_time["employee_name"], "Test trainer");
    assert_eq!(on_time["status"], "present");
    assert_eq!(on_time["date"], DAY);
    assert_eq!(on_time["timestamp"], "2026-01-15T09:00:00.000000Z");
    assert_eq!(on_time["isLate"], false);
    assert_eq!(on_time["device"], device.username);
    for ws in [&mut trainer_ws, &mut staff_ws] {
        let update = ws.expect("attendance_update");
        assert_eq!(update["payload"]["record"], on_time);
    }
    let general = admin_ws.expect("general_attendance_update");
    assert_eq!(general["payload"]["record"], on_time);

    // 09:00:01 is late.
    let late = post_record(
        app,
        &admin.token,
        json!({"employee_id": trainer.id, "status": "present", "device": "Front door",
               "timestamp": at("09:00:01")}),
    );
    assert_eq!(late["isLate"], true);
    assert_eq!(late["device"], "Front door");
    assert_eq!(
        trainer_ws.expect("attendance_update")["payload"]["record"],
        late
    );
    assert_eq!(
        admin_ws.expect("general_attendance_update")["payload"]["record"],
        late
    );
    // Only `present` can be late.
    for status in ["absent", "left", "on_leave"] {
        let r = post_record(
            app,
            &device.token,
            json!({"employee_id": trainer.id, "status": status, "timestamp": at("11:30:00")}),
        );
        assert_eq!(r["isLate"], false, "{r}");
        assert_eq!(r["status"], status);
    }
    // A record's day and time are UTC: 23:30 at UTC-2 is 01:30Z the next day.
    let next_day = post_record(
        app,
        &device.token,
        json!({"employee_id": staff.id, "status": "present",
               "timestamp": "2026-01-15T23:30:00-02:00"}),
    );
    assert_eq!(next_day["date"], "2026-01-16");
    assert_eq!(next_day["isLate"], false);
    assert_eq!(
        expect_record(&mut admin_ws, "attendance_update", &next_day["id"]),
        next_day
    );
    assert_eq!(
        expect_record(&mut admin_ws, "general_attendance_update", &next_day["id"]),
        next_day
    );

    // Left rooms get nothing more.
    staff_ws.send_ref(
        "leave_attendance_room",
        "bye",
        json!({"employee_id": trainer.id}),
    );
    let left = staff_ws.expect("attendance_room_left");
    assert_eq!(left["ref"], "bye");
    assert_eq!(left["payload"]["employee_id"], trainer.id);
    admin_ws.send("leave_general_attendance", json!({}));
    admin_ws.expect("general_attendance_left");
    let evening = post_record(
        app,
        &device.token,
        json!({"employee_id": trainer.id, "status": "left", "timestamp": at("17:00:00")}),
    );
    expect_record(&mut trainer_ws, "attendance_update", &evening["id"]);
    assert_quiet(
        &mut staff_ws,
        &["attendance_update"],
        Duration::from_millis(800),
    );
    assert_quiet(
        &mut admin_ws,
        &["general_attendance_update"],
        Duration::from_millis(300),
    );
}

fn records_are_checked_and_listed(app: &TestApp) {
    let admin = app.admin();
    let device = app.user("device");
    let staff = app.user("staff");
    let trainer = app.user("trainer");
    let member = app.user("member");
    let mut admin_ws = app.ws_auth(&admin);
    admin_ws.send("join_general_attendance", json!({}));
    admin_ws.expect("general_attendance_joined");

    // Bad input: the contract's errors, nothing stored.
    let cases = [
        (
            json!({"employee_id": trainer.id, "status": "late"}),
            422,
            "validation_failed",
        ),
        (
            json!({"employee_id": member.id, "status": "present"}),
            422,
            "validation_failed",
        ),
        (
            json!({"employee_id": admin.id, "status": "present"}),
            422,
            "validation_failed",
        ),
        (
            json!({"employee_id": 987654, "status": "present"}),
            404,
            "not_found",
        ),
        (
            json!({"employee_id": trainer.id, "status": "present", "timestamp": "9am"}),
            422,
            "validation_failed",
        ),
        (json!({"status": "present"}), 422, "validation_failed"),
        (
            json!({"employee_id": trainer.id, "status": "present", "device": "d".repeat(101)}),
            422,
            "validation_failed",
        ),
    ];
    for (body, status, code) in cases {
        let (got, reply) = app.post("/api/attendance", &device.token, body.clone());
        assert_eq!(got, status, "{body} -> {reply}");
        assert_error(&reply, code);
    }
    // Only admins and devices post records.
    for who in [&staff, &trainer, &member] {
        let (status, body) = app.post(
            "/api/attendance",
            &who.token,
            json!({"employee_id": staff.id, "status": "present"}),
        );
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "forbidden");
    }
    let (_, all) = app.get("/api/attendance", &admin.token);
    assert_eq!(all["records"], json!([]), "refused requests stored nothing");

    // A repeated idempotency key stores one record and answers the original.
    let req = json!({"employee_id": staff.id, "status": "present", "timestamp": at("08:55:00"),
                     "idempotency_key": "door-42"});
    let first = post_record(app, &device.token, req.clone());
    admin_ws.expect("general_attendance_update");
    let again = post_record(app, &device.token, req.clone());
    assert_eq!(again, first);
    let again = post_record(app, &admin.token, req);
    assert_eq!(again["id"], first["id"]);
    assert_quiet(
        &mut admin_ws,
        &["general_attendance_update"],
        Duration::from_millis(1000),
    );
    let (status, body) = app.post(
        "/api/attendance",
        &device.token,
        json!({"employee_id": trainer.id, "status": "absent", "idempotency_key": "door-42"}),
    );
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "conflict");

    post_record(
        app,
        &device.token,
        json!({"employee_id": trainer.id, "status": "present", "timestamp": at("09:30:00")}),
    );
    // Today's record (no timestamp: now).
    let today = post_record(
        app,
        &device.token,
        json!({"employee_id": staff.id, "status": "present"}),
    );

    // Admins see everyone, or one employee.
    let (status, list) = app.get(&format!("/api/attendance?date={DAY}"), &admin.token);
    assert_eq!(status, 200, "{list}");
    let records = list["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{list}");
    assert_eq!(records[0], first);
    assert_eq!(records[1]["employee_id"], trainer.id);
    assert_eq!(records[1]["isLate"], true);
    let (_, list) = app.get(
        &format!("/api/attendance?date={DAY}&employee_id={}", trainer.id),
        &admin.token,
    );
    assert_eq!(list["records"].as_array().unwrap().len(), 1);
    // Without a date: today (UTC).
    let (_, list) = app.get("/api/attendance", &admin.token);
    assert_eq!(list["records"], json!([today]));

    // Staff see their own records only.
    let (status, list) = app.get(&format!("/api/attendance?date={DAY}"), &staff.token);
    assert_eq!(status, 200);
    assert_eq!(list["records"], json!([first]));
    let (_, list) = app.get(
        &format!("/api/attendance?date={DAY}&employee_id={}", staff.id),
        &staff.token,
    );
    assert_eq!(list["records"], json!([first]));
    let (status, body) = app.get(
        &format!("/api/attendance?date={DAY}&employee_id={}", trainer.id),
        &staff.token,
    );
    assert_eq!(status, 403);
    assert_error(&body, "forbidden");
    for who in [&trainer, &member, &device] {
        let (status, body) = app.get("/api/attendance", &who.token);
        assert_eq!(status, 403, "{body}");
        assert_error(&body, "forbidden");
    }
    for bad in ["15-01-2026", "2026-02-30", "today"] {
        let (status, body) = app.get(&format!("/api/attendance?date={bad}"), &admin.token);
        assert_eq!(status, 422, "{bad}");
        assert_error(&body, "validation_failed");
    }
    let (status, body) = app.get("/api/attendance?employee_id=x", &admin.token);
    assert_eq!(status, 422);
    assert_error(&body, "validation_failed");
}

both_backends!(rooms_and_lateness, records_are_checked_and_listed);

/// `SPOTTER_SHIFT_START` moves the line: on time at the start, late a second after, and
/// late at the default 09:00 too.
fn shift_start_is_configurable(app: &TestApp) {
    let device = app.user("device");
    let staff = app.user("staff");
    let record = |time: &str| {
        post_record(
            app,
            &device.token,
            json!({"employee_id": staff.id, "status": "present", "timestamp": at(time)}),
        )["isLate"]
            .clone()
    };
    assert_eq!(record("06:15:00"), false);
    assert_eq!(record("06:15:01"), true);
    assert_eq!(record("06:14:59"), false);
    assert_eq!(record("09:00:00"), true);
}

crate::both_backends_with_env!(
    &[("SPOTTER_SHIFT_START", "06:15")],
    shift_start_is_configurable
);
