"""The obedience loss's class reader: a blurred reader sees shapes, not pixel texture."""

from __future__ import annotations

import pytest
import torch

from msgnet.config import VQVAEConfig
from msgnet.errors import UsageError
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.nn.obedience import ClassReader, gaussian_kernel


def _checkerboard(size: int) -> torch.Tensor:
    rows = torch.arange(size).view(-1, 1)
    cols = torch.arange(size).view(1, -1)
    return (((rows + cols) % 2).float() * 2 - 1).view(1, 1, size, size)


def test_gaussian_kernel_is_normalised_symmetric_and_three_sigma_wide():
    kernel = gaussian_kernel(2.0)
    assert kernel.shape == (13,)
    assert torch.isclose(kernel.sum(), torch.tensor(1.0))
    assert torch.equal(kernel, kernel.flip(0))
    assert int(kernel.argmax()) == 6


def test_blurred_reader_ignores_pixel_texture_that_moves_a_sharp_one():
    torch.manual_seed(0)
    sharp = ClassReader(1, 5, downsamples=2)
    blurred = ClassReader(1, 5, downsamples=2, blur=2.0)
    blurred.load_state_dict(sharp.state_dict())  # same weights: only the blur differs
    image = torch.rand(2, 1, 32, 32) * 2 - 1
    texture = 0.5 * _checkerboard(32)
    sharp_change = (sharp(image + texture) - sharp(image)).abs().mean()
    blurred_change = (blurred(image + texture) - blurred(image)).abs().mean()
    assert blurred_change < 0.05 * sharp_change


def test_blur_keeps_a_constant_image_and_off_means_no_blur():
    reader = ClassReader(1, 3, downsamples=1, blur=1.5)
    flat = torch.full((1, 1, 16, 16), 0.3)
    assert torch.allclose(reader.low_pass(flat), flat, atol=1e-6)
    image = torch.rand(1, 1, 16, 16)
    assert ClassReader(1, 3, downsamples=1).low_pass(image) is image


def test_reader_blur_leaves_saved_weights_alone_and_needs_the_obedience_loss():
    base = dict(image_size=16, latent_size=4, hidden_dim=8, residual_dim=4, embedding_dim=4, num_embeddings=8,
                layout_classes=4, obedience=0.02)
    sharp = DoublePathVQVAE(VQVAEConfig(**base))
    blurred = DoublePathVQVAE(VQVAEConfig(**base, reader_blur=1.0))
    assert set(sharp.state_dict()) == set(blurred.state_dict())
    with pytest.raises(UsageError, match="vqvae.reader_blur"):
        VQVAEConfig(**{**base, "obedience": 0.0}, reader_blur=1.0).validate()
    with pytest.raises(UsageError, match="vqvae.reader_blur"):
        VQVAEConfig(**base, reader_blur=-1.0).validate()
