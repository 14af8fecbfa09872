//! near-limit and exhaustion: fill the memcg ID space in a guest (never on the host) and
//! compare cgleak's status, check and probe with the count and errno mkdir gave (facts §1).

use std::io;
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::cg::{self, Scratch};
use crate::cgleak::{self, str_at, u64_at};
use crate::report::Outcome;
use crate::scenarios::State;
use crate::{Ctx, Env};

pub(super) const LIMIT: u64 = 65535;
/// 95% of the limit, rounded up: the near-limit target, root included.
const NEAR: u64 = (LIMIT * 95).div_ceil(100);

pub(super) fn scratch<'a>(ctx: &Ctx, state: &'a mut State) -> Result<&'a Scratch> {
    if ctx.env != Env::Guest {
        bail!("filling the memcg ID space is for guests only");
    }
    if state.fill.is_none() {
        let mut s = Scratch::create(&ctx.mem_root, ctx.version, "fill")?;
        // The guest powers off next: removing 65,000 memcgs would only cost time.
        s.keep();
        state.fill = Some(s);
    }
    Ok(state.fill.as_ref().expect("just set"))
}

/// mkdir flat children until `stop(created)` or a mkdir fails; Err is the failure.
pub(super) fn fill(ctx: &Ctx, state: &mut State, count: Option<u64>) -> Result<(u64, Option<io::Error>)> {
    let parent = scratch(ctx, state)?.path.clone();
    let mut made = 0u64;
    loop {
        if count.is_some_and(|c| made >= c) {
            return Ok((made, None));
        }
        if made > LIMIT {
            bail!("made {made} memcgs under {} and mkdir still succeeds", parent.display());
        }
        match std::fs::create_dir(parent.join(format!("n{}", state.fill_next))) {
            Ok(()) => {
                made += 1;
                state.fill_next += 1;
            }
            Err(e) => return Ok((made, Some(e))),
        }
    }
}

pub(super) fn timed<T>(o: &mut Outcome, key: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    o.measure(key, (t.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    r
}

pub fn near_limit(ctx: &Ctx, state: &mut State, o: &mut Outcome) -> Result<()> {
    let now = cg::count_memcgs(&ctx.mem_root, ctx.version);
    let need = NEAR.saturating_sub(now + u64::from(state.fill.is_none()));
    let (made, err) = timed(o, "mkdir_seconds", || fill(ctx, state, Some(need)))?;
    if let Some(e) = err {
        bail!("mkdir failed after {made} of {need} memcgs: {e}");
    }
    let total = cg::count_memcgs(&ctx.mem_root, ctx.version);
    o.measure("memcgs", total);
    o.eq("memcgs in the hierarchy (root included) == 95% of 65535", NEAR, total);
    let headroom = LIMIT - total;

    let check = timed(o, "check_seconds", || cgleak::run(&ctx.cgleak, &["check"]))?;
    o.measure("check_exit", check.code);
    o.eq("check exit code", 3, check.code);
    o.eq("check verdict", "at_risk".to_string(), str_at(&check.json, "/verdict").unwrap_or("").to_string());
    o.eq("census headroom", headroom, u64_at(&check.json, "/census/memcg/headroom").unwrap_or(u64::MAX));
    let finding = id_finding(&check.json);
    o.measure("finding", finding.clone());
    let text = finding.to_string();
    o.that(&format!("memcg_id_headroom finding carries the headroom {headroom}"), text.contains(&format!("headroom {headroom}")), text.len());
    Ok(())
}

fn id_finding(check: &Value) -> Value {
    check
        .pointer("/findings")
        .and_then(Value::as_array)
        .and_then(|f| f.iter().find(|f| f["id"] == "memcg_id_headroom"))
        .cloned()
        .unwrap_or(Value::Null)
}

pub fn exhaustion(ctx: &Ctx, state: &mut State, o: &mut Outcome) -> Result<()> {
    let start = cg::count_memcgs(&ctx.mem_root, ctx.version);
    o.measure("memcgs_at_start", start);
    let (made, err) = timed(o, "mkdir_seconds", || fill(ctx, state, None))?;
    let Some(err) = err else { bail!("mkdir never failed") };
    let errno = cg::errno_name(&err);
    o.measure("mkdir_errno", errno.clone());
    o.measure("created", made);
    let total = cg::count_memcgs(&ctx.mem_root, ctx.version);
    o.measure("memcgs_when_full", total);
    o.eq("memcgs when mkdir fails (root included)", LIMIT, total);
    if let Some(want) = &ctx.expect_errno {
        o.eq("mkdir errno == docs/kernel-facts.md §1", want.clone(), errno.clone());
    }
    // Still full: a second mkdir fails the same way.
    let again = std::fs::create_dir(ctx.mem_root.join(format!("cgleak-test-{}-again", std::process::id())));
    o.eq("a fresh mkdir fails with the same errno", errno.clone(), again.map(|_| "ok".to_string()).unwrap_or_else(|e| cg::errno_name(&e)));

    let status = timed(o, "status_seconds", || cgleak::status(&ctx.cgleak))?;
    o.eq("status exit code", 0, status.code);
    let m = |p: &str| u64_at(&status.json, p);
    o.measure("status_memcg", status.json.pointer("/memcg").cloned().unwrap_or(Value::Null));
    o.eq("status headroom", Some(0), m("/memcg/headroom"));
    o.eq("status ids_in_use", Some(LIMIT), m("/memcg/ids_in_use"));
    o.eq("status live", Some(LIMIT), m("/memcg/live"));
    o.eq(
        "era model errno (kernel.mkdir_errno_when_full) == measured",
        errno.clone(),
        str_at(&status.json, "/kernel/mkdir_errno_when_full").unwrap_or("").to_string(),
    );

    let check = timed(o, "check_seconds", || cgleak::run(&ctx.cgleak, &["check"]))?;
    o.eq("check verdict", "exhausted".to_string(), str_at(&check.json, "/verdict").unwrap_or("").to_string());
    o.eq("check exit code", 4, check.code);
    o.measure("finding", id_finding(&check.json).get("summary").cloned().unwrap_or(Value::Null));

    let probe = timed(o, "probe_seconds", || cgleak::run(&ctx.cgleak, &["probe", "--count", "1"]))?;
    o.measure("probe_exit", probe.code);
    let probe_errno = str_at(&probe.json, "/errno").map(str::to_string);
    o.measure("probe_errno", probe_errno.clone());
    if probe.json.is_null() {
        o.measure("probe_stderr", probe.stderr.clone());
    }
    o.eq("probe exit code", 4, probe.code);
    o.eq("probe errno", Some(errno), probe_errno);
    Ok(())
}
