"""Training the cVQ-VAE baseline through msgnet's one loop: the model, then its codes prior.

``RUN/cvqvae/`` holds the layout-conditioned VQ-VAE, ``RUN/cvqvae_prior/`` a PixelSNAIL over
its H x W code maps conditioned on the H x W layout (the preset's ``prior`` section at the
latent grid). Both stages checkpoint, resume, validate and keep their best weights exactly
as MSGNet's stages do; the preset's ``vqvae_train`` and ``prior_train`` schedules apply.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from msgnet.baselines.cvqvae import CVQVAEConfig, LayoutConditionedVQVAE
from msgnet.config import PixelSNAILConfig, Preset
from msgnet.device import choose_device
from msgnet.layouts import downsample_layout
from msgnet.run_dir import stage
from msgnet.training.codebook_usage import CodebookUsage
from msgnet.training.loop import BaseStage, seed_everything, train
from msgnet.training.grid import save_grid
from msgnet.training.prior_stage import PriorStage, TensorRows
from msgnet.training.vqvae_stage import open_image_datasets

MODEL_DIR, PRIOR_DIR = stage("cvqvae").folder, stage("cvqvae-prior").folder  # the run registry's


class CVQVAEStage(BaseStage):
    """Loop stage for :class:`LayoutConditionedVQVAE`; batches are (images, layouts)."""

    name = MODEL_DIR
    kind = LayoutConditionedVQVAE.kind
    selection_metric = "mse"

    def __init__(self, config: CVQVAEConfig, seed: int = 0) -> None:
        self.config = config
        self.model = LayoutConditionedVQVAE(config)
        self.codes = CodebookUsage(("",), config.num_embeddings, seed)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        images, layouts = batch
        self.codes.to(images.device)
        if self.config.restart_dead_codes and self.codes.due(step):  # as MSGNet's VQ-VAE: without, it collapses
            m = self.model
            self.codes.restart((m.quantizer,), lambda x: (m.encode(x),), m, images, step)
        out = model(images, layouts)
        self.codes.observe(out.counts)
        return out.loss, {"loss": out.loss.detach(), "mse": out.reconstruction_loss.detach() / 4.0,
                          "ppl": out.perplexities[0].detach()}

    def on_epoch_end(self, model: nn.Module, epoch: int, dist: Any) -> dict[str, float]:
        return self.codes.epoch_end(dist, self.config.restart_dead_codes)

    def state_dict(self) -> dict[str, Any]:
        return self.codes.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.codes.load_state_dict(state)

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        sq, pixels = 0.0, 0
        for images, layouts in batches:
            recon = model(images, layouts).reconstruction.clamp(0, 1)
            sq += float((recon - images).pow(2).sum())
            pixels += images.numel()
        return {"mse": sq / pixels} if pixels else {}

    def write_images(self, model: nn.Module, batch: Any, path: Path) -> None:
        images, layouts = batch
        save_grid([images, model(images, layouts).reconstruction.clamp(0, 1)], path)


def prior_config(preset: Preset, config: CVQVAEConfig) -> PixelSNAILConfig:
    """The preset's codes prior, over the H x W code map, conditioned on the H x W layout."""
    lat = config.latent_size
    return replace(preset.prior, height=lat, width=lat, num_classes=config.num_embeddings,
                   num_condition_classes=config.num_classes)


@torch.no_grad()
def encode_split(model: LayoutConditionedVQVAE, dataset: Any, device: torch.device,
                 batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes (N, h, w), layouts on the latent grid (N, h, w)) of an ImageLayoutDataset, int64 on CPU."""
    model = model.to(device).eval()
    codes = [model.encode_indices(dataset.images[s : s + batch_size].to(device).float() / 255.0).cpu()
             for s in range(0, len(dataset), batch_size)]
    small = downsample_layout(dataset.layouts, model.config.latent_size, num_classes=model.config.num_classes)
    return torch.cat(codes), torch.as_tensor(np.asarray(small)).long()


def train_cvqvae(preset: Preset, data_dir: Path, run_dir: Path, resume: bool = False, device: str | None = None,
                 train_ids: Sequence[int] | None = None) -> Path:
    """Train the baseline and its prior on ``data_dir`` (only ``train_ids`` of its train split, if given)."""
    config = CVQVAEConfig.from_preset(preset)
    train_set, val_set = open_image_datasets(preset.vqvae, Path(data_dir), train_ids)
    seed_everything(preset.vqvae_train.seed)
    stage = CVQVAEStage(config, preset.vqvae_train.seed)
    model_dir = train(stage, train_set, val_set, preset.vqvae_train, Path(run_dir), resume=resume,
                      device=device).model_dir
    model = LayoutConditionedVQVAE.from_pretrained(model_dir)
    dev = choose_device(device)
    codes, small = encode_split(model, train_set, dev)
    train_tensors = TensorRows(codes, small)
    val_tensors = TensorRows(*encode_split(model, val_set, dev)) if len(val_set) else []
    tc = preset.prior_train
    seed_everything(tc.seed)
    prior_stage = PriorStage(prior_config(preset, config), val_set=val_tensors, val_samples=tc.val_samples,
                             batch_size=tc.batch_size)
    prior_stage.name = PRIOR_DIR
    return train(prior_stage, train_tensors, val_tensors, tc, Path(run_dir), resume=resume, device=device).model_dir
