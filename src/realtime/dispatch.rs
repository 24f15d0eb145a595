//! What each client frame does once its socket is authenticated: checks who may do it,
//! calls the same domain function the HTTP API calls, and says what to answer.

use super::hub::{Join, Leave, SocketId};
use super::protocol::{ClientFrame, ServerFrame};
use crate::auth::AuthUser;
use crate::db::ConversationId;
use crate::domain::rooms::RoomKey;
use crate::domain::users::Role;
use crate::domain::{attendance, chat, checkins, users as user_domain};
use crate::error::{AppError, AppResult, ErrorBody};
use crate::state::AppState;

/// The result of a frame, for the session to send and to keep its own state by.
#[derive(Debug)]
pub enum Outcome {
    Reply(ServerFrame),
    /// Joined a conversation: live frames up to `last_seq` were in `missed`.
    Joined {
        reply: ServerFrame,
        /// Sent right after `reply` (`resync_required` when the missed could not be sent).
        notice: Option<ServerFrame>,
        conversation: ConversationId,
        last_seq: i64,
    },
    Left {
        reply: ServerFrame,
        conversation: ConversationId,
    },
    /// A message took its place in the conversation; the ack follows once it is stored.
    Submitted(chat::PendingMessage),
    /// The socket now runs on a new access token.
    Refreshed {
        reply: ServerFrame,
        user: AuthUser,
    },
    Nothing,
}

/// Roles that watch the check-in room (and get `initial_stats` on connect).
pub fn is_dashboard(role: Role) -> bool {
    matches!(role, Role::Staff | Role::Admin | Role::Device)
}

/// Joins a room; the hub has the last word on whether the user's current role may.
async fn join(state: &AppState, id: SocketId, room: RoomKey) -> AppResult<()> {
    let admitted = state
        .hub
        .send(Join { id, room })
        .await
        .map_err(|e| AppError::internal(format!("hub: {e}")))?;
    if admitted {
        Ok(())
    } else {
        Err(AppError::forbidden())
    }
}

async fn leave(state: &AppState, id: SocketId, room: RoomKey) -> AppResult<()> {
    state
        .hub
        .send(Leave { id, room })
        .await
        .map_err(|e| AppError::internal(format!("hub: {e}")))
}

/// Handles one frame of an authenticated socket.
pub async fn handle(
    state: &AppState,
    id: SocketId,
    user: &AuthUser,
    frame: ClientFrame,
) -> AppResult<Outcome> {
    use ClientFrame as C;
    use ServerFrame as S;
    Ok(match frame {
        C::Authenticate { .. } | C::Ping { .. } | C::Heartbeat {} => {
            // Answered by the session itself.
            Outcome::Nothing
        }
        C::RefreshToken { token } => {
            let fresh = AuthUser::from_token(state, &token)?;
            if fresh.id != user.id {
                return Err(AppError::Forbidden("token belongs to another user".into()));
            }
            let expires_at =
                chrono::DateTime::from_timestamp(fresh.exp, 0).unwrap_or_else(chrono::Utc::now);
            Outcome::Refreshed {
                reply: S::TokenRefreshed { expires_at },
                user: fresh,
            }
        }
        C::JoinConversation {
            conversation_id,
            since_seq,
        } => {
            let room = RoomKey::Conversation(conversation_id);
            let enter = join(state, id, room);
            let joined = chat::join(state, user, conversation_id, since_seq, enter).await?;
            let last_seq = joined.last_seq;
            let notice = (!joined.recovered).then(|| {
                S::Error(ErrorBody {
                    code: "resync_required",
                    message: format!(
                        "more than {} messages were missed: reload the history",
                        chat::RECOVERY_MAX
                    ),
                    conversation_id: Some(conversation_id),
                })
            });
            Outcome::Joined {
                notice,
                reply: S::ConversationJoined {
                    conversation_id,
                    last_seq,
                    missed: joined.missed,
                    recovered: joined.recovered,
                },
                conversation: conversation_id,
                last_seq,
            }
        }
        C::LeaveConversation { conversation_id } => {
            leave(state, id, RoomKey::Conversation(conversation_id)).await?;
            Outcome::Left {
                reply: S::ConversationLeft { conversation_id },
                conversation: conversation_id,
            }
        }
        C::SendMessage {
            conversation_id,
            content,
            client_msg_id,
            attachment_id,
        } => {
            let req = chat::SendMessage {
                conversation_id,
                content,
                client_msg_id,
                attachment_id,
            };
            Outcome::Submitted(chat::submit_message(state, user, Some(id), req).await?)
        }
        C::Typing {
            conversation_id,
            is_typing,
        } => {
            chat::typing(state, user, conversation_id, is_typing).await?;
            Outcome::Nothing
        }
        C::ReadReceipt {
            conversation_id,
            seq,
        } => {
            chat::mark_read(state, user, Some(id), conversation_id, seq).await?;
            Outcome::Nothing
        }
        C::CheckIn {
            member_id,
            location,
            notes,
            idempotency_key,
        } => {
            let req = checkins::CheckInRequest {
                member_id,
                location,
                notes,
                idempotency_key,
            };
            let checkin = checkins::check_in(state, user, req).await?;
            Outcome::Reply(S::CheckInSuccess { checkin })
        }
        C::CheckOut { member_id } => {
            let checkin = checkins::check_out(state, user, member_id).await?;
            Outcome::Reply(S::CheckOutSuccess { checkin })
        }
        C::SubscribeCheckins {} => {
            if !is_dashboard(user.role) {
                return Err(AppError::forbidden());
            }
            join(state, id, RoomKey::Checkins).await?;
            Outcome::Reply(S::InitialStats {
                stats: state.stats.snapshot(),
            })
        }
        C::UnsubscribeCheckins {} => {
            leave(state, id, RoomKey::Checkins).await?;
            Outcome::Reply(S::CheckinsUnsubscribed {})
        }
        C::JoinAttendanceRoom { employee_id } => {
            attendance::authorize_employee_room(state, user, employee_id)?;
            join(state, id, RoomKey::Attendance(employee_id)).await?;
            Outcome::Reply(S::AttendanceRoomJoined { employee_id })
        }
        C::LeaveAttendanceRoom { employee_id } => {
            leave(state, id, RoomKey::Attendance(employee_id)).await?;
            Outcome::Reply(S::AttendanceRoomLeft { employee_id })
        }
        C::JoinGeneralAttendance {} => {
            user.require_admin()?;
            join(state, id, RoomKey::AttendanceGeneral).await?;
            Outcome::Reply(S::GeneralAttendanceJoined {})
        }
        C::LeaveGeneralAttendance {} => {
            leave(state, id, RoomKey::AttendanceGeneral).await?;
            Outcome::Reply(S::GeneralAttendanceLeft {})
        }
        C::SubscribePresence {} => {
            user.require_admin()?;
            join(state, id, RoomKey::Presence).await?;
            let users = presence_snapshot(state).await?;
            Outcome::Reply(S::PresenceSnapshot { users })
        }
        C::UnsubscribePresence {} => {
            leave(state, id, RoomKey::Presence).await?;
            Outcome::Reply(S::PresenceUnsubscribed {})
        }
    })
}

/// Every user with their live presence.
pub async fn presence_snapshot(state: &AppState) -> AppResult<Vec<user_domain::UserView>> {
    let live = state.presence.snapshot().await;
    let rows = state.db.read(crate::db::users::list).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let p = live
                .get(&r.id)
                .copied()
                .unwrap_or((false, r.last_seen.map(crate::time::from_db)));
            user_domain::UserView::from_row(r, Some(p))
        })
        .collect())
}
