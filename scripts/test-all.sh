#!/usr/bin/env bash
# Runs every cgleak test: unit, fixture snapshots, and the real-kernel tests on
# this host (root, cgroup v1 memory hierarchy). Installs what the tests need.
#   CGLEAK_QUICK=1 scripts/test-all.sh   skips the real-kernel tests (names real_kernel_*)
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v runc >/dev/null || need_pkgs+=(runc)
[ -x /bin/busybox ] || command -v busybox >/dev/null || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "== installing ${need_pkgs[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "need root to install ${need_pkgs[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

echo "== build"
cargo build --workspace --all-targets --locked

if [ "${CGLEAK_QUICK:-0}" = 1 ]; then
    echo "== quick tests (no real kernel)"
    cargo test --workspace --locked -- --skip real_kernel
else
    echo "== all tests (real kernel included: needs root and a memory cgroup mount)"
    cargo test --workspace --locked
fi
