//! The Transactions view: the order service's checkouts. Answered per
//! second by outcome (from the order coordinators' `cart_checkouts_total`),
//! the sagas in flight and the age of the oldest, compensations (from the
//! order nodes), and the sagas a new leader took over after each leader
//! change (the `saga_recovery` events, beside the `leader_change` ones).

use cart_common::metrics::Label;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::chart::{self, Series, Unit};
use crate::app::App;
use crate::format;
use crate::metrics::{CheckoutOutcome, Metric};

const ORDER: &str = "order";
/// The events that tell how checkouts survived leader changes.
const RECOVERY_KINDS: [&str; 2] = ["saga_recovery", "leader_change"];

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    if app.view.is_none() {
        frame.render_widget(Paragraph::new(super::cluster::waiting(app)), area);
        return;
    }
    let charts = series(app);
    let [summary, note, rows, _gap, recoveries] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Length(charts.len() as u16),
        Constraint::Length(1),
        Constraint::Fill(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(summary_line(app)), summary);
    let span = chart::span(app.traffic.points(ORDER, Metric::SagasInFlight), area.width);
    let note_text =
        format!("checkouts answered by the order coordinators · sagas on the order nodes · {span}");
    frame.render_widget(
        Paragraph::new(Line::styled(note_text, Style::new().fg(Color::DarkGray))),
        note,
    );
    let areas = Layout::vertical(charts.iter().map(|_| Constraint::Length(1))).split(rows);
    for (one, row) in charts.iter().zip(areas.iter()) {
        chart::render(frame, *row, one);
    }
    render_recoveries(frame, recoveries, app);
}

/// "checkouts 24/s · paid 96% · refused 3.1/s · failed 0/s", then "sagas in
/// flight 3, oldest 0.12 s · compensations 0.2/s".
fn summary_line(app: &App) -> Vec<Line<'static>> {
    let t = &app.traffic;
    let rate = |o: CheckoutOutcome| t.last(ORDER, Metric::Checkouts(o)).unwrap_or(0.0);
    let total: f64 = CheckoutOutcome::all().map(rate).sum();
    let refused: f64 = CheckoutOutcome::all()
        .filter(|o| o.is_refusal())
        .map(rate)
        .sum();
    let failed = rate(CheckoutOutcome::Failed);
    let sep = || Span::styled(" · ", Style::new().fg(Color::DarkGray));
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut spans = vec![Span::styled(
        format!("checkouts {}", Unit::PerSecond.show(Some(total))),
        bold,
    )];
    if total > 0.0 {
        let paid = rate(CheckoutOutcome::Paid) + rate(CheckoutOutcome::AlreadyPaid);
        spans.push(sep());
        spans.push(Span::raw(format!("paid {:.0}%", 100.0 * paid / total)));
    }
    spans.extend([
        sep(),
        Span::raw(format!("refused {}", Unit::PerSecond.show(Some(refused)))),
        sep(),
        Span::styled(
            format!("failed {}", Unit::PerSecond.show(Some(failed))),
            if failed > 0.0 {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            },
        ),
    ]);
    let in_flight = t.last(ORDER, Metric::SagasInFlight);
    let oldest = t.last(ORDER, Metric::OldestSagaSecs).filter(|s| *s > 0.0);
    let sagas = Line::from(vec![
        Span::raw(format!(
            "sagas in flight {}, oldest {}",
            Unit::Count.show(in_flight),
            Unit::Seconds.show(oldest)
        )),
        sep(),
        Span::raw(format!(
            "compensations {}",
            Unit::PerSecond.show(t.last(ORDER, Metric::Compensations))
        )),
    ]);
    vec![Line::from(spans), sagas]
}

fn series(app: &App) -> Vec<Series<'_>> {
    let t = &app.traffic;
    let outcome = |label, o, color| Series {
        label,
        unit: Unit::PerSecond,
        color,
        points: t.points(ORDER, Metric::Checkouts(o)),
    };
    vec![
        outcome("paid", CheckoutOutcome::Paid, Color::Green),
        outcome("already paid", CheckoutOutcome::AlreadyPaid, Color::Cyan),
        outcome(
            "no credit",
            CheckoutOutcome::InsufficientCredit,
            Color::Yellow,
        ),
        outcome(
            "no stock",
            CheckoutOutcome::InsufficientStock,
            Color::Yellow,
        ),
        outcome("rejected", CheckoutOutcome::Rejected, Color::Yellow),
        outcome("failed", CheckoutOutcome::Failed, Color::Red),
        Series {
            label: "in flight",
            unit: Unit::Count,
            color: Color::Blue,
            points: t.points(ORDER, Metric::SagasInFlight),
        },
        Series {
            label: "oldest",
            unit: Unit::Seconds,
            color: Color::Magenta,
            points: t.points(ORDER, Metric::OldestSagaSecs),
        },
        Series {
            label: "compensations",
            unit: Unit::PerSecond,
            color: Color::Red,
            points: t.points(ORDER, Metric::Compensations),
        },
    ]
}

/// The order service's leader changes and what each new leader took over.
fn render_recoveries(frame: &mut Frame, area: Rect, app: &App) {
    let [title, list] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    let events: Vec<_> = app
        .view
        .iter()
        .flat_map(|v| v.events.iter())
        .filter(|e| e.service == ORDER && RECOVERY_KINDS.contains(&e.kind.as_str()))
        .collect();
    let recovered = events.iter().filter(|e| e.kind == "saga_recovery").count();
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(
                "sagas recovered after leader changes",
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::styled(
                format!(" · {recovered} recoveries in the last events, newest first"),
                Style::new().fg(Color::DarkGray),
            ),
        ])),
        title,
    );
    if events.is_empty() {
        let none = Line::styled(
            "  no order leader change in the events",
            Style::new().fg(Color::DarkGray),
        );
        frame.render_widget(Paragraph::new(none), list);
        return;
    }
    let rows = events.iter().map(|e| {
        Row::new(vec![
            Cell::from(format!("  {}", format::ago(app.now_ms, e.at_ms))),
            Cell::from(Span::styled(
                e.kind.clone(),
                super::events::kind_style(&e.kind),
            )),
            Cell::from(e.message.clone()),
        ])
    });
    let widths = [
        Constraint::Length(8),
        Constraint::Length(14),
        Constraint::Fill(1),
    ];
    frame.render_widget(Table::new(rows, widths).column_spacing(1), list);
}
