"""Adherence while training: the codes prior's validation scores decoded samples against their layouts."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from msgnet.cli import main
from msgnet.evaluation.benchmark.protocol import UNetProtocol
from msgnet.evaluation.qc.checker import QCSettings

FAST = UNetProtocol(channels=(8, 16), strides=(2,), min_steps=30, epochs=1, batch_size=8, curve_points=2)


@pytest.fixture(scope="module")
def run_with_segmenter(tmp_path_factory):
    from msgnet.workflow.checked import prepare_run_qc
    from tests.fixtures import make_tiny_dataset

    root = tmp_path_factory.mktemp("adherence")
    data = make_tiny_dataset(root / "data", n=40, size=16, n_val=12)
    run = root / "run"
    assert main(["train", "all", "--config", "tiny", "--data", str(data), "--run", str(run), "--device", "cpu"]) == 0
    qc = prepare_run_qc(run, QCSettings(protocol=FAST), torch.device("cpu"), progress=False)
    return data, run, qc


def test_probe_scores_decoded_samples_deterministically(run_with_segmenter):
    from msgnet.evaluation.qc.adherence import AdherenceProbe, adherence_probe
    from msgnet.models.priors import load_prior

    _, run, qc = run_with_segmenter
    probe = adherence_probe(run, 4, torch.device("cpu"))
    assert isinstance(probe, AdherenceProbe) and len(probe.layouts) == 4
    assert probe.segmenter.record["fingerprint"] == qc.segmenter.record["fingerprint"]
    prior = load_prior(run / "prior").eval()
    first, second = probe(prior), probe(prior)
    assert 0.0 <= first <= 1.0 and first == second
    # A probe whose segmenter sees what the layouts say scores 1: the score is the agreement itself.
    perfect = dataclasses.replace(probe.segmenter)
    perfect.segment = lambda images: (probe.full.to(torch.uint8), None)  # type: ignore[method-assign]
    assert AdherenceProbe(probe.vqvae, perfect, probe.layouts, (16, 16), 3)(prior) == 1.0


def test_no_probe_without_a_segmenter_trained_on_the_runs_images(run_with_segmenter, tmp_path):
    import shutil

    from msgnet.evaluation.qc.adherence import adherence_probe

    _, run, _ = run_with_segmenter
    other = tmp_path / "copy"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("qc"))
    assert adherence_probe(other, 4, torch.device("cpu")) is None


def test_prior_training_logs_adherence_at_validation(run_with_segmenter, capsys):
    _, run, _ = run_with_segmenter
    assert main(["train", "prior", "--config", "tiny", "--run", str(run), "--resume", "--steps", "8",
                 "prior_train.adherence_pairs=3", "prior_train.val_every=4", "--device", "cpu"]) == 0
    assert "adherence of 3 decoded samples" in capsys.readouterr().out
    with open(run / "prior" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val" and r.get("adherence")]
    assert rows and all(0.0 <= float(r["adherence"]) <= 1.0 for r in rows)
    assert np.isfinite([float(r["loss"]) for r in rows]).all()
