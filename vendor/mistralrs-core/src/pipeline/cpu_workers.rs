//! graft: where a model's forward runs on a CPU.
//!
//! Every matmul and attention kernel of a forward is a rayon parallel loop, hundreds per token.
//! Called from the engine's own thread, each loop was handed to rayon's pool and waited for
//! (the caller sleeping on a latch, woken when the pool was done), and between loops the
//! pool's threads fell asleep after a few microseconds without work and had to be woken for
//! the next one: two sleeps and wake-ups per kernel. Now the forward runs on one of the pool's
//! threads, and the pool's other threads stay awake until it ends, taking their share of each
//! loop as soon as it starts: the way llama.cpp's thread pool spins between the operations of
//! a token. The kernels and their order are the same, so are the results.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::Device;

/// How long a helper waits for work before it gives up its thread (a forward that has stopped
/// starting parallel loops, or one that runs on another pool).
const MAX_IDLE: Duration = Duration::from_millis(2);

/// Runs `forward` on one of rayon's worker threads, the others kept busy with its parallel
/// loops until it ends, when `device` is the CPU and this thread is not a worker already;
/// elsewhere runs it here.
pub(crate) fn on_cpu_workers<R: Send>(device: &Device, forward: impl FnOnce() -> R + Send) -> R {
    if !device.is_cpu() || rayon::current_thread_index().is_some() {
        return forward();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            s.spawn(move |_| help_until(done, owner));
        }
        let out = forward();
        done.store(true, Ordering::Release);
        out
    })
}

/// Runs the pool's pending work (the forward's parallel loops) until `done`, or until no work
/// came for [`MAX_IDLE`]. The forward's own thread (`owner`), should it pick this up while
/// waiting inside a loop, returns at once: it must get back to the forward.
fn help_until(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner {
        return;
    }
    let mut idle_since: Option<Instant> = None;
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => idle_since = None,
            _ => {
                if idle_since.get_or_insert_with(Instant::now).elapsed() > MAX_IDLE {
                    return;
                }
                std::hint::spin_loop();
            }
        }
    }
}
