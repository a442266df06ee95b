//! Giving freed memory back to the system. glibc's allocator keeps the pages a burst of calls
//! used (a machine that stalled, a wave of set-ups) in its arenas after they are freed, so a
//! long-running proxy or relay shows a resident size that steps up with each burst and never
//! comes down, though nothing leaks (issue #12's soak: 75 → 82 MiB in one stalled minute, flat
//! after). Every [`TRIM_EVERY`] the process asks glibc to return the free pages at the top of
//! its heaps and the unused ones inside them (`malloc_trim(0)`), which costs a walk of the
//! free lists — a few milliseconds at most, on the runtime's blocking pool, not the event loop.
//! No crate offers this for the system allocator; other allocators would each be a larger
//! change with their own tuning.

use std::time::Duration;

/// How often free memory is given back.
pub const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Starts giving free memory back every [`TRIM_EVERY`] (glibc only; elsewhere nothing).
pub fn spawn_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut ticks = tokio::time::interval(TRIM_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            // SAFETY: malloc_trim only walks and releases the allocator's own free memory; it
            // is thread-safe in glibc (it takes each arena's lock) and has no preconditions.
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    });
}
