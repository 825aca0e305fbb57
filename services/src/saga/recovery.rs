//! What a new leader took over: the checkouts its predecessors left open.
//!
//! Counted once per term, when the open checkouts are first loaded (by the
//! sweeper's take-over or by the term's first take of stock, whichever
//! comes first). Counting at the sweeper's take-over alone missed them
//! when clients' retries, joined on the new leader, finished every inherited
//! checkout before the sweeper had confirmed its leadership. Checkouts begun
//! in this term are not counted: a begin is stamped when its leader
//! proposes it, so a predecessor's begins are stamped before the election
//! that ended its term, and this node's after it first saw itself lead
//! (in `Sagas::leadership`, which the sweeper runs as soon as the
//! leadership changes). Not exactly: a begin proposed here before that
//! first sighting (the sweeper not yet scheduled) counts as taken over.
//! Only the event's count can be off by that; nothing is driven by it.

use std::sync::Mutex;

use crate::api::SagaRecovery;
use crate::domain::Checkout;

#[derive(Default)]
pub(super) struct Recoveries {
    /// The latest term this node saw itself lead, and when it first did.
    leading_since: Mutex<Option<(u64, u64)>>,
    last: Mutex<Option<SagaRecovery>>,
}

impl Recoveries {
    /// Notes that this node leads `term` as of `now_ms` (the first call for
    /// a term is the one kept).
    pub fn saw_leading(&self, term: u64, now_ms: u64) {
        let mut since = self.leading_since.lock().unwrap_or_else(|p| p.into_inner());
        if since.is_none_or(|(t, _)| t != term) {
            *since = Some((term, now_ms));
        }
    }

    /// Records what the open checkouts loaded for `term` hold of earlier
    /// terms; returns how many that is (none: nothing recorded).
    pub fn took_over(&self, term: u64, open: &[Checkout], now_ms: u64) -> u64 {
        let since = match *self.leading_since.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((t, ms)) if t == term => ms,
            // Not seen leading this term (cannot happen: loads follow a
            // leadership check): every open checkout counts.
            _ => now_ms,
        };
        let inherited = open.iter().filter(|c| c.started_ms < since).count() as u64;
        if inherited > 0 {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(SagaRecovery {
                term,
                at_ms: now_ms,
                resumed: inherited,
            });
        }
        inherited
    }

    pub fn last(&self) -> Option<SagaRecovery> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CheckoutState;

    fn begun_at(started_ms: u64) -> Checkout {
        Checkout {
            tx_id: format!("tx-{started_ms}"),
            order_id: "o".into(),
            user_id: "u".into(),
            amount: 1,
            items: vec![],
            state: CheckoutState::Started,
            started_ms,
            finished_ms: None,
        }
    }

    #[test]
    fn only_checkouts_begun_before_the_term_are_taken_over() {
        let r = Recoveries::default();
        r.saw_leading(5, 1_000);
        // Seen again later in the same term: the first sighting stays.
        r.saw_leading(5, 1_500);
        let open = [
            begun_at(900),
            begun_at(999),
            begun_at(1_000),
            begun_at(1_200),
        ];
        assert_eq!(r.took_over(5, &open, 1_600), 2);
        let last = r.last().expect("a recovery recorded");
        assert_eq!((last.term, last.resumed, last.at_ms), (5, 2, 1_600));
    }

    #[test]
    fn a_term_that_inherits_nothing_keeps_the_last_recovery() {
        let r = Recoveries::default();
        r.saw_leading(5, 1_000);
        assert_eq!(r.took_over(5, &[begun_at(900)], 1_100), 1);
        r.saw_leading(8, 2_000);
        assert_eq!(r.took_over(8, &[begun_at(2_000)], 2_100), 0);
        assert_eq!(r.last().map(|l| l.term), Some(5));
    }
}
