"""Calibrate the clip-similarity threshold for near-duplicates on the user's own library.

Positives: augmented copies of sampled clips (crop, scale, brightness and contrast, flip, blur,
JPEG-style compression, a small time shift), compared with the clip's stored embedding. Each
video draws its clips and augmentations from its own generator (seeded by ``seed`` and the
file's content fingerprint), so adding or removing other videos leaves them as they were.

Negatives: each sampled clip's most similar clip in another video, unless that pair looks like
a real copy. A library that holds copies (the reason to run ``dupes``) would otherwise put them
at the top of the negatives and lift the threshold above them. A pair is a *suspect* when its
similarity lies inside the positive distribution (at or above its 5th percentile) and at or
above the threshold fitted to the negatives left (never below their fit's 99th percentile;
found by refitting until it holds still). A suspect stays a negative only with evidence that its
videos are unrelated: both long enough to align (three clips or more), no aligned stretch through
the sampled clip, and no whole-video match covering most of the shorter video (clip pairs at or
above the suspect level, aligned as search aligns them). Otherwise it is left out and reported as
a likely copy, and the clip's next most similar video is tried. Clips that are never evidence
are no one's negatives: blank ones, and those the last common-footage pass found common (an
intro's copy in another episode is not a false positive the threshold must exclude); a blank
sampled clip has none.

Threshold: the negatives' (1 - target FPR) quantile. It is read off the negatives only when at
least ten lie above it; otherwise (the usual case: 0.1% of a few hundred is less than one pair)
it comes from a normal fit of their Fisher z located by the median and scaled by the MAD, so the
bulk of the negatives sets it, not the single most similar pair. A threshold that would miss
more than half of the positives is stored only when the caller accepts it.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from vidsearch.errors import VidsearchError
from vidsearch.media.blank import is_blank
from vidsearch.media.readers import iter_clips, open_video
from vidsearch.media.windows import ClipPlan, plan_clips, plan_window
from vidsearch.model.encoder import Encoder
from vidsearch.search.align import Match, Segment, align, covered_seconds
from vidsearch.search.confidence import ConfidenceModel
from vidsearch.storage.catalog import STATUS_INDEXED, ClipTable
from vidsearch.storage.library import Library

log = logging.getLogger(__name__)

AUGMENTATIONS = ("crop", "scale", "color", "flip", "blur", "jpeg", "shift")
#: A threshold this high would report nothing: calibration refuses to store it.
MAX_THRESHOLD = 0.999
#: A pair is a suspect at or above this quantile of the positives ("inside their distribution") ...
SUSPECT_POSITIVE_QUANTILE = 0.05
#: ... and at or above the threshold fitted to the other negatives (never below their 99th percentile).
SUSPECT_MAX_FPR = 0.01
#: A video with fewer clips cannot show a consistent time offset: no evidence either way.
MIN_ALIGN_CLIPS = 3
#: A whole-video match covering this share of the shorter video makes the two related.
COVERED_SHARE = 0.5
#: The (1 - FPR) quantile is read off the negatives only when this many lie above it.
MIN_TAIL = 10
#: Below this many negatives the fit is rough (a note says so); below MIN_NEGATIVES calibration stops.
FEW_NEGATIVES = 30
MIN_NEGATIVES = 5
#: A threshold that keeps less than this share of the positives is stored only when accepted.
MIN_RECALL = 0.5
#: Recall levels at which alternative thresholds are offered.
ALTERNATIVE_RECALLS = (0.5, 0.8, 0.9, 0.95)
#: Rounds of refitting the suspect level to the negatives it leaves.
MAX_ROUNDS = 8
#: Why a pair was left out of the negatives, in the order reported.
REASONS = ("aligned", "short", "covered")


def _fisher_z(similarity: np.ndarray | float) -> np.ndarray:
    return np.arctanh(np.clip(similarity, -0.9999, 0.9999))


@dataclass(frozen=True)
class TailFit:
    """A normal distribution of the negatives' Fisher z (arctanh of similarity), by median and MAD."""

    center: float
    scale: float

    @classmethod
    def of(cls, similarities: np.ndarray) -> TailFit:
        z = _fisher_z(np.asarray(similarities, dtype=np.float64))
        center = float(np.median(z))
        return cls(center, 1.4826 * float(np.median(np.abs(z - center))))

    def quantile(self, p: float) -> float:
        """The similarity below which a share ``p`` of unrelated pairs falls."""
        return float(np.tanh(self.center + NormalDist().inv_cdf(p) * self.scale))

    def exceedance(self, threshold: float) -> float:
        """The share of unrelated pairs at or above ``threshold``."""
        z = float(_fisher_z(threshold))
        if self.scale == 0:
            return float(z <= self.center)
        return 1.0 - NormalDist(self.center, self.scale).cdf(z)


@dataclass(frozen=True)
class LikelyCopy:
    """Two videos whose sampled clips' pairs were left out of the negatives: they look like real copies."""

    a: str
    b: str
    similarity: float
    clips: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Alternative:
    """Another threshold, with the positives it keeps and the unrelated pairs it lets through."""

    threshold: float
    recall: float
    fpr: float
    fitted_fpr: float


@dataclass
class Calibration:
    threshold: float
    target_fpr: float
    recall: float
    fpr: float
    positives: np.ndarray
    negatives: np.ndarray
    videos: int
    clips: int
    seconds: float
    method: str
    fit: TailFit
    suspect_level: float
    stored: bool
    excluded_pairs: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    likely_copies: list[LikelyCopy] = field(default_factory=list)
    alternatives: list[Alternative] = field(default_factory=list)
    warning: str | None = None
    notes: list[str] = field(default_factory=list)

    def figures(self) -> dict:
        q = (0.01, 0.05, 0.5)
        return {
            "threshold": round(self.threshold, 5),
            "stored": self.stored,
            "target_fpr": self.target_fpr,
            "recall": round(self.recall, 5),
            "fpr": round(self.fpr, 6),
            "fitted_fpr": round(self.fit.exceedance(self.threshold), 6),
            "method": self.method,
            "fit": {
                "z_median": round(self.fit.center, 5),
                "z_mad": round(self.fit.scale, 5),
                "threshold": round(self.fit.quantile(1 - self.target_fpr), 5),
            },
            "positives": int(len(self.positives)),
            "negatives": int(len(self.negatives)),
            "positive_quantiles": {f"p{int(x * 100)}": round(float(np.quantile(self.positives, x)), 5) for x in q}
            if len(self.positives)
            else {},
            "negative_quantiles": {
                "p50": round(float(np.quantile(self.negatives, 0.5)), 5),
                "p99": round(float(np.quantile(self.negatives, 0.99)), 5),
                "max": round(float(self.negatives.max()), 5),
            }
            if len(self.negatives)
            else {},
            "suspect_level": round(self.suspect_level, 5),
            "excluded": {"pairs": self.excluded_pairs, **self.excluded},
            "likely_copies": [
                {"a": c.a, "b": c.b, "similarity": round(c.similarity, 5), "clips": c.clips, "reasons": list(c.reasons)}
                for c in self.likely_copies
            ],
            "alternatives": [
                {
                    "threshold": round(a.threshold, 5),
                    "recall": round(a.recall, 5),
                    "fpr": round(a.fpr, 6),
                    "fitted_fpr": round(a.fitted_fpr, 6),
                }
                for a in self.alternatives
            ],
            "warning": self.warning,
            "videos": self.videos,
            "clips": self.clips,
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
        }


def augment(frames: np.ndarray, kinds: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """Apply the named augmentations (except "shift", which is done at decode) to uint8 (T, H, W, 3)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if "crop" in kinds:
        fh, fw = rng.uniform(0.7, 0.9, 2)
        ch, cw = int(h * fh), int(w * fw)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        x = F.interpolate(x[..., top : top + ch, left : left + cw], size=(h, w), mode="bilinear", antialias=True)
    if "scale" in kinds:
        f = rng.uniform(0.35, 0.6)
        small = F.interpolate(x, size=(max(8, int(h * f)), max(8, int(w * f))), mode="bilinear", antialias=True)
        x = F.interpolate(small, size=(h, w), mode="bilinear")
    if "color" in kinds:
        x = (x - 128) * rng.uniform(0.7, 1.3) + 128 + rng.uniform(-30, 30)
    if "flip" in kinds:
        x = x.flip(-1)
    if "blur" in kinds:
        g = torch.exp(-((torch.arange(7) - 3.0) ** 2) / (2 * rng.uniform(1.0, 2.0) ** 2))
        k = (g / g.sum()).view(1, 1, 1, 7).repeat(3, 1, 1, 1)
        x = F.conv2d(F.pad(x, (3, 3, 0, 0), mode="replicate"), k, groups=3)
        x = F.conv2d(F.pad(x, (0, 0, 3, 3), mode="replicate"), k.transpose(2, 3), groups=3)
    out = x.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if "jpeg" in kinds:
        from PIL import Image

        quality = int(rng.integers(15, 40))
        frames_out = []
        for f in out:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format="JPEG", quality=quality)
            frames_out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
        out = np.stack(frames_out)
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class _Clips:
    """One video's clips in time order: ids, (N, 2) times, (N, D) unit vectors, and its duration."""

    ids: np.ndarray
    times: np.ndarray
    vectors: np.ndarray
    duration: float


@dataclass
class _Negatives:
    values: np.ndarray
    suspect_level: float
    excluded_pairs: int
    excluded: dict[str, int]  # reason → clip pairs left out for it
    copies: dict[tuple[int, int], tuple[float, int, set[str]]]  # videos → (best similarity, clip pairs, reasons)
    likely_copies: list[LikelyCopy] = field(default_factory=list)


class _Evidence:
    """What aligning two whole videos says about their suspect pairs, computed once per pair of videos."""

    def __init__(self, lib: Library, table: ClipTable, durations: dict[int, float]):
        self.lib, self.table, self.durations = lib, table, durations
        self.hop, self.clip_s = lib.manifest.clips.hop_seconds, lib.manifest.clips.clip_seconds
        self._clips: dict[int, _Clips] = {}
        self._pairs: dict[tuple[int, int, float], tuple[tuple[str, ...], list[Segment]]] = {}

    def clips(self, vid: int) -> _Clips:
        if vid not in self._clips:
            rows = np.nonzero(self.table.video == vid)[0]
            with self.lib.catalog.read() as session:
                ids, vecs = self.lib.catalog.embeddings_by_ids(
                    session, self.table.ids[rows].tolist(), self.lib.manifest.encoder.dim
                )
            r = self.table.lookup(ids)
            order = np.argsort(self.table.start[r], kind="stable")
            times = np.stack([self.table.start[r], self.table.end[r]], axis=1)[order]
            duration = self.durations.get(vid) or (float(times[:, 1].max()) if len(times) else 0.0)
            self._clips[vid] = _Clips(ids[order], times, vecs[order], duration)
        return self._clips[vid]

    def reasons(self, v: int, w: int, clip_id: int, level: float) -> tuple[str, ...]:
        """Why the pair of ``clip_id`` (in v) and its best clip in w gives no evidence of unrelated videos."""
        if (v, w, level) not in self._pairs:
            self._pairs[v, w, level] = self._align(self.clips(v), self.clips(w), level)
        pair_reasons, segments = self._pairs[v, w, level]
        a = self.clips(v)
        t = float(a.times[int(np.nonzero(a.ids == clip_id)[0][0]), 0])
        aligned = any(s.q_start - 1e-6 <= t < s.q_end for s in segments)
        return (("aligned",) if aligned else ()) + pair_reasons

    def _align(self, a: _Clips, b: _Clips, level: float) -> tuple[tuple[str, ...], list[Segment]]:
        """Segments of two or more clip pairs at or above ``level``, aligned as search aligns them."""
        s = a.vectors @ b.vectors.T
        qi, rj = np.nonzero(s >= level)
        matches = [
            Match(
                float(a.times[i, 0]), float(a.times[i, 1]), float(b.times[j, 0]), float(b.times[j, 1]), float(s[i, j])
            )
            for i, j in zip(qi, rj)
        ]
        segments = [seg for seg in align(matches, self.hop, self.clip_s) if seg.matches >= 2]
        reasons: list[str] = []
        if min(len(a.ids), len(b.ids)) < MIN_ALIGN_CLIPS:
            reasons.append("short")
        a_shorter = a.duration <= b.duration
        covered = covered_seconds([(g.q_start, g.q_end) if a_shorter else (g.r_start, g.r_end) for g in segments])
        if covered >= COVERED_SHARE * min(a.duration, b.duration) > 0:
            reasons.append("covered")
        return tuple(reasons), segments


def _negatives(
    lib: Library, anchors: dict[int, list[int]], positives: np.ndarray, target_fpr: float, k: int = 50
) -> _Negatives:
    """Each anchor clip's most similar clip in another video, leaving out pairs that look like real copies.

    ``anchors`` maps a video id to the ids of its sampled clips. Candidates come from the vector
    index (an anchor's ``k`` nearest clips, best per video, most similar video first); the first
    candidate that is not a suspect, or is a suspect with evidence of unrelated videos, is the
    anchor's negative. Blank and common clips are no one's candidates, and a blank anchor has none.
    """
    vi = lib.vectors()
    dim = lib.manifest.encoder.dim
    with lib.catalog.read() as session:
        table = lib.catalog.clip_table(session)
        durations = {v.id: v.duration_s or 0.0 for v in lib.catalog.videos(session, STATUS_INDEXED)}
    never = is_blank(table.pixel_std) | (table.common_videos > 0)
    candidates: list[tuple[int, int, list[tuple[float, int]]]] = []  # (video, anchor clip, [(sim, other video)])
    for vid, anchor_ids in anchors.items():
        with lib.catalog.read() as session:
            ids, vecs = lib.catalog.embeddings_by_ids(session, anchor_ids, dim)
        seen = ~is_blank(table.pixel_std[table.lookup(ids)])  # a blank anchor has no negative
        ids, vecs = ids[seen], vecs[seen]
        if not len(ids):
            continue
        scores, nbrs = vi.search(vecs, min(k, vi.ntotal))
        nrows = table.lookup(nbrs.ravel()).reshape(nbrs.shape)
        for qi, cid in enumerate(ids.tolist()):
            best: dict[int, float] = {}
            for sim, r in zip(scores[qi], nrows[qi]):
                w = int(table.video[r]) if r >= 0 and not never[r] else vid
                if w != vid and w not in best:
                    best[w] = float(sim)
            if best:
                candidates.append((vid, cid, sorted(((s, w) for w, s in best.items()), reverse=True)))
    if not candidates:
        return _Negatives(np.zeros(0), 1.0, 0, dict.fromkeys(REASONS, 0), {})
    # The suspect level is the threshold fitted to the negatives that it leaves, found by refitting
    # until it holds still. Refitting from above can stop at a level the copies themselves lifted
    # (where most videos have a copy, each clip's nearest video is one); so start from below: the
    # median of every candidate pair (a clip against each other video: mostly unrelated videos).
    floor = float(np.quantile(positives, SUSPECT_POSITIVE_QUANTILE))
    p = 1 - min(target_fpr, SUSPECT_MAX_FPR)
    level = max(floor, float(np.median([s for _, _, cands in candidates for s, _ in cands])))
    evidence = _Evidence(lib, table, durations)
    for _ in range(MAX_ROUNDS):
        result = _walk(candidates, evidence, level)
        refit = max(floor, TailFit.of(result.values).quantile(p)) if len(result.values) else level
        if abs(refit - level) < 1e-4:
            break
        level = refit
    with lib.catalog.read() as session:
        paths = {v.id: v.display_path for v in lib.catalog.videos(session, ids={v for p in result.copies for v in p})}
    result.likely_copies = sorted(
        (
            LikelyCopy(paths[a], paths[b], sim, n, tuple(r for r in REASONS if r in why))
            for (a, b), (sim, n, why) in result.copies.items()
        ),
        key=lambda c: (-c.similarity, c.a, c.b),
    )
    return result


def _walk(candidates: list[tuple[int, int, list[tuple[float, int]]]], evidence: _Evidence, level: float) -> _Negatives:
    """Each anchor's first candidate below ``level`` or with evidence of unrelated videos; the rest left out."""
    values: list[float] = []
    excluded = dict.fromkeys(REASONS, 0)
    n_excluded = 0
    copies: dict[tuple[int, int], tuple[float, int, set[str]]] = {}
    for vid, cid, cands in candidates:
        for sim, w in cands:
            reasons = evidence.reasons(vid, w, cid, level) if sim >= level else ()
            if not reasons:
                values.append(sim)
                break
            n_excluded += 1
            for r in reasons:
                excluded[r] += 1
            key = (min(vid, w), max(vid, w))
            best_sim, n, why = copies.get(key, (0.0, 0, set()))
            copies[key] = (max(best_sim, sim), n + 1, why | set(reasons))
    return _Negatives(np.asarray(values, dtype=np.float64), level, n_excluded, excluded, copies)


def _positives(
    lib: Library,
    encoder: Encoder,
    chosen: list[tuple[int, str, str]],
    clip_rows: dict[int, list[tuple[int, float, float]]],
    clips_per_video: int,
    copies_per_clip: int,
    seed: int,
    deadline: float,
    max_seconds: float,
    notes: list[str],
) -> tuple[list[float], dict[int, list[int]]]:
    """Similarities of augmented copies to their clips' stored embeddings, and the sampled clips per video."""
    m = lib.manifest
    pp = m.encoder.preprocessing
    positives: list[float] = []
    anchors: dict[int, list[int]] = {}
    for vid, path, fingerprint in chosen:
        if time.monotonic() > deadline:
            notes.append(f"stopped at --max-seconds {max_seconds:g} after {sum(map(len, anchors.values()))} clips")
            break
        rng = np.random.default_rng([seed, int(fingerprint, 16)] if fingerprint else [seed, vid])
        rows = clip_rows[vid]
        pick = sorted(rng.choice(len(rows), size=min(clips_per_video, len(rows)), replace=False))
        try:
            with open_video(path, pp.frame_size()) as reader:
                plans = plan_clips(reader.frame_times, m.encoder.num_frames, m.clips.clip_seconds, m.clips.hop_seconds)
                wanted: list[ClipPlan] = []
                jobs = []
                for j in pick:
                    cid, s, e = rows[j]
                    for _ in range(copies_per_clip):
                        kinds = tuple(rng.choice(AUGMENTATIONS, size=int(rng.integers(1, 4)), replace=False))
                        if "shift" in kinds:
                            d = float(rng.uniform(0.1, 0.3)) * m.clips.clip_seconds * rng.choice([-1, 1])
                            plan = plan_window(
                                reader.frame_times,
                                max(0.0, s + d),
                                max(0.0, s + d) + (e - s),
                                m.encoder.num_frames,
                                position=len(wanted),
                            )
                        else:
                            base = min(plans, key=lambda p: abs(p.start_s - s))
                            plan = ClipPlan(len(wanted), base.start_s, base.end_s, base.frame_indices)
                        wanted.append(plan)
                        jobs.append((cid, kinds))
                size = (reader.info.width, reader.info.height)
                frames = {
                    c.position: c.frames for c in iter_clips(reader, sorted(wanted, key=lambda p: p.frame_indices[-1]))
                }
        except VidsearchError as exc:
            notes.append(f"skipped {path}: {exc}")
            continue
        batch = [augment(frames[i], kinds, rng) for i, (_, kinds) in enumerate(jobs) if i in frames]
        cids = [cid for i, (cid, _) in enumerate(jobs) if i in frames]
        if not batch:
            continue
        aug = encoder.embed(batch, [size] * len(batch))
        with lib.catalog.read() as session:
            ids, stored = lib.catalog.embeddings_by_ids(session, sorted(set(cids)), m.encoder.dim)
        by_id = dict(zip(ids.tolist(), stored))
        positives += [float(np.dot(v, by_id[c])) for v, c in zip(aug, cids)]
        anchors[vid] = sorted(set(cids))
    return positives, anchors


def _choose_threshold(negatives: np.ndarray, fit: TailFit, target_fpr: float, notes: list[str]) -> tuple[float, str]:
    """The negatives' (1 - target_fpr) quantile: read off them when MIN_TAIL lie above it, else fitted."""
    n = len(negatives)
    if n * target_fpr >= MIN_TAIL:
        ordered = np.sort(negatives)[::-1]
        return float(ordered[int(np.floor(target_fpr * n))]) + 1e-4, "empirical"
    notes.append(
        f"{n} negatives are too few to read a {target_fpr:g} false-positive rate off them (that takes "
        f"{int(np.ceil(MIN_TAIL / target_fpr))}): the threshold comes from a normal fit of their Fisher z "
        f"(median and MAD), not from the most similar unrelated pair ({negatives.max():.4f})"
    )
    if n < FEW_NEGATIVES:
        notes.append(f"only {n} negatives: the fit is rough; sample more videos (--sample) or index more")
    return fit.quantile(1 - target_fpr), "fit"


def _alternatives(positives: np.ndarray, negatives: np.ndarray, fit: TailFit) -> list[Alternative]:
    out: dict[float, Alternative] = {}
    for r in ALTERNATIVE_RECALLS:
        t = round(float(np.quantile(positives, 1 - r)), 4)
        out[t] = Alternative(t, float(np.mean(positives >= t)), float(np.mean(negatives >= t)), fit.exceedance(t))
    return sorted(out.values(), key=lambda a: -a.threshold)


def calibrate(
    lib: Library,
    encoder: Encoder,
    sample: int = 50,
    clips_per_video: int = 4,
    copies_per_clip: int = 2,
    target_fpr: float = 0.001,
    max_seconds: float = 600.0,
    seed: int = 0,
    accept: bool = False,
    say=None,
) -> Calibration:
    """Measure positives and negatives, choose the threshold, store it in the manifest (writers only).

    A threshold that keeps less than MIN_RECALL of the positives is stored only with ``accept``;
    either way the result says so (``warning``) and offers alternatives.
    """
    if not 0 < target_fpr < 1:
        raise ValueError(f"target false-positive rate must be in (0, 1), got {target_fpr}")
    say = say or (lambda msg: log.info("%s", msg))
    lib.check_compatible(encoder.settings)
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    with lib.catalog.read() as session:
        videos = [
            (v.id, v.display_path, v.fingerprint)
            for v in lib.catalog.videos(session, STATUS_INDEXED)
            if os.path.exists(v.path)
        ]
        if len(videos) < 2:
            raise VidsearchError("calibration needs at least two indexed videos whose files are present")
        chosen = [videos[i] for i in sorted(rng.choice(len(videos), size=min(sample, len(videos)), replace=False))]
        clip_rows = {vid: lib.catalog.clips_of(session, vid) for vid, _, _ in chosen}
    n_clips = sum(min(clips_per_video, len(r)) for r in clip_rows.values())
    per_clip = _time_one(encoder)
    say(
        f"calibrating on {len(chosen)} videos, {n_clips} clips, {n_clips * copies_per_clip} augmented copies: "
        f"about {per_clip * n_clips * copies_per_clip + 2 * len(chosen):.0f}s (at most {max_seconds:g}s)"
    )
    notes: list[str] = []
    positives, anchors = _positives(
        lib, encoder, chosen, clip_rows, clips_per_video, copies_per_clip, seed, t0 + max_seconds, max_seconds, notes
    )
    if not positives:
        raise VidsearchError("calibration could not decode any sampled clip; are the video files still there?")
    pos = np.asarray(positives)
    neg = _negatives(lib, anchors, pos, target_fpr)
    negatives = neg.values
    if len(negatives) < MIN_NEGATIVES:
        raise VidsearchError(
            f"calibration found {len(negatives)} unrelated clips to compare against ({neg.excluded_pairs} more "
            f"looked like real copies); index more videos first, or give dupes a --threshold"
        )
    fit = TailFit.of(negatives)
    threshold, method = _choose_threshold(negatives, fit, target_fpr, notes)
    if threshold >= MAX_THRESHOLD:
        raise VidsearchError(
            f"calibration would set the threshold to {threshold:.4f}: unrelated videos share near-identical clips "
            f"(median similarity {np.median(negatives):.4f}; black frames, titles or a logo?). Nothing stored; "
            "sample more videos or give dupes a --threshold"
        )
    recall = float(np.mean(pos >= threshold))
    warning = None
    if recall < MIN_RECALL:
        refused = "nothing stored; rerun with --accept to store it, or give dupes a --threshold (alternatives listed)"
        warning = (
            f"the threshold {threshold:.4f} misses {1 - recall:.0%} of the augmented copies (recall {recall:.2f}): "
            + ("stored anyway, as accepted" if accept else refused)
        )
    try:  # the curve that gives segments their confidence, kept beside the threshold
        curve: dict | None = ConfidenceModel.fit(pos, negatives).to_json()
    except ValueError as exc:
        curve = None
        notes.append(f"no confidence curve ({exc}); segments get the fallback confidence")
    cal = Calibration(
        threshold=threshold,
        target_fpr=target_fpr,
        recall=recall,
        fpr=float(np.mean(negatives >= threshold)),
        positives=pos,
        negatives=negatives,
        videos=len(chosen),
        clips=sum(map(len, anchors.values())),
        seconds=time.monotonic() - t0,
        method=method,
        fit=fit,
        suspect_level=neg.suspect_level,
        stored=lib.writable and (recall >= MIN_RECALL or accept),
        excluded_pairs=neg.excluded_pairs,
        excluded=neg.excluded,
        likely_copies=neg.likely_copies,
        alternatives=_alternatives(pos, negatives, fit),
        warning=warning,
        notes=notes,
    )
    if cal.stored:
        lib.update_manifest(duplicate_threshold=cal.threshold, calibration={**cal.figures(), "confidence": curve})
    return cal


def _time_one(encoder: Encoder) -> float:
    s = encoder.settings
    dummy = np.zeros((s.num_frames, s.preprocessing.crop_height, s.preprocessing.crop_width, 3), dtype=np.uint8)
    t = time.monotonic()
    encoder.embed([dummy])
    return time.monotonic() - t
