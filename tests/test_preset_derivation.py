"""Presets derived from the dataset and a time budget (`msgnet train all` without --config)."""

from __future__ import annotations

import itertools

import pytest
import torch
import yaml

from msgnet.cli import main
from msgnet.config import load_preset
from msgnet.errors import UsageError
from msgnet.preset_derivation import derive_preset, latent_size_for, measure_step_seconds
from msgnet.step_budget import SMALLEST_VQVAE_BATCH, VALIDATION_SHARE, stage_steps, validation_steps, vqvae_batch
from tests.fixtures import make_tiny_dataset, tiny_info, train_one_step_each


def fixed_seconds(preset, device):
    """A step time for the arithmetic tests (the real probe is tested on its own below)."""
    return {"vqvae": 0.5, "layout_prior": 0.25, "prior": 1.0}


def test_latent_side_follows_the_paper_presets():
    assert [latent_size_for(s) for s in (32, 48, 64, 96, 128, 192, 256)] == [16, 24, 16, 24, 16, 24, 16]
    assert latent_size_for(56) == 28  # no halving lands in 16-24: the wider range
    for bad in (16, 33, 100 * 3):
        with pytest.raises(UsageError):
            latent_size_for(bad)


def test_a_cpu_takes_the_grid_one_halving_coarser():
    sizes = (16, 32, 48, 64, 96, 128, 192, 256)
    assert [latent_size_for(s, cpu=True) for s in sizes] == [8, 8, 12, 8, 12, 8, 12, 8]
    assert latent_size_for(56, cpu=True) == 14  # no halving lands in 8-12: the wider range
    for bad in (8, 33):
        with pytest.raises(UsageError):
            latent_size_for(bad, cpu=True)


@pytest.mark.parametrize("channels,size,classes", [
    (c, s, k) for (c, s), k in zip(itertools.product((1, 2, 3), (32, 64, 96, 128, 256)), itertools.cycle((2, 7, 25)))
])
def test_derived_presets_build_all_three_models_and_train_one_step(channels, size, classes):
    info = tiny_info(size, channels, classes)
    preset = derive_preset(info, 300, torch.device("cpu"), 10, step_seconds=fixed_seconds)
    assert preset.vqvae.in_channels == channels and preset.vqvae.image_size == size
    lat = preset.vqvae.latent_size
    assert lat == latent_size_for(size, cpu=True) and preset.layout_prior.num_classes == classes
    assert (preset.prior.height, preset.prior.width) == (2 * lat, lat)
    assert preset.prior.num_condition_classes == classes and preset.prior.num_classes == preset.vqvae.num_embeddings
    train_one_step_each(preset)


def test_budget_fills_each_stage_in_its_share():
    info = tiny_info(64, 1, 11)
    preset = derive_preset(info, 5000, torch.device("cpu"), 60, step_seconds=fixed_seconds)
    # Each stage's steps and its validations (each costing validation_steps of its steps) fill its share.
    def validations(train):
        return train.iterations // train.val_every

    def paid_steps(stage, train):
        return train.iterations + validations(train) * validation_steps(stage, train.batch_size)

    paid = {s: paid_steps(s, getattr(preset, f"{s}_train")) for s in ("vqvae", "layout_prior", "prior")}
    # 20 validations where they fit in 15% of the share; the codes prior's 24 minutes of 1 s steps fit 5.
    assert {s: validations(getattr(preset, f"{s}_train")) for s in paid} == {"vqvae": 20, "layout_prior": 20,
                                                                           "prior": 5}
    minutes = {s: paid[s] * fixed_seconds(None, None)[s] / 60 for s in paid}
    assert sum(minutes.values()) == pytest.approx(60, rel=0.01)
    # 45% / 15% / 40% of 60 minutes: the VQ-VAE is what a small budget is short of (docs/adherence.md).
    assert minutes == pytest.approx({"vqvae": 27.0, "layout_prior": 9.0, "prior": 24.0}, rel=0.02)
    double = derive_preset(info, 5000, torch.device("cpu"), 120, step_seconds=fixed_seconds)
    assert paid_steps("prior", double.prior_train) == pytest.approx(paid["prior"] * 2, abs=1)
    for sentence in ("1 channel(s) and 11 classes", "64x64 images", "Widths:", "60-minute budget"):
        assert sentence in preset.source
    with pytest.raises(UsageError):
        derive_preset(info, 5000, torch.device("cpu"), 0, step_seconds=fixed_seconds)
    with pytest.raises(UsageError):
        derive_preset(tiny_info(64, 1, 11).__class__(**{**vars(info), "image_size": (64, 48)}), 10,
                      torch.device("cpu"), 5, step_seconds=fixed_seconds)


def test_derived_codes_prior_learns_an_unconditional_input_and_reports_adherence():
    info = tiny_info(64, 1, 11)
    preset = derive_preset(info, 1000, torch.device("cpu"), 10, step_seconds=fixed_seconds)
    assert preset.prior.condition_dropout == 0.1 and preset.prior.guidable
    assert not preset.layout_prior.guidable  # unconditional: nothing to drop
    assert preset.prior_train.adherence_pairs > 0 and preset.vqvae_train.adherence_pairs == 0
    assert "drops the layout of 10% of its training maps" in preset.source


def test_a_latent_size_can_be_asked_for():
    info = tiny_info(64, 1, 11)
    preset = derive_preset(info, 1000, torch.device("cpu"), 10, step_seconds=fixed_seconds, latent_size=8)
    assert preset.vqvae.latent_size == 8 and (preset.prior.height, preset.prior.width) == (16, 8)
    assert (preset.layout_prior.height, preset.layout_prior.width) == (8, 8) and "8x8 latent grid" in preset.source
    for bad in (6, 64, 128):
        with pytest.raises(UsageError, match="latent_size"):
            derive_preset(info, 1000, torch.device("cpu"), 10, step_seconds=fixed_seconds, latent_size=bad)


def test_step_time_probe_measures_every_model():
    info = tiny_info(32, 1, 3)
    preset = derive_preset(info, 100, torch.device("cpu"), 5, step_seconds=fixed_seconds)
    seconds = measure_step_seconds(preset, torch.device("cpu"), repeats=1)
    assert set(seconds) == {"vqvae", "layout_prior", "prior"} and all(v > 0 for v in seconds.values())


@pytest.mark.compiles
def test_derived_cpu_presets_compile_their_priors_where_the_compiler_works():
    from msgnet.training.acceleration import compiler_available

    preset = derive_preset(tiny_info(32, 1, 3), 100, torch.device("cpu"), 5, step_seconds=fixed_seconds)
    expected = compiler_available(torch.device("cpu"))
    assert preset.prior_train.compile == expected and preset.layout_prior_train.compile == expected
    assert not preset.vqvae_train.compile


def test_tests_derive_presets_without_compilation():
    """tests/conftest.py: only tests marked `compiles` pay for torch.compile."""
    preset = derive_preset(tiny_info(32, 1, 3), 100, torch.device("cpu"), 5, step_seconds=fixed_seconds)
    assert not preset.prior_train.compile and not preset.layout_prior_train.compile


def test_step_time_probe_takes_the_fastest_steady_step(monkeypatch):
    """Each model: warm-up steps (compilation) whose time is never read, then the fastest of more than
    three timed steps: the steady state, what the machine does undisturbed (issue 32)."""
    from types import SimpleNamespace

    import msgnet.preset_derivation as derivation

    info = tiny_info(32, 1, 3)
    preset = derive_preset(info, 100, torch.device("cpu"), 5, step_seconds=fixed_seconds)
    durations = [5.0, 3.0, 1.0, 2.0, 4.0, 3.0, 2.0, 6.0]  # per model: (start, end) of each timed step
    reads = []
    for m in range(3):
        t = 1000.0 * m
        for d in durations:
            reads += [t, t + d]
            t += d + 1.0
    clock = iter(reads)
    monkeypatch.setattr(derivation, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    assert derivation.TIMED_STEPS == len(durations) > 3 and derivation.WARMUP_STEPS >= 1
    assert measure_step_seconds(preset, torch.device("cpu")) == {"vqvae": 1.0, "layout_prior": 1.0, "prior": 1.0}
    assert next(clock, None) is None  # exactly the timed steps read the clock, the warm-ups never


def test_train_all_without_a_preset_derives_one_writes_it_and_resumes(tmp_path, capsys):
    data = make_tiny_dataset(tmp_path / "data", n=48, size=32, channels=3, num_classes=4, n_val=8)
    run = tmp_path / "run"
    args = ["train", "all", "--data", str(data), "--run", str(run), "--budget", "0.02", "--device", "cpu",
            "prior_train.batch_size=8", "layout_prior_train.batch_size=8", "vqvae_train.batch_size=8"]
    assert main(args) == 0
    written = yaml.safe_load((run / "preset.yaml").read_text())
    assert written["vqvae"]["in_channels"] == 3 and written["layout_prior"]["num_classes"] == 4
    assert written["prior_train"]["batch_size"] == 8  # overrides apply on top of the derived preset
    assert "0.02-minute budget" in written["source"]
    import json

    for stage in ("vqvae", "layout_prior", "prior"):
        assert (run / stage / "model.safetensors").is_file()
        kept = json.loads((run / stage / "selected.json").read_text())
        # 4 classes: the VQ-VAE has the layout critic, and keeps its last weights (MSE cannot judge it)
        assert kept["kept"] == ("last step" if stage == "vqvae" else "best validation")
        assert kept["averaged"] == (stage != "vqvae")
    assert written["prior_train"]["keep_best"] and written["prior_train"]["ema_decay"] >= 0.9
    # resuming without --config takes the run's own preset, not a new derivation
    assert load_preset(str(run / "preset.yaml")).prior_train.iterations == written["prior_train"]["iterations"]
    assert main(["train", "all", "--data", str(data), "--run", str(run), "--device", "cpu", "--resume"]) == 0
    assert main(args) == 2  # the run exists
    assert main(["train", "all", "--data", str(data), "--run", str(tmp_path / "r2"), "--config", "tiny",
                 "--budget", "5"]) == 2  # a budget belongs to a derived preset
    assert main(["train", "vqvae", "--data", str(data), "--run", str(tmp_path / "r3")]) == 2  # only `all` derives


def test_derived_vqvae_is_told_the_layout_with_obedience_and_critic_only_where_classes_can_change():
    many = derive_preset(tiny_info(64, 1, 11), 1000, torch.device("cpu"), 10, step_seconds=fixed_seconds).vqvae
    assert (many.quantizer, many.fsq_levels, many.layout_classes) == ("fsq", "8,6,5", 11)
    assert many.obedience > 0 and many.layout_critic > 0 and many.layout_critic_width == 32 and many.reader_blur == 1.0
    # One object class: no other class to change it to, so neither term is built.
    one = derive_preset(tiny_info(64, 1, 2), 300, torch.device("cpu"), 10, step_seconds=fixed_seconds).vqvae
    assert one.layout_classes == 2 and one.obedience == 0 and one.layout_critic == 0 and one.reader_blur == 0
    assert one.fsq_levels == "8,5,3"  # under 1,000 training images


def test_a_vqvae_with_the_layout_critic_keeps_its_last_weights_and_the_priors_select():
    """The critic trades validation MSE (the VQ-VAE's selection metric) for obedience: MSE must not stop it."""
    preset = derive_preset(tiny_info(64, 1, 11), 1000, torch.device("cpu"), 10, step_seconds=fixed_seconds)
    assert preset.vqvae.layout_critic > 0
    assert not preset.vqvae_train.keep_best and preset.vqvae_train.patience == 0
    assert preset.prior_train.keep_best and preset.prior_train.patience > 0
    single = derive_preset(tiny_info(64, 1, 2), 300, torch.device("cpu"), 10, step_seconds=fixed_seconds)
    assert single.vqvae.layout_critic == 0 and single.vqvae_train.keep_best


def test_a_stage_buys_its_validations_before_its_steps():
    """Up to 20 validations of 43 steps each come off a large share; a short stage validates fewer times, so
    that its validations never take more than VALIDATION_SHARE of it (once at least), and keeps its steps."""
    assert stage_steps(10_000, 1.0, 43) == (10_000 - 20 * 43, 20)
    assert stage_steps(10_000, 1.0) == (10_000, 20)
    # 2,059 steps' time (the codes prior's share on a CPU without native bf16): 7 validations, not 20.
    assert stage_steps(2_059, 1.0, 43) == (2_059 - 7 * 43, 7)
    # 345 steps' time (that CPU's layout prior): 3 validations of 14 steps, 303 steps (a fixed 20 left it 90).
    assert stage_steps(345, 1.0, 14) == (345 - 3 * 14, 3)
    for seconds, cost in ((500, 43), (345, 14), (2_059, 43), (100_000, 4)):
        steps, validations = stage_steps(seconds, 1.0, cost)
        assert validations * cost <= max(VALIDATION_SHARE * seconds, cost)
    assert stage_steps(1, 1.0, 43) == (10, 1)  # the floor


def test_a_share_that_buys_few_vqvae_steps_buys_smaller_ones():
    """Where 32 images a step would buy fewer than FEW_VQVAE_STEPS steps, the VQ-VAE's batch is halved (not below
    SMALLEST_VQVAE_BATCH) and the step expected to take half as long; a share that buys enough keeps its batch."""
    assert vqvae_batch(32, 324.0, 0.52) == (8, 0.13)  # a CPU without native bf16, the main job's share
    assert vqvae_batch(32, 324.0, 0.16) == (32, 0.16)  # 2,025 steps of 32 images
    assert vqvae_batch(32, 1_000.0, 0.9) == (16, 0.45)  # 1,111 steps of 32, 2,222 of 16
    assert vqvae_batch(12, 10.0, 1.0) == (12, 1.0)  # halving would go below the smallest batch
    assert vqvae_batch(32, 1.0, 1.0)[0] == SMALLEST_VQVAE_BATCH
    info = tiny_info(64, 1, 11)
    slow = derive_preset(info, 1000, torch.device("cpu"), 12, step_seconds=lambda p, d: {
        "vqvae": 0.52, "layout_prior": 0.25, "prior": 0.15})
    assert slow.vqvae_train.batch_size == 8 and slow.prior_train.batch_size == 32
    assert "trains on 8 images a step" in slow.source
    # Its steps fill the share at the step time expected for 8 images (0.13 s), less 20 validations, each as
    # long as 4 steps of 32 images, 16 of 8.
    assert validation_steps("vqvae", 8) == 16 and validation_steps("vqvae", 32) == 4
    assert slow.vqvae_train.iterations == int(12 * 60 * 0.45 / 0.13 - 20 * 16)
    fast = derive_preset(info, 1000, torch.device("cpu"), 12, step_seconds=lambda p, d: {
        "vqvae": 0.15, "layout_prior": 0.12, "prior": 0.07})
    assert fast.vqvae_train.batch_size == 32 and "images a step" not in fast.source
