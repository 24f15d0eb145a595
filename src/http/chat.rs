//! HTTP routes for chat: conversations, history, sending, read markers, and the trainer's
//! clients with their assignments.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::auth::AuthUser;
use crate::db::chat::Cursor;
use crate::db::{ConversationId, UserId};
use crate::domain::chat::{self, SendMessage};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/chat/conversations", web::get().to(list_conversations))
        .route("/api/chat/conversations", web::post().to(open_conversation))
        .route("/api/chat/history", web::get().to(get_history))
        .route("/api/chat/messages", web::post().to(post_message))
        .route("/api/chat/read", web::post().to(post_read))
        .route("/api/trainer/clients", web::get().to(list_clients))
        .route(
            "/api/trainers/{trainer_id}/clients/{member_id}",
            web::put().to(put_assignment),
        )
        .route(
            "/api/trainers/{trainer_id}/clients/{member_id}",
            web::delete().to(delete_assignment),
        );
}

/// The caller's conversations.
#[utoipa::path(get, path = "/api/chat/conversations", tag = "chat", security(("bearer" = [])),
    responses((status = 200, description = "conversations", body = super::openapi::ConversationList)))]
async fn list_conversations(state: web::Data<AppState>, user: AuthUser) -> AppResult<HttpResponse> {
    let conversations = chat::conversations(&state, &user).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "conversations": conversations })))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct OpenBody {
    peer_id: UserId,
}

/// Gets or creates the direct conversation with `peer_id`.
#[utoipa::path(post, path = "/api/chat/conversations", tag = "chat", security(("bearer" = [])),
    request_body = OpenBody,
    responses(
        (status = 200, description = "the existing conversation", body = crate::domain::chat::ConversationView),
        (status = 201, description = "a new conversation", body = crate::domain::chat::ConversationView),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`: no such peer", body = crate::error::ErrorEnvelope),
    ))]
async fn open_conversation(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<OpenBody>,
) -> AppResult<HttpResponse> {
    let (view, created) = chat::open_conversation(&state, &user, body.peer_id).await?;
    Ok(if created {
        HttpResponse::Created().json(view)
    } else {
        HttpResponse::Ok().json(view)
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    conversation_id: Option<ConversationId>,
    before_seq: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
    /// The seed clients' form: the member and the trainer of a conversation.
    #[serde(rename = "userId")]
    user_id: Option<UserId>,
    #[serde(rename = "trainerId")]
    trainer_id: Option<UserId>,
}

/// A page of history, oldest first.
#[utoipa::path(get, path = "/api/chat/history", tag = "chat", security(("bearer" = [])),
    params(HistoryQuery),
    responses(
        (status = 200, description = "a page", body = crate::domain::chat::HistoryPage),
        (status = 403, description = "`forbidden`: not a participant", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`: no such conversation", body = crate::error::ErrorEnvelope),
    ))]
async fn get_history(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<HistoryQuery>,
) -> AppResult<HttpResponse> {
    let q = query.into_inner();
    let conversation = match (q.conversation_id, q.user_id, q.trainer_id) {
        (Some(id), _, _) => id,
        (None, Some(member), Some(trainer)) => {
            chat::pair_conversation(&state, &user, member, trainer).await?
        }
        _ => {
            return Err(AppError::InvalidRequest(
                "give conversation_id, or userId and trainerId".into(),
            ))
        }
    };
    let cursor = match (q.before_seq, q.after_seq) {
        (None, None) => Cursor::Newest,
        (Some(b), None) => Cursor::Before(b),
        (None, Some(a)) => Cursor::After(a),
        (Some(_), Some(_)) => {
            return Err(AppError::Validation(
                "give before_seq or after_seq, not both".into(),
            ))
        }
    };
    let limit = q.limit.unwrap_or(chat::HISTORY_DEFAULT);
    let page = chat::history(&state, &user, conversation, cursor, limit).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// 201 with the message; a repeated `client_msg_id` answers the original the same way.
#[utoipa::path(post, path = "/api/chat/messages", tag = "chat", security(("bearer" = [])),
    request_body = SendMessage,
    responses(
        (status = 201, description = "the stored message", body = crate::domain::chat::Message),
        (status = 403, description = "`forbidden`: not a participant", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`: no such conversation or attachment", body = crate::error::ErrorEnvelope),
        (status = 429, description = "`rate_limited`", body = crate::error::ErrorEnvelope),
    ))]
async fn post_message(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<SendMessage>,
) -> AppResult<HttpResponse> {
    let message = chat::send_message(&state, &user, None, body.into_inner()).await?;
    Ok(HttpResponse::Created().json(message))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ReadBody {
    conversation_id: ConversationId,
    seq: i64,
}

/// Moves the caller's read marker forward.
#[utoipa::path(post, path = "/api/chat/read", tag = "chat", security(("bearer" = [])),
    request_body = ReadBody,
    responses(
        (status = 204, description = "marked"),
        (status = 403, description = "`forbidden`: not a participant", body = crate::error::ErrorEnvelope),
        (status = 404, description = "`not_found`: no such conversation", body = crate::error::ErrorEnvelope),
    ))]
async fn post_read(
    state: web::Data<AppState>,
    user: AuthUser,
    body: web::Json<ReadBody>,
) -> AppResult<HttpResponse> {
    chat::mark_read(&state, &user, None, body.conversation_id, body.seq).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct ClientsQuery {
    q: Option<String>,
}

/// The trainer's clients (trainer); `?q=` keeps those whose name or username contains
/// it (case-insensitive).
#[utoipa::path(get, path = "/api/trainer/clients", tag = "chat", security(("bearer" = [])),
    params(("q" = Option<String>, Query, description = "part of a name or username")),
    responses(
        (status = 200, description = "clients", body = super::openapi::ClientList),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
    ))]
async fn list_clients(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ClientsQuery>,
) -> AppResult<HttpResponse> {
    let mut clients = chat::trainer_clients(&state, &user).await?;
    let needle = query.q.as_deref().unwrap_or("").trim().to_lowercase();
    if !needle.is_empty() {
        clients.retain(|c| {
            c.user.username.to_lowercase().contains(&needle)
                || c.user.display_name.to_lowercase().contains(&needle)
        });
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "clients": clients })))
}

/// Assigns a member to a trainer (admin).
#[utoipa::path(put, path = "/api/trainers/{trainer_id}/clients/{member_id}", tag = "chat", security(("bearer" = [])),
    params(("trainer_id" = i64, Path, description = "trainer id"), ("member_id" = i64, Path, description = "member id")),
    responses(
        (status = 204, description = "assigned"),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 422, description = "`validation_failed`: not a trainer and a member", body = crate::error::ErrorEnvelope),
    ))]
async fn put_assignment(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64)>,
) -> AppResult<HttpResponse> {
    let (trainer, member) = path.into_inner();
    chat::assign(&state, &user, UserId(trainer), UserId(member)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Unassigns a member from a trainer (admin).
#[utoipa::path(delete, path = "/api/trainers/{trainer_id}/clients/{member_id}", tag = "chat", security(("bearer" = [])),
    params(("trainer_id" = i64, Path, description = "trainer id"), ("member_id" = i64, Path, description = "member id")),
    responses(
        (status = 204, description = "unassigned"),
        (status = 403, description = "`forbidden`", body = crate::error::ErrorEnvelope),
        (status = 422, description = "`validation_failed`: not a trainer and a member", body = crate::error::ErrorEnvelope),
    ))]
async fn delete_assignment(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, i64)>,
) -> AppResult<HttpResponse> {
    let (trainer, member) = path.into_inner();
    chat::unassign(&state, &user, UserId(trainer), UserId(member)).await?;
    Ok(HttpResponse::NoContent().finish())
}
