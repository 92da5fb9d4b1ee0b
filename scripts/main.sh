#!/usr/bin/env bash
# The main job: Multi-MNIST from the bundled real digits -> train all (CPU preset) ->
# 64 generated image + annotation pairs -> a short report. Re-running resumes.
#   RUN=runs/main PRESET=multi-mnist-cpu NUM=50000 bash scripts/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
MSGNET=.venv/bin/msgnet
RUN="${RUN:-runs/main}"
PRESET="${PRESET:-multi-mnist-cpu}"
NUM="${NUM:-50000}"
DATA="${DATA:-data/multi-mnist-standard-$NUM}"
mkdir -p "$RUN"
T0=$(date +%s)
if [ ! -f "$DATA/dataset.json" ]; then
    $MSGNET data build multi-mnist --variant standard --num "$NUM" --out "$DATA"
fi
T1=$(date +%s)
RESUME=""
[ -f "$RUN/preset.yaml" ] && RESUME="--resume"
$MSGNET train all --config "$PRESET" --data "$DATA" --run "$RUN" $RESUME
T2=$(date +%s)
SAMPLE_RESUME=""
[ -d "$RUN/samples.partial" ] && SAMPLE_RESUME="--resume"
[ -d "$RUN/samples" ] || $MSGNET sample --run "$RUN" --num 64 --out "$RUN/samples" --seed 0 $SAMPLE_RESUME
T3=$(date +%s)
$MSGNET report --run "$RUN" --samples "$RUN/samples" \
    --timing "build=$((T1 - T0))" --timing "train=$((T2 - T1))" --timing "sample=$((T3 - T2))"
echo "main job finished in $(( $(date +%s) - T0 )) s; report: $RUN/report.md"
