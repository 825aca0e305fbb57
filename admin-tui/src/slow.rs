//! Why a group is slow: from the latest node loads and the view's lag,
//! whether its leader cannot keep up (writes queue), a disk is slow (one
//! replica's fsync p99 far above the others'), or a follower falls behind
//! (seconds of lag). The thresholds are deliberately coarse: they point an
//! operator at the right replica, the numbers beside them say how bad.

use cart_common::admin::{NodeHealth, ServiceView};

use crate::metrics::Traffic;

/// Writes queued on the leader beyond which it is behind its clients: a
/// healthy leader drains its queue into the next entry, so more than a few
/// entries' worth (256 writes each) waiting is a leader that cannot keep up.
pub const BUSY_QUEUE: f64 = 512.0;
/// An fsync p99 at or above this, and ...
pub const SLOW_FSYNC_MS: f64 = 20.0;
/// ... at least this many times the fastest other replica's, is a slow disk.
pub const SLOW_FSYNC_RATIO: f64 = 3.0;
/// A follower this many seconds behind its leader is slow (or cut off).
pub const SLOW_FOLLOWER_SECS: f64 = 1.0;

#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    Overloaded { leader: u64, queue: f64 },
    SlowDisk { node: u64, p99_ms: f64 },
    SlowFollower { node: u64, lag_secs: f64 },
}

impl Finding {
    pub fn text(&self) -> String {
        match self {
            Finding::Overloaded { leader, queue } => {
                format!("leader {leader} overloaded ({queue:.0} writes queued)")
            }
            Finding::SlowDisk { node, p99_ms } => {
                format!("slow disk on node {node} (fsync p99 {p99_ms:.0} ms)")
            }
            Finding::SlowFollower { node, lag_secs } => {
                format!("node {node} falls behind ({lag_secs:.1} s)")
            }
        }
    }
}

/// Everything that looks wrong with `s`'s group, worst kind first.
pub fn diagnose(s: &ServiceView, traffic: &Traffic) -> Vec<Finding> {
    let mut found = vec![];
    let loads: Vec<_> = traffic.loads(&s.service).collect();
    if let Some(leader) = s.leader {
        if let Some((_, load)) = loads.iter().find(|(id, _)| *id == leader) {
            if load.queue >= BUSY_QUEUE {
                found.push(Finding::Overloaded {
                    leader,
                    queue: load.queue,
                });
            }
        }
    }
    let fsyncs: Vec<(u64, f64)> = loads
        .iter()
        .filter_map(|(id, l)| l.fsync_p99_ms.map(|ms| (*id, ms)))
        .collect();
    for (node, p99_ms) in &fsyncs {
        let fastest_other = fsyncs
            .iter()
            .filter(|(id, _)| id != node)
            .map(|(_, ms)| *ms)
            .fold(f64::INFINITY, f64::min);
        if *p99_ms >= SLOW_FSYNC_MS && *p99_ms >= SLOW_FSYNC_RATIO * fastest_other {
            found.push(Finding::SlowDisk {
                node: *node,
                p99_ms: *p99_ms,
            });
        }
    }
    for n in &s.nodes {
        let lag_secs = n.lag_seconds.unwrap_or(0.0);
        if n.status != NodeHealth::Down && lag_secs >= SLOW_FOLLOWER_SECS {
            found.push(Finding::SlowFollower {
                node: n.id,
                lag_secs,
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{NodeKey, NodeLoad};
    use cart_common::admin::NodeView;

    fn view(lags: [f64; 3]) -> ServiceView {
        let node = |id: u64| NodeView {
            id,
            addr: String::new(),
            status: NodeHealth::Up,
            down_reason: None,
            role: None,
            voter: true,
            term: None,
            commit_index: None,
            applied_index: None,
            last_log_index: None,
            lag_entries: None,
            lag_seconds: Some(lags[id as usize - 1]),
            last_seen_ms_ago: None,
            storage: None,
            leads: vec![],
        };
        ServiceView {
            service: "stock".into(),
            reported_by: String::new(),
            leader: Some(1),
            term: None,
            nodes: (1..=3).map(node).collect(),
            coordinators: vec![],
            error: None,
            last_check: None,
            shards: vec![],
        }
    }

    fn traffic(queue: f64, fsync_ms: [Option<f64>; 3]) -> Traffic {
        let mut t = Traffic::default();
        for (i, fsync_p99_ms) in fsync_ms.into_iter().enumerate() {
            let key = NodeKey {
                service: "stock".into(),
                id: i as u64 + 1,
            };
            let queue = if i == 0 { queue } else { 0.0 };
            t.set_load(
                key,
                NodeLoad {
                    queue,
                    fsync_p99_ms,
                    ..NodeLoad::default()
                },
            );
        }
        t
    }

    #[test]
    fn a_healthy_group_has_no_finding() {
        let t = traffic(3.0, [Some(2.0), Some(3.0), None]);
        assert_eq!(diagnose(&view([0.0, 0.01, 0.2]), &t), vec![]);
    }

    #[test]
    fn a_long_queue_on_the_leader_is_an_overloaded_leader() {
        let t = traffic(4000.0, [Some(2.0), Some(2.0), Some(2.0)]);
        let found = diagnose(&view([0.0; 3]), &t);
        assert_eq!(
            found,
            vec![Finding::Overloaded {
                leader: 1,
                queue: 4000.0
            }]
        );
        assert_eq!(found[0].text(), "leader 1 overloaded (4000 writes queued)");
    }

    #[test]
    fn one_replica_far_slower_to_fsync_is_a_slow_disk() {
        let t = traffic(0.0, [Some(2.0), Some(80.0), Some(3.0)]);
        let found = diagnose(&view([0.0; 3]), &t);
        assert_eq!(
            found,
            vec![Finding::SlowDisk {
                node: 2,
                p99_ms: 80.0
            }]
        );
        // All equally slow is a slow machine, not one slow disk.
        let t = traffic(0.0, [Some(60.0), Some(80.0), Some(70.0)]);
        assert_eq!(diagnose(&view([0.0; 3]), &t), vec![]);
    }

    #[test]
    fn a_follower_seconds_behind_is_a_slow_follower() {
        let t = traffic(0.0, [None; 3]);
        let found = diagnose(&view([0.0, 0.0, 4.5]), &t);
        assert_eq!(
            found,
            vec![Finding::SlowFollower {
                node: 3,
                lag_secs: 4.5
            }]
        );
        assert_eq!(found[0].text(), "node 3 falls behind (4.5 s)");
    }
}
