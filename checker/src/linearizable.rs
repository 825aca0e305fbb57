//! Linearizability of one integer value per key, by the Wing–Gong search
//! with Lowe's memoization (as Porcupine does it).
//!
//! The operations of a key become call and return events in time order, in
//! a linked list. The search walks the list: at a call it tries to take the
//! operation next (the value's model must allow its answer); taken, both of
//! its events leave the list and the walk starts again from the head. At a
//! return whose call was not taken, that operation can no longer be placed
//! before the ones already placed after it, so the search undoes its last
//! choice. A state already seen (the same set of operations taken, the same
//! value) is not explored twice. The history is linearizable when the list
//! empties.
//!
//! An operation without an answer has its return at the end of time: it
//! may be placed anywhere after its invocation, and the model lets it have
//! taken effect or not.

use std::collections::{BTreeMap, HashSet};

use super::{Answer, Call, Op};

/// States the search explores for one key at most before it gives up
/// undecided: unanswered operations make the search exponential in how many
/// of them overlap, and a check must end.
pub const MAX_STATES: usize = 2_000_000;

/// A key the check could not prove linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFailure {
    pub key: String,
    pub ops: usize,
    pub why: Why,
    /// Most operations any attempt placed in order.
    pub longest_prefix: usize,
    /// The operation the longest attempt could not place in time.
    pub stuck_at: Option<Op>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// No order of the operations explains the answers.
    NotLinearizable,
    /// The search reached `MAX_STATES` without an answer.
    Undecided,
}

impl std::fmt::Display for KeyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.why {
            Why::NotLinearizable => "no linearization",
            Why::Undecided => "undecided after the most states a search may explore",
        };
        write!(
            f,
            "key {}: {what} of its {} operations (at most {} placed",
            self.key, self.ops, self.longest_prefix
        )?;
        match &self.stuck_at {
            Some(op) => write!(f, "; stuck at {op:?})"),
            None => write!(f, ")"),
        }
    }
}

/// Checks every key of `ops` apart, starting from `initial` (a key absent
/// there starts at 0); the keys that are not linearizable.
pub fn check(ops: &[Op], initial: &BTreeMap<String, i64>) -> Vec<KeyFailure> {
    check_within(ops, initial, MAX_STATES)
}

/// `check`, giving up on a key (undecided) after `max_states` states.
pub fn check_within(
    ops: &[Op],
    initial: &BTreeMap<String, i64>,
    max_states: usize,
) -> Vec<KeyFailure> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    // A read without an answer says nothing, and left in it would widen
    // the search (its return is at the end of time).
    let telling = ops
        .iter()
        .filter(|op| !matches!((&op.call, &op.answer), (Call::Read { .. }, Answer::Unknown)));
    for op in telling {
        by_key.entry(op.call.key()).or_default().push(op);
    }
    by_key
        .into_iter()
        .filter_map(|(key, ops)| {
            let start = initial.get(key).copied().unwrap_or(0);
            check_key(key, &ops, start, max_states)
        })
        .collect()
}

/// The values an operation can leave, from `value`, given its answer.
fn step(value: i64, call: &Call, answer: &Answer) -> Vec<i64> {
    match (call, answer) {
        (Call::Read { .. }, Answer::Value { value: seen }) => {
            if *seen == value {
                vec![value]
            } else {
                vec![]
            }
        }
        (Call::Read { .. }, _) => vec![value],
        (Call::Add { amount, .. }, Answer::Ok) => value.checked_add(*amount).into_iter().collect(),
        (Call::Subtract { amount, .. }, Answer::Ok) => {
            if value >= *amount {
                vec![value - amount]
            } else {
                vec![]
            }
        }
        // A refusal changed nothing; a subtraction is refused only when the
        // value is short (an addition, only on overflow).
        (Call::Subtract { amount, .. }, Answer::Refused) => {
            if value < *amount {
                vec![value]
            } else {
                vec![]
            }
        }
        (Call::Add { .. }, Answer::Refused) => vec![value],
        // No answer: it happened, or it did not.
        (Call::Add { amount, .. }, _) => {
            let mut v = vec![value];
            v.extend(value.checked_add(*amount));
            v
        }
        (Call::Subtract { amount, .. }, _) => {
            let mut v = vec![value];
            if value >= *amount {
                v.push(value - amount);
            }
            v
        }
    }
}

const NIL: usize = usize::MAX;

/// Call and return events of one key's operations in a doubly linked list
/// (index 0 is the head sentinel).
struct Events {
    /// For each event: the operation, and whether it is its call.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call event, its return event.
    ret: Vec<usize>,
    prev: Vec<usize>,
    next: Vec<usize>,
}

impl Events {
    fn new(ops: &[&Op]) -> Self {
        // (time, return-after-call at equal times, op, is call)
        let mut timed: Vec<(u64, u8, usize, bool)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            timed.push((op.invoked_us, 0, i, true));
            timed.push((op.completed_us.unwrap_or(u64::MAX), 1, i, false));
        }
        timed.sort();
        let n = timed.len() + 1;
        let mut e = Events {
            op: vec![NIL; n],
            is_call: vec![false; n],
            ret: vec![NIL; n],
            prev: (0..n).map(|i| i.wrapping_sub(1)).collect(),
            next: (1..=n).collect(),
        };
        e.prev[0] = NIL;
        e.next[n - 1] = NIL;
        let mut call_of = vec![NIL; ops.len()];
        for (k, (_, _, op, is_call)) in timed.into_iter().enumerate() {
            let id = k + 1;
            e.op[id] = op;
            e.is_call[id] = is_call;
            if is_call {
                call_of[op] = id;
            } else {
                e.ret[call_of[op]] = id;
            }
        }
        e
    }

    fn unlink(&mut self, id: usize) {
        let (p, n) = (self.prev[id], self.next[id]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Puts back an unlinked event (in the reverse order of unlinking).
    fn relink(&mut self, id: usize) {
        let (p, n) = (self.prev[id], self.next[id]);
        self.next[p] = id;
        if n != NIL {
            self.prev[n] = id;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.ret[call]);
    }

    fn unlift(&mut self, call: usize) {
        self.relink(self.ret[call]);
        self.relink(call);
    }
}

/// A set of operations as bits.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Taken(Vec<u64>);

impl Taken {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }
    fn with(&self, i: usize) -> Self {
        let mut t = self.clone();
        t.0[i / 64] |= 1 << (i % 64);
        t
    }
    fn without(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// A choice made, to undo: the call taken, the value before it, and which
/// of the values its step allowed was taken.
struct Choice {
    call: usize,
    value: i64,
    option: usize,
}

/// The key's failure, or `None` when its operations are linearizable.
fn check_key(key: &str, ops: &[&Op], start: i64, max_states: usize) -> Option<KeyFailure> {
    let mut events = Events::new(ops);
    let mut taken = Taken::new(ops.len());
    let mut seen: HashSet<(Taken, i64)> = HashSet::new();
    let mut stack: Vec<Choice> = Vec::new();
    let mut value = start;
    let mut at = events.next[0];
    let mut first_option = 0;
    let (mut longest, mut stuck) = (0, None);
    let failure = |why, longest, stuck: Option<usize>| KeyFailure {
        key: key.to_string(),
        ops: ops.len(),
        why,
        longest_prefix: longest,
        stuck_at: stuck.map(|i: usize| ops[i].clone()),
    };
    while at != NIL {
        if seen.len() > max_states {
            return Some(failure(Why::Undecided, longest, stuck));
        }
        let op = events.op[at];
        if events.is_call[at] {
            let options = step(value, &ops[op].call, &ops[op].answer);
            let chosen = options
                .iter()
                .enumerate()
                .skip(first_option)
                .find(|(_, next)| seen.insert((taken.with(op), **next)));
            first_option = 0;
            match chosen {
                Some((option, next)) => {
                    stack.push(Choice {
                        call: at,
                        value,
                        option,
                    });
                    value = *next;
                    taken = taken.with(op);
                    events.lift(at);
                    at = events.next[0];
                }
                None => at = events.next[at],
            }
        } else {
            // This operation's call was not taken before its return: undo.
            if stack.len() >= longest {
                (longest, stuck) = (stack.len(), Some(op));
            }
            let Some(choice) = stack.pop() else {
                return Some(failure(Why::NotLinearizable, longest, stuck));
            };
            events.unlift(choice.call);
            taken.without(events.op[choice.call]);
            value = choice.value;
            at = choice.call;
            first_option = choice.option + 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u32, from: u64, to: Option<u64>, call: Call, answer: Answer) -> Op {
        Op {
            client,
            invoked_us: from,
            completed_us: to,
            call,
            answer,
        }
    }
    fn read(c: u32, from: u64, to: u64, v: i64) -> Op {
        op(
            c,
            from,
            Some(to),
            Call::Read { key: "k".into() },
            Answer::Value { value: v },
        )
    }
    fn add(c: u32, from: u64, to: Option<u64>, n: i64, answer: Answer) -> Op {
        let call = Call::Add {
            key: "k".into(),
            amount: n,
        };
        op(c, from, to, call, answer)
    }
    fn sub(c: u32, from: u64, to: Option<u64>, n: i64, answer: Answer) -> Op {
        let call = Call::Subtract {
            key: "k".into(),
            amount: n,
        };
        op(c, from, to, call, answer)
    }
    fn verdict(ops: &[Op], start: i64) -> Vec<KeyFailure> {
        check(ops, &BTreeMap::from([("k".to_string(), start)]))
    }

    #[test]
    fn sequential_reads_and_writes_that_agree_are_linearizable() {
        let h = [
            read(1, 0, 1, 10),
            add(1, 2, Some(3), 5, Answer::Ok),
            read(2, 4, 5, 15),
            sub(1, 6, Some(7), 20, Answer::Refused),
            sub(2, 8, Some(9), 15, Answer::Ok),
            read(1, 10, 11, 0),
        ];
        assert_eq!(verdict(&h, 10), vec![]);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_not_linearizable() {
        let h = [add(1, 0, Some(1), 5, Answer::Ok), read(2, 2, 3, 7)];
        let bad = verdict(&h, 0);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].key, "k");
        assert_eq!(bad[0].why, Why::NotLinearizable);
        assert_eq!(bad[0].stuck_at.as_ref(), Some(&h[1]));
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_not_linearizable() {
        // The write completed before the read began; the read saw the old
        // value (what a deposed leader answering reads would do).
        let h = [add(1, 0, Some(10), 5, Answer::Ok), read(2, 11, 12, 0)];
        assert_eq!(verdict(&h, 0).len(), 1);
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        let before = [add(1, 0, Some(10), 5, Answer::Ok), read(2, 1, 2, 0)];
        let after = [add(1, 0, Some(10), 5, Answer::Ok), read(2, 1, 2, 5)];
        assert_eq!(verdict(&before, 0), vec![]);
        assert_eq!(verdict(&after, 0), vec![]);
    }

    #[test]
    fn reads_that_see_a_write_and_then_unsee_it_are_not_linearizable() {
        // Both reads overlap the write, but the value cannot go back.
        let h = [
            add(1, 0, Some(100), 5, Answer::Ok),
            read(2, 10, 20, 5),
            read(3, 30, 40, 0),
        ];
        assert_eq!(verdict(&h, 0).len(), 1);
    }

    #[test]
    fn a_lost_acknowledged_write_is_not_linearizable() {
        // The final read after heal misses an acknowledged addition.
        let h = [
            add(1, 0, Some(1), 5, Answer::Ok),
            add(2, 2, Some(3), 7, Answer::Ok),
            read(1, 10, 11, 5),
        ];
        assert_eq!(verdict(&h, 0).len(), 1);
    }

    #[test]
    fn a_write_without_an_answer_may_have_happened_or_not() {
        let happened = [add(1, 0, None, 5, Answer::Unknown), read(2, 10, 11, 5)];
        let did_not = [add(1, 0, None, 5, Answer::Unknown), read(2, 10, 11, 0)];
        assert_eq!(verdict(&happened, 0), vec![]);
        assert_eq!(verdict(&did_not, 0), vec![]);
        // ... but only once, and not before it was invoked.
        let twice = [add(1, 0, None, 5, Answer::Unknown), read(2, 10, 11, 10)];
        let early = [read(2, 0, 1, 5), add(1, 2, None, 5, Answer::Unknown)];
        assert_eq!(verdict(&twice, 0).len(), 1);
        assert_eq!(verdict(&early, 0).len(), 1);
    }

    #[test]
    fn a_refused_subtraction_means_the_value_was_short_when_it_ran() {
        // Refused for want of 10 while the value was 10 the whole time.
        let h = [
            read(1, 0, 1, 10),
            sub(2, 2, Some(3), 10, Answer::Refused),
            read(1, 4, 5, 10),
        ];
        assert_eq!(verdict(&h, 10).len(), 1);
        // Concurrent with a subtraction that made it short: fine.
        let h = [
            sub(1, 0, Some(10), 5, Answer::Ok),
            sub(2, 1, Some(9), 10, Answer::Refused),
            read(1, 11, 12, 5),
        ];
        assert_eq!(verdict(&h, 10), vec![]);
    }

    #[test]
    fn two_subtractions_of_the_last_unit_cannot_both_succeed() {
        let h = [
            sub(1, 0, Some(10), 1, Answer::Ok),
            sub(2, 0, Some(10), 1, Answer::Ok),
        ];
        assert_eq!(verdict(&h, 1).len(), 1);
        assert_eq!(verdict(&h, 2), vec![]);
    }

    #[test]
    fn keys_are_checked_apart() {
        let other = |v| {
            op(
                1,
                0,
                Some(1),
                Call::Read { key: "x".into() },
                Answer::Value { value: v },
            )
        };
        let h = [read(2, 0, 1, 3), other(4)];
        let initial = BTreeMap::from([("k".to_string(), 3), ("x".to_string(), 3)]);
        let bad = check(&h, &initial);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].key, "x");
    }

    #[test]
    fn many_concurrent_clients_are_checked_without_exploring_every_order() {
        // 8 clients, 400 operations in rounds of 8 overlapping ones (8! orders
        // each), one in 20 unanswered, a read of the sum after each round.
        let mut h = Vec::new();
        let mut acked = 1000;
        for round in 0..50u64 {
            let t = round * 100;
            for c in 0..8u32 {
                let from = t + u64::from(c);
                if (round * 8 + u64::from(c)) % 20 == 7 {
                    h.push(add(c, from, None, 1, Answer::Unknown));
                } else {
                    acked += 1;
                    h.push(add(c, from, Some(t + 50), 1, Answer::Ok));
                }
            }
            // Every unanswered addition so far happened by the time of this read.
            let unknown_so_far = h.iter().filter(|o| o.completed_us.is_none()).count() as i64;
            h.push(read(9, t + 60, t + 61, acked + unknown_so_far));
        }
        assert_eq!(verdict(&h, 1000), vec![]);
        // One acknowledged addition too few in the last read: refused.
        let last = h.pop().unwrap();
        let Answer::Value { value } = last.answer else {
            unreachable!()
        };
        h.push(read(9, 5060, 5061, value - 1 - 20));
        assert_eq!(verdict(&h, 1000).len(), 1);
    }

    #[test]
    fn a_search_that_explodes_gives_up_undecided() {
        // 40 unanswered additions of distinct amounts, then a read of a sum
        // no subset makes: every subset is a state.
        let mut h: Vec<Op> = (0..40)
            .map(|i| add(i, 0, None, 1 << (i % 20), Answer::Unknown))
            .collect();
        h.push(read(99, 10, 11, -1));
        let initial = BTreeMap::from([("k".to_string(), 0)]);
        let bad = check_within(&h, &initial, 10_000);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].why, Why::Undecided);
    }
}
