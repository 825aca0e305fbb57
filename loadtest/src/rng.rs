//! The seed of a run: simulated users draw their orders and operations
//! from it with `cart_common::rng::SplitMix64`, so a run can be repeated
//! exactly.

/// A seed for one run: different runs against the same cluster use fresh
/// request ids unless a seed is given.
pub fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
