#!/usr/bin/env bash
# One short run on the lent GPU machine (Python 3.12, torch and transformers there; no internet).
# It lacks decord, faiss-cpu, sqlalchemy and av. Their wheels together are over the 64 MiB that
# may travel, so prepare here, once, one xz archive of them unpacked (~46 MB):
#   echo /.whl/ >> .git/info/exclude; mkdir -p .whl /tmp/whl /tmp/site
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d /tmp/whl decord==0.6.0 faiss-cpu sqlalchemy av
#   for f in /tmp/whl/*.whl; do unzip -q -o "$f" -d /tmp/site; done
#   tar -C /tmp/site -cf - . | xz -T0 -9 > .whl/site.tar.xz
# then run it with the device tool: carry [".whl"], command "bash benchmarks/gpu_check.sh", timeout 480.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/vidsearch-gpu}
mkdir -p "$OUT" /tmp/site
if [ -f .whl/site.tar.xz ]; then
  xz -dc -T0 .whl/site.tar.xz | tar -C /tmp/site -xf -
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv; lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400; } | tee "$OUT/machine.txt"
# arguments go to gpu_check.py (a follow-up run: --sizes 1080p --sections preprocess backends compile)
timeout 330 python3 benchmarks/gpu_check.py --out "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
if [ $# -eq 0 ]; then
  timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_encoder.py 2>&1 | tee "$OUT/gpu_tests.txt"
fi
