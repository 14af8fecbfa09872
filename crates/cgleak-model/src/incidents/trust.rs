//! Which log lines may count as evidence that the node ran out of memcgs.
//!
//! The words of a failed memcg mkdir are plain text: any program can print them, and a
//! tenant's container output reaches journald (a runtime's journald log driver, a pod
//! writing to /dev/log) and syslog. Only the programs that create pod cgroups or report on
//! them are believed: the kubelet, the container runtimes (containerd, dockerd, cri-o, runc,
//! crun), systemd and the kernel. Who wrote a line is taken from what its source vouches
//! for, never from the message: journald's own fields about the sender, the facility of a
//! /dev/kmsg record, a file that one program alone writes, or else the line's syslog tag.
//! A line from any other program, or whose writer cannot be told, is an untrusted
//! incident: reported with the reason, never counted toward a verdict.

use cgleak_readers::logline::{JournalOrigin, LineMeta, Origin};

use super::text::{self, Envelope};

/// What a trusted line is believed to be, or why an untrusted one is not.
pub(crate) type Judgement = Result<String, String>;

/// The programs whose lines count, by the names they log under: a syslog tag, `_COMM`, or a
/// systemd unit without `.service`.
pub(crate) fn trusted_program(name: &[u8]) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    let n = lower.strip_suffix(b".service").unwrap_or(&lower);
    Some(match n {
        b"kubelet" | b"hyperkube" | b"kubelet-wrapper" => "kubelet",
        b"containerd" => "containerd",
        b"dockerd" | b"docker" => "dockerd",
        b"crio" | b"cri-o" => "crio",
        b"runc" => "runc",
        // cri-o's default runtime on RHEL 9 and Fedora: runc's role.
        b"crun" => "crun",
        b"systemd" => "systemd",
        // PID 1 logs from init.scope.
        b"init.scope" => "systemd",
        b"kernel" => "kernel",
        _ => return None,
    })
}

const NOT_TRUSTED: &str = "not kubelet, a container runtime, systemd or the kernel";

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A journald field's value in a reason: the sender may have chosen it (a container's name,
/// its cgroup's), so it is cut to 128 characters and control characters are shown as `?`.
fn field(v: &str) -> String {
    v.chars().take(128).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A cgroup of a pod or container: a sender there is a tenant's process, whatever it calls itself.
fn container_cgroup(cg: &str) -> bool {
    ["kubepods", "/docker/", "/docker-", "cri-containerd-", "/crio-", "libpod-", "/lxc/", "/lxc.payload", "machine.slice"].iter().any(|p| cg.contains(p))
}

/// Judge one line: Ok(how its writer is known) when it may count, Err(why not).
pub(crate) fn judge(meta: &LineMeta, env: &Envelope<'_>, line: &[u8]) -> Judgement {
    match &meta.origin {
        Origin::Journal(j) => journal(j),
        Origin::Kmsg { facility: 0 } => Ok("the kernel (/dev/kmsg)".into()),
        Origin::Kmsg { facility } => {
            let tag = text::leading_tag(env.msg);
            match tag.and_then(trusted_program) {
                Some(_) => Ok(format!("{} wrote it to /dev/kmsg (facility {facility})", lossy(tag.unwrap_or_default()))),
                None => Err(format!("written to /dev/kmsg by a user-space program (facility {facility}, {}): {NOT_TRUSTED}", tag.map_or("no tag".into(), |t| format!("tag {}", lossy(t))))),
            }
        }
        Origin::Text | Origin::FileOf(_) => {
            if env.cri {
                return Err("a container's output (CRI log format: <time> stdout|stderr F|P): what a tenant prints is never evidence".into());
            }
            if let Some(tag) = env.tag {
                return match trusted_program(tag) {
                    Some(_) => Ok(format!("syslog tag {}", lossy(tag))),
                    None => Err(format!("syslog tag {}: {NOT_TRUSTED}", lossy(tag))),
                };
            }
            if let Origin::FileOf(program) = meta.origin {
                return Ok(format!("{program}'s own log file"));
            }
            if memchr::memmem::find(line, b"FailedCreatePodContainer").is_some() || memchr::memmem::find(line, b"  kubelet, ").is_some() {
                return Err("a copy of a kubectl describe event: its From column is text anyone can write, not the kubelet's log".into());
            }
            Err("no syslog tag: the program that wrote the line cannot be told".into())
        }
    }
}

/// journald: the fields it records about the sender, never the sender's own words.
fn journal(j: &JournalOrigin) -> Judgement {
    if let Some(c) = &j.container {
        return Err(format!("journald: output of container {} (CONTAINER_NAME/CONTAINER_ID: relayed by a runtime's journald log driver)", field(c)));
    }
    if j.transport.as_deref() == Some("kernel") {
        let facility = j.facility.unwrap_or(0);
        if facility == 0 {
            return Ok("journald: the kernel (_TRANSPORT=kernel)".into());
        }
        let id = field(j.identifier.as_deref().unwrap_or("no identifier"));
        return match trusted_program(id.as_bytes()) {
            Some(_) => Ok(format!("journald: {id} wrote it to /dev/kmsg (facility {facility})")),
            None => Err(format!("journald: written to /dev/kmsg by a user-space program ({id}, facility {facility}): {NOT_TRUSTED}")),
        };
    }
    if let Some(cg) = j.cgroup.as_deref().filter(|cg| container_cgroup(cg)) {
        return Err(format!("journald: sent from a container's cgroup ({})", field(cg)));
    }
    let comm = j.comm.as_deref().map(field);
    if let Some(unit) = &j.unit {
        let unit = field(unit);
        return match trusted_program(unit.as_bytes()) {
            Some(_) => Ok(format!("journald: _SYSTEMD_UNIT={unit}")),
            None => Err(format!("journald: unit {unit}{}: {NOT_TRUSTED}", comm.map(|c| format!(" (_COMM={c})")).unwrap_or_default())),
        };
    }
    match comm {
        Some(c) if trusted_program(c.as_bytes()).is_some() => Ok(format!("journald: _COMM={c}")),
        Some(c) => Err(format!("journald: program {c} (_COMM): {NOT_TRUSTED}")),
        None => Err("journald: the entry names no sender (no _COMM, no _SYSTEMD_UNIT)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_line(line: &str) -> Judgement {
        let meta = LineMeta::default();
        judge(&meta, &text::envelope(line.as_bytes()), line.as_bytes())
    }

    fn entry(f: impl FnOnce(&mut JournalOrigin)) -> Judgement {
        let mut j = JournalOrigin { transport: Some("stdout".into()), ..JournalOrigin::default() };
        f(&mut j);
        let meta = LineMeta { origin: Origin::Journal(j), ..LineMeta::default() };
        judge(&meta, &text::envelope(b"x"), b"x")
    }

    #[test]
    fn syslog_tags() {
        assert_eq!(text_line("Dec  2 10:00:00 node kubelet[123]: mkdir x"), Ok("syslog tag kubelet".into()));
        assert_eq!(text_line("Dec  2 10:00:00 node kernel: SLUB: x"), Ok("syslog tag kernel".into()));
        for t in ["containerd", "dockerd", "crio", "runc", "systemd", "hyperkube"] {
            assert!(text_line(&format!("Dec  2 10:00:00 node {t}[1]: x")).is_ok(), "{t}");
        }
        for t in ["myapp", "nomad", "mkdir", "tail", "docker/3f1e9a7c5b2d", "cadvisor", "kubelet-impostor"] {
            let e = text_line(&format!("Dec  2 10:00:00 node {t}[99]: x")).unwrap_err();
            assert!(e.starts_with(&format!("syslog tag {t}: not kubelet")), "{e}");
        }
        assert_eq!(text_line("<30>1 2023-12-22T08:00:00Z node-1 kubelet 1146 - - E1222 x"), Ok("syslog tag kubelet".into()));
        assert!(text_line("<30>1 2023-12-22T08:00:00Z node-1 myapp 1146 - - E1222 x").is_err());
    }

    #[test]
    fn lines_without_a_writer() {
        assert!(text_line("E1222 08:00:00.498519 1146 pod_workers.go:1300] mkdir x").unwrap_err().starts_with("no syslog tag"));
        assert!(text_line("  Warning  FailedCreatePodContainer  25s  kubelet, 10.0.0.1  mkdir x").unwrap_err().contains("kubectl describe"));
        assert!(text_line("2022-05-26T10:05:11.006685543+03:00 stderr F mkdir x").unwrap_err().starts_with("a container's output"));
        // A tenant printing a syslog-looking line: the CRI prefix wins.
        assert!(text_line("2022-05-26T10:05:11Z stdout F Dec  2 10:00:00 node kubelet[1]: mkdir x").is_err());
        let own = LineMeta { origin: Origin::FileOf("kubelet"), ..LineMeta::default() };
        let l = b"E1222 08:00:00.498519 1146 pod_workers.go:1300] mkdir x";
        assert_eq!(judge(&own, &text::envelope(l), l), Ok("kubelet's own log file".into()));
        // Even in the kubelet's file, a tag names another writer.
        let l = b"Dec  2 10:00:00 node myapp[9]: mkdir x";
        assert!(judge(&own, &text::envelope(l), l).is_err());
    }

    #[test]
    fn journald_fields() {
        assert_eq!(entry(|j| j.unit = Some("kubelet.service".into())), Ok("journald: _SYSTEMD_UNIT=kubelet.service".into()));
        assert_eq!(entry(|j| j.unit = Some("init.scope".into())), Ok("journald: _SYSTEMD_UNIT=init.scope".into()));
        let e = entry(|j| {
            j.unit = Some("myapp.service".into());
            j.comm = Some("kubelet".into());
        });
        assert_eq!(e, Err("journald: unit myapp.service (_COMM=kubelet): not kubelet, a container runtime, systemd or the kernel".into()));
        assert_eq!(entry(|j| j.comm = Some("containerd".into())), Ok("journald: _COMM=containerd".into()));
        assert!(entry(|j| j.comm = Some("myapp".into())).unwrap_err().starts_with("journald: program myapp (_COMM)"));
        assert!(entry(|_| {}).unwrap_err().contains("names no sender"));
        // The identifier is the sender's own word: never enough.
        assert!(entry(|j| j.identifier = Some("kubelet".into())).is_err());
        // docker's journald log driver: dockerd's unit, a container's words.
        let e = entry(|j| {
            j.unit = Some("docker.service".into());
            j.comm = Some("dockerd".into());
            j.container = Some("web-1".into());
        });
        assert!(e.unwrap_err().starts_with("journald: output of container web-1"));
        let e = entry(|j| {
            j.comm = Some("kubelet".into());
            j.cgroup = Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podx.slice/cri-containerd-abc.scope".into());
        });
        assert!(e.unwrap_err().starts_with("journald: sent from a container's cgroup"));
        // What a sender chose is cut short and shown without its control characters.
        let e = entry(|j| j.comm = Some(format!("x\x1b[2J{}", "y".repeat(500)))).unwrap_err();
        assert!(e.starts_with("journald: program x?[2Jyyy") && !e.contains('\x1b') && e.len() < 250, "{e}");
        assert_eq!(entry(|j| j.transport = Some("kernel".into())), Ok("journald: the kernel (_TRANSPORT=kernel)".into()));
        let e = entry(|j| {
            j.transport = Some("kernel".into());
            j.facility = Some(1);
            j.identifier = Some("myapp".into());
        });
        assert!(e.unwrap_err().contains("user-space program (myapp, facility 1)"));
    }

    #[test]
    fn kmsg_facility() {
        let k = |facility: u8, msg: &[u8]| judge(&LineMeta { origin: Origin::Kmsg { facility }, ..LineMeta::default() }, &text::envelope(msg), msg);
        assert_eq!(k(0, b"SLUB: Unable to allocate memory"), Ok("the kernel (/dev/kmsg)".into()));
        assert_eq!(k(3, b"systemd[1]: x.slice: Failed to create cgroup"), Ok("systemd wrote it to /dev/kmsg (facility 3)".into()));
        assert!(k(1, b"myapp[9]: mkdir x").unwrap_err().contains("tag myapp"));
        assert!(k(1, b"mkdir /sys/fs/cgroup/memory/x: no space left on device").unwrap_err().contains("no tag"));
    }
}
