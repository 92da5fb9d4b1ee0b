"""The consistency segmenter of quality control: a U-Net trained once on the real training split.

It answers "does this image show the objects its layout names?": a pair whose image the
segmenter, trained only on real pairs, segments into something other than the pair's own
layout is suspect. It is the MONAI U-Net of the augmentation benchmark
(:mod:`msgnet.evaluation.benchmark.protocol`), trained by the same loop as the strongest real-only
model a user could train: with the geometric transforms dataset.json declares valid and intensity
jitter (the benchmark's "real + standard augmentation"), selected on the real validation split. A
segmenter trained on 100 images without augmentation segments real validation images poorly (its
DICE spreads from 0 to 1) and so cannot tell a bad pair from a hard one. It is cached as
``model.safetensors`` + ``config.json``; the config names the real data it learned from and how,
so a cache made from other data or another recipe is retrained, never reused.

Its bottleneck also gives the feature space in which generated images are compared with the
real training images (memorisation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from msgnet.evaluation.benchmark.exposure import make_plan
from msgnet.evaluation.benchmark.protocol import UNetProtocol, build_unet
from msgnet.evaluation.benchmark.training import DeviceSet, autocast, train_unet
from msgnet.io import read_model_config, save_model
from msgnet.models.pretrained import load_weights

KIND = "qc-segmenter"
# One pass over the real training set, never fewer than 1,500 steps: the benchmark's
# real-only U-Net is flat by then at every N measured (its learning curves).
QC_PROTOCOL = UNetProtocol(epochs=1, min_steps=1500)
FEATURE_GRID = 4  # the bottleneck is pooled to 4x4 cells: coarse position survives, texture does not
MONITOR_IMAGES = 1000  # validation images scored at each curve point (model selection)
RECIPE = "standard augmentation (declared geometric transforms + intensity), best validation checkpoint"


def training_fingerprint(real_root: Path, train_ids: list[int], protocol: UNetProtocol, seed: int) -> str:
    """What a cached segmenter must have been trained from: the data, its ids, protocol, seed and recipe."""
    h = hashlib.sha1()
    h.update((real_root / "dataset.json").read_bytes())
    h.update(np.asarray(train_ids, dtype=np.int64).tobytes())
    h.update(json.dumps(protocol.to_json(), sort_keys=True).encode())
    h.update(str(seed).encode())
    h.update(RECIPE.encode())
    return h.hexdigest()[:16]


@dataclass
class Segmenter:
    """A trained consistency segmenter with its record (what it was trained on, how well it does)."""

    model: torch.nn.Module
    record: dict[str, Any]
    device: torch.device

    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class maps (N, H, W) uint8 and bottleneck features (N, F) of uint8 images (N, C, H, W).

        Features are the deepest U-Net activations pooled to a 4x4 grid, flattened and scaled to
        unit length, so their squared distance is 2 - 2 cos.
        """
        bottom = _bottleneck(self.model)
        grabbed: list[torch.Tensor] = []
        hook = bottom.register_forward_hook(lambda _m, _i, out: grabbed.append(out))
        try:
            self.model.eval()
            preds, feats = [], []
            for start in range(0, len(images), 256):
                x = images[start : start + 256].to(self.device).float().div_(255.0)
                grabbed.clear()
                with autocast(self.device):
                    logits = self.model(x)
                preds.append(logits.argmax(1).to(torch.uint8))
                f = F.adaptive_avg_pool2d(grabbed[0].float(), FEATURE_GRID).flatten(1)
                feats.append(F.normalize(f, dim=1))
        finally:
            hook.remove()
        return torch.cat(preds), torch.cat(feats)


def _bottleneck(unet: torch.nn.Module) -> torch.nn.Module:
    """The innermost module of a MONAI UNet (nested SkipConnections around the bottom block)."""
    from monai.networks.layers import SkipConnection

    node: torch.nn.Module = unet.model  # type: ignore[assignment]
    while True:
        skip = next((m for m in node.children() if isinstance(m, SkipConnection)), None)
        if skip is None:
            return node
        node = skip.submodule
        if not isinstance(node, torch.nn.Sequential):
            return node


def _protocol_from_json(data: dict[str, Any]) -> UNetProtocol:
    fields = {f.name for f in dataclasses.fields(UNetProtocol)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in fields}
    return UNetProtocol(**kw)


def load_segmenter(directory: Path, fingerprint: str, device: torch.device) -> Segmenter | None:
    """The cached segmenter in ``directory`` if it was trained from ``fingerprint``; else None."""
    if not (directory / "config.json").is_file():
        return None
    kind, cfg = read_model_config(directory)
    if kind != KIND or cfg.get("fingerprint") != fingerprint:
        return None
    model = build_unet(_protocol_from_json(cfg["protocol"]), int(cfg["in_channels"]), int(cfg["num_classes"]))
    load_weights(model, directory)
    return Segmenter(model.to(device).eval(), cfg, device)


def load_segmenter_trained_on(directory: Path, real_root: Path, train_ids: list[int],
                              device: torch.device) -> Segmenter | None:
    """The segmenter cached in ``directory`` if it learned from exactly these real images (with any
    protocol and seed); else None. For users of the segmenter that do not choose its protocol."""
    if not (directory / "config.json").is_file():
        return None
    kind, cfg = read_model_config(directory)
    if kind != KIND or "protocol" not in cfg:
        return None
    fingerprint = training_fingerprint(real_root, train_ids, _protocol_from_json(cfg["protocol"]),
                                       int(cfg.get("seed", 0)))
    return load_segmenter(directory, fingerprint, device)


def train_segmenter(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None,
    num_classes: int,
    device: torch.device,
    fingerprint: str,
    protocol: UNetProtocol = QC_PROTOCOL,
    seed: int = 0,
    progress: bool = True,
    geometric: tuple[str, ...] | list[str] | None = None,
) -> Segmenter:
    """Train on real (images NHWC, layouts NHW) uint8 arrays with standard augmentation (``geometric``:
    the transforms the dataset declares valid; intensity jitter always); select the best checkpoint on ``val``."""
    from msgnet.augmentation.standard import AugmentationSettings, StandardAugmentation

    augmentation = AugmentationSettings.for_dataset(geometric)
    real = DeviceSet.from_arrays(train[0], train[1], device)
    monitor = None
    if val is not None and len(val[0]):
        keep = np.random.default_rng(seed).permutation(len(val[0]))[:MONITOR_IMAGES]
        monitor = DeviceSet.from_arrays(val[0][keep], val[1][keep], device)
    steps = protocol.steps(len(real))
    plan = make_plan(len(real), 0, protocol.batch_size, None, steps, seed)
    trained = train_unet(real, plan, num_classes, protocol, seed,
                         augment=StandardAugmentation(augmentation, device, seed=1_000 + seed), monitor=monitor,
                         select=monitor is not None, desc="qc segmenter", progress=progress)
    curve = trained.curve
    record = {
        "fingerprint": fingerprint,
        "protocol": protocol.to_json(),
        "in_channels": int(train[0].shape[3]),
        "num_classes": int(num_classes),
        "seed": seed,
        "recipe": RECIPE,
        "augmentation": augmentation.describe(),
        "train_images": len(real),
        "steps": steps,
        "selected_step": trained.selected_step,
        "val_dice": max((p.get("monitor_dice", float("nan")) for p in curve), default=None) if monitor else None,
        "seconds": round(trained.seconds, 1),
    }
    return Segmenter(trained.model.eval(), record, device)


def save_segmenter(segmenter: Segmenter, directory: Path) -> None:
    save_model(segmenter.model, segmenter.record, directory, KIND)
