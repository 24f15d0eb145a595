//! The `spotter` binary: configuration, logging, then the chosen subcommand.

use clap::{Parser, Subcommand};

use spotter::config::Config;
use spotter::domain::users::CreateUser;

#[derive(Parser)]
#[command(name = "spotter", version, about = "Realtime server for gyms")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run migrations, then serve HTTP and WebSocket (the default).
    Serve,
    /// Run pending migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Load a demo gym (a day of check-ins, attendance, chats) and print its logins;
    /// with --live, drive a running server through its API instead.
    Demo {
        /// Drive a running server (check-ins, heartbeats, attendance, messages).
        #[arg(long)]
        live: bool,
        /// The server to drive (default: http:// + SPOTTER_BIND).
        #[arg(long)]
        url: Option<String>,
        /// Seconds between two actions.
        #[arg(long, default_value_t = 2.0)]
        pace: f64,
        /// Stop after this many seconds (default: run until stopped).
        #[arg(long = "for")]
        run_for: Option<f64>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print it as JSON.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        role: String,
        #[arg(long = "display-name")]
        display_name: Option<String>,
    },
}

/// A positive number of seconds from the command line, or exit with a clear line.
fn seconds(flag: &str, value: f64) -> std::time::Duration {
    if !(value.is_finite() && value > 0.0 && value < 86_400.0) {
        eprintln!("spotter: {flag} must be a number of seconds above 0, got {value}");
        std::process::exit(2);
    }
    std::time::Duration::from_secs_f64(value)
}

fn main() {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spotter: {e}");
            std::process::exit(2);
        }
    };
    let result: Result<(), String> = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => actix_web::rt::System::new()
            .block_on(spotter::app::serve(config))
            .map_err(|e| e.to_string()),
        Command::Migrate => spotter::app::open_db(&config)
            .map(|_| log::info!("migrations are up to date"))
            .map_err(|e| e.to_string()),
        Command::User { command: UserCommand::Create { username, password, role, display_name } } => {
            let req = CreateUser { username, password, role, display_name };
            spotter::app::cli_create_user(&config, req)
                .map(|user| println!("{}", serde_json::to_string(&user).unwrap_or_default()))
                .map_err(|e| format!("{} ({})", e, e.code()))
        }
        Command::Demo { live: true, url, pace, run_for } => {
            let pace = seconds("--pace", pace);
            let run_for = run_for.map(|s| seconds("--for", s));
            let url = url.unwrap_or_else(|| format!("http://{}", config.bind));
            actix_web::rt::System::new().block_on(spotter::demo::live::run(
                spotter::demo::live::LiveOptions { url, pace, run_for },
            ))
        }
        Command::Demo { live: false, .. } => spotter::app::cli_demo(&config)
            .map(|logins| {
                println!("Demo gym loaded. Logins (username / password / role):");
                for l in logins {
                    println!("  {:<20} {:<22} {:<8} {}", l.username, l.password, l.role, l.note);
                }
                println!("  admin: the password from SPOTTER_ADMIN_PASSWORD, or the one printed at first start");
                println!("Next: `spotter serve`, open /admin/ and /chat/; `spotter demo --live` makes the gym move.");
            })
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        eprintln!("spotter: {e}");
        std::process::exit(1);
    }
}
