"""The U-Net augmentation benchmark (paper §4.1 Table 1, §4.3 Tables 2-3).

A MONAI U-Net learns to segment layouts (every class of dataset.json, one-hot targets)

* (a) on real data only: the baseline every other figure is read against;
* (b) on real + synthetic data ("accuracy" in Table 1), optionally at several synthetic:real ratios;
* (c) on synthetic data only ("diversity" in Table 1);

and is always tested on the REAL validation split. The paper leaves the protocol open,
so it is fixed here (:class:`UNetProtocol`) and printed beside every figure.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from msgnet.evaluation.dice import DICE_DEFINITION, DiceAccumulator, DiceResult
from msgnet.evaluation.stats import fmt_mean_std, mean_std


@dataclass(frozen=True)
class UNetProtocol:
    """Everything that decides a U-Net DICE figure. Change a field and the figures are not comparable."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    norm: str = "instance"
    # An epoch is one pass over the REAL training set; every setting trains for the same
    # number of optimiser steps (epochs x real batches), so that augmented and synthetic-only
    # runs get exactly the compute of the baseline and differ only in what they see.
    epochs: int = 10
    batch_size: int = 32
    optimizer: str = "AdamW"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine decay to 0, no warm-up"
    loss: str = "MONAI DiceCELoss (softmax, one-hot targets, background included in the loss)"
    augmentation: str = "none"
    eval_batch_size: int = 128

    def validate(self) -> None:
        from msgnet.errors import UsageError

        if self.epochs < 1:
            raise UsageError("--epochs: must be at least 1")
        if self.batch_size < 1:
            raise UsageError("--batch-size: must be at least 1")
        if len(self.strides) != len(self.channels) - 1:
            raise UsageError("U-Net protocol: need one stride fewer than channels")

    def steps(self, num_real_train: int) -> int:
        return self.epochs * max(1, math.ceil(num_real_train / self.batch_size))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return (
            f"MONAI UNet 2D, channels {list(self.channels)}, strides {list(self.strides)}, "
            f"{self.num_res_units} residual unit(s), {self.norm} norm; {self.loss}; "
            f"{self.optimizer} lr {self.lr:g} wd {self.weight_decay:g}, {self.schedule}; batch {self.batch_size}; "
            f"{self.epochs} epochs of the real training set, same step count in every setting; "
            f"augmentation: {self.augmentation}"
        )


def build_unet(protocol: UNetProtocol, in_channels: int, num_classes: int) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=protocol.channels,
        strides=protocol.strides,
        num_res_units=protocol.num_res_units,
        norm=protocol.norm,
    )


def _to_batch(images: np.ndarray, idx: np.ndarray | slice) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (B, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images[idx].transpose(0, 3, 1, 2))).float().div_(255.0)


def train_unet(
    images: np.ndarray,
    layouts: np.ndarray,
    num_classes: int,
    protocol: UNetProtocol,
    steps: int,
    seed: int,
    desc: str = "u-net",
    progress: bool = True,
) -> torch.nn.Module:
    """Train a fresh U-Net for ``steps`` optimiser steps on (N, H, W, C) uint8 images and (N, H, W) layouts."""
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_unet(protocol, images.shape[3], num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    n = len(images)
    order = np.empty(0, dtype=np.int64)
    model.train()
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress, leave=False)
    for _ in bar:
        if len(order) < protocol.batch_size:  # reshuffle per pass; batches never straddle passes
            order = rng.permutation(n)
        idx, order = order[: protocol.batch_size], order[protocol.batch_size :]
        x = _to_batch(images, idx)
        y = torch.from_numpy(layouts[idx]).long().unsqueeze(1)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    return model


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Class maps (N, H, W) uint8 for (N, H, W, C) uint8 images."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        out.append(model(_to_batch(images, slice(start, start + batch_size))).argmax(1).to(torch.uint8).numpy())
    return np.concatenate(out)


@torch.no_grad()
def evaluate_dice(model: torch.nn.Module, images: np.ndarray, layouts: np.ndarray, num_classes: int,
                  batch_size: int = 128) -> DiceResult:
    acc = DiceAccumulator(num_classes)
    model.eval()
    for start in range(0, len(images), batch_size):
        logits = model(_to_batch(images, slice(start, start + batch_size)))
        acc.update(logits.argmax(1), layouts[start : start + batch_size])
    return acc.result()


@dataclass
class Arrays:
    """Images (N, H, W, C) uint8 and layouts (N, H, W) uint8 of one set."""

    images: np.ndarray
    layouts: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> "Arrays":
        return Arrays(self.images[idx], self.layouts[idx])


def _summarise(runs: list[dict], num_classes: int) -> dict:
    mean, std = mean_std([r["dice"] for r in runs])
    mean_pi, std_pi = mean_std([r["dice_per_image"] for r in runs])
    per_class = []
    for c in range(num_classes):
        vals = [r["per_class"][c] for r in runs if r["per_class"][c] is not None]
        per_class.append(None if c == 0 or not vals else dict(zip(("mean", "std"), mean_std(vals))))
    return {"dice_mean": mean, "dice_std": std, "dice_per_image_mean": mean_pi, "dice_per_image_std": std_pi,
            "per_class": per_class, "seconds_mean": float(np.mean([r["seconds"] for r in runs]))}


def run_benchmark(
    real_train: Arrays,
    real_val: Arrays,
    num_classes: int,
    protocol: UNetProtocol,
    seeds: Sequence[int],
    synthetic: Arrays | None = None,
    ratios: Sequence[float] = (1.0,),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Train and test every setting for every seed; returns the JSON-ready result.

    With ``synthetic`` None only the real-only baseline runs. Setting (b) adds
    ``round(ratio * n_real)`` synthetic images (capped at what exists) to the real ones;
    setting (c) trains on ``min(n_synthetic, n_real)`` synthetic images. Which synthetic
    images are drawn depends on the seed. The real-only model of every seed also segments
    the synthetic images: its DICE against their layouts is the segmentation fidelity.
    """
    protocol.validate()
    steps = protocol.steps(len(real_train))
    settings: list[tuple[str, str, float | None]] = [("real", "(a) real only — baseline", None)]
    if synthetic is not None:
        for r in ratios:
            settings.append((f"real+synthetic@{r:g}", f"(b) real + synthetic, ratio {r:g}:1 — accuracy", r))
        settings.append(("synthetic", "(c) synthetic only — diversity", None))
    results: dict[str, dict] = {
        name: {"name": name, "label": label, "ratio": ratio, "runs": []} for name, label, ratio in settings
    }
    fidelity_runs: list[dict] = []
    total = len(settings) * len(seeds)
    k = 0
    for seed in seeds:
        for name, label, ratio in settings:
            k += 1
            rng = np.random.default_rng(10_000 + seed)
            if name == "real":
                train, n_real, n_syn = real_train, len(real_train), 0
            elif name == "synthetic":
                assert synthetic is not None
                n_syn = min(len(synthetic), len(real_train))
                train, n_real = synthetic.subset(rng.permutation(len(synthetic))[:n_syn]), 0
            else:
                assert synthetic is not None and ratio is not None
                n_syn = min(len(synthetic), int(round(ratio * len(real_train))))
                pick = synthetic.subset(rng.permutation(len(synthetic))[:n_syn])
                train = Arrays(np.concatenate([real_train.images, pick.images]),
                               np.concatenate([real_train.layouts, pick.layouts]))
                n_real = len(real_train)
            start = time.perf_counter()
            model = train_unet(train.images, train.layouts, num_classes, protocol, steps, seed,
                               desc=f"[{k}/{total}] {name} seed {seed}", progress=progress)
            seconds = time.perf_counter() - start
            res = evaluate_dice(model, real_val.images, real_val.layouts, num_classes, protocol.eval_batch_size)
            run = {"seed": seed, "train_real": n_real, "train_synthetic": n_syn, "steps": steps,
                   "seconds": seconds, **res.to_json()}
            results[name]["runs"].append(run)
            log(f"[{k}/{total}] {label}, seed {seed}: DICE {res.dice:.4f} "
                f"(per-image {res.dice_per_image:.4f}) in {seconds:.0f} s")
            if name == "real" and synthetic is not None:
                fid = evaluate_dice(model, synthetic.images, synthetic.layouts, num_classes, protocol.eval_batch_size)
                fidelity_runs.append({"seed": seed, **fid.to_json()})
    out_settings = []
    base = None
    for name, _, _ in settings:
        entry = results[name]
        entry.update(_summarise(entry["runs"], num_classes))
        if name == "real":
            base = entry["dice_mean"]
        entry["delta_vs_real"] = None if name == "real" or base is None else entry["dice_mean"] - base
        out_settings.append(entry)
    out = {
        "protocol": protocol.to_json(),
        "protocol_text": protocol.describe(),
        "dice_definition": DICE_DEFINITION,
        "tested_on": f"real validation split ({len(real_val)} images)",
        "seeds": list(seeds),
        "steps_per_training": steps,
        "real_train_images": len(real_train),
        "real_val_images": len(real_val),
        "synthetic_images": None if synthetic is None else len(synthetic),
        "settings": out_settings,
    }
    if fidelity_runs:
        m, s = mean_std([r["dice"] for r in fidelity_runs])
        out["segmentation_fidelity"] = {
            "description": "U-Net trained on real data only, segmenting the synthetic images; "
                           "DICE against the synthetic layouts",
            "dice_mean": m, "dice_std": s, "runs": fidelity_runs,
        }
    return out


def format_benchmark(result: dict, class_names: Sequence[str]) -> str:
    """Plain-text table of a :func:`run_benchmark` result, with the protocol beside the figures."""
    lines = [
        "U-Net segmentation benchmark (tested on the " + result["tested_on"] + ")",
        "protocol: " + result["protocol_text"],
        f"          {result['steps_per_training']} steps per training; seeds {result['seeds']}; "
        f"real train {result['real_train_images']} images"
        + ("" if result["synthetic_images"] is None else f", synthetic {result['synthetic_images']} images"),
        "DICE:     " + result["dice_definition"],
        "",
        f"{'setting':<42} {'train real+syn':>15} {'DICE':>16} {'vs real':>8} {'per-image':>16} {'s/run':>6}",
    ]
    for s in result["settings"]:
        r0 = s["runs"][0]
        delta = "" if s["delta_vs_real"] is None else f"{s['delta_vs_real']:+.3f}"
        lines.append(
            f"{s['label']:<42} {r0['train_real']:>7}+{r0['train_synthetic']:<7} "
            f"{fmt_mean_std(s['dice_mean'], s['dice_std']):>16} {delta:>8} "
            f"{fmt_mean_std(s['dice_per_image_mean'], s['dice_per_image_std']):>16} {s['seconds_mean']:>6.0f}"
        )
    lines.append("")
    header = "per class (pooled DICE, mean over seeds)"
    names = [class_names[c] for c in range(1, len(class_names))]
    lines.append(f"{header:<42} " + " ".join(f"{n[:6]:>6}" for n in names))
    for s in result["settings"]:
        vals = [s["per_class"][c] for c in range(1, len(class_names))]
        lines.append(f"{s['name']:<42} " + " ".join("   n/a" if v is None else f"{v['mean']:6.3f}" for v in vals))
    if "segmentation_fidelity" in result:
        f = result["segmentation_fidelity"]
        lines.append("")
        lines.append(f"segmentation fidelity (real-only U-Net on the synthetic images): DICE "
                     f"{fmt_mean_std(f['dice_mean'], f['dice_std'])}")
    return "\n".join(lines)
