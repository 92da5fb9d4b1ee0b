"""Frozen configuration dataclasses, YAML presets and dotted command-line overrides.

A *preset* describes the whole pipeline for one dataset: the VQ-VAE, the latent
PixelSNAIL prior, the LayoutPixelSNAIL and a training schedule for each. Every model
is rebuilt from its own component config alone (stored beside its weights as
``config.json``), so component configs must stay plain data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from msgnet.components import PixelSNAILConfig, TrainConfig, VQVAEConfig  # noqa: F401 (re-exported)
from msgnet.errors import UsageError

PRESET_DIR = Path(__file__).parent / "presets"

T = TypeVar("T")


@dataclass(frozen=True)
class Preset:
    """Everything `msgnet train all` needs for one dataset."""

    name: str = "unnamed"
    source: str = ""  # which paper table/column, or why it differs
    vqvae: VQVAEConfig = field(default_factory=VQVAEConfig)
    vqvae_train: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=1000))
    prior: PixelSNAILConfig = field(default_factory=PixelSNAILConfig)
    prior_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=1, learning_rate=3e-4, schedule="cyclical")
    )
    layout_prior: PixelSNAILConfig = field(default_factory=PixelSNAILConfig)
    layout_prior_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(epochs=1, learning_rate=3e-4)
    )

    def validate(self) -> None:
        """Every value and the agreements between the three models, before anything trains."""
        self.vqvae.validate()
        self.prior.validate("prior")
        self.layout_prior.validate("layout_prior")
        for name in ("vqvae_train", "prior_train", "layout_prior_train"):
            getattr(self, name).validate(name)
        lat, prior, layout = self.vqvae.latent_size, self.prior, self.layout_prior
        grids = layout_grids(self.vqvae.image_size, lat)
        agreements = [
            ((prior.height, prior.width) == (2 * lat, lat), "prior.height, prior.width",
             f"must be {2 * lat}, {lat}: the two stacked {lat}x{lat} code maps of vqvae.latent_size {lat}"),
            (prior.num_classes == self.vqvae.num_embeddings, "prior.num_classes",
             f"must equal vqvae.num_embeddings {self.vqvae.num_embeddings} (the prior models the codes)"),
            (layout.height == layout.width and layout.height in grids, "layout_prior.height, layout_prior.width",
             f"must be equal and one of {', '.join(map(str, grids))}: the latent side {lat} times a power of "
             f"two that divides vqvae.image_size {self.vqvae.image_size} (msgnet.data.layout_grid)"),
            (not layout.conditional, "layout_prior.num_condition_classes",
             "must be 0: the layout prior draws layouts unconditioned"),
            (not prior.conditional or prior.num_condition_classes == layout.num_classes,
             "prior.num_condition_classes",
             f"must equal layout_prior.num_classes {layout.num_classes} (the layout is the condition)"),
            (self.layout_prior_train.alignment_steps == 0, "layout_prior_train.alignment_steps",
             "must be 0: only the codes prior is aligned to the classes of its layout"),
            (self.prior_train.alignment_steps == 0 or prior.num_condition_classes >= 3, "prior_train.alignment_steps",
             "must be 0 for fewer than two object classes: alignment contrasts a layout with its classes changed"),
        ]
        for ok, key, why in agreements:
            if not ok:
                raise UsageError(f"{key}: {why}")


def layout_grids(image_size: int, latent_size: int) -> list[int]:
    """The sides a layout prior's grid may have, coarsest first: the codes' latent side times a power of two,
    up to the image side. Each divides the image side, so a sampled layout comes to image size by nearest
    neighbour and goes down to the latent grid by whole cells (issue 32: layouts at their own resolution)."""
    sides, side = [], latent_size
    while 0 < side <= image_size and image_size % side == 0:
        sides.append(side)
        side *= 2
    return sides


# Fields removed from a config, with the one value they ever held; older preset.yaml files carry them.
RETIRED_KEYS: dict[str, dict[str, Any]] = {"TrainConfig": {"num_workers": 0}}


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys (typos must not pass)."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in (data or {}).items():
        if key in RETIRED_KEYS.get(cls.__name__, {}) and value == RETIRED_KEYS[cls.__name__][key]:
            continue  # a field msgnet no longer has, at the value it always had: files written before still load
        if key not in known:
            raise UsageError(f"{where or cls.__name__}: unknown key {key!r}")
        f = known[key]
        sub = _dataclass_type(f.type)
        name = f"{where}.{key}" if where else key
        if sub is not None:
            if not isinstance(value, Mapping):
                raise UsageError(f"{name}: expected a section of settings, got {value!r}")
            kwargs[key] = from_dict(sub, value, name)
        else:
            kwargs[key] = _coerce(value, f.type, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


_COMPONENTS = {
    "VQVAEConfig": VQVAEConfig,
    "PixelSNAILConfig": PixelSNAILConfig,
    "TrainConfig": TrainConfig,
}


def _dataclass_type(type_name: Any) -> type | None:
    name = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    return _COMPONENTS.get(name)


def _coerce(value: Any, type_name: Any, where: str) -> Any:
    name = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    try:
        if name == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if name == "float":
            return float(value)
        if name == "bool":
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if name == "str":
            return str(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: expected {name}, got {value!r}") from None
    return value


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str, overrides: list[str] | None = None) -> Preset:
    """Load a preset by name (``multi-mnist-cpu``) or YAML path, then apply ``a.b=value`` overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UsageError(
            f"{name_or_path}: no such preset (known: {', '.join(list_presets())})"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a preset must be a mapping")
    return preset_from_dict(data, overrides)


def preset_from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> Preset:
    """A validated preset from a nested mapping, after ``a.b=value`` overrides."""
    for item in overrides or []:
        apply_override(data, item)
    preset = from_dict(Preset, data, "")
    preset.validate()
    return preset


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override to a nested dict (value parsed as YAML)."""
    if "=" not in item:
        raise UsageError(f"override {item!r}: expected dotted.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UsageError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = value
