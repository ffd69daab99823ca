#!/usr/bin/env bash
# Builds the images without a container daemon and checks they answer, as the chart runs them.
#
#   .ci/build-router-image.sh                 Dockerfile.router only (~25 s with a cached base)
#   .ci/build-router-image.sh --with-worker   also the CPU-only Dockerfile.worker (+ ~90 s)
#
# The public python base image cannot be pulled here, so a Debian bookworm minbase root
# filesystem with python3 (debootstrap) stands in for python:3.11-slim-bookworm (same Debian
# release, Python 3.11). Then `podman build --isolation chroot`, the image config is inspected
# (user 10001, entrypoint charon), numpy must be absent from the router image, and `charon --help`
# and `charon ping` run in the router image against a router started from the same image. With
# --with-worker, a worker container joins that router and the `helm test` commands (`charon ping`,
# `charon simulate --events 2 --photons 1000`) run from the worker image. Containers run as in
# the chart: read-only root filesystem, all capabilities dropped, no privilege escalation,
# writable /tmp and kernel cache only; host network on loopback.
#
# Needs root, podman, runc and debootstrap (.ci/install-tools.sh). The base is cached in
# .ci/tools/pybase.tar (delete it to rebuild). Prints one "image ok ..." line per image.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WITH_WORKER=0
[[ "${1:-}" == "--with-worker" ]] && WITH_WORKER=1
ROUTER_TAG=localhost/charon-router:ci
WORKER_TAG=localhost/charon-worker:ci-cpu
BASE_TAR="$ROOT/.ci/tools/pybase.tar"
CA=/etc/ssl/certs/ca-certificates.crt
log() { printf 'build-router-image: %s\n' "$*" >&2; }
RUN=(podman --runtime runc run --rm --ulimit nofile=1024:1024 --ulimit nproc=1024:1024
     --read-only --cap-drop ALL --security-opt no-new-privileges --tmpfs /tmp)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_ready() {  # wait_ready HOST:PORT SECONDS
  for _ in $(seq $(( $2 * 2 ))); do
    python3 -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://$1/readyz', timeout=1).status != 200)" \
      2>/dev/null && return 0
    sleep 0.5
  done
  return 1
}

for exe in podman runc debootstrap; do
  command -v "$exe" >/dev/null || { log "$exe missing (run .ci/install-tools.sh as root)"; exit 3; }
done

if ! podman image exists localhost/pybase:ci; then
  if [[ ! -s "$BASE_TAR" ]]; then
    rootfs="$(mktemp -d)"
    mirror="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    log "debootstrap bookworm minbase from ${mirror:-http://deb.debian.org/debian}"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm "$rootfs" \
      "${mirror:-http://deb.debian.org/debian}" >/dev/null
    ln -sf python3 "$rootfs/usr/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    mkdir -p "$(dirname "$BASE_TAR")"
    tar -C "$rootfs" -cf "$BASE_TAR" .
    rm -rf "$rootfs"
  fi
  log "importing the stand-in base"
  podman import --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' "$BASE_TAR" localhost/pybase:ci >/dev/null
fi
podman tag localhost/pybase:ci docker.io/library/python:3.11-slim-bookworm

log "podman build Dockerfile.router -> $ROUTER_TAG"
podman build --isolation chroot --pull=never --quiet -v "$CA:$CA:ro" \
  -f "$ROOT/Dockerfile.router" -t "$ROUTER_TAG" "$ROOT" >/dev/null
cfg="$(podman image inspect "$ROUTER_TAG" --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}')"
[[ "$cfg" == '10001:10001 ["charon"] ["router"]' ]] || { log "unexpected router image config: $cfg"; exit 1; }
"${RUN[@]}" --network none "$ROUTER_TAG" --help | grep -q "router" || { log "charon --help failed"; exit 1; }
if "${RUN[@]}" --network none --entrypoint python "$ROUTER_TAG" -c "import numpy" 2>/dev/null; then
  log "numpy is importable in the router image"; exit 1
fi

port="$(free_port)"; wport="$(free_port)"; mport="$(free_port)"
containers=()
cleanup() { for c in "${containers[@]}"; do podman --runtime runc rm -f "$c" >/dev/null 2>&1 || true; done; }
trap cleanup EXIT
router="charon-router-ci-$$"
containers+=("$router")
"${RUN[@]}" -d --name "$router" --network host "$ROUTER_TAG" router \
  --bind "tcp://127.0.0.1:$port" --workers-bind "tcp://127.0.0.1:$wport" --metrics-addr "127.0.0.1:$mport" >/dev/null
wait_ready "127.0.0.1:$mport" 30 || { log "router container not ready"; podman --runtime runc logs "$router" >&2; exit 1; }
if ! out="$("${RUN[@]}" --network host "$ROUTER_TAG" ping --endpoint "tcp://127.0.0.1:$port" 2>&1)"; then
  log "charon ping (router image) against the containerised router failed:"
  printf '%s\n' "$out" | tail -5 >&2
  exit 1
fi
echo "image ok $ROUTER_TAG user=10001 entrypoint=charon size_bytes=$(podman image inspect "$ROUTER_TAG" --format '{{.Size}}') ping=ok ($out)"

[[ "$WITH_WORKER" == 1 ]] || exit 0

log "podman build Dockerfile.worker (CPU-only) -> $WORKER_TAG"
podman build --isolation chroot --pull=never --quiet -v "$CA:$CA:ro" \
  --build-arg BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm \
  -f "$ROOT/Dockerfile.worker" -t "$WORKER_TAG" "$ROOT" >/dev/null
cfg="$(podman image inspect "$WORKER_TAG" --format '{{.Config.User}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}')"
[[ "$cfg" == '10001:10001 ["charon"] ["worker"]' ]] || { log "unexpected worker image config: $cfg"; exit 1; }
# Kubernetes creates emptyDir volumes world-writable; a host directory with the same mode stands in.
cache="$(mktemp -d)"; chmod 1777 "$cache"
worker="charon-worker-ci-$$"
containers+=("$worker")
wmport="$(free_port)"
"${RUN[@]}" -d --name "$worker" --network host -v "$cache:/var/cache/charon/kernels" \
  -e CHARON_WORKER__ROUTER="tcp://127.0.0.1:$wport" -e CHARON_METRICS__ADDR="127.0.0.1:$wmport" \
  "$WORKER_TAG" worker --backend builtin >/dev/null
wait_ready "127.0.0.1:$wmport" 120 || { log "worker container not ready"; podman --runtime runc logs "$worker" >&2; exit 1; }
ping_out="$("${RUN[@]}" --network host "$WORKER_TAG" ping --endpoint "tcp://127.0.0.1:$port" 2>&1)" \
  || { log "charon ping (worker image) failed: $ping_out"; exit 1; }
sim_out="$("${RUN[@]}" --network host "$WORKER_TAG" simulate --events 2 --photons 1000 \
  --endpoint "tcp://127.0.0.1:$port" 2>&1)" || { log "charon simulate failed: $sim_out"; exit 1; }
hits="$(printf '%s\n' "$sim_out" | awk '$1 == "hits" {print $2}')"
[[ -n "$hits" && "$hits" -gt 0 ]] || { log "charon simulate returned no hits: $sim_out"; exit 1; }
rm -rf "$cache"
echo "image ok $WORKER_TAG user=10001 entrypoint=charon size_bytes=$(podman image inspect "$WORKER_TAG" --format '{{.Size}}') helm-test=ok (ping, simulate 2x1000 photons: $hits hits)"
