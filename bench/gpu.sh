#!/usr/bin/env bash
# The built-in engine on a lent NVIDIA GPU, in one prepared run (under 8 minutes on an H100/H200).
#
# Needs what bench/gpu-prepare.sh put under .whl/part-* (carried there in consecutive calls): it
# reassembles the warp-lang wheel, installs the wheels into /tmp/site (no network there), and
# runs bench/bench_gpu.py on the reference detector (analytic and mesh) and the imported RAT-like
# detector at 1e3 / 1e5 / 1e7 photons per request, plus 1,000 batched events of 1e3 photons and
# the device memory in use. Chroma is tried when its source (.whl/chroma) and a PyCUDA sdist
# (.whl/pycuda-*.tar.gz) were carried; otherwise the output says it was skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/charon-gpu}
mkdir -p "$OUT" /tmp/wheels
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
shopt -s nullglob
pieces=(.whl/part-*/warp_lang-*.whl.*)
if [ ${#pieces[@]} -eq 0 ]; then echo "no warp-lang pieces under .whl/part-*: run bench/gpu-prepare.sh and carry them"; exit 2; fi
whl=$(basename "${pieces[0]}"); whl=${whl%.*}
cat "${pieces[@]}" > "/tmp/wheels/$whl"
cp .whl/part-*/*.whl /tmp/wheels/ 2>/dev/null
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  /tmp/wheels/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/services PYTHONUNBUFFERED=1
if [ -d .whl/chroma ] && compgen -G ".whl/pycuda-*.tar.gz" > /dev/null; then
  timeout 240 python3 -m pip install -q --no-index --no-build-isolation --target /tmp/site .whl/pycuda-*.tar.gz \
    && export PYTHONPATH=$PYTHONPATH:$PWD/.whl/chroma || echo "PyCUDA did not build in time: Chroma skipped"
fi
imported=(.whl/part-*/rat_like_*.npz)
timeout 450 python3 bench/bench_gpu.py --device cuda --output "$OUT/gpu.json" \
  ${imported:+--imported "${imported[0]}"} 2>&1 | tee "$OUT/gpu.log"
nvidia-smi --query-gpu=memory.used --format=csv,noheader || true
