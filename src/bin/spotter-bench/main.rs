//! `spotter-bench`: load generator for Spotter (issue #6). Every scenario runs against a
//! server it starts (`--spawn`, a temp data dir and SQLite; `--spawn-instances N`: N
//! instances sharing the PostgreSQL database and Redis given with `--server-env`) or
//! running ones (`--url`, repeatable: sockets are spread over the instances), optionally
//! side by side with the minimal reference server (`--compare`), and prints a table and,
//! with `--json`, JSON. See BENCHMARKS.md for the commands and results.

mod client;
mod heartbeat;
mod idle;
mod report;
mod rooms;
mod server;
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use report::Report;
use server::{Flavor, SpawnOptions, Target};

#[derive(Parser)]
#[command(name = "spotter-bench", about = "Load generator for Spotter")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Start this Spotter binary (fresh temp data dir, SQLite) for the run.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// With --spawn: start this many Spotter instances on free ports, one after the other,
    /// sharing one data dir, JWT secret and the --server-env, which must name a shared
    /// database and Redis when N > 1 (--server-env SPOTTER_DATABASE_URL=postgres://…
    /// --server-env SPOTTER_REDIS_URL=redis://…). Sockets are spread over them as with
    /// several --url; server CPU and memory are the sum over every instance.
    #[arg(long = "spawn-instances", default_value_t = 1)]
    spawn_instances: usize,
    /// Use running instance(s) instead (repeatable: sockets are spread over them).
    #[arg(long, visible_alias = "target")]
    url: Vec<String>,
    /// With --url: server process id(s) whose CPU and memory are measured.
    #[arg(long = "server-pid")]
    server_pid: Vec<u32>,
    /// With --url: the admin's password (users are created through the API); default:
    /// $SPOTTER_ADMIN_PASSWORD.
    #[arg(long = "admin-password")]
    admin_password: Option<String>,
    /// Also run the reference servers (see --compare-with) and print the ratio Spotter /
    /// each reference.
    #[arg(long)]
    compare: bool,
    /// With --compare: which references run after Spotter: `both` (the same-stack
    /// spotter-reference, then the lean spotter-lean), `same` or `lean`.
    #[arg(long = "compare-with", default_value = "both", value_parser = ["both", "same", "lean"])]
    compare_with: String,
    /// Run every target this many times, interleaved (Spotter, references, Spotter, …,
    /// each on a fresh server), and report each metric's median over the rounds (lost,
    /// duplicates and errors: the largest). Every round's CPU ratio is printed as well.
    /// Machine noise then moves both servers alike instead of one run's ratio.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The same-stack reference binary (default: spotter-reference next to this binary).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The lean reference binary (default: spotter-lean next to this binary).
    #[arg(long)]
    lean: Option<PathBuf>,
    /// Write every report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Client threads (each runs its own event loop).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Loopback source addresses for client sockets (127.0.0.1 ..= 127.0.0.N).
    #[arg(long = "source-addrs", default_value_t = 4)]
    source_addrs: usize,
    /// RUST_LOG of spawned servers.
    #[arg(long = "server-log", default_value = "warn")]
    server_log: String,
    /// Extra environment for spawned servers, KEY=VALUE (repeatable).
    #[arg(long = "server-env")]
    server_env: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// R rooms × S sockets; publishers send, every socket counts what it receives.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 10)]
        rooms: usize,
        /// Sockets per room (the room's two users, alternating).
        #[arg(long, default_value_t = 50)]
        sockets: usize,
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Messages per second in total; 0 = closed loop (peak).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Unacked messages per publisher in closed loop.
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long = "content-bytes", default_value_t = 64)]
        content_bytes: usize,
        /// After a closed-loop run, also run at this fraction of its peak (0 = no).
        #[arg(long = "then-fraction", default_value_t = 0.5)]
        then_fraction: f64,
        /// Then one open-loop run at each of these rates per publisher (msg/s), e.g.
        /// `2,10,20` (everyday chat rates); every target runs the same rates.
        #[arg(long = "per-publisher-rates", value_delimiter = ',')]
        per_publisher_rates: Vec<f64>,
        /// Two-way chat: both participants of each room send (at least 2 publishers per
        /// room, the trainer's and the member's sockets).
        #[arg(long = "two-way")]
        two_way: bool,
    },
    /// N authenticated sockets held for T seconds: how many held, server memory per socket.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        #[arg(long, default_value_t = 50)]
        users: usize,
        /// Seconds to hold.
        #[arg(long, default_value_t = 60)]
        hold: u64,
        /// Each socket also joins its user's conversation (a chat screen left open).
        #[arg(long)]
        join: bool,
    },
    /// Resident memory at start, right after N users are created and logged in, and at
    /// rest a few seconds later (no sockets).
    Rest {
        #[command(flatten)]
        common: Common,
        /// Users created and logged in (one password hash each for creation and login).
        #[arg(long, default_value_t = 100)]
        logins: usize,
        /// Seconds to wait after the last login before measuring "at rest".
        #[arg(long, default_value_t = 5)]
        settle: u64,
    },
    /// POST /api/users/heartbeat at a fixed rate, then closed loop with C connections.
    Heartbeat {
        #[command(flatten)]
        common: Common,
        /// Requests per second of the open-loop run (0 = skip it).
        #[arg(long, default_value_t = 5000.0)]
        rate: f64,
        /// Connections of the closed-loop run (0 = skip it).
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Users whose tokens the requests rotate over.
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// The request body: `json` (`{}`, as frontends send it) or `none`.
        #[arg(long, default_value = "json", value_parser = ["json", "none"])]
        body: String,
    },
    /// Sustained sends into many conversations: stored messages/s (closed loop), then
    /// send→deliver latency at a fixed rate.
    ChatStore {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        conversations: usize,
        /// Messages per second of the fixed-rate run (0 = skip it).
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Skip the closed-loop (max) run.
        #[arg(long = "no-max")]
        no_max: bool,
    },
    /// A long mixed run (chat with reconnects and since_seq, heartbeats, check-ins,
    /// attendance, presence feeds) that samples the server's RSS and open fds and fails if
    /// an acked message is lost or a socket misses a message for good.
    Soak {
        #[command(flatten)]
        common: Common,
        /// Seconds to run.
        #[arg(long, default_value_t = 600)]
        duration: u64,
        /// Trainer/member pairs, each chatting over two sockets.
        #[arg(long, default_value_t = 8)]
        pairs: usize,
        /// Messages per second per chatting socket.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
        /// Seconds a chatting socket lives before it reconnects with since_seq.
        #[arg(long = "reconnect-every", default_value_t = 30)]
        reconnect_every: u64,
        /// Seconds between samples of the server's RSS and open fds.
        #[arg(long = "sample-every", default_value_t = 10)]
        sample_every: u64,
    },
    /// CI: every scenario for ~2 s with tiny sizes; fails only if the tool cannot run a
    /// scenario or a chat message is lost.
    Smoke {
        #[command(flatten)]
        common: Common,
        /// Skip the chat scenarios (before chat is merged they answer 503).
        #[arg(long = "skip-chat")]
        skip_chat: bool,
    },
}

/// Builds the targets of one run: Spotter (spawned or given), then the reference.
struct Targets {
    common: Common,
}

impl Targets {
    fn spawn_opts(&self) -> Result<SpawnOptions, String> {
        let mut env = Vec::new();
        for kv in &self.common.server_env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--server-env {kv}: expected KEY=VALUE"))?;
            env.push((k.to_string(), v.to_string()));
        }
        Ok(SpawnOptions {
            env,
            rust_log: self.common.server_log.clone(),
        })
    }

    fn spotter(&self) -> Result<Target, String> {
        let opts = self.spawn_opts()?;
        check_instances(
            self.common.spawn.is_some(),
            self.common.spawn_instances,
            &opts.env,
        )?;
        if let Some(bin) = &self.common.spawn {
            return Target::spawn_many(Flavor::Spotter, bin, &opts, self.common.spawn_instances);
        }
        if self.common.url.is_empty() {
            return Err("give --spawn PATH_TO_SPOTTER or --url URL".into());
        }
        let password = self
            .common
            .admin_password
            .clone()
            .or_else(|| std::env::var("SPOTTER_ADMIN_PASSWORD").ok())
            .ok_or("with --url, give --admin-password (or SPOTTER_ADMIN_PASSWORD)")?;
        Ok(Target::existing(
            Flavor::Spotter,
            self.common.url.clone(),
            self.common.server_pid.clone(),
            password,
        ))
    }

    fn reference(&self, flavor: Flavor) -> Result<Target, String> {
        let (given, name) = match flavor {
            Flavor::Lean => (&self.common.lean, "spotter-lean"),
            _ => (&self.common.reference, "spotter-reference"),
        };
        let bin = match given {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name(name),
        };
        Target::spawn(flavor, &bin, &self.spawn_opts()?)
    }

    /// The references that run after Spotter (none without --compare).
    fn references(&self) -> Vec<Flavor> {
        if !self.common.compare {
            return Vec::new();
        }
        match self.common.compare_with.as_str() {
            "same" => vec![Flavor::Reference],
            "lean" => vec![Flavor::Lean],
            _ => vec![Flavor::Reference, Flavor::Lean],
        }
    }

    /// Runs `f` against Spotter, then (with --compare) against each reference in turn,
    /// never two servers at once; with `--rounds N`, N such rounds, and each target's
    /// reports are the medians over its rounds ([`report::combine_rounds`]).
    fn each(
        &self,
        mut f: impl FnMut(&mut Target) -> Result<Vec<Report>, String>,
    ) -> Result<Vec<Vec<Report>>, String> {
        let rounds = self.common.rounds.max(1);
        let flavors = self.references();
        // rounds_of[target][round] = that round's phases.
        let mut rounds_of: Vec<Vec<Vec<Report>>> = vec![Vec::new(); flavors.len() + 1];
        for round in 0..rounds {
            if rounds > 1 {
                eprintln!("round {} of {rounds}", round + 1);
            }
            rounds_of[0].push(f(&mut self.spotter()?)?);
            for (i, flavor) in flavors.iter().enumerate() {
                rounds_of[i + 1].push(f(&mut self.reference(*flavor)?)?);
            }
        }
        Ok(rounds_of
            .into_iter()
            .map(|r| report::combine_rounds(&r))
            .collect())
    }
}

/// `--spawn-instances N`: with --spawn only, and N > 1 only with a shared PostgreSQL
/// database and Redis in the servers' environment (without Redis two instances would not
/// see each other's messages, and the run would only count losses).
fn check_instances(spawn: bool, n: usize, env: &[(String, String)]) -> Result<(), String> {
    if n == 0 {
        return Err("--spawn-instances must be at least 1".into());
    }
    if n == 1 {
        return Ok(());
    }
    if !spawn {
        return Err(
            "--spawn-instances needs --spawn PATH (for running instances, give --url once per instance)"
                .into(),
        );
    }
    let get = |key: &str| {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let shared_db = get("SPOTTER_DATABASE_URL")
        .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"));
    let redis = get("SPOTTER_REDIS_URL").is_some_and(|u| !u.trim().is_empty());
    if !shared_db || !redis {
        return Err(format!(
            "--spawn-instances {n} needs a shared database and Redis: add \
             --server-env SPOTTER_DATABASE_URL=postgres://… --server-env SPOTTER_REDIS_URL=redis://…"
        ));
    }
    Ok(())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Prints the phases of a scenario: one table per phase, targets side by side.
fn print_all(runs: &[Vec<Report>]) -> Vec<Report> {
    let phases = runs.iter().map(Vec::len).max().unwrap_or(0);
    let mut all = Vec::new();
    for i in 0..phases {
        let row: Vec<&Report> = runs.iter().filter_map(|r| r.get(i)).collect();
        if let Some(first) = row.first() {
            let mode = first
                .params
                .get("mode")
                .and_then(Value::as_str)
                .unwrap_or("");
            report::print(&format!("{} {mode}", first.scenario), &row);
        }
        all.extend(row.into_iter().cloned());
    }
    all
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(str::to_string))
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory": mem,
        "loadavg_at_start": load.trim(),
    })
}

#[allow(clippy::too_many_arguments)]
fn fanout_spec(
    common: &Common,
    rooms: usize,
    sockets: usize,
    publishers: usize,
    rate: f64,
    window: usize,
    duration: u64,
    content_bytes: usize,
) -> rooms::RoomsSpec {
    rooms::RoomsSpec {
        rooms,
        sockets_per_room: sockets.max(2),
        publishers_per_room: publishers.clamp(1, sockets.max(2)),
        rate,
        window: window.max(1),
        duration: secs(duration),
        threads: common.threads,
        source_addrs: common.source_addrs,
        content_bytes,
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let started = machine();
    let (common, reports) = match cli.command {
        Command::Fanout {
            common,
            rooms,
            sockets,
            publishers,
            rate,
            window,
            duration,
            content_bytes,
            then_fraction,
            per_publisher_rates,
            two_way,
        } => {
            let publishers = if two_way {
                publishers.max(2)
            } else {
                publishers
            };
            let targets = Targets {
                common: common.clone(),
            };
            let spec = fanout_spec(
                &common,
                rooms,
                sockets,
                publishers,
                rate,
                window,
                duration,
                content_bytes,
            );
            // The fixed rate of the second phase comes from Spotter's peak, and the
            // reference then runs at that same rate.
            let mut fixed: Option<f64> = None;
            let runs = targets.each(|t| {
                let first = rooms::run(t, &spec, "fanout")?;
                let mut out = vec![first];
                if spec.rate == 0.0 && then_fraction > 0.0 {
                    let peak = out[0].get("acks_per_s").unwrap_or(0.0);
                    let r = *fixed.get_or_insert((peak * then_fraction).max(1.0));
                    let mut s2 = spec.clone();
                    s2.rate = r.round();
                    out.push(rooms::run(t, &s2, "fanout")?);
                }
                for r in &per_publisher_rates {
                    let mut s3 = spec.clone();
                    s3.rate = r * (s3.rooms * s3.publishers_per_room) as f64;
                    out.push(rooms::run(t, &s3, "fanout")?);
                }
                Ok(out)
            })?;
            (common, print_all(&runs))
        }
        Command::Idle {
            common,
            sockets,
            users,
            hold,
            join,
        } => {
            let targets = Targets {
                common: common.clone(),
            };
            let spec = idle::IdleSpec {
                sockets,
                users,
                hold: secs(hold),
                threads: common.threads,
                source_addrs: common.source_addrs,
                join,
            };
            let runs = targets.each(|t| Ok(vec![idle::run(t, &spec)?]))?;
            (common, print_all(&runs))
        }
        Command::Rest {
            common,
            logins,
            settle,
        } => {
            let targets = Targets {
                common: common.clone(),
            };
            let runs = targets.each(|t| Ok(vec![rest(t, logins, secs(settle))?]))?;
            (common, print_all(&runs))
        }
        Command::Heartbeat {
            common,
            rate,
            connections,
            users,
            duration,
            body,
        } => {
            let targets = Targets {
                common: common.clone(),
            };
            let shape = HeartbeatShape {
                rate,
                connections,
                users,
                duration,
                json_body: body == "json",
            };
            let runs = targets.each(|t| heartbeat_phases(t, &common, &shape))?;
            (common, print_all(&runs))
        }
        Command::ChatStore {
            common,
            conversations,
            rate,
            window,
            duration,
            no_max,
        } => {
            let targets = Targets {
                common: common.clone(),
            };
            let runs = targets.each(|t| {
                chat_store_phases(t, &common, conversations, rate, window, duration, !no_max)
            })?;
            (common, print_all(&runs))
        }
        Command::Soak {
            common,
            duration,
            pairs,
            rate,
            reconnect_every,
            sample_every,
        } => {
            let targets = Targets {
                common: common.clone(),
            };
            let spec = soak::SoakSpec {
                duration: secs(duration),
                pairs: pairs.max(1),
                rate,
                reconnect_every: secs(reconnect_every.max(1)),
                sample_every: secs(sample_every.max(1)),
            };
            let mut target = targets.spotter()?;
            let (report, samples) = soak::run(&mut target, &spec)?;
            soak::report_samples(&samples);
            println!("\nsoak: ok");
            (common, print_all(&[vec![report]]))
        }
        Command::Smoke { common, skip_chat } => {
            let reports = smoke(&common, skip_chat)?;
            (common, reports)
        }
    };
    if let Some(path) = &common.json {
        let doc = json!({
            "machine": started,
            "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
            "reports": reports.iter().map(Report::to_json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }
    Ok(())
}

/// What the heartbeat scenario sends.
struct HeartbeatShape {
    rate: f64,
    connections: usize,
    users: usize,
    duration: u64,
    json_body: bool,
}

fn heartbeat_phases(
    t: &mut Target,
    common: &Common,
    shape: &HeartbeatShape,
) -> Result<Vec<Report>, String> {
    let mut out = Vec::new();
    let mut spec = heartbeat::HeartbeatSpec {
        rate: shape.rate,
        connections: shape.connections.max(1),
        duration: secs(shape.duration),
        threads: common.threads,
        json_body: shape.json_body,
    };
    let tokens = client::member_tokens(t, shape.users)?;
    if shape.rate > 0.0 {
        out.push(heartbeat::run(t, &spec, &tokens)?);
    }
    if shape.connections > 0 {
        spec.rate = 0.0;
        out.push(heartbeat::run(t, &spec, &tokens)?);
    }
    Ok(out)
}

fn chat_store_phases(
    t: &mut Target,
    common: &Common,
    conversations: usize,
    rate: f64,
    window: usize,
    duration: u64,
    max: bool,
) -> Result<Vec<Report>, String> {
    let mut spec = fanout_spec(common, conversations, 2, 1, 0.0, window, duration, 64);
    let mut out = Vec::new();
    if max {
        out.push(rooms::run(t, &spec, "chat-store")?);
    }
    if rate > 0.0 {
        spec.rate = rate;
        out.push(rooms::run(t, &spec, "chat-store")?);
    }
    Ok(out)
}

/// Memory at rest: RSS at start, after `logins` users are created and logged in, and
/// `settle` later.
fn rest(t: &mut Target, logins: usize, settle: Duration) -> Result<Report, String> {
    // Let a freshly started server finish starting.
    std::thread::sleep(Duration::from_secs(1));
    let rss0 = t.rss();
    let start = std::time::Instant::now();
    let tokens = client::member_tokens(t, logins)?;
    let login_secs = start.elapsed().as_secs_f64();
    let rss1 = t.rss();
    std::thread::sleep(settle);
    let rss2 = t.rss();
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut report = Report::new("rest", &t.label());
    report.param("mode", json!(format!("{logins} logins, then {settle:?}")));
    report.metric("logins", tokens.len() as f64, "");
    report.metric("login_time_s", login_secs, "s");
    report.metric("server_rss_start_mb", mib(rss0), "MiB");
    report.metric("server_rss_after_logins_mb", mib(rss1), "MiB");
    report.metric("server_rss_at_rest_mb", mib(rss2), "MiB");
    Ok(report)
}

/// Every scenario, tiny and short. Lost chat messages fail: they mean a bug, not load.
fn smoke(common: &Common, skip_chat: bool) -> Result<Vec<Report>, String> {
    let targets = Targets {
        common: common.clone(),
    };
    let mut all = Vec::new();
    let mut failures = Vec::new();
    let mut target = targets.spotter()?;
    let mut hb = Vec::new();
    for json_body in [true, false] {
        let shape = HeartbeatShape {
            rate: 100.0,
            connections: 4,
            users: 2,
            duration: 2,
            json_body,
        };
        hb.extend(heartbeat_phases(&mut target, common, &shape)?);
    }
    let idle = idle::run(
        &mut target,
        &idle::IdleSpec {
            sockets: 20,
            users: 2,
            hold: secs(2),
            threads: common.threads,
            source_addrs: common.source_addrs,
            join: true,
        },
    )?;
    if idle.get("held") != idle.get("sockets_requested") {
        println!("smoke: idle held fewer sockets than opened (reported, not a failure)");
    }
    let mut runs = vec![hb, vec![idle]];
    if skip_chat {
        println!("smoke: chat scenarios skipped (--skip-chat)");
    } else {
        let spec = fanout_spec(common, 2, 4, 1, 50.0, 8, 2, 64);
        let fan = rooms::run(&mut target, &spec, "fanout")?;
        let store = chat_store_phases(&mut target, common, 4, 50.0, 8, 2, true)?;
        for r in std::iter::once(&fan).chain(store.iter()) {
            let lost = r.get("lost").unwrap_or(0.0);
            if lost > 0.0 {
                failures.push(format!("{}: {lost} chat message(s) lost", r.scenario));
            }
            if r.get("acked").unwrap_or(0.0) == 0.0 {
                failures.push(format!("{}: no message was acked", r.scenario));
            }
        }
        runs.push(vec![fan]);
        runs.push(store);
    }
    for r in runs {
        all.extend(print_all(&[r]));
    }
    if failures.is_empty() {
        println!("\nsmoke: ok");
        Ok(all)
    } else {
        Err(format!("smoke failed: {}", failures.join("; ")))
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    server::raise_nofile();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spotter-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn one_instance_needs_nothing_shared() {
        assert!(check_instances(true, 1, &[]).is_ok());
        assert!(check_instances(false, 1, &[]).is_ok());
        assert!(check_instances(true, 0, &[]).is_err());
    }

    #[test]
    fn several_instances_need_spawn_postgres_and_redis() {
        let pg = (
            "SPOTTER_DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/bench",
        );
        let redis = ("SPOTTER_REDIS_URL", "redis://127.0.0.1:6379");
        assert!(check_instances(true, 2, &env(&[pg, redis])).is_ok());
        assert!(check_instances(false, 2, &env(&[pg, redis])).is_err());
        assert!(check_instances(true, 2, &env(&[pg])).is_err());
        assert!(check_instances(true, 2, &env(&[redis])).is_err());
        let sqlite = ("SPOTTER_DATABASE_URL", "sqlite:///tmp/x.db");
        assert!(check_instances(true, 2, &env(&[sqlite, redis])).is_err());
        // The last value given wins, as in the spawned servers' environment.
        assert!(check_instances(true, 2, &env(&[pg, sqlite, redis])).is_err());
        assert!(check_instances(true, 2, &env(&[sqlite, pg, redis])).is_ok());
    }

    #[test]
    fn the_two_instance_command_parses() {
        let cli = Cli::try_parse_from([
            "spotter-bench",
            "fanout",
            "--spawn",
            "target/release/spotter",
            "--spawn-instances",
            "2",
            "--server-env",
            "SPOTTER_DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench",
            "--server-env",
            "SPOTTER_REDIS_URL=redis://127.0.0.1:6379",
        ])
        .unwrap();
        let Command::Fanout { common, .. } = cli.command else {
            panic!("not fanout");
        };
        assert_eq!(common.spawn_instances, 2);
        let t = Targets { common };
        let opts = t.spawn_opts().unwrap();
        assert!(check_instances(true, 2, &opts.env).is_ok());
        // --target is --url.
        let cli = Cli::try_parse_from([
            "spotter-bench",
            "fanout",
            "--target",
            "http://10.0.0.1:8080",
            "--target",
            "http://10.0.0.2:8080",
        ])
        .unwrap();
        let Command::Fanout { common, .. } = cli.command else {
            panic!("not fanout");
        };
        assert_eq!(common.url.len(), 2);
        assert_eq!(common.spawn_instances, 1);
    }
}
