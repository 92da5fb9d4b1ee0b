"""The whole pipeline on imported data: train all (tiny) -> sample -> eval augment.

Two-channel BraTS-like NIfTI volumes and a COCO file with polygons, RLE and boxes, both
built by the tests themselves (tests/fixtures_importers.py).
"""

import json

import pytest

from fixtures_importers import make_brats_fixture, make_coco_fixture
from msgnet.cli import main
from msgnet.data.format import open_dataset


def _tiny_overrides(channels: int, num_classes: int) -> list[str]:
    return [f"vqvae.in_channels={channels}", f"prior.num_condition_classes={num_classes}",
            f"layout_prior.num_classes={num_classes}"]


def _pipeline(tmp_path, data, channels, num_classes):
    run, gen = tmp_path / "run", tmp_path / "gen"
    assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run), "--device", "cpu",
                 *_tiny_overrides(channels, num_classes)]) == 0
    assert main(["sample", "--run", str(run), "--num", "6", "--out", str(gen), "--batch-size", "3",
                 "--device", "cpu"]) == 0
    images, layouts = open_dataset(gen).load_split("train")
    assert images.shape == (6, 16, 16, channels)
    assert int(layouts.max()) < num_classes
    result = tmp_path / "augment.json"
    assert main(["eval", "augment", "--real", str(data), "--synthetic", str(gen), "--seeds", "1",
                 "--epochs", "1", "--min-steps", "300", "--out", str(result)]) == 0
    report = json.loads(result.read_text())
    n_real = len(open_dataset(data).ids("train"))
    (entry,) = report["results"]
    assert entry["n"] == n_real and report["synthetic_images"] == 6 and report["complete"]
    settings = {s["name"]: s for s in entry["settings"]}
    assert "real" in settings and any("synthetic" in name for name in settings)
    # The real-only U-Net learns these objects (a broken loop, loss or label handling would not), and
    # each setting's figure is its run's.
    assert settings["real"]["dice_mean"] > 0.5, settings["real"]["dice_mean"]
    for name, setting in settings.items():
        (run,) = setting["runs"]  # one seed
        assert setting["dice_mean"] == pytest.approx(run["dice"]), name
        assert run["train_real"] == (0 if name.startswith("synthetic-only") else n_real)  # generated alone: no real
        # the baselines without added images add nothing; generated pairs and copy-paste add images
        assert (run["train_added"] > 0) == ("synthetic" in name or "copy-paste" in name), name


@pytest.mark.slow
def test_pipeline_on_two_channel_nifti(tmp_path):
    fx = make_brats_fixture(tmp_path / "brats", num_patients=4)
    data = tmp_path / "data"
    assert main(["data", "import", "brats", str(fx["root"]), "--out", str(data), "--size", "16",
                 "--val-fraction", "0.25", "--no-progress"]) == 0
    info = open_dataset(data).info
    assert info.channels == 2
    _pipeline(tmp_path, data, 2, info.num_classes)


@pytest.mark.slow
def test_pipeline_on_coco(tmp_path):
    fx = make_coco_fixture(tmp_path / "coco", num=6)
    data = tmp_path / "data"
    assert main(["data", "import", "coco", str(fx["json"]), "--out", str(data), "--mode", "resize",
                 "--size", "16", "--val-fraction", "0.17", "--no-progress"]) == 0  # 4 train, 1 val, 1 test
    assert {k: len(v) for k, v in open_dataset(data).info.splits.items()} == {"train": 4, "val": 1, "test": 1}
    info = open_dataset(data).info
    assert info.channels == 3
    _pipeline(tmp_path, data, 3, info.num_classes)
