"""Good settings without flags (issue 32): sampling with no options uses the run's choice (RUN/probe.json),
else the declared defaults, and the output says which values were used and where they came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import msgnet
from msgnet.cli import main
from msgnet.config import load_preset
from msgnet.data.format import open_dataset
from msgnet.errors import UsageError
from msgnet.run_dir import RunDir
from msgnet.sampling.defaults import DECLARED_DEFAULTS, resolve_sampling, run_sampling_defaults
from tests.fixtures import make_tiny_dataset

G, T, S = 2.0, 0.85, "prior-shapes"  # the probe's choice the tests write: not the defaults, so it changes the pairs
FROM_PROBE = {"guidance": "probe.json", "temperature_codes": "probe.json", "layout_source": "probe.json"}
FROM_DEFAULT = {"guidance": "default", "temperature_codes": "default", "layout_source": "default"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A guidable run trained through the library on the tiny preset, 4 steps per stage (as tests/test_api.py)."""
    root = tmp_path_factory.mktemp("defaults")
    data = make_tiny_dataset(root / "data", n=24, size=16, channels=1, num_classes=3)
    run = msgnet.train(root / "run", data, load_preset("tiny", ["prior.condition_dropout=0.2"]), steps=4,
                       device="cpu")
    return run.root


def write_probe(run_dir: Path, guidance: float, temperature_codes: float, layout_source: str | None = None) -> Path:
    """A probe.json as msgnet.workflow.probe writes it, its chosen row the given setting (a probe before
    layout sources were probed has no ``layout_source`` column: ``layout_source`` None)."""
    path = RunDir(run_dir).probe_json
    chosen = {"guidance": guidance, "temperature_codes": temperature_codes, "pass_rate": 0.2}
    if layout_source is not None:
        chosen["layout_source"] = layout_source
    rows = [{"guidance": 1.0, "temperature_codes": 1.0, "layout_source": "prior", "pass_rate": 0.1}, chosen]
    path.write_text(json.dumps({"key": {}, "rows": rows, "chosen": 1, "rule": "test"}))
    return path


@pytest.fixture
def probed(tiny_run):
    """The tiny run with a probe.json choosing (G, T), removed afterwards: the run is shared by the module."""
    path = write_probe(tiny_run, G, T, S)
    yield tiny_run
    path.unlink()


def same(a, b) -> bool:
    return np.array_equal(a.images, b.images) and np.array_equal(a.layouts, b.layouts)


def test_no_options_sample_with_the_probes_choice(probed):
    generator = msgnet.MSGNet.from_pretrained(probed, device="cpu")
    chosen = generator.sample(5, seed=3)
    assert same(chosen, generator.sample(5, seed=3, guidance=G, temperature_codes=T, layout_source=S))
    unguided = generator.sample(5, seed=3, guidance=1.0, temperature_codes=1.0, layout_source=S)
    assert not np.array_equal(chosen.images, unguided.images)
    assert not np.array_equal(chosen.layouts, generator.sample(5, seed=3, guidance=G, temperature_codes=T,
                                                               layout_source="prior").layouts)
    assert tuple(chosen.settings[k] for k in ("guidance", "temperature_codes", "layout_source")) == (G, T, S)
    assert chosen.settings["settings_from"] == FROM_PROBE


def test_an_explicit_option_wins_over_the_probe(probed):
    generator = msgnet.MSGNet.from_pretrained(probed, device="cpu")
    one = generator.sample(5, seed=3, guidance=1.0)
    assert same(one, generator.sample(5, seed=3, guidance=1.0, temperature_codes=T, layout_source=S))  # the others
    assert not np.array_equal(one.images, generator.sample(5, seed=3).images)
    assert one.settings["settings_from"] == {**FROM_PROBE, "guidance": "given"}
    assert (one.settings["guidance"], one.settings["temperature_codes"]) == (1.0, T)


def test_the_cli_without_flags_writes_the_python_calls_pairs(probed, tmp_path, capsys):
    pairs = msgnet.MSGNet.from_pretrained(probed, device="cpu").sample(5, seed=4)
    assert main(["sample", "--run", str(probed), "--num", "5", "--seed", "4", "--out", str(tmp_path / "cli"),
                 "--device", "cpu"]) == 0
    images, layouts = open_dataset(tmp_path / "cli").load_split("train")
    assert np.array_equal(images, pairs.images) and np.array_equal(layouts, pairs.layouts)
    source = json.loads((tmp_path / "cli" / "dataset.json").read_text())["source"]
    assert (source["settings"]["guidance"], source["settings"]["temperature_codes"]) == (G, T)
    assert source["settings_from"] == FROM_PROBE
    assert "guidance 2 (the run's choice, RUN/probe.json)" in capsys.readouterr().out
    # a flag wins, and the set says it was given
    assert main(["sample", "--run", str(probed), "--num", "5", "--seed", "4", "--out", str(tmp_path / "flag"),
                 "--guidance", "1", "--device", "cpu"]) == 0
    source = json.loads((tmp_path / "flag" / "dataset.json").read_text())["source"]
    assert source["settings"]["guidance"] == 1.0 and source["settings_from"]["guidance"] == "given"


def test_without_a_probe_the_defaults_are_todays(tiny_run, tmp_path):
    assert not RunDir(tiny_run).probe_json.exists()
    generator = msgnet.MSGNet.from_pretrained(tiny_run, device="cpu")
    plain = generator.sample(5, seed=3)
    assert same(plain, generator.sample(5, seed=3, guidance=1.0, temperature_codes=1.0, layout_source="prior"))
    assert plain.settings["settings_from"] == FROM_DEFAULT
    assert main(["sample", "--run", str(tiny_run), "--num", "5", "--seed", "3", "--out", str(tmp_path / "cli"),
                 "--device", "cpu"]) == 0
    images, _ = open_dataset(tmp_path / "cli").load_split("train")
    assert np.array_equal(images, plain.images)
    source = json.loads((tmp_path / "cli" / "dataset.json").read_text())["source"]
    assert source["settings_from"] == FROM_DEFAULT


def test_a_guided_choice_is_not_applied_to_a_prior_that_cannot_be_guided(tmp_path):
    write_probe(tmp_path, 3.0, 0.85)
    assert run_sampling_defaults(tmp_path, guidable=True) == {  # a probe before layout sources were probed
        "guidance": (3.0, "probe.json"), "temperature_codes": (0.85, "probe.json"),
        "layout_source": ("prior", "default")}
    # chosen for another (guidable) prior: the whole choice is stale, the declared defaults apply
    for guidable in (False, None):
        assert run_sampling_defaults(tmp_path, guidable) == {"guidance": (1.0, "default"),
                                                             "temperature_codes": (1.0, "default"),
                                                             "layout_source": ("prior", "default")}
    write_probe(tmp_path, 1.0, 0.85)  # an unguided choice any prior can follow
    assert run_sampling_defaults(tmp_path, guidable=False)["temperature_codes"] == (0.85, "probe.json")


def test_a_damaged_probe_is_refused_naming_the_file_unless_every_setting_is_given(tmp_path):
    RunDir(tmp_path).probe_json.write_text("{not json")
    with pytest.raises(UsageError, match="probe.json: unreadable.*guidance, temperature_codes, layout_source"):
        resolve_sampling({"guidance": 2.0, "temperature_codes": 0.9, "layout_source": None}, tmp_path, True)
    write_probe(tmp_path, 2.0, 0.9, "nowhere")
    with pytest.raises(UsageError, match="probe.json: unreadable"):
        run_sampling_defaults(tmp_path, True)
    given = {"guidance": 2.0, "temperature_codes": 0.9, "layout_source": "prior-shapes"}
    assert resolve_sampling(given, tmp_path, True) == (given, {name: "given" for name in given})


def test_the_defaults_are_the_settings_the_probe_chooses():
    from msgnet.workflow.probe import Candidate

    assert set(vars(Candidate(1.0, 1.0))) == set(DECLARED_DEFAULTS)
    # Without a probe: no guidance, the model's own distribution, layouts as the layout prior draws them.
    assert DECLARED_DEFAULTS == {"guidance": 1.0, "temperature_codes": 1.0, "layout_source": "prior"}
