#!/usr/bin/env bash
# Prepare what bench/gpu.sh needs on the GPU machine (which has no network): run here, once.
#
# Writes into .whl/ (git-ignored): Python 3.12 wheels for what the GPU machine lacks, the
# warp-lang wheel cut into pieces under 60 MB (one device call carries at most 64 MiB), and an
# imported RAT-like detector (Geant4-written GDML with 1,000 PMTs, imported by charon) as .npz.
# Then carry .whl/part-1 .. .whl/part-N in consecutive calls while the machine stays warm (each
# piece lands in .whl/ there and stays), and run bench/gpu.sh with the last one (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
W=.whl
mkdir -p "$W/wheels"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64)
get() { "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${plat[@]}" -d "$W/wheels" "$@"; }
# pure-Python or small: pydantic and its needs (the settings tree), charon itself runs from source
get "pydantic==$("$PY" -c 'import pydantic; print(pydantic.VERSION)')" \
    "pydantic-core==$("$PY" -c 'import pydantic_core; print(pydantic_core.__version__)')" \
    "pydantic-settings==$("$PY" -c 'import importlib.metadata as m; print(m.version("pydantic-settings"))')" \
    annotated-types typing-inspection python-dotenv
get "warp-lang==$("$PY" -c 'import importlib.metadata as m; print(m.version("warp-lang"))')"
warp=$(ls "$W"/wheels/warp_lang-*.whl)
mkdir -p "$W/split"
rm -f "$W"/split/*
split -b 55M -d "$warp" "$W/split/$(basename "$warp")."
mv "$warp" "$W/$(basename "$warp").full"
# the imported detector: built by Geant4 (tests/g4), imported by charon
if [ ! -f "$W/detectors/rat_like_1000.npz" ]; then
  mkdir -p "$W/detectors"
  tmp=$(mktemp -d)
  "$PY" -c "from tests.g4 import build; build.build_rat_like('$tmp', n_pmts=1000)"
  .venv/bin/charon detector import "$tmp/detector.gdml" --ratdb "$tmp/pmtinfo.json" -o "$W/detectors/rat_like_1000.npz"
  rm -rf "$tmp"
fi
# carry-sized parts: one warp piece each, then a last part with the small wheels and the detector
n=0
rm -rf "$W"/part-*
for piece in "$W"/split/*; do
  n=$((n + 1)); mkdir -p "$W/part-$n"; mv "$piece" "$W/part-$n/"
done
n=$((n + 1)); mkdir -p "$W/part-$n"
mv "$W"/wheels/*.whl "$W/part-$n/"
cp "$W/detectors/rat_like_1000.npz" "$W/part-$n/"
du -sh "$W"/part-*
echo "carry .whl/part-1 .. .whl/part-$n in consecutive calls; the last runs: bash bench/gpu.sh"
