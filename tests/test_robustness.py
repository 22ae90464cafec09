"""Robustness: broken and awkward files, crashes at named fault points, disk full, concurrent use,
and `vidsearch verify`. Nothing already indexed may be lost or corrupted."""

import errno
import gc
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest
from harness import ENV, assert_faiss_matches_catalog, catalog_state
from helpers import open_files_under, write_video, write_videos


def write_audio_only(path):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_vfr(path):
    """3 s at 10 fps, then 1 s at 30 fps: 60 frames over 4 s with real, irregular timestamps."""
    import av

    times = [i / 10 for i in range(30)] + [3 + i / 30 for i in range(30)]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        rng = np.random.default_rng(5)
        for t in times:
            f = av.VideoFrame.from_ndarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), format="rgb24")
            f.pts, f.time_base = int(round(t * 1000)), Fraction(1, 1000)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return times


def test_broken_files_each_fail_with_one_line_and_the_rest_is_indexed(
    tmp_path, library_videos, tiny_model, monkeypatch, vs
):
    from PIL import Image

    import vidsearch.media.discover as discover

    d = tmp_path / "videos"
    d.mkdir()
    shutil.copy(library_videos / "a.mp4", d / "good.mp4")
    (d / "empty.mp4").write_bytes(b"")
    whole = write_video(tmp_path / "whole.mp4", seconds=3, seed=9)
    data = whole.read_bytes()
    (d / "cut_index_at_end.mp4").write_bytes(data[: len(data) // 2])
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (d / "text.mp4").write_text("not a video\n" * 100)
    Image.new("RGB", (64, 48), (200, 10, 10)).save(d / "image.mp4", format="PNG")
    write_audio_only(d / "audio.mp4")
    mdat = data.index(b"mdat")  # the frames' bytes zeroed: a video stream with nothing decodable
    (d / "zero_frames.mp4").write_bytes(data[: mdat + 4] + bytes(len(data) - mdat - 4))
    shutil.copy(library_videos / "b.mp4", d / "unreadable.mp4")
    real = discover.sampled_hash

    def no_permission(path, size=None):  # the tests run as root: simulate the permission error
        if os.path.basename(path) == "unreadable.mp4":
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real(path, size)

    monkeypatch.setattr(discover, "sampled_hash", no_permission)
    r = vs.index(d, tmp_path / "idx")
    assert r.exit_code == 1, r.output
    assert "indexed 1," in r.output and "failed 8" in r.output
    failed = {
        line.split(": ", 2)[1]: line.split(": ", 2)[2] for line in r.output.splitlines() if line.startswith("failed: ")
    }
    reasons = {os.path.basename(p): why for p, why in failed.items()}
    assert reasons["empty.mp4"] == "file is empty"
    assert reasons["unreadable.mp4"] == "cannot read file (Permission denied)"
    assert reasons["audio.mp4"].startswith("no video stream")
    assert reasons["image.mp4"].startswith("a still image")
    for name in ("cut_index_at_end.mp4", "random.mp4", "text.mp4"):
        assert reasons[name].startswith("not a decodable video"), (name, reasons[name])
    assert "zero_frames.mp4" in reasons
    assert all("\n" not in why for why in reasons.values())
    videos, _ = catalog_state(tmp_path / "idx")
    assert {os.path.basename(p): s for p, (_, s) in videos.items()}["good.mp4"] == "indexed"
    assert sum(s == "failed" for _, s in videos.values()) == 8


def test_files_deleted_or_replaced_while_the_job_runs(tmp_path, library_videos, tiny_model, monkeypatch, vs):
    import vidsearch.indexer.job as pipeline

    d = tmp_path / "videos"
    shutil.copytree(library_videos, d)
    real = pipeline._embed
    done = []

    def embed_then_meddle(*args, **kw):
        spent = real(*args, **kw)
        if not done:
            done.append(1)
            (d / "b.mp4").unlink()
            with open(d / "c.mkv", "ab") as f:
                f.write(b"appended while the job runs")
        return spent

    monkeypatch.setattr(pipeline, "_embed", embed_then_meddle)
    r = vs("index", d, "--index", tmp_path / "idx", "--model", tiny_model, "--workers", 1, "--batch-size", 1)
    assert r.exit_code == 1
    assert "indexed 1" in r.output and "failed 2" in r.output
    assert f"failed: {d / 'c.mkv'}: file changed while it was being indexed" in r.output
    assert f"failed: {d / 'b.mp4'}: " in r.output  # deleted: cannot be read, or gone at commit
    monkeypatch.setattr(pipeline, "_embed", real)
    r = vs("index", d, "--index", tmp_path / "idx", "--model", tiny_model, "--prune")
    assert r.exit_code == 0 and "indexed 1" in r.output and "pruned 1" in r.output  # c.mkv again; b.mp4 gone


def test_awkward_valid_files_are_indexed_correctly(tmp_path, tiny_model, caplog, vs):
    d = tmp_path / "videos"
    d.mkdir()
    write_video(d / "one_frame.mp4", frames=[np.full((96, 128, 3), 120, np.uint8)], size=(128, 96))
    write_vfr(d / "vfr.mp4")
    write_video(d / "rotated.mp4", seconds=2, size=(160, 96), rotation=90)
    whole = write_video(tmp_path / "whole.mkv", seconds=6, seed=4)
    data = whole.read_bytes()
    (d / "truncated.mkv").write_bytes(data[: len(data) // 2])
    r = vs.index(d, tmp_path / "idx")
    assert r.exit_code == 0, r.output
    assert "indexed 4" in r.output
    assert "truncated.mkv: only 3.0s of the 6.0s its header declares could be read" in caplog.text  # the warning
    con = sqlite3.connect(tmp_path / "idx" / "catalog.sqlite")
    rows = {
        os.path.basename(os.fsdecode(p)): (vid, w, h, dur)
        for vid, p, w, h, dur in con.execute(
            "select id, path, width, height, duration_s from videos where status='indexed'"
        )
    }
    clips = {
        name: con.execute("select start_s, end_s from clips where video_id=? order by id", (v[0],)).fetchall()
        for name, v in rows.items()
    }
    con.close()
    assert len(clips["one_frame.mp4"]) == 1
    assert (rows["rotated.mp4"][1], rows["rotated.mp4"][2]) == (96, 160)  # display orientation
    # VFR: 4 s of real time (a constant-rate reading of 60 frames would not say so)
    assert rows["vfr.mp4"][3] == pytest.approx(3 + 30 / 30, abs=0.05)
    # window [0, 2) ends with the frame shown 1.9-2.0 (10 fps part), window [2, 4) with the
    # video's last frame (30 fps part)
    assert clips["vfr.mp4"] == [
        (pytest.approx(0.0), pytest.approx(2.0, abs=2e-3)),
        (pytest.approx(2.0, abs=2e-3), pytest.approx(rows["vfr.mp4"][3], abs=2e-3)),
    ]
    assert 1 <= len(clips["truncated.mkv"]) < 3


@pytest.mark.slow
def test_8k_video_decodes_in_bounded_memory(tmp_path):
    path = write_video(
        tmp_path / "8k.mp4",
        frames=[np.full((4320, 7680, 3), 40 * i, np.uint8) for i in range(3)],
        size=(7680, 4320),
        fps=25,
    )
    code = (
        "from vidsearch.media.readers import iter_clips, open_video\n"
        "from vidsearch.media.windows import plan_clips\n"
        "from vidsearch.settings import FrameSize\n"
        f"r = open_video({str(path)!r}, FrameSize(224))\n"
        "clips = list(iter_clips(r, plan_clips(r.frame_times)))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"  # peak RSS of this exec
        "print(len(clips), clips[0].frames.shape, int(hwm) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr
    n, *shape, peak_mb = out.stdout.replace("(", " ").replace(")", " ").replace(",", " ").split()
    assert int(n) == 1 and [int(x) for x in shape] == [16, 224, 398, 3]
    # 16 full 8K RGB frames alone would be 1.6 GB; one frame at a time (PyAV above 4K) stays far below
    assert int(peak_mb) < 800, f"peak RSS {peak_mb} MB"


@pytest.fixture
def six_videos(tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("six"), 6, seed=300)


def assert_each_video_once(vs, idx, n, clips_each=3):
    videos, clips = catalog_state(idx)
    assert len(videos) == n and all(s == "indexed" for _, s in videos.values())
    assert all(len(c) == clips_each for c in clips.values())
    ids = [i for c in clips.values() for i in c]
    assert len(ids) == len(set(ids))
    assert_faiss_matches_catalog(idx)
    r = vs("verify", "--index", idx)
    assert r.exit_code == 0, r.output


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_decode", "after_embed", "in_commit", "in_faiss_save"])
def test_sigkill_at_each_fault_point_then_rerun(tmp_path, six_videos, tiny_model, point, vs):
    idx = tmp_path / "idx"
    r = subprocess.run(
        vs.job(six_videos, idx),
        env={**ENV, "VIDSEARCH_FAULT": f"{point}:2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    r = subprocess.run(vs.job(six_videos, idx), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_each_video_once(vs, idx, 6)


@pytest.mark.slow
def test_soak_twenty_sigkills_at_random_moments(tmp_path, six_videos, tiny_model, vs):
    idx = tmp_path / "idx"
    rng = random.Random(1)
    kills = 0
    while kills < 20:
        proc = subprocess.Popen(vs.job(six_videos, idx), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(0.5, 6.0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            kills += 1
            continue
        # finished before the kill: start over from nothing so that kills keep landing mid-run
        shutil.rmtree(idx)
    r = subprocess.run(vs.job(six_videos, idx), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert_each_video_once(vs, idx, 6)


def test_disk_full_saving_vectors_keeps_the_previous_state(tmp_path, library_videos, tiny_model, monkeypatch, vs):
    import vidsearch.storage.vectors as vectors

    d = tmp_path / "videos"
    shutil.copytree(library_videos, d)
    idx = tmp_path / "idx"
    assert vs.index(d, idx).exit_code == 0
    before = (idx / "vectors.faiss").read_bytes()
    write_video(d / "new.mp4", seconds=4, seed=77)

    def full(path, chunks):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(vectors, "atomic_write_bytes", full)
    r = vs.index(d, idx)
    assert r.exit_code == 9 and "No space left on device" in r.output and "the catalog is intact" in r.output
    assert (idx / "vectors.faiss").read_bytes() == before  # the previous file is untouched
    monkeypatch.undo()
    videos, _ = catalog_state(idx)
    assert len(videos) == 4  # the new video was committed before the save failed
    r = vs("search", d / "new.mp4", "--index", idx, "--json", "--include-self")
    assert json.loads(r.output)["queries"][0]["results"][0]["path"] == str(d / "new.mp4")  # a reader rebuilds in memory
    assert vs.index(d, idx).exit_code == 0
    assert_faiss_matches_catalog(idx)


def test_disk_full_while_committing_keeps_what_was_committed(tmp_path, library_videos, tiny_model, monkeypatch, vs):
    from sqlalchemy.exc import OperationalError

    from vidsearch.storage.catalog import Catalog

    d = tmp_path / "videos"
    shutil.copytree(library_videos, d)
    idx = tmp_path / "idx"
    real = Catalog._store
    calls = []

    def store(self, session, record, clips, *a):
        if clips:
            calls.append(record.path)
            if len(calls) == 2:
                raise OperationalError("INSERT INTO clips", {}, sqlite3.OperationalError("database or disk is full"))
        return real(self, session, record, clips, *a)

    monkeypatch.setattr(Catalog, "_store", store)
    r = vs("index", d, "--index", idx, "--model", tiny_model, "--workers", 1)
    assert r.exit_code == 9, r.output
    assert "cannot write (database or disk is full); everything committed before is kept" in r.output
    monkeypatch.undo()
    videos, clips = catalog_state(idx)
    assert len(videos) == 1 and all(len(c) > 0 for c in clips.values())
    r = vs.index(d, idx)
    assert r.exit_code == 0 and "indexed 2, skipped 1" in r.output
    assert_faiss_matches_catalog(idx)


@pytest.mark.slow
def test_readers_see_consistent_snapshots_while_a_job_writes(tmp_path, tiny_model, vs):
    from vidsearch.storage.stats import library_stats, open_library
    from vidsearch.storage.vectors import VectorIndex

    d = write_videos(tmp_path / "videos", 10, seed=400)
    idx = tmp_path / "idx"
    proc = subprocess.Popen(vs.job(d, idx), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checks = 0
    seen_generations = set()
    while proc.poll() is None:
        if not (idx / "manifest.json").exists():
            time.sleep(0.05)
            continue
        with open_library(idx) as lib:
            with lib.catalog.read() as s:
                per_video = s.execute(sqlite_text("select video_id, count(*) from clips group by video_id")).all()
                total = lib.catalog.clip_count(s)
                generation = lib.catalog.generation(s)
            assert all(n == 3 for _, n in per_video), "a video was seen half-written"
            assert total == 3 * len(per_video)
            st = library_stats(lib)
            assert st.clips == 3 * st.videos_indexed
            vi = lib.vectors()
            if lib._vectors_generation == generation:
                assert vi.ntotal == total
            seen_generations.add(generation)
            if (idx / "vectors.faiss").exists():
                VectorIndex.load(idx / "vectors.faiss")  # replaced atomically: never seen half-written
        checks += 1
        time.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read()
    assert checks > 5 and len(seen_generations) > 2, (checks, seen_generations)
    assert_each_video_once(vs, idx, 10)


def sqlite_text(sql):
    from sqlalchemy import text

    return text(sql)


def test_second_job_refused_naming_the_holder_and_stale_lock_taken_over(tmp_path, library_videos, tiny_model, vs):
    from vidsearch.storage.library import Library

    idx = tmp_path / "idx"
    assert vs.index(library_videos, idx).exit_code == 0
    holder = Library.open(idx, writable=True)
    try:
        r = vs.index(library_videos, idx)
        assert r.exit_code == 7 and f"pid {os.getpid()}" in r.output and "being written by" in r.output
        assert vs("stats", "--index", idx).exit_code == 0  # readers are not blocked
    finally:
        holder.close()
    (idx / "lock").write_text("pid 999999 on a-dead-host since 2020-01-01T00:00:00\n")  # left by a killed job
    r = vs.index(library_videos, idx)
    assert r.exit_code == 0 and "skipped 3" in r.output


def test_network_filesystem_gets_a_warning(tmp_path, monkeypatch, caplog):
    from records import settings

    import vidsearch.storage.lock as lock
    from vidsearch.storage.library import Library

    monkeypatch.setattr(lock, "filesystem_type", lambda root: "nfs4")
    with caplog.at_level("WARNING", logger="vidsearch"):
        Library.create(tmp_path / "idx", settings()).close()
    assert "network file system (nfs4)" in caplog.text
    assert lock.filesystem_type(tmp_path) is not None  # /proc/mounts is read for real here


def test_verify_detects_and_repairs_each_part(tmp_path, library_videos, tiny_model, vs):
    d = tmp_path / "videos"
    shutil.copytree(library_videos, d)
    idx = tmp_path / "idx"
    assert vs.index(d, idx).exit_code == 0
    r = vs("verify", "--index", idx)
    assert r.exit_code == 0 and "ok: 3 videos, 10 clips" in r.output

    def problems():
        r = vs("verify", "--index", idx, "--json")
        return r.exit_code, json.loads(r.output)

    def repair():
        r = vs("verify", "--index", idx, "--repair")
        assert r.exit_code == 0, r.output
        assert vs("verify", "--index", idx).exit_code == 0
        return r.output

    good = (idx / "vectors.faiss").read_bytes()
    (idx / "vectors.faiss").unlink()
    code, out = problems()
    assert code == 5 and out["problems"][0]["part"] == "vectors" and "missing" in out["problems"][0]["message"]
    assert "rebuilt" in repair()
    (idx / "vectors.faiss").write_bytes(good[: len(good) // 2])
    code, out = problems()
    assert code == 5 and "damaged" in out["problems"][0]["message"]
    repair()
    other = tmp_path / "other"
    assert vs.index(d / "a.mp4", other).exit_code == 0
    shutil.copy(other / "vectors.faiss", idx / "vectors.faiss")
    code, out = problems()
    assert code == 5 and any("belongs to another index" in p["message"] for p in out["problems"])
    repair()

    con = sqlite3.connect(idx / "catalog.sqlite")
    con.execute("pragma foreign_keys=off")
    con.execute("insert into clips (video_id, start_s, end_s, embedding) values (999, 0, 2, ?)", (bytes(128),))
    vid = con.execute("select id from videos where cast(path as text) like '%b.mp4'").fetchone()[0]
    cid = con.execute("select min(id) from clips where video_id=?", (vid,)).fetchone()[0]
    con.execute("update clips set embedding=? where id=?", (np.zeros(64, np.float16).tobytes(), cid))
    con.commit()
    con.close()
    code, out = problems()
    messages = " | ".join(p["message"] for p in out["problems"])
    assert (
        code == 5 and "1 clip rows belong to no video" in messages and f"clip {cid}: embedding norm 0.0000" in messages
    )
    out = repair()
    assert "deleted 1 orphan clip rows" in out and "dropped 1 damaged video(s)" in out, out
    r = vs.index(d, idx)
    assert "indexed 1, skipped 2" in r.output  # b.mp4 embedded again
    assert_faiss_matches_catalog(idx)

    (idx / "manifest.json").write_text("{broken")
    code, out = problems()
    assert code == 5 and out["problems"][0]["part"] == "manifest" and not out["problems"][0]["repairable"]
    assert vs("verify", "--index", idx, "--repair").exit_code == 5


def test_decoder_dying_half_way_through_sending_a_clip_does_not_hang_the_job(tmp_path, library_videos, tiny_model, vs):
    idx = tmp_path / "idx"
    r = subprocess.run(
        vs.job(library_videos, idx),
        env={**ENV, "VIDSEARCH_FAULT_WORKER": "crash_sending:a.mp4"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert f"failed: {library_videos / 'a.mp4'}: decoder crashed (signal 11)" in r.stderr
    videos, _ = catalog_state(idx)
    assert sorted(os.path.basename(p) for p, (_, s) in videos.items() if s == "indexed") == ["b.mp4", "c.mkv"]


def test_copy_or_move_onto_an_indexed_file_leaves_no_orphan_vectors(tmp_path, library_videos, tiny_model, vs):
    from vidsearch.storage.library import Library
    from vidsearch.storage.vectors import VectorIndex

    d = tmp_path / "videos"
    shutil.copytree(library_videos, d)
    idx = tmp_path / "idx"
    assert vs.index(d, idx).exit_code == 0
    shutil.copy(d / "b.mp4", d / "a.mp4")  # cp b.mp4 a.mp4: a is now an identical copy of b
    r = vs.index(d, idx)
    assert r.exit_code == 0 and "copied 1" in r.output
    assert vs("verify", "--index", idx).exit_code == 0
    os.replace(d / "c.mkv", d / "a.mp4")  # mv c.mkv a.mp4: c's embeddings move onto a's path
    r = vs.index(d, idx)
    assert r.exit_code == 0 and "moved 1" in r.output
    assert vs("verify", "--index", idx).exit_code == 0
    assert_faiss_matches_catalog(idx)
    with Library.open(idx) as lib:  # the saved file is current: readers need not rebuild
        assert VectorIndex.load(lib.vectors_path)[1].generation == lib.catalog.generation()


def test_damaged_catalog_pages_give_one_line_and_exit_5(tmp_path, library_videos, tiny_model, vs):
    idx = tmp_path / "idx"
    assert vs.index(library_videos, idx).exit_code == 0
    data = bytearray((idx / "catalog.sqlite").read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the header's page size: pages 2 and 3 get noise
    data[page : 3 * page] = np.random.default_rng(0).integers(0, 256, 2 * page, dtype=np.uint8).tobytes()
    (idx / "catalog.sqlite").write_bytes(bytes(data))
    for cmd in (["stats"], ["dupes"], ["verify"]):
        r = vs(*cmd, "--index", idx)
        assert r.exit_code == 5, (cmd, r.output)
        assert "Traceback" not in r.output and r.output.strip()


def test_bad_faiss_spec_is_refused_before_anything_is_written(tmp_path, library_videos, tiny_model, vs):
    idx = tmp_path / "idx"
    assert vs.index(library_videos, idx).exit_code == 0
    before = (idx / "manifest.json").read_text()
    r = vs.index(library_videos, idx, "--faiss-spec", "Flatt")
    assert r.exit_code == 2 and "not a FAISS index factory string" in r.output
    assert (idx / "manifest.json").read_text() == before
    r = vs.index(library_videos, idx, "--faiss-spec", "IDMap2,Flat")  # the current type: now pinned
    assert r.exit_code == 0 and json.loads((idx / "manifest.json").read_text())["faiss"]["pinned"] is True


def test_prune_only_touches_the_paths_being_indexed(tmp_path, library_videos, tiny_model, vs):
    a, b = tmp_path / "drive_a", tmp_path / "drive_b"
    shutil.copytree(library_videos, a)
    b.mkdir()
    write_video(b / "x.mp4", seconds=3, seed=50)
    idx = tmp_path / "idx"
    assert vs.index(a, idx).exit_code == 0 and vs.index(b, idx).exit_code == 0
    (b / "x.mp4").unlink()  # e.g. drive b unmounted
    (a / "c.mkv").unlink()
    r = vs.index(a, idx, "--prune")
    assert "pruned 1" in r.output
    videos, _ = catalog_state(idx)
    assert str(b / "x.mp4") in videos and str(a / "c.mkv") not in videos
    assert "pruned 1" in vs.index(b, idx, "--prune").output


def test_hard_link_is_indexed_as_a_copy(tmp_path, library_videos, tiny_model, vs):
    d = tmp_path / "videos"
    shutil.copytree(library_videos, d)
    os.link(d / "a.mp4", d / "a-link.mp4")
    r = vs.index(d, tmp_path / "idx")
    assert r.exit_code == 0 and "indexed 3" in r.output and "copied 1" in r.output


def test_bad_query_range_is_a_usage_error(tmp_path, library_videos, tiny_model, vs):
    idx = tmp_path / "idx"
    assert vs.index(library_videos / "a.mp4", idx).exit_code == 0
    r = vs("search", library_videos / "a.mp4", "--index", idx, "--start", 5, "--end", 3)
    assert r.exit_code == 2 and "--end" in r.output


def test_calibration_refuses_an_unusable_threshold(tmp_path, library_videos, tiny_model, monkeypatch, vs):
    import vidsearch.search.calibrate as calibrate

    idx = tmp_path / "idx"
    assert vs.index(library_videos, idx).exit_code == 0
    near_identical = calibrate._Negatives(np.full(20, 0.9995), 1.0, 0, dict.fromkeys(calibrate.REASONS, 0), {})
    monkeypatch.setattr(calibrate, "_negatives", lambda lib, anchors, positives, target_fpr: near_identical)
    before = (idx / "manifest.json").read_text()
    r = vs("calibrate", "--index", idx)
    assert r.exit_code == 1 and "near-identical clips" in r.output and "Nothing stored" in r.output
    assert (idx / "manifest.json").read_text() == before


@pytest.mark.slow
def test_first_run_killed_while_writing_its_manifest_is_finished_by_the_rerun(tmp_path, library_videos, vs):
    idx = tmp_path / "idx"
    r = subprocess.run(
        vs.job(library_videos, idx),
        env={**ENV, "VIDSEARCH_FAULT": "in_atomic_write"},  # the first file written atomically is the manifest
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = sorted(p.name for p in idx.iterdir())
    assert "manifest.json" not in left and "catalog.sqlite" in left and "lock" in left
    assert any(n.startswith(".tmp-") and n.endswith("-manifest.json") for n in left)
    r = vs("stats", "--index", idx)
    assert r.exit_code == 4 and f"no vidsearch index at {idx} yet: its creation is unfinished" in r.output
    r = vs.index(library_videos, idx)
    assert r.exit_code == 0 and "indexed 3, skipped 0" in r.output, r.output
    assert not any(p.name.startswith(".tmp-") for p in idx.iterdir())
    assert_faiss_matches_catalog(idx)
    assert vs("verify", "--index", idx).exit_code == 0


@pytest.mark.slow
def test_disk_full_at_any_point_of_the_first_run_is_exit_9_and_the_rerun_goes_on(tmp_path, tmpfs, vs):
    videos_dir = tmp_path / "videos"
    videos_dir.mkdir()
    write_video(videos_dir / "a.mp4", seconds=4, seed=5)
    fs = tmpfs("4k")
    idx = fs.path / "idx"
    failures = []
    for kib in range(4, 1024, 8):  # the first run starts with one page free, each rerun with 8 KiB more
        r = vs.index(videos_dir, idx)
        if r.exit_code == 0:
            break
        assert r.exit_code == 9, r.output
        failures.append(r.output)
        assert sorted(p.name for p in idx.iterdir()) == ["lock"] or (idx / "manifest.json").exists()
        fs.remount(f"size={kib + 8}k")
    assert r.exit_code == 0, failures
    videos, clips = catalog_state(idx)
    assert videos == {str(videos_dir / "a.mp4"): (1, "indexed")} and clips == {1: [1, 2]}
    assert any("cannot create an index in" in f for f in failures), failures
    assert all(f.count("\n") == 1 for f in failures), failures  # one line each
    assert_faiss_matches_catalog(idx)
    assert vs("verify", "--index", idx).exit_code == 0


@pytest.mark.slow
def test_a_first_run_stopped_by_a_full_disk_leaves_no_file_open_under_the_index(library_videos, tmpfs, vs):
    """Each way a first run can fail on a full disk (the catalog's first page, its tables, SQLite's
    -shm, the manifest, a commit, the FAISS file) closes every file it opened under the index
    without waiting for the garbage collector, so that a long-lived process (a server, this
    harness) keeps no deleted catalog taking room; and every rerun, given 4 KiB more, gets further."""
    fs = tmpfs("4k")
    idx = fs.path / "idx"
    outputs = []
    gc.disable()  # what only the cycle collector would close stays open until it runs: not closed
    try:
        for kib in range(4, 1024, 4):
            r = vs.index(library_videos, idx)
            assert (r.exit_code, open_files_under(idx)) in ((0, []), (9, [])), (kib, r.output, outputs)
            if r.exit_code == 0:
                break
            outputs.append(r.output)
            fs.remount(f"size={kib + 4}k")
    finally:
        gc.enable()
    assert r.exit_code == 0, outputs
    videos, _ = catalog_state(idx)
    assert sorted(status for _, status in videos.values()) == ["indexed"] * 3
    assert any("cannot create an index in" in o for o in outputs), outputs
    assert any("catalog.sqlite: cannot write" in o for o in outputs), outputs  # a commit, after the creation


def test_full_disk_at_job_start_is_exit_9_naming_the_lock(tmp_path, library_videos, tmpfs, vs):
    built = tmp_path / "idx"
    assert vs.index(library_videos, built).exit_code == 0
    fs = tmpfs("2m")
    idx = fs.path / "idx"
    shutil.copytree(built, idx)
    fs.fill()
    said = f"Error: cannot write the lock file {idx / 'lock'} (No space left on device); nothing else was written\n"
    for args in (
        ("index", library_videos, "--model", vs.model),
        ("remove", library_videos / "a.mp4"),
        ("reindex",),
        ("calibrate",),
        ("verify", "--repair"),
    ):
        r = vs(*args, "--index", idx)
        assert (r.exit_code, r.output) == (9, said), args
    r = vs.index(library_videos, fs.path / "new")  # the very first run on a full disk
    assert (r.exit_code, r.output) == (9, said.replace(str(idx), str(fs.path / "new")))
    r = vs("stats", "--index", idx)  # a reader that cannot make SQLite's -shm file: not "damaged"
    assert r.exit_code == 9 and "its file system is full" in r.output, r.output
    (fs.path / "filler").unlink()
    r = vs("verify", "--index", idx)
    assert r.exit_code == 0 and "ok: 3 videos" in r.output


def test_read_only_index_folder_serves_readers_and_writers_say_it_is_read_only(tmp_path, library_videos, tmpfs, vs):
    built = tmp_path / "idx"
    assert vs.index(library_videos, built).exit_code == 0
    with_wal = tmp_path / "with-wal"  # a copy whose last commit is only in its -wal (as a killed job leaves it)
    shutil.copytree(built, with_wal)
    holder = sqlite3.connect(with_wal / "catalog.sqlite")  # keeps the WAL from being checkpointed away
    holder.execute("select 1 from videos").fetchall()
    (tmp_path / "new").mkdir()
    write_video(tmp_path / "new" / "d.mp4", seconds=4, seed=9)
    assert vs.index(tmp_path / "new", with_wal).exit_code == 0
    if os.geteuid() == 0:  # root writes through file modes: only a read-only mount stops it
        fs = tmpfs("8m")
        dest = fs.path
    else:
        dest = tmp_path / "ro"
        dest.mkdir()
    ro, ro_wal = dest / "idx", dest / "with-wal"
    shutil.copytree(built, ro)
    shutil.copytree(with_wal, ro_wal)
    holder.close()
    if os.geteuid() == 0:
        fs.remount("ro")
    else:
        for folder in (ro, ro_wal):
            for p in (*folder.iterdir(), folder):
                p.chmod(0o555 if p.is_dir() else 0o444)
    assert (ro_wal / "catalog.sqlite-wal").stat().st_size > 0 and (ro_wal / "catalog.sqlite-shm").exists()
    before = {p: sorted(q.name for q in p.iterdir()) for p in (ro, ro_wal)}

    stats = json.loads(vs("stats", "--index", ro, "--json").output)
    assert (stats["videos_indexed"], stats["clips"]) == (3, 10)
    stats = json.loads(vs("stats", "--index", ro_wal, "--json").output)
    assert (stats["videos_indexed"], stats["clips"]) == (4, 12)  # the -wal's commit is read
    for args in (("search", library_videos / "b.mp4", "--json", "--include-self"), ("dupes", "--format", "json")):
        r = vs(*args, "--index", ro)
        assert r.exit_code == 0 and r.output == vs(*args, "--index", built).output, args
    r = vs("search", library_videos / "b.mp4", "--index", ro, "--json", "--include-self")
    assert json.loads(r.output)["queries"][0]["results"][0]["path"] == str(library_videos / "b.mp4")
    assert vs("export", tmp_path / "ro.tsv", "--index", ro).exit_code == 0
    assert vs("export", tmp_path / "rw.tsv", "--index", built).exit_code == 0
    assert (tmp_path / "ro.tsv").read_bytes() == (tmp_path / "rw.tsv").read_bytes()
    r = vs("verify", "--index", ro)
    assert r.exit_code == 0 and "ok: 3 videos, 10 clips" in r.output
    r = vs("verify", "--index", ro_wal)
    assert r.exit_code == 0 and "ok: 4 videos, 12 clips" in r.output

    said = f"Error: index folder {ro} is read-only; only search, stats, dupes, export and verify work on it\n"
    for args in (
        ("index", library_videos, "--model", vs.model),
        ("remove", library_videos / "a.mp4"),
        ("reindex",),
        ("calibrate",),
        ("verify", "--repair"),
    ):
        r = vs(*args, "--index", ro)
        assert (r.exit_code, r.output) == (9, said), args
    assert {p: sorted(q.name for q in p.iterdir()) for p in (ro, ro_wal)} == before


def _page_size(db):
    return int.from_bytes(db.read_bytes()[16:18], "big")  # the header's (8 KB, or 4 KB in older catalogs)


def _zero_span(db, page):
    """Zeroes over 3 KB inside one page, as a bad sector or a torn write leaves them: at its end,
    where SQLite keeps a page's cells (the start of a mostly empty 8 KB page holds none)."""
    data = bytearray(db.read_bytes())
    end = _page_size(db) * (page + 1) - 100
    data[end - 3072 : end] = bytes(3072)
    db.write_bytes(bytes(data))


def _sqlite_says_sound(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("pragma integrity_check").fetchall() == [("ok",)]
    except sqlite3.DatabaseError:
        return False
    finally:
        con.close()


def _index_state(idx):
    """Every byte of the index folder that a writer could change (the WAL only when it holds any)."""
    return {p.name: p.read_bytes() for p in idx.iterdir() if p.is_file() and p.name != "lock" and p.stat().st_size}


@pytest.mark.slow
def test_each_damaged_catalog_page_refuses_writers_and_never_crashes_readers(tmp_path, encoder, vs):
    """Issue 12.2: a 40-video catalog with zeroes over 3 KB inside one page, for every page in
    turn. Writers check the catalog before their first write: on damage they exit 5 and write
    nothing (no `runs` row, manifest and vectors untouched). Readers answer as on the intact
    index, or exit 5 with one line; never a traceback."""
    from vidsearch.storage.catalog import ClipRecord, VideoRecord
    from vidsearch.storage.library import Library

    rng = np.random.default_rng(12)
    pristine = tmp_path / "pristine"
    lib = Library.create(pristine, encoder.settings)
    dim = encoder.settings.dim
    for i in range(40):
        vecs = rng.standard_normal((1 + i % 4, dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        record = VideoRecord(f"/library/v{i:02d}.mp4".encode(), 1, 1, f"fp{i}", duration_s=2.0 * len(vecs))
        lib.catalog.store_video(record, [ClipRecord(2.0 * j, 2.0 * j + 2, v) for j, v in enumerate(vecs)])
    lib.vectors()  # saved: the readers have a current vectors file
    lib.close()
    query = write_video(tmp_path / "query.mp4", seconds=2, fps=8, size=(64, 64), seed=7)
    new = write_video(tmp_path / "new.mp4", seconds=2, fps=8, size=(64, 64), seed=8)
    readers = {
        "stats": ["stats"],
        "search": ["search", query, "--model", vs.model],
        "dupes": ["dupes", "--format", "json", "--threshold", "0.5"],
        "export": ["export", tmp_path / "out.npz"],
        "verify": ["verify"],
    }
    writers = {
        "index": ["index", new, "--model", vs.model, "--workers", 1],
        "remove": ["remove", "/library/v03.mp4"],
        "reindex": ["reindex"],
        "verify --repair": ["verify", "--repair"],
        "calibrate": ["calibrate", "--model", vs.model],
    }

    def run(name, argv, page):
        idx = tmp_path / "idx"
        shutil.rmtree(idx, ignore_errors=True)
        shutil.copytree(pristine, idx)
        if page is not None:
            _zero_span(idx / "catalog.sqlite", page)
        before = _index_state(idx)
        r = vs(*argv, "--index", idx)
        assert "Traceback" not in r.output and "internal error" not in r.output, (name, page, r.output)
        return r, before, _index_state(idx)

    intact = {name: run(name, argv, None)[0] for name, argv in readers.items()}
    assert all(r.exit_code == 0 for r in intact.values())
    pages = (pristine / "catalog.sqlite").stat().st_size // _page_size(pristine / "catalog.sqlite")
    assert pages >= 10
    damaged_pages = 0
    for page in range(pages):
        probe = tmp_path / "probe.sqlite"
        shutil.copy(pristine / "catalog.sqlite", probe)
        _zero_span(probe, page)
        sound = _sqlite_says_sound(probe)
        damaged_pages += not sound
        for name, argv in writers.items():
            if name == "calibrate" and sound:
                continue  # the synthetic library has no video files to calibrate on
            r, before, after = run(name, argv, page)
            if sound:
                assert r.exit_code == 0, (name, page, r.output)
            else:
                assert r.exit_code == 5 and "is damaged" in r.output, (name, page, r.output)
                assert after == before, (name, page)  # nothing written, not even a `runs` row
        for name, argv in readers.items():
            r, _, _ = run(name, argv, page)
            assert r.exit_code in (0, 5), (name, page, r.output)
            if sound:
                assert (r.exit_code, r.stdout) == (intact[name].exit_code, intact[name].stdout), (name, page)
            elif r.exit_code == 5 and name != "verify":
                assert r.stdout == "" and r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), (name, page)
            elif r.exit_code == 5:
                assert r.stdout.startswith("catalog: ") and "cannot be repaired" in r.stdout, (page, r.output)
    assert damaged_pages >= 5


def test_orphan_clip_rows_are_skipped_with_a_warning_by_every_reader(tmp_path, library_videos, vs, caplog):
    """Issue 12.2: clip rows whose video row is gone (verify finds them) made `search` crash with
    a KeyError, while `export`, `stats` and `dupes` said nothing. Every reader skips them and warns."""
    idx = tmp_path / "idx"
    assert vs.index(library_videos, idx).exit_code == 0
    con = sqlite3.connect(idx / "catalog.sqlite")
    con.execute("pragma foreign_keys=off")
    con.execute("delete from videos where cast(path as text) like '%b.mp4'")  # its 3 clips stay, and in FAISS
    con.commit()
    con.close()
    warning = (
        f"{idx / 'catalog.sqlite'}: 3 clip rows belong to no video; skipped (`vidsearch verify --repair` deletes them)"
    )
    commands = {
        "search": ["search", library_videos / "b.mp4", "--model", vs.model, "--json"],
        "export": ["export", tmp_path / "out.npz", "--format", "npz"],
        "stats": ["stats", "--json"],
        "dupes": ["dupes", "--format", "json"],
    }
    out = {}
    for name, argv in commands.items():
        caplog.clear()
        r = vs(*argv, "--index", idx)
        assert r.exit_code == 0, (name, r.output)
        assert [m for m in caplog.messages if "belong to no video" in m] == [warning], name
        out[name] = r.stdout
    found = {m["path"] for m in json.loads(out["search"])["queries"][0]["results"]}
    assert found <= {str(library_videos / "a.mp4"), str(library_videos / "c.mkv")} and found
    exported = np.load(tmp_path / "out.npz")
    assert sorted(set(exported["paths"])) == [str(library_videos / "a.mp4"), str(library_videos / "c.mkv")]
    assert len(exported["paths"]) == 7
    assert json.loads(out["stats"])["clips"] == 7
    assert json.loads(out["dupes"])["pairs"] == []
    r = vs("verify", "--index", idx)
    assert r.exit_code == 5 and "3 clip rows belong to no video" in r.output
