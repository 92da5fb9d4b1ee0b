"""How a training step runs fast on the device at hand: precision, memory layout, compilation.

One place decides these, so that the training loop and the step-time measurement that
sizes derived presets (:func:`msgnet.preset_derivation.measure_step_seconds`) run the
same step. What each choice buys was measured with ``benchmarks/training_speed.py``:

- **bf16 autocast** where the hardware computes in bf16: CUDA GPUs with bf16 support, and
  CPUs with AVX512-BF16 or AMX. On the 2-core development CPU (AVX512-BF16) it made the
  ``multi-mnist-cpu`` codes-prior step 1.4x and the VQ-VAE step 1.3x faster. A CPU without
  native bf16 would emulate it and lose, so ``precision: auto`` leaves such CPUs in fp32.
  Weights, gradients and the optimiser stay fp32; the loss is computed in fp32.
- **TF32** for what stays fp32 on a CUDA GPU while autocast is active.
- **channels-last** for convolution-heavy models that declare it
  (``preferred_memory_format``): oneDNN and cuDNN run NHWC bf16 convolutions faster.
  The VQ-VAE does (1.2x on top of bf16 on the development CPU); the priors do not (their
  attention and gated blocks reshape constantly, and no gain was measured).
- **torch.compile** (``TrainConfig.compile``) of the training forward pass only:
  validation, image grids and the saved weights use the plain module. It needs a C++
  compiler on a CPU; without one training goes on uncompiled and says so.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any, Callable

import torch
from torch import nn

from msgnet.errors import UsageError

logger = logging.getLogger(__name__)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matmuls and convolutions natively (not emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in probes)


def uses_bf16(precision: str, device: torch.device) -> bool:
    """What ``TrainConfig.precision`` means on ``device``: "auto" is bf16 where it is native."""
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    if precision == "auto":
        return native_bf16(device)
    raise UsageError(f"train.precision: one of auto, bf16, fp32 (got {precision!r})")


class Precision:
    """Context manager for one training step: bf16 autocast per ``precision``, with TF32
    allowed on CUDA for what stays fp32 — set on entry and restored on exit, never left behind."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.device = device
        self.enabled = uses_bf16(precision, device)
        self._saved: tuple[bool, bool] | None = None

    @property
    def name(self) -> str:
        return "bf16" if self.enabled else "fp32"

    def __enter__(self) -> None:
        if self.device.type == "cuda":
            self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        self._ctx = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.enabled)
        self._ctx.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)
        if self._saved is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved


def memory_format_of(model: nn.Module) -> torch.memory_format:
    """The layout a model trains fastest in (its ``preferred_memory_format``, else contiguous)."""
    return getattr(model, "preferred_memory_format", torch.contiguous_format)


def place_for_training(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in its preferred memory format (in place; returns it).

    A channels-last weight makes every convolution it meets produce channels-last
    output, so the inputs need no conversion; saved weights are made contiguous.
    """
    return model.to(device=device, memory_format=memory_format_of(model))


def compiler_available(device: torch.device) -> bool:
    """torch.compile's CPU backend builds C++ kernels: it needs a compiler on the PATH."""
    return device.type == "cuda" or any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def compiled_for_training(module: nn.Module, device: torch.device, enabled: bool,
                          log: Callable[[str], None] = logger.info) -> nn.Module:
    """``torch.compile(module)`` when ``enabled`` and possible, else ``module`` itself."""
    if not enabled:
        return module
    if not compiler_available(device):
        log("train.compile: no C++ compiler on the PATH, training uncompiled")
        return module
    return torch.compile(module)  # type: ignore[return-value]
