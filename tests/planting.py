"""Planted embeddings with known answers, shared by the duplicate and search tests."""

import numpy as np

from vidsearch.settings import EncoderSettings, Preprocessing
from vidsearch.storage.catalog import ClipRecord, VideoRecord
from vidsearch.storage.library import Library

DIM = 32
HOP = 2.0


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class Planter:
    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)

    def random(self, n):
        return unit(self.rng.standard_normal((n, DIM)))

    def noisy(self, vecs, sim=0.97):
        """Vectors at cosine ~``sim`` from ``vecs``."""
        noise = unit(self.rng.standard_normal(vecs.shape))
        noise -= np.sum(noise * vecs, axis=1, keepdims=True) * vecs
        noise = unit(noise)
        return unit(sim * vecs + np.sqrt(1 - sim**2) * noise)

    def scene(self, n, step_sim=0.93):
        """``n`` clips of a slowly changing scene: each at cosine ``step_sim`` from the one before."""
        clips = [self.random(1)[0]]
        for _ in range(n - 1):
            clips.append(self.noisy(clips[-1][None], step_sim)[0])
        return np.array(clips)


def store(lib, name, vecs, duration=None, starts=None, pixel_std=None):
    n = len(vecs)
    starts = starts if starts is not None else [HOP * i for i in range(n)]
    duration = duration if duration is not None else starts[-1] + 2.0
    spreads = pixel_std if pixel_std is not None else [None] * n
    clips = [ClipRecord(s, s + 2.0, v, d) for s, v, d in zip(starts, vecs, spreads)]
    lib.catalog.store_video(VideoRecord(name.encode(), 1, 1, name, duration_s=duration), clips)


def planted_library(root):
    settings = EncoderSettings("m", "r", DIM, "mean", 16, 224, Preprocessing())
    lib = Library.create(root, settings)
    p = Planter(0)
    orig = p.random(10)  # 20 s
    store(lib, "/orig.mp4", orig)
    store(lib, "/trim.mp4", p.noisy(orig[2:6]))  # orig 4-12 s, re-timed to 0-8 s
    store(lib, "/long.mp4", np.concatenate([p.random(5), p.noisy(orig[0:5]), p.random(5)]))  # orig 0-10 s at 10-20 s
    shared1, shared2 = p.random(3), p.random(3)
    store(lib, "/x.mp4", np.concatenate([shared1, p.random(4), shared2]))  # shares 0-6 s and 14-20 s with y
    store(lib, "/y.mp4", np.concatenate([p.random(2), p.noisy(shared1), p.random(3), p.noisy(shared2), p.random(2)]))
    u1 = p.random(6)
    u2 = p.random(6)
    u2[3] = p.noisy(u1[1:2], 0.95)[0]  # one clip above the threshold by chance
    store(lib, "/u1.mp4", u1)
    store(lib, "/u2.mp4", u2)
    s1 = p.random(2)
    store(lib, "/s1.mp4", s1, duration=3.0, starts=[0.0, 1.0])  # 3-second videos: clips [0,2) and [1,3)
    store(lib, "/s2.mp4", p.noisy(s1), duration=3.0, starts=[0.0, 1.0])
    return lib


def footage(seed, dim=32):
    """Clip vectors of synthetic footage that changes gradually: a window's vector is the mean of a
    smooth random path at its 16 sampled times (as mean-pooled tokens are), unit length."""
    rng = np.random.default_rng(seed)
    freqs, phases = rng.uniform(0.2, 1.5, (8, dim)), rng.uniform(0, 2 * np.pi, (8, dim))

    def clips(starts, length=2.0):
        t = np.asarray(starts)[:, None] + np.arange(16) * length / 16
        v = np.sin(freqs * t[..., None, None] + phases).sum(axis=2).mean(axis=1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    return clips


def windows(duration, hop):
    """Clip times as the windows are planned: every ``hop``, the last moved back to end at the end."""
    starts = list(np.arange(0.0, duration - 2.0 + 1e-9, hop))
    if starts[-1] + 2.0 < duration - 0.05:
        starts.append(duration - 2.0)
    return np.array([(s, s + 2.0) for s in starts])
