"""Small-data training on the dataset's declared transforms: the VQ-VAE per batch, the priors on
encoded transformed copies; image and layout always move together."""

from __future__ import annotations

import torch

from msgnet.augmentation.standard import AugmentationSettings, StandardAugmentation, geometric_copies
from msgnet.cli import main
from msgnet.config import load_preset
from msgnet.models.latents import stack_codes
from msgnet.models.vqvae import DoublePathVQVAE
from msgnet.preset_derivation import augment_copies_for, derive_preset
from msgnet.training.codes import load_codes
from msgnet.training.prior_stage import _layouts_from_dataset
from msgnet.training.vqvae_stage import VQVAEStage
from tests.fixtures import make_tiny_dataset, tiny_info
from tests.test_preset_derivation import fixed_seconds

DIHEDRAL = ("flip", "rotate90")


def _dihedral_images(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and quarter turns of one (C, H, W) image."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, dims=(1, 2))
        out += [r, torch.flip(r, dims=(2,))]
    return out


def test_geometric_copies_move_image_and_layout_alike_and_layouts_alone_draw_the_same():
    lay = torch.zeros(6, 12, 12, dtype=torch.long)
    lay[:, 1:5, 2:9] = 1
    lay[:, 7:11, 1:3] = 2
    img = (lay.float() * 100).to(torch.uint8).unsqueeze(1)  # the image is the layout, scaled
    settings = AugmentationSettings(geometric=DIHEDRAL, image_mode="nearest")
    pairs = list(geometric_copies(img, lay, settings, copies=3, seed=7, batch_size=4))
    assert len(pairs) == 3 * 2  # 3 copies of 6 images in batches of 4
    images = torch.cat([p[0] for p in pairs])
    layouts = torch.cat([p[1] for p in pairs])
    assert images.shape == (18, 1, 12, 12) and layouts.shape == (18, 12, 12)
    assert torch.equal((images.squeeze(1) * 255 / 100).round().long(), layouts)
    assert not torch.equal(layouts, lay.repeat(3, 1, 1))  # something moved
    alone = torch.cat([p[1] for p in geometric_copies(None, lay, settings, copies=3, seed=7, batch_size=4)])
    assert torch.equal(alone, layouts)


def test_vqvae_stage_sees_a_transformed_batch_and_resumes_the_same_draws():
    preset = load_preset("tiny")
    images = torch.rand(5, 1, 16, 16)
    batch = (images, torch.zeros(5, 16, 16, dtype=torch.long))
    plain = VQVAEStage(preset.vqvae, seed=0)
    assert torch.equal(plain._augmented(batch)[0], images)
    settings = AugmentationSettings(geometric=DIHEDRAL)
    stage = VQVAEStage(preset.vqvae, seed=3, augmentation=settings)
    seen = stage._augmented(batch)[0]
    for i in range(5):  # each image arrives as one of its own flips / quarter turns
        assert any(torch.allclose(seen[i], v, atol=1e-6) for v in _dihedral_images(images[i]))
    assert not torch.allclose(seen, images)
    state = stage.state_dict()
    restored = VQVAEStage(preset.vqvae, seed=3, augmentation=settings)
    restored.load_state_dict(state)
    assert torch.equal(restored._augmented(batch)[0], stage._augmented(batch)[0])


def test_codes_hold_the_encoded_transformed_copies_after_the_originals(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=20, n_val=4, augmentations=list(DIHEDRAL))
    run = tmp_path / "run"
    overrides = ["vqvae_train.augment=true", "prior_train.augment=true", "prior_train.augment_copies=2",
                 "layout_prior_train.augment=true", "layout_prior_train.augment_copies=1"]
    assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run), "--device", "cpu",
                 *overrides]) == 0
    codes, layouts, meta = load_codes(run, "train", copies=2)
    assert meta["num_images"] == "16" and meta["copies"] == "2" and codes.shape[0] == 48
    assert load_codes(run, "train")[0].shape[0] == 16  # a prior without augment sees the originals
    assert load_codes(run, "train", copies=1)[0].shape[0] == 32
    assert torch.equal(load_codes(run, "val", copies=2)[0], load_codes(run, "val")[0])  # val: never copied
    # The copies are the codes of the transformed images, drawn with the prior's seed.
    from msgnet.data.format import open_dataset
    from msgnet.data.torch_dataset import ImageLayoutDataset

    ds = ImageLayoutDataset(open_dataset(data), "train")
    model = DoublePathVQVAE.from_pretrained(run / "vqvae")
    expected = []
    for images, _ in geometric_copies(ds.images, ds.layouts, AugmentationSettings(geometric=DIHEDRAL), 2, 0, 64):
        with torch.inference_mode():
            expected.append(stack_codes(*model.encode_indices(images)))
    assert torch.equal(codes[16:], torch.cat(expected).long())
    assert torch.equal(codes[:16], load_codes(run, "train")[0])


def test_layout_prior_without_codes_learns_the_transformed_layouts_too(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=20, n_val=4, augmentations=list(DIHEDRAL))
    cfg = load_preset("tiny").layout_prior
    train_set, _ = _layouts_from_dataset(data, cfg, copies=3, seed=0)
    plain, _ = _layouts_from_dataset(data, cfg)
    assert len(plain) == 16 and len(train_set) == 64
    undeclared = make_tiny_dataset(tmp_path / "plain", n=20, n_val=4)  # no transform declared: no copies
    assert len(_layouts_from_dataset(undeclared, cfg, copies=3)[0]) == 16


def test_derived_presets_augment_small_sets_with_the_declared_transforms_only():
    assert augment_copies_for(100) == 8 and augment_copies_for(1000) == 3 and augment_copies_for(5000) == 0
    cpu = torch.device("cpu")
    small = derive_preset(tiny_info(32, 1, 3, augmentations=["flip"]), 100, cpu, 5, step_seconds=fixed_seconds)
    assert small.vqvae_train.augment and small.prior_train.augment and small.layout_prior_train.augment
    assert small.prior_train.augment_copies == 8 and "transformed copies" in small.source
    large = derive_preset(tiny_info(32, 1, 3, augmentations=["flip"]), 5000, cpu, 5, step_seconds=fixed_seconds)
    assert not large.prior_train.augment
    undeclared = derive_preset(tiny_info(32, 1, 3), 100, cpu, 5, step_seconds=fixed_seconds)
    assert not undeclared.vqvae_train.augment and "declares no geometric transform" in undeclared.source


def test_a_generator_never_sees_black_corners_a_segmenter_may():
    img = torch.ones(8, 1, 16, 16)  # a bright image: any uncovered corner would show as dark
    lay = torch.ones(8, 16, 16, dtype=torch.long)
    torch.manual_seed(0)
    settings = AugmentationSettings(geometric=("affine",), rotate_degrees=30.0, scale=0.3)
    segmenter = StandardAugmentation(settings, "cpu", seed=1).geometric(img, lay)
    generator = StandardAugmentation(AugmentationSettings(geometric=("affine",), rotate_degrees=30.0, scale=0.3,
                                                          padding_mode="reflection"), "cpu", seed=1).geometric(img, lay)
    assert float(segmenter[0].min()) < 0.5 and int(segmenter[1].min()) == 0  # zeros: dark corners, background
    assert torch.allclose(generator[0], img) and torch.equal(generator[1], lay)  # reflection: nothing uncovered
    assert AugmentationSettings.for_generator(["affine"]).padding_mode == "reflection"
