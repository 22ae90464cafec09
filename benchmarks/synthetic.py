"""Synthetic clip embeddings for the scale benchmarks: a hard set that behaves like real footage,
and the easy clustered set kept for comparison.

Hard (the default): each video is a random walk in a space with a power-law spectrum. Dimension
i (from 1) has variance ∝ i^-1.6 (1024-d), so most of the spread lies in the first few hundred
directions and neighbours differ in many small ones; a video's first clip is drawn from that
distribution and each next clip is 0.9 × the previous plus fresh noise (scaled so every clip has
the same spread), so neighbouring clips of a video drift instead of sitting on a shared centre.
The vectors are then turned by a fixed random rotation (the Kronecker product of two random
orthogonal 32×32 matrices: cheap, and it mixes every axis into every other) so that the spectrum
is not aligned with the axes, as a real encoder's is not (it matters to product quantisers, which
split the axes into groups), and scaled to unit norm.

Easy: videos of 20 clips drift between 4 of 2000 scene centres, each clip its centre plus a
little noise: tight clusters that IVF lists follow, so nprobe 1 finds nearly everything.

Both generate in chunks of whole videos from a seed, so 10M clips never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

DIM = 1024
PER_VIDEO = 20
DECAY = 1.6
DRIFT = 0.9


class HardVectors:
    """Power-law spectrum, per-video temporal drift, randomly rotated, unit norm."""

    label = f"hard (power-law spectrum i^-{DECAY}, drift {DRIFT} per clip)"

    def __init__(self, seed: int = 0, dim: int = DIM):
        side = int(round(np.sqrt(dim)))
        if side * side != dim:
            raise ValueError(f"dim must be a square, got {dim}")
        rng = np.random.default_rng(seed + 1_000_003)
        self.dim, self.side = dim, side
        self.scale = (np.arange(1, dim + 1, dtype=np.float32) ** (-DECAY / 2)).astype(np.float32)
        self.rot = [np.linalg.qr(rng.standard_normal((side, side)))[0].T.astype(np.float32) for _ in range(2)]

    def videos(self, n_videos: int, rng: np.random.Generator, per_video: int = PER_VIDEO) -> np.ndarray:
        """(n_videos * per_video, dim) float32 unit vectors, video by video."""
        z = rng.standard_normal((n_videos, per_video, self.dim), dtype=np.float32)
        z *= self.scale
        fresh = np.float32(np.sqrt(1 - DRIFT**2))
        for t in range(1, per_video):
            z[:, t] *= fresh
            z[:, t] += np.float32(DRIFT) * z[:, t - 1]
        n, s = n_videos * per_video, self.side
        # (A ⊗ B) x as two products with the 32-wide factors; the output's axis order is fixed
        w = (z.reshape(n * s, s) @ self.rot[0]).reshape(n, s, s).transpose(0, 2, 1)
        x = (np.ascontiguousarray(w).reshape(n * s, s) @ self.rot[1]).reshape(n, self.dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


class EasyVectors:
    """Tight clusters: videos drift between 4 of 2000 scene centres (the earlier benchmark's set)."""

    label = "easy (clustered: 2000 scene centres)"

    def __init__(self, seed: int = 0, dim: int = DIM):
        rng = np.random.default_rng(seed + 2_000_003)
        self.dim = dim
        c = rng.standard_normal((2000, dim)).astype(np.float32)
        self.centres = c / np.linalg.norm(c, axis=1, keepdims=True)

    def videos(self, n_videos: int, rng: np.random.Generator, per_video: int = PER_VIDEO) -> np.ndarray:
        scene = rng.integers(0, len(self.centres), (n_videos, 4)).repeat(-(-per_video // 4), axis=1)[:, :per_video]
        v = self.centres[scene.ravel()]
        v += rng.standard_normal(v.shape, dtype=np.float32) * np.float32(0.55 / np.sqrt(self.dim))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v


def generator(kind: str, seed: int = 0, dim: int = DIM) -> HardVectors | EasyVectors:
    return {"hard": HardVectors, "easy": EasyVectors}[kind](seed, dim)


def chunks(gen, n_clips: int, seed: int = 0, chunk_videos: int = 5000) -> Iterator[np.ndarray]:
    """The library's clips, ``chunk_videos`` whole videos at a time (the same for a seed and size)."""
    n_videos = n_clips // PER_VIDEO
    for v0 in range(0, n_videos, chunk_videos):
        rng = np.random.default_rng([seed, v0])
        yield gen.videos(min(chunk_videos, n_videos - v0), rng)
