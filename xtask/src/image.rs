//! `cargo xtask image`: an OCI image of the agent, built from the `cargo xtask dist` binary
//! with no registry and no daemon: one layer holding `/usr/local/bin/cgleak` (the README's
//! install path, so `kubectl exec ... -- cgleak` finds it) and the empty directories the
//! DaemonSet mounts into (`/host`, `/proc`, `/sys`, `/dev`, `/tmp`, `/etc/cgleak`), written
//! by GNU tar in a fixed order with fixed owners and times, so the same binary gives the same
//! digest. The result is an OCI image layout (`target/image/oci`, for umoci, skopeo and
//! podman) and the same layout as one tar (`target/image/cgleak-<version>-oci.tar`, for
//! `podman load -i` or `skopeo copy oci-archive:...`). Nothing is pulled: FROM scratch.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::dist;

pub struct Image {
    pub layout: PathBuf,
    pub archive: PathBuf,
    pub tag: String,
    pub manifest_digest: String,
}

fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

fn sha256(path: &Path) -> Result<String> {
    let out = run(Command::new("sha256sum").arg(path))?;
    let text = String::from_utf8(out).context("sha256sum output")?;
    Ok(text.split_whitespace().next().filter(|h| h.len() == 64).context("sha256sum printed no hash")?.to_string())
}

/// Store `path`'s bytes as a blob of the layout; its descriptor (digest and size).
fn blob(layout: &Path, path: &Path, media_type: &str) -> Result<serde_json::Value> {
    let digest = sha256(path)?;
    let size = fs::metadata(path)?.len();
    let to = layout.join("blobs/sha256").join(&digest);
    fs::copy(path, &to).with_context(|| format!("copy {} to {}", path.display(), to.display()))?;
    Ok(json!({ "mediaType": media_type, "digest": format!("sha256:{digest}"), "size": size }))
}

fn json_blob(layout: &Path, work: &Path, name: &str, value: &serde_json::Value, media_type: &str) -> Result<serde_json::Value> {
    let p = work.join(name);
    fs::write(&p, serde_json::to_vec(value)?)?;
    blob(layout, &p, media_type)
}

fn git_commit(workspace: &Path) -> String {
    Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub fn build(workspace: &Path, target_dir: &Path) -> Result<Image> {
    let bin = dist::build(workspace, target_dir)?;
    let version = env!("CARGO_PKG_VERSION");
    let out = target_dir.join("image");
    let work = out.join("work");
    let layout = out.join("oci");
    for d in [&work, &layout] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("remove {}", d.display()))?;
        }
    }
    let rootfs = work.join("rootfs");
    for d in ["usr/local/bin", "host", "proc", "sys", "dev", "tmp", "etc/cgleak"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    let target_bin = rootfs.join("usr/local/bin/cgleak");
    fs::copy(&bin.path, &target_bin).with_context(|| format!("copy {}", bin.path.display()))?;
    fs::set_permissions(&target_bin, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;

    // The layer: reproducible (name order, owner root, time 0), then gzip without a name or time.
    let layer_tar = work.join("layer.tar");
    run(Command::new("tar")
        .args(["--create", "--format=ustar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--file"])
        .arg(&layer_tar)
        .arg("-C")
        .arg(&rootfs)
        .args(["usr", "host", "proc", "sys", "dev", "tmp", "etc"]))?;
    let diff_id = sha256(&layer_tar)?;
    run(Command::new("gzip").args(["-n", "-9", "-f"]).arg(&layer_tar))?;
    let layer_gz = work.join("layer.tar.gz");

    fs::create_dir_all(layout.join("blobs/sha256"))?;
    let layer = blob(&layout, &layer_gz, "application/vnd.oci.image.layer.v1.tar+gzip")?;
    let commit = git_commit(workspace);
    let labels = json!({
        "org.opencontainers.image.title": "cgleak",
        "org.opencontainers.image.description": "Finds and explains memory-cgroup ID leaks on Linux and Kubernetes nodes (the agent DaemonSet)",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.licenses": env!("CARGO_PKG_LICENSE"),
    });
    let config = json!({
        "created": "1970-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/local/bin/cgleak"],
            "Cmd": ["agent", "--host-root", "/host"],
            "Env": ["PATH=/usr/local/bin"],
            "WorkingDir": "/",
            "Labels": labels,
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": format!("cargo xtask image: {} ({} bytes, sha256 {})", dist::ARTIFACT, bin.size, bin.sha256) }],
    });
    let config = json_blob(&layout, &work, "config.json", &config, "application/vnd.oci.image.config.v1+json")?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
        "annotations": labels,
    });
    let mut manifest_desc = json_blob(&layout, &work, "manifest.json", &manifest, "application/vnd.oci.image.manifest.v1+json")?;
    manifest_desc["annotations"] = json!({ "org.opencontainers.image.ref.name": version });
    manifest_desc["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let index = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest_desc.clone()] });
    fs::write(layout.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;

    let archive = out.join(format!("cgleak-{version}-oci.tar"));
    run(Command::new("tar")
        .args(["--create", "--format=ustar", "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "--file"])
        .arg(&archive)
        .arg("-C")
        .arg(&layout)
        .args(["oci-layout", "index.json", "blobs"]))?;
    fs::remove_dir_all(&work)?;
    Ok(Image { layout, archive, tag: version.to_string(), manifest_digest: manifest_desc["digest"].as_str().unwrap_or_default().to_string() })
}
