#!/usr/bin/env bash
# Training throughput on a GPU machine, in one command: plain DataLoader path vs the device data path, MobileViT-XS,
# 256 px, batch 128, bf16 autocast, channels_last, on PBC when DATA is set (else the embedded synthetic cells).
# Usage: DATA=/path/to/pbc bash scripts/gpu_bench_train.sh   (extra options are passed on to bmcell bench-train)
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this script measures the GPU path')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -m bmcell bench-train ${DATA:+--data "$DATA"} --arch mobilevit_xs --image-size 256 --batch-size 128 \
    --steps 100 --warmup 10 --workers "${WORKERS:-15}" --device cuda "$@"
