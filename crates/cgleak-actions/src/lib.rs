//! Action layer of cgleak: things that change the host. Each action takes its
//! paths as parameters (so a test points it at a temp tree), prints nothing and
//! leaves the host as it found it on every path out, panics included.

pub mod cgroup_tree;
pub mod fix;
pub mod lab;
pub mod probe;

/// A duration as users write it: `1h`, `30m`, `90s`, `1h30m`.
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}
