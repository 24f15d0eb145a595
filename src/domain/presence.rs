//! What the domain asks of presence. The presence actor (`realtime::presence`) answers it;
//! the domain never names the actor. One online state per user across every instance: each
//! instance holds a replica fed by its own inputs and the other instances' facts (see
//! `crate::cluster`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use crate::db::UserId;
use crate::domain::events::Reason;
use crate::error::AppResult;

/// Every known user's live state: `(is_online, last_seen)`.
pub type Live = HashMap<UserId, (bool, Option<DateTime<Utc>>)>;

/// Presence as the domain and the HTTP API use it.
pub trait Presence: Send + Sync {
    /// The user logged in: online when the future resolves.
    fn login(&self, user: UserId) -> BoxFuture<'static, ()>;

    /// An HTTP heartbeat at `at`: memory only, no database, no round trip unless it brings
    /// the user online (then it waits only while the actor's mailbox is full).
    fn heartbeat(&self, user: UserId, at: DateTime<Utc>) -> BoxFuture<'static, AppResult<()>>;

    /// Offline now (logout, account made non-active), unless `keep_online` (another of the
    /// user's sessions is live here) or the user has a live socket on another instance.
    fn go_offline(&self, user: UserId, reason: Reason, keep_online: bool);

    /// Whether the user has a live socket on this instance other than those opened with
    /// `except_jti` (a logout keeps the user online then).
    fn other_live_socket(&self, user: UserId, except_jti: String) -> BoxFuture<'static, bool>;

    /// Every known user's live state.
    fn snapshot(&self) -> BoxFuture<'static, Live>;

    /// Marks silent users offline (the sweeper's duty); answers how many went offline.
    fn sweep(&self) -> BoxFuture<'static, AppResult<usize>>;

    /// Writes everything pending and answers when it is stored.
    fn flush_now(&self) -> BoxFuture<'static, AppResult<()>>;
}
