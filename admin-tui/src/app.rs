//! The console's state and everything that changes it: key presses,
//! refreshed cluster views, metrics scrapes and the answers to actions. No
//! I/O here: the event loop (`run.rs`) feeds it and carries out the
//! `Effect`s it returns, and the views render it.

use std::time::Duration;

use cart_common::admin::{CheckReport, ClusterView, Event};
use cart_common::spec::NodeId;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::action::{Action, ActionOutcome};
use crate::format;
use crate::keys::{self, Command};
use crate::metrics::{NodeKey, Traffic};
use cart_common::admin_client::AdminError;

/// The views, in tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tab {
    Cluster,
    Consistency,
    Events,
    Traffic,
    Transactions,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Cluster,
        Tab::Consistency,
        Tab::Events,
        Tab::Traffic,
        Tab::Transactions,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Cluster => "Cluster",
            Tab::Consistency => "Consistency",
            Tab::Events => "Events",
            Tab::Traffic => "Traffic",
            Tab::Transactions => "Transactions",
        }
    }

    pub fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn step(self, by: isize) -> Tab {
        let n = Tab::ALL.len() as isize;
        let i = (self.index() as isize + by).rem_euclid(n);
        Tab::ALL[i as usize]
    }
}

/// Why the console refuses actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// No admin token was given.
    NoToken,
    /// `--read-only`.
    ReadOnlyFlag,
}

impl Access {
    pub fn read_only(self) -> bool {
        self != Access::ReadWrite
    }

    /// What the status line says when an action is refused.
    pub fn refusal(self) -> &'static str {
        match self {
            Access::ReadWrite => "",
            Access::NoToken => {
                "read-only: no admin token (start with --token or CART_ADMIN_TOKEN to act)"
            }
            Access::ReadOnlyFlag => "read-only (--read-only): actions are disabled",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Button {
    Cancel,
    Confirm,
}

/// The confirm dialog of an action. Cancel has the focus when it opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    pub action: Action,
    pub focus: Button,
    /// The node id being typed, for an addition.
    pub input: Option<String>,
    /// Why the last Enter was refused (a bad node id).
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Popup {
    Help,
    Confirm(Dialog),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Success,
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub text: String,
    pub level: Level,
}

/// What the event loop must do for the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Perform(Action),
    RefreshNow,
}

/// A selectable row of the cluster and consistency views: a service, or
/// one of its nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub service: String,
    pub node: Option<NodeId>,
}

/// How the last refresh went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Nothing answered or failed yet.
    Connecting(String),
    Connected(String),
    /// No coordinator answered: each tried, with why.
    Unreachable(Vec<(String, String)>),
}

/// One refresh of the cluster view.
#[derive(Clone, Debug, PartialEq)]
pub struct Refresh {
    pub at_ms: u64,
    /// Coordinators that did not answer, with why, in the order tried.
    pub failed: Vec<(String, String)>,
    /// The coordinator that answered, and its view.
    pub answer: Option<(String, ClusterView)>,
}

/// One round of `/metrics` scrapes: each page, or `None` if its process did
/// not answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrapes {
    pub at_ms: u64,
    /// By coordinator admin address.
    pub coordinators: Vec<(String, Option<String>)>,
    /// Every node of the last view.
    pub nodes: Vec<(NodeKey, Option<String>)>,
}

/// A check, repair or rebuild whose report has not shown yet.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    service: String,
    check_id: String,
    title: String,
    since_ms: u64,
}

/// How long to wait for a report before giving up on it.
pub const PENDING_FOR: Duration = Duration::from_secs(10 * 60);
/// Rows a page key moves.
const PAGE: usize = 10;
/// The console's own records kept in the events view.
const LOCAL_EVENTS: usize = 200;

pub struct App {
    pub tab: Tab,
    pub access: Access,
    pub view: Option<ClusterView>,
    /// When the shown view was fetched.
    pub view_at_ms: Option<u64>,
    pub link: Link,
    pub selection: Option<Selection>,
    /// The highlighted row of the events view (0 = newest).
    pub event_row: usize,
    pub event_filter: Option<String>,
    pub popup: Option<Popup>,
    pub status: Option<Status>,
    /// Results of the console's own actions, newest first, shown with the
    /// cluster's events.
    pub local_events: Vec<Event>,
    pub traffic: Traffic,
    pub now_ms: u64,
    pub quit: bool,
    pending: Vec<Pending>,
    local_seq: u64,
}

impl App {
    pub fn new(access: Access, coordinator: &str, now_ms: u64) -> Self {
        let status = access.read_only().then(|| Status {
            text: access.refusal().to_string(),
            level: Level::Warning,
        });
        Self {
            tab: Tab::Cluster,
            access,
            view: None,
            view_at_ms: None,
            link: Link::Connecting(coordinator.to_string()),
            selection: None,
            event_row: 0,
            event_filter: None,
            popup: None,
            status,
            local_events: vec![],
            traffic: Traffic::default(),
            now_ms,
            quit: false,
            pending: vec![],
            local_seq: 0,
        }
    }

    pub fn on_tick(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        let now = self.now_ms;
        self.pending
            .retain(|p| u128::from(now.saturating_sub(p.since_ms)) < PENDING_FOR.as_millis());
    }

    /// A round of scrapes of the coordinators' and the nodes' `/metrics`.
    pub fn on_metrics(&mut self, scrapes: &Scrapes) {
        self.traffic
            .record_coordinators(scrapes.at_ms, &scrapes.coordinators);
        self.traffic.record_nodes(scrapes.at_ms, &scrapes.nodes);
    }

    /// A new cluster view, or the news that no coordinator answered (the
    /// last view stays on screen, marked stale).
    pub fn on_refresh(&mut self, refresh: Refresh) {
        self.now_ms = self.now_ms.max(refresh.at_ms);
        let Some((via, view)) = refresh.answer else {
            self.link = Link::Unreachable(refresh.failed);
            return;
        };
        let switched = match &self.link {
            Link::Connected(old) | Link::Connecting(old) => old != &via,
            Link::Unreachable(_) => !refresh.failed.is_empty(),
        };
        if switched && !refresh.failed.is_empty() {
            let dead: Vec<&str> = refresh.failed.iter().map(|(a, _)| a.as_str()).collect();
            self.set_status(
                Level::Warning,
                format!(
                    "coordinator {} unreachable; switched to {via}",
                    dead.join(", ")
                ),
            );
        }
        self.link = Link::Connected(via);
        self.view = Some(view);
        self.view_at_ms = Some(refresh.at_ms);
        self.fix_selection();
    }

    /// What a coordinator answered to an action (or why it did not).
    pub fn on_action_done(&mut self, action: &Action, result: Result<ActionOutcome, AdminError>) {
        let service = action.service().unwrap_or("all").to_string();
        match result {
            Err(e) => {
                let text = format!("{} failed: {e}", action.title());
                self.record(&service, action.node(), &text);
                self.set_status(Level::Error, text);
            }
            Ok(ActionOutcome::Started(started)) => {
                for s in &started {
                    self.pending.push(Pending {
                        service: s.service.clone(),
                        check_id: s.check_id.clone(),
                        title: match action {
                            Action::CheckAll => format!("check of {}", s.service),
                            other => other.title(),
                        },
                        since_ms: self.now_ms,
                    });
                }
                let ids: Vec<&str> = started.iter().map(|s| s.check_id.as_str()).collect();
                let text = format!(
                    "{} started ({}); waiting for its report",
                    action.title(),
                    ids.join(", ")
                );
                self.record(&service, action.node(), &text);
                self.set_status(Level::Info, text);
            }
            Ok(ActionOutcome::Membership(m)) => {
                let what = if m.changed {
                    "done"
                } else {
                    "nothing to change"
                };
                let text = format!(
                    "{}: {what}; voters {:?}, learners {:?}",
                    action.title(),
                    m.voters,
                    m.learners
                );
                self.record(&service, action.node(), &text);
                self.set_status(Level::Success, text);
            }
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Option<Effect> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return None;
        }
        match self.popup.take() {
            Some(Popup::Help) => {
                let closes = matches!(
                    key.code,
                    KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter
                );
                if !closes {
                    self.popup = Some(Popup::Help);
                }
                return None;
            }
            Some(Popup::Confirm(dialog)) => return self.on_dialog_key(dialog, key),
            None => {}
        }
        let command = keys::command(key)?;
        if keys::is_mutating(command) && self.access.read_only() {
            self.set_status(Level::Warning, self.access.refusal().to_string());
            return None;
        }
        match command {
            Command::ShowTab(tab) => self.tab = tab,
            Command::NextTab => self.tab = self.tab.step(1),
            Command::PrevTab => self.tab = self.tab.step(-1),
            Command::Up => self.move_by(-1),
            Command::Down => self.move_by(1),
            Command::PageUp => self.move_by(-(PAGE as isize)),
            Command::PageDown => self.move_by(PAGE as isize),
            Command::First => self.move_by(isize::MIN / 2),
            Command::Last => self.move_by(isize::MAX / 2),
            Command::CycleFilter => self.cycle_filter(),
            Command::Refresh => return Some(Effect::RefreshNow),
            Command::Help => self.popup = Some(Popup::Help),
            Command::Quit => self.quit = true,
            Command::CheckAll => self.confirm(Action::CheckAll),
            Command::CheckService => {
                if let Some(service) = self.selected_service() {
                    self.confirm(Action::Check { service });
                }
            }
            Command::RepairService => {
                if let Some(service) = self.selected_service() {
                    self.confirm(Action::RepairService { service });
                }
            }
            Command::RepairNode => {
                if let Some((service, node)) = self.selected_node() {
                    self.confirm(Action::RepairNode { service, node });
                }
            }
            Command::Rebuild => {
                if let Some((service, node)) = self.selected_node() {
                    self.confirm(Action::Rebuild { service, node });
                }
            }
            Command::RemoveNode => {
                if let Some((service, node)) = self.selected_node() {
                    self.confirm(Action::RemoveNode { service, node });
                }
            }
            Command::AddNode => {
                if let Some(service) = self.selected_service() {
                    let next = self.next_node_id(&service);
                    self.popup = Some(Popup::Confirm(Dialog {
                        action: Action::AddNode {
                            service,
                            node: next,
                        },
                        focus: Button::Cancel,
                        input: Some(next.to_string()),
                        error: None,
                    }));
                }
            }
        }
        None
    }

    fn on_dialog_key(&mut self, mut dialog: Dialog, key: KeyEvent) -> Option<Effect> {
        match key.code {
            KeyCode::Esc => {
                self.set_status(Level::Info, format!("{}: cancelled", dialog.action.title()));
                return None;
            }
            KeyCode::Tab
            | KeyCode::BackTab
            | KeyCode::Left
            | KeyCode::Right
            | KeyCode::Char('h')
            | KeyCode::Char('l') => {
                dialog.focus = match dialog.focus {
                    Button::Cancel => Button::Confirm,
                    Button::Confirm => Button::Cancel,
                };
            }
            KeyCode::Enter if dialog.focus == Button::Cancel => {
                self.set_status(Level::Info, format!("{}: cancelled", dialog.action.title()));
                return None;
            }
            KeyCode::Enter => return self.press_confirm(dialog),
            KeyCode::Char(c) if c.is_ascii_digit() => {
                if let Some(input) = dialog.input.as_mut() {
                    if input.len() < 4 {
                        input.push(c);
                    }
                    dialog.error = None;
                }
            }
            KeyCode::Backspace => {
                if let Some(input) = dialog.input.as_mut() {
                    input.pop();
                    dialog.error = None;
                }
            }
            _ => {}
        }
        self.popup = Some(Popup::Confirm(dialog));
        None
    }

    fn press_confirm(&mut self, mut dialog: Dialog) -> Option<Effect> {
        if let (Action::AddNode { node, .. }, Some(input)) = (&mut dialog.action, &dialog.input) {
            match input.parse::<NodeId>() {
                Ok(id) if id >= 1 => *node = id,
                _ => {
                    dialog.error = Some("type a node id (1 or more)".into());
                    self.popup = Some(Popup::Confirm(dialog));
                    return None;
                }
            }
        }
        let action = dialog.action;
        self.set_status(Level::Info, format!("{}: sent…", action.title()));
        Some(Effect::Perform(action))
    }

    fn confirm(&mut self, action: Action) {
        self.popup = Some(Popup::Confirm(Dialog {
            action,
            focus: Button::Cancel,
            input: None,
            error: None,
        }));
    }

    fn set_status(&mut self, level: Level, text: String) {
        self.status = Some(Status { text, level });
    }

    /// Appends one of the console's own records to the events view.
    fn record(&mut self, service: &str, node: Option<NodeId>, message: &str) {
        self.local_seq += 1;
        self.local_events.insert(
            0,
            Event {
                id: format!("console#{}", self.local_seq),
                at_ms: self.now_ms,
                service: service.to_string(),
                kind: "console".into(),
                node,
                observer: "console".into(),
                observers: vec![],
                message: message.to_string(),
                detail: serde_json::Value::Null,
            },
        );
        self.local_events.truncate(LOCAL_EVENTS);
    }

    /// The report of a check, repair or rebuild this console started (looked
    /// up by its id: the view's `last_check` may already be a later one, such
    /// as a leader's own periodic check).
    pub fn on_check_report(&mut self, report: &CheckReport) {
        let Some(i) = self
            .pending
            .iter()
            .position(|p| p.check_id == report.check_id)
        else {
            return;
        };
        let p = self.pending.remove(i);
        let (level, summary) = summarize(report);
        let text = format!("{}: {summary}", p.title);
        self.record(&p.service, None, &text);
        self.set_status(level, text);
    }

    /// Selectable rows, in screen order: each service, then its nodes.
    pub fn rows(&self) -> Vec<Selection> {
        let Some(view) = &self.view else {
            return vec![];
        };
        let mut rows = vec![];
        for s in &view.services {
            rows.push(Selection {
                service: s.service.clone(),
                node: None,
            });
            for n in &s.nodes {
                rows.push(Selection {
                    service: s.service.clone(),
                    node: Some(n.id),
                });
            }
        }
        rows
    }

    /// Keeps the selection on a row that exists: the same one if it still
    /// does, else its service, else the first row.
    fn fix_selection(&mut self) {
        let rows = self.rows();
        let keep = self.selection.as_ref().and_then(|sel| {
            rows.iter().find(|r| *r == sel).or_else(|| {
                rows.iter()
                    .find(|r| r.service == sel.service && r.node.is_none())
            })
        });
        self.selection = keep.or(rows.first()).cloned();
        let events = self.events().len();
        self.event_row = self.event_row.min(events.saturating_sub(1));
    }

    fn move_by(&mut self, by: isize) {
        if self.tab == Tab::Events {
            let last = self.events().len().saturating_sub(1) as isize;
            self.event_row = (self.event_row as isize).saturating_add(by).clamp(0, last) as usize;
            return;
        }
        let rows = self.rows();
        if rows.is_empty() {
            return;
        }
        let at = self
            .selection
            .as_ref()
            .and_then(|s| rows.iter().position(|r| r == s))
            .unwrap_or(0) as isize;
        let to = at.saturating_add(by).clamp(0, rows.len() as isize - 1) as usize;
        self.selection = rows.get(to).cloned();
    }

    fn selected_service(&mut self) -> Option<String> {
        let service = self.selection.as_ref().map(|s| s.service.clone());
        if service.is_none() {
            self.set_status(Level::Warning, "no service to act on yet".into());
        }
        service
    }

    fn selected_node(&mut self) -> Option<(String, NodeId)> {
        match &self.selection {
            Some(Selection {
                service,
                node: Some(node),
            }) => Some((service.clone(), *node)),
            _ => {
                self.set_status(Level::Warning, "select a node first (↑/↓)".into());
                None
            }
        }
    }

    /// The id an addition proposes: one above the highest the service has.
    fn next_node_id(&self, service: &str) -> NodeId {
        self.view
            .as_ref()
            .and_then(|v| v.services.iter().find(|s| s.service == service))
            .and_then(|s| s.nodes.iter().map(|n| n.id).max())
            .map_or(1, |m| m + 1)
    }

    fn cycle_filter(&mut self) {
        let services: Vec<String> = self
            .view
            .as_ref()
            .map(|v| v.services.iter().map(|s| s.service.clone()).collect())
            .unwrap_or_default();
        let next = match &self.event_filter {
            None => services.first().cloned(),
            Some(f) => services
                .iter()
                .position(|s| s == f)
                .and_then(|i| services.get(i + 1))
                .cloned(),
        };
        self.event_filter = next;
        self.event_row = 0;
        self.tab = Tab::Events;
    }

    /// The events view's rows: the cluster's events and the console's own,
    /// newest first, through the service filter.
    pub fn events(&self) -> Vec<&Event> {
        let cluster = self.view.iter().flat_map(|v| v.events.iter());
        let mut all: Vec<&Event> = cluster
            .chain(self.local_events.iter())
            .filter(|e| self.event_filter.as_ref().is_none_or(|f| &e.service == f))
            .collect();
        // Stable: among equal times, the cluster's order (newest first) holds.
        all.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        all
    }

    /// Whether the view on screen is from the last refresh.
    pub fn stale(&self) -> bool {
        matches!(self.link, Link::Unreachable(_))
    }
}

/// One line about a check's (or repair's) report, and how it went.
pub fn summarize(report: &CheckReport) -> (Level, String) {
    if let Some(repair) = &report.repair {
        let nodes: Vec<String> = repair
            .nodes
            .iter()
            .map(|n| match n.action.as_str() {
                "repaired" => format!(
                    "node {} repaired ({} in {})",
                    n.node,
                    format::count(n.keys_repaired, "key"),
                    format::count(n.buckets, "bucket")
                ),
                other => format!("node {} {other}", n.node),
            })
            .collect();
        let nodes = if nodes.is_empty() {
            "nothing to repair".to_string()
        } else {
            nodes.join(", ")
        };
        let recheck = repair.recheck_verdict.as_deref().unwrap_or("pending");
        let failed = repair.nodes.iter().any(|n| n.action == "failed");
        let level = if failed {
            Level::Error
        } else if recheck == "clean" {
            Level::Success
        } else {
            Level::Warning
        };
        return (level, format!("{nodes}; recheck {recheck}"));
    }
    match report.verdict.as_str() {
        "clean" => (
            Level::Success,
            format!("clean ({} replicas agree)", report.replicas.len()),
        ),
        "mismatch" => {
            let bad: Vec<String> = report
                .replicas
                .iter()
                .filter(|r| r.status == "mismatch")
                .map(|r| {
                    format!(
                        "node {} ({})",
                        r.node,
                        format::count(r.mismatching_buckets, "bucket")
                    )
                })
                .collect();
            (Level::Error, format!("MISMATCH on {}", bad.join(", ")))
        }
        other => (Level::Warning, other.replace('_', " ")),
    }
}
