#!/usr/bin/env bash
# Rebuild the pictures in docs/images/ from the runs that make them.
#
# Each line below names a picture, the run folder it needs and how it is made from it. A picture
# whose run is not on this machine is skipped with the command that makes the run; the rest are
# rebuilt in place (msgnet's own plots are redrawn from the run's JSON, previews copied).
# Usage: bash scripts/figures.sh [NAME ...]   (no names: every picture)
set -uo pipefail
cd "$(dirname "$0")/.."
M=.venv/bin/msgnet
OUT=docs/images
built=0 skipped=0

figure() {  # figure NAME NEEDS MAKES_NEEDS -- COMMAND...   (COMMAND writes $OUT/NAME)
    local name=$1 needs=$2 makes=$3; shift 4
    if [ -n "${WANT:-}" ] && [[ " $WANT " != *" $name "* ]]; then return; fi
    if [ ! -e "$needs" ]; then
        echo "skip  $name: needs $needs (made by: $makes)"; skipped=$((skipped + 1)); return
    fi
    if "$@" >/dev/null; then
        echo "built $name  <- $needs"; built=$((built + 1))
    else
        echo "FAIL  $name: $*" >&2; exit 1
    fi
}
report() {  # the job report's plots, redrawn from a benchmark JSON; PNG = which of them
    local json=$1 png=$2 dest=$3 tmp
    tmp=$(mktemp -d) && $M eval report --augment "$json" --out "$tmp/r" && cp "$tmp/r/$png" "$dest" && rm -rf "$tmp"
}
WANT="$*"

figure main_job_kept_pairs_cpu.png runs/job/generated/preview.png "bash scripts/main.sh" -- \
    cp runs/job/generated/preview.png $OUT/main_job_kept_pairs_cpu.png
figure augment_dice_vs_n_cpu.png runs/bench/cpu.json "the commands in docs/results.md, 'Does adding generated pairs help?'" -- \
    report runs/bench/cpu.json augment_dice_vs_n.png $OUT/augment_dice_vs_n_cpu.png
figure augment_real_curves_cpu.png runs/bench/cpu.json "as augment_dice_vs_n_cpu.png" -- \
    report runs/bench/cpu.json augment_real_curves.png $OUT/augment_real_curves_cpu.png
figure job1k_kept_pairs_cpu.png runs/job1k/report/generated_preview.png "msgnet run (docs/results.md, 'Your dataset in one command')" -- \
    cp runs/job1k/report/generated_preview.png $OUT/job1k_kept_pairs_cpu.png
figure low_data_n100_kept_pairs_cpu.png runs/n100-job/generated/preview.png "msgnet run --train-subset 100 (docs/results.md, 'Low-data result')" -- \
    cp runs/n100-job/generated/preview.png $OUT/low_data_n100_kept_pairs_cpu.png
figure ihc_kept_pairs_cpu.png runs/ihc/generated/preview.png "python scripts/ihc_tiles.py, then msgnet run (docs/results.md, 'Own data')" -- \
    cp runs/ihc/generated/preview.png $OUT/ihc_kept_pairs_cpu.png
figure main_job_samples.png runs/main/samples/preview.png "msgnet train all --config multi-mnist-cpu (docs/results.md, 'the run runs/main')" -- \
    cp runs/main/samples/preview.png $OUT/main_job_samples.png
figure vqvae_reconstructions_cpu_preset.png runs/main/vqvae/images/step_0002000.png "as main_job_samples.png" -- \
    cp runs/main/vqvae/images/step_0002000.png $OUT/vqvae_reconstructions_cpu_preset.png
figure qc_kept_cpu.png runs/main/qc16/preview.png "msgnet sample --run runs/main --qc (docs/results.md, 'Quality control')" -- \
    cp runs/main/qc16/preview.png $OUT/qc_kept_cpu.png
figure qc_rejected_cpu.png runs/main/gen5k-qc/rejected.png "msgnet qc runs/main/gen5k (docs/results.md, 'Quality control')" -- \
    cp runs/main/gen5k-qc/rejected.png $OUT/qc_rejected_cpu.png
figure qc_histograms_cpu.png runs/main/gen5k-qc/qc_histograms.png "as qc_rejected_cpu.png" -- \
    cp runs/main/gen5k-qc/qc_histograms.png $OUT/qc_histograms_cpu.png
figure clevr64_preview.png data/clevr-64-1600/preview.png "bash scripts/clevr.sh" -- \
    cp data/clevr-64-1600/preview.png $OUT/clevr64_preview.png
figure clevr64_generated_cpu.png runs/clevr64/generated/preview.png "bash scripts/clevr.sh" -- \
    cp runs/clevr64/generated/preview.png $OUT/clevr64_generated_cpu.png
figure clevr64_fig5_cpu.png runs/table1-clevr/gen-pre-msgnet "bash scripts/clevr.sh" -- \
    $M data compare data/clevr-64-1600 runs/table1-clevr/gen-obj-cgan runs/table1-clevr/gen-pre-msgnet --num 8 --out $OUT/clevr64_fig5_cpu.png
figure table1_given_layouts_cpu.png runs/table1/gen-obj-cgan "bash scripts/table1.sh" -- \
    $M data compare data/multi-mnist-1000 runs/table1/gen-pre-msgnet runs/table1/gen-cvqvae runs/table1/gen-obj-cgan --num 12 --out $OUT/table1_given_layouts_cpu.png
figure rule_breaking_given_cpu.png runs/rule/gen-pre-msgnet "bash scripts/rule_breaking.sh" -- \
    $M data compare runs/rule/broken runs/rule/gen-obj-cgan runs/rule/gen-cvqvae runs/rule/gen-pre-msgnet --num 10 --out $OUT/rule_breaking_given_cpu.png
figure rule_breaking_msgnet_cpu.png runs/rule/gen-msgnet "bash scripts/rule_breaking.sh" -- \
    $M data compare runs/rule/gen-msgnet --num 10 --out $OUT/rule_breaking_msgnet_cpu.png
figure layouts_pairs_cpu.png runs/main-pairs "msgnet train all on the 'pairs' variant (docs/results.md, 'Rule coherency')" -- \
    $M eval layouts --run runs/main-pairs --real data/mm-pairs --num 1000 --preview $OUT/layouts_pairs_cpu.png
figure layouts_upper_half_cpu.png runs/main-upper "msgnet train all on the 'upper-half' variant (docs/results.md, 'Rule coherency')" -- \
    $M eval layouts --run runs/main-upper --real data/mm-upper --num 1000 --parts region --preview $OUT/layouts_upper_half_cpu.png
figure layouts_clevr192_cpu.png runs/clevr192 "bash scripts/clevr.sh" -- \
    $M eval layouts --run runs/clevr192 --real data/clevr-192-1000 --num 1000 --preview $OUT/layouts_clevr192_cpu.png
figure border_artefacts_cpu.png runs/border-on/gen "the commands in docs/results.md, 'Edge artefacts'" -- \
    $M data compare runs/border-off/gen runs/border-on/gen --num 8 --out $OUT/border_artefacts_cpu.png
figure inspect/fig3_paths.png runs/main/vqvae "as main_job_samples.png" -- \
    $M vqvae inspect --run runs/main --image data/mm5k/images/000000.png --pixel 50,10 --out $OUT/inspect

echo "figures: $built rebuilt, $skipped skipped (their runs are not here)"
