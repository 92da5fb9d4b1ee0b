"""Standard augmentation and copy-paste keep image and layout consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msgnet.augmentation.copy_paste import copy_paste_set, cut_objects, paste_object
from msgnet.augmentation.standard import AugmentationSettings, StandardAugmentation


def _squares(n: int = 12, size: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each image: 1-3 non-overlapping squares of classes 1..3; pixel value = 60 * class + noise inside."""
    rng = np.random.default_rng(seed)
    lays = np.zeros((n, size, size), np.uint8)
    imgs = np.zeros((n, size, size, 1), np.uint8)
    for i in range(n):
        for j in range(int(rng.integers(1, 4))):
            x0 = 8 * j + 1
            y0 = int(rng.integers(0, size - 6))
            c = int(rng.integers(1, 4))
            lays[i, y0 : y0 + 5, x0 : x0 + 5] = c
            imgs[i, y0 : y0 + 5, x0 : x0 + 5, 0] = 60 * c + rng.integers(0, 20, (5, 5))
    return imgs, lays


def test_cut_objects_finds_each_square():
    _, lays = _squares()
    objs = cut_objects(lays)
    for lay, found in zip(lays, objs):
        assert sum(int(o.mask.sum()) for o in found) == int((lay > 0).sum())
        assert all(o.mask.shape == (5, 5) for o in found)


def test_paste_changes_only_the_pasted_pixels_and_labels_them_with_the_class():
    imgs, lays = _squares()
    objs = cut_objects(lays)
    rng = np.random.default_rng(3)
    pasted_any = 0
    for k in range(20):
        base, donor = k % len(imgs), (k + 1) % len(imgs)
        image, layout = imgs[base].copy(), lays[base].copy()
        for obj in objs[donor]:
            before_img, before_lay = image.copy(), layout.copy()
            mask = paste_object(image, layout, obj, imgs[donor], rng)
            if mask is None:
                assert np.array_equal(image, before_img) and np.array_equal(layout, before_lay)
                continue
            pasted_any += 1
            assert (layout[mask] == obj.class_id).all()  # every pasted pixel carries its class
            assert (before_lay[mask] == 0).all()  # pasted only where no object was
            assert np.array_equal(image[~mask], before_img[~mask])  # nothing else changes
            assert np.array_equal(layout[~mask], before_lay[~mask])
            src = imgs[donor][obj.y0 : obj.y0 + obj.mask.shape[0], obj.x0 : obj.x0 + obj.mask.shape[1]]
            assert sorted(image[mask].ravel()) == sorted(src[obj.mask].ravel())  # the object's own pixels
    assert pasted_any > 10


def test_copy_paste_set_adds_objects_and_is_seeded():
    imgs, lays = _squares()
    a_img, a_lay = copy_paste_set(imgs, lays, 30, seed=5)
    b_img, b_lay = copy_paste_set(imgs, lays, 30, seed=5)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lay, b_lay)
    assert (a_lay > 0).sum(axis=(1, 2)).mean() > (lays > 0).sum(axis=(1, 2)).mean()
    # image and layout still agree: object pixels are bright, background dark
    assert (a_img[..., 0][a_lay > 0] >= 60).all() and (a_img[..., 0][a_lay == 0] == 0).all()


@pytest.mark.parametrize("geometric", [("flip",), ("rotate90",), ("flip", "rotate90"), ("affine",),
                                       ("flip", "rotate90", "affine")])
def test_standard_augmentation_moves_image_and_layout_together(geometric):
    imgs, lays = _squares(16)
    lay = torch.from_numpy(lays).long()
    img = (lay.float() * 60.0 / 255.0).unsqueeze(1)  # the image *is* the layout, scaled
    aug = StandardAugmentation(AugmentationSettings(geometric=geometric, image_mode="nearest"), "cpu", seed=0)
    out_img, out_lay = aug.geometric(img, lay)
    assert not torch.equal(out_lay, lay)  # something moved
    assert torch.equal((out_img.squeeze(1) * 255.0 / 60.0).round().long(), out_lay)


def test_flips_and_quarter_turns_are_exact_pixel_permutations_even_bilinear():
    imgs, lays = _squares(16)
    img = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    aug = StandardAugmentation(AugmentationSettings(geometric=("flip", "rotate90")), "cpu", seed=1)
    out, out_lay = aug.geometric(img, torch.from_numpy(lays).long())
    for i in range(len(img)):
        assert torch.allclose(torch.sort(out[i].ravel()).values, torch.sort(img[i].ravel()).values, atol=1e-6)
        assert torch.equal(torch.bincount(out_lay[i].ravel(), minlength=4),
                           torch.bincount(torch.from_numpy(lays[i]).long().ravel(), minlength=4))


def test_digits_get_no_flip_and_intensity_keeps_the_layout():
    s = AugmentationSettings.for_dataset(["affine"])
    assert "flip" not in s.geometric and "rotate90" not in s.geometric
    aug = StandardAugmentation(AugmentationSettings.for_dataset(None), "cpu", seed=0)
    img = torch.rand(4, 1, 8, 8)
    lay = torch.randint(0, 3, (4, 8, 8))
    out_img, out_lay = aug(img, lay)
    assert torch.equal(out_lay, lay) and not torch.allclose(out_img, img)
    assert out_img.min() >= 0 and out_img.max() <= 1
    with pytest.raises(ValueError):
        AugmentationSettings(geometric=("mirror",))


def test_augmentation_is_seeded():
    img, lay = torch.rand(8, 1, 16, 16), torch.randint(0, 3, (8, 16, 16))
    settings = AugmentationSettings(geometric=("flip", "rotate90", "affine"))
    a = StandardAugmentation(settings, "cpu", seed=4)(img, lay)
    b = StandardAugmentation(settings, "cpu", seed=4)(img, lay)
    c = StandardAugmentation(settings, "cpu", seed=5)(img, lay)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
