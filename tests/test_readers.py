"""Reading files: probing, both backends, broken input, rotation, memory."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import _smooth_noise, scene_frames, write_video

from vidsearch.errors import DecodeError
from vidsearch.media.readers import iter_clips, open_video
from vidsearch.media.windows import plan_clips
from vidsearch.settings import FrameSize

# --- real files: both backends -------------------------------------------------------------------

#: name: (codec, fps, (width, height), seconds)
SPECS = {
    "h264.mp4": ("libx264", 25, (160, 96), 4.0),
    "h264-portrait.mp4": ("libx264", 30, (96, 160), 2.0),
    "mpeg4.avi": ("mpeg4", 10, (176, 144), 3.0),
    "mpeg4.mkv": ("mpeg4", 24, (128, 128), 3.0),
    "vp9.webm": ("libvpx-vp9", 30, (200, 120), 2.0),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("decode-videos")
    for i, (name, (codec, fps, size, seconds)) in enumerate(SPECS.items()):
        write_video(d / name, seconds=seconds, fps=fps, size=size, codec=codec, seed=10 + i)
    return d


@pytest.mark.parametrize("backend", ["decord", "pyav"])
@pytest.mark.parametrize("name", list(SPECS))
def test_open_video_info_and_frame_sizes(videos, name, backend):
    from transformers.image_transforms import get_resize_output_image_size

    codec, fps, (width, height), seconds = SPECS[name]
    with open_video(videos / name, FrameSize(64), backend=backend) as reader:
        info = reader.info
        assert info.backend == backend
        assert info.path == str(videos / name)
        assert info.num_frames == round(fps * seconds)
        assert info.fps == pytest.approx(fps, rel=1e-3)
        assert info.duration_s == pytest.approx(seconds, abs=2e-3)
        assert (info.width, info.height, info.rotation) == (width, height, 0)
        assert reader.frame_times.shape == (info.num_frames, 2)
        assert reader.frame_times[0, 0] == 0.0
        assert np.all(np.diff(reader.frame_times[:, 0]) > 0)
        plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        clips = list(iter_clips(reader, plans))
    expected_hw = get_resize_output_image_size(np.zeros((height, width, 3)), 64, default_to_square=False)
    assert [c.position for c in clips] == [p.position for p in plans]
    for clip in clips:
        assert clip.frames.shape == (16, *expected_hw, 3)
        assert clip.frames.dtype == np.uint8


@pytest.mark.parametrize(("size", "backend"), [((1280, 720), "pyav"), ((720, 1280), "pyav"), ((1278, 718), "decord")])
def test_auto_reads_720p_and_up_with_pyav_which_decodes_it_for_half_the_cpu(tmp_path, size, backend):
    path = write_video(tmp_path / "hd.mp4", seconds=2.0, fps=25, size=size, seed=2)
    with open_video(path) as reader:
        assert reader.info.backend == backend
        clips = list(iter_clips(reader, plan_clips(reader.frame_times)))
    assert len(clips) == 1 and clips[0].frames.shape[0] == 16


@pytest.mark.parametrize("name", list(SPECS))
def test_auto_picks_decord_for_what_decord_reads(videos, name):
    with open_video(videos / name) as reader:
        assert reader.info.backend == "decord"
        assert reader.info.codec == {"libx264": "h264", "mpeg4": "mpeg4", "libvpx-vp9": "vp9"}[SPECS[name][0]]


@pytest.mark.parametrize("name", list(SPECS))
def test_decord_and_pyav_agree(videos, name):
    with (
        open_video(videos / name, FrameSize(64), backend="decord") as a,
        open_video(videos / name, FrameSize(64), backend="pyav") as b,
    ):
        assert a.info.num_frames == b.info.num_frames
        np.testing.assert_allclose(a.frame_times, b.frame_times, atol=2e-3)
        plans_a, plans_b = plan_clips(a.frame_times, 16, 1.0, 1.0), plan_clips(b.frame_times, 16, 1.0, 1.0)
        assert [p.frame_indices for p in plans_a] == [p.frame_indices for p in plans_b]
        clips_a, clips_b = list(iter_clips(a, plans_a)), list(iter_clips(b, plans_b))
    assert len(clips_a) == len(clips_b) == len(plans_a)
    for ca, cb in zip(clips_a, clips_b):
        assert (ca.start_s, ca.end_s) == pytest.approx((cb.start_s, cb.end_s), abs=2e-3)  # ms timestamps
        mad = np.abs(ca.frames.astype(np.float32) - cb.frames.astype(np.float32)).mean()
        assert mad < 0.5, f"clip {ca.position}: decord and PyAV frames differ by {mad:.2f} grey levels"


def test_frames_are_the_planned_frames(videos):
    """A clip's frames are the frames its plan names, in order (10 fps: repeated frames included)."""
    with open_video(videos / "mpeg4.avi", FrameSize(None), backend="pyav") as reader:
        plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        clips = list(iter_clips(reader, plans))
    import av

    with av.open(str(videos / "mpeg4.avi")) as c:
        every = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for plan, clip in zip(plans, clips):
        assert plan.frame_indices[0] == plan.frame_indices[1]  # 10 fps, 1 s window: repeats
        np.testing.assert_array_equal(clip.frames, np.stack([every[i] for i in plan.frame_indices]))


def test_open_video_rejects_unknown_backend(videos):
    with pytest.raises(ValueError, match="backend"):
        open_video(videos / "h264.mp4", backend="opencv")


# --- PyAV fallback -------------------------------------------------------------------------------


def _av1_encoder() -> str | None:
    import av

    for name in ("libaom-av1", "libsvtav1", "av1"):
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        return name
    return None


def test_av1_falls_back_to_pyav(tmp_path):
    codec = _av1_encoder()
    if codec is None:
        pytest.skip("this PyAV build has no AV1 encoder (tried libaom-av1, libsvtav1, av1)")
    path = write_video(tmp_path / "av1.mkv", seconds=2.0, fps=25, size=(160, 96), codec=codec, seed=4)
    with open_video(path, FrameSize(64)) as reader:
        assert reader.info.backend == "pyav"
        assert reader.info.num_frames == 50
        assert reader.info.duration_s == pytest.approx(2.0)
        plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        clips = list(iter_clips(reader, plans))
    assert [c.start_s for c in clips] == pytest.approx([0.0, 1.0])
    assert [c.end_s for c in clips] == pytest.approx([1.0, 2.0])
    assert all(c.frames.shape == (16, 64, 106, 3) for c in clips)
    with pytest.raises(DecodeError, match="decord cannot open it") as err:
        open_video(path, backend="decord")
    assert "av1.mkv" in str(err.value)


# --- undecodable input ---------------------------------------------------------------------------


def _write_audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mp2", rate=44100)
        for _ in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 2 * 1152), np.int16), format="s16", layout="stereo")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _make_bad(kind: str, d: Path) -> tuple[Path, str]:
    """A broken input and the reason its DecodeError must give."""
    if kind == "empty":
        p = d / "empty.mp4"
        p.write_bytes(b"")
        return p, "file is empty"
    if kind == "random":
        p = d / "random.mp4"
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
        return p, "not a decodable video"
    if kind == "text":
        p = d / "notes.mp4"
        p.write_text("this is a shopping list, not a video\n" * 50)
        return p, "not a decodable video"
    if kind == "png":
        from PIL import Image

        p = d / "picture.mp4"
        Image.fromarray(_smooth_noise(np.random.default_rng(0), 64, 96, 4)).save(p, format="PNG")
        return p, "still image"
    if kind == "audio":
        p = d / "song.mka"
        _write_audio_only(p)
        return p, "no video stream"
    if kind == "moov-at-end-truncated":
        full = write_video(d / "whole.mp4", seconds=3.0)
        data = full.read_bytes()
        assert data.find(b"moov") > len(data) // 2, "expected PyAV to write the moov atom at the end"
        p = d / "half.mp4"
        p.write_bytes(data[: len(data) // 2])
        return p, "not a decodable video"
    if kind == "missing":
        return d / "nothing-here.mp4", "cannot read file"
    raise AssertionError(kind)


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
@pytest.mark.parametrize("kind", ["empty", "random", "text", "png", "audio", "moov-at-end-truncated", "missing"])
def test_undecodable_input_raises_decode_error(tmp_path, kind, backend):
    path, reason = _make_bad(kind, tmp_path)
    with pytest.raises(DecodeError) as err:
        open_video(path, backend=backend)
    assert err.value.path == str(path)
    assert path.name in str(err.value)
    assert reason in err.value.reason


def _faststart_mp4(path: Path, seconds: float, seed: int) -> Path:
    """H.264 MP4 with the moov atom first, as streaming sites serve it."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast", "g": "25"}
        for _, arr in scene_frames(seed, seconds, 25, 160, 96):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _first_frame_past(path: Path, offset: int) -> int:
    """Index (presentation order) of the first frame whose packet reaches past byte ``offset``."""
    import av

    with av.open(str(path)) as c:
        packets = sorted((p.pts, p.pos, p.size) for p in c.demux(video=0) if p.size)
    return next(i for i, (_, pos, size) in enumerate(packets) if pos + size > offset)


# decord alone fails at random before the break (its threaded decoder reads ahead into the
# zeros; it did before issue 11 too): "auto" retries the rest with PyAV
@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_stream_that_breaks_part_way_yields_the_clips_before_it(tmp_path, backend):
    """The index says 6 s but the data stops (a preallocated file whose download stopped): the
    reader sees the full length, fails part-way, and keeps what came before with a warning."""
    whole = _faststart_mp4(tmp_path / "whole.mp4", 6.0, seed=5)
    data = bytearray(whole.read_bytes())
    cut = int(len(data) * 0.6)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data[:cut]) + bytes(len(data) - cut))
    first_bad = _first_frame_past(whole, cut)

    with open_video(whole, FrameSize(64), backend=backend) as reader:
        good = list(iter_clips(reader, plan_clips(reader.frame_times, 16, 1.0, 1.0)))
    warnings: list[str] = []
    with open_video(broken, FrameSize(64), backend=backend) as reader:
        assert reader.info.num_frames == 150
        assert reader.info.duration_s == pytest.approx(6.0)
        plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        clips = list(iter_clips(reader, plans, warnings))

    readable = [p for p in plans if p.frame_indices[-1] < first_bad]
    assert 0 < len(readable) < len(plans)
    assert [c.position for c in clips] == [p.position for p in readable]
    for clip in clips:  # decord and PyAV round colours apart by a grey level at most
        assert np.abs(clip.frames.astype(np.float32) - good[clip.position].frames).mean() < 1.0
    stop = plans[len(readable)].start_s
    assert len(warnings) == 1
    assert warnings[0].startswith(f"{broken}: decoding stopped at {stop:.1f}s of 6.0s (")
    assert warnings[0].endswith("indexed the part before it")


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_stream_broken_before_the_first_clip_is_a_decode_error(tmp_path, backend):
    whole = _faststart_mp4(tmp_path / "whole.mp4", 4.0, seed=6)
    data = whole.read_bytes()
    cut = int(len(data) * 0.1)
    broken = tmp_path / "broken-early.mp4"
    broken.write_bytes(data[:cut] + bytes(len(data) - cut))
    assert _first_frame_past(whole, cut) < 23  # inside the first 1 s window
    with open_video(broken, FrameSize(64), backend=backend) as reader:
        plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        with pytest.raises(DecodeError, match="no clip could be decoded") as err:
            list(iter_clips(reader, plans, []))
    assert "broken-early.mp4" in str(err.value)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_truncated_transport_stream_reads_as_the_part_that_is_there(tmp_path, backend):
    """An MPEG-TS cut at 60% has no index that says how long it was: both readers see a shorter
    video, whose clips are the original's clips, and there is nothing to warn about."""
    # decord misplaces frames after the cut point's first missing B-frame (2.5 s on, by several
    # frames; PyAV reads them right): its variant is written without B-frames
    whole = write_video(tmp_path / "whole.ts", seconds=6.0, fps=25, seed=7, bframes=0 if backend == "decord" else None)
    data = whole.read_bytes()
    cut = whole.with_name("cut.ts")
    cut.write_bytes(data[: int(len(data) * 0.6)])

    with open_video(whole, FrameSize(64), backend=backend) as reader:
        full_plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        full = list(iter_clips(reader, full_plans))
    warnings: list[str] = []
    with open_video(cut, FrameSize(64), backend=backend) as reader:
        n = reader.info.num_frames
        assert 60 < n < 120
        # B-frames cut off from the frame after them are not decoded: a gap of a frame or two
        assert n / 25 <= reader.info.duration_s <= (n + 3) / 25 + 1e-3
        plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        clips = list(iter_clips(reader, plans, warnings))
    assert warnings == []
    assert [c.position for c in clips] == [p.position for p in plans]
    assert len(plans) == math.ceil(n / 25)
    for plan, clip in zip(plans[:-1], clips):  # the last window was moved back to the new end
        assert plan.frame_indices == full_plans[plan.position].frame_indices
        np.testing.assert_array_equal(clip.frames, full[plan.position].frames)


# --- rotation ------------------------------------------------------------------------------------


def _marked_frame(i: int) -> np.ndarray:
    """96x160 frame: red block top-left, blue block bottom-right, a grey bar that moves."""
    a = np.full((96, 160, 3), 40, dtype=np.uint8)
    a[:32, :48] = (255, 0, 0)
    a[-32:, -48:] = (0, 0, 255)
    a[40:56, 50 + 2 * i : 60 + 2 * i] = 200
    return a


def _write_rotated(path: Path, rotation: int | None) -> Path:
    """helpers.write_video's ``rotation`` sets stream.metadata["rotate"], which PyAV 18 does not
    write; a display matrix is what players and FFmpeg read."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(25):
            for packet in stream.encode(av.VideoFrame.from_ndarray(_marked_frame(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotated_video_comes_out_in_display_orientation(tmp_path, rotation, ext):
    import av

    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display matrix (no VideoStream.set_display_rotation)")
    plain = _write_rotated(tmp_path / f"plain.{ext}", None)
    rotated = _write_rotated(tmp_path / f"rotated.{ext}", rotation)
    with av.open(str(rotated)) as c:
        assert next(c.decode(video=0)).rotation % 360 == rotation % 360

    with open_video(plain, FrameSize(None), backend="pyav") as reader:
        upright = list(iter_clips(reader, plan_clips(reader.frame_times, 16, 1.0, 1.0)))[0].frames
    k = (rotation // 90) % 4
    for backend in ("auto", "pyav"):
        with open_video(rotated, FrameSize(None), backend=backend) as reader:
            info = reader.info
            assert info.backend == "pyav"  # decord's own rotation depends on its FFmpeg build
            assert info.rotation % 360 == rotation % 360
            assert (info.width, info.height) == ((96, 160) if k % 2 else (160, 96))
            frames = list(iter_clips(reader, plan_clips(reader.frame_times, 16, 1.0, 1.0)))[0].frames
        # the display matrix turns the picture counter-clockwise by `rotation` degrees
        np.testing.assert_array_equal(frames, np.rot90(upright, k=k, axes=(1, 2)))
    corner = {1: (2, -3), 3: (-3, 2), 2: (2, 2)}[k]  # where the blue block ends up on screen
    assert frames[0][corner][2] > 200 and frames[0][corner][0] < 60

    with open_video(rotated, FrameSize(64), backend="pyav") as reader:
        small = list(iter_clips(reader, plan_clips(reader.frame_times, 16, 1.0, 1.0)))[0].frames
    assert small.shape[1:3] == ((int(64 * 160 / 96), 64) if k % 2 else (64, int(64 * 160 / 96)))

    with pytest.raises(DecodeError, match="rotated"):
        open_video(rotated, backend="decord")


# --- memory --------------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read RSS")
def test_decord_memory_does_not_grow_with_video_length(tmp_path):
    seconds, fps, (w, h) = 90, 25, (320, 240)
    rng = np.random.default_rng(0)
    canvases = [_smooth_noise(rng, h + 64, w + 64, 6) for _ in range(4)]

    def frames():
        for i in range(seconds * fps):
            c, o = canvases[(i // 50) % 4], i % 50
            yield c[o // 2 : o // 2 + h, o : o + w]

    path = write_video(tmp_path / "long.mp4", fps=fps, size=(w, h), frames=frames())
    with open_video(path, FrameSize(224), backend="decord") as reader:
        plans = plan_clips(reader.frame_times)
        assert len(plans) == 45
        base = _rss_mb()
        growth = []
        for clip in iter_clips(reader, plans):
            assert clip.frames.shape == (16, 224, 298, 3)
            growth.append(_rss_mb() - base)
    early = max(growth[: len(growth) // 10])
    # the whole video at full size would be 90 * 25 * 320 * 240 * 3 bytes = 518 MB
    assert max(growth) - early < 60, f"RSS grew {early:.0f} MB early, {max(growth):.0f} MB by the end"


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_truncated_matroska_warns_how_much_of_the_declared_length_was_read(tmp_path, backend):
    """An MKV keeps its declared duration in the header: a cut-off download is indexed up to the
    break, with a warning that says how much of the declared length could be read."""
    whole = write_video(tmp_path / "whole.mkv", seconds=6.0, fps=25, seed=8)
    data = whole.read_bytes()
    cut = whole.with_name("cut.mkv")
    cut.write_bytes(data[: int(len(data) * 0.5)])
    warnings: list[str] = []
    with open_video(cut, FrameSize(64), backend=backend) as reader:
        read = reader.info.duration_s
        assert 1.0 < read < 5.0
        clips = list(iter_clips(reader, plan_clips(reader.frame_times, 16, 1.0, 1.0), warnings))
    assert clips
    assert len(warnings) == 1
    assert "cut.mkv" in warnings[0] and f"only {read:.1f}s of the 6.0s its header declares" in warnings[0]
    with open_video(whole, FrameSize(64), backend=backend) as reader:
        assert reader.truncation is None


def test_a_stream_whose_picture_changes_size_part_way_is_read_at_the_first_size(tmp_path):
    """Two MPEG-TS files joined, 160x96 then 320x240, as broadcast captures change size."""
    import av

    from vidsearch.media.resize import resize_frames

    first = write_video(tmp_path / "a.ts", seconds=2, size=(160, 96), seed=1)
    second = write_video(tmp_path / "b.ts", seconds=2, size=(320, 240), seed=2)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with av.open(str(second)) as c:
        later = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with open_video(joined, FrameSize(64)) as reader:
        assert (reader.info.num_frames, reader.info.duration_s) == (100, pytest.approx(4.0))
        plans = plan_clips(reader.frame_times, 16, 1.0, 1.0)
        clips = list(iter_clips(reader, plans))
    assert len(clips) == 4 and all(c.frames.shape == (16, 64, 106, 3) for c in clips)
    want = resize_frames(np.stack([later[i - 50] for i in plans[3].frame_indices]), (64, 106))
    np.testing.assert_array_equal(clips[3].frames, want)


def test_a_pyav_whose_open_takes_no_metadata_errors_still_reads(tmp_path, monkeypatch):
    """PyAV 19 dropped ``av.open(metadata_errors=...)``: every read failed with a TypeError there
    (found on a GPU machine that installed av 19). Readers fall back to the plain call; a TypeError
    about anything else is not swallowed."""
    import av

    from vidsearch.media import readers

    real = av.open
    plain_calls = []

    def open_19(file, mode="r", **kwargs):
        if "metadata_errors" in kwargs:
            raise TypeError("open() got an unexpected keyword argument 'metadata_errors'")
        plain_calls.append(file)
        return real(file, mode, **kwargs)

    monkeypatch.setattr(av, "open", open_19)
    monkeypatch.setattr(readers, "_METADATA_ERRORS_ARG", True)
    path = write_video(tmp_path / "a.mp4", seconds=2, seed=3)
    for backend in ("pyav", "auto"):
        with open_video(path, FrameSize(64), backend=backend) as r:
            assert len(list(iter_clips(r, plan_clips(r.frame_times)))) == 1
    assert readers._METADATA_ERRORS_ARG is False
    assert plain_calls and all(c == str(path) for c in plain_calls)

    def broken(file, mode="r", **kwargs):
        raise TypeError("something else")

    monkeypatch.setattr(av, "open", broken)
    monkeypatch.setattr(readers, "_METADATA_ERRORS_ARG", True)
    with pytest.raises(TypeError, match="something else"):
        readers.open_container(path)


def test_a_still_image_reads_without_torch_warning_of_a_read_only_array(tmp_path):
    """PIL's array view is read-only; torch.from_numpy warned on every query image (and may not write to it)."""
    import warnings

    from PIL import Image

    path = tmp_path / "still.png"
    Image.fromarray(_smooth_noise(np.random.default_rng(4), 90, 160, 4)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_video(path, FrameSize(64), still_seconds=2.0) as reader:
            clips = list(iter_clips(reader, plan_clips(reader.frame_times)))
    assert len(clips) == 1 and clips[0].frames.shape == (16, 64, 113, 3)
