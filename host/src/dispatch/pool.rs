//! The threads plugin calls run on: a fixed set, shared by every binding.
//!
//! A wasm call is synchronous (with an epoch deadline), so it runs off the
//! async workers; but a thread per binding stopped at tokio's 512 blocking
//! threads, and every binding past the 512th waited for ever. Here a
//! binding's worker is an async task that waits for its messages without a
//! thread and hands each batch to the pool as one job; the pool's threads
//! take jobs in the order they were handed in. A binding has at most one job
//! per worker (its `concurrency`) queued or running, so a saturated binding
//! takes its turn behind every other binding with messages waiting: no
//! binding with messages is starved, and a lone message waits only for a
//! free thread.
//!
//! `runtime.workers` sets the number of threads (default: two per core, at
//! least four, so that a handler blocked in a WASI sleep does not hold every
//! thread of a small machine).

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running jobs in the order they arrive.
pub struct Pool {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    size: usize,
}

/// The pool is gone (the gateway is stopping) or the job panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl Pool {
    /// Start `size` threads (`0`: the default for this machine).
    pub fn new(size: usize) -> Arc<Pool> {
        let size = if size == 0 { default_size() } else { size };
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        // Detached: they end once the pool is dropped and the queue is
        // empty, so dropping it never waits for a call in progress.
        for i in 0..size {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("wasmgate-worker-{i}"))
                .spawn(move || worker(&rx))
                .expect("start a worker thread");
        }
        Arc::new(Pool {
            jobs: Mutex::new(Some(tx)),
            size,
        })
    }

    /// Threads in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Run `f` on a pool thread and wait for its result without holding an
    /// async worker.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Gone> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        {
            let jobs = self.jobs.lock().map_err(|_| Gone)?;
            jobs.as_ref().ok_or(Gone)?.send(job).map_err(|_| Gone)?;
        }
        result.await.map_err(|_| Gone)
    }

    /// Stop taking jobs; the threads finish the queued ones and end (as
    /// they do when the pool is dropped).
    #[cfg(test)]
    fn close(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
    }
}

fn worker(jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panicking job loses its result (its caller sees `Gone`), not
        // the thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Two threads per core, at least four.
pub fn default_size() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cores).max(4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_run_on_the_pool_and_return_their_result() {
        let pool = Pool::new(2);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("wasmgate-worker-"));
    }

    #[tokio::test]
    async fn no_more_jobs_run_at_once_than_the_pool_has_threads() {
        let pool = Pool::new(2);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs = (0..8).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            pool.run(move || {
                let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            })
        });
        for r in futures::future::join_all(jobs).await {
            r.unwrap();
        }
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_thread_goes_on() {
        let pool = Pool::new(1);
        let r: Result<(), Gone> = pool.run(|| panic!("a job that panics")).await;
        assert_eq!(r, Err(Gone));
        assert_eq!(
            pool.run(|| 7).await,
            Ok(7),
            "the one thread still runs jobs"
        );
    }

    /// Ordering: jobs run in the order they were handed in, whoever handed
    /// them in (a binding's next batch goes behind everyone else's).
    #[tokio::test]
    async fn jobs_run_in_the_order_they_were_handed_in() {
        let pool = Pool::new(1);
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let blocked = pool.run(move || gate.recv().unwrap());
        let order = Arc::new(Mutex::new(Vec::new()));
        let jobs = (0..10).map(|n| {
            let order = order.clone();
            pool.run(move || order.lock().unwrap().push(n))
        });
        let all = futures::future::join_all(jobs);
        tokio::pin!(all);
        // Every job is queued behind the blocked one before it is let go.
        assert!(futures::poll!(&mut all).is_pending());
        open.send(()).unwrap();
        blocked.await.unwrap();
        all.await;
        assert_eq!(*order.lock().unwrap(), (0..10).collect::<Vec<_>>());
    }

    /// Fairness: a binding that always has a batch waiting (it hands in the
    /// next as soon as the last is done) does not keep the only thread from
    /// another binding: the other's job runs before at most one more of the
    /// busy binding's.
    #[tokio::test]
    async fn a_saturated_binding_does_not_starve_another() {
        let pool = Pool::new(1);
        let log = Arc::new(Mutex::new(Vec::<&str>::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy = {
            let (pool, log, stop) = (pool.clone(), log.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let log = log.clone();
                    pool.run(move || {
                        std::thread::sleep(Duration::from_millis(2));
                        log.lock().unwrap().push("busy");
                    })
                    .await
                    .unwrap();
                }
            })
        };
        while log.lock().unwrap().len() < 5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let before = log.lock().unwrap().len();
        let l = log.clone();
        pool.run(move || l.lock().unwrap().push("light"))
            .await
            .unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        busy.await.unwrap();
        let log = log.lock().unwrap();
        let light = log.iter().position(|&s| s == "light").unwrap();
        assert!(
            light <= before + 1,
            "the light job ran after {} more busy jobs",
            light - before
        );
    }

    /// A saturated binding with one worker holds at most one thread: with
    /// two threads, another binding's job runs while the busy one's is still
    /// running (it waits for exactly that, so this would hang without it).
    #[tokio::test]
    async fn a_busy_binding_holds_one_thread_per_worker() {
        let pool = Pool::new(2);
        let (ran, wait) = std::sync::mpsc::channel::<()>();
        let busy = pool.run(move || {
            wait.recv_timeout(Duration::from_secs(10))
                .expect("the other binding's job ran meanwhile")
        });
        let light = pool.run(move || ran.send(()).unwrap());
        let (busy, light) = tokio::join!(busy, light);
        busy.unwrap();
        light.unwrap();
    }

    #[tokio::test]
    async fn a_closed_pool_takes_no_jobs() {
        let pool = Pool::new(1);
        pool.close();
        assert_eq!(pool.run(|| ()).await, Err(Gone));
    }
}
