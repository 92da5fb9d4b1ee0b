"""The Python API: the README's snippet, and `MSGNet.sample` against `msgnet sample`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import msgnet
from msgnet.cli import main
from msgnet.config import load_preset
from msgnet.data.format import open_dataset
from tests.fixtures import make_tiny_dataset

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run trained through the library (not the CLI) on the tiny preset, 4 steps per stage."""
    root = tmp_path_factory.mktemp("api")
    data = make_tiny_dataset(root / "data", n=24, size=16, channels=1, num_classes=3)
    run = msgnet.train(root / "run", data, load_preset("tiny", ["prior.condition_dropout=0.2"]), steps=4,
                       device="cpu")
    return data, run.root


def readme_snippet() -> str:
    text = README.read_text()
    match = re.search(r"<!-- readme-snippet[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md: the Python snippet and its marker"
    return match.group(1)


def test_the_readme_snippet_runs_and_makes_pairs(tiny_run, tmp_path, monkeypatch, capsys):
    _, run = tiny_run
    code = readme_snippet()
    assert len(code.strip().splitlines()) <= 10
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code.replace('"runs/job"', repr(str(run))), "README.md", "exec"), namespace)
    pairs, given = namespace["pairs"], namespace["given"]
    assert pairs.images.shape == (8, 16, 16, 1) and pairs.layouts.shape == (8, 16, 16)
    assert pairs.images.dtype == np.uint8 and len(pairs.annotations) == 8
    saved = open_dataset(tmp_path / "generated")
    images, layouts = saved.load_split("train")
    assert np.array_equal(images, pairs.images) and np.array_equal(layouts, pairs.layouts)
    # pre-MSGNet: the given layouts, in turn
    assert np.array_equal(given.layouts, pairs.layouts[[0, 1, 0, 1]])
    assert "(8, 16, 16, 1) (8, 16, 16)" in capsys.readouterr().out


def test_sample_gives_what_the_cli_gives_for_a_seed(tiny_run, tmp_path):
    _, run = tiny_run
    pairs = msgnet.MSGNet.from_pretrained(run, device="cpu").sample(7, seed=5, guidance=2.0, batch_size=3)
    assert main(["sample", "--run", str(run), "--num", "7", "--seed", "5", "--guidance", "2", "--batch-size", "3",
                 "--out", str(tmp_path / "cli"), "--device", "cpu"]) == 0
    images, layouts = open_dataset(tmp_path / "cli").load_split("train")
    assert np.array_equal(images, pairs.images) and np.array_equal(layouts, pairs.layouts)
    other = msgnet.MSGNet.from_pretrained(run, device="cpu").sample(7, seed=6, guidance=2.0, batch_size=3)
    assert not np.array_equal(other.layouts, pairs.layouts)


def test_annotations_are_the_layouts_components(tiny_run):
    from msgnet.layouts import boxes_to_layout

    _, run = tiny_run
    pairs = msgnet.MSGNet.from_pretrained(run, device="cpu").sample(4, seed=1)
    for layout, objects in zip(pairs.layouts, pairs.annotations):
        assert {o.category_id for o in objects} == set(np.unique(layout)) - {0}
        assert ((boxes_to_layout(objects, layout.shape) > 0) >= (layout > 0)).all()


def test_bad_layouts_are_refused_naming_the_field(tiny_run):
    _, run = tiny_run
    generator = msgnet.MSGNet.from_pretrained(run, device="cpu")
    with pytest.raises(msgnet.errors.UsageError, match="^layouts: a layout is"):
        generator.sample(2, layouts=[np.zeros((8, 8), np.uint8)])
    with pytest.raises(msgnet.errors.UsageError, match="^layouts: class id 9"):
        generator.sample(2, layouts=[np.full((16, 16), 9, np.uint8)])


def test_the_manifest_records_the_stages_and_what_the_run_holds(tiny_run):
    _, run = tiny_run
    manifest = msgnet.RunDir(run).read_manifest()
    assert manifest["method"] == "msgnet" and manifest["msgnet_version"] == msgnet.__version__
    assert list(manifest["stages"]) == ["vqvae", "codes", "layout-prior", "prior"]
    assert all(s["done"] for s in manifest["stages"].values())
    assert {"vqvae", "codes", "layout-prior", "prior", "dataset", "preset"} <= set(manifest["holds"])
