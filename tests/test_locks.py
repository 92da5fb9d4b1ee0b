"""msgnet.locks: one writer per folder, re-entrant within a process, released when the holder ends."""

import subprocess
import sys

from msgnet.locks import LOCK_NAME, writing


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with writing(tmp_path / "r"):
        with writing(tmp_path / "r"):  # `msgnet run` holds its run, then trains it
            pass
        assert _other_process_can_take(tmp_path / "r") is False  # still held by the outer block
    assert _other_process_can_take(tmp_path / "r") is True
    assert (tmp_path / "r" / LOCK_NAME).is_file()


def test_a_held_lock_refuses_another_process_naming_this_pid(tmp_path):
    import os

    with writing(tmp_path / "r", "run"):
        code = ("import sys\nfrom msgnet.locks import writing\ntry:\n    with writing(sys.argv[1]): pass\n"
                "except Exception as e:\n    print(e)")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True)
        assert f"another msgnet process (pid {os.getpid()}) is writing this run" in out.stdout


def _other_process_can_take(folder) -> bool:
    code = ("import sys\nfrom msgnet.locks import writing\ntry:\n    with writing(sys.argv[1]): print('took')\n"
            "except Exception:\n    print('refused')")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() == "took"
