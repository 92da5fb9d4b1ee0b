#!/usr/bin/env bash
# The paper's CLEVR experiments at CPU scale (README "CLEVR"), each step resumable:
#  1. clevr-64: 1,600 rendered scenes (1,000 train / 100 val / 500 test, the Multi-MNIST job's
#     sizes); `msgnet run` with clevr-64-cpu: train all, sample through QC, U-Net benchmark
#     against standard augmentation and copy-paste (3 seeds).
#  2. clevr-192: rendered scenes; the layout prior of clevr-192-cpu trained on their layouts; the
#     rule coherency (centre object + one on the orbit) of sampled layouts with a 95% interval,
#     beside the real layouts brought through the same 24x24 grid.
#  3. Table 1's CLEVR row: pre-MSGNet (the run of step 1, given the real layouts) and obj-cGAN.
#   bash scripts/clevr.sh            (STEPS="1 2 3" by default; e.g. STEPS=2 for one)
# On a GPU: PRESET64=clevr-64 PRESET192=clevr-192 (the paper's sizes) and other RUN64/RUN192.
set -euo pipefail
MSGNET="${MSGNET:-.venv/bin/msgnet}"
STEPS="${STEPS:-1 2 3}"
D64="${D64:-data/clevr-64-1600}"
D192="${D192:-data/clevr-192-1000}"
NUM192="${NUM192:-1000}"
RUN64="${RUN64:-runs/clevr64}"
RUN192="${RUN192:-runs/clevr192}"
PRESET64="${PRESET64:-clevr-64-cpu}"
PRESET192="${PRESET192:-clevr-192-cpu}"
GAN_STEPS="${GAN_STEPS:-1400}"  # what obj-cGAN trained for in Table 1's Multi-MNIST row
build() {  # build DIR ARGS...: render a dataset unless it exists, resuming a stopped build
    local out="$1"; shift
    [ -f "$out/dataset.json" ] && return 0
    local resume=""; [ -d "$out.partial" ] && resume="--resume"
    $MSGNET data build clevr --workers 2 --out "$out" $resume "$@"
}
for step in $STEPS; do
    T0=$(date +%s)
    case "$step" in
    1)
        build "$D64" --variant clevr-64 --num 1600 --val-fraction 0.0625 --test-fraction 0.3125
        $MSGNET run "$D64" --run "$RUN64" --config "$PRESET64" --num 1000 --seeds 3 ;;
    2)
        build "$D192" --variant clevr-192 --num "$NUM192" --val-fraction 0.1
        resume=""; [ -d "$RUN192/layout_prior" ] && resume="--resume"
        $MSGNET train layout-prior --config "$PRESET192" --run "$RUN192" --data "$D192" $resume
        $MSGNET eval layouts --run "$RUN192" --num 1000 --json "$RUN192/coherency_sampled.json" \
            --preview "$RUN192/sampled_layouts.png"
        $MSGNET eval layouts --real "$D192" --grid 24 --num 100000 --json "$RUN192/coherency_real_grid.json" ;;
    3)
        MSGNET_RUN="$RUN64" DATA="$D64" OUT="${OUT_TABLE1:-runs/table1-clevr}" METHODS="pre-msgnet obj-cgan" REAL=0 \
            GAN_STEPS="$GAN_STEPS" MSGNET="$MSGNET" bash scripts/table1.sh ;;
    esac
    echo "clevr step $step: $(( $(date +%s) - T0 )) s"
done
