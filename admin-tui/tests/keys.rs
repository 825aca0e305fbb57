//! Key handling on the app state alone: no terminal, no network.

mod fixtures;

use cart_admin_tui::action::{Action, ActionOutcome};
use cart_admin_tui::app::{Access, App, Button, Effect, Level, Popup, Refresh, Selection, Tab};
use cart_common::admin::{CheckStarted, MembershipChanged};
use cart_common::admin_client::AdminError;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use fixtures::*;

fn press(app: &mut App, code: KeyCode) -> Option<Effect> {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn type_keys(app: &mut App, keys: &str) -> Vec<Effect> {
    keys.chars()
        .filter_map(|c| press(app, KeyCode::Char(c)))
        .collect()
}

fn select(service: &str, node: Option<u64>) -> Option<Selection> {
    Some(Selection {
        service: service.into(),
        node,
    })
}

/// Moves the selection to `node` of stock (rows: order, 3 nodes, payment,
/// 3 nodes, stock, 3 nodes).
fn select_stock_node(app: &mut App, node: u64) {
    press(app, KeyCode::End);
    for _ in node..3 {
        press(app, KeyCode::Up);
    }
    assert_eq!(app.selection, select("stock", Some(node)));
}

#[test]
fn number_keys_and_tab_switch_views() {
    let mut app = app(healthy());
    assert_eq!(app.tab, Tab::Cluster);
    type_keys(&mut app, "3");
    assert_eq!(app.tab, Tab::Events);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Traffic);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Transactions);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Cluster, "Tab wraps around");
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.tab, Tab::Transactions);
    type_keys(&mut app, "4");
    assert_eq!(app.tab, Tab::Traffic);
    type_keys(&mut app, "5");
    assert_eq!(app.tab, Tab::Transactions);
    type_keys(&mut app, "2");
    assert_eq!(app.tab, Tab::Consistency);
    type_keys(&mut app, "1");
    assert_eq!(app.tab, Tab::Cluster);
}

#[test]
fn selection_walks_services_and_nodes_and_stops_at_the_ends() {
    let mut app = app(healthy());
    assert_eq!(app.selection, select("order", None), "first row at start");
    press(&mut app, KeyCode::Up);
    assert_eq!(app.selection, select("order", None));
    type_keys(&mut app, "j");
    assert_eq!(app.selection, select("order", Some(1)));
    type_keys(&mut app, "jjj");
    assert_eq!(app.selection, select("payment", None));
    press(&mut app, KeyCode::PageDown);
    assert_eq!(
        app.selection,
        select("stock", Some(3)),
        "clamped at the last row"
    );
    type_keys(&mut app, "g");
    assert_eq!(app.selection, select("order", None));
    type_keys(&mut app, "G");
    assert_eq!(app.selection, select("stock", Some(3)));
}

#[test]
fn a_selected_node_that_disappears_leaves_its_service_selected() {
    let mut app = app(healthy());
    select_stock_node(&mut app, 3);
    let mut view = healthy();
    view.services[2].nodes.pop();
    app.on_refresh(Refresh {
        at_ms: NOW,
        failed: vec![],
        answer: Some((VIA.into(), view)),
    });
    assert_eq!(app.selection, select("stock", None));
}

#[test]
fn an_action_asks_first_with_cancel_focused_and_enter_cancels() {
    let mut app = app(healthy());
    select_stock_node(&mut app, 2);
    assert_eq!(type_keys(&mut app, "r"), vec![]);
    match &app.popup {
        Some(Popup::Confirm(d)) => {
            assert_eq!(d.focus, Button::Cancel);
            assert_eq!(
                d.action,
                Action::RepairNode {
                    service: "stock".into(),
                    node: 2
                }
            );
        }
        other => panic!("expected a confirm dialog, got {other:?}"),
    }
    assert_eq!(press(&mut app, KeyCode::Enter), None);
    assert!(app.popup.is_none());
    assert!(app.status.as_ref().unwrap().text.contains("cancelled"));
}

#[test]
fn tab_then_enter_confirms_and_performs_the_action() {
    let mut app = app(healthy());
    select_stock_node(&mut app, 2);
    type_keys(&mut app, "b");
    press(&mut app, KeyCode::Tab);
    let effect = press(&mut app, KeyCode::Enter);
    assert_eq!(
        effect,
        Some(Effect::Perform(Action::Rebuild {
            service: "stock".into(),
            node: 2
        }))
    );
    assert!(app.popup.is_none());
}

#[test]
fn esc_closes_a_dialog_without_quitting_and_quits_otherwise() {
    let mut app = app(healthy());
    type_keys(&mut app, "c");
    assert!(matches!(app.popup, Some(Popup::Confirm(_))));
    press(&mut app, KeyCode::Right);
    press(&mut app, KeyCode::Left);
    assert!(matches!(&app.popup, Some(Popup::Confirm(d)) if d.focus == Button::Cancel));
    assert_eq!(press(&mut app, KeyCode::Esc), None);
    assert!(app.popup.is_none());
    assert!(!app.quit);
    press(&mut app, KeyCode::Esc);
    assert!(app.quit);
}

#[test]
fn q_quits_and_ctrl_c_quits_even_from_a_dialog() {
    let mut app = app(healthy());
    type_keys(&mut app, "q");
    assert!(app.quit);
    let mut app = app_with(healthy(), Access::ReadWrite);
    type_keys(&mut app, "C");
    assert!(app.popup.is_some());
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.quit);
}

#[test]
fn read_only_refuses_every_action_and_says_why() {
    for (access, why) in [
        (Access::NoToken, "no admin token"),
        (Access::ReadOnlyFlag, "--read-only"),
    ] {
        let mut app = app_with(healthy(), access);
        select_stock_node(&mut app, 2);
        for key in "cCrRbad".chars() {
            assert_eq!(press(&mut app, KeyCode::Char(key)), None);
            assert!(app.popup.is_none(), "{key} opened a dialog");
            let status = app.status.clone().unwrap();
            assert_eq!(status.level, Level::Warning);
            assert!(status.text.contains(why), "{}", status.text);
        }
        assert_eq!(press(&mut app, KeyCode::Delete), None);
        assert!(app.popup.is_none());
        // Looking around still works.
        type_keys(&mut app, "2");
        assert_eq!(app.tab, Tab::Consistency);
    }
}

#[test]
fn node_actions_need_a_node_selected() {
    let mut app = app(healthy());
    assert_eq!(app.selection, select("order", None));
    type_keys(&mut app, "r");
    assert!(app.popup.is_none());
    assert!(app.status.unwrap().text.contains("select a node"));
}

#[test]
fn adding_a_node_proposes_the_next_id_and_takes_a_typed_one() {
    let mut app = app(healthy());
    select_stock_node(&mut app, 1);
    type_keys(&mut app, "a");
    assert!(matches!(&app.popup, Some(Popup::Confirm(d)) if d.input.as_deref() == Some("4")));
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Tab);
    // An empty id is refused and the dialog stays.
    assert_eq!(press(&mut app, KeyCode::Enter), None);
    assert!(matches!(&app.popup, Some(Popup::Confirm(d)) if d.error.is_some()));
    type_keys(&mut app, "7");
    let effect = press(&mut app, KeyCode::Enter);
    assert_eq!(
        effect,
        Some(Effect::Perform(Action::AddNode {
            service: "stock".into(),
            node: 7
        }))
    );
}

#[test]
fn help_opens_with_question_mark_and_closes_with_esc() {
    let mut app = app(healthy());
    type_keys(&mut app, "?");
    assert_eq!(app.popup, Some(Popup::Help));
    type_keys(&mut app, "x3");
    assert_eq!(app.popup, Some(Popup::Help), "other keys leave it open");
    assert_eq!(app.tab, Tab::Cluster, "and do nothing underneath");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.popup, None);
    assert!(!app.quit);
}

#[test]
fn f_cycles_the_event_filter_through_the_services() {
    let mut app = app(down_node());
    let mut seen = vec![];
    for _ in 0..4 {
        type_keys(&mut app, "f");
        seen.push(app.event_filter.clone());
    }
    assert_eq!(
        seen,
        [
            Some("order".into()),
            Some("payment".into()),
            Some("stock".into()),
            None
        ]
    );
    assert_eq!(app.tab, Tab::Events);
    type_keys(&mut app, "fff");
    assert!(app.events().iter().all(|e| e.service == "stock"));
    assert_eq!(app.events()[0].kind, "node_down", "newest first");
}

#[test]
fn a_refused_action_shows_a_readable_error_in_the_status_and_the_events() {
    let mut app = app(healthy());
    let action = Action::Check {
        service: "stock".into(),
    };
    app.on_action_done(&action, Err(AdminError::Unauthorized));
    let status = app.status.clone().unwrap();
    assert_eq!(status.level, Level::Error);
    assert!(
        status
            .text
            .contains("check of stock failed: unauthorized (401)"),
        "{}",
        status.text
    );
    assert_eq!(app.events()[0].kind, "console");
    let dead = AdminError::Unreachable {
        addr: VIA.into(),
        reason: "connection refused or no route".into(),
    };
    app.on_action_done(&action, Err(dead));
    assert!(app
        .status
        .unwrap()
        .text
        .contains("127.0.0.1:8101 unreachable"));
}

#[test]
fn a_started_check_reports_its_outcome_when_its_report_arrives_by_id() {
    let mut app = app(healthy());
    let action = Action::Check {
        service: "stock".into(),
    };
    let started = CheckStarted {
        service: "stock".into(),
        check_id: "stock-check-2".into(),
        shard: Default::default(),
        also: Vec::new(),
    };
    app.on_action_done(&action, Ok(ActionOutcome::Started(vec![started])));
    assert_eq!(app.status.clone().unwrap().level, Level::Info);
    // A view whose latest report is another check changes nothing, nor does
    // a report of a check this console did not start.
    app.on_refresh(Refresh {
        at_ms: NOW + 500,
        failed: vec![],
        answer: Some((VIA.into(), mismatch())),
    });
    let mut other = mismatch().services[2].last_check.clone().unwrap();
    other.check_id = "periodic-1".into();
    app.on_check_report(&other);
    assert_eq!(app.status.clone().unwrap().level, Level::Info);
    let mut report = mismatch().services[2].last_check.clone().unwrap();
    report.check_id = "stock-check-2".into();
    app.on_check_report(&report);
    let status = app.status.clone().unwrap();
    assert_eq!(status.level, Level::Error);
    assert_eq!(status.text, "check of stock: MISMATCH on node 2 (1 bucket)");
    assert!(app.events().iter().any(|e| e.message == status.text));

    let repair = Action::RepairNode {
        service: "stock".into(),
        node: 2,
    };
    let started = CheckStarted {
        service: "stock".into(),
        check_id: "stock-repair-3".into(),
        shard: Default::default(),
        also: Vec::new(),
    };
    app.on_action_done(&repair, Ok(ActionOutcome::Started(vec![started])));
    let mut report = repaired().services[2].last_check.clone().unwrap();
    report.check_id = "stock-repair-3".into();
    app.on_check_report(&report);
    let status = app.status.unwrap();
    assert_eq!(status.level, Level::Success);
    assert_eq!(
        status.text,
        "repair of stock node 2: node 2 repaired (1 key in 1 bucket); recheck clean"
    );
}

#[test]
fn membership_answers_say_what_changed() {
    let mut app = app(healthy());
    let action = Action::RemoveNode {
        service: "stock".into(),
        node: 3,
    };
    let m = MembershipChanged {
        service: "stock".into(),
        voters: vec![1, 2],
        learners: vec![],
        log_index: 1100,
        changed: true,
    };
    app.on_action_done(&action, Ok(ActionOutcome::Membership(m)));
    let status = app.status.unwrap();
    assert_eq!(status.level, Level::Success);
    assert!(
        status
            .text
            .contains("removal of stock node 3: done; voters [1, 2]"),
        "{}",
        status.text
    );
}

#[test]
fn losing_the_coordinator_keeps_the_view_and_switching_is_announced() {
    let mut app = unreachable();
    assert!(app.stale());
    assert!(app.view.is_some(), "the last view stays");
    app.on_refresh(Refresh {
        at_ms: NOW + 13_000,
        failed: vec![(VIA.into(), "connection refused or no route".into())],
        answer: Some(("127.0.0.1:8103".into(), healthy())),
    });
    assert!(!app.stale());
    let status = app.status.unwrap();
    assert_eq!(status.level, Level::Warning);
    assert_eq!(
        status.text,
        "coordinator 127.0.0.1:8101 unreachable; switched to 127.0.0.1:8103"
    );
}

#[test]
fn keys_before_any_view_do_not_panic() {
    let mut app = App::new(Access::ReadWrite, VIA, NOW);
    for c in "jkgGcCrRbadf123?".chars() {
        press(&mut app, KeyCode::Char(c));
        app.popup = None;
    }
    for code in [
        KeyCode::PageDown,
        KeyCode::PageUp,
        KeyCode::Home,
        KeyCode::End,
        KeyCode::Delete,
    ] {
        press(&mut app, code);
    }
    assert!(app.selection.is_none());
    assert!(!app.quit);
}
