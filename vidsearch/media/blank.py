"""Blank clips: a cheap pixel statistic that says a clip shows (nearly) nothing.

A clip whose frames are nearly uniform (black, white, a flat colour, the dark end of a fade)
looks like every other such clip in any video, so its matches are no evidence of a copy. The
statistic is computed on the decoded frames, already scaled down toward the encoder's input
size, and stored with each clip; whether a clip is blank is decided from it when matches are
counted, so the cut-off can change without decoding anything again.
"""

from __future__ import annotations

import numpy as np

#: A clip is blank when no frame's colour channel varies by more than this standard deviation
#: (of 0–255). Encoded black or flat colour measures under 1; the sample videos' frames (at
#: 224 px: bigbuckbunny, bikes, carphone) 36–72, so a fade to black falls under it only when the
#: footage is dimmed to about a tenth (4–7).
BLANK_MAX_STD = 8.0
#: Every STRIDE-th pixel in each direction is enough for a spread (and 16 times cheaper).
STRIDE = 4


def pixel_std(frames: np.ndarray) -> float:
    """The largest, over frames and colour channels, of a frame's pixel standard deviation.

    ``frames`` is uint8 (T, H, W, C). A single varied frame makes the clip not blank: a cut
    from black to footage is footage.
    """
    if frames.ndim != 4 or frames.size == 0:
        raise ValueError(f"frames must be a non-empty (T, H, W, C) array, got shape {frames.shape}")
    sample = frames[:, ::STRIDE, ::STRIDE].reshape(frames.shape[0], -1, frames.shape[-1]).astype(np.float32)
    return float(sample.std(axis=1).max())


def is_blank(std: float | np.ndarray) -> np.ndarray:
    """Whether clips with these statistics are blank (NaN, a clip indexed before the statistic
    existed, is not)."""
    return np.asarray(std, dtype=np.float64) < BLANK_MAX_STD
