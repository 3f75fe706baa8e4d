//! The SVG bar chart of a bench report: median decode tokens/s per mode with its min–max range,
//! and the speed the measured memory bandwidth would allow for that mode's bytes per token.

use std::path::Path;

use plotters::prelude::*;

use super::{BenchError, BenchReport};

const BAR: RGBColor = RGBColor(70, 110, 180);
const ROOF: RGBColor = RGBColor(200, 60, 40);

/// The chart title; it says SYNTHETIC model when the weights are random.
pub fn chart_title(r: &BenchReport) -> String {
    let name = r.model.name.clone().unwrap_or_else(|| {
        Path::new(&r.model.path)
            .file_name()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
    });
    let synthetic = if r.model.synthetic {
        "SYNTHETIC model "
    } else {
        ""
    };
    format!(
        "{synthetic}{name}: decode tok/s, {} threads, tg{} after pp{}",
        r.threads, r.n_gen, r.n_prompt
    )
}

/// Write the chart to `path` as SVG.
pub fn write_svg(r: &BenchReport, path: &Path) -> Result<(), BenchError> {
    let err = |e: &dyn std::fmt::Display| BenchError::Plot(e.to_string());
    let n = r.modes.len();
    if n == 0 {
        return Err(BenchError::Plot("no modes to plot".into()));
    }
    let top = r
        .modes
        .iter()
        .map(|m| m.roofline_tok_s.max(m.decode_tok_s.max))
        .fold(0.0, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (820, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(chart_title(r), ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..n as f64, 0f64..top.max(1.0))
        .map_err(|e| err(&e))?;
    let names: Vec<String> = r.modes.iter().map(|m| m.mode.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            // Label only the bar centres (x = i + 0.5).
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 && i < names.len() {
                names[i].clone()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("decode tokens/s (median of reps; bar: min to max)")
        .draw()
        .map_err(|e| err(&e))?;
    for (i, m) in r.modes.iter().enumerate() {
        let (x0, x1) = (i as f64 + 0.2, i as f64 + 0.8);
        let xc = i as f64 + 0.5;
        let d = &m.decode_tok_s;
        let ratio = m
            .decode_vs_dense
            .map_or(String::new(), |v| format!(" ({v:.2}x)"));
        chart
            .draw_series([Rectangle::new([(x0, 0.0), (x1, d.median)], BAR.filled())])
            .map_err(|e| err(&e))?;
        chart
            .draw_series([
                PathElement::new(vec![(xc, d.min), (xc, d.max)], BLACK.stroke_width(2)),
                PathElement::new(
                    vec![(x0 - 0.08, m.roofline_tok_s), (x1 + 0.08, m.roofline_tok_s)],
                    ROOF.stroke_width(3),
                ),
            ])
            .map_err(|e| err(&e))?;
        chart
            .draw_series([
                Text::new(
                    format!("{:.1}{ratio}", d.median),
                    (x0, d.max + top * 0.045),
                    ("sans-serif", 14),
                ),
                Text::new(
                    format!(
                        "roofline {:.1} ({:.0}% reached)",
                        m.roofline_tok_s, m.roofline_pct
                    ),
                    (x0 - 0.08, m.roofline_tok_s + top * 0.035),
                    ("sans-serif", 12).into_font().color(&ROOF),
                ),
            ])
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
