//! Image uploads (issue #4): type by content, the size limit while streaming, safe ids,
//! and the download headers.

use std::io::Read;

use serde_json::Value;

use crate::both_backends;
use crate::common::*;

/// A 1×1 PNG.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

const BOUNDARY: &str = "----spotter-test-boundary";

/// A multipart/form-data body with one file field.
fn multipart(field: &str, filename: &str, content_type: &str, data: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
         Content-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post_raw(app: &TestApp, token: Option<&str>, content_type: &str, body: &[u8]) -> (u16, Value) {
    let mut req = ureq::post(&app.url("/api/files/upload"))
        .timeout(WAIT)
        .set("Content-Type", content_type);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.send_bytes(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("upload: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Uploads `data` as the `file` field, declared as a PNG named `filename`.
pub fn upload(app: &TestApp, token: &str, filename: &str, data: &[u8]) -> (u16, Value) {
    let body = multipart("file", filename, "image/png", data);
    post_raw(
        app,
        Some(token),
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        &body,
    )
}

/// GET a file: status, content type, nosniff header, bytes.
fn download(app: &TestApp, path: &str) -> (u16, String, Option<String>, Vec<u8>) {
    let resp = match ureq::get(&app.url(path)).timeout(WAIT).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = resp.status();
    let ctype = resp.content_type().to_string();
    let nosniff = resp.header("X-Content-Type-Options").map(str::to_string);
    let mut bytes = Vec::new();
    resp.into_reader().read_to_end(&mut bytes).unwrap();
    (status, ctype, nosniff, bytes)
}

/// No temporary or stray files are left in the uploads directory.
fn uploads_in(app: &TestApp) -> Vec<String> {
    let dir = app.dir.path().join("data").join("uploads");
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn upload_and_download(app: &TestApp) {
    let member = app.user("member");
    let (status, file) = upload(app, &member.token, "pixel.png", PNG);
    assert_eq!(status, 201, "{file}");
    let id = file["id"].as_i64().unwrap();
    assert!(id > 0 && id < (1i64 << 53), "id {id}");
    assert_eq!(file["url"], format!("/api/files/{id}"));
    assert_eq!(file["content_type"], "image/png");
    assert_eq!(file["size"], PNG.len());

    // Anyone with the id gets it, with its type and nosniff.
    let (status, ctype, nosniff, bytes) = download(app, &format!("/api/files/{id}"));
    assert_eq!(status, 200);
    assert_eq!(ctype, "image/png");
    assert_eq!(nosniff.as_deref(), Some("nosniff"));
    assert_eq!(bytes, PNG);

    // The type comes from the bytes: a GIF named .png is a GIF; text named .png is refused.
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let (status, body) = upload(app, &member.token, "really.png", gif);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["content_type"], "image/gif");
    let (status, body) = upload(app, &member.token, "notes.png", b"just some text, honest");
    assert_eq!(status, 415, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    let (status, _) = upload(app, &member.token, "empty.png", b"");
    assert_eq!(status, 415);
    let html = b"<html><script>alert(1)</script></html>";
    assert_eq!(upload(app, &member.token, "x.png", html).0, 415);

    // Not multipart, or no file field.
    let (status, body) = post_raw(app, Some(&member.token), "application/json", b"{}");
    assert_eq!(status, 415, "{body}");
    let body = multipart("picture", "pixel.png", "image/png", PNG);
    let (status, body) = post_raw(
        app,
        Some(&member.token),
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        &body,
    );
    assert_eq!(status, 400, "{body}");
    // Uploading needs a login; downloading needs only the id.
    let body = multipart("file", "pixel.png", "image/png", PNG);
    let (status, _) = post_raw(
        app,
        None,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        &body,
    );
    assert_eq!(status, 401);

    // Ids are numbers and nothing else reaches the disk.
    for path in [
        "/api/files/..%2F..%2Fspotter.db",
        "/api/files/%2e%2e",
        "/api/files/..%2fdata%2f.jwt_secret",
        "/api/files/1.png",
        "/api/files/-1",
        "/api/files/0",
        "/api/files/0x10",
        &format!("/api/files/{id}%00"),
        &format!("/api/files/{}", id ^ 1),
        "/api/files/99999999999999999999",
    ] {
        let (status, ctype, _, body) = download(app, path);
        assert_eq!(status, 404, "{path}");
        assert!(ctype.starts_with("application/json"), "{path}: {ctype}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
    let names = uploads_in(app);
    assert_eq!(names.len(), 2, "only the two images are stored: {names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

fn size_limit(backend: Backend) {
    let Some(app) = TestApp::try_start(backend, &[("SPOTTER_UPLOAD_MAX_BYTES", "1024")]) else {
        return;
    };
    let member = app.user("member");
    let mut exact = PNG.to_vec();
    exact.resize(1024, 0);
    let (status, body) = upload(&app, &member.token, "exact.png", &exact);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["size"], 1024);
    // One byte over the limit: refused while streaming (the declared length is close
    // enough to pass the up-front check), and nothing is left behind.
    let mut over = exact.clone();
    over.push(0);
    let (status, body) = upload(&app, &member.token, "over.png", &over);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    // Far over: refused on the declared length alone.
    let mut big = PNG.to_vec();
    big.resize(200_000, 0);
    let (status, _) = upload(&app, &member.token, "big.png", &big);
    assert_eq!(status, 413);
    let names = uploads_in(&app);
    assert_eq!(
        names.len(),
        1,
        "only the accepted file is stored: {names:?}"
    );
}

#[test]
fn size_limit_sqlite() {
    size_limit(Backend::Sqlite);
}

#[test]
fn size_limit_postgres() {
    size_limit(Backend::Postgres);
}

both_backends!(upload_and_download);
