"""What the web app shows of a video: thumbnails, browser-playable previews, and which files a
browser can play as they are. Everything made is cached on disk under the index's ``cache/``."""

from __future__ import annotations

import io
import os
import threading
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidsearch.errors import DecodeError
from vidsearch.media.readers import iter_clips, open_container, open_video
from vidsearch.media.windows import ClipPlan
from vidsearch.settings import FrameSize

THUMB_SHORT_EDGE = 144
#: the longest preview made on demand, and its size (short edge)
PREVIEW_MAX_S = 120.0
PREVIEW_SHORT_EDGE = 360

#: what browsers play without help: (container extension, codec)
_PLAYABLE = {
    (".mp4", "h264"),
    (".m4v", "h264"),
    (".mov", "h264"),
    (".mp4", "av1"),
    (".webm", "vp8"),
    (".webm", "vp9"),
    (".webm", "av1"),
}
_MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/mp4", ".webm": "video/webm"}

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(key: str) -> threading.Lock:
    """One lock per cache file, so that two requests for the same preview make it once."""
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def video_codec(path: str) -> str | None:
    import av

    try:
        with open_container(path) as c:
            return c.streams.video[0].codec_context.name if c.streams.video else None
    except (av.error.FFmpegError, OSError, ValueError):
        return None


def playable_type(path: str, codec: str | None) -> str | None:
    """The Content-Type to stream ``path`` as it is, or None when a browser cannot play it."""
    ext = os.path.splitext(path)[1].lower()
    return _MEDIA_TYPES[ext] if (ext, codec) in _PLAYABLE else None


def thumbnail(path: str, t: float, cache: Path) -> Path:
    """A JPEG of the frame on screen at ``t`` seconds (clamped to the video), cached as ``cache``."""
    if cache.exists():
        return cache
    with _lock_for(str(cache)):
        if cache.exists():
            return cache
        from PIL import Image

        with open_video(path, FrameSize(THUMB_SHORT_EDGE), still_seconds=1.0) as reader:
            times = reader.frame_times
            i = int(np.clip(np.searchsorted(times[:, 0], t, "right") - 1, 0, len(times) - 1))
            plan = ClipPlan(0, float(times[i, 0]), float(times[i, 1]), (i,))
            clip = next(iter(iter_clips(reader, [plan])))
        buf = io.BytesIO()
        Image.fromarray(clip.frames[0]).save(buf, format="JPEG", quality=85)
        _write(cache, buf.getvalue())
    return cache


def preview(path: str, start: float, end: float, cache: Path) -> Path:
    """An H.264 MP4 of [start, end] (at most PREVIEW_MAX_S) that any browser plays, cached as ``cache``."""
    if cache.exists():
        return cache
    with _lock_for(str(cache)):
        if cache.exists():
            return cache
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{cache.name}")
        try:
            _transcode(path, start, min(end, start + PREVIEW_MAX_S), tmp)
            os.replace(tmp, cache)
        finally:
            if tmp.exists():
                tmp.unlink()
    return cache


def _transcode(path: str, start: float, end: float, out_path: Path) -> None:
    """Write [start, end] of ``path`` to ``out_path`` as H.264 MP4, its index first (faststart:
    a browser starts playing before the whole file has arrived)."""
    import av

    try:
        with open_container(path) as src:
            if not src.streams.video:
                raise DecodeError(path, "no video stream")
            stream = src.streams.video[0]
            stream.thread_type = "AUTO"
            tb = stream.time_base or Fraction(1, 1000)
            origin = stream.start_time * tb if stream.start_time is not None else 0
            if start > 1:
                src.seek(int((float(origin) + start - 1) / tb), stream=stream, backward=True)
            with av.open(str(out_path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
                enc = None
                for frame in src.decode(stream):
                    if frame.pts is None:
                        continue
                    t = float(frame.pts * tb - origin)
                    if t < start - 1e-6:
                        continue
                    if t >= end:
                        break
                    if enc is None:
                        w, h = _even_size(frame.width, frame.height)
                        enc = out.add_stream("libx264", rate=30)
                        enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
                        enc.time_base = Fraction(1, 1000)
                        enc.options = {"preset": "veryfast", "crf": "26"}
                    img = frame.reformat(width=enc.width, height=enc.height, format="yuv420p")
                    img.pts, img.time_base = int(round((t - start) * 1000)), Fraction(1, 1000)
                    out.mux(enc.encode(img))
                if enc is None:
                    raise DecodeError(path, f"no frames between {start:g}s and {end:g}s")
                out.mux(enc.encode())
    except av.error.FFmpegError as exc:
        raise DecodeError(path, f"cannot make a preview ({exc.strerror or exc})") from exc


def _even_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, PREVIEW_SHORT_EDGE / min(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
