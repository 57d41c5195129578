//! Ctrl-C during long CLI work (`graft train`, `graft index`): a flag the work reads between
//! its steps, so that it stops where stopping is safe and says what it kept, instead of being
//! killed mid-step. A second Ctrl-C quits at once, as does any once the work is over (the flag
//! dropped). Never for a server, whose shutdown `serve` handles.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit status of a process ended by Ctrl-C (128 + SIGINT), as shells report it.
const INTERRUPTED: i32 = 130;

/// Set by the first Ctrl-C while it lives ([`stop_on_ctrl_c`]); read it as an [`AtomicBool`].
pub struct StopFlag {
    stop: Arc<AtomicBool>,
    /// Whether the work still reads the flag.
    watched: Arc<AtomicBool>,
}

impl Deref for StopFlag {
    type Target = AtomicBool;

    fn deref(&self) -> &AtomicBool {
        &self.stop
    }
}

impl Drop for StopFlag {
    fn drop(&mut self) {
        self.watched.store(false, Ordering::Relaxed);
    }
}

/// A flag set at the first Ctrl-C (SIGINT), when `said` is printed on stderr.
pub fn stop_on_ctrl_c(said: &'static str) -> StopFlag {
    let (stop, watched) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(true)));
    let (flag, work) = (Arc::clone(&stop), Arc::clone(&watched));
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async {
            // Once the handler is in, SIGINT no longer ends the process by itself.
            while tokio::signal::ctrl_c().await.is_ok() {
                if !work.load(Ordering::Relaxed) || flag.swap(true, Ordering::Relaxed) {
                    std::process::exit(INTERRUPTED);
                }
                eprintln!("\n{said} (Ctrl-C again to quit now)");
            }
        });
    });
    StopFlag { stop, watched }
}
