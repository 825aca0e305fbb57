//! What the cluster's nodes did for the load, per service and per answer:
//! Raft entries proposed, log syncs (each one group commit with one
//! `fdatasync`, for every shard of the node) and HTTP requests served,
//! from every node's own counters read at load start and at its end.
//!
//! The cluster's cost is per message and per entry rather than per byte
//! (docs/loadtest.md, Where the time goes): these counts are what the CPU
//! figure follows, and unlike it they are hardly noisy, so a change meant
//! to save entries, syncs or messages shows here first.

use std::collections::BTreeMap;
use std::time::Duration;

use cart_cluster::harness::{http_get, LocalCluster, Role};
use cart_common::metrics_page::{increase, Page};
use cart_common::paths::METRICS_PATH;
use cart_common::Service;
use serde::{Deserialize, Serialize};

/// Entries a leader proposed (one observation per entry).
const ENTRIES: &str = "cart_raft_proposal_batch_writes_count";
/// Group commits of the node's log (one observation per fdatasync).
const LOG_SYNCS: &str = "cart_raft_log_flush_duration_seconds_count";
/// Requests the node served, every route.
const REQUESTS: &str = "cart_http_requests_total";

/// How long one node may take to answer for its page.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Every node's counters at load start and at load end.
#[derive(Default)]
pub struct WorkWatch {
    start: BTreeMap<Role, Counts>,
    end: BTreeMap<Role, Counts>,
}

impl WorkWatch {
    /// Reads every node of `cluster` now: at load start, or at its end.
    pub fn read(&mut self, cluster: &LocalCluster, at_start: bool) {
        let into = if at_start {
            &mut self.start
        } else {
            &mut self.end
        };
        for role in cluster.roles() {
            let Role::Node(service, id) = role else {
                continue;
            };
            let Some(addr) = cluster.spec.node_addr(service, id) else {
                continue;
            };
            // A node down at that moment (a fault test) counts from or up
            // to what the other reading has.
            if let Ok((200, body)) = http_get(&addr, METRICS_PATH, SCRAPE_TIMEOUT) {
                into.insert(role, Counts::of(&Page::parse(&body)));
            }
        }
    }

    /// The section of the report, per `answered` request and per
    /// `first_time_ok` checkout (when the scenario counts those).
    pub fn section(&self, answered: u64, first_time_ok: Option<u64>) -> WorkSection {
        let mut by_service: BTreeMap<Service, Counts> = BTreeMap::new();
        for (role, end) in &self.end {
            let Role::Node(service, _) = role else {
                continue;
            };
            let start = self.start.get(role).copied().unwrap_or_default();
            *by_service.entry(*service).or_default() += end.since(start);
        }
        let services: Vec<ServiceWork> = by_service
            .into_iter()
            .map(|(service, counts)| {
                ServiceWork::new(service.name(), counts, answered, first_time_ok)
            })
            .collect();
        let total = services
            .iter()
            .fold(Counts::default(), |sum, s| sum + s.counts);
        WorkSection {
            services,
            total: ServiceWork::new("all", total, answered, first_time_ok),
        }
    }
}

/// The three counts, of one node or summed.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub entries: f64,
    pub log_syncs: f64,
    pub requests: f64,
}

impl Counts {
    fn of(page: &Page) -> Self {
        let all = |_: &_| true;
        Self {
            entries: page.sum(ENTRIES, all),
            log_syncs: page.sum(LOG_SYNCS, all),
            requests: page.sum(REQUESTS, all),
        }
    }

    /// What happened between `earlier` and these (a counter that went down
    /// belongs to a restarted process: all of it is new).
    fn since(self, earlier: Counts) -> Self {
        Self {
            entries: increase(self.entries, earlier.entries),
            log_syncs: increase(self.log_syncs, earlier.log_syncs),
            requests: increase(self.requests, earlier.requests),
        }
    }

    fn per(self, n: u64) -> Option<Counts> {
        (n > 0).then(|| {
            let n = n as f64;
            Counts {
                entries: self.entries / n,
                log_syncs: self.log_syncs / n,
                requests: self.requests / n,
            }
        })
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;

    fn add(self, o: Counts) -> Counts {
        Counts {
            entries: self.entries + o.entries,
            log_syncs: self.log_syncs + o.log_syncs,
            requests: self.requests + o.requests,
        }
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        *self = *self + o;
    }
}

/// One service's nodes (or "all") over the load.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceWork {
    pub service: String,
    #[serde(flatten)]
    pub counts: Counts,
    pub per_answer: Option<Counts>,
    pub per_first_time_ok: Option<Counts>,
}

impl ServiceWork {
    fn new(service: &str, counts: Counts, answered: u64, first_time_ok: Option<u64>) -> Self {
        Self {
            service: service.to_string(),
            counts,
            per_answer: counts.per(answered),
            per_first_time_ok: first_time_ok.and_then(|n| counts.per(n)),
        }
    }
}

/// The report's `work` section.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkSection {
    pub services: Vec<ServiceWork>,
    pub total: ServiceWork,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_page(entries: u64, syncs: u64, requests: [u64; 2]) -> Page {
        Page::parse(&format!(
            "cart_raft_proposal_batch_writes_count {entries}\n\
             cart_raft_log_flush_duration_seconds_count {syncs}\n\
             cart_http_requests_total{{route=\"/raft/append\",status=\"200\"}} {}\n\
             cart_http_requests_total{{route=\"/status\",status=\"200\"}} {}\n",
            requests[0], requests[1]
        ))
    }

    #[test]
    fn counts_sum_every_series_and_a_restarted_node_counts_from_zero() {
        let before = Counts::of(&node_page(10, 30, [100, 5]));
        assert_eq!(
            before,
            Counts {
                entries: 10.0,
                log_syncs: 30.0,
                requests: 105.0
            }
        );
        let after = Counts::of(&node_page(50, 90, [300, 15]));
        assert_eq!(after.since(before).log_syncs, 60.0);
        // Killed and started again: its counters began again at 0.
        let restarted = Counts::of(&node_page(4, 7, [20, 1]));
        assert_eq!(restarted.since(after).entries, 4.0);
    }

    #[test]
    fn the_section_sums_each_services_nodes_and_divides_by_the_answers() {
        let mut watch = WorkWatch::default();
        let order = |id| Role::Node(Service::Order, id);
        let stock = Role::Node(Service::Stock, 1);
        watch
            .start
            .insert(order(1), Counts::of(&node_page(0, 0, [0, 0])));
        watch
            .end
            .insert(order(1), Counts::of(&node_page(200, 400, [800, 0])));
        // Read only at the end (down at the start): counted from zero.
        watch
            .end
            .insert(order(2), Counts::of(&node_page(0, 200, [400, 0])));
        watch
            .start
            .insert(stock, Counts::of(&node_page(10, 10, [10, 0])));
        watch
            .end
            .insert(stock, Counts::of(&node_page(110, 310, [410, 0])));

        let s = watch.section(100, Some(50));
        let names: Vec<&str> = s.services.iter().map(|w| w.service.as_str()).collect();
        assert_eq!(names, ["order", "stock"]);
        assert_eq!(s.services[0].counts.log_syncs, 600.0);
        assert_eq!(s.services[0].per_answer.unwrap().log_syncs, 6.0);
        assert_eq!(s.services[0].per_first_time_ok.unwrap().log_syncs, 12.0);
        assert_eq!(s.total.counts.entries, 300.0);
        assert_eq!(s.total.per_answer.unwrap().requests, 16.0);
        assert!(watch.section(0, None).total.per_answer.is_none());
    }
}
