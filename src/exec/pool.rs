//! Rayon pools shared by executables: one per thread count, built on first use
//! and kept for the life of the process (compiling many executables spawns no
//! new threads).

use crate::error::{KilnError, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The process-wide pool of `threads` threads.
pub fn shared(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("kiln-{i}"))
        .build()
        .map_err(|e| KilnError::Invalid(format!("cannot start {threads} threads: {e}")))?;
    let pool = Arc::new(pool);
    pools.insert(threads, pool.clone());
    Ok(pool)
}
