#!/usr/bin/env bash
# The paper's §4.2 argument, measured at CPU scale on Multi-MNIST "pairs" (two digits forming one of
# the pairs {6,4},{7,2},{5,1},{8,0},{9,3}): layout-conditioned generators (pre-MSGNet, cVQ-VAE,
# obj-cGAN) are fed real layouts with one digit relabelled into a forbidden pair; the digit classifier
# reads the generated digits (`msgnet eval fidelity`). MSGNet, sampling its own layouts, is scored
# the same way, and its layouts by `msgnet eval coherency`.
#   OUT=runs/rule BUDGET=12 bash scripts/rule_breaking.sh
set -euo pipefail
MSGNET="${MSGNET:-.venv/bin/msgnet}"
DATA="${DATA:-data/pairs-1000}"
OUT="${OUT:-runs/rule}"
BUDGET="${BUDGET:-12}"
NUM="${NUM:-500}"
mkdir -p "$OUT"
T0=$(date +%s)
if [ ! -f "$DATA/dataset.json" ]; then
    $MSGNET data build multi-mnist --variant pairs --num 1600 --val-fraction 0.0625 --test-fraction 0.3125 \
        --seed 2 --out "$DATA"
fi
[ -f "$OUT/broken/dataset.json" ] || $MSGNET data break-rule "$DATA" --out "$OUT/broken" --num "$NUM" --seed 0
$MSGNET train all --data "$DATA" --run "$OUT/msgnet" --budget "$BUDGET" --resume
PRESET="$OUT/msgnet/preset.yaml"   # the baselines train at the sizes and step counts MSGNet's budget gave
$MSGNET train cvqvae --config "$PRESET" --data "$DATA" --run "$OUT/cvqvae" --resume
$MSGNET train obj-cgan --config "$PRESET" --data "$DATA" --run "$OUT/obj-cgan" --resume
echo "training: $(( $(date +%s) - T0 )) s"
sample() {  # name run [extra sample options...]
    local name="$1" run="$2"; shift 2
    if [ ! -f "$OUT/gen-$name/dataset.json" ]; then
        local resume=""; [ -d "$OUT/gen-$name.partial" ] && resume="--resume"
        $MSGNET sample --run "$run" --num "$NUM" --seed 0 --batch-size 50 --out "$OUT/gen-$name" $resume "$@"
    fi
}
sample msgnet "$OUT/msgnet"
sample pre-msgnet "$OUT/msgnet" --layouts "$OUT/broken"
sample cvqvae "$OUT/cvqvae" --layouts "$OUT/broken"
sample obj-cgan "$OUT/obj-cgan" --layouts "$OUT/broken"
$MSGNET eval coherency --data "$OUT/gen-msgnet" --split train --json "$OUT/msgnet-coherency.json"
for name in msgnet pre-msgnet cvqvae obj-cgan; do
    $MSGNET eval fidelity --data "$OUT/gen-$name" --json "$OUT/$name-fidelity.json"
done
$MSGNET eval fidelity --data "$DATA" --split test --json "$OUT/real-fidelity.json"
echo "rule-breaking measurement finished in $(( $(date +%s) - T0 )) s"
