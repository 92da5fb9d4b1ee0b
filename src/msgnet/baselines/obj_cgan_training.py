"""Training obj-cGAN through msgnet's one loop (checkpoints, exact resume, DDP, progress bar).

``RUN/obj_cgan/`` holds the generator and discriminator together (:class:`ObjCGAN`). Its
schedule (:func:`gan_train_config`): the optimiser steps and wall-time caps of MSGNet's three
models together, so that both methods get the same budget (``--steps`` sets the steps), and
what a GAN needs: Adam at lr 2e-4 with beta1 0.5 (the original's), a constant rate, no gradient
clipping, fp32, and neither weight averaging nor best-weight selection, since a GAN's
validation losses do not rank its generators.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from msgnet.baselines.obj_cgan import ObjCGAN, ObjCGANConfig, objects_of_layouts
from msgnet.config import Preset, TrainConfig
from msgnet.run_dir import stage
from msgnet.training.grid import save_grid
from msgnet.training.loop import BaseStage, seed_everything, train
from msgnet.training.vqvae_stage import open_image_datasets

MODEL_DIR = stage("obj-cgan").folder  # the run registry's


class ObjectRows:
    """Images (uint8, in memory) with their objects' labels (N, K) and boxes (N, K, 4)."""

    def __init__(self, images: torch.Tensor, layouts: torch.Tensor, max_objects: int) -> None:
        self.images = images
        self.labels, self.boxes = objects_of_layouts(layouts, max_objects)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.images[i].float() / 255.0, self.labels[i], self.boxes[i]

    def batch_of(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        indices = indices.to(self.images.device)
        return self.images[indices].float() / 255.0, self.labels[indices], self.boxes[indices]

    def to(self, device: torch.device | str) -> "ObjectRows":
        self.images, self.labels, self.boxes = (t.to(device) for t in (self.images, self.labels, self.boxes))
        return self


def gan_train_config(preset: Preset, steps: int | None = None) -> TrainConfig:
    """The GAN's schedule: as many optimiser steps as MSGNet's three models take together, within their
    wall-time caps added up (a fair share of the same budget), or exactly ``steps`` (``--steps``);
    batch size, logging and checkpoints of the preset's VQ-VAE; the GAN's own optimiser settings."""
    stages = (preset.vqvae_train, preset.layout_prior_train, preset.prior_train)
    iterations = steps or sum(s.iterations for s in stages)
    epochs = 0 if iterations else sum(s.epochs for s in stages)
    caps = [s.max_minutes for s in stages]
    max_minutes = 0.0 if steps or 0 in caps else round(sum(caps), 2)
    return replace(preset.vqvae_train, iterations=iterations, epochs=epochs, max_minutes=max_minutes,
                   learning_rate=2e-4, adam_beta1=0.5, schedule="constant", grad_clip=0.0, precision="fp32",
                   ema_decay=0.0, keep_best=False, patience=0, val_every=0, augment=False, augment_copies=0,
                   compile=False)


class ObjCGANStage(BaseStage):
    """Loop stage: one optimiser step updates both networks (simultaneous GAN updates)."""

    name = MODEL_DIR
    kind = ObjCGAN.kind
    selection_metric = "d_loss"  # never used to select: the GAN schedule keeps the last weights

    def __init__(self, config: ObjCGANConfig) -> None:
        self.config = config
        self.model = ObjCGAN(config)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        images, labels, boxes = batch
        # From the global generator, which the loop checkpoints: a resumed run draws the same noise.
        noise = torch.randn(images.shape[0], self.config.noise_dim, device=images.device)
        d_loss, g_loss = model(images, labels, boxes, noise)
        return d_loss + g_loss, {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        d_sum = g_sum = 0.0
        count = 0
        gen = torch.Generator().manual_seed(0)
        for images, labels, boxes in batches:
            noise = torch.randn(images.shape[0], self.config.noise_dim, generator=gen).to(images.device)
            d_loss, g_loss = model.losses(images, labels, boxes, noise)  # type: ignore[operator]
            d_sum += float(d_loss) * len(images)
            g_sum += float(g_loss) * len(images)
            count += len(images)
        return {"d_loss": d_sum / count, "g_loss": g_sum / count} if count else {}

    def write_images(self, model: nn.Module, batch: Any, path: Path) -> None:
        images, labels, boxes = batch
        fake = model.generate(labels, boxes, torch.Generator().manual_seed(0))  # type: ignore[operator]
        save_grid([images, fake], path)


def train_obj_cgan(preset: Preset, data_dir: Path, run_dir: Path, resume: bool = False, device: str | None = None,
                   train_ids: Sequence[int] | None = None, steps: int | None = None) -> Path:
    """Train obj-cGAN on ``data_dir`` (only ``train_ids`` of its train split, if given)."""
    config = ObjCGANConfig.from_preset(preset)
    train_images, val_images = open_image_datasets(preset.vqvae, Path(data_dir), train_ids)
    train_set = ObjectRows(train_images.images, train_images.layouts, config.max_objects)
    val_set = ObjectRows(val_images.images, val_images.layouts, config.max_objects) if len(val_images) else []
    cfg = gan_train_config(preset, steps)
    seed_everything(cfg.seed)
    return train(ObjCGANStage(config), train_set, val_set, cfg, Path(run_dir), resume=resume, device=device).model_dir
