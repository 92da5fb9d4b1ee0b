#!/usr/bin/env bash
# The paper's Table 1 on Multi-MNIST at CPU scale: pre-MSGNet, cVQ-VAE and obj-cGAN trained on the
# same 1,000 real images with the same preset, each given the same 1,000 real training layouts,
# scored by the U-Net benchmark: "accuracy" = real + generated (1:1), "diversity" = generated only,
# 3 U-Net seeds, tested on the 500 real test images.
#   MSGNET_RUN=runs/job OUT=runs/table1 bash scripts/table1.sh
# MSGNET_RUN is a trained msgnet run on DATA (the main job's); its preset.yaml sizes the baselines.
# METHODS picks the generators (the paper's CLEVR row has no cVQ-VAE); REAL=0 leaves out the
# real-only U-Nets where MSGNET_RUN's benchmark.json already holds them (same protocol and seeds);
# GAN_STEPS fixes obj-cGAN's steps (default: MSGNet's three stages' steps within their caps).
set -euo pipefail
MSGNET="${MSGNET:-.venv/bin/msgnet}"
DATA="${DATA:-data/multi-mnist-1000}"
MSGNET_RUN="${MSGNET_RUN:-runs/job}"
OUT="${OUT:-runs/table1}"
NUM="${NUM:-1000}"
SEEDS="${SEEDS:-3}"
METHODS="${METHODS:-pre-msgnet cvqvae obj-cgan}"
REAL="${REAL:-1}"
GAN_STEPS="${GAN_STEPS:-}"
PRESET="$MSGNET_RUN/preset.yaml"
mkdir -p "$OUT"
T0=$(date +%s)
has() { [[ " $METHODS " == *" $1 "* ]]; }
if has cvqvae; then $MSGNET train cvqvae --config "$PRESET" --data "$DATA" --run "$OUT/cvqvae" --resume; fi
if has obj-cgan; then
    $MSGNET train obj-cgan --config "$PRESET" --data "$DATA" --run "$OUT/obj-cgan" --resume ${GAN_STEPS:+--steps "$GAN_STEPS"}
fi
echo "training: $(( $(date +%s) - T0 )) s"
for pair in "pre-msgnet:$MSGNET_RUN" "cvqvae:$OUT/cvqvae" "obj-cgan:$OUT/obj-cgan"; do
    name="${pair%%:*}"; run="${pair#*:}"
    has "$name" || continue
    if [ ! -f "$OUT/gen-$name/dataset.json" ]; then
        resume=""; [ -d "$OUT/gen-$name.partial" ] && resume="--resume"
        $MSGNET sample --run "$run" --num "$NUM" --layouts "$DATA" --seed 0 --batch-size 50 \
            --out "$OUT/gen-$name" $resume
    fi
done
echo "sampling done: $(( $(date +%s) - T0 )) s"
for name in $METHODS; do
    resume=""; [ -f "$OUT/$name.json" ] && resume="--resume"
    settings="synthetic,synthetic-only"; [ "$name" = pre-msgnet ] && [ "$REAL" = 1 ] && settings="real,$settings"  # real once
    $MSGNET eval augment --real "$DATA" --synthetic "$OUT/gen-$name" --settings "$settings" \
        --seeds "$SEEDS" --json "$OUT/$name.json" $resume
done
echo "table 1 finished in $(( $(date +%s) - T0 )) s"
