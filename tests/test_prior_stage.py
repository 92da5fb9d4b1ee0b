"""Training stages of the two priors on synthetic code files (tiny preset)."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from msgnet.config import load_preset
from msgnet.errors import UsageError
from msgnet.io import load_state_dict
from msgnet.models.layout_prior import LayoutPixelSNAIL
from msgnet.models.pixelsnail import PixelSNAIL
from msgnet.models.priors import load_prior
from msgnet.training.prior_stage import train_layout_prior, train_prior


def write_codes(run_dir, n_train=12, n_val=4, h=4, w=4, num_codes=16, num_classes=3, seed=0, offset=0):
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        if not n:
            continue
        layouts = torch.randint(0, num_classes, (n, h, w), generator=g).to(torch.uint8)
        # Codes that depend on the layout, so that the condition carries information.
        codes = (torch.cat([layouts, layouts], 1).long() * 5 + torch.randint(0, 2, (n, 2 * h, w), generator=g) + offset)
        tensors = {"codes": codes.clamp(max=num_codes - 1).to(torch.uint8).contiguous(), "layouts": layouts}
        (run_dir / "codes").mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(run_dir / "codes" / f"{split}.safetensors"), metadata={"num_embeddings": str(num_codes)})


def tiny(iterations=6, epochs=0):
    p = load_preset("tiny")
    t = dict(iterations=iterations, epochs=epochs, log_every=1, checkpoint_every=3, image_every=0)
    return replace(
        p,
        prior_train=replace(p.prior_train, **t),
        layout_prior_train=replace(p.layout_prior_train, **t),
    )


def read_metrics(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_prior_and_layout_prior(tmp_path):
    run = tmp_path / "run"
    write_codes(run)
    preset = tiny(iterations=0, epochs=2)  # 12 items at batch 4: 3 steps per epoch
    out = train_prior(preset, run, device="cpu")
    assert out == run / "prior"
    model = load_prior(out)
    assert type(model) is PixelSNAIL and model.config == preset.prior
    rows = read_metrics(out / "metrics.csv")
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(float(r["bits_per_token"]) > 0 for r in train_rows)
    epoch_rows = [r for r in rows if r["split"] == "epoch"]
    assert len(epoch_rows) == 2 and all(float(r["val_loss"]) > 0 for r in epoch_rows)
    assert any(r["split"] == "val" and r.get("loss") for r in rows)

    out = train_layout_prior(preset, run, device="cpu")
    assert out == run / "layout_prior"
    layout_model = load_prior(out)
    assert type(layout_model) is LayoutPixelSNAIL
    rows = read_metrics(out / "metrics.csv")
    assert any(r["split"] == "epoch" and float(r["val_bits_per_token"]) > 0 for r in rows)


def test_prior_training_lowers_the_loss(tmp_path):
    run = tmp_path / "run"
    write_codes(run, n_train=16, n_val=0)
    preset = tiny(iterations=30)
    preset = replace(preset, prior_train=replace(preset.prior_train, learning_rate=3e-3, log_every=10))
    out = train_prior(preset, run, device="cpu")
    rows = [r for r in read_metrics(out / "metrics.csv") if r["split"] == "train"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) - 0.2


def test_resume_continues_to_the_same_weights(tmp_path):
    preset = tiny(iterations=6)
    full = tmp_path / "full"
    write_codes(full)
    train_layout_prior(preset, full, device="cpu")
    part = tmp_path / "part"
    write_codes(part)
    short = replace(preset, layout_prior_train=replace(preset.layout_prior_train, iterations=6, max_minutes=1e-9))
    train_layout_prior(short, part, device="cpu")  # stops after one step
    from msgnet.io import load_training_state

    assert int(load_training_state(part / "layout_prior" / "checkpoint" / "training_state.pt")["step"]) < 6
    # A twin whose checkpoint weights are moved: a resume that really continues from the
    # checkpoint ends elsewhere; one that silently started over would match the full run.
    twin = tmp_path / "twin"
    shutil.copytree(part, twin)
    ckpt = twin / "layout_prior" / "checkpoint" / "model.safetensors"
    save_file({k: v + 0.5 if v.is_floating_point() else v for k, v in load_file(str(ckpt)).items()}, str(ckpt))
    train_layout_prior(preset, part, resume=True, device="cpu")
    train_layout_prior(preset, twin, resume=True, device="cpu")
    a = load_state_dict(full / "layout_prior")
    b = load_state_dict(part / "layout_prior")
    c = load_state_dict(twin / "layout_prior")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_mismatched_codes_are_usage_errors(tmp_path):
    run = tmp_path / "run"
    write_codes(run, h=3)  # the tiny preset's priors expect 8x4 codes and 4x4 layouts
    with pytest.raises(UsageError):
        train_prior(tiny(), run, device="cpu")
    with pytest.raises(UsageError):
        train_layout_prior(tiny(), run, device="cpu")
    with pytest.raises(UsageError):
        train_prior(tiny(), tmp_path / "nothing", device="cpu")
    run2 = tmp_path / "run2"
    write_codes(run2, num_codes=40, offset=20)  # codes beyond the tiny prior's 16
    with pytest.raises(UsageError):
        train_prior(tiny(), run2, device="cpu")
