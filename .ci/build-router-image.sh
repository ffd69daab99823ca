#!/usr/bin/env bash
# Builds Dockerfile.router without a container daemon and checks the image answers.
#
# The public python base image cannot be pulled here, so a Debian bookworm minbase root
# filesystem with python3 (debootstrap) stands in for python:3.11-slim-bookworm (same Debian
# release, Python 3.11). Then: `podman build --isolation chroot`, inspect the user/entrypoint,
# and run `charon --help` and `charon ping` inside the image (runc, host network, loopback only)
# against a router started from the same image.
#
# Needs root, podman, runc and debootstrap (.ci/install-tools.sh). The base is cached in
# .ci/tools/pybase.tar (delete it to rebuild). Prints one "image ok ..." line on success.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${1:-localhost/charon-router:ci}"
BASE_TAR="$ROOT/.ci/tools/pybase.tar"
CA=/etc/ssl/certs/ca-certificates.crt
log() { printf 'build-router-image: %s\n' "$*" >&2; }
RUNC=(podman --runtime runc run --rm --ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

for exe in podman runc debootstrap; do
  command -v "$exe" >/dev/null || { log "$exe missing (run .ci/install-tools.sh as root)"; exit 3; }
done

if ! podman image exists localhost/pybase:ci; then
  if [[ ! -s "$BASE_TAR" ]]; then
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    log "debootstrap bookworm minbase from ${mirror:-http://deb.debian.org/debian}"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$rootfs" \
      "${mirror:-http://deb.debian.org/debian}" >/dev/null
    ln -sf python3 "$rootfs/usr/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$BASE_TAR" .
  fi
  log "importing the stand-in base"
  podman import --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' "$BASE_TAR" localhost/pybase:ci >/dev/null
fi
podman tag localhost/pybase:ci docker.io/library/python:3.11-slim-bookworm

log "podman build Dockerfile.router -> $TAG"
podman build --isolation chroot --pull=never --quiet \
  -v "$CA:$CA:ro" --build-arg PIP_CERT="$CA" \
  -f "$ROOT/Dockerfile.router" -t "$TAG" "$ROOT" >/dev/null

cfg="$(podman image inspect "$TAG" --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}')"
[[ "$cfg" == '10001:10001 ["charon"] ["router"]' ]] || { log "unexpected image config: $cfg"; exit 1; }
"${RUNC[@]}" --network none "$TAG" --help | grep -q "router" || { log "charon --help failed"; exit 1; }
if "${RUNC[@]}" --network none --entrypoint python "$TAG" -c "import numpy" 2>/dev/null; then
  log "numpy is importable in the router image"; exit 1
fi

# A router from the image on loopback, and a ping from a second container of the same image.
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
wport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
name="charon-router-ci-$$"
"${RUNC[@]}" -d --name "$name" --network host "$TAG" router \
  --bind "tcp://127.0.0.1:$port" --workers-bind "tcp://127.0.0.1:$wport" --metrics-addr "127.0.0.1:$mport" >/dev/null
trap 'podman --runtime runc rm -f "$name" >/dev/null 2>&1 || true' EXIT
for _ in $(seq 60); do
  python3 -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:$mport/readyz', timeout=1).status != 200)" \
    2>/dev/null && break
  sleep 0.5
done
if ! out="$("${RUNC[@]}" --network host "$TAG" ping --endpoint "tcp://127.0.0.1:$port" 2>&1)"; then
  log "charon ping (in the image) against the containerised router failed:"
  printf '%s\n' "$out" | tail -5 >&2
  exit 1
fi
size="$(podman image inspect "$TAG" --format '{{.Size}}')"
echo "image ok $TAG user=10001 entrypoint=charon size_bytes=$size ping=ok ($out)"
