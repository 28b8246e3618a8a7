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
//!
//! That number is also the number of call slots, which bound the calls in
//! progress. [`Pool::call`] runs a job at once on the thread the binding's
//! worker is on when the pool is quiet (no slot taken, nothing queued), on
//! a multi-thread runtime, through `block_in_place` (which moves the
//! thread's other tasks to another thread for as long as the call takes);
//! otherwise it queues for the pool's threads as above. A lone message so
//! pays for no hand-off: waking a pool thread and waking the worker again
//! afterwards cost tens of microseconds on a busy machine, ten times the
//! call itself. Running at once never jumps a queue, and it is one call at
//! a time: each `block_in_place` takes a thread of tokio's blocking pool for
//! the thread's other work, and with any free slot allowed, bursts grew
//! that pool (26 threads after the 2,000-binding test's traffic, 10 before
//! it); on a quiet pool only it ended at 11-17 in 24 runs, 10 with every
//! call on the pool.
//!
//! A call that waits on the network inside a host function (a `requester`
//! request) gives its slot back for the wait ([`while_blocked`]) and takes
//! one again before the guest goes on: slots bound the calls *running*, so a
//! plugin waiting for another plugin's reply does not hold the thread that
//! reply needs. A pool thread that waits so is stood in for by a spare
//! thread (at most [`MAX_WAITING`] waiting at a time); a spare ends after
//! [`SPARE_IDLE`] without a job once the waiters are back, so a steady trickle
//! of requests does not start a thread each. A call coming back from its
//! wait takes the next free slot before any queued job, and no call runs at
//! once while another call is in progress, waiting or not: at once stays
//! one call at a time.

use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Pool threads waiting in a host call at once, beyond which a waiting
/// call is not replaced (its slot is still given back).
pub const MAX_WAITING: usize = 256;

/// How long a spare thread waits for a job before it ends (when the pool
/// has more threads than slots plus waiting calls).
pub const SPARE_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// The slots of the call running on this thread, and whether this is a
    /// pool thread: for [`while_blocked`].
    static HELD: RefCell<Option<(Arc<Slots>, bool)>> = const { RefCell::new(None) };
}

/// A fixed set of threads running jobs in the order they arrive.
pub struct Pool {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    size: usize,
    slots: Arc<Slots>,
}

/// The pool is gone (the gateway is stopping) or the job panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl Pool {
    /// Start `size` threads (`0`: the default for this machine).
    pub fn new(size: usize) -> Arc<Pool> {
        let size = if size == 0 { default_size() } else { size };
        let (tx, rx) = mpsc::channel::<Job>();
        let slots = Arc::new(Slots {
            state: Mutex::new(SlotState {
                free: size,
                queued: 0,
                calls: 0,
                returning: 0,
                threads: size,
                waiting: 0,
            }),
            freed: Condvar::new(),
            jobs: Arc::new(Mutex::new(rx)),
            size,
            named: std::sync::atomic::AtomicUsize::new(0),
        });
        for _ in 0..size {
            spawn_worker(&slots);
        }
        Arc::new(Pool {
            jobs: Mutex::new(Some(tx)),
            size,
            slots,
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
        let queued = Queued::new(&self.slots);
        let job: Job = Box::new(move || {
            let slot = queued.start();
            let t = holding(&slot.0, true, f);
            // Free before the caller hears, so a slot is free once it has.
            drop(slot);
            let _ = done.send(t);
        });
        {
            let jobs = self.jobs.lock().map_err(|_| Gone)?;
            jobs.as_ref().ok_or(Gone)?.send(job).map_err(|_| Gone)?;
        }
        result.await.map_err(|_| Gone)
    }

    /// Run `f` at once on this thread when the pool is quiet and the
    /// runtime lets a task block; on the pool otherwise (see the module
    /// docs). `true` with the result when it ran
    /// at once.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<(T, bool), Gone> {
        if let Some(slot) = self.free_slot() {
            // A panic fails this call alone, as on the pool.
            let slots = slot.0.clone();
            let t = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                tokio::task::block_in_place(|| holding(&slots, false, f))
            }));
            drop(slot);
            return t.map(|t| (t, true)).map_err(|_| Gone);
        }
        self.run(f).await.map(|t| (t, false))
    }

    /// A slot for a call at once, when none is taken, no job waits for one
    /// and this thread is a multi-thread runtime's (`block_in_place`
    /// panics elsewhere).
    fn free_slot(&self) -> Option<Slot> {
        let here = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if !here {
            return None;
        }
        let mut state = self.slots.lock();
        // Only on a quiet pool, so one at a time (see the module docs): no
        // call in progress, not even one waiting outside the pool.
        if state.queued > 0 || state.calls > 0 {
            return None;
        }
        state.free -= 1;
        state.calls += 1;
        Some(Slot(self.slots.clone()))
    }

    /// Call slots taken now.
    #[cfg(test)]
    fn busy(&self) -> usize {
        self.size - self.slots.lock().free
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

/// The call slots, shared by the pool's threads and the calls at once: a
/// pool thread that took a job waits here for a slot, and a call at once
/// takes one only while no job waits, so it never goes ahead of the queue.
struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
    /// The queue, for threads started while others wait in a host call.
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    size: usize,
    /// Threads started so far, for their names.
    named: std::sync::atomic::AtomicUsize,
}

struct SlotState {
    free: usize,
    /// Jobs handed to the pool that have not started.
    queued: usize,
    /// Calls started and not finished, those waiting outside the pool too.
    calls: usize,
    /// Calls back from a wait outside the pool, waiting for a slot: they go
    /// before queued jobs.
    returning: usize,
    /// Pool threads alive, and those of them waiting in a host call.
    threads: usize,
    waiting: usize,
}

impl Slots {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Nothing runs under this lock that could panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A call is done: its slot is free.
    fn give(&self) {
        {
            let mut state = self.lock();
            state.free += 1;
            state.calls -= 1;
        }
        // All: a queued job may not take the slot while a returning call
        // waits, so waking one of them alone could wake the wrong one.
        self.freed.notify_all();
    }

    /// A call back from a wait outside the pool: take the next free slot,
    /// ahead of queued jobs.
    fn take_back(&self, counted: bool) {
        let mut state = self.lock();
        if counted {
            state.waiting -= 1;
        }
        state.returning += 1;
        while state.free == 0 {
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.free -= 1;
        state.returning -= 1;
    }
}

/// Run `f` with this thread's call slot known to [`while_blocked`].
fn holding<T>(slots: &Arc<Slots>, pool_thread: bool, f: impl FnOnce() -> T) -> T {
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            HELD.with(|h| h.borrow_mut().take());
        }
    }
    HELD.with(|h| *h.borrow_mut() = Some((slots.clone(), pool_thread)));
    let _clear = Clear;
    f()
}

/// Run `f`, which waits on something outside the pool (a reply from the
/// network), without holding a call slot: the slot of the call running on
/// this thread is given back for the wait and taken again (waiting for one
/// if need be) before this returns. A pool thread is replaced meanwhile, so
/// the queue keeps moving. Outside a pool call it just runs `f`.
pub fn while_blocked<T>(f: impl FnOnce() -> T) -> T {
    let Some((slots, pool_thread)) = HELD.with(|h| h.borrow().clone()) else {
        return f();
    };
    let (counted, spawn) = {
        let mut state = slots.lock();
        // The slot, not the call: `calls` still counts it.
        state.free += 1;
        let counted = pool_thread && state.waiting < MAX_WAITING;
        if counted {
            state.waiting += 1;
        }
        // A spare from an earlier wait may still be there.
        let spawn = counted && state.threads < slots.size + state.waiting;
        if spawn {
            state.threads += 1;
        }
        (counted, spawn)
    };
    slots.freed.notify_all();
    if spawn {
        spawn_worker(&slots);
    }
    back_after(&slots, counted, f)
}

/// `f`, then this thread's slot taken back (also when `f` panics).
fn back_after<T>(slots: &Arc<Slots>, counted: bool, f: impl FnOnce() -> T) -> T {
    struct Back<'a>(&'a Slots, bool);
    impl Drop for Back<'_> {
        fn drop(&mut self) {
            self.0.take_back(self.1);
        }
    }
    let _back = Back(slots, counted);
    f()
}

fn spawn_worker(slots: &Arc<Slots>) {
    let n = slots
        .named
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let for_thread = slots.clone();
    let started = std::thread::Builder::new()
        .name(format!("wasmgate-worker-{n}"))
        .spawn(move || worker(&for_thread));
    if let Err(e) = started {
        // The threads there are go on; this one is not counted.
        tracing::error!(error = %e, "cannot start a worker thread");
        slots.lock().threads -= 1;
    }
}

/// A call slot taken, given back when dropped (also when the job panics).
struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.give();
    }
}

/// A job counted as waiting for a slot until it starts (or is dropped
/// unstarted, when the pool closes).
struct Queued(Option<Arc<Slots>>);

impl Queued {
    fn new(slots: &Arc<Slots>) -> Queued {
        slots.lock().queued += 1;
        Queued(Some(slots.clone()))
    }

    /// Wait for a free slot and take it (on the pool thread that took the job).
    fn start(mut self) -> Slot {
        let slots = self.0.take().expect("a job starts once");
        {
            let mut state = slots.lock();
            while state.free == 0 || state.returning > 0 {
                state = slots.freed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.free -= 1;
            state.queued -= 1;
            state.calls += 1;
        }
        Slot(slots)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if let Some(slots) = self.0.take() {
            slots.lock().queued -= 1;
        }
    }
}

fn worker(slots: &Slots) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = match slots.jobs.lock() {
            Ok(rx) => rx.recv_timeout(SPARE_IDLE),
            Err(_) => return,
        };
        let job = match job {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A spare ends once the threads it stood in for are back.
                let mut state = slots.lock();
                if state.threads > slots.size + state.waiting {
                    state.threads -= 1;
                    return;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                slots.lock().threads -= 1;
                return;
            }
        };
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

    /// A call runs at once on the caller's thread while a slot is free,
    /// and on the pool once every slot is taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_runs_at_once_while_a_slot_is_free() {
        let pool = Pool::new(1);
        let (name, here) = pool
            .call(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(here, "ran at once");
        assert!(!name.unwrap_or_default().starts_with("wasmgate-worker-"));
        assert_eq!(pool.busy(), 0, "the slot is given back");

        // The one slot taken by a job on the pool: the next call queues.
        let (open, gate) = std::sync::mpsc::channel::<()>();
        let blocked = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(move || gate.recv().unwrap()).await }
        });
        while pool.busy() == 0 {
            tokio::task::yield_now().await;
        }
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.call(|| std::thread::current().name().map(str::to_string))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!queued.is_finished(), "waits for the slot's thread");
        open.send(()).unwrap();
        blocked.await.unwrap().unwrap();
        let (name, here) = queued.await.unwrap().unwrap();
        assert!(!here);
        assert!(name.unwrap().starts_with("wasmgate-worker-"));
        assert_eq!(pool.busy(), 0);
    }

    /// On a current-thread runtime nothing may block the only thread, so
    /// every call goes to the pool.
    #[tokio::test]
    async fn on_a_current_thread_runtime_calls_go_to_the_pool() {
        let pool = Pool::new(1);
        let (name, here) = pool
            .call(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(!here);
        assert!(name.unwrap().starts_with("wasmgate-worker-"));
    }

    /// Calls at once and jobs on the pool together never exceed the slots,
    /// and only one call runs at once at a time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_at_once_count_against_the_slots() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = Pool::new(2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let here_now = Arc::new(AtomicUsize::new(0));
        let most_here = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
                let (here_now, most_here) = (here_now.clone(), most_here.clone());
                tokio::spawn(async move {
                    pool.call(move || {
                        let here = !std::thread::current()
                            .name()
                            .is_some_and(|n| n.starts_with("wasmgate-worker-"));
                        if here {
                            let n = here_now.fetch_add(1, Ordering::SeqCst) + 1;
                            most_here.fetch_max(n, Ordering::SeqCst);
                        }
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                        if here {
                            here_now.fetch_sub(1, Ordering::SeqCst);
                        }
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "at most two at a time");
        assert_eq!(most_here.load(Ordering::SeqCst), 1, "one at once at a time");
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_at_once_that_panics_fails_alone() {
        let pool = Pool::new(1);
        let r: Result<((), bool), Gone> = pool.call(|| panic!("a call that panics")).await;
        assert_eq!(r, Err(Gone));
        assert_eq!(pool.busy(), 0, "its slot is given back");
        assert_eq!(pool.call(|| 7).await, Ok((7, true)));
    }

    /// A call waiting outside the pool (a request to another plugin of the
    /// gateway) gives its slot back and its thread is stood in for: on a
    /// pool of one, a job waiting for another job's result gets it (without
    /// this it would wait out its 10 s). The stand-in ends afterwards.
    #[tokio::test]
    async fn a_call_waiting_outside_the_pool_lets_the_next_job_run() {
        let pool = Pool::new(1);
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let waiting = pool.run(move || while_blocked(|| rx.recv_timeout(Duration::from_secs(10))));
        let other = pool.run(move || tx.send(7).unwrap());
        let (w, o) = tokio::join!(waiting, other);
        o.unwrap();
        assert_eq!(w.unwrap(), Ok(7));
        assert_eq!(pool.busy(), 0, "the slot is back");
        assert_eq!(pool.slots.lock().threads, 2, "a stand-in was started");
        // One thread is left once the other has been idle a while.
        let deadline = std::time::Instant::now() + SPARE_IDLE * 10;
        while pool.slots.lock().threads > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.slots.lock().threads, 1, "the stand-in thread ended");
    }

    /// While it waits the slot is another call's, and the waiter takes one
    /// again before it goes on: never more calls running than slots.
    #[tokio::test]
    async fn a_waiter_takes_a_slot_again_before_it_goes_on() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = Pool::new(1);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs = (0..6).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            pool.run(move || {
                let enter = |running: &AtomicUsize| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                };
                enter(&running);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
                while_blocked(|| std::thread::sleep(Duration::from_millis(20)));
                enter(&running);
                std::thread::sleep(Duration::from_millis(5));
                running.fetch_sub(1, Ordering::SeqCst);
            })
        });
        for r in futures::future::join_all(jobs).await {
            r.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    /// A call at once that waits outside the pool still counts as the one
    /// call at once: the next call goes to the pool's threads, so waiting
    /// calls cannot pile up in `block_in_place`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn while_a_call_at_once_waits_the_next_goes_to_the_pool() {
        let pool = Pool::new(2);
        let (go, gate) = std::sync::mpsc::channel::<()>();
        let (entered, waiting) = std::sync::mpsc::channel::<()>();
        let first = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.call(move || {
                    while_blocked(|| {
                        entered.send(()).unwrap();
                        gate.recv_timeout(Duration::from_secs(10)).is_ok()
                    })
                })
                .await
            }
        });
        tokio::task::spawn_blocking(move || waiting.recv_timeout(Duration::from_secs(10)))
            .await
            .unwrap()
            .expect("the first call waits");
        let (name, here) = pool
            .call(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(!here, "not at once while another call is in progress");
        assert!(name.unwrap().starts_with("wasmgate-worker-"));
        go.send(()).unwrap();
        let (answered, here) = first.await.unwrap().unwrap();
        assert!(answered && here);
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn outside_a_pool_call_waiting_just_runs() {
        assert_eq!(while_blocked(|| 3), 3);
    }

    #[tokio::test]
    async fn a_closed_pool_takes_no_jobs() {
        let pool = Pool::new(1);
        pool.close();
        assert_eq!(pool.run(|| ()).await, Err(Gone));
    }
}
