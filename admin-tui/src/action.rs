//! What the console can ask a coordinator to do, and how each action is
//! worded in the confirm dialog, the status line and the events view.

use cart_common::admin::{CheckStarted, MembershipChanged};
use cart_common::spec::NodeId;

/// A mutating admin call, aimed at one service (or all of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `POST /admin/check`.
    CheckAll,
    /// `POST /admin/services/{s}/check`.
    Check { service: String },
    /// `POST /admin/services/{s}/repair` `{"node": N}`.
    RepairNode { service: String, node: NodeId },
    /// `POST /admin/services/{s}/repair` `{}`: every mismatching node.
    RepairService { service: String },
    /// `POST /admin/services/{s}/nodes/{id}/rebuild`.
    Rebuild { service: String, node: NodeId },
    /// `POST /admin/services/{s}/nodes` `{"id": N}`.
    AddNode { service: String, node: NodeId },
    /// `DELETE /admin/services/{s}/nodes/{id}`.
    RemoveNode { service: String, node: NodeId },
}

impl Action {
    /// The service the action is about; `None` for every service.
    pub fn service(&self) -> Option<&str> {
        match self {
            Action::CheckAll => None,
            Action::Check { service }
            | Action::RepairNode { service, .. }
            | Action::RepairService { service }
            | Action::Rebuild { service, .. }
            | Action::AddNode { service, .. }
            | Action::RemoveNode { service, .. } => Some(service),
        }
    }

    pub fn node(&self) -> Option<NodeId> {
        match self {
            Action::RepairNode { node, .. }
            | Action::Rebuild { node, .. }
            | Action::AddNode { node, .. }
            | Action::RemoveNode { node, .. } => Some(*node),
            _ => None,
        }
    }

    /// The confirm button's label.
    pub fn verb(&self) -> &'static str {
        match self {
            Action::CheckAll | Action::Check { .. } => "Check",
            Action::RepairNode { .. } | Action::RepairService { .. } => "Repair",
            Action::Rebuild { .. } => "Rebuild",
            Action::AddNode { .. } => "Add",
            Action::RemoveNode { .. } => "Remove",
        }
    }

    /// A short name for the status line: "repair of stock node 2".
    pub fn title(&self) -> String {
        match self {
            Action::CheckAll => "check of every service".into(),
            Action::Check { service } => format!("check of {service}"),
            Action::RepairNode { service, node } => format!("repair of {service} node {node}"),
            Action::RepairService { service } => format!("repair of {service}"),
            Action::Rebuild { service, node } => format!("rebuild of {service} node {node}"),
            Action::AddNode { service, node } => format!("addition of {service} node {node}"),
            Action::RemoveNode { service, node } => format!("removal of {service} node {node}"),
        }
    }

    /// The question the confirm dialog asks, and what it will do.
    pub fn question(&self) -> (String, &'static str) {
        match self {
            Action::CheckAll => (
                "Run a consistency check of every service now?".into(),
                "Digests every replica at one log position; no writes.",
            ),
            Action::Check { service } => (
                format!("Run a consistency check of {service} now?"),
                "Digests every replica at one log position; no writes.",
            ),
            Action::RepairNode { service, node } => (
                format!("Repair node {node} of {service}?"),
                "Checks, then rewrites its rows that differ from the majority.",
            ),
            Action::RepairService { service } => (
                format!("Repair every mismatching node of {service}?"),
                "Checks, then rewrites the rows that differ from the majority.",
            ),
            Action::Rebuild { service, node } => (
                format!("Rebuild node {node} of {service}?"),
                "Removes it, wipes its data and adds it back from a snapshot.",
            ),
            Action::AddNode { service, node } => (
                format!("Add node {node} to {service}?"),
                "Its process must already run; it joins as a learner, then votes.",
            ),
            Action::RemoveNode { service, node } => (
                format!("Remove node {node} from {service}?"),
                "It leaves the Raft group; its process keeps running.",
            ),
        }
    }
}

/// What a coordinator answered to an action.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionOutcome {
    /// A check, repair or rebuild started; its report is looked up by this
    /// id until it exists (`ConsoleClient::check_report`).
    Started(Vec<CheckStarted>),
    Membership(MembershipChanged),
}
