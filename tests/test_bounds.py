"""Bounds no input can break: windows from validated times, a memory limit per decode worker,
and a folder of files that once took the machine down indexes beside good ones."""

from __future__ import annotations

import sqlite3
import struct
import subprocess
import sys
import time
from fractions import Fraction

import pytest
from harness import ENV
from helpers import write_video

from vidsearch.media.readers import iter_clips, open_video
from vidsearch.media.windows import plan_clips
from vidsearch.settings import FrameSize


def _cli(*args, env=None):
    cmd = [sys.executable, "-m", "vidsearch.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, timeout=300)


def test_header_claiming_1e17_seconds_is_read_as_its_frames(tmp_path):
    path = write_video(tmp_path / "claims.mkv", seconds=2.0, fps=25, seed=3)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88") + 3  # Segment Info's Duration, a float64 in ms
    data[at : at + 8] = struct.pack(">d", 1e20)
    path.write_bytes(bytes(data))
    t = time.monotonic()
    with open_video(path, FrameSize(64)) as reader:
        assert reader.info.duration_s == pytest.approx(2.0)
        assert reader.truncation is None
        plans = plan_clips(reader.frame_times)
        assert len(list(iter_clips(reader, plans))) == len(plans) == 1
    assert time.monotonic() - t < 10


def test_a_million_one_pixel_frames_plan_windows_by_time_not_by_claim(tmp_path):
    import av

    path = tmp_path / "million.nut"
    with av.open(str(path), "w") as c:
        s = c.add_stream("rawvideo", rate=250)
        s.width = s.height = 1
        s.pix_fmt = "rgb24"
        for i in range(10**6):
            p = av.Packet(b"\x80\x40\x20")
            p.pts = p.dts = i
            p.time_base, p.stream, p.is_keyframe = Fraction(1, 250), s, True
            c.mux(p)
    t = time.monotonic()
    with open_video(path, FrameSize(64)) as reader:
        assert (reader.info.num_frames, reader.info.duration_s) == (10**6, pytest.approx(4000.0))
        plans = plan_clips(reader.frame_times)
        clips = list(iter_clips(reader, plans[:2]))
    assert len(plans) == 2000 and [c.frames.shape for c in clips] == [(16, 64, 64, 3)] * 2
    assert time.monotonic() - t < 30


def test_a_decoder_that_allocates_without_end_is_failed_and_the_job_goes_on(tmp_path, tiny_model):
    d = tmp_path / "videos"
    d.mkdir()
    write_video(d / "good.mp4", seconds=2, seed=1)
    write_video(d / "hog.mp4", seconds=2, seed=2)
    env = {**ENV, "VIDSEARCH_FAULT_WORKER": "alloc:hog.mp4"}
    t = time.monotonic()
    r = _cli(
        "index",
        d,
        "--index",
        tmp_path / "idx",
        "--model",
        tiny_model,
        "--workers",
        1,
        "--max-decode-memory",
        1200,
        env=env,
    )
    assert r.returncode == 1, r.stderr
    assert f"failed: {d / 'hog.mp4'}: decoder used more than 1200 MB" in r.stderr
    assert "indexed 1," in r.stderr + r.stdout
    assert time.monotonic() - t < 120


REPRO = {  # the files: NOPTS timestamps from decord, one a 1080p H.264 AVI (read with PyAV
    # now, as everything from 720p up is), and the same below 720p, which decord still reads
    "mpeg4-bframes.avi": dict(codec="mpeg4", bframes=2, size=(320, 240), seconds=6.6),
    "h264-1080p.avi": dict(codec="libx264", size=(1920, 1080), seconds=3.4),
    "h264-480p.avi": dict(codec="libx264", size=(640, 480), seconds=3.4),
    "mpeg2-bframes.mpg": dict(codec="mpeg2video", bframes=2, size=(320, 240), seconds=2.0),
}


def test_the_reproductions_index_beside_good_videos_with_right_lengths(tmp_path, tiny_model):
    d = tmp_path / "videos"
    d.mkdir()
    for i, (name, kw) in enumerate(REPRO.items()):
        write_video(d / name, fps=25, seed=30 + i, **kw)
    write_video(d / "good.mp4", seconds=4.0, seed=40)
    write_video(d / "good.mkv", seconds=3.0, seed=41, codec="mpeg4")
    idx = tmp_path / "idx"
    quiet = _cli("index", d, "--index", idx, "--model", tiny_model, "--workers", 2)
    assert quiet.returncode == 0, quiet.stderr
    assert "@ 0x" not in quiet.stderr  # FFmpeg's own log lines ("[h264 @ 0x…] …") only at -v
    with sqlite3.connect(idx / "catalog.sqlite") as db:
        rows = db.execute(
            "SELECT v.path, v.duration_s, count(c.id) FROM videos v JOIN clips c ON c.video_id = v.id GROUP BY v.id"
        ).fetchall()
    got = {bytes(p).decode().rsplit("/", 1)[1]: (dur, n) for p, dur, n in rows}
    assert got == {
        "mpeg4-bframes.avi": (pytest.approx(6.6, abs=0.04), 4),
        "h264-1080p.avi": (pytest.approx(3.4, abs=0.04), 2),
        "h264-480p.avi": (pytest.approx(3.4, abs=0.04), 2),
        "mpeg2-bframes.mpg": (pytest.approx(2.0, abs=0.04), 1),
        "good.mp4": (pytest.approx(4.0, abs=0.04), 2),
        "good.mkv": (pytest.approx(3.0, abs=0.04), 2),
    }
    verbose = _cli("-v", "index", d, "--index", tmp_path / "idx2", "--model", tiny_model, "--workers", 2)
    assert verbose.returncode == 0, verbose.stderr
    assert f"{d / 'h264-480p.avi'}: decord's timestamps are unusable" in verbose.stderr
    assert "timestamps taken as frame index / 25 fps (AVI files carry no presentation timestamps)" in verbose.stderr
