"""Learning-rate schedules as pure functions of the step (no scheduler state to save).

``lr(step) = learning_rate * lr_factor(step, ...)``. Because the factor depends only on
the step, resuming needs nothing but the step number to continue the same curve.
"""

from __future__ import annotations

from msgnet.config import TrainConfig


def lr_factor(step: int, total_steps: int, config: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of ``config.learning_rate`` for optimiser step ``step`` (0-based).

    - ``constant``: 1.
    - ``linear``: from 1 down to 0 over ``total_steps`` (the last step still has a
      small positive rate).
    - ``cyclical``: triangular (Smith 2017) between ``min_lr_ratio`` and 1 with a period
      of ``cycle_epochs`` epochs, starting at the low point.
    """
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "linear":
        return max(1.0 - step / max(total_steps, 1), 0.0)
    if config.schedule == "cyclical":
        period = max(int(round(config.cycle_epochs * steps_per_epoch)), 2)
        phase = (step % period) / period  # 0 .. 1
        tri = 1.0 - abs(2.0 * phase - 1.0)  # 0 -> 1 -> 0
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * tri
    raise ValueError(f"unknown schedule {config.schedule!r}")
