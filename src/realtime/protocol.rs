//! The wire protocol of the socket (PROTOCOL §4) as two tagged enums: frames from the
//! client and frames from the server. Every frame is `{"type","ref","payload"}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{ConversationId, FileId, UserId};
use crate::domain::chat::Message;
use crate::domain::checkins::{Checkin, Stats};
use crate::domain::events::Notice;
use crate::domain::users::UserView;
use crate::error::{AppError, ErrorBody};

/// Close codes (PROTOCOL §4).
pub const CLOSE_UNAUTHORIZED: u16 = 4001;
pub const CLOSE_FORBIDDEN: u16 = 4003;
pub const CLOSE_RATE_LIMITED: u16 = 4008;
pub const CLOSE_TOO_SLOW: u16 = 4029;
pub const CLOSE_RESTARTING: u16 = 4200;

/// A frame from the client, by its `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum ClientFrame {
    Authenticate {
        token: String,
    },
    RefreshToken {
        token: String,
    },
    Ping {
        #[serde(default)]
        timestamp: Option<Value>,
    },
    Heartbeat {},
    JoinConversation {
        conversation_id: ConversationId,
        #[serde(default)]
        since_seq: Option<i64>,
    },
    LeaveConversation {
        conversation_id: ConversationId,
    },
    SendMessage {
        conversation_id: ConversationId,
        content: String,
        client_msg_id: String,
        #[serde(default)]
        attachment_id: Option<FileId>,
    },
    Typing {
        conversation_id: ConversationId,
        is_typing: bool,
    },
    ReadReceipt {
        conversation_id: ConversationId,
        seq: i64,
    },
    CheckIn {
        member_id: UserId,
        #[serde(default)]
        location: Option<String>,
        #[serde(default)]
        notes: Option<String>,
        #[serde(default)]
        idempotency_key: Option<String>,
    },
    CheckOut {
        member_id: UserId,
    },
    SubscribeCheckins {},
    UnsubscribeCheckins {},
    JoinAttendanceRoom {
        employee_id: UserId,
    },
    LeaveAttendanceRoom {
        employee_id: UserId,
    },
    JoinGeneralAttendance {},
    LeaveGeneralAttendance {},
    SubscribePresence {},
    UnsubscribePresence {},
}

/// A parsed client frame with its correlation id.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub reference: Option<Value>,
    pub frame: ClientFrame,
}

/// Why a text frame could not be read; the `ref` is kept when it could be found.
#[derive(Debug)]
pub struct BadFrame {
    pub reference: Option<Value>,
    pub error: AppError,
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(rename = "ref", default)]
    reference: Option<Value>,
    #[serde(default)]
    payload: Option<Value>,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Incoming, BadFrame> {
    let raw: RawEnvelope = serde_json::from_str(text).map_err(|e| BadFrame {
        reference: None,
        error: AppError::InvalidRequest(format!("frame is not a JSON object: {e}")),
    })?;
    let reference = raw.reference;
    let bad = |error| BadFrame {
        reference: reference.clone(),
        error,
    };
    let kind = match raw.kind {
        Some(Value::String(s)) => s,
        _ => {
            return Err(bad(AppError::InvalidRequest(
                "frame has no \"type\"".into(),
            )))
        }
    };
    let payload = match raw.payload {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => {
            return Err(bad(AppError::InvalidRequest(
                "\"payload\" must be an object".into(),
            )))
        }
    };
    let tagged = serde_json::json!({ "type": kind, "payload": payload });
    match serde_json::from_value::<ClientFrame>(tagged) {
        Ok(frame) => Ok(Incoming {
            reference: reference.clone(),
            frame,
        }),
        Err(e) => {
            let msg = e.to_string();
            if msg.starts_with("unknown variant") {
                Err(bad(AppError::InvalidRequest(format!(
                    "unknown frame type {kind:?}"
                ))))
            } else {
                Err(bad(AppError::Validation(format!(
                    "bad {kind} payload: {msg}"
                ))))
            }
        }
    }
}

/// A frame from the server, by its `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", content = "payload", rename_all = "snake_case")]
pub enum ServerFrame {
    AuthenticationSuccess {
        user: UserView,
    },
    TokenRefreshed {
        #[serde(with = "crate::time::rfc3339")]
        expires_at: DateTime<Utc>,
    },
    TokenExpiring {
        #[serde(with = "crate::time::rfc3339")]
        expires_at: DateTime<Utc>,
    },
    Pong {
        timestamp: Value,
    },
    HeartbeatAck {},
    ConversationJoined {
        conversation_id: ConversationId,
        last_seq: i64,
        missed: Vec<Message>,
        recovered: bool,
    },
    ConversationLeft {
        conversation_id: ConversationId,
    },
    MessageAck {
        client_msg_id: String,
        message: Message,
    },
    CheckInSuccess {
        checkin: Checkin,
    },
    CheckOutSuccess {
        checkin: Checkin,
    },
    InitialStats {
        stats: Stats,
    },
    CheckinsUnsubscribed {},
    AttendanceRoomJoined {
        employee_id: UserId,
    },
    AttendanceRoomLeft {
        employee_id: UserId,
    },
    GeneralAttendanceJoined {},
    GeneralAttendanceLeft {},
    PresenceSnapshot {
        users: Vec<UserView>,
    },
    PresenceUnsubscribed {},
    Error(ErrorBody),
}

#[derive(Serialize)]
struct Envelope<'a, F> {
    #[serde(flatten)]
    frame: &'a F,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a Value>,
}

/// A domain notice as the frame of the same name, serialized once for all its recipients
/// (PROTOCOL §4; [`Notice`] mirrors those frames field for field).
pub fn encode_notice(notice: &Notice) -> bytestring::ByteString {
    encode_frame(notice, None)
}

fn encode_frame<F: Serialize>(frame: &F, reference: Option<&Value>) -> bytestring::ByteString {
    let env = Envelope { frame, reference };
    match serde_json::to_string(&env) {
        Ok(s) => s.into(),
        Err(e) => {
            // Every payload is plain data: this only happens on a bug. Say so to the
            // client rather than sending nothing.
            log::error!("cannot serialize a server frame: {e}");
            r#"{"type":"error","payload":{"code":"internal","message":"internal error"}}"#.into()
        }
    }
}

impl ServerFrame {
    /// Serializes the frame once, with the `ref` of the client frame it answers.
    pub fn encode(&self, reference: Option<&Value>) -> bytestring::ByteString {
        encode_frame(self, reference)
    }
}

impl ServerFrame {
    pub fn error(e: &AppError) -> ServerFrame {
        ServerFrame::Error(e.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_and_keeps_ref() {
        let f = parse(r#"{"type":"join_conversation","ref":"a1","payload":{"conversation_id":3}}"#)
            .unwrap();
        assert_eq!(f.reference, Some(Value::String("a1".into())));
        assert!(matches!(
            f.frame,
            ClientFrame::JoinConversation {
                conversation_id: ConversationId(3),
                since_seq: None
            }
        ));
        let f = parse(r#"{"type":"heartbeat"}"#).unwrap();
        assert!(matches!(f.frame, ClientFrame::Heartbeat {}));
    }

    #[test]
    fn bad_frames_say_why() {
        assert_eq!(parse("nope").unwrap_err().error.code(), "invalid_request");
        let e = parse(r#"{"type":"warp","ref":7}"#).unwrap_err();
        assert_eq!(e.error.code(), "invalid_request");
        assert_eq!(e.reference, Some(Value::from(7)));
        let e = parse(r#"{"type":"send_message","payload":{"conversation_id":1}}"#).unwrap_err();
        assert_eq!(e.error.code(), "validation_failed");
    }

    #[test]
    fn encodes_type_ref_payload() {
        let s = ServerFrame::HeartbeatAck {}.encode(Some(&Value::from("r")));
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["type"], "heartbeat_ack");
        assert_eq!(v["ref"], "r");
        assert!(v["payload"].is_object());
        let s = ServerFrame::error(&AppError::forbidden()).encode(None);
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["payload"]["code"], "forbidden");
        assert!(v.get("ref").is_none());
    }
}

#[cfg(test)]
#[path = "protocol_props.rs"]
mod props;
