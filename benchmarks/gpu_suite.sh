#!/usr/bin/env bash
# The single-GPU benchmark set, one table file each under $1 (default ./gpu_results):
#   bash benchmarks/gpu_suite.sh /tmp/results
# Multi-GPU ones (weight_sync.py, pipeline.py with --gpus 2+) are run separately on a multi-GPU host.
set -uo pipefail
out=${1:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
run() { local name=$1; shift; echo "=== $name: $*"; timeout "${BENCH_TIMEOUT:-240}" "$@" 2>&1 | tee "$out/$name.txt" | tail -n 25; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.txt"
run policy_inference python3 benchmarks/policy_inference.py --json "$out/policy_inference.json"
run offload python3 benchmarks/offload.py --gb 2
run channel python3 benchmarks/channel.py
run env_throughput python3 benchmarks/env_throughput.py --num-envs 1 4 16 --obs-mode state rgb --steps 60 --rounds 9
run pipeline python3 benchmarks/pipeline.py --gpus 1 --num-envs 16 --rollout-steps 30 --timeline "$out/timeline.png" --json "$out/pipeline.json"
