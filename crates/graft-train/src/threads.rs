//! The thread a training run computes on. candle's CPU ops and the fused kernels hand their
//! work to rayon's global pool; called from a thread outside it, every op wakes the pool's
//! threads and sleeps until they finish (thousands of times a step), and between ops the
//! pool's threads sleep while the caller works alone. A process whose main thread runs the
//! training makes that thread the pool's first ([`join_global_pool`]): it then takes its
//! share of each op's work itself, and its allocations stay in one place (a step handed to
//! whichever pool thread was free spread them over two of the allocator's arenas, and the
//! peak memory with them).
//!
//! This module only arranges the threads; it must not be called by a process whose main
//! thread does other work while rayon computes (a server: the pool would lose a thread).

/// Makes the calling thread the first of rayon's global pool, with the pool's usual number of
/// threads in all (`RAYON_NUM_THREADS`, else one per core). False when the global pool already
/// exists (something used it first): the run then computes as before, on the pool's threads.
pub fn join_global_pool() -> bool {
    rayon::ThreadPoolBuilder::new().use_current_thread().build_global().is_ok()
}
