#!/usr/bin/env bash
# The main job, a user's job in miniature: a small Multi-MNIST set (1,000 training images,
# 100 validation, 500 test, from the bundled real digits) -> `msgnet run`: a preset derived
# from the data and a CPU budget, training, sampling through quality control, the U-Net
# benchmark against standard augmentation and copy-paste, and a report whose first line says
# whether msgnet's pairs helped. Re-running resumes.
#   RUN=runs/job BUDGET=12 NUM=200 SEEDS=3 bash scripts/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MSGNET=.venv/bin/msgnet
RUN="${RUN:-runs/job}"
DATA="${DATA:-data/multi-mnist-1000}"
BUDGET="${BUDGET:-12}"   # training minutes (the preset is derived to fill them)
NUM="${NUM:-200}"        # generated pairs that must pass quality control
SEEDS="${SEEDS:-3}"      # U-Net seeds per benchmark setting
T0=$(date +%s)
if [ ! -f "$DATA/dataset.json" ]; then
    # 1,600 images: 1,000 train, 100 val (6.25%), 500 test (31.25%); digits never shared between splits
    $MSGNET data build multi-mnist --variant standard --num 1600 --val-fraction 0.0625 \
        --test-fraction 0.3125 --seed 2 --out "$DATA"
fi
$MSGNET run "$DATA" --run "$RUN" --budget "$BUDGET" --num "$NUM" --seeds "$SEEDS" \
    --qc-max-candidates $((20 * NUM))
echo "main job finished in $(( $(date +%s) - T0 )) s; report: $RUN/report/report.md (and report.html)"
