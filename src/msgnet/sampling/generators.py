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
    def latent_hw(self) -> tuple[int, int] | None: ...  # None: it takes the full-size layout only

    # Whether classifier-free guidance is possible (a prior that learned the "no layout" case); None where it does
    # not apply (a generator without a prior ignores it).
    @property
    def guidable(self) -> bool | None: ...

    def images(self, full: np.ndarray, latent: torch.Tensor | None, generators: Sequence[torch.Generator],
               sample: Sampler, rule: dict) -> torch.Tensor: ...  # (n, C, H, W) in [0, 1]

    def stage_modules(self) -> dict[str, torch.nn.Module]: ...  # by the name of the stage that trains them


@dataclass
class _CodesImages:
    """A generator whose codes prior draws codes given the layout at ``model``'s latent grid."""

    model: torch.nn.Module
    prior: torch.nn.Module
    device: torch.device

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.model.config.latent_size, self.model.config.latent_size

    @property
    def guidable(self) -> bool:
        return bool(self.prior.config.guidable)

    def _codes(self, condition: torch.Tensor | None, generators: Sequence[torch.Generator], sample: Sampler,
               rule: dict) -> torch.Tensor:
        assert condition is not None, "a generator with a latent grid is given its layouts at that grid"
        return sample(self.prior, len(condition), condition=condition.to(self.device), generator=generators,
                      batch_size=len(condition), **rule).to(self.device)


@dataclass
class MSGNetImages(_CodesImages):
    """The paper's generator: the latent PixelSNAIL draws both code maps given the stacked layout,
    the double-path VQ-VAE (``model``) decodes them."""

    method: str = "msgnet"

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        return {"vqvae": self.model, "prior": self.prior}

    def images(self, full: np.ndarray, latent: torch.Tensor | None, generators: Sequence[torch.Generator],
               sample: Sampler, rule: dict) -> torch.Tensor:
        codes_attn, codes_conv = split_codes(self._codes(None if latent is None else stack_layout(latent),
                                                         generators, sample, rule))
        # A decoder told the layout draws the full-size layout the codes were drawn for.
        layout = torch.as_tensor(np.asarray(full, dtype=np.int64)).to(self.device) if self.model.told_layout else None
        return self.model.decode_indices(codes_attn, codes_conv, layout)


@dataclass
class CVQVAEImages(_CodesImages):
    """The cVQ-VAE baseline: H x W codes given the layout, decoded by a decoder that sees the layout."""

    method: str = "cvqvae"

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        return {"cvqvae": self.model, "cvqvae-prior": self.prior}

    def images(self, full: np.ndarray, latent: torch.Tensor | None, generators: Sequence[torch.Generator],
               sample: Sampler, rule: dict) -> torch.Tensor:
        codes = self._codes(latent, generators, sample, rule)
        return self.model.decode_indices(codes, torch.as_tensor(np.asarray(full, dtype=np.int64)).to(self.device))


@dataclass
class ObjCGANImages:
    """The obj-cGAN baseline: the layout's objects (class, box) and noise; no prior, no guidance."""

    model: torch.nn.Module
    device: torch.device
    method: str = "obj-cgan"
    latent_hw = None  # it conditions on the layout's objects, not on a latent grid
    guidable = None  # guidance does not apply: nothing to guide, nothing to refuse

    def stage_modules(self) -> dict[str, torch.nn.Module]:
        return {"obj-cgan": self.model}

    def images(self, full: np.ndarray, latent: torch.Tensor | None, generators: Sequence[torch.Generator],
               sample: Sampler, rule: dict) -> torch.Tensor:
        from msgnet.baselines.obj_cgan import objects_of_layouts

        labels, boxes = objects_of_layouts(full, self.model.config.max_objects)
        # Each image's noise from its own generator (what ObjCGAN.generate draws for one image), so an
        # image does not depend on the batch it is drawn in.
        noise = torch.cat([torch.randn(1, self.model.config.noise_dim, generator=g) for g in generators])
        with torch.no_grad():
            return self.model.generator(noise.to(self.device), labels.to(self.device), boxes.to(self.device))
