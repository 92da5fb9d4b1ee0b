"""The smaller workflows as library calls: `eval fidelity|fid|vqvae|class-gain|train-classifier` and
`data build|compare|break-rule`. Their values are checked in the library when the request is made, each
refusal naming the field (never a flag); paths come as ``str`` or ``Path``; the defaults are written
once, in the library, and the command line reads them and reports the same refusal as its flag."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest

import msgnet
from msgnet.cli import as_flags, build_parser, main
from msgnet.data.clevr import build_clevr
from msgnet.data.clevr_scenes import ClevrSpec
from msgnet.data.multi_mnist import MultiMnistSpec, make_multi_mnist
from msgnet.data.rule_breaking import break_allowed_class_sets
from msgnet.data.summary import comparison_grid
from msgnet.errors import UsageError
from msgnet.evaluation.benchmark.request import check_output
from msgnet.evaluation.class_gain import run_class_gain
from msgnet.evaluation.digit_classifier import ClassifierTraining, train_and_save
from msgnet.evaluation.fid import compute_fid, run_fid
from msgnet.evaluation.fidelity import run_fidelity
from msgnet.evaluation.requests import ClassGainRequest, FidelityRequest, FidRequest, VQVAEAdherenceRequest
from msgnet.evaluation.vqvae_adherence import measure_run_vqvae
from tests.fixtures import make_tiny_dataset

SRC = Path(msgnet.__file__).parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("fields") / "data", n=12, size=16)


# -- 1. a bad value from Python: refused when the request is made, naming the field


BAD_VALUES = [
    (lambda: FidelityRequest("d", split=""), "split"),
    (lambda: FidRequest("r", "s", max_images=1), "max_images"),
    (lambda: FidRequest("r", "s", max_images=2.5), "max_images"),
    (lambda: compute_fid(None, None, None, max_images=0), "max_images"),  # checked before the sets are read
    (lambda: VQVAEAdherenceRequest("r", "d", num=-1), "num"),
    (lambda: VQVAEAdherenceRequest("r", "d", seed=-1), "seed"),
    (lambda: VQVAEAdherenceRequest("r", "d", split=None), "split"),
    (lambda: measure_run_vqvae("r", "d", num=-1), "num"),
    (lambda: ClassGainRequest("r", max_maps=-1), "max_maps"),
    (lambda: ClassGainRequest("r", batch_size=0), "batch_size"),
    (lambda: ClassGainRequest("r", seed=True), "seed"),
    (lambda: run_class_gain("r", batch_size=0), "batch_size"),
    (lambda: ClassifierTraining(epochs=0), "epochs"),
    (lambda: ClassifierTraining(seed=-1), "seed"),
    (lambda: ClassifierTraining(lr=float("nan")), "lr"),
    (lambda: ClassifierTraining(max_shift=-1), "max_shift"),
    (lambda: train_and_save("o", training={"epochs": 1}), "training"),
    (lambda: MultiMnistSpec(num=0), "num"),
    (lambda: MultiMnistSpec(num=100.5), "num"),
    (lambda: MultiMnistSpec(seed=-1), "seed"),
    (lambda: MultiMnistSpec(size="64"), "size"),
    (lambda: MultiMnistSpec(val_fraction=1.5), "val_fraction"),
    (lambda: MultiMnistSpec(val_fraction=math.nan), "val_fraction"),
    (lambda: MultiMnistSpec(test_fraction=-0.1), "test_fraction"),
    (lambda: MultiMnistSpec(val_fraction=0.5, test_fraction=0.5), "val_fraction, test_fraction"),
    (lambda: MultiMnistSpec(digit_min=30, digit_max=20), "digit_min, digit_max"),
    (lambda: MultiMnistSpec(digit_min=40, digit_max=40), "digit_max"),
    (lambda: ClevrSpec(num=0), "num"),
    (lambda: ClevrSpec(seed=-3), "seed"),
    (lambda: ClevrSpec(samples=0), "samples"),
    (lambda: ClevrSpec(test_fraction=1.0), "test_fraction"),
    (lambda: ClevrSpec(min_visible_fraction=0.5), "min_visible_fraction"),
    (lambda: comparison_grid([], num=0), "num"),
]


@pytest.mark.parametrize("make, field", BAD_VALUES)
def test_a_bad_value_is_refused_from_python_naming_the_field(make, field):
    with pytest.raises(UsageError, match=f"^{re.escape(field)}: ") as info:
        make()
    assert "--" not in str(info.value)  # a field, never a flag


def test_build_and_break_rule_refuse_before_any_work(data, tmp_path):
    with pytest.raises(UsageError, match="^workers: must be a positive integer, got 0"):
        build_clevr(ClevrSpec(num=3), tmp_path / "c", workers=0)
    with pytest.raises(UsageError, match="^spec: a ClevrSpec"):
        build_clevr({"num": 3}, tmp_path / "c")
    with pytest.raises(UsageError, match="^num: must be a positive integer, got 0"):
        break_allowed_class_sets(data, tmp_path / "b", num=0)
    with pytest.raises(UsageError, match="^seed: must be a non-negative integer, got -1"):
        break_allowed_class_sets(data, tmp_path / "b", seed=-1)
    with pytest.raises(UsageError, match="^mnist .*nope: no such file or folder"):
        make_multi_mnist(MultiMnistSpec(num=10), tmp_path / "mm", mnist=tmp_path / "nope")
    assert not any(p.name in ("c", "b", "mm") for p in tmp_path.iterdir())


# -- 2. paths as str or Path


@pytest.mark.parametrize("wrap", [str, Path])
def test_requests_take_str_or_path(wrap, tmp_path):
    fidelity = FidelityRequest(wrap(tmp_path / "d"), classifier=wrap(tmp_path / "c"))
    assert (fidelity.data, fidelity.classifier) == (tmp_path / "d", tmp_path / "c")
    fid = FidRequest(wrap(tmp_path / "r"), wrap(tmp_path / "s"))
    assert (fid.real, fid.synthetic, fid.classifier) == (tmp_path / "r", tmp_path / "s", None)
    vq = VQVAEAdherenceRequest(wrap(tmp_path / "run"), wrap(tmp_path / "d"))
    assert isinstance(vq.run, Path) and vq.data == tmp_path / "d"
    assert ClassGainRequest(wrap(tmp_path / "run")).run == tmp_path / "run"


@pytest.mark.parametrize("make, field", [
    (lambda: FidelityRequest(3), "data"),
    (lambda: FidRequest("r", ["s"]), "synthetic"),
    (lambda: VQVAEAdherenceRequest("r", "d", classifier=1.5), "classifier"),
    (lambda: ClassGainRequest(None), "run"),
])
def test_a_path_field_refuses_what_is_no_path(make, field):
    with pytest.raises(UsageError, match=f"^{field}: a path \\(str or Path\\)"):
        make()


@pytest.mark.parametrize("wrap", [str, Path])
def test_a_missing_input_names_the_field_given_as_str_or_path(wrap, data, tmp_path):
    with pytest.raises(UsageError, match="^data .*nope: no such directory"):
        run_fidelity(FidelityRequest(wrap(tmp_path / "nope")))
    with pytest.raises(UsageError, match="^synthetic .*nope: no such directory"):
        run_fid(FidRequest(wrap(data), wrap(tmp_path / "nope")))
    with pytest.raises(UsageError, match="^data .*nope: no such directory"):
        measure_run_vqvae(wrap(tmp_path / "run"), wrap(tmp_path / "nope"))


@pytest.mark.parametrize("wrap", [str, Path])
def test_multi_mnist_builds_into_a_str_or_path(wrap, tmp_path):
    out = make_multi_mnist(MultiMnistSpec(num=10, seed=2), wrap(tmp_path / "mm"), progress=False)
    assert out == tmp_path / "mm" and (out / "dataset.json").is_file()


# -- 3. the command line: its defaults are the library's, the same refusal is one line naming the flag


def _defaults(argv: list[str]) -> dict:
    return vars(build_parser().parse_args(argv))


def test_the_command_line_defaults_are_the_librarys():
    mm, spec = _defaults(["data", "build", "multi-mnist", "--out", "o"]), MultiMnistSpec()
    assert (mm["variant"], mm["num"], mm["seed"], mm["size"], mm["val_fraction"], mm["test_fraction"]) == (
        spec.variant, spec.num, spec.seed, spec.size, spec.val_fraction, spec.test_fraction)
    assert mm["digit_size"] == (spec.digit_min, spec.digit_max)
    cl, clevr = _defaults(["data", "build", "clevr", "--num", "5", "--out", "o"]), ClevrSpec()
    assert (cl["variant"], cl["seed"], cl["samples"], cl["min_visible"], cl["val_fraction"], cl["test_fraction"]) == (
        clevr.variant, clevr.seed, clevr.samples, clevr.min_visible_fraction, clevr.val_fraction, clevr.test_fraction)
    cg, req = _defaults(["eval", "class-gain", "--run", "r"]), ClassGainRequest("r")
    assert (cg["split"], cg["max_maps"], cg["batch_size"], cg["seed"]) == (req.split, req.max_maps, req.batch_size,
                                                                          req.seed)
    vq, vreq = _defaults(["eval", "vqvae", "--run", "r", "--data", "d"]), VQVAEAdherenceRequest("r", "d")
    assert (vq["split"], vq["num"], vq["seed"]) == (vreq.split, vreq.num, vreq.seed)
    fid = _defaults(["eval", "fid", "--real", "r", "--synthetic", "s"])
    assert fid["max_images"] == FidRequest("r", "s").max_images
    assert _defaults(["eval", "fidelity", "--data", "d"])["split"] == FidelityRequest("d").split
    tc, training = _defaults(["eval", "train-classifier"]), ClassifierTraining()
    assert (tc["epochs"], tc["seed"]) == (training.epochs, training.seed)


def test_the_command_line_help_shows_the_librarys_default(capsys):
    assert main(["eval", "class-gain", "--help"]) == 0
    assert f"[{ClassGainRequest('r').batch_size}]" in capsys.readouterr().out


@pytest.mark.parametrize("argv, flag", [
    (["eval", "class-gain", "--run", "{t}/run", "--max-maps", "-1"], "--max-maps"),
    (["eval", "class-gain", "--run", "{t}/run", "--batch-size", "0"], "--batch-size"),
    (["eval", "class-gain", "--run", "{t}/run", "--seed", "-1"], "--seed"),
    (["eval", "vqvae", "--run", "{t}/run", "--data", "{d}", "--num", "-1"], "--num"),
    (["eval", "vqvae", "--run", "{t}/run", "--data", "{d}", "--seed", "-1"], "--seed"),
    (["eval", "vqvae", "--run", "{t}/run", "--data", "{t}/nope"], "--data"),
    (["eval", "fid", "--real", "{d}", "--synthetic", "{d}", "--max-images", "1"], "--max-images"),
    (["eval", "fid", "--real", "{d}", "--synthetic", "{t}/nope"], "--synthetic"),
    (["eval", "fidelity", "--data", "{t}/nope"], "--data"),
    (["eval", "train-classifier", "--out", "{t}/c", "--epochs", "0"], "--epochs"),
    (["eval", "train-classifier", "--out", "{t}/c", "--seed", "-1"], "--seed"),
    (["data", "build", "multi-mnist", "--out", "{t}/o", "--seed", "-1"], "--seed"),
    (["data", "build", "multi-mnist", "--out", "{t}/o", "--digit-size", "30:20"], "--digit-size"),
    (["data", "build", "multi-mnist", "--out", "{t}/o", "--mnist", "{t}/nope"], "--mnist"),
    (["data", "build", "clevr", "--out", "{t}/o", "--num", "4", "--seed", "-1"], "--seed"),
    (["data", "build", "clevr", "--out", "{t}/o", "--num", "4", "--workers", "0"], "--workers"),
    (["data", "build", "clevr", "--out", "{t}/o", "--num", "4", "--min-visible", "0.5"], "--min-visible"),
    (["data", "break-rule", "{d}", "--out", "{t}/o", "--num", "0"], "--num"),
    (["data", "compare", "{d}", "--out", "{t}/o.png", "--num", "0"], "--num"),
])
def test_the_command_line_gives_the_same_refusal_as_one_line_naming_the_flag(argv, flag, data, tmp_path, capsys):
    assert main([a.format(t=tmp_path, d=data) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"msgnet: error: {flag}") and "\n" not in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.png").exists()


def test_the_command_line_puts_flags_for_the_fields_a_message_names():
    flags = {"resume": "--resume", "json": "--json", "digit_size": "--digit-size", "external_generator":
             "--external-generator"}
    assert as_flags("resume: needs `json_path` (the results to continue)", flags) == "--resume: needs --json (the " \
                                                                                      "results to continue)"
    assert as_flags("synthetic x: outside; set `external_generator` to compare", flags).endswith(
        "set --external-generator to compare")
    assert as_flags("digit_min, digit_max: need 4 <= min <= max", flags) == "--digit-size: need 4 <= min <= max"
    assert as_flags("x: `not_a_field` stays", flags) == "x: `not_a_field` stays"  # no flag: left as written
    with pytest.raises(UsageError, match=r"^resume: needs `json_path`") as info:
        check_output(None, resume=True)
    assert "--" not in str(info.value)


# -- 4. no library refusal names a flag


def _raised_texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string in the arguments of each ``raise X(...)`` of ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for arg in node.exc.args:
                for part in ast.walk(arg):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        found.append((node.lineno, part.value))
    return found


def test_no_error_of_the_library_names_a_flag():
    named = [f"{p.relative_to(SRC)}:{line}: {text!r}" for p in sorted(SRC.rglob("*.py")) if "cli" not in p.parts
             for line, text in _raised_texts(p) if re.search(r"(?<![\w`-])--[a-z]", text)]
    assert named == []
