"""`msgnet run` killed with SIGKILL at each of its stages, then rerun, ends with the figures of an
uninterrupted run (tiny configuration, fixed seeds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msgnet.cli import main
from tests.fixtures_importers import make_folder_fixture

# A file whose appearance means the job is inside that stage.
STAGES = {
    "qc segmenter": "qc/segmenter/config.json",
    "vqvae": "vqvae/checkpoint/model.safetensors",
    "codes prior": "prior/checkpoint/model.safetensors",
    "sampling": "generated.partial/progress.json",
    "benchmark": "benchmark.json",
}


def _job(data: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "msgnet.cli", "run", str(data), "--run", str(run), "--config", "tiny",
            "--num", "4", "--seeds", "1", "--min-steps", "20", "--qc-steps", "20", "--qc-max-candidates", "64",
            "--probe-pairs", "4", "--policies", "on-top@0.25", "--device", "cpu"]


def _figures(run: Path) -> dict:
    bench = json.loads((run / "benchmark.json").read_text())
    return {s["name"]: [round(r["dice"], 6) for r in s["runs"]] for e in bench["results"] for s in e["settings"]}


@pytest.fixture(scope="module")
def tiles(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill")
    fx = make_folder_fixture(root / "src", num=10, size=(32, 32), channels=1, num_classes=3)
    data = root / "tiles"
    assert main(["data", "import", "folder", str(fx["root"]), "--out", str(data), "--classes", "a,b", "--mode",
                 "tile", "--size", "16", "--overlap", "0.5", "--val-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    return data


@pytest.fixture(scope="module")
def uninterrupted(tiles, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("whole") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_job(tiles, run), check=True, capture_output=True, env=env, timeout=900)
    return _figures(run)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_job_killed_in_a_stage_and_rerun_gives_the_same_figures(stage, tiles, uninterrupted, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(_job(tiles, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    marker = run / STAGES[stage]
    deadline = time.monotonic() + 600
    while not marker.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, f"the job ended before reaching {stage}"
    job.send_signal(signal.SIGKILL)
    job.wait()
    done = subprocess.run(_job(tiles, run), capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _figures(run) == uninterrupted
