//! The Events view: the cluster's merged event history and the console's
//! own records, newest first, through the service filter (`f`).

use cart_common::admin::Event;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::{selected_style, WIDE};
use crate::app::App;
use crate::format;

pub fn render(frame: &mut Frame, area: Rect, app: &App) {
    let [title, list] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    let events = app.events();
    let filter = app.event_filter.as_deref().unwrap_or("all services");
    let line = Line::from(vec![
        Span::styled("events of ", Style::new().fg(Color::DarkGray)),
        Span::styled(
            filter.to_string(),
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        Span::styled(
            format!(" · {} shown, newest first · f: filter", events.len()),
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    frame.render_widget(Paragraph::new(line), title);
    if events.is_empty() {
        let text = if app.view.is_some() {
            Line::styled("  no events yet", Style::new().fg(Color::DarkGray)).into()
        } else {
            super::cluster::waiting(app)
        };
        frame.render_widget(Paragraph::new(text), list);
        return;
    }
    let wide = area.width >= WIDE;
    let mut header = vec!["  AGE", "SERVICE", "KIND", "NODE"];
    let mut widths = vec![
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(14),
        Constraint::Length(4),
    ];
    if wide {
        header.push("OBSERVED BY");
        widths.push(Constraint::Length(24));
    }
    header.push("MESSAGE");
    widths.push(Constraint::Fill(1));
    let rows = events.iter().map(|e| row(app, e, wide));
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray)))
        .column_spacing(1)
        .row_highlight_style(selected_style());
    // A fresh state each frame keeps rendering a pure function of the app;
    // the table scrolls just enough to show the selected row.
    let mut state = TableState::new().with_selected(Some(app.event_row));
    frame.render_stateful_widget(table, list, &mut state);
}

fn row<'a>(app: &App, e: &Event, wide: bool) -> Row<'a> {
    let mut cells = vec![
        Cell::from(format!("  {}", format::ago(app.now_ms, e.at_ms))),
        Cell::from(e.service.clone()),
        Cell::from(Span::styled(e.kind.clone(), kind_style(&e.kind))),
        Cell::from(format::opt(e.node)),
    ];
    if wide {
        // The first observer, and how many others saw the same thing.
        let others = e.observers.iter().filter(|o| **o != e.observer).count();
        let observers = if others == 0 {
            e.observer.clone()
        } else {
            format!("{} +{others}", e.observer)
        };
        cells.push(Cell::from(observers));
    }
    cells.push(Cell::from(e.message.clone()));
    Row::new(cells)
}

pub fn kind_style(kind: &str) -> Style {
    match kind {
        "node_down" | "mismatch" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        "node_up" | "caught_up" | "repair" | "rebuild" => Style::new().fg(Color::Green),
        "leader_change" | "saga_recovery" => Style::new().fg(Color::Yellow),
        "member_added" | "member_removed" => Style::new().fg(Color::Magenta),
        "console" => Style::new().fg(Color::Cyan),
        _ => Style::new(),
    }
}
