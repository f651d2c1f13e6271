//! What the crash harnesses share: a seedable generator, and the seed and
//! number of trials, from `CRASH_SEED` and `CRASH_TRIALS` (default 20).

/// splitmix64: a small, seedable generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The seed (`CRASH_SEED`, or the clock's nanoseconds) and the number of
/// trials (`CRASH_TRIALS`, or 20), printed so a failure can be replayed.
pub fn seed_and_trials(harness: &str) -> (u64, usize) {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("a clock after 1970")
                .as_nanos() as u64
        });
    let trials = std::env::var("CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!("{harness}: CRASH_SEED={seed} CRASH_TRIALS={trials}");
    (seed, trials)
}
