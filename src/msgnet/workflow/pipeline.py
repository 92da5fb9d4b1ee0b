"""``MSGNet``: a trained run as one Python object that samples image + annotation pairs.

```python
import msgnet

generator = msgnet.MSGNet.from_pretrained("runs/job")
pairs = generator.sample(8, seed=0, guidance=3.0)
pairs.images.shape, pairs.layouts.shape     # (8, H, W, C) and (8, H, W), uint8
pairs.annotations[0]                        # the first pair's objects: class id and box
pairs.save("generated")                     # a msgnet dataset folder, as `msgnet sample` writes
```

Batch ``b`` of a call is drawn exactly as `msgnet sample` draws it (a generator seeded by
``(seed, b)``), so the same seed and batch size give the same pairs from Python and from the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from msgnet.data.format import DatasetInfo, DatasetWriter, ObjectAnnotation
from msgnet.errors import UsageError
from msgnet.layouts import layout_to_objects
from msgnet.run_dir import RunDir
from msgnet.sampling.defaults import resolve_settings
from msgnet.sampling.given_layouts import load_given_layouts
from msgnet.sampling.pipeline import (GenerationSettings, check_guidable, sample_batch,
                                      sampler_named)
from msgnet.sampling.run import GenerationRun, load_generation_run


@dataclass
class Pairs:
    """Generated pairs: ``images`` (n, H, W, C) and ``layouts`` (n, H, W) uint8 class maps, described by
    ``info`` (the run's classes, size and palette)."""

    images: np.ndarray
    layouts: np.ndarray
    info: DatasetInfo
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def annotations(self) -> list[list[ObjectAnnotation]]:
        """Each pair's objects (class id and box), the connected components of its layout."""
        return [layout_to_objects(layout) for layout in self.layouts]

    def save(self, out: Path | str) -> Path:
        """Write the pairs as a msgnet dataset folder (all in the train split); ``out`` must not exist."""
        info = replace(self.info, splits={"train": [], "val": []},
                       source={"generated": True, "generator": "msgnet", "settings": self.settings})
        info.name = f"{self.info.name}-generated"
        with DatasetWriter(out, info) as writer:
            for image, layout, objects in zip(self.images, self.layouts, self.annotations):
                writer.add("train", image, layout, objects=objects)
        return Path(out)


class MSGNet:
    """A trained generator: its layout prior draws a layout, its codes prior the codes given the layout,
    its VQ-VAE decodes them (or a baseline's models do the same job). Load with :meth:`from_pretrained`."""

    def __init__(self, run: GenerationRun, run_dir: RunDir):
        self.run = run
        self.run_dir = run_dir

    @classmethod
    def from_pretrained(cls, run_dir: Path | str, device: str | None = None) -> "MSGNet":
        """The models of a run trained by `msgnet train all` or `msgnet run` (weights from safetensors)."""
        run = RunDir(run_dir)
        has_layout_prior = run.has_weights("layout-prior")
        return cls(load_generation_run(run.root, need_layout_prior=has_layout_prior, device=device), run)

    @property
    def info(self) -> DatasetInfo:
        """The classes, image size and palette of the run's training data."""
        return self.run.info

    def sample(self, num: int, seed: int = 0, guidance: float | None = None, temperature_codes: float | None = None,
               temperature_layout: float = 1.0, layouts: Sequence[np.ndarray] | Path | str | None = None,
               batch_size: int = 16) -> Pairs:
        """``num`` pairs. ``layouts``: class maps to generate images for (pre-MSGNet; a list of (H, W)
        arrays, a dataset folder or a COCO json of boxes), used in turn; None draws them from the layout
        prior. ``guidance``: classifier-free guidance of the codes prior (1: none). ``guidance`` and
        ``temperature_codes`` left None are the run's choice (``RUN/probe.json``, written by `msgnet run`),
        else 1; the pairs' ``settings`` record says which values were used and where each came from."""
        settings = GenerationSettings(num=num, seed=seed, guidance=guidance, temperature_codes=temperature_codes,
                                      temperature_layout=temperature_layout, batch_size=batch_size,
                                      layouts_from=str(layouts) if isinstance(layouts, (str, Path)) else None,
                                      repeat_layouts=True)
        settings.validate()
        # The same resolution as `msgnet sample` (SamplingJob.open), so both sample the same pairs.
        settings, settings_from = resolve_settings(settings, self.run_dir.root, self.run.images.guidable)
        settings.validate()
        check_guidable(self.run, settings, self.run_dir.root)
        given = self._given(layouts)
        if given is None and self.run.layout_prior is None:
            raise UsageError(f"{self.run_dir.root}: a {self.run.method} run has no layout prior; give layouts")
        sample = sampler_named(settings.sampler)
        images, maps = [], []
        for b, first in enumerate(range(0, num, batch_size)):
            batch = sample_batch(self.run, settings, sample, b, min(batch_size, num - first), given, first)
            images.append(batch.images)
            maps.append(batch.layouts)
        record = {"num": num, "seed": seed, "guidance": settings.guidance,
                  "temperature_codes": settings.temperature_codes, "temperature_layout": temperature_layout, "batch_size": batch_size, "settings_from": settings_from,
                  "run": str(self.run_dir.root.resolve())}
        return Pairs(np.concatenate(images), np.concatenate(maps), replace(self.info), record)

    def _given(self, layouts: Sequence[np.ndarray] | Path | str | None) -> list[np.ndarray] | None:
        if layouts is None:
            return None
        if isinstance(layouts, (str, Path)):
            given = load_given_layouts(str(layouts), self.info)
        else:
            given = [np.asarray(layout, dtype=np.uint8) for layout in layouts]
            bad = [g.shape for g in given if g.shape != tuple(self.info.image_size)]
            if bad:
                raise UsageError(f"layouts: a layout is {bad[0]}, the run makes {tuple(self.info.image_size)}")
            known = {c.id for c in self.info.classes}
            unknown = sorted({int(c) for g in given for c in np.unique(g)} - known)
            if unknown:
                raise UsageError(f"layouts: class id {unknown[0]} is not a class of the run")
        if not given:
            raise UsageError("layouts: none given")
        return given
