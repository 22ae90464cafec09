"""Every common container and codec, written with PyAV, reads as a full PyAV decode does."""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numpy as np
import pytest
from helpers import scene_frames, write_video

from vidsearch.media.readers import iter_clips, open_video
from vidsearch.media.windows import clip_windows, plan_clips
from vidsearch.settings import FrameSize

#: frame durations cycling 40, 40, 100, 20, 200, 40 ms: a variable rate
VFR = [float(t) for t in np.cumsum([0.0] + [0.04, 0.04, 0.1, 0.02, 0.2, 0.04] * 8)[:49]]
QUIET_X265 = {"x265-params": "log-level=error"}

#: name: write_video arguments (50 frames at 25 fps, 160x96, unless said)
MATRIX = {
    "mpeg4.avi": dict(codec="mpeg4"),
    "mpeg4-bframes.avi": dict(codec="mpeg4", bframes=2),
    "h264.avi": dict(codec="libx264"),
    "mjpeg.avi": dict(codec="mjpeg"),
    "mpeg2-bframes.mpg": dict(codec="mpeg2video", bframes=2),
    "h264-starts-late.ts": dict(codec="libx264"),  # the MPEG-TS muxer starts at 1.4 s
    "h264-bframes-negative-dts.mp4": dict(codec="libx264"),  # B-frames: negative DTS, an edit list
    "hevc.mp4": dict(codec="libx265", options=QUIET_X265),
    "h264-starts-at-1s.mp4": dict(codec="libx264", times=[1 + i / 25 for i in range(50)]),
    "h264.mov": dict(codec="libx264"),
    "h264.mkv": dict(codec="libx264"),
    "vp8.webm": dict(codec="libvpx"),
    "vp9.webm": dict(codec="libvpx-vp9"),
    "flv1.flv": dict(codec="flv"),
    "wmv2.wmv": dict(codec="wmv2"),
    "h263.3gp": dict(codec="h263", size=(176, 144)),
    "animated.gif": dict(codec="gif"),
    "vfr.mkv": dict(codec="libx264", times=VFR),
    "vfr.mp4": dict(codec="libx264", times=VFR),
}


def _write(path, kw) -> np.ndarray:
    """Write the entry; return the start time of each frame written, from the first."""
    kw = {"size": (160, 96), **kw}
    times = np.asarray(kw.get("times", np.arange(50) / 25), dtype=np.float64)
    try:
        write_video(path, seconds=len(times) / 25, fps=25, seed=zlib.crc32(path.name.encode()) % 1000, **kw)
    except Exception as exc:  # noqa: BLE001  (an FFmpeg build without this encoder or muxer)
        pytest.skip(f"the bundled FFmpeg cannot write {path.name}: {exc}")
    return times - times[0]


def _full_decode(path):
    """Every frame PyAV decodes, in presentation order, and the frame duration its rate gives.

    The frames' own timestamps are not the reference: in MPEG-PS a PES packet may carry several
    frames, and for some contents the decoded ``pts`` repeat or skip (0.40, 0.40, 0.44, 0.44, …);
    the times written are the truth.
    """
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        rate = float(s.average_rate or s.guessed_rate)
    return frames, 1 / rate


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("matrix")


@pytest.mark.parametrize("name", list(MATRIX))
def test_matrix_entry_reads_as_a_full_pyav_decode(media, name):
    path = media / name
    starts = _write(path, MATRIX[name])
    every, frame_s = _full_decode(path)
    duration = starts[-1] + frame_s
    with open_video(path, FrameSize(None)) as reader:
        info = reader.info
        assert info.num_frames == len(every)
        assert abs(info.duration_s - duration) <= frame_s + 1e-6
        np.testing.assert_allclose(reader.frame_times[:, 0], starts, atol=1.5e-3)
        plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        clips = list(iter_clips(reader, plans))
    assert len(plans) == len(clips) == max(1, math.ceil(duration - 0.05))
    for (s, e), plan, clip in zip(clip_windows(info.duration_s, 1.0, 1.0), plans, clips):
        on_screen = np.searchsorted(starts, s + np.arange(16) * (e - s) / 16 + 1e-6, "right") - 1
        assert list(plan.frame_indices) == list(on_screen)
        want = np.stack([every[i] for i in plan.frame_indices])
        if info.backend == "pyav":
            np.testing.assert_array_equal(clip.frames, want)
        else:  # decord's own FFmpeg converts colour with its own rounding
            assert np.abs(clip.frames.astype(np.float32) - want).mean() < 1.0
    if info.backend == "pyav":
        return  # decord cannot read it (GIF), its times fail the rules, or it seeks wrongly in it
    decord = open_video(path, FrameSize(None), backend="decord")
    with decord, open_video(path, FrameSize(None), backend="pyav") as pyav:
        assert decord.info.num_frames == pyav.info.num_frames
        np.testing.assert_allclose(decord.frame_times[:, 0], pyav.frame_times[:, 0], atol=1.5e-3)
        a = list(iter_clips(decord, plans))
        b = list(iter_clips(pyav, plans))
    for ca, cb in zip(a, b):
        assert np.abs(ca.frames.astype(np.float32) - cb.frames).mean() < 1.0


# --- valid files decord fails on ---------------------------------------------------------------


@pytest.mark.parametrize("size", [(2, 96), (8, 96), (16, 96), (24, 96), (48, 96), (72, 96), (1, 1), (16, 4000)])
def test_narrow_h264_that_decord_cannot_copy_is_read_with_pyav(tmp_path, size):
    path = write_video(
        tmp_path / "narrow.mp4", seconds=1.0, fps=25, size=size, seed=2, pix_fmt="yuv444p" if size[0] % 2 else None
    )
    with open_video(path, FrameSize(None)) as reader:
        clips = list(iter_clips(reader, plan_clips(reader.frame_times, 16, 1.0, 1.0)))
    assert len(clips) == 1 and clips[0].frames.shape == (16, size[1], size[0], 3)


def _two_streams(path, first=(64, 48), second=(320, 240), default=None) -> None:
    """Two video streams of different sizes (a preview and the main picture), 25 frames each."""
    import av

    with av.open(str(path), "w") as c:
        streams = []
        for w, h in (first, second):
            s = c.add_stream("libx264", rate=Fraction(25))
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.options = {"preset": "ultrafast"}
            streams.append(s)
        if default is not None:
            for i, s in enumerate(streams):
                s.disposition = av.stream.Disposition.default if i == default else av.stream.Disposition(0)
        for s in streams:
            for _, img in scene_frames(3, 1.0, 25, s.width, s.height):
                for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)


@pytest.mark.parametrize(
    "default, chosen, why", [(None, (320, 240), "the largest"), (0, (64, 48), "the one marked default")]
)
def test_the_stream_probed_is_the_stream_decoded(tmp_path, caplog, default, chosen, why):
    import logging

    path = tmp_path / "two-streams.mkv"
    _two_streams(path, default=default)
    with caplog.at_level(logging.INFO, logger="vidsearch"):
        with open_video(path, FrameSize(None)) as reader:
            clips = list(iter_clips(reader, plan_clips(reader.frame_times, 16, 1.0, 1.0)))
    assert (reader.info.width, reader.info.height) == chosen
    assert clips[0].frames.shape == (16, chosen[1], chosen[0], 3)
    assert (
        f"2 video streams; reading stream {1 if chosen == (320, 240) else 0} ({chosen[0]}x{chosen[1]}), {why}"
        in caplog.text
    )
