//! The Traffic view: per service, request rate, error rate and p99 latency
//! of the public API as sparklines over the last minutes (newest on the
//! right), from the coordinators' `/metrics`.

use std::collections::VecDeque;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Sparkline};
use ratatui::Frame;

use super::title_line;
use crate::app::App;
use crate::format;
use crate::metrics::Point;

/// Which number of a point a sparkline draws.
type Metric = fn(&Point) -> f64;

/// Width of the label left of each sparkline.
const LABEL: u16 = 22;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let mut services: Vec<String> = app
        .view
        .as_ref()
        .map(|v| v.services.iter().map(|s| s.service.clone()).collect())
        .unwrap_or_default();
    if services.is_empty() {
        frame.render_widget(Paragraph::new(super::cluster::waiting(app)), area);
        return;
    }
    services.dedup();
    let [note, rest] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    let note_text = "public API of every coordinator, from /metrics; newest on the right";
    frame.render_widget(
        Paragraph::new(Line::styled(note_text, Style::new().fg(Color::DarkGray))),
        note,
    );
    let areas = Layout::vertical(services.iter().map(|_| Constraint::Fill(1))).split(rest);
    for (service, area) in services.iter().zip(areas.iter()) {
        render_service(frame, *area, app, service);
    }
}

fn render_service(frame: &mut Frame, area: Rect, app: &App, service: &str) {
    let empty = VecDeque::new();
    let points = app.traffic.points(service).unwrap_or(&empty);
    let [title, body] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    let shown = points.len().min(area.width.saturating_sub(LABEL) as usize);
    let first = points.get(points.len() - shown);
    let span = match (first, points.back()) {
        (Some(a), Some(b)) if b.at_ms > a.at_ms => {
            format!("last {}", format::age(b.at_ms - a.at_ms))
        }
        _ => "no samples yet".to_string(),
    };
    let facts = vec![Span::styled(span, Style::new().fg(Color::DarkGray))];
    frame.render_widget(Paragraph::new(title_line(service, facts, false)), title);
    if body.height == 0 {
        return;
    }
    let rows = Layout::vertical([
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ])
    .split(body);
    let last = points.back();
    let series: [(String, Color, Metric); 3] = [
        (
            format!(
                "req/s {}",
                last.map_or("-".into(), |p| format::rate(p.rate))
            ),
            Color::Cyan,
            |p| p.rate,
        ),
        (
            format!(
                "errors/s {}",
                last.map_or("-".into(), |p| format::rate(p.error_rate))
            ),
            Color::Red,
            |p| p.error_rate,
        ),
        (
            format!(
                "p99 {}",
                last.and_then(|p| p.p99_ms)
                    .map_or("-".into(), |ms| format!("{ms:.1} ms"))
            ),
            Color::Yellow,
            |p| p.p99_ms.unwrap_or(0.0),
        ),
    ];
    for ((label, color, value), row) in series.iter().zip(rows.iter()) {
        let [label_area, chart] =
            Layout::horizontal([Constraint::Length(LABEL), Constraint::Fill(1)]).areas(*row);
        frame.render_widget(Paragraph::new(format!("  {label}")), label_area);
        let width = chart.width as usize;
        let data: Vec<u64> = points
            .iter()
            .skip(points.len().saturating_sub(width))
            .map(|p| scaled(value(p)))
            .collect();
        // Never all-zero bars on a scale of zero: a flat line stays flat.
        let max = data.iter().copied().max().unwrap_or(0).max(1);
        let sparkline = Sparkline::default()
            .data(&data)
            .max(max)
            .style(Style::new().fg(*color));
        frame.render_widget(sparkline, chart);
    }
}

/// Sparklines take integers: hundredths keep small rates visible.
fn scaled(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        (v * 100.0).round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}
