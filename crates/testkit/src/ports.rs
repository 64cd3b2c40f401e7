//! Free-port reservation that holds across parallel tests and parallel test processes.
//!
//! A port is picked at random below the kernel's ephemeral range (so outgoing connections never
//! take it), claimed with an exclusive `flock` on a per-port lock file shared by every process on
//! the machine, and checked to be bindable on 127.0.0.1. The claim lasts as long as the
//! [`PortReservation`] lives; the kernel releases the lock if the process dies.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

const FIRST_PORT: u16 = 20_000;
const LAST_PORT: u16 = 32_000;
const ATTEMPTS: usize = 500;

/// A TCP port on 127.0.0.1 that no other harness user will hand out while this value lives.
#[derive(Debug)]
pub struct PortReservation {
    port: u16,
    _lock: File,
}

impl PortReservation {
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("testkit-ports")
}

fn next_candidate() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // xorshift64* scramble so consecutive calls spread over the range.
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    FIRST_PORT + (x % u64::from(LAST_PORT - FIRST_PORT)) as u16
}

/// Reserves a free TCP port on 127.0.0.1.
pub fn reserve_port() -> Result<PortReservation> {
    let dir = lock_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for _ in 0..ATTEMPTS {
        let port = next_candidate();
        let path = dir.join(format!("{port}.lock"));
        let file = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => return Err(Error::io(&path, e)),
        };
        // SAFETY: flock on a valid, owned file descriptor.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(PortReservation { port, _lock: file });
        }
    }
    Err(Error::NoFreePort { attempts: ATTEMPTS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_distinct_and_bindable() {
        let ports: Vec<_> = (0..50).map(|_| reserve_port().unwrap()).collect();
        let mut seen: Vec<u16> = ports.iter().map(|p| p.port()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), ports.len(), "a port was handed out twice");
        for p in &ports {
            assert!((FIRST_PORT..LAST_PORT).contains(&p.port()));
            TcpListener::bind(("127.0.0.1", p.port())).expect("reserved port must be bindable");
        }
    }
}
