"""Rule coherency of layouts sampled from a run's LayoutPixelSNAIL alone (paper §4.2), and of
real layouts passed through a grid (the ceiling a prior on that grid can reach).

The layout prior is what decides which objects appear where; this samples only layouts (no codes, no
decoding) on the prior's own grid (the latent grid, or a finer one chosen from the data:
:mod:`msgnet.data.layout_grid`), brings them to image size, turns their connected components into objects
and checks them against the rule the training data declared.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msgnet.data.rules import rule_violations
from msgnet.errors import UsageError
from msgnet.evaluation.stats import fmt_rate, wilson_interval
from msgnet.layouts import downsample_layout, layout_to_objects, upsample_layout
from msgnet.run_dir import RunDir


@dataclass
class LayoutCoherency:
    num: int
    violating: int
    by_rule: dict[str, int] = field(default_factory=dict)
    rule: dict[str, Any] | None = None
    # How many objects each sampled layout holds (count -> layouts): the first thing to read
    # when a count rule fails, e.g. whether the prior forgets the last object or adds specks.
    object_counts: dict[int, int] = field(default_factory=dict)
    # The first sampled layouts at image size, with whether each broke the rule (for a preview).
    examples: list[tuple[np.ndarray, bool]] = field(default_factory=list, repr=False)
    palette: np.ndarray | None = field(default=None, repr=False)
    seconds: float = 0.0
    what: str = "sampled layouts"  # or real layouts through a latent grid
    tries: int = 1  # draws per sampled layout while it broke the rule (msgnet.sampling.settings.LAYOUT_TRIES)

    def preview(self, columns: int = 8) -> np.ndarray:
        """RGB grid of :attr:`examples` in the dataset's colours; a rule breaker gets a red frame."""
        from msgnet.layouts.render import colorize, grid

        if not self.examples or self.palette is None:
            raise UsageError("no sampled layouts to preview")
        tiles = []
        for lay, broken in self.examples:
            tile = colorize(lay, self.palette)
            if broken:
                tile = tile.copy()
                for edge in (np.s_[:2], np.s_[-2:], np.s_[:, :2], np.s_[:, -2:]):
                    tile[edge] = (255, 0, 0)
            tiles.append(tile)
        return grid(tiles, columns=min(columns, len(tiles)))

    def to_json(self) -> dict[str, Any]:
        obeying = self.num - self.violating
        return {"num": self.num, "obeying": obeying, "obey_rate": obeying / self.num,
                "obey_rate_95ci": list(wilson_interval(obeying, self.num)), "by_rule": self.by_rule,
                "object_counts": {str(k): v for k, v in sorted(self.object_counts.items())},
                "rule": self.rule, "seconds": self.seconds, "what": self.what, "tries": self.tries}

    def to_text(self) -> str:
        j = self.to_json()
        drawn = f" (up to {self.tries} draws each)" if self.tries > 1 else ""
        return (f"{self.what}{drawn} obeying the rule: {j['obeying']} of {self.num}, "
                + fmt_rate(j["obey_rate"], *j["obey_rate_95ci"]) + f"; broken parts: {self.by_rule}"
                + f"; objects per layout: {dict(sorted(self.object_counts.items()))}")


def sample_layout_coherency(run_dir: Path, num: int, seed: int = 0, temperature: float = 1.0,
                            batch_size: int = 64, device: str | None = None,
                            progress: bool = True, parts: list[str] | None = None,
                            keep_examples: int = 64, tries: int = 1) -> LayoutCoherency:
    """Sample ``num`` layouts and check them against the run's rule (or only its ``parts``).

    ``tries``: draws per layout while it breaks the run's whole rule (``GenerationSettings.layout_tries``);
    1, the default, measures the layout prior itself (the paper's §4.2 coherency).

    The layouts are the engine's (:mod:`msgnet.sampling.engine`): layout ``i`` of a seed is the layout
    pair ``i`` of `msgnet sample` with that seed and layout temperature gets, at any batch size.
    The first ``keep_examples`` layouts are kept in the result for :meth:`LayoutCoherency.preview`.
    """
    from msgnet.sampling.engine import Engine, Progress
    from msgnet.sampling.run import read_run_info
    from msgnet.sampling.settings import GenerationSettings

    if not math.isfinite(temperature) or temperature <= 0:  # named as this command calls it, before the settings
        raise UsageError(f"temperature: must be a positive finite number, got {temperature}")
    settings = GenerationSettings(num=num, seed=seed, temperature_layout=temperature, batch_size=batch_size,
                                  layout_tries=tries)
    settings.validate()
    info = read_run_info(Path(run_dir))
    rule = _rule_parts(info.rule, parts, RunDir(run_dir).dataset_json)
    engine = Engine.load(run_dir, device=device, need_images=False)
    result = LayoutCoherency(num=num, violating=0, rule=rule, palette=info.palette, tries=tries)
    start = time.perf_counter()
    for batch in engine.iter_layouts(engine.prepare(settings), progress=Progress("layouts", "layout", progress)):
        _check(result, batch.layouts, keep_examples)
    result.seconds = time.perf_counter() - start
    return result


def real_layout_coherency(data_dir: Path, grid: int = 16, num: int | None = None, parts: list[str] | None = None,
                          keep_examples: int = 64) -> LayoutCoherency:
    """The ceiling a layout prior on a ``grid`` x ``grid`` latent grid can reach: the real training
    layouts (the first ``num``), brought to that grid and back exactly as sampled ones are, checked
    against the same rule. The grid merges touching objects of one class and grows boxes by rounding."""
    from msgnet.data.format import open_dataset

    if grid < 1:
        raise UsageError("grid: must be at least 1")
    dataset = open_dataset(data_dir)
    info = dataset.info
    rule = _rule_parts(info.rule, parts, Path(data_dir) / "dataset.json")
    ids = dataset.ids("train")[: num or None]
    result = LayoutCoherency(num=len(ids), violating=0, rule=rule, palette=info.palette,
                             what=f"real layouts through the {grid}x{grid} grid")
    start = time.perf_counter()
    for first in range(0, len(ids), 256):
        real = np.stack([dataset.read_layout(i) for i in ids[first : first + 256]])
        small = downsample_layout(real, grid, num_classes=info.num_classes)
        _check(result, upsample_layout(np.asarray(small, dtype=np.uint8), info.image_size), keep_examples)
    result.seconds = time.perf_counter() - start
    return result


def _rule_parts(rule: dict[str, Any] | None, parts: list[str] | None, where: Path) -> dict[str, Any]:
    if not rule:
        raise UsageError(f"{where}: the data declares no rule to check")
    if parts:
        unknown = [p for p in parts if p not in rule]
        if unknown:
            raise UsageError(f"parts: the rule has no part {unknown[0]!r} (it has {', '.join(rule)})")
        rule = {k: v for k, v in rule.items() if k in parts}
    return rule


def _check(result: LayoutCoherency, layouts: np.ndarray, keep_examples: int) -> None:
    assert result.rule is not None
    for lay in layouts:
        objects = layout_to_objects(lay)
        result.object_counts[len(objects)] = result.object_counts.get(len(objects), 0) + 1
        broken = rule_violations(result.rule, objects, lay)
        if len(result.examples) < keep_examples:
            result.examples.append((lay, bool(broken)))
        result.violating += bool(broken)
        for key in broken:
            result.by_rule[key] = result.by_rule.get(key, 0) + 1
