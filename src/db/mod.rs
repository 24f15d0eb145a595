//! Storage: the connection pools for both backends, `read`/`write` helpers that run every
//! diesel call on the blocking pool, embedded migrations, and one module per table group.
//!
//! Queries are written once and compiled for both backends through [`with_conn!`]; the
//! few places where the backends differ (SQLite's `BEGIN IMMEDIATE`) are in [`transaction!`].

pub mod attendance;
pub mod chat;
pub mod checkin_codes;
pub mod checkins;
pub mod files;
mod fixed;
pub mod group_commit;
pub mod ids;
pub mod private_fs;
pub mod schema;
pub mod trainers;
pub mod users;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::DatabaseUrl;
use crate::error::{AppError, AppResult};

pub use ids::*;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// How long SQLite waits on a lock held by another connection before giving up.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before answering 503.
const POOL_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite readers: WAL lets them run beside the single writer.
const SQLITE_READERS: u32 = 4;
/// How often the WAL is copied into the database file in the background (SQLite).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// WAL pages after which a commit checkpoints by itself: a backstop, reached only when the
/// background checkpoint cannot keep up.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// A checked-out connection of either backend.
pub enum Conn {
    Sqlite(PooledConnection<ConnectionManager<SqliteConnection>>),
    Pg(PooledConnection<ConnectionManager<PgConnection>>),
}

/// Runs `$body` with `$c` bound to the concrete connection (`&mut SqliteConnection` or
/// `&mut PgConnection`): the body is compiled once per backend.
#[macro_export]
macro_rules! with_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::db::Conn::Sqlite(pooled) => {
                let $c: &mut ::diesel::SqliteConnection = &mut **pooled;
                $body
            }
            $crate::db::Conn::Pg(pooled) => {
                let $c: &mut ::diesel::PgConnection = &mut **pooled;
                $body
            }
        }
    };
}

/// Runs `$body` in a write transaction: `BEGIN IMMEDIATE` on SQLite (so two writers never
/// deadlock upgrading a read lock), a plain transaction on PostgreSQL. The body returns
/// `Result<T, AppError>`.
#[macro_export]
macro_rules! transaction {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::db::Conn::Sqlite(pooled) => {
                let conn: &mut ::diesel::SqliteConnection = &mut **pooled;
                conn.immediate_transaction::<_, $crate::error::AppError, _>(|$c| $body)
            }
            $crate::db::Conn::Pg(pooled) => {
                let conn: &mut ::diesel::PgConnection = &mut **pooled;
                ::diesel::Connection::transaction::<_, $crate::error::AppError, _>(conn, |$c| $body)
            }
        }
    };
}

#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {}; \
             PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};",
            SQLITE_BUSY_TIMEOUT.as_millis()
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The database: SQLite with one writer and a few readers, or a PostgreSQL pool.
#[derive(Clone)]
pub enum Db {
    Sqlite {
        read: Pool<ConnectionManager<SqliteConnection>>,
        /// One connection: SQLite serializes writers anyway, and queueing them here is
        /// fairer and faster than its busy-sleep loop.
        write: Pool<ConnectionManager<SqliteConnection>>,
    },
    Pg(Pool<ConnectionManager<PgConnection>>),
}

impl Db {
    /// Opens the pools. Fails when the database cannot be reached.
    pub fn connect(url: &DatabaseUrl, pool_size: u32) -> AppResult<Db> {
        match url {
            DatabaseUrl::Sqlite(path) => {
                if let Some(dir) = std::path::Path::new(path).parent() {
                    if !dir.as_os_str().is_empty() {
                        private_fs::create_dir(dir, false).map_err(|e| {
                            AppError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                        })?;
                    }
                }
                // Created here, private, before SQLite creates it with the umask's mode;
                // its -wal and -shm files take the same mode.
                private_fs::create_file_if_missing(std::path::Path::new(path)).map_err(|e| {
                    AppError::Unavailable(format!("cannot create the database {path}: {e}"))
                })?;
                let build = |size: u32| {
                    Pool::builder()
                        .max_size(size)
                        .connection_timeout(POOL_CHECKOUT_TIMEOUT)
                        // An embedded database's connection does not go away: testing it
                        // on every checkout (r2d2's default, a `SELECT 1` parsed each time)
                        // was a statement per chat commit. A connection that failed a
                        // statement is still dropped (`has_broken`).
                        .test_on_check_out(false)
                        .connection_customizer(Box::new(SqlitePragmas))
                        .build(ConnectionManager::<SqliteConnection>::new(path))
                };
                // The writer is opened first so that WAL mode is set before readers attach.
                let write = build(1)?;
                let read = build(SQLITE_READERS.min(pool_size.max(1)))?;
                Ok(Db::Sqlite { read, write })
            }
            DatabaseUrl::Postgres(url) => {
                let pool = Pool::builder()
                    .max_size(pool_size.max(2))
                    .connection_timeout(POOL_CHECKOUT_TIMEOUT)
                    .build(ConnectionManager::<PgConnection>::new(url))?;
                Ok(Db::Pg(pool))
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Db::Sqlite { .. } => "sqlite",
            Db::Pg(_) => "postgres",
        }
    }

    /// A connection for reading, checked out synchronously (blocking threads only).
    pub fn read_conn(&self) -> AppResult<Conn> {
        Ok(match self {
            Db::Sqlite { read, .. } => Conn::Sqlite(read.get()?),
            Db::Pg(p) => Conn::Pg(p.get()?),
        })
    }

    /// A connection for writing, checked out synchronously (blocking threads only).
    pub fn write_conn(&self) -> AppResult<Conn> {
        Ok(match self {
            Db::Sqlite { write, .. } => Conn::Sqlite(write.get()?),
            Db::Pg(p) => Conn::Pg(p.get()?),
        })
    }

    /// Runs `f` with a read connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> AppResult<T>
    where
        F: FnOnce(&mut Conn) -> AppResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.clone();
        actix_web::web::block(move || f(&mut db.read_conn()?)).await?
    }

    /// Runs `f` with the write connection on the blocking pool.
    pub async fn write<T, F>(&self, f: F) -> AppResult<T>
    where
        F: FnOnce(&mut Conn) -> AppResult<T> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.clone();
        actix_web::web::block(move || f(&mut db.write_conn()?)).await?
    }

    /// SQLite: checkpoints the WAL every [`CHECKPOINT_INTERVAL`] on a thread of its own,
    /// so that the checkpoint and its fsync never run inside a commit of the one writer
    /// (where every waiting chat message would wait for the disk). PASSIVE: it never
    /// blocks the writer or the readers. Nothing to do on PostgreSQL.
    pub fn start_checkpointer(&self) {
        let Db::Sqlite { read, .. } = self else {
            return;
        };
        let pool = read.clone();
        let spawned = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || loop {
                std::thread::sleep(CHECKPOINT_INTERVAL);
                let done = pool.get().map_err(|e| e.to_string()).and_then(|mut c| {
                    c.batch_execute("PRAGMA wal_checkpoint(PASSIVE)")
                        .map_err(|e| e.to_string())
                });
                if let Err(e) = done {
                    log::warn!("WAL checkpoint failed (retried in a second): {e}");
                }
            });
        if let Err(e) = spawned {
            log::warn!("no background WAL checkpoint, commits will checkpoint: {e}");
        }
    }

    /// Runs pending migrations; returns how many ran.
    pub fn migrate(&self) -> AppResult<usize> {
        let mut conn = self.write_conn()?;
        let applied = match &mut conn {
            Conn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()),
            Conn::Pg(c) => c.run_pending_migrations(PG_MIGRATIONS).map(|v| v.len()),
        };
        applied.map_err(|e| AppError::Unavailable(format!("migrations failed: {e}")))
    }

    /// Readiness: a trivial query.
    pub async fn ping(&self) -> AppResult<()> {
        self.read(|conn| {
            with_conn!(conn, c => c.batch_execute("SELECT 1"))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod migration_tests {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, RunQueryDsl, SqliteConnection};
    use diesel_migrations::MigrationHarness;

    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }

    fn one(c: &mut SqliteConnection, sql: &str) -> i64 {
        diesel::sql_query(sql).get_result::<Row>(c).unwrap().n
    }

    /// The messages table loses AUTOINCREMENT with every row and id kept, and the next id
    /// is still above all of them.
    #[test]
    fn messages_keep_their_ids_when_autoincrement_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let mut c = SqliteConnection::establish(&path.display().to_string()).unwrap();
        c.batch_execute("PRAGMA foreign_keys = ON").unwrap();
        let last = "2026-12-06-000001";
        loop {
            let pending = c.pending_migrations(super::SQLITE_MIGRATIONS).unwrap();
            let next = pending.first().expect("the last migration is pending");
            if next.name().to_string().starts_with(last) {
                break;
            }
            c.run_migration(next.as_ref()).unwrap();
        }
        c.batch_execute(
            "INSERT INTO users (id, username, display_name, password_hash, role, account_status, created_at, updated_at) \
               VALUES (1, 'a', 'A', 'x', 'trainer', 'active', '2026-01-01', '2026-01-01'), \
                      (2, 'b', 'B', 'x', 'member', 'active', '2026-01-01', '2026-01-01'); \
             INSERT INTO conversations (id, user_low, user_high, last_seq, created_at) VALUES (1, 1, 2, 2, '2026-01-01'); \
             INSERT INTO messages (id, conversation_id, seq, sender_id, content, client_msg_id, created_at) \
               VALUES (5, 1, 1, 1, 'one', 'c1', '2026-01-01'), (9, 1, 2, 2, 'two', 'c2', '2026-01-01');",
        )
        .unwrap();
        c.run_pending_migrations(super::SQLITE_MIGRATIONS).unwrap();
        assert_eq!(one(&mut c, "SELECT count(*) AS n FROM messages"), 2);
        assert_eq!(
            one(
                &mut c,
                "SELECT sum(id) AS n FROM messages WHERE content IN ('one', 'two')"
            ),
            14
        );
        assert_eq!(
            one(&mut c, "SELECT count(*) AS n FROM sqlite_master WHERE name = 'messages' AND sql LIKE '%AUTOINCREMENT%'"),
            0
        );
        c.batch_execute(
            "INSERT INTO messages (conversation_id, seq, sender_id, content, client_msg_id, created_at) \
               VALUES (1, 3, 1, 'three', 'c3', '2026-01-01')",
        )
        .unwrap();
        assert_eq!(
            one(&mut c, "SELECT id AS n FROM messages WHERE seq = 3"),
            10
        );
        // The constraints came along.
        let repeat = c.batch_execute(
            "INSERT INTO messages (conversation_id, seq, sender_id, content, client_msg_id, created_at) \
               VALUES (1, 3, 2, 'again', 'c4', '2026-01-01')",
        );
        assert!(repeat.is_err(), "a second seq 3 is refused");
    }

    /// Diesel orders migrations by the version before the first `_` of their folder and
    /// runs only one per version: two folders with the same version would skip one.
    #[test]
    fn migration_versions_are_unique_and_the_same_on_both_backends() {
        let versions = |backend: &str| {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let sqlite = versions("sqlite");
        let mut seen = std::collections::HashSet::new();
        for name in &sqlite {
            let version = name.split('_').next().unwrap().to_string();
            assert!(
                seen.insert(version),
                "two migrations share a version: {name}"
            );
        }
        assert_eq!(sqlite, versions("postgres"));
    }
}
