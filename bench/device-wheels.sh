#!/usr/bin/env bash
# Fetch, on this machine, the wheels bench/gpu.py needs on the GPU machine, into a git-ignored .whl/.
#
# The GPU machine (the device tool's `nvidia-h200`) has Python 3.12 with torch 2.11, transformers
# 5.17, accelerate, safetensors, numpy, pillow, huggingface-hub, requests, regex and filelock, and
# reaches no registry. The benchmark imports ltx2's models, pipelines and media (not the HTTP
# server), which also need diffusers, PyAV and pydantic: those travel as wheels, with the flags the
# device tool's README gives, and --no-deps (each dependency the machine lacks is named here).
#
#   bash bench/device-wheels.sh          # here, once: ~46 MB in .whl/ (the device call carries at most 64 MiB)
#
# Then the one device call, from the repository root (the README's Performance section has it too):
#   run(carry=[".whl"], timeout_s=600, command=
#     "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#      && export PYTHONPATH=/tmp/site || exit; PYTHONUNBUFFERED=1 python3 bench/gpu.py --out $OUT")
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned to what pyproject.toml and the CPU test suite use, so the GPU runs the code CI tested.
WHEELS=(
  diffusers==0.42.1        # LTX-2's transformer, VAEs, vocoder, connectors, attention dispatcher
  av==18.1.0               # PyAV: the MP4 mux row (bundles FFmpeg)
  pydantic==2.14.4         # ltx2.schema's request model
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  importlib-metadata==10.2.0 # diffusers declares it; the machine's zipp serves it
)

exclude=$(git rev-parse --git-path info/exclude)
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
rm -rf .whl && mkdir -p .whl
for wheel in "${WHEELS[@]}"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$wheel" 2>&1 | grep -v '^WARNING: Location' || true
done
count=$(ls .whl/*.whl | wc -l)
[ "$count" -eq "${#WHEELS[@]}" ] || { echo "expected ${#WHEELS[@]} wheels, got $count:"; ls .whl; exit 1; }
total=$(du -cb .whl/*.whl | tail -1 | cut -f1)
echo "$count wheels, $((total / 1024 / 1024)) MiB in .whl/"
[ "$total" -lt $((60 * 1024 * 1024)) ] || { echo "over the 64 MiB a device call carries (with the repository)"; exit 1; }
