"""Adherence while training: does the codes prior's output show what its layouts say?

The codes prior's validation loss says how well it models codes, not whether the decoded images show
the objects of their layouts; the two can part (a prior can lower its loss by learning strokes and
textures long before it learns which digit a layout names). So the prior's validation also decodes a
few sampled code maps and scores them against their layouts with the consistency segmenter of
quality control (a U-Net trained on the run's real training images, :mod:`msgnet.evaluation.qc.segmenter`):

``adherence`` = the mean over ``pairs`` validation layouts of the pooled DICE between what the
segmenter sees in the decoded image and the layout (real validation images score the segmenter's own
DICE, the ceiling). The layouts, the uniforms and hence every figure are fixed for a run, so the
curve moves only with the prior's weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from msgnet.evaluation.qc.scores import pair_dice
from msgnet.evaluation.qc.segmenter import Segmenter
from msgnet.layouts import upsample_layout
from msgnet.models.latents import split_codes, stack_layout


class AdherenceProbe:
    """Scores a codes prior by its decoded samples' agreement with their layouts (see the module docstring)."""

    def __init__(self, vqvae: nn.Module, segmenter: Segmenter, layouts: torch.Tensor, image_size: tuple[int, int],
                 num_classes: int, seed: int = 0) -> None:
        self.vqvae = vqvae.eval()
        self.segmenter = segmenter
        self.layouts = layouts.long().cpu()  # (K, h, w) at the latent grid
        self.full = torch.from_numpy(upsample_layout(self.layouts.numpy().astype(np.uint8), image_size).astype(np.int64))
        self.num_classes = num_classes
        self.seed = seed

    @torch.no_grad()
    def __call__(self, prior: nn.Module) -> float:
        from msgnet.sampling.cached import sample_cached

        device = next(prior.parameters()).device
        k = len(self.layouts)
        codes = sample_cached(prior, k, stack_layout(self.layouts).to(device),  # type: ignore[arg-type]
                              generator=torch.Generator().manual_seed(self.seed), batch_size=k)
        attn, conv = split_codes(codes.to(next(self.vqvae.parameters()).device))
        layout = self.full.to(attn.device) if getattr(self.vqvae, "told_layout", False) else None
        images = self.vqvae.decode_indices(attn, conv, layout)  # type: ignore[operator]
        uint8 = (images.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
        pred, _ = self.segmenter.segment(uint8)
        return float(np.mean(pair_dice(pred.cpu(), self.full, self.num_classes)))


def adherence_probe(run_dir: Path, pairs: int, device: torch.device, seed: int = 0) -> AdherenceProbe | None:
    """A probe over the first ``pairs`` validation layouts of ``run_dir/codes``, with the run's VQ-VAE and
    the QC segmenter cached in ``RUN/qc/segmenter`` (``msgnet run`` trains it before the generator);
    None when no segmenter trained on the run's training images is there."""
    from msgnet.data.format import open_dataset
    from msgnet.evaluation.qc.segmenter import load_segmenter_trained_on
    from msgnet.models.vqvae import DoublePathVQVAE
    from msgnet.sampling.run import read_run_info, run_training_data
    from msgnet.training.codes import load_codes
    from msgnet.run_dir import RunDir

    data, ids = run_training_data(run_dir)
    real = open_dataset(data)
    train_ids = ids if ids is not None else [int(i) for i in real.ids("train")]
    segmenter = load_segmenter_trained_on(RunDir(run_dir).qc_segmenter, real.root, train_ids, device)
    if segmenter is None:
        return None
    _, layouts, _ = load_codes(run_dir, "val", 0)
    info = read_run_info(run_dir)
    vqvae = DoublePathVQVAE.from_pretrained(RunDir(run_dir).vqvae, device)
    return AdherenceProbe(vqvae, segmenter, layouts[:pairs], info.image_size, info.num_classes, seed)
