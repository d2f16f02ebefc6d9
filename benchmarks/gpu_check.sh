#!/usr/bin/env bash
# The prepared GPU check: GPU tests, then the benchmark; output under ${OUT:-gpu-check}.
#   bash benchmarks/gpu_check.sh            # about 10 minutes on an H100/H200-class GPU
set -u
out=${OUT:-gpu-check}
mkdir -p "$out"
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
DPAI_TEST_THREADS=4 timeout 300 python -m pytest -q -rs tests/test_gpu.py 2>&1 | tee "$out/test_gpu.txt"
timeout 420 python benchmarks/bench_gpu.py --threads 4 --compile --procs 2 4 --table "$out/bench_gpu.md" 2>&1 | tee "$out/bench_gpu.txt"
