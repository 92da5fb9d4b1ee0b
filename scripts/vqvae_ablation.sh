#!/usr/bin/env bash
# Where the VQ-VAE loses the layout, per training option (docs/adherence.md, "The VQ-VAE's options").
# Trains the main job's derived VQ-VAE structure alone (1,200 steps, batch 32, lr 2e-3, the dataset's
# transforms), once per row, then `msgnet eval vqvae` on the 100 validation images: reconstruction
# fidelity, decoder obedience, PSNR, codes used per path. Needs the main job's data (bash scripts/main.sh
# builds data/multi-mnist-1000); the structure is derived from it below (RUN/structure.yaml) with today's
# paper VQ-VAE, and each row switches options on. Rows are independent: two can run at once
# (OMP_NUM_THREADS=1 each), their figures do not depend on time.
#   bash scripts/vqvae_ablation.sh [ROW ...]   # rows: paper told fsq told-fsq obedience obedience-0.1 replacement
#                                              # adversary realism critic critic-only critic-w32 critic-w16
#                                              # w32-obedience-0.05 w32-critic-0.1 w32-codes-45 w32-codes-120
#                                              # w32-blur-1 w32-blur-2 w32-blur-1.5 blur-1-obedience-0.05
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-data/multi-mnist-1000}"
OUT="${OUT:-runs/ablation}"
STEPS="${STEPS:-1200}"
mkdir -p "$OUT"
if [ ! -f "$OUT/structure.yaml" ]; then
    .venv/bin/python - "$DATA" "$OUT/structure.yaml" <<'PY'
import sys, yaml
from dataclasses import replace
from msgnet.config import to_dict
from msgnet.data.format import open_dataset
from msgnet.preset_derivation import derive_structure
info = open_dataset(sys.argv[1]).info
preset, _ = derive_structure(info, len(open_dataset(sys.argv[1]).ids("train")), gpu=False)
# Today's (paper) VQ-VAE: learned codebooks with restarts, a decoder that sees the codes only.
vq = replace(preset.vqvae, quantizer="vq", fsq_levels="", num_embeddings=256, restart_dead_codes=True,
             layout_classes=0, obedience=0.0)
preset = replace(preset, vqvae=vq, prior=replace(preset.prior, num_classes=256))
open(sys.argv[2], "w").write(yaml.safe_dump(to_dict(preset), sort_keys=False))
PY
fi
FSQ="vqvae.quantizer=fsq vqvae.fsq_levels=8,6,5 vqvae.num_embeddings=240 prior.num_classes=240 vqvae.restart_dead_codes=false"
W32="vqvae.layout_critic=0.05 vqvae.layout_critic_width=32"
# A tighter code alphabet (issue: codes that carry style, not the class): 45 and 120 codes a path.
FSQ45="vqvae.quantizer=fsq vqvae.fsq_levels=5,3,3 vqvae.num_embeddings=45 prior.num_classes=45 vqvae.restart_dead_codes=false"
FSQ120="vqvae.quantizer=fsq vqvae.fsq_levels=8,5,3 vqvae.num_embeddings=120 prior.num_classes=120 vqvae.restart_dead_codes=false"
declare -A ROWS=(
    [paper]=""
    [told]="vqvae.layout_classes=11"
    [fsq]="$FSQ"
    [told-fsq]="vqvae.layout_classes=11 $FSQ"
    [obedience]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02"
    [obedience-0.1]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.1"
    [replacement]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 vqvae.code_replacement=0.3"
    [adversary]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 vqvae.class_adversary=0.1"
    [realism]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 vqvae.obedience_realism=true"
    [critic]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 vqvae.layout_critic=0.05"
    [critic-only]="vqvae.layout_classes=11 $FSQ vqvae.layout_critic=0.05"
    [critic-w32]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 vqvae.layout_critic=0.05 vqvae.layout_critic_width=32"
    [critic-w16]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 vqvae.layout_critic=0.05 vqvae.layout_critic_width=16"
    [w32-obedience-0.05]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.05 $W32"
    [w32-critic-0.1]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 vqvae.layout_critic=0.1 vqvae.layout_critic_width=32"
    [w32-codes-45]="vqvae.layout_classes=11 $FSQ45 vqvae.obedience=0.02 $W32"
    [w32-codes-120]="vqvae.layout_classes=11 $FSQ120 vqvae.obedience=0.02 $W32"
    # The obedience loss's reader sees the images blurred (Gaussian sigma 1 or 2 pixels): shape, not texture.
    [w32-blur-1]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 $W32 vqvae.reader_blur=1"
    [w32-blur-2]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 $W32 vqvae.reader_blur=2"
    [w32-blur-1.5]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.02 $W32 vqvae.reader_blur=1.5"
    [blur-1-obedience-0.05]="vqvae.layout_classes=11 $FSQ vqvae.obedience=0.05 $W32 vqvae.reader_blur=1"
)
for row in "${@:-paper told fsq told-fsq obedience obedience-0.1 replacement adversary realism critic critic-only critic-w32 critic-w16 w32-obedience-0.05 w32-critic-0.1 w32-codes-45 w32-codes-120 w32-blur-1 w32-blur-2 w32-blur-1.5 blur-1-obedience-0.05}"; do
    for name in $row; do
        run="$OUT/vqvae-$name"
        if [ ! -f "$run/vqvae.json" ]; then
            rm -rf "$run"
            # shellcheck disable=SC2086
            .venv/bin/msgnet train vqvae --config "$OUT/structure.yaml" --data "$DATA" --run "$run" \
                vqvae_train.iterations="$STEPS" vqvae_train.learning_rate=0.002 vqvae_train.augment=true \
                vqvae_train.checkpoint_every=100000 vqvae_train.image_every=100000 ${ROWS[$name]}
            .venv/bin/msgnet eval vqvae --run "$run" --data "$DATA" --json "$run/vqvae.json"
        fi
    done
done
# The table docs/adherence.md shows: one row per trained option set.
.venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
print("| row | reconstruction fidelity (95% CI) | decoder obedience (95% CI) | PSNR | codes used: attention / conv path |")
print("|---|---|---|---|---|")
for path in sorted(Path(sys.argv[1]).glob("vqvae-*/vqvae.json")):
    r = json.loads(path.read_text())
    def rate(key):
        if key not in r:
            return "—"
        return f"{100 * r[key]:.1f}% ({100 * r[key + '_ci95_low']:.1f}–{100 * r[key + '_ci95_high']:.1f})"
    k = round(r["used_codes_attn"] / r["used_share_attn"]) if r["used_share_attn"] else 0
    print(f"| {path.parent.name[len('vqvae-'):]} | {rate('reconstruction_fidelity')} | {rate('decoder_obedience')} | "
          f"{r['psnr']:.2f} dB | {int(r['used_codes_attn'])} / {int(r['used_codes_conv'])} of {k} |")
PY
