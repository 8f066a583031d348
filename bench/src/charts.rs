//! Draws the scaling curves of `make bench` (the JSON `bench/scaling.py` writes) as SVG charts
//! beside the tables in bench/results: throughput and p99 against wasm filters, body size and
//! connections, and a cache hit's cost against capacity.
//!
//! usage: charts SCALING.json OUT_DIR

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde_json::Value;

/// One curve's points.
fn points(data: &Value, series: &str, y: &str) -> Vec<(f64, f64)> {
    data[series]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["x"].as_f64()?, p[y].as_f64()?)))
        .collect()
}

/// A panel: one line with its points, on a linear or log x axis.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    log_x: bool,
    pts: &[(f64, f64)],
    color: RGBColor,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let (x0, x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let y1 = pts.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    // The two axis kinds are different types; a macro draws on either.
    macro_rules! draw {
        ($x_range:expr) => {{
            let mut chart = builder
                .build_cartesian_2d($x_range, 0.0..y1.max(1e-9))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }};
    }
    if log_x {
        draw!((x0..x1).log_scale());
    } else {
        draw!(x0..x1);
    }
    Ok(())
}

/// Throughput and p99 side by side for one series.
fn rps_and_p99(
    data: &Value,
    series: &str,
    x_label: &str,
    log_x: bool,
    out: &Path,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(out, (1000, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(500);
    panel(
        &left,
        "throughput",
        x_label,
        "requests/s",
        log_x,
        &points(data, series, "rps"),
        BLUE,
    )?;
    panel(
        &right,
        "p99 latency",
        x_label,
        "ms",
        log_x,
        &points(data, series, "p99_ms"),
        RED,
    )?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, dir] = args.as_slice() else {
        anyhow::bail!("usage: charts SCALING.json OUT_DIR");
    };
    let text = std::fs::read_to_string(input).with_context(|| format!("reading {input}"))?;
    let data: Value = serde_json::from_str(&text).context("scaling JSON")?;
    let dir = Path::new(dir);
    rps_and_p99(
        &data,
        "filters",
        "wasm filters in the chain",
        false,
        &dir.join("scaling-filters.svg"),
    )?;
    rps_and_p99(
        &data,
        "body",
        "request body through one filter (bytes)",
        true,
        &dir.join("scaling-body.svg"),
    )?;
    rps_and_p99(
        &data,
        "connections",
        "open connections (cache hit)",
        true,
        &dir.join("scaling-connections.svg"),
    )?;
    let cache = dir.join("scaling-cache.svg");
    let root = SVGBackend::new(&cache, (1000, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (left, right) = root.split_horizontally(500);
    panel(
        &left,
        "cache hit",
        "entries (full cache)",
        "ns",
        true,
        &points(&data, "cache", "get_ns"),
        BLUE,
    )?;
    panel(
        &right,
        "store with eviction",
        "entries (full cache)",
        "ns",
        true,
        &points(&data, "cache", "put_ns"),
        RED,
    )?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("charts written to {}", dir.display());
    Ok(())
}
