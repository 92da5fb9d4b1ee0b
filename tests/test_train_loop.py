"""The shared training loop through the VQ-VAE stage: files, exact resume, time budget, DDP."""

from __future__ import annotations

import csv
import os
import signal
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from msgnet.config import TrainConfig, load_preset
from msgnet.errors import UsageError
from msgnet.io import load_state_dict
from msgnet.training import codebook_usage
from msgnet.training.loop import epoch_permutation, seed_everything, train
from msgnet.training.schedules import lr_factor
from msgnet.training.vqvae_stage import VQVAEStage, open_image_datasets, train_vqvae


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from fixtures import make_tiny_dataset

    # 24 images, 6 of them validation: 18 training items = 4 steps per epoch at batch 4.
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny", n=24, size=16, channels=1)


def tiny_preset(**train_changes):
    p = load_preset("tiny")
    return replace(p, vqvae_train=replace(p.vqvae_train, **train_changes))


def test_train_vqvae_writes_everything(tiny_data, tmp_path):
    out = train_vqvae(tiny_preset(iterations=6), tiny_data, tmp_path / "run", device="cpu")
    assert out == tmp_path / "run" / "vqvae"
    for name in ("model.safetensors", "config.json", "metrics.csv", "checkpoint/training_state.pt",
                 "checkpoint/model.safetensors", "images/step_0000003.png", "images/step_0000006.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    splits = {r["split"] for r in rows}
    assert splits == {"train", "val", "epoch"}
    val = [r for r in rows if r["split"] == "val"][-1]
    assert float(val["psnr"]) > 0 and float(val["mse"]) > 0 and float(val["ppl_attn"]) >= 1
    train_row = [r for r in rows if r["split"] == "train"][-1]
    for key in ("loss", "mse", "ppl_attn", "ppl_conv"):
        assert train_row[key] != ""
    epoch_row = [r for r in rows if r["split"] == "epoch"][0]
    assert 0 <= int(epoch_row["dead_codes_attn"]) <= 16


def test_dataset_mismatch_is_refused(tiny_data):
    p = load_preset("tiny")
    with pytest.raises(UsageError, match="tiny.*3-channel|channel"):
        open_image_datasets(replace(p.vqvae, in_channels=3), tiny_data)
    with pytest.raises(UsageError, match="32"):
        open_image_datasets(replace(p.vqvae, image_size=32, latent_size=8), tiny_data)


class _InterruptAt(VQVAEStage):
    """Sends itself Ctrl-C during step ``at`` (the loop finishes the step, checkpoints, stops)."""

    def __init__(self, config, seed, at):
        super().__init__(config, seed)
        self.at = at

    def training_step(self, model, batch, step):
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().training_step(model, batch, step)


def test_interrupted_run_resumes_bit_for_bit(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(codebook_usage, "RESTART_WINDOW", 3)  # exercise dead-code restarts and their state
    preset = tiny_preset(iterations=10, checkpoint_every=4, image_every=0, schedule="linear")
    vq = replace(preset.vqvae, restart_dead_codes=True)
    preset = replace(preset, vqvae=vq)
    train_set, val_set = open_image_datasets(vq, tiny_data)

    seed_everything(0)
    full = train(VQVAEStage(vq, 0), train_set, val_set, preset.vqvae_train, tmp_path / "a", device="cpu")
    assert full.step == 10

    seed_everything(0)
    with pytest.raises(KeyboardInterrupt):
        train(_InterruptAt(vq, 0, at=5), train_set, val_set, preset.vqvae_train, tmp_path / "b", device="cpu")
    assert not (tmp_path / "b" / "vqvae" / "model.safetensors").exists()
    seed_everything(123)  # a fresh process: nothing of the old RNG state is left
    resumed = train(VQVAEStage(vq, 0), train_set, val_set, preset.vqvae_train, tmp_path / "b",
                    resume=True, device="cpu")
    assert resumed.step == 10
    wa, wb = load_state_dict(tmp_path / "a" / "vqvae"), load_state_dict(tmp_path / "b" / "vqvae")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # metrics.csv keeps one row per step across the interruption
    steps = [r["step"] for r in csv.DictReader((tmp_path / "b" / "vqvae" / "metrics.csv").open())
             if r["split"] == "train"]
    assert steps == sorted(set(steps), key=int)


def test_max_minutes_stops_cleanly(tiny_data, tmp_path):
    preset = tiny_preset(iterations=10_000, max_minutes=1e-4, image_every=0)
    train_set, val_set = open_image_datasets(preset.vqvae, tiny_data)
    seed_everything(0)
    result = train(VQVAEStage(preset.vqvae), train_set, val_set, preset.vqvae_train, tmp_path, device="cpu")
    assert result.stopped_early and 1 <= result.step < 10_000
    assert (tmp_path / "vqvae" / "model.safetensors").is_file()
    assert (tmp_path / "vqvae" / "checkpoint" / "training_state.pt").is_file()
    assert "psnr" in result.metrics


def test_schedules_and_data_order():
    cfg = TrainConfig(iterations=100, schedule="linear")
    assert lr_factor(0, 100, cfg, 10) == 1.0 and lr_factor(50, 100, cfg, 10) == 0.5
    cyc = TrainConfig(iterations=100, schedule="cyclical", cycle_epochs=2, min_lr_ratio=0.1)
    vals = [lr_factor(s, 100, cyc, 10) for s in range(40)]
    assert vals[0] == pytest.approx(0.1) and vals[10] == pytest.approx(1.0) and vals[20] == pytest.approx(0.1)
    assert min(vals) >= 0.1 - 1e-9 and max(vals) <= 1.0
    assert lr_factor(7, 100, TrainConfig(iterations=1, schedule="constant"), 10) == 1.0
    assert torch.equal(epoch_permutation(50, 3, 2), epoch_permutation(50, 3, 2))
    assert not torch.equal(epoch_permutation(50, 3, 2), epoch_permutation(50, 3, 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    preset = tiny_preset(iterations=6, image_every=0, checkpoint_every=100, precision="fp32")
    train_set, val_set = open_image_datasets(preset.vqvae, Path(data))
    seed_everything(0)
    train(VQVAEStage(preset.vqvae), train_set, val_set, preset.vqvae_train, Path(out), device="cpu")


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tiny_data, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_data), str(tmp_path / "ddp")), nprocs=2, join=True)
    assert not torch.distributed.is_initialized()
    preset = tiny_preset(iterations=6, image_every=0, checkpoint_every=100, precision="fp32")
    train_set, val_set = open_image_datasets(preset.vqvae, tiny_data)
    seed_everything(0)
    train(VQVAEStage(preset.vqvae), train_set, val_set, preset.vqvae_train, tmp_path / "single", device="cpu")
    wd, ws = load_state_dict(tmp_path / "ddp" / "vqvae"), load_state_dict(tmp_path / "single" / "vqvae")
    seed_everything(0)
    init = VQVAEStage(preset.vqvae).model.state_dict()
    moved = 0
    for k in ws:
        assert torch.allclose(wd[k], ws[k], atol=1e-5, rtol=1e-4), k
        moved += int(not torch.equal(ws[k], init[k]))
    assert moved > 10  # training changed the weights, so the comparison means something


def test_steps_flag_sets_every_stage_to_that_many_steps(tmp_path):
    from msgnet.cli import main
    from msgnet.config import load_preset
    from msgnet.io import load_training_state
    from tests.fixtures import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", n=24, n_val=6)
    run = tmp_path / "run"
    assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run), "--steps", "3",
                 "--device", "cpu"]) == 0
    preset = load_preset(str(run / "preset.yaml"))
    for stage in ("vqvae", "layout_prior", "prior"):
        train = getattr(preset, f"{stage}_train")
        assert (train.iterations, train.epochs) == (3, 0)
        assert int(load_training_state(run / stage / "checkpoint" / "training_state.pt")["step"]) == 3
    assert main(["train", "vqvae", "--config", "tiny", "--data", str(data), "--run", str(tmp_path / "r2"),
                 "--steps", "0"]) == 2


def test_batches_gathered_by_index_equal_batches_stacked_item_by_item(tmp_path):
    from msgnet.data.format import open_dataset
    from msgnet.data.torch_dataset import ImageLayoutDataset
    from msgnet.training.stage import collate, gather_batch as _gather
    from msgnet.training.prior_stage import TensorRows
    from tests.fixtures import make_tiny_dataset

    ds = ImageLayoutDataset(open_dataset(make_tiny_dataset(tmp_path / "d", n=12, n_val=2)), "train")
    rows = TensorRows(torch.randint(0, 200, (10, 4, 4)), torch.randint(0, 3, (10, 4, 4)))
    idx = torch.tensor([3, 0, 7, 7, 1])
    for dataset in (ds, rows):
        fast, slow = _gather(dataset, idx), collate([dataset[int(i)] for i in idx])
        assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(fast, slow))


def test_bf16_precision_trains_on_a_cpu_and_changes_the_numerics(tmp_path):
    from msgnet.cli import main
    from msgnet.io import load_state_dict
    from tests.fixtures import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", n=24, n_val=6)
    weights = {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        assert main(["train", "vqvae", "--config", "tiny", "--data", str(data), "--run", str(run), "--device", "cpu",
                     f"vqvae_train.precision={precision}"]) == 0
        weights[precision] = load_state_dict(run / "vqvae")
    assert all(torch.isfinite(v).all() for v in weights["bf16"].values())
    assert any(not torch.equal(weights["fp32"][k], weights["bf16"][k]) for k in weights["fp32"])
    assert main(["train", "vqvae", "--config", "tiny", "--data", str(data), "--run", str(tmp_path / "x"),
                 "vqvae_train.precision=fp16"]) == 2
