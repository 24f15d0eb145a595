//! The directory: every user's id, name, role and account status, in memory, so that the
//! per-request checks (role, status) and presence never wait on the database. It is loaded
//! at start and updated by every write to `users` that goes through Spotter.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::db::users::UserRow;
use crate::db::UserId;
use crate::domain::users::{AccountStatus, Role};

/// What the directory knows of one user.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub status: AccountStatus,
    pub token_gen: i64,
}

/// What every request and socket frame is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    pub role: Role,
    pub status: AccountStatus,
    pub token_gen: i64,
}

impl DirEntry {
    pub fn from_row(row: &UserRow) -> DirEntry {
        DirEntry {
            id: row.id,
            username: row.username.clone(),
            display_name: row.display_name.clone(),
            role: Role::parse(&row.role).unwrap_or(Role::Member),
            status: AccountStatus::parse(&row.account_status).unwrap_or(AccountStatus::Inactive),
            token_gen: row.token_gen,
        }
    }
}

/// Users by id.
#[derive(Default)]
pub struct Directory {
    users: RwLock<HashMap<UserId, DirEntry>>,
}

impl Directory {
    pub fn load(rows: &[UserRow]) -> Directory {
        let d = Directory::default();
        for r in rows {
            d.upsert(r);
        }
        d
    }

    pub fn get(&self, id: UserId) -> Option<DirEntry> {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Role, status and token generation only: the per-request check, without cloning
    /// names.
    pub fn access(&self, id: UserId) -> Option<Access> {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|e| Access {
                role: e.role,
                status: e.status,
                token_gen: e.token_gen,
            })
    }

    /// Display name of a user, or an empty string for an unknown id.
    pub fn name(&self, id: UserId) -> String {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|e| e.display_name.clone())
            .unwrap_or_default()
    }

    /// Inserts or replaces a user; returns the previous entry.
    pub fn upsert(&self, row: &UserRow) -> Option<DirEntry> {
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(row.id, DirEntry::from_row(row))
    }

    pub fn len(&self) -> usize {
        self.users.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Loads one user from the database into the directory: a change made, or a user created,
/// through another instance.
pub async fn reload(state: &crate::state::AppState, user: UserId) {
    match state
        .db
        .read(move |c| crate::db::users::find(c, user))
        .await
    {
        Ok(Some(row)) => {
            state.directory.upsert(&row);
        }
        Ok(None) => {}
        Err(e) => log::error!("cannot load user {user} from the database: {e}"),
    }
}
