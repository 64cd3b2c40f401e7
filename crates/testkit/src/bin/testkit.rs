//! `testkit`: starts throwaway servers for tests written outside Rust (Python, shell).
//!
//! ```text
//! testkit [--mariadb N] [--mariadb-arg ARG]... [--etcd N]
//! ```
//! `--mariadb-arg` passes an extra argument to every `mariadbd` (e.g. `--max-allowed-packet=64M`).
//! Starts the servers, prints one JSON line `{"mariadb": [...], "etcd": [...]}` with their
//! connection details, then keeps them running until standard input closes or the process gets
//! SIGINT/SIGTERM, and tears everything down.

use std::io::Read;
use std::process::ExitCode;

use testkit::{Etcd, MariaDb, MariaDbOptions};

fn usage() -> ExitCode {
    eprintln!("usage: testkit [--mariadb N] [--mariadb-arg ARG]... [--etcd N]");
    ExitCode::from(2)
}

fn parse_count(v: Option<String>) -> Option<usize> {
    v.and_then(|s| s.parse().ok())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut n_maria, mut n_etcd) = (0usize, 0usize);
    let mut maria_opts = MariaDbOptions::default();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mariadb" => match parse_count(args.next()) {
                Some(n) => n_maria = n,
                None => return usage(),
            },
            "--mariadb-arg" => match args.next() {
                Some(a) => maria_opts.extra_args.push(a),
                None => return usage(),
            },
            "--etcd" => match parse_count(args.next()) {
                Some(n) => n_etcd = n,
                None => return usage(),
            },
            _ => return usage(),
        }
    }

    // Block SIGINT/SIGTERM here so that they can be awaited below instead of killing us before
    // the servers are torn down. Children inherit the mask, so undo it for them at exec time
    // (Command resets the signal mask for children on Linux).
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain sigset manipulation on a local value.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }

    let mut maria = Vec::new();
    for _ in 0..n_maria {
        match MariaDb::start_with(maria_opts.clone()) {
            Ok(db) => maria.push(db),
            Err(e) => {
                eprintln!("testkit: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut etcd = Vec::new();
    for _ in 0..n_etcd {
        match Etcd::start() {
            Ok(e) => etcd.push(e),
            Err(e) => {
                eprintln!("testkit: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let info = serde_json::json!({
        "mariadb": maria.iter().map(MariaDb::info).collect::<Vec<_>>(),
        "etcd": etcd.iter().map(Etcd::info).collect::<Vec<_>>(),
    });
    println!("{info}");

    // Wait for stdin EOF on a helper thread, or a signal on this one.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let stdin_tx = tx.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = stdin_tx.send(());
    });
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: sigwait on the mask blocked above.
        unsafe { libc::sigwait(&set, &mut sig) };
        let _ = tx.send(());
    });
    let _ = rx.recv();
    drop(etcd);
    drop(maria);
    ExitCode::SUCCESS
}
