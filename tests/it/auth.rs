//! Accounts and tokens (issue #2): login, refresh rotation, logout, bad tokens, roles,
//! account status, error shapes. Each test runs on SQLite and on PostgreSQL.

use serde_json::json;

use crate::both_backends;
use crate::common::*;

fn login_refresh_logout(app: &TestApp) {
    let (status, body) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
    );
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"]["username"], "admin");
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(body["user"]["is_online"], true);
    let token = body["access_token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();

    let (status, me) = app.get("/api/users/me", &token);
    assert_eq!(status, 200);
    assert_eq!(me["username"], "admin");
    // Trailing slash is answered directly.
    let (status, _) = app.get("/api/users/me/", &token);
    assert_eq!(status, 200);

    // Rotation: the new pair works, the old refresh token does not, and reusing it revokes
    // the whole family (the new refresh token too).
    let (status, pair) = app.call(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!(status, 200, "{pair}");
    let refresh2 = pair["refresh_token"].as_str().unwrap().to_string();
    let token2 = pair["access_token"].as_str().unwrap().to_string();
    assert_ne!(refresh2, refresh);
    assert_eq!(app.get("/api/users/me", &token2).0, 200);
    let (status, body) = app.call(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh})),
    );
    assert_eq!(status, 401);
    assert_error(&body, "unauthorized");
    let (status, _) = app.call(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh2})),
    );
    assert_eq!(status, 401, "reuse must revoke the family");
    assert_eq!(
        app.get("/api/users/me", &token2).0,
        401,
        "reuse revokes the family's access tokens"
    );

    // Logout revokes the access token and the refresh token.
    let l = app.admin();
    let (status, _) = app.call(
        "POST",
        "/api/auth/logout",
        Some(&l.token),
        Some(json!({"refresh_token": l.refresh})),
    );
    assert_eq!(status, 204);
    let (status, body) = app.get("/api/users/me", &l.token);
    assert_eq!(status, 401);
    assert_error(&body, "unauthorized");
    let (status, _) = app.call(
        "POST",
        "/api/auth/refresh",
        None,
        Some(json!({"refresh_token": l.refresh})),
    );
    assert_eq!(status, 401);
}

fn bad_credentials(app: &TestApp) {
    let (status, body) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": "admin", "password": "wrong-password"})),
    );
    assert_eq!(status, 401);
    assert_error(&body, "invalid_credentials");
    let (status, body) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": "nobody", "password": "wrong-password"})),
    );
    assert_eq!(status, 401);
    assert_error(&body, "invalid_credentials");
}

fn roles_and_status(app: &TestApp) {
    let admin = app.admin();
    let member = app.user("member");
    // A member is not an admin.
    let (status, body) = app.get("/api/users/all-users", &member.token);
    assert_eq!(status, 403);
    assert_error(&body, "forbidden");
    let (status, body) = app.post(
        "/api/users",
        &member.token,
        json!({"username": "x1", "password": PASSWORD, "role": "admin"}),
    );
    assert_eq!(status, 403);
    assert_error(&body, "forbidden");
    // Suspension: the token stops working, login is refused with account_inactive.
    let (status, body) = app.call(
        "PATCH",
        &format!("/api/users/{}", member.id),
        Some(&admin.token),
        Some(json!({"account_status": "suspended"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["account_status"], "suspended");
    assert_eq!(body["is_online"], false);
    let (status, body) = app.call("POST", "/api/users/heartbeat", Some(&member.token), None);
    assert_eq!(status, 403);
    assert_error(&body, "account_inactive");
    let (status, body) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": member.username, "password": PASSWORD})),
    );
    assert_eq!(status, 403);
    assert_error(&body, "account_inactive");
    // Reactivated: logs in again.
    let (status, _) = app.call(
        "PATCH",
        &format!("/api/users/{}", member.id),
        Some(&admin.token),
        Some(json!({"account_status": "active"})),
    );
    assert_eq!(status, 200);
    app.login(&member.username, PASSWORD);
}

fn user_management_errors(app: &TestApp) {
    let admin = app.admin();
    let (status, body) = app.post(
        "/api/users",
        &admin.token,
        json!({"username": "admin", "password": PASSWORD, "role": "admin"}),
    );
    assert_eq!(status, 409);
    assert_error(&body, "conflict");
    let (status, body) = app.post(
        "/api/users",
        &admin.token,
        json!({"username": "coach", "password": PASSWORD, "role": "wizard"}),
    );
    assert_eq!(status, 422);
    assert_error(&body, "validation_failed");
    let (status, body) = app.post(
        "/api/users",
        &admin.token,
        json!({"username": "coach", "password": "short", "role": "trainer"}),
    );
    assert_eq!(status, 422);
    assert_error(&body, "validation_failed");
    let (status, body) = app.post("/api/users", &admin.token, json!({"username": "coach"}));
    assert_eq!(status, 422);
    assert_error(&body, "validation_failed");
    let (status, body) = app.call(
        "PATCH",
        "/api/users/999999",
        Some(&admin.token),
        Some(json!({"display_name": "Ghost"})),
    );
    assert_eq!(status, 404);
    assert_error(&body, "not_found");
    let (status, body) = app.post("/api/users", &admin.token, json!({"username": "coach", "password": PASSWORD, "role": "trainer", "display_name": "Coach C"}));
    assert_eq!(status, 201);
    assert_eq!(body["display_name"], "Coach C");
    assert_eq!(body["is_online"], false);
    assert!(body["last_seen"].is_null());
}

both_backends!(
    login_refresh_logout,
    bad_credentials,
    roles_and_status,
    user_management_errors
);

#[test]
fn bad_tokens_are_refused() {
    let app = TestApp::sqlite();
    let good = app.admin().token;
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |v: serde_json::Value| {
        use std::io::Write;
        // URL-safe base64 without padding, by hand (tests avoid extra crates).
        let bytes = v.to_string().into_bytes();
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = Vec::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |a, b| (a << 8) | *b as u32) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.write_all(&[table[((n >> (18 - 6 * i)) & 63) as usize]])
                    .unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": "1", "role": "admin", "jti": "x", "iat": now, "exp": now + 600});
    let cases = vec![
        ("garbage", "not-a-jwt".to_string()),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(
                    json!({"sub": "1", "role": "admin", "jti": "y", "iat": now, "exp": now + 9999})
                ),
                parts[2]
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT"})),
                b64(claims.clone())
            ),
        ),
        (
            "wrong signature",
            format!(
                "{}.{}.{}",
                parts[0], parts[1], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            ),
        ),
        (
            "HS512 header",
            format!(
                "{}.{}.{}",
                b64(json!({"alg": "HS512", "typ": "JWT"})),
                parts[1],
                parts[2]
            ),
        ),
    ];
    for (what, token) in cases {
        let (status, body) = app.get("/api/users/me", &token);
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
    }
    let (status, body) = app.call("GET", "/api/users/me", None, None);
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[test]
fn expired_tokens_are_refused() {
    let app = TestApp::start(Backend::Sqlite, &[("SPOTTER_ACCESS_TTL_SECS", "1")]);
    let admin = app.admin();
    assert_eq!(app.get("/api/users/me", &admin.token).0, 200);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (status, body) = app.get("/api/users/me", &admin.token);
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[test]
fn logout_survives_a_restart() {
    let mut app = TestApp::sqlite();
    let admin = app.admin();
    let (status, _) = app.call("POST", "/api/auth/logout", Some(&admin.token), None);
    assert_eq!(status, 204);
    app.restart();
    let (status, _) = app.get("/api/users/me", &admin.token);
    assert_eq!(status, 401, "a revoked token stays revoked after a restart");
    let fresh = app.admin();
    assert_eq!(app.get("/api/users/me", &fresh.token).0, 200);
}

#[test]
fn logins_are_throttled() {
    let app = TestApp::start(Backend::Sqlite, &[("SPOTTER_LOGIN_MAX_FAILURES", "3")]);
    for _ in 0..3 {
        let (status, _) = app.call(
            "POST",
            "/api/auth/login",
            None,
            Some(json!({"username": "admin", "password": "nope-nope"})),
        );
        assert_eq!(status, 401);
    }
    let (status, body) = app.call(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
    );
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[test]
fn error_shapes() {
    let app = TestApp::sqlite();
    let admin = app.admin();
    // Malformed JSON: 400.
    let resp = ureq::post(&app.url("/api/auth/login"))
        .set("Content-Type", "application/json")
        .send_string("{nope");
    let r = match resp {
        Err(ureq::Error::Status(_, r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.into_json().unwrap();
    assert_eq!(body["error"]["code"], "invalid_request");
    // Too large: 413.
    let big = "x".repeat(300 * 1024);
    let resp = ureq::post(&app.url("/api/auth/login"))
        .set("Content-Type", "application/json")
        .send_string(&format!("{{\"username\":\"{big}\",\"password\":\"p\"}}"));
    let r = match resp {
        Err(ureq::Error::Status(_, r)) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.into_json().unwrap();
    assert_eq!(body["error"]["code"], "too_large");
    // Unknown route: 404 JSON.
    let (status, body) = app.get("/api/nothing-here", &admin.token);
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    // Non-integer id: 404.
    let (status, body) = app.call(
        "PATCH",
        "/api/users/abc",
        Some(&admin.token),
        Some(json!({})),
    );
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    // Ops endpoints.
    assert_eq!(app.call("GET", "/healthz", None, None).0, 200);
    let (status, body) = app.call("GET", "/readyz/", None, None);
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ready");
    let metrics = ureq::get(&app.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(metrics.contains("spotter_http_requests_total"), "{metrics}");
    assert!(metrics.contains("spotter_http_request_duration_seconds_bucket"));
    // No secrets in the log: neither passwords nor tokens.
    let log = app.log();
    assert!(
        !log.contains(ADMIN_PASSWORD),
        "password leaked into the log"
    );
    assert!(!log.contains(&admin.token), "token leaked into the log");
}
