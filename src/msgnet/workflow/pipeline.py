"""``MSGNet``: a trained run as one Python object that samples image + annotation pairs (README.md shows it in use).

MSGNet owns the engine every sampling front door draws with (:mod:`msgnet.sampling.engine`), so pair ``i`` of
a seed is the same from Python and from the CLI, at any batch size.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from msgnet import __version__
from msgnet.data.format import DatasetInfo, ObjectAnnotation
from msgnet.data.provenance import generator_training_record
from msgnet.errors import UsageError
from msgnet.evaluation.qc.checker import QCSettings, QualityControl
from msgnet.evaluation.qc.request import QC_KEY
from msgnet.io import atomic_write_json
from msgnet.layouts import layout_to_objects
from msgnet.run_dir import MANIFEST_FORMAT, RunDir
from msgnet.sampling.defaults import DECLARED_DEFAULTS
from msgnet.sampling.engine import Engine, Progress, SampledBatch, SamplingRequest
from msgnet.sampling.partial_output import PartialOutput
from msgnet.sampling.real_layouts import write_training_layouts
from msgnet.sampling.pipeline import generated_source
from msgnet.sampling.run import GenerationRun
from msgnet.sampling.settings import LAYOUT_TRIES, GenerationSettings
from msgnet.workflow.qc_filter import QCReport, checking_qc, sample_checked

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@dataclass
class Pairs:
    """Generated pairs: ``images`` (n, H, W, C) and ``layouts`` (n, H, W) uint8 class maps, described by
    ``info`` (the run's classes, size and palette); ``source``: the record a set of them keeps in its
    dataset.json (how they were drawn, the generator's training images); ``qc_report``: what QC sampling
    writes beside them (None without QC)."""

    images: np.ndarray
    layouts: np.ndarray
    info: DatasetInfo
    source: dict
    qc_report: "QCReport | None" = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def annotations(self) -> list[list[ObjectAnnotation]]:
        """Each pair's objects (class id and box), the connected components of its layout."""
        return [layout_to_objects(layout) for layout in self.layouts]

    @property
    def settings(self) -> dict[str, Any]:
        """The settings the pairs were drawn with (none left to the run), where each came from, the run."""
        return {**self.source["settings"], "settings_from": self.source["settings_from"], "run": self.source["run"]}

    def save(self, out: Path | str) -> Path:
        """Write the pairs as `msgnet sample` writes them: a msgnet dataset folder (all in the train split)
        with the same dataset.json record, preview and, after QC, report; ``out`` must not exist."""
        out = Path(out)
        partial = PartialOutput(out, self.source["settings"], Path(self.source["run"]), False)
        try:
            partial.write_batch(0, 0, self.images, self.layouts, self.source["sampling_seconds"])
        except BaseException:
            partial.close()
            shutil.rmtree(partial.dir, ignore_errors=True)
            raise
        report = self.qc_report
        return partial.finish(self.info, dict(self.source), None if report is None else lambda d: report.write(d, out))


class MSGNet:
    """A trained generator: its layout prior draws a layout, its codes prior the codes given the layout,
    its VQ-VAE decodes them (or a baseline's models do the same job). Load with :meth:`from_pretrained`;
    :attr:`engine` draws the pairs (:meth:`iter_batches` for a consumer of its own)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def from_pretrained(cls, path: Path | str, device: str | None = None) -> "MSGNet":
        """The models of a run trained by `msgnet train all` or `msgnet run`, or of an export of one
        (:meth:`save_pretrained`); weights from safetensors."""
        root = RunDir(path)
        return cls(Engine.load(root.root, need_layout_prior=root.has_weights("layout-prior"), device=device))

    @property
    def run(self) -> GenerationRun:
        return self.engine.run

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.engine.run_dir)

    @property
    def info(self) -> DatasetInfo:
        """The classes, image size and palette of the run's training data."""
        return self.run.info

    def to(self, device: "str | torch.device") -> "MSGNet":
        self.run.to(device)
        return self

    def save_pretrained(self, directory: Path | str) -> Path:
        """Export what sampling needs into ``directory`` (which must not exist): each model's config.json +
        model.safetensors in its stage's folder, the run's dataset record (classes, rule, and which real
        images the generator trained on), its sampling choice (probe.json), its real training layouts (what
        layouts made from real ones and real objects' shapes are made of) and a manifest with the stages'
        training record. No checkpoints, optimiser state, codes or images. :meth:`from_pretrained` loads it."""
        dst = RunDir(directory)
        if dst.root.exists():
            raise UsageError(f"{dst.root}: already exists (choose another folder or remove it)")
        dst.root.parent.mkdir(parents=True, exist_ok=True)

        src, modules = self.run_dir, self.run.stage_modules()
        tmp = RunDir(tempfile.mkdtemp(prefix=f".{dst.root.name}.", dir=dst.root.parent))
        try:
            for stage, module in modules.items():
                module.save_pretrained(tmp.stage_dir(stage))  # type: ignore[operator]
            shutil.copyfile(src.dataset_json, tmp.dataset_json)  # the classes and the training record, as they are
            if src.probe_json.is_file():
                shutil.copyfile(src.probe_json, tmp.probe_json)
            self._export_training_layouts(tmp)
            stages = {name: facts for name, facts in src.read_manifest().get("stages", {}).items() if name in modules}
            atomic_write_json(tmp.manifest, {"format": MANIFEST_FORMAT, "msgnet_version": __version__,
                                             "method": self.run.method, "exported_from": str(src.root.resolve()),
                                             "stages": stages, "holds": tmp.contents()})
            os.replace(tmp.root, dst.root)  # whole or not at all
        except BaseException:
            shutil.rmtree(tmp.root, ignore_errors=True)
            raise
        return dst.root

    def _export_training_layouts(self, tmp: RunDir) -> None:
        """The run's real training layouts, so that the export makes layouts from them and gives drawn ones
        their shapes as the run does; a run whose training set is no longer readable exports without them."""
        try:
            maker = self.engine.real_layout_maker()
        except UsageError as exc:
            logger.warning(f"{self.run_dir.root}: exported without its training layouts ({exc}); the export "
                           "samples layouts as drawn, or given ones")
            return
        write_training_layouts(tmp.training_layouts, maker)

    def prepare(self, num: int, seed: int = 0, *, layouts: Sequence[np.ndarray] | Path | str | None = None,
                **options: Any) -> SamplingRequest:
        """The engine's request for :meth:`sample`'s options (for :meth:`iter_batches`); as there, guidance,
        the codes temperature and the layout source not given are the run's choice."""
        options = {**dict.fromkeys(DECLARED_DEFAULTS), **options}  # None: resolved from the run by the engine
        from_path = isinstance(layouts, (str, Path))
        settings = GenerationSettings(num=num, seed=seed, layouts_from=str(layouts) if from_path else None, **options)
        return self.engine.prepare(settings, None if from_path else layouts)  # type: ignore[arg-type]

    def iter_batches(self, request: SamplingRequest, **kwargs: Any) -> Iterator[SampledBatch]:
        return self.engine.iter_batches(request, **kwargs)

    def sample(self, num: int, seed: int = 0, *, guidance: float | None = None, temperature_codes: float | None = None,
               temperature_layout: float = 1.0, top_k_layout: int | None = None, top_p_layout: float | None = None,
               top_k_codes: int | None = None, top_p_codes: float | None = None,
               layouts: Sequence[np.ndarray] | Path | str | None = None, repeat_layouts: bool | None = None,
               layout_source: str | None = None, layout_tries: int = LAYOUT_TRIES, batch_size: int = 16,
               sampler: str = "cached", qc: "bool | QCSettings | QualityControl" = False,
               qc_real: Path | str | None = None, qc_max_candidates: int | None = None, qc_accept_fewer: bool = False,
               segmenter: Path | str | None = None, progress: bool = True) -> Pairs:
        """``num`` pairs; the keywords are `msgnet sample`'s options, and give the same pairs for a seed.

        ``layouts``: class maps to generate images for (pre-MSGNet; a list of (H, W) arrays, a dataset folder
        or a COCO json of boxes), used in turn (``repeat_layouts``, on by default when layouts are given; off,
        fewer layouts than ``num`` are refused as by the CLI); None draws them from the layout prior
        (``layout_source="prior"``; ``"prior-shapes"``: each drawn object given the shape of a real training
        object of its class), or with ``layout_source="real"`` makes them from the run's training layouts; a
        sampled layout that breaks the dataset's rule is drawn again, up to ``layout_tries`` draws in all.
        ``guidance``: classifier-free guidance of the codes prior (1: none; other values need a prior trained
        with ``prior.condition_dropout > 0``). ``guidance``, ``temperature_codes`` and ``layout_source`` left
        None are the run's choice (``RUN/probe.json``), else 1, 1 and "prior". ``top_k_*``/``top_p_*``:
        truncation of each prior's softmax.
        ``qc``: keep only pairs that pass quality control (True, a ``QCSettings`` or a prepared
        ``QualityControl``), checked against ``qc_real`` (default: the run's training data), at most
        ``qc_max_candidates`` candidates (20 x num), fewer pairs allowed with ``qc_accept_fewer``.
        ``batch_size`` changes speed and memory only, not the pairs.
        """
        if repeat_layouts is None:  # the CLI's default, except that layouts handed over are reused in turn
            repeat_layouts = layouts is not None
        request = self.prepare(num, seed, layouts=layouts, guidance=guidance, temperature_codes=temperature_codes,
                               temperature_layout=temperature_layout, top_k_layout=top_k_layout,
                               top_p_layout=top_p_layout, top_k_codes=top_k_codes, top_p_codes=top_p_codes,
                               repeat_layouts=repeat_layouts, layout_source=layout_source, layout_tries=layout_tries,
                               batch_size=batch_size, sampler=sampler)
        training = generator_training_record(self.run_dir.root, self.info)  # a damaged record fails before the work
        if qc is False or qc is None:
            return self._pairs(request, self.engine.collect(request, Progress(show=progress)), training)
        control = self._quality_control(qc, qc_real, segmenter, progress)

        kept, report = sample_checked(self.engine, request, control, qc_max_candidates, qc_accept_fewer, progress)
        return self._pairs(request, kept, training, {QC_KEY: report.record}, report)

    def _quality_control(self, qc: "bool | QCSettings | QualityControl", real: Path | str | None,
                         segmenter: Path | str | None, progress: bool) -> "QualityControl":
        if isinstance(qc, QualityControl):
            return qc
        if qc is not True and not isinstance(qc, QCSettings):
            raise UsageError(f"qc: give True, a QCSettings or a QualityControl, not {type(qc).__name__}")
        settings = QCSettings() if qc is True else qc
        return checking_qc(self.run_dir.root, self.info, settings, self.run.device, real, segmenter, progress)

    def _pairs(self, request: SamplingRequest, batch: SampledBatch, training: dict, extra: dict | None = None,
               report: "QCReport | None" = None) -> Pairs:
        provenance = None if batch.provenance is None else {str(i): p for i, p in enumerate(batch.provenance)}
        # Through JSON once, as the dataset.json of `msgnet sample` holds it (lists where tuples were).
        source = json.loads(json.dumps(generated_source(self.run_dir.root, self.info, request, batch.seconds,
                                                        training, provenance, extra)))
        return Pairs(batch.images, batch.layouts, replace(self.info), source, report)

