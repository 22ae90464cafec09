"""Frame resizing that matches the reference (PIL) preprocessing."""

from __future__ import annotations

import numpy as np


def resize_frames(frames: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize uint8 (N, H, W, 3) frames to ``size`` (height, width), antialiased.

    torch's uint8 antialiased bilinear resize matches PIL's (the reference processor's) to
    within rounding, unlike decoders' own scalers, so frames are decoded at full size and
    resized here, a few frames at a time so that memory stays bounded.
    """
    import torch
    import torch.nn.functional as F

    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    if mode == "bilinear":
        y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    else:
        y = F.interpolate(x.float(), size=size, mode=mode, antialias=True, align_corners=False)
        y = y.round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(y.permute(0, 2, 3, 1).numpy())
