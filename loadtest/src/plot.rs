//! SVG plots of several runs side by side, one panel per run on shared
//! axes: latency percentiles per second (log scale, so 5 ms and 5 s runs
//! both read), and answers per second. Faults are marked as vertical lines.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::RunReport;
use crate::stats::{SecondPoint, ALL};

const PANEL_W: u32 = 520;
/// A plotted line: its legend, colour and value per second.
type Line = (&'static str, RGBColor, fn(&SecondPoint) -> f64);
const HEIGHT: u32 = 400;

fn points(r: &RunReport) -> &[SecondPoint] {
    r.series.get(ALL).map(Vec::as_slice).unwrap_or(&[])
}

fn x_max(runs: &[RunReport]) -> f64 {
    runs.iter()
        .map(|r| r.outcome.load_s.max(points(r).len() as f64))
        .fold(1.0, f64::max)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

/// Kills and network faults (red), restarts and heals (green), as
/// (second, colour).
fn fault_marks(r: &RunReport) -> Vec<(f64, RGBColor)> {
    r.events
        .iter()
        .filter_map(|e| match e.kind.as_str() {
            "kill" | "fault" => Some((e.t_s, RED)),
            "restart" | "heal" => Some((e.t_s, GREEN)),
            _ => None,
        })
        .collect()
}

pub fn latency(runs: &[RunReport], path: &Path) -> anyhow::Result<()> {
    let width = PANEL_W * runs.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let xmax = x_max(runs);
    let ymax = runs
        .iter()
        .flat_map(|r| points(r).iter().map(|p| p.latency.max_ms))
        .fold(10.0, f64::max)
        * 1.5;
    let ymin = 0.1;
    let panels = root.split_evenly((1, runs.len().max(1)));
    for (panel, r) in panels.iter().zip(runs) {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} — latency", r.label), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..xmax, (ymin..ymax).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("ms (log)")
            .draw()
            .map_err(plot_err)?;
        let lines: [Line; 4] = [
            ("p50", BLUE, |p| p.latency.p50_ms),
            ("p90", GREEN, |p| p.latency.p90_ms),
            ("p99", RGBColor(230, 130, 0), |p| p.latency.p99_ms),
            ("p99.9", RED, |p| p.latency.p999_ms),
        ];
        for (name, colour, value) in lines {
            let data: Vec<(f64, f64)> = points(r)
                .iter()
                .filter(|p| p.count > 0)
                .map(|p| (p.t as f64 + 0.5, value(p).max(ymin)))
                .collect();
            chart
                .draw_series(LineSeries::new(data, colour.stroke_width(2)))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        for (t, colour) in fault_marks(r) {
            chart
                .draw_series(LineSeries::new(
                    vec![(t, ymin), (t, ymax)],
                    colour.stroke_width(1),
                ))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

pub fn throughput(runs: &[RunReport], path: &Path) -> anyhow::Result<()> {
    let width = PANEL_W * runs.len().max(1) as u32;
    let root = SVGBackend::new(path, (width, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let xmax = x_max(runs);
    let ymax = runs
        .iter()
        .flat_map(|r| points(r).iter().map(|p| p.count as f64))
        .fold(10.0, f64::max)
        * 1.15;
    let panels = root.split_evenly((1, runs.len().max(1)));
    for (panel, r) in panels.iter().zip(runs) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} — answers per second", r.label),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("second of the run")
            .y_desc("answers/s")
            .draw()
            .map_err(plot_err)?;
        let lines: [Line; 3] = [
            ("2xx", BLUE, |p| p.ok as f64),
            ("non-2xx", RED, |p| p.failed as f64),
            ("users", RGBColor(120, 120, 120), |p| p.users as f64),
        ];
        for (name, colour, value) in lines {
            let data: Vec<(f64, f64)> = points(r)
                .iter()
                .map(|p| (p.t as f64 + 0.5, value(p)))
                .collect();
            chart
                .draw_series(LineSeries::new(data, colour.stroke_width(2)))
                .map_err(plot_err)?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        for (t, colour) in fault_marks(r) {
            chart
                .draw_series(LineSeries::new(
                    vec![(t, 0.0), (t, ymax)],
                    colour.stroke_width(1),
                ))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}
