//! HTTP routes for files: image uploads (multipart, streamed to disk within the limit)
//! and downloads by id.

use actix_multipart::{Multipart, MultipartError};
use actix_web::body::SizedStream;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use crate::auth::AuthUser;
use crate::db::FileId;
use crate::domain::files;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Room for the multipart framing (boundaries, part headers) around the file itself, when
/// a request is refused on its declared length alone.
const MULTIPART_OVERHEAD: u64 = 16 * 1024;
/// The name of the multipart field that carries the file.
const FILE_FIELD: &str = "file";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/files/upload", web::post().to(upload_file))
        .route("/api/files/{id}", web::get().to(get_file));
}

fn multipart_error(e: MultipartError) -> AppError {
    match e {
        MultipartError::ContentTypeMissing
        | MultipartError::ContentTypeParse
        | MultipartError::ContentTypeIncompatible
        | MultipartError::BoundaryMissing => AppError::UnsupportedMediaType(
            "send multipart/form-data with the image in a \"file\" field".into(),
        ),
        MultipartError::Payload(p) => super::payload_error(p),
        other => AppError::InvalidRequest(format!("bad multipart body: {other}")),
    }
}

/// Uploads an image (png, jpeg, gif, webp; checked by content).
#[utoipa::path(post, path = "/api/files/upload", tag = "files", security(("bearer" = [])),
    request_body(content = super::openapi::Upload, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "the stored file", body = crate::domain::chat::Attachment),
        (status = 413, description = "`too_large`: over the size limit or the quota", body = crate::error::ErrorEnvelope),
        (status = 415, description = "`unsupported_media_type`: not an image, or not multipart", body = crate::error::ErrorEnvelope),
    ))]
async fn upload_file(
    state: web::Data<AppState>,
    user: AuthUser,
    req: HttpRequest,
    mut form: Multipart,
) -> AppResult<HttpResponse> {
    let max = state.config.upload_max_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(AppError::TooLarge(format!(
            "files are limited to {max} bytes"
        )));
    }
    // Other fields are skipped, but they count against the limit too: nothing is read
    // without a bound.
    let mut skipped: u64 = 0;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(multipart_error)?;
        if field.name() == Some(FILE_FIELD) {
            let chunks = field.map(|chunk| chunk.map_err(multipart_error));
            let file = files::save_upload(&state, user.id, chunks).await?;
            // Whatever follows the file is left unread.
            return Ok(HttpResponse::Created().json(file));
        }
        while let Some(chunk) = field.next().await {
            skipped += chunk.map_err(multipart_error)?.len() as u64;
            if skipped > max {
                return Err(AppError::TooLarge(format!(
                    "files are limited to {max} bytes"
                )));
            }
        }
    }
    Err(AppError::InvalidRequest(format!(
        "the multipart body has no \"{FILE_FIELD}\" field"
    )))
}

/// A file id from the path: digits only, so that nothing else can reach the disk.
fn parse_id(raw: &str) -> Option<FileId> {
    if raw.is_empty() || raw.len() > 16 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|id| *id > 0).map(FileId)
}

/// Anyone with the id gets the file, streamed, with its checked type and `nosniff`.
#[utoipa::path(get, path = "/api/files/{id}", tag = "files",
    params(("id" = i64, Path, description = "file id")),
    responses(
        (status = 200, description = "the image", content(
            (Vec<u8> = "image/png"), (Vec<u8> = "image/jpeg"), (Vec<u8> = "image/gif"), (Vec<u8> = "image/webp"),
        )),
    ))]
async fn get_file(state: web::Data<AppState>, path: web::Path<String>) -> AppResult<HttpResponse> {
    let id = parse_id(&path).ok_or_else(|| AppError::not_found("file"))?;
    let files::Download { row, file } = files::open(&state, id).await?;
    let body = futures_util::stream::unfold(Some(file), |file| async move {
        match files::read_chunk(file?).await {
            Ok(Some((bytes, file))) => Some((Ok(bytes), Some(file))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type(row.content_type.as_str())
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ))
        // A file never changes under its id; the id is the capability, hence private.
        .insert_header((
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable",
        ))
        .body(SizedStream::new(row.size as u64, Box::pin(body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_positive_ids() {
        assert_eq!(parse_id("42"), Some(FileId(42)));
        assert_eq!(parse_id("9007199254740991"), Some(FileId(9007199254740991)));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "1.png",
            "..",
            "../1",
            "1/..",
            "0x10",
            " 1",
            "12345678901234567",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
