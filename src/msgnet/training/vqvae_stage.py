"""Stage 1: the double-path VQ-VAE, trained with the shared loop (:mod:`msgnet.training.loop`).

Logged while training: loss, image-space reconstruction MSE and the perplexity of each
codebook (per step); validation MSE, PSNR (pixels in [0, 1]) and perplexities; per
epoch, the dead codes of each codebook (codes not chosen once during the epoch).

With ``VQVAEConfig.restart_dead_codes``, dead codes are restarted from the current batch's
encoder outputs (:mod:`msgnet.training.codebook_usage`, shared with the cVQ-VAE baseline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from msgnet.augmentation.standard import AugmentationSettings, StandardAugmentation
from msgnet.config import Preset, VQVAEConfig
from msgnet.data.format import open_dataset
from msgnet.data.torch_dataset import ImageLayoutDataset
from msgnet.errors import UsageError
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.nn.quantizer import perplexity_from_counts
from msgnet.training import distributed as D
from msgnet.training.grid import save_grid
from msgnet.training.codebook_usage import CodebookUsage
from msgnet.training.loop import BaseStage, seed_everything, train

__all__ = ["VQVAEStage", "train_vqvae", "open_image_datasets"]


def _images(batch: Any) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _layouts(batch: Any) -> torch.Tensor | None:
    return batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None


class VQVAEStage(BaseStage):
    """Loop stage for :class:`DoublePathVQVAE` (batches: images, or (images, layouts))."""

    selection_metric = "mse"  # validation reconstruction error decides the kept weights

    name = "vqvae"
    kind = "vqvae"

    def __init__(self, config: VQVAEConfig, seed: int = 0, augmentation: AugmentationSettings | None = None) -> None:
        """``augmentation``: train on these geometric transforms (a fresh one per image and batch)."""
        self.config = config
        self.model = DoublePathVQVAE(config)
        self.seed = seed
        self.augmentation_settings = augmentation if augmentation is not None and augmentation.geometric else None
        self._augmentation: StandardAugmentation | None = None  # made on the first batch's device
        self._augmentation_state: torch.Tensor | None = None  # its generator state, from a checkpoint
        self.codes = CodebookUsage(("_attn", "_conv"), config.num_embeddings, seed)

    def _augmented(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The batch's images, and its layouts where the decoder is told them, under one transform."""
        images = _images(batch)
        layouts = _layouts(batch) if self.model.told_layout else None
        if self.augmentation_settings is None:
            return images, layouts
        if self._augmentation is None:
            self._augmentation = StandardAugmentation(self.augmentation_settings, images.device, self.seed)
            if self._augmentation_state is not None:
                self._augmentation.generator.set_state(self._augmentation_state)
        if layouts is None:
            return self._augmentation.geometric_images(images), None
        return self._augmentation.geometric(images, layouts)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        images, layouts = self._augmented(batch)
        self.codes.to(images.device)
        if self.config.restart_dead_codes and self.codes.due(step):
            model_ = self.model
            self.codes.restart((model_.quantizer_attn, model_.quantizer_conv), model_.encode, model_, images, step)
        out = model(images) if layouts is None else model(images, layouts)
        self.codes.observe(out.counts)
        metrics = {
            "loss": out.loss.detach(),
            "mse": out.reconstruction_loss.detach() / 4.0,  # [-1,1] space -> image space
            "ppl_attn": out.perplexities[0].detach(),
            "ppl_conv": out.perplexities[1].detach(),
        }
        if out.auxiliary_loss is not None:
            metrics["auxiliary_loss"] = out.auxiliary_loss.detach()
        if out.adversary_accuracy is not None:
            metrics["adversary_accuracy"] = out.adversary_accuracy  # near chance: the codes lost the class
        if out.obedience_accuracy is not None and out.reader_accuracy is not None:
            metrics["reader_accuracy"] = out.reader_accuracy
            metrics["obedience_accuracy"] = out.obedience_accuracy  # near 1: the decoder draws the layout's class
        if out.critic_accuracy is not None:
            metrics["critic_accuracy"] = out.critic_accuracy  # near 0.5: the critic can no longer tell
        return out.loss, metrics

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        told = self.model.told_layout
        return evaluate_vqvae(model, ((_images(b), _layouts(b) if told else None) for b in batches))

    def write_images(self, model: nn.Module, batch: Any, path: Path) -> None:
        images, layouts = _images(batch), (_layouts(batch) if self.model.told_layout else None)
        recon = model(images, layouts).reconstruction.clamp(0, 1)
        save_grid([images, recon], path)

    def on_epoch_end(self, model: nn.Module, epoch: int, dist: D.DistInfo) -> dict[str, float]:
        return self.codes.epoch_end(dist, self.config.restart_dead_codes)

    def state_dict(self) -> dict[str, Any]:
        state = self.codes.state_dict()
        if self._augmentation is not None:  # a resumed run draws the transforms it would have drawn
            state["augmentation_generator"] = self._augmentation.generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.codes.load_state_dict(state)
        self._augmentation_state = state.get("augmentation_generator")
        self._augmentation = None


@torch.no_grad()
def evaluate_vqvae(
    model: DoublePathVQVAE, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]]
) -> dict[str, float]:
    """Image-space MSE, mean per-image PSNR (dB, peak 1), perplexity and used codes per codebook,
    over (images, layouts) batches (layouts None unless the decoder is told them)."""
    sq_sum, psnr_sum, pixels, count = 0.0, 0.0, 0, 0
    usage: torch.Tensor | None = None
    for images, layouts in batches:
        out = model(images, layouts)
        err = (out.reconstruction.clamp(0, 1) - images).pow(2).flatten(1).mean(1)  # per image
        sq_sum += float(err.sum()) * images[0].numel()
        pixels += images.numel()
        psnr_sum += float((10.0 * torch.log10(1.0 / err.clamp_min(1e-10))).sum())
        count += images.shape[0]
        counts = torch.stack(out.counts)
        usage = counts if usage is None else usage + counts
    if count == 0 or usage is None:
        return {}
    return {
        "mse": sq_sum / pixels,
        "psnr": psnr_sum / count,
        "ppl_attn": float(perplexity_from_counts(usage[0])),
        "ppl_conv": float(perplexity_from_counts(usage[1])),
        "used_codes_attn": int((usage[0] > 0).sum()),
        "used_codes_conv": int((usage[1] > 0).sum()),
    }


def open_image_datasets(config: VQVAEConfig, data_dir: Path, train_ids: Sequence[int] | None = None):
    """(train, val) :class:`ImageLayoutDataset` of ``data_dir``, checked against ``config``.

    ``train_ids``: train only on these images of the train split (``--train-subset``); the
    validation split stays whole, so runs on different subsets are compared on the same images.
    """
    dataset = open_dataset(data_dir)
    check_dataset_fits(config, dataset.info, data_dir)
    train_set = ImageLayoutDataset(dataset, "train", ids=train_ids)
    val_set = ImageLayoutDataset(dataset, "val") if dataset.info.splits.get("val") else []
    return train_set, val_set


def check_dataset_fits(config: VQVAEConfig, info: Any, data_dir: Path) -> None:
    """The dataset's channels and image size are the VQ-VAE's, and it has training images."""
    if info.channels != config.in_channels:
        raise UsageError(
            f"{data_dir}: dataset {info.name!r} has {info.channels}-channel images but the preset's "
            f"vqvae.in_channels is {config.in_channels}"
        )
    if tuple(info.image_size) != (config.image_size, config.image_size):
        h, w = info.image_size
        raise UsageError(
            f"{data_dir}: dataset {info.name!r} has {h}x{w} images but the preset's vqvae.image_size "
            f"is {config.image_size}"
        )
    if "train" not in info.splits or not info.splits["train"]:
        raise UsageError(f"{data_dir}: dataset {info.name!r} has no 'train' split")


def train_vqvae(
    preset: Preset, data_dir: Path, run_dir: Path, resume: bool = False, device: str | None = None,
    train_ids: Sequence[int] | None = None,
) -> Path:
    """Train the preset's VQ-VAE on ``data_dir`` (only ``train_ids`` of its train split, if given);
    returns ``run_dir/vqvae`` (weights + config)."""
    train_set, val_set = open_image_datasets(preset.vqvae, Path(data_dir), train_ids)
    seed_everything(preset.vqvae_train.seed)
    augmentation = None
    if preset.vqvae_train.augment:
        augmentation = AugmentationSettings.for_generator(open_dataset(data_dir).info.augmentations)
    stage = VQVAEStage(preset.vqvae, seed=preset.vqvae_train.seed, augmentation=augmentation)
    result = train(stage, train_set, val_set, preset.vqvae_train, Path(run_dir), resume=resume, device=device)
    return result.model_dir

