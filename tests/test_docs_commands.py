"""The command lines the docs show are run as written (placeholders filled with a tiny run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from msgnet.cli import main
from msgnet.data.format import open_dataset
from tests.fixtures import make_tiny_dataset

CLI_DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def torchrun_lines() -> list[str]:
    text = CLI_DOC.read_text()
    return [m.strip() for m in re.findall(r"^(torchrun [^\n`]+)$|`(torchrun [^`]+)`", text, re.M) for m in m if m]


def _torchrun(line: str, fill: dict[str, str]) -> subprocess.CompletedProcess:
    for placeholder, value in fill.items():
        line = re.sub(rf"(?<![\w-]){placeholder}(?![\w-])", value, line)
    argv = line.split()
    argv[0] = str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_the_documented_torchrun_command_lines_run(tmp_path):
    lines = torchrun_lines()
    (train,) = [x for x in lines if " train " in x]
    (sample,) = [x for x in lines if " sample " in x]
    data = make_tiny_dataset(tmp_path / "data", n=24, size=16, channels=1, num_classes=3)
    done = _torchrun(train, {"multi-mnist-cpu": "tiny", "DIR": str(data), "RUN": str(tmp_path / "ddp")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "ddp" / "vqvae" / "model.safetensors").is_file()

    run = tmp_path / "run"
    assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run), "--device", "cpu"]) == 0
    done = _torchrun(sample, {"K": "2", "RUN": str(run), "N": "5", "DIR": str(tmp_path / "gen")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert main(["sample", "--run", str(run), "--num", "5", "--out", str(tmp_path / "one"), "--device", "cpu"]) == 0
    two, one = (open_dataset(tmp_path / d).load_split("train") for d in ("gen", "one"))
    assert all(np.array_equal(a, b) for a, b in zip(two, one))  # whatever K, the same pairs
