"""Frame sizes as transformers computes them, and resizing as PIL does."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import _smooth_noise

from vidsearch.media.resize import resize_frames
from vidsearch.settings import FrameSize


@pytest.mark.parametrize("height, width", [(720, 1280), (272, 640), (144, 176), (1920, 1080), (96, 160), (100, 100)])
def test_frame_size_matches_transformers(height, width):
    from transformers.image_transforms import get_resize_output_image_size

    image = np.zeros((height, width, 3), dtype=np.uint8)
    for short in (224, 64):
        expected = get_resize_output_image_size(image, short, default_to_square=False)
        assert FrameSize(short)(height, width) == tuple(expected)
    assert FrameSize(None)(height, width) == (height, width)


def test_frame_size_truncates_the_long_edge():
    assert FrameSize(224)(720, 1280) == (224, 398)  # 398.2
    assert FrameSize(224)(144, 176) == (224, 273)  # 273.8, not rounded up
    assert FrameSize(224)(1280, 720) == (398, 224)


@pytest.mark.parametrize("src, dst", [((180, 320), (64, 113)), ((96, 160), (224, 373)), ((100, 100), (64, 64))])
def test_resize_frames_matches_pil_bilinear(src, dst):
    from PIL import Image

    rng = np.random.default_rng(7)
    frames = np.stack([_smooth_noise(rng, *src, cells=8) for _ in range(3)])
    out = resize_frames(frames, dst)
    assert out.dtype == np.uint8 and out.shape == (3, *dst, 3)
    for frame, got in zip(frames, out):
        ref = np.asarray(Image.fromarray(frame).resize((dst[1], dst[0]), Image.Resampling.BILINEAR))
        diff = np.abs(got.astype(int) - ref.astype(int))
        assert diff.max() <= 1, f"max diff {diff.max()} grey levels"


def test_resize_frames_same_size_is_a_no_op():
    frames = np.zeros((2, 8, 10, 3), dtype=np.uint8)
    assert resize_frames(frames, (8, 10)) is frames
