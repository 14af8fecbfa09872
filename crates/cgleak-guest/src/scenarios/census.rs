//! census: live and dying memcgs as cgleak counts them, against the memcgs this scenario
//! made, pinned with page cache, and released again (facts §2, §4).
//!
//! Guest (nothing else runs): every count must match exactly. Host: other cgroups come
//! and go meanwhile, so counts are checked as deltas within a tolerance, and the
//! page-cache charge of our own parent (memory.usage_in_bytes / memory.current counts
//! dying children) is the exact witness. drop_caches is host-wide, so only the guest uses it.
//!
//! Two kinds of pins: files read into page cache by a process in each memcg (clean data
//! pages only: drop_caches must free them all), and files written by it (data plus the
//! filesystem metadata the writer was first to touch: the guest measures what
//! drop_caches leaves of those, then reclaim on the parent must free everything).

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cg::{self, Scratch};
use crate::cgleak::{self, u64_at};
use crate::report::Outcome;
use crate::{Ctx, Env};

/// Live memcgs the scenario adds: 10 parents with 5 children each.
const LIVE_PARENTS: u64 = 10;
const LIVE_CHILDREN: u64 = 5;
/// Memcgs pinned by page cache in each round, and the file each one reads or writes.
const PINNED: u64 = 100;
const FILE_BYTES: u64 = 64 * 1024;
const LIMIT: u64 = 65535;

#[derive(Debug, Clone, Copy)]
struct Snap {
    live: u64,
    dying: u64,
    ids: u64,
    headroom: u64,
}

impl Snap {
    fn json(&self) -> Value {
        json!({ "live": self.live, "dying": self.dying, "ids_in_use": self.ids, "headroom": self.headroom })
    }
}

fn snap(ctx: &Ctx) -> Result<(Snap, Value)> {
    let r = cgleak::status(&ctx.cgleak)?;
    if r.code != 0 {
        bail!("cgleak status exited {}: {}", r.code, r.stderr);
    }
    let get = |p: &str| u64_at(&r.json, p).with_context(|| format!("cgleak status: {p} is not a number"));
    let s = Snap { live: get("/memcg/live")?, dying: get("/memcg/dying")?, ids: get("/memcg/ids_in_use")?, headroom: get("/memcg/headroom")? };
    Ok((s, r.json))
}

pub fn run(ctx: &Ctx, o: &mut Outcome) -> Result<()> {
    let files = ctx.data_dir.join(format!("cgleak-census-{}", std::process::id()));
    fs::create_dir_all(&files).with_context(|| format!("mkdir {}", files.display()))?;
    let r = pin_and_release(ctx, &files, o);
    // Only now: unlinking a file frees its page cache, which would release the pins early.
    let _ = fs::remove_dir_all(&files);
    r
}

fn pin_and_release(ctx: &Ctx, files: &Path, o: &mut Outcome) -> Result<()> {
    let guest = ctx.env == Env::Guest;
    // Host: others' cgroups come and go; 20% of a step (at least 10) is allowed.
    let tol = |n: u64| if guest { 0 } else { (n / 5).max(10) };
    let v = ctx.version;
    let mut s = Scratch::create(&ctx.mem_root, v, "census")?;

    let (base, base_json) = snap(ctx)?;
    o.measure("before", base.json());
    o.measure("dying_source", base_json.pointer("/memcg/dying_source").cloned().unwrap_or(Value::Null));
    o.measure("ids_in_use_confidence", base_json.pointer("/memcg/ids_in_use_confidence").cloned().unwrap_or(Value::Null));
    if guest {
        o.eq("live before == memcgs counted by the scenario", cg::count_memcgs(&ctx.mem_root, v), base.live);
    }

    // 1. Live memcgs.
    for i in 0..LIVE_PARENTS {
        s.child(&format!("l{i}"), true)?;
        for j in 0..LIVE_CHILDREN {
            s.child(&format!("l{i}/m{j}"), false)?;
        }
    }
    let added = LIVE_PARENTS * (1 + LIVE_CHILDREN);
    let (live, _) = snap(ctx)?;
    o.measure("after_mkdir", live.json());
    near(o, "live rose by the memcgs made", base.live + added, live.live, tol(added));
    if guest {
        o.eq("live == memcgs counted by the scenario", cg::count_memcgs(&ctx.mem_root, v), live.live);
    }
    // 6.1 .. 6.18 release IDs at offline (facts §1): IDs in use are the live memcgs.
    o.eq("era: dying memcgs hold IDs", false, ctx.era.dying_hold_ids);
    o.eq("ids_in_use == live", live.live, live.ids);
    o.eq("headroom == 65535 - ids_in_use", LIMIT - live.ids, live.headroom);

    // 2. Dying memcgs pinned by clean page cache (files read from inside each memcg).
    let pin_parent = s.child("pin", true)?;
    prepare_files(files, "r")?;
    pin_round(ctx, &pin_parent, "r", files, false)?;
    let usage = cg::usage(&pin_parent, v)?;
    o.measure("read_pinned_parent_usage_bytes", usage);
    o.that("parent's usage counts the dying children's page cache", usage >= PINNED * FILE_BYTES, usage);
    let want = base.dying + PINNED;
    let (ok, dying, _) = wait_dying(ctx, |d| d.abs_diff(want) <= tol(PINNED))?;
    o.measure("dying_read_pinned", dying);
    o.that(&format!("dying == {want} (before + pinned)"), ok, dying);
    let (after_pin, _) = snap(ctx)?;
    near(o, "live back to after_mkdir + pin parent", live.live + 1, after_pin.live, tol(added));
    let mut pinned_dying = dying;

    if guest {
        // 3. drop_caches frees clean page cache and with it the dying memcgs (host-wide: guest only).
        drop_caches()?;
        let (ok, dying, waited) = wait_dying(ctx, |d| d == base.dying)?;
        o.measure("dying_after_drop_caches", dying);
        o.measure("drop_caches_released_after_s", round1(waited.as_secs_f64()));
        o.that(&format!("drop_caches: dying back to {}", base.dying), ok, dying);
        o.measure("usage_after_drop_caches", cg::usage(&pin_parent, v)?);

        // Written files pin also the metadata pages their writer was first to touch.
        pin_round(ctx, &pin_parent, "w", files, true)?;
        let (ok, dying, _) = wait_dying(ctx, |d| d == want)?;
        o.that(&format!("write-pinned: dying == {want}"), ok, dying);
        drop_caches()?;
        let (_, left, _) = cg::poll(Duration::from_secs(5), Duration::from_millis(500), || match snap(ctx) {
            Ok((s, _)) => (s.dying == base.dying, s.dying),
            Err(_) => (true, u64::MAX),
        });
        o.measure("write_pinned_left_after_drop_caches", left.saturating_sub(base.dying));
        pinned_dying = left;
    }

    // 4. Reclaim on the live parent walks its dying children (facts §4).
    let (file, value) = if v == 1 { ("memory.force_empty", "0") } else { ("memory.reclaim", "1G") };
    match cg::write(&pin_parent.join(file), value) {
        Ok(()) => o.measure("reclaim_write", "ok"),
        // memory.reclaim: EAGAIN when less than asked could be reclaimed, which is always the case here.
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => o.measure("reclaim_write", "EAGAIN (short reclaim)"),
        Err(e) => bail!("write {value} to {}: {e}", pin_parent.join(file).display()),
    }
    o.measure("reclaim_file", file);
    let want = if guest { base.dying } else { pinned_dying.saturating_sub(PINNED) };
    let (ok, dying, waited) = wait_dying(ctx, |d| if guest { d == want } else { d <= want + tol(PINNED) })?;
    o.measure("dying_after_reclaim", dying);
    o.measure("reclaim_released_after_s", round1(waited.as_secs_f64()));
    o.that(&format!("{file} on the parent: dying back to {want}"), ok, dying);
    let usage = cg::usage(&pin_parent, v)?;
    o.measure("usage_after_reclaim", usage);
    o.that("parent's usage after reclaim below one file per pinned child", usage < PINNED * FILE_BYTES, usage);

    if guest {
        fix_reclaim(ctx, o, &pin_parent, files, base.dying)?;
    }

    let left = s.remove();
    o.that("scratch tree removed", left.is_empty(), json!(left));
    Ok(())
}

/// Step 5: `cgleak fix reclaim` releases read-pinned dying memcgs: v1 with drop_caches
/// (then its rate limit refuses a second drop), v2 with memory.reclaim on the parent in
/// rounds. Guest only: drop_caches is host-wide, and the released count must be exact.
fn fix_reclaim(ctx: &Ctx, o: &mut Outcome, pin_parent: &Path, files: &Path, base_dying: u64) -> Result<()> {
    prepare_files(files, "f")?;
    pin_round(ctx, pin_parent, "f", files, false)?;
    let want = base_dying + PINNED;
    let (ok, dying, _) = wait_dying(ctx, |d| d == want)?;
    o.that(&format!("fix reclaim: dying == {want} before"), ok, dying);
    let state = files.join("fix-state").display().to_string();
    let r = cgleak::run(&ctx.cgleak, &["fix", "reclaim", "--apply", "--yes", "--state-dir", &state])?;
    o.eq("fix reclaim exit code", 0, r.code);
    let steps = r.json.pointer("/result/details/steps").cloned().unwrap_or(Value::Null);
    o.measure("fix_reclaim_steps", steps.clone());
    let released: i64 = steps.as_array().map(|a| a.iter().filter_map(|s| s["released"].as_i64()).sum()).unwrap_or(0);
    o.eq("fix reclaim: released the pinned memcgs", PINNED as i64, released);
    let (after, _) = snap(ctx)?;
    o.eq("fix reclaim: dying back to before", base_dying, after.dying);
    if ctx.version == 1 {
        // Dying memcgs again (with none, there is nothing to do rather than a refusal).
        prepare_files(files, "g")?;
        pin_round(ctx, pin_parent, "g", files, false)?;
        let again = cgleak::run(&ctx.cgleak, &["fix", "reclaim", "--apply", "--yes", "--state-dir", &state])?;
        o.eq("fix reclaim again within --min-interval: refused (5)", 5, again.code);
    } else {
        let rounds = steps.as_array().map_or(0, Vec::len);
        o.that("fix reclaim v2: stopped at the first round that released nothing (before --max-rounds 8)", (1..8).contains(&rounds), rounds);
    }
    Ok(())
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn near(o: &mut Outcome, what: &str, want: u64, got: u64, tol: u64) {
    if tol == 0 {
        o.eq(what, want, got);
    } else {
        o.that(&format!("{what} ({want} +/- {tol})"), want.abs_diff(got) <= tol, got);
    }
}

fn sync() {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn drop_caches() -> Result<()> {
    sync();
    cg::write_ctx(Path::new("/proc/sys/vm/drop_caches"), "3")
}

/// Files `<prefix><i>` written from here (our own memcg) and evicted again, so that the
/// reader in each scratch memcg is the one charged for their page cache.
fn prepare_files(dir: &Path, prefix: &str) -> Result<()> {
    let data = vec![0x5a; FILE_BYTES as usize];
    for i in 0..PINNED {
        let p: PathBuf = dir.join(format!("{prefix}{i}"));
        fs::write(&p, &data).with_context(|| format!("write {}", p.display()))?;
        let f = fs::File::open(&p)?;
        f.sync_all()?;
        // SAFETY: a valid fd; offset 0 and length 0 mean the whole file.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    Ok(())
}

/// PINNED memcgs `<prefix><i>` under `parent`; one helper process visits each and reads
/// (or writes) its file there; then the memcgs are removed and become dying.
fn pin_round(ctx: &Ctx, parent: &Path, prefix: &str, files: &Path, write: bool) -> Result<()> {
    for i in 0..PINNED {
        let dir = parent.join(format!("{prefix}{i}"));
        fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    }
    let mut cmd = Command::new(&ctx.self_exe);
    cmd.arg("pin").arg("--parent").arg(parent).args(["--prefix", prefix, "--count", &PINNED.to_string()]);
    cmd.arg("--dir").arg(files).args(["--bytes", &FILE_BYTES.to_string()]);
    if write {
        cmd.arg("--write");
    }
    let st = cmd.status().context("run cgleak-guest pin")?;
    if !st.success() {
        bail!("cgleak-guest pin under {} failed: {st}", parent.display());
    }
    for i in 0..PINNED {
        let dir = parent.join(format!("{prefix}{i}"));
        cg::rmdir(&dir).with_context(|| format!("rmdir {}", dir.display()))?;
    }
    sync();
    Ok(())
}

/// Poll cgleak's dying count until `done` says so (dying memcgs are freed asynchronously).
fn wait_dying(ctx: &Ctx, done: impl Fn(u64) -> bool) -> Result<(bool, u64, Duration)> {
    let mut err = None;
    let (ok, d, waited) = cg::poll(Duration::from_secs(20), Duration::from_millis(250), || match snap(ctx) {
        Ok((s, _)) => (done(s.dying), s.dying),
        Err(e) => {
            err = Some(e);
            (true, 0)
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok((ok, d, waited))
}
