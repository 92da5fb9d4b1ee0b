"""Choosing how many CPU threads to use while a process shares its cores with others.

On an idle 2-core machine two intra-op threads are fastest; beside another process training on
both cores, a benchmark U-Net step took 11.5x its idle time on two threads and 2.9x on one
(``benchmarks/unet_cpu_step.py``). Whoever repeats one piece of work many times times a few
repetitions with each candidate now and then and keeps the fastest.
"""

from __future__ import annotations

import torch


class ThreadChooser:
    """Which CPU thread count a repeated piece of work runs on, chosen by timing and chosen again.

    At the start of every ``period`` units of work (a sampler's tokens, a U-Net's optimiser
    steps), ``span`` units run with each candidate and the fastest is kept until the next probe.
    The probed units are real work (only timed), so probing costs nothing but the slower
    candidate's few units; a neighbour that starts or stops loading the CPU is noticed within
    ``period`` units instead of never.
    """

    def __init__(self, candidates: list[int], span: int, period: int) -> None:
        self.candidates, self.span = candidates, span
        self.period = max(period, span * len(candidates) + 1)
        self.timings = [0.0] * len(candidates)

    def _phase(self, p: int) -> int:
        k = p % self.period
        return k - 1 if self.span and 1 <= k < 1 + self.span * len(self.candidates) else -1

    def before(self, p: int) -> bool:
        """Set the threads for unit ``p``; True when it is timed."""
        i = self._phase(p)
        if i < 0:
            return False
        if i == 0:
            self.timings = [0.0] * len(self.candidates)
        if i % self.span == 0:
            torch.set_num_threads(self.candidates[i // self.span])
        return True

    def after(self, p: int, seconds: float) -> None:
        i = self._phase(p)
        self.timings[i // self.span] += seconds
        if i == self.span * len(self.candidates) - 1:  # the probe's last unit: keep the fastest
            torch.set_num_threads(self.candidates[self.timings.index(min(self.timings))])
