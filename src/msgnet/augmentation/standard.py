"""Standard augmentation of image + layout batches, on the device, one affine resampling per batch.

Which geometric transforms are valid is a property of the data, declared in dataset.json
("augmentations"): flips and 90° rotations suit microscopy and satellite tiles, not digits
(a flipped 2 is no digit, a rotated 6 is a 9). Every sample draws its own transform; flip,
90° rotation and small affine are composed into one matrix per sample, and MONAI's batched
``AffineTransform`` resamples the image (bilinear) and the layout (nearest) with the *same*
matrix, so the two can never disagree. Intensity jitter (contrast, brightness, gamma) is valid
for every dataset and touches the image only.

Random parameters are drawn from a ``torch.Generator`` on the batch's device, so a GPU run
needs no host round trip per step, and a seed fixes every draw.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import torch

GEOMETRIC = ("flip", "rotate90", "affine")


@dataclass(frozen=True)
class AugmentationSettings:
    """Ranges of the random transforms; ``geometric`` lists the transforms the dataset allows."""

    geometric: tuple[str, ...] = ()
    rotate_degrees: float = 15.0  # "affine": rotation in [-d, d]
    scale: float = 0.10  # "affine": zoom in [1 - s, 1 + s]
    translate: float = 0.06  # "affine": shift in [-t, t] of the image side
    contrast: float = 0.20  # intensity x in [1 - c, 1 + c] ...
    brightness: float = 0.10  # ... plus b in [-b, b] ...
    gamma: float = 0.20  # ... then x ** g with log g in [-log(1 + g), log(1 + g)]
    image_mode: str = "bilinear"  # how images are resampled (layouts: always nearest)
    # What fills the corners a rotation or zoom-out uncovers. "zeros" for a segmenter's batches;
    # a generator must not learn black corners that real images never have: it uses "reflection".
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        unknown = [g for g in self.geometric if g not in GEOMETRIC]
        if unknown:
            raise ValueError(f"unknown geometric augmentation {unknown[0]!r} (known: {', '.join(GEOMETRIC)})")

    @classmethod
    def for_dataset(cls, declared: Sequence[str] | None) -> "AugmentationSettings":
        """The dataset's declared transforms; none declared means intensity jitter only."""
        return cls(geometric=tuple(declared or ()))

    @classmethod
    def for_generator(cls, declared: Sequence[str] | None) -> "AugmentationSettings":
        """The declared transforms for training a generator: uncovered corners filled by reflection."""
        return cls(geometric=tuple(declared or ()), padding_mode="reflection")

    def describe(self) -> str:
        parts = []
        if "flip" in self.geometric:
            parts.append("random horizontal and vertical flips")
        if "rotate90" in self.geometric:
            parts.append("random 90° rotations")
        if "affine" in self.geometric:
            parts.append(f"affine (rotation ±{self.rotate_degrees:g}°, zoom ±{100 * self.scale:g}%, "
                         f"shift ±{100 * self.translate:g}%)")
        if not parts:
            parts.append("no geometric transform (the dataset declares none valid)")
        parts.append(f"intensity: contrast ±{100 * self.contrast:g}%, brightness ±{self.brightness:g}, "
                     f"gamma ±{100 * self.gamma:g}%")
        return "; ".join(parts) + " (MONAI AffineTransform, image bilinear / layout nearest, same matrix)"

    def to_json(self) -> dict:
        return asdict(self)


class StandardAugmentation:
    """Random geometric (dataset-declared) + intensity augmentation of (B, C, H, W) float batches."""

    def __init__(self, settings: AugmentationSettings, device: torch.device | str, seed: int):
        from monai.networks.layers import AffineTransform

        self.settings = settings
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        # normalized=True + reverse_indexing=False: theta acts on torch's [-1, 1] (x, y) grid;
        # align_corners=False keeps pixel centres on pixel centres under flips and 90° turns,
        # so those are exact permutations of pixels.
        common = dict(normalized=True, reverse_indexing=False, align_corners=False,
                      padding_mode=settings.padding_mode)
        self._warp_image = AffineTransform(mode=settings.image_mode, **common)
        self._warp_layout = AffineTransform(mode="nearest", **common)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator, device=self.device) * (high - low) + low

    def matrices(self, n: int) -> torch.Tensor:
        """(n, 3, 3) per-sample matrices: output grid coordinates -> input coordinates."""
        s = self.settings
        eye = torch.eye(3, device=self.device).expand(n, 3, 3).clone()
        m = eye
        if "flip" in s.geometric:
            fx = torch.where(self._uniform(n, 0, 1) < 0.5, -1.0, 1.0)
            fy = torch.where(self._uniform(n, 0, 1) < 0.5, -1.0, 1.0)
            flip = eye.clone()
            flip[:, 0, 0], flip[:, 1, 1] = fx, fy
            m = flip @ m
        if "rotate90" in s.geometric:
            k = torch.floor(self._uniform(n, 0, 4)).clamp_(max=3).long()
            cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=self.device)[k]  # exact, no cos(pi/2) residue
            sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=self.device)[k]
            m = _rotation(cos, sin) @ m
        if "affine" in s.geometric:
            angle = self._uniform(n, -1, 1) * math.radians(s.rotate_degrees)
            zoom = self._uniform(n, 1 - s.scale, 1 + s.scale)
            shift = torch.stack([self._uniform(n, -1, 1), self._uniform(n, -1, 1)], 1) * (2 * s.translate)
            aff = _rotation(torch.cos(angle), torch.sin(angle))
            aff[:, :2, :2] /= zoom[:, None, None]
            aff[:, :2, 2] = shift
            m = aff @ m
        return m

    def geometric(self, images: torch.Tensor, layouts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warp (B, C, H, W) float images and (B, H, W) integer layouts with one matrix per sample."""
        if not self.settings.geometric:
            return images, layouts
        theta = self.matrices(images.shape[0])
        return self._warp_image(images, theta), self._warp_layouts(layouts, theta)

    def geometric_images(self, images: torch.Tensor) -> torch.Tensor:
        """Warp (B, C, H, W) float images alone, drawing the same transforms ``geometric`` would."""
        if not self.settings.geometric:
            return images
        return self._warp_image(images, self.matrices(images.shape[0]))

    def geometric_layouts(self, layouts: torch.Tensor) -> torch.Tensor:
        """Warp (B, H, W) integer layouts alone, drawing the same transforms ``geometric`` would."""
        if not self.settings.geometric:
            return layouts
        return self._warp_layouts(layouts, self.matrices(layouts.shape[0]))

    def _warp_layouts(self, layouts: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        lay = self._warp_layout(layouts.unsqueeze(1).float(), theta)
        return lay.squeeze(1).round().to(layouts.dtype)

    def intensity(self, images: torch.Tensor) -> torch.Tensor:
        """Contrast, brightness and gamma per sample on [0, 1] images; the layout is untouched."""
        s = self.settings
        n = images.shape[0]
        shape = (n,) + (1,) * (images.dim() - 1)
        contrast = self._uniform(n, 1 - s.contrast, 1 + s.contrast).view(shape)
        brightness = self._uniform(n, -s.brightness, s.brightness).view(shape)
        log_g = math.log1p(s.gamma)
        gamma = torch.exp(self._uniform(n, -log_g, log_g)).view(shape)
        out = (images * contrast + brightness).clamp_(0.0, 1.0)
        return out.pow(gamma)

    def __call__(self, images: torch.Tensor, layouts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, layouts = self.geometric(images, layouts)
        return self.intensity(images), layouts


def geometric_copies(images: torch.Tensor | None, layouts: torch.Tensor, settings: AugmentationSettings, copies: int,
                     seed: int, batch_size: int = 256) -> Iterator[tuple[torch.Tensor | None, torch.Tensor]]:
    """``copies`` transformed versions of every (image, layout), copy after copy, in batches.

    A prior learns codes, and the codes of a transformed image are not a transform of the
    codes, so its augmented training data is made once, before training: this yields the
    batches to encode. ``images``: (N, C, H, W) uint8 or float in [0, 1], or None for layouts
    alone (the layout prior); yields float images in [0, 1] and layouts of ``layouts``' dtype,
    on ``layouts``' device. Copy ``k`` of image ``i`` comes at row ``k * N + i`` of the
    concatenation; one seed fixes all of them.
    """
    augmentation = StandardAugmentation(settings, layouts.device, seed)
    for _ in range(copies):
        for start in range(0, layouts.shape[0], batch_size):
            lay = layouts[start : start + batch_size]
            if images is None:
                yield None, augmentation.geometric_layouts(lay)
                continue
            x = images[start : start + batch_size].to(layouts.device)
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            yield augmentation.geometric(x, lay)


def _rotation(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) rotation matrices from per-sample cosines and sines."""
    r = torch.zeros(cos.shape[0], 3, 3, device=cos.device)
    r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1], r[:, 2, 2] = cos, -sin, sin, cos, 1.0
    return r
