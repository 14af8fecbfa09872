//! move-charge: does v1 memory.move_charge_at_immigrate still move a task's charges,
//! and does the era model say so (facts §5: works before 6.3, deprecated with a warning
//! 6.3 .. 6.12, EINVAL from 6.13)?

use std::io::BufReader;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use serde_json::json;

use crate::cg::{self, Scratch};
use crate::report::Outcome;
use crate::{read_line, Ctx, Env};

const ANON_BYTES: u64 = 16 << 20;
const FILE_BYTES: u64 = 2 << 20;

pub fn run(ctx: &Ctx, o: &mut Outcome) -> Result<()> {
    let model = ctx.era.move_charge.as_str();
    o.measure("era_model", model);
    if ctx.version == 2 {
        let mut why = "memory.move_charge_at_immigrate is a cgroup v1 file and the memory controller is on v2 here".to_string();
        if ctx.env == Env::Guest && !ctx.era.release.at_least(6, 3, 0) {
            why.push_str("; exercised in the v1 guest of the same kernel");
        } else if ctx.env == Env::Guest {
            // Can this kernel mount v1 memory at all? (Debian's 6.12: CONFIG_MEMCG_V1 is off.)
            let r = try_mount_v1_memory();
            o.measure("v1_memory_mount", r.clone());
            if r != "ok" {
                why.push_str(&format!("; this kernel cannot mount a v1 memory hierarchy ({r}), so the behaviour cannot be measured"));
            }
        }
        o.skip(why);
        return Ok(());
    }

    let s = Scratch::create(&ctx.mem_root, 1, "move")?;
    let src = s.child("src", false)?;
    let dst = s.child("dst", false)?;
    let knob = dst.join("memory.move_charge_at_immigrate");
    o.measure("initial_value", cg::read_u64(&knob)?);
    let write = match cg::write(&knob, "3") {
        Ok(()) => "ok".to_string(),
        Err(e) => cg::errno_name(&e),
    };
    o.measure("write_3", write.clone());
    o.measure("read_back", cg::read_u64(&knob)?);

    let file = ctx.data_dir.join(format!("cgleak-move-{}", std::process::id()));
    let mut child = Command::new(&ctx.self_exe)
        .args(["hold", "--procs"])
        .arg(src.join("cgroup.procs"))
        .args(["--anon-bytes", &ANON_BYTES.to_string(), "--file"])
        .arg(&file)
        .args(["--file-bytes", &FILE_BYTES.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn cgleak-guest hold")?;
    let result = (|| -> Result<(u64, u64, u64, u64)> {
        let mut out = BufReader::new(child.stdout.take().context("child stdout")?);
        let ready = read_line(&mut out)?;
        anyhow::ensure!(ready == "ready", "hold child said {ready:?}");
        let before = (cg::usage(&src, 1)?, cg::usage(&dst, 1)?);
        // Only a process this scenario started is moved.
        cg::write_ctx(&dst.join("cgroup.procs"), &child.id().to_string())?;
        let after = (cg::usage(&src, 1)?, cg::usage(&dst, 1)?);
        Ok((before.0, before.1, after.0, after.1))
    })();
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_file(&file);
    let (src0, dst0, src1, dst1) = result?;
    o.measure("usage_before", json!({ "src": src0, "dst": dst0 }));
    o.measure("usage_after", json!({ "src": src1, "dst": dst1 }));
    let moved = dst1.saturating_sub(dst0);
    o.measure("moved_bytes", moved);
    let log = cg::kernel_log();
    let warning = log.lines().rev().find(|l| l.contains("move_charge_at_immigrate")).map(|l| l.trim().to_string());
    o.measure("kernel_warning", warning.clone());

    // Three quarters of the anonymous memory is a clear move (the rest is the child's own page tables, stack, ...).
    let charges_moved = moved >= ANON_BYTES * 3 / 4;
    let measured = match (write.as_str(), charges_moved, warning.is_some()) {
        ("EINVAL", false, _) => "einval",
        ("ok", true, false) => "works",
        ("ok", true, true) => "deprecated",
        ("ok", false, _) => "write accepted but charges did not move",
        _ => "unexpected",
    };
    o.measure("measured", measured);
    o.eq("behaviour measured == era model (kernel.move_charge)", model.to_string(), measured.to_string());
    if measured == "einval" {
        o.that("6.13+: the file reads 0", cg::read_u64(&knob)? == 0, cg::read_u64(&knob)?);
        o.that("6.13+: charges stay in the source", src1 + ANON_BYTES / 2 >= src0, json!({ "src_before": src0, "src_after": src1 }));
    }
    Ok(())
}

fn try_mount_v1_memory() -> String {
    let dir = Path::new("/tmp/cgleak-v1-memory");
    let _ = std::fs::create_dir_all(dir);
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, target, fstype, data) = (c("none"), c("/tmp/cgleak-v1-memory"), c("cgroup"), c("memory"));
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, data.as_ptr().cast()) };
    if r == 0 {
        // SAFETY: as above.
        unsafe { libc::umount(target.as_ptr()) };
        "ok".into()
    } else {
        format!("mount -t cgroup -o memory: {}", cg::errno_name(&std::io::Error::last_os_error()))
    }
}
