#!/usr/bin/env bash
# The checks only a GPU can make, as one call of the device machine (at most 6.5 minutes: each step has its
# own time limit, so one that hangs does not take the rest with it). Writes every step's output to $OUT (or ./gpu_out).
#   bash benchmarks/gpu_checks.sh
# 1. Infinity-2B (random weights) at 1024² and 512², bf16, batch 1, CFG 4, decode included: s/image of the exact
#    sampler and the pruned rows, and the milliseconds of every scale (where kernel launches bind).
# 2. The README's "what fits" rows for Infinity-2B on 8 and 12 GB cards (gpu_memory.py): peak memory against the plan.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu_out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" 2>&1 | tee -a "$out/gpu.txt"
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}"
}
step sample_2b_1M 150 python3 benchmarks/bench_sample.py --size 2b --device cuda --pn 1M --dtype bf16 \
    --vae-dtype bf16 --no-compare-cache --per-scale --reps 5
step sample_2b_0.25M 90 python3 benchmarks/bench_sample.py --size 2b --device cuda --pn 0.25M --dtype bf16 \
    --vae-dtype bf16 --no-compare-cache --per-scale --reps 5
step memory_2b 150 python3 benchmarks/gpu_memory.py --models Infinity-2B --cards 8,12
