//! Forecast of memcg ID exhaustion from the trend of IDs in use.
//!
//! Pure: the agent samples the census into a [`History`] (and may persist it as JSON
//! lines), [`forecast`] reads the trend. `ids_in_use` already counts dying memcgs on the
//! eras where they keep their IDs (KERNEL-FACTS.md section 1), so one series covers both.
//!
//! Robustness, because node series are noisy and broken:
//! - the slope is Theil–Sen's (median of pairwise slopes): up to ~29% of outliers
//!   (pod churn spikes) cannot move it;
//! - a sudden drop (reboot, reclaim freeing dying memcgs, `drop_caches`), a gap in the
//!   samples (agent or node restart) or a change of ID limit starts a new regime: only the
//!   samples after the last break are fitted;
//! - a flat or falling series (idle node) gives no forecast rather than a huge one.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::verdict::{Evidence, Finding, Severity, Verdict};

/// One census reduced to what the forecast needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_unix_secs: f64,
    pub ids_in_use: u64,
    pub id_limit: u64,
}

/// Samples of the agent kept for the forecast: a day at one a minute by default.
pub const DEFAULT_HISTORY_CAPACITY: usize = 1440;

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
            out.push_str(&serde_json::to_string(s).expect("a sample always serializes"));
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
            match serde_json::from_str::<Sample>(line) {
                Ok(s) => h.push(s),
                Err(_) => skipped += 1,
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

/// The `exhaustion_forecast` finding of `check`; None without a history (no agent).
pub fn exhaustion_finding(forecast: Option<&Forecast>) -> Option<Finding> {
    let f = forecast?;
    let fit = match (f.fit_from_unix_secs, f.fit_to_unix_secs) {
        (Some(a), Some(b)) => format!("{} samples from {a:.0} to {b:.0} (unix)", f.samples_used),
        _ => format!("{} samples", f.samples_used),
    };
    let evidence = vec![Evidence {
        file: "agent history (IDs in use per sample)".into(),
        value: format!("{fit}, slope {:+.2} IDs/hour, tau {:.2}, limit {}", f.slope_per_hour, f.kendall_tau, f.id_limit),
    }];
    let (severity, implies, summary) = match (f.outcome, f.seconds_to_exhaustion) {
        (ForecastOutcome::Exhausted, _) => (Severity::Critical, Verdict::Exhausted, "the memcg ID space was exhausted at the last sample".to_string()),
        (ForecastOutcome::Approaching, Some(s)) => {
            let when = format!(
                "at {:+.1} IDs per hour the memcg ID space runs out in {} ({} confidence)",
                f.slope_per_hour,
                human_duration(s),
                f.confidence.as_str()
            );
            if s < FORECAST_CRITICAL_SECS {
                (Severity::Critical, Verdict::AtRisk, when)
            } else if s < FORECAST_AT_RISK_SECS {
                (Severity::Warning, Verdict::AtRisk, when)
            } else {
                (Severity::Info, Verdict::Healthy, when)
            }
        }
        (ForecastOutcome::TooFewSamples, _) => (Severity::Info, Verdict::Healthy, format!("no forecast yet: {}", f.notes.join("; "))),
        _ => (Severity::Info, Verdict::Healthy, format!("IDs in use are not rising ({:+.2} per hour): no exhaustion in sight", f.slope_per_hour)),
    };
    Some(Finding { id: "exhaustion_forecast", severity, summary, evidence, implies })
}

fn human_duration(secs: f64) -> String {
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
            h.push(Sample { at_unix_secs: T0 + 60.0 * i as f64, ids_in_use: f(i).round().max(0.0) as u64, id_limit: LIMIT });
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
            h.push(Sample { at_unix_secs: resume + 60.0 * i as f64, ids_in_use: 25000 + 3 * i as u64, id_limit: LIMIT });
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
        let finding = exhaustion_finding(Some(&f)).unwrap();
        assert_eq!(finding.implies, Verdict::Exhausted);
        assert_eq!(finding.severity, Severity::Critical);
    }

    #[test]
    fn too_few_samples_or_too_short_a_span() {
        assert_eq!(forecast(&History::default(), T0).outcome, ForecastOutcome::TooFewSamples);
        let h = series(4, |i| 100.0 * i as f64);
        assert_eq!(forecast(&h, now_after(4)).outcome, ForecastOutcome::TooFewSamples);
        // Many samples, one a second: 30 s is no trend.
        let mut h = History::new(100);
        for i in 0..30 {
            h.push(Sample { at_unix_secs: T0 + i as f64, ids_in_use: 1000 + i, id_limit: LIMIT });
        }
        assert_eq!(forecast(&h, T0 + 30.0).outcome, ForecastOutcome::TooFewSamples);
    }

    #[test]
    fn old_samples_fall_out_of_the_window_and_the_ring() {
        let mut h = History::new(5);
        for i in 0..8 {
            h.push(Sample { at_unix_secs: T0 + i as f64, ids_in_use: i, id_limit: LIMIT });
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
        h.push(Sample { at_unix_secs: T0 - 100.0, ids_in_use: 5, id_limit: LIMIT });
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

    #[test]
    fn finding_follows_the_forecast() {
        assert!(exhaustion_finding(None).is_none());
        // 3 days left: at_risk warning.
        let h = series(120, |i| 65535.0 - 3.0 * 1440.0 - 119.0 + i as f64);
        let f = forecast(&h, now_after(120));
        let s = f.seconds_to_exhaustion.unwrap();
        assert!((s - 3.0 * 86400.0).abs() < 120.0, "{s}");
        let finding = exhaustion_finding(Some(&f)).unwrap();
        assert_eq!(finding.id, "exhaustion_forecast");
        assert_eq!((finding.severity, finding.implies), (Severity::Warning, Verdict::AtRisk));
        assert!(finding.summary.contains("3.0 days"), "{}", finding.summary);
        // Idle: informational.
        let f = forecast(&series(120, |_| 500.0), now_after(120));
        let finding = exhaustion_finding(Some(&f)).unwrap();
        assert_eq!((finding.severity, finding.implies), (Severity::Info, Verdict::Healthy));
    }
}
