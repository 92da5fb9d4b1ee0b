"""`msgnet run`: the whole job on an imported dataset, with no preset and no override."""

from __future__ import annotations

import json

import pytest

from msgnet.cli import main
from msgnet.data.format import open_dataset
from tests.fixtures_importers import make_folder_fixture


def _imported_tiles(tmp_path):
    """90 RGB 32x32 tiles of 2 object classes, imported from a folder (train 54 / val 18 / test 18)."""
    fx = make_folder_fixture(tmp_path / "src", num=10, size=(64, 64), channels=3, num_classes=3)
    data = tmp_path / "tiles"
    assert main(["data", "import", "folder", str(fx["root"]), "--out", str(data), "--classes", "a,b",
                 "--mode", "tile", "--size", "32", "--overlap", "0.5", "--val-fraction", "0.2",
                 "--test-fraction", "0.2"]) == 0
    return data


def _force_qc(monkeypatch, passes: bool) -> None:
    """Every candidate passes quality control, or none does: the job's two endings, each for certain."""
    from msgnet.evaluation.qc.checker import QualityControl

    original = QualityControl.reasons
    verdict = [] if passes else ["dice"]
    monkeypatch.setattr(QualityControl, "reasons", lambda self, table: [list(verdict) for _ in original(self, table)])


@pytest.mark.slow
@pytest.mark.parametrize("passes", [True, False], ids=["pairs pass qc", "no pair passes qc"])
def test_run_end_to_end_on_an_imported_folder_and_resume(tmp_path, capsys, monkeypatch, passes):
    _force_qc(monkeypatch, passes)
    data = _imported_tiles(tmp_path)
    run = tmp_path / "run"
    cmd = ["run", str(data), "--run", str(run), "--budget", "0.02", "--num", "4", "--seeds", "1",
           "--min-steps", "20", "--qc-steps", "20", "--qc-max-candidates", "128", "--probe-pairs", "6",
           "--device", "cpu"]
    assert main(cmd) == 0
    out = capsys.readouterr().out
    report = run / "report"
    md = (report / "report.md").read_text()
    first = md.splitlines()[0]
    assert first.strip("*") in out
    summary = json.loads((report / "report.json").read_text())
    bench = json.loads((run / "benchmark.json").read_text())
    names = {s["name"] for s in bench["results"][0]["settings"]}
    assert {"real", "augment", "copy-paste@1", "augment+copy-paste@1"} <= names
    # U-Nets compiled where a compiler is (tests turn it off: tests/conftest.py); baselines halved to the two best
    assert bench["protocol"]["compile"] is True and bench["keep_baselines"] == 2
    from msgnet.evaluation.benchmark.policy import DECLARED_POLICIES

    if passes:  # every declared policy was tried, one chosen on val, and the report says which
        assert (run / "generated").is_dir() and len(open_dataset(run / "generated").ids("train")) == 4
        assert {"pairs:" + p for p in DECLARED_POLICIES} <= names
        verdict = bench["results"][0]["verdict"]
        assert summary["policy"] in first and verdict["reference"]["label"] in first
        assert first.startswith("**Adopt ") if verdict["adopt"] else first.startswith("**Don't add these pairs")
        assert "## Quality control of the generated pairs" in md
    else:  # the cap was reached: no pairs, no policy trained, and the report says so instead of a verdict
        assert not (run / "generated").exists() and (run / "generated.partial" / "qc.json").is_file()
        assert not any(n.startswith("pairs:") for n in names)
        assert "were not benchmarked" in first and "passed quality control" in first
    assert "derived-" in md and "kept the weights of step" in md  # derived preset and kept weights reported
    manifest = json.loads((run / "run.json").read_text())  # what the job did, step by step
    assert list(manifest["stages"]) == ["vqvae", "codes", "layout-prior", "prior", "sampling", "benchmark", "report"]
    assert manifest["stages"]["sampling"]["kept"] is passes and manifest["stages"]["report"]["headline"] in out
    assert {"benchmark", "probe", "report"} <= set(manifest["holds"])
    # the sampling settings came from a probe of declared candidates, whose table is in the report
    probe = json.loads((run / "probe.json").read_text())
    chosen = probe["rows"][probe["chosen"]]
    assert len(probe["rows"]) >= 2 and all(r["pairs"] == 6 for r in probe["rows"])
    assert "## How the sampling settings were chosen" in md and f"| **{chosen['guidance']:g}** |" in md
    if passes:
        used = json.loads((run / "generated" / "dataset.json").read_text())["source"]["settings"]
        assert (used["guidance"], used["temperature_codes"]) == (chosen["guidance"], chosen["temperature_codes"])
        page = (report / "report.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page and "<table>" in page
        # a rerun finishes at once from what is there, with the same answer
        assert main(cmd) == 0
        assert (report / "report.md").read_text().splitlines()[0] == first


def test_run_on_a_subset_trains_generator_qc_and_unets_on_the_same_images(tmp_path, capsys):
    data = _imported_tiles(tmp_path)
    run = tmp_path / "run"
    assert main(["run", str(data), "--run", str(run), "--budget", "0.02", "--num", "2", "--seeds", "1",
                 "--min-steps", "10", "--qc-steps", "10", "--qc-max-candidates", "64", "--device", "cpu",
                 "--probe-pairs", "4", "--train-subset", "24"]) == 0
    out = capsys.readouterr().out
    record = json.loads((run / "dataset.json").read_text())
    ids = record["source"]["training_ids"]
    assert len(ids) == 24
    assert "qc: training the consistency segmenter on 24 real training pairs" in out
    bench = json.loads((run / "benchmark.json").read_text())
    runs = [r for setting in bench["results"][0]["settings"] for r in setting["runs"]]
    assert bench["results"][0]["n"] == 24 and runs and all(r["train_real"] == 24 for r in runs)
    import yaml

    # the preset was derived for 24 (read as YAML: the dump folds long lines anywhere)
    assert "24 training images" in yaml.safe_load((run / "preset.yaml").read_text())["source"]
