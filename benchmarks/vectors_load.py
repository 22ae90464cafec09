"""Loading a vectors file: time and peak memory, vidsearch's load against reading the file whole.

vidsearch's ``VectorIndex.load`` lets FAISS read the index straight from the file through a
callback reader; the alternative (what it did before) reads the whole file into memory and hands
FAISS a copy with ``deserialize_index``, so three copies of the index exist at the peak. Each load
runs in a fresh process (peak RSS is per process), alternating, twice.

Usage: python benchmarks/vectors_load.py [--clips 300000] [--spec IVF512,SQfp16]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 1024


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not carried over from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(method: str, path: str) -> None:
    import faiss

    from vidsearch.storage.vectors import MAGIC, VectorIndex

    base = peak_rss_mb()
    t = time.perf_counter()
    if method == "whole file":
        data = Path(path).read_bytes()
        (hlen,) = struct.unpack_from("<Q", data, len(MAGIC))
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8, offset=len(MAGIC) + 8 + hlen))
        del data
        n = index.ntotal
    else:
        n = VectorIndex.load(path)[0].ntotal
    seconds = time.perf_counter() - t
    peak = peak_rss_mb()
    print(json.dumps({"seconds": seconds, "peak_mb": peak - base, "ntotal": int(n)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=300_000)
    ap.add_argument("--spec", default="IVF512,SQfp16")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)

    from vidsearch.storage.vectors import VectorIndex

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vectors.faiss"
        vi = VectorIndex.empty(DIM, args.spec)
        if vi.needs_training:
            sample = rng.standard_normal((min(args.clips, 50_000), DIM), dtype=np.float32)
            vi.train(sample / np.linalg.norm(sample, axis=1, keepdims=True))
        for start in range(0, args.clips, 50_000):
            v = rng.standard_normal((min(50_000, args.clips - start), DIM), dtype=np.float32)
            vi.add(np.arange(start, start + len(v)) + 1, v / np.linalg.norm(v, axis=1, keepdims=True))
        vi.save(path, 1, "bench")
        del vi
        size = path.stat().st_size / 2**20
        print(f"{args.clips} clips, {args.spec}, file {size:.0f} MB")
        results: dict[str, list[dict]] = {"vidsearch (callback reader)": [], "whole file": []}
        for _ in range(2):
            for method in results:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", method, str(path)],
                    check=True,
                    capture_output=True,
                    text=True,
                    env={**os.environ},
                ).stdout
                results[method].append(json.loads(out.strip().splitlines()[-1]))
        for method, runs in results.items():
            print(f"{method:<28} " + ", ".join(f"{r['seconds']:.2f}s +{r['peak_mb']:.0f} MB" for r in runs))
        ours, theirs = results["vidsearch (callback reader)"], results["whole file"]
        print(
            f"peak memory ratio {np.mean([r['peak_mb'] for r in ours]) / np.mean([r['peak_mb'] for r in theirs]):.2f}, "
            f"time ratio {np.mean([r['seconds'] for r in ours]) / np.mean([r['seconds'] for r in theirs]):.2f}"
        )


if __name__ == "__main__":
    main()
