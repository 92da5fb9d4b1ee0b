"""What a sampling call asks for: :class:`GenerationSettings`, one field per option of `msgnet sample`.

Errors name the field (``"top_k_codes: ..."``); the CLI puts the flag in its place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from msgnet.errors import UsageError
from msgnet.sampling.rule import rule_problems

SAMPLERS = ("cached", "reference", "cuda-graph")
# Where a pair's layout comes from when none is given: the LayoutPixelSNAIL (MSGNet); the same with each
# object given the shape of a real training object of its class (msgnet.sampling.real_layouts, "reshape");
# or made from the run's own training layouts.
LAYOUT_SOURCES = ("prior", "prior-shapes", "real")
# A layout the layout prior draws that breaks the dataset's declared rule is drawn again, up to this many
# draws in all: a layout costs milliseconds beside its codes and decoding, and quality control rejects a
# rule breaker after paying for both. On Multi-MNIST 42-55% of a 1,000-image prior's layouts break the rule and
# 84% of a 100-image prior's (docs/adherence.md): 10 draws left 7.7% of the latter's breaking it, 30 none of
# 300. A prior that keeps the rule at its first draw never pays for the cap.
# 1: the prior's layouts as drawn (the paper's sampling; `msgnet eval layouts` measures those).
LAYOUT_TRIES = 30


@dataclass(frozen=True)
class GenerationSettings:
    """A sampling request: how many pairs, the seed, each prior's token rule, where layouts come from."""

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
    batch_size: int = 16  # speed and memory only: each pair has its own randomness (msgnet.sampling.engine)
    sampler: str = "cached"
    layouts_from: str | None = None  # a msgnet dataset folder or a COCO json of boxes (pre-MSGNet)
    repeat_layouts: bool = False  # more pairs than given layouts: reuse them in turn (else refused)
    # Without given layouts, one of LAYOUT_SOURCES; None: the run's choice (RUN/probe.json), else "prior".
    layout_source: str | None = "prior"
    layout_tries: int = LAYOUT_TRIES  # draws of the layout prior per pair until its layout keeps the rule

    @property
    def samples_layouts(self) -> bool:
        """Whether the layouts come from the layout prior (neither given nor made from real ones)."""
        return self.layouts_from is None and self.layout_source != "real"

    def validate(self) -> None:
        if self.num < 1:
            raise UsageError("num: must be at least 1")
        if self.batch_size < 1:
            raise UsageError("batch_size: must be at least 1")
        if self.layout_tries < 1:
            raise UsageError(f"layout_tries: must be at least 1, got {self.layout_tries}")
        for prior, rule in (("layout", self.layout_rule()), ("codes", self.codes_rule())):
            for part, problem in rule_problems(**rule):
                raise UsageError(f"{part if part == 'guidance' else f'{part}_{prior}'}: {problem}")
        if self.layout_source is not None and self.layout_source not in LAYOUT_SOURCES:
            raise UsageError(f"layout_source: unknown {self.layout_source!r} (choose from {', '.join(LAYOUT_SOURCES)})")
        if self.layout_source not in (None, "prior") and self.layouts_from is not None:
            raise UsageError("layout_source: layouts are given (`layouts_from`); leave it at 'prior'")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"sampler: unknown {self.sampler!r} (choose from {', '.join(SAMPLERS)})")

    def codes_rule(self) -> dict:
        """The codes prior's token rule as sampler keywords (msgnet.sampling.rule)."""
        return {"temperature": self.temperature_codes, "top_k": self.top_k_codes, "top_p": self.top_p_codes,
                "guidance": self.guidance}

    def layout_rule(self) -> dict:
        """The layout prior's token rule as sampler keywords (it is unconditional: no guidance)."""
        return {"temperature": self.temperature_layout, "top_k": self.top_k_layout, "top_p": self.top_p_layout}


def sampler_named(name: str) -> Callable[..., torch.Tensor]:
    """The sampler ``name`` of :data:`SAMPLERS` (a fresh CUDA-graph sampler: its graphs are its own)."""
    if name == "reference":
        from msgnet.sampling.reference import sample_reference

        return sample_reference
    if name == "cuda-graph":
        from msgnet.sampling.graphed import CudaGraphSampler

        return CudaGraphSampler()
    from msgnet.sampling.cached import sample_cached

    return sample_cached

