//! `spotter demo`: a believable gym day loaded straight into the database (people,
//! assignments, check-in codes, the day's check-ins with some members in now, today's
//! attendance with a late arrival, conversations with history and an image), and
//! `spotter demo --live` ([`live`]), which then drives a running server through its API.
//!
//! Loading is idempotent: people that exist are kept, and the day's check-ins, the day's
//! attendance and the conversations are only added when there are none yet. Run it before
//! `spotter serve` (a running server reads the people it knows at start).

pub mod live;

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveTime, Timelike, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::db::checkins::NewCheckin;
use crate::db::{Conn, UserId};
use crate::domain::users::CreateUser;
use crate::error::AppResult;

/// The demo's people: username, display name, role. Passwords are `<role>-demo-pass`.
pub const PEOPLE: [(&str, &str, &str); 22] = [
    ("trainer.anna", "Anna Kowalski", "trainer"),
    ("trainer.ben", "Ben Okafor", "trainer"),
    ("trainer.chloe", "Chloe Nguyen", "trainer"),
    ("member.carla", "Carla Mendes", "member"),
    ("member.dev", "Dev Patel", "member"),
    ("member.emma", "Emma Larsen", "member"),
    ("member.finn", "Finn O'Brien", "member"),
    ("member.grace", "Grace Kim", "member"),
    ("member.hiro", "Hiro Tanaka", "member"),
    ("member.ines", "Inès Duarte", "member"),
    ("member.jonas", "Jonas Weber", "member"),
    ("member.kemi", "Kemi Adeyemi", "member"),
    ("member.liam", "Liam Murphy", "member"),
    ("member.maya", "Maya Cohen", "member"),
    ("member.noah", "Noah Svensson", "member"),
    ("member.olga", "Olga Petrova", "member"),
    ("member.pablo", "Pablo Ruiz", "member"),
    ("staff.gina", "Gina Rossi", "staff"),
    ("staff.hugo", "Hugo Martin", "staff"),
    ("staff.ivy", "Ivy Chen", "staff"),
    ("device.turnstile1", "Turnstile 1", "device"),
    ("device.studio", "Studio door", "device"),
];

/// The member whose account is suspended (the desk shows why they are refused).
pub const SUSPENDED: &str = "member.olga";
/// The two areas of the gym.
pub const LOCATIONS: [&str; 2] = ["Main floor", "Studio"];
/// Trainers and their members.
const ASSIGNMENTS: [(&str, &[&str]); 3] = [
    (
        "trainer.anna",
        &["member.carla", "member.dev", "member.kemi"],
    ),
    (
        "trainer.ben",
        &["member.emma", "member.finn", "member.ines", "member.liam"],
    ),
    (
        "trainer.chloe",
        &["member.grace", "member.hiro", "member.jonas"],
    ),
];
/// Members in the gym when the demo is loaded.
const IN_NOW: usize = 6;
/// When the gym opens and closes (UTC hours).
const OPENS: u32 = 6;
const CLOSES: u32 = 22;

/// The password of a demo user of `role`.
pub fn password_of(role: &str) -> String {
    format!("{role}-demo-pass")
}

/// A login the demo prints.
pub struct DemoLogin {
    pub username: String,
    pub password: String,
    pub role: String,
    pub note: String,
}

/// Loads the demo gym; answers the logins to print.
pub fn load(conn: &mut Conn, config: &Config) -> AppResult<Vec<DemoLogin>> {
    let now = crate::time::now();
    let mut ids: HashMap<&str, UserId> = HashMap::new();
    let mut logins = Vec::new();
    for (username, name, role) in PEOPLE {
        let password = password_of(role);
        let row = match crate::db::users::find_by_username(conn, username)? {
            Some(r) => r,
            None => crate::domain::users::create_user(
                conn,
                &CreateUser {
                    username: username.into(),
                    password: password.clone(),
                    role: role.into(),
                    display_name: Some(name.into()),
                },
            )?,
        };
        ids.insert(username, row.id);
        let mut note = String::new();
        if role == "member" {
            let code = crate::domain::checkin_codes::ensure(conn, row.id)?;
            note = format!("check-in code {code}");
        }
        if username == SUSPENDED {
            let update = crate::db::users::UserUpdate {
                account_status: Some("suspended".into()),
                role: None,
                display_name: None,
                password_hash: None,
                token_gen: None,
                updated_at: crate::time::to_db(now),
            };
            crate::db::users::update(conn, row.id, &update)?;
            note.push_str(" (suspended)");
        }
        logins.push(DemoLogin {
            username: username.into(),
            password,
            role: role.into(),
            note,
        });
    }
    for (trainer, members) in ASSIGNMENTS {
        let members: Vec<UserId> = members.iter().map(|m| ids[m]).collect();
        crate::db::trainers::assign(conn, ids[trainer], &members)?;
    }
    // One day, one shape: loading twice in a day draws the same day.
    let mut rng = StdRng::seed_from_u64((now.timestamp() / 86_400) as u64);
    // Yesterday, whole (for the panel's date picker), then today until now.
    let yesterday = now - Duration::days(1);
    let closes =
        yesterday.date_naive().and_time(NaiveTime::MIN).and_utc() + Duration::hours(CLOSES.into());
    check_ins(conn, &ids, closes, false, &mut rng)?;
    attendance(conn, &ids, yesterday, closes, config.shift_start)?;
    check_ins(conn, &ids, now, true, &mut rng)?;
    attendance(conn, &ids, now, now, config.shift_start)?;
    conversations(conn, config, &ids, now)?;
    Ok(logins)
}

/// Members who come to the gym (not the suspended one).
fn visitors<'a>(ids: &HashMap<&'a str, UserId>) -> Vec<(&'a str, UserId)> {
    let mut v: Vec<(&str, UserId)> = PEOPLE
        .iter()
        .filter(|(u, _, r)| *r == "member" && *u != SUSPENDED)
        .map(|(u, _, _)| (*u, ids[u]))
        .collect();
    v.sort_by_key(|(_, id)| *id);
    v
}

/// How busy an hour of the day is: a morning rush, lunch, and the evening peak.
fn hour_weight(hour: u32) -> u32 {
    match hour {
        6..=8 => 6,
        9..=11 => 3,
        12..=13 => 5,
        14..=16 => 2,
        17..=19 => 8,
        20..=21 => 4,
        _ => 1,
    }
}

/// A day of check-ins from opening until `now`; with `stay`, some members are still in
/// the gym at `now`, across both locations. Skipped when that day already has check-ins.
fn check_ins(
    conn: &mut Conn,
    ids: &HashMap<&str, UserId>,
    now: DateTime<Utc>,
    stay: bool,
    rng: &mut StdRng,
) -> AppResult<()> {
    let (day_start, day_end) = crate::domain::checkins::day_bounds(now.date_naive());
    if !crate::db::checkins::list_opened_between(conn, day_start, day_end, None)?.is_empty()
        || (stay && !crate::db::checkins::list_open(conn)?.is_empty())
    {
        log::info!(
            "demo: {} already has check-ins; left as they are",
            now.date_naive()
        );
        return Ok(());
    }
    let day_start = day_start.and_utc();
    // Before opening time (an early run) the day starts two hours back, within today.
    let opens = (day_start + Duration::hours(OPENS.into())).min(now - Duration::hours(3));
    let opens = opens.max(day_start);
    let desk = ids["staff.gina"];
    let turnstiles = [ids["device.turnstile1"], ids["device.studio"]];
    let members = visitors(ids);
    let stays = if stay { members.len().min(IN_NOW) } else { 0 };
    let (in_now, others) = members.split_at(stays);

    // Earlier visits: drawn hour by hour, weighted by how busy the hour is; each one
    // starts at least half an hour before `now` and ends before it.
    let latest_start = now - Duration::minutes(30);
    let hours: Vec<(DateTime<Utc>, u32)> = (0..)
        .map(|h| opens + Duration::hours(h))
        .take_while(|t| *t < latest_start)
        .map(|t| (t, hour_weight(t.hour())))
        .collect();
    let total: u32 = hours.iter().map(|(_, w)| w).sum();
    let mut visits = 0;
    for (i, (_, member)) in members.iter().enumerate() {
        let count = if hours.is_empty() {
            0
        } else {
            1 + (i % 3) + usize::from(!stay)
        };
        let mut free_from = opens;
        let mut starts: Vec<DateTime<Utc>> = (0..count)
            .map(|_| {
                let mut pick = rng.gen_range(0..total.max(1));
                let mut hour = hours[0].0;
                for (t, w) in &hours {
                    if pick < *w {
                        hour = *t;
                        break;
                    }
                    pick -= w;
                }
                let room = (latest_start - hour).num_minutes().clamp(1, 60);
                hour + Duration::minutes(rng.gen_range(0..room))
            })
            .collect();
        starts.sort();
        let staying = in_now.iter().any(|(_, m)| m == member);
        // Members in now came in during the last hour; their earlier visits end before.
        let last_in = now - Duration::minutes(rng.gen_range(4..75));
        for start in starts {
            let start = start.max(free_from);
            let longest = (now - Duration::minutes(2) - start).num_minutes().min(95);
            if longest < 20 {
                continue;
            }
            let end = start + Duration::minutes(rng.gen_range(20..=longest));
            if staying && end >= last_in {
                continue;
            }
            let location = LOCATIONS[rng.gen_range(0..LOCATIONS.len())];
            let by = if rng.gen_bool(0.7) {
                turnstiles[0]
            } else {
                desk
            };
            visit(conn, *member, location, start, Some(end), by)?;
            visits += 1;
            free_from = end + Duration::minutes(30);
        }
        if staying {
            let k = in_now.iter().position(|(_, m)| m == member).unwrap_or(0);
            let location = LOCATIONS[k % LOCATIONS.len()];
            visit(
                conn,
                *member,
                location,
                last_in.max(free_from.min(now)),
                None,
                turnstiles[k % 2],
            )?;
            visits += 1;
        }
    }
    log::info!(
        "demo: {visits} check-ins on {} from {}, {} members in now, {} others out",
        now.date_naive(),
        opens.format("%H:%M"),
        in_now.len(),
        others.len()
    );
    Ok(())
}

fn visit(
    conn: &mut Conn,
    member: UserId,
    location: &str,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    by: UserId,
) -> AppResult<()> {
    let new = NewCheckin {
        member_id: member,
        location: Some(location.into()),
        notes: None,
        checked_in_at: crate::time::to_db(start),
        idempotency_key: None,
        created_by: by,
    };
    crate::db::checkins::insert(conn, &new)?;
    if let Some(end) = end {
        crate::db::checkins::close_open(conn, member, crate::time::to_db(end))?;
    }
    Ok(())
}

/// A day's attendance until `now`: the desk opens early, one trainer arrives on time,
/// one late, one is on leave. The late arrival is kept even before it happens (so that an
/// early demo shows one). Skipped when that day already has records.
fn attendance(
    conn: &mut Conn,
    ids: &HashMap<&str, UserId>,
    day_of: DateTime<Utc>,
    now: DateTime<Utc>,
    shift_start: NaiveTime,
) -> AppResult<()> {
    let today = day_of.date_naive();
    if !crate::db::attendance::list_day(conn, today, None)?.is_empty() {
        log::info!("demo: {today} already has attendance; left as it is");
        return Ok(());
    }
    let plan = attendance_plan(today, now, shift_start);
    for &(who, status, at, late) in &plan {
        let new = crate::db::attendance::NewAttendance {
            employee_id: ids[who],
            status: status.as_str().into(),
            date: today,
            timestamp: crate::time::to_db(at),
            device: Some("Front desk".into()),
            is_late: late,
            idempotency_key: None,
            created_at: crate::time::to_db(now),
        };
        crate::db::attendance::insert(conn, &new)?;
    }
    log::info!("demo: {} attendance records on {today}", plan.len());
    Ok(())
}

/// The records of [`attendance`] for `today` as of `now`: who, status, when, late. An
/// on-time arrival planned after `now` (an early run) came a few minutes ago instead,
/// still today and still on time, so that the day has on-time arrivals beside the late
/// one whatever the hour; a departure after `now` is left out.
fn attendance_plan(
    today: chrono::NaiveDate,
    now: DateTime<Utc>,
    shift_start: NaiveTime,
) -> Vec<(
    &'static str,
    crate::domain::attendance::Status,
    DateTime<Utc>,
    bool,
)> {
    use crate::domain::attendance::{is_late, Status};
    let shift = today.and_time(shift_start).and_utc();
    let day = today.and_time(NaiveTime::MIN).and_utc();
    let plan = [
        (
            "staff.gina",
            Status::Present,
            day + Duration::minutes(5 * 60 + 52),
        ),
        ("staff.ivy", Status::Present, shift - Duration::minutes(3)),
        (
            "trainer.anna",
            Status::Present,
            shift - Duration::minutes(8),
        ),
        // The late arrival the dashboard highlights: shown even before it happens.
        (
            "trainer.ben",
            Status::Present,
            shift + Duration::minutes(17),
        ),
        ("trainer.chloe", Status::OnLeave, day + Duration::hours(7)),
        ("staff.hugo", Status::Present, shift - Duration::minutes(1)),
        (
            "staff.hugo",
            Status::Left,
            shift + Duration::minutes(4 * 60 + 5),
        ),
    ];
    let mut records = Vec::with_capacity(plan.len());
    for (who, status, mut at) in plan {
        if at > now && !is_late(status, at, shift_start) {
            if status == Status::Left {
                continue;
            }
            at = (now - Duration::minutes(5)).max(day);
        }
        records.push((who, status, at, is_late(status, at, shift_start)));
    }
    records
}

/// One line of a demo chat: from the trainer?, minutes ago, text (`[image]`: the plan).
type Line = (bool, i64, &'static str);

/// The demo's image: a week's training plan (a chart), sent by a trainer.
const PLAN_PNG: &[u8] = include_bytes!("workout-plan.png");

/// Conversations with history, one with an image. Skipped for a pair that has messages.
fn conversations(
    conn: &mut Conn,
    config: &Config,
    ids: &HashMap<&str, UserId>,
    now: DateTime<Utc>,
) -> AppResult<()> {
    let chats: [(&str, &str, &[Line]); 4] = [
        ("trainer.anna", "member.carla", &[
            (true, 300, "Morning Carla! How did yesterday's leg session feel?"),
            (false, 290, "Sore but good 😅 the split squats were brutal"),
            (true, 285, "That means they worked. Today: upper body, 45 minutes."),
            (false, 200, "Can we swap the bench press for dumbbells? My shoulder is a bit stiff"),
            (true, 195, "Sure: dumbbell press 3×10, light, and stop if it pinches."),
            (false, 40, "I'm at the gym now, starting the warm-up"),
            (true, 35, "Great, I'm on the main floor if you need me 👍"),
        ]),
        ("trainer.anna", "member.dev", &[
            (true, 600, "Hi Dev, welcome to the gym! I'll be your trainer."),
            (false, 560, "Thanks Anna! When can we do the intro session?"),
            (false, 20, "Is Thursday 18:00 still free?"),
        ]),
        ("trainer.ben", "member.emma", &[
            (false, 500, "Hi Ben, could you send me this week's plan?"),
            (true, 480, "Here it is: three strength days, one long run. Green bars are the key sessions."),
            (true, 478, "[image]"),
            (false, 100, "Perfect, thank you! Starting Monday."),
        ]),
        ("trainer.chloe", "member.grace", &[
            (false, 900, "Chloe, are you back next week?"),
            (true, 880, "Yes, from Monday. Same time for our session?"),
        ]),
    ];
    let mut stored = 0;
    for (trainer, member, lines) in chats {
        let (t, m) = (ids[trainer], ids[member]);
        let (row, _) = crate::db::chat::get_or_create(conn, t, m, crate::time::to_db(now))?;
        if row.last_seq > 0 {
            continue;
        }
        for (i, (from_trainer, minutes_ago, text)) in lines.iter().enumerate() {
            let sender = if *from_trainer { t } else { m };
            let (content, attachment) = if *text == "[image]" {
                let file = store_image(conn, config, sender, now)?;
                ("Weekly plan".to_string(), Some(file))
            } else {
                (text.to_string(), None)
            };
            let new = crate::db::chat::NewMessage {
                conversation_id: row.id,
                sender_id: sender,
                content,
                attachment_id: attachment,
                client_msg_id: format!("demo-{}-{i}", row.id),
                created_at: crate::time::to_db(now - Duration::minutes(*minutes_ago)),
            };
            crate::db::chat::insert_message(conn, &new)?;
            stored += 1;
        }
        // The member has read everything but the last line; the trainer what they sent.
        let last = lines.len() as i64;
        crate::db::chat::mark_read(conn, row.id, m, last - 1)?;
    }
    log::info!("demo: {stored} chat messages");
    Ok(())
}

/// Writes the plan image into the uploads folder and registers it.
fn store_image(
    conn: &mut Conn,
    config: &Config,
    owner: UserId,
    now: DateTime<Utc>,
) -> AppResult<crate::db::FileId> {
    let dir = config.data_dir.join("uploads");
    std::fs::create_dir_all(&dir)
        .map_err(|e| crate::error::AppError::internal(format!("{}: {e}", dir.display())))?;
    let id = crate::db::FileId(rand::thread_rng().gen_range(1..(1i64 << 53)));
    let path = dir.join(id.to_string());
    std::fs::write(&path, PLAN_PNG)
        .map_err(|e| crate::error::AppError::internal(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    // The demo's own file: no quota applies.
    crate::db::files::insert_within_quota(
        conn,
        &crate::db::files::FileRow {
            id,
            owner_id: owner,
            content_type: "image/png".into(),
            size: PLAN_PNG.len() as i64,
            created_at: crate::time::to_db(now),
        },
        u64::MAX,
    )?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::attendance::Status;

    /// Whatever the hour the demo is loaded at, today has a late arrival and on-time
    /// ones, all of today, and nobody has left in the future.
    #[test]
    fn attendance_has_late_and_on_time_arrivals_at_any_hour() {
        let shift = NaiveTime::from_hms_opt(9, 0, 0).unwrap();
        let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        for minutes in [
            0,
            1,
            4,
            60,
            5 * 60 + 51,
            6 * 60,
            9 * 60 + 5,
            14 * 60,
            23 * 60 + 59,
        ] {
            let now = today.and_time(NaiveTime::MIN).and_utc() + Duration::minutes(minutes);
            let plan = attendance_plan(today, now, shift);
            assert!(
                plan.iter().any(|r| r.3),
                "a late arrival at {now}: {plan:?}"
            );
            assert!(
                plan.iter().any(|r| !r.3),
                "an on-time one at {now}: {plan:?}"
            );
            for (who, status, at, late) in &plan {
                assert_eq!(at.date_naive(), today, "{who} at {now}");
                assert!(*late || at <= &now, "{who} on time in the future at {now}");
                assert!(*status != Status::Left || at <= &now, "{who} left at {at}");
            }
        }
    }
}
