"""`msgnet train vqvae|layout-prior|prior|all` and `msgnet presets`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from msgnet.cli.common import (add_device_argument, add_preset_arguments, is_main_process,
                               load_preset_from_args, save_preset)
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
    }
    for name, (help_text, needs_data) in specs.items():
        p = tsub.add_parser(name, help=help_text, description=f"Train {help_text}.")
        add_preset_arguments(p)
        if needs_data:
            p.add_argument("--data", type=Path, required=True, help="training dataset folder")
        elif name == "layout-prior":
            p.add_argument("--data", type=Path, default=None,
                           help="train on this dataset's layouts directly (no VQ-VAE or codes needed)")
        p.add_argument("--run", type=Path, required=True, help="run directory (created)")
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
    preset = load_preset_from_args(args)
    stage = args.stage_name
    run: Path = args.run
    start = time.perf_counter()
    if stage in ("vqvae", "all"):
        _check_run_dir(args, "vqvae")
        run_vqvae(preset, args.data, run, args.resume, args.device)
    if stage == "all":
        run_extract(run, args.data, args.device, skip_existing=args.resume)
    if stage in ("layout-prior", "all"):
        layout_data = getattr(args, "data", None) if stage == "layout-prior" else None
        if stage == "layout-prior":
            _check_run_dir(args, "layout_prior")
        if layout_data is None:
            _need_codes(run)
        elif is_main_process():
            from msgnet.sampling.run import record_training_data

            record_training_data(run, layout_data)
        from msgnet.train.prior_stage import train_layout_prior

        save_preset(preset, run)
        train_layout_prior(preset, run, resume=args.resume, device=args.device, data_dir=layout_data)
    if stage in ("prior", "all"):
        if stage == "prior":
            _check_run_dir(args, "prior")
        _need_codes(run)
        from msgnet.train.prior_stage import train_prior

        save_preset(preset, run)
        train_prior(preset, run, resume=args.resume, device=args.device)
    if is_main_process():
        print(f"{stage}: done in {time.perf_counter() - start:.0f} s -> {run}")
    return 0


def _need_codes(run: Path) -> None:
    if not (run / "codes" / "train.safetensors").is_file():
        raise UsageError(f"{run / 'codes'}: no extracted codes (run `msgnet codes extract --run {run} --data DIR`)")


def run_vqvae(preset, data: Path, run: Path, resume: bool, device: str | None) -> None:
    from msgnet.sampling.run import record_training_data
    from msgnet.train.vqvae_stage import train_vqvae

    if is_main_process():
        record_training_data(run, data)
    save_preset(preset, run)
    train_vqvae(preset, data, run, resume=resume, device=device)


def run_extract(run: Path, data: Path, device: str | None, skip_existing: bool = False) -> None:
    """Extract codes on rank 0; other ranks (under torchrun) wait for the files."""
    from msgnet.train.codes import extract_codes

    target = run / "codes" / "val.safetensors"
    if skip_existing and target.is_file():
        return
    if is_main_process():
        extract_codes(run, data, device=device)
    else:
        while not target.is_file():
            time.sleep(1.0)
