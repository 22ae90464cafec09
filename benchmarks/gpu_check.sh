#!/usr/bin/env bash
# One short run on the lent GPU machine (Python 3.12, torch and transformers there; no internet).
# Prepare here, once, the wheels it lacks (decord, faiss-cpu, sqlalchemy, click, av, tqdm, greenlet):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl decord==0.6.0 faiss-cpu sqlalchemy click av tqdm greenlet typing-extensions
# then run it with the device tool: carry [".whl"], command "bash benchmarks/gpu_check.sh", timeout 420.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/vidsearch-gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" || true
timeout 300 python3 -m pytest -q -m gpu tests/test_encoder.py 2>&1 | tee "$OUT/gpu_tests.txt" || true
timeout 280 python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
