//! Typed ids: a `UserId` cannot be passed where a `ConversationId` is meant.

use diesel_derive_newtype::DieselNewType;
use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            Serialize, Deserialize, DieselNewType, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}

id_type!(
    /// A user (any role).
    UserId,
    /// A direct conversation between two users.
    ConversationId,
    /// A stored chat message.
    MessageId,
    /// An uploaded file; random, so that it cannot be guessed.
    FileId,
    /// A check-in.
    CheckinId,
    /// An attendance record.
    AttendanceId,
);
