//! `loss.png`: train and validation loss against tokens seen, drawn with plotters into a PNG.
//!
//! Text needs a TrueType font, which we load at run time (no fontconfig): `H5GPT_FONT` if set,
//! else the first of a few common DejaVu / Liberation paths (Debian's `fonts-dejavu-core`, which
//! `scripts/setup.sh` installs, comes first). Without one the curves are still drawn, without
//! any text; [`font_status`] says which case holds so that a caller can print [`NO_FONT_HINT`].
//!
//! The file is written crash-safely: rendered into memory, written to a temporary sibling,
//! fsynced and renamed into place (`h5gpt_formats::fsio`).

use h5gpt_formats::fsio::{commit_file, temporary_path};
use h5gpt_formats::FormatError;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Width of the picture in pixels.
pub const WIDTH: u32 = 1000;
/// Height of the picture in pixels.
pub const HEIGHT: u32 = 600;

/// The environment variable naming a `.ttf` file to draw text with.
pub const FONT_ENV: &str = "H5GPT_FONT";

/// What to tell the user when [`font_status`] is `None`.
pub const NO_FONT_HINT: &str = "loss.png is drawn without text: no font found; install \
     fonts-dejavu-core (scripts/setup.sh does) or set H5GPT_FONT to a .ttf file";

/// Where we look for a font when `H5GPT_FONT` is not set, in order.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", // Debian, Ubuntu (fonts-dejavu-core)
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf", // Fedora
    "/usr/share/fonts/TTF/DejaVuSans.ttf",             // Arch
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",          // older Fedora / CentOS, Alpine
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf", // Debian, Ubuntu
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf", // Fedora
];

/// The family name our text styles ask plotters for.
pub(crate) const FAMILY: &str = "sans-serif";

/// Train curves with more points than this are drawn faintly, with a smoothed line over them.
const SMOOTH_ABOVE: usize = 50;

/// Writing the loss plot failed.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Plotters could not draw the chart.
    #[error("{path}: drawing the plot failed: {message}")]
    Draw {
        /// The plot being written.
        path: PathBuf,
        /// Plotters' error.
        message: String,
    },
    /// Writing the temporary file failed.
    #[error("{path}: {source}")]
    Io {
        /// The temporary file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Encoding the PNG failed.
    #[error("{path}: encoding the PNG failed: {source}")]
    Encode {
        /// The temporary file.
        path: PathBuf,
        /// The encoder's error.
        source: image::ImageError,
    },
    /// Moving the finished file into place failed.
    #[error(transparent)]
    Commit(#[from] FormatError),
}

/// The font text is drawn with, loaded and registered with plotters on the first call
/// (process-wide, once); `None` when no usable font was found (see [`NO_FONT_HINT`]).
///
/// When `H5GPT_FONT` is set, only that file is tried, so that a wrong path shows instead of
/// being masked by a system font.
pub fn font_status() -> Option<PathBuf> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = match std::env::var_os(FONT_ENV) {
            Some(path) if !path.is_empty() => vec![PathBuf::from(path)],
            _ => FONT_PATHS.iter().map(PathBuf::from).collect(),
        };
        candidates.into_iter().find(|path| register(path))
    })
    .clone()
}

/// Reads `path` and registers it as our family; false when unreadable or not a font.
fn register(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    // plotters keeps fonts for the whole process and wants `'static` bytes: this runs at most
    // once per candidate path, inside `font_status`'s `OnceLock`.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok()
}

/// Draws `train` and `val` loss (points are `(tokens seen, loss)`) against tokens into a PNG
/// of [`WIDTH`] × [`HEIGHT`] at `path`, replacing it atomically.
///
/// Non-finite losses are skipped; empty or single-point curves, and flat ones, still give a
/// readable chart. Without a font (see [`font_status`]) the chart has no text but is written.
pub fn write_loss_plot(
    path: &Path,
    train: &[(u64, f64)],
    val: &[(u64, f64)],
    title: &str,
) -> Result<(), PlotError> {
    let text = font_status().is_some();
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize]; // RGB
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, train, val, title, text).map_err(|message| PlotError::Draw {
            path: path.to_path_buf(),
            message,
        })?;
    }
    commit_png(path, &pixels)
}

/// [`write_loss_plot`] with a second panel below the losses when `tasks` is not empty: each
/// task's accuracy (points `(tokens seen, accuracy)`, by task name) against the same tokens.
pub fn write_run_plot(
    path: &Path,
    train: &[(u64, f64)],
    val: &[(u64, f64)],
    tasks: &[(&str, &[(u64, f64)])],
    title: &str,
) -> Result<(), PlotError> {
    if tasks.is_empty() {
        return write_loss_plot(path, train, val, title);
    }
    let text = font_status().is_some();
    let mut pixels = vec![0u8; (WIDTH * HEIGHT * 3) as usize]; // RGB
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        let (upper, lower) = root.split_vertically(HEIGHT * 62 / 100);
        let drawn = draw(&upper, train, val, title, text)
            .and_then(|()| draw_tasks(&lower, train, val, tasks, text))
            .and_then(|()| root.present().map_err(|e| e.to_string()));
        drawn.map_err(|message| PlotError::Draw {
            path: path.to_path_buf(),
            message,
        })?;
    }
    commit_png(path, &pixels)
}

/// The accuracy panel: one line with points per task, x over the same tokens as the losses.
fn draw_tasks(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    train: &[(u64, f64)],
    val: &[(u64, f64)],
    tasks: &[(&str, &[(u64, f64)])],
    text: bool,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let curves: Vec<(&str, Vec<(f64, f64)>)> =
        tasks.iter().map(|(name, c)| (*name, finite(c))).collect();
    let xs = finite(train)
        .into_iter()
        .chain(finite(val))
        .chain(curves.iter().flat_map(|(_, c)| c.iter().copied()))
        .map(|p| p.0)
        .collect::<Vec<_>>();
    let x_range = axis_range(xs.into_iter(), 0.02, 500.0, true);
    let y_range = axis_range(
        curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1)),
        0.1,
        0.05,
        true,
    );
    area.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut builder = ChartBuilder::on(area);
    builder.margin(20);
    if text {
        builder.x_label_area_size(40).y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| fail(&e))?;
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12));
    if text {
        mesh.y_desc("task accuracy")
            .x_labels(8)
            .y_labels(5)
            .x_label_formatter(&|x| format_tokens(*x))
            .label_style((FAMILY, 16))
            .axis_desc_style((FAMILY, 18));
    }
    mesh.draw().map_err(|e| fail(&e))?;
    let colours = [
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    for (i, (name, curve)) in curves.iter().enumerate() {
        let colour = colours[i % colours.len()];
        chart
            .draw_series(LineSeries::new(
                curve.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(curve.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| fail(&e))?
            .label(name.to_string())
            .legend(move |(x, y)| Circle::new((x + 12, y), 4, colour.filled()));
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FAMILY, 16))
            .draw()
            .map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// Writes [`WIDTH`] × [`HEIGHT`] RGB `pixels` as a PNG at `path`, replacing it atomically.
pub(crate) fn commit_png(path: &Path, pixels: &[u8]) -> Result<(), PlotError> {
    let tmp = temporary_path(path);
    let written =
        write_png(&tmp, pixels).and_then(|()| commit_file(&tmp, path).map_err(PlotError::from));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_png(path: &Path, rgb: &[u8]) -> Result<(), PlotError> {
    use image::ImageEncoder;
    let io = |source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(rgb, WIDTH, HEIGHT, image::ColorType::Rgb8)
        .map_err(|source| PlotError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    out.flush().map_err(io)
}

/// The finite points of a curve, as plot coordinates.
fn finite(points: &[(u64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|(_, loss)| loss.is_finite())
        .map(|&(tokens, loss)| (tokens as f64, loss))
        .collect()
}

/// `[min, max]` of `values`, widened by `margin` of its span (by at least `min_pad` when all
/// values are equal, so the range is never empty), not below 0 when `floor_at_zero`.
fn axis_range(
    values: impl Iterator<Item = f64>,
    margin: f64,
    min_pad: f64,
    floor_at_zero: bool,
) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        return 0.0..1.0; // no data
    }
    let pad = if hi > lo {
        (hi - lo) * margin
    } else {
        (lo.abs() * 0.05).max(min_pad) // one value: centre it
    };
    let start = if floor_at_zero {
        (lo - pad).max(0.0)
    } else {
        lo - pad
    };
    start..hi + pad
}

/// A centred moving average over about 2 % of the points (at least 5).
fn smooth(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let half = (points.len() / 100).max(2);
    let mut sums = Vec::with_capacity(points.len() + 1); // prefix sums of the losses
    sums.push(0.0);
    for &(_, loss) in points {
        sums.push(sums.last().copied().unwrap_or(0.0) + loss);
    }
    (0..points.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(points.len()));
            (points[i].0, (sums[b] - sums[a]) / (b - a) as f64)
        })
        .collect()
}

/// Token counts as tick labels: 0, 512, 12.5k, 3M, 1.2B.
fn format_tokens(tokens: f64) -> String {
    let (value, suffix) = match tokens.abs() {
        t if t >= 1e9 => (tokens / 1e9, "B"),
        t if t >= 1e6 => (tokens / 1e6, "M"),
        t if t >= 1e3 => (tokens / 1e3, "k"),
        _ => (tokens, ""),
    };
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

fn draw(
    root: &DrawingArea<BitMapBackend<'_>, Shift>,
    train: &[(u64, f64)],
    val: &[(u64, f64)],
    title: &str,
    text: bool,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    let train = finite(train);
    let val = finite(val);
    let all = || train.iter().chain(&val);
    let x_range = axis_range(all().map(|p| p.0), 0.02, 500.0, true);
    let y_range = axis_range(all().map(|p| p.1), 0.05, 0.5, false);

    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut builder = ChartBuilder::on(root);
    builder.margin(20);
    if text {
        if !title.is_empty() {
            builder.caption(title, (FAMILY, 26));
        }
        builder.x_label_area_size(50).y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(x_range, y_range)
        .map_err(|e| fail(&e))?;

    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12));
    if text {
        mesh.x_desc("tokens")
            .y_desc("loss")
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|x| format_tokens(*x))
            .label_style((FAMILY, 16))
            .axis_desc_style((FAMILY, 18));
    }
    mesh.draw().map_err(|e| fail(&e))?;

    let train_colour = RGBColor(31, 119, 180);
    let val_colour = RGBColor(214, 39, 40);
    let smoothed = train.len() > SMOOTH_ABOVE;
    if !train.is_empty() {
        let style = if smoothed {
            train_colour.mix(0.35).stroke_width(1)
        } else {
            train_colour.stroke_width(2)
        };
        let series = chart
            .draw_series(LineSeries::new(train.iter().copied(), style))
            .map_err(|e| fail(&e))?;
        if !smoothed {
            series.label("train").legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 24, y)], train_colour.stroke_width(2))
            });
        } else {
            series.label("train (raw)").legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 24, y)], train_colour.mix(0.35))
            });
            chart
                .draw_series(LineSeries::new(
                    smooth(&train),
                    train_colour.stroke_width(2),
                ))
                .map_err(|e| fail(&e))?
                .label("train (smoothed)")
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], train_colour.stroke_width(2))
                });
        }
        if train.len() == 1 {
            chart
                .draw_series(
                    train
                        .iter()
                        .map(|&p| Circle::new(p, 3, train_colour.filled())),
                )
                .map_err(|e| fail(&e))?;
        }
    }
    if !val.is_empty() {
        chart
            .draw_series(LineSeries::new(
                val.iter().copied(),
                val_colour.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?;
        chart
            .draw_series(val.iter().map(|&p| Circle::new(p, 4, val_colour.filled())))
            .map_err(|e| fail(&e))?
            .label("val")
            .legend(move |(x, y)| Circle::new((x + 12, y), 4, val_colour.filled()));
    }
    if text && !(train.is_empty() && val.is_empty()) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FAMILY, 16))
            .draw()
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(axis_range([].into_iter(), 0.05, 0.5, false), 0.0..1.0);
        let r = axis_range([3.0, 3.0].into_iter(), 0.05, 0.5, false);
        assert_eq!(r, 2.5..3.5);
        let r = axis_range([0.0].into_iter(), 0.02, 500.0, true);
        assert_eq!(r, 0.0..500.0);
        let r = axis_range([1.0, 3.0].into_iter(), 0.05, 0.5, false);
        assert!(
            (r.start - 0.9).abs() < 1e-12 && (r.end - 3.1).abs() < 1e-12,
            "{r:?}"
        );
    }

    /// With tasks, the picture has a second panel: the lower part is not blank.
    #[test]
    fn run_plot_draws_a_task_panel() {
        let dir = tempfile::tempdir().unwrap();
        let (with, without) = (dir.path().join("with.png"), dir.path().join("without.png"));
        let train = [(0u64, 4.0), (100, 3.0), (200, 2.5)];
        let acc = [(0u64, 0.25), (200, 0.4)];
        write_run_plot(&with, &train, &[], &[("hellaswag", &acc)], "t").unwrap();
        write_run_plot(&without, &train, &[], &[], "t").unwrap();
        let a = std::fs::read(&with).unwrap();
        let b = std::fs::read(&without).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn token_labels() {
        assert_eq!(format_tokens(0.0), "0");
        assert_eq!(format_tokens(512.0), "512");
        assert_eq!(format_tokens(12_500.0), "12.5k");
        assert_eq!(format_tokens(3_000_000.0), "3M");
        assert_eq!(format_tokens(1_234_000_000.0), "1.23B");
    }

    #[test]
    fn smoothing_keeps_x_and_flattens_noise() {
        let points: Vec<(f64, f64)> = (0..200)
            .map(|i| (i as f64, if i % 2 == 0 { 1.0 } else { 3.0 }))
            .collect();
        let s = smooth(&points);
        assert_eq!(s.len(), points.len());
        assert!(s.iter().zip(&points).all(|(a, b)| a.0 == b.0));
        assert!(
            s[100..110].iter().all(|p| (p.1 - 2.0).abs() < 0.25),
            "{:?}",
            &s[100..110]
        );
    }
}
