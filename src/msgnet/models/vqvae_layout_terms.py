"""The training terms of a VQ-VAE whose decoder is told the layout, computed on one changed-class decode.

Real codes carry their objects' classes, so a decoder told the layout can still draw what the codes
spell. Both terms here decode the batch's real codes (detached) under the same layout with every
object's class changed, and ask that the layout win:

- the **obedience loss** (``vqvae.obedience``, :mod:`msgnet.nn.obedience`): a class reader trained on
  real images must read the changed classes;
- the **layout critic** (``vqvae.layout_critic``, :mod:`msgnet.nn.layout_critic`): a patch critic that
  keeps learning must take the decoded image for a real image of the changed layout, so texture that
  merely reads as the class does not pass.

Codes stay detached in both: were the codes to learn from these terms, they would empty themselves of
everything (measured: both paths fell to 1-3 codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from msgnet.layouts.classes import permute_object_classes
from msgnet.layouts.resize import downsample_layout
from msgnet.nn.class_modulation import layout_one_hot
from msgnet.nn.obedience import object_cell_loss


@dataclass
class ChangedClassTerms:
    """The terms' summed loss (critic's and reader's own losses included) and what they read."""

    loss: torch.Tensor
    reader_accuracy: torch.Tensor | None = None  # the class reader on real images
    obedience_accuracy: torch.Tensor | None = None  # ... on real codes decoded under changed classes
    critic_accuracy: torch.Tensor | None = None  # the critic's share of pairs scored on the right side


def changed_class_terms(
    model: Any, x: torch.Tensor, qa: torch.Tensor, qc: torch.Tensor, layout: torch.Tensor | None
) -> ChangedClassTerms | None:
    """``model``: a DoublePathVQVAE (typed loosely: it imports this module). Both terms for images ``x`` in [0, 1], their quantised maps and layouts, while training; None when
    neither is on (then no random number is drawn and the model trains as before)."""
    if (model.class_reader is None and model.layout_critic is None) or layout is None or not model.training:
        return None
    k = model.config.layout_classes
    other = permute_object_classes(layout, k, None, where="vqvae.layout_classes")
    drawn = model.decode(qa.detach(), qc.detach(), other)
    real = x * 2.0 - 1.0
    terms = ChangedClassTerms(loss=drawn.new_zeros(()).float())
    if model.class_reader is not None:
        _add_obedience(model, terms, real, drawn, layout, other)
    if model.layout_critic is not None:
        real_hot, other_hot = layout_one_hot(layout, k), layout_one_hot(other, k)
        critic_loss, terms.critic_accuracy = model.layout_critic.critic_loss(real, real_hot, drawn, other_hot, other_hot)
        decoder_loss = model.layout_critic.decoder_loss(drawn, other_hot)
        terms.loss = terms.loss + critic_loss + model.config.layout_critic * decoder_loss
    return terms


def _add_obedience(
    model: Any, terms: ChangedClassTerms, real: torch.Tensor, drawn: torch.Tensor,
    layout: torch.Tensor, other: torch.Tensor,
) -> None:
    """The reader's loss on real images + weight x the decoder's loss under changed classes."""
    reader = model.class_reader
    assert reader is not None
    k, grid = model.config.layout_classes, model.latent_shape
    reader_loss, terms.reader_accuracy = object_cell_loss(reader(real), downsample_layout(layout, grid, k))
    other_cells = downsample_layout(other, grid, k)
    obey_loss, terms.obedience_accuracy = object_cell_loss(reader.read_frozen(drawn), other_cells)
    if model.config.obedience_realism:
        # The reader also learns to tell these decoded objects apart (class k, "decoded"), so texture that
        # merely reads as the class no longer satisfies it: the objects must look like real ones too.
        fake_loss, _ = object_cell_loss(reader(drawn.detach()), torch.where(other_cells > 0, k, 0))
        reader_loss = reader_loss + fake_loss
    terms.loss = terms.loss + reader_loss + model.config.obedience * obey_loss
