"""`msgnet train vqvae|layout-prior|prior|all` and `msgnet presets`."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from msgnet.cli.common import (add_device_argument, add_preset_arguments, add_train_subset_argument,
                               is_main_process, load_preset_from_args, save_preset)
from msgnet.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    presets = sub.add_parser("presets", help="list the shipped presets")
    presets.set_defaults(func=_presets)

    train = sub.add_parser(
        "train", help="train the VQ-VAE, the priors, or everything",
        description="Train MSGNet's stages. Every stage shows a progress bar, writes metrics.csv and "
        "checkpoints (model.safetensors + config.json) into RUN_DIR/<stage>/, resumes exactly with "
        "--resume, and runs unchanged under torchrun (DDP: gloo on CPU, nccl on GPU).",
    )
    tsub = train.add_subparsers(dest="stage", metavar="STAGE")
    tsub.required = True
    specs = {
        "vqvae": ("the double-path VQ-VAE (stage 1)", True),
        "layout-prior": ("the LayoutPixelSNAIL over layouts (needs `msgnet codes extract`)", False),
        "prior": ("the latent PixelSNAIL conditioned on layouts (needs `msgnet codes extract`)", False),
        "all": ("VQ-VAE -> code extraction -> layout prior -> latent prior", True),
        "cvqvae": ("the paper's cVQ-VAE baseline: a single-path VQ-VAE whose decoder sees the layout, and a "
                   "PixelSNAIL over its codes given the layout (sizes from the preset; generate with "
                   "`msgnet sample --layouts`)", True),
        "obj-cgan": ("the paper's obj-cGAN baseline (Hinz et al. 2019): a GAN told every object's class and box, "
                     "with global and object pathways (sizes from the preset; generate with `msgnet sample "
                     "--layouts`)", True),
    }
    for name, (help_text, needs_data) in specs.items():
        p = tsub.add_parser(name, help=help_text, description=f"Train {help_text}.")
        add_preset_arguments(p, derivable=name == "all")
        if name == "all":
            p.add_argument("--budget", type=float, default=None, metavar="MINUTES",
                           help="for a derived preset (no --config): training minutes to fill, split among the "
                           "three models [30]")
        if needs_data:
            p.add_argument("--data", type=Path, required=True, help="training dataset folder")
        elif name == "layout-prior":
            p.add_argument("--data", type=Path, default=None,
                           help="train on this dataset's layouts directly (no VQ-VAE or codes needed)")
        if name in ("vqvae", "all", "layout-prior", "cvqvae", "obj-cgan"):
            add_train_subset_argument(p)
        p.add_argument("--run", type=Path, required=True, help="run directory (created)")
        p.add_argument("--steps", type=int, default=None, metavar="N",
                       help="train each stage of this command for N optimiser steps, whatever the preset says "
                       "(smoke runs, examples)")
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
        add_device_argument(p)
        p.set_defaults(func=_train, stage_name=name)


def _presets(args: argparse.Namespace) -> int:
    from msgnet.config import list_presets, load_preset

    for name in list_presets():
        print(f"{name:<18} {load_preset(name).source}")
    return 0


def _check_run_dir(args: argparse.Namespace, stage_dir: str | None) -> None:
    run: Path = args.run
    if not args.resume and stage_dir and (run / stage_dir / "config.json").exists():
        raise UsageError(f"{run / stage_dir}: already trained (use --resume to continue, or another --run)")


def _train(args: argparse.Namespace) -> int:
    stage = args.stage_name
    if getattr(args, "config", None) is None:
        preset = _derived_or_recorded_preset(args)
    else:
        if getattr(args, "budget", None) is not None:
            raise UsageError("--budget: only for a derived preset (leave out --config)")
        preset = load_preset_from_args(args)
    if args.steps is not None:
        preset = _with_steps(preset, args.steps)
    run: Path = args.run
    created = not run.exists()
    try:
        return _train_stages(args, preset, stage)
    except UsageError:
        if created and is_main_process() and not _anything_trained(run):
            shutil.rmtree(run, ignore_errors=True)  # refused before training: leave no half-made run
        raise


def _with_steps(preset, steps: int):
    """``--steps N``: every stage trains exactly N steps (iterations, not epochs)."""
    from dataclasses import replace

    if steps < 1:
        raise UsageError("--steps: must be at least 1")
    changed = {name: replace(getattr(preset, name), iterations=steps, epochs=0)
               for name in ("vqvae_train", "layout_prior_train", "prior_train")}
    return replace(preset, **changed)


def _anything_trained(run: Path) -> bool:
    return any((run / name / sub).exists()
               for name in ("vqvae", "layout_prior", "prior", "cvqvae", "cvqvae_prior", "obj_cgan")
               for sub in ("checkpoint", "config.json"))


def _train_stages(args: argparse.Namespace, preset, stage: str) -> int:
    run: Path = args.run
    data: Path | None = getattr(args, "data", None)
    subset: int | None = getattr(args, "train_subset", None)
    start = time.perf_counter()
    stage_dir = {"vqvae": "vqvae", "all": "vqvae", "layout-prior": "layout_prior", "prior": "prior",
                 "cvqvae": "cvqvae", "obj-cgan": "obj_cgan"}[stage]
    _check_run_dir(args, stage_dir)
    if args.resume:
        _check_resume_fits(preset, run, stage)
    if subset is not None and data is None:
        raise UsageError("--train-subset: needs --data (without it the layout prior trains on the run's codes)")
    train_ids = None
    if data is not None and stage in ("vqvae", "all", "cvqvae", "obj-cgan"):
        from msgnet.data.format import open_dataset
        from msgnet.train.vqvae_stage import check_dataset_fits

        check_dataset_fits(preset.vqvae, open_dataset(data).info, data)  # before anything is written
    if data is not None:
        # Before anything is written: the run's record decides the training images, and a
        # --train-subset that contradicts it (a resume, a later stage) is refused here.
        from msgnet.sampling.run import training_data_for

        training = training_data_for(run, data, subset)
        train_ids = training.ids
        if train_ids is not None:
            where = "--train-subset" if training.subset is not None else f"{data}: train split"
            _check_enough_images(preset, stage, len(train_ids), where)
    if stage == "cvqvae":
        from msgnet.baselines.cvqvae_training import train_cvqvae
        from msgnet.sampling.run import record_training_data

        if is_main_process():
            record_training_data(run, data, subset)
        save_preset(preset, run)
        train_cvqvae(preset, data, run, resume=args.resume, device=args.device, train_ids=train_ids)
    if stage == "obj-cgan":
        from msgnet.baselines.obj_cgan_training import train_obj_cgan
        from msgnet.sampling.run import record_training_data

        if is_main_process():
            record_training_data(run, data, subset)
        save_preset(preset, run)
        train_obj_cgan(preset, data, run, resume=args.resume, device=args.device, train_ids=train_ids,
                       steps=args.steps)
    if stage in ("vqvae", "all"):
        run_vqvae(preset, data, run, args.resume, args.device, subset)
    if stage == "all":
        run_extract(run, data, args.device, skip_existing=args.resume, train_ids=train_ids,
                    copies=prior_copies(preset), seed=preset.prior_train.seed)
    if stage in ("layout-prior", "all"):
        layout_data = data if stage == "layout-prior" else None
        if layout_data is None:
            _need_codes(run)
        elif is_main_process():
            from msgnet.sampling.run import record_training_data

            record_training_data(run, layout_data, subset)
        from msgnet.train.prior_stage import train_layout_prior

        save_preset(preset, run)
        train_layout_prior(preset, run, resume=args.resume, device=args.device, data_dir=layout_data,
                           train_ids=train_ids if layout_data is not None else None)
    if stage in ("prior", "all"):
        _need_codes(run)
        from msgnet.train.prior_stage import train_prior

        save_preset(preset, run)
        train_prior(preset, run, resume=args.resume, device=args.device, adherence=_adherence(preset, run, args))
    if is_main_process():
        print(f"{stage}: done in {time.perf_counter() - start:.0f} s -> {run}")
    return 0


def _adherence(preset, run: Path, args: argparse.Namespace):
    """The codes prior's adherence probe when the preset asks for one and the run has validation codes."""
    pairs = preset.prior_train.adherence_pairs
    if not pairs or not (run / "codes" / "val.safetensors").is_file() or not is_main_process():
        return None
    from msgnet.device import choose_device
    from msgnet.evaluation.qc.adherence import adherence_probe

    probe = adherence_probe(run, pairs, choose_device(args.device), seed=preset.prior_train.seed)
    if probe is None:
        print(f"prior: no QC segmenter trained on this run's images in {run / 'qc' / 'segmenter'} "
              "(msgnet run trains it first): no adherence figure at validation")
    else:
        print(f"prior: adherence of {pairs} decoded samples at every validation, scored by the QC segmenter")
    return probe


def _check_resume_fits(preset, run: Path, stage: str) -> None:
    """Before anything is written: a resumed stage must have the architecture it was saved with."""
    from msgnet.train.checkpoint import check_same_architecture, check_saved_config

    if stage == "cvqvae":
        from msgnet.baselines.cvqvae import CVQVAEConfig
        from msgnet.baselines.cvqvae_training import MODEL_DIR, PRIOR_DIR, prior_config

        config = CVQVAEConfig.from_preset(preset)
        dirs = {MODEL_DIR: config, PRIOR_DIR: prior_config(preset, config)}
    elif stage == "obj-cgan":
        from msgnet.baselines.obj_cgan import ObjCGANConfig
        from msgnet.baselines.obj_cgan_training import MODEL_DIR as GAN_DIR

        dirs = {GAN_DIR: ObjCGANConfig.from_preset(preset)}
    else:
        names = {"vqvae": ["vqvae"], "layout-prior": ["layout_prior"], "prior": ["prior"],
                 "all": ["vqvae", "layout_prior", "prior"]}[stage]
        dirs = {name: getattr(preset, name) for name in names}
    for name, config in dirs.items():
        check_same_architecture(run / name / "checkpoint", config)
        check_saved_config(run / name, config)


def _derived_or_recorded_preset(args: argparse.Namespace):
    """Without --config: the run's own preset.yaml when resuming, else one derived from the data."""
    from msgnet.config import load_preset
    from msgnet.data.format import open_dataset
    from msgnet.preset_derivation import derive_preset
    from msgnet.sampling.run import training_data_for
    from msgnet.device import choose_device

    overrides = list(args.overrides) + list(args.overrides_positional)
    recorded = args.run / "preset.yaml"
    if args.resume and recorded.is_file():
        if args.budget is not None:
            raise UsageError(f"--budget: {recorded} already fixes the run's steps (leave --budget out to resume)")
        return load_preset(str(recorded), overrides)
    if recorded.is_file():
        raise UsageError(f"{recorded}: the run exists (--resume to continue it, or another --run)")
    dataset = open_dataset(args.data)
    training = training_data_for(args.run, args.data, args.train_subset)
    num_train = len(training.ids) if training.ids is not None else len(dataset.ids("train"))
    preset = derive_preset(dataset.info, num_train, choose_device(args.device), args.budget)
    print(f"derived preset: {preset.source}")
    from msgnet.config import preset_from_dict, to_dict

    return preset_from_dict(to_dict(preset), overrides)


def _check_enough_images(preset, stage: str, n: int, where: str) -> None:
    """A subset smaller than a batch would fail only inside the loop, after the record is written."""
    keys = {"vqvae": ("vqvae_train",), "layout-prior": ("layout_prior_train",),
            "all": ("vqvae_train", "layout_prior_train", "prior_train"),
            "cvqvae": ("vqvae_train", "prior_train"), "obj-cgan": ("vqvae_train",)}[stage]
    for key in keys:
        batch = getattr(preset, key).batch_size
        if n < batch:
            raise UsageError(f"{where}: {n} training images, fewer than {key}.batch_size {batch}")


def _need_codes(run: Path) -> None:
    if not (run / "codes" / "train.safetensors").is_file():
        raise UsageError(f"{run / 'codes'}: no extracted codes (run `msgnet codes extract --run {run} --data DIR`)")


def run_vqvae(preset, data: Path, run: Path, resume: bool, device: str | None, subset: int | None = None) -> None:
    """Record the run's training images (rank 0), then train the VQ-VAE on exactly those."""
    from msgnet.sampling.run import record_training_data, training_data_for
    from msgnet.train.vqvae_stage import train_vqvae

    if is_main_process():
        training = record_training_data(run, data, subset)
    else:
        training = training_data_for(run, data, subset)  # the same ids; rank 0 writes the record
    save_preset(preset, run)
    train_vqvae(preset, data, run, resume=resume, device=device, train_ids=training.ids)


def prior_copies(preset) -> int:
    """Transformed copies of each training image to encode: as many as either prior learns from."""
    return max((t.augment_copies for t in (preset.prior_train, preset.layout_prior_train) if t.augment), default=0)


def run_extract(run: Path, data: Path, device: str | None, skip_existing: bool = False,
                train_ids: list[int] | None = None, copies: int = 0, seed: int = 0) -> None:
    """Extract codes on rank 0; other ranks (under torchrun) wait for the files.

    ``train_ids``: the run's training images (from its record); None encodes the whole train split.
    ``copies``: transformed copies of each training image the priors learn from as well.
    """
    from msgnet.train.codes import extract_codes

    target = run / "codes" / "val.safetensors"
    if skip_existing and target.is_file():
        return
    if is_main_process():
        extract_codes(run, data, device=device, train_ids=train_ids, copies=copies, seed=seed)
    else:
        while not target.is_file():
            time.sleep(1.0)
