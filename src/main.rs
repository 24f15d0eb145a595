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
    /// Load a small demo gym and print its logins.
    Demo,
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
        Command::Demo => spotter::app::cli_demo(&config)
            .map(|logins| {
                println!("Demo gym loaded. Logins (username / password / role):");
                for (u, p, r) in logins {
                    println!("  {u:<20} {p:<22} {r}");
                }
                println!("  admin: the password from SPOTTER_ADMIN_PASSWORD, or the one printed at first start");
            })
            .map_err(|e| e.to_string()),
    };
    if let Err(e) = result {
        eprintln!("spotter: {e}");
        std::process::exit(1);
    }
}
