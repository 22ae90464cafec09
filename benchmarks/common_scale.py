"""What the common-footage pass costs `dupes`: a library of synthetic videos sharing a few intros.

Builds an index of ``--videos`` videos of 20 clips (1024-d vectors, clustered like footage), of
which ``--intros`` × ``--per-intro`` open with one of a few shared 4-second intros (noisy copies,
as re-encodes are), every one ending on the same black clip (pixel spread 0: blank), and 2% with
a trimmed near-duplicate. Then times ``find_duplicates`` with ``keep_common=True`` (no common
pass; blank clips are left out either way) and with the pass (the default), alternately,
``--repeat`` times each, and prints both side by side with what each reports: wall-clock and
process CPU seconds (the better measure on a shared machine), the best of the repeats.

Usage: python benchmarks/common_scale.py [--videos 1000] [--intros 4] [--per-intro 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 1024
CLIPS_PER_VIDEO = 20
INTRO_CLIPS = 2


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def noisy(rng: np.random.Generator, v: np.ndarray) -> np.ndarray:
    """A near copy (cosine about 0.97), as a re-encode gives."""
    return unit(v + 0.25 * rng.standard_normal(v.shape) / np.sqrt(DIM))


def build(root: Path, videos: int, intros: int, per_intro: int, seed: int = 0):
    from vidsearch.settings import EncoderSettings, Preprocessing
    from vidsearch.storage.catalog import ClipRecord, VideoRecord
    from vidsearch.storage.library import Library

    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((256, DIM)))
    intro_vecs = [unit(rng.standard_normal((INTRO_CLIPS, DIM))) for _ in range(intros)]
    black = unit(rng.standard_normal(DIM))
    lib = Library.create(root, EncoderSettings("synthetic", "0", DIM, "mean", 16, 224, Preprocessing()))

    def store(name: str, vecs: np.ndarray, spreads: list[float]) -> None:
        lib.catalog.store_video(
            VideoRecord(name.encode(), 1, 1, name, duration_s=2.0 * len(vecs)),
            [ClipRecord(2.0 * i, 2.0 * i + 2, x, s) for i, (x, s) in enumerate(zip(vecs, spreads))],
        )

    n_copies = max(1, videos // 50)
    opening = {}
    for k in range(intros):
        for v in range(k * per_intro, (k + 1) * per_intro):
            opening[v] = k
    originals = {}
    for v in range(videos - n_copies):
        scenes = centres[rng.integers(0, len(centres), 4)]
        base = scenes[np.repeat(np.arange(4), CLIPS_PER_VIDEO // 4)]
        vecs = unit(base + 0.9 * rng.standard_normal((CLIPS_PER_VIDEO, DIM)) / np.sqrt(DIM) * 6)
        if v in opening:
            vecs[:INTRO_CLIPS] = noisy(rng, intro_vecs[opening[v]])
        vecs[-1] = black
        name = f"/lib/v{v:05d}.mp4"
        originals[name] = vecs
        store(name, vecs, [40.0] * (CLIPS_PER_VIDEO - 1) + [0.0])
    planted = set()
    names = list(originals)
    for c in range(n_copies):
        src = names[int(rng.integers(0, len(names)))]
        start = int(rng.integers(0, CLIPS_PER_VIDEO // 2))
        vecs = noisy(rng, originals[src][start:])
        vecs[-1] = black
        name = f"/lib/copy{c:04d}.mp4"
        store(name, vecs, [40.0] * (len(vecs) - 1) + [0.0])
        planted.add(tuple(sorted((src, name))))
    lib.vectors()
    return lib, planted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--intros", type=int, default=4)
    ap.add_argument("--per-intro", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threshold", type=float, default=0.9)
    args = ap.parse_args()
    if args.intros * args.per_intro > args.videos:
        ap.error("--intros x --per-intro must not exceed --videos")

    from vidsearch.search.duplicates import find_duplicates

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        lib, planted = build(Path(tmp) / "idx", args.videos, args.intros, args.per_intro)
        with lib.catalog.read() as s:
            clips = lib.catalog.clip_count(s)
        print(
            f"{args.videos} videos, {clips} clips: {args.intros} intros in {args.per_intro} videos each, "
            f"{len(planted)} planted copies, a black last clip in every video (built in {time.perf_counter() - t:.1f}s)"
        )
        runs: dict[str, list] = {"--keep-common": [], "common pass": []}
        for _ in range(args.repeat):
            for label, keep in (("--keep-common", True), ("common pass", False)):
                t, cpu = time.perf_counter(), time.process_time()
                report = find_duplicates(lib, threshold=args.threshold, keep_common=keep)
                runs[label].append((time.perf_counter() - t, time.process_time() - cpu, report))
        lib.close()
    print(
        f"\n{'dupes':>13} {'wall s':>7} {'CPU s':>7} {'pass s':>7} {'pairs':>7} {'planted found':>14} "
        f"{'other pairs':>12} {'cand. pairs':>12} {'common clips':>13}   (best of {args.repeat})"
    )
    cpu_best = {}
    for label, done in runs.items():
        report = done[0][2]
        found = {tuple(sorted((p.a, p.b))) for p in report.pairs}
        cpu_best[label] = min(c for _, c, _ in done)
        print(
            f"{label:>13} {min(w for w, _, _ in done):7.2f} {cpu_best[label]:7.2f} "
            f"{min(r.common_seconds for _, _, r in done):7.2f} {len(report.pairs):7d} "
            f"{len(planted & found) / len(planted):14.3f} {len(found - planted):12d} {report.candidates:12d} "
            f"{report.common_clips:13d}"
        )
    added = cpu_best["common pass"] - cpu_best["--keep-common"]
    ratio = cpu_best["common pass"] / cpu_best["--keep-common"]
    print(
        f"\nthe common pass changes dupes' CPU time by {added:+.2f}s ({ratio:.2f}x): "
        "it costs 'pass s' (wall), and saves aligning the pairs whose only shared footage is common"
    )


if __name__ == "__main__":
    main()
