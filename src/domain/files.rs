//! Uploaded images: checked by their bytes (never by name or declared type), streamed to
//! a temporary file under `SPOTTER_DATA_DIR/uploads/` within `SPOTTER_UPLOAD_MAX_BYTES`,
//! then renamed into place under a random id. Nothing half-written is ever left behind:
//! every failure (too large, wrong type, full disk, client gone) removes the temporary file.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use rand::Rng;

use crate::db::files::FileRow;
use crate::db::private_fs;
use crate::db::{FileId, UserId};
use crate::domain::chat::Attachment;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// The image types accepted, by the MIME type `infer` names them with.
const ALLOWED_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/// Bytes needed to recognise every allowed type (WebP's signature ends at byte 12).
const SNIFF_LEN: usize = 16;
/// File ids are random below 2^53: unguessable, yet exact as JavaScript numbers.
const MAX_FILE_ID: i64 = 1 << 53;
/// Attempts at a fresh random id before giving up (a collision is already unlikely).
const ID_ATTEMPTS: usize = 4;
/// Size of the chunks a download is read in.
pub const READ_CHUNK: usize = 64 * 1024;

/// The public URL of a file.
pub fn url(id: FileId) -> String {
    format!("/api/files/{id}")
}

/// The contract's file object (also a message's `attachment`).
pub fn attachment(row: &FileRow) -> Attachment {
    Attachment {
        id: row.id,
        url: url(row.id),
        content_type: row.content_type.clone(),
        size: row.size,
    }
}

fn uploads_dir(state: &AppState) -> PathBuf {
    uploads_path(&state.config.data_dir)
}

fn uploads_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("uploads")
}

/// The allowed image type of these first bytes, if any.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let kind = infer::get(head)?;
    let mime = kind.mime_type();
    // `infer` recognises WebP by "WEBP" alone; a RIFF container must also say "RIFF".
    if mime == "image/webp" && !head.starts_with(b"RIFF") {
        return None;
    }
    ALLOWED_TYPES.iter().copied().find(|t| *t == mime)
}

/// A disk failure while storing: the client may try again later. The detail (paths,
/// errno) is logged here and not sent.
fn storage_error(what: &str, e: std::io::Error) -> AppError {
    log::error!("uploads: {what}: {e}");
    AppError::Unavailable("cannot store the file right now".into())
}

/// An unfinished upload untouched this long was left by a crash.
const TEMP_FILE_STALE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes temporary files a crash left in the uploads folder (at start-up). Answers how
/// many were removed.
pub fn remove_stale_temp_files(data_dir: &std::path::Path) -> usize {
    let dir = uploads_path(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        // The directory may be shared by several instances: another one's upload in
        // progress is being written to; only files untouched for a while are left over.
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= TEMP_FILE_STALE);
        if stale && entry.file_name().to_string_lossy().starts_with(".tmp-") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => log::warn!("uploads: cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
    removed
}

/// A temporary upload file, removed when dropped unless it was moved into place.
struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    async fn create(dir: PathBuf) -> AppResult<TempFile> {
        actix_web::web::block(move || {
            if let Some(data_dir) = dir.parent() {
                private_fs::create_dir(data_dir, true)
                    .map_err(|e| storage_error(&format!("create {}", data_dir.display()), e))?;
            }
            private_fs::create_dir(&dir, true)
                .map_err(|e| storage_error(&format!("create {}", dir.display()), e))?;
            let path = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
            // Private whatever the umask: the mode is kept by the rename into place.
            let file = private_fs::options()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| storage_error(&format!("create {}", path.display()), e))?;
            Ok(TempFile {
                path,
                file: Some(file),
            })
        })
        .await?
    }

    async fn write(&mut self, chunk: Bytes) -> AppResult<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| AppError::internal("upload file already closed"))?;
        let path = self.path.clone();
        let (file, res) = actix_web::web::block(move || {
            let res = file.write_all(&chunk);
            (file, res)
        })
        .await?;
        self.file = Some(file);
        res.map_err(|e| storage_error(&format!("write {}", path.display()), e))
    }

    /// Flushes the bytes to disk (so that a crash never leaves a short file under a final
    /// name) and closes the file.
    async fn sync(&mut self) -> AppResult<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let path = self.path.clone();
        actix_web::web::block(move || file.sync_all())
            .await?
            .map_err(|e| storage_error(&format!("sync {}", path.display()), e))
    }

    /// Moves the file to `to`; from then on it is no longer removed on drop.
    async fn persist(mut self, to: PathBuf) -> AppResult<()> {
        let from = std::mem::take(&mut self.path);
        let res = actix_web::web::block({
            let from = from.clone();
            move || std::fs::rename(&from, &to)
        })
        .await?;
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                self.path = from;
                Err(storage_error("rename into place", e))
            }
        }
    }

    /// Removes the file off the async thread (the drop fallback removes it inline).
    async fn discard(mut self) {
        self.file = None;
        let path = std::mem::take(&mut self.path);
        if path.as_os_str().is_empty() {
            return;
        }
        if let Ok(Err(e)) = actix_web::web::block(move || remove(&path)).await {
            log::warn!("uploads: cannot remove a temporary file: {e}");
        }
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Only reached when the request was dropped midway (client gone) or on a bug:
        // the normal paths persist or discard explicitly.
        self.file = None;
        if !self.path.as_os_str().is_empty() {
            if let Err(e) = remove(&self.path) {
                log::warn!("uploads: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// Stores an upload from a stream of chunks: 413 as soon as it exceeds the limit, 415
/// unless its first bytes are an allowed image. Answers the file object.
pub async fn save_upload<S>(state: &AppState, owner: UserId, chunks: S) -> AppResult<Attachment>
where
    S: Stream<Item = AppResult<Bytes>> + Unpin,
{
    let quota = state.config.upload_quota_bytes;
    let used = state
        .db
        .read(move |c| crate::db::files::used_bytes(c, owner))
        .await?;
    let quota_left = quota.saturating_sub(used.max(0) as u64);
    let mut temp = TempFile::create(uploads_dir(state)).await?;
    match receive(state, &mut temp, chunks, quota_left).await {
        Ok((content_type, size)) => {
            let row = register(state, owner, content_type, size).await;
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    temp.discard().await;
                    return Err(e);
                }
            };
            if let Err(e) = temp
                .persist(uploads_dir(state).join(row.id.to_string()))
                .await
            {
                let id = row.id;
                if let Err(e) = state
                    .db
                    .write(move |c| crate::db::files::delete(c, id))
                    .await
                {
                    log::error!("uploads: file {id} has no bytes and its row stays: {e}");
                }
                return Err(e);
            }
            log::info!(
                "file {} ({}, {} bytes) uploaded by {owner}",
                row.id,
                row.content_type,
                row.size
            );
            Ok(attachment(&row))
        }
        Err(e) => {
            temp.discard().await;
            Err(e)
        }
    }
}

/// Streams the chunks into `temp`; answers the sniffed type and the size.
async fn receive<S>(
    state: &AppState,
    temp: &mut TempFile,
    mut chunks: S,
    quota_left: u64,
) -> AppResult<(&'static str, i64)>
where
    S: Stream<Item = AppResult<Bytes>> + Unpin,
{
    let max = state.config.upload_max_bytes;
    let quota = state.config.upload_quota_bytes;
    let too_large = || {
        if max <= quota_left {
            AppError::TooLarge(format!("files are limited to {max} bytes"))
        } else {
            over_quota(quota)
        }
    };
    let max = max.min(quota_left);
    let unsupported = || {
        AppError::UnsupportedMediaType("only png, jpeg, gif and webp images are accepted".into())
    };
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_LEN);
    let mut content_type = None;
    let mut size: u64 = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if size > max {
            return Err(too_large());
        }
        if content_type.is_none() {
            let take = (SNIFF_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() == SNIFF_LEN {
                content_type = Some(sniff(&head).ok_or_else(unsupported)?);
            }
        }
        if !chunk.is_empty() {
            temp.write(chunk).await?;
        }
    }
    let content_type = match content_type {
        Some(t) => t,
        None => sniff(&head).ok_or_else(unsupported)?,
    };
    temp.sync().await?;
    Ok((content_type, size as i64))
}

/// 413: the upload would take its owner past `SPOTTER_UPLOAD_QUOTA_BYTES`.
fn over_quota(quota: u64) -> AppError {
    AppError::TooLarge(format!(
        "the upload quota of {quota} bytes per user would be exceeded"
    ))
}

/// Inserts the file's row under a fresh random id, within the owner's quota.
async fn register(
    state: &AppState,
    owner: UserId,
    content_type: &'static str,
    size: i64,
) -> AppResult<FileRow> {
    let created_at = crate::time::to_db(crate::time::now());
    for _ in 0..ID_ATTEMPTS {
        let row = FileRow {
            id: FileId(rand::thread_rng().gen_range(1..MAX_FILE_ID)),
            owner_id: owner,
            content_type: content_type.to_string(),
            size,
            created_at,
        };
        let insert = row.clone();
        let quota = state.config.upload_quota_bytes;
        match state
            .db
            .write(move |c| crate::db::files::insert_within_quota(c, &insert, quota))
            .await
        {
            Ok(true) => return Ok(row),
            Ok(false) => return Err(over_quota(quota)),
            Err(AppError::Conflict(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(AppError::internal("no free file id after several attempts"))
}

/// Removes the uploads that no message refers to and are older than
/// `SPOTTER_UPLOAD_ORPHAN_SECS` (the sweeper): rows first, then bytes. Answers how many.
pub async fn remove_orphans(state: &AppState) -> AppResult<usize> {
    let age = chrono::Duration::from_std(state.config.upload_orphan_age)
        .map_err(|e| AppError::internal(format!("orphan age: {e}")))?;
    let before = crate::time::to_db(crate::time::now() - age);
    let ids = state
        .db
        .write(move |c| crate::db::files::delete_unattached(c, before))
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let dir = uploads_dir(state);
    let count = ids.len();
    actix_web::web::block(move || {
        for id in ids {
            if let Err(e) = remove(&dir.join(id.to_string())) {
                log::warn!("uploads: file {id} removed, but not its bytes: {e}");
            }
        }
    })
    .await?;
    log::info!("uploads: removed {count} file(s) never attached to a message");
    Ok(count)
}

/// An open stored file and its metadata, for download.
pub struct Download {
    pub row: FileRow,
    pub file: File,
}

/// Opens a stored file; 404 when there is no such file.
pub async fn open(state: &AppState, id: FileId) -> AppResult<Download> {
    let row = state
        .db
        .read(move |c| crate::db::files::find(c, id))
        .await?
        .ok_or_else(|| AppError::not_found("file"))?;
    let path = uploads_dir(state).join(row.id.to_string());
    let file = actix_web::web::block(move || File::open(&path))
        .await?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                log::warn!("file {id} is registered but has no bytes on disk");
                AppError::not_found("file")
            }
            _ => storage_error(&format!("open file {id}"), e),
        })?;
    Ok(Download { row, file })
}

/// Reads the next chunk of a download off the async thread; `None` at the end.
pub async fn read_chunk(mut file: File) -> AppResult<Option<(Bytes, File)>> {
    let (file, res) = actix_web::web::block(move || {
        let mut buf = vec![0u8; READ_CHUNK];
        let res = file.read(&mut buf).map(|n| {
            buf.truncate(n);
            buf
        });
        (file, res)
    })
    .await?;
    match res {
        Ok(buf) if buf.is_empty() => Ok(None),
        Ok(buf) => Ok(Some((Bytes::from(buf), file))),
        Err(e) => Err(storage_error("read a file", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_images_by_content() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        assert_eq!(sniff(png), Some("image/png"));
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF"), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0"), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\x24\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"XXXX\x24\0\0\0WEBPVP8 "), None);
        assert_eq!(sniff(b"hello, this is text"), None);
        assert_eq!(sniff(b"%PDF-1.7\n"), None);
        assert_eq!(sniff(b""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_is_unavailable() {
        let mut full = File::options().write(true).open("/dev/full").unwrap();
        let e = full
            .write_all(b"x")
            .and_then(|_| full.sync_all())
            .unwrap_err();
        assert_eq!(storage_error("write", e).code(), "unavailable");
    }
}
