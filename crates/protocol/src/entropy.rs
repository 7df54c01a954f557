//! Randomness from the operating system without a panic: a fallible seed for what
//! must be unpredictable, and a clock-derived one for choices that only need to differ.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::{OsRng, StdRng};
use rand::{SeedableRng as _, TryRngCore as _};

/// The operating system's randomness source failed (no `getrandom`, no `/dev/urandom`,
/// a sandbox that forbids both).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operating system gives no randomness: {0}")]
pub struct NoRandomness(pub String);

/// Reads a few bytes from the operating system's source: a check at start, so that a
/// process which needs secret randomness later (nonces, tickets) fails now, clearly.
pub fn check_os_randomness() -> Result<(), NoRandomness> {
    let mut probe = [0u8; 8];
    OsRng.try_fill_bytes(&mut probe).map_err(|error| NoRandomness(error.to_string()))
}

/// An RNG seeded from the operating system, or why there is none.
pub fn os_seeded() -> Result<StdRng, NoRandomness> {
    StdRng::try_from_os_rng().map_err(|error| NoRandomness(error.to_string()))
}

/// A random `u64` from the operating system, or a clock-derived one (for ids that
/// must differ from one request to the next, not be secret).
pub fn u64_or_clock() -> u64 {
    OsRng.try_next_u64().unwrap_or_else(|_| clock_seed())
}

/// An RNG seeded from the clock, this process's id and a counter: distinct between
/// processes and calls, predictable to anyone who knows them. Only for choices that
/// need to differ (jitter, tie-breaking), never for secrets.
pub fn clock_seeded() -> StdRng {
    StdRng::seed_from_u64(clock_seed())
}

/// The clock in nanoseconds, the process id and a call counter, mixed.
fn clock_seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
    let calls = CALLS.fetch_add(1, Ordering::Relaxed);
    splitmix64(nanos ^ (u64::from(std::process::id()) << 32) ^ splitmix64(calls))
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore as _;

    #[test]
    fn clock_seeds_differ_from_call_to_call() {
        let seeds: std::collections::HashSet<u64> = (0..1000).map(|_| clock_seed()).collect();
        assert_eq!(seeds.len(), 1000);
        assert_ne!(clock_seeded().next_u64(), clock_seeded().next_u64());
    }

    #[test]
    fn this_host_gives_randomness() {
        assert_eq!(check_os_randomness(), Ok(()));
        assert!(os_seeded().is_ok());
        assert_ne!(u64_or_clock(), u64_or_clock());
    }
}
