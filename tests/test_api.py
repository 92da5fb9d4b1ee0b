"""The Python API: the README's snippet, and `MSGNet.sample` against `msgnet sample`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import msgnet
from msgnet.cli import main
from msgnet.config import load_preset
from msgnet.data.format import open_dataset
from msgnet.sampling.run import run_training_data
from tests.fixtures import make_tiny_dataset

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run trained through the library (not the CLI) on the shipped tiny preset as it is, 4 steps per stage:
    like every shipped preset, its codes prior has no condition dropout, so it cannot be guided."""
    root = tmp_path_factory.mktemp("api")
    data = make_tiny_dataset(root / "data", n=40, size=16, channels=1, num_classes=3, n_val=12)
    preset = load_preset("tiny")
    assert not preset.prior.guidable
    run = msgnet.train(root / "run", data, preset, steps=4, device="cpu")
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
    again = msgnet.MSGNet.from_pretrained(tmp_path / "export", device="cpu").sample(8, seed=0)
    assert np.array_equal(again.images, pairs.images)  # the export samples what the run samples
    assert "(8, 16, 16, 1) (8, 16, 16)" in capsys.readouterr().out


def _cli_pairs(run: Path, out: Path, *flags: str) -> tuple[np.ndarray, np.ndarray]:
    assert main(["sample", "--run", str(run), "--out", str(out), "--device", "cpu", *flags]) == 0
    return open_dataset(out).load_split("train")


def test_sample_gives_what_the_cli_gives_for_a_seed_with_truncation(tiny_run, tmp_path):
    _, run = tiny_run
    generator = msgnet.MSGNet.from_pretrained(str(run), device="cpu")
    pairs = generator.sample(7, seed=5, top_k_layout=2, top_p_codes=0.9, temperature_layout=0.9, batch_size=3)
    images, layouts = _cli_pairs(run, tmp_path / "cli", "--num", "7", "--seed", "5", "--top-k-layout", "2",
                                 "--top-p-codes", "0.9", "--temperature-layout", "0.9", "--batch-size", "5")
    assert np.array_equal(images, pairs.images) and np.array_equal(layouts, pairs.layouts)
    other = generator.sample(7, seed=6, top_k_layout=2, top_p_codes=0.9, temperature_layout=0.9, batch_size=3)
    assert not np.array_equal(other.layouts, pairs.layouts)
    assert not np.array_equal(generator.sample(7, seed=5, batch_size=3).images, pairs.images)  # truncation acts


def test_a_seed_gives_the_same_pairs_at_any_batch_size(tiny_run):
    _, run = tiny_run
    generator = msgnet.MSGNet.from_pretrained(run, device="cpu")
    pairs = {bs: generator.sample(8, seed=0, batch_size=bs, progress=False) for bs in (1, 3, 8)}
    for bs in (1, 3):
        assert np.array_equal(pairs[bs].layouts, pairs[8].layouts)
        assert np.array_equal(pairs[bs].images, pairs[8].images)
    # Pair i is pair i of a longer request too: each pair has its own randomness.
    assert np.array_equal(generator.sample(3, seed=0, batch_size=2).images, pairs[8].images[:3])
    # The iterator every front door consumes: batches in order, pair ids counted across them.
    batches = list(generator.iter_batches(generator.prepare(8, seed=0, batch_size=3)))
    assert [(b.index, b.first, len(b.images)) for b in batches] == [(0, 0, 3), (1, 3, 3), (2, 6, 2)]
    assert np.array_equal(np.concatenate([b.images for b in batches]), pairs[8].images)
    assert len({p.tobytes() for p in pairs[8].layouts}) > 1


def test_guidance_on_a_run_without_condition_dropout_is_refused_naming_the_field(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    with pytest.raises(msgnet.errors.UsageError, match=r"^guidance: 3 needs a codes prior trained with "
                                                       r"prior.condition_dropout > 0"):
        msgnet.MSGNet.from_pretrained(run, device="cpu").sample(8, seed=0, guidance=3.0)
    assert main(["sample", "--run", str(run), "--num", "2", "--guidance", "3", "--out", str(tmp_path / "g"),
                 "--device", "cpu"]) == 2
    assert "error: --guidance: 3 needs a codes prior" in capsys.readouterr().err
    assert not (tmp_path / "g").exists() and not (tmp_path / "g.partial").exists()


def test_save_pretrained_then_from_pretrained_samples_the_same_pairs(tiny_run, tmp_path):
    _, run = tiny_run
    generator = msgnet.MSGNet.from_pretrained(run, device="cpu")
    assert generator.to("cpu") is generator
    export = generator.save_pretrained(str(tmp_path / "export"))
    files = sorted(str(p.relative_to(export)) for p in export.rglob("*") if p.is_file())
    assert files == ["dataset.json", "layout_prior/config.json", "layout_prior/model.safetensors",
                     "prior/config.json", "prior/model.safetensors", "run.json", "training_layouts.safetensors",
                     "vqvae/config.json", "vqvae/model.safetensors"]  # no checkpoints, optimiser state or codes
    assert json.loads((export / "dataset.json").read_text()) == json.loads((run / "dataset.json").read_text())
    assert json.loads((export / "run.json").read_text())["exported_from"] == str(run.resolve())
    loaded = msgnet.MSGNet.from_pretrained(str(export), device="cpu")
    a, b = generator.sample(6, seed=2, batch_size=4), loaded.sample(6, seed=2, batch_size=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.layouts, b.layouts)
    # Layouts made from real ones, and drawn ones with real shapes, from the export's copy of the training layouts.
    data = run_training_data(run)[0]
    moved = data.with_name(data.name + ".moved")
    data.rename(moved)  # the training set is not beside the export
    try:
        for source in ("real", "prior-shapes"):
            a, b = (g.sample(6, seed=2, layout_source=source, progress=False) for g in (generator, loaded))
            assert np.array_equal(a.images, b.images) and np.array_equal(a.layouts, b.layouts)
            assert a.source["layout_provenance"] == b.source["layout_provenance"]
    finally:
        moved.rename(data)
    # The export keeps the generator's training record: its pairs name the same real images.
    assert b.source["generator_training"]["ids"] == a.source["generator_training"]["ids"] is not None
    with pytest.raises(msgnet.errors.UsageError, match="already exists"):
        generator.save_pretrained(export)


def test_pairs_save_writes_what_msgnet_sample_writes_and_the_benchmark_takes_it(tiny_run, tmp_path):
    from msgnet.evaluation.benchmark.request import _generator_notes
    from msgnet.evaluation.inputs import check_compatible, open_input

    data, run = tiny_run
    pairs = msgnet.MSGNet.from_pretrained(run, device="cpu").sample(5, seed=3, batch_size=2)
    saved = pairs.save(str(tmp_path / "python"))
    _cli_pairs(run, tmp_path / "cli", "--num", "5", "--seed", "3", "--batch-size", "2")
    assert _files(saved) == _files(tmp_path / "cli")
    real, synthetic = open_input(data, "--real"), open_input(saved, "--synthetic")
    check_compatible(real, synthetic)
    notes = _generator_notes(synthetic, real, {None: real.ids("train")}, external=False)  # no extra flag
    assert all(note["inside"] is True for note in notes.values())


def _files(directory: Path) -> dict[str, object]:
    """Every file of a generated set; dataset.json without its wall time (sampling_seconds)."""
    out: dict[str, object] = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and ".cache" not in p.parts:  # the reader's own cache of arrays, not what was written
            out[str(p.relative_to(directory))] = p.read_bytes()
    meta = json.loads(out.pop("dataset.json"))
    meta["source"].pop("sampling_seconds")
    out["dataset.json"] = meta
    if "qc.json" in out:
        out["qc.json"] = {k: v for k, v in json.loads(out["qc.json"]).items() if k != "generated"}
    return out


def test_python_and_cli_agree_with_layouts_made_from_real_ones(tiny_run, tmp_path):
    _, run = tiny_run
    pairs = msgnet.MSGNet.from_pretrained(run, device="cpu").sample(6, seed=1, layout_source="real", batch_size=4)
    images, layouts = _cli_pairs(run, tmp_path / "cli", "--num", "6", "--seed", "1", "--layout-source", "real",
                                 "--batch-size", "3")
    assert np.array_equal(images, pairs.images) and np.array_equal(layouts, pairs.layouts)
    meta = json.loads((tmp_path / "cli" / "dataset.json").read_text())["source"]
    assert meta["layout_provenance"] == pairs.source["layout_provenance"] and "made from" in meta["mode"]


def test_python_and_cli_agree_with_quality_control(tiny_run, tmp_path):
    from dataclasses import replace

    from msgnet.evaluation.qc.checker import QCSettings
    from msgnet.evaluation.qc.segmenter import QC_PROTOCOL
    from msgnet.evaluation.qc.thresholds import parse_overrides

    _, run = tiny_run
    lenient = {"min_dice": 0, "min_found_fraction": 0, "min_contrast": 0, "max_saturation": 1, "min_object_pixels": 0}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in lenient.items()]
    images, layouts = _cli_pairs(run, tmp_path / "cli", "--num", "5", "--seed", "2", "--batch-size", "4", "--qc",
                                 "--qc-steps", "100", *flags)
    settings = QCSettings(overrides=parse_overrides(lenient), protocol=replace(QC_PROTOCOL, min_steps=100))
    generator = msgnet.MSGNet.from_pretrained(run, device="cpu")
    pairs = generator.sample(5, seed=2, batch_size=3, qc=settings)
    assert np.array_equal(images, pairs.images) and np.array_equal(layouts, pairs.layouts)
    # At the CLI's batch size the same candidates are scored: the same files, qc.csv and figures too. (Against a
    # second CLI run: like this one it loads the cached segmenter, whose calibration differs in the 8th digit
    # from the one computed right after training it.)
    generator.sample(5, seed=2, batch_size=4, qc=settings).save(tmp_path / "python")
    _cli_pairs(run, tmp_path / "cli2", "--num", "5", "--seed", "2", "--batch-size", "4", "--qc", "--qc-steps", "100",
               *flags)
    assert _files(tmp_path / "python") == _files(tmp_path / "cli2")
    # The kept pairs are the passing candidates of plain sampling with the same seed, in order.
    rows = (tmp_path / "cli" / "qc.csv").read_text().splitlines()[1:]
    passing = [int(r.split(",")[0]) for r in rows if r.split(",")[2] != ""]
    plain = msgnet.MSGNet.from_pretrained(run, device="cpu").sample(len(rows), seed=2)
    assert np.array_equal(plain.images[passing], pairs.images)


def test_the_probe_measures_the_engines_pairs(tiny_run, tmp_path):
    from dataclasses import replace

    import torch

    from msgnet.evaluation.qc.checker import QCSettings
    from msgnet.evaluation.qc.segmenter import QC_PROTOCOL
    from msgnet.evaluation.qc.set_quality import measure_set
    from msgnet.workflow.probe import PROBE_SEED_OFFSET, Candidate, probe_settings
    from msgnet.workflow.qc_filter import checking_qc

    _, run = tiny_run
    generator = msgnet.MSGNet.from_pretrained(run, device="cpu")
    qc = checking_qc(run, generator.info, QCSettings(protocol=replace(QC_PROTOCOL, min_steps=20)),
                     torch.device("cpu"), segmenter_dir=tmp_path / "segmenter", progress=False)
    rows = probe_settings(generator.engine, generator.prepare(6, seed=2).settings, qc, [Candidate(1.0, 0.85)], num=6,
                          progress=False)
    pairs = generator.sample(6, seed=2 + PROBE_SEED_OFFSET, guidance=1.0, temperature_codes=0.85, batch_size=4)
    expected = measure_set(qc, pairs.images, pairs.layouts).to_json()
    assert {k: rows[0][k] for k in expected} == expected


def test_every_sampling_option_of_the_cli_is_a_keyword_of_sample():
    import argparse
    import inspect

    from msgnet.cli import build_parser
    from msgnet.evaluation.qc.checker import QCSettings

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["sample"]
    options = {a.dest for a in sub._actions if a.option_strings} - {"help"}
    where_else = {"run": "from_pretrained", "device": "from_pretrained / to", "out": "Pairs.save", "resume": "-"}
    thresholds = {"real_keep", "min_dice", "min_found_fraction", "min_pixel_distance", "min_feature_distance",
                  "min_object_pixels", "min_contrast", "max_saturation", "qc_seed", "qc_steps"}  # a QCSettings
    assert {"real_keep", "overrides", "seed", "protocol"} <= set(QCSettings.__dataclass_fields__)
    keywords = set(inspect.signature(msgnet.MSGNet.sample).parameters)
    assert options - set(where_else) - thresholds <= keywords, options - set(where_else) - thresholds - keywords


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
