#!/usr/bin/env bash
# docs/RESULTS.md's full protocol on a GPU machine, in one command: the paper's five backbones on PBC with its 8
# classes and with the pbc-granulocytic labelling (200 epochs, 256 px, batch 128, lr 1e-3, the paper's protocol),
# then the released model (MobileViT-XS, 8 classes, 256 px, other-labs augmentation) packaged into models/ with its
# evaluation on another lab's images.
# Usage: PBC=/path/to/pbc [CHULA=/path/to/chula_wbc] [OUT=runs/results] [RELEASE_EPOCHS=30] [COMPILE=1] \
#        bash scripts/reproduce_results.sh
# COMPILE=1 trains with the compiled step (`--compile`; measure it first with scripts/gpu_bench_train.sh).
# Unfinished runs resume where they stopped (rerun the same command, e.g. in the next GPU window); finished ones are
# reused.
set -euo pipefail
cd "$(dirname "$0")/.."
PBC=${PBC:?set PBC to the PBC dataset folder (one sub-folder per class)}
OUT=${OUT:-runs/results}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this is the GPU protocol')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PAPER=(--epochs 200 --image-size 256 --batch-size 128 --lr 1e-3 --device cuda)
mkdir -p "$OUT"
if [ -n "${COMPILE:-}" ]; then  # compare takes training settings from a config file
  echo "compile: true" > "$OUT/compile.yaml"
  PAPER+=(--config "$OUT/compile.yaml")
fi

time python -m bmcell compare --data "$PBC" --out "$OUT/compare-pbc8" "${PAPER[@]}"
time python -m bmcell compare --data "$PBC" --label-map pbc-granulocytic --out "$OUT/compare-pbc-granulocytic" "${PAPER[@]}"

release_run="$OUT/release-mobilevit_xs-pbc8"
resume=(); [ -f "$release_run/config.json" ] && resume=(--resume)
time python -m bmcell train --data "$PBC" --out "$release_run" --arch mobilevit_xs --image-size 256 --batch-size 128 \
    --epochs "${RELEASE_EPOCHS:-30}" --lr 1e-3 --augment other-labs --device cuda ${COMPILE:+--compile} "${resume[@]}"
python -m bmcell release "$release_run" --name mobilevit_xs-pbc8-gpu ${CHULA:+--other "$CHULA"} \
    --note "MobileViT-XS, 256 px, ${RELEASE_EPOCHS:-30} epochs, other-labs augmentation, on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1) (scripts/reproduce_results.sh)"
