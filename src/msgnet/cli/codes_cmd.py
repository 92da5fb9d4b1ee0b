"""`msgnet codes extract`."""

from __future__ import annotations

import argparse
from pathlib import Path

from msgnet.cli.common import add_device_argument, add_train_subset_argument


def register(sub: argparse._SubParsersAction) -> None:
    codes = sub.add_parser("codes", help="code maps of a dataset under a trained VQ-VAE")
    csub = codes.add_subparsers(dest="codes_command", metavar="SUBCOMMAND")
    csub.required = True
    ex = csub.add_parser("extract", help="store the 2HxW code maps and HxW layouts of both splits",
                         description="Encode every image of both splits with RUN_DIR/vqvae and store the "
                         "stacked 2HxW code maps and the layouts at HxW in RUN_DIR/codes/ for the priors. "
                         "Of the train split only the run's training images (RUN_DIR/dataset.json) are encoded.")
    ex.add_argument("--run", type=Path, required=True)
    ex.add_argument("--data", type=Path, required=True)
    add_train_subset_argument(ex)
    add_device_argument(ex)
    ex.set_defaults(func=_extract, writes_run=True)


def _extract(args: argparse.Namespace) -> int:
    import contextlib

    from msgnet.locks import writing
    from msgnet.run_dir import RunDir
    from msgnet.workflow.train import is_main_process

    # One writer per run (rank 0 under torchrun): the codes and the run's record of its training images are
    # written under its lock. A missing run is not created: it has no VQ-VAE to encode with (the library says).
    lock = is_main_process() and args.run.is_dir()
    with writing(args.run) if lock else contextlib.nullcontext():
        _extract_locked(args)
    print(f"codes written to {RunDir(args.run).codes}")
    return 0


def _extract_locked(args: argparse.Namespace) -> None:
    from msgnet.run_dir import RunDir
    from msgnet.workflow.train import extract_run_codes, is_main_process, prior_copies
    from msgnet.config import load_preset
    from msgnet.sampling.run import record_training_data, training_data_for

    # The run's record names the images its VQ-VAE trained on; the priors must see the same.
    training = training_data_for(args.run, args.data, args.train_subset)
    recorded = RunDir(args.run).preset_yaml  # its priors may learn from transformed copies too
    preset = load_preset(str(recorded)) if recorded.is_file() else None
    extract_run_codes(RunDir(args.run), args.data, args.device, train_ids=training.ids,
                      copies=prior_copies(preset) if preset else 0, seed=preset.prior_train.seed if preset else 0)
    if is_main_process():  # after extraction: a failed one leaves the run as it was
        record_training_data(args.run, args.data, args.train_subset)
