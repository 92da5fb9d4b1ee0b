"""Generation: layout prior -> layout -> latent prior -> codes -> split -> decode -> image + annotation.

With given layouts (``layouts_from``) the layout prior is skipped: the paper's pre-MSGNet.
Results stream to ``OUT.partial/`` batch by batch; an interrupted run keeps what it wrote
and ``resume=True`` completes the rest. Each batch draws from its own generator seeded by
``(seed, batch index)``, so a resumed run writes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from msgnet.data.provenance import GENERATOR_TRAINING_KEY, generator_training_record
from msgnet.errors import UsageError
from msgnet.layouts import downsample_layout
from msgnet.layouts import upsample_layout
from msgnet.run_dir import RunDir
from msgnet.sampling.defaults import resolve_settings
from msgnet.sampling.given_layouts import load_given_layouts
from msgnet.sampling.partial_output import PartialOutput
from msgnet.sampling.run import GenerationRun, load_generation_run

if TYPE_CHECKING:
    from msgnet.sampling.real_layouts import RealLayoutMaker

SAMPLERS = ("cached", "reference", "cuda-graph")
# Where a pair's layout comes from when none is given: the LayoutPixelSNAIL (MSGNet), or made from the
# run's own training layouts (msgnet.sampling.real_layouts).
LAYOUT_SOURCES = ("prior", "real")


@dataclass(frozen=True)
class GenerationSettings:
    num: int
    seed: int = 0
    temperature_layout: float = 1.0
    # None: the run's choice (RUN/probe.json), else 1; resolved when the run is opened (msgnet.sampling.defaults)
    temperature_codes: float | None = 1.0
    guidance: float | None = 1.0  # classifier-free guidance of the codes prior (1: none; msgnet.sampling.rule)
    top_k_layout: int | None = None  # truncation of each prior's softmax (None: off)
    top_p_layout: float | None = None
    top_k_codes: int | None = None
    top_p_codes: float | None = None
    batch_size: int = 16
    sampler: str = "cached"
    layouts_from: str | None = None  # a msgnet dataset folder or a COCO json of boxes (pre-MSGNet)
    repeat_layouts: bool = False  # more pairs than given layouts: reuse them in turn (else refused)
    layout_source: str = "prior"  # without given layouts: "prior" (sampled) or "real" (made from real ones)

    @property
    def samples_layouts(self) -> bool:
        """Whether the layouts come from the layout prior (neither given nor made from real ones)."""
        return self.layouts_from is None and self.layout_source == "prior"

    def validate(self) -> None:
        if self.num < 1:
            raise UsageError("num: must be at least 1")
        if self.batch_size < 1:
            raise UsageError("batch_size: must be at least 1")
        for flag, value in (("--temperature-layout", self.temperature_layout),
                            ("--temperature-codes", self.temperature_codes)):
            if value is None:
                continue  # left to the run: checked once resolved (msgnet.sampling.defaults)
            if not math.isfinite(value) or value <= 0:  # nan compares false both ways: check it by name
                raise UsageError(f"{flag}: must be a positive finite number, got {value}")
        if self.guidance is not None and (not math.isfinite(self.guidance) or self.guidance < 0):
            raise UsageError(f"guidance: must be a finite number >= 0, got {self.guidance}")
        for flag, k in (("--top-k-layout", self.top_k_layout), ("--top-k-codes", self.top_k_codes)):
            if k is not None and k < 1:
                raise UsageError(f"{flag}: must be at least 1, got {k}")
        for flag, p in (("--top-p-layout", self.top_p_layout), ("--top-p-codes", self.top_p_codes)):
            if p is not None and not (math.isfinite(p) and 0 < p <= 1):
                raise UsageError(f"{flag}: must be in (0, 1], got {p}")
        if self.layout_source not in LAYOUT_SOURCES:
            raise UsageError(f"layout_source: unknown {self.layout_source!r} (choose from {', '.join(LAYOUT_SOURCES)})")
        if self.layout_source != "prior" and self.layouts_from is not None:
            raise UsageError("layout_source: layouts are given (--layouts); leave it at 'prior'")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"sampler: unknown {self.sampler!r} (choose from {', '.join(SAMPLERS)})")


def sampler_named(name: str) -> Callable[..., torch.Tensor]:
    if name == "reference":
        from msgnet.sampling.reference import sample_reference

        return sample_reference
    if name == "cuda-graph":
        from msgnet.sampling.graphed import CudaGraphSampler

        return CudaGraphSampler()
    from msgnet.sampling.cached import sample_cached

    return sample_cached


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (B, H, W, C) uint8."""
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def codes_rule(settings: GenerationSettings) -> dict:
    """The codes prior's token rule as sampler keywords (msgnet.sampling.rule)."""
    return {"temperature": settings.temperature_codes, "top_k": settings.top_k_codes,
            "top_p": settings.top_p_codes, "guidance": settings.guidance}


def check_guidable(run: GenerationRun, settings: GenerationSettings, run_dir: Path) -> None:
    """Guidance needs a codes prior that learned the "no layout" condition; say so before any work."""
    if settings.guidance != 1.0 and run.images.guidable is False:
        raise UsageError(f"{RunDir(run_dir).prior}: guidance {settings.guidance:g} needs a codes prior trained with "
                         "prior.condition_dropout > 0; this one has no unconditional model (use guidance 1)")


def sampled_layouts(drawn: torch.Tensor, image_hw: tuple[int, int], latent_hw: tuple[int, int] | None,
                    num_classes: int) -> tuple[np.ndarray, torch.Tensor | None]:
    """Layouts drawn at the layout prior's grid, (n, h, w): at image size (the pairs' annotation, and what a
    decoder told the layout draws) and at the generator's latent grid (the codes prior's condition).

    On a grid of its own (finer than the latent grid, issue 32) the drawn layout reaches the latent grid
    from its image-size form by :func:`downsample_layout`, exactly as a given layout does; on the latent
    grid itself the drawn tokens are the condition, as they always were.
    """
    full = upsample_layout(drawn.numpy().astype(np.uint8), image_hw)
    if latent_hw is None or tuple(drawn.shape[-2:]) == tuple(latent_hw):
        return full, (drawn if latent_hw is not None else None)
    return full, torch.as_tensor(downsample_layout(full, latent_hw, num_classes=num_classes)).long()


@dataclass
class SampledBatch:
    """One batch of pairs: images (n, H, W, C) and layouts (n, H, W), uint8; ``provenance``: how each
    layout was made, for layouts made from real ones (else None)."""

    images: np.ndarray
    layouts: np.ndarray
    provenance: list[dict] | None = None


def sample_batch(run: GenerationRun, settings: GenerationSettings, sample: Callable[..., torch.Tensor], b: int,
                 n: int, given: list[np.ndarray] | None = None, first: int = 0,
                 maker: "RealLayoutMaker | None" = None) -> SampledBatch:
    """Batch ``b`` of a sampling run.

    Its randomness comes from a generator seeded by ``(seed, b)`` alone, so a batch is the same
    whether or not the run was interrupted before it. ``given`` layouts are used from ``first`` on;
    a ``maker`` makes them from real ones instead of the layout prior.
    """
    img_h, img_w = run.info.image_size
    gen = torch.Generator().manual_seed(settings.seed * 1_000_003 + b)
    provenance = None
    if maker is not None:
        given_batch, provenance = maker.make(n, (settings.seed, b))
        given, first = list(given_batch), 0
    latent_hw = run.images.latent_hw
    with torch.inference_mode():
        latent = None
        if given is not None:
            full = np.stack([given[(first + k) % len(given)] for k in range(n)])
            if latent_hw is not None:  # the generator conditions on the layout at its latent grid
                latent = torch.as_tensor(downsample_layout(full, latent_hw, num_classes=run.info.num_classes)).long()
        else:
            drawn = sample(run.layout_prior, n, condition=None, temperature=settings.temperature_layout,
                           top_k=settings.top_k_layout, top_p=settings.top_p_layout,
                           generator=gen, batch_size=n).cpu()
            full, latent = sampled_layouts(drawn, (img_h, img_w), latent_hw, run.info.num_classes)
        images = to_uint8_images(run.images.images(full, latent, gen, sample, codes_rule(settings)))
    return SampledBatch(images, np.asarray(full, dtype=np.uint8), provenance)


@dataclass
class SamplingJob:
    """A sampling run opened for writing: the loaded models and the partial output it streams into."""

    run_dir: Path
    settings: GenerationSettings
    run: GenerationRun
    training: dict  # the generator's training images (msgnet.data.provenance)
    given: list[np.ndarray] | None
    partial: "PartialOutput | None"  # None in a process that only samples (see msgnet.sampling.ranks)
    sample: Callable[..., torch.Tensor]
    maker: "RealLayoutMaker | None" = None  # layouts made from real ones (settings.layout_source "real")
    # Where the settings a run may choose came from ("given", "probe.json", "default"; msgnet.sampling.defaults)
    settings_from: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, run_dir: Path | str, out: Path | str, settings: GenerationSettings, resume: bool = False,
             device: str | None = None, record_extra: dict | None = None) -> "SamplingJob":
        """Load the run and open ``OUT.partial/``; ``record_extra`` joins the settings a resume must match."""
        settings.validate()
        run_dir, out = Path(run_dir), Path(out)
        run = load_generation_run(run_dir, need_layout_prior=settings.samples_layouts, device=device)
        # Settings left None take the run's choice; resolved here, before the partial output records them,
        # so a resume compares (and the set records) the values actually sampled with.
        settings, settings_from = resolve_settings(settings, run_dir, run.images.guidable)
        settings.validate()
        if settings.sampler == "cuda-graph" and run.device.type != "cuda":
            raise UsageError(f"sampler cuda-graph: needs a CUDA device (this run would sample on {run.device})")
        check_guidable(run, settings, run_dir)
        # Which real images the generator saw, so a benchmark can check them (msgnet.data.provenance);
        # read before sampling so that a damaged run record fails at once, not after the work.
        training = generator_training_record(run_dir, run.info)
        given = load_given_layouts(settings.layouts_from, run.info) if settings.layouts_from else None
        if given is not None and not given:
            raise UsageError(f"{settings.layouts_from}: holds no layouts")
        if given is not None and len(given) < settings.num and not settings.repeat_layouts:
            raise UsageError(f"{settings.layouts_from}: holds {len(given)} layouts, fewer than --num {settings.num} "
                             "(--repeat-layouts reuses them in turn)")
        maker = _real_layout_maker(run_dir, run, settings)
        partial = PartialOutput(out, asdict(settings), run_dir, resume, record_extra)
        return cls(run_dir, settings, run, training, given, partial, sampler_named(settings.sampler), maker,
                   settings_from)

    @classmethod
    def open_worker(cls, run_dir: Path | str, settings: GenerationSettings, device: str | None = None) -> "SamplingJob":
        """The models and layouts alone, for a process that samples batches another one writes."""
        run = load_generation_run(Path(run_dir), need_layout_prior=settings.samples_layouts, device=device)
        settings, settings_from = resolve_settings(settings, run_dir, run.images.guidable)  # as the writer does
        given = load_given_layouts(settings.layouts_from, run.info) if settings.layouts_from else None
        return cls(Path(run_dir), settings, run, {}, given, None, sampler_named(settings.sampler),
                   _real_layout_maker(Path(run_dir), run, settings), settings_from)

    def batch(self, b: int, n: int, first: int = 0) -> SampledBatch:
        return sample_batch(self.run, self.settings, self.sample, b, n, self.given, first, self.maker)

    def finish(self, extra_source: dict | None = None,
               extra_files: Callable[[Path], None] | None = None) -> Path:
        """Write the dataset's records (``extra_source`` joins its ``source``) and move it into place."""
        assert self.partial is not None, "only the writing process finishes a job"
        info = self.run.info
        modes = {"prior": "msgnet (sampled layouts)", "real": "msgnet (layouts made from the run's training layouts)"}
        provenance = self.partial.state.get("layout_provenance")
        info.source = {
            "generated": True,
            "generator": "msgnet",
            "mode": "pre-msgnet (given layouts)" if self.given is not None else modes[self.settings.layout_source],
            "run": str(self.run_dir.resolve()),
            "settings": asdict(self.settings),
            "settings_from": self.settings_from,
            "trained_on": info.name,
            "sampling_seconds": round(self.partial.state["seconds"], 2),
            **(extra_source or {}),
            **({"layout_provenance": provenance} if provenance is not None else {}),
            GENERATOR_TRAINING_KEY: self.training,  # last: its id list is long
        }
        info.name = f"{info.name}-generated"
        return self.partial.finish(info, info.palette, extra_files)


def _real_layout_maker(run_dir: Path, run: GenerationRun, settings: GenerationSettings) -> "RealLayoutMaker | None":
    """The maker of layouts from the run's own training layouts, when the settings ask for them."""
    if settings.layout_source != "real":
        return None
    from msgnet.sampling.real_layouts import real_layout_maker
    from msgnet.sampling.run import run_training_data

    data, ids = run_training_data(run_dir)
    return real_layout_maker(data, ids, run.info.rule, tuple(run.info.augmentations or ()))


def generate(run_dir: Path | str, out: Path | str, settings: GenerationSettings, resume: bool = False,
             device: str | None = None, progress: bool = True) -> Path:
    """Sample ``settings.num`` image + annotation pairs from a trained run into dataset ``out``.

    Under ``torchrun --nproc_per_node K`` the batches still to do are dealt out among the K
    processes (see :mod:`msgnet.sampling.ranks`); every batch is a pure function of
    ``(seed, batch index)``, so the dataset is the same whatever K is.
    """
    from msgnet.sampling.ranks import SamplingRanks

    with SamplingRanks(device) as ranks:
        job = ranks.open(lambda: SamplingJob.open(run_dir, out, settings, resume, str(ranks.device)),
                         lambda: SamplingJob.open_worker(run_dir, settings, str(ranks.device)))
        num_batches = (settings.num + settings.batch_size - 1) // settings.batch_size
        done = ranks.share(None if job.partial is None else job.partial.state["done_batches"])
        pending = [b for b in range(num_batches) if b not in done]
        bar = tqdm(total=settings.num, desc=f"sampling ({settings.sampler})", unit="img",
                   disable=not (progress and ranks.is_main))
        bar.update(sum(min(settings.batch_size, settings.num - b * settings.batch_size) for b in done))
        made, started = 0, time.perf_counter()
        for mine in ranks.deal(pending):
            result = None
            if mine is not None:
                first = mine * settings.batch_size
                n = min(settings.batch_size, settings.num - first)
                t0 = time.perf_counter()
                result = (mine, first, job.batch(mine, n, first), time.perf_counter() - t0)
            for b, first, batch, seconds in ranks.collect(result):  # main process: every rank's batch
                assert job.partial is not None
                job.partial.write_batch(b, first, batch.images, batch.layouts, seconds, provenance=batch.provenance)
                made += len(batch.images)
                bar.update(len(batch.images))
                bar.set_postfix(samples_per_s=f"{made / max(time.perf_counter() - started, 1e-9):.2f}")
        bar.close()
        path = job.finish() if ranks.is_main else Path(out)
        ranks.barrier()
    return path


def remove_partial(out: Path) -> None:
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
