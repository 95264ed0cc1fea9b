#!/usr/bin/env bash
# Training throughput on a GPU machine, in one command: the plain DataLoader path and the device data path with the
# eager training step, then the device path with the compiled step (torch.compile, CUDA graphs; its first step, which
# compiles, is timed apart), MobileViT-XS, 256 px, bf16 autocast, channels_last, at the paper's batch 128 and at the
# batches in BATCHES; on PBC when DATA is set (else the embedded synthetic cells). The table's "of bf16 peak" column
# is the training FLOPs (3x forward) per second over the GPU's dense bf16 peak. Issue 15's goal: >= 5,000 img/s at
# batch 128; if the compiled row is faster, `bmcell train --compile` (COMPILE=1 in reproduce_results.sh) uses it.
# Usage: DATA=/path/to/pbc [BATCHES="128 256"] bash scripts/gpu_bench_train.sh   (extra options go to bench-train)
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script measures the GPU path')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for batch in ${BATCHES:-128 256}; do
  python -m bmcell bench-train ${DATA:+--data "$DATA"} --arch mobilevit_xs --image-size 256 --batch-size "$batch" \
      --steps 100 --warmup 10 --workers "${WORKERS:-15}" --device cuda --compiled "$@"
done
