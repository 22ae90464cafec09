"""The decode worker pool on its own: the message protocol, failures, hangs, crashes and timing."""

import time
from contextlib import closing

import numpy as np
import pytest
from helpers import write_video

from vidsearch.indexer import workers
from vidsearch.indexer.workers import ClipMsg, DecodeSettings, DecodeTask, Done, Failed, Info, Switched, WorkerPool
from vidsearch.media.readers import BackendSwitch, iter_clips, open_video
from vidsearch.media.windows import plan_clips
from vidsearch.settings import FrameSize

SETTINGS = DecodeSettings(short_edge=64, resample="bilinear", num_frames=16, clip_seconds=2.0, hop_seconds=2.0)


def drain(pool, until_done, timeout=60.0):
    """Messages until ``until_done`` tokens are Done or Failed (or timeout), with reaped failures."""
    msgs, failed, finished = [], [], set()
    deadline = time.monotonic() + timeout
    while len(finished) < until_done and time.monotonic() < deadline:
        msg = pool.get(0.2)
        if msg is not None:
            msgs.append(msg)
            if isinstance(msg, (Done, Failed)):
                finished.add(msg.token)
        for task, reason in pool.reap():
            failed.append((task.token, reason))
            finished.add(task.token)
    return msgs, failed


def test_a_video_streams_info_then_its_clips_then_done(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=5, size=(96, 64))
    with closing(WorkerPool(1, SETTINGS, timeout_s=60)) as pool:
        pool.assign(pool.idle()[0], DecodeTask(7, str(path)))
        assert pool.busy() == 1
        msgs, failed = drain(pool, 1)
    assert not failed
    assert isinstance(msgs[0], Info) and msgs[0].token == 7 and msgs[0].planned == 3  # 0-2, 2-4, 3-5 s
    clips = [m.clip for m in msgs if isinstance(m, ClipMsg)]
    assert [c.position for c in clips] == [0, 1, 2]
    assert all(c.frames.shape == (16, 64, 96, 3) for c in clips)
    assert msgs[-1] == Done(7, 3, [])


def test_an_undecodable_file_is_failed_with_its_reason_and_the_worker_goes_on(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    good = write_video(tmp_path / "good.mp4", seconds=2, size=(64, 64))
    with closing(WorkerPool(1, SETTINGS, timeout_s=60)) as pool:
        wid = pool.idle()[0]
        pool.assign(wid, DecodeTask(1, str(bad)))
        msgs, _ = drain(pool, 1)
        assert isinstance(msgs[-1], Failed) and "not a decodable video" in msgs[-1].reason
        assert pool.idle() == [wid]  # the same worker takes the next video
        pool.assign(wid, DecodeTask(2, str(good)))
        msgs, _ = drain(pool, 1)
        assert msgs[-1] == Done(2, 1, [])


@pytest.mark.parametrize("kind, reason", [("hang", "decoding timed out"), ("crash", "decoder crashed (signal 11)")])
def test_a_hung_or_crashed_worker_is_replaced_and_its_video_failed(tmp_path, monkeypatch, kind, reason):
    path = write_video(tmp_path / "evil.mp4", seconds=2, size=(64, 64))
    monkeypatch.setenv("VIDSEARCH_FAULT_WORKER", f"{kind}:evil.mp4")
    with closing(WorkerPool(1, SETTINGS, timeout_s=3)) as pool:
        first = pool.idle()[0]
        pool.assign(first, DecodeTask(5, str(path)))
        _, failed = drain(pool, 1, timeout=30)
        assert len(failed) == 1 and failed[0][0] == 5 and reason in failed[0][1]
        assert pool.idle() and pool.idle() != [first]  # a fresh worker took its place


def test_time_the_parent_spends_paused_does_not_count_against_a_worker(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=2, size=(64, 64))
    with closing(WorkerPool(1, SETTINGS, timeout_s=60)) as pool:
        wid = pool.idle()[0]
        pool.assign(wid, DecodeTask(1, str(path)))
        before = pool.workers[wid].last
        with pool.paused():
            time.sleep(0.3)
        assert pool.workers[wid].last >= before + 0.3
        drain(pool, 1)


def test_messages_about_a_task_the_worker_no_longer_has_are_dropped(tmp_path):
    path = write_video(tmp_path / "a.mp4", seconds=2, size=(64, 64))
    with closing(WorkerPool(1, SETTINGS, timeout_s=60)) as pool:
        wid = pool.idle()[0]
        pool.assign(wid, DecodeTask(1, str(path)))
        pool.workers[wid].task = DecodeTask(99, str(path))  # as if its video had been failed and reassigned
        deadline = time.monotonic() + 8  # spawning and decoding a 2 s video takes a few seconds
        while time.monotonic() < deadline:
            assert pool.get(0.2) is None  # every message names token 1: none is passed on


def test_a_workers_start_does_not_count_against_its_videos_timeout(tmp_path, monkeypatch):
    path = write_video(tmp_path / "a.mp4", seconds=2, size=(64, 64))
    # the start takes twice the timeout; the timeout still leaves a loaded machine (a niced worker)
    # time to open the video and decode its clip once started
    monkeypatch.setenv("VIDSEARCH_FAULT_WORKER", "slow_start:6")
    with closing(WorkerPool(1, SETTINGS, timeout_s=3)) as pool:
        pool.assign(pool.idle()[0], DecodeTask(1, str(path)))  # before the worker has started
        msgs, failed = drain(pool, 1)
    assert failed == [] and msgs[-1] == Done(1, 1, [])


def test_a_worker_that_never_starts_is_replaced_and_its_video_failed(tmp_path, monkeypatch):
    path = write_video(tmp_path / "a.mp4", seconds=2, size=(64, 64))
    monkeypatch.setenv("VIDSEARCH_FAULT_WORKER", "slow_start:3600")
    monkeypatch.setattr(workers, "STARTUP_TIMEOUT_S", 2.0)
    with closing(WorkerPool(1, SETTINGS, timeout_s=60)) as pool:
        pool.assign(pool.idle()[0], DecodeTask(1, str(path)))
        _, failed = drain(pool, 1)
    assert failed == [(1, "decoder process did not start in 2s")]


def test_decord_failing_part_way_is_sent_and_the_rest_read_with_pyav(tmp_path, monkeypatch):
    path = write_video(tmp_path / "a.mp4", seconds=4, size=(128, 96))
    monkeypatch.setenv("VIDSEARCH_FAULT_DECORD", "a.mp4:1")
    with closing(WorkerPool(1, SETTINGS, timeout_s=60)) as pool:
        pool.assign(pool.idle()[0], DecodeTask(7, str(path)))
        msgs, failed = drain(pool, 1)
    assert failed == []
    assert [type(m).__name__ for m in msgs] == ["Info", "ClipMsg", "Switched", "ClipMsg", "Done"]
    assert msgs[0].info.backend == "decord"
    assert msgs[2] == Switched(7, BackendSwitch(2.0, "fault injected by VIDSEARCH_FAULT_DECORD"))
    assert (
        str(msgs[2].switch)
        == "decord failed at 2.0s (fault injected by VIDSEARCH_FAULT_DECORD); read with PyAV from there"
    )
    with open_video(path, FrameSize(64, "bilinear"), backend="pyav") as reader:
        want = list(iter_clips(reader, plan_clips(reader.frame_times, 16, 2.0, 2.0)))
    np.testing.assert_array_equal(msgs[3].clip.frames, want[1].frames)
