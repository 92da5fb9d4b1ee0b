"""The component configurations: one frozen dataclass per model and one per training schedule.

Every model is rebuilt from its own component config alone (stored beside its weights as
``config.json``), so these stay plain data; :mod:`msgnet.config` assembles them into presets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from msgnet.errors import UsageError


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
    # "vq" (the paper's learned codebooks) or "fsq" (msgnet.nn.fsq: a fixed grid of
    # prod(fsq_levels) codes that cannot collapse; num_embeddings must equal that product).
    quantizer: str = "vq"
    fsq_levels: str = ""  # levels per FSQ dimension, comma-separated ("8,6,5": 240 codes)
    # Beyond the paper (issue "images that show their layouts"): both decoder paths are told the
    # layout of these many classes at every resolution as a per-class scale and shift
    # (msgnet.nn.class_modulation, zero at step 0). 0: the paper's decoder, which sees codes only.
    layout_classes: int = 0
    # While training, this share of code positions is replaced by random codes, so that where the
    # codes and the layout disagree the decoder learns to follow the layout (0: off).
    code_replacement: float = 0.0
    # Weight of a class adversary: a small classifier reads each object's class from the code maps
    # and its gradient reaches the encoder reversed, so the codes lose the class the layout
    # already tells the decoder (0: off, and no adversary is built).
    class_adversary: float = 0.0
    # Weight of the obedience loss (msgnet.nn.obedience): real codes decoded under a layout whose object
    # classes were changed must be read as the layout's classes by a class reader trained on real
    # images (0: off, and no reader is built).
    obedience: float = 0.0
    # The obedience loss's reader also learns a class "decoded under changed classes" (a classifier-GAN's
    # extra class, Salimans et al. 2016), so that the decoder cannot satisfy it with texture alone.
    obedience_realism: bool = False
    # The obedience loss's reader sees images blurred by a Gaussian of this many pixels (real and decoded
    # alike), so that the decoder can satisfy it only with an object's shape, not with texture (0: sharp).
    reader_blur: float = 0.0
    # Weight of the decoder's term from a layout-conditioned patch critic (msgnet.nn.layout_critic) on
    # real codes decoded under changed classes: they must look like real images of the layout they were
    # decoded for, not only read as its classes (0: off, and no critic is built).
    layout_critic: float = 0.0
    # The critic's first layer's channels (the next two have twice as many): its cost per step grows with
    # the square of this.
    layout_critic_width: int = 64

    @property
    def fsq_level_list(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.fsq_levels.split(",") if v.strip()) if self.fsq_levels else ()

    @property
    def num_downsamples(self) -> int:
        ratio = self.image_size // self.latent_size
        return max(ratio.bit_length() - 1, 0)

    def validate(self) -> None:
        _check_numbers(self, "vqvae", allow_zero=("commitment", "attention_below", "layout_classes",
                                                  "code_replacement", "class_adversary", "obedience",
                                                  "layout_critic", "reader_blur"))
        self._validate_quantizer()
        if not 0.0 <= self.code_replacement < 1.0:
            raise UsageError("vqvae.code_replacement: must be in [0, 1)")
        if self.layout_classes == 1:
            raise UsageError("vqvae.layout_classes: 0 (decoder not told the layout) or at least 2")
        if self.reader_blur > 0 and self.obedience <= 0:
            raise UsageError("vqvae.reader_blur: needs vqvae.obedience > 0 (it blurs what that loss's reader sees)")
        if self.obedience_realism and self.obedience <= 0:
            raise UsageError("vqvae.obedience_realism: needs vqvae.obedience > 0")
        if self.obedience > 0 and self.layout_classes < 3:
            raise UsageError("vqvae.obedience: needs vqvae.layout_classes with at least two object classes")
        if self.layout_critic > 0 and self.layout_classes < 3:
            raise UsageError("vqvae.layout_critic: needs vqvae.layout_classes with at least two object classes")
        if self.class_adversary > 0 and self.layout_classes < 2:
            raise UsageError("vqvae.class_adversary: needs vqvae.layout_classes (the classes the codes must lose)")
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

    def _validate_quantizer(self) -> None:
        if self.quantizer not in ("vq", "fsq"):
            raise UsageError(f"vqvae.quantizer: one of vq, fsq (got {self.quantizer!r})")
        if self.quantizer == "vq":
            if self.fsq_levels:
                raise UsageError("vqvae.fsq_levels: only for vqvae.quantizer fsq")
            return
        try:
            levels = self.fsq_level_list
        except ValueError:
            raise UsageError(f"vqvae.fsq_levels: comma-separated integers, got {self.fsq_levels!r}") from None
        if not levels or min(levels) < 2:
            raise UsageError(f"vqvae.fsq_levels: at least one level, each >= 2 (got {self.fsq_levels!r})")
        if math.prod(levels) != self.num_embeddings:
            raise UsageError(f"vqvae.num_embeddings: must be {math.prod(levels)}, the product of vqvae.fsq_levels "
                             f"{self.fsq_levels}")
        if self.restart_dead_codes:
            raise UsageError("vqvae.restart_dead_codes: FSQ has no codebook to restart")


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
    # Priors: this share of the input tokens (each position independently) is replaced by uniformly
    # random tokens while training, the targets staying the true tokens, so that a prior cannot lower
    # its loss by recalling a training map from its earlier tokens alone (0: off, no random draws).
    token_corruption: float = 0.0
    # The codes prior: after training, this many steps of condition contrastive alignment against the
    # trained prior, its layouts with the object classes changed as the negatives, at
    # `alignment_learning_rate` (msgnet.training.prior_alignment; 0: off, the trained prior is saved).
    alignment_steps: int = 0
    alignment_learning_rate: float = 1e-4

    def validate(self, where: str = "train") -> None:
        _check_numbers(self, where, allow_zero=("iterations", "epochs", "max_minutes", "weight_decay", "adam_beta1", "grad_clip",
                                                 "seed", "val_samples", "ema_decay", "patience",
                                                 "val_every", "augment_copies", "image_every", "adherence_pairs",
                                                 "token_corruption", "alignment_steps"))
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
        if not 0.0 <= self.token_corruption < 1.0:
            raise UsageError(f"{where}.token_corruption: must be in [0, 1)")


def _check_numbers(config: Any, where: str, allow_zero: tuple[str, ...]) -> None:
    """Numbers must be finite; counts and sizes positive (those in ``allow_zero`` may be 0); none negative."""
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
