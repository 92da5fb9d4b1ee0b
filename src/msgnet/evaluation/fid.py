"""FID and KID in the feature space of the in-project digit classifier (Inception weights cannot be
fetched offline). Computed with torchmetrics' FrechetInceptionDistance / KernelInceptionDistance,
which accept a custom feature module.

Two feature spaces:

* ``images``: whole images (grey; RGB -> luminance) at their native size through the
  classifier's conv trunk, globally average-pooled (``channels[1]`` features). Global
  pooling makes the features size-agnostic; it ignores *where* things are (coherency and
  the U-Net figures measure that).
* ``objects``: every annotated object cropped and framed like an MNIST digit (28x28),
  through the classifier's penultimate layer (``hidden`` features).

Features are computed and accumulated on a device (``device=None``: CUDA when available, else
CPU): the metrics are moved there with ``Metric.to(device)``, which moves their states (FID keeps
float64 sums, so the device must support float64: CPU and CUDA do, Apple's MPS does not) and the
classifier with them. The numbers are read back to the host once, at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn as nn

from msgnet.data.checks import check_count
from msgnet.evaluation.digit_classifier import DigitClassifier, crop_to_cell, get_classifier, to_gray
from msgnet.evaluation.requests import FidRequest
from msgnet.device import choose_device

if TYPE_CHECKING:
    from msgnet.data.format import Dataset

FEATURE_TEXT = {
    "images": "msgnet digit classifier, conv trunk globally average-pooled, whole grey images at native size",
    "objects": "msgnet digit classifier, penultimate layer, annotated objects framed as 28x28 MNIST cells",
}


class ClassifierFeatures(nn.Module):
    """torchmetrics feature module: (N, 1, H, W) float in [0, 1] -> (N, D) features."""

    def __init__(self, classifier: DigitClassifier, kind: str):
        super().__init__()
        if kind not in FEATURE_TEXT:
            raise ValueError(f"unknown feature kind {kind!r}")
        self.classifier = classifier.eval()
        self.kind = kind
        self.num_features = classifier.config.channels[1] if kind == "images" else classifier.config.hidden

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.kind == "images":
            return self.classifier.pooled_features(x)
        return self.classifier.embed(x)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W[, C]) uint8 -> (N, 1, H, W) float grey in [0, 1]."""
    gray = np.stack([to_gray(im) for im in images])
    return torch.from_numpy(gray).float().div_(255.0).unsqueeze(1)


def object_cells(images: np.ndarray, boxes: Sequence[Sequence[tuple[int, int, int, int]]]) -> np.ndarray:
    """MNIST-framed cells (M, 28, 28) of every box of every image."""
    cells = [crop_to_cell(im, b) for im, bs in zip(images, boxes) for b in bs]
    return np.stack(cells) if cells else np.zeros((0, 28, 28), dtype=np.uint8)


def fid_kid(real: torch.Tensor, fake: torch.Tensor, classifier: DigitClassifier, kind: str,
            batch_size: int = 256, kid_subsets: int = 100, seed: int = 0,
            device: torch.device | str | None = None) -> dict:
    """FID and KID of ``fake`` against ``real`` ((N, 1, H, W) float in [0, 1]) in the chosen feature space.

    Runs on ``device`` (None: CUDA when available, else CPU); ``classifier`` is moved there in place.
    The inputs may live anywhere: they are copied to the device batch by batch.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    dev = choose_device(device)
    feats = ClassifierFeatures(classifier.to(dev), kind)
    if len(real) < 2 or len(fake) < 2:
        return {"fid": None, "kid_mean": None, "kid_std": None, "features": FEATURE_TEXT[kind],
                "n_real": len(real), "n_fake": len(fake), "note": "too few samples"}
    subset = min(1000, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=feats, normalize=True, reset_real_features=True).to(dev)
    # KID draws its random subsets with torch.randperm on the global CPU generator, so the same
    # subsets are drawn whatever the device.
    torch.manual_seed(seed)
    kid = KernelInceptionDistance(feature=feats, normalize=True, subsets=kid_subsets, subset_size=subset).to(dev)
    for data, is_real in ((real, True), (fake, False)):
        for s in range(0, len(data), batch_size):
            batch = data[s : s + batch_size].to(dev, non_blocking=True)
            fid.update(batch, real=is_real)
            kid.update(batch, real=is_real)
    kid_mean, kid_std = kid.compute()
    # One read-back for the three numbers (float32 -> float64 is exact, so as float() of each).
    fid_value, kid_mean_value, kid_std_value = torch.stack(
        [fid.compute().double(), kid_mean.double(), kid_std.double()]).tolist()
    return {
        "fid": fid_value,
        "kid_mean": kid_mean_value,
        "kid_std": kid_std_value,
        "kid_subset_size": subset,
        "features": FEATURE_TEXT[kind],
        "feature_dim": feats.num_features,
        "n_real": len(real),
        "n_fake": len(fake),
    }


def compute_fid(real: Dataset, syn: Dataset, model: DigitClassifier, max_images: int = FidRequest.max_images,
                progress: bool = False, device: torch.device | str | None = None) -> dict:
    """FID/KID of the synthetic set against the real validation split, on whole images and on objects.

    ``real`` and ``syn`` are opened datasets (:func:`msgnet.evaluation.inputs.open_input`); at most
    ``max_images`` synthetic images are used. Runs on ``device`` (None: CUDA when available, else CPU).
    """
    from msgnet.evaluation.inputs import load_ids, synthetic_ids

    check_count("max_images", max_images, least=2)
    dev = choose_device(device)
    real_ids = real.ids("val")
    syn_ids = synthetic_ids(syn)[:max_images]
    real_imgs, _ = load_ids(real, real_ids)
    syn_imgs, _ = load_ids(syn, syn_ids)
    out = {"real": f"{real.root} (val split, {len(real_ids)} images)", "synthetic": f"{syn.root} ({len(syn_ids)} images)",
           "images": fid_kid(images_to_tensor(real_imgs), images_to_tensor(syn_imgs), model, "images", device=dev)}
    ra, sa = real.annotations(), syn.annotations()
    real_cells = object_cells(real_imgs, [[o.bbox for o in ra.get(i, [])] for i in real_ids])
    syn_cells = object_cells(syn_imgs, [[o.bbox for o in sa.get(i, [])] for i in syn_ids])

    def to_t(c: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(c).float().div_(255.0).unsqueeze(1)

    out["objects"] = fid_kid(to_t(real_cells), to_t(syn_cells), model, "objects", device=dev)
    return out


def run_fid(req: FidRequest) -> dict:
    """`msgnet eval fid` as a library call: open and compare both sets, load (or train) the classifier,
    measure; the result names the classifier used."""
    from msgnet.evaluation.inputs import check_compatible, open_input

    real = open_input(req.real, "real")
    syn = open_input(req.synthetic, "synthetic")
    check_compatible(real, syn)
    model, where = get_classifier(req.classifier, progress=req.progress, device=req.device)
    result = compute_fid(real, syn, model, req.max_images, device=req.device)
    result["classifier"] = str(where)
    return result


def format_fid(result: dict) -> str:
    """The text `msgnet eval fid` prints for a :func:`compute_fid` result."""
    lines = [f"FID/KID of {result['synthetic']} against {result['real']}"]
    for kind in ("images", "objects"):
        r = result[kind]
        if r["fid"] is None:
            lines.append(f"  {kind:<8} n/a ({r.get('note')})")
            continue
        lines.append(f"  {kind:<8} FID {r['fid']:.4g}   KID {r['kid_mean']:.4g} ± {r['kid_std']:.3g}   "
                     f"({r['n_real']} real / {r['n_fake']} generated; features: {r['features']}, "
                     f"{r['feature_dim']}-d)")
    return "\n".join(lines)
