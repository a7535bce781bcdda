//! A small SVG line-chart writer for benchmark plots, with no dependency.
//!
//! [`render`] draws [`Chart`]s side by side in one SVG document. Each chart has a title, axes
//! starting at 0 (lower when a value is negative) and ending at a round value at or above the
//! largest one, ticks at round steps (1, 2 or 5 times a power of ten) with labels and grid
//! lines, axis titles, a legend (top left, inside the plot), and its [`Series`] drawn as
//! polylines in their given order, each point marked with a dot whose tooltip names its
//! values.
//!
//! Guarantees: the output is well-formed XML (every text and attribute value goes through
//! [`escape`]); points with a non-finite coordinate are left out, so no `NaN` reaches a
//! coordinate; the tick loop is bounded ([`MAX_TICKS`]).

use std::fmt::Write as _;

/// Width of one chart panel, pixels.
pub const PANEL_WIDTH: f64 = 520.0;
/// Height of a chart panel, pixels.
pub const PANEL_HEIGHT: f64 = 380.0;
/// Room left of the plot area (y tick labels and the y axis title), pixels.
pub const MARGIN_LEFT: f64 = 80.0;
/// Room right of the plot area, pixels.
pub const MARGIN_RIGHT: f64 = 24.0;
/// Room above the plot area (the title), pixels.
pub const MARGIN_TOP: f64 = 44.0;
/// Room below the plot area (x tick labels and the x axis title), pixels.
pub const MARGIN_BOTTOM: f64 = 60.0;
/// The most ticks an axis draws.
pub const MAX_TICKS: usize = 24;
/// About this many ticks per axis.
const TARGET_TICKS: usize = 6;

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Stroke and dot colour (an SVG colour, e.g. `#1f77b4`).
    pub color: String,
    /// Dashed line (a reference line) instead of a solid one.
    pub dashed: bool,
    /// Mark every point with a dot.
    pub markers: bool,
    /// `(x, y)` in data units, drawn in this order.
    pub points: Vec<(f64, f64)>,
}

/// One panel: axes, series, legend.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// X axis title.
    pub x_label: String,
    /// Y axis title.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

/// A linear axis from `min` to `max` with ticks every `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    /// Value at the axis's start.
    pub min: f64,
    /// Value at the axis's end.
    pub max: f64,
    /// Distance between ticks (1, 2 or 5 times a power of ten).
    pub step: f64,
}

impl Axis {
    /// An axis covering `values` (non-finite ones ignored): from 0, or the smallest value
    /// when it is negative, to the first multiple of a round step at or above the largest
    /// value. Without values, or when they are all 0, it spans 0..1.
    pub fn covering(values: impl IntoIterator<Item = f64>) -> Axis {
        let (mut low, mut high) = (0.0f64, 0.0f64);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            low = low.min(v);
            high = high.max(v);
        }
        if high - low <= 0.0 {
            high = low + 1.0;
        }
        let step = nice_step((high - low) / TARGET_TICKS as f64);
        let min = (low / step).floor() * step;
        let max = (high / step).ceil() * step;
        Axis { min, max, step }
    }

    /// The tick values from `min` to `max` (at most [`MAX_TICKS`]).
    pub fn ticks(&self) -> Vec<f64> {
        let mut ticks = Vec::new();
        for i in 0..MAX_TICKS {
            let v = self.min + self.step * i as f64;
            if v > self.max + self.step * 1e-9 {
                break;
            }
            // Snap values like 0.6000000000000001 to the step's decimals.
            let scale = 10f64.powi((-self.step.log10()).ceil().clamp(0.0, 12.0) as i32);
            ticks.push((v * scale).round() / scale);
        }
        ticks
    }

    /// Where `v` lands on a pixel range that starts at `from` (for `min`) and ends at `to`
    /// (for `max`); `to` may be smaller than `from` (a y axis grows upwards).
    pub fn scale(&self, v: f64, from: f64, to: f64) -> f64 {
        let span = self.max - self.min;
        if span <= 0.0 {
            return from;
        }
        from + (v - self.min) / span * (to - from)
    }
}

/// The smallest of 1, 2, 5 and 10 times a power of ten that is at least `raw` (for a positive,
/// finite `raw`; 1 otherwise).
pub fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let factor = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|&f| normalized <= f * (1.0 + 1e-9))
        .unwrap_or(10.0);
    factor * magnitude
}

/// A tick label: as many decimals as the step needs, thousands separated by commas.
pub fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 || !step.is_finite() || step <= 0.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 9.0) as usize
    };
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut out = String::new();
    if v < 0.0 && text.bytes().any(|b| matches!(b, b'1'..=b'9')) {
        out.push('-');
    }
    let len = int.len();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (len - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// `text` safe inside XML text and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed in XML 1.0.
            c if c.is_control() && c != '\t' && c != '\n' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The plot area of panel `index`: left, right, top and bottom pixel coordinates.
pub fn plot_area(index: usize) -> (f64, f64, f64, f64) {
    let x0 = index as f64 * PANEL_WIDTH;
    (
        x0 + MARGIN_LEFT,
        x0 + PANEL_WIDTH - MARGIN_RIGHT,
        MARGIN_TOP,
        PANEL_HEIGHT - MARGIN_BOTTOM,
    )
}

/// The axes chart `chart` is drawn with: x and y, each covering every finite point.
pub fn axes(chart: &Chart) -> (Axis, Axis) {
    let points = || chart.series.iter().flat_map(|s| s.points.iter());
    (
        Axis::covering(points().map(|p| p.0)),
        Axis::covering(points().map(|p| p.1)),
    )
}

/// Pixel coordinates of data point `(x, y)` in panel `index` drawn with `axes`.
pub fn to_pixels(index: usize, axes: (Axis, Axis), (x, y): (f64, f64)) -> (f64, f64) {
    let (left, right, top, bottom) = plot_area(index);
    (axes.0.scale(x, left, right), axes.1.scale(y, bottom, top))
}

/// One SVG document holding `charts` side by side.
pub fn render(charts: &[Chart]) -> String {
    let width = PANEL_WIDTH * charts.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{PANEL_HEIGHT}" viewBox="0 0 {width} {PANEL_HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{width}" height="{PANEL_HEIGHT}" fill="white"/>"#
    );
    for (index, chart) in charts.iter().enumerate() {
        render_panel(&mut out, index, chart);
    }
    out.push_str("</svg>\n");
    out
}

fn render_panel(out: &mut String, index: usize, chart: &Chart) {
    let (left, right, top, bottom) = plot_area(index);
    let axes = axes(chart);
    let (x_axis, y_axis) = axes;
    let _ = writeln!(out, r#"<g class="chart">"#);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        (left + right) / 2.0,
        escape(&chart.title)
    );
    // Grid, ticks and tick labels.
    for v in x_axis.ticks() {
        let x = x_axis.scale(v, left, right);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#e6e6e6\"/>"
        );
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="black"/>"#,
            bottom + 5.0
        );
        let _ = writeln!(
            out,
            r#"<text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 19.0,
            escape(&tick_label(v, x_axis.step))
        );
    }
    for v in y_axis.ticks() {
        let y = y_axis.scale(v, bottom, top);
        let _ = writeln!(
            out,
            "<line x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\" stroke=\"#e6e6e6\"/>"
        );
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{left:.1}" y2="{y:.1}" stroke="black"/>"#,
            left - 5.0
        );
        let _ = writeln!(
            out,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            y + 4.0,
            escape(&tick_label(v, y_axis.step))
        );
    }
    // Axes and their titles.
    let _ = writeln!(
        out,
        r#"<line x1="{left:.1}" y1="{bottom:.1}" x2="{right:.1}" y2="{bottom:.1}" stroke="black"/>"#
    );
    let _ = writeln!(
        out,
        r#"<line x1="{left:.1}" y1="{top:.1}" x2="{left:.1}" y2="{bottom:.1}" stroke="black"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text class="x-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        bottom + 42.0,
        escape(&chart.x_label)
    );
    let (label_x, label_y) = (left - 60.0, (top + bottom) / 2.0);
    let _ = writeln!(
        out,
        r#"<text class="y-label" x="{label_x:.1}" y="{label_y:.1}" text-anchor="middle" transform="rotate(-90 {label_x:.1} {label_y:.1})">{}</text>"#,
        escape(&chart.y_label)
    );
    // Series.
    for series in &chart.series {
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let color = escape(&series.color);
        if points.len() >= 2 {
            let path: Vec<String> = points
                .iter()
                .map(|&p| {
                    let (x, y) = to_pixels(index, axes, p);
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            let dash = if series.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                path.join(" ")
            );
        }
        if series.markers {
            for &p in &points {
                let (x, y) = to_pixels(index, axes, p);
                let _ = writeln!(
                    out,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"><title>{}: {}, {}</title></circle>"#,
                    escape(&series.name),
                    escape(&tick_label(p.0, 0.1)),
                    escape(&tick_label(p.1, 0.1))
                );
            }
        }
    }
    if chart.series.iter().all(|s| s.points.is_empty()) {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="gray">no data</text>"#,
            (left + right) / 2.0,
            (top + bottom) / 2.0
        );
    }
    // Legend, top left inside the plot.
    let rows = chart.series.len() as f64;
    let longest = chart
        .series
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let (lx, ly) = (left + 10.0, top + 8.0);
    let _ = writeln!(
        out,
        r##"<rect class="legend" x="{lx:.1}" y="{ly:.1}" width="{:.1}" height="{:.1}" fill="white" fill-opacity="0.85" stroke="#999999"/>"##,
        40.0 + 7.0 * longest,
        8.0 + 18.0 * rows
    );
    for (i, series) in chart.series.iter().enumerate() {
        let y = ly + 16.0 + 18.0 * i as f64;
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
            lx + 6.0,
            y - 4.0,
            lx + 28.0,
            y - 4.0,
            escape(&series.color)
        );
        let _ = writeln!(
            out,
            r#"<text class="legend-entry" x="{:.1}" y="{y:.1}">{}</text>"#,
            lx + 34.0,
            escape(&series.name)
        );
    }
    let _ = writeln!(out, "</g>");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small well-formedness check for XML: declaration, balanced and properly nested
    /// elements, quoted attributes, and no raw `<` or stray `&` in text or attribute values.
    /// Returns the element names in document order.
    pub(crate) fn check_well_formed(xml: &str) -> Result<Vec<String>, String> {
        fn check_text(text: &str) -> Result<(), String> {
            if text.contains('<') || text.contains('>') {
                return Err(format!("raw angle bracket in {text:?}"));
            }
            let mut rest = text;
            while let Some(at) = rest.find('&') {
                let tail = &rest[at..];
                let end = tail
                    .find(';')
                    .ok_or_else(|| format!("unterminated entity in {text:?}"))?;
                let entity = &tail[1..end];
                let known = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
                    || (entity.starts_with('#') && entity.len() > 1);
                if !known {
                    return Err(format!("unknown entity &{entity}; in {text:?}"));
                }
                rest = &tail[end + 1..];
            }
            Ok(())
        }
        let body = xml
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .ok_or("no XML declaration")?;
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut rest = body;
        let mut closed_root = false;
        for _ in 0..1_000_000 {
            let Some(open) = rest.find('<') else {
                if !rest.trim().is_empty() {
                    return Err(format!("text after the root: {rest:?}"));
                }
                break;
            };
            let text = &rest[..open];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err(format!("text outside the root: {text:?}"));
            }
            check_text(text)?;
            let close = rest[open..].find('>').ok_or("unterminated tag")? + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack
                    .pop()
                    .ok_or_else(|| format!("</{name}> closes nothing"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                closed_root = stack.is_empty();
                continue;
            }
            if closed_root {
                return Err("a second root element".into());
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, mut attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("bad element name {name:?}"));
            }
            let mut seen = Vec::new();
            for _ in 0..1_000 {
                attrs = attrs.trim_start();
                if attrs.is_empty() {
                    break;
                }
                let eq = attrs
                    .find('=')
                    .ok_or_else(|| format!("attribute without value in <{name}>"))?;
                let key = attrs[..eq].trim();
                if seen.contains(&key) {
                    return Err(format!("attribute {key} twice in <{name}>"));
                }
                seen.push(key);
                let after = &attrs[eq + 1..];
                let quote = after
                    .chars()
                    .next()
                    .filter(|q| *q == '"' || *q == '\'')
                    .ok_or_else(|| format!("unquoted attribute {key} in <{name}>"))?;
                let end = after[1..]
                    .find(quote)
                    .ok_or_else(|| format!("unterminated attribute {key}"))?;
                check_text(&after[1..1 + end])?;
                attrs = &after[end + 2..];
            }
            names.push(name.to_string());
            if !self_closing {
                stack.push(name.to_string());
            } else if stack.is_empty() {
                closed_root = true;
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed elements {stack:?}"));
        }
        if !closed_root {
            return Err("no root element".into());
        }
        Ok(names)
    }

    /// The value of attribute `key` in every element `<name ...>` of `svg`, in order.
    pub(crate) fn attribute_values(svg: &str, name: &str, key: &str) -> Vec<String> {
        svg.split(&format!("<{name} "))
            .skip(1)
            .filter_map(|tag| {
                let tag = &tag[..tag.find('>')?];
                let at = tag
                    .find(&format!(" {key}=\""))
                    .map(|i| i + key.len() + 3)
                    .or_else(|| {
                        tag.starts_with(&format!("{key}=\""))
                            .then_some(key.len() + 2)
                    })?;
                let value = &tag[at..];
                Some(value[..value.find('"')?].to_string())
            })
            .collect()
    }

    fn chart() -> Chart {
        Chart {
            title: "Throughput <vs> offered & more".into(),
            x_label: "offered tx/s".into(),
            y_label: "finalized tx/s".into(),
            series: vec![
                Series {
                    name: "finalized".into(),
                    color: "#1f77b4".into(),
                    dashed: false,
                    markers: true,
                    points: vec![(0.0, 0.0), (2_000.0, 1_990.0), (4_000.0, 3_000.0)],
                },
                Series {
                    name: "offered (y = x)".into(),
                    color: "#999999".into(),
                    dashed: true,
                    markers: false,
                    points: vec![(0.0, 0.0), (4_000.0, 4_000.0)],
                },
            ],
        }
    }

    #[test]
    fn steps_are_round_and_axes_cover_the_values() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(6.0), 10.0);
        assert_eq!(nice_step(730.0), 1_000.0);
        assert!((nice_step(0.013) - 0.02).abs() < 1e-12);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(f64::NAN), 1.0);

        let a = Axis::covering([120.0, 4_350.0, f64::NAN, f64::INFINITY]);
        assert_eq!((a.min, a.max, a.step), (0.0, 5_000.0, 1_000.0));
        assert_eq!(
            a.ticks(),
            [0.0, 1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0]
        );
        let neg = Axis::covering([-3.0, 7.0]);
        assert_eq!((neg.min, neg.max, neg.step), (-4.0, 8.0, 2.0));
        let empty = Axis::covering([]);
        assert_eq!((empty.min, empty.max), (0.0, 1.0));
        assert_eq!(empty.ticks().len(), 6, "{:?}", empty.ticks());
        assert!(empty.ticks().contains(&0.6), "snapped: {:?}", empty.ticks());
        assert!(Axis::covering([1e300]).ticks().len() <= MAX_TICKS);
    }

    #[test]
    fn values_map_to_pixels_linearly_and_y_grows_upwards() {
        let a = Axis {
            min: 0.0,
            max: 100.0,
            step: 20.0,
        };
        assert_eq!(a.scale(0.0, 80.0, 496.0), 80.0);
        assert_eq!(a.scale(100.0, 80.0, 496.0), 496.0);
        assert_eq!(a.scale(25.0, 80.0, 480.0), 180.0);
        assert_eq!(a.scale(25.0, 320.0, 44.0), 251.0, "upwards");
        let c = chart();
        let axes = axes(&c);
        assert_eq!(axes.0.max, 4_000.0);
        assert_eq!(axes.1.max, 4_000.0);
        let (left, right, top, bottom) = plot_area(1);
        assert_eq!(to_pixels(1, axes, (0.0, 0.0)), (left, bottom));
        assert_eq!(to_pixels(1, axes, (4_000.0, 4_000.0)), (right, top));
        assert_eq!(left, PANEL_WIDTH + MARGIN_LEFT);
    }

    #[test]
    fn rendered_chart_is_well_formed_with_ticks_labels_legend_and_points() {
        let c = chart();
        let svg = render(&[c.clone(), c.clone()]);
        let names = check_well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(names[0], "svg");
        assert_eq!(names.iter().filter(|n| *n == "g").count(), 2);
        assert!(svg.contains(r#"width="1040""#), "two panels side by side");
        // Title and labels, escaped.
        assert!(svg.contains(">Throughput &lt;vs&gt; offered &amp; more</text>"));
        assert!(svg.contains(">offered tx/s</text>"));
        assert!(svg.contains(">finalized tx/s</text>"));
        // Ticks 0..4,000 every 1,000 on both axes, labelled, twice (two panels).
        for label in ["0", "1,000", "2,000", "3,000", "4,000"] {
            let n = svg.matches(&format!(">{label}</text>")).count();
            assert_eq!(n, 4, "tick label {label}");
        }
        // Legend entries.
        assert_eq!(svg.matches(">finalized</text>").count(), 2);
        assert_eq!(svg.matches(">offered (y = x)</text>").count(), 2);
        // Dots only for the marked series: 3 per panel, at the mapped coordinates.
        let cx = attribute_values(&svg, "circle", "cx");
        let cy = attribute_values(&svg, "circle", "cy");
        assert_eq!(cx.len(), 6);
        let (x, y) = to_pixels(0, axes(&c), (2_000.0, 1_990.0));
        assert_eq!(cx[1], format!("{x:.1}"));
        assert_eq!(cy[1], format!("{y:.1}"));
        assert_eq!(cx[1], "288.0");
        // The reference line is dashed, the data line is not.
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            4,
            "2 lines + 2 legend keys"
        );
    }

    #[test]
    fn non_finite_points_are_left_out_and_empty_charts_say_so() {
        let mut c = chart();
        c.series[0].points.push((f64::NAN, 1.0));
        c.series[0].points.push((5.0, f64::INFINITY));
        let svg = render(&[c]);
        check_well_formed(&svg).unwrap_or_else(|e| panic!("{e}"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_eq!(attribute_values(&svg, "circle", "cx").len(), 3);

        let empty = Chart {
            title: "nothing".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "p50".into(),
                color: "red".into(),
                dashed: false,
                markers: true,
                points: Vec::new(),
            }],
        };
        let svg = render(&[empty]);
        check_well_formed(&svg).unwrap_or_else(|e| panic!("{e}"));
        assert!(svg.contains(">no data</text>"));
        assert!(!svg.contains("<polyline"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape(r#"a<b>&"c"'d'"#),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;"
        );
        assert_eq!(escape("bell\u{7}"), "bell?");
        assert_eq!(escape("µs ok"), "µs ok");
        assert_eq!(tick_label(12_500.0, 2_500.0), "12,500");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(-1_000.0, 500.0), "-1,000");
    }

    #[test]
    fn the_checker_refuses_broken_xml() {
        let head = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
        for bad in [
            "<svg><g></svg>",
            "<svg a=1></svg>",
            "<svg>a < b</svg>",
            "<svg>a & b</svg>",
            "<svg></svg><svg></svg>",
            r#"<svg x="1" x="2"></svg>"#,
        ] {
            assert!(
                check_well_formed(&format!("{head}{bad}")).is_err(),
                "{bad} passed"
            );
        }
        assert!(check_well_formed("<svg></svg>").is_err(), "no declaration");
        assert_eq!(
            check_well_formed(&format!(r#"{head}<svg a="&amp;"><g/>t&lt;</svg>"#)),
            Ok(vec!["svg".to_string(), "g".to_string()])
        );
    }
}
