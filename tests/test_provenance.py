"""--train-subset and the training record: run -> codes -> generated set, through the CLI (tiny preset)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from msgnet.cli import main
from msgnet.data.format import open_dataset
from msgnet.data.provenance import generator_training
from msgnet.data.subsets import seeded_subset
from msgnet.data.torch_dataset import load_split_ids
from msgnet.errors import UsageError
from tests.fixtures import make_tiny_dataset

SUBSET = 7  # of 18 train images (24 made, 6 of them val)


def _snapshot(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def subset_run(tmp_path_factory):
    """`train all --train-subset 7`, with the length of the VQ-VAE's training set captured."""
    from msgnet.training import vqvae_stage

    root = tmp_path_factory.mktemp("subset")
    data = make_tiny_dataset(root / "data", n=24, size=16, channels=1, num_classes=3)
    run = root / "run"
    lengths: list[int] = []
    original = vqvae_stage.train

    def spying_train(stage, train_set, val_set, *args, **kwargs):
        lengths.append(len(train_set))
        return original(stage, train_set, val_set, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vqvae_stage, "train", spying_train)
        assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run),
                     "--train-subset", str(SUBSET), "--device", "cpu"]) == 0
    expected = seeded_subset(open_dataset(data).ids("train"), SUBSET)
    return data, run, expected, lengths


def test_run_records_exactly_the_seeded_subset(subset_run):
    data, run, expected, lengths = subset_run
    assert len(open_dataset(data).ids("train")) == 18 and len(expected) == SUBSET
    src = json.loads((run / "dataset.json").read_text())["source"]
    assert src["training_ids"] == expected
    assert src["training_subset"] == SUBSET
    assert src["training_data"] == str(data.resolve())
    assert lengths == [SUBSET]  # the VQ-VAE saw only the subset


def test_priors_see_only_the_subset_and_val_stays_whole(subset_run):
    from msgnet.layouts import downsample_layout
    from msgnet.training.codes import load_codes

    data, run, expected, _ = subset_run
    ds = open_dataset(data)
    _, train_layouts, _ = load_codes(run, "train")
    _, val_layouts, _ = load_codes(run, "val")
    # The very images of the subset, in order: their layouts on the latent grid match row for row.
    _, lay = load_split_ids(ds, "train", expected)
    assert np.array_equal(train_layouts.numpy(), downsample_layout(lay, 4, num_classes=3))
    assert len(val_layouts) == len(ds.ids("val")) == 6


@pytest.mark.parametrize("argv", [
    ["train", "vqvae", "--config", "tiny", "--resume", "--train-subset", "5"],
    ["train", "all", "--config", "tiny", "--resume", "--train-subset", "5"],
    ["train", "layout-prior", "--config", "tiny", "--resume", "--train-subset", "5"],
    ["codes", "extract", "--train-subset", "5"],
])
def test_another_subset_is_refused_and_the_run_is_unchanged(subset_run, argv, capsys):
    data, run, _, _ = subset_run
    before = _snapshot(run)
    capsys.readouterr()
    assert main([*argv, "--data", str(data), "--run", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(run / "dataset.json") in err[0] and "--train-subset 5" in err[0], err
    assert _snapshot(run) == before


def test_later_stages_reuse_the_record(subset_run, tmp_path):
    from msgnet.training.codes import load_codes

    data, run, expected, _ = subset_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "codes")
    # Without the option the run's images are encoded; the same N given again is accepted.
    assert main(["codes", "extract", "--run", str(copy), "--data", str(data), "--device", "cpu"]) == 0
    assert len(load_codes(copy, "train")[0]) == SUBSET
    assert main(["codes", "extract", "--run", str(copy), "--data", str(data), "--device", "cpu",
                 "--train-subset", str(SUBSET)]) == 0
    assert json.loads((copy / "dataset.json").read_text())["source"]["training_ids"] == expected


def test_other_data_for_the_run_is_refused(subset_run, tmp_path, capsys):
    _, run, _, _ = subset_run
    other = make_tiny_dataset(tmp_path / "other", n=24, size=16, channels=1, seed=1)
    before = _snapshot(run)
    assert main(["codes", "extract", "--run", str(run), "--data", str(other), "--device", "cpu"]) == 2
    assert str(other.resolve()) in capsys.readouterr().err
    assert _snapshot(run) == before


def test_sampling_records_the_generators_training_images(subset_run, tmp_path):
    data, run, expected, _ = subset_run
    out = tmp_path / "gen"
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(out), "--device", "cpu"]) == 0
    want = {"run": str(run.resolve()), "dataset": str(data.resolve()), "split": "train",
            "ids": expected, "subset": SUBSET}
    assert json.loads((out / "dataset.json").read_text())["source"]["generator_training"] == want
    assert generator_training(open_dataset(out).info) == want
    assert generator_training(open_dataset(data).info) is None  # a real set


def test_a_run_without_recorded_ids_gives_unknown_ids(subset_run, tmp_path):
    data, run, _, _ = subset_run
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    meta = json.loads((old / "dataset.json").read_text())
    del meta["source"]["training_ids"], meta["source"]["training_subset"]  # as written before ids were kept
    (old / "dataset.json").write_text(json.dumps(meta))
    out = tmp_path / "gen"
    assert main(["sample", "--run", str(old), "--num", "1", "--out", str(out), "--device", "cpu"]) == 0
    rec = generator_training(open_dataset(out).info)
    assert rec == {"run": str(old.resolve()), "dataset": str(data.resolve()), "split": "train",
                   "ids": None, "subset": None}
    # A set generated before the record existed: generated, origin unknown.
    meta = json.loads((out / "dataset.json").read_text())
    del meta["source"]["generator_training"]
    (out / "dataset.json").write_text(json.dumps(meta))
    assert generator_training(open_dataset(out).info)["ids"] is None


def test_bad_subsets_write_nothing(tmp_path, capsys):
    data = make_tiny_dataset(tmp_path / "data", n=12, size=16)  # 9 train images
    run = tmp_path / "run"
    for n in ("10", "0", "3"):  # more than the split, nothing, fewer than a batch (4)
        assert main(["train", "vqvae", "--config", "tiny", "--data", str(data), "--run", str(run),
                     "--train-subset", n, "--device", "cpu"]) == 2
        assert not run.exists()
    assert main(["train", "layout-prior", "--config", "tiny", "--run", str(run), "--train-subset", "5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all("--train-subset" in line for line in err), err
    assert "batch_size 4" in err[2]
    assert not run.exists()


def test_layout_prior_from_data_trains_on_the_subset(tmp_path, monkeypatch):
    from msgnet.sampling.run import record_training_data
    from msgnet.training import prior_stage

    data = make_tiny_dataset(tmp_path / "data", n=16, size=16)  # 12 train images
    run = tmp_path / "run"
    lengths: list[int] = []
    original = prior_stage.train

    def spying_train(stage, train_set, val_set, *args, **kwargs):
        lengths.append(len(train_set))
        return original(stage, train_set, val_set, *args, **kwargs)

    monkeypatch.setattr(prior_stage, "train", spying_train)
    # A record left by a start that trained nothing binds nothing: it is chosen afresh.
    record_training_data(run, data, 3)
    assert main(["train", "layout-prior", "--config", "tiny", "--data", str(data), "--run", str(run),
                 "--train-subset", "5", "--device", "cpu"]) == 0
    assert lengths == [5]
    src = json.loads((run / "dataset.json").read_text())["source"]
    assert src["training_ids"] == seeded_subset(open_dataset(data).ids("train"), 5) and src["training_subset"] == 5
    # Now the layout prior depends on the record: another subset is refused.
    assert main(["train", "layout-prior", "--config", "tiny", "--data", str(data), "--run", str(run),
                 "--train-subset", "6", "--resume", "--device", "cpu"]) == 2


def test_load_split_ids_keeps_the_order_and_refuses_strangers(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n=12, size=16)
    ds = open_dataset(data)
    train = ds.ids("train")
    pick = [train[4], train[1]]
    images, layouts = load_split_ids(ds, "train", pick)
    assert np.array_equal(images[0], ds.read_image(pick[0])) and np.array_equal(layouts[1], ds.read_layout(pick[1]))
    with pytest.raises(UsageError, match="not in split 'train'"):
        load_split_ids(ds, "train", [ds.ids("val")[0]])
