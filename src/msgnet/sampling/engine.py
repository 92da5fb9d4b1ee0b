"""The sampling engine: the one place pairs are drawn, batch by batch, whatever the front door.

Every consumer (`msgnet sample`, ``MSGNet.sample``, the probe, QC-filtered sampling, layout coherency) prepares
a :class:`SamplingRequest` with :meth:`Engine.prepare` and iterates :meth:`Engine.iter_batches` (or
:meth:`Engine.iter_layouts`) over it. Only here are seeds turned into generators, layouts sampled by the
layout prior, made from real ones or taken from the given ones, the token rules applied and progress shown.

Seeds are per pair: pair ``i`` of a request with seed ``s`` draws its layout, its codes (or noise) and
its made-from-real layout from streams of its own, seeded from ``(s, i, stream)`` by numpy's
``SeedSequence`` (:func:`pair_seed`, the one seed formula). So a pair is the same whatever the batch
size, whichever torchrun rank draws it, and whether or not the run was interrupted before it; and QC
candidate ``i`` is pair ``i`` of plain sampling with the same seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from msgnet.data.rules import layout_keeps_rule
from msgnet.errors import UsageError
from msgnet.layouts import downsample_layout, upsample_layout
from msgnet.run_dir import RunDir
from msgnet.sampling.defaults import DECLARED_DEFAULTS, resolve_sampling
from msgnet.sampling.given_layouts import given_layouts
from msgnet.sampling.real_layouts import RealLayoutMaker, read_training_layouts, real_layout_maker
from msgnet.sampling.run import GenerationRun, load_generation_run, run_training_data
from msgnet.sampling.settings import GenerationSettings, sampler_named

# A pair's independent streams of randomness (the last part of its seed).
STREAM_LAYOUT, STREAM_IMAGE, STREAM_REAL_LAYOUT = 0, 1, 2
# Recorded with every sampling run, so that --resume refuses a partial set begun under another seed rule.
SEEDING = "per pair: SeedSequence(seed, spawn_key=(pair, stream))"


def pair_seed(seed: int, pair: int, stream: int) -> int:
    """The 64-bit seed of ``stream`` of pair ``pair`` under the sampling seed ``seed``."""
    # SeedSequence takes non-negative entropy: a negative seed is taken modulo 2**64 (still its own seed).
    state = np.random.SeedSequence(seed % 2**64, spawn_key=(pair, stream)).generate_state(2, np.uint32)
    return int(state[0]) | int(state[1]) << 32


def pair_generators(seed: int, pairs: range, stream: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(pair_seed(seed, i, stream)) for i in pairs]


def _real_layout_rngs(seed: int, pairs: range) -> list[np.random.Generator]:
    """Each pair's stream for what is made from real layouts (a made layout, or a drawn one's shapes)."""
    return [np.random.default_rng(pair_seed(seed, i, STREAM_REAL_LAYOUT)) for i in pairs]


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (B, H, W, C) uint8."""
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@dataclass(frozen=True)
class SamplingRequest:
    """Settings checked against a run and resolved (no setting left None), with what they load: the given
    layouts (pair ``i`` gets ``given[i % len(given)]``) or the maker of layouts from real ones, the sampler.
    ``limit``: the pairs to draw (``settings.num``), or None to draw until the consumer stops (QC)."""

    settings: GenerationSettings
    settings_from: dict[str, str] = field(default_factory=dict)
    given: list[np.ndarray] | None = None
    maker: RealLayoutMaker | None = None
    sample: Callable[..., torch.Tensor] | None = None
    limit: int | None = None

    @property
    def mode(self) -> str:
        """How the layouts are made, as a generated set records it."""
        if self.given is not None:
            return "pre-msgnet (given layouts)"
        if self.settings.layout_source == "real":
            return "msgnet (layouts made from the run's training layouts)"
        if self.settings.layout_source == "prior-shapes":
            return "msgnet (sampled layouts, their objects shaped as the run's training objects)"
        return "msgnet (sampled layouts)"

    def span(self, b: int) -> tuple[int, int]:
        """Batch ``b``: the index of its first pair and how many it holds."""
        bs = self.settings.batch_size
        first = b * bs
        n = bs if self.limit is None else min(bs, self.limit - first)
        if b < 0 or n < 1:
            raise ValueError(f"sampling: no batch {b} in a request of {self.limit} pairs")
        return first, n

    @property
    def num_batches(self) -> int:
        if self.limit is None:
            raise ValueError("sampling: an unbounded request has no number of batches; name the batches")
        return -(-self.limit // self.settings.batch_size)

    def unbounded(self) -> "SamplingRequest":
        """The same pairs, drawn for as long as the consumer asks (QC candidates)."""
        return replace(self, limit=None)


@dataclass
class LayoutBatch:
    """Layouts (n, H, W) uint8 of batch ``index``, pairs ``first``...; ``provenance``: how each was made
    from real ones (else None); ``seconds``: the time it took."""

    index: int
    first: int
    layouts: np.ndarray
    provenance: list[dict] | None = None
    seconds: float = 0.0


B = TypeVar("B", bound=LayoutBatch)


@dataclass
class SampledBatch(LayoutBatch):
    """A batch of pairs: their ``images`` (n, H, W, C) uint8 beside their layouts."""

    images: np.ndarray = field(kw_only=True)

    @classmethod
    def concat(cls, batches: Sequence["SampledBatch"]) -> "SampledBatch":
        """Consecutive batches as one (provenance kept only when every batch has it)."""
        provenance = None
        if batches and all(b.provenance is not None for b in batches):
            provenance = [p for b in batches for p in b.provenance or []]
        return cls(batches[0].index, batches[0].first, np.concatenate([b.layouts for b in batches]), provenance,
                   sum(b.seconds for b in batches), images=np.concatenate([b.images for b in batches]))


@dataclass
class Progress:
    """How the engine shows its progress bar. By default a batch advances it by its pairs; a consumer
    that keeps only some of them (QC) says how far a batch it has seen advances it (``advance``) and what
    the bar shows beside the rate (``postfix``)."""

    desc: str | None = None  # None: "sampling (SAMPLER)"
    unit: str = "pair"
    show: bool = True
    total: int | None = None  # None: the request's pairs
    initial: int = 0
    advance: Callable[[Any], int] | None = None
    postfix: Callable[[], dict[str, str]] | None = None


class Engine:
    """A run's models ready to draw pairs: ``run`` (:class:`GenerationRun`) loaded from ``run_dir``."""

    def __init__(self, run: GenerationRun, run_dir: Path | str):
        self.run = run
        self.run_dir = Path(run_dir)
        self._maker: RealLayoutMaker | None = None

    @classmethod
    def load(cls, run_dir: Path | str, need_layout_prior: bool = True, device: str | None = None,
             need_images: bool = True) -> "Engine":
        """The run's models on ``device`` (:func:`load_generation_run`)."""
        return cls(load_generation_run(Path(run_dir), need_layout_prior, device, need_images), run_dir)

    @property
    def guidable(self) -> bool | None:
        return None if self.run.images is None else self.run.images.guidable

    def prepare(self, settings: GenerationSettings, layouts: Sequence[np.ndarray] | None = None) -> SamplingRequest:
        """``settings`` checked against the run, left-None settings resolved (msgnet.sampling.defaults) and
        the layouts loaded; ``layouts``: class maps given in memory instead of ``settings.layouts_from``.
        Everything that can be refused is refused here, before any pair is drawn."""
        settings.validate()
        if settings.layout_source is None and (layouts is not None or settings.layouts_from is not None):
            settings = replace(settings, layout_source="prior")  # given layouts: no source to choose
        values, settings_from = resolve_sampling({name: getattr(settings, name) for name in DECLARED_DEFAULTS},
                                                 self.run_dir, self.guidable)
        settings = replace(settings, **values)
        settings.validate()
        if settings.sampler == "cuda-graph" and self.run.device.type != "cuda":
            raise UsageError(f"sampler cuda-graph: needs a CUDA device (this run would sample on {self.run.device})")
        if settings.guidance != 1.0 and self.guidable is False:
            # Not a bug of the caller's code but a property of the run: say which and what to do.
            raise UsageError(f"guidance: {settings.guidance:g} needs a codes prior trained with "
                             f"prior.condition_dropout > 0; {RunDir(self.run_dir).prior} has no unconditional "
                             "model (leave guidance out, or give 1)")
        given = given_layouts(settings, layouts, self.run.info)
        maker = None
        if given is None and settings.layout_source != "real" and self.run.layout_prior is None:
            raise UsageError(f"{self.run_dir}: a {self.run.method} run has no layout prior; give layouts")
        if given is None and settings.layout_source in ("real", "prior-shapes"):
            maker = self.real_layout_maker()
        return SamplingRequest(settings, settings_from, given, maker, sampler_named(settings.sampler), settings.num)

    def real_layout_maker(self) -> RealLayoutMaker:
        """The maker of layouts from the run's own training layouts (loaded once per engine)."""
        if self._maker is None:
            rule, augmentations = self.run.info.rule, tuple(self.run.info.augmentations or ())
            held = RunDir(self.run_dir).training_layouts  # an export's copy (MSGNet.save_pretrained)
            if held.is_file():
                self._maker = RealLayoutMaker(*read_training_layouts(held), rule, augmentations)
            else:
                self._maker = real_layout_maker(*run_training_data(self.run_dir), rule, augmentations)
        return self._maker

    def _layouts(self, request: SamplingRequest, pairs: range) -> tuple[np.ndarray, torch.Tensor | None, list | None]:
        """The layouts of ``pairs`` at image size (the pairs' annotation, and what a decoder told the layout
        draws) and at the generator's latent grid (the codes prior's condition), and their provenance."""
        settings, info = request.settings, self.run.info
        drawn, provenance = None, None
        if request.given is not None:
            full = np.stack([request.given[i % len(request.given)] for i in pairs])
        elif settings.layout_source == "real":
            assert request.maker is not None
            full, provenance = request.maker.make(_real_layout_rngs(settings.seed, pairs))
        else:
            drawn, full, provenance = self._drawn_layouts(request, pairs)
        latent_hw = None if self.run.images is None else self.run.images.latent_hw
        latent = None
        if drawn is not None and latent_hw is not None and tuple(drawn.shape[-2:]) == tuple(latent_hw):
            latent = drawn  # drawn on the latent grid itself: the drawn tokens are the condition
        elif latent_hw is not None:
            # Given, made, or drawn on a finer grid of the layout prior's own (issue 32): the layout reaches
            # the latent grid from its image-size form.
            latent = torch.as_tensor(downsample_layout(full, latent_hw, num_classes=info.num_classes)).long()
        return np.asarray(full, dtype=np.uint8), latent, provenance

    def _drawn_layouts(self, request: SamplingRequest,
                       pairs: range) -> tuple[torch.Tensor | None, np.ndarray, list | None]:
        """The layout prior's layouts of ``pairs``, on its grid (None once reshaped) and at image size, and how
        each was reshaped ("prior-shapes", else None). A layout that breaks the dataset's rule is drawn (and
        reshaped) again from its pair's own streams, which go on where the last draw ended (so a pair's layout
        does not depend on the batch), up to ``settings.layout_tries`` draws in all."""
        settings, info = request.settings, self.run.info
        assert request.sample is not None and self.run.layout_prior is not None
        gens = pair_generators(settings.seed, pairs, STREAM_LAYOUT)
        reshaper = request.maker if settings.layout_source == "prior-shapes" else None
        rngs = _real_layout_rngs(settings.seed, pairs) if reshaper is not None else []
        provenance: list = [None] * len(pairs)

        def draw(which: list[int]) -> tuple[torch.Tensor, np.ndarray]:
            tokens = request.sample(self.run.layout_prior, len(which), condition=None,
                                    generator=[gens[k] for k in which], batch_size=len(which),
                                    **settings.layout_rule()).cpu()
            full = upsample_layout(tokens.numpy().astype(np.uint8), tuple(info.image_size))
            for j, k in enumerate(which if reshaper is not None else []):
                full[j], provenance[k] = reshaper.reshape(full[j], rngs[k])
            return tokens, full

        drawn, full = draw(list(range(len(pairs))))
        for _ in range(settings.layout_tries - 1 if info.rule else 0):
            again = [k for k in range(len(pairs)) if not layout_keeps_rule(info.rule, full[k])]
            if not again:
                break
            drawn[again], full[again] = draw(again)
        if reshaper is not None:
            return None, full, provenance  # the drawn tokens no longer describe the layouts
        return drawn, full, None

    def layout_batch(self, request: SamplingRequest, b: int) -> LayoutBatch:
        """Batch ``b``'s layouts alone (no codes, no decoding)."""
        t0 = time.perf_counter()
        first, n = request.span(b)
        with torch.inference_mode():
            full, _, provenance = self._layouts(request, range(first, first + n))
        return LayoutBatch(b, first, full, provenance, time.perf_counter() - t0)

    def batch(self, request: SamplingRequest, b: int) -> SampledBatch:
        """Batch ``b``'s pairs: each pair from its own streams, so the batch it is drawn in changes nothing."""
        t0 = time.perf_counter()
        first, n = request.span(b)
        pairs = range(first, first + n)
        generator = self.run.images
        if generator is None:
            raise ValueError("sampling: this engine holds the layout prior alone (loaded without need_images)")
        with torch.inference_mode():
            full, latent, provenance = self._layouts(request, pairs)
            images = generator.images(full, latent, pair_generators(request.settings.seed, pairs, STREAM_IMAGE),
                                      request.sample, request.settings.codes_rule())
        return SampledBatch(b, first, full, provenance, time.perf_counter() - t0, images=to_uint8_images(images))

    def iter_batches(self, request: SamplingRequest, batches: Iterable[int | None] | None = None,
                     progress: Progress | None = None,
                     exchange: Callable[[SampledBatch | None], list[SampledBatch]] | None = None,
                     ) -> Iterator[SampledBatch]:
        """The request's batches of pairs, in order (or ``batches``: the indices to draw, None for a round in
        which this process draws nothing). ``exchange`` (a torchrun rank split, :class:`SamplingRanks.collect`)
        takes this process's batch of a round and returns the batches to yield here (every rank's on the
        main process, none elsewhere)."""
        return self._iterate(self.batch, request, batches, progress, exchange)

    def iter_layouts(self, request: SamplingRequest, progress: Progress | None = None) -> Iterator[LayoutBatch]:
        """The request's batches of layouts alone (the layout prior's, given or made from real ones)."""
        return self._iterate(self.layout_batch, request, None, progress, None)

    def _iterate(self, draw: Callable[[SamplingRequest, int], B], request: SamplingRequest,
                 batches: Iterable[int | None] | None, progress: Progress | None,
                 exchange: Callable[[Any], list[Any]] | None) -> Iterator[B]:
        shown = progress or Progress()
        todo = range(request.num_batches) if batches is None else batches
        bar = tqdm(total=shown.total if shown.total is not None else request.limit, initial=shown.initial,
                   desc=shown.desc or f"sampling ({request.settings.sampler})", unit=shown.unit,
                   disable=not shown.show)
        made, started = 0, time.perf_counter()
        try:
            for b in todo:
                mine = None if b is None else draw(request, b)
                for batch in exchange(mine) if exchange is not None else ([] if mine is None else [mine]):
                    yield batch
                    n = len(batch.layouts)
                    made += n
                    bar.update(n if shown.advance is None else shown.advance(batch))
                    rate = {"pairs_per_s": f"{made / max(time.perf_counter() - started, 1e-9):.2f}"}
                    bar.set_postfix({**rate, **(shown.postfix() if shown.postfix is not None else {})})
        finally:
            bar.close()

    def collect(self, request: SamplingRequest, progress: Progress | None = None) -> SampledBatch:
        return SampledBatch.concat(list(self.iter_batches(request, progress=progress)))
