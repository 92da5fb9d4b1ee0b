"""Small datasets built on the fly for tests (no downloads), and an interruption of sampling."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np

from msgnet.data.format import ClassInfo, DatasetInfo, DatasetWriter, ObjectAnnotation
from msgnet.layouts.boxes import boxes_to_layout
from msgnet.layouts.render import default_palette


def tiny_info(size: int, channels: int, num_classes: int = 3, rule: dict | None = None,
              augmentations: list[str] | None = None) -> DatasetInfo:
    pal = default_palette(num_classes)
    classes = [ClassInfo(0, "background", (0, 0, 0))] + [
        ClassInfo(i, f"class{i}", tuple(int(v) for v in pal[i])) for i in range(1, num_classes)
    ]
    return DatasetInfo(name="tiny", image_size=(size, size), channels=channels, classes=classes,
                       splits={"train": [], "val": []}, source={"builder": "tests"}, rule=rule,
                       augmentations=augmentations)


def make_tiny_dataset(path: Path, n: int = 24, size: int = 16, channels: int = 1, num_classes: int = 3,
                      seed: int = 0, n_val: int | None = None, augmentations: list[str] | None = None) -> Path:
    """Images with one or two bright rectangles whose brightness encodes the class."""
    rng = np.random.default_rng(seed)
    info = tiny_info(size, channels, num_classes, augmentations=augmentations)
    n_val = max(2, n // 4) if n_val is None else n_val
    with DatasetWriter(path, info) as writer:
        for k in range(n):
            objects = []
            for _ in range(int(rng.integers(1, 3))):
                cid = int(rng.integers(1, num_classes))
                w, h = (int(v) for v in rng.integers(size // 4, size // 2 + 1, size=2))
                x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
                objects.append(ObjectAnnotation(cid, (x, y, w, h)))
            layout = boxes_to_layout(objects, (size, size))
            image = np.zeros((size, size, channels), dtype=np.uint8)
            for c in range(channels):
                image[..., c] = (layout * (255 // num_classes) + 20 * c).clip(0, 255)
            writer.add("val" if k < n_val else "train", image, layout, objects=objects)
    return path


@contextlib.contextmanager
def interrupt_sampling_after(batches: int) -> Iterator[None]:
    """Make sampling raise KeyboardInterrupt (as Ctrl-C would) when it is about to write batch
    number ``batches`` (counting from 0) into ``OUT.partial/``: an interrupted run to resume."""
    from msgnet.sampling import partial_output

    calls = {"n": 0}
    original = partial_output.PartialOutput.write_batch

    def failing(self, *args, **kwargs):
        if calls["n"] == batches:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(self, *args, **kwargs)

    partial_output.PartialOutput.write_batch = failing
    try:
        yield
    finally:
        partial_output.PartialOutput.write_batch = original


def train_one_step_each(preset, batch: int = 2) -> None:
    """Build the preset's three models and take one optimiser step on each with random inputs:
    the loss must be finite and some weight must move."""
    import torch

    from msgnet.models.layout_prior import LayoutPixelSNAIL
    from msgnet.models.pixelsnail import PixelSNAIL
    from msgnet.models.vqvae import DoublePathVQVAE

    torch.manual_seed(0)
    v, lat = preset.vqvae, preset.vqvae.latent_size
    classes = preset.layout_prior.num_classes
    vq, lp, cp = DoublePathVQVAE(v), LayoutPixelSNAIL(preset.layout_prior), PixelSNAIL(preset.prior)
    for model, loss in (
        (vq, lambda: vq(torch.rand(batch, v.in_channels, v.image_size, v.image_size),
                        torch.randint(0, classes, (batch, v.image_size, v.image_size)) if v.layout_classes else None
                        ).loss),
        (lp, lambda: lp.loss(torch.randint(0, classes, (batch, preset.layout_prior.height,
                                                        preset.layout_prior.width)))[0]),
        (cp, lambda: cp.loss(torch.randint(0, preset.prior.num_classes, (batch, 2 * lat, lat)),
                             torch.randint(0, classes, (batch, 2 * lat, lat)))[0]),
    ):
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        value = loss()
        value.backward()
        opt.step()
        assert torch.isfinite(value)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def train_tiny_run(root: Path) -> tuple[Path, Path]:
    """A tiny dataset under ``root`` and a run trained on it with `msgnet train all --config tiny`."""
    from msgnet.cli import main

    data = make_tiny_dataset(root / "data", n=24, size=16, channels=1, num_classes=3)
    run = root / "run"
    assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run), "--device", "cpu"]) == 0
    return data, run
