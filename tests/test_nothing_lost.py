"""Nothing lost: one writer per output, a full disk in one line with the last good state kept, and
the misreadings that used to be silent (palette images, a stale cache, permissions)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from msgnet.cli import main
from msgnet.data.format import open_dataset
from tests.fixtures import interrupt_sampling_after, make_tiny_dataset, train_tiny_run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("lost"))


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder``'s writer lock, as a second msgnet would."""
    code = ("import sys, time; from msgnet.locks import writing\n"
            "with writing(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_of_a_run_is_refused_naming_the_holder(tiny, tmp_path, capsys):
    data, _ = tiny
    run = tmp_path / "run"
    holder = _hold_lock(run)
    try:
        cmd = ["train", "vqvae", "--config", "tiny", "--data", str(data), "--run", str(run), "--device", "cpu"]
        assert main(cmd) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and "another msgnet process" in err[0]
        assert not (run / "vqvae").exists()  # nothing written beside the holder
    finally:
        holder.send_signal(signal.SIGKILL)  # as `kill -9` would: the OS releases the lock
        holder.wait()
    assert main(cmd) == 0  # a killed holder never blocks the next run
    assert (run / "vqvae" / "model.safetensors").is_file() and not (run / ".msgnet.lock").read_text().strip() == ""


def test_a_second_resume_of_one_sampling_run_is_refused(tiny, tmp_path, capsys):
    _, run = tiny
    args = ["sample", "--run", str(run), "--num", "6", "--batch-size", "2", "--device", "cpu", "--seed", "1",
            "--out", str(tmp_path / "s")]
    with interrupt_sampling_after(1):
        assert main(args) == 130
    partial = tmp_path / "s.partial"
    holder = _hold_lock(partial)
    try:
        capsys.readouterr()
        assert main([*args, "--resume"]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main([*args, "--resume"]) == 0
    assert not (tmp_path / "s" / ".msgnet.lock").exists()  # the finished set carries no lock file
    assert len(open_dataset(tmp_path / "s").ids("train")) == 6


def test_a_full_disk_during_a_checkpoint_is_one_line_and_a_resume_finishes_the_same(tiny, tmp_path, capsys,
                                                                                     monkeypatch):
    import msgnet.io as io

    data, _ = tiny
    cmd = ["train", "vqvae", "--config", "tiny", "--data", str(data), "--device", "cpu"]
    assert main([*cmd, "--run", str(tmp_path / "whole")]) == 0
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd: int) -> None:  # the second checkpoint's weights find the disk full
        # Named by its descriptor: text files and folders are fsynced too (issue 34), so a count of all
        # fsyncs would not say which write it is.
        if ".model.safetensors." in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(io.os, "fsync", fsync)
    run = tmp_path / "full"
    capsys.readouterr()
    assert main([*cmd, "--run", str(run)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("msgnet")]  # not the bar
    assert len(err) == 1 and "no space left on the device" in err[0] and "--resume" in err[0]
    assert "Traceback" not in err[0]
    assert "checkpoint.new" in err[0] or "model.safetensors" in err[0]
    assert not (run / "vqvae" / "checkpoint.new").exists()  # no half-written checkpoint
    assert (run / "vqvae" / "checkpoint" / "model.safetensors").is_file()  # the last good one stays
    monkeypatch.setattr(io.os, "fsync", real_fsync)
    assert main([*cmd, "--run", str(run), "--resume"]) == 0
    assert ((run / "vqvae" / "model.safetensors").read_bytes()
            == (tmp_path / "whole" / "vqvae" / "model.safetensors").read_bytes())


def test_a_palette_image_in_a_dataset_is_read_as_its_colours(tmp_path):
    data = make_tiny_dataset(tmp_path / "d", n=8, size=16, channels=1, num_classes=3)
    ds = open_dataset(data)
    first = ds.ids("train")[0]
    grey = ds.read_image(first)[..., 0]
    # The same picture as palette indices: value v stored as index k, the palette maps k back to v.
    values = sorted(set(grey.ravel().tolist()), reverse=True)
    indices = np.zeros_like(grey)
    for k, v in enumerate(values):
        indices[grey == v] = k
    palette_image = Image.fromarray(indices, mode="P")
    palette_image.putpalette([c for v in values for c in (v, v, v)])
    palette_image.save(ds.image_path(first))
    assert np.asarray(Image.open(ds.image_path(first))).tolist() != grey.tolist()  # indices, not values
    assert np.array_equal(open_dataset(data).read_image(first)[..., 0], grey)


def test_an_image_edited_in_place_is_not_served_from_a_stale_cache(tmp_path):
    data = make_tiny_dataset(tmp_path / "d", n=8, size=16, channels=1, num_classes=3)
    ds = open_dataset(data)
    images, _ = ds.load_split("train")  # writes the cache
    first = ds.ids("train")[0]
    edited = 255 - images[0, ..., 0]
    time.sleep(0.01)
    Image.fromarray(edited, mode="L").save(ds.image_path(first))
    again, _ = open_dataset(data).load_split("train")
    assert np.array_equal(again[0, ..., 0], edited)


def test_outputs_get_the_users_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        data = make_tiny_dataset(tmp_path / "d", n=8, size=16, channels=1, num_classes=3)
        from msgnet.io import atomic_write_text

        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert (data.stat().st_mode & 0o777) == 0o755
    assert ((tmp_path / "f.txt").stat().st_mode & 0o777) == 0o644


def test_a_moved_run_cannot_resume_sampling_and_says_why(tiny, tmp_path, capsys):
    import shutil

    _, run = tiny
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    args = ["sample", "--num", "6", "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path / "s")]
    with interrupt_sampling_after(1):
        assert main([*args, "--run", str(copy)]) == 130
    moved = tmp_path / "moved"
    copy.rename(moved)
    capsys.readouterr()
    assert main([*args, "--run", str(moved), "--resume"]) == 2
    assert "a moved or copied run" in capsys.readouterr().err


def test_an_unreadable_record_is_one_line(tiny, monkeypatch, capsys):
    """As a user without read permission meets it (root reads everything, so the refusal is staged)."""
    data, _ = tiny
    real_read = Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == "dataset.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert main(["data", "info", str(data), "--no-preview"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "dataset.json: permission denied" in err[0]


def test_a_full_disk_while_building_a_dataset_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from msgnet.data import writer

    real_save, calls = Image.Image.save, {"n": 0}

    def save(self, fp, *args, **kwargs):  # the disk fills up at the 5th PNG
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    out = tmp_path / "built"
    assert main(["data", "build", "multi-mnist", "--num", "20", "--out", str(out)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("msgnet")]
    assert err == [f"msgnet: error: {out}: no space left on the device (free some space and rerun)"]
    assert list(tmp_path.iterdir()) == [] and writer.TMP_PREFIX  # no dataset, no temporary folder left
