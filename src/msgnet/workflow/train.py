"""Training a run: the stages of its method in order, from a preset named, recorded or derived.

``train(run, data)`` is `msgnet train all`: the double-path VQ-VAE, code extraction, the
LayoutPixelSNAIL and the latent PixelSNAIL, each resuming from its checkpoint with
``resume=True`` and recorded in the run's manifest (``RUN/run.json``) when done. One stage alone
(``stages=("prior",)``) or a baseline (``stages=("cvqvae",)``) go through the same function.
With a derived preset each training stage buys its steps when it starts, from the budget left
(:mod:`msgnet.workflow.budget`).
Under torchrun every process calls it; rank 0 writes the records.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import yaml

from msgnet.baselines.cvqvae import CVQVAEConfig
from msgnet.baselines.cvqvae_training import prior_config, train_cvqvae
from msgnet.baselines.obj_cgan import ObjCGANConfig
from msgnet.baselines.obj_cgan_training import train_obj_cgan
from msgnet.config import Preset, load_preset, preset_from_dict, to_dict
from msgnet.data.format import open_dataset
from msgnet.data.layout_grid import choose_layout_grid
from msgnet.device import choose_device
from msgnet.errors import UsageError
from msgnet.evaluation.qc.adherence import adherence_probe
from msgnet.io import atomic_write_text, ensure_output_apart
from msgnet.locks import writing
from msgnet.preset_derivation import MODEL_OF_STAGE
from msgnet.run_dir import RunDir, stage, stages_of, trained_stages
from msgnet.sampling.run import record_training_data, training_data_for
from msgnet.training.checkpoint import check_same_architecture, check_saved_config, find_checkpoint
from msgnet.training.codes import extract_codes
from msgnet.training.prior_stage import train_layout_prior, train_prior
from msgnet.training.vqvae_stage import check_dataset_fits, train_vqvae
from msgnet.workflow.budget import budgeted, buy_stage, derive_measured, read_plan, record_plan, stage_spent

logger = logging.getLogger(__name__)

ALL = tuple(s.name for s in stages_of("msgnet"))  # vqvae, codes, layout-prior, prior


def is_main_process() -> bool:
    """Rank 0 under torchrun (or the only process): the one that writes shared records."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class TrainJob:
    """What one call to :func:`train` trains: the run, its data, the preset and the stages in order.
    ``train_ids``: the run's training images (from its record; None: the whole train split)."""

    run: RunDir
    data: Path | None
    preset: Preset
    stages: tuple[str, ...]
    resume: bool = False
    device: str | None = None
    subset: int | None = None
    train_ids: list[int] | None = None
    steps: int | None = None  # exactly this many steps per stage (the GAN counts its own)
    budget: bool = False  # each stage buys its steps from the run's budget when it starts (workflow.budget)


def train(run: Path | str, data: Path | str | None = None, preset: Preset | None = None,
          stages: Sequence[str] = ALL, budget: float | None = None, resume: bool = False,
          device: str | None = None, subset: int | None = None, steps: int | None = None,
          overrides: Sequence[str] = ()) -> RunDir:
    """Train ``stages`` of ``run`` on dataset ``data``; returns the run.

    ``preset``: None derives one from the data and ``budget`` minutes (or, resuming, reads the run's
    ``preset.yaml``). ``subset``: train on a seeded subset of that many train images (recorded in the
    run: later stages and resumes reuse it). ``steps``: every stage trains exactly that many steps.
    ``overrides``: dotted ``key=value`` changes to a derived or recorded preset.
    A call refused before anything trained leaves no half-made run behind.
    """
    run_dir = RunDir(run)
    data = Path(data) if data is not None else None
    if data is not None:
        ensure_output_apart(run_dir.root, data, field="run")  # a run inside its data would change the data
    created = not run_dir.root.exists()
    try:
        # One writer per run: rank 0 holds the lock for the whole call (the other ranks follow it).
        with writing(run_dir.root) if is_main_process() else contextlib.nullcontext():
            run_dir.read_manifest()  # a corrupt manifest is refused before anything trains, not after
            derived = preset is None
            if preset is None:
                preset = derived_or_recorded_preset(run_dir, data, budget, resume, subset, device, overrides)
            elif budget is not None:
                raise UsageError("budget: only for a derived preset (give no preset)")
            if steps is not None:
                preset = with_steps(preset, steps)
            job = _open_job(run_dir, data, preset, tuple(stages), resume, device, subset)
            job.steps = steps
            job.budget = derived and steps is None and _has_budget(run_dir, overrides)
            _train_stages(job)
        return run_dir
    except UsageError:
        if created and is_main_process() and not _anything_trained(run_dir):
            shutil.rmtree(run_dir.root, ignore_errors=True)  # refused before training: leave no half-made run
        raise


def _train_stages(job: TrainJob) -> None:
    start = time.perf_counter()
    for name in job.stages:
        stage_start = time.perf_counter()
        _buy_steps(job, name)  # inside the stage's time: the budget pays for its measurement too
        _TRAINERS[name](job)
        if is_main_process():
            seconds = round(time.perf_counter() - stage_start, 1)
            facts = _stage_spent(job, name, seconds)
            job.run.record_stage(name, seconds=seconds, **facts)
    if is_main_process():
        what = "all" if job.stages == ALL else ", ".join(job.stages)
        logger.info(f"{what}: done in {time.perf_counter() - start:.0f} s -> {job.run.root}")


def _has_budget(run: RunDir, overrides: Sequence[str]) -> bool:
    return budgeted(overrides) and read_plan(run) is not None


def _buy_steps(job: TrainJob, name: str) -> None:
    """A budgeted stage that starts (not one resumed from its checkpoint) buys its steps from the
    budget left now, at a step time measured now (msgnet.workflow.budget); preset.yaml records them
    before the stage's first checkpoint, so that a resume keeps them."""
    if not job.budget or name not in MODEL_OF_STAGE:
        return
    if job.resume and find_checkpoint(job.run.stage_dir(name) / "checkpoint") is not None:
        return  # the steps it bought set its learning-rate schedule: a resume must not move them
    job.preset = buy_stage(job.run, job.preset, name, choose_device(job.device))
    save_preset(job.preset, job.run)


def _stage_spent(job: TrainJob, name: str, seconds: float) -> dict:
    return stage_spent(job.run, name, seconds) if job.budget else {}


def with_steps(preset: Preset, steps: int) -> Preset:
    """Every stage trains exactly ``steps`` steps (iterations, not epochs)."""
    if steps < 1:
        raise UsageError("steps: must be at least 1")
    changed = {name: replace(getattr(preset, name), iterations=steps, epochs=0)
               for name in ("vqvae_train", "layout_prior_train", "prior_train")}
    return replace(preset, **changed)


def derived_or_recorded_preset(run: RunDir, data: Path | None, budget: float | None, resume: bool,
                               subset: int | None, device: str | None, overrides: Sequence[str] = ()) -> Preset:
    """Without a named preset: the run's own preset.yaml when resuming, else one derived from the data."""
    recorded = run.preset_yaml
    if resume and recorded.is_file():
        if budget is not None:
            raise UsageError(f"budget: {recorded} already fixes the run's steps (leave the budget out to resume)")
        return load_preset(str(recorded), list(overrides))
    if recorded.is_file():
        raise UsageError(f"{recorded}: the run exists (resume it, or choose another run directory)")
    if data is None:
        raise UsageError("data: a derived preset is derived from the training data")
    dataset = open_dataset(data)
    training = training_data_for(run.root, data, subset)
    num_train = len(training.ids) if training.ids is not None else len(dataset.ids("train"))
    # The layout prior's grid from the run's own training layouts (issue 32).
    preset, probed = derive_measured(dataset.info, num_train, choose_device(device), budget,
                                     layout_grid=lambda latent: choose_layout_grid(dataset, latent, training.ids))
    logger.info(f"derived preset: {preset.source}")
    if is_main_process():
        record_plan(run, budget, probed, overrides)  # the budget each stage buys its steps from
    return preset_from_dict(to_dict(preset), list(overrides))


def _anything_trained(run: RunDir) -> bool:
    return any((run.stage_dir(s.name) / sub).exists() for s in _TRAINED for sub in ("checkpoint", "config.json"))


def _open_job(run: RunDir, data: Path | None, preset: Preset, stages: tuple[str, ...], resume: bool,
              device: str | None, subset: int | None) -> TrainJob:
    """Every check that can fail before anything is written, in the order a user would fix them."""
    for name in stages:
        stage(name)  # an unknown stage is a bug in the caller: KeyError
    _check_not_trained(run, stages, resume)
    if resume:
        _check_resume_fits(preset, run, stages)
    if subset is not None and data is None:
        raise UsageError("subset: needs the training data (without it the layout prior trains on the run's codes)")
    job = TrainJob(run, data, preset, stages, resume, device, subset)
    if data is None:
        return job
    if any(stage(name).from_images for name in stages):
        check_dataset_fits(preset.vqvae, open_dataset(data).info, data)
    # The run's record decides the training images; a subset that contradicts it is refused here.

    training = training_data_for(run.root, data, subset)
    job.train_ids = training.ids
    if training.ids is not None:
        where = "subset" if training.subset is not None else f"{data}: train split"
        _check_enough_images(preset, stages, len(training.ids), where)
    return job


def _check_not_trained(run: RunDir, stages: tuple[str, ...], resume: bool) -> None:
    first = stages[0]
    if not resume and stage(first).weights and run.has_weights(first):
        raise UsageError(f"{run.stage_dir(first)}: already trained (resume it, or choose another run directory)")


def _check_resume_fits(preset: Preset, run: RunDir, stages: tuple[str, ...]) -> None:
    """A resumed stage must have the architecture it was saved with."""
    for name, config in _stage_configs(preset, stages).items():
        check_same_architecture(run.stage_dir(name) / "checkpoint", config)
        check_saved_config(run.stage_dir(name), config)


def _stage_configs(preset: Preset, stages: tuple[str, ...]) -> dict[str, object]:
    configs: dict[str, object] = {}
    if "cvqvae" in stages:
        config = CVQVAEConfig.from_preset(preset)
        configs.update({"cvqvae": config, "cvqvae-prior": prior_config(preset, config)})
    if "obj-cgan" in stages:
        configs["obj-cgan"] = ObjCGANConfig.from_preset(preset)
    configs.update({name: getattr(preset, stage(name).model) for name in stages if stage(name).model})
    return configs


def _check_enough_images(preset: Preset, stages: tuple[str, ...], n: int, where: str) -> None:
    """A subset smaller than a batch would fail only inside the loop, after the record is written (each
    stage's training sections: the registry's ``Stage.batches``)."""
    for key in dict.fromkeys(k for name in stages for k in stage(name).batches):
        batch = getattr(preset, key).batch_size
        if n < batch:
            raise UsageError(f"{where}: {n} training images, fewer than {key}.batch_size {batch}")


def save_preset(preset: Preset, run: RunDir) -> None:
    if is_main_process():
        run.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.preset_yaml, yaml.safe_dump(to_dict(preset), sort_keys=False))


def _record_training(job: TrainJob) -> None:
    """Keep the run's training images beside its models (rank 0) before the first model is written."""
    if job.data is not None and is_main_process():
        record_training_data(job.run.root, job.data, job.subset)
    save_preset(job.preset, job.run)


def _train_vqvae(job: TrainJob) -> None:
    if job.data is None:
        raise UsageError("data: the VQ-VAE trains on images")
    if is_main_process():
        training = record_training_data(job.run.root, job.data, job.subset)
    else:
        training = training_data_for(job.run.root, job.data, job.subset)  # the same ids; rank 0 writes the record
    save_preset(job.preset, job.run)
    train_vqvae(job.preset, job.data, job.run.root, resume=job.resume, device=job.device, train_ids=training.ids)


def prior_copies(preset: Preset) -> int:
    """Transformed copies of each training image to encode: as many as either prior learns from."""
    return max((t.augment_copies for t in (preset.prior_train, preset.layout_prior_train) if t.augment), default=0)


def extract_run_codes(run: RunDir, data: Path, device: str | None, skip_existing: bool = False,
                      train_ids: list[int] | None = None, copies: int = 0, seed: int = 0) -> None:
    """Extract codes on rank 0; other ranks (under torchrun) wait for the files.

    ``train_ids``: the run's training images (from its record); None encodes the whole train split.
    ``copies``: transformed copies of each training image the priors learn from as well.
    """
    target = run.codes_file("val")
    if skip_existing and target.is_file():
        return
    if is_main_process():
        # One writer per run (`msgnet codes extract` beside a training of the same run). A run that does
        # not exist has no VQ-VAE to encode with: extract_codes refuses it, and the lock must not create it.
        with writing(run.root) if run.root.is_dir() else contextlib.nullcontext():
            extract_codes(run.root, data, device=device, train_ids=train_ids, copies=copies, seed=seed)
    else:
        while not target.is_file():
            time.sleep(1.0)


def _extract(job: TrainJob) -> None:
    if job.data is None:
        raise UsageError("data: codes are extracted from the training images")
    extract_run_codes(job.run, job.data, job.device, skip_existing=job.resume, train_ids=job.train_ids,
                      copies=prior_copies(job.preset), seed=job.preset.prior_train.seed)


def _need_codes(run: RunDir) -> None:
    if not run.codes_file("train").is_file():
        raise UsageError(f"{run.codes}: no extracted codes "
                         "(extract the training data's codes first: `msgnet codes extract`)")


def _train_layout_prior(job: TrainJob) -> None:
    """From the run's codes within a whole run; from a dataset's layouts directly when trained alone, or
    when the layout prior has a grid of its own (finer than the codes' latent grid the codes hold)."""
    alone = job.stages == ("layout-prior",)
    own_grid = job.preset.layout_prior.height != job.preset.vqvae.latent_size
    layout_data = job.data if alone or own_grid else None
    if layout_data is None:
        _need_codes(job.run)
    _record_training(job) if alone and layout_data is not None else save_preset(job.preset, job.run)
    train_layout_prior(job.preset, job.run.root, resume=job.resume, device=job.device, data_dir=layout_data,
                       train_ids=job.train_ids if layout_data is not None else None)


def _train_prior(job: TrainJob) -> None:
    _need_codes(job.run)
    save_preset(job.preset, job.run)
    train_prior(job.preset, job.run.root, resume=job.resume, device=job.device,
                adherence=_adherence(job.preset, job.run, job.device))


def _adherence(preset: Preset, run: RunDir, device: str | None) -> Callable | None:
    """The codes prior's adherence probe when the preset asks for one and the run has validation codes."""
    pairs = preset.prior_train.adherence_pairs
    if not pairs or not run.codes_file("val").is_file() or not is_main_process():
        return None

    probe = adherence_probe(run.root, pairs, choose_device(device), seed=preset.prior_train.seed)
    if probe is None:
        logger.info(f"prior: no QC segmenter trained on this run's images in {run.qc_segmenter} "
                    "(msgnet run trains it first): no adherence figure at validation")
    else:
        logger.info(f"prior: adherence of {pairs} decoded samples at every validation, scored by the QC segmenter")
    return probe


def _train_cvqvae(job: TrainJob) -> None:
    _record_training(job)
    train_cvqvae(job.preset, job.data, job.run.root, resume=job.resume, device=job.device, train_ids=job.train_ids)


def _train_obj_cgan(job: TrainJob) -> None:
    _record_training(job)
    train_obj_cgan(job.preset, job.data, job.run.root, resume=job.resume, device=job.device,
                   train_ids=job.train_ids, steps=job.steps)


# The stage registry: what trains each stage (cvqvae trains its prior too).
_TRAINERS: dict[str, Callable[[TrainJob], None]] = {
    "vqvae": _train_vqvae, "codes": _extract, "layout-prior": _train_layout_prior, "prior": _train_prior,
    "cvqvae": _train_cvqvae, "obj-cgan": _train_obj_cgan,
}
_TRAINED = trained_stages()
