"""Catalog size and read speed by SQLite page size, on synthetic 1024-d clips.

A clip row holds a 2 KB float16 vector and a few fields: it does not fit twice in SQLite's
default 4 KB page, so with 4 KB pages each row takes a page alone (catalogs made before
vidsearch chose 8 KB pages keep theirs). For each page size this writes the same N clips
(videos of 20 hard synthetic clips, ``synthetic.py``) into a new catalog through the library,
closes it and reports the bytes a clip on disk, then times what reads the vectors: one full scan
(``iter_embeddings``: building the FAISS index, ``dupes``) and random lookups of 400 ids (what
re-ranking reads for one query), both from the page cache.

Usage: python benchmarks/catalog_pages.py [--clips 20000] [--page-sizes 4096 8192 16384]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from synthetic import DIM, PER_VIDEO, generator

LOOKUPS = 200
LOOKUP_IDS = 400


def build(root: Path, n_clips: int, page_size: int) -> float:
    """A catalog of ``n_clips`` clips with pages of ``page_size`` bytes; seconds to write it."""
    import vidsearch.storage.catalog as catalog
    from vidsearch.settings import EncoderSettings, Preprocessing
    from vidsearch.storage.catalog import ClipRecord, VideoRecord
    from vidsearch.storage.library import Library

    catalog.PAGE_SIZE = page_size  # new catalogs only: what this run measures
    rng = np.random.default_rng(0)
    gen = generator("hard", 0)
    t = time.perf_counter()
    with Library.create(root, EncoderSettings("synthetic", "0", DIM, "mean", 16, 224, Preprocessing())) as lib:
        for v in range(n_clips // PER_VIDEO):
            name = f"/lib/v{v:07d}.mp4"
            lib.catalog.store_video(
                VideoRecord(name.encode(), 1, 1, name, duration_s=2.0 * PER_VIDEO),
                [ClipRecord(2.0 * i, 2.0 * i + 2, x) for i, x in enumerate(gen.videos(1, rng))],
            )
    return time.perf_counter() - t


def reads(root: Path) -> tuple[float, float]:
    """Seconds for a full scan of the vectors, and per lookup of LOOKUP_IDS random ids."""
    from vidsearch.storage.library import Library

    rng = np.random.default_rng(1)
    with Library.open(root) as lib:
        with lib.catalog.read() as s:
            ids = lib.catalog.clip_ids(s)
            for _ in lib.catalog.iter_embeddings(s, DIM):  # warm the page cache as a second run finds it
                pass
            t = time.perf_counter()
            for _ in lib.catalog.iter_embeddings(s, DIM):
                pass
            scan = time.perf_counter() - t
            picks = [rng.choice(ids, LOOKUP_IDS, replace=False).tolist() for _ in range(LOOKUPS)]
            t = time.perf_counter()
            for pick in picks:
                lib.catalog.embeddings_by_ids(s, pick, DIM)
            lookup = (time.perf_counter() - t) / LOOKUPS
    return scan, lookup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=20_000)
    ap.add_argument("--page-sizes", type=int, nargs="+", default=[4096, 8192, 16384])
    args = ap.parse_args()
    print(
        f"{'page':>6} {'clips':>7} {'catalog MB':>10} {'bytes/clip':>10} {'write s':>8} {'scan s':>7} "
        f"{'lookup ms':>9}  ({LOOKUP_IDS} random ids)"
    )
    for page_size in args.page_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "idx"
            write = build(root, args.clips, page_size)
            size = (root / "catalog.sqlite").stat().st_size
            scan, lookup = reads(root)
        print(
            f"{page_size:>6} {args.clips:>7} {size / 1e6:10.1f} {size / args.clips:10.0f} {write:8.1f} "
            f"{scan:7.2f} {1e3 * lookup:9.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
