"""The run directory: every path a run holds, the stages that fill it, and its manifest.

```
RUN/run.json            the manifest: what the run holds, which stages (training, then the job's sampling,
                        benchmark and report) are done, and the msgnet version that wrote it; for a
                        derived preset, the budget and the steps each stage bought (msgnet.workflow.budget)
RUN/dataset.json        the training data's classes, image size and rule, and which real images
                        the run trains on (msgnet.data.provenance)
RUN/preset.yaml         the configuration every stage trained with
RUN/vqvae/              the double-path VQ-VAE (model.safetensors + config.json, checkpoint/, metrics.csv)
RUN/codes/              train.safetensors, val.safetensors: the training images' code maps
RUN/layout_prior/       the LayoutPixelSNAIL
RUN/prior/              the latent PixelSNAIL (codes given the layout)
RUN/cvqvae/, RUN/cvqvae_prior/   the cVQ-VAE baseline and its prior (instead of the four above)
RUN/obj_cgan/           the obj-cGAN baseline (instead of the four above)
RUN/qc/segmenter/       the quality-control U-Net trained on the run's training images
RUN/probe.json          the sampling settings tried before sampling, and the one chosen
RUN/generated/          the pairs that passed quality control (RUN/generated.partial/ while sampling)
RUN/benchmark.json      the U-Net benchmark of the pairs
RUN/report/             report.md, report.html, report.json and their pictures
```

Nothing else in msgnet joins these names: code that needs a path asks a :class:`RunDir`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from msgnet import __version__
from msgnet.errors import UsageError

MANIFEST_FILE = "run.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Stage:
    """One training stage: the name it has on the command line and in the manifest, its folder,
    the method it belongs to, and whether it trains from the images (else from the codes).

    The registry below is the one list of stages: the commands, the trainers, the budget and the
    reports read it rather than naming stages themselves (``tests/test_stage_registry.py`` holds
    them to it)."""

    name: str
    folder: str
    method: str
    from_images: bool = True
    weights: bool = True  # the stage leaves model.safetensors + config.json in its folder
    title: str = ""  # what it trains, in words (reports, `msgnet train --help`)
    model: str | None = None  # the preset's section of its model ("layout_prior"), if the preset holds one
    batches: tuple[str, ...] = ()  # the preset's training sections whose batch it draws from the images
    part_of: str | None = None  # trained by that stage's command, not by one of its own


# Every stage a run can hold, in the order `msgnet train all` runs them for its method.
STAGES: tuple[Stage, ...] = (
    Stage("vqvae", "vqvae", "msgnet", title="Double-path VQ-VAE", model="vqvae", batches=("vqvae_train",)),
    Stage("codes", "codes", "msgnet", weights=False, title="code maps of the training images"),
    Stage("layout-prior", "layout_prior", "msgnet", from_images=False, title="LayoutPixelSNAIL",
          model="layout_prior", batches=("layout_prior_train",)),
    Stage("prior", "prior", "msgnet", from_images=False, title="Latent PixelSNAIL", model="prior",
          batches=("prior_train",)),
    Stage("cvqvae", "cvqvae", "cvqvae", title="cVQ-VAE", batches=("vqvae_train", "prior_train")),
    Stage("cvqvae-prior", "cvqvae_prior", "cvqvae", title="cVQ-VAE prior", part_of="cvqvae"),
    Stage("obj-cgan", "obj_cgan", "obj-cgan", title="obj-cGAN", batches=("vqvae_train",)),
)
METHODS = tuple(dict.fromkeys(s.method for s in STAGES))  # msgnet, cvqvae, obj-cgan


def stage(name: str) -> Stage:
    """The stage called ``name`` (a command-line name such as "layout-prior")."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(name)


def stages_of(method: str) -> tuple[Stage, ...]:
    return tuple(s for s in STAGES if s.method == method)


def trained_stages(method: str | None = None) -> tuple[Stage, ...]:
    """The stages that leave a model (of ``method``, or of every method), in training order."""
    return tuple(s for s in STAGES if s.weights and method in (None, s.method))


class RunDir:
    """A run directory: the one place that knows where a run keeps each of its files."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # -- files at the top
    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_FILE

    @property
    def dataset_json(self) -> Path:
        return self.root / "dataset.json"

    @property
    def preset_yaml(self) -> Path:
        return self.root / "preset.yaml"

    @property
    def probe_json(self) -> Path:
        return self.root / "probe.json"

    @property
    def benchmark_json(self) -> Path:
        return self.root / "benchmark.json"

    @property
    def training_layouts(self) -> Path:
        """An export's copy of the run's real training layouts (msgnet.sampling.real_layouts)."""
        return self.root / "training_layouts.safetensors"

    # -- folders
    def stage_dir(self, name: str) -> Path:
        """The folder of stage ``name`` ("vqvae", "codes", "layout-prior", "prior", "cvqvae", ...)."""
        return self.root / stage(name).folder

    @property
    def vqvae(self) -> Path:
        return self.stage_dir("vqvae")

    @property
    def codes(self) -> Path:
        return self.stage_dir("codes")

    def codes_file(self, split: str) -> Path:
        return self.codes / f"{split}.safetensors"

    @property
    def layout_prior(self) -> Path:
        return self.stage_dir("layout-prior")

    @property
    def prior(self) -> Path:
        return self.stage_dir("prior")

    @property
    def qc_segmenter(self) -> Path:
        return self.root / "qc" / "segmenter"

    @property
    def generated(self) -> Path:
        return self.root / "generated"

    @property
    def report(self) -> Path:
        return self.root / "report"

    # -- what the run holds
    def has_weights(self, name: str) -> bool:
        return (self.stage_dir(name) / "config.json").is_file()

    def started(self, name: str) -> bool:
        """Whether stage ``name`` has written anything (a checkpoint or its weights)."""
        folder = self.stage_dir(name)
        return any(p.is_file() for p in folder.rglob("*")) if folder.is_dir() else False

    def method(self) -> str:
        """Which generator the run holds: "msgnet" unless only a baseline's folder is there."""
        if not self.vqvae.is_dir():
            for method in METHODS[1:]:  # the baselines
                if self.has_weights(stages_of(method)[0].name):
                    return method
        return "msgnet"

    def contents(self) -> dict[str, str]:
        """What the run holds now, by name: stage folders with weights or files, and the top files."""
        held = {s.name: s.folder + "/" for s in STAGES if self.started(s.name)}
        for name, path in (("dataset", self.dataset_json), ("preset", self.preset_yaml),
                           ("probe", self.probe_json), ("benchmark", self.benchmark_json),
                           ("training-layouts", self.training_layouts)):
            if path.is_file():
                held[name] = path.name
        for name, path in (("qc-segmenter", self.qc_segmenter), ("generated", self.generated),
                           ("report", self.report)):
            if path.is_dir():
                held[name] = str(path.relative_to(self.root)) + "/"
        return held

    def protected(self) -> list[Path]:
        """What a command that reads the run must not write into or over: every stage's folder, the
        QC segmenter and the top files (sampled sets may go elsewhere inside the run)."""
        return ([self.root / s.folder for s in STAGES] + [self.root / "qc", self.manifest, self.dataset_json,
                self.preset_yaml, self.probe_json, self.benchmark_json, self.training_layouts, self.generated,
                self.report])

    def read_manifest(self) -> dict:
        """The manifest, or an empty one for a run written before manifests (or not begun). A manifest
        that is there but unreadable is refused, never read as empty: writing over it would forget
        which stages are done and what the budget spent."""
        try:
            text = self.manifest.read_text()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{self.manifest}: the run's manifest cannot be read ({_reason(exc)}); "
                             "repair it or move it away") from None
        try:
            manifest = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{self.manifest}: the run's manifest is corrupt (not JSON: {exc.msg} at char "
                             f"{exc.pos}); repair it or move it away") from None
        if not isinstance(manifest, dict):
            raise UsageError(f"{self.manifest}: the run's manifest is corrupt (a JSON {type(manifest).__name__}, "
                             "not an object); repair it or move it away")
        return manifest

    def record_stage(self, name: str, **facts: object) -> dict:
        """Write down in the manifest that stage ``name`` is done (with ``facts``: steps, seconds...)
        and what the run holds now. Atomic: a reader sees the old manifest or the new one."""
        from msgnet.io import atomic_write_json  # deferred: msgnet.io imports torch; run_dir stays torch-free

        manifest = self.read_manifest()
        manifest.update(format=MANIFEST_FORMAT, msgnet_version=__version__, method=self.method())
        stages = manifest.setdefault("stages", {})
        stages[name] = {"done": True, **facts}
        manifest["holds"] = self.contents()
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest, manifest)
        return manifest

    def record(self, key: str, value: object) -> dict:
        """Write ``value`` under ``key`` at the top of the manifest (None removes it): a record of the
        whole run beside its stages, such as the training budget (msgnet.workflow.budget). Atomic."""
        from msgnet.io import atomic_write_json  # deferred: msgnet.io imports torch; run_dir stays torch-free

        manifest = self.read_manifest()
        manifest.update(format=MANIFEST_FORMAT, msgnet_version=__version__)
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.manifest, manifest)
        return manifest

    def done(self, name: str) -> bool:
        return bool(self.read_manifest().get("stages", {}).get(name, {}).get("done"))


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__


def as_run_dir(run: "RunDir | Path | str | os.PathLike[str]") -> RunDir:
    """``run`` as a :class:`RunDir` (callers may pass a path)."""
    return run if isinstance(run, RunDir) else RunDir(Path(run))
