//! A team of threads for the short parallel sections of decoding.
//!
//! One decoded token runs about ten parallel sections per layer, each a few tens of
//! microseconds long. Rayon's workers go to sleep between them and are woken through the
//! kernel for the next one, which cost ~14% of a sparse decode token on two cores. The team's
//! workers instead spin on an epoch counter for a short while after each section (as
//! llama.cpp's thread pool does), so the next section starts without a system call, and only
//! then sleep. The calling thread takes tasks too, so `t` threads means `t - 1` workers.
//!
//! One section runs on the team at a time. A call made while the team is busy (another thread
//! decoding, a nested call from inside a task) runs on rayon or inline instead, so the result
//! is the same either way: every task index is run exactly once.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// How long a worker spins for the next section before it sleeps. Decode's sections follow
/// each other within microseconds; between tokens (sampling, streaming) the gap is longer
/// and a sleeping worker costs nothing.
const SPIN: Duration = Duration::from_millis(2);

/// Runs `f(i)` for every `i in 0..n`, in parallel where that pays, and returns when all are
/// done. A panic in any task is raised again on the calling thread.
pub fn for_each(n: usize, f: impl Fn(usize) + Sync) {
    if n == 0 {
        return;
    }
    if n == 1 || IN_TASK.get() {
        return (0..n).for_each(f);
    }
    match team() {
        Some(team) => match team.busy.try_lock() {
            Ok(_guard) => team.run(n, &f),
            // A task's panic went through `run` with the lock held: the team is still sound.
            Err(TryLockError::Poisoned(p)) => {
                let _guard = p.into_inner();
                team.run(n, &f)
            }
            Err(TryLockError::WouldBlock) => (0..n).into_par_iter().for_each(&f),
        },
        None => (0..n).into_par_iter().for_each(&f),
    }
}

/// Runs `f(i, chunk)` for the consecutive `chunk`-long pieces of `out` (the last may be
/// shorter), as [`for_each`] does.
pub fn for_chunks_mut<T: Send>(out: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    let out = Pieces::new(out, chunk);
    // SAFETY: `for_each` runs every index once.
    for_each(out.count(), |i| f(i, unsafe { out.piece(i) }));
}

/// Runs `f(i, a_i, b_i)` over the `i`-th `ca`-long piece of `a` and `cb`-long piece of `b`
/// (both cut like [`for_chunks_mut`]; there are as many tasks as pieces of `a`, and a piece of
/// `b` past its end is empty), as [`for_each`] does.
pub fn for_chunk_pairs_mut<A: Send, B: Send>(
    a: &mut [A],
    ca: usize,
    b: &mut [B],
    cb: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    let (a, b) = (Pieces::new(a, ca.max(1)), Pieces::new(b, cb.max(1)));
    // SAFETY: `for_each` runs every index once.
    for_each(a.count(), |i| {
        f(i, unsafe { a.piece(i) }, unsafe { b.piece(i) })
    });
}

/// A slice cut into `chunk`-long pieces that the tasks of one section take, one each.
struct Pieces<'a, T> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the pieces handed out are disjoint (see `piece`), so sharing the cutter between the
// tasks is sharing `&mut` access to disjoint parts of a `Send` slice.
unsafe impl<T: Send> Sync for Pieces<'_, T> {}

impl<'a, T> Pieces<'a, T> {
    fn new(s: &'a mut [T], chunk: usize) -> Self {
        Pieces {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            chunk,
            _borrow: std::marker::PhantomData,
        }
    }

    fn count(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// Piece `i` (empty past the end).
    ///
    /// # Safety
    /// Each `i` is taken at most once while the slice is borrowed.
    #[allow(clippy::mut_from_ref)]
    unsafe fn piece(&self, i: usize) -> &'a mut [T] {
        let start = (i * self.chunk).min(self.len);
        let end = (start + self.chunk).min(self.len);
        // SAFETY: in bounds; disjoint from every other piece, and taken once (caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

/// How many threads a section may use (the calling thread included).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

thread_local! {
    /// Set while this thread runs a task of a section, so a nested call runs inline.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// One section: the type-erased task function and the counters the threads share.
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    n: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

// SAFETY: `f` points at a `Sync` closure that the posting thread keeps alive until `done`
// reaches `n`; after that no thread can claim an index below `n`, so `f` is never called
// again (see `Job::work`).
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs tasks until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            // SAFETY: `i < n`, so the section is not finished and `f` is alive.
            let f = unsafe { &*self.f };
            let was = IN_TASK.replace(true);
            let r = panic::catch_unwind(AssertUnwindSafe(|| f(i)));
            IN_TASK.set(was);
            if let Err(e) = r {
                self.panic
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

struct Shared {
    /// Bumped for every posted section; workers spin on it.
    epoch: AtomicU64,
    job: Mutex<Option<Arc<Job>>>,
    wake: Condvar,
    /// Workers asleep on `wake` (read and written under `job`'s lock).
    sleeping: AtomicUsize,
}

struct Team {
    busy: Mutex<()>,
    shared: Arc<Shared>,
}

/// The process's team, sized from rayon's thread count at first use (`-t` sets that before
/// any model runs); `None` with a single thread.
fn team() -> Option<&'static Team> {
    static TEAM: OnceLock<Option<Team>> = OnceLock::new();
    TEAM.get_or_init(|| Team::new(threads() - 1)).as_ref()
}

impl Team {
    fn new(workers: usize) -> Option<Team> {
        if workers == 0 {
            return None;
        }
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            wake: Condvar::new(),
            sleeping: AtomicUsize::new(0),
        });
        for w in 0..workers {
            let s = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("powerinfer-team-{w}"))
                .spawn(move || worker(&s))
                .ok()?;
        }
        Some(Team {
            busy: Mutex::new(()),
            shared,
        })
    }

    /// Posts the section, takes tasks on this thread too, and waits for the rest.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        // SAFETY (lifetime erasure): this function does not return before `done == n`.
        let f: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        let job = Arc::new(Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panic: Mutex::new(None),
        });
        let s = &self.shared;
        {
            let mut slot = s.job.lock().unwrap_or_else(|p| p.into_inner());
            *slot = Some(Arc::clone(&job));
            s.epoch.fetch_add(1, Ordering::Release);
            if s.sleeping.load(Ordering::Relaxed) > 0 {
                s.wake.notify_all();
            }
        }
        job.work();
        while job.done.load(Ordering::Acquire) < n {
            std::hint::spin_loop();
        }
        let err = job.panic.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = err {
            panic::resume_unwind(e);
        }
    }
}

/// A worker's life: wait for a section (spinning, then asleep), help with it, repeat. The
/// team lives as long as the process.
fn worker(s: &Shared) -> ! {
    let mut seen = 0u64;
    loop {
        // Spin for the next section, checking the clock only now and then.
        let start = Instant::now();
        let mut spins = 0u32;
        while s.epoch.load(Ordering::Acquire) == seen {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
                break;
            }
        }
        let job = {
            let mut slot = s.job.lock().unwrap_or_else(|p| p.into_inner());
            while s.epoch.load(Ordering::Acquire) == seen {
                s.sleeping.fetch_add(1, Ordering::Relaxed);
                slot = s.wake.wait(slot).unwrap_or_else(|p| p.into_inner());
                s.sleeping.fetch_sub(1, Ordering::Relaxed);
            }
            seen = s.epoch.load(Ordering::Acquire);
            slot.clone()
        };
        if let Some(job) = job {
            job.work();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_once() {
        for n in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            for_each(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn chunks_cover_the_slice_once() {
        let mut v = vec![0u32; 1003];
        for_chunks_mut(&mut v, 100, |i, c| {
            for (k, x) in c.iter_mut().enumerate() {
                *x += (i * 100 + k) as u32 + 1;
            }
        });
        assert!(v.iter().enumerate().all(|(k, &x)| x == k as u32 + 1));
    }

    #[test]
    fn nested_and_concurrent_sections_complete() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        for_each(8, |_| {
                            for_each(3, |_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 8 * 3);
    }

    #[test]
    fn a_panicking_task_panics_the_caller_and_the_team_survives() {
        let r = panic::catch_unwind(|| {
            for_each(64, |i| {
                if i == 37 {
                    panic!("task 37");
                }
            })
        });
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        for_each(64, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 64);
    }
}
