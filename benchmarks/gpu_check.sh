#!/usr/bin/env bash
# The GPU paths on a CUDA machine: every weight editor edits and undoes bit-exactly in float32 and
# bfloat16 on a random model of SmolLM2-135M's shape (speed against a bare forward pass, in the same
# run), and `harness run` edits, scores and writes its results on cuda with its default dtype.
# Usage (from the repository root, with the harness importable): bash benchmarks/gpu_check.sh OUT_DIR
# Where pip cannot reach an index, put the missing wheels in .whl/ first (see benchmarks/README.md).
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
export HARNESS_HOME=${HARNESS_HOME:-/tmp/harness-gpu-home} PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
    python3 -m pip install -q --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
    export PYTHONPATH=/tmp/site
    export PATH=/tmp/site/bin:$PATH
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 benchmarks/random_model.py /tmp/rm135 > /dev/null 2>&1 || exit 1
methods=ft-l,ft-m,rome,memit,lora,adalora,grace,ice
for dtype in float32 bfloat16; do
    python3 benchmarks/edit_speed.py --model /tmp/rm135 --device cuda --dtype "$dtype" --verify \
        --methods "$methods" --cases 6 --data-dir /nonexistent 2>&1 | grep -v "it/s" | tee "$out/edit_speed_$dtype.txt"
done
python3 -m harness.cli run --model /tmp/rm135 --device cuda --method ft-m,rome,memit,grace \
    --task mini_zsre,mini_wikibio --limit 3 --out /tmp/gpu-run --no-progress 2>&1 | tail -40 | tee "$out/run.txt"
python3 -m harness.cli leaderboard /tmp/gpu-run --format markdown > "$out/leaderboard.md" 2>&1
cp /tmp/gpu-run/manifest.json "$out/manifest.json"
