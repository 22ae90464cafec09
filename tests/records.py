"""Synthetic records for storage tests: encoder settings, unit vectors, videos and clips."""

import numpy as np

from vidsearch.settings import EncoderSettings, Preprocessing
from vidsearch.storage.catalog import ClipRecord, VideoRecord

DIM = 8


def settings(**kw):
    base = dict(
        model="org/model",
        revision="abc",
        dim=DIM,
        pooling="mean",
        num_frames=16,
        image_size=224,
        preprocessing=Preprocessing(),
    )
    base.update(kw)
    return EncoderSettings(**base)


def unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def record(name, fp="f"):
    return VideoRecord(path=name.encode(), size=1, mtime_ns=1, fingerprint=fp, duration_s=4.0)


def clips(rng, n):
    return [ClipRecord(2.0 * i, 2.0 * i + 2, v) for i, v in enumerate(unit(rng, n))]


def clustered(rng, n, dim=DIM, centres=40):
    """Unit vectors around ``centres`` random centres: data an IVF index can be trained and tuned on."""
    c = unit(rng, centres, dim)
    v = c[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def hard(rng, n_videos, dim=DIM, per_video=20):
    """Unit vectors that behave like real clip embeddings (as benchmarks/synthetic.py's hard set):
    variance of dimension i ∝ i^-1.6, and each clip of a video 0.9 × the previous plus fresh noise.
    No clusters for IVF lists to follow: a hard case for approximate search."""
    scale = np.arange(1, dim + 1, dtype=np.float32) ** -0.8
    z = rng.standard_normal((n_videos, per_video, dim)).astype(np.float32) * scale
    for t in range(1, per_video):
        z[:, t] = 0.9 * z[:, t - 1] + np.sqrt(1 - 0.81) * z[:, t]
    v = z.reshape(-1, dim)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
