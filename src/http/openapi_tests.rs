//! The document against what the server mounts: every route in `src/http` (read from the
//! source, so that a route added anywhere is seen) is in the document, and the document
//! has nothing else. A failure names the routes.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::document;

const METHODS: &[&str] = &[
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

/// `{id}` and `{file:.*}` are both `{…}` in OpenAPI terms.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    if out.len() > 1 {
        out.trim_end_matches('/').to_string()
    } else {
        out
    }
}

/// The string literal starting at `s` (just after its opening quote).
fn literal(s: &str) -> Option<&str> {
    s.find('"').map(|end| &s[..end])
}

/// The methods a route builder expression starting at `s` answers (`web::get()`,
/// `web::post()`, …, and `get_or_head()`), up to the end of the builder call.
fn methods_in(s: &str) -> Vec<String> {
    let mut found = Vec::new();
    if s.starts_with("get_or_head()") {
        return vec!["get".into(), "head".into()];
    }
    for m in METHODS {
        if s.starts_with(&format!("web::{m}()")) {
            found.push(m.to_string());
        }
    }
    found
}

/// The scope prefix each module's `routes` is mounted under in `http/mod.rs`
/// (`web::scope("/api/auth").configure(auth::routes)`).
fn scopes(mod_rs: &str) -> Vec<(String, String)> {
    let flat: String = mod_rs.split_whitespace().collect();
    let mut out = Vec::new();
    let mut rest = flat.as_str();
    while let Some(i) = rest.find("web::scope(\"") {
        rest = &rest[i + 12..];
        let Some(prefix) = literal(rest) else { break };
        if let Some(c) = rest.find(".configure(") {
            let after = &rest[c + 11..];
            if let Some(end) = after.find("::routes") {
                out.push((after[..end].to_string(), prefix.to_string()));
            }
        }
    }
    out
}

/// Every (method, path) mounted by the files of `src/http`.
fn mounted() -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mod_rs = std::fs::read_to_string(dir.join("mod.rs")).unwrap();
    let scopes = scopes(&mod_rs);
    let mut routes = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let module = path.file_stem().unwrap().to_string_lossy().to_string();
        if module.ends_with("_tests") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        // Only the code, not the tests at the bottom.
        let source = source.split("#[cfg(test)]").next().unwrap();
        let flat: String = source.split_whitespace().collect();
        let prefix = scopes
            .iter()
            .find(|(m, _)| *m == module)
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        // `.route("PATH", METHOD…)` and `cfg.route(…)`.
        let mut rest = flat.as_str();
        while let Some(i) = rest.find("route(\"") {
            rest = &rest[i + 7..];
            let Some(p) = literal(rest) else { break };
            let after = &rest[p.len() + 2..];
            let full = normalize(&format!("{prefix}{p}"));
            let methods = methods_in(after);
            assert!(
                !methods.is_empty(),
                "{module}: route {p} with a method this test cannot read"
            );
            for m in methods {
                routes.insert((
                    m,
                    if full.is_empty() {
                        "/".into()
                    } else {
                        full.clone()
                    },
                ));
            }
        }
        // `web::resource("PATH").route(web::METHOD()…)…`
        let mut rest = flat.as_str();
        while let Some(i) = rest.find("web::resource(\"") {
            rest = &rest[i + 15..];
            let Some(p) = literal(rest) else { break };
            let body = &rest[p.len() + 2..];
            // This resource's routes run until the next resource or the end of `routes`.
            let end = body.find("web::resource(").unwrap_or(body.len());
            let mut chunk = &body[..end];
            while let Some(j) = chunk.find(".route(") {
                chunk = &chunk[j + 7..];
                for m in methods_in(chunk) {
                    routes.insert((m, normalize(&format!("{prefix}{p}"))));
                }
            }
        }
    }
    routes
}

fn documented() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(document()).unwrap();
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if item.get(*m).is_some() {
                ops.insert((m.to_string(), normalize(path)));
            }
        }
    }
    ops
}

#[test]
fn every_mounted_route_is_documented_and_nothing_else() {
    let mounted = mounted();
    let documented = documented();
    assert!(
        mounted.len() > 30,
        "the route scan found too few routes: {mounted:?}"
    );
    let missing: Vec<_> = mounted.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes mounted but not in /api/openapi.json: {missing:?}\n\
         operations in /api/openapi.json that no route serves: {extra:?}"
    );
}

#[test]
fn the_scan_sees_every_style_of_mounting() {
    let m = mounted();
    for (method, path) in [
        ("post", "/api/auth/login"), // scoped `cfg.route`
        ("post", "/api/users"),      // scoped, empty path
        ("patch", "/api/users/{}"),  // path parameter
        ("put", "/api/trainers/{}/clients/{}"),
        ("get", "/api/checkins"), // `web::resource` with two methods
        ("post", "/api/checkins"),
        ("get", "/api/checkins/stats"),
        ("head", "/static/{}"), // `get_or_head()`
        ("get", "/ws/chat"),
        ("get", "/api/openapi.json"),
    ] {
        assert!(
            m.contains(&(method.to_string(), path.to_string())),
            "{method} {path} not seen in {m:?}"
        );
    }
}

#[test]
fn the_document_has_the_contract() {
    let doc: Value = serde_json::from_str(document()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    let schemes = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["type"], "http");
    assert_eq!(schemes["scheme"], "bearer");
    let error = &doc["components"]["schemas"]["ErrorResponse"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
    // Every operation under /api answers 503 `unavailable` with the error body, and every
    // operation with a token 401.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = &op["responses"];
            if path.starts_with("/api/") && path != "/api/openapi.json" {
                assert_eq!(
                    responses["503"]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorResponse",
                    "{method} {path}"
                );
            }
            if op.get("security").is_some() {
                assert!(responses.get("401").is_some(), "{method} {path}");
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "422"] {
                    assert!(responses.get(s).is_some(), "{method} {path} {s}");
                }
            }
        }
    }
    // Request bodies come from the handlers' types.
    let send = &doc["components"]["schemas"]["SendMessage"];
    for field in ["conversation_id", "content", "client_msg_id"] {
        assert!(
            send["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(field)),
            "{send}"
        );
    }
    let user = &doc["components"]["schemas"]["UserView"];
    for field in [
        "id",
        "username",
        "display_name",
        "role",
        "account_status",
        "is_online",
        "last_seen",
    ] {
        assert!(user["properties"].get(field).is_some(), "{field} in {user}");
    }
}
