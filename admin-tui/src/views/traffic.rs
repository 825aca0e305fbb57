//! The Traffic view: per service, the public API on the coordinators
//! (requests, errors, p99) beside what its Raft group does (writes proposed,
//! linearizable reads, p99 of a write, from the nodes' `/metrics`), as
//! sparklines over the last minutes, newest on the right. The title line
//! adds entries per second, writes per entry and writes applied. With
//! `cross_service = "direct"` the payment and stock coordinators see little:
//! the order nodes call those groups themselves, and only the nodes count it.

use cart_common::admin::ServiceView;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::chart::{self, Series, Unit};
use super::{title_line, WIDE};
use crate::app::App;
use crate::metrics::Metric;

/// Rows per series column.
const ROWS: u16 = 3;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let [note, rest] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    let note_text = "public API from the coordinators · group from the nodes · newest on the right";
    frame.render_widget(
        Paragraph::new(Line::styled(note_text, Style::new().fg(Color::DarkGray))),
        note,
    );
    let height = if area.width >= WIDE {
        section_height_wide
    } else {
        section_height
    };
    let render: super::RenderSection = if area.width >= WIDE {
        render_wide
    } else {
        render_narrow
    };
    super::service_sections(frame, rest, app, height, render);
}

/// Title, the public rows, the group's rows, a gap.
fn section_height(_: &ServiceView) -> u16 {
    1 + 2 * ROWS + 1
}

/// Title, the two columns side by side, a gap.
fn section_height_wide(_: &ServiceView) -> u16 {
    1 + ROWS + 1
}

fn render_narrow(frame: &mut Frame, area: Rect, app: &App, s: &ServiceView) {
    let [title, public, group, _gap] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(ROWS),
        Constraint::Length(ROWS),
        Constraint::Fill(1),
    ])
    .areas(area);
    render_title(frame, title, app, &s.service);
    render_column(frame, public, &series(app, &s.service, &PUBLIC));
    render_column(frame, group, &series(app, &s.service, &GROUP));
}

fn render_wide(frame: &mut Frame, area: Rect, app: &App, s: &ServiceView) {
    let [title, body, _gap] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(ROWS),
        Constraint::Fill(1),
    ])
    .areas(area);
    render_title(frame, title, app, &s.service);
    let [public, group] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(body);
    render_column(frame, public, &series(app, &s.service, &PUBLIC));
    render_column(frame, group, &series(app, &s.service, &GROUP));
}

/// "stock    last 2m00s · entries 20/s · 5.0 writes/entry · applied 100/s".
fn render_title(frame: &mut Frame, area: Rect, app: &App, service: &str) {
    let t = &app.traffic;
    let dim = Style::new().fg(Color::DarkGray);
    let span = chart::span(t.points(service, Metric::Requests), area.width);
    let mut facts = vec![Span::styled(span, dim)];
    if let Some(entries) = t.last(service, Metric::Entries) {
        let writes = t.last(service, Metric::WritesProposed).unwrap_or(0.0);
        let per_entry = if entries > 0.0 {
            format!("{:.1}", writes / entries)
        } else {
            "-".into()
        };
        let applied = Unit::PerSecond.show(t.last(service, Metric::WritesApplied));
        facts.push(Span::raw(format!(
            " · entries {} · {per_entry} writes/entry · applied {applied}",
            Unit::PerSecond.show(Some(entries)),
        )));
    } else {
        facts.push(Span::styled(" · no node metrics yet", dim));
    }
    frame.render_widget(Paragraph::new(title_line(service, facts, false)), area);
}

fn render_column(frame: &mut Frame, area: Rect, series: &[Series]) {
    let rows = Layout::vertical(series.iter().map(|_| Constraint::Length(1))).split(area);
    for (one, row) in series.iter().zip(rows.iter()) {
        chart::render(frame, *row, one);
    }
}

/// One sparkline row: label, unit, colour and the series it draws.
type Row = (&'static str, Unit, Color, Metric);

/// The public API, from the coordinators.
const PUBLIC: [Row; ROWS as usize] = [
    ("public req", Unit::PerSecond, Color::Cyan, Metric::Requests),
    ("public errors", Unit::PerSecond, Color::Red, Metric::Errors),
    ("public p99", Unit::Millis, Color::Yellow, Metric::P99Ms),
];

/// The group, from its nodes.
const GROUP: [Row; ROWS as usize] = [
    (
        "writes",
        Unit::PerSecond,
        Color::Green,
        Metric::WritesProposed,
    ),
    ("reads", Unit::PerSecond, Color::Blue, Metric::Reads),
    (
        "write p99",
        Unit::Millis,
        Color::Magenta,
        Metric::WriteP99Ms,
    ),
];

fn series<'a>(app: &'a App, service: &str, rows: &[Row]) -> Vec<Series<'a>> {
    rows.iter()
        .map(|&(label, unit, color, metric)| Series {
            label,
            unit,
            color,
            points: app.traffic.points(service, metric),
        })
        .collect()
}
