//! The `cgleak` command line: the front end over the model and action layers.

mod agent;
mod args;
mod build_info;
mod cmd_agent;
mod cmd_check;
mod cmd_dying;
mod cmd_fix;
mod cmd_lab;
mod cmd_logs;
mod cmd_probe;
mod cmd_status;
mod docs;
mod evidence;
mod exit;
mod host_change;
mod metrics;
mod render;
mod static_nss;
#[cfg(test)]
mod testing;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::args::{GlobalArgs, OutputArg};

const AFTER_HELP: &str = "\
Exit codes:
  0   healthy (check), success (status, probe)
  1   runtime error (a file could not be read, ...)
  2   usage error (bad flag or value)
  3   at_risk or leaking (check); incidents found (logs)
  4   exhausted: no memcg ID left (check; probe when mkdir fails for lack of IDs)
  5   fix: refused, nothing changed (a kubelet runs, rate limit, unfinished or unreadable journal,
      a journal or state directory that cannot be trusted, not confirmed)
  75  fix: another fixer holds the lock (or use --wait)
  77  not permitted (run as root, or mount the host with --host-root)
  130 interrupted by SIGINT or SIGTERM (probe cleans up first)

Examples:
  cgleak status                       census of memory cgroups on this host
  cgleak check --output json          verdict, findings and remedies as JSON
  cgleak probe --count 500            prove 500 memcgs can still be created
  cgleak logs                         failed memcg creations in the host's logs
  cgleak fix gc                       the plan to remove orphaned pod cgroups (--apply does it)
  cgleak --host-root /host status     from a container with the host's / at /host";

#[derive(Parser, Debug)]
#[command(name = "cgleak", version = build_info::version(), about = "Find and explain memory-cgroup (memcg) leaks and ID exhaustion on Linux and Kubernetes nodes", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Census of memcgs: live, dying, IDs in use, headroom, kmem, slab, kubepods.
    #[command(after_help = "Examples:\n  cgleak status\n  cgleak status --output json | jq .memcg.headroom\n  cgleak status --dying --output json | jq .dying_pinned_bytes\n  cgleak status --history\n  cgleak status --history --ascii --width 72\n  cgleak --host-root /host status")]
    Status(cmd_status::StatusArgs),
    /// Verdict (healthy, at_risk, leaking, exhausted) with evidence and ranked remedies.
    #[command(after_help = "Exit codes: 0 healthy, 3 at_risk or leaking, 4 exhausted, 1 error, 2 usage, 77 not permitted.\n  --npd (node-problem-detector plugin): 0 OK, 1 problem, 2 unknown (any error).\n  --reboot-required (kured sentinel): 0 only a reboot helps, 1 no reboot needed, 2 error.\n\nExamples:\n  cgleak check\n  cgleak check --output json | jq -r .verdict\n  cgleak check --npd --host-root /host\n  kured --reboot-sentinel-command=\"/usr/local/bin/cgleak check --reboot-required\"\n    (kured runs it in the host's mount namespace: the host's path, no --host-root)")]
    Check(cmd_check::CheckArgs),
    /// Name every dying memcg (removed, still in memory), its pod, and what pins it.
    #[command(after_help = "Sources, first that answers: the BPF walk of the kernel's memcgs (6.1+ with BTF, root; not with --no-bpf), \
the agent's memory of memcgs that went (<state-dir>), per-memcg slab cache names (3.10 .. 5.8 with kmem accounting: the cgroup's name only, \
not its parents). JSON keys: schema_version, method (bpf, agent_memory, slab_names, none), bpf_unavailable, total, named, shown, sort, \
pinned_bytes_total, dying[] of {path, pod_uid, container_id, qos, pinned_bytes, file_bytes, kmem_bytes, swap_bytes, offline_seconds, \
holds_id, source}, pods[], reclaim, notes.\n\nExit codes: 0 done, 1 error, 2 usage, 77 not permitted.\n\nExamples:\n  \
cgleak dying\n  cgleak dying --top 5 --sort age\n  cgleak dying --output json | jq '.dying[] | {path, pod_uid, pinned_bytes}'\n  \
cgleak dying --no-bpf --state-dir /var/lib/cgleak/agent\n  cgleak --host-root /host dying --output json")]
    Dying(cmd_dying::DyingArgs),
    /// Create and remove N memcgs under a scratch parent to prove headroom (or, with --to-limit, measure it exactly).
    #[command(after_help = "--to-limit creates memcgs until mkdir fails for lack of IDs and removes them at once: the headroom is \
the memcgs created plus the scratch parent (it took an ID too), exact where /proc/cgroups cannot count the IDs held (3.10, el7). \
While the ID space is full no pod can start on the node: the report says for how long (no_free_id_ms).\n\n\
Exit codes: 0 all N created and removed (--to-limit: the limit met, headroom measured, everything removed), \
4 mkdir failed for lack of IDs (ENOSPC, ENOMEM or EBUSY; --to-limit: the ID space was full already, headroom 0), \
1 other error (--to-limit: no limit met, or something left over), 2 usage (--to-limit without --force), \
77 not permitted, 130 interrupted (everything removed first).\n\nExamples:\n  cgleak probe\n  cgleak probe --count 2000 --output json\n  \
cgleak probe --to-limit --force --output json | jq .headroom")]
    Probe(cmd_probe::ProbeArgs),
    /// Simulated node: real runc pods in a kubelet-style tree, churned so deleted pods leave dying memcgs.
    #[command(after_help = "Builds <memory root>/cgleak-lab-<pid>/kubepods/{pod<uid>,burstable/pod<uid>,besteffort/pod<uid>}/<id> \
with real containers (runc or crun, busybox-static root) that write page cache, deletes the oldest pod and \
creates a new one --pods-per-minute times a minute, and removes everything (in every cgroup hierarchy) at the \
end of --duration or on Ctrl-C. Refuses to run beside a kubelet (unless --force) or to take the host past \
5000 memcgs, live and dying.\n\nExit codes: 0 done and removed, 130 stopped by SIGINT/SIGTERM and removed, \
1 error or something left over (listed), 2 usage, 77 not permitted.\n\nExamples:\n  cgleak lab\n  \
cgleak lab --pods 6 --pods-per-minute 120 --duration 90s\n  cgleak lab --orphan-every 5 --duration 10m --output json\n  \
cgleak status --kubelet-root-dir /run/cgleak-lab-<pid>/kubelet   (from another shell, while it runs)")]
    Lab(cmd_lab::LabArgs),
    /// Find failed memcg creations (and per-memcg slab and inotify failures) in the node's logs, and explain them.
    #[command(after_help = "With no FILE, --journal or --kmsg: the host's usual logs under --host-root \
(/var/log/messages*, syslog*, kern.log*, daemon.log*, kubelet.log*, rotated and .gz generations included), \
journald (when journalctl and a journal are there) and /dev/kmsg (when present); the report says which were read, and which could not be.\n\n\
--output jsonl prints one incident per line as it is found, with the keys kind, errno (ENOSPC, ENOMEM, EBUSY or null), \
component, time, host, cgroup_path, pod_uid, container_id, source, line (1-based in its source) and raw.\n\n\
Exit codes: 0 no incident, 3 incidents found, 1 error (a named source could not be read), 2 usage.\n\nExamples:\n  \
cgleak logs\n  cgleak logs /var/log/messages* --since 2d\n  cgleak logs '/var/log/kubelet.log*' --output jsonl | jq -r .pod_uid\n  \
journalctl -u kubelet --since today | cgleak logs -\n  cgleak logs --journal --kmsg --follow\n  cgleak --host-root /host logs --since 1h --output json")]
    Logs(cmd_logs::LogsArgs),
    /// Daemon: the census every --interval, a Prometheus endpoint, log incidents, the forecast, and Kubernetes reporting.
    #[command(after_help = "Serves GET and HEAD on /metrics (Prometheus text format), /healthz (200 while the last census \
is recent, 503 otherwise: readiness) and /livez (200 while the agent serves: liveness) on --listen; HTTPS with --tls-cert \
and --tls-key, a bearer token on all but /healthz and /livez with --auth-token-file. The history of IDs in use is kept in <state-dir>/agent-history.jsonl \
(<host-root>/var/lib/cgleak/agent unless --state-dir says; an old /var/lib/cgleak/agent-history.jsonl is read too), \
which `status` and `check` read for the exhaustion forecast. Stops on SIGINT or SIGTERM with exit 0.\n\n\
Examples:\n  cgleak agent\n  cgleak agent --interval 1m --listen 0.0.0.0:9977\n  \
cgleak agent --listen \"$POD_IP:9977\" --tls-cert tls.crt --tls-key tls.key --auth-token-file token\n  \
cgleak --host-root /host agent --listen \"$POD_IP:9977\" --kubernetes --taint --taint-headroom-below 3277")]
    Agent(cmd_agent::AgentArgs),
    /// Apply a remedy: reclaim, gc, migrate, nokmem, reboot. Plans first; --apply executes under a crash-safe journal.
    #[command(after_help = "Without --apply a fix prints its plan (every cgroup it touches, every file it writes, \
what it expects to gain) and changes nothing. With --apply (and --yes, or a yes at the prompt) it runs the plan's \
steps, journaled in <state-dir>/fix-journal.jsonl (fsync'd intent before each step, completion after), under an \
exclusive lock (<state-dir>/fix.lock); the state dir is <host-root>/var/lib/cgleak/fix unless --state-dir says, and \
must be root's alone (no symlink on its way, not writable by group or others). After a crash or kill, \
`cgleak fix --resume` shows what is left of the fix, checked against this host (a journal is data: it carries out only \
what cgleak's planner would do here), and finishes it after a yes (or --yes), or with --rollback undoes it where it can \
be undone; no new fix starts while one is unfinished. `cgleak fix --discard-journal` sets an unfinished or unreadable \
journal aside into <state-dir>/fix-journals/ and changes nothing on the host.\n\n\
Exit codes: 0 done (or the plan shown), 1 a step failed (rolled back, or unfinished: see --resume), 2 usage, \
5 refused (nothing changed; a refused plan exits 5 without --apply too), 75 another fixer runs, 77 not permitted, 130 interrupted (rolled back or finished first).\n\n\
Examples:\n  cgleak fix gc\n  cgleak fix gc --apply --yes\n  cgleak fix reclaim --apply\n  \
cgleak fix migrate --cgroup kubepods --apply --yes\n  cgleak fix nokmem --output json\n  cgleak fix reboot --apply --yes\n  \
cgleak fix --resume --yes\n  cgleak fix --resume --rollback\n  cgleak fix --discard-journal")]
    Fix(cmd_fix::FixArgs),
    /// Print a shell completion script (bash, zsh or fish) to stdout.
    #[command(after_help = "Examples:\n  cgleak completions bash > /etc/bash_completion.d/cgleak\n  \
cgleak completions zsh > \"${fpath[1]}/_cgleak\"\n  cgleak completions fish > ~/.config/fish/completions/cgleak.fish")]
    Completions(docs::CompletionsArgs),
    /// Print the manual page (roff) to stdout; --dir writes one page per command instead.
    #[command(after_help = "Examples:\n  cgleak man | man -l -\n  cgleak man > /usr/local/share/man/man1/cgleak.1\n  \
cgleak man --dir /usr/local/share/man/man1")]
    Man(docs::ManArgs),
}

fn main() -> ExitCode {
    static_nss::confine_to_builtin_services();
    exit::on_stdout_failure();
    let mut cli = Cli::parse();
    cli.global.resolve_output();
    if cli.global.output_arg == OutputArg::Jsonl && !matches!(cli.command, Command::Logs(_)) {
        eprintln!("cgleak: --output jsonl is for `cgleak logs` only; use --output json");
        return ExitCode::from(exit::USAGE);
    }
    // The zone of zone-less log times, for every command that reads logs.
    let host = cgleak_readers::HostPaths::new(&cli.global.host_root);
    match cli.global.log_timezone.as_deref().map(|z| cgleak_readers::logs::clock::zone_named(&host, z)) {
        Some(Ok(tz)) => cgleak_readers::logs::clock::set_log_timezone(tz),
        Some(Err(e)) => {
            eprintln!("cgleak: {e}");
            return ExitCode::from(exit::USAGE);
        }
        None => {
            if let Some(tz) = cgleak_readers::logs::clock::host_zone(&host) {
                cgleak_readers::logs::clock::set_log_timezone(tz);
            }
        }
    }
    let r = match &cli.command {
        Command::Status(a) => cmd_status::run(&cli.global, a),
        Command::Check(a) => cmd_check::run(&cli.global, a),
        Command::Dying(a) => cmd_dying::run(&cli.global, a),
        Command::Probe(a) => cmd_probe::run(&cli.global, a),
        Command::Lab(a) => cmd_lab::run(&cli.global, a),
        Command::Logs(a) => cmd_logs::run(&cli.global, a),
        Command::Agent(a) => cmd_agent::run(&cli.global, a),
        Command::Fix(a) => cmd_fix::run(&cli.global, a),
        Command::Completions(a) => docs::completions(<Cli as clap::CommandFactory>::command(), a),
        Command::Man(a) => docs::man(<Cli as clap::CommandFactory>::command(), a),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("cgleak: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
