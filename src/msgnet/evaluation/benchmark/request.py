"""`msgnet eval augment` as a library call: open and check the inputs, run, write the JSON.

Everything that can be refused is refused before the first U-Net trains: unreadable or
incompatible sets, impossible subsets, an output that cannot be written, and a synthetic set
whose generator saw real images the U-Net does not (extra real data would sneak in unseen).
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from msgnet.augmentation.copy_paste import DESCRIPTION as COPY_PASTE_TEXT
from msgnet.augmentation.standard import AugmentationSettings
from msgnet.data.checks import check_count
from msgnet.data.format import Dataset
from msgnet.data.subsets import seeded_subset
from msgnet.errors import UsageError
from msgnet.io import ensure_output_apart, paths_as_fields
from msgnet.evaluation.benchmark.verdict import verdict_for
from msgnet.evaluation.dice import DICE_DEFINITION
from msgnet.evaluation.benchmark.policy import PairPolicy
from msgnet.evaluation.benchmark.runner import Arrays, BenchmarkData, run_benchmark, summarise
from msgnet.evaluation.benchmark.settings import POLICY_PREFIX, SETTING_KINDS, make_settings
from msgnet.evaluation.benchmark.protocol import UNetProtocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentRequest:
    """What `msgnet eval augment` was asked to do. Paths may be ``str`` or ``Path``; every value is checked
    here, naming its field, before a U-Net trains; ``json_path`` never lies inside an input."""

    real: Path
    synthetic: Path | None = None
    subsets: list[int] | None = None  # None: the whole real training split
    seeds: int = 3
    ratios: list[float] = field(default_factory=lambda: [1.0])
    settings: list[str] = field(default_factory=lambda: list(SETTING_KINDS))
    policies: list[str] = field(default_factory=list)  # PairPolicy specs, each one more setting
    keep_policies: int | None = None  # successive halving: policies kept after the first seed
    keep_baselines: int | None = None  # ... and settings without pairs kept after the first seed
    protocol: UNetProtocol = field(default_factory=UNetProtocol)
    device: str | None = None
    external_generator: bool = False
    json_path: Path | None = None
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        paths_as_fields(self, ("real",), ("synthetic", "json_path"))
        if not isinstance(self.protocol, UNetProtocol):
            raise UsageError(f"protocol: a UNetProtocol, not {type(self.protocol).__name__}")
        self.protocol.validate()
        check_count("seeds", self.seeds)
        for name in ("keep_policies", "keep_baselines"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name))
        for n in self.subsets or ():
            check_count("subsets", n)
        if not self.ratios or not all(isinstance(r, numbers.Real) and not isinstance(r, bool)
                                      and 0 < r < float("inf") for r in self.ratios):  # also refuses NaN
            raise UsageError(f"ratios: positive finite numbers, not {list(self.ratios)!r}")
        unknown = [k for k in self.settings if k not in SETTING_KINDS]
        if unknown:
            raise UsageError(f"settings: unknown setting {unknown[0]!r} (known: {', '.join(SETTING_KINDS)})")
        parse_policies(list(self.policies))
        if self.json_path is not None:
            ensure_output_apart(self.json_path, self.real, self.synthetic, field="json_path")


def check_output(path: Path | None, resume: bool) -> None:
    """Refuse an output that cannot be written before any work is done."""
    if path is None:
        if resume:
            raise UsageError("resume: needs `json_path` (the results to continue)")
        return
    if path.exists() and path.is_dir():
        raise UsageError(f"json_path {path}: is a directory")
    if path.exists() and not resume:
        raise UsageError(f"json_path {path}: already exists (`resume` to continue it, or another path)")
    if resume and not path.exists():
        raise UsageError(f"json_path {path}: nothing to resume (no such file)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"json_path {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"json_path {path}: folder {parent} is not writable")


def generator_check(syn: Dataset, real: Dataset, train_ids: Sequence[int]) -> tuple[bool | None, str]:
    """Did the synthetic set's generator see only real images among ``train_ids``?

    Returns (inside, one-line note); ``inside`` is None when the set does not record it.
    """
    from msgnet.data.provenance import generator_training

    record = generator_training(syn.info)
    if record is None or record.get("ids") is None:
        return None, (f"{syn.root}: does not record which real images its generator was trained on; "
                      "it may have seen real data the U-Net does not")
    same_set = Path(str(record.get("dataset"))).resolve() == real.root.resolve()
    outside = sorted(set(int(i) for i in record["ids"]) - set(int(i) for i in train_ids))
    if same_set and not outside:
        return True, f"generator trained on {len(record['ids'])} of these real training images"
    where = record.get("dataset")
    if not same_set:
        return False, (f"external generator: trained on {len(record['ids'])} images of {where}, "
                       "not on the U-Net's real training images")
    return False, (f"external generator: trained on {len(outside)} real images outside the U-Net's "
                   f"{len(train_ids)} (of {len(record['ids'])} it saw)")


def _load_done(path: Path, protocol: UNetProtocol, real: Path, synthetic: Path | None) -> dict[str, dict]:
    try:
        old = json.loads(path.read_text())
        runs = old["runs"]
        assert isinstance(runs, dict)
    except (OSError, json.JSONDecodeError, KeyError, AssertionError):
        raise UsageError(f"json_path {path}: not the results of the U-Net benchmark (`msgnet eval augment`)") from None
    current = json.loads(json.dumps(protocol.to_json()))
    # Keys an older file has beyond today's fields only described fixed choices: not compared.
    if not isinstance(old.get("protocol"), dict) or {k: v for k, v in old["protocol"].items() if k in current} != current:
        raise UsageError(f"json_path {path}: written with another U-Net protocol; resume with the same options")
    # Runs made without a synthetic set (real, augment, copy-paste) stay valid when one is added later.
    same_synthetic = old.get("synthetic") in (None, None if synthetic is None else str(synthetic))
    if old.get("real") != str(real) or not same_synthetic:
        raise UsageError(f"json_path {path}: written for `real` {old.get('real')}, `synthetic` {old.get('synthetic')}; "
                         "resume with the same datasets")
    return runs


def _ratios_in(runs: dict[str, dict]) -> set[float]:
    return {float(r["setting"].split("@")[1]) for r in runs.values()
            if "@" in r["setting"] and not r["setting"].startswith(POLICY_PREFIX)}


def _policies_in(runs: dict[str, dict], requested: list[PairPolicy]) -> list[PairPolicy]:
    """The requested policies, then those an earlier invocation ran, in a stable order."""
    found = {r["setting"][len(POLICY_PREFIX):] for r in runs.values() if r["setting"].startswith(POLICY_PREFIX)}
    specs = [p.spec for p in requested]
    return requested + [PairPolicy.parse(s) for s in sorted(found - set(specs))]


def parse_policies(specs: list[str]) -> list[PairPolicy]:
    """Policies from their specs; a bad one is refused naming the field."""
    try:
        return [PairPolicy.parse(s) for s in specs]
    except ValueError as exc:
        raise UsageError(f"policies: {exc}") from None


def run_augment_benchmark(req: AugmentRequest, log: Callable[[str], None] = logger.info) -> dict:
    """Open, check, run and (with ``json_path``) write the benchmark; returns the result."""
    from msgnet.evaluation.inputs import check_compatible, open_input
    from msgnet.device import choose_device

    protocol = req.protocol
    check_output(req.json_path, req.resume)
    real = open_input(req.real, "real")
    syn = open_input(req.synthetic, "synthetic") if req.synthetic is not None else None
    if syn is not None:
        check_compatible(real, syn)
    train_ids = real.ids("train")
    subsets: list[int | None] = list(req.subsets) if req.subsets else [None]
    id_sets = {n: (list(train_ids) if n is None else seeded_subset(train_ids, n)) for n in subsets}
    generator = _generator_notes(syn, real, id_sets, req.external_generator)
    device = choose_device(req.device)
    done = {}
    if req.resume and req.json_path is not None:
        done = _load_done(req.json_path, protocol, real.root, None if syn is None else syn.root)
    augmentation = AugmentationSettings.for_dataset(real.info.augmentations)
    policies = parse_policies(req.policies)
    settings = make_settings(req.settings, req.ratios, syn is not None, policies)
    if not settings:
        raise UsageError("settings: nothing to run (the synthetic settings need `synthetic`)")
    data, splits_text = _load_data(real, syn)
    head = {
        "protocol": protocol.to_json(), "protocol_text": protocol.describe(),
        "augmentation": augmentation.to_json(), "augmentation_text": augmentation.describe(),
        "copy_paste_text": COPY_PASTE_TEXT, "dice_definition": DICE_DEFINITION,
        "real": str(real.root), "synthetic": None if syn is None else str(syn.root),
        "class_names": real.info.class_names, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        **splits_text,
        "seeds": list(range(req.seeds)), "ratios": list(req.ratios), "subsets": [len(v) for v in id_sets.values()],
        "real_train_images": len(train_ids),
        "synthetic_images": None if data.synthetic is None else len(data.synthetic),
        "generator": generator, "policies": [p.to_json() | {"text": p.describe()} for p in policies],
        "keep_policies": req.keep_policies, "keep_baselines": req.keep_baselines,
    }
    log("protocol: " + protocol.describe())
    log("standard augmentation: " + augmentation.describe())
    for n, g in generator.items():
        log(f"synthetic set, N={n}: {g['note']}")
    results = _ResultsFile(req, head, syn is not None, policies, real.info.num_classes, generator, done)
    runs = run_benchmark(data, protocol, list(range(req.seeds)), subsets, settings, augmentation, device,
                         subset_ids=lambda n: id_sets[n], done=done, on_run=results.add, progress=req.progress,
                         log=log, keep_policies=req.keep_policies, keep_baselines=req.keep_baselines)
    return results.save(runs, final=True)


def _generator_notes(syn: Dataset | None, real: Dataset, id_sets: dict, external: bool) -> dict[str, dict]:
    """Per N, whether the synthetic set's generator saw only the U-Net's real images; refused if not,
    unless the generator is declared ``external``."""
    generator: dict[str, dict] = {}
    if syn is None:
        return generator
    for ids in id_sets.values():
        inside, note = generator_check(syn, real, ids)
        generator[str(len(ids))] = {"inside": inside, "note": note}
        if inside is not True and not external:
            raise UsageError(f"synthetic {syn.root}: {note} (N={len(ids)}); set `external_generator` "
                             "to compare anyway")
    return generator


def _load_data(real: Dataset, syn: Dataset | None) -> tuple[BenchmarkData, dict[str, str]]:
    """The arrays every training reads, and what the results say about the splits they come from."""
    from msgnet.evaluation.inputs import load_ids, synthetic_ids

    select_split, test_split = real.evaluation_splits()
    train = Arrays(*real.load_split("train"))
    test = Arrays(*real.load_split(test_split))
    monitor_split = select_split or test_split
    monitor = test if monitor_split == test_split else Arrays(*real.load_split(monitor_split))
    synthetic = Arrays(*load_ids(syn, synthetic_ids(syn))) if syn is not None else None
    data = BenchmarkData(train, list(real.ids("train")), test, monitor, select_split is not None,
                         real.info.num_classes, synthetic)
    splits_text = dict(tested_on=f"real {test_split} split ({len(test)} images)", monitor=(
        f"real {monitor_split} split ({len(monitor)} images): learning curve and model selection (best checkpoint)"
        if select_split else f"real {monitor_split} split ({len(monitor)} images): learning curve only, no "
        "selection (the dataset has no separate test split, so val serves as test)"))
    return data, splits_text


class _ResultsFile:
    """The results, rewritten after every training so an interrupted benchmark still reads (marked
    ``"complete": false``) and a resume finishes it."""

    def __init__(self, req: AugmentRequest, head: dict, with_synthetic: bool, policies: list[PairPolicy],
                 num_classes: int, generator: dict[str, dict], done: dict[str, dict]):
        self.req, self.head, self.with_synthetic, self.policies = req, head, with_synthetic, policies
        self.num_classes, self.generator = num_classes, generator
        self.runs: dict[str, dict] = dict(done)
        self.started = time.perf_counter()

    def add(self, key: str, run: dict) -> None:
        self.runs[key] = run
        self.save(self.runs, final=False)

    def save(self, runs: dict[str, dict], final: bool) -> dict:
        from msgnet.io import atomic_write_json

        result = {**self.head, "complete": final, "runs": runs,
                  "wall_seconds": round(time.perf_counter() - self.started, 1)}
        # Every setting found in the runs, also those of an earlier invocation resumed with other settings.
        every = make_settings(SETTING_KINDS, sorted(set(self.req.ratios) | _ratios_in(runs)), self.with_synthetic,
                              _policies_in(runs, self.policies))
        entries = summarise(runs, every, self.num_classes)
        for e in entries:
            e["verdict"] = verdict_for(e)
            e["generator_note"] = self.generator.get(str(e["n"]), {}).get("note")
        result["results"] = entries
        if self.req.json_path is not None:
            atomic_write_json(self.req.json_path, result)
        return result
