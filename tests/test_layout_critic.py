"""The layout critic (msgnet.nn.layout_critic) and its place among the VQ-VAE's changed-class terms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from msgnet.config import VQVAEConfig
from msgnet.errors import UsageError
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.nn.class_modulation import layout_one_hot
from msgnet.nn.layout_critic import LayoutCritic


def _config(**changes) -> VQVAEConfig:
    base = dict(image_size=16, latent_size=4, hidden_dim=16, residual_dim=8, embedding_dim=8, num_embeddings=60,
                quantizer="fsq", fsq_levels="5,4,3", layout_classes=5)
    return VQVAEConfig(**{**base, **changes})


def _layouts(n: int) -> torch.Tensor:
    layout = torch.zeros(n, 16, 16, dtype=torch.long)
    layout[:, 2:8, 2:8], layout[:, 9:15, 8:14] = 1, 3
    return layout


def test_critic_needs_object_classes_and_is_built_only_when_asked():
    with pytest.raises(UsageError, match="vqvae.layout_critic"):
        VQVAEConfig(layout_classes=2, layout_critic=0.1).validate()
    with pytest.raises(UsageError, match="vqvae.layout_critic"):
        VQVAEConfig(layout_critic=-0.1).validate()
    assert DoublePathVQVAE(_config()).layout_critic is None
    model = DoublePathVQVAE(_config(layout_critic=0.1))
    assert isinstance(model.layout_critic, LayoutCritic)
    assert model.layout_critic.net[0].in_channels == 1 + 5  # the image and the layout's one-hot map
    assert model.layout_critic.net[0].out_channels == 64  # the default width: the critic as first measured
    narrow = DoublePathVQVAE(_config(layout_critic=0.1, layout_critic_width=16)).layout_critic
    assert [m.out_channels for m in narrow.net if isinstance(m, nn.Conv2d)] == [16, 32, 32, 1]
    with pytest.raises(UsageError, match="vqvae.layout_critic_width"):
        VQVAEConfig(layout_classes=5, layout_critic=0.1, layout_critic_width=0).validate()


def test_critic_loss_trains_the_critic_only_and_decoder_term_reaches_the_image_only():
    torch.manual_seed(0)
    critic = LayoutCritic(1, 5, width=8)
    real = torch.rand(2, 1, 16, 16) * 2 - 1
    fake = (torch.rand(2, 1, 16, 16) * 2 - 1).requires_grad_(True)
    hot, other = layout_one_hot(_layouts(2), 5), layout_one_hot(_layouts(2).flip(-1), 5)
    loss, accuracy = critic.critic_loss(real, hot, fake, other, other)
    loss.backward()
    assert fake.grad is None  # the critic's loss does not move the decoded image
    # Every weight learns (the last bias's gradient cancels while every score is inside the hinge: -1 + 2 x 0.5).
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters() if p.dim() > 1)
    assert 0.0 <= float(accuracy) <= 1.0
    critic.zero_grad()
    critic.decoder_loss(fake, other).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())  # ... and the decoder's term does not move the critic


def test_critic_learns_to_tell_a_layout_drawn_from_one_that_is_not():
    """Real images are the layout's objects drawn bright; fakes are blank, and real images under a
    changed layout are fakes too: after training it scores the three apart."""
    torch.manual_seed(0)
    layout = _layouts(8)
    changed = layout.flip(-1)
    real = torch.where(layout > 0, 1.0, -1.0)[:, None]
    blank = torch.full_like(real, -1.0)
    critic = LayoutCritic(1, 5, width=8)
    hot, changed_hot = layout_one_hot(layout, 5), layout_one_hot(changed, 5)
    optimiser = torch.optim.Adam(critic.parameters(), lr=2e-3, betas=(0.5, 0.9))
    for _ in range(150):
        loss, _ = critic.critic_loss(real, hot, blank, changed_hot, changed_hot)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        assert critic(real, hot).mean() > 0 > critic(real, changed_hot).mean()
        assert critic(blank, changed_hot).mean() < 0


def test_vqvae_with_critic_logs_its_accuracy_and_keeps_the_codes_out_of_it():
    torch.manual_seed(0)
    model = DoublePathVQVAE(_config(layout_critic=0.5)).train()
    for p in model.modulation_a.parameters():  # a decoder that depends on the layout, as after training
        nn.init.normal_(p, std=0.5)
    x, layout = torch.rand(3, 1, 16, 16), _layouts(3)
    out = model(x, layout)
    assert out.critic_accuracy is not None and out.obedience_accuracy is None  # no reader without obedience
    model.zero_grad()
    out.auxiliary_loss.backward()
    assert all(p.grad is None or not p.grad.any() for p in model.enc_out_a.parameters())  # codes detached
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.modulation_a.parameters())
    assert all(p.grad is not None for p in model.layout_critic.parameters())
    # In evaluation no term is computed: the loss is reconstruction + codebook terms only.
    model.eval()
    with torch.no_grad():
        out = model(x, layout)
    assert out.auxiliary_loss is None and out.critic_accuracy is None
    assert torch.allclose(out.loss, out.reconstruction_loss + out.codebook_loss + out.commitment_loss)
    assert F.mse_loss(out.reconstruction * 2 - 1, x * 2 - 1).item() == pytest.approx(out.reconstruction_loss.item())
