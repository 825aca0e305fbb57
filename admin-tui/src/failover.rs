//! Which coordinator the console talks to, and which to try when that one
//! stops answering: it starts with the one it was given (plus any the spec
//! names) and learns every coordinator of the cluster from the views.

use cart_common::admin::ClusterView;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coordinators {
    /// Admin addresses, without duplicates; `current` indexes it.
    known: Vec<String>,
    current: usize,
    /// Addresses the last view said were reachable (tried first).
    reachable: Vec<String>,
}

impl Coordinators {
    /// `first` is tried first; `others` (e.g. from the spec) after it.
    pub fn new(first: &str, others: impl IntoIterator<Item = String>) -> Self {
        let mut c = Self {
            known: vec![first.to_string()],
            current: 0,
            reachable: vec![],
        };
        for addr in others {
            c.add(addr);
        }
        c
    }

    fn add(&mut self, addr: String) {
        if !self.known.contains(&addr) {
            self.known.push(addr);
        }
    }

    /// The one the console talks to now.
    pub fn current(&self) -> &str {
        self.known.get(self.current).map_or("", String::as_str)
    }

    /// Every known coordinator (for metrics scrapes).
    pub fn all(&self) -> &[String] {
        &self.known
    }

    /// Remembers every coordinator a view names, and which it could reach.
    pub fn learn(&mut self, view: &ClusterView) {
        self.reachable.clear();
        for s in &view.services {
            for c in &s.coordinators {
                self.add(c.admin.clone());
                if c.reachable {
                    self.reachable.push(c.admin.clone());
                }
            }
        }
    }

    /// The order to try: the current one, then those last seen reachable,
    /// then the rest.
    pub fn candidates(&self) -> Vec<String> {
        let current = self.current().to_string();
        let mut order = vec![current.clone()];
        let (up, rest): (Vec<&String>, Vec<&String>) = self
            .known
            .iter()
            .filter(|a| **a != current)
            .partition(|a| self.reachable.contains(a));
        order.extend(up.into_iter().cloned());
        order.extend(rest.into_iter().cloned());
        order
    }

    /// Talk to `addr` from now on (it just answered).
    pub fn use_addr(&mut self, addr: &str) {
        if let Some(i) = self.known.iter().position(|a| a == addr) {
            self.current = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cart_common::admin::{CoordinatorView, ServiceView};

    fn view(coords: &[(&str, bool)]) -> ClusterView {
        ClusterView {
            generated_at_ms: 0,
            reported_by: "x".into(),
            services: vec![ServiceView {
                service: "stock".into(),
                reported_by: "x".into(),
                leader: None,
                term: None,
                nodes: vec![],
                coordinators: coords
                    .iter()
                    .enumerate()
                    .map(|(i, (a, r))| CoordinatorView {
                        index: i as u16,
                        public: String::new(),
                        admin: a.to_string(),
                        reachable: *r,
                    })
                    .collect(),
                error: None,
                last_check: None,
                shards: vec![],
            }],
            events: vec![],
        }
    }

    #[test]
    fn tries_the_current_then_reachable_then_the_rest() {
        let mut c = Coordinators::new("a", ["z".to_string()]);
        c.learn(&view(&[("a", true), ("b", false), ("c", true)]));
        assert_eq!(c.candidates(), ["a", "c", "z", "b"]);
        c.use_addr("c");
        assert_eq!(c.current(), "c");
        assert_eq!(c.candidates()[0], "c");
        assert_eq!(c.all().len(), 4);
    }

    #[test]
    fn an_unknown_address_does_not_move_the_current_one() {
        let mut c = Coordinators::new("a", []);
        c.use_addr("nowhere");
        assert_eq!(c.current(), "a");
    }
}
