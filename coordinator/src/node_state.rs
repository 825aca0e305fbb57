//! The node-down protocol as a pure function: given what a coordinator saw of
//! a node this round, its next status and the event to record, if any.
//!
//! ```text
//!   unknown ──reachable, caught up──▶ up ◀──lag ≤ bound── catching_up
//!      │                              │                        ▲
//!      └──────── unreachable ──▶    down ──answers again───────┘
//! ```
//!
//! "Unreachable" is either enough failed probes in a row, the leader
//! reporting that its Raft RPCs to the node fail, or the node itself saying
//! that its storage fails (it then takes no writes and does not lead).

use cart_common::admin::NodeHealth;

/// What a coordinator learned about one node in one probe round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observation {
    /// Failed probes in a row (0 after a successful one).
    pub probe_failures: u32,
    /// The leader's latest report says its RPCs to this node fail.
    pub leader_cannot_reach: bool,
    /// Entries behind the leader; `None` while no leader reports on it.
    pub lag_entries: Option<u64>,
    /// The node answered, saying its storage fails.
    pub storage_failing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Down(DownSource),
    /// Answers again: now catching up.
    Returned,
    CaughtUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownSource {
    Probe,
    Leader,
    Storage,
}

impl DownSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DownSource::Probe => "probe",
            DownSource::Leader => "leader",
            DownSource::Storage => "storage",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub failures_before_down: u32,
    pub caught_up_lag_entries: u64,
}

/// The next status of a node and the transitions taken to reach it (at most
/// two: a node that returns already caught up is `node_up` then `caught_up`).
pub fn next(prev: NodeHealth, seen: Observation, rules: Rules) -> (NodeHealth, Vec<Transition>) {
    let probe_down = seen.probe_failures >= rules.failures_before_down;
    if seen.storage_failing || probe_down || seen.leader_cannot_reach {
        if prev == NodeHealth::Down {
            return (NodeHealth::Down, vec![]);
        }
        let source = if seen.storage_failing {
            DownSource::Storage
        } else if probe_down {
            DownSource::Probe
        } else {
            DownSource::Leader
        };
        return (NodeHealth::Down, vec![Transition::Down(source)]);
    }
    if seen.probe_failures > 0 {
        // A probe failed, but not enough to call it down: keep the status.
        return (prev, vec![]);
    }
    let caught_up = seen
        .lag_entries
        .is_some_and(|lag| lag <= rules.caught_up_lag_entries);
    match prev {
        NodeHealth::Down if caught_up => (
            NodeHealth::Up,
            vec![Transition::Returned, Transition::CaughtUp],
        ),
        NodeHealth::Down => (NodeHealth::CatchingUp, vec![Transition::Returned]),
        NodeHealth::CatchingUp if caught_up => (NodeHealth::Up, vec![Transition::CaughtUp]),
        NodeHealth::CatchingUp => (NodeHealth::CatchingUp, vec![]),
        // First sight (coordinator start, new member): no event, just a
        // status, once a leader has reported on it.
        NodeHealth::Unknown if caught_up => (NodeHealth::Up, vec![]),
        NodeHealth::Unknown if seen.lag_entries.is_some() => (NodeHealth::CatchingUp, vec![]),
        NodeHealth::Unknown => (NodeHealth::Unknown, vec![]),
        NodeHealth::Up => (NodeHealth::Up, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        failures_before_down: 2,
        caught_up_lag_entries: 10,
    };

    fn seen(failures: u32, leader_cannot_reach: bool, lag: Option<u64>) -> Observation {
        Observation {
            probe_failures: failures,
            leader_cannot_reach,
            lag_entries: lag,
            storage_failing: false,
        }
    }

    #[test]
    fn a_node_whose_storage_fails_is_down_at_once_and_returns_when_it_heals() {
        let failing = Observation {
            storage_failing: true,
            ..seen(0, false, Some(0))
        };
        assert_eq!(
            next(NodeHealth::Up, failing, RULES),
            (
                NodeHealth::Down,
                vec![Transition::Down(DownSource::Storage)]
            )
        );
        assert_eq!(
            next(NodeHealth::Down, failing, RULES),
            (NodeHealth::Down, vec![])
        );
        assert_eq!(
            next(NodeHealth::Down, seen(0, false, Some(0)), RULES).0,
            NodeHealth::Up
        );
    }

    #[test]
    fn one_failed_probe_is_not_down_two_are() {
        let up = NodeHealth::Up;
        assert_eq!(next(up, seen(1, false, None), RULES), (up, vec![]));
        assert_eq!(
            next(up, seen(2, false, None), RULES),
            (NodeHealth::Down, vec![Transition::Down(DownSource::Probe)])
        );
    }

    #[test]
    fn the_leaders_report_marks_down_at_once_and_only_once() {
        let (status, events) = next(NodeHealth::Up, seen(0, true, Some(500)), RULES);
        assert_eq!(status, NodeHealth::Down);
        assert_eq!(events, vec![Transition::Down(DownSource::Leader)]);
        assert_eq!(
            next(NodeHealth::Down, seen(3, true, None), RULES),
            (NodeHealth::Down, vec![])
        );
    }

    #[test]
    fn a_returning_node_catches_up_before_it_is_up() {
        let (status, events) = next(NodeHealth::Down, seen(0, false, Some(400)), RULES);
        assert_eq!(status, NodeHealth::CatchingUp);
        assert_eq!(events, vec![Transition::Returned]);
        // No leader report yet: still catching up.
        assert_eq!(
            next(status, seen(0, false, None), RULES).0,
            NodeHealth::CatchingUp
        );
        let (status, events) = next(status, seen(0, false, Some(3)), RULES);
        assert_eq!(status, NodeHealth::Up);
        assert_eq!(events, vec![Transition::CaughtUp]);
    }

    #[test]
    fn a_node_back_already_caught_up_gets_both_events() {
        let (status, events) = next(NodeHealth::Down, seen(0, false, Some(0)), RULES);
        assert_eq!(status, NodeHealth::Up);
        assert_eq!(events, vec![Transition::Returned, Transition::CaughtUp]);
    }

    #[test]
    fn first_sight_records_no_event() {
        assert_eq!(
            next(NodeHealth::Unknown, seen(0, false, Some(0)), RULES),
            (NodeHealth::Up, vec![])
        );
        assert_eq!(
            next(NodeHealth::Unknown, seen(0, false, Some(99)), RULES),
            (NodeHealth::CatchingUp, vec![])
        );
        assert_eq!(
            next(NodeHealth::Unknown, seen(0, false, None), RULES),
            (NodeHealth::Unknown, vec![])
        );
    }
}
