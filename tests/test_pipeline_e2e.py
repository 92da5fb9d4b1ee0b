"""train all (tiny preset) -> sample -> read back, through the CLI as a user would."""

import json

import numpy as np
import pytest
from PIL import Image

from msgnet.cli import main
from msgnet.data.format import open_dataset
from tests.fixtures import interrupt_sampling_after, make_tiny_dataset, train_tiny_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("e2e"))


def test_train_all_writes_every_stage(trained_run):
    """Each stage's weights rebuild from their config into the preset's model, trained for the preset's
    steps; the codes hold every training image; the manifest says what is done."""
    import csv

    from msgnet.config import load_preset
    from msgnet.models.priors import load_prior
    from msgnet.models.vqvae import DoublePathVQVAE
    from msgnet.run_dir import RunDir
    from msgnet.training.codes import load_codes

    data, run = trained_run
    preset, run_dir = load_preset("tiny"), RunDir(run)
    vqvae = DoublePathVQVAE.from_pretrained(run_dir.vqvae, "cpu")
    assert vqvae.config == preset.vqvae
    assert load_prior(run_dir.prior).config == preset.prior
    assert load_prior(run_dir.layout_prior).config == preset.layout_prior
    for folder, train in ((run_dir.vqvae, preset.vqvae_train), (run_dir.prior, preset.prior_train),
                          (run_dir.layout_prior, preset.layout_prior_train)):
        with (folder / "metrics.csv").open() as f:
            steps = [int(r["step"]) for r in csv.DictReader(f) if r["split"] == "train"]
        assert steps[-1] == train.iterations, folder
    codes, layouts, _ = load_codes(run, "train")
    n_train = len(open_dataset(data).ids("train"))
    lat = preset.vqvae.latent_size
    assert codes.shape == (n_train, 2 * lat, lat) and layouts.shape == (n_train, lat, lat)
    assert int(codes.max()) < preset.vqvae.num_embeddings
    manifest = run_dir.read_manifest()
    assert list(manifest["stages"]) == ["vqvae", "codes", "layout-prior", "prior"] and manifest["method"] == "msgnet"


def test_sample_writes_a_readable_dataset(trained_run, tmp_path, capsys):
    _, run = trained_run
    out = tmp_path / "gen"
    assert main(["sample", "--run", str(run), "--num", "5", "--out", str(out), "--batch-size", "2",
                 "--device", "cpu"]) == 0
    ds = open_dataset(out)
    images, layouts = ds.load_split("train")
    assert images.shape == (5, 16, 16, 1) and layouts.shape == (5, 16, 16)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["source"]["generated"] is True and meta["source"]["settings"]["num"] == 5
    assert (out / "preview.png").is_file()
    assert main(["data", "info", str(out), "--no-preview"]) == 0
    # boxes are the connected components of the written layouts
    from msgnet.layouts import boxes_to_layout
    anns = ds.annotations()
    for iid in ds.ids("train"):
        lay = ds.read_layout(iid)
        assert ((boxes_to_layout(anns.get(iid, []), lay.shape) > 0) >= (lay > 0)).all()


def test_sampling_is_deterministic_for_a_seed_and_resumable(trained_run, tmp_path):
    _, run = trained_run
    args = ["sample", "--run", str(run), "--num", "6", "--batch-size", "2", "--device", "cpu", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, la = open_dataset(tmp_path / "a").load_split("train")
    b, lb = open_dataset(tmp_path / "b").load_split("train")
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    # interrupt after the first batch: simulate by sampling 2 of the batches then resuming
    with interrupt_sampling_after(1):
        assert main([*args, "--out", str(tmp_path / "c")]) == 130
    assert (tmp_path / "c.partial").is_dir() and not (tmp_path / "c").exists()
    assert main([*args, "--out", str(tmp_path / "c")]) == 2  # refuses without --resume
    assert main([*args, "--out", str(tmp_path / "c"), "--resume"]) == 0
    c, lc = open_dataset(tmp_path / "c").load_split("train")
    assert np.array_equal(a, c) and np.array_equal(la, lc)


def test_pre_msgnet_uses_given_layouts(trained_run, tmp_path):
    data, run = trained_run
    out = tmp_path / "pre"
    assert main(["sample", "--run", str(run), "--num", "4", "--out", str(out), "--layouts", str(data),
                 "--device", "cpu"]) == 0
    given = open_dataset(data)
    ids = given.ids("train")[:4]
    _, layouts = open_dataset(out).load_split("train")
    for k, iid in enumerate(ids):
        assert np.array_equal(layouts[k], given.read_layout(iid))


def test_sample_refuses_bad_input(trained_run, tmp_path, capsys):
    _, run = trained_run
    assert main(["sample", "--run", str(tmp_path / "nope"), "--num", "2", "--out", str(tmp_path / "o")]) == 2
    assert main(["sample", "--run", str(run), "--num", "0", "--out", str(tmp_path / "o")]) == 2
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(tmp_path / "o"),
                 "--layouts", str(tmp_path / "missing")]) == 2
    assert main(["sample", "--run", str(run), "--num", "2", "--out", str(tmp_path / "o"), "--sampler", "cuda-graph",
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("msgnet: error:") for line in err)
    assert "cuda-graph" in err[3] and "CUDA" in err[3]
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_layout_prior_alone_and_its_rule_coherency(tmp_path, capsys):
    data = make_tiny_dataset(tmp_path / "data", n=16, size=16)
    meta = json.loads((data / "dataset.json").read_text())
    meta["rule"] = {"object_count": {"min": 1, "max": 2}}
    (data / "dataset.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    assert main(["train", "layout-prior", "--config", "tiny", "--data", str(data), "--run", str(run),
                 "--device", "cpu"]) == 0
    assert not (run / "vqvae").exists() and (run / "layout_prior" / "model.safetensors").is_file()
    out = tmp_path / "coh.json"
    preview = tmp_path / "layouts.png"
    assert main(["eval", "layouts", "--run", str(run), "--num", "20", "--json", str(out), "--device", "cpu",
                 "--preview", str(preview)]) == 0
    result = json.loads(out.read_text())
    assert result["num"] == 20 and 0 <= result["obeying"] <= 20
    lo, hi = result["obey_rate_95ci"]
    assert lo <= result["obey_rate"] <= hi
    # The rule is only "1 or 2 objects", so the histogram alone decides who obeys.
    counts = {int(k): v for k, v in result["object_counts"].items()}
    assert sum(counts.values()) == 20
    assert counts.get(1, 0) + counts.get(2, 0) == result["obeying"]
    # 20 tiles of 16 px (x2 scale, 8 columns -> 3 rows); a red frame exactly on the rule breakers.
    grid_img = np.asarray(Image.open(preview).convert("RGB"))
    assert grid_img.shape == (2 * (3 * 18 + 2), 2 * (8 * 18 + 2), 3)
    framed = sum(tuple(grid_img[2 * (2 + (k // 8) * 18), 2 * (2 + (k % 8) * 18)]) == (255, 0, 0) for k in range(20))
    assert framed == 20 - result["obeying"]


def _sample_rank(rank: int, world: int, port: int, argv: list[str]) -> None:
    import os

    import torch

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    assert main(argv) == 0


@pytest.mark.slow
def test_two_sampling_processes_write_the_dataset_one_process_writes(trained_run, tmp_path):
    """torchrun-style sampling (2 gloo processes) deals the batches out; every file but the
    wall time in dataset.json is byte-identical to a single process's, and so is a resumed split run."""
    import torch.multiprocessing as mp

    from tests.test_train_loop import _free_port

    _, run = trained_run
    args = ["sample", "--run", str(run), "--num", "7", "--batch-size", "2", "--device", "cpu", "--seed", "5"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    mp.spawn(_sample_rank, args=(2, _free_port(), [*args, "--out", str(tmp_path / "two")]), nprocs=2, join=True)
    # A split run interrupted after one written batch, resumed by two processes.
    with interrupt_sampling_after(1):
        assert main([*args, "--out", str(tmp_path / "resumed")]) == 130
    mp.spawn(_sample_rank, args=(2, _free_port(), [*args, "--out", str(tmp_path / "resumed"), "--resume"]),
             nprocs=2, join=True)

    def files(d):
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    one = files(tmp_path / "one")
    assert len([f for f in one if f.startswith("images/")]) == 7
    for other in ("two", "resumed"):
        got = files(tmp_path / other)
        assert got.keys() == one.keys()
        for name in one:
            if name != "dataset.json":
                assert got[name] == one[name], (other, name)
        a, b = (json.loads(x["dataset.json"]) for x in (one, got))
        a["source"].pop("sampling_seconds"), b["source"].pop("sampling_seconds")
        assert a == b
