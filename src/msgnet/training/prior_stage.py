"""Stages 2 and 3: the latent PixelSNAIL prior and the LayoutPixelSNAIL, on the shared loop.

Data: ``RUN_DIR/codes/{train,val}.safetensors`` written by code extraction
(:mod:`msgnet.training.codes`): ``codes`` (N, 2H, W) and ``layouts`` (N, H, W).

- ``train_prior``: tokens = the stacked code map, condition = the layout stacked to
  2H x W (:func:`msgnet.models.latents.stack_layout`); files in ``RUN_DIR/prior/``.
- ``train_layout_prior``: tokens = the H x W layouts, no condition; files in
  ``RUN_DIR/layout_prior/``.

Logged: loss (nats per token) and bits per token on the progress bar and in
``metrics.csv``; the validation loss at the end of every epoch (and whenever the loop
validates), and for the codes prior its class gain (``val_class_gain``,
:mod:`msgnet.training.prior_diagnostics`).

``TrainConfig.token_corruption`` replaces that share of the input tokens by random ones while
training (the targets stay the true tokens), for either prior. ``TrainConfig.alignment_steps`` fine-tunes
the codes prior the loop keeps to read its layouts' classes before it is saved
(:mod:`msgnet.training.prior_alignment`, ``RUN_DIR/prior/alignment.json``).
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from msgnet.augmentation.standard import AugmentationSettings, geometric_copies
from msgnet.config import PixelSNAILConfig, Preset, TrainConfig
from msgnet.data.format import open_dataset
from msgnet.data.torch_dataset import load_split_ids
from msgnet.errors import UsageError
from msgnet.io import atomic_write_json
from msgnet.layouts import downsample_layout
from msgnet.models.latents import stack_layout
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.training import distributed as D
from msgnet.training.codes import load_codes
from msgnet.training.loop import BaseStage, iterate_batches, seed_everything, to_device, train
from msgnet.training.prior_alignment import AlignmentSettings, align_prior
from msgnet.training.prior_diagnostics import ClassGainTally, corrupt_tokens, corruption_generator
from msgnet.run_dir import RunDir

logger = logging.getLogger(__name__)

__all__ = ["PriorStage", "LayoutPriorStage", "TensorRows", "train_prior", "train_layout_prior"]


def _compact(t: torch.Tensor) -> torch.Tensor:
    """The smallest integer dtype holding ``t`` (a code file of CLEVR size is 8x smaller)."""
    if not t.numel() or (int(t.min()) >= 0 and int(t.max()) < 256):
        return t.to(torch.uint8)
    return t.to(torch.int16) if int(t.max()) < 2**15 else t


class TensorRows:
    """Map-style dataset over equally long tensors; item i is the tuple of their rows."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tuple(_compact(t) for t in tensors)

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[i] for t in self.tensors)

    def batch_of(self, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The rows of ``indices`` of every tensor, in one indexing operation each."""
        return tuple(t[indices.to(t.device)] for t in self.tensors)

    def to(self, device: torch.device | str) -> "TensorRows":
        self.tensors = tuple(t.to(device) for t in self.tensors)
        return self


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _nll(model: nn.Module, inputs: torch.Tensor, condition: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    # Call the (possibly DDP-wrapped) module itself so gradients are synchronised.
    return F.cross_entropy(model(inputs, condition), targets)


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _PriorStageBase(BaseStage):
    """Shared by both priors: batches are (tokens,) or (tokens, condition)."""

    model: PixelSNAIL

    def __init__(self, config: PixelSNAILConfig, val_set: Any = (), val_samples: int = 0, batch_size: int = 32,
                 seed: int = 0, token_corruption: float = 0.0):
        self.config = config
        self.val_set = val_set
        self.val_samples = val_samples
        self.val_batch_size = batch_size
        self.seed = seed
        self.token_corruption = token_corruption

    @staticmethod
    def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        # Held compactly in memory (uint8/int16); class indices must be int64 here.
        tokens = batch[0].long()
        return tokens, (batch[1].long() if len(batch) > 1 else None)

    def training_condition(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        """The condition a training step sees (the latent prior may drop it)."""
        return condition

    def training_inputs(self, tokens: torch.Tensor, step: int) -> torch.Tensor:
        """The tokens a training step reads: ``tokens``, with ``token_corruption`` of them replaced by random
        ones (a new tensor; ``tokens`` stay the targets). At 0 nothing is drawn, so training is as before."""
        if self.token_corruption <= 0:
            return tokens
        generator = corruption_generator(self.seed, step, _rank(), tokens.device)
        return corrupt_tokens(tokens, self.token_corruption, self.config.num_classes, generator)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        tokens, condition = self._split(batch)
        loss = _nll(model, self.training_inputs(tokens, step), self.training_condition(condition), tokens)
        value = loss.detach()
        return loss, {"loss": value, "bits_per_token": value / math.log(2)}

    def class_gain_tally(self) -> ClassGainTally | None:
        """What also scores a validation's class gain (None: nothing; the codes prior overrides it)."""
        return None

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        total, count = 0.0, 0
        tally = self.class_gain_tally()
        for batch in batches:
            tokens, condition = self._split(batch)
            logits = model(tokens, condition)
            total += float(F.cross_entropy(logits, tokens, reduction="sum"))
            count += tokens.numel()
            if tally is not None and condition is not None:
                tally.add(model, tokens, condition, logits)
        if not count:
            return {}
        loss = total / count
        metrics = {"loss": loss, "bits_per_token": loss / math.log(2)}
        gain = tally.result() if tally is not None else {}
        return {**metrics, **({"class_gain": gain["class_gain"]} if gain else {})}

    def on_epoch_end(self, model: nn.Module, epoch: int, dist: D.DistInfo) -> dict[str, float]:
        """Validation loss once per epoch (rank 0), as the paper's schedule is counted in epochs."""
        if not dist.is_main or not len(self.val_set):
            return {}
        return self.validation(model)

    def validation(self, model: nn.Module) -> dict[str, float]:
        """:meth:`evaluate` over the validation maps, as ``val_*`` metrics (the model's mode is kept)."""
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                batches = (
                    to_device(b, device)
                    for b in iterate_batches(self.val_set, self.val_batch_size, self.val_samples)
                )
                metrics = self.evaluate(model, batches)
        finally:
            model.train(was_training)
        return {f"val_{k}": v for k, v in metrics.items()}


class PriorStage(_PriorStageBase):
    """The latent prior: PixelSNAIL over (N, 2H, W) code maps given the stacked layout.

    With ``condition_dropout`` some training maps see the "no layout" condition instead of their
    own (the unconditional half of classifier-free guidance); validation always sees the layout.
    """

    name = "prior"
    kind = PixelSNAIL.kind

    def __init__(self, config: PixelSNAILConfig, adherence: Callable[[nn.Module], float] | None = None,
                 alignment: AlignmentSettings | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.model = PixelSNAIL(config)
        # Scores decoded samples against their layouts (msgnet.evaluation.qc.adherence); logged, never selects.
        self.adherence = adherence
        self.alignment = alignment

    def finalize(self, model: nn.Module, train_set: Any, stage_dir: Path) -> nn.Module:
        """The trained prior, aligned to its layouts' classes when ``alignment`` asks for steps
        (:mod:`msgnet.training.prior_alignment`); ``alignment.json`` records what it did and the
        validation figures before and after."""
        record_path = stage_dir / "alignment.json"
        record_path.unlink(missing_ok=True)  # a record of an earlier training describes other weights
        if self.alignment is None or self.alignment.steps == 0:
            return model
        aligned = copy.deepcopy(model)
        before = self.validation(aligned) if len(self.val_set) else {}
        codes, condition = train_set.tensors
        record = align_prior(aligned, codes, condition, self.alignment)
        after = self.validation(aligned) if len(self.val_set) else {}
        record.update(before=before, after=after)
        atomic_write_json(record_path, record)
        logger.info("prior: aligned to its layouts' classes in %d steps (class gain %s -> %s nats per object token)",
                    self.alignment.steps, _fmt(before.get("val_class_gain")), _fmt(after.get("val_class_gain")))
        return aligned

    def class_gain_tally(self) -> ClassGainTally | None:
        # A fresh tally seeded alike at every validation: the same maps get the same permutations.
        classes = self.config.num_condition_classes
        return ClassGainTally(classes, self.seed) if classes >= 3 else None  # 2 object classes at least

    def evaluate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        metrics = super().evaluate(model, batches)
        if self.adherence is not None and metrics:
            metrics["adherence"] = self.adherence(model)
        return metrics

    def training_condition(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        return None if condition is None else self.model.drop_condition(condition)


class LayoutPriorStage(_PriorStageBase):
    """The layout prior: unconditional LayoutPixelSNAIL over (N, H, W) layouts."""

    name = "layout_prior"
    kind = LayoutPixelSNAIL.kind

    def __init__(self, config: PixelSNAILConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.model = LayoutPixelSNAIL(config)


def _check_tokens(tokens: torch.Tensor, config: PixelSNAILConfig, what: str, where: str, num_classes: int) -> None:
    if tuple(tokens.shape[1:]) != (config.height, config.width):
        raise UsageError(
            f"{where}: {what} are {tuple(tokens.shape[1:])} but the preset's prior expects "
            f"{config.height} x {config.width}"
        )
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= num_classes):
        raise UsageError(
            f"{where}: {what} values range over [{int(tokens.min())}, {int(tokens.max())}] "
            f"but the preset allows {num_classes} classes"
        )


def _copies(tc: TrainConfig) -> int:
    """Transformed copies of each training image a prior learns from (0 without ``augment``)."""
    return tc.augment_copies if tc.augment else 0


def _load_split(run_dir: Path, split: str, required: bool, copies: int = 0) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not required and not RunDir(run_dir).codes_file(split).is_file():
        return None
    codes, layouts, meta = load_codes(run_dir, split, copies)
    if split == "train" and copies:
        used = int(meta["copies_used"])
        logger.info(f"{meta['num_images']} training images and {used} transformed cop{'y' if used == 1 else 'ies'} "
                    f"of each ({codes.shape[0]} code maps)" + ("" if used == copies else
                    f"; {copies} asked for, but {RunDir(run_dir).codes} holds {meta.get('copies', 0)}"))
    return codes, layouts


def _datasets(run_dir: Path, build: Any, copies: int = 0) -> tuple[TensorRows, Any]:
    train_split = _load_split(run_dir, "train", required=True, copies=copies)
    assert train_split is not None
    val_split = _load_split(run_dir, "val", required=False)
    where = str(RunDir(run_dir).codes)
    train_set = build(*train_split, f"{where}/train.safetensors")
    val_set = build(*val_split, f"{where}/val.safetensors") if val_split is not None else []
    return train_set, val_set


def train_prior(preset: Preset, run_dir: Path | str, resume: bool = False, device: str | None = None,
                adherence: Callable[[nn.Module], float] | None = None) -> Path:
    """Train the preset's latent PixelSNAIL on ``run_dir/codes``; returns ``run_dir/prior``.

    ``adherence``: scores the prior's decoded samples at every validation (logged as ``val_adherence``).
    """
    run_dir = Path(run_dir)
    cfg = preset.prior
    if not cfg.conditional:
        raise UsageError("prior.num_condition_classes: the latent prior must be conditioned on the layout (> 0)")

    def build(codes: torch.Tensor, layouts: torch.Tensor, where: str) -> TensorRows:
        _check_tokens(codes, cfg, "code maps", where, cfg.num_classes)
        condition = stack_layout(layouts)
        _check_tokens(condition, cfg, "stacked layouts", where, cfg.num_condition_classes)
        return TensorRows(codes, condition)

    tc = preset.prior_train
    train_set, val_set = _datasets(run_dir, build, _copies(tc))
    seed_everything(tc.seed)
    alignment = AlignmentSettings(steps=tc.alignment_steps, learning_rate=tc.alignment_learning_rate,
                                  batch_size=tc.batch_size, seed=tc.seed)
    stage = PriorStage(cfg, adherence=adherence, alignment=alignment, val_set=val_set, val_samples=tc.val_samples,
                       batch_size=tc.batch_size, seed=tc.seed, token_corruption=tc.token_corruption)
    return train(stage, train_set, val_set, tc, run_dir, resume=resume, device=device).model_dir


def _layouts_from_dataset(data_dir: Path, cfg: PixelSNAILConfig, train_ids: Sequence[int] | None = None,
                          copies: int = 0, seed: int = 0) -> tuple[TensorRows, Any]:
    """Layouts of a dataset brought to the layout prior's grid (no VQ-VAE needed), with ``copies``
    transformed copies of the training layouts after them (as :func:`extract_codes` makes them)."""
    ds = open_dataset(data_dir)
    settings = AugmentationSettings.for_generator(ds.info.augmentations)
    sets = []
    for split in ("train", "val"):
        if split == "val" and not ds.info.splits.get("val"):
            sets.append([])
            continue
        _, layouts = load_split_ids(ds, split, train_ids if split == "train" else None)
        full = torch.from_numpy(layouts)
        if split == "train" and copies and settings.geometric:
            full = torch.cat([full] + [lay for _, lay in geometric_copies(None, full, settings, copies, seed)])
        small = downsample_layout(full, (cfg.height, cfg.width), ds.info.num_classes)
        _check_tokens(small, cfg, "layouts", str(data_dir / "layouts"), cfg.num_classes)
        sets.append(TensorRows(_compact(small)))
    return sets[0], sets[1]


def train_layout_prior(
    preset: Preset, run_dir: Path | str, resume: bool = False, device: str | None = None,
    data_dir: Path | str | None = None, train_ids: Sequence[int] | None = None,
) -> Path:
    """Train the preset's LayoutPixelSNAIL on the layouts in ``run_dir/codes``; returns ``run_dir/layout_prior``.

    With ``data_dir`` and no extracted codes, the dataset's layouts are downsampled
    directly (the layout prior does not depend on the VQ-VAE); ``train_ids`` then picks the
    train images used (extracted codes already hold only the run's training images). A layout
    prior on a grid of its own, finer than the codes' latent grid, always learns from the dataset's
    layouts brought to that grid (the codes hold them at the latent grid only; issue 32).
    """
    run_dir = Path(run_dir)
    cfg = preset.layout_prior
    own_grid = (cfg.height, cfg.width) != (preset.vqvae.latent_size,) * 2
    if own_grid and data_dir is None:
        raise UsageError(f"layout_prior: its {cfg.height}x{cfg.width} grid is not the codes' "
                         f"{preset.vqvae.latent_size}x{preset.vqvae.latent_size} latent grid, so it learns from "
                         "the dataset's layouts: give the training data")

    def build(codes: torch.Tensor, layouts: torch.Tensor, where: str) -> TensorRows:
        _check_tokens(layouts, cfg, "layouts", where, cfg.num_classes)
        return TensorRows(layouts)

    tc = preset.layout_prior_train
    if data_dir is not None and (own_grid or not RunDir(run_dir).codes_file("train").is_file()):
        train_set, val_set = _layouts_from_dataset(Path(data_dir), cfg, train_ids, _copies(tc), tc.seed)
    else:
        train_set, val_set = _datasets(run_dir, build, _copies(tc))
    seed_everything(tc.seed)
    stage = LayoutPriorStage(cfg, val_set=val_set, val_samples=tc.val_samples, batch_size=tc.batch_size,
                             seed=tc.seed, token_corruption=tc.token_corruption)
    return train(stage, train_set, val_set, tc, run_dir, resume=resume, device=device).model_dir
