"""Code extraction: the trained VQ-VAE's 2H x W code maps plus latent-grid layouts, for the priors.

``RUN_DIR/codes/{train,val}.safetensors`` each hold

- ``codes``: (N, 2H, W), uint8 when ``num_embeddings <= 256`` else int16; self-attention
  path on top (see :mod:`msgnet.models.latents`);
- ``layouts``: (N, H, W) uint8, the image layouts downsampled to the latent grid with
  :func:`msgnet.layouts.downsample_layout` (the project's one rule);
- in ``train``, when the priors train on augmented data, the rows of the originals come first
  and ``copies`` transformed copies of all of them follow (copy k of image i at row k*N + i);

and string metadata (``num_embeddings``, ``latent_size``, ``num_classes``, ``dataset``).
Read them back with :func:`load_codes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from msgnet.augmentation.standard import AugmentationSettings, geometric_copies
from msgnet.data.format import open_dataset
from msgnet.errors import UsageError
from msgnet.io import atomic_write_bytes
from msgnet.layouts import downsample_layout
from msgnet.models.latents import stack_codes
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.device import choose_device
from msgnet.run_dir import RunDir
from msgnet.training.vqvae_stage import open_image_datasets


def vqvae_dir(run_dir: Path | str) -> Path:
    """``run_dir/vqvae`` (or ``run_dir`` itself if it is the saved model's directory)."""
    run = RunDir(run_dir)
    return run.root if (run.root / "config.json").is_file() and not run.vqvae.is_dir() else run.vqvae


@torch.no_grad()
def extract_codes(
    run_dir: Path | str, data_dir: Path | str, device: str | None = None, batch_size: int = 64,
    train_ids: Sequence[int] | None = None, copies: int = 0, seed: int = 0,
) -> Path:
    """Encode every image of the ``train`` and ``val`` splits; returns ``run_dir/codes``.

    ``train_ids``: of the train split only these (the images the VQ-VAE trained on), so the
    priors learn from exactly the run's training images. ``copies``: also encode that many
    transformed copies of each training image (the geometric transforms dataset.json declares
    valid; none declared, none made), stored after the originals (see :func:`load_codes`).
    """
    run_dir = Path(run_dir)
    dev = choose_device(device)
    model = DoublePathVQVAE.from_pretrained(vqvae_dir(run_dir), dev)
    cfg = model.config
    train_set, val_set = open_image_datasets(cfg, Path(data_dir), train_ids)
    num_classes = int(train_set.num_classes)
    settings = AugmentationSettings.for_generator(open_dataset(data_dir).info.augmentations)
    copies = copies if settings.geometric else 0
    dtype = torch.uint8 if cfg.num_embeddings <= 256 else torch.int16
    out_dir = RunDir(run_dir).codes

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            codes_attn, codes_conv = model.encode_indices(images.to(dev))
        return stack_codes(codes_attn, codes_conv).to(dtype).cpu()

    for split, ds in (("train", train_set), ("val", val_set)):
        if not len(ds):
            continue
        chunks = [encode(ds.images[start : start + batch_size].float() / 255.0)
                  for start in range(0, len(ds), batch_size)]
        full_layouts = [ds.layouts]
        if split == "train" and copies:
            for images, lay in geometric_copies(ds.images, ds.layouts.to(dev), settings, copies, seed, batch_size):
                assert images is not None
                chunks.append(encode(images))
                full_layouts.append(lay.cpu())
        codes = torch.cat(chunks)
        layouts = downsample_layout(torch.cat(full_layouts).numpy(), cfg.latent_size, num_classes=num_classes)
        tensors = {"codes": codes.contiguous(), "layouts": torch.from_numpy(np.ascontiguousarray(layouts))}
        metadata = {
            "num_embeddings": str(cfg.num_embeddings),
            "latent_size": str(cfg.latent_size),
            "num_classes": str(num_classes),
            "dataset": str(Path(data_dir).resolve()),
            "num_images": str(len(ds)),  # originals; `copies` transformed copies of them follow
            "copies": str(copies if split == "train" else 0),
        }
        atomic_write_bytes(out_dir / f"{split}.safetensors", safetensors_bytes(tensors, metadata=metadata))
    return out_dir


def load_codes(run_dir: Path | str, split: str, copies: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """(codes int64 (N, 2H, W), layouts int64 (N, H, W), metadata) of ``run_dir/codes/<split>``.

    The originals, followed by up to ``copies`` transformed copies of each as far as the file
    holds them (metadata ``copies``; ``copies_used`` says how many were taken).
    """
    path = RunDir(run_dir).codes_file(split)
    if not path.is_file():
        raise UsageError(f"{path}: missing (run code extraction after training the VQ-VAE)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            codes, layouts = f.get_tensor("codes"), f.get_tensor("layouts")
    except Exception as exc:
        raise UsageError(f"{path}: unreadable code file ({type(exc).__name__})") from None
    originals = int(meta.get("num_images", codes.shape[0]))
    used = min(copies, int(meta.get("copies", 0)))
    rows = originals * (1 + used)
    meta["copies_used"] = str(used)
    return codes[:rows].long(), layouts[:rows].long(), meta
