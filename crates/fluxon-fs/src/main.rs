//! The `fluxon-fs` binary: `master`, `agent` and `up` subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fluxon_fs::config::{AgentConfig, ConfigFile, MasterConfig};

#[derive(Parser)]
#[command(
    name = "fluxon-fs",
    about = "fluxon-fs: remote directory exports for Python processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the master (control plane): access DB, logins, export registry.
    Master {
        /// Master config file (YAML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Run an agent that serves the exports in its config.
    Agent {
        /// Agent config file (YAML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Start a master and an agent exporting WORKDIR/remote_root on this machine.
    Up(fluxon_fs::up::UpArgs),
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fluxon-fs: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Master { config } => run_master(config).await,
            Command::Agent { config } => run_agent(config).await,
            Command::Up(args) => fluxon_fs::up::run(args).await.map_err(|e| e.to_string()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("fluxon-fs: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run_master(path: PathBuf) -> Result<(), String> {
    let config = MasterConfig::load(&path).map_err(|e| e.to_string())?;
    let master = fluxon_fs::master::start(config)
        .await
        .map_err(|e| e.to_string())?;
    println!("fluxon-fs master listening on {}", master.addr);
    fluxon_fs::up::wait_for_shutdown().await;
    Ok(())
}

async fn run_agent(path: PathBuf) -> Result<(), String> {
    let config = AgentConfig::load(&path).map_err(|e| e.to_string())?;
    let agent = fluxon_fs::agent::start(&config)
        .await
        .map_err(|e| e.to_string())?;
    println!("fluxon-fs agent listening on {}", agent.addr);
    fluxon_fs::up::wait_for_shutdown().await;
    Ok(())
}

fn init_logging() {
    let filter = std::env::var("FLUXON_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(filter.to_lowercase())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
