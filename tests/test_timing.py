"""Frame timestamps are validated whichever backend gives them, and replaced when they fail."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers import write_video

from vidsearch.media.readers import iter_clips, open_video
from vidsearch.media.timing import LengthEvidence, check_starts, plausible_rate
from vidsearch.media.windows import clip_windows, plan_clips
from vidsearch.settings import FrameSize

CFR = np.arange(50) / 25  # 50 frames at 25 fps: 2.0 s
EVIDENCE = LengthEvidence(rate=25.0, frames=(50,), durations=(2.0,))


def test_good_times_pass():
    assert check_starts(CFR, EVIDENCE) is None
    assert check_starts(CFR + 1.4, EVIDENCE) is None  # a stream that starts late (MPEG-TS)
    assert check_starts(CFR[:1], EVIDENCE) is None


def test_rule_finite():
    t = CFR.copy()
    t[3] = np.nan
    assert check_starts(t, EVIDENCE) == "timestamps are not finite"


def test_rule_non_negative_after_the_first_frame_is_moved_to_zero():
    t = CFR.copy()
    t[0] = 0.5  # decord's NOPTS first frames are the opposite case: -3.7e17, then real times
    assert "before the first frame" in check_starts(t, EVIDENCE)


def test_rule_strictly_increasing():
    t = CFR.copy()
    t[10] = t[9]
    assert "do not increase (frame 10" in check_starts(t, EVIDENCE)
    nopts = np.full(50, -3.6893488147419103e17)  # decord on H.264 in AVI: every frame NOPTS
    assert "do not increase" in check_starts(nopts, EVIDENCE)


@pytest.mark.parametrize(
    "times, match",
    [
        (np.arange(50) * 1e-5, "more than 1000 fps"),
        (np.append(CFR[:-1], 100.0), "a gap of 98.1s between frames"),
    ],
)
def test_rule_plausible_spacing(times, match):
    import re

    assert re.search(match, check_starts(times, LengthEvidence()))


def test_rule_end_agrees_with_some_evidence():
    slow = np.arange(50) / 5  # 10 s where the file says 2 s
    assert check_starts(slow, EVIDENCE) == "they span 9.84s, but the file's frame count and durations say 2s"
    # any one piece of evidence is enough: a cut file's header still declares the whole length
    assert check_starts(CFR, LengthEvidence(25.0, (50,), (9.0,))) is None
    # within one frame plus tolerance, not more
    assert check_starts(CFR, LengthEvidence(0.0, (), (2.08,))) is None
    assert check_starts(CFR, LengthEvidence(0.0, (), (2.2,))) is not None
    # nothing to check against: the other rules decide
    assert check_starts(slow, LengthEvidence()) is None


def test_plausible_rate_skips_what_a_video_cannot_have():
    assert plausible_rate(None, 0, 4e-16, 25) == 25.0
    assert plausible_rate(1e6) == 0.0


def test_windows_are_counted_before_they_are_made():
    with pytest.raises(ValueError, match="more than the 10"):
        clip_windows(3.7e17, 2.0, 2.0, max_windows=10)
    with pytest.raises(ValueError, match="finite"):
        clip_windows(float("inf"), 2.0, 2.0)
    times = np.array([[0.0, 1e6]])  # one frame "on screen" for 11 days: not from a reader
    with pytest.raises(ValueError, match="frames allow"):
        plan_clips(times)


# --- the reproductions: B-frames in AVI and MPEG-PS, H.264 in AVI -------------------------------

REPRO = {
    "mpeg4-bframes.avi": dict(codec="mpeg4", bframes=2),
    "h264.avi": dict(codec="libx264"),
    "mpeg2-bframes.mpg": dict(codec="mpeg2video", bframes=2),
}


@pytest.fixture(scope="module")
def repro(tmp_path_factory):
    d = tmp_path_factory.mktemp("repro")
    for i, (name, kw) in enumerate(REPRO.items()):
        write_video(d / name, seconds=2.0, fps=25, size=(160, 96), seed=20 + i, **kw)
    return d


@pytest.mark.parametrize("name", list(REPRO))
def test_decord_nopts_timestamps_are_replaced_and_said_at_info(repro, name, caplog):
    import av

    with av.open(str(repro / name)) as c:
        every = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with caplog.at_level(logging.INFO, logger="vidsearch"):
        with open_video(repro / name, FrameSize(None)) as reader:
            info = reader.info
            plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
            clips = list(iter_clips(reader, plans))
    assert (info.backend, info.num_frames, info.duration_s) == ("pyav", 50, pytest.approx(2.0))
    np.testing.assert_allclose(reader.frame_times[:, 0], np.arange(50) / 25, atol=1e-6)
    assert [(c.start_s, c.end_s) for c in clips] == [pytest.approx((0.0, 1.0)), pytest.approx((1.0, 2.0))]
    for plan, clip in zip(plans, clips):
        np.testing.assert_array_equal(clip.frames, np.stack([every[i] for i in plan.frame_indices]))
    said = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    if not name.endswith(".mpg"):  # MPEG-PS goes to PyAV before decord is tried (it seeks wrongly there)
        assert "decord's timestamps are unusable (timestamps do not increase" in said
    if name.endswith(".avi"):
        assert "timestamps taken as frame index / 25 fps (AVI files carry no presentation timestamps)" in said


def test_forcing_decord_on_nopts_timestamps_is_a_decode_error(repro):
    from vidsearch.errors import DecodeError

    with pytest.raises(DecodeError, match="decord's timestamps are unusable"):
        open_video(repro / "h264.avi", backend="decord")
