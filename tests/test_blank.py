"""The blank-clip statistic: uniform frames (black, white, a flat colour, a fade's dark end) are
blank; footage, and a clip with any frame of footage, is not."""

import numpy as np
import pytest
from helpers import scene_frames

from vidsearch.media.blank import BLANK_MAX_STD, is_blank, pixel_std


def footage(n=16, seed=1):
    return np.stack([f for _, f in scene_frames(seed, n / 25, 25, 96, 64)][:n])


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255), (200, 30, 90)])
def test_a_flat_colour_is_blank(colour):
    frames = np.empty((16, 64, 96, 3), np.uint8)
    frames[:] = colour
    assert pixel_std(frames) == 0.0 and is_blank(pixel_std(frames))


def test_footage_is_not_blank_and_its_fade_to_black_becomes_blank():
    clip = footage()
    assert pixel_std(clip) > 4 * BLANK_MAX_STD
    dimmed = [(clip.astype(np.float32) * k).round().astype(np.uint8) for k in (0.5, 0.2, 0.05)]
    assert [bool(is_blank(pixel_std(d))) for d in dimmed] == [False, False, True]


def test_one_frame_of_footage_makes_a_clip_not_blank():
    clip = np.zeros((16, 64, 96, 3), np.uint8)
    clip[-1] = footage(1)[0]
    assert not is_blank(pixel_std(clip))


def test_an_unmeasured_clip_is_not_blank():
    assert is_blank(np.array([np.nan, 0.0, 50.0])).tolist() == [False, True, False]


def test_frames_must_be_t_h_w_c():
    with pytest.raises(ValueError, match="non-empty"):
        pixel_std(np.zeros((64, 96, 3), np.uint8))
