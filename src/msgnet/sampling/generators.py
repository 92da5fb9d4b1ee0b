"""What turns a batch of layouts into images, one class per generator a run can hold.

Every generator answers the same protocol (:class:`LayoutToImage`), so sampling never asks
which method a run trained: MSGNet (2H x W codes given the stacked layout, decoded by the
double-path VQ-VAE), the cVQ-VAE baseline (H x W codes given the layout, a decoder that sees
the layout) and the obj-cGAN baseline (noise and the layout's objects, no prior).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from msgnet.models.latents import split_codes, stack_layout

Sampler = Callable[..., torch.Tensor]  # an autoregressive sampler (msgnet.sampling.cached and friends)


class LayoutToImage(Protocol):
    """Images for layouts: ``full`` (n, H, W) class maps at image size, ``latent`` the same at the
    generator's latent grid (None when it does not condition on one); image k's randomness comes from
    ``generators[k]`` alone, so it does not depend on the images drawn beside it."""

    method: str
    device: torch.device

    @property
    def latent_hw(self) -> tuple[int, int] | None:
        """The latent grid the generator conditions on (None: it takes the full-size layout only)."""
        ...

    @property
    def guidable(self) -> bool | None:
        """Whether classifier-free guidance is possible (a prior that learned the "no layout" case);
        None where it does not apply (a generator without a prior ignores it)."""
        ...

    def images(self, full: np.ndarray, latent: torch.Tensor | None, generators: Sequence[torch.Generator],
               sample: Sampler, rule: dict) -> torch.Tensor:
        """(n, C, H, W) images in [0, 1]."""
        ...

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        """Its models by the name of the stage that trains them (msgnet.run_dir.STAGES): what an export saves."""
        ...


@dataclass
class MSGNetImages:
    """The paper's generator: the latent PixelSNAIL draws both code maps given the stacked layout,
    the double-path VQ-VAE decodes them."""

    vqvae: torch.nn.Module
    prior: torch.nn.Module
    device: torch.device
    method: str = "msgnet"

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.vqvae.config.latent_size, self.vqvae.config.latent_size

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        return {"vqvae": self.vqvae, "prior": self.prior}

    @property
    def guidable(self) -> bool:
        return bool(self.prior.config.guidable)

    def images(self, full: np.ndarray, latent: torch.Tensor | None, generators: Sequence[torch.Generator],
               sample: Sampler, rule: dict) -> torch.Tensor:
        codes = sample(self.prior, len(full), condition=stack_layout(_given(latent)).to(self.device),
                       generator=generators, batch_size=len(full), **rule)
        codes_attn, codes_conv = split_codes(codes.to(self.device))
        # A decoder told the layout draws the full-size layout the codes were drawn for.
        layout = torch.as_tensor(np.asarray(full, dtype=np.int64)).to(self.device) if self.vqvae.told_layout else None
        return self.vqvae.decode_indices(codes_attn, codes_conv, layout)


@dataclass
class CVQVAEImages:
    """The cVQ-VAE baseline: H x W codes given the layout, decoded by a decoder that sees the layout."""

    model: torch.nn.Module
    prior: torch.nn.Module
    device: torch.device
    method: str = "cvqvae"

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.model.config.latent_size, self.model.config.latent_size

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        return {"cvqvae": self.model, "cvqvae-prior": self.prior}

    @property
    def guidable(self) -> bool:
        return bool(self.prior.config.guidable)

    def images(self, full: np.ndarray, latent: torch.Tensor | None, generators: Sequence[torch.Generator],
               sample: Sampler, rule: dict) -> torch.Tensor:
        codes = sample(self.prior, len(full), condition=_given(latent).to(self.device), generator=generators,
                       batch_size=len(full), **rule)
        layout = torch.as_tensor(np.asarray(full, dtype=np.int64)).to(self.device)
        return self.model.decode_indices(codes.to(self.device), layout)


@dataclass
class ObjCGANImages:
    """The obj-cGAN baseline: the layout's objects (class, box) and noise; no prior, no guidance."""

    model: torch.nn.Module
    device: torch.device
    method: str = "obj-cgan"

    @property
    def latent_hw(self) -> None:
        return None  # it conditions on the layout's objects, not on a latent grid

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        return {"obj-cgan": self.model}

    @property
    def guidable(self) -> None:
        return None  # guidance does not apply: nothing to guide, nothing to refuse

    def images(self, full: np.ndarray, latent: torch.Tensor | None, generators: Sequence[torch.Generator],
               sample: Sampler, rule: dict) -> torch.Tensor:
        from msgnet.baselines.obj_cgan import objects_of_layouts

        labels, boxes = objects_of_layouts(full, self.model.config.max_objects)
        # Each image's noise from its own generator (what ObjCGAN.generate draws for one image), so an
        # image does not depend on the batch it is drawn in.
        noise = torch.cat([torch.randn(1, self.model.config.noise_dim, generator=g) for g in generators])
        with torch.no_grad():
            return self.model.generator(noise.to(self.device), labels.to(self.device), boxes.to(self.device))


def move_generator(generator: LayoutToImage, device: torch.device) -> None:
    """Move every model a generator holds to ``device``."""
    for module in generator.stage_modules().values():
        module.to(device)
    generator.device = device


def _given(latent: torch.Tensor | None) -> torch.Tensor:
    assert latent is not None, "a generator with a latent grid is given its layouts at that grid"
    return latent
