//! Rendering: a pure function of the `App`, so `TestBackend` tests can
//! check every view from fixed fixtures. The screen is the tabs line, the
//! current view, a status line and the key-hint bar, with popups on top.

pub mod chart;
pub mod cluster;
pub mod consistency;
pub mod events;
pub mod popup;
pub mod traffic;
pub mod transactions;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;

use crate::app::{App, Level, Link, Popup, Tab};
use crate::format;
use crate::keys;

/// Terminals at least this wide get the extra columns.
pub const WIDE: u16 = 110;

pub fn render(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let [top, body, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_tabs(frame, top, app);
    match app.tab {
        Tab::Cluster => cluster::render(frame, body, app),
        Tab::Consistency => consistency::render(frame, body, app),
        Tab::Events => events::render(frame, body, app),
        Tab::Traffic => traffic::render(frame, body, app),
        Tab::Transactions => transactions::render(frame, body, app),
    }
    render_status(frame, status, app);
    render_hints(frame, hints, app);
    match &app.popup {
        Some(Popup::Help) => popup::help(frame, area),
        Some(Popup::Confirm(dialog)) => popup::confirm(frame, area, dialog),
        None => {}
    }
}

fn render_tabs(frame: &mut Frame, area: Rect, app: &App) {
    let badge = if app.access.read_only() {
        " READ-ONLY "
    } else {
        ""
    };
    let [tabs_area, badge_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(badge.len() as u16)])
            .areas(area);
    let titles = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{} {}", i + 1, t.title()));
    let tabs = Tabs::new(titles)
        .select(app.tab.index())
        .style(Style::new().fg(Color::Gray))
        .highlight_style(
            Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
        );
    frame.render_widget(tabs, tabs_area);
    if !badge.is_empty() {
        let style = Style::new()
            .fg(Color::Black)
            .bg(Color::Yellow)
            .add_modifier(Modifier::BOLD);
        frame.render_widget(Paragraph::new(Span::styled(badge, style)), badge_area);
    }
}

/// The last action's result on the left, the link to the coordinator on the
/// right.
fn render_status(frame: &mut Frame, area: Rect, app: &App) {
    let link = link_span(app);
    let width = link.width() as u16;
    let [left, right] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(width)]).areas(area);
    if let Some(status) = &app.status {
        let text = format::truncate(&status.text, left.width.saturating_sub(1) as usize);
        frame.render_widget(
            Paragraph::new(Span::styled(text, level_style(status.level))),
            left,
        );
    }
    frame.render_widget(Paragraph::new(link), right);
}

fn link_span(app: &App) -> Span<'static> {
    match &app.link {
        Link::Connecting(addr) => Span::styled(
            format!(" connecting to {addr}… "),
            Style::new().fg(Color::Yellow),
        ),
        Link::Connected(via) => {
            Span::styled(format!(" via {via} "), Style::new().fg(Color::DarkGray))
        }
        Link::Unreachable(_) => {
            let old = app
                .view_at_ms
                .map(|at| format!(" · data {} old", format::ago(app.now_ms, at)))
                .unwrap_or_default();
            Span::styled(
                format!(" coordinator unreachable{old} "),
                Style::new()
                    .fg(Color::White)
                    .bg(Color::Red)
                    .add_modifier(Modifier::BOLD),
            )
        }
    }
}

pub fn level_style(level: Level) -> Style {
    match level {
        Level::Info => Style::new().fg(Color::Cyan),
        Level::Success => Style::new().fg(Color::Green),
        Level::Warning => Style::new().fg(Color::Yellow),
        Level::Error => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

fn render_hints(frame: &mut Frame, area: Rect, app: &App) {
    let hints: Vec<(&str, &str)> = match &app.popup {
        Some(Popup::Confirm(_)) => vec![("Tab", "switch"), ("Enter", "choose"), ("Esc", "cancel")],
        Some(Popup::Help) => vec![("Esc", "close help")],
        None => keys::hints(app.access.read_only()),
    };
    let key_style = Style::new().fg(Color::Black).bg(Color::Cyan);
    let mut spans = vec![];
    let mut used = 0usize;
    for (key, what) in hints {
        let len = key.chars().count() + what.chars().count() + 3;
        if used + len > area.width as usize {
            break;
        }
        used += len;
        spans.push(Span::styled(format!(" {key} "), key_style));
        spans.push(Span::raw(format!("{what} ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Draws one service's section of a view.
pub type RenderSection = fn(&mut Frame, Rect, &App, &cart_common::admin::ServiceView);

/// Renders one section per service of the current view in `area`, stacked
/// and scrolled so the selected service shows (or, before the first view,
/// what was tried). Shared by the Cluster and Consistency views.
pub fn service_sections(
    frame: &mut Frame,
    area: Rect,
    app: &App,
    height: fn(&cart_common::admin::ServiceView) -> u16,
    render: RenderSection,
) {
    let Some(view) = &app.view else {
        frame.render_widget(
            ratatui::widgets::Paragraph::new(cluster::waiting(app)),
            area,
        );
        return;
    };
    let heights: Vec<u16> = view.services.iter().map(height).collect();
    let keep = app
        .selection
        .as_ref()
        .and_then(|sel| view.services.iter().position(|s| s.service == sel.service))
        .unwrap_or(0);
    for (service, place) in view.services.iter().zip(stack(area, &heights, keep)) {
        if let Some(place) = place {
            render(frame, place, app, service);
        }
    }
}

/// Places sections of the given heights one under the other in `area`,
/// scrolled (by whole sections) so that section `keep` shows. Sections that
/// do not fit get `None`; the last one that does is cut to what is left.
pub fn stack(area: Rect, heights: &[u16], keep: usize) -> Vec<Option<Rect>> {
    let keep = keep.min(heights.len().saturating_sub(1));
    let mut first = 0;
    while first < keep
        && heights[first..=keep]
            .iter()
            .map(|h| u32::from(*h))
            .sum::<u32>()
            > u32::from(area.height)
    {
        first += 1;
    }
    let mut y = area.y;
    let bottom = area.y.saturating_add(area.height);
    heights
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i < first || y >= bottom {
                return None;
            }
            let height = (*h).min(bottom - y);
            let rect = Rect::new(area.x, y, area.width, height);
            y += height;
            Some(rect)
        })
        .collect()
}

/// Status words and colours of a node's health.
pub fn health_span(status: cart_common::admin::NodeHealth) -> Span<'static> {
    use cart_common::admin::NodeHealth;
    match status {
        NodeHealth::Up => Span::styled("up", Style::new().fg(Color::Green)),
        NodeHealth::Down => Span::styled(
            "DOWN",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        NodeHealth::CatchingUp => Span::styled("catching up", Style::new().fg(Color::Yellow)),
        NodeHealth::Unknown => Span::styled("unknown", Style::new().fg(Color::DarkGray)),
    }
}

/// The style of the selected row.
pub fn selected_style() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

/// A section title: the service name in bold, then facts.
pub fn title_line(service: &str, facts: Vec<Span<'static>>, selected: bool) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!("{service:<8}"),
        Style::new().add_modifier(Modifier::BOLD).fg(Color::Cyan),
    )];
    spans.extend(facts);
    let line = Line::from(spans);
    if selected {
        line.style(selected_style())
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_scrolls_by_whole_sections_to_keep_one_visible() {
        let area = Rect::new(0, 0, 10, 10);
        let placed = stack(area, &[4, 4, 4], 0);
        assert_eq!(placed[0], Some(Rect::new(0, 0, 10, 4)));
        assert_eq!(
            placed[2],
            Some(Rect::new(0, 8, 10, 2)),
            "cut to what is left"
        );
        let placed = stack(area, &[4, 4, 4], 2);
        assert_eq!(placed[0], None);
        assert_eq!(placed[1], Some(Rect::new(0, 0, 10, 4)));
        assert_eq!(placed[2], Some(Rect::new(0, 4, 10, 4)));
        // Degenerate inputs do not panic.
        assert!(stack(area, &[], 0).is_empty());
        assert_eq!(stack(Rect::new(0, 0, 0, 0), &[3], 5), vec![None]);
    }
}
