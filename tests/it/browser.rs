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
    addEventListener('securitypolicyviolation', e => window.__errors.push('CSP blocked ' + e.violatedDirective + ' ' + e.blockedURI));\
    addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));";

pub(crate) fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false")
        .unwrap_or(false)
}

/// A running chromium with its own fresh profile.
pub(crate) struct Chrome {
    browser: Browser,
    _profile: tempfile::TempDir,
}

impl Chrome {
    /// Starts chromium, or `None` (loudly) when it is not installed outside CI.
    pub(crate) fn launch() -> Option<Chrome> {
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
    pub(crate) fn open(&self, url: &str) -> Arc<Tab> {
        prepare(self.browser.new_tab().expect("new tab"), url)
    }

    /// A tab in a context of its own (its own storage), as a second person's browser.
    pub(crate) fn open_isolated(&self, url: &str) -> Arc<Tab> {
        let context = self.browser.new_context().expect("new context");
        prepare(context.new_tab().expect("new tab"), url)
    }
}

fn prepare(tab: Arc<Tab>, url: &str) -> Arc<Tab> {
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

/// Evaluates `expr` in the page; answers its value (as JSON).
pub(crate) fn js(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("JSON.stringify((() => {{ return ({expr}); }})() ?? null)");
    let result = tab.evaluate(&wrapped, false).expect("evaluate");
    match result.value {
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// What the page shows, for failure messages.
pub(crate) fn page_text(tab: &Tab) -> String {
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
pub(crate) fn wait_for(tab: &Tab, expr: &str, what: &str) {
    let started = Instant::now();
    let deadline = started + PAGE_WAIT;
    loop {
        if js(tab, expr) == Value::Bool(true) {
            eprintln!("browser: {what} after {:?}", started.elapsed());
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what} ({expr})\n{}", page_text(tab));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Clicks into a field and types into it (as one text insertion: key by key costs two
/// round trips to the browser per character).
pub(crate) fn type_into(tab: &Tab, selector: &str, text: &str) {
    tab.wait_for_element(selector)
        .expect(selector)
        .click()
        .expect("click field");
    // Empty it first: a person would select all and type over it.
    js(
        tab,
        &format!("document.querySelector({selector:?}).select()"),
    );
    if text.is_empty() {
        tab.press_key("Backspace").expect("clear");
    } else {
        tab.send_character(text).expect("type");
    }
}

/// Picks an option of a <select> and fires `change`, as choosing it with the mouse does.
pub(crate) fn choose(tab: &Tab, selector: &str, value: &str) {
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

pub(crate) fn click(tab: &Tab, selector: &str) {
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
pub(crate) fn screenshot(tab: &Tab, name: &str) -> PathBuf {
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

/// A user's id, by username, through the admin API.
fn user_id(app: &TestApp, admin: &Login, username: &str) -> i64 {
    let (status, list) = app.get(&format!("/api/users/all-users?q={username}"), &admin.token);
    assert_eq!(status, 200, "{list}");
    list["users"]
        .as_array()
        .and_then(|users| users.iter().find(|u| u["username"] == username))
        .and_then(|u| u["id"].as_i64())
        .unwrap_or_else(|| panic!("no user {username}: {list}"))
}

#[test]
fn admin_panel_live_presence_and_user_management() {
    let Some(chrome) = Chrome::launch() else {
        return;
    };
    // The shift starts at midnight UTC, so that an arrival now is late whatever the hour.
    let app = TestApp::start(Backend::Sqlite, &[("SPOTTER_SHIFT_START", "00:00")]);
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

    // A check-in at the front desk shows up live: stats, by-location and the feed.
    let bob = user_id(&app, &admin, "member_bob");
    let (status, body) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": bob, "location": "Main floor"}),
    );
    assert_eq!(status, 201, "{body}");
    wait_for(
        &tab,
        "document.getElementById('stat-occupancy').textContent === '1'",
        "occupancy 1",
    );
    wait_for(
        &tab,
        "document.getElementById('stat-today').textContent === '1'",
        "1 check-in today",
    );
    wait_for(
        &tab,
        "!!document.querySelector('[data-testid=\"location-Main floor\"]')",
        "by-location entry",
    );
    wait_for(
        &tab,
        "[...document.querySelectorAll('[data-testid=checkin-entry]')]\
         .some(e => e.dataset.kind === 'in' && e.textContent.includes('Bob Member'))",
        "the check-in in the feed",
    );
    let hour_total = "(() => { const s = JSON.parse(document.getElementById('chart-by-hour')\
         .dataset.hours || '[]'); return s.reduce((a, b) => a + b, 0); })()";
    assert_eq!(
        js(&tab, hour_total),
        json!(1),
        "the chart drew one check-in"
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

    // Attendance: the shift starts at 00:00 UTC in this app, so arriving now is late and
    // arriving at midnight is on time.
    let carl = user_id(&app, &admin, "carl_new");
    let anna_id = user_id(&app, &admin, "coach_anna");
    let midnight = format!("{}T00:00:00Z", chrono::Utc::now().format("%Y-%m-%d"));
    for (employee, timestamp) in [(anna_id, Some(midnight)), (carl, None)] {
        let mut body =
            json!({"employee_id": employee, "status": "present", "device": "front-desk"});
        if let Some(t) = timestamp {
            body["timestamp"] = json!(t);
        }
        let (status, reply) = app.post("/api/attendance", &admin.token, body);
        assert_eq!(status, 201, "{reply}");
    }
    wait_for(
        &tab,
        "(() => { const e = [...document.querySelectorAll('[data-testid=attendance-entry]')];\
         const carl = e.find(x => x.textContent.includes('Carl Newman'));\
         const anna = e.find(x => x.textContent.includes('Anna Coach'));\
         return !!carl && !!anna && carl.dataset.late === 'true' && anna.dataset.late === 'false'\
           && !!carl.querySelector('[data-testid=late-badge]'); })()",
        "attendance feed with the late arrival marked",
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

    // Bob leaves: occupancy back to 0, a check-out in the feed.
    let (status, body) = app.post(
        "/api/checkins/checkout",
        &admin.token,
        json!({"member_id": bob}),
    );
    assert_eq!(status, 200, "{body}");
    wait_for(
        &tab,
        "document.getElementById('stat-occupancy').textContent === '0'",
        "occupancy back to 0",
    );
    wait_for(
        &tab,
        "[...document.querySelectorAll('[data-testid=checkin-entry]')].some(e => e.dataset.kind === 'out')",
        "the check-out in the feed",
    );
    // Another check-in so that the screenshot shows a busy floor.
    let (status, body) = app.post(
        "/api/checkins",
        &admin.token,
        json!({"member_id": bob, "location": "Weights"}),
    );
    assert_eq!(status, 201, "{body}");
    wait_for(
        &tab,
        "document.getElementById('stat-occupancy').textContent === '1'",
        "occupancy 1 again",
    );

    let shot = screenshot(&tab, "admin.png");
    assert!(shot.exists());
    assert_eq!(
        js(&tab, "window.__errors"),
        json!([]),
        "uncaught errors in the page"
    );
}

/// Logs in through the page's form.
pub(crate) fn log_in(tab: &Tab, username: &str, password: &str) {
    wait_for(
        tab,
        "!document.getElementById('login-view').hidden",
        "the login form",
    );
    type_into(tab, "#login-username", username);
    type_into(tab, "#login-password", password);
    click(tab, "#login-submit");
}

/// The texts of the acknowledged messages on screen, in order.
fn messages(tab: &Tab) -> Value {
    js(tab, messages_expr())
}

fn shows_message(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages [data-testid=message] .text')]\
         .some(t => t.textContent === {text:?})"
    )
}

#[test]
fn chat_between_trainer_and_member_live() {
    let Some(chrome) = Chrome::launch() else {
        return;
    };
    let app = TestApp::sqlite();
    let admin = app.admin();
    for (username, role, name) in [
        ("coach_tom", "trainer", "Tom Trainer"),
        ("member_mia", "member", "Mia Member"),
    ] {
        let (status, body) = app.post(
            "/api/users",
            &admin.token,
            json!({"username": username, "password": PASSWORD, "role": role, "display_name": name}),
        );
        assert_eq!(status, 201, "{body}");
    }
    let tom = user_id(&app, &admin, "coach_tom");
    let mia = user_id(&app, &admin, "member_mia");
    let (status, body) = app.call(
        "PUT",
        &format!("/api/trainers/{tom}/clients/{mia}"),
        Some(&admin.token),
        None,
    );
    assert!((200..300).contains(&status), "assign: {status} {body}");

    // The trainer starts a chat with his client from the clients list.
    let trainer = chrome.open_isolated(&app.url("/chat/"));
    log_in(&trainer, "coach_tom", PASSWORD);
    wait_for(
        &trainer,
        "!!document.querySelector('[data-testid=client-member_mia]')",
        "the client in the trainer's list",
    );
    click(&trainer, "[data-testid=client-member_mia]");
    wait_for(
        &trainer,
        "document.getElementById('peer-name').textContent === 'Mia Member'",
        "the conversation open",
    );
    type_into(&trainer, "#message-input", "Hi Mia, ready for Monday?");
    click(&trainer, "#send-button");
    wait_for(
        &trainer,
        &format!(
            "{} && !document.querySelector('[data-testid=message-pending]')",
            shows_message("Hi Mia, ready for Monday?")
        ),
        "the trainer's message acknowledged",
    );

    // The member logs in in another browser: one unread message from the trainer.
    let member = chrome.open_isolated(&app.url("/chat/"));
    log_in(&member, "member_mia", PASSWORD);
    wait_for(
        &member,
        "(document.querySelector('[data-testid=unread-coach_tom]') || {}).textContent === '1'",
        "an unread badge",
    );
    wait_for(
        &member,
        "document.getElementById('conn-status').dataset.state === 'live'",
        "the member's socket live",
    );
    js(&member, "window.__sameDocument = true");
    click(&member, "[data-testid=conversation-coach_tom]");
    wait_for(
        &member,
        &shows_message("Hi Mia, ready for Monday?"),
        "the message in the member's view",
    );
    wait_for(
        &member,
        "!document.querySelector('[data-testid=unread-coach_tom]')",
        "the unread badge gone",
    );
    // Her read receipt reaches the trainer.
    wait_for(
        &trainer,
        "!!document.querySelector('#messages [data-testid=seen]')",
        "'Seen' on the trainer's message",
    );

    // She types: the trainer sees it; she sends: he gets it live.
    type_into(&member, "#message-input", "Yes! See you at 7");
    wait_for(
        &trainer,
        "document.getElementById('typing-indicator').textContent.includes('Mia Member is typing')",
        "the typing indicator",
    );
    click(&member, "#send-button");
    wait_for(
        &trainer,
        &shows_message("Yes! See you at 7"),
        "the member's reply, live",
    );
    wait_for(
        &trainer,
        "document.getElementById('typing-indicator').textContent === ''",
        "the typing indicator cleared by the message",
    );

    // The trainer sends a photo: both see the image.
    let png = app.dir.path().join("plan.png");
    std::fs::write(&png, crate::files::PNG).expect("write png");
    trainer
        .wait_for_element("#attach-input")
        .expect("file input")
        .set_input_files(&[png.to_str().expect("utf-8 path")])
        .expect("choose file");
    wait_for(
        &trainer,
        "!!document.querySelector('#attachment-preview img')",
        "the uploaded image's preview",
    );
    type_into(&trainer, "#message-input", "Your plan");
    click(&trainer, "#send-button");
    let image_loaded = "[...document.querySelectorAll('#messages [data-testid=message] img')]\
         .some(i => i.complete && i.naturalWidth === 1 && i.getAttribute('src').startsWith('/api/files/'))";
    wait_for(&trainer, image_loaded, "the image in the trainer's view");
    wait_for(
        &member,
        image_loaded,
        "the image in the member's view, live",
    );

    // Both show the same messages in seq order, with no repeats and no reload.
    let expected = json!([
        [1, "Hi Mia, ready for Monday?"],
        [2, "Yes! See you at 7"],
        [3, "Your plan"]
    ]);
    wait_for(
        &member,
        &format!(
            "JSON.stringify({}) === {:?}",
            messages_expr(),
            expected.to_string()
        ),
        "the member's messages in order",
    );
    assert_eq!(messages(&trainer), expected);
    assert_eq!(js(&member, "window.__sameDocument === true"), json!(true));

    // The member's connection drops; meanwhile the trainer sends two messages over HTTP.
    // Back online, she rejoins with since_seq and gets both, in order, exactly once.
    js(&member, "window.__spotter.socket.stop()");
    wait_for(
        &member,
        "!window.__spotter.socket.connected",
        "the member offline",
    );
    let tom_login = app.login("coach_tom", PASSWORD);
    let conversation = js(&member, "window.__spotter.state.openId");
    for (i, text) in ["Missed one", "Missed two"].iter().enumerate() {
        let (status, body) = app.post(
            "/api/chat/messages",
            &tom_login.token,
            json!({"conversation_id": conversation, "content": text, "client_msg_id": format!("http-{i}")}),
        );
        assert_eq!(status, 201, "{body}");
    }
    js(&member, "window.__spotter.socket.start()");
    let expected = json!([
        [1, "Hi Mia, ready for Monday?"],
        [2, "Yes! See you at 7"],
        [3, "Your plan"],
        [4, "Missed one"],
        [5, "Missed two"]
    ]);
    wait_for(
        &member,
        &format!(
            "JSON.stringify({}) === {:?}",
            messages_expr(),
            expected.to_string()
        ),
        "the missed messages after the rejoin",
    );
    wait_for(
        &member,
        "document.getElementById('conn-status').dataset.connects === '2'",
        "a second connection",
    );

    screenshot(&member, "chat.png");
    for tab in [&trainer, &member] {
        assert_eq!(js(tab, "window.__errors"), json!([]), "uncaught errors");
    }
}

fn messages_expr() -> &'static str {
    "[...document.querySelectorAll('#messages [data-testid=message]')]\
     .map(m => [Number(m.dataset.seq), m.querySelector('.text').textContent])"
}

/// Access tokens that live 12 s: the panel refreshes them (over HTTP, and hands the new one
/// to its socket with `refresh_token`), so the socket is never closed with 4001 and calls
/// keep working long after the first token expired.
#[test]
fn admin_panel_keeps_its_session_alive() {
    let Some(chrome) = Chrome::launch() else {
        return;
    };
    let app = TestApp::start(Backend::Sqlite, &[("SPOTTER_ACCESS_TTL_SECS", "12")]);
    let admin = app.admin();
    let (status, body) = app.post(
        "/api/users",
        &admin.token,
        json!({"username": "dana_desk", "password": PASSWORD, "role": "staff"}),
    );
    assert_eq!(status, 201, "{body}");
    let tab = chrome.open(&app.url("/admin"));
    log_in(&tab, "admin", ADMIN_PASSWORD);
    wait_for(
        &tab,
        "document.getElementById('conn-status').dataset.state === 'live'",
        "the socket live",
    );
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(
        js(
            &tab,
            "[document.getElementById('conn-status').dataset.state,\
             document.getElementById('conn-status').dataset.connects]"
        ),
        json!(["live", "1"]),
        "one socket all along\n{}",
        page_text(&tab)
    );
    // The panel's HTTP calls still work: change a role through the page.
    choose(&tab, "[data-testid=\"role-dana_desk\"]", "trainer");
    wait_for(
        &tab,
        "[...document.querySelectorAll('[data-testid=toast]')].some(t => t.textContent.includes('role trainer'))",
        "the role change confirmed",
    );
    let (_, list) = app.get("/api/users/all-users?q=dana_desk", &app.admin().token);
    assert_eq!(list["users"][0]["role"], "trainer", "{list}");
    assert_eq!(js(&tab, "window.__errors"), json!([]));

    // A second administrator whose account is suspended while the panel is open: the
    // server closes the socket with 4003 and the page says the account is disabled.
    let admin = app.admin(); // the first token has expired by now
    let (status, body) = app.post(
        "/api/users",
        &admin.token,
        json!({"username": "ops_admin", "password": PASSWORD, "role": "admin"}),
    );
    assert_eq!(status, 201, "{body}");
    let ops_id = body["id"].as_i64().expect("id");
    let other = chrome.open_isolated(&app.url("/admin/"));
    log_in(&other, "ops_admin", PASSWORD);
    wait_for(
        &other,
        "document.getElementById('conn-status').dataset.state === 'live'",
        "the second admin's socket live",
    );
    let (status, body) = app.call(
        "PATCH",
        &format!("/api/users/{ops_id}"),
        Some(&admin.token),
        Some(json!({"account_status": "suspended"})),
    );
    assert_eq!(status, 200, "{body}");
    wait_for(
        &other,
        "!document.getElementById('disabled-view').hidden \
         && document.getElementById('app-view').hidden",
        "'account disabled' after close 4003",
    );
    // The first panel saw it go offline.
    wait_for(&tab, &presence_is("ops_admin", false), "ops_admin offline");
}
