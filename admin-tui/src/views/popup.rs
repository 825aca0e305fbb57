//! Popups drawn over the current view: the help (every key, from the one
//! key list) and the confirm dialog of an action, Cancel first and focused.

use ratatui::layout::{Alignment, Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::app::{Button, Dialog};
use crate::keys::{DIALOG_KEYS, KEYS};

/// A `width`×`height` rectangle centred in `area`, shrunk to fit.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [rect] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    rect
}

pub fn help(frame: &mut Frame, area: Rect) {
    let key_style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let entry = |keys: &str, help: &str| {
        Line::from(vec![
            Span::styled(format!(" {keys:<10}"), key_style),
            Span::raw(help.to_string()),
        ])
    };
    let mut lines: Vec<Line> = KEYS.iter().map(|b| entry(b.keys, b.help)).collect();
    lines.push(Line::styled(
        " in a confirm dialog:",
        Style::new().fg(Color::DarkGray),
    ));
    lines.extend(DIALOG_KEYS.iter().map(|(k, what)| entry(k, what)));
    // Two columns, so that every key fits on an 80×24 screen.
    let half = lines.len().div_ceil(2);
    let right = lines.split_off(half);
    let rect = centered(area, 78, half as u16 + 2);
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .title(" Keys ")
        .title_bottom(Line::from(" ? or Esc closes ").alignment(Alignment::Right))
        .border_style(Style::new().fg(Color::Cyan));
    let inner = block.inner(rect);
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)]).areas(inner);
    frame.render_widget(Clear, rect);
    frame.render_widget(block, rect);
    frame.render_widget(Paragraph::new(lines), left_area);
    frame.render_widget(Paragraph::new(right), right_area);
}

pub fn confirm(frame: &mut Frame, area: Rect, dialog: &Dialog) {
    let (question, what) = dialog.action.question();
    let mut lines = vec![
        Line::styled(question, Style::new().add_modifier(Modifier::BOLD)),
        Line::styled(what, Style::new().fg(Color::DarkGray)),
        Line::default(),
    ];
    if let Some(input) = &dialog.input {
        lines.push(Line::from(vec![
            Span::raw("node id: "),
            Span::styled(
                format!("{input}_"),
                Style::new().fg(Color::Black).bg(Color::White),
            ),
        ]));
    }
    if let Some(error) = &dialog.error {
        lines.push(Line::styled(error.clone(), Style::new().fg(Color::Red)));
    }
    lines.push(buttons(dialog));
    let height = lines.len() as u16 + 2;
    let rect = centered(area, 66, height);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .title(" Confirm ")
        .border_style(Style::new().fg(Color::Yellow));
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .alignment(Alignment::Center)
            .wrap(Wrap { trim: true }),
        rect,
    );
}

/// "[ Cancel ]   [ Repair ]", the focused one reversed.
fn buttons(dialog: &Dialog) -> Line<'static> {
    let style = |b: Button| {
        if dialog.focus == b {
            Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        }
    };
    Line::from(vec![
        Span::styled("[ Cancel ]", style(Button::Cancel)),
        Span::raw("   "),
        Span::styled(
            format!("[ {} ]", dialog.action.verb()),
            style(Button::Confirm),
        ),
    ])
}
