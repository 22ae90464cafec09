"""A segment's confidence: a score in [0, 1] that means the same for every query and pair.

A clip similarity alone means different things for different models and libraries, and a
segment's old score (mean similarity × seconds) grows with length whether or not the footage is
copied. The confidence works clip by clip. A clip's *share* is the share of copies among
calibration pairs at its similarity: a logistic curve in Fisher z (artanh of the similarity)
fitted to the calibration's positives (augmented copies against their originals) and negatives
(each sampled clip's most similar clip in an unrelated video), the two classes weighted equally.
A segment's evidence is, for each of its query clips and for each of its library clips, the
best similarity it has inside the segment at the segment's offset. Its confidence is the mean
share of its query clips (how much of the matched query footage looks copied) times the chance
that at least one of its library clips is a copy (1 - the product of their complements, each
library clip counted once however many overlapping query windows match it): one lucky clip is
not a copy, nor is a long match whose clips are mostly chance matches.

Without a calibration (the fallback), the curve is fixed by the clip-similarity threshold
(``--threshold``, else the default 0.90): a share of 1/2 at the threshold, 0.98 at the
similarity halfway (in z) from the threshold to 1 - (1 - threshold)/10, and symmetric below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from vidsearch.search.align import Match, Segment
from vidsearch.storage.library import Library

#: Similarities are clipped to this before artanh, which is infinite at 1.
_MAX_SIMILARITY = 0.9999
#: The fallback's clip share at the similarity that closes 1/10 of the gap to 1 from the threshold.
_FALLBACK_SHARE = 0.98
#: The fallback takes thresholds beyond ±this as ±this.
_FALLBACK_LIMIT = 0.999


def _z(similarity: ArrayLike) -> np.ndarray:
    return np.arctanh(np.clip(np.asarray(similarity, dtype=np.float64), -_MAX_SIMILARITY, _MAX_SIMILARITY))


@dataclass(frozen=True)
class ConfidenceModel:
    """Clip share = 1 / (1 + exp(-slope · (artanh(similarity) - artanh(midpoint))))."""

    slope: float
    midpoint: float
    source: str

    def __post_init__(self) -> None:
        if not self.slope > 0:
            raise ValueError(f"a confidence curve must rise with similarity; slope {self.slope}")
        if not -1 < self.midpoint < 1:
            raise ValueError(f"the midpoint is a similarity in (-1, 1); got {self.midpoint}")

    @classmethod
    def fit(cls, positives: ArrayLike, negatives: ArrayLike) -> ConfidenceModel:
        """Logistic regression of copy (1) or not (0) on Fisher z, classes weighted equally."""
        zp, zn = _z(positives), _z(negatives)
        if len(zp) < 2 or len(zn) < 2:
            raise ValueError("a confidence curve needs at least two positives and two negatives")
        x = np.concatenate([zp, zn])
        y = np.concatenate([np.ones(len(zp)), np.zeros(len(zn))])
        w = np.concatenate([np.full(len(zp), 0.5 / len(zp)), np.full(len(zn), 0.5 / len(zn))])
        # Newton's method on (intercept, slope); a small ridge keeps separable classes finite
        beta = np.array([-(zp.mean() + zn.mean()) / 2, 1.0])
        design = np.stack([np.ones_like(x), x], axis=1)
        ridge = np.diag([0.0, 1e-3])
        for _ in range(50):
            p = 1 / (1 + np.exp(-(design @ beta)))
            grad = design.T @ (w * (p - y)) + ridge @ beta
            hess = (design * (w * p * (1 - p))[:, None]).T @ design + ridge
            step = np.linalg.solve(hess, grad)
            beta -= step
            if np.abs(step).max() < 1e-9:
                break
        intercept, slope = float(beta[0]), float(beta[1])
        if slope <= 0:
            raise ValueError("calibration positives are no more similar than its negatives: no confidence curve")
        return cls(slope, math.tanh(-intercept / slope), "calibrated")

    @classmethod
    def fallback(cls, threshold: float, source: str) -> ConfidenceModel:
        """Share 1/2 at ``threshold``, ``_FALLBACK_SHARE`` halfway (in z) to 1 - (1 - threshold) / 10."""
        t = min(max(threshold, -_FALLBACK_LIMIT), _FALLBACK_LIMIT)  # artanh is infinite at ±1
        z0, z1 = math.atanh(t), math.atanh(1 - (1 - t) / 10)
        slope = math.log(_FALLBACK_SHARE / (1 - _FALLBACK_SHARE)) / ((z1 - z0) / 2)
        return cls(slope, t, f"fallback ({source} threshold {threshold:g})")

    @classmethod
    def of(cls, lib: Library, threshold: float | None = None) -> ConfidenceModel:
        """The index's calibrated curve, else the fallback at the threshold dupes would use
        (``threshold``, else the calibrated or default one)."""
        from vidsearch.search.duplicates import resolve_threshold  # duplicates uses this module

        stored = (lib.manifest.calibration or {}).get("confidence")
        if stored:
            return cls(float(stored["slope"]), float(stored["midpoint"]), "calibrated")
        thr, source = resolve_threshold(lib, threshold)
        return cls.fallback(thr, source)

    def to_json(self) -> dict:
        return {"slope": round(self.slope, 6), "midpoint": round(self.midpoint, 6)}

    def clip_share(self, similarities: ArrayLike) -> np.ndarray:
        """The share of copies among calibration pairs at each similarity."""
        return 1 / (1 + np.exp(-self.slope * (_z(similarities) - float(_z(self.midpoint)))))

    def confidence(self, evidence: Evidence) -> float:
        """A segment's confidence from its clips' best similarities."""
        if not evidence.query or not evidence.library:
            return 0.0
        copied = float(self.clip_share(evidence.query).mean())
        return copied * float(1 - np.prod(1 - self.clip_share(evidence.library)))


@dataclass(frozen=True)
class Evidence:
    """A segment's clips' best similarities inside it at its offset: one per query clip, one per library clip."""

    query: tuple[float, ...]
    library: tuple[float, ...]


def evidence(segment: Segment, matches: Sequence[Match], tolerance: float) -> Evidence:
    """The best similarity of each query clip and of each library clip inside ``segment`` among
    ``matches`` whose offset is within ``tolerance`` seconds of the segment's."""
    offset = segment.r_start - segment.q_start
    by_query: dict[float, float] = {}
    by_library: dict[float, float] = {}
    for m in matches:
        q_mid, r_mid = (m.q_start + m.q_end) / 2, (m.r_start + m.r_end) / 2
        if (
            segment.q_start <= q_mid <= segment.q_end
            and segment.r_start <= r_mid <= segment.r_end
            and abs(m.offset - offset) <= tolerance + 1e-6
        ):
            by_query[m.q_start] = max(by_query.get(m.q_start, -1.0), m.similarity)
            by_library[m.r_start] = max(by_library.get(m.r_start, -1.0), m.similarity)
    return Evidence(tuple(by_query.values()), tuple(by_library.values()))
