"""Sampling across processes: ``torchrun --nproc_per_node K -m msgnet.cli sample ...``.

Sampling needs no gradients to agree, only the work to be dealt out: the batches still to
do are dealt round-robin (round r gives rank k the batch ``pending[r*K + k]``), every
rank samples its batch on its own device, and the main process gathers each round's
batches and writes them in batch order, keeping the one ``progress.json`` that
``--resume`` reads. Each pair draws from streams seeded by ``(seed, pair index)``
(:mod:`msgnet.sampling.engine`, whose batch iterator takes :meth:`SamplingRanks.collect` as its
exchange), so which rank samples a batch changes nothing:
the images, layouts and annotations are byte-identical for any K (``sampling_seconds`` in
dataset.json is a wall time and differs from run to run anyway).

Results travel as Python objects over a gloo group (uint8 arrays, a few KB per pair),
whatever the device, so the same code runs on CPUs and GPUs. Without torchrun's
environment everything here is a single process and costs nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from msgnet.errors import UsageError
from msgnet.training import distributed as D

T = TypeVar("T")


class SamplingRanks:
    """This process's place among the sampling processes (a context manager that sets it up)."""

    def __init__(self, device: str | None = None) -> None:
        self._device = device
        self.info: D.DistInfo | None = None
        self._group: Any = None

    def __enter__(self) -> "SamplingRanks":
        self.info = D.setup(self._device)
        if self.info.enabled:
            # Objects go over gloo even when the models run under NCCL: no tensor copies to manage.
            self._group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.info is not None
        D.teardown(self.info)

    @property
    def _dist(self) -> D.DistInfo:
        assert self.info is not None, "use SamplingRanks as a context manager"
        return self.info

    @property
    def device(self) -> torch.device:
        return self._dist.device

    @property
    def is_main(self) -> bool:
        return self._dist.is_main

    @property
    def world_size(self) -> int:
        return self._dist.world_size

    def open(self, main: Callable[[], T], worker: Callable[[], T]) -> T:
        """``main()`` in the main process (it checks the input and creates the output), then
        ``worker()`` in the others; a failure in the main process stops them all alike."""
        if not self._dist.enabled:
            return main()
        error = None
        result = None
        if self.is_main:
            try:
                result = main()
            except UsageError as e:
                error = str(e)
        error = self.share(error)
        if error is not None:
            raise UsageError(error if self.is_main else f"stopped: the main process refused the input ({error})")
        return result if self.is_main else worker()  # type: ignore[return-value]

    def share(self, value: T) -> T:
        """The main process's ``value``, on every rank."""
        if not self._dist.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def deal(self, pending: list[int]) -> Iterator[int | None]:
        """This rank's item of each round (None when the last round has none left for it)."""
        k, world = self._dist.rank, self._dist.world_size
        for start in range(0, len(pending), world):
            yield pending[start + k] if start + k < len(pending) else None

    def collect(self, result: Any) -> list[Any]:
        """Every rank's ``result`` of this round, in rank order, on the main process ([] elsewhere)."""
        if not self._dist.enabled:
            return [] if result is None else [result]
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(result, gathered, dst=0, group=self._group)
        return [r for r in gathered or [] if r is not None]

    def barrier(self) -> None:
        if self._dist.enabled:
            dist.barrier(group=self._group)
