//! `cgleak status --history`: IDs in use and dying memcgs over the agent's stored history,
//! as column charts in the terminal, with the forecast line to the limit. Each column is a
//! stretch of time (the newest sample in it); a bar's top is drawn in eighths of a cell
//! (Unicode blocks `▁`..`█`), or with `#` and `-` under `--ascii`. Times are local.

use cgleak_model::forecast::{Forecast, ForecastOutcome, Sample};

/// How a chart is drawn.
#[derive(Debug, Clone, Copy)]
pub struct ChartStyle {
    /// Columns of the whole line (labels included).
    pub width: usize,
    /// Rows of bars.
    pub height: usize,
    pub ascii: bool,
}

/// The width of the terminal on stdout (TIOCGWINSZ), else $COLUMNS, else 80.
pub fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize we own; a non-terminal fd fails with ENOTTY.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_col >= 20 {
        return ws.ws_col as usize;
    }
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|c: &usize| *c >= 20).unwrap_or(80)
}

/// `2026-12-03 08:15` in the node's zone (`--log-timezone`, the host root's /etc/localtime),
/// else this machine's.
pub fn local_time(unix: f64) -> String {
    match jiff::Timestamp::from_second(unix as i64) {
        Ok(t) => t.to_zoned(cgleak_readers::logs::clock::display_zone()).strftime("%Y-%m-%d %H:%M").to_string(),
        Err(_) => format!("@{unix:.0}"),
    }
}

const LABEL: usize = 7;
const EIGHTHS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One chart: the values (time, value) drawn from `from` to `to`, `projected` (time, value)
/// after them drawn lighter, `limit` as a line when it is within the scale.
struct Series<'a> {
    title: String,
    points: Vec<(f64, f64)>,
    projected: Vec<(f64, f64)>,
    limit: Option<f64>,
    note: &'a str,
}

fn column_values(points: &[(f64, f64)], from: f64, to: f64, cols: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; cols];
    let span = (to - from).max(1e-9);
    for &(t, v) in points {
        let c = (((t - from) / span) * cols as f64).floor().clamp(0.0, (cols - 1) as f64) as usize;
        out[c] = Some(v);
    }
    out
}

fn draw(s: &Series<'_>, from: f64, to: f64, style: ChartStyle) -> String {
    let cols = style.width.saturating_sub(LABEL + 2).max(10);
    let hist = column_values(&s.points, from, to, cols);
    let proj = column_values(&s.projected, from, to, cols);
    let top = s
        .points
        .iter()
        .chain(&s.projected)
        .map(|p| p.1)
        .chain(s.limit.filter(|l| s.points.iter().any(|p| p.1 >= 0.6 * l) || !s.projected.is_empty()))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let h = style.height.max(2);
    let limit_row = s.limit.filter(|l| *l <= top).map(|l| ((l / top) * h as f64).ceil() as usize);
    let mut out = format!("{}\n", s.title);
    for row in (0..h).rev() {
        let label = if row == h - 1 { format!("{top:>LABEL$.0}") } else if row == 0 { format!("{:>LABEL$}", 0) } else { " ".repeat(LABEL) };
        out.push_str(&label);
        out.push_str(if style.ascii { " |" } else { " ┤" });
        for c in 0..cols {
            let (v, light) = match (hist[c], proj[c]) {
                (Some(v), _) => (Some(v), false),
                (None, Some(v)) => (Some(v), true),
                _ => (None, false),
            };
            // Eighths of this row the bar fills.
            let fill = v.map(|v| ((v / top) * (h * 8) as f64).round() as i64 - (row * 8) as i64).unwrap_or(0).clamp(0, 8);
            let ch = if fill > 0 {
                match (style.ascii, light) {
                    (true, false) => if fill >= 4 { '#' } else { '.' },
                    (true, true) => if fill >= 4 { ':' } else { '.' },
                    (false, false) => EIGHTHS[fill as usize - 1],
                    (false, true) => if fill >= 4 { '░' } else { ' ' },
                }
            } else if limit_row == Some(row + 1) {
                if style.ascii { '-' } else { '─' }
            } else {
                ' '
            };
            out.push(ch);
        }
        if limit_row == Some(row + 1) {
            out.push_str(" limit");
        }
        out.push('\n');
    }
    let (a, b) = (local_time(from), local_time(to));
    let axis = if style.ascii { "+" } else { "└" };
    let gap = cols.saturating_sub(a.len() + b.len()).max(1);
    out.push_str(&format!("{}{axis} {a}{}{b}\n", " ".repeat(LABEL + 1), " ".repeat(gap)));
    if !s.note.is_empty() {
        out.push_str(&format!("{}  {}\n", " ".repeat(LABEL), s.note));
    }
    out
}

/// How far after the last sample the forecast line is drawn (to the limit, but over at most
/// half the history's span, an hour at least), and how long until the limit.
fn projection(first: f64, last: &Sample, f: &Forecast) -> (f64, f64) {
    let left = f.seconds_to_exhaustion.unwrap_or(0.0);
    (left.min(((last.at_unix_secs - first) * 0.5).max(3600.0)), left)
}

/// The charts of `samples` (oldest first) and the forecast from them.
pub fn history_charts(samples: &[Sample], forecast: Option<&Forecast>, style: ChartStyle) -> String {
    let Some(last) = samples.last() else {
        return "no history: `cgleak agent` keeps one in its --state-dir (a sample per --interval); none was found\n".into();
    };
    let first = samples[0].at_unix_secs;
    let limit = last.id_limit as f64;
    let ids: Vec<(f64, f64)> = samples.iter().map(|s| (s.at_unix_secs, s.ids_in_use as f64)).collect();
    let mut projected = Vec::new();
    let mut to = last.at_unix_secs;
    let fc_note = match forecast {
        Some(f) if f.outcome == ForecastOutcome::Approaching => {
            let (shown, left) = projection(first, last, f);
            to = last.at_unix_secs + shown;
            let steps = 64;
            for i in 1..=steps {
                let t = last.at_unix_secs + shown * i as f64 / steps as f64;
                let v = (last.ids_in_use as f64 + f.slope_per_hour * (t - last.at_unix_secs) / 3600.0).min(limit);
                projected.push((t, v));
            }
            format!("forecast (shaded): the limit at {} ({} from the last sample, +{:.0} IDs/h)", local_time(last.at_unix_secs + left), human(left), f.slope_per_hour)
        }
        Some(f) if f.outcome == ForecastOutcome::Exhausted => "forecast: exhausted: no ID left".into(),
        Some(f) if f.outcome == ForecastOutcome::NotApproaching => format!("forecast: not heading to the limit ({:+.0} IDs/h)", f.slope_per_hour),
        Some(_) => "forecast: too little history yet".into(),
        None => String::new(),
    };
    let mut out = draw(
        &Series {
            title: format!("IDs in use: {} now of {} ({} samples since {})", last.ids_in_use, last.id_limit, samples.len(), local_time(first)),
            points: ids,
            projected,
            limit: Some(limit),
            note: &fc_note,
        },
        first,
        to,
        style,
    );
    let dying: Vec<(f64, f64)> = samples.iter().filter_map(|s| s.dying.map(|d| (s.at_unix_secs, d as f64))).collect();
    out.push('\n');
    if dying.is_empty() {
        out.push_str("Dying memcgs: not in this history (the kernel cannot count them, or an agent before 0.1.0 kept it)\n");
    } else {
        let now = dying.last().map(|d| d.1).unwrap_or(0.0);
        out.push_str(&draw(&Series { title: format!("Dying memcgs: {now:.0} now"), points: dying, projected: Vec::new(), limit: None, note: "" }, first, to, style));
    }
    out
}

/// `9h54m`: whole minutes in the grammar of every duration flag.
fn human(secs: f64) -> String {
    cgleak_readers::duration::human_duration(std::time::Duration::from_secs(secs.max(0.0) as u64 / 60 * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgleak_model::forecast::{forecast, History};

    fn rising(n: u64, dying: bool) -> Vec<Sample> {
        (0..n).map(|i| Sample { at_unix_secs: 1.7e9 + 600.0 * i as f64, ids_in_use: 30000 + 300 * i, id_limit: 65535, dying: dying.then_some(100 + 10 * i) }).collect()
    }

    fn fc(samples: &[Sample]) -> Forecast {
        let mut h = History::new(1000);
        for s in samples {
            h.push(*s);
        }
        forecast(&h, samples.last().unwrap().at_unix_secs)
    }

    #[test]
    fn rising_ids_draw_rising_bars_the_limit_and_the_forecast() {
        let s = rising(60, true);
        let f = fc(&s);
        assert_eq!(f.outcome, ForecastOutcome::Approaching);
        let text = history_charts(&s, Some(&f), ChartStyle { width: 80, height: 8, ascii: false });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("IDs in use: 47700 now of 65535 (60 samples since "), "{text}");
        // Every row of bars fits the width (labels included, the limit's word aside).
        let rows = |t: &str, axis: char| t.lines().filter(|l| l.chars().nth(LABEL + 1) == Some(axis)).map(|l| l.trim_end_matches(" limit").chars().count()).collect::<Vec<_>>();
        assert!(rows(&text, '┤').iter().all(|n| *n == 80), "{text}");
        // The bottom row is full from the first column; the top row only late (rising).
        let bars: Vec<&str> = lines[1..9].to_vec();
        let bottom: Vec<char> = bars[7].chars().skip(LABEL + 2).collect();
        assert!(bottom[0] != ' ' && bottom[0] != '░', "{text}");
        assert!(text.contains('░'), "the forecast is shaded: {text}");
        assert!(text.contains("─") && text.contains(" limit"), "{text}");
        assert!(text.contains("forecast (shaded): the limit at "), "{text}");
        assert!(text.contains("Dying memcgs: 690 now"), "{text}");
        // Local date-times, not Unix seconds.
        assert!(!text.contains("1700000000") && text.contains(&local_time(1.7e9)), "{text}");
    }

    #[test]
    fn ascii_is_ascii_and_narrow_terminals_are_honoured() {
        let s = rising(30, false);
        let f = fc(&s);
        let text = history_charts(&s, Some(&f), ChartStyle { width: 40, height: 5, ascii: true });
        assert!(text.is_ascii(), "{text}");
        assert!(text.contains('#') && text.contains(':'), "{text}");
        let rows: Vec<usize> = text.lines().filter(|l| l.chars().nth(LABEL + 1) == Some('|')).map(|l| l.trim_end_matches(" limit").len()).collect();
        assert_eq!(rows.len(), 5, "{text}");
        assert!(rows.iter().all(|n| *n == 40), "{text}");
        assert!(text.contains("Dying memcgs: not in this history"), "{text}");
    }

    #[test]
    fn flat_history_has_no_forecast_line_and_no_history_says_so() {
        let s: Vec<Sample> = (0..20).map(|i| Sample { at_unix_secs: 1.7e9 + 60.0 * i as f64, ids_in_use: 500, id_limit: 65535, dying: Some(3) }).collect();
        let f = fc(&s);
        let text = history_charts(&s, Some(&f), ChartStyle { width: 60, height: 4, ascii: false });
        assert!(!text.contains('░'), "{text}");
        assert!(text.contains("forecast: not heading to the limit"), "{text}");
        assert!(history_charts(&[], None, ChartStyle { width: 60, height: 4, ascii: false }).starts_with("no history"));
    }
}

/// Text for HTML and SVG: `&`, `<`, `>` and quotes escaped.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A line of an SVG chart: its points (time, value), colour, and whether it is dashed.
type SvgLine<'a> = (&'a [(f64, f64)], &'a str, bool);

/// One SVG line chart (no script, no external reference): `lines`, scaled to their top,
/// between times `from` and `to`.
fn svg_chart(title: &str, lines: &[SvgLine<'_>], limit: Option<f64>, from: f64, to: f64) -> String {
    const W: f64 = 900.0;
    const H: f64 = 240.0;
    const L: f64 = 70.0;
    const R: f64 = 20.0;
    const T: f64 = 30.0;
    const B: f64 = 40.0;
    let top = lines.iter().flat_map(|(p, _, _)| p.iter().map(|q| q.1)).chain(limit).fold(0.0f64, f64::max).max(1.0);
    let span = (to - from).max(1.0);
    let x = |t: f64| L + (t - from) / span * (W - L - R);
    let y = |v: f64| T + (1.0 - v / top) * (H - T - B);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
<rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\
<text x=\"{L}\" y=\"20\" font-family=\"sans-serif\" font-size=\"14\" fill=\"#222\">{t}</text>\
<line x1=\"{L}\" y1=\"{y0}\" x2=\"{xr}\" y2=\"{y0}\" stroke=\"#888\"/><line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{y0}\" stroke=\"#888\"/>\
<text x=\"{lx}\" y=\"{ty}\" font-family=\"sans-serif\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">{top:.0}</text>\
<text x=\"{lx}\" y=\"{y0}\" font-family=\"sans-serif\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">0</text>\
<text x=\"{L}\" y=\"{xl}\" font-family=\"sans-serif\" font-size=\"11\" fill=\"#444\">{a}</text>\
<text x=\"{xr}\" y=\"{xl}\" font-family=\"sans-serif\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">{b}</text>",
        t = html_escape(title),
        y0 = H - B,
        xr = W - R,
        lx = L - 6.0,
        ty = T + 4.0,
        xl = H - B + 18.0,
        a = html_escape(&local_time(from)),
        b = html_escape(&local_time(to)),
    );
    if let Some(l) = limit {
        svg.push_str(&format!(
            "<line x1=\"{L}\" y1=\"{yl:.1}\" x2=\"{xr}\" y2=\"{yl:.1}\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/><text x=\"{xr}\" y=\"{yt:.1}\" font-family=\"sans-serif\" font-size=\"11\" text-anchor=\"end\" fill=\"#d62728\">limit {l:.0}</text>",
            yl = y(l),
            xr = W - R,
            yt = y(l) - 4.0
        ));
    }
    for (points, colour, dashed) in lines {
        if points.is_empty() {
            continue;
        }
        let pts: Vec<String> = points.iter().map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v))).collect();
        let dash = if *dashed { " stroke-dasharray=\"8 5\"" } else { "" };
        svg.push_str(&format!("<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2.5\"{dash} points=\"{}\"/>", pts.join(" ")));
    }
    svg.push_str("</svg>");
    svg
}

/// The agent's `/` page: a few figures of the last census and SVG charts of its history
/// (IDs in use with the limit and the forecast, dying memcgs); plain HTML, no script.
pub fn agent_page(figures: &[(&str, String)], samples: &[Sample], forecast: Option<&Forecast>) -> String {
    let mut body = String::new();
    body.push_str("<table>");
    for (k, v) in figures {
        body.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", html_escape(k), html_escape(v)));
    }
    body.push_str("</table>");
    match samples.last() {
        None => body.push_str("<p>No history yet: a sample is kept every --interval.</p>"),
        Some(last) => {
            let first = samples[0].at_unix_secs;
            let ids: Vec<(f64, f64)> = samples.iter().map(|s| (s.at_unix_secs, s.ids_in_use as f64)).collect();
            let mut projected = Vec::new();
            let mut to = last.at_unix_secs;
            let mut note = String::new();
            if let Some(f) = forecast.filter(|f| f.outcome == ForecastOutcome::Approaching) {
                let (shown, left) = projection(first, last, f);
                to = last.at_unix_secs + shown;
                projected.push((last.at_unix_secs, last.ids_in_use as f64));
                projected.push((to, (last.ids_in_use as f64 + f.slope_per_hour * shown / 3600.0).min(last.id_limit as f64)));
                note = format!("Forecast (dashed): the limit at {} ({} from the last sample).", local_time(last.at_unix_secs + left), human(left));
            }
            body.push_str(&svg_chart(
                &format!("IDs in use: {} of {}", last.ids_in_use, last.id_limit),
                &[(&ids, "#1f77b4", false), (&projected, "#ff7f0e", true)],
                Some(last.id_limit as f64),
                first,
                to,
            ));
            if !note.is_empty() {
                body.push_str(&format!("<p>{}</p>", html_escape(&note)));
            }
            let dying: Vec<(f64, f64)> = samples.iter().filter_map(|s| s.dying.map(|d| (s.at_unix_secs, d as f64))).collect();
            if !dying.is_empty() {
                body.push_str(&svg_chart(&format!("Dying memcgs: {:.0}", dying.last().map(|d| d.1).unwrap_or(0.0)), &[(&dying, "#9467bd", false)], None, first, to));
            }
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cgleak agent</title>\
<style>body{{font-family:sans-serif;margin:16px;color:#222}}th{{text-align:left;padding-right:12px;font-weight:normal;color:#555}}svg{{display:block;margin:12px 0}}</style></head>\
<body><h1>cgleak agent</h1>{body}<p>Generated {} (this machine's time). Metrics: <a href=\"/metrics\">/metrics</a>.</p></body></html>\n",
        html_escape(&local_time(crate::agent::shared::now_unix()))
    )
}

#[cfg(test)]
mod page_tests {
    use super::*;

    #[test]
    fn page_has_escaped_figures_and_svg_charts_without_script() {
        let samples: Vec<Sample> = (0..50).map(|i| Sample { at_unix_secs: 1.7e9 + 600.0 * i as f64, ids_in_use: 30000 + 300 * i, id_limit: 65535, dying: Some(10 + i) }).collect();
        let page = agent_page(&[("node", "<b>n1</b>".into())], &samples, None);
        assert!(page.contains("&lt;b&gt;n1&lt;/b&gt;") && !page.contains("<b>n1"), "escaped");
        assert_eq!(page.matches("<svg").count(), 2, "{page}");
        assert!(page.contains("<polyline") && page.contains("limit 65535"));
        assert!(!page.to_lowercase().contains("<script"));
        let empty = agent_page(&[], &[], None);
        assert!(empty.contains("No history yet") && !empty.contains("<svg"));
    }
}
