//! Security headers, set in one place on every response (PROTOCOL §3): the pages may run
//! only their own scripts and never be framed, no address leaks in `Referer`, and token
//! responses are never stored by a cache or the browser's history.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;

/// Own scripts, styles and sockets only; images also from `data:` and `blob:` (a member's
/// QR code and picked attachments are shown from the page's memory); no plugins, no
/// framing, no `<base>` or form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data: blob:; \
     object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'";

/// The responses that carry tokens.
const TOKEN_PATHS: [&str; 2] = ["/api/auth/login", "/api/auth/refresh"];

/// Adds the headers; a handler that set one of them itself keeps its own.
pub async fn security(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let token_response = TOKEN_PATHS.contains(&req.path());
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if token_response {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    Ok(res)
}
