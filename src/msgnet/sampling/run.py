"""A trained run directory, as the generation pipeline needs it.

```
RUN_DIR/dataset.json     classes, image size, channels and rule of the training data
RUN_DIR/vqvae/           model.safetensors + config.json
RUN_DIR/prior/           the latent PixelSNAIL (conditioned on the layout)
RUN_DIR/layout_prior/    the LayoutPixelSNAIL
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from msgnet.data.format import DatasetInfo, open_dataset
from msgnet.errors import UsageError

RUN_DATASET_FILE = "dataset.json"


def record_training_data(run_dir: Path, data_dir: Path) -> None:
    """Keep the training set's description (without its split lists) beside the models."""
    info = open_dataset(data_dir).info
    description = info.to_json()
    description["splits"] = {}
    description["source"] = {"training_data": str(Path(data_dir).resolve()), **{"made_by": info.source}}
    run_dir.mkdir(parents=True, exist_ok=True)
    from msgnet.io import atomic_write_json

    atomic_write_json(run_dir / RUN_DATASET_FILE, description)


def read_run_info(run_dir: Path) -> DatasetInfo:
    path = run_dir / RUN_DATASET_FILE
    if not path.is_file():
        raise UsageError(f"{path}: missing (is {run_dir} a run trained with `msgnet train`?)")
    try:
        return DatasetInfo.from_json(json.loads(path.read_text()), str(path))
    except json.JSONDecodeError:
        raise UsageError(f"{path}: not valid JSON") from None


@dataclass
class GenerationRun:
    info: DatasetInfo
    vqvae: torch.nn.Module
    prior: torch.nn.Module
    layout_prior: torch.nn.Module | None
    device: torch.device

    @property
    def latent_hw(self) -> tuple[int, int]:
        cfg = self.vqvae.config
        return cfg.latent_size, cfg.latent_size


def _need(path: Path, what: str) -> Path:
    if not (path / "config.json").is_file():
        raise UsageError(f"{path}: no trained {what} here (run `msgnet train all` first)")
    return path


def load_generation_run(run_dir: Path, need_layout_prior: bool = True, device: str | None = None) -> GenerationRun:
    from msgnet.models.pixelsnail import load_prior
    from msgnet.models.vqvae import load_vqvae
    from msgnet.train.distributed import choose_device

    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    dev = choose_device(device)
    info = read_run_info(run_dir)
    vqvae = load_vqvae(_need(run_dir / "vqvae", "VQ-VAE")).to(dev).eval()
    prior = load_prior(_need(run_dir / "prior", "latent prior")).to(dev).eval()
    layout_prior = None
    if need_layout_prior:
        layout_prior = load_prior(_need(run_dir / "layout_prior", "layout prior")).to(dev).eval()
    lat = vqvae.config.latent_size
    if (prior.config.height, prior.config.width) != (2 * lat, lat):
        raise UsageError(f"{run_dir / 'prior'}: prior models {prior.config.height}x{prior.config.width} codes, "
                         f"the VQ-VAE makes {2 * lat}x{lat}")
    return GenerationRun(info=info, vqvae=vqvae, prior=prior, layout_prior=layout_prior, device=dev)

