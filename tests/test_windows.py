"""Clip planning by time: windows over a video's duration and the frames each one samples."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.media.windows import clip_windows, plan_clips


def uniform_times(n: int, fps: float) -> np.ndarray:
    """Frame i on screen during [i/fps, (i+1)/fps)."""
    starts = np.arange(n) / fps
    return np.stack([starts, starts + 1 / fps], axis=1)


def frame_on_screen(times: np.ndarray, t: float) -> int:
    """The frame whose [start, end) holds t (independent of plan_clips' searchsorted)."""
    for i, (s, e) in enumerate(times):
        if s - 1e-9 <= t < e - 1e-9:
            return i
    return len(times) - 1


def test_clip_windows_moves_last_window_back_to_the_end():
    assert clip_windows(7.0, 2.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (5.0, 7.0)]


def test_clip_windows_exact_fit_adds_no_extra_window():
    assert clip_windows(6.0, 2.0, 2.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert clip_windows(2.0, 2.0, 2.0) == [(0.0, 2.0)]


@pytest.mark.parametrize("duration", [1.5, 0.04, 1.999])
def test_clip_windows_short_video_is_one_window_over_its_length(duration):
    assert clip_windows(duration, 2.0, 2.0) == [(0.0, duration)]


def test_clip_windows_half_hop():
    assert clip_windows(7.0, 2.0, 1.0) == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0), (3.0, 5.0), (4.0, 6.0), (5.0, 7.0)]
    assert clip_windows(7.5, 2.0, 1.0)[-2:] == [(5.0, 7.0), (5.5, 7.5)]
    assert len(clip_windows(7.5, 2.0, 1.0)) == 7
    # many hops: starts must not drift from float accumulation
    windows = clip_windows(100.0, 2.0, 0.1)
    assert len(windows) == 981
    assert windows[-1] == (98.0, 100.0)
    assert windows[437][0] == pytest.approx(43.7, abs=1e-9)


@pytest.mark.parametrize("clip, hop", [(0, 2), (2, 0), (-1, 1)])
def test_clip_windows_rejects_nonpositive(clip, hop):
    with pytest.raises(ValueError, match="positive"):
        clip_windows(10.0, clip, hop)


def test_plan_clips_25fps_exact_frame_indices():
    times = uniform_times(175, 25)  # 7.0 s
    plans = plan_clips(times, num_frames=16, clip_seconds=2.0, hop_seconds=2.0)
    assert [p.position for p in plans] == [0, 1, 2, 3]
    # frame j of [0, 2) is on screen at j * 0.125 s: frame floor(3.125 j)
    assert plans[0].frame_indices == (0, 3, 6, 9, 12, 15, 18, 21, 25, 28, 31, 34, 37, 40, 43, 46)
    assert plans[1].frame_indices == tuple(50 + i for i in plans[0].frame_indices)
    # the last window is [5, 7), not [6, 8)
    assert plans[3].frame_indices == tuple(125 + i for i in plans[0].frame_indices)
    for plan, (s, e) in zip(plans, [(0, 2), (2, 4), (4, 6), (5, 7)]):
        expected = tuple(frame_on_screen(times, s + j * (e - s) / 16) for j in range(16))
        assert plan.frame_indices == expected
        # a clip spans its window: from its first frame's start to its last frame's end (frame
        # 49 of [0, 2), on screen 1.96-2.0), not to the end of the last one sampled (46: 1.88)
        assert (plan.start_s, plan.end_s) == pytest.approx((s, e))


def test_plan_clips_10fps_repeats_frames_when_window_has_fewer_than_16():
    times = uniform_times(30, 10)  # 3.0 s
    one_second = plan_clips(times, num_frames=16, clip_seconds=1.0, hop_seconds=1.0)
    assert [p.frame_indices for p in one_second] == [
        (0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 6, 7, 8, 8, 9),
        (10, 10, 11, 11, 12, 13, 13, 14, 15, 15, 16, 16, 17, 18, 18, 19),
        (20, 20, 21, 21, 22, 23, 23, 24, 25, 25, 26, 26, 27, 28, 28, 29),
    ]
    two_seconds = plan_clips(times, num_frames=16, clip_seconds=2.0, hop_seconds=2.0)
    assert [p.frame_indices for p in two_seconds] == [
        (0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 18),
        (10, 11, 12, 13, 15, 16, 17, 18, 20, 21, 22, 23, 25, 26, 27, 28),
    ]
    assert (two_seconds[1].start_s, two_seconds[1].end_s) == pytest.approx((1.0, 3.0))


def test_plan_clips_float32_timestamps_give_the_same_frames():
    """decord reports float32 times: a sample exactly on a frame boundary must not slip back a frame."""
    times = uniform_times(175, 25)
    exact = plan_clips(times)
    rounded = plan_clips(times.astype(np.float32))
    assert [p.frame_indices for p in rounded] == [p.frame_indices for p in exact]


def test_plan_clips_times_come_from_frame_timestamps():
    # variable frame rate: durations cycle 30, 50, 20 ms
    durations = np.resize([0.03, 0.05, 0.02], 300)
    starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    times = np.stack([starts, starts + durations], axis=1)
    total = float(times[-1, 1])
    plans = plan_clips(times, num_frames=16, clip_seconds=2.0, hop_seconds=2.0)
    windows = clip_windows(total, 2.0, 2.0)
    assert len(plans) == len(windows)
    for plan, (s, e) in zip(plans, windows):
        expected = tuple(frame_on_screen(times, s + j * (e - s) / 16) for j in range(16))
        assert plan.frame_indices == expected
        assert plan.start_s == times[plan.frame_indices[0], 0]
        assert plan.end_s == times[frame_on_screen(times, e - 1e-6), 1]
    assert windows[-1] == pytest.approx((total - 2.0, total))


def test_plan_clips_video_shorter_than_a_window():
    times = uniform_times(30, 25)  # 1.2 s
    (plan,) = plan_clips(times)
    # frame j at j * 1.2 / 16 s = frame floor(1.875 j)
    assert plan.frame_indices == (0, 1, 3, 5, 7, 9, 11, 13, 15, 16, 18, 20, 22, 24, 26, 28)
    assert (plan.start_s, plan.end_s) == pytest.approx((0.0, 1.2))


def test_plan_clips_rejects_bad_times():
    with pytest.raises(ValueError, match="shape"):
        plan_clips(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="shape"):
        plan_clips(np.arange(10.0))


def test_a_5s_video_s_last_clip_ends_at_5s_not_at_its_last_sampled_frame():
    plans = plan_clips(uniform_times(125, 25), num_frames=16, clip_seconds=2.0, hop_seconds=2.0)
    assert [p.start_s for p in plans] == pytest.approx([0.0, 2.0, 3.0])
    assert [p.end_s for p in plans] == pytest.approx([2.0, 4.0, 5.0])
    assert plans[-1].frame_indices[-1] == 121  # sampled last: the frame at 4.875 s, which ends at 4.88
