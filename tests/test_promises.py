"""The README's exit-code table, walked: for every code it lists, one real way to get it.

Each case builds its setup from scratch (a small indexed library, a file, a signal) and runs the
real CLI; the codes come from the README, so a code added there without a case here fails.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from harness import ENV, catalog_state
from helpers import write_videos

README = Path(__file__).resolve().parents[1] / "README.md"


def exit_code_table() -> dict[int, str]:
    """{code: meaning} from the README's "Exit codes" section."""
    text = README.read_text()
    section = text[text.index("### Exit codes") :]
    section = section[: section.index("\n## ")]
    return {int(code): meaning for code, meaning in re.findall(r"^\| (\d+) \| (.+) \|$", section, re.M)}


@pytest.fixture(scope="module")
def library(tmp_path_factory, vs):
    """A folder of two short videos, indexed: the starting point most cases copy."""
    root = tmp_path_factory.mktemp("promises")
    videos = write_videos(root / "videos", 2, seed=70, seconds=4)
    idx = root / "idx"
    r = vs.index(videos, idx)
    assert r.exit_code == 0, r.output
    return videos, idx


def fresh_copy(library, tmp_path) -> tuple[Path, Path]:
    videos, idx = library
    shutil.copytree(videos, tmp_path / "videos")
    shutil.copytree(idx, tmp_path / "idx")
    return tmp_path / "videos", tmp_path / "idx"


def one_line(output: str) -> str:
    """The error's line: exactly one non-empty line of output, and no traceback."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output
    assert len(lines) == 1, output
    return lines[0]


def code_0(vs, library, tmp_path):
    videos, idx = fresh_copy(library, tmp_path)
    r = vs("search", videos / "v0.mp4", "--index", idx, "--json")
    assert r.exit_code == 0, r.output
    return r.exit_code


def code_1(vs, library, tmp_path):
    videos, idx = fresh_copy(library, tmp_path)
    (videos / "broken.mp4").write_bytes(os.urandom(4096))
    r = vs.index(videos, idx)
    assert re.search(r"failed: .*broken\.mp4: ", r.output), r.output
    return r.exit_code


def code_2(vs, library, tmp_path):
    videos, idx = fresh_copy(library, tmp_path)
    r = vs("search", videos / "v0.mp4", "--index", idx, "--start", 3, "--end", 2)
    assert "Error: Invalid value for --end: --end (2) must be after --start (3)" in r.output
    return r.exit_code


def code_3(vs, library, tmp_path):
    videos, _ = library
    r = vs("index", videos, "--index", tmp_path / "idx", "--model", tmp_path / "no-such-model")
    assert "no-such-model" in r.output
    return r.exit_code


def code_4(vs, library, tmp_path):
    (tmp_path / "empty").mkdir()
    r = vs("stats", "--index", tmp_path / "empty")
    assert "empty" in one_line(r.output)
    return r.exit_code


def code_5(vs, library, tmp_path):
    videos, idx = fresh_copy(library, tmp_path)
    catalog = idx / "catalog.sqlite"
    data = bytearray(catalog.read_bytes())
    data[:100] = os.urandom(100)  # the SQLite header
    catalog.write_bytes(bytes(data))
    r = vs("stats", "--index", idx)
    assert "catalog.sqlite" in one_line(r.output)
    return r.exit_code


def code_6(vs, library, tmp_path):
    _, idx = library
    query = tmp_path / "query.mp4"
    query.write_text("not a video\n")
    r = vs("search", query, "--index", idx)
    assert "query.mp4" in one_line(r.output)
    return r.exit_code


def code_7(vs, library, tmp_path):
    videos, idx = fresh_copy(library, tmp_path)
    with open(idx / "lock", "r+b") as held:  # what a running job holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(b"pid 1 on elsewhere since 2026-01-01T00:00:00\n")
        held.flush()
        r = vs("remove", videos / "v0.mp4", "--index", idx)
    assert "pid 1 on elsewhere" in one_line(r.output)
    return r.exit_code


def code_8(vs, library, tmp_path):
    videos, idx = fresh_copy(library, tmp_path)
    r = vs("remove", videos / "never-indexed.mp4", "--index", idx)
    assert "never-indexed.mp4" in one_line(r.output)
    return r.exit_code


def code_9(vs, library, tmp_path):
    """A full file system before the job starts: the lock cannot even be written."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs here to fill ({exc})")
    try:
        videos, _ = library
        idx = disk / "idx"
        r = vs.index(videos, idx)
        assert r.exit_code == 0, r.output
        (idx / "lock").unlink()
        with open(disk / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        r = vs("remove", videos / "v0.mp4", "--index", idx)
        assert "space" in one_line(r.output).lower()
        return r.exit_code
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def interrupted_by(sig: int, vs, tmp_path) -> int:
    folder = write_videos(tmp_path / "videos", 4, seed=90, seconds=4)
    idx = tmp_path / "idx"
    env = {**ENV, "VIDSEARCH_FAULT_WORKER": "hang:v3.mp4"}  # so that the job cannot finish first
    proc = subprocess.Popen(
        vs.job(folder, idx),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if catalog_state(idx)[0]:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert catalog_state(idx)[0], "what was committed before the signal is kept"
    return proc.returncode


def code_130(vs, library, tmp_path):
    return interrupted_by(signal.SIGINT, vs, tmp_path)


def code_143(vs, library, tmp_path):
    return interrupted_by(signal.SIGTERM, vs, tmp_path)


CASES = {int(name.removeprefix("code_")): fn for name, fn in globals().items() if name.startswith("code_")}


def test_every_code_in_the_readme_has_a_case():
    assert sorted(exit_code_table()) == sorted(CASES)


@pytest.mark.parametrize("code", sorted(CASES))
def test_exit_code(code, vs, library, tmp_path):
    assert CASES[code](vs, library, tmp_path) == code
