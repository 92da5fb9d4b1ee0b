"""`msgnet sample` as a library call: the engine's pairs (:mod:`msgnet.sampling.engine`) written to a dataset.

Results stream to ``OUT.partial/`` batch by batch; an interrupted run keeps what it wrote and ``resume=True``
completes the rest, exactly as an uninterrupted run would have written it (each pair has its own randomness).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from msgnet.data.format import DatasetInfo
from msgnet.data.provenance import GENERATOR_TRAINING_KEY, generator_training_record
from msgnet.sampling.engine import Engine, Progress, SamplingRequest, to_uint8_images
from msgnet.sampling.partial_output import PartialOutput
from msgnet.sampling.run import GenerationRun
from msgnet.sampling.settings import GenerationSettings

# Older importers find these here (the VQ-VAE diagnostics, scripts): they live beside the engine now.
__all__ = ["GenerationSettings", "SamplingJob", "generate", "generated_source", "remove_partial", "to_uint8_images"]


def generated_source(run_dir: Path, info: DatasetInfo, request: SamplingRequest, seconds: float, training: dict,
                     provenance: dict[str, dict] | None = None, extra: dict | None = None) -> dict:
    """A generated set's dataset.json ``source``: how its pairs were drawn, and which real images its
    generator learned from (msgnet.data.provenance). `msgnet sample` and ``Pairs.save`` write this same record;
    ``provenance``: how each pair's layout was made from real ones, by pair id."""
    return {
        "generated": True,
        "generator": "msgnet",
        "mode": request.mode,
        "run": str(Path(run_dir).resolve()),
        "settings": asdict(request.settings),
        "settings_from": request.settings_from,
        "trained_on": info.name,
        "sampling_seconds": round(seconds, 2),
        **(extra or {}),
        **({"layout_provenance": provenance} if provenance is not None else {}),
        GENERATOR_TRAINING_KEY: training,  # last: its id list is long
    }


@dataclass
class SamplingJob:
    """A sampling run opened for writing: the engine, the request it draws and the partial output it
    streams into (None in a process that only samples, see msgnet.sampling.ranks)."""

    run_dir: Path
    engine: Engine
    request: SamplingRequest
    training: dict  # the generator's training images (msgnet.data.provenance)
    partial: PartialOutput | None

    @property
    def run(self) -> GenerationRun:
        return self.engine.run

    @classmethod
    def open(cls, run_dir: Path | str, out: Path | str | None, settings: GenerationSettings, resume: bool = False,
             device: str | None = None, record_extra: dict | None = None) -> "SamplingJob":
        """Load the run, check the settings and open ``OUT.partial/`` (``out`` None: the models and the request
        alone, for a process that samples batches another one writes)."""
        settings.validate()
        run_dir = Path(run_dir)
        engine = Engine.load(run_dir, need_layout_prior=settings.samples_layouts, device=device)
        request = engine.prepare(settings)  # settings left None resolved before the partial output records them
        if out is None:
            return cls(run_dir, engine, request, {}, None)
        # Read before sampling, so that a damaged run record fails at once, not after the work.
        training = generator_training_record(run_dir, engine.run.info)
        partial = PartialOutput(Path(out), asdict(request.settings), run_dir, resume, record_extra)
        return cls(run_dir, engine, request, training, partial)

    def finish(self, extra_source: dict | None = None,
               extra_files: Callable[[Path], None] | None = None) -> Path:
        """Write the dataset's records (``extra_source`` joins its ``source``) and move it into place."""
        assert self.partial is not None, "only the writing process finishes a job"
        info, state = self.run.info, self.partial.state
        source = generated_source(self.run_dir, info, self.request, state["seconds"], self.training,
                                  state.get("layout_provenance"), extra_source)
        return self.partial.finish(info, source, extra_files)


def generate(run_dir: Path | str, out: Path | str, settings: GenerationSettings, resume: bool = False,
             device: str | None = None, progress: bool = True) -> Path:
    """Sample ``settings.num`` image + annotation pairs from a trained run into dataset ``out``; under
    ``torchrun --nproc_per_node K`` the batches still to do are dealt out among the K processes
    (:mod:`msgnet.sampling.ranks`), and the dataset is the same whatever K is."""
    from msgnet.sampling.ranks import SamplingRanks

    with SamplingRanks(device) as ranks:
        job = ranks.open(lambda: SamplingJob.open(run_dir, out, settings, resume, str(ranks.device)),
                         lambda: SamplingJob.open(run_dir, None, settings, device=str(ranks.device)))
        request = job.request
        done = ranks.share(None if job.partial is None else job.partial.state["done_batches"])
        pending = [b for b in range(request.num_batches) if b not in done]
        shown = Progress(f"sampling ({request.settings.sampler})", unit="img", show=progress and ranks.is_main,
                         initial=sum(request.span(b)[1] for b in done))
        for batch in job.engine.iter_batches(request, ranks.deal(pending), shown, exchange=ranks.collect):
            assert job.partial is not None  # batches reach the main process alone
            job.partial.write_batch(batch.index, batch.first, batch.images, batch.layouts, batch.seconds,
                                    provenance=batch.provenance)
        path = job.finish() if ranks.is_main else Path(out)
        ranks.barrier()
    return path


def remove_partial(out: Path) -> None:
    shutil.rmtree(out.with_name(out.name + ".partial"), ignore_errors=True)
