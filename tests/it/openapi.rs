//! `GET /api/openapi.json` on the live server: served to anyone, and every operation it
//! documents reaches a mounted route (never the fallback `route not found`, never 405).
//! The other direction (every mounted route is documented) is `http::openapi::tests`.

use serde_json::Value;

use crate::common::*;

#[test]
fn the_document_is_served_and_every_operation_is_routed() {
    let app = TestApp::sqlite();
    let (status, doc) = app.call("GET", "/api/openapi.json", None, None);
    assert_eq!(status, 200, "{doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let admin = app.admin();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Any id will do: an unknown one is the handler's 404, not the router's.
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { "1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let concrete = if concrete.is_empty() {
            "/".to_string()
        } else {
            concrete
        };
        for method in item.as_object().unwrap().keys() {
            if method == "parameters" || concrete == "/api/auth/logout" {
                continue;
            }
            let res = ureq::request(&method.to_uppercase(), &app.url(&concrete))
                .set("Authorization", &format!("Bearer {}", admin.token))
                .timeout(WAIT)
                .call();
            let (status, body) = match res {
                Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
                Err(e) => panic!("{method} {concrete}: {e}"),
            };
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(
                !(status == 404 && body["error"]["message"] == "route not found"),
                "{method} {path} is documented but not routed"
            );
            assert!(status < 500, "{method} {concrete}: {status} {body}");
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} operations");
}
