//! Check-in codes: each member has a short code (shown as a QR code on their phone) that
//! the front desk types or scans to check them in. A code is drawn once, on first use,
//! from an alphabet without look-alikes (no 0/O, 1/I/L), and never changes.

use rand::Rng;

use crate::auth::AuthUser;
use crate::db::{Conn, UserId};
use crate::domain::directory::DirEntry;
use crate::domain::users::Role;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Letters and digits that cannot be mistaken for one another when read aloud or typed.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// 31^6 ≈ 887 million codes: short to type, long enough not to guess a neighbour's.
pub const CODE_LEN: usize = 6;
/// Draws before giving up on finding a free code (a collision is already rare).
const DRAWS: usize = 8;

/// A fresh random code.
fn draw() -> String {
    let mut rng = rand::thread_rng();
    (0..CODE_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// What was typed or scanned, as stored: upper case, spaces and dashes dropped. `None`
/// when it cannot be a code (so the desk treats it as a name).
pub fn normalize(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

/// The member's code, drawn and stored on first use. Safe against a concurrent call for
/// the same member (the second reads what the first stored).
pub fn ensure(conn: &mut Conn, user: UserId) -> AppResult<String> {
    if let Some(code) = crate::db::checkin_codes::of_user(conn, user)? {
        return Ok(code);
    }
    let now = crate::time::to_db(crate::time::now());
    for _ in 0..DRAWS {
        let code = draw();
        if crate::db::checkin_codes::insert(conn, user, &code, now)? {
            return Ok(code);
        }
        if let Some(code) = crate::db::checkin_codes::of_user(conn, user)? {
            return Ok(code);
        }
    }
    Err(AppError::internal(format!(
        "no free check-in code for user {user} after {DRAWS} draws"
    )))
}

/// The code of `member`, for the member themselves, staff and admins. 422 when the user
/// is not a member (only members check in).
pub async fn code_of(state: &AppState, actor: &AuthUser, member: UserId) -> AppResult<String> {
    let allowed = actor.id == member || matches!(actor.role, Role::Staff | Role::Admin);
    if !allowed {
        return Err(AppError::Forbidden(
            "only the member, staff and admins see a check-in code".into(),
        ));
    }
    let entry = state
        .directory
        .get(member)
        .ok_or_else(|| AppError::not_found("user"))?;
    if entry.role != Role::Member {
        return Err(AppError::Validation(format!(
            "user {member} is not a member: only members have check-in codes"
        )));
    }
    state.db.write(move |c| ensure(c, member)).await
}

/// The member a typed or scanned code belongs to (staff, admins, devices). 404 for a code
/// that no one has; 422 for text that cannot be a code.
pub async fn resolve(state: &AppState, actor: &AuthUser, input: &str) -> AppResult<DirEntry> {
    actor.require(&[Role::Staff, Role::Admin, Role::Device])?;
    let code = normalize(input).ok_or_else(|| {
        AppError::Validation(format!("a check-in code is {CODE_LEN} letters and digits"))
    })?;
    let wanted = code.clone();
    let user = state
        .db
        .read(move |c| crate::db::checkin_codes::find_user(c, &wanted))
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no member has the check-in code {code}")))?;
    state
        .directory
        .get(user)
        .ok_or_else(|| AppError::not_found("member"))
}

/// The code as a QR code, an SVG document (black on white, with the quiet zone).
pub fn qr_svg(code: &str) -> AppResult<String> {
    let qr = qrcode::QrCode::new(code.as_bytes())
        .map_err(|e| AppError::internal(format!("QR code of a check-in code: {e}")))?;
    Ok(qr
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_unambiguous_and_normalized() {
        for _ in 0..200 {
            let c = draw();
            assert_eq!(c.len(), CODE_LEN);
            assert!(!c.contains(['0', 'O', '1', 'I', 'L']), "{c}");
            assert_eq!(normalize(&c).as_deref(), Some(c.as_str()));
        }
        assert_eq!(normalize(" ab3-k9m ").as_deref(), Some("AB3K9M"));
        assert_eq!(normalize("Carla"), None);
        assert_eq!(normalize("AB0K9M"), None, "0 is not in the alphabet");
        assert_eq!(normalize("AB3K9MX"), None);
    }

    #[test]
    fn qr_is_an_svg_document() {
        let svg = qr_svg("AB3K9M").expect("svg");
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("</svg>"));
    }
}
