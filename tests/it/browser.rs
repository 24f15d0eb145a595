//! The admin panel in a real browser: Debian's chromium, driven headless over CDP by
//! `headless_chrome`. Logs in through the form, watches presence change live in the users
//! table, creates and suspends users through the page. Without chromium the test is
//! skipped loudly, except in CI, where it fails.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use headless_chrome::protocol::cdp::Page;
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::{json, Value};

use crate::common::*;

/// Debian's chromium (`apt-get install -y chromium chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the page gets to show something (it waits on the server and on the socket).
const PAGE_WAIT: Duration = Duration::from_secs(15);
/// The browser window: a staff desktop.
const WINDOW: (u32, u32) = (1440, 1000);
/// Nothing leaves the machine: no QUIC, no updates, no sync, no first-run fetches.
const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];
/// Collects the page's uncaught errors so that the test can insist on none.
const ERROR_TRAP: &str = "window.__errors = [];\
    addEventListener('error', e => window.__errors.push(String(e.message)));\
    addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));";

fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false")
        .unwrap_or(false)
}

/// A running chromium with its own fresh profile.
struct Chrome {
    browser: Browser,
    _profile: tempfile::TempDir,
}

impl Chrome {
    /// Starts chromium, or `None` (loudly) when it is not installed outside CI.
    fn launch() -> Option<Chrome> {
        if !Path::new(CHROMIUM).exists() {
            if in_ci() {
                panic!("{CHROMIUM} is required in CI: apt-get install -y chromium chromium-driver");
            }
            eprintln!(
                "\n!!! SKIPPED: {CHROMIUM} not found; the browser test did NOT run \
                 (apt-get update && apt-get install -y chromium chromium-driver) !!!\n"
            );
            return None;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let options = LaunchOptions::default_builder()
            .path(Some(PathBuf::from(CHROMIUM)))
            .headless(true)
            .sandbox(false)
            .window_size(Some(WINDOW))
            .user_data_dir(Some(profile.path().to_path_buf()))
            .args(CHROMIUM_ARGS.iter().map(OsStr::new).collect())
            .idle_browser_timeout(Duration::from_secs(180))
            .build()
            .expect("launch options");
        let browser = Browser::new(options).expect("start chromium");
        Some(Chrome {
            browser,
            _profile: profile,
        })
    }

    /// A new tab that records uncaught page errors, at `url`.
    fn open(&self, url: &str) -> Arc<Tab> {
        let tab = self.browser.new_tab().expect("new tab");
        tab.set_default_timeout(PAGE_WAIT);
        tab.call_method(Page::AddScriptToEvaluateOnNewDocument {
            source: ERROR_TRAP.into(),
            world_name: None,
            include_command_line_api: None,
            run_immediately: None,
        })
        .expect("error trap");
        tab.navigate_to(url)
            .expect("navigate")
            .wait_until_navigated()
            .expect("page loaded");
        tab
    }
}

/// Evaluates `expr` in the page; answers its value (as JSON).
fn js(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("JSON.stringify((() => {{ return ({expr}); }})() ?? null)");
    let result = tab.evaluate(&wrapped, false).expect("evaluate");
    match result.value {
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// What the page shows, for failure messages.
fn page_text(tab: &Tab) -> String {
    let text = js(tab, "document.body.innerText");
    let errors = js(tab, "window.__errors");
    let text = text
        .as_str()
        .unwrap_or("")
        .chars()
        .take(3000)
        .collect::<String>();
    format!("page errors: {errors}\npage text:\n{text}")
}

/// Waits until `expr` is true in the page; panics with what the page shows after PAGE_WAIT.
fn wait_for(tab: &Tab, expr: &str, what: &str) {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        if js(tab, expr) == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what} ({expr})\n{}", page_text(tab));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Clicks into a field and types into it, like a person.
fn type_into(tab: &Tab, selector: &str, text: &str) {
    let field = tab.wait_for_element(selector).expect(selector);
    field.click().expect("click field");
    // Empty it first: a person would select all and type over it.
    js(
        tab,
        &format!("document.querySelector({selector:?}).value = ''"),
    );
    field.type_into(text).expect("type");
}

/// Picks an option of a <select> and fires `change`, as choosing it with the mouse does.
fn choose(tab: &Tab, selector: &str, value: &str) {
    tab.wait_for_element(selector).expect(selector);
    let ok = js(
        tab,
        &format!(
            "(() => {{ const s = document.querySelector({selector:?}); s.focus(); s.value = {value:?};\
             s.dispatchEvent(new Event('change', {{bubbles: true}})); return s.value === {value:?}; }})()"
        ),
    );
    assert_eq!(ok, Value::Bool(true), "no option {value} in {selector}");
}

fn click(tab: &Tab, selector: &str) {
    tab.wait_for_element(selector)
        .expect(selector)
        .click()
        .expect("click");
}

fn row(username: &str) -> String {
    format!("document.querySelector('[data-testid=\"user-row-{username}\"]')")
}

fn presence_is(username: &str, online: bool) -> String {
    let text = if online { "Online" } else { "Offline" };
    format!(
        "(() => {{ const p = document.querySelector('[data-testid=\"presence-{username}\"]');\
         return !!p && p.textContent === '{text}' && p.offsetParent !== null; }})()"
    )
}

/// Where screenshots go: `target/screenshots/` (not committed).
fn screenshot(tab: &Tab, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = tab
        .capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let path = dir.join(name);
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
    path
}

#[test]
fn admin_panel_live_presence_and_user_management() {
    let Some(chrome) = Chrome::launch() else {
        return;
    };
    let app = TestApp::sqlite();
    let admin = app.admin();
    // A trainer and a member who have never logged in: offline.
    for (username, role, name) in [
        ("coach_anna", "trainer", "Anna Coach"),
        ("member_bob", "member", "Bob Member"),
    ] {
        let (status, body) = app.post(
            "/api/users",
            &admin.token,
            json!({"username": username, "password": PASSWORD, "role": role, "display_name": name}),
        );
        assert_eq!(status, 201, "{body}");
    }

    let tab = chrome.open(&app.url("/admin/"));
    wait_for(
        &tab,
        "!document.getElementById('login-view').hidden",
        "the login form",
    );
    type_into(&tab, "#login-username", "admin");
    type_into(&tab, "#login-password", ADMIN_PASSWORD);
    click(&tab, "#login-submit");

    // The table lists every user with their live status.
    wait_for(&tab, &format!("!!{}", row("coach_anna")), "the users table");
    wait_for(&tab, &presence_is("admin", true), "admin online");
    wait_for(
        &tab,
        &presence_is("coach_anna", false),
        "coach_anna offline",
    );
    wait_for(
        &tab,
        &presence_is("member_bob", false),
        "member_bob offline",
    );
    wait_for(
        &tab,
        "document.getElementById('count-total').textContent === '3'",
        "3 users counted",
    );
    wait_for(
        &tab,
        "document.getElementById('conn-status').dataset.state === 'live'",
        "the socket live",
    );
    // The admin socket gets `initial_stats` on connect.
    wait_for(
        &tab,
        "/^\\d+$/.test(document.getElementById('stat-occupancy').textContent)",
        "initial stats shown",
    );

    // The trainer logs in elsewhere: the row flips to online with no reload.
    js(&tab, "window.__sameDocument = true");
    let anna = app.login("coach_anna", PASSWORD);
    let (status, body) = app.call("POST", "/api/users/heartbeat", Some(&anna.token), None);
    assert_eq!(status, 200, "{body}");
    wait_for(
        &tab,
        &presence_is("coach_anna", true),
        "coach_anna online, live",
    );
    wait_for(
        &tab,
        "document.getElementById('count-online').textContent === '2'",
        "2 online",
    );
    assert_eq!(
        js(&tab, "window.__sameDocument === true"),
        Value::Bool(true),
        "the page must not reload"
    );

    // Filters: online only hides the offline member.
    choose(&tab, "#filter-online", "true");
    wait_for(
        &tab,
        &format!(
            "{}.hidden && !{}.hidden",
            row("member_bob"),
            row("coach_anna")
        ),
        "online filter",
    );
    choose(&tab, "#filter-online", "");
    type_into(&tab, "#filter-search", "anna");
    wait_for(
        &tab,
        &format!("{}.hidden && !{}.hidden", row("admin"), row("coach_anna")),
        "search filter",
    );
    type_into(&tab, "#filter-search", "");
    js(
        &tab,
        "document.getElementById('filter-search').dispatchEvent(new Event('input'))",
    );
    wait_for(
        &tab,
        &format!("!{}.hidden", row("admin")),
        "filters cleared",
    );

    // Create a user through the form.
    type_into(&tab, "#new-username", "carl_new");
    type_into(&tab, "#new-display-name", "Carl Newman");
    type_into(&tab, "#new-password", PASSWORD);
    choose(&tab, "#new-role", "staff");
    click(&tab, "#create-user-submit");
    wait_for(
        &tab,
        &format!("!!{}", row("carl_new")),
        "the new user's row",
    );
    wait_for(&tab, &presence_is("carl_new", false), "carl_new offline");
    assert_eq!(
        js(
            &tab,
            "document.querySelector('[data-testid=\"role-carl_new\"]').value"
        ),
        json!("staff")
    );
    let (_, list) = app.get("/api/users/all-users?q=carl_new", &admin.token);
    assert_eq!(list["users"][0]["display_name"], "Carl Newman", "{list}");
    // Errors from the API are shown: the same username again is a conflict.
    type_into(&tab, "#new-username", "carl_new");
    type_into(&tab, "#new-password", PASSWORD);
    click(&tab, "#create-user-submit");
    wait_for(
        &tab,
        "document.getElementById('create-user-error').textContent.length > 0",
        "the conflict shown",
    );

    // Suspend the trainer: the row shows it, she goes offline, her token stops working.
    choose(&tab, "[data-testid=\"status-coach_anna\"]", "suspended");
    wait_for(
        &tab,
        &format!("{}.dataset.status === 'suspended'", row("coach_anna")),
        "coach_anna suspended",
    );
    wait_for(
        &tab,
        &presence_is("coach_anna", false),
        "coach_anna offline",
    );
    let (status, _) = app.call("POST", "/api/users/heartbeat", Some(&anna.token), None);
    assert_eq!(status, 403, "a suspended account cannot post heartbeats");

    let shot = screenshot(&tab, "admin.png");
    assert!(shot.exists());
    assert_eq!(
        js(&tab, "window.__errors"),
        json!([]),
        "uncaught errors in the page"
    );
}
