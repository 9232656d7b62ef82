//! PNG bar charts of the summary with plotters' bitmap backend. Text is drawn with ab_glyph
//! from a TrueType font read at run time (DejaVu Sans from Debian's `fonts-dejavu-core` by
//! default), so no fontconfig or freetype is needed.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::CompareError;
use super::summary::{Cell, Stat, fmt_num};

/// Where the font is looked for, first match wins.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers the first font found in [`FONT_PATHS`] as `sans-serif`.
pub fn load_font() -> Result<(), CompareError> {
    for p in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(p) {
            // plotters keeps a 'static reference to the font for the rest of the process;
            // the few hundred KiB are leaked once on purpose.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| CompareError::Chart(format!("{p} is not a usable font")));
        }
    }
    Err(CompareError::Chart(format!(
        "no font found at {FONT_PATHS:?} (apt-get install fonts-dejavu-core)"
    )))
}

/// One chart: a title, the y axis and how to read a metric out of a cell.
pub struct ChartSpec<'a> {
    /// File name (PNG).
    pub file: &'a str,
    /// Caption.
    pub title: &'a str,
    /// Y axis description.
    pub y_label: &'a str,
    /// Logarithmic y axis.
    pub log: bool,
    /// The metric.
    pub metric: fn(&Cell) -> Option<Stat>,
    /// Which cells belong to the chart.
    pub filter: fn(&Cell) -> bool,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws a grouped bar chart (one group per case, one bar per broker, the median as the bar
/// and the min-max range as a whisker) into `dir/spec.file`. Returns `Ok(false)` when no cell
/// has a value (nothing drawn).
pub fn bar_chart(
    dir: &Path,
    spec: &ChartSpec<'_>,
    cells: &[Cell],
    brokers: &[String],
) -> Result<bool, CompareError> {
    let mut cases: Vec<&str> = Vec::new();
    for c in cells.iter().filter(|c| (spec.filter)(c)) {
        if !cases.contains(&c.case.as_str()) {
            cases.push(&c.case);
        }
    }
    let values: Vec<(usize, usize, Stat)> = cells
        .iter()
        .filter(|c| (spec.filter)(c))
        .filter_map(|c| {
            let ci = cases.iter().position(|x| *x == c.case)?;
            let bi = brokers.iter().position(|x| *x == c.broker)?;
            Some((ci, bi, (spec.metric)(c).filter(|s| s.median > 0.0)?))
        })
        .collect();
    if values.is_empty() {
        return Ok(false);
    }
    let top =
        values.iter().map(|v| v.2.max).fold(0.0f64, f64::max) * if spec.log { 3.0 } else { 1.15 };
    let bottom = values
        .iter()
        .map(|v| v.2.min)
        .fold(f64::MAX, f64::min)
        .max(1e-9)
        / 10.0;
    let path = dir.join(spec.file);
    let err = |e: String| CompareError::Chart(format!("{}: {e}", spec.file));
    let root = BitMapBackend::new(&path, (1200, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let n = cases.len() as f64;
    let nb = brokers.len().max(1) as f64;
    let width = 0.8 / nb;
    let x_range = -0.5..(n - 0.5);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(spec.title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(90);
    macro_rules! draw {
        ($chart:expr, $base:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(cases.len() * 2 + 1)
                .x_label_formatter(&|x: &f64| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < cases.len() {
                        cases[i as usize].to_string()
                    } else {
                        String::new()
                    }
                })
                .y_desc(spec.y_label)
                .y_label_formatter(&|y: &f64| fmt_num(*y))
                .label_style(("sans-serif", 15))
                .draw()
                .map_err(|e| err(e.to_string()))?;
            for (bi, b) in brokers.iter().enumerate() {
                let color = COLORS[bi % COLORS.len()];
                let mine: Vec<&(usize, usize, Stat)> =
                    values.iter().filter(|v| v.1 == bi).collect();
                let x0 = |ci: usize| ci as f64 - 0.4 + bi as f64 * width;
                chart
                    .draw_series(mine.iter().map(|(ci, _, s)| {
                        Rectangle::new(
                            [(x0(*ci), $base), (x0(*ci) + width * 0.9, s.median)],
                            color.filled(),
                        )
                    }))
                    .map_err(|e| err(e.to_string()))?
                    .label(b.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                    });
                chart
                    .draw_series(mine.iter().filter(|(_, _, s)| s.n > 1).map(|(ci, _, s)| {
                        let xm = x0(*ci) + width * 0.45;
                        PathElement::new(vec![(xm, s.min), (xm, s.max)], BLACK.stroke_width(2))
                    }))
                    .map_err(|e| err(e.to_string()))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 16))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| err(e.to_string()))?;
        }};
    }
    if spec.log {
        let chart = builder
            .build_cartesian_2d(x_range, (bottom..top).log_scale())
            .map_err(|e| err(e.to_string()))?;
        draw!(chart, bottom);
    } else {
        let chart = builder
            .build_cartesian_2d(x_range, 0.0..top)
            .map_err(|e| err(e.to_string()))?;
        draw!(chart, 0.0);
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(true)
}
