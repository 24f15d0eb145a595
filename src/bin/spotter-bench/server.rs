//! The servers under test: spawning Spotter or the reference server with a temporary data
//! dir and SQLite database (or several Spotter instances sharing the PostgreSQL database and
//! Redis given in their environment), or pointing at running ones; reading their CPU time
//! and memory from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The JWT secret given to spawned servers (>= 32 bytes).
pub const BENCH_JWT_SECRET: &str = "spotter-bench-secret-0123456789abcdef0123456789";
/// The admin password given to spawned servers.
pub const BENCH_ADMIN_PASSWORD: &str = "bench-admin-password";
/// How long a spawned server may take to answer `/healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a spawned server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which implementation a target runs (for labels and the ratio).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Spotter,
    /// The same-stack yardstick (actix-web + actix-web-actors), `spotter-reference`.
    Reference,
    /// The lean yardstick (hyper + tokio-tungstenite), `spotter-lean`.
    Lean,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Spotter => "spotter",
            Flavor::Reference => "reference",
            Flavor::Lean => "lean",
        }
    }
}

/// One or more instances serving the same gym.
pub struct Target {
    pub flavor: Flavor,
    /// Base URLs (`http://127.0.0.1:8080`); sockets are spread over them round-robin.
    pub urls: Vec<String>,
    /// Server processes whose CPU and memory are measured (may be empty).
    pub pids: Vec<u32>,
    pub admin_password: String,
    spawned: Option<Spawned>,
}

/// The processes a run started, and the temp dir they share (data dir, SQLite, logs).
struct Spawned {
    /// One per instance, in the order of `Target::urls`.
    children: Vec<Child>,
    dir: PathBuf,
}

/// The log file of the `i`-th spawned instance.
fn log_name(i: usize) -> String {
    if i == 0 {
        "server.log".into()
    } else {
        format!("server-{}.log", i + 1)
    }
}

/// Extra environment for spawned Spotter servers (`--server-env K=V`).
#[derive(Debug, Clone, Default)]
pub struct SpawnOptions {
    pub env: Vec<(String, String)>,
    pub rust_log: String,
}

impl Target {
    pub fn existing(
        flavor: Flavor,
        urls: Vec<String>,
        pids: Vec<u32>,
        admin_password: String,
    ) -> Target {
        Target {
            flavor,
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            pids,
            admin_password,
            spawned: None,
        }
    }

    /// Starts `binary` on a free port with a fresh data dir and SQLite database.
    pub fn spawn(flavor: Flavor, binary: &Path, opts: &SpawnOptions) -> Result<Target, String> {
        Target::spawn_many(flavor, binary, opts, 1)
    }

    /// Starts `instances` copies of `binary`, each on its own free port, one after the
    /// other (each ready before the next starts, so that a fresh database is migrated and
    /// its admin created once). They share one data dir (uploads), the JWT secret and the
    /// admin password; several instances must also share a database and Redis, which come
    /// from `opts.env` (`SPOTTER_DATABASE_URL=postgres://…`, `SPOTTER_REDIS_URL=…`), and
    /// are ready when `/readyz` answers 200 (database and Redis reachable).
    pub fn spawn_many(
        flavor: Flavor,
        binary: &Path,
        opts: &SpawnOptions,
        instances: usize,
    ) -> Result<Target, String> {
        let instances = instances.max(1);
        let first_port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "spotter-bench-{}-{}-{}",
            flavor.name(),
            std::process::id(),
            first_port
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut target = Target {
            flavor,
            urls: Vec::new(),
            pids: Vec::new(),
            admin_password: BENCH_ADMIN_PASSWORD.into(),
            spawned: Some(Spawned {
                children: Vec::new(),
                dir: dir.clone(),
            }),
        };
        for i in 0..instances {
            // Picked once the previous instance listens, so that two never get one port.
            let port = if i == 0 { first_port } else { free_port()? };
            let child = start(binary, opts, &dir, port, &log_name(i))?;
            target.pids.push(child.id());
            target.urls.push(format!("http://127.0.0.1:{port}"));
            if let Some(s) = target.spawned.as_mut() {
                s.children.push(child);
            }
            if instances > 1 {
                let name = format!("spotter instance {} of {instances}", i + 1);
                target.wait_ready(i, &name, "/readyz")?;
            } else {
                let name = format!("the {} server", flavor.name());
                target.wait_ready(i, &name, "/healthz")?;
            }
        }
        Ok(target)
    }

    /// Waits until instance `i` (`name` in errors) answers `path` with 200.
    fn wait_ready(&mut self, i: usize, name: &str, path: &str) -> Result<(), String> {
        let addr = self.urls[i].trim_start_matches("http://").to_string();
        let start = Instant::now();
        loop {
            let exited = self
                .spawned
                .as_mut()
                .and_then(|s| s.children.get_mut(i))
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "{name} exited during startup ({status}); its log:\n{}",
                    self.instance_log_tail(i)
                ));
            }
            if http_ok(&addr, path) {
                return Ok(());
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                return Err(format!(
                    "{name} did not answer {path} with 200 within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    self.instance_log_tail(i)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the `i`-th spawned instance's log.
    fn instance_log_tail(&self, i: usize) -> String {
        let Some(s) = &self.spawned else {
            return String::new();
        };
        let text = std::fs::read_to_string(s.dir.join(log_name(i))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The last lines of each spawned instance's log (for error messages).
    pub fn log_tail(&self) -> String {
        let Some(s) = &self.spawned else {
            return String::new();
        };
        if s.children.len() <= 1 {
            return self.instance_log_tail(0);
        }
        (0..s.children.len())
            .map(|i| {
                format!(
                    "-- instance {} ({}):\n{}",
                    i + 1,
                    self.urls[i],
                    self.instance_log_tail(i)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether every spawned instance is still running.
    pub fn alive(&mut self) -> bool {
        match self.spawned.as_mut() {
            Some(s) => s
                .children
                .iter_mut()
                .all(|c| matches!(c.try_wait(), Ok(None))),
            None => true,
        }
    }

    /// Total user+system CPU time of the server processes (every instance's).
    pub fn cpu(&self) -> Duration {
        self.pids.iter().map(|p| proc_cpu(*p)).sum()
    }

    /// The part of [`Target::cpu`] spent on the threads that store chat messages
    /// (Spotter's `chat-writer` and `sqlite-checkpoint`; zero for the references, which
    /// store nothing).
    pub fn storage_cpu(&self) -> Duration {
        self.pids.iter().map(|p| storage_cpu(*p)).sum()
    }

    /// Total resident memory of the server processes, in bytes.
    pub fn rss(&self) -> u64 {
        self.pids.iter().map(|p| proc_rss(*p)).sum()
    }

    pub fn label(&self) -> String {
        format!("{} ({})", self.flavor.name(), self.urls.join(", "))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let Some(s) = self.spawned.as_mut() else {
            return;
        };
        // SIGTERM first so the servers drain and exit cleanly, then kill any that linger.
        for c in &mut s.children {
            if !matches!(c.try_wait(), Ok(None)) {
                continue;
            }
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
        let start = Instant::now();
        while start.elapsed() < STOP_TIMEOUT {
            if s.children
                .iter_mut()
                .all(|c| matches!(c.try_wait(), Ok(Some(_))))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for c in &mut s.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

/// Starts one server process on `port`, with `dir`'s data dir and SQLite database (which
/// `opts.env` may replace), logging into `dir/log`.
fn start(
    binary: &Path,
    opts: &SpawnOptions,
    dir: &Path,
    port: u16,
    log: &str,
) -> Result<Child, String> {
    let log_path = dir.join(log);
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(binary);
    cmd.arg("serve")
        .env("SPOTTER_BIND", format!("127.0.0.1:{port}"))
        .env(
            "SPOTTER_DATABASE_URL",
            format!("sqlite://{}", dir.join("spotter.db").display()),
        )
        .env("SPOTTER_DATA_DIR", dir.join("data"))
        .env("SPOTTER_ADMIN_PASSWORD", BENCH_ADMIN_PASSWORD)
        .env("SPOTTER_JWT_SECRET", BENCH_JWT_SECRET)
        .env("SPOTTER_WS_RATE_PER_SEC", "100000")
        .env("SPOTTER_WS_BURST", "100000")
        .env("SPOTTER_ACCESS_TTL_SECS", "7200")
        // Every login of a run comes from loopback: no per-address login throttle.
        .env("SPOTTER_LOGIN_MAX_FAILURES", "1000000")
        // A fanout room is 2 users with up to hundreds of sockets: no per-user cap.
        .env("SPOTTER_WS_MAX_PER_USER", "0")
        .env("RUST_LOG", &opts.rust_log)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// A tiny blocking GET used only to wait for startup.
fn http_ok(addr: &str, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Thread names (as /proc shows them, 15 bytes at most) of Spotter's storage threads.
const STORAGE_THREADS: [&str; 2] = ["chat-writer", "sqlite-checkpoi"];

/// utime + stime of `pid`'s storage threads ([`STORAGE_THREADS`]).
fn storage_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| STORAGE_THREADS.contains(&c.trim_end()))
        })
        .map(|t| stat_cpu(&t.path().join("stat")))
        .sum()
}

/// utime + stime of a process, from /proc/PID/stat (0 when unreadable).
pub fn proc_cpu(pid: u32) -> Duration {
    stat_cpu(std::path::Path::new(&format!("/proc/{pid}/stat")))
}

/// utime + stime from a /proc `stat` file of a process or a thread (0 when unreadable).
fn stat_cpu(path: &std::path::Path) -> Duration {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return Duration::ZERO;
    };
    // The command name may contain spaces: fields are counted after its closing ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|x| x.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_nanos(ticks * 1_000_000_000 / clock_ticks())
}

/// VmRSS of a process in bytes, from /proc/PID/status (0 when unreadable).
pub fn proc_rss(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Raises this process's open-file soft limit to its hard limit; returns the new limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            want.rlim_cur
        } else {
            lim.rlim_cur
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A thread named `name` that burns CPU until the flag is set (a thread that has
    /// exited is gone from /proc/PID/task, so it must still run while it is read).
    fn spinner(name: &str) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut x = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
            .expect("spawn");
        (stop, handle)
    }

    /// Waits (by CPU, not wall time, so that a loaded machine only makes it slower) until
    /// `read` has grown by `by` from `from`, for at most 30 s; answers the last reading.
    fn wait_for_cpu(read: impl Fn() -> Duration, from: Duration, by: Duration) -> Duration {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut now = read();
        while now.saturating_sub(from) < by && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            now = read();
        }
        now
    }

    #[test]
    fn storage_cpu_counts_only_the_storage_threads() {
        let me = std::process::id();
        let enough = Duration::from_millis(150);
        // Another thread's CPU is the process's, not storage.
        let before = storage_cpu(me);
        let (stop, other) = spinner("other-thread");
        let cpu0 = proc_cpu(me);
        wait_for_cpu(|| proc_cpu(me), cpu0, enough);
        let after_other = storage_cpu(me);
        stop.store(true, Ordering::Relaxed);
        other.join().expect("join");
        assert!(
            after_other.saturating_sub(before) < Duration::from_millis(50),
            "another thread's CPU is not storage: {before:?} → {after_other:?}"
        );
        // The chat writer's is.
        let (stop, writer) = spinner("chat-writer");
        let during = wait_for_cpu(|| storage_cpu(me), after_other, enough);
        stop.store(true, Ordering::Relaxed);
        writer.join().expect("join");
        assert!(
            during.saturating_sub(after_other) >= enough,
            "the chat-writer thread's CPU is counted: {after_other:?} → {during:?}"
        );
        assert!(
            proc_cpu(me) >= during,
            "storage is part of the process's CPU"
        );
    }
}
