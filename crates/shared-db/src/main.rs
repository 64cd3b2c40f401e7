//! `shared-db`: the operator binary.

use clap::{Parser, Subcommand};

use shared_db::cluster_cli::ClusterCommand;
use shared_db::config::ServeArgs;
use shared_db::dev_cluster::DevClusterArgs;
use shared_db::node::Node;

#[derive(Parser)]
#[command(
    name = "shared-db",
    version,
    about = "Replicated MySQL-compatible database operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node: the MySQL protocol on EXT_DB_PORT (3307), `/status` on UI_PORT (8008) and
    /// the internal cluster API on API_PORT (7071).
    Serve(Box<ServeArgs>),
    /// Operate a running cluster through its internal API.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Start a local cluster: N `shared-db serve` processes, each with its own engine.
    DevCluster(DevClusterArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let workers = match &cli.command {
        Command::Serve(args) => args.worker_threads.unwrap_or_else(default_workers),
        _ => 1,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shared-db: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Cluster(cmd) => report(runtime.block_on(shared_db::cluster_cli::run(cmd))),
        Command::DevCluster(args) => report(runtime.block_on(shared_db::dev_cluster::run(args))),
    }
}

fn report(r: Result<(), String>) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shared-db: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Half the cores, at least one: the engine runs on the same machine and needs the rest. On a
/// loopback-heavy 2-core box one worker also avoids cross-thread wake-ups that cost more CPU
/// per query than they save.
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| (n.get() / 2).max(1))
        .unwrap_or(1)
}

async fn serve(args: ServeArgs) -> std::process::ExitCode {
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shared-db: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let user = config.db_user.clone();
    let node = match Node::start(config).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("shared-db: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let port = node.mysql_addr.port();
    println!("shared-db is ready. Connect with:");
    println!("  mysql -h 127.0.0.1 -P {port} -u {user} -p");
    if let Some(file) = &node.password_file {
        println!(
            "  (password: DB_INIT_PASS was not set; the generated one is in {})",
            file.display()
        );
    }
    println!("Status: http://127.0.0.1:{}/status", node.http_addr.port());
    if let (Some(api), Some(cluster)) = (node.api_addr, &node.state.cluster) {
        println!(
            "Cluster: node {} with internal API on {api}",
            shared_db::cluster::contract::ReplicatedLog::node_id(&**cluster)
        );
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
