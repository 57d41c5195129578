//! Admission control for generations: at most `max_concurrent` run at once, at most
//! `max_queue` wait for a slot, and anything beyond that is turned away at once with 429 and
//! `Retry-After`, so a burst cannot pile up unbounded work or memory.
//!
//! A [`Slot`] is held for the whole generation (streamed responses included) and frees its
//! place when dropped. Deadlines for whole requests are [`Deadline`]s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::ApiError;

/// The gate generations pass through.
#[derive(Debug)]
pub struct Gate {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    waiting: AtomicUsize,
    max_queue: usize,
}

/// A generation's place; dropping it lets the next waiting request in.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue is full.
    QueueFull,
    /// The request's deadline passed while it waited.
    TimedOut,
}

impl Gate {
    pub fn new(max_concurrent: usize, max_queue: usize) -> Gate {
        let max_concurrent = max_concurrent.max(1);
        Gate {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            waiting: AtomicUsize::new(0),
            max_queue,
        }
    }

    /// A slot now, or after waiting in the queue until `deadline`.
    pub async fn enter(&self, deadline: Deadline) -> Result<Slot, Refusal> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        // Join the queue only if there is room in it.
        let joined = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_queue).then_some(n + 1));
        if joined.is_err() {
            return Err(Refusal::QueueFull);
        }
        // The place is given back however the wait ends, including when the request's future
        // is dropped mid-wait (the client hung up).
        let _place = QueuePlace(&self.waiting);
        let waited = tokio::time::timeout_at(deadline.0, Arc::clone(&self.slots).acquire_owned()).await;
        match waited {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            // The semaphore is never closed; a timeout is the only way here.
            Ok(Err(_)) | Err(_) => Err(Refusal::TimedOut),
        }
    }

    /// Generations that may run at once (`server.max_concurrent`, resolved).
    pub fn capacity(&self) -> usize {
        self.max_concurrent
    }

    /// Generations running now.
    pub fn in_flight(&self) -> usize {
        self.max_concurrent - self.slots.available_permits()
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A handle that tells how many generations run, for work that gives way to them.
    pub fn running(&self) -> Running {
        Running {
            slots: Arc::clone(&self.slots),
            max_concurrent: self.max_concurrent,
        }
    }
}

/// How many generations a [`Gate`] lets run now, read from anywhere.
#[derive(Debug, Clone)]
pub struct Running {
    slots: Arc<Semaphore>,
    max_concurrent: usize,
}

impl Running {
    /// Generations running now (admitted, streamed ones until their last event).
    pub fn now(&self) -> usize {
        self.max_concurrent.saturating_sub(self.slots.available_permits())
    }

    /// Waits, blocking the thread, until no generation runs, `max` has passed, or `give_up`
    /// says so; returns how long it waited.
    pub fn wait_for_none(&self, max: Duration, give_up: impl Fn() -> bool) -> Duration {
        let started = std::time::Instant::now();
        while self.now() > 0 && started.elapsed() < max && !give_up() {
            std::thread::sleep(Duration::from_millis(10));
        }
        started.elapsed()
    }
}

/// A place in the queue, given back when dropped.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Refusal {
    pub fn into_error(self, timeout: Duration) -> ApiError {
        match self {
            Refusal::QueueFull => ApiError::too_many_requests(
                "The server is at capacity (server.max_concurrent generations running, server.max_queue waiting); retry shortly",
                1,
            ),
            Refusal::TimedOut => ApiError::timeout(timeout),
        }
    }
}

/// When a request must be finished by.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn after(timeout: Duration) -> Deadline {
        Deadline(Instant::now() + timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work that gives way to generations waits while one runs, until it ends, or for `max`
    /// at most, or until it gives up; with none running it goes on at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn giving_way_waits_for_the_generations_running_and_no_longer_than_asked() {
        let gate = Gate::new(2, 4);
        let running = gate.running();
        let far = Deadline::after(Duration::from_secs(60));
        let wait = |max: Duration| {
            let running = running.clone();
            tokio::task::spawn_blocking(move || running.wait_for_none(max, || false))
        };
        assert!(
            wait(Duration::from_secs(60)).await.unwrap() < Duration::from_secs(1),
            "none running"
        );

        let generation = gate.enter(far).await.unwrap();
        assert_eq!(running.now(), 1);
        let waiting = wait(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(generation);
        let waited = waiting.await.unwrap();
        assert!(
            waited >= Duration::from_millis(300),
            "waited until the generation ended: {waited:?}"
        );
        assert!(waited < Duration::from_secs(30), "and then went on: {waited:?}");

        let _steady = gate.enter(far).await.unwrap();
        let waited = wait(Duration::from_millis(200)).await.unwrap();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(30),
            "{waited:?}"
        );
        let gave_up = tokio::task::spawn_blocking(move || running.wait_for_none(Duration::from_secs(60), || true));
        assert!(gave_up.await.unwrap() < Duration::from_secs(30));
    }

    #[tokio::test]
    async fn slots_then_a_bounded_queue_then_refusal() {
        let gate = Arc::new(Gate::new(1, 1));
        let far = Deadline::after(Duration::from_secs(60));
        let first = gate.enter(far).await.unwrap();
        assert_eq!(gate.in_flight(), 1);

        let waiter = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { gate.enter(far).await.map(|_| ()) })
        };
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.enter(far).await.unwrap_err(), Refusal::QueueFull, "the queue holds one");

        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(()), "the waiter gets the freed slot");
        assert_eq!(gate.queued(), 0);
    }

    #[tokio::test]
    async fn a_request_that_waits_past_its_deadline_times_out() {
        let gate = Gate::new(1, 4);
        let _busy = gate.enter(Deadline::after(Duration::from_secs(60))).await.unwrap();
        let soon = Deadline::after(Duration::from_millis(20));
        assert_eq!(gate.enter(soon).await.unwrap_err(), Refusal::TimedOut);
        assert_eq!(gate.queued(), 0, "a request that gave up leaves the queue");
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_gives_its_place_back() {
        let gate = Arc::new(Gate::new(1, 2));
        let far = Deadline::after(Duration::from_secs(60));
        let running = gate.enter(far).await.unwrap();
        // Two clients wait, then hang up (their request futures are dropped mid-wait).
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let gate = Arc::clone(&gate);
                tokio::spawn(async move { gate.enter(far).await.map(|_| ()) })
            })
            .collect();
        while gate.queued() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.enter(far).await.unwrap_err(), Refusal::QueueFull);
        for waiter in waiters {
            waiter.abort();
            assert!(waiter.await.unwrap_err().is_cancelled());
        }
        assert_eq!(gate.queued(), 0, "hung-up waiters leave the queue");

        // The queue takes new waiters again, and they get the slot when it frees.
        let next = {
            let gate = Arc::clone(&gate);
            tokio::spawn(async move { gate.enter(far).await.map(|_| ()) })
        };
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        drop(running);
        assert_eq!(next.await.unwrap(), Ok(()));
        assert_eq!((gate.queued(), gate.in_flight()), (0, 0));
    }
}
