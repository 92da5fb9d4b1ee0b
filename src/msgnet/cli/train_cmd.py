"""`msgnet train vqvae|layout-prior|prior|all` and `msgnet presets`."""

from __future__ import annotations

import argparse
from pathlib import Path

from msgnet.cli.common import (add_device_argument, add_preset_arguments, add_train_subset_argument,
                               load_preset_from_args)
from msgnet.errors import UsageError
from msgnet.run_dir import stage, trained_stages

# What `msgnet train STAGE` says of each stage (the stages themselves come from the run registry;
# one without a line here is described by its title).
HELP = {
    "vqvae": "the double-path VQ-VAE (stage 1)",
    "layout-prior": "the LayoutPixelSNAIL over layouts (needs `msgnet codes extract`)",
    "prior": "the latent PixelSNAIL conditioned on layouts (needs `msgnet codes extract`)",
    "all": "VQ-VAE -> code extraction -> layout prior -> latent prior",
    "cvqvae": "the paper's cVQ-VAE baseline: a single-path VQ-VAE whose decoder sees the layout, and a "
              "PixelSNAIL over its codes given the layout (sizes from the preset; generate with "
              "`msgnet sample --layouts`)",
    "obj-cgan": "the paper's obj-cGAN baseline (Hinz et al. 2019): a GAN told every object's class and box, "
                "with global and object pathways (sizes from the preset; generate with `msgnet sample "
                "--layouts`)",
}


def _commands() -> list[str]:
    """`msgnet train`'s sub-commands: every stage that trains a model by a command of its own (the
    registry's order), with "all" (msgnet's stages in turn) after msgnet's own."""
    own = [s for s in trained_stages() if s.part_of is None]
    return ([s.name for s in own if s.method == "msgnet"] + ["all"]
            + [s.name for s in own if s.method != "msgnet"])


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
    for name in _commands():
        help_text = HELP.get(name) or f"the {stage(name).title}"
        needs_data = name == "all" or stage(name).from_images
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
        if needs_data or name == "layout-prior":  # every command given the images may train on a subset
            add_train_subset_argument(p)
        p.add_argument("--run", type=Path, required=True, help="run directory (created)")
        p.add_argument("--steps", type=int, default=None, metavar="N",
                       help="train each stage of this command for N optimiser steps, whatever the preset says "
                       "(smoke runs, examples)")
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
        add_device_argument(p)
        p.set_defaults(func=_train, stage_name=name, writes_run=True)


def _presets(args: argparse.Namespace) -> int:
    from msgnet.config import list_presets, load_preset

    for name in list_presets():
        print(f"{name:<18} {load_preset(name).source}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from msgnet.workflow.train import ALL, train

    name = args.stage_name
    preset = None
    if getattr(args, "config", None) is not None:
        if getattr(args, "budget", None) is not None:
            raise UsageError("--budget: only for a derived preset (leave out --config)")
        preset = load_preset_from_args(args)
    train(args.run, getattr(args, "data", None), preset, stages=ALL if name == "all" else (name,),
          budget=getattr(args, "budget", None), resume=args.resume, device=args.device,
          subset=getattr(args, "train_subset", None), steps=args.steps,
          overrides=list(args.overrides) + list(args.overrides_positional))
    return 0
