"""Probe a video, plan its clips by time, and stream the clips' frames.

decord does the decoding; PyAV serves what decord cannot (AV1, platforms without a decord
wheel) behind the same interface. Frames come out resized toward the encoder's input size so
that memory does not grow with resolution, and clips are read window by window so that it
does not grow with length either.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidsearch.errors import DecodeError, first_line
from vidsearch.faults import decord_fault
from vidsearch.media.resize import resize_frames
from vidsearch.media.timing import MAX_FRAME_GAP_S, LengthEvidence, check_starts, index_starts, plausible_rate
from vidsearch.media.windows import ClipPlan
from vidsearch.settings import FrameSize

log = logging.getLogger(__name__)

#: Codecs decord cannot decode (its bundled FFmpeg predates them); PyAV reads these.
DECORD_UNSUPPORTED_CODECS = frozenset({"av1", "libdav1d", "libaom-av1"})
#: From 720p up PyAV decodes a clip for half the CPU time decord takes, which is what limits an
#: index job on a GPU (benchmarks/RESULTS.md, "GPU"): per CPU-second, 12.6 against 7.1 clips at
#: 720p and 6.8 against 3.5 at 1080p here; end to end on an H200 with 16 decode workers, 20.7
#: against 13.4 clips/s at 1080p. Below it decord is as fast or faster (360p: 22 against 17 clips/s
#: wall on one process) and stays the reader. Above 4K decord would also hold several 100 MB frames.
PYAV_FROM_PIXELS = 1280 * 720
#: decord's memory swings by hundreds of MB over a long 1080p video even when reset after every
#: window (measured: 518 → 992 MB over 120 clips, PyAV flat at 280 MB and 6% faster): long
#: videos are read with PyAV.
DECORD_MAX_SECONDS = 120.0
#: Demuxers that give no presentation timestamps: FFmpeg's AVI demuxer numbers packets in
#: decode order, which is not display order once there are B-frames. Frames there are timed
#: by index × 1/rate and matched to the plan by their count.
NO_PTS_FORMATS = frozenset({"avi"})
#: Demuxers whose files decord seeks wrongly: with B-frames its frame i is another frame (MPEG-TS:
#: 12 to 25 frames late; ASF: 12 early; tests/test_matrix.py). PyAV reads these.
DECORD_MISSEEKS_FORMATS = frozenset({"mpegts", "asf", "mpeg"})


@dataclass(frozen=True)
class VideoInfo:
    """What probing a file tells: display size (rotation applied), timing and codec."""

    path: str
    num_frames: int
    fps: float
    duration_s: float
    width: int
    height: int
    rotation: int
    codec: str
    backend: str
    #: what was decided about this file that a user may want to know (`-v`): which stream was
    #: read, timestamps that were replaced and why
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size must be positive, got {self.width}x{self.height}")


@dataclass(frozen=True)
class BackendSwitch:
    """decord failed part-way through a file; the clips from ``at_s`` on were read with PyAV."""

    at_s: float
    reason: str

    def __str__(self) -> str:
        return f"decord failed at {self.at_s:.1f}s ({self.reason}); read with PyAV from there"


@dataclass
class Clip:
    """A decoded clip: ``frames`` is uint8 (T, H, W, 3), RGB, display orientation."""

    position: int
    start_s: float
    end_s: float
    frames: np.ndarray

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"clip frames must be uint8 (T, H, W, 3); got {self.frames.dtype} {self.frames.shape}")


#: Decoded pixels held at once while resizing (about 50 MB of RGB: eight 1080p frames, one 8K).
#: whether this PyAV's ``av.open`` takes ``metadata_errors`` (PyAV 19 dropped it)
_METADATA_ERRORS_ARG = True


def open_container(path: str | os.PathLike) -> Any:
    """``av.open`` for reading, on every PyAV this package supports.

    Before PyAV 19, metadata that is not UTF-8 (common in files from cameras and old tools)
    raised unless ``metadata_errors="ignore"`` was given; PyAV 19 no longer takes the argument.
    """
    global _METADATA_ERRORS_ARG
    import av

    if _METADATA_ERRORS_ARG:
        try:
            return av.open(os.fspath(path), metadata_errors="ignore")
        except TypeError as exc:
            if "metadata_errors" not in str(exc):
                raise
            _METADATA_ERRORS_ARG = False
    return av.open(os.fspath(path))


_PIXEL_BUDGET = 17_000_000


class VideoReader:
    """An open video. ``frame_times`` is (N, 2): each frame's on-screen [start, end) seconds
    from the first frame. ``read_clips`` streams planned clips resized by ``frame_size``."""

    info: VideoInfo
    frame_times: np.ndarray
    #: set when the file holds less than its header declares (a truncated file)
    truncation: str | None = None
    #: a decord failure part-way is retried with PyAV (backend "auto")
    pyav_fallback: bool = False

    def __init__(self, path: str, header: _Header, frame_size: FrameSize, num_threads: int = 1):
        self.path = path
        self.header = header
        self.num_threads = num_threads
        self.rotation = header.rotation
        self.frame_size = frame_size
        dw, dh = _display_size(header)
        th, tw = frame_size(dh, dw)
        # resize in the coded orientation, then rotate the small frames
        self._coded_target = (tw, th) if (header.rotation // 90) % 2 else (th, tw)
        self._coded_shape = (header.height, header.width)

    def read_clips(self, plans: Sequence[ClipPlan]) -> Iterator[Clip]:
        raise NotImplementedError

    def _chunk(self) -> int:
        h, w = self._coded_shape
        return max(1, _PIXEL_BUDGET // (h * w))

    def _finish(self, frames: np.ndarray) -> np.ndarray:
        if frames.ndim != 4 or frames.shape[1:] != (*self._coded_shape, 3):
            raise DecodeError(
                self.path,
                f"decoder returned frames of shape {frames.shape}, expected (N, {self._coded_shape[0]}, "
                f"{self._coded_shape[1]}, 3)",
            )
        return _rotate(resize_frames(frames, self._coded_target, self.frame_size.mode), self.rotation)

    def close(self) -> None:
        """Release the decoder."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rotate(frames: np.ndarray, rotation: int) -> np.ndarray:
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=k, axes=(1, 2))) if k else frames


@dataclass(frozen=True)
class _Header:
    codec: str
    width: int
    height: int
    rotation: int
    fps: float
    declared_s: float | None = None
    #: the video stream that is probed and decoded, chosen once (see _pick_stream)
    stream_index: int = 0
    #: how many video streams there were to choose from
    video_streams: int = 1
    format: str = ""
    #: the header's frame count (0: not given) and the stream's and container's durations
    frames: int = 0
    durations: tuple[float, ...] = ()
    notes: tuple[str, ...] = ()

    def evidence(self, *frame_counts: int) -> LengthEvidence:
        return LengthEvidence(self.fps, (*frame_counts, self.frames), self.durations)


class StillImage(DecodeError):
    """The file is a still image, not a video (a query may read it as a static clip)."""


class StillReader(VideoReader):
    """A still image read as a video: one frame on screen for ``seconds``, so that every window
    over it is that frame repeated (a static clip)."""

    def __init__(self, path: str, frame_size: FrameSize, seconds: float):
        from PIL import Image, ImageOps

        try:
            with Image.open(path) as image:
                codec = (image.format or "image").lower()
                # a writable copy: torch warns about (and may not write to) a read-only array
                self._frame = np.array(ImageOps.exif_transpose(image).convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DecodeError(path, f"not a readable image ({first_line(exc)})") from exc
        h, w = self._frame.shape[:2]
        header = _Header(codec=codec, width=w, height=h, rotation=0, fps=1 / seconds, declared_s=seconds, frames=1)
        super().__init__(path, header, frame_size)
        self.frame_times = np.array([[0.0, seconds]])
        self.info = _info(path, header, self.frame_times, "pillow")

    def read_clips(self, plans: Sequence[ClipPlan]) -> Iterator[Clip]:
        small = self._finish(self._frame[None])
        for plan in plans:
            yield Clip(plan.position, plan.start_s, plan.end_s, np.repeat(small, len(plan.frame_indices), axis=0))


def _pick_stream(container) -> tuple[Any, str | None]:
    """The video stream to read: the one marked default, else the largest; cover art never.

    Returns the stream (None if no stream has a known codec) and, where there was a choice, a
    note saying which and why. decord cannot be told which stream to read, so a file with a
    choice is read with PyAV.
    """
    import av

    attached = av.stream.Disposition.attached_pic
    default = av.stream.Disposition.default
    # a stream whose codec FFmpeg does not know (a damaged header, say) has no codec context
    known = [s for s in container.streams.video if s.codec_context is not None]
    candidates = [s for s in known if not s.disposition & attached] or known
    if not candidates:
        return None, None
    if len(candidates) == 1:
        return candidates[0], None
    marked = [s for s in candidates if s.disposition & default]
    pool = marked if 0 < len(marked) < len(candidates) else candidates

    def area(s) -> int:
        return (s.codec_context.width or 0) * (s.codec_context.height or 0)

    chosen = max(pool, key=lambda s: (area(s), -s.index))
    why = "the one marked default" if pool is marked else "the largest"
    note = (
        f"{len(candidates)} video streams; reading stream {chosen.index} "
        f"({chosen.codec_context.width}x{chosen.codec_context.height}), {why}"
    )
    return chosen, note


def _probe_header(path: str) -> _Header:
    """Read the container header with PyAV and decode one frame: the cheap validity check."""
    import av

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise DecodeError(path, "file is empty")
    try:
        with open_container(path) as container:
            if not container.streams.video:
                raise DecodeError(path, "no video stream (audio-only or not a video)")
            demuxer = container.format.name
            if demuxer == "image2" or demuxer.endswith("_pipe"):
                raise StillImage(path, f"a still image ({demuxer.removesuffix('_pipe')}), not a video")
            stream, note = _pick_stream(container)  # one decoder thread: frame threads each hold a frame
            if stream is None:
                raise DecodeError(path, "no decoder for its video stream (the codec is unknown or unsupported)")
            codec = stream.codec_context.name
            try:
                frame: Any = next(container.decode(stream))
            except StopIteration:
                raise DecodeError(path, "video stream has no decodable frames") from None
            stream_s = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
            container_s = container.duration / 1e6 if container.duration else None
            return _Header(
                codec=codec,
                width=frame.width,
                height=frame.height,
                rotation=int(frame.rotation or 0),
                fps=plausible_rate(stream.average_rate, stream.guessed_rate, stream.base_rate),
                declared_s=stream_s or container_s,
                stream_index=stream.index,
                video_streams=len(container.streams.video),
                format=demuxer,
                frames=max(0, stream.frames or 0),
                durations=tuple(d for d in (stream_s, container_s) if d),
                notes=(note,) if note else (),
            )
    except DecodeError:
        raise
    except PermissionError as exc:
        raise DecodeError(path, "permission denied") from exc
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(path, f"not a decodable video ({first_line(exc)})") from exc


def _display_size(header: _Header) -> tuple[int, int]:
    if (header.rotation // 90) % 2:
        return header.height, header.width
    return header.width, header.height


def _info(path: str, header: _Header, frame_times: np.ndarray, backend: str, notes: Sequence[str] = ()) -> VideoInfo:
    n = len(frame_times)
    duration = float(frame_times[-1, 1])
    dw, dh = _display_size(header)
    return VideoInfo(
        path=path,
        num_frames=n,
        fps=n / duration if duration > 0 else header.fps,
        duration_s=duration,
        width=dw,
        height=dh,
        rotation=header.rotation,
        codec=header.codec,
        backend=backend,
        notes=(*header.notes, *notes),
    )


class _UntrustedTimes(Exception):
    """Internal: decord's timestamps failed validation; the reason says which rule."""


class DecordReader(VideoReader):
    """decord backend: random access per window, the reader reset after each window."""

    def __init__(self, path: str, header: _Header, frame_size: FrameSize, num_threads: int = 1):
        if header.rotation % 360:
            # decord rotates frames itself, but only where its bundled FFmpeg reads the display
            # matrix (MP4 yes, Matroska no), so the orientation it returns is not known here
            raise DecodeError(path, f"decord cannot read rotated ({header.rotation}°) video reliably; use PyAV")
        import decord
        import torch  # noqa: F401  (decord must come after torch)

        decord.logging.set_level(decord.logging.WARNING if _verbose() else decord.logging.QUIET)
        super().__init__(path, header, frame_size, num_threads)
        try:
            self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
            n = len(self._vr)
            if n < 1:
                raise DecodeError(path, "video stream has no frames")
            times = np.asarray(self._vr.get_frame_timestamp(range(n)), dtype=np.float64)
        except (decord.DECORDError, RuntimeError) as exc:  # RuntimeError: its wrapper's "Error reading PATH..."
            raise DecodeError(path, f"decord cannot open it ({first_line(exc)})") from exc
        reason = check_starts(times[:, 0], header.evidence(n))
        if reason:
            self.close()
            raise _UntrustedTimes(reason)
        self.frame_times = _normalise_times(times, header.fps)
        self.info = _info(path, header, self.frame_times, "decord")

    def read_clips(self, plans: Sequence[ClipPlan]) -> Iterator[Clip]:
        import decord

        chunk = self._chunk()
        for plan in plans:
            idx = list(plan.frame_indices)
            parts = []
            try:
                if decord_fault(self.path, plan.position):
                    raise decord.DECORDError("fault injected by VIDSEARCH_FAULT_DECORD")
                for i in range(0, len(idx), chunk):
                    parts.append(self._finish(self._vr.get_batch(idx[i : i + chunk]).asnumpy()))
                # decord reads ahead in the background; without a reset its memory grows with the video
                self._vr.seek(0)
            except decord.DECORDError as exc:
                raise _DecordFailed(plan, first_line(exc)) from exc
            except DecodeError as exc:  # frames of another size: decord decoded another stream
                raise _DecordFailed(plan, exc.reason) from exc
            yield Clip(plan.position, plan.start_s, plan.end_s, np.concatenate(parts))

    def close(self) -> None:
        self.__dict__.pop("_vr", None)


class PyAVReader(VideoReader):
    """PyAV backend: packet timestamps for planning, one sequential decode for reading."""

    def __init__(
        self, path: str, header: _Header, frame_size: FrameSize, num_threads: int = 1, notes: Sequence[str] = ()
    ):
        import av

        super().__init__(path, header, frame_size, num_threads)
        self._stream_index = header.stream_index
        try:
            with open_container(path) as container:
                stream: Any = container.streams[header.stream_index]
                tb = float(stream.time_base)
                packets = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.size > 0]
        except av.error.FFmpegError as exc:
            raise DecodeError(path, f"cannot read packets ({first_line(exc)})") from exc
        if not packets:
            raise DecodeError(path, "video stream has no frames")
        n = len(packets)
        notes = list(notes)
        if header.format in NO_PTS_FORMATS:
            reason: str | None = f"{header.format.upper()} files carry no presentation timestamps"
        elif any(pts is None for pts, _ in packets):
            reason = "some frames have no timestamp"
        else:
            packets.sort()
            reason = check_starts(np.asarray([pts for pts, _ in packets], dtype=np.float64) * tb, header.evidence(n))
        #: frames are matched to the plan by their count, not their timestamp
        self._by_count = reason is not None
        if reason is None:
            self._pts = np.asarray([pts for pts, _ in packets], dtype=np.int64)
            starts = self._pts.astype(np.float64) * tb
            # the container's duration for the last frame, as decord reads it: 1/fps drifts from it by
            # the timestamps' rounding, enough to plan one more window than decord does
            last = packets[-1][1] * tb or (1.0 / header.fps if header.fps else 0.04)
        elif header.fps:
            notes.append(f"timestamps taken as frame index / {header.fps:g} fps ({reason})")
            self._pts = np.arange(n, dtype=np.int64)
            starts = index_starts(n, header.fps)
            last = 1.0 / header.fps
        else:
            raise DecodeError(path, f"no usable timestamps ({reason}) and no plausible frame rate to time frames by")
        ends = np.append(starts[1:], starts[-1] + last)
        self.frame_times = _normalise_times(np.stack([starts, ends], axis=1), header.fps)
        self.info = _info(path, header, self.frame_times, "pyav", notes)

    def _finish(self, frames: np.ndarray) -> np.ndarray:
        # the stream probed is the stream decoded: a frame of another size is the picture changing
        # size part-way (broadcast captures, joined files), scaled to the size the first one set
        return _rotate(resize_frames(frames, self._coded_target, self.frame_size.mode), self.rotation)

    def read_clips(self, plans: Sequence[ClipPlan]) -> Iterator[Clip]:
        import av

        if not plans:
            return
        wanted: dict[int, list[ClipPlan]] = {}
        for plan in plans:
            for i in set(plan.frame_indices):
                wanted.setdefault(i, []).append(plan)
        pending: dict[int, dict[int, np.ndarray]] = {plan.position: {} for plan in plans}
        order = sorted(plans, key=lambda p: (p.frame_indices[-1], p.position))
        keys = np.array(sorted(wanted), dtype=np.int64)
        next_out = 0
        last_needed = order[-1].frame_indices[-1]
        prev = -1
        try:
            with open_container(self.path) as container:
                stream: Any = container.streams[self._stream_index]  # PyAV's stubs lack thread_type
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = self.num_threads
                frame: Any
                for count, frame in enumerate(container.decode(stream)):
                    i = self._index_of(frame.pts, count)
                    if i <= prev:
                        continue
                    # frames the decoder skipped (a stream cut mid-GOP) are stood in for by the next one
                    lo, hi = np.searchsorted(keys, [prev + 1, i + 1])
                    if hi > lo:
                        small = self._finish(frame.to_ndarray(format="rgb24")[None])[0]
                        for j in keys[lo:hi]:
                            for plan in wanted[int(j)]:
                                pending[plan.position][int(j)] = small
                    prev = i
                    while next_out < len(order) and order[next_out].frame_indices[-1] <= i:
                        plan = order[next_out]
                        frames = np.stack([pending[plan.position][j] for j in plan.frame_indices])
                        del pending[plan.position]
                        yield Clip(plan.position, plan.start_s, plan.end_s, frames)
                        next_out += 1
                    if i >= last_needed:
                        break
        except av.error.FFmpegError as exc:
            if next_out < len(order):
                raise _Truncated(order[next_out], first_line(exc)) from exc
        if next_out < len(order):
            raise _Truncated(order[next_out], f"stream ended after frame {prev + 1} of {len(self._pts)}")

    def _index_of(self, pts: int | None, count: int) -> int:
        """A decoded frame's index among the demuxed packets, by its timestamp (by its count without one)."""
        if pts is None or self._by_count:
            return count
        j = int(np.searchsorted(self._pts, pts))
        return j if j < len(self._pts) and self._pts[j] == pts else count


class _Truncated(Exception):
    """Internal: reading stopped at ``plan``; the clips before it were good."""

    def __init__(self, plan: ClipPlan, reason: str):
        self.plan = plan
        self.reason = reason
        super().__init__(reason)


class _DecordFailed(_Truncated):
    """Internal: decord failed on ``plan`` of a file PyAV may still read."""


def _normalise_times(times: np.ndarray, fps: float) -> np.ndarray:
    """Shift to start at 0, sort, and give every frame a positive duration.

    A frame is on screen until the next one starts (decoders' own per-packet durations are
    the stream's nominal rate, wrong for variable frame rates); the last keeps its own, but
    no longer than the longest of the others: the validated start times say nothing of it, and
    a damaged header can give it hours (Matroska's DefaultDuration, MP4's last stts delta).
    """
    times = np.array(times, dtype=np.float64, copy=True)
    times -= times[:, 0].min()
    times = times[np.argsort(times[:, 0], kind="stable")]
    times[:-1, 1] = times[1:, 0]
    fallback = 1.0 / fps if fps and fps > 0 else 0.04
    bad = times[:, 1] <= times[:, 0]
    times[bad, 1] = times[bad, 0] + fallback
    longest = float(np.max(times[:-1, 1] - times[:-1, 0])) if len(times) > 1 else MAX_FRAME_GAP_S
    times[-1, 1] = min(times[-1, 1], times[-1, 0] + longest)
    return times


def _verbose() -> bool:
    return log.isEnabledFor(logging.INFO)


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decord_available() -> bool:
    try:
        import decord  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def open_video(
    path: str | os.PathLike,
    frame_size: FrameSize | None = None,
    backend: str = "auto",
    num_threads: int = 1,
    still_seconds: float | None = None,
) -> VideoReader:
    """Probe ``path`` and open it with decord, or PyAV where decord cannot read it.

    A still image is refused, unless ``still_seconds`` is given: then it reads as one frame on
    screen for that long (a query image). Raises DecodeError naming the file and the reason for
    anything that is not a decodable video.
    """
    import av

    path = os.fspath(path)
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"backend must be auto, decord or pyav; got {backend!r}")
    # FFmpeg's warnings about damaged streams are noise to a user unless asked for (-v, --debug);
    # a PyAV level hands them to Python logging (the "libav" loggers), None would print them raw
    av.logging.set_level(av.logging.WARNING if _verbose() else av.logging.PANIC)
    frame_size = frame_size or FrameSize()
    try:
        header = _probe_header(path)
    except StillImage:
        if still_seconds is None:
            raise
        return StillReader(path, frame_size, still_seconds)
    use_decord = backend == "decord" or (
        backend == "auto"
        and header.codec not in DECORD_UNSUPPORTED_CODECS
        and header.video_streams == 1  # decord reads the stream it thinks best, not the one probed
        and header.format not in DECORD_MISSEEKS_FORMATS
        and not header.rotation % 360
        and header.width * header.height < PYAV_FROM_PIXELS
        and (header.declared_s or 0) <= DECORD_MAX_SECONDS
        and _utf8(path)  # decord's C API takes UTF-8 names only; PyAV takes any file name
        and _decord_available()
    )
    reader: VideoReader | None = None
    notes: list[str] = []
    if use_decord:
        try:
            reader = DecordReader(path, header, frame_size, num_threads)
            reader.pyav_fallback = backend == "auto"
        except _UntrustedTimes as exc:
            if backend == "decord":
                raise DecodeError(path, f"decord's timestamps are unusable ({exc})") from None
            notes.append(f"decord's timestamps are unusable ({exc}); PyAV's are used")
        except DecodeError as exc:
            if backend == "decord":
                raise
            log.debug("decord failed on %s (%s); trying PyAV", path, exc.reason)
    reader = reader or PyAVReader(path, header, frame_size, num_threads, notes)
    for note in reader.info.notes:
        log.info("%s: %s", path, note)
    read = reader.info.duration_s
    # a declared length its frames could not fill even at a frame a minute is a corrupt header, not a cut file
    plausible = (header.declared_s or 0) <= reader.info.num_frames * MAX_FRAME_GAP_S
    if plausible and header.declared_s and header.declared_s - read > max(1.0, 0.05 * header.declared_s):
        # a truncated download: the header promises more than the stream holds
        reader.truncation = (
            f"{path}: only {read:.1f}s of the {header.declared_s:.1f}s its header declares could be read; "
            "indexed that part"
        )
    return reader


def iter_clips(
    reader: VideoReader,
    plans: Sequence[ClipPlan],
    warnings: list[str] | None = None,
    on_switch: Callable[[BackendSwitch], None] | None = None,
) -> Iterator[Clip]:
    """Stream the planned clips; a stream that breaks part-way yields what came before it
    and adds a warning (how much was read) to ``warnings``. Where decord fails part-way and
    PyAV reads the rest, that is said at INFO and handed to ``on_switch``.

    Raises DecodeError when not even the first clip can be read.
    """
    if reader.truncation:
        log.warning("%s", reader.truncation)
        if warnings is not None:
            warnings.append(reader.truncation)
    try:
        try:
            yield from reader.read_clips(plans)
        except _DecordFailed as exc:
            if not reader.pyav_fallback:
                raise
            # decord fails on some valid files only when reading (narrow H.264: a copy size check)
            switch = BackendSwitch(exc.plan.start_s, exc.reason)
            log.info("%s: %s", reader.path, switch)
            if on_switch is not None:
                on_switch(switch)
            rest = list(plans)[list(plans).index(exc.plan) :]
            with PyAVReader(reader.path, reader.header, reader.frame_size, reader.num_threads) as other:
                yield from other.read_clips(rest)
    except _Truncated as exc:
        if exc.plan.position == plans[0].position:
            raise DecodeError(reader.info.path, f"no clip could be decoded ({exc.reason})") from None
        msg = (
            f"{reader.info.path}: decoding stopped at {exc.plan.start_s:.1f}s of {reader.info.duration_s:.1f}s "
            f"({exc.reason}); indexed the part before it"
        )
        log.warning("%s", msg)
        if warnings is not None:
            warnings.append(msg)
