"""A trained run, as the generation pipeline needs it: its training record and its models.

Where each file lives is :class:`msgnet.run_dir.RunDir`'s business; this module reads the run's
``dataset.json`` (which real images it trains on, msgnet.data.provenance) and loads the generator
it holds behind :class:`msgnet.sampling.generators.LayoutToImage`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
import torch
from safetensors import safe_open

from msgnet.config import PixelSNAILConfig
from msgnet.data.format import DatasetInfo, open_dataset
from msgnet.data.provenance import TRAIN_SPLIT, TrainingData, choose_training_data, recorded_training_data
from msgnet.device import choose_device
from msgnet.errors import UsageError
from msgnet.io import atomic_write_json
from msgnet.run_dir import RunDir, stages_of
from msgnet.sampling.generators import CVQVAEImages, LayoutToImage, MSGNetImages, ObjCGANImages


def training_data_for(run_dir: Path, data_dir: Path, subset: int | None = None) -> TrainingData:
    """The real images a stage of ``run_dir`` trains on: the run's record if it has one, else chosen now.

    The ids are chosen once, by the first stage, and every later stage (or ``--resume``)
    reuses them, so VQ-VAE and priors see the same images and the record stays exact. A
    ``subset`` (``--train-subset``) or ``data_dir`` that contradicts the record is refused
    once any stage has written something; before that the record describes no model and
    is chosen afresh (a first attempt that failed must not lock its choice in).
    Reads only: call it before writing anything into the run.
    """
    dataset = open_dataset(data_dir)
    run = RunDir(run_dir)
    path, rec = run.dataset_json, None
    # Once any stage has written a file, the models depend on the record.
    if path.is_file() and any(run.started(stage.name) for stage in stages_of("msgnet")):
        rec = recorded_training_data(read_run_info(run_dir), str(path))
    if rec is None:
        return choose_training_data(dataset, subset)
    resolved = str(Path(data_dir).resolve())
    if rec.dataset is not None and rec.dataset != resolved:
        raise UsageError(f"{path}: the run trains on {rec.dataset}, not on {resolved} (`data`)")
    if subset is not None and subset != rec.subset:
        raise UsageError(f"{path}: the run trains on {_describe(rec)}; `subset` {subset} differs "
                         "(leave it out to use the run's)")
    if rec.ids is None:
        # Recorded before ids were kept: such runs trained on the whole train split.
        return choose_training_data(dataset, None)
    missing = sorted(set(rec.ids) - set(dataset.ids(TRAIN_SPLIT)))
    if missing:
        raise UsageError(f"{path}: training image {missing[0]} is not in the train split of {resolved} any more")
    return rec


def _describe(rec: TrainingData) -> str:
    if rec.subset is None:
        return "the whole train split" if rec.ids is None else f"the whole train split ({len(rec.ids)} images)"
    return f"a subset of {rec.subset} train images (--train-subset {rec.subset})"


def record_training_data(run_dir: Path, data_dir: Path, subset: int | None = None) -> TrainingData:
    """Keep the training set's description (without its split lists) and the training ids beside the models.

    ``source`` gets ``training_data`` (resolved dataset path), ``training_subset`` (N or null)
    and ``training_ids`` (the train ids used); see :func:`training_data_for` for the choice.
    """
    training = training_data_for(run_dir, data_dir, subset)
    info = open_dataset(data_dir).info
    description = info.to_json()
    description["splits"] = {}
    fields = training.source_fields()
    # The long id list last, so the file stays readable at its top.
    description["source"] = {"training_data": fields["training_data"], "made_by": info.source,
                             "training_subset": fields["training_subset"], "training_ids": fields["training_ids"]}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RunDir(run_dir).dataset_json, description)
    return training


def read_run_info(run_dir: Path) -> DatasetInfo:
    path = RunDir(run_dir).dataset_json
    if not path.is_file():
        raise UsageError(f"{path}: missing (is {run_dir} a run trained with `msgnet train`?)")
    try:
        return DatasetInfo.from_json(json.loads(path.read_text()), str(path))
    except json.JSONDecodeError:
        raise UsageError(f"{path}: not valid JSON") from None


def run_training_data(run_dir: Path) -> tuple[Path, list[int] | None]:
    """The real dataset a run was trained on and the ids it used (from RUN/dataset.json)."""
    source = read_run_info(run_dir).source or {}
    data = source.get("training_data")
    if not data:
        raise UsageError(f"{RunDir(run_dir).dataset_json}: does not record its training data (give the real set explicitly)")
    ids = source.get("training_ids")
    return Path(data), (None if ids is None else [int(i) for i in ids])


@dataclass
class GenerationRun:
    """The trained models of a run: ``images`` turns layouts into images (whichever generator the run
    trained, :mod:`msgnet.sampling.generators`; None when only the layouts were loaded, see
    :func:`load_generation_run`); ``layout_prior`` draws layouts (None: given ones only)."""

    info: DatasetInfo
    images: LayoutToImage | None
    layout_prior: torch.nn.Module | None
    device: torch.device

    @property
    def method(self) -> str:
        return self.images.method if self.images is not None else "msgnet"

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        """Every model it holds by the name of the stage that trains it (msgnet.run_dir.STAGES)."""
        modules = dict(self.images.stage_modules()) if self.images is not None else {}
        if self.layout_prior is not None:
            modules["layout-prior"] = self.layout_prior
        return modules

    def to(self, device: torch.device | str) -> "GenerationRun":
        """Move every model to ``device`` (in place); returns the run."""
        self.device = torch.device(device)
        for module in self.stage_modules().values():
            module.to(self.device)
        if self.images is not None:
            self.images.device = self.device
        return self


def _need(path: Path, what: str) -> Path:
    if not (path / "config.json").is_file():
        raise UsageError(f"{path}: no trained {what} here (run `msgnet train all` first)")
    return path


def _prior(path: Path, what: str, dev: torch.device) -> torch.nn.Module:
    from msgnet.models.priors import load_prior

    return load_prior(_need(path, what)).to(dev).eval()


def _load_layout_prior(run: RunDir, info: DatasetInfo, dev: torch.device,
                       latent_hw: tuple[int, int] | None) -> torch.nn.Module:
    layout_prior = _prior(run.layout_prior, "layout prior", dev)
    _check_layout_grid(run.layout_prior, layout_prior.config, info, latent_hw)
    return layout_prior


def load_generation_run(run_dir: Path, need_layout_prior: bool = True, device: str | None = None,
                        need_images: bool = True) -> GenerationRun:
    """The run's generator and (when ``need_layout_prior``) its layout prior, on ``device``; without
    ``need_images`` the layout prior alone (``images`` None): layouts can be drawn before the codes prior is trained."""
    if not Path(run_dir).is_dir():
        raise UsageError(f"{run_dir}: no such run directory")
    run = RunDir(run_dir)
    info = read_run_info(run.root)
    if not need_images:
        if not run.has_weights("layout-prior"):
            raise UsageError(f"{run.layout_prior}: no trained layout prior here")
        dev = choose_device(device)
        # No latent grid to check against: nothing here conditions on one (its drawn layouts go to image size).
        return GenerationRun(info, None, _load_layout_prior(run, info, dev, latent_hw=None), dev)
    dev = choose_device(device)
    method = run.method()
    if need_layout_prior and method != "msgnet":
        raise UsageError(f"{run.root}: a {method} run has no layout prior; give layouts "
                         "(`layouts_from`: a dataset folder or COCO json)")
    images = _load_images(run, method, dev)
    layout_prior = _load_layout_prior(run, info, dev, images.latent_hw) if need_layout_prior else None
    _check_classes(run, info)
    return GenerationRun(info=info, images=images, layout_prior=layout_prior, device=dev)


def _check_layout_grid(path: Path, config: PixelSNAILConfig, info: DatasetInfo,
                       latent_hw: tuple[int, int] | None) -> None:
    """A drawn layout must reach image size by whole cells and be no coarser than the codes' latent grid
    (it is brought down to that grid, never up: issue 32)."""
    grid = (config.height, config.width)
    image = tuple(int(v) for v in info.image_size)
    coarser = latent_hw is not None and any(g < lat for g, lat in zip(grid, latent_hw))
    if coarser or any(i % g for i, g in zip(image, grid)):
        raise UsageError(f"{path}: draws {grid[0]}x{grid[1]} layouts; their grid must divide the {image[0]}x{image[1]} "
                         f"images" + (f" and be no coarser than the {latent_hw[0]}x{latent_hw[1]} latent grid"
                                      if latent_hw is not None else ""))


def _check_classes(run: RunDir, info: DatasetInfo) -> None:
    """The run's record must name the classes its models learned (the codes file records how many):
    a dataset.json edited after training would yield layouts of classes it no longer names."""
    codes = run.codes_file("train")
    if not codes.is_file():
        return
    with safe_open(str(codes), framework="pt") as f:
        trained = (f.metadata() or {}).get("num_classes")
    if trained is not None and int(trained) != info.num_classes:
        raise UsageError(f"{run.dataset_json}: names {info.num_classes} classes (with background), but the run's "
                         f"models learned {trained} ({codes}); the record was changed after training")


def _load_images(run: RunDir, method: str, dev: torch.device) -> LayoutToImage:
    """The generator the run trained (a baseline's has no layout prior: it generates from given layouts only)."""
    if method == "obj-cgan":
        from msgnet.baselines.obj_cgan import ObjCGAN

        return ObjCGANImages(ObjCGAN.from_pretrained(_need(run.stage_dir("obj-cgan"), "obj-cGAN"), dev), dev)
    if method == "cvqvae":
        from msgnet.baselines.cvqvae import LayoutConditionedVQVAE

        model = LayoutConditionedVQVAE.from_pretrained(_need(run.stage_dir("cvqvae"), "cVQ-VAE"), dev)
        return CVQVAEImages(model, _prior(run.stage_dir("cvqvae-prior"), "cVQ-VAE prior", dev), dev)
    from msgnet.models.vqvae import DoublePathVQVAE

    vqvae = DoublePathVQVAE.from_pretrained(_need(run.vqvae, "VQ-VAE"), dev)
    prior = _prior(run.prior, "latent prior", dev)
    lat = vqvae.config.latent_size
    if (prior.config.height, prior.config.width) != (2 * lat, lat):
        raise UsageError(f"{run.prior}: prior models {prior.config.height}x{prior.config.width} codes, "
                         f"the VQ-VAE makes {2 * lat}x{lat}")
    return MSGNetImages(vqvae, prior, dev)
