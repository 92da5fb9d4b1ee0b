#!/usr/bin/env bash
# Rebuild the pictures in docs/images/ from the runs that make them.
#
# Each line below names a picture, the files it is made from and the documented command that makes
# them. A picture whose inputs are not on this machine is skipped with one line naming that command,
# so the script runs anywhere; the rest are redrawn by msgnet (or copied from the preview msgnet wrote
# into the run) in a scratch folder, then moved over the picture in docs/images/. Nothing is written
# in place, so no msgnet command refuses a picture this script made before.
# Usage: bash scripts/figures.sh [NAME ...]   (no names: every picture; `inspect` is fig3 and fig4)
set -uo pipefail
cd "$(dirname "$0")/.."
M=.venv/bin/msgnet
OUT="${FIGURES_OUT:-docs/images}"  # FIGURES_OUT=DIR: rebuild into DIR instead (to compare before replacing)
W=$(mktemp -d)  # the scratch folder a command writes its picture into
trap 'rm -rf "$W"' EXIT
built=0 skipped=0 failed=0
WANT="$*"

figure() {  # figure NAME "NEEDS..." MAKES -- COMMAND...   (COMMAND writes $W/pic/NAME)
    local name=$1 needs=$2 makes=$3 need f; shift 4
    if [ -n "$WANT" ] && [[ " $WANT " != *" $name "* ]]; then return; fi
    for need in $needs; do
        if [ ! -e "$need" ]; then
            echo "skip  $name: needs $need (made by: $makes)"; skipped=$((skipped + 1)); return
        fi
    done
    rm -rf "$W/pic" && mkdir -p "$W/pic"
    if ! "$@" >"$W/log" 2>&1; then
        echo "FAIL  $name: $*" >&2; tail -n 5 "$W/log" >&2; failed=$((failed + 1)); return
    fi
    # Every file the command wrote goes to the same place under $OUT (a temporary name, then a rename).
    while IFS= read -r f; do
        mkdir -p "$OUT/$(dirname "$f")" && cp "$W/pic/$f" "$OUT/$f.tmp" && mv -f "$OUT/$f.tmp" "$OUT/$f"
    done < <(cd "$W/pic" && find . -type f | sed 's|^\./||')
    echo "built $name  <- $needs"; built=$((built + 1))
}
copy_last() { cp "$1/$(ls "$1" | sort | tail -n 1)" "$2"; }  # copy_last DIR DEST: DIR's last step_XXXXXXX.png
P="$W/pic"

# runs/job from `bash scripts/main.sh` (README)
figure main_job_kept_pairs_cpu.png runs/job/generated/preview.png "bash scripts/main.sh" -- \
    cp runs/job/generated/preview.png $P/main_job_kept_pairs_cpu.png
# runs/job, runs/job30, runs/job60 from `bash scripts/main.sh` with RUN=runs/jobM BUDGET=M (M = 30, 60; 12 is the
# default), then `.venv/bin/python scripts/adherence.py --run RUN --guidance 1` on each (docs/pair-policies.md)
# The three runs must be trained by the same msgnet (the picture in docs/ predates the budget's 45/15/40 split).
figure budget_curve_cpu.png "runs/job/adherence.json runs/job30/adherence.json runs/job60/adherence.json" "bash scripts/main.sh and scripts/adherence.py (docs/pair-policies.md, 'How long to train')" -- \
    .venv/bin/python scripts/budget_curve.py --run 12=runs/job --run 30=runs/job30 --run 60=runs/job60 --out $P/budget_curve_cpu.png
# runs/job1k from `msgnet run data/mm1k --run runs/job1k --budget 10 --num 300 --seeds 2` (results.md, "Your dataset in one command")
figure job1k_kept_pairs_cpu.png runs/job1k/report/generated_preview.png "msgnet run data/mm1k --run runs/job1k (docs/results.md, 'Your dataset in one command')" -- \
    cp runs/job1k/report/generated_preview.png $P/job1k_kept_pairs_cpu.png
# runs/low-100 from `msgnet run data/multi-mnist-1000 --run runs/low-100 --train-subset 100 ...` (results.md, "Low-data result")
figure low_data_n100_kept_pairs_cpu.png runs/low-100/generated/preview.png "msgnet run data/multi-mnist-1000 --run runs/low-100 --train-subset 100 (docs/results.md, 'Low-data result')" -- \
    cp runs/low-100/generated/preview.png $P/low_data_n100_kept_pairs_cpu.png
# runs/ihc from `python scripts/ihc_tiles.py`, `msgnet data import folder ...`, `msgnet run data/ihc --run runs/ihc ...` (results.md, "Own data")
figure ihc_kept_pairs_cpu.png runs/ihc/generated/preview.png "the three commands of docs/results.md, 'Own data'" -- \
    cp runs/ihc/generated/preview.png $P/ihc_kept_pairs_cpu.png
# runs/main from `msgnet train all --config multi-mnist-cpu --data data/multi-mnist-standard-50000 --run runs/main`,
# then `msgnet sample --run runs/main --num 64 --out runs/main/samples --seed 0` (results.md, "the run runs/main")
figure main_job_samples.png runs/main/samples/preview.png "the commands of docs/results.md, 'the run runs/main'" -- \
    cp runs/main/samples/preview.png $P/main_job_samples.png
# runs/main's VQ-VAE: the image grid of its last validation (as main_job_samples.png)
figure vqvae_reconstructions_cpu_preset.png runs/main/vqvae/images "the commands of docs/results.md, 'the run runs/main'" -- \
    copy_last runs/main/vqvae/images $P/vqvae_reconstructions_cpu_preset.png
# runs/main as above; data/mm5k from `msgnet data build multi-mnist --variant standard --num 5000 --seed 1 --out data/mm5k`
figure inspect "runs/main/vqvae/model.safetensors data/mm5k/images/000000.png data/mm5k/layouts/000000.png" "the commands of docs/results.md, 'the run runs/main' and 'The augmentation benchmark'" -- \
    $M vqvae inspect --run runs/main --image data/mm5k/images/000000.png --layout data/mm5k/layouts/000000.png \
        --pixel 50,10 --out $P/inspect
# runs/main/qc16 from `msgnet sample --run runs/main --num 16 --qc --seed 1 --batch-size 64 --qc-max-candidates 40000 --out runs/main/qc16`
figure qc_kept_cpu.png runs/main/qc16/preview.png "msgnet sample --run runs/main --qc ... --out runs/main/qc16 (docs/results.md, 'Quality control')" -- \
    cp runs/main/qc16/preview.png $P/qc_kept_cpu.png
# runs/main/gen5k-qc from `msgnet qc --data runs/main/gen5k --real data/multi-mnist-standard-50000 --out runs/main/gen5k-qc`
figure qc_rejected_cpu.png runs/main/gen5k-qc/rejected.png "msgnet qc --data runs/main/gen5k ... --out runs/main/gen5k-qc (docs/results.md, 'Quality control')" -- \
    cp runs/main/gen5k-qc/rejected.png $P/qc_rejected_cpu.png
# data/clevr-64-1600 from `bash scripts/clevr.sh` (step 1); the preview `msgnet data info` draws (docs/data.md)
figure clevr64_preview.png data/clevr-64-1600/dataset.json "bash scripts/clevr.sh" -- \
    $M data info data/clevr-64-1600 --preview $P/clevr64_preview.png
# runs/clevr64 from `bash scripts/clevr.sh` (step 1)
figure clevr64_generated_cpu.png runs/clevr64/generated/preview.png "bash scripts/clevr.sh" -- \
    cp runs/clevr64/generated/preview.png $P/clevr64_generated_cpu.png
# runs/table1-clevr from `bash scripts/clevr.sh` (step 3)
figure clevr64_fig5_cpu.png "data/clevr-64-1600/dataset.json runs/table1-clevr/gen-obj-cgan/dataset.json runs/table1-clevr/gen-pre-msgnet/dataset.json" "bash scripts/clevr.sh" -- \
    $M data compare data/clevr-64-1600 runs/table1-clevr/gen-obj-cgan runs/table1-clevr/gen-pre-msgnet --num 8 --out $P/clevr64_fig5_cpu.png
# runs/clevr192 from `bash scripts/clevr.sh` (step 2: `msgnet eval layouts --run runs/clevr192 --num 1000 --preview ...`)
figure layouts_clevr192_cpu.png runs/clevr192/sampled_layouts.png "bash scripts/clevr.sh" -- \
    cp runs/clevr192/sampled_layouts.png $P/layouts_clevr192_cpu.png
# runs/table1 from `bash scripts/table1.sh` (MSGNET_RUN=runs/job)
figure table1_given_layouts_cpu.png "data/multi-mnist-1000/dataset.json runs/table1/gen-pre-msgnet/dataset.json runs/table1/gen-cvqvae/dataset.json runs/table1/gen-obj-cgan/dataset.json" "bash scripts/table1.sh" -- \
    $M data compare data/multi-mnist-1000 runs/table1/gen-pre-msgnet runs/table1/gen-cvqvae runs/table1/gen-obj-cgan --num 12 --out $P/table1_given_layouts_cpu.png
# runs/rule from `bash scripts/rule_breaking.sh`
figure rule_breaking_given_cpu.png "runs/rule/broken/dataset.json runs/rule/gen-obj-cgan/dataset.json runs/rule/gen-cvqvae/dataset.json runs/rule/gen-pre-msgnet/dataset.json" "bash scripts/rule_breaking.sh" -- \
    $M data compare runs/rule/broken runs/rule/gen-obj-cgan runs/rule/gen-cvqvae runs/rule/gen-pre-msgnet --num 10 --out $P/rule_breaking_given_cpu.png
figure rule_breaking_msgnet_cpu.png runs/rule/gen-msgnet/dataset.json "bash scripts/rule_breaking.sh" -- \
    $M data compare runs/rule/gen-msgnet --num 10 --out $P/rule_breaking_msgnet_cpu.png
# runs/main-pairs, runs/main-upper: RUN of `msgnet train layout-prior --config multi-mnist-cpu --data data/multi-mnist-V --run RUN`
# with V = pairs, upper-half (results.md, "Rule coherency"); the preview is `msgnet eval layouts`' (seed 0)
figure layouts_pairs_cpu.png runs/main-pairs/layout_prior/model.safetensors "msgnet train layout-prior --config multi-mnist-cpu --data data/multi-mnist-pairs --run runs/main-pairs (docs/results.md, 'Rule coherency')" -- \
    $M eval layouts --run runs/main-pairs --num 1000 --preview $P/layouts_pairs_cpu.png
figure layouts_upper_half_cpu.png runs/main-upper/layout_prior/model.safetensors "msgnet train layout-prior --config multi-mnist-cpu --data data/multi-mnist-upper-half --run runs/main-upper (docs/results.md, 'Rule coherency')" -- \
    $M eval layouts --run runs/main-upper --num 1000 --parts region --preview $P/layouts_upper_half_cpu.png
# runs/border-off, runs/border-on from the commands of results.md, "Edge artefacts"
figure border_artefacts_cpu.png "runs/border-off/gen/dataset.json runs/border-on/gen/dataset.json" "the commands of docs/results.md, 'Edge artefacts'" -- \
    $M data compare runs/border-off/gen runs/border-on/gen --num 8 --out $P/border_artefacts_cpu.png

echo "figures: $built rebuilt, $skipped skipped (their runs are not here), $failed failed"
[ "$failed" -eq 0 ]
