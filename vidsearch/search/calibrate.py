"""Calibrate the clip-similarity threshold for near-duplicates on the user's own library.

Positives: augmented copies of sampled clips (crop, scale, brightness and contrast, flip, blur,
JPEG-style compression, a small time shift), compared with the clip's stored embedding.
Negatives: each sampled clip's most similar clip in another video, leaving out videos whose
matches align in time with it (they may be real duplicates). The threshold keeps the
false-positive rate among the negatives at or below the target.
"""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from vidsearch.errors import VidsearchError
from vidsearch.media.readers import iter_clips, open_video
from vidsearch.media.windows import ClipPlan, plan_clips, plan_window
from vidsearch.model.encoder import Encoder
from vidsearch.search.align import Match, align
from vidsearch.search.confidence import ConfidenceModel
from vidsearch.storage.catalog import STATUS_INDEXED
from vidsearch.storage.library import Library

log = logging.getLogger(__name__)

AUGMENTATIONS = ("crop", "scale", "color", "flip", "blur", "jpeg", "shift")
#: A threshold this high would report nothing: calibration refuses to store it.
MAX_THRESHOLD = 0.999


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
    notes: list[str] = field(default_factory=list)

    def figures(self) -> dict:
        q = (0.01, 0.05, 0.5)
        return {
            "threshold": round(self.threshold, 5),
            "target_fpr": self.target_fpr,
            "recall": round(self.recall, 5),
            "fpr": round(self.fpr, 6),
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


def _negatives(lib: Library, anchors: dict[int, list[int]], k: int = 50) -> np.ndarray:
    """Each anchor clip's most similar clip in another video whose clips do not align with its own.

    ``anchors`` maps a video id to the ids of its sampled clips. A pair of videos aligns when
    the nearest neighbours (in any other video) of one video's clips fall in the other at a
    consistent offset, for at least half of the shorter video's clips (two at least): possibly
    a real duplicate, so not a negative.
    """
    vi = lib.vectors()
    dim = lib.manifest.encoder.dim
    hop, clip_s = lib.manifest.clips.hop_seconds, lib.manifest.clips.clip_seconds
    with lib.catalog.read() as session:
        table = lib.catalog.clip_table(session)
    counts = dict(zip(*np.unique(table.video, return_counts=True)))
    out = []
    for vid, anchor_ids in anchors.items():
        rows = np.nonzero(table.video == vid)[0]
        with lib.catalog.read() as session:
            ids, vecs = lib.catalog.embeddings_by_ids(session, table.ids[rows].tolist(), dim)
        scores, nbrs = vi.search(vecs, min(k, vi.ntotal))
        nrows = table.lookup(nbrs.ravel()).reshape(nbrs.shape)
        best: dict[int, dict[int, tuple[float, int]]] = {}  # other video → query row → (sim, neighbour row)
        for qi in range(len(ids)):
            for sim, r in zip(scores[qi], nrows[qi]):
                if r < 0 or table.video[r] == vid:
                    continue
                per_q = best.setdefault(int(table.video[r]), {})
                if qi not in per_q:
                    per_q[qi] = (float(sim), int(r))
        # each clip's nearest clip in any other video; pairs whose nearest matches keep one offset align
        q_row = table.lookup(ids)
        top: dict[int, list[Match]] = {}
        for qi in range(len(ids)):
            cands = [(sim, w) for w, per_q in best.items() if qi in per_q for sim in [per_q[qi][0]]]
            if cands:
                sim, w = max(cands)
                r = best[w][qi][1]
                top.setdefault(w, []).append(
                    Match(table.start[q_row[qi]], table.end[q_row[qi]], table.start[r], table.end[r], sim)
                )
        aligned = set()
        for w, ms in top.items():
            need = max(2, int(np.ceil(0.5 * min(counts[vid], counts[w]))))
            if any(seg.matches >= need for seg in align(ms, hop, clip_s)):
                aligned.add(w)
        index_of = {int(c): qi for qi, c in enumerate(ids)}
        for cid in anchor_ids:
            qi = index_of[cid]
            sims = [per_q[qi][0] for w, per_q in best.items() if w not in aligned and qi in per_q]
            if sims:
                out.append(max(sims))
    return np.asarray(out, dtype=np.float64)


def calibrate(
    lib: Library,
    encoder: Encoder,
    sample: int = 50,
    clips_per_video: int = 4,
    copies_per_clip: int = 2,
    target_fpr: float = 0.001,
    max_seconds: float = 600.0,
    seed: int = 0,
    say=None,
) -> Calibration:
    """Measure positives and negatives, choose the threshold, store it in the manifest (writers only)."""
    if not 0 < target_fpr < 1:
        raise ValueError(f"target false-positive rate must be in (0, 1), got {target_fpr}")
    say = say or (lambda msg: log.info("%s", msg))
    lib.check_compatible(encoder.settings)
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    m = lib.manifest
    with lib.catalog.read() as session:
        videos = [(v.id, v.display_path) for v in lib.catalog.videos(session, STATUS_INDEXED) if os.path.exists(v.path)]
        if len(videos) < 2:
            raise VidsearchError("calibration needs at least two indexed videos whose files are present")
        chosen = [videos[i] for i in sorted(rng.choice(len(videos), size=min(sample, len(videos)), replace=False))]
        clip_rows = {vid: lib.catalog.clips_of(session, vid) for vid, _ in chosen}
    n_clips = sum(min(clips_per_video, len(r)) for r in clip_rows.values())
    per_clip = _time_one(encoder)
    say(
        f"calibrating on {len(chosen)} videos, {n_clips} clips, {n_clips * copies_per_clip} augmented copies: "
        f"about {per_clip * n_clips * copies_per_clip + 2 * len(chosen):.0f}s (at most {max_seconds:g}s)"
    )

    positives: list[float] = []
    anchors: dict[int, list[int]] = {}
    notes: list[str] = []
    pp = m.encoder.preprocessing
    for vid, path in chosen:
        if time.monotonic() - t0 > max_seconds:
            notes.append(f"stopped at --max-seconds {max_seconds:g} after {sum(map(len, anchors.values()))} clips")
            break
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
    if not positives:
        raise VidsearchError("calibration could not decode any sampled clip; are the video files still there?")
    negatives = _negatives(lib, anchors)
    pos = np.asarray(positives)
    if len(negatives) == 0:
        raise VidsearchError("calibration found no unrelated clips to compare against; index more videos first")
    neg_sorted = np.sort(negatives)[::-1]
    allowed = int(np.floor(target_fpr * len(neg_sorted)))  # negatives that may lie at or above it
    threshold = float(neg_sorted[allowed]) + 1e-4 if allowed < len(neg_sorted) else float(neg_sorted[-1])
    if allowed == 0:
        from statistics import NormalDist

        z = np.arctanh(np.clip(negatives, -0.9999, 0.9999))
        fitted = float(np.tanh(z.mean() + NormalDist().inv_cdf(1 - target_fpr) * z.std(ddof=1))) if len(z) > 1 else 1.0
        notes.append(
            f"{len(negatives)} negatives cannot resolve a {target_fpr:g} false-positive rate: the threshold sits just "
            f"above the most similar unrelated pair ({neg_sorted[0]:.4f}); a normal fit of the negatives' Fisher z "
            f"puts it at {fitted:.4f}. Sample more videos (--sample) for a finer estimate"
        )
    if threshold >= MAX_THRESHOLD:
        raise VidsearchError(
            f"calibration would set the threshold to {threshold:.4f}: unrelated videos share near-identical clips "
            f"(similarity {neg_sorted[0]:.4f}; black frames, titles or a logo?). Nothing stored; sample more videos "
            "or give dupes a --threshold"
        )
    try:  # the curve that gives segments their confidence, kept beside the threshold
        curve: dict | None = ConfidenceModel.fit(pos, negatives).to_json()
    except ValueError as exc:
        curve = None
        notes.append(f"no confidence curve ({exc}); segments get the fallback confidence")
    cal = Calibration(
        threshold=threshold,
        target_fpr=target_fpr,
        recall=float(np.mean(pos >= threshold)),
        fpr=float(np.mean(negatives >= threshold)),
        positives=pos,
        negatives=negatives,
        videos=len(chosen),
        clips=sum(map(len, anchors.values())),
        seconds=time.monotonic() - t0,
        notes=notes,
    )
    if lib.writable:
        lib.update_manifest(duplicate_threshold=cal.threshold, calibration={**cal.figures(), "confidence": curve})
    return cal


def _time_one(encoder: Encoder) -> float:
    s = encoder.settings
    dummy = np.zeros((s.num_frames, s.preprocessing.crop_height, s.preprocessing.crop_width, 3), dtype=np.uint8)
    t = time.monotonic()
    encoder.embed([dummy])
    return time.monotonic() - t
