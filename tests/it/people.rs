//! Finding people and the front desk's tools over HTTP: the chat pairing rule, trainer and
//! member search, check-in codes (JSON and QR), check-in by code, who is in now, the
//! day's CSV exports, and the security headers on pages and token responses.

use serde_json::{json, Value};

use crate::both_backends;
use crate::common::*;

both_backends!(
    chat_pairing_rule,
    trainer_search_puts_assigned_first,
    member_search_for_trainers_and_the_desk,
    checkin_codes_and_the_desk_scanner,
    day_exports_as_csv,
);

fn admin_create(app: &TestApp, admin: &Login, role: &str, name: &str) -> Login {
    let username = format!("{}_{}", role, uuid_like());
    let (status, body) = app.post(
        "/api/users",
        &admin.token,
        json!({"username": username, "password": PASSWORD, "role": role, "display_name": name}),
    );
    assert_eq!(status, 201, "{body}");
    app.login(&username, PASSWORD)
}

fn set_status(app: &TestApp, admin: &Login, id: i64, status: &str) {
    let (code, body) = app.call(
        "PATCH",
        &format!("/api/users/{id}"),
        Some(&admin.token),
        Some(json!({"account_status": status})),
    );
    assert_eq!(code, 200, "{body}");
}

fn assign(app: &TestApp, admin: &Login, trainer: i64, member: i64) {
    let (status, body) = app.call(
        "PUT",
        &format!("/api/trainers/{trainer}/clients/{member}"),
        Some(&admin.token),
        None,
    );
    assert_eq!(status, 204, "{body}");
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|u| u["id"].as_i64().expect("id"))
        .collect()
}

fn chat_pairing_rule(app: &TestApp) {
    let admin = app.admin();
    let member = app.user("member");
    let other_member = app.user("member");
    let trainer = app.user("trainer");
    let staff = app.user("staff");
    let device = app.user("device");
    let open = |who: &Login, peer: i64| {
        app.post(
            "/api/chat/conversations",
            &who.token,
            json!({ "peer_id": peer }),
        )
    };
    // Refused pairs: 422 validation_failed, whichever side asks.
    let refused = [
        (&member, other_member.id, "members"),
        (&member, staff.id, "members"),
        (&staff, member.id, "members"),
        (&member, device.id, "devices"),
        (&trainer, device.id, "devices"),
        (&admin, device.id, "devices"),
        (&device, trainer.id, "devices"),
        (&staff, staff.id, "two different"),
    ];
    for (who, peer, why) in refused {
        let (status, body) = open(who, peer);
        assert_eq!(status, 422, "{} -> {peer}: {body}", who.username);
        assert_error(&body, "validation_failed");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    // The seed clients' history form opens conversations too: same rule.
    let (status, body) = app.get(
        &format!(
            "/api/chat/history?userId={}&trainerId={}",
            member.id, other_member.id
        ),
        &member.token,
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = app.get(
        &format!(
            "/api/chat/history?userId={}&trainerId={}",
            member.id, device.id
        ),
        &member.token,
    );
    assert_eq!(status, 422, "{body}");
    // Nothing was created by the refusals.
    for who in [&member, &other_member, &staff, &device] {
        let (status, body) = app.get("/api/chat/conversations", &who.token);
        assert_eq!(status, 200);
        assert_eq!(body["conversations"], json!([]), "{}: {body}", who.username);
    }
    // Allowed: a member with a trainer or an admin, staff with a trainer, trainer with trainer.
    for (who, peer) in [
        (&member, trainer.id),
        (&member, admin.id),
        (&staff, trainer.id),
        (&trainer, member.id),
    ] {
        let (status, body) = open(who, peer);
        assert!(
            status == 201 || status == 200,
            "{}: {status} {body}",
            who.username
        );
        assert_eq!(body["peer"]["id"], peer);
    }
    let (status, body) = app.get(
        &format!(
            "/api/chat/history?userId={}&trainerId={}",
            member.id, trainer.id
        ),
        &member.token,
    );
    assert_eq!(status, 200, "{body}");
}

fn trainer_search_puts_assigned_first(app: &TestApp) {
    let admin = app.admin();
    let zed = admin_create(app, &admin, "trainer", "Zed Assigned");
    let amy = admin_create(app, &admin, "trainer", "Amy Free");
    let gone = admin_create(app, &admin, "trainer", "Gone Suspended");
    let member = app.user("member");
    assign(app, &admin, zed.id, member.id);
    set_status(app, &admin, gone.id, "suspended");

    let (status, body) = app.get("/api/trainers", &member.token);
    assert_eq!(status, 200, "{body}");
    let list = &body["trainers"];
    // Zed first though "Amy" sorts before it: assigned ones come first.
    assert_eq!(ids(list), vec![zed.id, amy.id], "{body}");
    assert_eq!(list[0]["assigned"], true);
    assert_eq!(list[1]["assigned"], false);
    for key in [
        "username",
        "display_name",
        "role",
        "account_status",
        "is_online",
        "last_seen",
    ] {
        assert!(
            list[0].get(key).is_some(),
            "user object lacks {key}: {body}"
        );
    }
    // q matches name or username, case-insensitively.
    let (_, body) = app.get("/api/trainers?q=aMy", &member.token);
    assert_eq!(ids(&body["trainers"]), vec![amy.id]);
    let (_, body) = app.get("/api/trainers?q=nobody-like-this", &member.token);
    assert_eq!(body["trainers"], json!([]));
    let long = "x".repeat(65);
    let (status, body) = app.get(&format!("/api/trainers?q={long}"), &member.token);
    assert_eq!(status, 422, "{body}");
    // Any user may search; an unauthenticated caller may not.
    let staff = app.user("staff");
    assert_eq!(app.get("/api/trainers", &staff.token).0, 200);
    assert_eq!(app.call("GET", "/api/trainers", None, None).0, 401);
    // What a member finds, they can chat with.
    let (status, body) = app.post(
        "/api/chat/conversations",
        &member.token,
        json!({"peer_id": amy.id}),
    );
    assert_eq!(status, 201, "{body}");
    // The admin sees each trainer's members.
    let (status, body) = app.get(&format!("/api/trainers/{}/clients", zed.id), &admin.token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body["clients"]), vec![member.id]);
    assert_eq!(
        app.get(&format!("/api/trainers/{}/clients", zed.id), &zed.token)
            .0,
        200
    );
    assert_eq!(
        app.get(&format!("/api/trainers/{}/clients", zed.id), &amy.token)
            .0,
        403
    );
    assert_eq!(
        app.get(
            &format!("/api/trainers/{}/clients", member.id),
            &admin.token
        )
        .0,
        422
    );
}

fn member_search_for_trainers_and_the_desk(app: &TestApp) {
    let admin = app.admin();
    let trainer = app.user("trainer");
    let staff = app.user("staff");
    let mine = admin_create(app, &admin, "member", "Yusuf Mine");
    let other = admin_create(app, &admin, "member", "Bea Other");
    let off = admin_create(app, &admin, "member", "Sus Pended");
    let stranger = admin_create(app, &admin, "member", "Aaron Stranger");
    assign(app, &admin, trainer.id, mine.id);
    set_status(app, &admin, off.id, "suspended");

    // A trainer finds their clients: assigned ones, and members they chat with.
    let (status, body) = app.get("/api/members", &trainer.token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body["members"]),
        vec![mine.id],
        "only the trainer's own: {body}"
    );
    assert_eq!(body["members"][0]["assigned"], true);
    assert!(body["members"][0].get("checked_in_at").is_none());
    let (status, _) = app.post(
        "/api/chat/conversations",
        &trainer.token,
        json!({"peer_id": other.id}),
    );
    assert_eq!(status, 201);
    let (_, body) = app.get("/api/members", &trainer.token);
    assert_eq!(
        ids(&body["members"]),
        vec![mine.id, other.id],
        "assigned first: {body}"
    );
    assert_eq!(body["members"][1]["assigned"], false);
    let (_, body) = app.get("/api/members?q=bea", &trainer.token);
    assert_eq!(ids(&body["members"]), vec![other.id]);
    // A non-active member is not listed, even when assigned.
    assign(app, &admin, trainer.id, off.id);
    let (_, body) = app.get("/api/members?q=sus", &trainer.token);
    assert_eq!(body["members"], json!([]), "{body}");
    // The client list filters by name too.
    let (_, body) = app.get("/api/trainer/clients?q=YUSUF", &trainer.token);
    assert_eq!(ids(&body["clients"]), vec![mine.id], "{body}");
    // Members do not search members.
    let (status, body) = app.get("/api/members", &mine.token);
    assert_eq!(status, 403, "{body}");

    let (_, body) = app.get("/api/members?q=aaron", &trainer.token);
    assert_eq!(body["members"], json!([]), "not the trainer's: {body}");

    // The desk sees everyone, with whether they are in.
    let (status, body) = app.post(
        "/api/checkins",
        &staff.token,
        json!({"member_id": other.id}),
    );
    assert_eq!(status, 201, "{body}");
    let (_, body) = app.get("/api/members?q=e", &staff.token);
    let by_id = |id: i64| {
        body["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing: {body}"))
    };
    assert!(by_id(other.id)["checked_in_at"].is_string());
    assert!(by_id(mine.id)["checked_in_at"].is_null());
    assert_eq!(by_id(off.id)["account_status"], "suspended");
    let (_, body) = app.get("/api/members?q=aaron", &staff.token);
    assert_eq!(ids(&body["members"]), vec![stranger.id]);
    // By check-in code.
    let (_, code) = app.get(
        &format!("/api/users/{}/checkin-code", mine.id),
        &staff.token,
    );
    let code = code["code"].as_str().unwrap().to_lowercase();
    let (_, body) = app.get(&format!("/api/members?q={code}"), &staff.token);
    assert_eq!(body["members"][0]["id"], mine.id, "{body}");
    // Who is in now.
    let (status, body) = app.get("/api/checkins/open", &staff.token);
    assert_eq!(status, 200);
    let open: Vec<i64> = body["checkins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["member_id"].as_i64().unwrap())
        .collect();
    assert_eq!(open, vec![other.id]);
    assert_eq!(app.get("/api/checkins/open", &trainer.token).0, 403);
}

fn checkin_codes_and_the_desk_scanner(app: &TestApp) {
    let admin = app.admin();
    let staff = app.user("staff");
    let device = app.user("device");
    let carla = admin_create(app, &admin, "member", "Carla Code");
    let finn = admin_create(app, &admin, "member", "Finn Suspended");
    let trainer = app.user("trainer");

    // Many first reads at once still give one code.
    let codes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let (status, body) = app.get("/api/users/me/checkin-code", &carla.token);
                    assert_eq!(status, 200, "{body}");
                    body["code"].as_str().unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let code = codes[0].clone();
    assert!(codes.iter().all(|c| *c == code), "{codes:?}");
    assert_eq!(code.len(), 6);
    let (_, again) = app.get(
        &format!("/api/users/{}/checkin-code", carla.id),
        &admin.token,
    );
    assert_eq!(again["code"], code.as_str());
    assert_eq!(again["member_id"], carla.id);
    // Only the member, staff and admins see it; only members have one.
    assert_eq!(
        app.get(
            &format!("/api/users/{}/checkin-code", carla.id),
            &finn.token
        )
        .0,
        403
    );
    assert_eq!(
        app.get(
            &format!("/api/users/{}/checkin-code", carla.id),
            &trainer.token
        )
        .0,
        403
    );
    assert_eq!(app.get("/api/users/me/checkin-code", &trainer.token).0, 422);
    assert_eq!(
        app.get("/api/users/me/checkin-code?format=png", &carla.token)
            .0,
        422
    );
    // The QR code is an SVG image.
    let resp = ureq::get(&app.url("/api/users/me/checkin-code?format=svg"))
        .set("Authorization", &format!("Bearer {}", carla.token))
        .call()
        .expect("svg");
    assert_eq!(resp.content_type(), "image/svg+xml");
    let svg = resp.into_string().unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");

    // The scanner types the code (any case, with a dash): checked in.
    let typed = format!("{}-{}", &code[..3], code[3..].to_lowercase());
    let (status, body) = app.post(
        "/api/checkins/by-code",
        &staff.token,
        json!({"code": typed, "location": "Main floor"}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["member_id"], carla.id);
    assert_eq!(body["location"], "Main floor");
    // Again: 409, saying who.
    let (status, body) = app.post(
        "/api/checkins/by-code",
        &device.token,
        json!({"code": code}),
    );
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "conflict");
    assert_eq!(body["member"]["id"], carla.id);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Carla Code"));

    // A suspended member's code is refused with the reason, and nothing is stored.
    let (_, finn_code) = app.get("/api/users/me/checkin-code", &finn.token);
    let finn_code = finn_code["code"].as_str().unwrap().to_string();
    set_status(app, &admin, finn.id, "suspended");
    let (status, body) = app.post(
        "/api/checkins/by-code",
        &staff.token,
        json!({"code": finn_code}),
    );
    assert_eq!(status, 403, "{body}");
    assert_error(&body, "account_inactive");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Finn Suspended") && message.contains("suspended"),
        "{message}"
    );
    assert_eq!(body["member"]["account_status"], "suspended");
    let (_, open) = app.get("/api/checkins/open", &staff.token);
    assert_eq!(open["checkins"].as_array().unwrap().len(), 1, "{open}");

    // Unknown and malformed codes; members and trainers cannot scan.
    let (status, body) = app.post(
        "/api/checkins/by-code",
        &staff.token,
        json!({"code": "ZZZZZZ"}),
    );
    assert!(
        status == 404 || (code == "ZZZZZZ" && status == 409),
        "{body}"
    );
    let (status, body) = app.post(
        "/api/checkins/by-code",
        &staff.token,
        json!({"code": "not a code!"}),
    );
    assert_eq!(status, 422, "{body}");
    let (status, _) = app.post("/api/checkins/by-code", &carla.token, json!({"code": code}));
    assert_eq!(status, 403);
    let (status, _) = app.post(
        "/api/checkins/by-code",
        &trainer.token,
        json!({"code": code}),
    );
    assert_eq!(status, 403);
    let (status, _) = app.post("/api/checkins/by-code", &staff.token, json!({}));
    assert_eq!(status, 422);
}

/// A minimal RFC 4180 reader: enough to check that the export parses back.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "CSV ends with CRLF");
    rows
}

fn get_text(app: &TestApp, path: &str, token: &str) -> (u16, String, String, String) {
    let res = ureq::get(&app.url(path))
        .set("Authorization", &format!("Bearer {token}"))
        .timeout(WAIT)
        .call();
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let status = resp.status();
    let ctype = resp.header("content-type").unwrap_or("").to_string();
    let disposition = resp.header("content-disposition").unwrap_or("").to_string();
    (status, ctype, disposition, resp.into_string().unwrap())
}

fn day_exports_as_csv(app: &TestApp) {
    let admin = app.admin();
    let staff = app.user("staff");
    let tricky = admin_create(app, &admin, "member", "=O'Brien, \"Finn\"");
    let plain = admin_create(app, &admin, "member", "Ann Plain");
    for m in [&tricky, &plain] {
        let (status, body) = app.post(
            "/api/checkins",
            &staff.token,
            json!({"member_id": m.id, "location": "Studio, upstairs", "notes": "line1\nline2"}),
        );
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = app.post(
        "/api/checkins/checkout",
        &staff.token,
        json!({"member_id": plain.id}),
    );
    assert_eq!(status, 200);
    let (status, body) = app.post(
        "/api/attendance",
        &admin.token,
        json!({"employee_id": staff.id, "status": "present", "timestamp": format!("{}T10:30:00Z", today())}),
    );
    assert_eq!(status, 201, "{body}");

    let day = today();
    let (status, ctype, disposition, text) = get_text(
        app,
        &format!("/api/checkins?date={day}&format=csv"),
        &admin.token,
    );
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("text/csv"), "{ctype}");
    assert!(
        disposition.contains(&format!("checkins-{day}.csv")),
        "{disposition}"
    );
    let rows = parse_csv(&text);
    assert_eq!(rows[0][..3], ["id", "member_id", "member_name"]);
    assert_eq!(rows.len(), 3, "{text}");
    let width = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == width), "{rows:?}");
    let t = rows
        .iter()
        .find(|r| r[1] == tricky.id.to_string())
        .expect("tricky row");
    assert_eq!(
        t[2], "'=O'Brien, \"Finn\"",
        "a formula is defused, the rest kept"
    );
    assert_eq!(t[3], "Studio, upstairs");
    assert_eq!(t[5], "", "still in");
    assert_eq!(t[7], "line1\nline2");
    let p = rows
        .iter()
        .find(|r| r[1] == plain.id.to_string())
        .expect("plain row");
    assert!(!p[5].is_empty() && p[6] == "0", "{p:?}");

    let (status, ctype, _, text) = get_text(
        app,
        &format!("/api/attendance?date={day}&format=csv"),
        &admin.token,
    );
    assert_eq!(status, 200, "{text}");
    assert!(ctype.starts_with("text/csv"));
    let rows = parse_csv(&text);
    assert_eq!(
        rows[0],
        [
            "employee_id",
            "employee_name",
            "status",
            "date",
            "timestamp",
            "device",
            "late"
        ]
    );
    assert_eq!(rows[1][0], staff.id.to_string());
    assert_eq!(rows[1][2], "present");
    assert_eq!(rows[1][6], "yes", "10:30 is after the 09:00 shift start");

    // A past day is an empty export, not an error; bad formats and callers are refused.
    let (status, _, _, text) = get_text(
        app,
        "/api/checkins?date=2020-01-01&format=csv",
        &admin.token,
    );
    assert_eq!(status, 200);
    assert_eq!(parse_csv(&text).len(), 1);
    let (status, _) = app.get("/api/checkins?format=xml", &admin.token);
    assert_eq!(status, 422);
    let member = app.user("member");
    let (status, _) = app.get("/api/checkins?format=csv", &member.token);
    assert_eq!(status, 403);
}

/// Today in UTC (the server counts days in UTC).
fn today() -> String {
    chrono::Utc::now().date_naive().to_string()
}

#[test]
fn security_headers_on_pages_and_token_responses() {
    let app = TestApp::sqlite();
    for path in [
        "/",
        "/admin/",
        "/chat/",
        "/admin",
        "/static/admin.js",
        "/api/users/me",
    ] {
        let resp = match ureq::get(&app.url(path)).timeout(WAIT).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{path}: {e}"),
        };
        let csp = resp.header("content-security-policy").unwrap_or_default();
        for part in [
            "default-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ] {
            assert!(csp.contains(part), "{path}: CSP {csp:?} lacks {part}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(resp.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            resp.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
    }
    // Token responses are never stored, also with a trailing slash and when refused.
    let login = |path: &str, password: &str| match ureq::post(&app.url(path))
        .timeout(WAIT)
        .send_json(json!({"username": "admin", "password": password}))
    {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let ok = login("/api/auth/login", ADMIN_PASSWORD);
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.header("cache-control"), Some("no-store"));
    let body: Value = ok.into_json().unwrap();
    let refused = login("/api/auth/login/", "wrong-password");
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    let refreshed = ureq::post(&app.url("/api/auth/refresh"))
        .timeout(WAIT)
        .send_json(json!({"refresh_token": body["refresh_token"]}))
        .expect("refresh");
    assert_eq!(refreshed.header("cache-control"), Some("no-store"));
    // Pages stay cacheable for revalidation; only tokens are no-store.
    let page = ureq::get(&app.url("/admin/")).call().unwrap();
    assert_eq!(page.header("cache-control"), Some("no-cache"));
}
