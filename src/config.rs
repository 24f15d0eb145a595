//! Configuration: the only place that reads the environment (and the optional
//! `spotter.toml`). Every value is parsed once at start-up; a bad value stops the
//! server with one line naming the variable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveTime;

/// Default age after which an upload never attached to a message is removed: a day.
pub const UPLOAD_ORPHAN_SECS: u64 = 86_400;

/// Which storage backend `SPOTTER_DATABASE_URL` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH` (embedded, the default). `sqlite::memory:` is not offered: data
    /// must survive a restart.
    Sqlite(String),
    /// `postgres://…` or `postgresql://…`, passed to libpq unchanged.
    Postgres(String),
}

/// Everything Spotter can be configured with. See PROTOCOL §1 for the contract's names.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: String,
    pub database_url: DatabaseUrl,
    pub redis_url: Option<String>,
    pub redis_prefix: String,
    pub drain: Duration,
    /// `None`: generate one and keep it in the data dir.
    pub jwt_secret: Option<String>,
    pub data_dir: PathBuf,
    pub heartbeat_timeout: Duration,
    pub sweep_interval: Duration,
    /// How often presence's write-behind buffer reaches the database.
    pub flush_interval: Duration,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub upload_max_bytes: u64,
    pub shift_start: NaiveTime,
    pub ws_rate_per_sec: u32,
    pub ws_burst: u32,
    pub allowed_origins: Option<Vec<String>>,
    /// Largest WebSocket frame a client may send (contract: 64 KiB).
    pub ws_max_frame: usize,
    /// Bound of each socket's outbound queue, in frames.
    pub ws_queue: usize,
    /// Unsent output one socket may have queued, in bytes (mailbox and write buffer).
    pub ws_max_buffer_bytes: usize,
    /// Open sockets per user (0: no cap).
    pub ws_max_per_user: usize,
    /// Sockets one address may have open before they authenticate.
    pub ws_max_unauthenticated_per_addr: usize,
    /// How long a socket being closed by the server may take to flush before its
    /// connection is cut.
    pub ws_close_grace: Duration,
    pub ws_ping_interval: Duration,
    pub ws_idle_timeout: Duration,
    pub ws_auth_timeout: Duration,
    /// Largest JSON request body.
    pub json_max_bytes: usize,
    /// Check-ins left open longer than this are closed by the sweeper.
    pub checkin_max_open: Duration,
    /// Failed logins allowed per username (and, times five, per address) in a window.
    pub login_max_failures: u32,
    pub login_window: Duration,
    /// Logins one address may have being checked at once.
    pub login_max_concurrent_per_addr: u32,
    pub admin_password: Option<String>,
    /// r2d2 pool size (PostgreSQL; SQLite reads use it too, writes use one connection).
    pub db_pool_size: u32,
    /// Peers whose `X-Forwarded-For` names the client (reverse proxies). Empty: the
    /// header is ignored and the peer address is the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Bytes of uploads one user may keep.
    pub upload_quota_bytes: u64,
    /// Uploads never attached to a message are removed once this old.
    pub upload_orphan_age: Duration,
}

/// A configuration error: names the variable and says what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {var}: {reason}")]
pub struct ConfigError {
    pub var: String,
    pub reason: String,
}

fn err(var: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_string(),
        reason: reason.into(),
    }
}

/// Where values come from: the environment first, then `spotter.toml`.
struct Source {
    env: HashMap<String, String>,
    file: HashMap<String, String>,
}

impl Source {
    fn get(&self, var: &str) -> Option<String> {
        self.env
            .get(var)
            .or_else(|| self.file.get(var))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_string())
    }

    fn parse<T: std::str::FromStr>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|e| err(var, format!("cannot parse {v:?}: {e}"))),
        }
    }

    fn secs(&self, var: &str, default: u64) -> Result<Duration, ConfigError> {
        let v: u64 = self.parse(var, default)?;
        if v == 0 {
            return Err(err(var, "must be at least 1 second"));
        }
        Ok(Duration::from_secs(v))
    }
}

/// Reads `spotter.toml` (or `SPOTTER_CONFIG`) into upper-case `SPOTTER_*` keys: a table
/// key `bind` or `SPOTTER_BIND` both set `SPOTTER_BIND`.
fn read_file(env: &HashMap<String, String>) -> Result<HashMap<String, String>, ConfigError> {
    let (path, explicit) = match env.get("SPOTTER_CONFIG") {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from("spotter.toml"), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(HashMap::new())
        }
        Err(e) => return Err(err("SPOTTER_CONFIG", format!("{}: {e}", path.display()))),
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e| err("SPOTTER_CONFIG", format!("{}: {e}", path.display())))?;
    let mut out = HashMap::new();
    for (k, v) in table {
        let key = k.to_ascii_uppercase();
        let key = if key.starts_with("SPOTTER_") || key == "RUST_LOG" {
            key
        } else {
            format!("SPOTTER_{key}")
        };
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        out.insert(key, value);
    }
    Ok(out)
}

impl Config {
    /// Reads the process environment (and `spotter.toml`).
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_map(std::env::vars().collect())
    }

    /// Reads configuration from the given variables (used by tests and `from_env`).
    pub fn from_map(env: HashMap<String, String>) -> Result<Config, ConfigError> {
        let file = read_file(&env)?;
        let src = Source { env, file };

        let bind = src.string("SPOTTER_BIND", "127.0.0.1:8080");
        bind.parse::<SocketAddr>()
            .map_err(|e| err("SPOTTER_BIND", format!("{bind:?} is not HOST:PORT ({e})")))?;

        let db = src.string("SPOTTER_DATABASE_URL", "sqlite://spotter.db");
        let database_url = parse_database_url(&db)?;

        let redis_url = src.get("SPOTTER_REDIS_URL");
        if let Some(url) = &redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(err(
                    "SPOTTER_REDIS_URL",
                    "must start with redis:// or rediss://",
                ));
            }
            if matches!(database_url, DatabaseUrl::Sqlite(_)) {
                return Err(err(
                    "SPOTTER_REDIS_URL",
                    "several instances need a shared database: set SPOTTER_DATABASE_URL to postgres://",
                ));
            }
        }

        let jwt_secret = src.get("SPOTTER_JWT_SECRET");
        if let Some(s) = &jwt_secret {
            if s.len() < 32 {
                return Err(err(
                    "SPOTTER_JWT_SECRET",
                    format!("must be at least 32 bytes, got {}", s.len()),
                ));
            }
        }

        let shift = src.string("SPOTTER_SHIFT_START", "09:00");
        let shift_start = NaiveTime::parse_from_str(&shift, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(&shift, "%H:%M:%S"))
            .map_err(|_| err("SPOTTER_SHIFT_START", format!("{shift:?} is not HH:MM")))?;

        let allowed_origins = src.get("SPOTTER_ALLOWED_ORIGINS").map(|v| {
            v.split(',')
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
        });

        let ws_rate_per_sec: u32 = src.parse("SPOTTER_WS_RATE_PER_SEC", 20)?;
        let ws_burst: u32 = src.parse("SPOTTER_WS_BURST", 40)?;
        if ws_rate_per_sec == 0 || ws_burst == 0 {
            return Err(err(
                "SPOTTER_WS_RATE_PER_SEC",
                "rate and burst must be positive",
            ));
        }
        let ws_queue: usize = src.parse("SPOTTER_WS_QUEUE", 1024)?;
        if ws_queue < 16 {
            return Err(err("SPOTTER_WS_QUEUE", "must be at least 16"));
        }

        let trusted_proxies = match src.get("SPOTTER_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.parse::<std::net::IpAddr>().map_err(|_| {
                        err(
                            "SPOTTER_TRUSTED_PROXIES",
                            format!("{p:?} is not an IP address"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };

        Ok(Config {
            bind,
            database_url,
            redis_url,
            redis_prefix: src.string("SPOTTER_REDIS_PREFIX", "spotter"),
            drain: src.secs("SPOTTER_DRAIN_SECS", 10)?,
            jwt_secret,
            data_dir: PathBuf::from(src.string("SPOTTER_DATA_DIR", "./data")),
            heartbeat_timeout: src.secs("SPOTTER_HEARTBEAT_TIMEOUT_SECS", 120)?,
            sweep_interval: src.secs("SPOTTER_SWEEP_INTERVAL_SECS", 60)?,
            flush_interval: src.secs("SPOTTER_FLUSH_INTERVAL_SECS", 5)?,
            access_ttl: src.secs("SPOTTER_ACCESS_TTL_SECS", 900)?,
            refresh_ttl: src.secs("SPOTTER_REFRESH_TTL_SECS", 1_209_600)?,
            upload_max_bytes: src.parse("SPOTTER_UPLOAD_MAX_BYTES", 5_242_880)?,
            shift_start,
            ws_rate_per_sec,
            ws_burst,
            allowed_origins,
            ws_max_frame: src.parse("SPOTTER_WS_MAX_FRAME_BYTES", 64 * 1024)?,
            ws_queue,
            ws_max_buffer_bytes: src.parse("SPOTTER_WS_MAX_BUFFER_BYTES", 1_048_576)?,
            ws_max_per_user: src.parse("SPOTTER_WS_MAX_PER_USER", 32)?,
            ws_max_unauthenticated_per_addr: src
                .parse("SPOTTER_WS_MAX_UNAUTHENTICATED_PER_ADDR", 64)?,
            ws_close_grace: src.secs("SPOTTER_WS_CLOSE_GRACE_SECS", 5)?,
            ws_ping_interval: src.secs("SPOTTER_WS_PING_SECS", 25)?,
            ws_idle_timeout: src.secs("SPOTTER_WS_IDLE_SECS", 60)?,
            ws_auth_timeout: src.secs("SPOTTER_WS_AUTH_TIMEOUT_SECS", 10)?,
            json_max_bytes: src.parse("SPOTTER_JSON_MAX_BYTES", 256 * 1024)?,
            checkin_max_open: Duration::from_secs(
                src.parse::<u64>("SPOTTER_CHECKIN_MAX_OPEN_HOURS", 12)? * 3600,
            ),
            login_max_failures: src.parse("SPOTTER_LOGIN_MAX_FAILURES", 10)?,
            login_window: src.secs("SPOTTER_LOGIN_WINDOW_SECS", 300)?,
            login_max_concurrent_per_addr: src.parse("SPOTTER_LOGIN_MAX_CONCURRENT_PER_ADDR", 8)?,
            admin_password: src.get("SPOTTER_ADMIN_PASSWORD"),
            db_pool_size: src.parse("SPOTTER_DB_POOL_SIZE", 8)?,
            trusted_proxies,
            upload_quota_bytes: src.parse("SPOTTER_UPLOAD_QUOTA_BYTES", 104_857_600)?,
            upload_orphan_age: src.secs("SPOTTER_UPLOAD_ORPHAN_SECS", UPLOAD_ORPHAN_SECS)?,
        })
    }
}

fn parse_database_url(url: &str) -> Result<DatabaseUrl, ConfigError> {
    const VAR: &str = "SPOTTER_DATABASE_URL";
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err(err(
                VAR,
                "sqlite:// needs a file path, e.g. sqlite://spotter.db",
            ));
        }
        Ok(DatabaseUrl::Sqlite(path.to_string()))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DatabaseUrl::Postgres(url.to_string()))
    } else {
        let scheme = url.split("://").next().unwrap_or(url);
        Err(err(
            VAR,
            format!("unknown scheme {scheme:?}: use sqlite://PATH or postgres://…"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.insert("SPOTTER_CONFIG".into(), "/nonexistent-is-an-error".into());
        m.remove("SPOTTER_CONFIG");
        Config::from_map(m)
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.bind, "127.0.0.1:8080");
        assert_eq!(c.database_url, DatabaseUrl::Sqlite("spotter.db".into()));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(120));
        assert_eq!(c.upload_max_bytes, 5_242_880);
        assert_eq!(c.shift_start, NaiveTime::from_hms_opt(9, 0, 0).unwrap());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = cfg(&[("SPOTTER_JWT_SECRET", "short")]).unwrap_err();
        assert_eq!(e.var, "SPOTTER_JWT_SECRET");
        let e = cfg(&[("SPOTTER_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert_eq!(e.var, "SPOTTER_DATABASE_URL");
        let e = cfg(&[("SPOTTER_BIND", "nope")]).unwrap_err();
        assert_eq!(e.var, "SPOTTER_BIND");
        let e = cfg(&[("SPOTTER_SWEEP_INTERVAL_SECS", "x")]).unwrap_err();
        assert_eq!(e.var, "SPOTTER_SWEEP_INTERVAL_SECS");
        let e = cfg(&[("SPOTTER_TRUSTED_PROXIES", "10.0.0.1, proxy")]).unwrap_err();
        assert_eq!(e.var, "SPOTTER_TRUSTED_PROXIES");
        let e = cfg(&[("SPOTTER_UPLOAD_ORPHAN_SECS", "0")]).unwrap_err();
        assert_eq!(e.var, "SPOTTER_UPLOAD_ORPHAN_SECS");
    }

    #[test]
    fn abuse_settings() {
        let c = cfg(&[]).unwrap();
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.upload_quota_bytes, 104_857_600);
        assert_eq!(c.upload_orphan_age, Duration::from_secs(86_400));
        let c = cfg(&[("SPOTTER_TRUSTED_PROXIES", "127.0.0.1, ::1")]).unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
    }
}
