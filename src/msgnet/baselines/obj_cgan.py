"""The paper's second baseline, obj-cGAN (Hinz, Heinrich & Wermter, ICLR 2019), in PyTorch.

"Generating multiple objects at spatially distinct locations": a conditional GAN told the
class and bounding box of every object. Both networks have two pathways:

* a **global pathway** over the whole image, which sees the layout as the objects' one-hot
  labels painted into their boxes on a coarse grid (plus, in the generator, the noise);
* an **object pathway** applied to each object separately: the generator turns (label,
  noise) into a small feature patch and a spatial transformer places it into the object's
  box (zero everywhere else); the discriminator cuts each box out of the image with the
  inverse transform, reads it together with the label, and puts its features back into
  the box. The pathways' features are concatenated at 1/4 of the image size.

What follows the original and what does not:

* architecture of the Multi-MNIST model (DCGAN-style, upsampling + 3x3 convolutions with
  batch norm in the generator, strided convolutions in the discriminator), sized from a
  preset's VQ-VAE width (:meth:`ObjCGANConfig.from_preset`) instead of fixed;
* the standard (non-saturating) conditional GAN loss of the original, Adam with beta1 0.5;
* **spectral normalisation** on every discriminator layer, where the paper leaves the
  stability of training open (the original uses none on Multi-MNIST);
* both networks are updated in the *same* optimiser step (simultaneous gradient descent),
  not alternately, so that the GAN trains through msgnet's one training loop: the
  generator's loss is computed through a discriminator whose parameters are excluded from
  autograd for that pass (:meth:`ObjCGAN.losses`), so each network gets only its own gradient.

Objects are read from the class layout as the connected components of each class
(:func:`msgnet.layouts.layout_to_objects`), at most ``max_objects`` per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from msgnet.config import Preset
from msgnet.errors import UsageError
from msgnet.layouts import layout_to_objects
from msgnet.models.pretrained import PretrainedMixin

PATCH = 16  # side of the object pathway's feature patches (generator and discriminator)


@dataclass(frozen=True)
class ObjCGANConfig:
    """Sizes of obj-cGAN. ``num_classes`` counts the background (class 0 = no object)."""

    image_size: int = 64
    in_channels: int = 1
    num_classes: int = 11
    max_objects: int = 8
    noise_dim: int = 64
    width: int = 64  # channels at 1/4 resolution; the global pathway's 4x4 start has 4x as many

    def validate(self) -> None:
        s = self.image_size
        if s < 16 or s & (s - 1):
            raise UsageError(f"obj-cgan: image_size must be a power of two >= 16, got {s}")
        for name in ("in_channels", "max_objects", "noise_dim", "width"):
            if getattr(self, name) < 1:
                raise UsageError(f"obj-cgan: {name} must be positive")
        if self.num_classes < 2:
            raise UsageError("obj-cgan: num_classes must be at least 2 (background and one object class)")

    @classmethod
    def from_preset(cls, preset: Preset) -> "ObjCGANConfig":
        """obj-cGAN for ``preset``'s images and layout classes, as wide as its VQ-VAE."""
        v = preset.vqvae
        return cls(image_size=v.image_size, in_channels=v.in_channels, num_classes=preset.layout_prior.num_classes,
                   width=v.hidden_dim)


def objects_of_layouts(layouts: np.ndarray | torch.Tensor, max_objects: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (N, K) int64 (0 = empty slot) and boxes (N, K, 4) as (x, y, w, h) fractions of the image.

    One object per connected component of each class (largest first when there are more than K).
    """
    layouts = np.asarray(layouts.cpu() if isinstance(layouts, torch.Tensor) else layouts)
    n, h, w = layouts.shape
    labels = torch.zeros(n, max_objects, dtype=torch.long)
    boxes = torch.zeros(n, max_objects, 4)
    for i in range(n):
        objs = sorted(layout_to_objects(layouts[i]), key=lambda o: -o.bbox[2] * o.bbox[3])[:max_objects]
        for k, o in enumerate(objs):
            x, y, bw, bh = o.bbox
            labels[i, k] = o.category_id
            boxes[i, k] = torch.tensor([x / w, y / h, bw / w, bh / h])
    return labels, boxes


def paint_boxes(labels: torch.Tensor, boxes: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """The layout as the global pathways see it: (N, num_classes, size, size), each object's
    one-hot label painted into its box (box cells covered by any part of the box)."""
    n, k = labels.shape
    coords = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size
    x0, y0 = boxes[..., 0, None], boxes[..., 1, None]
    x1, y1 = x0 + boxes[..., 2, None], y0 + boxes[..., 3, None]
    half = 0.5 / size
    inside_x = (coords >= x0 - half) & (coords <= x1 + half)  # (N, K, size)
    inside_y = (coords >= y0 - half) & (coords <= y1 + half)
    mask = (inside_y[..., :, None] & inside_x[..., None, :]).to(boxes.dtype)  # (N, K, size, size)
    mask = mask * (labels > 0).to(boxes.dtype)[..., None, None]
    one_hot = F.one_hot(labels, num_classes).to(boxes.dtype)  # (N, K, C)
    return torch.einsum("nkc,nkhw->nchw", one_hot, mask).clamp(max=1.0)


def _box_mask(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(N*K, 1, size, size): 1 inside each box (cells whose centre lies in it), 0 outside."""
    coords = (torch.arange(size, device=boxes.device, dtype=boxes.dtype) + 0.5) / size
    b = boxes.reshape(-1, 4)
    in_x = (coords >= b[:, 0, None]) & (coords <= (b[:, 0] + b[:, 2])[:, None])
    in_y = (coords >= b[:, 1, None]) & (coords <= (b[:, 1] + b[:, 3])[:, None])
    return (in_y[:, :, None] & in_x[:, None, :]).to(boxes.dtype)[:, None]


def _box_geometry(b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Width, height (at least 1e-3, so empty slots stay invertible) and centre of (M, 4) x, y, w, h boxes."""
    w, h = b[:, 2].clamp_min(1e-3), b[:, 3].clamp_min(1e-3)
    return w, h, b[:, 0] + w / 2, b[:, 1] + h / 2


def place_in_boxes(patches: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Spatial transformer: (N*K, C, p, p) patches stretched into their boxes of a size x size map.

    Zero outside each box, exactly (bilinear sampling alone would bleed a cell past the edge).
    """
    b = boxes.reshape(-1, 4).clamp_min(0)
    w, h, cx, cy = _box_geometry(b)
    theta = torch.zeros(b.shape[0], 2, 3, device=b.device, dtype=patches.dtype)
    # Output coordinate u in [-1, 1] maps to patch coordinate (u - (2c - 1)) / w.
    theta[:, 0, 0], theta[:, 0, 2] = 1 / w, -(2 * cx - 1) / w
    theta[:, 1, 1], theta[:, 1, 2] = 1 / h, -(2 * cy - 1) / h
    grid = F.affine_grid(theta, [b.shape[0], patches.shape[1], size, size], align_corners=False)
    placed = F.grid_sample(patches, grid, align_corners=False, padding_mode="zeros")
    return placed * _box_mask(boxes, size).to(placed.dtype)


def cut_out_boxes(images: torch.Tensor, boxes: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse spatial transformer: every box of (N, C, S, S) images resampled to (N*K, C, patch, patch)."""
    n, k = boxes.shape[:2]
    b = boxes.reshape(-1, 4)
    w, h, cx, cy = _box_geometry(b)
    theta = torch.zeros(n * k, 2, 3, device=b.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = w, 2 * cx - 1
    theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
    grid = F.affine_grid(theta, [n * k, images.shape[1], patch, patch], align_corners=False)
    source = images.repeat_interleave(k, dim=0)
    return F.grid_sample(source, grid, align_corners=False, padding_mode="zeros")


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1),
                         nn.BatchNorm2d(c_out), nn.ReLU())


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(0.2))


class ObjCGANGenerator(nn.Module):
    """(noise (N, Z), labels (N, K), boxes (N, K, 4)) -> images (N, C, S, S) in [0, 1]."""

    def __init__(self, config: ObjCGANConfig) -> None:
        super().__init__()
        c, w, s = config, config.width, config.image_size
        self.config = config
        self.quarter = s // 4
        start_ups = int(np.log2(self.quarter // 4))  # 4x4 -> S/4
        self.global_in = nn.Linear(c.noise_dim, 4 * w * 16)
        self.global_layout = nn.Conv2d(c.num_classes, w, 3, padding=1)
        ups, width = [], 4 * w + w
        for _ in range(start_ups):
            ups.append(_up(width, 2 * w))
            width = 2 * w
        self.global_up = nn.Sequential(*ups) if ups else nn.Identity()
        self.global_width = width
        # Object pathway: (label one-hot, noise) -> 4x4 -> PATCH x PATCH features.
        self.object_in = nn.Linear(c.num_classes + c.noise_dim, w * 16)
        self.object_up = nn.Sequential(_up(w, w), _up(w, w))
        out_ups, width = [], self.global_width + w
        for _ in range(2):  # S/4 -> S
            out_ups.append(_up(width, w))
            width = w
        self.out_up = nn.Sequential(*out_ups)
        self.to_image = nn.Conv2d(w, c.in_channels, 3, padding=1)

    def object_features(self, noise: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The object pathway alone: (N, width, S/4, S/4), zero outside every box and for empty slots."""
        n, k = labels.shape
        c = self.config
        one_hot = F.one_hot(labels, c.num_classes).to(noise.dtype)
        per_object = torch.cat([one_hot, noise[:, None].expand(n, k, -1)], dim=2).reshape(n * k, -1)
        x = F.relu(self.object_in(per_object)).view(n * k, c.width, 4, 4)
        patches = self.object_up(x)
        placed = place_in_boxes(patches, boxes, self.quarter).view(n, k, c.width, self.quarter, self.quarter)
        present = (labels > 0).to(placed.dtype)[..., None, None, None]
        return (placed * present).sum(1)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        n = noise.shape[0]
        c = self.config
        layout = paint_boxes(labels, boxes, c.num_classes, 4)
        g = F.relu(self.global_in(noise)).view(n, 4 * c.width, 4, 4)
        g = torch.cat([g, F.relu(self.global_layout(layout))], 1)
        g = self.global_up(g)
        x = torch.cat([g, self.object_features(noise, labels, boxes)], 1)
        return torch.sigmoid(self.to_image(self.out_up(x)))


class ObjCGANDiscriminator(nn.Module):
    """(images (N, C, S, S), labels, boxes) -> one logit per image (real > 0)."""

    def __init__(self, config: ObjCGANConfig) -> None:
        super().__init__()
        c, w = config, config.width
        self.config = config
        self.quarter = config.image_size // 4
        self.global_down = nn.Sequential(_down(c.in_channels + c.num_classes, w // 2), _down(w // 2, w))  # S -> S/4
        self.object_path = nn.Sequential(spectral_norm(nn.Conv2d(c.in_channels + c.num_classes, w, 3, padding=1)),
                                         nn.LeakyReLU(0.2),
                                         spectral_norm(nn.Conv2d(w, w, 3, padding=1)), nn.LeakyReLU(0.2))
        downs, width, size = [], 2 * w, self.quarter
        while size > 4:
            downs.append(_down(width, 2 * w))
            width, size = 2 * w, size // 2
        self.joint_down = nn.Sequential(*downs)
        self.head = spectral_norm(nn.Linear(width * 16, 1))

    def forward(self, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        n, k = labels.shape
        c = self.config
        layout = paint_boxes(labels, boxes, c.num_classes, c.image_size).to(images.dtype)
        g = self.global_down(torch.cat([images * 2 - 1, layout], 1))
        crops = cut_out_boxes(images * 2 - 1, boxes, PATCH)
        one_hot = F.one_hot(labels, c.num_classes).to(images.dtype).reshape(n * k, -1, 1, 1)
        o = self.object_path(torch.cat([crops, one_hot.expand(-1, -1, PATCH, PATCH)], 1))
        o = place_in_boxes(o, boxes, self.quarter).view(n, k, -1, self.quarter, self.quarter)
        o = (o * (labels > 0).to(o.dtype)[..., None, None, None]).sum(1)
        x = self.joint_down(torch.cat([g, o], 1))
        return self.head(x.flatten(1)).squeeze(1)


class ObjCGAN(PretrainedMixin, nn.Module):
    """Generator and discriminator together, so that one module trains (and saves) the pair."""

    kind = "obj-cgan"
    config_class = ObjCGANConfig

    def __init__(self, config: ObjCGANConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.generator = ObjCGANGenerator(config)
        self.discriminator = ObjCGANDiscriminator(config)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
                noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(discriminator loss, generator loss) of one batch; see :meth:`losses`."""
        return self.losses(images, labels, boxes, noise)

    def losses(self, images: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
               noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-saturating GAN losses; their sum gives each network exactly its own gradient.

        The discriminator's loss sees the fake images detached (no gradient to the generator);
        the generator's loss runs the discriminator with its parameters' ``requires_grad`` off
        for that pass only (no gradient to the discriminator).
        """
        fake = self.generator(noise, labels, boxes)
        d_real = self.discriminator(images, labels, boxes)
        d_fake = self.discriminator(fake.detach(), labels, boxes)
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        params = [p for p in self.discriminator.parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            g_loss = F.softplus(-self.discriminator(fake, labels, boxes)).mean()
        finally:
            for p in params:
                p.requires_grad_(True)
        return d_loss, g_loss

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, boxes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (N, C, S, S) in [0, 1] for these objects, noise drawn from ``generator`` (on the CPU)."""
        noise = torch.randn(labels.shape[0], self.config.noise_dim, generator=generator)
        device = next(self.parameters()).device
        return self.generator(noise.to(device), labels.to(device), boxes.to(device))
