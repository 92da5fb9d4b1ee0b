"""The library keeps the CLI's promises when called from Python (issue 34): it logs rather than prints,
takes paths as ``str`` or ``Path``, checks values naming the field, refuses an output inside an input,
holds the run's lock while writing into a run, refuses a corrupt manifest and fsyncs what it renames."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

import msgnet
from msgnet.cli import console_logging, main
from msgnet.config import load_preset
from msgnet.errors import UsageError
from msgnet.evaluation.benchmark.request import AugmentRequest
from msgnet.evaluation.qc.checker import QCSettings, qc_protocol
from msgnet.evaluation.qc.request import QCRequest
from msgnet.io import atomic_write_json, ensure_output_apart
from msgnet.run_dir import RunDir
from msgnet.workflow.job import JobRequest
from tests.fixtures import make_tiny_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("contract") / "data", n=24, size=16, channels=1, num_classes=3)


@pytest.fixture
def no_vqvae_training(monkeypatch):
    """`train(stages=("vqvae",))` with its trainer replaced by nothing: every check and record, no model."""
    from msgnet.workflow import train as train_module

    monkeypatch.setitem(train_module._TRAINERS, "vqvae", lambda job: None)


# -- 1. logging, not print


def test_library_calls_print_nothing_unless_logging_is_configured(data, tmp_path, no_vqvae_training, capsys, caplog):
    preset = load_preset("tiny")
    msgnet.train(tmp_path / "run", data, preset, stages=("vqvae",), device="cpu")  # used to print "vqvae: done"
    assert capsys.readouterr() == ("", "")
    with caplog.at_level(logging.INFO, logger="msgnet"):
        msgnet.train(tmp_path / "run", data, preset, stages=("vqvae",), resume=True, device="cpu")
    assert any(m.startswith("vqvae: done in") for m in caplog.messages)
    assert capsys.readouterr() == ("", "")
    # The command shows the same line on stdout, as it did when the library printed it.
    assert main(["train", "vqvae", "--config", "tiny", "--data", str(data), "--run", str(tmp_path / "cli"),
                 "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "vqvae: done in" in out and "vqvae: done in" not in err


def test_the_command_line_shows_info_on_stdout_and_warnings_on_stderr_only_while_it_runs(capsys):
    log = logging.getLogger("msgnet.some.module")
    with console_logging():
        log.info("a line")
        log.warning("a warning")
    log.info("after the command")
    assert capsys.readouterr() == ("a line\n", "a warning\n")


# -- 2. str or Path, values checked naming the field


def test_requests_take_str_or_path(tmp_path):
    job = JobRequest(data=str(tmp_path / "d"), run=str(tmp_path / "r"))
    assert job.data == tmp_path / "d" and isinstance(job.run, Path)
    qc = QCRequest(data=str(tmp_path / "g"), real=str(tmp_path / "d"), out=str(tmp_path / "k"))
    assert qc.out == tmp_path / "k" and qc.report_dir == tmp_path / "k"
    assert QCRequest(data=tmp_path / "g", real=tmp_path / "d").report_dir == tmp_path / "g-qc"
    bench = AugmentRequest(real=str(tmp_path / "d"), synthetic=str(tmp_path / "g"), json_path=str(tmp_path / "b.json"))
    assert (bench.real, bench.synthetic, bench.json_path) == (tmp_path / "d", tmp_path / "g", tmp_path / "b.json")
    with pytest.raises(UsageError, match="^data: a path \\(str or Path\\)"):
        JobRequest(data=3, run=tmp_path / "r")  # type: ignore[arg-type]


def test_string_paths_reach_the_one_line_errors_not_a_type_error(data, tmp_path):
    # Once a TypeError (str / "dataset.json") or an AttributeError (str.exists()).
    with pytest.raises(UsageError, match="train, val and test splits"):
        msgnet.run_job(msgnet.JobRequest(data=str(data), run=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()
    with pytest.raises(UsageError, match="nope"):
        msgnet.qc(msgnet.QCRequest(data=str(tmp_path / "nope"), real=str(data), out=str(tmp_path / "k")))
    with pytest.raises(UsageError, match="nope"):
        msgnet.benchmark(msgnet.AugmentRequest(real=str(tmp_path / "nope"), seeds=1))


@pytest.mark.parametrize("make, field", [
    (lambda: QCSettings(min_dice=1.5), "min_dice"),
    (lambda: QCSettings(overrides={"min_dice": 1.5}), "min_dice"),
    (lambda: QCSettings(min_object_pixels=-5), "min_object_pixels"),
    (lambda: QCSettings(min_feature_distance="far"), "min_feature_distance"),
    (lambda: QCSettings(real_keep=1.5), "real_keep"),
    (lambda: QCSettings(overrides={"min_dise": 0.5}), "overrides"),
    (lambda: qc_protocol(0), "qc_steps"),
    (lambda: JobRequest("d", "r", num=0), "num"),
    (lambda: JobRequest("d", "r", qc_steps=0), "qc_steps"),
    (lambda: JobRequest("d", "r", max_candidates=0), "max_candidates"),
    (lambda: JobRequest("d", "r", probe_pairs=1), "probe_pairs"),
    (lambda: JobRequest("d", "r", budget=float("inf")), "budget"),
    (lambda: JobRequest("d", "r", policies=["sideways@2"]), "policies"),
    (lambda: AugmentRequest("d", seeds=0), "seeds"),
    (lambda: AugmentRequest("d", ratios=[float("nan")]), "ratios"),
    (lambda: AugmentRequest("d", settings=["real", "nope"]), "settings"),
    (lambda: AugmentRequest("d", keep_policies=0), "keep_policies"),
    (lambda: AugmentRequest("d", policies=["sideways@2"]), "policies"),
])
def test_bad_values_are_refused_when_the_request_is_made_naming_the_field(make, field):
    with pytest.raises(UsageError, match=f"^{field}: "):
        make()


def test_thresholds_set_as_fields_or_overrides_are_the_same_settings():
    a, b = QCSettings(min_dice=0.5), QCSettings(overrides={"min_dice": 0.5})
    assert a.overrides == b.overrides == {"min_dice": 0.5} and a.min_dice == b.min_dice == 0.5
    assert a.to_json() == b.to_json()


@pytest.mark.parametrize("flag, value", [("--qc-steps", "0"), ("--real-keep", "1.5"), ("--min-contrast", "2")])
def test_the_command_line_names_the_flag_of_the_field_the_library_refused(flag, value, tmp_path, capsys):
    assert main(["qc", "--data", str(tmp_path / "g"), "--real", str(tmp_path / "d"), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"msgnet: error: {flag}: ") and "\n" not in err


# -- 3a. no output inside an input, from Python too


def test_an_output_inside_an_input_is_refused_from_python(data, tmp_path):
    with pytest.raises(UsageError, match=r"^out: .*must lie apart from the input"):
        QCRequest(data=tmp_path / "g", real=data, out=data / "kept")
    with pytest.raises(UsageError, match=r"^out: .*must lie apart from the input"):
        QCRequest(data=tmp_path / "g", real=data, out=tmp_path)  # around an input
    with pytest.raises(UsageError, match=r"^report: .*must lie apart"):
        QCRequest(data=tmp_path / "g", real=data, report=tmp_path / "g" / "qc")
    with pytest.raises(UsageError, match=r"^json_path: .*must lie apart"):
        AugmentRequest(real=data, json_path=data / "bench.json")
    with pytest.raises(UsageError, match=r"^run: .*must lie apart"):
        JobRequest(data=data, run=data / "run")
    with pytest.raises(UsageError, match=r"^run: .*must lie apart"):
        msgnet.train(data / "run", data, load_preset("tiny"), device="cpu")
    assert not (data / "run").exists()
    ensure_output_apart(tmp_path / "elsewhere", data, None, field="out")  # apart, and None is no input


def test_qc_without_out_refuses_a_report_folder_holding_other_files(data, tmp_path):
    from msgnet.evaluation.qc.request import check_report_dir

    (tmp_path / "g-qc").mkdir()
    (tmp_path / "g-qc" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"^report: .*notes.txt"):
        check_report_dir(tmp_path / "g-qc")
    check_report_dir(tmp_path / "new-qc")  # a new folder is fine


# -- 3b. one writer per run


@contextmanager
def held_by_another_process(folder: Path) -> Iterator[None]:
    code = ("import sys\nfrom msgnet.locks import writing\nwith writing(sys.argv[1]):\n"
            "    print('held', flush=True)\n    sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)


def test_two_writers_to_one_run_are_refused(data, tmp_path, capsys):
    from msgnet.evaluation.qc.checker import writing_segmenter
    from msgnet.evaluation.run_report import write_run_report
    from msgnet.workflow.train import extract_run_codes

    run = tmp_path / "run"
    run.mkdir()
    with held_by_another_process(run):
        with pytest.raises(UsageError, match="another msgnet process .* is writing this run"):
            write_run_report(run, None, {})
        with pytest.raises(UsageError, match="another msgnet process"):
            extract_run_codes(RunDir(run), data, "cpu")
        with pytest.raises(UsageError, match="another msgnet process"):
            with writing_segmenter(RunDir(run).qc_segmenter):  # the QC segmenter cached in the run
                pass
        with writing_segmenter(tmp_path / "cache" / "qc-segmenter"):  # a cache no run owns: no lock
            pass
        for argv in (["report", "--run", str(run)], ["codes", "extract", "--run", str(run), "--data", str(data)]):
            capsys.readouterr()
            assert main(argv) == 2
            err = capsys.readouterr().err.strip()
            assert "another msgnet process" in err and "\n" not in err
    assert sorted(p.name for p in run.iterdir()) == [".msgnet.lock"]  # nothing else was written


# -- 3c. a corrupt manifest is refused, not overwritten


@pytest.mark.parametrize("text", ["{\"stages\": {\"vqvae\"", "", "[1, 2]"])
def test_a_corrupt_manifest_is_refused_in_one_line_and_kept(data, tmp_path, text, monkeypatch):
    from msgnet.workflow import train as train_module

    monkeypatch.setitem(train_module._TRAINERS, "vqvae", lambda job: pytest.fail("trained beside a corrupt manifest"))
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.manifest.write_text(text)
    with pytest.raises(UsageError) as refused:
        run.read_manifest()
    message = str(refused.value)
    assert message.startswith(f"{run.manifest}: ") and "\n" not in message and "corrupt" in message
    with pytest.raises(UsageError, match="run.json"):
        run.record_stage("vqvae", seconds=1.0)
    with pytest.raises(UsageError, match="run.json"):
        msgnet.train(run.root, data, load_preset("tiny"), stages=("vqvae",), device="cpu")
    assert run.manifest.read_text() == text
    assert RunDir(tmp_path / "new").read_manifest() == {}  # a run not begun has an empty one


# -- 3d. text files renamed into place are fsynced: the file before the rename, its folder after


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fsynced descriptor")
def test_text_files_are_fsynced_before_the_rename_and_their_folder_after(data, tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", _fd_path(fd)))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    run = RunDir(tmp_path / "run")
    run.record_stage("vqvae", seconds=1.0)  # run.json
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert Path(events[0][1]).name.startswith(".run.json.") and events[1][1] == str(run.manifest)
    assert Path(events[2][1]) == run.root.resolve()
    events.clear()
    atomic_write_json(tmp_path / "config.json", {"kind": "x"})
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    events.clear()
    make_tiny_dataset(tmp_path / "set", n=4)  # DatasetWriter: dataset.json inside, then the folder renamed
    synced = [Path(p).name for kind, p in events if kind == "fsync"]
    assert {"dataset.json", "annotations.json"} <= set(synced) and synced[-1] == tmp_path.name
    assert [kind for kind, _ in events][-2:] == ["replace", "fsync"]
    assert json.loads((tmp_path / "set" / "dataset.json").read_text())["splits"]
