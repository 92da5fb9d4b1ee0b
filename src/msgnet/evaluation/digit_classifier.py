"""A small digit classifier trained in-project on MNIST: the judge of annotation fidelity and the
feature network of FID/KID (Inception weights cannot be downloaded here).

Crops of annotated objects are framed the way MNIST frames its digits: the box is padded
to a square, resized so that its longer side is 20 px, and centred in a 28x28 cell.

Training and inference run on a device (``device=None``: CUDA when available, else CPU). Random
draws (batch order, shifts) come from a CPU generator whatever the device, so a CUDA run sees
the same batches as a CPU run; results are read back to the host once, at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from msgnet.data.checks import check_count, check_seed
from msgnet.device import choose_device
from msgnet.errors import UsageError
from msgnet.models.pretrained import PretrainedMixin

logger = logging.getLogger(__name__)

KIND = "digit-classifier"
CELL = 28
DIGIT_BOX = 20  # MNIST digits fit a 20x20 box centred in the 28x28 cell


@dataclass(frozen=True)
class DigitClassifierConfig:
    """Architecture of the digit classifier (a 4-conv CNN)."""

    in_channels: int = 1
    num_classes: int = 10
    channels: tuple[int, int] = (12, 24)  # (16, 32) runs 5-10x slower on this CPU build (oneDNN)
    hidden: int = 128
    dropout: float = 0.25


@dataclass(frozen=True)
class ClassifierTraining:
    """How the digit classifier trains (`msgnet eval train-classifier` reads its defaults here); every
    value is checked when the settings are made, naming its field."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    max_shift: int = 2  # random translation in pixels (crops are never perfectly centred)

    def __post_init__(self) -> None:
        check_count("epochs", self.epochs)
        check_count("batch_size", self.batch_size)
        check_seed("seed", self.seed)
        check_count("max_shift", self.max_shift, least=0)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf"):
            raise UsageError(f"lr: must be a positive finite number, got {self.lr!r}")


class DigitClassifier(PretrainedMixin, nn.Module):
    """conv-conv-pool, conv-conv-pool, fc, fc. ``embed`` gives the penultimate features (28x28 input);
    ``pooled_features`` the conv trunk globally average-pooled (any input size)."""

    kind = KIND
    config_class = DigitClassifierConfig

    @classmethod
    def config_from_json(cls, data: dict, where: str) -> DigitClassifierConfig:
        try:  # JSON has no tuples: the two conv widths come back as a list
            return DigitClassifierConfig(**{**data, "channels": tuple(data.get("channels", (12, 24)))})
        except TypeError as exc:
            raise UsageError(f"{where}: not a digit-classifier config ({exc})") from None

    def __init__(self, config: DigitClassifierConfig):
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.trunk = nn.Sequential(
            nn.Conv2d(config.in_channels, c1, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c1, c1, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c2, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.fc1 = nn.Linear(c2 * (CELL // 4) ** 2, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.num_classes)
        self.dropout = nn.Dropout(config.dropout)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [0, 1] -> (N, hidden) penultimate features."""
        h = F.max_pool2d(self.trunk(x), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.embed(x)))

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) in [0, 1], any size -> (N, channels[1]) globally average-pooled trunk features."""
        return self.trunk(x).mean(dim=(2, 3))


def default_classifier_dir() -> Path:
    """Where commands keep the classifier they train on demand (:func:`msgnet.io.msgnet_home`)."""
    from msgnet.io import msgnet_home

    return msgnet_home() / "digit-classifier"


def model_device(model: nn.Module) -> torch.device:
    """The device ``model``'s parameters live on."""
    return next(model.parameters()).device


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    if max_shift <= 0:
        return x
    n, dev = x.shape[0], x.device
    padded = F.pad(x, (max_shift,) * 4)
    # Drawn on the CPU generator (same shifts on every device), then moved: a host-to-device copy, no sync.
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).to(dev, non_blocking=True)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen).to(dev, non_blocking=True)
    ar = torch.arange(CELL, device=dev)
    rows = (dy[:, None] + ar[None]).clamp_max(padded.shape[2] - 1)
    cols = (dx[:, None] + ar[None]).clamp_max(padded.shape[3] - 1)
    idx_n = torch.arange(n, device=dev)[:, None, None]
    return padded[idx_n, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@torch.no_grad()
def classify(model: DigitClassifier, cells: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Predicted digits for (N, 28, 28) uint8 cells, computed on the device ``model`` lives on."""
    model.eval()
    dev = model_device(model)
    out = []
    for s in range(0, len(cells), batch_size):
        x = torch.from_numpy(cells[s : s + batch_size]).to(dev, non_blocking=True).float().div_(255.0).unsqueeze(1)
        out.append(model(x).argmax(1))
    # One read-back for all batches.
    return torch.cat(out).cpu().numpy() if out else np.zeros(0, dtype=np.int64)


def train_classifier(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    config: DigitClassifierConfig = DigitClassifierConfig(),
    training: ClassifierTraining = ClassifierTraining(),
    progress: bool = True,
    device: torch.device | str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[DigitClassifier, dict]:
    """Train on (N, 28, 28) uint8 digits on ``device`` (None: CUDA when available, else CPU).

    ``log``: told once, after the first ``ESTIMATE_AFTER`` steps, how long the whole training will
    take at the speed measured so far (a loaded CPU can be ten times slower than an idle one).

    Returns the model (on ``device``) and its test accuracy, mean loss per epoch and timing.
    """
    dev = choose_device(device)
    torch.manual_seed(training.seed)
    gen = torch.Generator().manual_seed(training.seed)
    model = DigitClassifier(config).to(dev)  # initialised on the CPU: same weights on every device
    opt = torch.optim.Adam(model.parameters(), lr=training.lr)
    n = len(train_images)
    per_epoch = n // training.batch_size
    steps = training.epochs * per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=training.lr, total_steps=max(steps, 1))
    # The whole (uint8) training set goes to the device once; batches are gathered there.
    x_all = torch.from_numpy(train_images).to(dev)
    y_all = torch.from_numpy(train_labels.astype(np.int64)).to(dev)
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="digit classifier", unit="step", disable=not progress)
    epoch_loss = torch.zeros(training.epochs, device=dev)  # summed on the device, read back once
    model.train()
    for e in range(training.epochs):
        perm = torch.randperm(n, generator=gen).to(dev)
        for s in range(per_epoch):
            idx = perm[s * training.batch_size : (s + 1) * training.batch_size]
            x = _shift(x_all[idx].float().div_(255.0).unsqueeze(1), training.max_shift, gen)
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            epoch_loss[e] += loss.detach()
            bar.update(1)
            if log is not None and e * per_epoch + s + 1 == min(ESTIMATE_AFTER, steps):
                _log_estimate(log, steps, e * per_epoch + s + 1, time.perf_counter() - start)
        if progress and per_epoch:  # one read-back per epoch, only for the progress bar
            bar.set_postfix(loss=f"{epoch_loss[e].item() / per_epoch:.3f}", refresh=False)
    bar.close()
    losses = (epoch_loss / max(per_epoch, 1)).tolist()
    acc = float((classify(model, test_images) == test_labels).mean())
    return model, {"test_accuracy": acc, "epoch_loss": losses, "train_seconds": time.perf_counter() - start,
                   "train_images": n, "test_images": len(test_images), "device": str(dev)}


def save_classifier(model: DigitClassifier, directory: Path | str, info: dict) -> None:
    """The classifier (:meth:`save_pretrained`) and how it was trained (``training.json``)."""
    from msgnet.io import atomic_write_json

    model.save_pretrained(directory)
    atomic_write_json(Path(directory) / "training.json", info)


ESTIMATE_AFTER = 20  # steps timed before the whole training's duration is estimated


def _log_estimate(log: Callable[[str], None], steps: int, done: int, seconds: float) -> None:
    total = seconds / done * steps
    log(f"digit classifier: {steps} steps, about {total / 60:.1f} min at the speed of the first {done} "
        f"({1000 * seconds / done:.0f} ms a step)")


def train_and_save(out: Path | str | None = None, training: ClassifierTraining = ClassifierTraining(),
                   progress: bool = True, log: Callable[[str], None] = logger.info,
                   device: torch.device | str | None = None) -> tuple[DigitClassifier, dict]:
    """Train on the bundled MNIST digits on ``device`` (None: CUDA when available, else CPU) and save into
    ``out`` (None: :func:`default_classifier_dir`, where the commands look for it)."""
    from msgnet.data.mnist_source import load_bundled

    if not isinstance(training, ClassifierTraining):
        raise UsageError(f"training: a ClassifierTraining, not {type(training).__name__}")
    out = default_classifier_dir() if out is None else Path(out)

    digits = load_bundled()
    model, info = train_classifier(digits.train_images, digits.train_labels, digits.test_images,
                                   digits.test_labels, training=training, progress=progress, device=device,
                                   log=log)
    info.update({"digits": digits.origin, "training": dataclasses.asdict(training)})
    save_classifier(model, out, info)
    log(f"digit classifier: {100 * info['test_accuracy']:.2f}% on the {info['test_images']} MNIST test digits, "
        f"trained in {info['train_seconds']:.0f} s on {info['device']} -> {out}")
    return model, info


def get_classifier(directory: Path | str | None, log: Callable[[str], None] = logger.info,
                   progress: bool = True,
                   device: torch.device | str | None = None) -> tuple[DigitClassifier, Path]:
    """Load the classifier from ``directory`` (or the default place); train it there first if absent.

    An explicitly given directory must exist; only the default location is filled on demand.
    The model is returned on ``device`` (None: CUDA when available, else CPU), in eval mode.
    """
    dev = choose_device(device)
    if directory is not None:
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise UsageError(f"classifier {directory}: no trained classifier there "
                             "(train one into it with train_and_save or `msgnet eval train-classifier`)")
        return DigitClassifier.from_pretrained(directory, dev), directory
    directory = default_classifier_dir()
    if not (directory / "model.safetensors").is_file() or not (directory / "config.json").is_file():
        log(f"no digit classifier at {directory}: training one on MNIST on {dev} first (once)")
        # A training shows its bar whatever ``progress`` says of the command's other output.
        train_and_save(directory, progress=True, log=log, device=dev)
    return DigitClassifier.from_pretrained(directory, dev), directory


def crop_to_cell(image: np.ndarray, bbox: Sequence[int]) -> np.ndarray:
    """Crop ``[x, y, w, h]`` from an (H, W[, C]) uint8 image and frame it like an MNIST digit (28x28 uint8).

    Multi-channel images are reduced to their first channel (grey for L/LA, red for RGB
    would be wrong: RGB is converted to luminance).
    """
    gray = to_gray(image)
    h, w = gray.shape
    x, y, bw, bh = (int(v) for v in bbox)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((CELL, CELL), dtype=np.uint8)
    crop = gray[y0:y1, x0:x1]
    side = max(crop.shape)
    square = np.zeros((side, side), dtype=np.uint8)
    oy, ox = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[oy : oy + crop.shape[0], ox : ox + crop.shape[1]] = crop
    resized = np.asarray(Image.fromarray(square).resize((DIGIT_BOX, DIGIT_BOX), Image.BILINEAR))
    cell = np.zeros((CELL, CELL), dtype=np.uint8)
    m = (CELL - DIGIT_BOX) // 2
    cell[m : m + DIGIT_BOX, m : m + DIGIT_BOX] = resized
    return cell


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8 -> (H, W) uint8: L and LA keep their grey channel, RGB becomes luminance."""
    if image.ndim == 2:
        return image
    if image.shape[2] in (1, 2):
        return image[:, :, 0]
    rgb = image[:, :, :3].astype(np.float32)
    return np.clip(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32), 0, 255).astype(np.uint8)


def digit_of_class(class_names: Sequence[str]) -> dict[int, int] | None:
    """Class id -> digit when every object class is named "0".."9", else None (not a digit set)."""
    mapping = {}
    for cid, name in enumerate(class_names):
        if cid == 0:
            continue
        if name.strip() not in {str(d) for d in range(10)}:
            return None
        mapping[cid] = int(name)
    return mapping or None
