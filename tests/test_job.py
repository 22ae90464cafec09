"""The indexing job end to end: incremental runs, failures, and crashes (SIGKILL) with nothing lost."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import numpy as np
import pytest
from harness import ENV, assert_faiss_matches_catalog, catalog_state
from helpers import write_video, write_videos


@pytest.fixture
def lib_copy(tmp_path, library_videos):
    dst = tmp_path / "videos"
    shutil.copytree(library_videos, dst)
    return dst


def test_incremental_touch_rename_prune(tmp_path, lib_copy, tiny_model, vs):
    idx = tmp_path / "idx"
    r = vs.index(lib_copy, idx)
    assert r.exit_code == 0, r.output
    assert "indexed 3, skipped 0" in r.output
    videos, clips = catalog_state(idx)
    assert len(videos) == 3 and all(s == "indexed" for _, s in videos.values())
    # a.mp4 is 8 s: windows at 0, 2, 4, 6; b.mp4 6 s: 0, 2, 4; c.mkv 5 s: 0, 2, then [3, 5]
    assert sorted(len(c) for c in clips.values()) == [3, 3, 4]
    assert_faiss_matches_catalog(idx)

    r = vs.index(lib_copy, idx)
    assert "indexed 0, skipped 3" in r.output

    # new content in one file: only it is re-indexed, its old clips are gone, ids move on
    old_ids = clips[videos[str(lib_copy / "b.mp4")][0]]
    write_video(lib_copy / "b.mp4", seconds=4, fps=30, size=(128, 128), seed=22)
    r = vs.index(lib_copy, idx)
    assert "indexed 1, skipped 2" in r.output, r.output
    videos2, clips2 = catalog_state(idx)
    new_ids = clips2[videos2[str(lib_copy / "b.mp4")][0]]
    assert len(new_ids) == 2 and min(new_ids) > max(max(c) for c in clips.values())
    assert not set(old_ids) & {i for c in clips2.values() for i in c}
    assert_faiss_matches_catalog(idx)

    # a rename re-embeds nothing: same clip ids under the new path
    a_ids = clips2[videos2[str(lib_copy / "a.mp4")][0]]
    os.rename(lib_copy / "a.mp4", lib_copy / "renamed.mp4")
    r = vs.index(lib_copy, idx)
    assert "indexed 0, skipped 2, moved 1" in r.output, r.output
    videos3, clips3 = catalog_state(idx)
    assert str(lib_copy / "a.mp4") not in videos3
    assert clips3[videos3[str(lib_copy / "renamed.mp4")][0]] == a_ids

    # --prune after deleting a file removes its clips from the catalog and FAISS
    c_ids = clips3[videos3[str(lib_copy / "c.mkv")][0]]
    (lib_copy / "c.mkv").unlink()
    r = vs.index(lib_copy, idx, "--prune")
    assert "pruned 1" in r.output
    videos4, clips4 = catalog_state(idx)
    assert str(lib_copy / "c.mkv") not in videos4
    assert not set(c_ids) & {i for c in clips4.values() for i in c}
    assert_faiss_matches_catalog(idx)


def test_corrupt_and_hanging_files_fail_and_the_rest_is_indexed(tmp_path, lib_copy, tiny_model, vs):
    (lib_copy / "garbage.mp4").write_bytes(os.urandom(5000))
    shutil.copy(lib_copy / "a.mp4", lib_copy / "hang.mp4")
    os.utime(lib_copy / "hang.mp4", ns=(1, 1))
    with open(lib_copy / "hang.mp4", "ab") as f:
        f.write(b"\0")  # a different fingerprint: not an identical copy of a.mp4
    idx = tmp_path / "idx"
    env = {"VIDSEARCH_FAULT_WORKER": "hang:hang.mp4"}
    r = vs.index(lib_copy, idx, "--timeout", 3, env=env)
    assert r.exit_code == 1
    assert "indexed 3" in r.output and "failed 2" in r.output
    assert "garbage.mp4: not a decodable video" in r.output
    assert "hang.mp4: decoding timed out (3s without progress)" in r.output
    videos, _ = catalog_state(idx)
    assert videos[str(lib_copy / "garbage.mp4")][1] == "failed"
    stats = json.loads(vs("stats", "--index", idx, "--json").output)
    assert stats["videos_indexed"] == 3 and stats["videos_failed"] == 2
    assert {f["path"] for f in stats["failed"]} == {str(lib_copy / "garbage.mp4"), str(lib_copy / "hang.mp4")}
    # failures are not retried unless asked
    r = vs.index(lib_copy, idx, "--timeout", 3, env=env)
    assert "indexed 0, skipped 5" in r.output and r.exit_code == 0
    r = vs.index(lib_copy, idx, "--retry-failed", "--timeout", 60)
    assert "indexed 1" in r.output and "failed 1" in r.output  # hang.mp4 decodes now; garbage still fails


def test_decoder_crash_fails_that_video_and_a_new_worker_goes_on(tmp_path, lib_copy, tiny_model, vs):
    idx = tmp_path / "idx"
    r = vs.index(lib_copy, idx, env={"VIDSEARCH_FAULT_WORKER": "crash:b.mp4"})
    assert r.exit_code == 1
    assert "indexed 2" in r.output and "failed 1" in r.output
    assert f"failed: {lib_copy / 'b.mp4'}: decoder crashed (signal 11)" in r.output


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry))
    return kids


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_finishes_with_nothing_twice(tmp_path, tiny_model, vs):
    folder = write_videos(tmp_path / "videos", 8, seed=100)
    idx = tmp_path / "idx"
    cmd, env = vs.job(folder, idx), ENV
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline:
        workers = workers or [
            p for p in _children(proc.pid) if "resource_tracker" not in open(f"/proc/{p}/cmdline").read()
        ]
        if (idx / "catalog.sqlite").exists():
            try:
                done = catalog_state(idx)[0]
            except sqlite3.OperationalError:
                done = {}
            if len(done) >= 2:
                break
        time.sleep(0.05)
    workers = [p for p in _children(proc.pid)] or workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    videos, _ = catalog_state(idx)
    assert 2 <= len(videos) < 8, "the kill should land mid-run"
    assert workers, "decode workers were running"
    t = time.monotonic()
    while any(_alive(p) for p in workers) and time.monotonic() - t < 10:
        time.sleep(0.1)
    assert not [p for p in workers if _alive(p)], "worker processes outlived the killed job"

    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    videos, clips = catalog_state(idx)
    assert sorted(os.path.basename(p) for p in videos) == [f"v{i}.mp4" for i in range(8)]
    assert all(s == "indexed" for _, s in videos.values())
    assert all(len(c) == 3 for c in clips.values())  # 6 s videos: exactly 3 clips each, none twice
    all_ids = [i for c in clips.values() for i in c]
    assert len(all_ids) == len(set(all_ids)) == 24
    assert_faiss_matches_catalog(idx)


def test_api_index_and_remove(tmp_path, lib_copy, encoder):
    import vidsearch

    idx = tmp_path / "idx"
    summary = vidsearch.index_paths(idx, [lib_copy], vidsearch.IndexOptions(workers=1), encoder=encoder)
    assert (summary.indexed, summary.clips, summary.failed) == (3, 10, [])
    removed = vidsearch.remove_paths(idx, [lib_copy / "a.mp4"])
    assert removed == [str(lib_copy / "a.mp4")]
    videos, clips = catalog_state(idx)
    assert len(videos) == 2 and sum(len(c) for c in clips.values()) == 6
    assert_faiss_matches_catalog(idx)
    with pytest.raises(vidsearch.errors.VideoNotFoundError):
        vidsearch.remove_paths(idx, [lib_copy / "nope.mp4"])
    # an identical copy reuses the stored embeddings instead of decoding again
    shutil.copy(lib_copy / "b.mp4", lib_copy / "b-copy.mp4")
    summary = vidsearch.index_paths(idx, [lib_copy], vidsearch.IndexOptions(workers=1), encoder=encoder)
    assert (summary.indexed, summary.copied) == (1, 1)  # a.mp4 comes back; b-copy.mp4 is copied
    videos, clips = catalog_state(idx)
    b, copy = videos[str(lib_copy / "b.mp4")][0], videos[str(lib_copy / "b-copy.mp4")][0]
    assert len(clips[copy]) == len(clips[b]) and not set(clips[copy]) & set(clips[b])
    assert_faiss_matches_catalog(idx)


def test_awkward_names_are_indexed(tmp_path, library_videos, tiny_model, vs):
    folder = tmp_path / "videos"
    folder.mkdir()
    odd = [
        b"with space.mp4",
        "unicodé ü 映像.mp4".encode(),
        b"shell $(rm -rf x); 'q' \"d\" `b`.mp4",
        b"bad\xffbyte.mp4",
    ]
    for name in odd:
        shutil.copy(library_videos / "b.mp4", os.fsencode(folder) + b"/" + name)
        with open(os.fsencode(folder) + b"/" + name, "ab") as f:
            f.write(name)  # distinct content, so none is an identical copy of another
    idx = tmp_path / "idx"
    r = vs.index(folder, idx)
    assert r.exit_code == 0, r.output
    assert "indexed 4" in r.output
    con = sqlite3.connect(idx / "catalog.sqlite")
    stored = sorted(os.path.basename(p) for (p,) in con.execute("select path from videos where status='indexed'"))
    con.close()
    assert stored == sorted(odd)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_what_is_committed(tmp_path, tiny_model, vs):
    folder = write_videos(tmp_path / "videos", 8, seed=200)
    idx = tmp_path / "idx"
    cmd = [c for c in vs.job(folder, idx) if c != "-q"]  # the "interrupted" line is wanted
    env = {**ENV, "VIDSEARCH_FAULT_WORKER": "hang:v7.mp4"}  # so that the job cannot finish before the Ctrl-C
    # a shell's background job (nohup ... &) starts with Ctrl-C ignored, which the job would inherit
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if len(catalog_state(idx)[0]) >= 1:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    videos, clips = catalog_state(idx)
    assert 1 <= len(videos) < 8 and all(len(c) == 3 for c in clips.values())
    assert_faiss_matches_catalog(idx)  # the FAISS file was saved on the way out
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(catalog_state(idx)[0]) == 8


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_with_exit_143(tmp_path, tiny_model, vs):
    folder = write_videos(tmp_path / "videos", 8, seed=201)
    idx = tmp_path / "idx"
    cmd = [c for c in vs.job(folder, idx) if c != "-q"]
    env = {**ENV, "VIDSEARCH_FAULT_WORKER": "hang:v7.mp4"}  # so that the job cannot finish before the SIGTERM
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if len(catalog_state(idx)[0]) >= 1:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.05)
    workers = [p for p in _children(proc.pid) if "resource_tracker" not in open(f"/proc/{p}/cmdline").read()]
    assert workers, "decode workers were running"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err  # not -15: it stopped in order and said so
    assert "terminated: the videos committed so far are kept; run the same command to finish" in err
    assert "Traceback" not in err
    assert not [p for p in workers if _alive(p)], "worker processes outlived the job"
    videos, clips = catalog_state(idx)
    assert 1 <= len(videos) < 8 and all(s == "indexed" for _, s in videos.values())
    assert all(len(c) == 3 for c in clips.values())
    assert_faiss_matches_catalog(idx)  # the FAISS file was saved on the way out
    con = sqlite3.connect(idx / "catalog.sqlite")
    with closing(con):
        assert [s for (s,) in con.execute("select status from runs")] == ["interrupted"]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(catalog_state(idx)[0]) == 8


def test_signals_held_during_a_commit_are_delivered_after_it():
    import vidsearch.indexer.job as job
    from vidsearch.errors import Terminated

    def raise_terminated(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    # Python's own Ctrl-C handler, whatever this process started with (a job started in the
    # background by a shell without job control starts with SIGINT ignored)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    done = []
    try:
        with pytest.raises(Terminated):
            with job._signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("after the signal")  # the block runs to its end first
        with pytest.raises(KeyboardInterrupt) as err:
            with job._signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("after Ctrl-C")
        assert not isinstance(err.value, Terminated)
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    assert done == ["after the signal", "after Ctrl-C"]


def test_cpu_job_says_up_front_how_long_it_will_take(tmp_path, library_videos, encoder, monkeypatch, caplog):
    import vidsearch.indexer.job as pipeline

    real_embed = encoder.embed
    embedded, took = [], []

    def slow_embed(clips, sizes=None):  # a large model on a CPU: a tenth of a second a clip here
        started = time.perf_counter()
        time.sleep(0.1)
        embedded.append(len(clips))
        out = real_embed(clips, sizes)
        took.append(time.perf_counter() - started)
        return out

    monkeypatch.setattr(encoder, "embed", slow_embed)
    monkeypatch.setattr(pipeline, "ESTIMATE_WARN_S", 0.5)
    with caplog.at_level("WARNING", logger="vidsearch"):
        summary = pipeline.index_paths(
            tmp_path / "idx", [library_videos], pipeline.IndexOptions(workers=1), encoder=encoder
        )
    assert sum(embedded) == summary.clips  # timed on real clips: nothing embedded only to time it
    (line,) = [r.getMessage() for r in caplog.records if "on the CPU" in r.getMessage()]
    # 8 + 6 + 5 s of video at one clip every 2 s: about 9 clips (the last windows are not counted),
    # each taking what the first batch took (a loaded machine adds to the 0.1 s slept)
    m = re.search(r"about (\d+) clips at ([\d.]+)s each, roughly (\d+) s of embedding", line)
    assert m and int(m[1]) == 9, line
    per_clip = float(m[2])
    assert per_clip >= 0.1 and abs(per_clip - took[0] / embedded[0]) <= 0.1, (line, took[0], embedded[0])
    assert abs(int(m[3]) - 9 * per_clip) <= 1, line


def test_decord_failing_part_way_is_said_at_v_by_the_job(tmp_path, tiny_model):
    d = tmp_path / "videos"
    d.mkdir()
    path = write_video(d / "a.mp4", seconds=4, size=(128, 96), seed=3)
    env = {**ENV, "VIDSEARCH_FAULT_DECORD": "a.mp4:1"}
    said = f"INFO: {path}: decord failed at 2.0s (fault injected by VIDSEARCH_FAULT_DECORD); read with PyAV from there"
    for flag, idx, times in (("-v", tmp_path / "idx", 1), ("--quiet", tmp_path / "idx2", 0)):
        cmd = [sys.executable, "-m", "vidsearch.cli", flag, "index", d, "--index", idx, "--model", tiny_model]
        r = subprocess.run([str(a) for a in cmd], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        assert r.stderr.splitlines().count(said) == times
        _, clips = catalog_state(idx)
        assert [len(c) for c in clips.values()] == [2]


def test_consume_commits_from_repeated_out_of_order_messages_and_fails_what_never_finished(tmp_path, lib):
    from records import unit

    from vidsearch.indexer.job import Embedded, IndexOptions, IndexSummary, _Job, consume
    from vidsearch.indexer.workers import Done, Failed, Info
    from vidsearch.media.discover import VideoFile
    from vidsearch.media.readers import Clip, VideoInfo

    work = []
    for name in "abcd":
        p = tmp_path / f"{name}.mp4"
        p.write_bytes(name.encode() * 100)
        work.append(_Job(VideoFile(str(p), p.stat().st_size, p.stat().st_mtime_ns, f"fp-{name}"), None))
    info = VideoInfo(str(p), 100, 25.0, 4.0, 64, 64, 0, "h264", "pyav")
    vectors = unit(np.random.default_rng(0), 2)
    no_frames = np.zeros((0, 1, 1, 3), np.uint8)

    def clip(token, i):
        return Embedded(token, Clip(i, 2.0 * i, 2.0 * i + 2, no_frames), 30.0 + i, vectors[i])

    stream = [
        *(clip(0, 1), Done(0, 2, []), Info(0, info, 2), clip(0, 0)),  # any order: committed when all is in
        *(clip(0, 1), Done(0, 2, [])),  # repeated by a retried task: dropped
        *(Info(1, info, 2), clip(1, 0), clip(1, 0), Done(1, 2, [])),  # its second clip never comes
        *(Info(2, info, 2), Failed(2, "decoder crashed (signal 11)"), clip(2, 0)),
        *(Info(3, info, 2), clip(3, 0)),  # no final row
    ]
    lib.vectors()
    summary = IndexSummary()
    consume(lib, work, iter(stream), IndexOptions(), summary)
    lost = "its decode or embedding was lost ({} came back); --retry-failed tries it again"
    assert summary.indexed == 1 and summary.clips == 2
    assert summary.failed == [
        (work[2].file.path, "decoder crashed (signal 11)"),
        (work[1].file.path, lost.format("1 of 2 clips")),
        (work[3].file.path, lost.format("1 of 2 clips")),
    ]
    with lib.catalog.read() as s:
        rows = {os.fsdecode(v.path): v for v in lib.catalog.videos(s)}
        times, stored = lib.catalog.video_clips(s, rows[work[0].file.path].id, 8)
        table = lib.catalog.clip_table(s)
    assert [rows[j.file.path].status for j in work] == ["indexed", "failed", "failed", "failed"]
    assert times.tolist() == [[0.0, 2.0], [2.0, 4.0]]
    assert np.allclose(stored, vectors, atol=1e-3)  # float16 in the catalog
    assert table.pixel_std.tolist() == [30.0, 31.0]
