//! A small SVG line chart: enough for the entropy-by-position figures without pulling
//! a plotting stack into the build.

use std::fmt::Write;

/// One line of the chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Dashed stroke (e.g. "after reasoning").
    pub dashed: bool,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const MARGIN: (f64, f64, f64, f64) = (60.0, 20.0, 40.0, 50.0); // left, right, top, bottom
const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// `n` round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let raw = (hi - lo).max(1e-9) / n as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).floor() * step;
    (0..=n + 1)
        .map(|i| first + step * i as f64)
        .take_while(|t| *t <= hi + step * 0.5)
        .collect()
}

/// A line chart with axes, ticks, axis labels and a legend, one colour per series.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y1) = (0.0, 1.0, 1.0);
    }
    let y_ticks = ticks(0.0, y1.max(1e-6), 5);
    let y_top = y_ticks.last().copied().unwrap_or(1.0).max(y1);
    let (left, right, top, bottom) = MARGIN;
    let px = |x: f64| left + (x - x0) / (x1 - x0).max(1e-9) * (WIDTH - left - right);
    let py = |y: f64| HEIGHT - bottom - y / y_top * (HEIGHT - top - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n",
        WIDTH / 2.0
    );
    let axis_y = HEIGHT - bottom;
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"black\"/>",
        WIDTH - right
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{axis_y}\" stroke=\"black\"/>"
    );
    for t in &y_ticks {
        let y = py(*t);
        let _ = writeln!(svg, "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{t:.2}</text>", WIDTH - right, left - 6.0, y + 4.0);
    }
    for x in (x0.ceil() as i64)..=(x1.floor() as i64) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x}</text>",
            px(x as f64),
            axis_y + 16.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{x_label}</text>",
        (left + WIDTH - right) / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        svg,
        "<text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{y_label}</text>",
        (top + axis_y) / 2.0
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let dash = if s.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            path.join(" ")
        );
        let ly = top + 8.0 + 16.0 * i as f64;
        let lx = WIDTH - right - 190.0;
        let _ = writeln!(svg, "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{}\" y=\"{}\">{}</text>", lx + 24.0, lx + 30.0, ly + 4.0, s.label);
    }
    svg + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 2.3, 5), vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
        let t = ticks(0.0, 0.07, 5);
        assert!(
            t.first() == Some(&0.0) && t.last().is_some_and(|l| *l >= 0.07),
            "{t:?}"
        );
    }

    #[test]
    fn chart_has_one_polyline_per_series_with_its_points() {
        let s = |label: &str, dashed| Series {
            label: label.into(),
            points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)],
            dashed,
        };
        let svg = line_chart(
            "t",
            "position",
            "entropy",
            &[s("before", false), s("after", true)],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            2,
            "dashed line and its legend"
        );
        assert!(svg.contains(">before<") && svg.contains(">after<") && svg.ends_with("</svg>\n"));
    }
}
