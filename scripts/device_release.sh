#!/usr/bin/env bash
# The released model on one lent GPU machine, when the data must travel in parts (scripts/pack_for_device.py):
#   call 1: bash scripts/device_release.sh bench   (carry .devdata/pbc288-part1.zip .whl): unpack part 1, measure
#           bench-train (plain vs device data path) on it, save the device path's images/s for call 2
#   call 2: bash scripts/device_release.sh train   (carry the other parts, .devdata/golden, .whl, within 30 s):
#           unpack, train MobileViT-XS 256 px with other-labs augmentation on PBC's release split for as many epochs
#           as fit TRAIN_S seconds at the measured speed, then write reference_logits.json (fp32 reference logits of the 64
#           named validation images, originals, on this GPU, TF32 off) and tar the run into $OUT.
# On a GPU machine that holds the data itself, use scripts/reproduce_results.sh instead.
set -uo pipefail
stage=${1:?bench or train}
export PYTHONUNBUFFERED=1 COLUMNS=200
DATA=/tmp/pbc288 RUN=/tmp/release-run OUT=${OUT:-/tmp/out} SPLIT=models/mobilevit_xs-pbc8/split.json
EXPECTED=${EXPECTED:-15367} TRAIN_S=${TRAIN_S:-400} START=$SECONDS
DEVICE=${DEVICE:-cuda} IMAGE_SIZE=${IMAGE_SIZE:-256} MIN_EPOCHS=${MIN_EPOCHS:-10} TRAIN_IMAGES=${TRAIN_IMAGES:-13830}
mkdir -p "$DATA" "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
for part in .devdata/pbc288-part*.zip; do python3 -m zipfile -e "$part" "$DATA"; done
found=$(find "$DATA" -type f | wc -l)
echo "images unpacked: $found (of $EXPECTED); $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true)"
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"

if [ "$stage" = bench ]; then
    python3 -m bmcell bench-train --data "$DATA" --arch mobilevit_xs --image-size "$IMAGE_SIZE" \
        --batch-size 128 --augment other-labs --steps "${STEPS:-60}" --warmup 10 --workers 15 --device "$DEVICE" | tee "$OUT/bench-train.txt"
    awk -F'|' '$2 ~ /^ *device *$/ {gsub(/ /, "", $6); print $6}' "$OUT/bench-train.txt" > /tmp/device_ips.txt
    echo "device path: $(cat /tmp/device_ips.txt) img/s training; ${SECONDS}s"
    exit 0
fi

[ "$found" -eq "$EXPECTED" ] || { echo "only $found of $EXPECTED images: the machine did not stay warm"; exit 3; }
ips=$(cat /tmp/device_ips.txt 2>/dev/null || echo 2000)
# epochs that fit: each costs the training steps plus about 3 s of validation and checkpointing; 40 s of set-up
epochs=$(python3 -c "print(max($MIN_EPOCHS, min(200, int(($TRAIN_S - 40) / ($TRAIN_IMAGES / $ips + 3)))))")
echo "training $epochs epochs at ~$ips img/s (budget ${TRAIN_S}s)"
timeout $((TRAIN_S + 60)) python3 -m bmcell train --data "$DATA" --split "$SPLIT" --out "$RUN" --arch mobilevit_xs \
    --image-size "$IMAGE_SIZE" --batch-size 128 --lr 1e-3 --epochs "$epochs" --augment other-labs --device "$DEVICE" \
    --data-path device --workers 16 2>&1 | grep --line-buffered -v "━" | tee "$OUT/train.log"
echo "training ended after $((SECONDS - START))s"
python3 - "$RUN" "$OUT" <<'PY'
import sys
from pathlib import Path
from bmcell.core.checkpoint import load_checkpoint
from bmcell.core.data.split import read_split, subset_records
from bmcell.jobs.release import write_reference_logits
from export.samples import balanced_pick
run, out = Path(sys.argv[1]), Path(sys.argv[2])
checkpoint = load_checkpoint(run / "best.json")
val = subset_records(read_split(run / "split.json"), "val")
golden = write_reference_logits(checkpoint, Path(".devdata/golden"), balanced_pick(val, 64), out / "reference_logits.json")
metrics = checkpoint.metrics
print("golden:", golden["device"], "| best epoch", checkpoint.epoch, "| val accuracy", metrics["accuracy"],
      "macro-F1", metrics["macro_f1"], "| recall", {c: round(r["recall"], 3) for c, r in metrics["per_class"].items()})
PY
tar -cf "$OUT/run.tar" -C "$RUN" --exclude cache --exclude "resume*" --exclude "last*" .
ls -la "$OUT"; echo "done after $((SECONDS - START))s"
