//! Records a history while clients run: each operation's invocation and
//! completion times on one clock (microseconds since the recorder began),
//! from any number of tasks at once.

use std::sync::Mutex;
use std::time::Instant;

use super::{Answer, Call, Op};

pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Now, as an invocation time to hand back to `complete`.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records an operation invoked at `invoked_us` that has just ended
    /// with `answer`; an `Unknown` answer has no completion time (it may
    /// take effect later).
    pub fn complete(&self, client: u32, invoked_us: u64, call: Call, answer: Answer) {
        let completed_us = (answer != Answer::Unknown).then(|| self.now_us());
        let op = Op {
            client,
            invoked_us,
            completed_us,
            call,
            answer,
        };
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }

    /// Every operation recorded so far.
    pub fn history(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_without_an_answer_has_no_completion() {
        let r = Recorder::new();
        let at = r.now_us();
        let read = Call::Read { key: "k".into() };
        r.complete(1, at, read.clone(), Answer::Value { value: 3 });
        r.complete(2, at, read, Answer::Unknown);
        let h = r.history();
        assert_eq!(h.len(), 2);
        assert!(h[0].completed_us.is_some_and(|c| c >= at));
        assert_eq!(h[1].completed_us, None);
    }
}
