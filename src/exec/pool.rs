//! The rayon pools runs execute on.
//!
//! A thread that runs an executable with `n > 1` threads joins a pool of `n`
//! threads as its worker 0 (its *home* pool, built on its first such run with
//! `n − 1` new threads, and shut down when the thread exits). A run then starts
//! on the calling thread at once and shares its work with the other workers:
//! no job is queued and no sleeping thread must wake before work begins, so a
//! run allocates nothing and small graphs lose no time in hand-offs.
//!
//! A thread is in one rayon pool at most, so a thread already in one (a worker
//! of another rayon pool, or home to a kiln pool of another size) hands its runs
//! to a process-wide pool of `n` threads instead, built on first use and kept.
//!
//! Rayon calls made on a thread after it joined its home pool run in that pool.
//! When such a thread exits, its pool's threads stop, but rayon keeps a few
//! kilobytes of the pool's bookkeeping for the rest of the process.

use crate::error::{KilnError, Result};
use rayon::ThreadPool;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

thread_local! {
    /// This thread's home pool and its size.
    static HOME: RefCell<Option<(usize, Arc<ThreadPool>)>> = const { RefCell::new(None) };
}

/// The pool of `threads` threads a run on the calling thread uses: the
/// calling thread's home pool when it has (or can have) one of that size,
/// else the process-wide one.
pub fn for_this_thread(threads: usize) -> Result<Arc<ThreadPool>> {
    let home = HOME.try_with(|home| -> Result<Option<Arc<ThreadPool>>> {
        let mut home = home.borrow_mut();
        match &*home {
            Some((n, pool)) if *n == threads => return Ok(Some(pool.clone())),
            Some(_) => return Ok(None),
            None if rayon::current_thread_index().is_some() => return Ok(None),
            None => {}
        }
        let pool = Arc::new(build(threads, true)?);
        *home = Some((threads, pool.clone()));
        Ok(Some(pool))
    });
    match home {
        Ok(found) => found?.map_or_else(|| shared(threads), Ok),
        // the thread is exiting and its home is gone
        Err(_) => shared(threads),
    }
}

/// The process-wide pool of `threads` threads, for threads that cannot have a
/// home pool of that size.
fn shared(threads: usize) -> Result<Arc<ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let pool = Arc::new(build(threads, false)?);
    pools.insert(threads, pool.clone());
    Ok(pool)
}

/// A pool of `threads` threads; with `join`, the calling thread is its worker 0.
/// Returns once every worker has started, so that no worker's start-up
/// (its stack, name and queues) lands inside a later run.
fn build(threads: usize, join: bool) -> Result<ThreadPool> {
    let builder = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("kiln-{i}"));
    let builder = if join {
        builder.use_current_thread()
    } else {
        builder
    };
    let pool = builder
        .build()
        .map_err(|e| KilnError::Invalid(format!("cannot start {threads} threads: {e}")))?;
    pool.broadcast(|_| ());
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_joins_one_home_pool_and_uses_the_shared_one_for_other_sizes() {
        std::thread::spawn(|| {
            let home = for_this_thread(2).unwrap();
            assert_eq!(rayon::current_thread_index(), Some(0), "joined as worker 0");
            assert!(Arc::ptr_eq(&home, &for_this_thread(2).unwrap()));
            let other = for_this_thread(3).unwrap();
            assert!(!Arc::ptr_eq(&home, &other));
            assert_eq!(other.current_num_threads(), 3);
            // work started on the home thread is shared with the pool's other worker
            let workers: std::collections::HashSet<usize> = home.install(|| {
                use rayon::prelude::*;
                (0..64)
                    .into_par_iter()
                    .map(|_| {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        rayon::current_thread_index().unwrap()
                    })
                    .collect()
            });
            assert!(workers.contains(&0) && workers.iter().all(|&w| w < 2));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_rayon_worker_uses_the_shared_pool() {
        let outside = build(2, false).unwrap();
        let pool = outside.install(|| for_this_thread(2).unwrap());
        assert_eq!(pool.current_num_threads(), 2);
        assert!(Arc::ptr_eq(&pool, &shared(2).unwrap()));
    }
}
