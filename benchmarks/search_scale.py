"""Search at scale: the index type vidsearch chooses at each size, measured against exact search.

Synthetic 1024-d clip vectors (``synthetic.py``; videos of 20 clips) are written to a real
catalog; vidsearch then builds (and where needed trains and tunes) its index from the catalog
as it would for a user. The default set is *hard*: a power-law spectrum (variance of dimension
i ∝ i^-1.6) and clips that drift within a video (each 0.9 × the previous plus fresh noise), with
no clusters for IVF lists to follow. ``--vectors easy`` is the earlier clustered set (2000 scene
centres), kept as a labelled easy case; ``--from-index DIR`` measures a real index's own
embeddings (a copy of its catalog; queries are its clips, each query's own clip left out).

Queries: 300 clips of new videos from the same generator (not in the library). Reported per
size: the chosen type (or ``--spec``'s, pinned) with its tuned parameters, build time, the
serialised index size (about its memory) and the process's RSS growth, recall@10 against exact
search, single-query latency (p50, p99; re-ranking from the catalog included) and batch latency.
With --dupes, also ``find_duplicates`` on planted copies (1% of videos), and at up to 200k clips
the same with exact all-pairs candidates for comparison. With --stale, the time a reader takes to
open the index after one more video was committed than the vectors file holds, caught up by clip
id, against a rebuild from the catalog.

Usage: python benchmarks/search_scale.py [--clips 100000 1000000] [--vectors hard easy]
       [--spec auto FACTORY ...] [--dupes] [--dupes-threshold 0.95] [--stale] [--from-index DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from synthetic import DIM, PER_VIDEO, chunks, generator

QUERY_SEED = 987_654


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill_catalog(lib, gen, n: int, plant: bool, seed: int = 0) -> set[tuple[int, int]]:
    """Write ``n`` clips, a chunk of whole videos at a time (Core inserts of pre-encoded rows:
    set-up, not what is measured). With ``plant``, the last 1% of each chunk's videos are
    re-encoded copies of others in it: the source's clips plus small noise. Returns the
    planted (source, copy) video id pairs."""
    from vidsearch.storage.catalog import _ClipRow as ClipRow
    from vidsearch.storage.catalog import _Video as Video

    pairs = set()
    v0 = 0
    rng = np.random.default_rng([seed, 1])
    for vecs in chunks(gen, n, seed):
        nv = len(vecs) // PER_VIDEO
        vecs = vecs.reshape(nv, PER_VIDEO, DIM)
        if plant:
            n_copies = max(1, nv // 100)
            src = rng.choice(nv - n_copies, n_copies, replace=False)
            noisy = vecs[src] + rng.standard_normal((n_copies, PER_VIDEO, DIM), dtype=np.float32) * np.float32(
                0.15 / np.sqrt(DIM)
            )
            vecs[nv - n_copies :] = noisy / np.linalg.norm(noisy, axis=2, keepdims=True)
            pairs |= {(v0 + int(s) + 1, v0 + nv - n_copies + c + 1) for c, s in enumerate(src)}
        blobs = vecs.astype(np.float16).reshape(nv * PER_VIDEO, DIM)
        with lib.catalog.write() as s:
            s.execute(
                Video.__table__.insert(),
                [
                    {
                        "id": v0 + v + 1,
                        "path": f"/lib/v{v0 + v:08d}.mp4".encode(),
                        "size": 1,
                        "mtime_ns": 1,
                        "fingerprint": str(v0 + v),
                        "duration_s": 2.0 * PER_VIDEO,
                        "status": "indexed",
                    }
                    for v in range(nv)
                ],
            )
            s.execute(
                ClipRow.__table__.insert(),
                [
                    {
                        "video_id": v0 + i // PER_VIDEO + 1,
                        "start_s": 2.0 * (i % PER_VIDEO),
                        "end_s": 2.0 * (i % PER_VIDEO) + 2,
                        "embedding": blobs[i].tobytes(),
                    }
                    for i in range(nv * PER_VIDEO)
                ],
            )
        v0 += nv
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


def copy_index(src: Path, dst: Path) -> None:
    """A consistent copy of a real index's manifest and catalog (SQLite's backup: safe while a
    job writes); its vectors file is left behind, to be built afresh."""
    dst.mkdir()
    shutil.copy(src / "manifest.json", dst / "manifest.json")
    with (
        sqlite3.connect(f"file:{src / 'catalog.sqlite'}?mode=ro", uri=True) as a,
        sqlite3.connect(dst / "catalog.sqlite") as b,
    ):
        a.backup(b)


def video_of(path: str) -> int:
    return int(path.rsplit("/v", 1)[1][:8]) + 1


def measure_dupes(lib, n: int, planted: set[tuple[int, int]], threshold: float, row: dict) -> None:
    import vidsearch.search.duplicates as dup
    from vidsearch.search.duplicates import find_duplicates

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
        rep = find_duplicates(lib, threshold=threshold)
        dt = time.perf_counter() - t
        done.set()
        sampler.join()
        found = {tuple(sorted((video_of(p.a), video_of(p.b)))) for p in rep.pairs}
        share = len(found & planted) / len(planted)
        row[f"dupes {label}"] = (dt, share, len(found - planted), peak[0])
        print(
            f"  dupes at {threshold}, {label}: {dt:.1f}s, planted pairs found {share:.3f} of {len(planted)}, "
            f"other pairs {len(found - planted)}, memory +{peak[0] - base:.0f} MB at peak "
            f"(process {peak[0]:.0f} MB)",
            flush=True,
        )
    dup.EXACT_CANDIDATES_LIMIT = modes[0][1]


def recall_without_self(vi, queries: np.ndarray, qids: np.ndarray, truth: np.ndarray) -> float:
    from vidsearch.storage.vectors import recall_at

    _, found = vi.search(queries, 11)
    drop = [[i for i in row if i != q][:10] for row, q in zip(found, qids)]
    want = [[i for i in row if i != q][:10] for row, q in zip(truth, qids)]
    return recall_at(np.array(drop), np.array(want))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--vectors", nargs="+", choices=["hard", "easy"], default=["hard"])
    ap.add_argument(
        "--spec",
        nargs="+",
        default=["auto"],
        help="index types to measure on the same catalog, in turn: 'auto' (vidsearch's choice, first) or "
        "FAISS factory strings (pinned)",
    )
    ap.add_argument("--from-index", type=Path, default=None, help="measure a real index's own embeddings")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--dupes", action="store_true", help="also time find_duplicates with planted copies")
    ap.add_argument("--dupes-threshold", type=float, default=0.95)
    ap.add_argument("--stale", action="store_true", help="also time opening an index one video behind")
    ap.add_argument("--dir", type=Path, default=None, help="where to put the test index (needs ~4.2 GB per 1M clips)")
    args = ap.parse_args()

    import faiss

    from vidsearch.settings import EncoderSettings, Preprocessing
    from vidsearch.storage.library import Library
    from vidsearch.storage.vectors import exact_knn, recall_at

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads", flush=True)
    cases = (
        [("index", None, "index")]
        if args.from_index
        else [(n, kind, kind) for kind in args.vectors for n in args.clips]
    )
    rows = []
    for n, kind, label in cases:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            root = Path(tmp) / "idx"
            t = time.perf_counter()
            planted: set[tuple[int, int]] = set()
            if args.from_index:
                copy_index(args.from_index, root)
                lib = Library.open(root, writable=True)
                lib.update_manifest(faiss_pinned=False)
                dim = lib.manifest.encoder.dim
                with lib.catalog.read() as s:
                    n = lib.catalog.clip_count(s)
                    qids, q = lib.catalog.sample_embeddings(s, args.queries, dim, seed=7)
            else:
                dim = DIM
                gen = generator(kind)
                lib = Library.create(root, EncoderSettings("synthetic", "0", DIM, "mean", 16, 224, Preprocessing()))
                planted = fill_catalog(lib, gen, n, args.dupes)
                q = gen.videos(args.queries, np.random.default_rng(QUERY_SEED))[::PER_VIDEO]
                qids = None
            print(f"{n} clips ({label}): catalog ready in {time.perf_counter() - t:.0f}s", flush=True)
            with lib.catalog.read() as s:
                truth = exact_knn(q, lib.catalog.iter_embeddings(s, dim), 11)
            for spec in args.spec:
                lib._vectors = None  # each type built afresh from the catalog, its memory returned
                m0 = rss_mb()
                t = time.perf_counter()
                if spec == "auto":
                    lib.switch_index_type()  # what the end of an index job does
                else:
                    lib.switch_index_type(spec)
                vi = lib.vectors()
                build = time.perf_counter() - t
                mem = rss_mb() - m0
                size = len(faiss.serialize_index(vi.index)) / 2**20
                if qids is None:
                    recall = recall_at(vi.search(q, 10)[1], truth[:, :10])
                else:
                    recall = recall_without_self(vi, q, qids, truth)
                p50, p99, batch = latencies(vi, q)
                row = {
                    "clips": n,
                    "set": label,
                    "spec": lib.manifest.faiss_spec,
                    "params": lib.manifest.faiss_params,
                    "build_s": build,
                    "index_mb": size,
                    "mem_mb": mem,
                    "recall": recall,
                    "p50": p50,
                    "p99": p99,
                    "batch": batch,
                }
                print(
                    f"{n} clips ({label}): {row['spec']} {row['params']}, build {build:.1f}s, index {size:.0f} MB "
                    f"(+{mem:.0f} MB RSS), recall@10 {recall:.3f}, single p50 {p50:.2f} ms p99 {p99:.2f} ms, "
                    f"batch {batch:.3f} ms/query",
                    flush=True,
                )
                if args.stale:
                    caught_up, rebuilt = stale_reopen(lib, np.random.default_rng(5))
                    row["stale"] = (caught_up, rebuilt)
                    print(
                        f"  open one video behind: caught up {caught_up:.2f}s, rebuilt {rebuilt:.1f}s "
                        f"({rebuilt / caught_up:.0f}x)",
                        flush=True,
                    )
                rows.append(row)
            if args.dupes and planted:
                measure_dupes(lib, n, planted, args.dupes_threshold, rows[-1])
            lib.close()
    print()
    print(
        f"{'clips':>9} {'set':>5} {'index':>34} {'build s':>8} {'idx MB':>7} {'recall@10':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'batch ms/q':>10}  params"
    )
    for r in rows:
        print(
            f"{r['clips']:>9} {r['set']:>5} {r['spec']:>34} {r['build_s']:8.1f} {r['index_mb']:7.0f} "
            f"{r['recall']:9.3f} {r['p50']:7.2f} {r['p99']:7.2f} {r['batch']:10.3f}  {r['params']}"
        )


if __name__ == "__main__":
    main()
