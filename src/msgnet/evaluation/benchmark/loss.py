"""The U-Net's loss with two knobs for generated pairs: a weight per sample and ignored pixels.

It is MONAI's Dice + cross-entropy (softmax, one-hot targets, background included): with every
weight 1 and no pixel ignored it equals ``monai.losses.DiceCELoss`` (tested). Generated samples
get ``generated_weight`` in both terms — the cross-entropy is a weighted mean over pixels, the
Dice term a weighted mean over samples — so a weight of 0 gives exactly the loss of the real
samples alone. Pixels labelled :data:`IGNORE` (left out by the pixel filter) count in neither
term: MONAI's ``MaskedDiceLoss`` masks them out of the Dice sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255  # layout value of a pixel left out of the loss (never a class: datasets hold < 255)


class PairLoss:
    """Dice + CE over a batch whose samples are real (weight 1) or generated (``generated_weight``)."""

    def __init__(self, generated_weight: float = 1.0, ignores_pixels: bool = False):
        from monai.losses import DiceLoss, MaskedDiceLoss

        self.generated_weight = float(generated_weight)
        self.ignores_pixels = ignores_pixels  # known per training, so no step asks the device whether any is
        self._dice = DiceLoss(to_onehot_y=True, softmax=True, reduction="none")
        self._masked_dice = MaskedDiceLoss(to_onehot_y=True, softmax=True, reduction="none")

    def __call__(self, logits: torch.Tensor, layouts: torch.Tensor,
                 generated: torch.Tensor | None = None) -> torch.Tensor:
        """``logits`` (B, C, H, W), ``layouts`` (B, H, W) long (IGNORE allowed), ``generated`` (B,) bool."""
        b = logits.shape[0]
        sample_w = torch.ones(b, device=logits.device, dtype=torch.float32)
        if generated is not None and self.generated_weight != 1.0:
            sample_w = torch.where(generated, torch.full_like(sample_w, self.generated_weight), sample_w)
        ignored = layouts == IGNORE if self.ignores_pixels else None
        target = layouts if ignored is None else layouts.masked_fill(ignored, 0)
        pixel_w = sample_w.view(b, 1, 1).expand_as(target)
        if ignored is not None:
            pixel_w = pixel_w * (~ignored)
        ce = F.cross_entropy(logits.float(), target, reduction="none")
        ce_term = (ce * pixel_w).sum() / pixel_w.sum().clamp_min(1e-12)
        if ignored is not None:
            dice = self._masked_dice(logits.float(), target.unsqueeze(1), mask=(~ignored).unsqueeze(1).float())
        else:
            dice = self._dice(logits.float(), target.unsqueeze(1))
        per_sample = dice.flatten(1).mean(1)  # mean over classes, as DiceCELoss's "mean" reduction
        dice_term = (per_sample * sample_w).sum() / sample_w.sum().clamp_min(1e-12)
        return dice_term + ce_term


@torch.no_grad()
def pixel_losses(model: torch.nn.Module, images: torch.Tensor, layouts: torch.Tensor,
                 batch_size: int = 128) -> torch.Tensor:
    """Per-pixel cross-entropy (N, H, W) of ``model`` on uint8 images (N, C, H, W) against their layouts."""
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].float().div(255.0)
        y = layouts[start : start + batch_size].long()
        out.append(F.cross_entropy(model(x).float(), y, reduction="none"))
    return torch.cat(out)


def class_mean_losses(losses: torch.Tensor, layouts: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean per-pixel loss of each class (by its true label); a class with no pixel gets +inf (never filters)."""
    flat_y = layouts.reshape(-1).long()
    sums = torch.zeros(num_classes, dtype=torch.float64, device=losses.device).index_add_(
        0, flat_y, losses.reshape(-1).double())
    counts = torch.bincount(flat_y, minlength=num_classes).double()
    return torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("inf")))


def filter_pixels(layouts: torch.Tensor, losses: torch.Tensor, class_means: torch.Tensor, k: float) -> torch.Tensor:
    """``layouts`` with every pixel whose loss exceeds ``k`` x its class's real mean set to IGNORE."""
    threshold = (k * class_means).to(losses.dtype)[layouts.long()]
    return layouts.masked_fill(losses > threshold, IGNORE)
