//! The agent's OCI image (`cargo xtask image`): a valid image layout (every digest and size
//! right, the dist binary at /usr/local/bin/cgleak, the commit in its labels), and the agent
//! run from it the way the DaemonSet runs it: unpacked by umoci (a real OCI tool), started
//! by runc with a read-only root, the host's `/` at `/host` read-only and the host's PID
//! namespace, in a cgroup under the test's scratch parent; its /metrics is scraped on
//! loopback and must count this host's memcgs, promtool must accept it, and a real
//! Prometheus must scrape it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use common::agent::{free_port, scrape, wait_for, Prometheus};
use common::kernel::{assert_root, describe, find_program, ScratchCgroup};
use common::prom::{assert_promtool_accepts, sample};
use common::runc::{tools, Runc};

/// `cargo xtask image` once per test binary: (layout, tag).
fn image() -> &'static (PathBuf, String) {
    static IMAGE: OnceLock<(PathBuf, String)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let child = {
            let _lock = cgleak_fixtures::exec_lock();
            Command::new(&cargo).args(["xtask", "image"]).current_dir(&workspace).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn cargo xtask image")
        };
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "cargo xtask image: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        let field = |name: &str| stdout.lines().find_map(|l| l.strip_prefix(name).map(str::trim)).unwrap_or_else(|| panic!("no {name} line: {stdout}")).to_string();
        (PathBuf::from(field("layout")), field("tag"))
    })
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// The blob of a descriptor, checked against its digest and size.
fn blob(layout: &Path, desc: &Value) -> PathBuf {
    let digest = desc["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let p = layout.join("blobs/sha256").join(hex);
    let out = Command::new("sha256sum").arg(&p).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).split_whitespace().next(), Some(hex), "{}", p.display());
    assert_eq!(fs::metadata(&p).unwrap().len(), desc["size"].as_u64().unwrap(), "{digest} size");
    p
}

#[test]
fn image_layout_holds_the_dist_binary_and_names_its_commit() {
    let (layout, tag) = image();
    assert_eq!(tag, env!("CARGO_PKG_VERSION"));
    assert_eq!(read_json(&layout.join("oci-layout"))["imageLayoutVersion"], "1.0.0");
    let index = read_json(&layout.join("index.json"));
    let desc = &index["manifests"][0];
    assert_eq!(desc["annotations"]["org.opencontainers.image.ref.name"], tag.as_str());
    let manifest = read_json(&blob(layout, desc));
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let config = read_json(&blob(layout, &manifest["config"]));
    assert_eq!(config["config"]["Entrypoint"], json!(["/usr/local/bin/cgleak"]));
    assert_eq!(config["architecture"], "amd64");
    let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
    assert_eq!(config["config"]["Labels"]["org.opencontainers.image.revision"], String::from_utf8_lossy(&head.stdout).trim());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let layer = blob(layout, &layers[0]);
    let list = Command::new("tar").arg("-tvzf").arg(&layer).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    let bin = list.lines().find(|l| l.ends_with(" usr/local/bin/cgleak")).unwrap_or_else(|| panic!("no usr/local/bin/cgleak in the layer:\n{list}"));
    assert!(bin.starts_with("-rwxr-xr-x root/root") || bin.starts_with("-rwxr-xr-x 0/0"), "{bin}");
    for d in ["host/", "proc/", "sys/", "dev/", "tmp/"] {
        assert!(list.lines().any(|l| l.ends_with(&format!(" {d}"))), "no {d} mount point:\n{list}");
    }
    // The same binary as `cargo xtask dist`'s.
    let dist = common::dist::dist_binary();
    let x = Command::new("tar").arg("-xzOf").arg(&layer).arg("usr/local/bin/cgleak").output().unwrap();
    assert_eq!(x.stdout.len() as u64, dist.size, "the image's binary is the dist binary");
    // The diff ID is the uncompressed layer's digest.
    let raw = Command::new("sh").arg("-c").arg(format!("gzip -dc {} | sha256sum", layer.display())).output().unwrap();
    let diff = format!("sha256:{}", String::from_utf8_lossy(&raw.stdout).split_whitespace().next().unwrap());
    assert_eq!(config["rootfs"]["diff_ids"][0], diff.as_str());
}

/// Kills and deletes the container however the test ends.
struct Container<'r> {
    runc: &'r Runc,
    id: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.runc.cmd().args(["kill", &self.id, "KILL"]).output();
        let _ = self.runc.cmd().args(["delete", "--force", &self.id]).output();
    }
}

#[test]
fn real_kernel_agent_runs_from_the_image_under_runc_and_serves_metrics() {
    assert_root();
    let _serial = common::kernel::serial();
    let umoci = find_program("umoci", &["/usr/bin/umoci"]).unwrap_or_else(|| panic!("this test unpacks the image with umoci (Debian umoci): not found"));
    let (runc_program, _) = tools();
    let (layout, tag) = image();
    let scratch = ScratchCgroup::claim("image");
    let work = tempfile::Builder::new().prefix("cgleak-test-image-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let bundle = work.path().join("bundle");
    let out = Command::new(&umoci).arg("unpack").arg("--image").arg(format!("{}:{tag}", layout.display())).arg(&bundle).output().unwrap();
    assert!(out.status.success(), "umoci unpack: {}", describe(&out));

    // As the DaemonSet runs it: read-only root, host / read-only at /host, host PID namespace.
    let port = free_port();
    let cfg_path = bundle.join("config.json");
    let mut cfg = read_json(&cfg_path);
    assert_eq!(cfg["process"]["args"], json!(["/usr/local/bin/cgleak", "agent", "--host-root", "/host"]), "the image's entrypoint and command");
    let args = ["/usr/local/bin/cgleak", "agent", "--host-root", "/host", "--listen", &format!("127.0.0.1:{port}"), "--interval", "2s", "--no-logs", "--state-dir", "/state"];
    cfg["process"]["args"] = json!(args);
    cfg["process"]["terminal"] = json!(false);
    cfg["root"]["readonly"] = json!(true);
    cfg["linux"]["cgroupsPath"] = json!(format!("/{}/agent", scratch.name));
    if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
        ns.retain(|n| n["type"] != "network" && n["type"] != "pid");
    }
    let mounts = cfg["mounts"].as_array_mut().unwrap();
    mounts.push(json!({ "destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "ro"] }));
    mounts.push(json!({ "destination": "/state", "type": "tmpfs", "source": "tmpfs", "options": ["mode=0700", "size=16m"] }));
    fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();

    let runc = Runc { program: runc_program, root: work.path().join("runc-state") };
    let id = scratch.name.clone();
    let stderr = work.path().join("agent.stderr");
    let st = runc
        .cmd()
        .args(["run", "-d", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap())
        .status()
        .unwrap();
    let container = Container { runc: &runc, id: id.clone() };
    assert!(st.success(), "runc run: {}", fs::read_to_string(&stderr).unwrap_or_default());

    let text = wait_for("the image's agent to serve /metrics", Duration::from_secs(60), || scrape(port).filter(|t| t.contains("cgleak_memcg_live")));
    assert!(text.contains(&format!("cgleak_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
    // It counted this host's memory hierarchy through /host: the root memcg and the scratch parent at least.
    let live = sample(&text, "cgleak_memcg_live").unwrap();
    assert!(live >= 2.0, "cgleak_memcg_live {live}:\n{text}");
    assert!(sample(&text, "cgleak_memcg_id_limit") == Some(65535.0), "{text}");
    assert_promtool_accepts(&text);
    // A real Prometheus scrapes the image's agent: its series are in Prometheus, `up` is 1.
    let prom = Prometheus::start(&format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cgleak\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels: {{node: image-node}}\n"));
    let body = wait_for("prometheus to scrape the image's agent", Duration::from_secs(60), || prom.query("cgleak_memcg_live{node=\"image-node\"}").filter(|b| b.contains("\"value\"")));
    let up = prom.query("up{job=\"cgleak\"}").unwrap_or_default();
    drop(prom);
    assert!(body.contains("image-node"), "{body}");
    assert!(up.contains("\"1\"]"), "up == 1: {up}");
    // It is the image's binary that runs, in the container's cgroup under the scratch parent.
    let state = runc.state(&id).expect("runc state");
    let pid = state["pid"].as_u64().unwrap();
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(exe.ends_with("usr/local/bin/cgleak"), "{}", exe.display());
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup.lines().any(|l| l.contains(":memory:") && l.ends_with(&format!("/{}/agent", scratch.name))), "{cgroup}");
    // The root filesystem is read-only.
    let root_ro = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap().lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4) == Some(&"/") && f.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro"))
    });
    assert!(root_ro, "the container's / is mounted read-only");
    drop(container);
    scratch.remove();
}
