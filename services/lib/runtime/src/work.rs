//! Bounded work: work whose cost a client chooses (password hashing, search) runs a fixed number at a
//! time; a call that finds every slot taken waits a short while for one and is then refused, so a burst
//! costs a bounded amount of CPU and memory instead of a thread and a hash's memory per request.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, mpsc};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Why bounded work did not produce its result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkError {
    /// Every slot stayed taken for the whole wait: the caller should answer "busy, retry shortly"
    /// (gRPC RESOURCE_EXHAUSTED).
    #[error("too much {0} at once")]
    Busy(&'static str),
    /// Blocking work panicked or was cancelled with the runtime.
    #[error("{0} failed: {1}")]
    Failed(&'static str, String),
}

/// At most `slots` pieces of one kind of work at a time, callers waiting up to `wait` for a slot.
/// Clones share the slots.
#[derive(Debug, Clone)]
pub struct WorkLimit {
    what: &'static str,
    size: usize,
    slots: Arc<Semaphore>,
    wait: Duration,
    /// The threads of `run_blocking`, started on its first use.
    threads: Arc<OnceLock<Threads>>,
}

type Job = Box<dyn FnOnce() + Send>;

/// One thread per slot, for the life of the limit (they end when its last clone is dropped).
///
/// Why not `spawn_blocking`: tokio hands each blocking job to whichever of its (up to 512) blocking
/// threads is idle, so over time every one of them runs a hash, and an allocator with per-thread
/// arenas or caches (glibc's above all) keeps a hash's 19 MiB around for each. With `slots` threads of
/// its own the work's memory is bounded by `slots`, whatever the allocator.
#[derive(Debug)]
struct Threads {
    jobs: mpsc::Sender<Job>,
}

impl Threads {
    fn start(what: &'static str, n: usize) -> Threads {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..n {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new().name(format!("{what} {i}")).spawn(move || {
                loop {
                    let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    match job {
                        Ok(job) => job(),
                        // Every sender is gone: the limit was dropped.
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(work = what, error = %e, "cannot start a worker thread");
            }
        }
        Threads { jobs }
    }
}

/// The number of CPUs this process may use (its cgroup quota included), at least 1.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl WorkLimit {
    /// `what` names the work in errors, logs and the `mall_work_refused_total` metric. `slots` of 0
    /// counts as 1.
    pub fn new(what: &'static str, slots: usize, wait: Duration) -> WorkLimit {
        let size = slots.max(1);
        WorkLimit {
            what,
            size,
            slots: Arc::new(Semaphore::new(size)),
            wait,
            threads: Arc::new(OnceLock::new()),
        }
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }

    async fn slot(&self) -> Result<OwnedSemaphorePermit, WorkError> {
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; either way there is no slot to be had.
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(work = self.what, wait_ms = self.wait.as_millis() as u64, "busy: refused");
                metrics::counter!("mall_work_refused_total", "work" => self.what).increment(1);
                Err(WorkError::Busy(self.what))
            }
        }
    }

    /// Runs `work` in a slot (an async job such as a database search). Dropping the returned future
    /// drops `work` and frees the slot.
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, WorkError> {
        let _slot = self.slot().await?;
        Ok(work.await)
    }

    /// Runs CPU-heavy `work` on the limit's own threads (one per slot), in a slot. The slot goes with
    /// the work, not with the caller: a caller that gives up does not free it before the work has
    /// finished, so the number of jobs running never exceeds the slots.
    pub async fn run_blocking<T, F>(&self, work: F) -> Result<T, WorkError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let slot = self.slot().await?;
        let threads = self.threads.get_or_init(|| Threads::start(self.what, self.size));
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(work));
            drop(slot);
            let _ = done.send(result);
        });
        let failed = |why: &str| WorkError::Failed(self.what, why.to_owned());
        threads.jobs.send(job).map_err(|_| failed("no worker thread"))?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_panic)) => Err(failed("the work panicked")),
            Err(_) => Err(failed("no worker thread")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Occupies one slot of `limit` with blocking work until the returned sender is dropped or sent
    /// to; returns once the work is running.
    async fn occupy(limit: &WorkLimit) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, is_started) = tokio::sync::oneshot::channel();
        let limit = limit.clone();
        let task = tokio::spawn(async move {
            limit
                .run_blocking(move || {
                    started.send(()).unwrap();
                    let _ = released.recv();
                })
                .await
                .unwrap();
        });
        is_started.await.unwrap();
        (release, task)
    }

    #[tokio::test]
    async fn a_call_that_finds_every_slot_taken_is_refused_after_its_wait() {
        let limit = WorkLimit::new("hashing", 1, Duration::from_millis(10));
        let (release, task) = occupy(&limit).await;
        assert_eq!(limit.available(), 0);
        assert_eq!(limit.run_blocking(|| 1).await, Err(WorkError::Busy("hashing")));
        assert_eq!(limit.run(async { 1 }).await, Err(WorkError::Busy("hashing")));
        assert_eq!(WorkError::Busy("hashing").to_string(), "too much hashing at once");

        release.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(limit.run_blocking(|| 2).await, Ok(2));
        assert_eq!(limit.run(async { 3 }).await, Ok(3));
        assert_eq!(limit.available(), 1);
    }

    #[tokio::test]
    async fn waiting_callers_get_the_slot_when_it_frees() {
        let limit = WorkLimit::new("search", 1, Duration::from_secs(600));
        let (release, task) = occupy(&limit).await;
        let waiting: Vec<_> = (0..3)
            .map(|i| {
                tokio::spawn({
                    let l = limit.clone();
                    async move { l.run(async move { i }).await }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        task.await.unwrap();
        for (i, w) in waiting.into_iter().enumerate() {
            assert_eq!(w.await.unwrap(), Ok(i));
        }
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_does_not_free_the_slot_of_running_work() {
        let limit = WorkLimit::new("hashing", 1, Duration::from_millis(10));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (started, is_started) = tokio::sync::oneshot::channel();
        let call = tokio::spawn({
            let limit = limit.clone();
            async move {
                limit
                    .run_blocking(move || {
                        started.send(()).unwrap();
                        let _ = released.recv();
                    })
                    .await
            }
        });
        is_started.await.unwrap();
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        assert_eq!(limit.available(), 0, "the work still runs, so its slot is still taken");
        assert_eq!(limit.run(async {}).await, Err(WorkError::Busy("hashing")));
        release.send(()).unwrap();
        // The blocking job frees its slot as it ends; a generous wait picks it up.
        let patient = WorkLimit { wait: Duration::from_secs(600), ..limit.clone() };
        assert_eq!(patient.run(async { 4 }).await, Ok(4));
    }

    #[tokio::test]
    async fn panicking_work_is_an_error_and_frees_its_slot() {
        let limit = WorkLimit::new("hashing", 1, Duration::from_secs(600));
        let failed = limit.run_blocking(|| -> i32 { panic!("boom") }).await;
        assert!(matches!(failed, Err(WorkError::Failed("hashing", _))), "{failed:?}");
        assert_eq!(limit.run_blocking(|| 5).await, Ok(5));
    }
}
