"""Search at scale: the index type vidsearch chooses at each size, measured against exact search.

Synthetic clip vectors shaped like VideoMAE-large output (1024-d, clustered, unit norm, videos of
20 neighbouring clips) are written to a real catalog; vidsearch then builds (and for IVF, trains
and tunes) its index from the catalog as it would for a user. Reported per size: the chosen
type, build time, memory, recall@10 against exact search on held-out queries, and single-query
and batch latency (p50, p99). With --dupes, also ``find_duplicates`` on planted copies (1% of
videos), and at up to 200k clips the same with exact all-pairs candidates for comparison. With
--stale, the time a reader takes to open the index after one more video was committed than the
vectors file holds (as while an index job runs, or after one was killed): caught up by clip id,
against a rebuild from the catalog.

Usage: python benchmarks/search_scale.py [--clips 100000 1000000] [--dupes] [--stale]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DIM = 1024
PER_VIDEO = 20


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def synthetic_vectors(n: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    """Videos drift between scene centres; clips of a scene are alike; scenes recur across videos."""
    n_videos = n // PER_VIDEO
    scene = rng.integers(0, len(centres), (n_videos, 4)).repeat(PER_VIDEO // 4, axis=1).ravel()
    v = centres[scene] + rng.standard_normal((n, DIM), dtype=np.float32) * (0.55 / np.sqrt(DIM))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


def fill_catalog(lib, vectors: np.ndarray, planted: int, rng) -> set[tuple[int, int]]:
    """Bulk-write videos of PER_VIDEO clips (Core inserts: this is set-up, not what is measured)."""
    from vidsearch.storage.catalog import ClipRow, Video, _bump_generation, encode_embedding

    n_videos = len(vectors) // PER_VIDEO
    copies = {}
    if planted:
        for c, src in enumerate(rng.choice(n_videos - planted, planted, replace=False)):
            copies[n_videos - planted + c] = int(src)
    pairs = set()
    with lib.catalog.write() as s:
        s.execute(
            Video.__table__.insert(),
            [
                {
                    "id": v + 1,
                    "path": f"/lib/v{v:07d}.mp4".encode(),
                    "size": 1,
                    "mtime_ns": 1,
                    "fingerprint": str(v),
                    "duration_s": 2.0 * PER_VIDEO,
                    "status": "indexed",
                }
                for v in range(n_videos)
            ],
        )
        for v0 in range(0, n_videos, 5000):
            rows = []
            for v in range(v0, min(n_videos, v0 + 5000)):
                vecs = vectors[v * PER_VIDEO : (v + 1) * PER_VIDEO]
                if v in copies:  # a re-encoded copy: the source's clips plus small noise
                    src = vectors[copies[v] * PER_VIDEO : (copies[v] + 1) * PER_VIDEO]
                    noisy = src + rng.standard_normal(src.shape, dtype=np.float32) * (0.15 / np.sqrt(DIM))
                    vecs = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
                    vectors[v * PER_VIDEO : (v + 1) * PER_VIDEO] = vecs
                    pairs.add((copies[v] + 1, v + 1))
                rows += [
                    {"video_id": v + 1, "start_s": 2.0 * i, "end_s": 2.0 * i + 2, "embedding": encode_embedding(x)}
                    for i, x in enumerate(vecs)
                ]
            s.execute(ClipRow.__table__.insert(), rows)
        _bump_generation(s)
    return pairs


def stale_reopen(lib, rng) -> tuple[float, float]:
    """Commit one more video than the vectors file holds; time a reader's open + vectors() (caught
    up by clip id) and, side by side, a rebuild from the catalog."""
    from vidsearch.storage.catalog import ClipRecord, VideoRecord
    from vidsearch.storage.library import Library

    n = lib.vectors().ntotal
    vecs = rng.standard_normal((PER_VIDEO, DIM), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    lib.catalog.store_video(
        VideoRecord(b"/lib/new.mp4", 1, 1, "new", duration_s=2.0 * PER_VIDEO),
        [ClipRecord(2.0 * i, 2.0 * i + 2, v) for i, v in enumerate(vecs)],
    )
    with Library.open(lib.root) as reader:
        t = time.perf_counter()
        vi = reader.vectors()
        caught_up = time.perf_counter() - t
        assert vi.ntotal == n + PER_VIDEO
        t = time.perf_counter()
        vi = reader.rebuild_vectors()
        rebuilt = time.perf_counter() - t
        assert vi.ntotal == n + PER_VIDEO
    return caught_up, rebuilt


def latencies(vi, queries: np.ndarray) -> tuple[float, float, float]:
    singles = []
    for q in queries:
        t = time.perf_counter()
        vi.search(q[None], 10)
        singles.append(time.perf_counter() - t)
    t = time.perf_counter()
    vi.search(queries, 10)
    batch = (time.perf_counter() - t) / len(queries)
    return float(np.percentile(singles, 50) * 1e3), float(np.percentile(singles, 99) * 1e3), batch * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--dupes", action="store_true", help="also time find_duplicates with planted copies")
    ap.add_argument("--stale", action="store_true", help="also time opening an index one video behind")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the test index (needs ~2.2 GB per 1M clips)")
    args = ap.parse_args()

    import faiss

    from vidsearch.search.duplicates import find_duplicates
    from vidsearch.settings import EncoderSettings, Preprocessing
    from vidsearch.storage.library import Library
    from vidsearch.storage.vectors import exact_knn, recall_at

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    rows = []
    for n in args.clips:
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((2000, DIM)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        vectors = synthetic_vectors(n, rng, centres)
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            lib = Library.create(
                Path(tmp) / "idx", EncoderSettings("synthetic", "0", DIM, "mean", 16, 224, Preprocessing())
            )
            planted = fill_catalog(lib, vectors, max(1, n // PER_VIDEO // 100) if args.dupes else 0, rng)
            # held-out queries: perturbed library clips, as a re-encoded query would be
            pick = rng.choice(n, args.queries, replace=False)
            q = vectors[pick] + rng.standard_normal((args.queries, DIM), dtype=np.float32) * (0.3 / np.sqrt(DIM))
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            del vectors
            m0 = rss_mb()
            t = time.perf_counter()
            lib.switch_index_type()  # what the end of an index job does
            vi = lib.vectors()
            build = time.perf_counter() - t
            mem = rss_mb() - m0
            with lib.catalog.read() as s:
                truth = exact_knn(q, lib.catalog.iter_embeddings(s, DIM), 10)
            _, found = vi.search(q, 10)
            recall = recall_at(found, truth)
            p50, p99, batch = latencies(vi, q)
            spec = lib.manifest.faiss_spec
            row = {
                "clips": n,
                "spec": spec,
                "params": lib.manifest.faiss_params,
                "build_s": build,
                "mem_mb": mem,
                "recall": recall,
                "p50": p50,
                "p99": p99,
                "batch": batch,
            }
            print(
                f"{n} clips: {spec} {lib.manifest.faiss_params}, build {build:.1f}s, +{mem:.0f} MB, "
                f"recall@10 {recall:.3f}, single p50 {p50:.2f} ms p99 {p99:.2f} ms, batch {batch:.3f} ms/query"
            )
            if args.stale:
                caught_up, rebuilt = stale_reopen(lib, rng)
                row["stale"] = (caught_up, rebuilt)
                print(
                    f"  open one video behind: caught up {caught_up:.2f}s, rebuilt {rebuilt:.1f}s "
                    f"({rebuilt / caught_up:.0f}x)",
                    flush=True,
                )
            if args.dupes:
                import vidsearch.search.duplicates as dup

                modes = [("cells", dup.EXACT_CANDIDATES_LIMIT)]
                if n <= 200_000:
                    modes.append(("all pairs (exact)", n))
                for label, limit in modes:
                    dup.EXACT_CANDIDATES_LIMIT = limit
                    base, peak = rss_mb(), [0.0]
                    done = threading.Event()

                    def sample(done=done, peak=peak):
                        while not done.is_set():
                            peak[0] = max(peak[0], rss_mb())
                            time.sleep(0.05)

                    sampler = threading.Thread(target=sample, daemon=True)
                    sampler.start()
                    t = time.perf_counter()
                    rep = find_duplicates(lib, threshold=0.9)
                    dt = time.perf_counter() - t
                    done.set()
                    sampler.join()
                    found_pairs = {tuple(sorted((int(p.a[6:13]) + 1, int(p.b[6:13]) + 1))) for p in rep.pairs}
                    share = len(found_pairs & planted) / len(planted)
                    row[f"dupes {label}"] = (dt, share, len(found_pairs - planted))
                    print(
                        f"  dupes, {label}: {dt:.1f}s, planted pairs found {share:.3f} of {len(planted)}, "
                        f"other pairs {len(found_pairs - planted)}, memory +{peak[0] - base:.0f} MB at peak "
                        f"(process {peak[0]:.0f} MB)",
                        flush=True,
                    )
                dup.EXACT_CANDIDATES_LIMIT = modes[0][1]
            rows.append(row)
            lib.close()
    print()
    print(
        f"{'clips':>9} {'index':>14} {'build s':>8} {'MB':>6} {'recall@10':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'batch ms/q':>10}"
    )
    for r in rows:
        print(
            f"{r['clips']:>9} {r['spec']:>14} {r['build_s']:8.1f} {r['mem_mb']:6.0f} {r['recall']:9.3f} "
            f"{r['p50']:7.2f} {r['p99']:7.2f} {r['batch']:10.3f}"
        )


if __name__ == "__main__":
    main()
