//! The admin panel and the chat client, embedded in the binary from `static/`.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| serve("index.html")))
        .route("/admin", web::get().to(|| serve("admin.html")))
        .route("/chat", web::get().to(|| serve("chat.html")))
        .route("/static/{file:.*}", web::get().to(asset));
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
