//! Forecast of memcg ID exhaustion from the trend of IDs in use.
//!
//! Pure: the agent samples the census into a [`History`] (and may persist it as JSON
//! lines), [`forecast`] reads the trend. [`load_history`] reads such a file back, from its
//! end and in bounded memory, through the reader layer. `ids_in_use` already counts dying memcgs on the
//! eras where they keep their IDs (docs/kernel-facts.md section 1), so one series covers both.
//!
//! Robustness, because node series are noisy and broken:
//! - the slope is Theil–Sen's (median of pairwise slopes): up to ~29% of outliers
//!   (pod churn spikes) cannot move it;
//! - a sudden drop (reboot, reclaim freeing dying memcgs, `drop_caches`), a gap in the
//!   samples (agent or node restart) or a change of ID limit starts a new regime: only the
//!   samples after the last break are fitted;
//! - a flat or falling series (idle node) gives no forecast rather than a huge one.

use std::collections::VecDeque;
use std::io;
use std::path::Path;

use cgleak_readers::logs::tail;
use serde::{Deserialize, Serialize};

/// One census reduced to what the forecast needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_unix_secs: f64,
    pub ids_in_use: u64,
    pub id_limit: u64,
    /// Dying memcgs at the census, where the kernel counts them (for `status --history`;
    /// absent from older lines and where they cannot be counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dying: Option<u64>,
}

impl Sample {
    /// The sample as one line of the history file (without its newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a sample always serializes")
    }

    /// A line of the history file, if it is a sample: UTF-8, a JSON object with the three
    /// fields, a finite time. Anything else (a torn write, a stray byte) is None.
    pub fn from_json_line(line: &[u8]) -> Option<Sample> {
        let text = std::str::from_utf8(line).ok()?;
        serde_json::from_str::<Sample>(text.trim()).ok().filter(|s| s.at_unix_secs.is_finite())
    }
}

/// Samples of the agent kept for the forecast: a day at one a minute by default.
pub const DEFAULT_HISTORY_CAPACITY: usize = 1440;

/// Longest line of a history file taken as a sample (one is about 70 bytes): a longer one
/// is bad, and only this much of it is kept.
pub const HISTORY_LINE_MAX: usize = 4096;
/// Bytes budgeted per sample line when sizing the history file (lines are under 100 bytes).
pub const HISTORY_LINE_BUDGET: u64 = 128;
/// Bytes of bad lines one load keeps (for the agent's `<file>.bad`); the rest are counted only.
pub const BAD_LINES_KEPT_BYTES: usize = 64 * 1024;

/// What loading a history file found.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryLoad {
    pub history: History,
    /// Lines read that are not samples: not UTF-8, not a sample's JSON, longer than
    /// [`HISTORY_LINE_MAX`], or the last one cut short (blank lines are not counted).
    pub bad_lines: u64,
    /// The bad lines' bytes, oldest first, [`BAD_LINES_KEPT_BYTES`] at most in all (each at
    /// most [`HISTORY_LINE_MAX`]).
    pub bad: Vec<Vec<u8>>,
    /// The file's size when read, and the bytes at its start that were not read: older than
    /// the newest `capacity` samples, or past the read's bound.
    pub file_bytes: u64,
    pub unread_bytes: u64,
}

/// The newest `capacity` samples of the history file at `path`, read from its end: memory
/// stays within the samples kept, [`BAD_LINES_KEPT_BYTES`] and a read buffer whatever the
/// file's size or bytes, and at most twice the file a healthy ring leaves
/// (`capacity` × [`HISTORY_LINE_BUDGET`]) is read. None when there is no file; an error when
/// it cannot be read, is not a regular file, or is a symbolic link (never followed).
pub fn load_history(path: &Path, capacity: usize) -> io::Result<Option<HistoryLoad>> {
    let mut f = match tail::open_regular_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    load_history_from(&mut f, capacity).map(Some)
}

/// How far back from its end a history of `capacity` samples is read.
pub fn history_read_bound(capacity: usize) -> u64 {
    (capacity.max(1) as u64).saturating_mul(2 * HISTORY_LINE_BUDGET).saturating_add(HISTORY_LINE_MAX as u64)
}

/// [`load_history`] of an opened file (or anything that reads and seeks like one).
pub fn load_history_from<F: io::Read + io::Seek>(f: &mut F, capacity: usize) -> io::Result<HistoryLoad> {
    let capacity = capacity.max(1);
    let max_back = history_read_bound(capacity);
    let mut newest_first: Vec<Sample> = Vec::with_capacity(capacity.min(4096));
    let mut bad_newest_first: Vec<Vec<u8>> = Vec::new();
    let (mut bad_lines, mut bad_bytes) = (0u64, 0usize);
    let st = tail::lines_backwards(f, max_back, HISTORY_LINE_MAX, &mut |l| {
        match (l.cut, Sample::from_json_line(l.text)) {
            (false, Some(s)) => newest_first.push(s),
            _ if l.text.trim_ascii().is_empty() && !l.cut => {}
            _ => {
                bad_lines += 1;
                if bad_bytes + l.text.len() <= BAD_LINES_KEPT_BYTES {
                    bad_bytes += l.text.len();
                    bad_newest_first.push(l.text.to_vec());
                }
            }
        }
        newest_first.len() < capacity
    })?;
    let mut history = History::new(capacity);
    for s in newest_first.into_iter().rev() {
        history.push(s);
    }
    bad_newest_first.reverse();
    Ok(HistoryLoad { history, bad_lines, bad: bad_newest_first, file_bytes: st.file_bytes, unread_bytes: st.unread_bytes })
}

/// The last `capacity` samples, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    capacity: usize,
    samples: VecDeque<Sample>,
}

impl Default for History {
    fn default() -> Self {
        History::new(DEFAULT_HISTORY_CAPACITY)
    }
}

impl History {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        History { capacity, samples: VecDeque::with_capacity(capacity.min(4096)) }
    }

    /// Add a sample. A sample older than the last one (the clock stepped back) clears the
    /// history: the old times can no longer be compared with the new ones.
    pub fn push(&mut self, s: Sample) {
        if !s.at_unix_secs.is_finite() {
            return;
        }
        if self.samples.back().is_some_and(|last| s.at_unix_secs < last.at_unix_secs) {
            self.samples.clear();
        }
        // `while`: a History deserialized from hand-edited JSON may hold more than its capacity.
        while self.samples.len() >= self.capacity.max(1) {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub fn samples(&self) -> impl ExactSizeIterator<Item = &Sample> + '_ {
        self.samples.iter()
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// One JSON object per sample and line, as the agent appends them to its state file.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for s in &self.samples {
            out.push_str(&s.to_json_line());
            out.push('\n');
        }
        out
    }

    /// Read JSON lines written by [`to_json_lines`](Self::to_json_lines) (or appended one
    /// by one). Lines that do not parse are skipped and counted: a crash can leave the last
    /// line half written, and a lost sample must not cost the whole history.
    pub fn from_json_lines(text: &str, capacity: usize) -> (History, usize) {
        let mut h = History::new(capacity);
        let mut skipped = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match Sample::from_json_line(line.as_bytes()) {
                Some(s) => h.push(s),
                None => skipped += 1,
            }
        }
        (h, skipped)
    }
}

/// What the fit may assume about the series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForecastConfig {
    /// A fall of more than this share of the previous value starts a new regime.
    pub drop_fraction: f64,
    /// ... and of at least this many IDs (10 -> 8 is 20% but only churn).
    pub drop_min_ids: u64,
    /// No sample for longer than this: restart or outage, a new regime.
    pub max_gap_secs: f64,
    /// Only samples this recent are fitted.
    pub window_secs: f64,
    pub min_samples: usize,
    /// The fitted samples must span at least this long.
    pub min_span_secs: f64,
    /// Below this rise over the fitted span the series is flat (noise, not a leak).
    pub min_rise_ids: f64,
    /// Theil–Sen is O(n²): more samples than this are thinned evenly.
    pub max_fit_samples: usize,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            drop_fraction: 0.05,
            drop_min_ids: 50,
            max_gap_secs: 3600.0,
            window_secs: 24.0 * 3600.0,
            min_samples: 6,
            min_span_secs: 600.0,
            min_rise_ids: 10.0,
            max_fit_samples: 400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastOutcome {
    /// The last sample has no ID left.
    Exhausted,
    /// IDs in use rise: `seconds_to_exhaustion` is set.
    Approaching,
    /// Flat or falling since the last regime change.
    NotApproaching,
    /// Too few samples, or too short a span, since the last regime change.
    TooFewSamples,
}

impl ForecastOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ForecastOutcome::Exhausted => "exhausted",
            ForecastOutcome::Approaching => "approaching",
            ForecastOutcome::NotApproaching => "not_approaching",
            ForecastOutcome::TooFewSamples => "too_few_samples",
        }
    }
}

/// How consistently the fitted samples rise (Kendall's tau).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrendConfidence {
    None,
    Low,
    Medium,
    High,
}

impl TrendConfidence {
    pub fn as_str(self) -> &'static str {
        match self {
            TrendConfidence::None => "none",
            TrendConfidence::Low => "low",
            TrendConfidence::Medium => "medium",
            TrendConfidence::High => "high",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    pub outcome: ForecastOutcome,
    /// None: not approaching, or not known. 0: exhausted now.
    pub seconds_to_exhaustion: Option<f64>,
    /// Theil–Sen slope of IDs in use (0 when not fitted).
    pub slope_per_hour: f64,
    /// Always "theil_sen" for now; named so a change of method shows in the JSON.
    pub method: &'static str,
    pub confidence: TrendConfidence,
    /// Kendall's tau of the fitted samples, -1 (always falling) .. 1 (always rising).
    pub kendall_tau: f64,
    pub samples_used: usize,
    pub fit_from_unix_secs: Option<f64>,
    pub fit_to_unix_secs: Option<f64>,
    /// IDs in use at `now` on the fitted line.
    pub fitted_ids_now: Option<f64>,
    pub id_limit: u64,
    /// Why the fit starts where it does, why there is no forecast.
    pub notes: Vec<String>,
}

impl Forecast {
    fn empty(outcome: ForecastOutcome, id_limit: u64, notes: Vec<String>) -> Forecast {
        Forecast {
            outcome,
            seconds_to_exhaustion: None,
            slope_per_hour: 0.0,
            method: "theil_sen",
            confidence: TrendConfidence::None,
            kendall_tau: 0.0,
            samples_used: 0,
            fit_from_unix_secs: None,
            fit_to_unix_secs: None,
            fitted_ids_now: None,
            id_limit,
            notes,
        }
    }
}

/// Forecast with [`ForecastConfig::default`].
pub fn forecast(history: &History, now_unix_secs: f64) -> Forecast {
    forecast_with(history, now_unix_secs, &ForecastConfig::default())
}

pub fn forecast_with(history: &History, now: f64, cfg: &ForecastConfig) -> Forecast {
    let all: Vec<Sample> = history.samples().copied().collect();
    let Some(last) = all.last().copied() else {
        return Forecast::empty(ForecastOutcome::TooFewSamples, 0, vec!["no sample yet".into()]);
    };
    if last.ids_in_use >= last.id_limit {
        let mut f = Forecast::empty(ForecastOutcome::Exhausted, last.id_limit, vec![format!("{} of {} IDs in use at the last sample", last.ids_in_use, last.id_limit)]);
        f.seconds_to_exhaustion = Some(0.0);
        f.fitted_ids_now = Some(last.ids_in_use as f64);
        return f;
    }

    let mut notes = Vec::new();
    if now - last.at_unix_secs > cfg.max_gap_secs {
        // The sampler stopped: extrapolating over the silence would be a guess.
        notes.push(format!("the last sample is {:.0} s old", now - last.at_unix_secs));
        return Forecast::empty(ForecastOutcome::TooFewSamples, last.id_limit, notes);
    }
    let start = regime_start(&all, cfg, &mut notes);
    let from = now - cfg.window_secs;
    let regime: Vec<Sample> = all[start..].iter().copied().filter(|s| s.at_unix_secs >= from && s.at_unix_secs <= now).collect();
    let span = match (regime.first(), regime.last()) {
        (Some(a), Some(b)) => b.at_unix_secs - a.at_unix_secs,
        _ => 0.0,
    };
    if regime.len() < cfg.min_samples || span < cfg.min_span_secs {
        notes.push(format!(
            "{} samples over {:.0} s since the last regime change: at least {} over {:.0} s are needed",
            regime.len(),
            span,
            cfg.min_samples,
            cfg.min_span_secs
        ));
        let mut f = Forecast::empty(ForecastOutcome::TooFewSamples, last.id_limit, notes);
        f.samples_used = regime.len();
        return f;
    }

    let fit = thin(&regime, cfg.max_fit_samples);
    let t0 = fit[fit.len() - 1].at_unix_secs;
    let pts: Vec<(f64, f64)> = fit.iter().map(|s| (s.at_unix_secs - t0, s.ids_in_use as f64)).collect();
    let (slope, tau) = theil_sen(&pts);
    let intercept = median(pts.iter().map(|(t, y)| y - slope * t).collect()).unwrap_or(last.ids_in_use as f64);
    let fitted_now = intercept + slope * (now - t0);

    let mut f = Forecast::empty(ForecastOutcome::NotApproaching, last.id_limit, Vec::new());
    f.slope_per_hour = slope * 3600.0;
    f.kendall_tau = tau;
    f.confidence = match tau {
        t if t >= 0.6 => TrendConfidence::High,
        t if t >= 0.3 => TrendConfidence::Medium,
        t if t > 0.0 => TrendConfidence::Low,
        _ => TrendConfidence::None,
    };
    f.samples_used = regime.len();
    f.fit_from_unix_secs = Some(regime[0].at_unix_secs);
    f.fit_to_unix_secs = Some(last_of(&regime).at_unix_secs);
    f.fitted_ids_now = Some(fitted_now);

    if slope <= 0.0 || slope * span < cfg.min_rise_ids {
        notes.push(format!("flat or falling: {:+.2} IDs per hour over {:.0} s", slope * 3600.0, span));
        f.notes = notes;
        return f;
    }
    // The fitted level, not the last sample: a churn spike at the end must not move the forecast.
    let left = last.id_limit as f64 - fitted_now.clamp(0.0, last.id_limit as f64);
    f.outcome = ForecastOutcome::Approaching;
    f.seconds_to_exhaustion = Some((left / slope).max(0.0));
    f.notes = notes;
    f
}

fn last_of(s: &[Sample]) -> &Sample {
    &s[s.len() - 1]
}

/// Samples on each side of a step whose medians are compared to find a drop.
const DROP_MEDIAN_OF: usize = 3;

/// Index of the first sample after the last regime change.
fn regime_start(all: &[Sample], cfg: &ForecastConfig, notes: &mut Vec<String>) -> usize {
    for i in (1..all.len()).rev() {
        let (a, b) = (all[i - 1], all[i]);
        let gap = b.at_unix_secs - a.at_unix_secs;
        // A drop is a big step confirmed by the medians of a few samples on each side (a one-sample
        // spike or dip is churn), from the third sample on (one sample before is no level).
        let side = |r: std::ops::Range<usize>| median(all[r].iter().map(|s| s.ids_in_use as f64).collect()).unwrap_or(0.0);
        let before = side(i.saturating_sub(DROP_MEDIAN_OF)..i);
        let after = side(i..(i + DROP_MEDIAN_OF).min(all.len()));
        let fall = before - after;
        let step = a.ids_in_use as f64 - b.ids_in_use as f64;
        let why = if b.id_limit != a.id_limit {
            Some(format!("ID limit changed from {} to {}", a.id_limit, b.id_limit))
        } else if gap > cfg.max_gap_secs {
            Some(format!("no sample for {gap:.0} s (restart or outage)"))
        } else if i >= 2 && [step, fall].iter().all(|&d| d >= cfg.drop_min_ids as f64 && d > cfg.drop_fraction * before) {
            Some(format!("IDs in use fell from {before:.0} to {after:.0} (reclaim or reboot)"))
        } else {
            None
        };
        if let Some(why) = why {
            notes.push(format!("fit starts at {:.0} (unix): {why}", b.at_unix_secs));
            return i;
        }
    }
    0
}

/// At most `max` samples, evenly spaced, the first and last kept.
fn thin(s: &[Sample], max: usize) -> Vec<Sample> {
    let max = max.max(2);
    if s.len() <= max {
        return s.to_vec();
    }
    (0..max).map(|k| s[k * (s.len() - 1) / (max - 1)]).collect()
}

/// Theil–Sen slope (per second) and Kendall's tau of (t, y) points.
fn theil_sen(pts: &[(f64, f64)]) -> (f64, f64) {
    let mut slopes = Vec::with_capacity(pts.len() * pts.len() / 2);
    let (mut concordant, mut discordant) = (0i64, 0i64);
    for i in 0..pts.len() {
        for j in i + 1..pts.len() {
            let dt = pts[j].0 - pts[i].0;
            if dt <= 0.0 {
                continue;
            }
            let dy = pts[j].1 - pts[i].1;
            slopes.push(dy / dt);
            if dy > 0.0 {
                concordant += 1;
            } else if dy < 0.0 {
                discordant += 1;
            }
        }
    }
    let n = slopes.len();
    let tau = if n == 0 { 0.0 } else { (concordant - discordant) as f64 / n as f64 };
    (median(slopes).unwrap_or(0.0), tau)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// Forecasts closer than this are `at_risk`.
pub const FORECAST_AT_RISK_SECS: f64 = 7.0 * 24.0 * 3600.0;
/// Forecasts closer than this are critical.
pub const FORECAST_CRITICAL_SECS: f64 = 24.0 * 3600.0;

/// A forecast's time left, rounded as people say it: "45 minutes", "3.5 hours", "2.0 days"
/// (a flag's exact duration is `cgleak_readers::duration::human_duration`).
pub fn rough_time_left(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 3600.0 {
        format!("{:.0} minutes", s / 60.0)
    } else if s < 48.0 * 3600.0 {
        format!("{:.1} hours", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 65535;
    const T0: f64 = 1_700_000_000.0;

    /// Deterministic noise in [-amp, amp].
    fn noise(i: usize, amp: f64) -> f64 {
        let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
        ((x as f64 / (1u64 << 53) as f64) * 2.0 - 1.0) * amp
    }

    /// One sample a minute for `n` minutes from T0, ids from `f(minute)`.
    fn series(n: usize, f: impl Fn(usize) -> f64) -> History {
        let mut h = History::new(10_000);
        for i in 0..n {
            h.push(Sample { at_unix_secs: T0 + 60.0 * i as f64, ids_in_use: f(i).round().max(0.0) as u64, id_limit: LIMIT, dying: None });
        }
        h
    }

    fn now_after(n: usize) -> f64 {
        T0 + 60.0 * (n - 1) as f64
    }

    #[test]
    fn steady_leak_gives_the_time_left() {
        // 10 IDs a minute from 30000: 600/h, 35535 left at the end of 120 minutes less 1190.
        let h = series(120, |i| 30000.0 + 10.0 * i as f64);
        let f = forecast(&h, now_after(120));
        assert_eq!(f.outcome, ForecastOutcome::Approaching, "{f:?}");
        assert!((f.slope_per_hour - 600.0).abs() < 1e-6, "{f:?}");
        let left = (LIMIT - (30000 + 10 * 119)) as f64;
        let want = left / 10.0 * 60.0;
        assert!((f.seconds_to_exhaustion.unwrap() - want).abs() < 1.0, "{f:?} want {want}");
        assert_eq!(f.confidence, TrendConfidence::High);
        assert_eq!(f.samples_used, 120);
    }

    #[test]
    fn noise_and_outliers_do_not_move_the_slope_much() {
        // 5 IDs a minute, +-200 of churn, and every 7th sample a spike of +3000.
        let h = series(240, |i| 20000.0 + 5.0 * i as f64 + noise(i, 200.0) + if i % 7 == 0 { 3000.0 } else { 0.0 });
        let f = forecast(&h, now_after(240));
        assert_eq!(f.outcome, ForecastOutcome::Approaching, "{f:?}");
        assert!((f.slope_per_hour - 300.0).abs() < 60.0, "slope {} not near 300/h", f.slope_per_hour);
        // The fall back from each spike is churn, not a regime change.
        assert_eq!(f.samples_used, 240, "{:?}", f.notes);
    }

    #[test]
    fn idle_node_has_no_forecast() {
        let flat = series(240, |_| 1200.0);
        let f = forecast(&flat, now_after(240));
        assert_eq!(f.outcome, ForecastOutcome::NotApproaching, "{f:?}");
        assert_eq!(f.seconds_to_exhaustion, None);
        assert_eq!(f.slope_per_hour, 0.0);

        // Churn around a constant level: no trend either.
        let churn = series(240, |i| 1200.0 + noise(i, 30.0));
        let f = forecast(&churn, now_after(240));
        assert_eq!(f.seconds_to_exhaustion, None, "{f:?}");
    }

    #[test]
    fn leak_with_idle_hours_keeps_its_average_rate() {
        // 2 h leaking 6 IDs a minute, 2 h idle, over 12 h: 180 IDs per hour on average.
        let level = |i: usize| {
            let (cycles, rest) = (i / 240, i % 240);
            (cycles * 120 * 6 + rest.min(120) * 6) as f64
        };
        let h = series(720, |i| 20000.0 + level(i));
        let f = forecast(&h, now_after(720));
        assert_eq!(f.outcome, ForecastOutcome::Approaching, "{f:?}");
        assert!((f.slope_per_hour - 180.0).abs() < 30.0, "{f:?}");
    }

    #[test]
    fn falling_series_is_not_approaching() {
        let h = series(120, |i| 40000.0 - 3.0 * i as f64);
        let f = forecast(&h, now_after(120));
        assert_eq!(f.outcome, ForecastOutcome::NotApproaching);
        assert!(f.slope_per_hour < 0.0);
        assert_eq!(f.seconds_to_exhaustion, None);
    }

    #[test]
    fn reclaim_drop_restarts_the_fit() {
        // Fast leak to 50000, reclaim drops to 10000, then a slow leak of 2 per minute.
        let h = series(300, |i| if i < 150 { 35000.0 + 100.0 * i as f64 } else { 10000.0 + 2.0 * (i - 150) as f64 });
        let f = forecast(&h, now_after(300));
        assert_eq!(f.outcome, ForecastOutcome::Approaching, "{f:?}");
        assert!((f.slope_per_hour - 120.0).abs() < 1e-6, "{f:?}");
        assert_eq!(f.samples_used, 150);
        assert_eq!(f.fit_from_unix_secs, Some(T0 + 150.0 * 60.0));
        assert!(f.notes.iter().any(|n| n.contains("fell from")), "{:?}", f.notes);

        // Right after the drop: too few samples rather than the old trend.
        let h = series(153, |i| if i < 150 { 35000.0 + 100.0 * i as f64 } else { 10000.0 });
        let f = forecast(&h, now_after(153));
        assert_eq!(f.outcome, ForecastOutcome::TooFewSamples, "{f:?}");
        assert_eq!(f.seconds_to_exhaustion, None);
    }

    #[test]
    fn small_dips_are_churn_not_regime_changes() {
        // Every 10th sample dips 2% (pod deletions): the fit keeps all samples.
        let h = series(200, |i| 30000.0 + 4.0 * i as f64 - if i % 10 == 0 { 600.0 } else { 0.0 });
        let f = forecast(&h, now_after(200));
        assert_eq!(f.samples_used, 200, "{f:?}");
        assert!((f.slope_per_hour - 240.0).abs() < 12.0, "{f:?}");
    }

    #[test]
    fn restart_gap_restarts_the_fit() {
        let mut h = series(100, |i| 20000.0 + 50.0 * i as f64);
        // Two hours without samples, then a slower leak from a similar level.
        let resume = T0 + 60.0 * 99.0 + 2.0 * 3600.0;
        for i in 0..60 {
            h.push(Sample { at_unix_secs: resume + 60.0 * i as f64, ids_in_use: 25000 + 3 * i as u64, id_limit: LIMIT, dying: None });
        }
        let f = forecast(&h, resume + 59.0 * 60.0);
        assert_eq!(f.samples_used, 60, "{f:?}");
        assert!((f.slope_per_hour - 180.0).abs() < 1e-6, "{f:?}");
        assert!(f.notes.iter().any(|n| n.contains("no sample for")), "{:?}", f.notes);
    }

    #[test]
    fn already_exhausted_is_zero_seconds() {
        let h = series(10, |i| 65530.0 + i as f64);
        let f = forecast(&h, now_after(10));
        assert_eq!(f.outcome, ForecastOutcome::Exhausted);
        assert_eq!(f.seconds_to_exhaustion, Some(0.0));
    }

    #[test]
    fn too_few_samples_or_too_short_a_span() {
        assert_eq!(forecast(&History::default(), T0).outcome, ForecastOutcome::TooFewSamples);
        let h = series(4, |i| 100.0 * i as f64);
        assert_eq!(forecast(&h, now_after(4)).outcome, ForecastOutcome::TooFewSamples);
        // Many samples, one a second: 30 s is no trend.
        let mut h = History::new(100);
        for i in 0..30 {
            h.push(Sample { at_unix_secs: T0 + i as f64, ids_in_use: 1000 + i, id_limit: LIMIT, dying: None });
        }
        assert_eq!(forecast(&h, T0 + 30.0).outcome, ForecastOutcome::TooFewSamples);
    }

    #[test]
    fn old_samples_fall_out_of_the_window_and_the_ring() {
        let mut h = History::new(5);
        for i in 0..8 {
            h.push(Sample { at_unix_secs: T0 + i as f64, ids_in_use: i, id_limit: LIMIT, dying: None });
        }
        assert_eq!(h.len(), 5);
        assert_eq!(h.samples().next().unwrap().ids_in_use, 3);

        // Only the last day is fitted: a fast leak two days ago does not count.
        let n = 3 * 24 * 60;
        let h = series(n, |i| if i < 24 * 60 { 1000.0 + 10.0 * i as f64 } else { 15400.0 });
        let f = forecast(&h, now_after(n));
        assert_eq!(f.outcome, ForecastOutcome::NotApproaching, "{f:?}");
    }

    #[test]
    fn stale_history_gives_no_forecast() {
        let h = series(120, |i| 30000.0 + 10.0 * i as f64);
        let f = forecast(&h, now_after(120) + 2.0 * 3600.0);
        assert_eq!(f.outcome, ForecastOutcome::TooFewSamples, "{f:?}");
        assert_eq!(f.seconds_to_exhaustion, None);
        assert!(f.notes[0].contains("old"), "{:?}", f.notes);
        // A sample a few minutes old still forecasts, from the fitted line at `now`.
        let f = forecast(&h, now_after(120) + 600.0);
        let want = (LIMIT as f64 - (30000.0 + 10.0 * 129.0)) / 10.0 * 60.0;
        assert!((f.seconds_to_exhaustion.unwrap() - want).abs() < 1.0, "{f:?} want {want}");
    }

    #[test]
    fn clock_stepping_back_clears_the_history() {
        let mut h = series(10, |i| i as f64);
        h.push(Sample { at_unix_secs: T0 - 100.0, ids_in_use: 5, id_limit: LIMIT, dying: None });
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn history_round_trips_through_json_lines_and_skips_torn_lines() {
        let h = series(20, |i| 1000.0 + i as f64);
        let mut text = h.to_json_lines();
        text.push_str("{\"at_unix_secs\": 17000");
        let (back, skipped) = History::from_json_lines(&text, 1440);
        assert_eq!(skipped, 1);
        assert_eq!(back.samples().copied().collect::<Vec<_>>(), h.samples().copied().collect::<Vec<_>>());
    }

    fn samples_of(h: &History) -> Vec<Sample> {
        h.samples().copied().collect()
    }

    /// Finding 7 of issue 11: one byte that is not UTF-8 cost every sample; now it costs its line.
    #[test]
    fn a_file_with_bad_bytes_loads_every_good_line_and_keeps_the_bad_ones() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent-history.jsonl");
        assert_eq!(load_history(&p, 100).unwrap(), None);
        let h = series(77, |i| 1000.0 + i as f64);
        let mut lines: Vec<Vec<u8>> = h.to_json_lines().lines().map(|l| l.as_bytes().to_vec()).collect();
        lines[40] = b"{\"at_unix_secs\":17\xff00,\"ids_in_use\":1,\"id_limit\":65535}".to_vec();
        lines.insert(10, b"".to_vec());
        let mut content = lines.join(&b'\n');
        content.extend_from_slice(b"\n{\"at_unix_se");
        std::fs::write(&p, &content).unwrap();
        let load = load_history(&p, 1440).unwrap().unwrap();
        assert_eq!(load.history.len(), 76);
        let mut want = samples_of(&h);
        want.remove(40);
        assert_eq!(samples_of(&load.history), want);
        assert_eq!(load.bad_lines, 2, "the bad byte's line and the torn last line; a blank line is not bad");
        assert_eq!(load.bad[0], b"{\"at_unix_secs\":17\xff00,\"ids_in_use\":1,\"id_limit\":65535}".to_vec());
        assert_eq!(load.bad[1], b"{\"at_unix_se".to_vec());
        assert_eq!((load.file_bytes, load.unread_bytes), (content.len() as u64, 0));
        // Only the newest `capacity` samples are read.
        let load = load_history(&p, 10).unwrap().unwrap();
        assert_eq!(samples_of(&load.history), want[want.len() - 10..].to_vec());
        assert!(load.unread_bytes > 0 && load.bad_lines == 1);
    }

    #[test]
    fn a_huge_or_garbage_file_is_read_only_from_its_end() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("h");
        // 8 MiB of one line without a newline, then ten samples.
        let mut content = vec![b'x'; 8 << 20];
        content.push(b'\n');
        content.extend_from_slice(series(10, |i| i as f64).to_json_lines().as_bytes());
        std::fs::write(&p, &content).unwrap();
        let load = load_history(&p, 100).unwrap().unwrap();
        assert_eq!(load.history.len(), 10);
        // The giant line reaches past the bound: not read at all.
        assert_eq!(load.bad_lines, 0);
        assert!(load.unread_bytes >= 8 << 20);
        // Within the bound: a cut line, kept cut.
        std::fs::write(&p, [&vec![b'y'; 10_000][..], b"\n"].concat()).unwrap();
        let load = load_history(&p, 1440).unwrap().unwrap();
        assert_eq!((load.history.len(), load.bad_lines, load.bad[0].len()), (0, 1, HISTORY_LINE_MAX));
        // Bad lines kept up to their budget, all counted.
        let many: Vec<u8> = (0..100_000).flat_map(|i| format!("garbage {i}\n").into_bytes()).collect();
        std::fs::write(&p, &many).unwrap();
        let load = load_history(&p, 1440).unwrap().unwrap();
        assert!(load.bad.iter().map(Vec::len).sum::<usize>() <= BAD_LINES_KEPT_BYTES);
        assert!(load.bad_lines > load.bad.len() as u64);
        assert!(load.file_bytes - load.unread_bytes <= 1440 * 2 * HISTORY_LINE_BUDGET + HISTORY_LINE_MAX as u64 + 16);
    }

    #[test]
    fn samples_round_trip_one_line_each() {
        for s in [
            Sample { at_unix_secs: 1.7e9 + 0.123456789, ids_in_use: 0, id_limit: 65535, dying: None },
            Sample { at_unix_secs: -0.0, ids_in_use: u64::MAX, id_limit: 0, dying: None },
            Sample { at_unix_secs: f64::MAX, ids_in_use: 1, id_limit: 1, dying: None },
            Sample { at_unix_secs: 5e-324, ids_in_use: 1, id_limit: 1, dying: None },
            // Seventeen significant digits: exact only with serde_json's float_roundtrip (fuzz/history_file).
            Sample { at_unix_secs: 1.7111111111111112e40, ids_in_use: 1, id_limit: 1, dying: None },
            Sample { at_unix_secs: 1796000120.2111113, ids_in_use: 1, id_limit: 1, dying: None },
        ] {
            let line = s.to_json_line();
            assert!(!line.contains('\n'));
            assert_eq!(Sample::from_json_line(line.as_bytes()), Some(s), "{line}");
        }
        for bad in [&b"{\"at_unix_secs\":1e999,\"ids_in_use\":1,\"id_limit\":1}"[..], b"[]", b"\xff", b"", b"{\"at_unix_secs\":1,\"ids_in_use\":-1,\"id_limit\":1}"] {
            assert_eq!(Sample::from_json_line(bad), None, "{bad:?}");
        }
    }
}
