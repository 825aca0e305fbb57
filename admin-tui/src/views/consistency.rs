//! The Consistency view: per service its latest check (when, why, verdict,
//! log position, majority root), a row per replica (root digest, applied
//! index, keys, mismatching buckets, keys repaired) with mismatches in red,
//! and the repair it led to.

use cart_common::admin::{CheckReport, ReplicaDigest, ServiceView};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::{level_style, selected_style, title_line, WIDE};
use crate::app::{summarize, App};
use crate::format;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    super::service_sections(frame, area, app, section_height, render_service);
}

/// Title, then header and replicas, the repair line, a gap.
fn section_height(s: &ServiceView) -> u16 {
    match &s.last_check {
        None => 2,
        Some(r) => (1 + 1 + r.replicas.len() + usize::from(r.repair.is_some()) + 1) as u16,
    }
}

fn verdict_style(verdict: &str) -> Style {
    match verdict {
        "clean" => Style::new().fg(Color::Green),
        "mismatch" => Style::new()
            .fg(Color::White)
            .bg(Color::Red)
            .add_modifier(Modifier::BOLD),
        _ => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
    }
}

fn render_service(frame: &mut Frame, area: Rect, app: &App, s: &ServiceView) {
    let selection = app
        .selection
        .as_ref()
        .filter(|sel| sel.service == s.service);
    let title_selected = selection.is_some_and(|sel| sel.node.is_none());
    let Some(report) = &s.last_check else {
        let facts = vec![Span::styled(
            if s.error.is_some() {
                "unavailable"
            } else {
                "no check yet (c: check now)"
            },
            Style::new().fg(Color::DarkGray),
        )];
        let line = title_line(&s.service, facts, title_selected);
        frame.render_widget(Paragraph::new(line), area);
        return;
    };
    let sep = || Span::styled(" · ", Style::new().fg(Color::DarkGray));
    let mut facts = vec![];
    if s.shards.len() > 1 {
        // Sharded: the worst shard's report is shown; each shard's verdict
        // is named.
        facts.push(Span::raw(format!(
            "shard {} of {}:",
            report.shard,
            s.shards.len()
        )));
        for shard in &s.shards {
            let verdict = shard
                .last_check
                .as_ref()
                .map_or("none", |r| r.verdict.as_str());
            let style = match verdict {
                "none" => Style::new().fg(Color::DarkGray),
                v => verdict_style(v),
            };
            facts.push(Span::raw(" "));
            facts.push(Span::styled(format!("{}:{verdict}", shard.shard), style));
        }
        facts.push(sep());
    }
    facts.extend([
        Span::raw(format!(
            "checked {} ago ({})",
            format::ago(app.now_ms, report.finished_ms),
            report.reason
        )),
        sep(),
        Span::styled(
            format!(" {} ", report.verdict.to_uppercase().replace('_', " ")),
            verdict_style(&report.verdict),
        ),
    ]);
    if let Some(recheck) = report
        .repair
        .as_ref()
        .and_then(|r| r.recheck_verdict.as_deref())
    {
        facts.push(Span::raw(" → recheck"));
        facts.push(Span::styled(
            format!(" {} ", recheck.to_uppercase().replace('_', " ")),
            verdict_style(recheck),
        ));
    }
    facts.push(sep());
    facts.push(Span::raw(format!("log {}", report.log_index)));
    if let Some(root) = &report.majority_root {
        facts.push(sep());
        facts.push(Span::raw(format!(
            "majority {}",
            format::short_digest(root)
        )));
    }
    let rows = report.replicas.len() as u16 + 1;
    let [title, table_area, repair_area, _gap] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(rows),
        Constraint::Length(u16::from(report.repair.is_some())),
        Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(title_line(&s.service, facts, title_selected)),
        title,
    );
    let selected_node = selection.and_then(|sel| sel.node);
    frame.render_widget(
        replica_table(report, selected_node, area.width >= WIDE),
        table_area,
    );
    if report.repair.is_some() {
        let (level, text) = summarize(report);
        let took = report
            .repair
            .as_ref()
            .map(|r| format!(" · took {}", format::millis(r.duration_ms)))
            .unwrap_or_default();
        let line = Line::from(vec![
            Span::styled("  repair: ", Style::new().fg(Color::DarkGray)),
            Span::styled(format!("{text}{took}"), level_style(level)),
        ]);
        frame.render_widget(Paragraph::new(line), repair_area);
    }
}

fn replica_table(report: &CheckReport, selected: Option<u64>, wide: bool) -> Table<'static> {
    let mut header = vec![
        "  NODE", "STATUS", "ROOT", "APPLIED", "KEYS", "BUCKETS", "REPAIRED",
    ];
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(14),
    ];
    if wide {
        header.extend(["DIGEST", "FIRST BUCKETS"]);
        widths.extend([Constraint::Length(8), Constraint::Length(30)]);
    }
    let rows = report.replicas.iter().map(|r| {
        let repaired = report
            .repair
            .as_ref()
            .and_then(|rep| rep.nodes.iter().find(|n| n.node == r.node))
            .map(|n| match n.action.as_str() {
                "repaired" => format::count(n.keys_repaired, "key"),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "-".into());
        let mut cells = vec![
            Cell::from(format!("  node {}", r.node)),
            Cell::from(Span::styled(r.status.clone(), status_style(r))),
            Cell::from(
                r.root
                    .as_deref()
                    .map(format::short_digest)
                    .unwrap_or_else(|| "-".into()),
            ),
            Cell::from(format::opt(r.applied_index)),
            Cell::from(format::opt(r.keys)),
            Cell::from(r.mismatching_buckets.to_string()),
            Cell::from(repaired),
        ];
        if wide {
            let first: Vec<String> = r.buckets.iter().take(6).map(|b| b.to_string()).collect();
            cells.extend([
                Cell::from(
                    r.duration_ms
                        .map(format::millis)
                        .unwrap_or_else(|| "-".into()),
                ),
                Cell::from(first.join(",")),
            ]);
        }
        let mut style = Style::new();
        if r.status == "mismatch" {
            style = style.fg(Color::Red).add_modifier(Modifier::BOLD);
        }
        if selected == Some(r.node) {
            style = style.patch(selected_style());
        }
        Row::new(cells).style(style)
    });
    Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray)))
        .column_spacing(1)
}

fn status_style(r: &ReplicaDigest) -> Style {
    match r.status.as_str() {
        "match" => Style::new().fg(Color::Green),
        "mismatch" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        _ => Style::new().fg(Color::Yellow),
    }
}
