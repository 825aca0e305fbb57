//! One labelled sparkline row, shared by the Traffic and Transactions
//! views: `  label  latest │bars…│ max N`. Bars start at zero, so the
//! scale on the right (the largest value shown) is all a reader needs to
//! read one.

use std::collections::VecDeque;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Paragraph, Sparkline};
use ratatui::Frame;

use crate::format;
use crate::metrics::Point;

/// Width of the label left of each sparkline.
pub const LABEL: u16 = 26;
/// Width of the scale right of it: " max 1340", in the row's unit.
const SCALE: u16 = 10;

/// How a series' numbers read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    PerSecond,
    Millis,
    Seconds,
    Count,
}

impl Unit {
    pub fn show(self, v: Option<f64>) -> String {
        let Some(v) = v else {
            return "-".into();
        };
        match self {
            Unit::PerSecond => format!("{}/s", format::rate(v)),
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Seconds => format!("{} s", format::seconds(v)),
            Unit::Count => format!("{v:.0}"),
        }
    }
}

/// One row of a chart: what it shows and how.
pub struct Series<'a> {
    pub label: &'a str,
    pub unit: Unit,
    pub color: Color,
    pub points: Option<&'a VecDeque<Point>>,
}

pub fn render(frame: &mut Frame, area: Rect, series: &Series) {
    let [label_area, chart, scale_area] = Layout::horizontal([
        Constraint::Length(LABEL),
        Constraint::Fill(1),
        Constraint::Length(SCALE),
    ])
    .areas(area);
    let empty = VecDeque::new();
    let points = series.points.unwrap_or(&empty);
    let last = points.back().and_then(|p| p.value);
    let label = format!("  {:<15}{}", series.label, series.unit.show(last));
    frame.render_widget(
        Paragraph::new(format::truncate(&label, LABEL as usize)),
        label_area,
    );
    let shown: Vec<f64> = points
        .iter()
        .skip(points.len().saturating_sub(chart.width as usize))
        .map(|p| p.value.unwrap_or(0.0))
        .collect();
    let top = shown.iter().copied().fold(0.0, f64::max);
    let data: Vec<u64> = shown.iter().map(|v| scaled(*v)).collect();
    // Never all-zero bars on a scale of zero: a flat line stays flat.
    let max = data.iter().copied().max().unwrap_or(0).max(1);
    let sparkline = Sparkline::default()
        .data(&data)
        .max(max)
        .style(Style::new().fg(series.color));
    frame.render_widget(sparkline, chart);
    let scale = format!(" max {}", format::rate(top));
    frame.render_widget(
        Paragraph::new(scale).style(Style::new().fg(Color::DarkGray)),
        scale_area,
    );
}

/// "last 2m00s" over the points a chart `width` wide shows, or that there
/// are none yet.
pub fn span(points: Option<&VecDeque<Point>>, width: u16) -> String {
    let Some(points) = points else {
        return "no samples yet".into();
    };
    let shown = points
        .len()
        .min(width.saturating_sub(LABEL + SCALE) as usize);
    let first = points.get(points.len() - shown);
    match (first, points.back()) {
        (Some(a), Some(b)) if b.at_ms > a.at_ms => {
            format!("last {}", format::age(b.at_ms - a.at_ms))
        }
        _ => "no samples yet".into(),
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
