"""The U-Net augmentation benchmark (paper §4.1 Table 1, §4.3 Tables 2-3), against the baselines
practitioners actually use.

For every real-set size N (a fixed, seeded, nested subset of the real training split) and
every seed, a MONAI U-Net learns to segment layouts in each setting:

* ``real``                 real images only — the baseline every figure is read against;
* ``augment``              real + standard augmentation (the dataset's valid geometric transforms + intensity);
* ``copy-paste@R``         real + copy-paste images made from the same N real images, R per real image;
* ``synthetic@R``          real + generated pairs ("accuracy" in Table 1);
* ``augment+synthetic@R``  real + standard augmentation + generated pairs;
* ``synthetic-only``       generated pairs only ("diversity" in Table 1).

Every setting draws the same real batches step for step (:mod:`msgnet.evaluation.benchmark.exposure`),
trains for the same number of steps, is selected on the same validation split and tested on
the same real test split. Results are written after every training, so ``--resume`` skips
what is done.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from msgnet.augmentation.copy_paste import copy_paste_set, cut_objects
from msgnet.augmentation.standard import AugmentationSettings, StandardAugmentation
from msgnet.evaluation.benchmark.exposure import make_plan
from msgnet.evaluation.stats import mean_std
from msgnet.evaluation.benchmark.protocol import UNetProtocol
from msgnet.evaluation.benchmark.training import DeviceSet, evaluate_dice, train_unet


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


@dataclass(frozen=True)
class Setting:
    """One way of building a U-Net's training stream."""

    name: str
    label: str
    real: bool = True
    augment: bool = False
    added: str | None = None  # None, "copy-paste" or "synthetic"
    ratio: float | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "label": self.label, "ratio": self.ratio, "added": self.added,
                "augment": self.augment, "real": self.real}


SETTING_KINDS = ("real", "augment", "copy-paste", "synthetic", "augment+synthetic", "synthetic-only")


def make_settings(kinds: Sequence[str], ratios: Sequence[float], with_synthetic: bool) -> list[Setting]:
    """The settings to run, in report order; synthetic ones only when a synthetic set is given."""
    out: list[Setting] = []
    for kind in SETTING_KINDS:
        if kind not in kinds or ("synthetic" in kind and not with_synthetic):
            continue
        if kind == "real":
            out.append(Setting("real", "real only (baseline)"))
        elif kind == "augment":
            out.append(Setting("augment", "real + standard augmentation", augment=True))
        elif kind == "synthetic-only":
            out.append(Setting("synthetic-only", "synthetic only (diversity)", real=False, added="synthetic"))
        else:
            for r in ratios:
                if kind == "copy-paste":
                    out.append(Setting(f"copy-paste@{r:g}", f"real + copy-paste {r:g}:1", added="copy-paste", ratio=r))
                elif kind == "synthetic":
                    out.append(Setting(f"synthetic@{r:g}", f"real + synthetic {r:g}:1", added="synthetic", ratio=r))
                else:
                    out.append(Setting(f"augment+synthetic@{r:g}", f"real + augmentation + synthetic {r:g}:1",
                                       augment=True, added="synthetic", ratio=r))
    return out


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
    return None if t is None else hashlib.sha1(t.cpu().numpy().tobytes()).hexdigest()[:16]


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
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Train and test every (N, setting, seed); returns {"N/setting/seed": run record}.

    ``subset_ids(N)`` names the real training ids of size N (``None`` in ``subsets``: the whole
    split). Runs found in ``done`` are not repeated; ``on_run`` is called after each new one.
    """
    protocol.validate()
    runs: dict[str, dict] = dict(done or {})
    row_of = {image_id: row for row, image_id in enumerate(data.real_train_ids)}
    test = DeviceSet.from_arrays(data.test.images, data.test.layouts, device)
    monitor = None if data.monitor is None else DeviceSet.from_arrays(data.monitor.images, data.monitor.layouts, device)
    syn_all = None if data.synthetic is None else DeviceSet.from_arrays(data.synthetic.images, data.synthetic.layouts, device)
    total = len(subsets) * len(settings) * len(seeds)
    k = 0
    for n_req in subsets:
        ids = list(data.real_train_ids) if n_req is None else subset_ids(n_req)
        real_arrays = data.real_train.subset([row_of[i] for i in ids])
        n = len(real_arrays)
        real = DeviceSet.from_arrays(real_arrays.images, real_arrays.layouts, device)
        objects = cut_objects(real_arrays.layouts) if any(s.added == "copy-paste" for s in settings) else None
        steps = protocol.steps(n)
        for seed in seeds:
            for setting in settings:
                k += 1
                key = f"{n}/{setting.name}/{seed}"
                if key in runs:
                    continue
                added = None
                if setting.added == "copy-paste":
                    num = max(1, int(round((setting.ratio or 1.0) * n)))
                    cp_imgs, cp_lays = copy_paste_set(real_arrays.images, real_arrays.layouts, num, seed, objects)
                    added = DeviceSet.from_arrays(cp_imgs, cp_lays, device)
                elif setting.added == "synthetic" and syn_all is not None:
                    want = n if not setting.real else int(round((setting.ratio or 1.0) * n))
                    num = max(1, min(len(syn_all), want))
                    pick = np.random.default_rng(10_000 + seed).permutation(len(syn_all))[:num]
                    idx = torch.from_numpy(np.sort(pick)).to(device)
                    added = DeviceSet(syn_all.images.index_select(0, idx), syn_all.layouts.index_select(0, idx))
                plan = make_plan(n if setting.real else 0, 0 if added is None else len(added),
                                 protocol.batch_size, setting.ratio, steps, seed)
                augment = (StandardAugmentation(augmentation, device, seed=1_000 + seed) if setting.augment else None)
                trained = train_unet(real if setting.real else None, added, plan, data.num_classes, protocol, seed,
                                     augment=augment, monitor=monitor, select=data.select,
                                     desc=f"[{k}/{total}] N={n} {setting.name} seed {seed}", progress=progress)
                res = evaluate_dice(trained.model, test, data.num_classes, protocol.eval_batch_size)
                run = {"n": n, "setting": setting.name, "seed": seed, "train_real": n if setting.real else 0,
                       "train_added": 0 if added is None else len(added), "steps": steps,
                       "real_per_step": 0 if plan.real is None else int(plan.real.shape[1]),
                       "added_per_step": 0 if plan.added is None else int(plan.added.shape[1]),
                       "real_batches_sha1": _digest(plan.real), "seconds": trained.seconds,
                       "selected_step": trained.selected_step, "curve": trained.curve, **res.to_json()}
                if setting.name == "real" and syn_all is not None:
                    fid = evaluate_dice(trained.model, syn_all, data.num_classes, protocol.eval_batch_size)
                    run["segmentation_fidelity"] = fid.dice
                runs[key] = run
                log(f"[{k}/{total}] N={n} {setting.label}, seed {seed}: DICE {res.dice:.4f} "
                    f"in {trained.seconds:.0f} s")
                if on_run is not None:
                    on_run(key, run)
                del trained, added
    return runs


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

