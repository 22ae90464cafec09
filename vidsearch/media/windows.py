"""Clip windows by time: which frames a clip reads and the time span it covers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vidsearch.media.timing import MAX_FRAME_GAP_S

_EPS = 1e-6
#: An uncovered tail shorter than this gets no window of its own (timestamp rounding, not footage).
_TAIL = 0.05


@dataclass(frozen=True)
class ClipPlan:
    """One window of a video: which frames to read and the time span they cover."""

    #: the clip's place among its video's clips (0, 1, …)
    position: int
    start_s: float
    end_s: float
    frame_indices: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.frame_indices:
            raise ValueError("a clip needs at least one frame index")
        if self.end_s < self.start_s:
            raise ValueError(f"clip ends ({self.end_s}) before it starts ({self.start_s})")


def clip_windows(
    duration_s: float, clip_seconds: float, hop_seconds: float, max_windows: int | None = None
) -> list[tuple[float, float]]:
    """Windows of ``clip_seconds`` every ``hop_seconds``, the last moved back to end at the end.

    A video shorter than one window gives one window over its whole length. The windows are
    counted before any is made: more than ``max_windows`` is a ValueError.
    """
    if clip_seconds <= 0 or hop_seconds <= 0:
        raise ValueError(f"clip and hop seconds must be positive, got {clip_seconds}, {hop_seconds}")
    if not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"duration must be finite and non-negative, got {duration_s}")
    if duration_s <= clip_seconds + _EPS:
        return [(0.0, duration_s)]
    count = math.floor((duration_s + _EPS - clip_seconds) / hop_seconds) + 1
    if max_windows is not None and count > max_windows:
        raise ValueError(f"{duration_s:.3g}s would be {count} windows, more than the {max_windows} its frames allow")
    windows = []
    for k in range(count):
        start = round(k * hop_seconds, 9)
        if start + clip_seconds > duration_s + _EPS:  # the float count rounded up
            break
        windows.append((start, start + clip_seconds))
    if windows[-1][1] < duration_s - _TAIL:
        windows.append((duration_s - clip_seconds, duration_s))
    return windows


def plan_clips(
    frame_times: np.ndarray,
    num_frames: int = 16,
    clip_seconds: float = 2.0,
    hop_seconds: float = 2.0,
) -> list[ClipPlan]:
    """Plan clips over a video whose frame i is on screen during ``frame_times[i]`` (start, end).

    Times are seconds from the first frame. Frame j of window [s, e) is the frame on screen
    at s + j·(e − s)/num_frames; a clip starts where its first frame starts and ends where
    the last frame on screen in its window ends.
    No frame stays on screen longer than MAX_FRAME_GAP_S in validated times, so N frames
    allow at most N·⌈MAX_FRAME_GAP_S / hop⌉ + 1 windows; times that would give more are refused.
    """
    times = np.asarray(frame_times, dtype=np.float64)
    if times.ndim != 2 or times.shape[1] != 2 or len(times) == 0:
        raise ValueError(f"frame_times must be a non-empty (N, 2) array, got shape {times.shape}")
    duration = float(times[-1, 1])
    allowed = len(times) * math.ceil(MAX_FRAME_GAP_S / hop_seconds) + 1 if hop_seconds > 0 else None
    return [
        plan_window(times, s, e, num_frames, position=i)
        for i, (s, e) in enumerate(clip_windows(duration, clip_seconds, hop_seconds, allowed))
    ]


def plan_window(
    frame_times: np.ndarray, start_s: float, end_s: float, num_frames: int = 16, position: int = 0
) -> ClipPlan:
    """The clip of window [start_s, end_s): frame j is the one on screen at start + j·(end − start)/num_frames.

    The clip spans the window's frames: from the start of the first to the end of the last one
    on screen before ``end_s`` (not of the last one sampled, which ends up to 1/num_frames of
    the window early).
    """
    times = np.asarray(frame_times, dtype=np.float64)
    starts = times[:, 0]
    sample_t = start_s + np.arange(num_frames) * (end_s - start_s) / num_frames
    idx = np.clip(np.searchsorted(starts, sample_t + _EPS, side="right") - 1, 0, len(starts) - 1)
    last = max(int(idx[-1]), int(np.searchsorted(starts, end_s - _EPS, side="left")) - 1)
    return ClipPlan(
        position=position,
        start_s=float(times[idx[0], 0]),
        end_s=float(times[last, 1]),
        frame_indices=tuple(int(x) for x in idx),
    )
