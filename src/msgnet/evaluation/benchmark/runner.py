"""The U-Net augmentation benchmark (paper §4.1 Table 1, §4.3 Tables 2-3), against the baselines
practitioners actually use.

For every real-set size N (a fixed, seeded, nested subset of the real training split) and
every seed, a MONAI U-Net learns to segment layouts in each setting
(:mod:`msgnet.evaluation.benchmark.settings`):

* ``real``                   real images only — the baseline every figure is read against;
* ``augment``                real + standard augmentation (the dataset's valid geometric transforms + intensity);
* ``copy-paste@R``           real + copy-paste images made from the same N real images, R per real image;
* ``augment+copy-paste@R``   both: what a practitioner would use without msgnet;
* ``synthetic@R``            real + generated pairs ("accuracy" in Table 1);
* ``augment+synthetic@R``    real + standard augmentation + generated pairs;
* ``synthetic-only``         generated pairs only ("diversity" in Table 1);
* ``pairs:POLICY``           real + standard augmentation + generated pairs used under a policy
                             (:mod:`msgnet.evaluation.benchmark.policy`: union, on top, loss weight,
                             pixel filter, pretraining, copy-paste on top as well).

Every on-top setting draws the same real batches step for step
(:mod:`msgnet.evaluation.benchmark.exposure`), every setting trains for the same number of steps,
is selected on the same validation split and tested on the same real test split. Results are
written after every training, so ``--resume`` skips what is done.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from msgnet.augmentation.copy_paste import copy_paste_set, cut_objects
from msgnet.augmentation.standard import AugmentationSettings, StandardAugmentation
from msgnet.evaluation.benchmark.exposure import ExposurePlan, make_plan
from msgnet.evaluation.benchmark.loss import IGNORE, PairLoss, class_mean_losses, filter_pixels, pixel_losses
from msgnet.evaluation.benchmark.protocol import UNetProtocol
from msgnet.evaluation.benchmark.settings import (SETTING_KINDS, Setting, halving_order,  # noqa: F401 (re-exported)
                                                  make_settings)
from msgnet.evaluation.benchmark.training import DeviceSet, TrainedUNet, evaluate_dice, train_unet
from msgnet.evaluation.stats import mean_std

logger = logging.getLogger(__name__)


@dataclass
class Arrays:
    """Images (N, H, W, C) uint8 and layouts (N, H, W) uint8 of one set."""

    images: np.ndarray
    layouts: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray | Sequence[int]) -> "Arrays":
        idx = np.asarray(idx, dtype=np.int64)
        return Arrays(self.images[idx], self.layouts[idx])


@dataclass
class BenchmarkData:
    """What one benchmark trains and tests on (host arrays)."""

    real_train: Arrays
    real_train_ids: list[int]  # dataset ids of real_train's rows
    test: Arrays
    monitor: Arrays | None  # the validation split: learning curve and model selection
    select: bool  # True when ``monitor`` is a validation split separate from the test split
    num_classes: int
    synthetic: Arrays | None = None


def _digest(t: torch.Tensor | None) -> str | None:
    return None if t is None else hashlib.sha1(t.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


@dataclass
class _Context:
    """What every training of one benchmark shares (sets already on the device)."""

    data: BenchmarkData
    protocol: UNetProtocol
    augmentation: AugmentationSettings
    device: torch.device
    test: DeviceSet
    monitor: DeviceSet | None
    synthetic: DeviceSet | None
    progress: bool


def _copy_paste(ctx: _Context, real_arrays: Arrays, ratio: float | None, seed: int, objects) -> DeviceSet:
    """``ratio`` x N copy-paste images of the N real ones; one seed, one set (a baseline's and a policy's alike)."""
    num = max(1, int(round((ratio or 1.0) * len(real_arrays))))
    cp_imgs, cp_lays = copy_paste_set(real_arrays.images, real_arrays.layouts, num, seed, objects)
    return DeviceSet.from_arrays(cp_imgs, cp_lays, ctx.device)


def _added_set(ctx: _Context, setting: Setting, real_arrays: Arrays, seed: int, objects) -> DeviceSet | None:
    """The images ``setting`` adds: copy-paste images of the N real ones, or generated pairs."""
    n = len(real_arrays)
    if setting.added == "copy-paste":
        return _copy_paste(ctx, real_arrays, setting.ratio, seed, objects)
    syn = ctx.synthetic
    if setting.added != "synthetic" or syn is None:
        return None
    if setting.policy is not None:  # the policy decides each step's share: the whole pool is available
        return DeviceSet(syn.images, syn.layouts)
    want = n if not setting.real else int(round((setting.ratio or 1.0) * n))
    num = max(1, min(len(syn), want))
    pick = np.random.default_rng(10_000 + seed).permutation(len(syn))[:num]
    idx = torch.from_numpy(np.sort(pick)).to(ctx.device)
    return DeviceSet(syn.images.index_select(0, idx), syn.layouts.index_select(0, idx))


def _train_one(ctx: _Context, setting: Setting, real: DeviceSet, added: DeviceSet | None, seed: int,
               desc: str, copy_paste: DeviceSet | None = None) -> tuple[TrainedUNet, ExposurePlan]:
    """Train one U-Net; ``copy_paste``: the copy-paste images a policy puts on top beside its pairs."""
    n = len(real) if setting.real else 0
    policy, steps = setting.mixing, ctx.protocol.steps(len(real))
    pool = DeviceSet.pool(real if setting.real else None, added, added_generated=setting.added == "synthetic",
                          copy_paste=copy_paste)
    plan = make_plan(n, 0 if added is None else len(added), ctx.protocol.batch_size, policy.ratio, steps, seed,
                     mixing=policy.mixing, pretrain_steps=policy.pretrain_steps(steps),
                     num_copy_paste=0 if copy_paste is None else len(copy_paste), copy_paste_ratio=policy.copy_paste)
    augment = StandardAugmentation(ctx.augmentation, ctx.device, seed=1_000 + seed) if setting.augment else None
    loss = PairLoss(policy.weight, ignores_pixels=policy.filter_k is not None)
    trained = train_unet(pool, plan, ctx.data.num_classes, ctx.protocol, seed, augment=augment,
                         monitor=ctx.monitor, select=ctx.data.select, desc=desc, progress=ctx.progress,
                         loss_fn=loss)
    return trained, plan


def _filtered(ctx: _Context, added: DeviceSet, judge: torch.nn.Module, real: DeviceSet, k: float) -> DeviceSet:
    """``added`` with its implausible pixels labelled IGNORE, judged by ``judge`` (a real-trained U-Net)."""
    means = class_mean_losses(pixel_losses(judge, real.images, real.layouts), real.layouts, ctx.data.num_classes)
    losses = pixel_losses(judge, added.images, added.layouts)
    return DeviceSet(added.images, filter_pixels(added.layouts, losses, means, k))


def _record(setting: Setting, real: DeviceSet, added: DeviceSet | None, plan: ExposurePlan, trained: TrainedUNet,
            res, seed: int, copy_paste: DeviceSet | None = None) -> dict:
    n = len(real)
    num_cp = 0 if copy_paste is None else len(copy_paste)
    run = {"n": n, "setting": setting.name, "seed": seed, "train_real": n if setting.real else 0,
           "train_added": (0 if added is None else len(added)) + num_cp, "steps": plan.steps,
           "real_per_step": 0 if plan.real is None else int(plan.real.shape[1]),
           "added_per_step": 0 if plan.added is None else int(plan.added.shape[1]),
           "pretrain_steps": plan.pretrain_steps, "real_batches_sha1": _digest(plan.real),
           "seconds": trained.seconds, "selected_step": trained.selected_step, "stopped_at": trained.stopped_at,
           "val_dice": trained.best_monitor_dice if trained.selected_step is not None else None,
           "curve": trained.curve, **res.to_json()}
    if added is not None and setting.policy is not None and setting.policy.filter_k is not None:
        run["generated_pixels_kept"] = float((added.layouts != IGNORE).float().mean())
    if num_cp:
        run["copy_paste_images"], run["copy_paste_per_step"] = num_cp, plan.copy_paste_columns
    return run


def run_benchmark(
    data: BenchmarkData,
    protocol: UNetProtocol,
    seeds: Sequence[int],
    subsets: Sequence[int | None],
    settings: Sequence[Setting],
    augmentation: AugmentationSettings,
    device: torch.device,
    subset_ids: Callable[[int], list[int]],
    done: dict[str, dict] | None = None,
    on_run: Callable[[str, dict], None] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = logger.info,
    keep_policies: int | None = None,
    keep_baselines: int | None = None,
) -> dict[str, dict]:
    """Train and test every (N, setting, seed); returns {"N/setting/seed": run record}.

    ``subset_ids(N)`` names the real training ids of size N (``None`` in ``subsets``: the whole
    split). Runs found in ``done`` are not repeated; ``on_run`` is called after each new one.
    ``keep_policies``: successive halving of the pair policies on the validation split
    (:func:`~msgnet.evaluation.benchmark.settings.halving_order`); None, or no validation split,
    trains every policy with every seed; ``keep_baselines`` the same for the settings without pairs.
    """
    protocol.validate()
    runs: dict[str, dict] = dict(done or {})
    row_of = {image_id: row for row, image_id in enumerate(data.real_train_ids)}
    dev = lambda a: None if a is None else DeviceSet.from_arrays(a.images, a.layouts, device)  # noqa: E731
    ctx = _Context(data, protocol, augmentation, device, dev(data.test), dev(data.monitor), dev(data.synthetic),
                   progress)
    keep = keep_policies if data.select else None
    keep_plain = keep_baselines if data.select else None
    for n_req in subsets:
        ids = list(data.real_train_ids) if n_req is None else subset_ids(n_req)
        real_arrays = data.real_train.subset([row_of[i] for i in ids])
        n = len(real_arrays)
        real = DeviceSet.from_arrays(real_arrays.images, real_arrays.layouts, device)
        objects = cut_objects(real_arrays.layouts) if any(_pastes(s) for s in settings) else None
        judges: dict[int, torch.nn.Module] = {}  # seed -> the real + augmentation U-Net (the pixel filter's judge)
        while True:
            of_n = {key.split("/", 1)[1]: r for key, r in runs.items() if r["n"] == n}
            todo = [job for job in halving_order(settings, seeds, of_n, keep, keep_plain) if f"{job[0].name}/{job[1]}" not in of_n]
            if not todo:
                break
            setting, seed = todo[0]
            added = _added_set(ctx, setting, real_arrays, seed, objects)
            if setting.policy is not None and setting.policy.filter_k is not None and added is not None:
                if seed not in judges:  # resumed after its augment run: trained again, same seed, same model
                    judges[seed] = _train_one(ctx, make_settings(["augment"], [], False)[0], real, None, seed,
                                              f"N={n} augment seed {seed} (pixel filter's judge)")[0].model
                added = _filtered(ctx, added, judges[seed], real, setting.policy.filter_k)
            pasted = (None if setting.policy is None or setting.policy.copy_paste is None
                      else _copy_paste(ctx, real_arrays, setting.policy.copy_paste, seed, objects))
            trained, plan = _train_one(ctx, setting, real, added, seed,
                                       f"N={n} {setting.name} seed {seed} ({len(todo)} to go)", copy_paste=pasted)
            if setting.name == "augment":
                judges[seed] = trained.model
            res = evaluate_dice(trained.model, ctx.test, data.num_classes, protocol.eval_batch_size)
            run = _record(setting, real, added, plan, trained, res, seed, copy_paste=pasted)
            if setting.name == "real" and ctx.synthetic is not None:
                run["segmentation_fidelity"] = evaluate_dice(trained.model, ctx.synthetic, data.num_classes,
                                                             protocol.eval_batch_size).dice
            key = f"{n}/{setting.name}/{seed}"
            runs[key] = run
            log(f"N={n} {setting.label}, seed {seed}: DICE {res.dice:.4f} in {trained.seconds:.0f} s"
                + ("" if trained.stopped_at is None else f" (stopped early at step {trained.stopped_at})"))
            if on_run is not None:
                on_run(key, run)
            del trained, added, pasted
    return runs


def _pastes(setting: Setting) -> bool:
    """Does ``setting`` train on copy-paste images (a baseline's, or a policy's beside its pairs)?"""
    return setting.added == "copy-paste" or (setting.policy is not None and setting.policy.copy_paste is not None)


def summarise(runs: dict[str, dict], settings: Sequence[Setting], num_classes: int) -> list[dict]:
    """Per N (ascending), per setting: mean ± std over seeds, with the runs."""
    by_n: dict[int, list[dict]] = {}
    for run in runs.values():
        by_n.setdefault(run["n"], []).append(run)
    out = []
    for n in sorted(by_n):
        rows = []
        for s in settings:
            rs = sorted((r for r in by_n[n] if r["setting"] == s.name), key=lambda r: r["seed"])
            if not rs:
                continue
            mean, std = mean_std([r["dice"] for r in rs])
            mean_pi, std_pi = mean_std([r["dice_per_image"] for r in rs])
            per_class = []
            for c in range(num_classes):
                vals = [r["per_class"][c] for r in rs if r["per_class"][c] is not None]
                per_class.append(None if c == 0 or not vals else dict(zip(("mean", "std"), mean_std(vals))))
            rows.append({**s.to_json(), "dice_mean": mean, "dice_std": std, "dice_per_image_mean": mean_pi,
                         "dice_per_image_std": std_pi, "per_class": per_class,
                         "seconds_mean": float(np.mean([r["seconds"] for r in rs])), "runs": rs})
        base = next((r["dice_mean"] for r in rows if r["name"] == "real"), None)
        for r in rows:
            r["delta_vs_real"] = None if r["name"] == "real" or base is None else r["dice_mean"] - base
        entry = {"n": n, "steps": by_n[n][0]["steps"], "settings": rows}
        fid = [r["segmentation_fidelity"] for r in by_n[n] if "segmentation_fidelity" in r]
        if fid:
            m, sd = mean_std(fid)
            entry["segmentation_fidelity"] = {"dice_mean": m, "dice_std": sd}
        out.append(entry)
    return out

