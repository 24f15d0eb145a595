//! The admin panel and the chat client, embedded in the binary from `static/`.

use actix_web::http::header;
use actix_web::{guard, web, HttpResponse};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

/// GET, and HEAD for caches and link checkers (actix strips the body).
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", get_or_head().to(|| serve("index.html")))
        .route("/admin", get_or_head().to(|| serve("admin.html")))
        .route("/chat", get_or_head().to(|| serve("chat.html")))
        .route("/static/{file:.*}", get_or_head().to(asset));
}

async fn asset(path: web::Path<String>) -> HttpResponse {
    serve(&path.into_inner()).await
}

async fn serve(name: &str) -> HttpResponse {
    match Assets::get(name) {
        Some(file) => {
            let mime = mime_guess::from_path(name).first_or_octet_stream();
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, mime.as_ref()))
                .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .body(file.data.into_owned())
        }
        None => crate::error::AppError::not_found("file").error_response_json(),
    }
}
