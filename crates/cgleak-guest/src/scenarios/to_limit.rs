//! to-limit: `cgleak probe --to-limit --force` against a headroom the scenario made and counted
//! itself (guests only: the probe fills the ID space). It fills the memory hierarchy until
//! exactly 5,000 memcg IDs are free (the same fill near-limit and exhaustion continue, so the
//! boot fills once), runs the probe, and checks its headroom against that count and against
//! the scenario's own mkdir-until-fail afterwards. The probe's time without a free ID must stay
//! under 1 s; the scenario measures the kernel's floor for it the same way, without cgleak.
//!
//! On 4.7+ a removed memcg gives its ID back at css offline (mem_cgroup_css_offline ->
//! mem_cgroup_id_put), which lags the rmdir: between runs the scenario waits until the kernel's
//! dying count is back where it was, so every count starts from released IDs.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cg::{self, Scratch};
use crate::cgleak::{self, str_at, u64_at};
use crate::report::Outcome;
use crate::scenarios::fill::{fill, timed, LIMIT};
use crate::scenarios::State;
use crate::{Ctx, Env};

/// The free IDs the scenario leaves for the probe.
const HEADROOM: u64 = 5000;
/// The longest the node may go without a free memcg ID while the probe runs.
const WINDOW_TARGET_MS: f64 = 1000.0;
/// How long removed memcgs may take to be freed (their IDs released) before that is a failure.
const SETTLE: Duration = Duration::from_secs(60);

pub fn run(ctx: &Ctx, state: &mut State, o: &mut Outcome) -> Result<()> {
    if ctx.env != Env::Guest {
        bail!("to-limit fills the memcg ID space: guests only");
    }
    let target = LIMIT - HEADROOM;
    let now = cg::count_memcgs(&ctx.mem_root, ctx.version);
    o.measure("memcgs_at_start", now);
    // The fill's scratch parent is a memcg too, when it is still to be made.
    let Some(need) = target.checked_sub(now + u64::from(state.fill.is_none())) else {
        bail!("{now} memcgs exist already: more than the {target} this scenario fills to");
    };
    let (made, err) = timed(o, "mkdir_seconds", || fill(ctx, state, Some(need)))?;
    if let Some(e) = err {
        bail!("mkdir failed after {made} of {need} memcgs: {e}");
    }
    let total = cg::count_memcgs(&ctx.mem_root, ctx.version);
    o.measure("memcgs", total);
    if !o.eq("memcgs in the hierarchy (root included) == 65535 - 5000", target, total) {
        bail!("the fill did not end at {target} memcgs");
    }
    // Ground truth: on 6.1 and 6.12 only live memcgs hold IDs (dying ones release theirs at
    // offline, and the guest has no swap to pin them), so the free IDs are the limit minus the count.
    let truth = LIMIT - total;
    o.measure("headroom_truth", truth);
    let dying_before = cg::dying(&ctx.mem_root, ctx.version, total).context("read the kernel's dying count")?;
    o.measure("dying_before", dying_before);

    let probe = timed(o, "probe_seconds", || cgleak::run(&ctx.cgleak, &["probe", "--to-limit", "--force"]))?;
    o.measure("probe_exit", probe.code);
    if probe.json.is_null() {
        o.measure("probe_stderr", probe.stderr.clone());
    }
    let j = &probe.json;
    let window = j.pointer("/no_free_id_ms").and_then(Value::as_f64);
    o.measure("probe_headroom", j.pointer("/headroom").cloned().unwrap_or(Value::Null));
    o.measure("probe_created", j.pointer("/created").cloned().unwrap_or(Value::Null));
    o.measure("no_free_id_ms", window);
    o.measure("removals_until_free", j.pointer("/removals_until_free").cloned().unwrap_or(Value::Null));
    o.measure("probe_elapsed_ms", j.pointer("/elapsed_ms").cloned().unwrap_or(Value::Null));
    o.eq("probe exit code (limit met, everything removed)", 0, probe.code);
    o.eq("probe headroom == the scenario's count (65535 - memcgs)", Some(truth), u64_at(j, "/headroom"));
    o.eq("probe success and to_limit", json!([true, true]), json!([j["success"], j["to_limit"]]));
    if let Some(want) = &ctx.expect_errno {
        o.eq("probe errno == docs/kernel-facts.md §1", Some(want.as_str()), str_at(j, "/errno"));
    }
    o.eq("probe removed everything it created", u64_at(j, "/created"), u64_at(j, "/removed"));
    o.eq("probe leftover", json!([]), j.pointer("/leftover").cloned().unwrap_or(Value::Null));
    o.that("no free memcg ID for less than 1 s", window.is_some_and(|w| w < WINDOW_TARGET_MS), window);

    settle(ctx, o, "after_probe", total, dying_before)?;

    // The scenario's own answer, with the same count (its scratch parent takes an ID too).
    let (ids, errno, floor) = timed(o, "verify_seconds", || mkdir_until_full(ctx))?;
    o.measure("verify_ids", ids);
    o.measure("verify_errno", errno.clone());
    o.measure("floor_no_free_id_ms", floor);
    o.eq("the scenario's own mkdir-until-fail == its count", truth, ids);
    if let Some(want) = &ctx.expect_errno {
        o.eq("own mkdir errno == docs/kernel-facts.md §1", want.clone(), errno);
    }
    // near-limit and exhaustion count on the IDs being back.
    settle(ctx, o, "after_verify", total, dying_before)
}

/// Wait until the memcgs removed since `total` was counted are freed (their IDs released): the
/// count is `total` again and the kernel's dying count no higher than before.
fn settle(ctx: &Ctx, o: &mut Outcome, what: &str, total: u64, dying_before: u64) -> Result<()> {
    let now = cg::count_memcgs(&ctx.mem_root, ctx.version);
    if !o.eq(&format!("memcgs {what} == before"), total, now) {
        bail!("{} memcgs {what}, {total} before", now);
    }
    let (ok, dying, took) = cg::poll(SETTLE, Duration::from_millis(20), || {
        let d = cg::dying(&ctx.mem_root, ctx.version, total);
        (d.is_some_and(|d| d <= dying_before), d)
    });
    o.measure(&format!("settle_{what}_seconds"), (took.as_secs_f64() * 100.0).round() / 100.0);
    if !o.that(&format!("removed memcgs freed {what} (dying back to {dying_before})"), ok, dying) {
        bail!("dying memcgs {what}: {dying:?} after {} s, {dying_before} before", SETTLE.as_secs());
    }
    Ok(())
}

/// mkdir children of a scratch parent of its own until one fails: the IDs taken (the children and
/// the scratch parent), the errno, and the floor of the probe's window: from the last mkdir that
/// succeeded until one succeeds again after removing the last child, retried every 100 µs.
fn mkdir_until_full(ctx: &Ctx) -> Result<(u64, String, Option<f64>)> {
    let scratch = Scratch::create(&ctx.mem_root, ctx.version, "tolimit-verify")?;
    let mut n = 0u64;
    let mut last_taken = Instant::now();
    let err = loop {
        if n > LIMIT {
            bail!("made {n} memcgs under {} and mkdir still succeeds", scratch.path.display());
        }
        match fs::create_dir(scratch.path.join(format!("v{n}"))) {
            Ok(()) => {
                last_taken = Instant::now();
                n += 1;
            }
            Err(e) => break e,
        }
    };
    let errno = cg::errno_name(&err);
    let mut floor = None;
    if n > 0 {
        let last = scratch.path.join(format!("v{}", n - 1));
        cg::rmdir(&last).with_context(|| format!("rmdir {}", last.display()))?;
        let free = scratch.path.join("free");
        let (ok, _, _) = cg::poll(Duration::from_secs(10), Duration::from_micros(100), || (fs::create_dir(&free).is_ok(), ()));
        if ok {
            floor = Some((last_taken.elapsed().as_secs_f64() * 1e6).round() / 1e3);
        }
    }
    // Scratch's Drop removes the children and the check cgroup, deepest first.
    drop(scratch);
    Ok((n + 1, errno, floor))
}
