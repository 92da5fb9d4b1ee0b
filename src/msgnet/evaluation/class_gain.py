"""Class gain of a codes prior: does its likelihood of the codes depend on which class the layout names?

The validation NLL over object positions (layout class != 0), in nats per object token, with each
layout's object classes permuted (a derangement per map: same shapes, same background, every object
of another class), minus the NLL with the true layouts. About 0 means the prior ignores the classes
(it may still read where the objects are); a clearly positive figure means it reads them. The
computation lives in :mod:`msgnet.training.prior_diagnostics`, where the codes prior's validation
logs it as ``val_class_gain``; this module is its face for a model or a saved run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch

from msgnet.errors import UsageError
from msgnet.evaluation.requests import ClassGainRequest
from msgnet.models.latents import stack_layout
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.training.prior_diagnostics import ClassGainTally

__all__ = ["ClassGainRequest", "class_gain", "format_class_gain", "measure_class_gain", "run_class_gain"]


def _condition_grid(codes: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """The layout on the codes' grid: as given, or an H x W layout stacked to the 2H x W code map."""
    if layout.shape == codes.shape:
        return layout
    if layout.dim() == 3 and codes.dim() == 3 and 2 * layout.shape[1] == codes.shape[1] \
            and layout.shape[::2] == codes.shape[::2]:
        return stack_layout(layout)
    raise ValueError(f"class gain: layouts {tuple(layout.shape)} fit neither codes {tuple(codes.shape)} "
                     "nor their stacked halves")


def class_gain(prior: PixelSNAIL, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
               seed: int = 0) -> dict[str, float]:
    """``{"class_gain", "nll_true", "nll_permuted"}`` (nats per object token) of ``prior`` over
    ``batches`` of (codes (B, 2H, W), layouts (B, H, W) or already stacked to (B, 2H, W)).

    The permutations are drawn from a generator seeded with ``seed`` (the global random stream is
    left alone). An unconditional prior cannot read the layout: its gain is 0.
    """
    tally = ClassGainTally(prior.config.num_condition_classes, seed)
    device = next(prior.parameters()).device
    was_training = prior.training
    prior.eval()
    try:
        with torch.no_grad():
            for codes, layout in batches:
                codes = codes.to(device).long()
                tally.add(prior, codes, _condition_grid(codes, layout.to(device).long()))
    finally:
        prior.train(was_training)
    result = tally.result()
    if not result:
        raise UsageError("class gain: no code position of these maps lies on an object (layout class != 0)")
    return result


def run_class_gain(run_dir: Path | str, **options: Any) -> dict[str, Any]:
    """Class gain of the codes prior of ``run_dir`` on its extracted codes (``RUN/codes/<split>.safetensors``),
    with where it came from: a :class:`ClassGainRequest` made of these keywords (``split``, ``max_maps``,
    ``batch_size``, ``seed``, ``device``; each checked, naming it), run by :func:`measure_class_gain`."""
    return measure_class_gain(ClassGainRequest(run_dir, **options))


def measure_class_gain(req: ClassGainRequest) -> dict[str, Any]:
    """Class gain of ``req.run``'s codes prior on its ``req.split`` codes (the first ``req.max_maps``, 0: all)."""
    from msgnet.device import choose_device
    from msgnet.models.priors import load_prior
    from msgnet.run_dir import RunDir
    from msgnet.training.codes import load_codes

    run = RunDir(req.run)
    if not run.has_weights("prior"):
        raise UsageError(f"{run.prior}: no trained codes prior here")
    prior = load_prior(run.prior, "cpu")
    if not prior.config.conditional:
        raise UsageError(f"{run.prior}: this prior is not conditioned on a layout (prior.num_condition_classes 0)")
    codes, layouts, _ = load_codes(req.run, req.split)
    if req.max_maps:
        codes, layouts = codes[:req.max_maps], layouts[:req.max_maps]
    prior = prior.to(choose_device(req.device))
    size = req.batch_size
    batches = ((codes[i:i + size], layouts[i:i + size]) for i in range(0, codes.shape[0], size))
    result: dict[str, Any] = dict(class_gain(prior, batches, req.seed))
    result.update(run=str(req.run), split=req.split, maps=int(codes.shape[0]), seed=req.seed)
    return result


def format_class_gain(result: dict[str, Any]) -> str:
    """One paragraph: the gain, the two NLLs, and how to read it."""
    where = f" ({result['maps']} maps of the {result['split']} split)" if "maps" in result else ""
    return (f"class gain: {result['class_gain']:.4f} nats per object token{where}\n"
            f"  NLL, true layouts:       {result['nll_true']:.4f}\n"
            f"  NLL, classes permuted:   {result['nll_permuted']:.4f}\n"
            "  about 0: the prior ignores which class the layout names; positive: it reads the classes")
