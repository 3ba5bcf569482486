//! `scaling.png`: the runs as points (loss against N, one colour per compute budget), each
//! budget's IsoFLOP parabola and its minimum, and the fitted law's compute-optimal frontier.
//! Drawn like `loss.png` ([`crate::plot`]: the same font lookup, written crash-safely).

use super::fit::Parabola;
use crate::plot::{commit_png, font_status, PlotError, FAMILY, HEIGHT, WIDTH};
use plotters::prelude::*;
use std::path::Path;

/// One compute budget's runs.
#[derive(Debug, Clone, PartialEq)]
pub struct IsoFlopSeries {
    /// The budget C.
    pub budget: f64,
    /// (N, final validation loss) of each run.
    pub points: Vec<(f64, f64)>,
    /// The parabola of loss against ln N, when it has a minimum.
    pub parabola: Option<Parabola>,
}

/// Colours of the budgets, in order (matplotlib's tab10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draws the chart into a PNG at `path`, replacing it atomically. `frontier` is the fitted
/// law's (N_opt, L_opt) over a range of budgets.
pub fn write_scaling_plot(
    path: &Path,
    series: &[IsoFlopSeries],
    frontier: &[(f64, f64)],
    title: &str,
) -> Result<(), PlotError> {
    let text = font_status().is_some();
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, series, frontier, title, text).map_err(|message| PlotError::Draw {
            path: path.to_path_buf(),
            message,
        })?;
    }
    commit_png(path, &pixels)
}

/// `[lo, hi]` of finite values widened by `margin` of the span; `0..1` without any.
fn range(values: impl Iterator<Item = f64>, margin: f64) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * margin).max(0.05);
    lo - pad..hi + pad
}

fn draw(
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    series: &[IsoFlopSeries],
    frontier: &[(f64, f64)],
    title: &str,
    text: bool,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let points = || series.iter().flat_map(|s| s.points.iter().copied());
    // x is log10 N; the frontier is cut to the runs' span of N, widened by half a decade.
    let x_range = range(points().map(|p| p.0.log10()), 0.08);
    let (x_lo, x_hi) = (x_range.start - 0.5, x_range.end + 0.5);
    let frontier: Vec<(f64, f64)> = frontier
        .iter()
        .map(|&(n, l)| (n.log10(), l))
        .filter(|p| p.0 >= x_lo && p.0 <= x_hi && p.1.is_finite())
        .collect();
    let y_range = range(points().map(|p| p.1), 0.08);

    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut builder = ChartBuilder::on(root);
    builder.margin(20);
    if text {
        if !title.is_empty() {
            builder.caption(title, (FAMILY, 24));
        }
        builder.x_label_area_size(50).y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(x_range.clone(), y_range.clone())
        .map_err(|e| fail(&e))?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12));
    if text {
        mesh.x_desc("N, non-embedding parameters")
            .y_desc("final validation loss (nats/token)")
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|x| format!("{:.1e}", 10f64.powf(*x)))
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17));
    }
    mesh.draw().map_err(|e| fail(&e))?;

    let inside = |p: &(f64, f64)| y_range.contains(&p.1) && x_range.contains(&p.0);
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().map(|&(n, l)| (n.log10(), l)).collect();
        let drawn = chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, colour.filled())))
            .map_err(|e| fail(&e))?;
        drawn
            .label(format!("C = {:.2e}", s.budget))
            .legend(move |(x, y)| Circle::new((x + 12, y), 5, colour.filled()));
        if let Some(parabola) = &s.parabola {
            // The parabola is in ln N; drawn over the runs' span.
            let (lo, hi) = pts
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                    (a.min(p.0), b.max(p.0))
                });
            let curve: Vec<(f64, f64)> = (0..=60)
                .map(|k| {
                    let x = lo + (hi - lo) * k as f64 / 60.0;
                    (x, parabola.at(x * std::f64::consts::LN_10))
                })
                .filter(inside)
                .collect();
            chart
                .draw_series(LineSeries::new(curve, colour.stroke_width(2)))
                .map_err(|e| fail(&e))?;
            let (x, y) = parabola.vertex();
            let vertex = (x / std::f64::consts::LN_10, y);
            if inside(&vertex) {
                chart
                    .draw_series(std::iter::once(Cross::new(
                        vertex,
                        9,
                        colour.stroke_width(3),
                    )))
                    .map_err(|e| fail(&e))?;
            }
        }
    }
    if frontier.len() >= 2 {
        let line: Vec<(f64, f64)> = frontier.into_iter().filter(inside).collect();
        chart
            .draw_series(LineSeries::new(line, BLACK.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label("fitted law: compute-optimal frontier")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], BLACK.stroke_width(2)));
    }
    if text && !series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FAMILY, 15))
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_with_curves_minima_and_frontier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scaling.png");
        let series: Vec<IsoFlopSeries> = [1e15, 4e15]
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let points: Vec<(f64, f64)> = (0..5)
                    .map(|k| {
                        let n = 1e5 * 2f64.powi(k + i as i32);
                        (
                            n,
                            3.0 - 0.1 * i as f64
                                + 0.05 * (n.ln() - (4e5f64 * 2f64.powi(i as i32)).ln()).powi(2),
                        )
                    })
                    .collect();
                let logged: Vec<(f64, f64)> = points.iter().map(|&(n, l)| (n.ln(), l)).collect();
                IsoFlopSeries {
                    budget: c,
                    points,
                    parabola: super::super::fit::fit_parabola(&logged),
                }
            })
            .collect();
        assert!(series.iter().all(|s| s.parabola.is_some()));
        let frontier: Vec<(f64, f64)> = (0..20)
            .map(|k| (1e5 * 1.5f64.powi(k), 3.2 - 0.02 * k as f64))
            .collect();
        write_scaling_plot(&path, &series, &frontier, "test").unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        // Both budgets' colours are on the picture.
        for colour in &PALETTE[..2] {
            let found = img.pixels().any(|p| p.0 == [colour.0, colour.1, colour.2]);
            assert!(found, "{colour:?} not drawn");
        }
    }
}
