"""Clip windows by time: which frames a clip reads and the time span it covers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def clip_windows(duration_s: float, clip_seconds: float, hop_seconds: float) -> list[tuple[float, float]]:
    """Windows of ``clip_seconds`` every ``hop_seconds``, the last moved back to end at the end.

    A video shorter than one window gives one window over its whole length.
    """
    if clip_seconds <= 0 or hop_seconds <= 0:
        raise ValueError(f"clip and hop seconds must be positive, got {clip_seconds}, {hop_seconds}")
    if duration_s <= clip_seconds + _EPS:
        return [(0.0, duration_s)]
    windows = []
    start = 0.0
    while start + clip_seconds <= duration_s + _EPS:
        windows.append((start, start + clip_seconds))
        start = round(start + hop_seconds, 9)
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
    at s + j·(e − s)/num_frames; each clip's times come from its first and last frames.
    """
    times = np.asarray(frame_times, dtype=np.float64)
    if times.ndim != 2 or times.shape[1] != 2 or len(times) == 0:
        raise ValueError(f"frame_times must be a non-empty (N, 2) array, got shape {times.shape}")
    duration = float(times[-1, 1])
    return [
        plan_window(times, s, e, num_frames, position=i)
        for i, (s, e) in enumerate(clip_windows(duration, clip_seconds, hop_seconds))
    ]


def plan_window(frame_times: np.ndarray, start_s: float, end_s: float, num_frames: int = 16, position: int = 0) -> ClipPlan:
    """The clip of window [start_s, end_s): frame j is the one on screen at start + j·(end − start)/num_frames."""
    times = np.asarray(frame_times, dtype=np.float64)
    starts = times[:, 0]
    sample_t = start_s + np.arange(num_frames) * (end_s - start_s) / num_frames
    idx = np.clip(np.searchsorted(starts, sample_t + _EPS, side="right") - 1, 0, len(starts) - 1)
    return ClipPlan(
        position=position,
        start_s=float(times[idx[0], 0]),
        end_s=float(times[idx[-1], 1]),
        frame_indices=tuple(int(x) for x in idx),
    )


