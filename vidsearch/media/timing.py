"""Frame timestamps checked against the other evidence a file gives about its length.

Decoders hand out whatever the container says, and some containers say nothing true: decord
gives AV_NOPTS_VALUE scaled to seconds (±1e14 to 1e17 s) for B-frames in AVI and MPEG-PS, and
planning windows over such a span exhausts memory. Timestamps are used only when they pass
every rule below; a reader that finds them failing takes the next source instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Frame rates outside this range are not video (a still held an hour, or a corrupt rate field).
MIN_RATE, MAX_RATE = 1 / 60, 1000.0
#: Longest plausible time one frame stays on screen: slideshows and animated GIFs hold a frame
#: for seconds, nothing real holds one for a minute. Also bounds a video's windows by its frames.
MAX_FRAME_GAP_S = 60.0
#: Shortest plausible spacing: 1000 fps high-speed footage, not timestamps equal but for rounding.
MIN_FRAME_GAP_S = 1 / MAX_RATE
#: Slack on the end rule beyond one frame: containers round durations, muxers add a frame of delay.
END_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class LengthEvidence:
    """What a file says about its length besides the frame timestamps.

    ``rate`` is the stream's nominal frame rate (0 when unknown or implausible); ``frames`` the
    frame counts the demuxer or header give; ``durations`` the container's and stream's durations.
    """

    rate: float = 0.0
    frames: tuple[int, ...] = ()
    durations: tuple[float, ...] = ()

    def supported(self) -> list[float]:
        """Durations the evidence supports: each frame count at the nominal rate, each declared duration."""
        out = [n / self.rate for n in self.frames if n > 0 and self.rate > 0]
        out += [d for d in self.durations if d is not None and math.isfinite(d) and d > 0]
        return out


def plausible_rate(*rates: float | None) -> float:
    """The first rate in ``rates`` that a video can have, or 0.0."""
    for r in rates:
        if r and math.isfinite(float(r)) and MIN_RATE <= float(r) <= MAX_RATE:
            return float(r)
    return 0.0


def check_starts(starts: np.ndarray, evidence: LengthEvidence) -> str | None:
    """Why the frames' start times (seconds, display order) cannot be trusted, or None if they can.

    The rules: finite; the first frame the earliest; strictly increasing; gaps between
    MIN_FRAME_GAP_S and MAX_FRAME_GAP_S; the last frame ending within one frame (the longest,
    plus END_TOLERANCE_S) of a duration the evidence supports, where it supports any.
    """
    t = np.asarray(starts, dtype=np.float64)
    if t.ndim != 1 or len(t) == 0:
        return "no timestamps"
    if not np.all(np.isfinite(t)):
        return "timestamps are not finite"
    t = t - t[0]
    if t.min() < 0:
        return f"a frame starts {-t.min():.3g}s before the first frame"
    if len(t) == 1:
        return None
    gaps = np.diff(t)
    if gaps.min() <= 0:
        return f"timestamps do not increase (frame {int(np.argmin(gaps)) + 1} repeats or goes back)"
    if gaps.min() < MIN_FRAME_GAP_S * (1 - 1e-6):  # 1000 fps itself passes, rounding aside
        return f"frames {gaps.min():.3g}s apart (more than {MAX_RATE:g} fps)"
    if gaps.max() > MAX_FRAME_GAP_S:
        return f"a gap of {gaps.max():.3g}s between frames (more than {MAX_FRAME_GAP_S:g}s)"
    end = t[-1] + (1 / evidence.rate if evidence.rate > 0 else float(np.median(gaps)))
    # "one frame" is the longest one: with a variable rate, muxers' durations (MP4's sum of
    # decode-time deltas) miss the real end by about that much
    slack = max(end - t[-1], float(gaps.max())) + END_TOLERANCE_S
    supported = evidence.supported()
    if supported and not any(abs(end - d) <= slack for d in supported):
        return f"they span {end:.3g}s, but the file's frame count and durations say {_seconds(supported)}"
    return None


def index_starts(n: int, rate: float) -> np.ndarray:
    """Start times of ``n`` frames at a constant ``rate``: frame index × 1/rate."""
    return np.arange(n, dtype=np.float64) / rate


def _seconds(values: list[float]) -> str:
    return " or ".join(f"{v:.3g}s" for v in sorted(set(round(v, 3) for v in values)))
