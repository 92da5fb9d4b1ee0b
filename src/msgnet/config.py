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

from msgnet.errors import UsageError

PRESET_DIR = Path(__file__).parent / "presets"

T = TypeVar("T")


@dataclass(frozen=True)
class VQVAEConfig:
    """Double-path VQ-VAE (paper Table 4, Fig. 21)."""

    in_channels: int = 1
    image_size: int = 64
    hidden_dim: int = 128  # channels of the main feature maps
    residual_dim: int = 64  # bottleneck width inside residual blocks
    num_residual_blocks: int = 2
    embedding_dim: int = 64  # Table 4 "Codebook size": length of a code vector
    num_embeddings: int = 256  # Table 4 "Codebook num": number of codes per codebook
    latent_size: int = 16
    commitment: float = 0.25
    # Self-attention only on feature maps smaller than this per side (paper App. B).
    attention_below: int = 64
    # Restart codes unused over the last window of steps (msgnet.training.codebook_usage.RESTART_WINDOW,
    # at most an epoch) from random encoder outputs; also initialises the codebooks from the
    # first batch (off in paper presets).
    restart_dead_codes: bool = False

    @property
    def num_downsamples(self) -> int:
        ratio = self.image_size // self.latent_size
        return max(ratio.bit_length() - 1, 0)

    def validate(self) -> None:
        _check_numbers(self, "vqvae", allow_zero=("commitment", "attention_below"))
        if self.commitment < 0:
            raise UsageError("vqvae.commitment: must be >= 0")
        ratio = self.image_size / self.latent_size
        if self.image_size % self.latent_size or ratio < 1 or int(ratio) & (int(ratio) - 1):
            raise UsageError(
                f"vqvae: image_size {self.image_size} / latent_size {self.latent_size} "
                "must be a power of two (stride-2 convolutions)"
            )
        if self.in_channels not in (1, 2, 3):
            raise UsageError(f"vqvae: in_channels must be 1, 2 or 3, got {self.in_channels}")
        for name in ("hidden_dim", "residual_dim", "embedding_dim", "num_embeddings"):
            if getattr(self, name) < 1:
                raise UsageError(f"vqvae: {name} must be positive")


@dataclass(frozen=True)
class PixelSNAILConfig:
    """PixelSNAIL prior (paper Tables 5 and 6). Unconditional when ``num_condition_classes`` is 0."""

    height: int = 32
    width: int = 16
    num_classes: int = 256  # vocabulary of the modelled tokens (codes or layout classes)
    channels: int = 256  # "Hidden dim"
    num_blocks: int = 4  # the authors' code hard-codes 4 blocks ...
    num_res_blocks: int = 3  # ... of 3 gated residual blocks each ("Residual blocks")
    res_channels: int = 256  # "Residual dim"
    kernel_size: int = 5
    attention: bool = True
    attention_dim: int = 128  # key/query width per block ("Attention dim")
    attention_heads: int = 8
    dropout: float = 0.1
    num_out_res_blocks: int = 0
    # Condition (the layout): class embedding -> non-causal residual stack.
    num_condition_classes: int = 0
    condition_embedding_dim: int = 64  # "Condition Layout dim"
    condition_res_blocks: int = 2
    condition_res_dim: int = 64
    # Embedding of the modelled tokens ("Layout embedding dim" for the layout prior);
    # 0 means one-hot input as in the reference PixelSNAIL.
    embedding_dim: int = 0
    # A learned embedding per map position, added to the input features. Not in the paper: a small
    # causal prior otherwise cannot tell a bottom or right border row from an inner one (causal
    # padding marks only the top and left) and draws inner codes there — dotted edge artefacts.
    position_embedding: bool = False
    # Classifier-free guidance (Ho & Salimans 2022; LlamaGen, VAR): the fraction of training maps whose
    # condition is replaced by a learned "no layout" input, so that one network also models the codes
    # without their layout and sampling can push away from that (``guidance``). 0: no such input, and the
    # model and its training are exactly what they were before this field existed.
    condition_dropout: float = 0.0

    @property
    def conditional(self) -> bool:
        return self.num_condition_classes > 0

    @property
    def guidable(self) -> bool:
        """Whether the prior learned an unconditional model beside the conditional one."""
        return self.conditional and self.condition_dropout > 0

    def validate(self, where: str = "prior") -> None:
        _check_numbers(self, where, allow_zero=("num_out_res_blocks", "num_condition_classes", "embedding_dim",
                                                 "condition_res_blocks", "dropout", "condition_dropout"))
        if self.kernel_size < 2:
            raise UsageError(f"{where}.kernel_size: must be at least 2")
        if self.attention and self.attention_dim % self.attention_heads:
            raise UsageError(f"{where}.attention_dim: must be divisible by attention_heads")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"{where}.dropout: must be in [0, 1)")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise UsageError(f"{where}.condition_dropout: must be in [0, 1)")
        if self.condition_dropout > 0 and not self.conditional:
            raise UsageError(f"{where}.condition_dropout: only a conditional prior can drop its condition")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation schedule of one stage. Exactly one of ``iterations``/``epochs`` is used."""

    batch_size: int = 64
    learning_rate: float = 1e-3
    schedule: str = "linear"  # "linear" (decay to 0), "cyclical" (triangular), "constant"
    cycle_epochs: float = 2.0  # period of the cyclical schedule, in epochs
    min_lr_ratio: float = 0.1  # lowest point of the cyclical schedule
    iterations: int = 0
    epochs: int = 0
    max_minutes: float = 0.0  # stop early after this wall time (0: no limit); CPU presets use it
    weight_decay: float = 0.0
    adam_beta1: float = 0.9  # Adam's first-moment decay (GANs train with 0.5)
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    image_every: int = 1000
    val_samples: int = 0  # validate on the first N validation items (0: all); CPU presets use it
    # Small-data training (msgnet.training.selection): moving average of the weights (0: off),
    # keep the best-validated weights, stop after `patience` validations without improvement
    # (0: never), validate every `val_every` steps (0: only with checkpoints and image grids).
    ema_decay: float = 0.0
    keep_best: bool = False
    patience: int = 0
    val_every: int = 0
    # Train on the geometric transforms dataset.json declares valid, image and layout alike
    # (msgnet.augmentation.standard). The VQ-VAE draws a fresh transform for every batch; a
    # prior cannot (its tokens are the codes of the transformed image), so it learns from
    # `augment_copies` transformed copies of each training image encoded once, beside the originals.
    augment: bool = False
    augment_copies: int = 0
    # "auto": bf16 autocast (and TF32 for what stays fp32) where the device computes bf16 natively
    # (CUDA; CPUs with AVX512-BF16 or AMX), else fp32; "bf16": autocast on any device; "fp32": never.
    # Weights and optimiser stay fp32 (msgnet.training.acceleration).
    precision: str = "auto"
    # torch.compile the training forward pass: worth its compile time only for long stages
    # (benchmarks/training_speed.py measures what it buys).
    compile: bool = False
    # The codes prior's validation also decodes this many sampled maps and scores them against their
    # layouts with the run's QC segmenter (msgnet.evaluation.qc.adherence); 0: off.
    adherence_pairs: int = 0

    def validate(self, where: str = "train") -> None:
        _check_numbers(self, where, allow_zero=("iterations", "epochs", "max_minutes", "weight_decay", "adam_beta1", "grad_clip",
                                                 "seed", "val_samples", "ema_decay", "patience",
                                                 "val_every", "augment_copies", "image_every", "adherence_pairs"))
        if self.batch_size < 1:
            raise UsageError("train: batch_size must be positive")
        if self.learning_rate <= 0:
            raise UsageError("train: learning_rate must be positive")
        if self.schedule not in ("linear", "cyclical", "constant"):
            raise UsageError(f"train: unknown schedule {self.schedule!r} (linear, cyclical, constant)")
        if (self.iterations > 0) == (self.epochs > 0):
            raise UsageError("train: set exactly one of iterations and epochs")
        if not 0.0 <= self.adam_beta1 < 1.0:
            raise UsageError(f"{where}.adam_beta1: must be in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UsageError("train: ema_decay must be in [0, 1)")
        if self.patience < 0 or self.val_every < 0:
            raise UsageError("train: patience and val_every must be >= 0")
        if self.augment_copies < 0:
            raise UsageError("train: augment_copies must be >= 0")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UsageError(f"{where}.precision: one of auto, bf16, fp32 (got {self.precision!r})")


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
        agreements = [
            ((prior.height, prior.width) == (2 * lat, lat), "prior.height, prior.width",
             f"must be {2 * lat}, {lat}: the two stacked {lat}x{lat} code maps of vqvae.latent_size {lat}"),
            (prior.num_classes == self.vqvae.num_embeddings, "prior.num_classes",
             f"must equal vqvae.num_embeddings {self.vqvae.num_embeddings} (the prior models the codes)"),
            ((layout.height, layout.width) == (lat, lat), "layout_prior.height, layout_prior.width",
             f"must be {lat}, {lat}: layouts live on the {lat}x{lat} latent grid"),
            (not layout.conditional, "layout_prior.num_condition_classes",
             "must be 0: the layout prior draws layouts unconditioned"),
            (not prior.conditional or prior.num_condition_classes == layout.num_classes,
             "prior.num_condition_classes",
             f"must equal layout_prior.num_classes {layout.num_classes} (the layout is the condition)"),
        ]
        for ok, key, why in agreements:
            if not ok:
                raise UsageError(f"{key}: {why}")


def _check_numbers(config: Any, where: str, allow_zero: tuple[str, ...]) -> None:
    """Numbers must be finite; counts and sizes positive (those in ``allow_zero`` may be 0); none negative."""
    import math

    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if f.type in ("int", "float") and not isinstance(value, bool):
                raise UsageError(f"{where}.{f.name}: expected a number, got {value!r}")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{where}.{f.name}: must be a finite number, got {value}")
        if value < 0 or (value == 0 and f.name not in allow_zero):
            raise UsageError(f"{where}.{f.name}: must be {'>= 0' if f.name in allow_zero else 'positive'}, "
                             f"got {value}")


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
