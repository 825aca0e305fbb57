//! The Cluster view: a summary line, then per service its leader and term,
//! its load (the leader's queue of writes, entries in flight and
//! uncommitted, and what looks slow: `slow::diagnose`), a table of its nodes
//! (status, Raft role, term, applied index, lag, fsync p99) and a line of
//! its coordinators.

use cart_common::admin::{NodeHealth, NodeView, ServiceView};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::{health_span, selected_style, title_line, WIDE};
use crate::app::{App, Link};
use crate::format;
use crate::slow;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let [summary_area, rest] =
        Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    frame.render_widget(Paragraph::new(summary(app)), summary_area);
    if area.width >= WIDE {
        super::service_sections(frame, rest, app, section_height_wide, render_wide);
    } else {
        super::service_sections(frame, rest, app, section_height, render_narrow);
    }
}

/// What shows before the first view arrives: which coordinators were
/// tried and why each failed, one per line.
pub fn waiting(app: &App) -> Text<'static> {
    match &app.link {
        Link::Unreachable(tried) => {
            let mut lines = vec![Line::styled(
                "coordinator unreachable; tried:",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            )];
            lines.extend(tried.iter().map(|(addr, why)| {
                Line::styled(format!("  {addr}: {why}"), Style::new().fg(Color::Red))
            }));
            Text::from(lines)
        }
        Link::Connecting(addr) | Link::Connected(addr) => Text::from(Line::styled(
            format!("waiting for the cluster view from {addr}…"),
            Style::new().fg(Color::DarkGray),
        )),
    }
}

/// Title, then the error line or the table header and nodes; coordinators,
/// gap. A wide screen has a load line under the title; a narrow one puts
/// only the verdict in the title.
fn section_height(s: &ServiceView) -> u16 {
    (1 + body_height(s, false) + 1 + 1) as u16
}

fn section_height_wide(s: &ServiceView) -> u16 {
    (1 + body_height(s, true) + 1 + 1) as u16
}

fn body_height(s: &ServiceView, wide: bool) -> usize {
    match (&s.error, wide) {
        (Some(_), _) => 1,
        (None, false) => 1 + s.nodes.len(),
        (None, true) => 1 + 1 + s.nodes.len(),
    }
}

fn render_narrow(frame: &mut Frame, area: Rect, app: &App, s: &ServiceView) {
    render_service(frame, area, app, s, false);
}

fn render_wide(frame: &mut Frame, area: Rect, app: &App, s: &ServiceView) {
    render_service(frame, area, app, s, true);
}

/// "nodes up 8/9 · leaders 3/3 · coordinators 6/6 reachable".
fn summary(app: &App) -> Line<'static> {
    let Some(view) = &app.view else {
        return Line::default();
    };
    let nodes: Vec<&NodeView> = view.services.iter().flat_map(|s| s.nodes.iter()).collect();
    let up = nodes.iter().filter(|n| n.status == NodeHealth::Up).count();
    // Every group: each shard of a sharded service, else the service's one.
    let groups: Vec<bool> = view
        .services
        .iter()
        .flat_map(|s| match s.shards.len() {
            0 | 1 => vec![s.leader.is_some()],
            _ => s
                .shards
                .iter()
                .map(|shard| shard.leader.is_some())
                .collect(),
        })
        .collect();
    let leaders = groups.iter().filter(|l| **l).count();
    let coords: Vec<bool> = view
        .services
        .iter()
        .flat_map(|s| s.coordinators.iter().map(|c| c.reachable))
        .collect();
    let reachable = coords.iter().filter(|r| **r).count();
    let good = |ok: bool| {
        if ok {
            Style::new().fg(Color::Green)
        } else {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        }
    };
    let sep = || Span::styled(" · ", Style::new().fg(Color::DarkGray));
    let mut spans = vec![
        Span::styled(
            format!("nodes up {up}/{}", nodes.len()),
            good(up == nodes.len()),
        ),
        sep(),
        Span::styled(
            format!("leaders {leaders}/{}", groups.len()),
            good(leaders == groups.len()),
        ),
        sep(),
        Span::styled(
            format!("coordinators {reachable}/{} reachable", coords.len()),
            good(reachable == coords.len()),
        ),
    ];
    if app.stale() {
        spans.push(sep());
        spans.push(Span::styled(
            "STALE",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    Line::from(spans)
}

fn render_service(frame: &mut Frame, area: Rect, app: &App, s: &ServiceView, wide: bool) {
    let selected_service = app
        .selection
        .as_ref()
        .filter(|sel| sel.service == s.service);
    let title_selected = selected_service.is_some_and(|sel| sel.node.is_none());
    let up = s
        .nodes
        .iter()
        .filter(|n| n.status == NodeHealth::Up)
        .count();
    let mut facts = vec![];
    if s.error.is_some() {
        facts.push(Span::styled(
            "UNAVAILABLE",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    } else if s.shards.len() > 1 {
        // Sharded: each shard's leader ("shard 0→1 1→2 2→3").
        facts.push(Span::raw(format!("{} shards, leaders", s.shards.len())));
        for shard in &s.shards {
            facts.push(match shard.leader {
                Some(l) => Span::raw(format!(" {}→{l}", shard.shard)),
                None => Span::styled(
                    format!(" {}→NONE", shard.shard),
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                ),
            });
        }
    } else {
        facts.push(match s.leader {
            Some(l) => Span::raw(format!("leader {l}")),
            None => Span::styled(
                "NO LEADER",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
        });
        facts.push(Span::raw(format!(" · term {}", format::opt(s.term))));
    }
    if s.error.is_none() {
        let style = if up == s.nodes.len() {
            Style::new().fg(Color::Green)
        } else {
            Style::new().fg(Color::Red)
        };
        facts.push(Span::raw(" · "));
        facts.push(Span::styled(format!("{up}/{} up", s.nodes.len()), style));
        if !wide {
            if let Some(verdict) = verdict(app, s) {
                facts.push(Span::raw(" · "));
                facts.push(verdict);
            }
        }
    }
    let [title, body, coords, _gap] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(body_height(s, wide) as u16),
        Constraint::Length(1),
        Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(title_line(&s.service, facts, title_selected)),
        title,
    );
    match &s.error {
        Some(error) => {
            let text = format::truncate(error, body.width.saturating_sub(2) as usize);
            let line = Line::styled(format!("  {text}"), Style::new().fg(Color::Red));
            frame.render_widget(Paragraph::new(line), body);
        }
        None => {
            let table_area = if wide {
                let [load, table_area] =
                    Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(body);
                frame.render_widget(Paragraph::new(load_line(app, s)), load);
                table_area
            } else {
                body
            };
            let selected_node = selected_service.and_then(|sel| sel.node);
            let table = node_table(app, s, selected_node, wide);
            frame.render_widget(table, table_area);
        }
    }
    frame.render_widget(Paragraph::new(coordinator_line(app, s)), coords);
}

/// "  load  queue 0 · in flight 1 · uncommitted 0 · ok", from the
/// leader's latest `/metrics`, then what looks slow.
fn load_line(app: &App, s: &ServiceView) -> Line<'static> {
    let dim = Style::new().fg(Color::DarkGray);
    let mut spans = vec![Span::styled("  load  ", dim)];
    let leader_load = s
        .leader
        .and_then(|l| app.traffic.loads(&s.service).find(|(id, _)| *id == l))
        .map(|(_, load)| *load);
    let Some(load) = leader_load else {
        spans.push(Span::styled("no metrics from the leader yet", dim));
        return Line::from(spans);
    };
    spans.push(Span::raw(format!(
        "queue {:.0} · in flight {:.0} · uncommitted {:.0}",
        load.queue, load.in_flight, load.uncommitted
    )));
    spans.push(Span::styled(" · ", dim));
    spans.extend(verdict(app, s));
    Line::from(spans)
}

/// "ok" in green, or what looks slow in yellow; nothing before the
/// leader's metrics arrive.
fn verdict(app: &App, s: &ServiceView) -> Option<Span<'static>> {
    let leader = s.leader?;
    app.traffic
        .loads(&s.service)
        .find(|(id, _)| *id == leader)?;
    let findings = slow::diagnose(s, &app.traffic);
    Some(if findings.is_empty() {
        Span::styled("ok", Style::new().fg(Color::Green))
    } else {
        let text: Vec<String> = findings.iter().map(slow::Finding::text).collect();
        Span::styled(
            text.join("; "),
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        )
    })
}

fn node_table(app: &App, s: &ServiceView, selected: Option<u64>, wide: bool) -> Table<'static> {
    let mut header = vec![
        "  NODE",
        "STATUS",
        "ROLE",
        "TERM",
        "APPLIED",
        "LAG",
        "LAG s",
        "SEEN",
        "FSYNC p99",
    ];
    let mut widths = vec![
        Constraint::Length(8),
        // "catching up"; a wide screen also says why a node is down.
        Constraint::Length(if wide { 16 } else { 11 }),
        Constraint::Length(12),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(9),
    ];
    let fsync: std::collections::BTreeMap<u64, Option<f64>> = app
        .traffic
        .loads(&s.service)
        .map(|(id, l)| (id, l.fsync_p99_ms))
        .collect();
    if wide {
        header.extend(["COMMIT", "LAST LOG", "ADDRESS"]);
        widths.extend([
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(22),
        ]);
    }
    let rows = s.nodes.iter().map(|n| {
        let mut status = Line::from(health_span(n.status));
        if let (true, Some(why)) = (wide && n.status == NodeHealth::Down, &n.down_reason) {
            status.push_span(Span::raw(format!(" ({why})")));
        }
        // Sharded: the shards it leads ("Leader 0,2"), else what it is in
        // shard 0.
        let role = match (s.shards.len() > 1, n.leads.as_slice()) {
            (true, []) => n.role.clone().map(|_| "Follower".to_string()),
            (true, leads) => Some(format!(
                "Leader {}",
                leads
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            (false, _) => n.role.clone(),
        };
        let role = role.unwrap_or_else(|| "-".into());
        let role_style = match role.split(' ').next().unwrap_or_default() {
            "Leader" => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            "Candidate" => Style::new().fg(Color::Yellow),
            _ => Style::new(),
        };
        let role = if n.voter { role } else { format!("{role}*") };
        let lag = n.lag_entries.unwrap_or(0);
        let lag_style = if lag > 0 {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new()
        };
        let mut cells = vec![
            Cell::from(format!("  node {}", n.id)),
            Cell::from(status),
            Cell::from(Span::styled(role, role_style)),
            Cell::from(format::opt(n.term)),
            Cell::from(format::opt(n.applied_index)),
            Cell::from(Span::styled(format::opt(n.lag_entries), lag_style)),
            Cell::from(
                n.lag_seconds
                    .map(format::seconds)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(
                n.last_seen_ms_ago
                    .map(format::millis)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(
                fsync
                    .get(&n.id)
                    .copied()
                    .flatten()
                    .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms")),
            ),
        ];
        if wide {
            cells.extend([
                Cell::from(format::opt(n.commit_index)),
                Cell::from(format::opt(n.last_log_index)),
                Cell::from(n.addr.clone()),
            ]);
        }
        let row = Row::new(cells);
        if selected == Some(n.id) {
            row.style(selected_style())
        } else {
            row
        }
    });
    Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray)))
        .column_spacing(1)
}

/// "  coordinators  #0 127.0.0.1:8301 ok ◂console  #1 … unreachable".
fn coordinator_line(app: &App, s: &ServiceView) -> Line<'static> {
    let via = match &app.link {
        Link::Connected(v) => Some(v.as_str()),
        _ => None,
    };
    let mut spans = vec![Span::styled(
        "  coordinators ",
        Style::new().fg(Color::DarkGray),
    )];
    for c in &s.coordinators {
        spans.push(Span::raw(format!(" #{} {} ", c.index, c.admin)));
        spans.push(if c.reachable {
            Span::styled("ok", Style::new().fg(Color::Green))
        } else {
            Span::styled("unreachable", Style::new().fg(Color::Red))
        });
        if via == Some(c.admin.as_str()) {
            spans.push(Span::styled(" ◂console", Style::new().fg(Color::Cyan)));
        }
        spans.push(Span::raw(" "));
    }
    Line::from(spans)
}
