//! A gym's day in a real browser (issue 13): after `spotter demo`, the dashboard, the
//! front desk (click, scanner codes, a refused suspended member, a second admin seeing it
//! live), the live simulation moving the page, a presence log, an assignment reaching the
//! trainer's client list, attendance by hand, a past day and its CSV export, the manual
//! reconnect; and the chat client on a phone and a desktop (a member finds a trainer and
//! starts a chat that the trainer sees live, deep links, the back button, the unread
//! count in the title, an image full size). Screenshots go to `target/screenshots/`, and
//! to `docs/screenshots/` with `SPOTTER_UPDATE_SCREENSHOTS=1`.

use std::path::Path;

use headless_chrome::protocol::cdp::{Emulation, Page};
use headless_chrome::Tab;
use serde_json::json;

use crate::browser::{choose, click, js, log_in, page_text, type_into, wait_for, Chrome};
use crate::common::*;
use crate::demo::{load_demo, start_live};

/// A phone: iPhone 12-ish, CSS pixels.
const PHONE: (u32, u32) = (390, 844);
/// The desktop screenshots' size, kept small for the README.
const DESKTOP: (u32, u32) = (1280, 860);

fn demo_app() -> TestApp {
    let mut app = TestApp::sqlite();
    load_demo(&mut app);
    app
}

fn demo_login(app: &TestApp, username: &str) -> Login {
    let role = username.split('.').next().unwrap();
    app.login(username, &format!("{role}-demo-pass"))
}

fn password_of(username: &str) -> String {
    format!("{}-demo-pass", username.split('.').next().unwrap())
}

fn id_of(app: &TestApp, admin: &Login, username: &str) -> i64 {
    let (_, list) = app.get(&format!("/api/users/all-users?q={username}"), &admin.token);
    list["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == username)
        .and_then(|u| u["id"].as_i64())
        .unwrap_or_else(|| panic!("no {username}"))
}

/// Sets the tab's viewport (CSS pixels); `mobile` as a phone does.
fn viewport(tab: &Tab, (width, height): (u32, u32), mobile: bool) {
    tab.call_method(Emulation::SetDeviceMetricsOverride {
        width,
        height,
        device_scale_factor: 1.0,
        mobile,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })
    .expect("viewport");
}

/// A screenshot for the docs: always under `target/screenshots/`, and in `docs/screenshots/`
/// when `SPOTTER_UPDATE_SCREENSHOTS=1` (so a test run does not rewrite checked-in files).
fn doc_shot(tab: &Tab, name: &str) {
    let png = tab
        .capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("target/screenshots")];
    if std::env::var("SPOTTER_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        dirs.push(root.join("docs/screenshots"));
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(name), &png).expect("write screenshot");
    }
    eprintln!("screenshot {name}: {} KB", png.len() / 1024);
}

fn number(tab: &Tab, expr: &str) -> i64 {
    js(tab, expr).as_i64().unwrap_or(-1)
}

const OCCUPANCY: &str = "Number(document.getElementById('stat-occupancy').textContent)";

fn no_errors(tab: &Tab) {
    assert_eq!(js(tab, "window.__errors"), json!([]), "{}", page_text(tab));
}

#[test]
fn dashboard_and_front_desk_after_the_demo() {
    let Some(chrome) = Chrome::launch() else {
        return;
    };
    let app = demo_app();
    let admin = app.admin();
    let tab = chrome.open(&app.url("/admin/"));
    viewport(&tab, DESKTOP, false);
    log_in(&tab, "admin", ADMIN_PASSWORD);

    // The demo day: people in now, a by-hour chart with data, a late arrival marked.
    wait_for(
        &tab,
        &format!("{OCCUPANCY} >= 4"),
        "occupancy from the demo",
    );
    wait_for(
        &tab,
        "JSON.parse(document.getElementById('chart-by-hour').dataset.hours || '[]').reduce((a, b) => a + b, 0) > 4",
        "the by-hour chart",
    );
    wait_for(
        &tab,
        "!!document.querySelector('[data-testid=attendance-entry][data-late=true] [data-testid=late-badge]')",
        "a late arrival highlighted",
    );
    wait_for(
        &tab,
        "document.querySelectorAll('[data-testid=inside-entry]').length >= 4",
        "who is in now",
    );
    doc_shot(&tab, "dashboard.png");

    // A second admin's browser, watching.
    let other = chrome.open_isolated(&app.url("/admin/"));
    log_in(&other, "admin", ADMIN_PASSWORD);
    wait_for(
        &other,
        &format!("{OCCUPANCY} >= 4"),
        "the second admin's dashboard",
    );

    // Check a member in and out with one click each.
    let staff = demo_login(&app, "staff.gina");
    let (_, open) = app.get("/api/checkins/open", &staff.token);
    let inside: Vec<i64> = open["checkins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["member_id"].as_i64().unwrap())
        .collect();
    let visitor = [
        "member.pablo",
        "member.noah",
        "member.maya",
        "member.liam",
        "member.kemi",
        "member.jonas",
        "member.hiro",
    ]
    .into_iter()
    .find(|u| !inside.contains(&id_of(&app, &admin, u)))
    .expect("someone out");
    let visitor_id = id_of(&app, &admin, visitor);
    let before = number(&tab, OCCUPANCY);
    type_into(&tab, "#desk-search", &visitor[7..]);
    let button = format!("[data-testid=\"desk-checkin-{visitor}\"]");
    wait_for(
        &tab,
        &format!("!!document.querySelector('{button}')"),
        "the search result",
    );
    js(&tab, &format!("document.querySelector('{button}').click()"));
    wait_for(
        &tab,
        "document.getElementById('desk-message').textContent.includes('checked in')",
        "the desk's confirmation",
    );
    wait_for(
        &tab,
        &format!("{OCCUPANCY} === {}", before + 1),
        "the counter moving",
    );
    wait_for(
        &other,
        &format!("{OCCUPANCY} === {}", before + 1),
        "the other admin's counter",
    );
    wait_for(
        &other,
        &format!("!!document.querySelector('[data-testid=inside-entry][data-member-id=\"{visitor_id}\"]')"),
        "the other admin's in-now list",
    );
    click(&tab, &format!("[data-testid=inside-checkout-{visitor_id}]"));
    wait_for(
        &tab,
        &format!("{OCCUPANCY} === {before}"),
        "the counter after check-out",
    );
    wait_for(
        &other,
        &format!("{OCCUPANCY} === {before}"),
        "the other admin's counter after check-out",
    );

    // The scanner types a code and Enter: checked in.
    let visitor_login = app.login(visitor, &password_of(visitor));
    let (_, code) = app.get("/api/users/me/checkin-code", &visitor_login.token);
    let code = code["code"].as_str().unwrap().to_string();
    type_into(&tab, "#desk-search", &code);
    tab.press_key("Enter").expect("enter");
    wait_for(
        &tab,
        &format!("document.getElementById('desk-message').textContent.includes('checked in') && document.getElementById('desk-message').textContent.includes({code:?})"),
        "check-in by code",
    );
    wait_for(
        &other,
        &format!("{OCCUPANCY} === {}", before + 1),
        "the scan seen by the other admin",
    );
    // A suspended member's code says why.
    let (_, olga) = app.get(
        &format!(
            "/api/users/{}/checkin-code",
            id_of(&app, &admin, "member.olga")
        ),
        &admin.token,
    );
    type_into(&tab, "#desk-search", olga["code"].as_str().unwrap());
    tab.press_key("Enter").expect("enter");
    wait_for(
        &tab,
        "document.getElementById('desk-message').dataset.kind === 'bad' && document.getElementById('desk-message').textContent.includes('suspended')",
        "the refusal with its reason",
    );
    assert_eq!(
        number(&tab, OCCUPANCY),
        before + 1,
        "a refused scan changes nothing"
    );
    type_into(&tab, "#desk-search", "carla");
    wait_for(
        &tab,
        "!!document.querySelector('[data-testid=\"desk-result-member.carla\"]')",
        "a name search",
    );
    doc_shot(&tab, "front-desk.png");

    // The live simulation moves the page without a reload.
    let version = js(
        &tab,
        "document.getElementById('stats-note').dataset.version",
    );
    let mut live = start_live(&app, 6.0);
    wait_for(
        &tab,
        &format!("document.getElementById('stats-note').dataset.version !== {version}"),
        "the live demo moving the dashboard",
    );
    let _ = live.wait();

    // A presence log; the member's QR code.
    click(&tab, "[data-testid=\"details-member.carla\"]");
    wait_for(
        &tab,
        "document.querySelectorAll('[data-testid=presence-log-entry]').length > 0",
        "the presence log",
    );
    wait_for(
        &tab,
        "document.querySelector('[data-testid=presence-log-entry]').dataset.reason === 'login'",
        "carla's login in the log",
    );
    wait_for(
        &tab,
        "document.getElementById('detail-qr').naturalWidth > 0 && document.getElementById('detail-code-text').textContent.length === 6",
        "the QR code",
    );

    // An assignment made here reaches the trainer's client list.
    click(&tab, "[data-testid=\"details-trainer.chloe\"]");
    wait_for(
        &tab,
        "!!document.querySelector('[data-testid=\"assigned-member.grace\"]')",
        "chloe's members",
    );
    let pablo = id_of(&app, &admin, "member.pablo");
    choose(&tab, "#assign-select", &pablo.to_string());
    click(&tab, "[data-testid=assign-button]");
    wait_for(
        &tab,
        "!!document.querySelector('[data-testid=\"assigned-member.pablo\"]')",
        "the new assignment",
    );
    let chloe_chat = chrome.open_isolated(&app.url("/chat/"));
    log_in(&chloe_chat, "trainer.chloe", &password_of("trainer.chloe"));
    wait_for(
        &chloe_chat,
        "!!document.querySelector('[data-testid=\"client-member.pablo\"], [data-testid=\"find-member.pablo\"][data-assigned=true]')",
        "pablo in chloe's client list",
    );
    no_errors(&chloe_chat);

    // Attendance by hand.
    let hugo = id_of(&app, &admin, "staff.hugo");
    choose(&tab, "#att-employee", &hugo.to_string());
    choose(&tab, "#att-status", "left");
    js(&tab, "document.getElementById('att-time').value = '10:15'");
    click(&tab, "[data-testid=att-submit]");
    wait_for(
        &tab,
        &format!("[...document.querySelectorAll('[data-testid=attendance-entry]')].some(e => e.dataset.employeeId === '{hugo}' && e.textContent.includes('left') && e.textContent.includes('Hugo'))"),
        "the hand-made record",
    );

    // A past day, and its CSV export.
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1))
        .date_naive()
        .to_string();
    js(
        &tab,
        &format!("(() => {{ const d = document.getElementById('day-picker'); d.value = {yesterday:?}; d.dispatchEvent(new Event('change')); }})()"),
    );
    wait_for(
        &tab,
        &format!("document.getElementById('checkin-title').textContent.includes({yesterday:?})"),
        "the past day",
    );
    wait_for(
        &tab,
        "document.querySelectorAll('[data-testid=checkin-entry]').length >= 20",
        "yesterday's check-ins",
    );
    click(&tab, "[data-testid=export-checkins]");
    wait_for(
        &tab,
        "!!(window.__desk.lastExport && window.__desk.lastExport.what === 'checkins')",
        "the export",
    );
    let text = js(&tab, "window.__desk.lastExport.text");
    let lines: Vec<&str> = text
        .as_str()
        .unwrap()
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .collect();
    assert!(
        lines[0].starts_with("id,member_id,member_name,location,checked_in_at"),
        "{}",
        lines[0]
    );
    assert!(lines.len() > 20, "{} lines", lines.len());
    assert!(
        lines[1..].iter().all(|l| l.contains(&yesterday)),
        "{lines:?}"
    );
    click(&tab, "[data-testid=export-attendance]");
    wait_for(
        &tab,
        "window.__desk.lastExport.what === 'attendance'",
        "the attendance export",
    );
    assert!(js(&tab, "window.__desk.lastExport.text")
        .as_str()
        .unwrap()
        .starts_with("employee_id,"));
    click(&tab, "[data-testid=day-today]");
    wait_for(
        &tab,
        "document.getElementById('checkin-title').textContent === 'Recent check-ins'",
        "back to today",
    );

    // The connection: a manual reconnect makes a new live connection.
    let connects = number(
        &tab,
        "Number(document.getElementById('conn-status').dataset.connects)",
    );
    click(&tab, "[data-testid=reconnect-button]");
    wait_for(
        &tab,
        &format!("document.getElementById('conn-status').dataset.state === 'live' && Number(document.getElementById('conn-status').dataset.connects) > {connects}"),
        "the manual reconnect",
    );
    no_errors(&tab);
    no_errors(&other);
}

#[test]
fn member_finds_a_trainer_and_chats_on_a_phone() {
    let Some(chrome) = Chrome::launch() else {
        return;
    };
    let app = demo_app();
    let admin = app.admin();
    let carla_id = id_of(&app, &admin, "member.carla");

    // The trainer at a desktop.
    let ben = chrome.open_isolated(&app.url("/chat/"));
    viewport(&ben, DESKTOP, false);
    log_in(&ben, "trainer.ben", &password_of("trainer.ben"));
    wait_for(
        &ben,
        "!!document.querySelector('[data-testid=\"conversation-member.emma\"]')",
        "ben's conversations",
    );
    let title = |tab: &Tab| js(tab, "document.title").as_str().unwrap_or("").to_string();
    let unread = |tab: &Tab| -> i64 {
        let t = title(tab);
        t.strip_prefix('(')
            .and_then(|r| r.split(')').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let unread_before = unread(&ben);

    // The member on a phone: finds trainers, the assigned one first, and starts a chat.
    let phone = chrome.open_isolated(&app.url("/chat/"));
    viewport(&phone, PHONE, true);
    log_in(&phone, "member.carla", &password_of("member.carla"));
    wait_for(
        &phone,
        "document.querySelectorAll('#finder-results [data-testid^=find-]').length > 0",
        "the trainer finder",
    );
    assert_eq!(
        js(
            &phone,
            "document.querySelector('#finder-results [data-testid^=find-]').dataset.testid"
        ),
        json!("find-trainer.anna"),
        "carla's own trainer first"
    );
    assert_eq!(
        js(
            &phone,
            "document.querySelector('#finder-results [data-testid^=find-]').dataset.assigned"
        ),
        json!("true")
    );
    type_into(&phone, "#finder-search", "ben");
    wait_for(
        &phone,
        "!!document.querySelector('[data-testid=\"find-trainer.ben\"]')",
        "ben in the search",
    );
    click(&phone, "[data-testid=\"find-trainer.ben\"]");
    // Phone: the conversation full-screen, the list hidden.
    wait_for(
        &phone,
        "document.getElementById('peer-name').textContent === 'Ben Okafor' && document.querySelector('.chat-side').offsetParent === null",
        "the conversation full-screen",
    );
    type_into(
        &phone,
        "#message-input",
        "Hi Ben, could you look at my squat form?",
    );
    click(&phone, "#send-button");
    wait_for(
        &phone,
        "[...document.querySelectorAll('#messages [data-testid=message] .text')].some(t => t.textContent.includes('squat form'))",
        "the message sent",
    );
    doc_shot(&phone, "chat-phone.png");
    // The trainer sees it live, with the unread count in the title.
    wait_for(
        &ben,
        "!!document.querySelector('[data-testid=\"conversation-member.carla\"]')",
        "carla's new chat at ben's",
    );
    wait_for(
        &ben,
        &format!("document.title.startsWith('({})')", unread_before + 1),
        "the unread count in the title",
    );
    click(&ben, "[data-testid=\"conversation-member.carla\"]");
    wait_for(
        &ben,
        "[...document.querySelectorAll('#messages [data-testid=message] .text')].some(t => t.textContent.includes('squat form'))",
        "carla's message at ben's",
    );
    wait_for(&ben, &format!("document.title.startsWith('({unread_before})') || ({unread_before} === 0 && !document.title.startsWith('('))"), "the title after reading");
    type_into(
        &ben,
        "#message-input",
        "Sure! Film one set from the side and send it here.",
    );
    click(&ben, "#send-button");
    wait_for(
        &phone,
        "[...document.querySelectorAll('#messages [data-testid=message] .text')].some(t => t.textContent.includes('Film one set'))",
        "ben's answer live on the phone",
    );

    // Back to the list on the phone.
    click(&phone, "[data-testid=back-button]");
    wait_for(
        &phone,
        "document.querySelector('.chat-side').offsetParent !== null && document.querySelector('.chat-main').offsetParent === null && !!document.querySelector('[data-testid=\"conversation-trainer.ben\"]')",
        "the list after back",
    );

    // The trainer finds a client by name.
    type_into(&ben, "#finder-search", "finn");
    wait_for(
        &ben,
        "!!document.querySelector('[data-testid=\"find-member.finn\"][data-assigned=true]')",
        "ben's client finn",
    );

    // Deep links.
    let link = chrome.open_isolated(&app.url(&format!("/chat/?peer={carla_id}")));
    log_in(&link, "trainer.ben", &password_of("trainer.ben"));
    wait_for(
        &link,
        "document.getElementById('peer-name').textContent === 'Carla Mendes'",
        "?peer= opening carla's chat",
    );
    let ben_login = demo_login(&app, "trainer.ben");
    let (_, convs) = app.get("/api/chat/conversations", &ben_login.token);
    let emma_conv = convs["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["peer"]["username"] == "member.emma")
        .and_then(|c| c["id"].as_i64())
        .unwrap();
    js(
        &link,
        &format!("location.href = '/chat/?conversation={emma_conv}'"),
    );
    wait_for(
        &link,
        "document.getElementById('peer-name').textContent === 'Emma Larsen'",
        "?conversation= opening emma's chat",
    );

    // An image opens full size.
    wait_for(
        &link,
        "!!document.querySelector('[data-testid=message-image]')",
        "the plan image",
    );
    wait_for(
        &link,
        "document.querySelector('[data-testid=message-image]').complete",
        "the image loaded",
    );
    click(&link, "[data-testid=message-image]");
    wait_for(
        &link,
        "!document.getElementById('lightbox').hidden && document.getElementById('lightbox-img').naturalWidth === 360",
        "the full-size image",
    );
    click(&link, "#lightbox");
    wait_for(
        &link,
        "document.getElementById('lightbox').hidden",
        "the lightbox closed",
    );
    viewport(&link, DESKTOP, false);
    doc_shot(&link, "chat-desktop.png");

    // The member's check-in code, as a QR code.
    click(&phone, "[data-testid=my-code-button]");
    wait_for(
        &phone,
        "document.getElementById('my-code-qr').naturalWidth > 0 && document.getElementById('my-code-text').textContent.length === 6",
        "the member's QR code",
    );
    for tab in [&ben, &phone, &link] {
        no_errors(tab);
    }
}
