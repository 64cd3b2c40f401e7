//! The process-wide tokio runtime, safe across `fork()`.
//!
//! A forked child inherits the parent's memory but none of its threads, so the inherited
//! runtime is dead. [`after_fork_in_child`] abandons it (leaked on purpose: dropping it would
//! join threads that do not exist and deregister sockets from an epoll instance the parent still
//! shares) and bumps the fork epoch; the next call builds a fresh runtime. Objects that hold
//! connections compare their epoch and reconnect lazily.

use std::future::Future;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

struct Slot {
    runtime: OnceLock<Runtime>,
}

static SLOT: AtomicPtr<Slot> = AtomicPtr::new(std::ptr::null_mut());
static EPOCH: AtomicU64 = AtomicU64::new(0);

fn slot() -> &'static Slot {
    let current = SLOT.load(Ordering::Acquire);
    if !current.is_null() {
        // SAFETY: slots are leaked boxes, never freed.
        return unsafe { &*current };
    }
    let fresh = Box::into_raw(Box::new(Slot {
        runtime: OnceLock::new(),
    }));
    match SLOT.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: `fresh` was just leaked and is now published.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: `fresh` was never published; reclaim it. `winner` is a leaked box.
            unsafe {
                drop(Box::from_raw(fresh));
                &*winner
            }
        }
    }
}

/// The runtime of the current process (built on first use).
pub fn handle() -> Handle {
    slot()
        .runtime
        .get_or_init(|| {
            let threads = std::env::var("FLUXON_CLIENT_THREADS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|n| *n > 0)
                .unwrap_or(2);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("fluxon-client")
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot start the fluxon client runtime: {e}"))
        })
        .handle()
        .clone()
}

/// Runs `future` to completion on the runtime from a non-runtime thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    handle().block_on(future)
}

/// How many forks this process has gone through (changes in the child after a fork).
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Call in the child right after `fork()`: abandons the inherited runtime.
pub fn after_fork_in_child() {
    let fresh = Box::into_raw(Box::new(Slot {
        runtime: OnceLock::new(),
    }));
    // The old slot (and its runtime) is leaked deliberately, see the module docs.
    SLOT.store(fresh, Ordering::Release);
    EPOCH.fetch_add(1, Ordering::AcqRel);
}
