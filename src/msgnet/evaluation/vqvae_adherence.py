"""Where a VQ-VAE loses the layout: what its reconstructions show, and whether its decoder obeys.

Two of the adherence diagnostics (the codes prior's class gain is the third, code usage the fourth):

* **reconstruction fidelity** — real images encoded and decoded (with their own layouts, for a
  decoder told them) are read by the digit classifier: the share of objects read as their
  annotated digit. No prior can draw what the VQ-VAE cannot reconstruct, so this is the ceiling
  the VQ-VAE leaves every prior.
* **decoder obedience** — only for a decoder told the layout: real codes decoded under the same
  layout with every object's class changed (a random permutation of the object classes without a
  fixed point, one per image); the share of objects read as the *layout's* class. 100%
  means the layout decides what is drawn; about chance (1 in 10 digits) means the codes do.

Code usage per path (distinct codes used on the images, perplexity) and PSNR come with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from msgnet.errors import UsageError
from msgnet.evaluation.digit_classifier import crop_to_cell
from msgnet.evaluation.requests import VQVAEAdherenceRequest
from msgnet.evaluation.stats import wilson_interval
from msgnet.layouts.boxes import layout_to_objects
from msgnet.layouts.classes import permute_object_classes
from msgnet.nn.quantizer import perplexity_from_counts
from msgnet.sampling.pipeline import to_uint8_images

# Reads (N, 28, 28) uint8 MNIST-framed crops, returns the digit of each (N,).
DigitReader = Callable[[np.ndarray], np.ndarray]


@dataclass
class _Reading:
    """Objects of decoded images read by the classifier: how many, and how many as the layout says."""

    objects: int = 0
    agreeing: int = 0

    def add(self, images: np.ndarray, layouts: np.ndarray, read: DigitReader, digit_of: dict[int, int]) -> None:
        cells, truth = [], []
        for image, layout in zip(images, layouts):
            for obj in layout_to_objects(layout):
                cells.append(crop_to_cell(image, obj.bbox))
                truth.append(digit_of.get(obj.category_id, -1))
        if cells:
            self.objects += len(cells)
            self.agreeing += int((read(np.stack(cells)) == np.asarray(truth)).sum())

    def figures(self, name: str) -> dict[str, float]:
        if not self.objects:
            return {}
        lo, hi = wilson_interval(self.agreeing, self.objects)
        return {name: self.agreeing / self.objects, f"{name}_ci95_low": lo, f"{name}_ci95_high": hi}


@torch.no_grad()
def vqvae_adherence(
    model: torch.nn.Module, images: np.ndarray, layouts: np.ndarray, read: DigitReader | None,
    digit_of: dict[int, int] | None, batch_size: int = 64, seed: int = 0,
) -> dict[str, float]:
    """Reconstruction fidelity, decoder obedience (decoders told the layout), PSNR and code usage of
    ``model`` (a :class:`~msgnet.models.vqvae.DoublePathVQVAE`) on real ``images`` (N, H, W, C) uint8
    with their ``layouts`` (N, H, W). Without a digit reader (not a digit set) only PSNR and usage."""
    model.eval()
    device = next(model.parameters()).device
    told = bool(getattr(model, "told_layout", False))
    generator = torch.Generator().manual_seed(seed)
    recon_reading, obey_reading = _Reading(), _Reading()
    usage = torch.zeros(2, model.config.num_embeddings, dtype=torch.long)
    psnr_sum = 0.0
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).permute(0, 3, 1, 2).float().div(255.0).to(device)
        lay = torch.from_numpy(layouts[start:start + batch_size].astype(np.int64)).to(device)
        codes = model.encode_indices(x)
        for path, c in enumerate(codes):
            usage[path] += torch.bincount(c.flatten().cpu(), minlength=usage.shape[1])
        recon = model.decode_indices(*codes, lay if told else None)
        err = (recon - x).pow(2).flatten(1).mean(1).clamp_min(1e-10)
        psnr_sum += float((10.0 * torch.log10(1.0 / err)).sum())
        if read is None or digit_of is None:
            continue
        recon_reading.add(to_uint8_images(recon), layouts[start:start + batch_size], read, digit_of)
        if told:
            other = permute_object_classes(lay.cpu(), model.config.layout_classes, generator).to(device)
            obey_reading.add(to_uint8_images(model.decode_indices(*codes, other)), other.cpu().numpy(), read, digit_of)
    result: dict[str, float] = {"images": float(len(images)), "psnr": psnr_sum / max(len(images), 1)}
    for path, name in enumerate(("attn", "conv")):
        result[f"used_codes_{name}"] = float((usage[path] > 0).sum())
        result[f"used_share_{name}"] = float((usage[path] > 0).float().mean())
        result[f"perplexity_{name}"] = float(perplexity_from_counts(usage[path]))
    result.update(recon_reading.figures("reconstruction_fidelity"))
    result.update(obey_reading.figures("decoder_obedience"))
    return result


def measure_run_vqvae(run: Path | str, data: Path | str, **options) -> dict[str, float | str]:
    """:func:`measure_vqvae` of a :class:`VQVAEAdherenceRequest` made of these keywords (``split``, ``num``,
    ``seed``, ``classifier``, ``device``; each checked, naming it)."""
    return measure_vqvae(VQVAEAdherenceRequest(run, data, **options))


def measure_vqvae(req: VQVAEAdherenceRequest) -> dict[str, float | str]:
    """:func:`vqvae_adherence` of ``req.run``'s VQ-VAE on the first ``req.num`` (0: all) images of
    ``req.data``'s ``req.split``; the digit classifier reads objects where the data's classes are the digits."""
    from msgnet.device import choose_device
    from msgnet.evaluation.digit_classifier import classify, digit_of_class, get_classifier
    from msgnet.evaluation.inputs import open_input
    from msgnet.models.vqvae import DoublePathVQVAE
    from msgnet.run_dir import as_run_dir

    dev = choose_device(req.device)
    dataset = open_input(req.data, "data")
    split = req.split
    if split not in dataset.info.splits or not dataset.info.splits[split]:
        raise UsageError(f"split: {req.data / 'dataset.json'} has no {split!r} split")
    model = DoublePathVQVAE.from_pretrained(as_run_dir(req.run).vqvae, dev)
    images, layouts = dataset.load_split(split)
    if req.num > 0:
        images, layouts = images[:req.num], layouts[:req.num]
    if images.ndim == 3:
        images = images[..., None]
    digit_of = digit_of_class(dataset.info.class_names)
    read = None
    if digit_of is not None:
        reader, _ = get_classifier(req.classifier, progress=False, device=dev)
        read = lambda cells: classify(reader, cells)  # noqa: E731
    result: dict[str, float | str] = {"run": str(req.run), "data": str(req.data), "split": split}
    result.update(vqvae_adherence(model, images, layouts, read, digit_of, seed=req.seed))
    return result


def format_vqvae_adherence(result: dict) -> str:
    """A few lines a person reads: the ceiling, the obedience, the codes used."""
    lines = [f"VQ-VAE of {result['run']} on {int(result['images'])} {result['split']} images of {result['data']}: "
             f"PSNR {result['psnr']:.2f} dB"]
    for key, what in (("reconstruction_fidelity", "reconstructions read as their annotated digit"),
                      ("decoder_obedience", "objects drawn as a changed layout's class (real codes)")):
        if key in result:
            lines.append(f"  {what}: {100 * result[key]:.1f}% "
                         f"(95% CI {100 * result[key + '_ci95_low']:.1f}-{100 * result[key + '_ci95_high']:.1f})")
    for name in ("attn", "conv"):
        lines.append(f"  codes used, {name} path: {int(result[f'used_codes_{name}'])} "
                     f"({100 * result[f'used_share_{name}']:.0f}%), perplexity {result[f'perplexity_{name}']:.1f}")
    return "\n".join(lines)
