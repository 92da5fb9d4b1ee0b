"""msgnet: multi-object image generation with object-level annotations (MSGNet).

The Python API (each name is imported on first use, so ``import msgnet`` stays light):

- :class:`MSGNet` (``MSGNet.from_pretrained(run).sample(n)``) and the :class:`Pairs` it returns;
- :func:`train`: train a run's stages (`msgnet train`);
- :func:`run_job` with a :class:`JobRequest`: the whole job, train -> QC sampling -> benchmark -> report;
- :func:`qc` with a :class:`QCRequest`: score generated pairs against real data (`msgnet qc`);
- :func:`benchmark` with an :class:`AugmentRequest`: the U-Net benchmark (`msgnet eval augment`);
- :class:`RunDir`: where a run keeps each file.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# The library logs (logging.getLogger(__name__)) and never prints: its caller decides what is shown
# (`msgnet` commands show INFO lines); without that, even a warning stays silent.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "MSGNet": ("msgnet.workflow.pipeline", "MSGNet"),
    "Pairs": ("msgnet.workflow.pipeline", "Pairs"),
    "train": ("msgnet.workflow.train", "train"),
    "run_job": ("msgnet.workflow.job", "run_job"),
    "JobRequest": ("msgnet.workflow.job", "JobRequest"),
    "qc": ("msgnet.evaluation.qc.request", "run_qc"),
    "QCRequest": ("msgnet.evaluation.qc.request", "QCRequest"),
    "benchmark": ("msgnet.evaluation.benchmark.request", "run_augment_benchmark"),
    "AugmentRequest": ("msgnet.evaluation.benchmark.request", "AugmentRequest"),
    "RunDir": ("msgnet.run_dir", "RunDir"),
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'msgnet' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    return getattr(importlib.import_module(module), attribute)
