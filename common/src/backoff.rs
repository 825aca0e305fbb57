//! Capped exponential backoff with jitter, for every loop that retries a
//! call until it has an answer (group clients, saga steps and decisions).
//! The jitter keeps many retriers that failed together (a leader change)
//! from all coming back at the same instant.

use std::time::Duration;

pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { next: first, max }
    }

    /// The next pause: a random time in the upper half of the current step
    /// ("equal jitter"), after which the step doubles up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_stay_within_their_step() {
        let mut b = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        let mut step = Duration::from_millis(20);
        for _ in 0..12 {
            let pause = b.next_pause();
            assert!(
                pause >= step / 2 && pause <= step,
                "{pause:?} outside {step:?}"
            );
            step = (step * 2).min(Duration::from_millis(500));
        }
        assert!(b.next_pause() <= Duration::from_millis(500));
    }
}
