"""Which FAISS index type suits a library of a given size.

Three tiers, chosen from measurements on hard synthetic clip vectors (power-law spectrum,
neighbouring clips drifting; ``benchmarks/search_scale.py``, figures in ``benchmarks/RESULTS.md``):

- exact (``IDMap2,Flat``) below ``EXACT_LIMIT``: recall 1, but a single query scans the whole
  library (40 ms at 100k clips on the project's busy 2-core machine);
- ``HNSW32,SQfp16`` up to ``COMPRESS_LIMIT``: a graph over float16 codes (the catalog's own
  precision, so the codes lose nothing). At 1M hard clips, tuned to efSearch 256: recall@10
  0.995 at 2.0 ms a query (p50), where IVF1024 with the same codes needed nprobe 64 and 9.1 ms,
  and exact search ~400 ms. It costs ~2.3 KB of memory a clip and the longest build;
- above that, ``RR{dim},IVF{√n}_HNSW32,PQ{dim/2}x4fs``: 4-bit product codes of 2 dimensions
  each (256 bytes a 1024-d clip: 10M clips in 2.6 GB) in √n lists found through an HNSW graph of
  the centroids, searched by SIMD fast-scan; candidates are re-ranked with the catalog's
  float16 vectors (``vectors.needs_rerank``), which recovers what the codes lose and makes the
  scores exact. Half as many bytes (4 dimensions a code) capped recall@10 on library clips at
  0.90 at 1M clips even re-ranking 40 × k candidates; 2 dimensions a code reached 0.98 at 10 × k
  (200k clips). A random rotation first spreads the variance over all the code groups: without
  it a spectrum aligned with the axes (or an encoder's few outsized dimensions) puts nearly all
  of it in the first groups (64-d vectors along the axes, PQ16x4fs, 10 × k re-ranked: recall@10
  0.71 without it, 0.91 with it).
  4-bit codes train in a minute or two where 8-bit ones took ten (IVF448,PQ64, 100k samples).
  Measured at 10M hard clips (RR1024,IVF4096_HNSW32,PQ512x4fs, tuned to nprobe 256 and 40 × k
  re-ranked): recall@10 0.979, 17.5 ms a query (p50), a 2.6 GB index, built in 42 minutes.
"""

from __future__ import annotations

import re

import numpy as np

DEFAULT_SPEC = "IDMap2,Flat"
HNSW_SPEC = "HNSW32,SQfp16"
#: Exact search below this many clips. At 100k hard clips (about 55 hours of video) an exact
#: query took 40 ms here; HNSW answered in 0.26 ms at recall@10 0.97 and built in 83 s.
EXACT_LIMIT = 100_000
#: HNSW over float16 codes below this many clips, then compressed IVF-PQ codes with re-ranking.
#: HNSW32,SQfp16 holds ~2.3 KB a 1024-d clip (4.6 GB at 2M clips) and took 28 min to build 1M
#: clips on the busy machine (IVF-PQ: 5 min); IVF-PQ holds ~270 bytes a clip but reads its
#: candidates' vectors from the catalog to re-rank them.
COMPRESS_LIMIT = 2_000_000
_PQ = re.compile(r"RR(\d+),IVF(\d+)_HNSW32,PQ(\d+)x4fs")


def cells_for(n: int) -> int:
    """How many cells (IVF lists, k-means centroids) to split ``n`` vectors into: the power of
    two nearest √n, which balances the cells scanned against the vectors in each."""
    return 2 ** int(round(np.log2(np.sqrt(max(n, 1)))))


def training_minimum(spec: str) -> int:
    """The fewest vectors FAISS can train a ``spec`` index on (0: it needs no training).

    k-means needs a vector per centroid: ``IVF{k}`` needs k, product-quantizer codes 2^bits per
    sub-quantizer (``PQ{m}``: 8 bits, ``PQ{m}x{bits}``; OPQ too), a PCA to d dimensions d; scalar
    and other codes need one. Below it, FAISS refuses to train.
    """
    need = [int(k) for k in re.findall(r"IVF(\d+)", spec)]
    need += [2 ** int(bits or 8) for bits in re.findall(r"PQ\d+(?:x(\d+))?", spec)]
    need += [int(d) for d in re.findall(r"PCA[A-Z]*(\d+)", spec)]
    if re.search(r"SQ|RQ|LSQ|ITQ|RR\d", spec):
        need.append(1)
    return max(need, default=0)


def choose_spec(n: int, dim: int) -> str:
    """The index type for ``n`` clips of ``dim`` dimensions (see the module's notes)."""
    if n < EXACT_LIMIT:
        return DEFAULT_SPEC
    if n < COMPRESS_LIMIT or dim % 8:
        return HNSW_SPEC
    return f"RR{dim},IVF{cells_for(n)}_HNSW32,PQ{dim // 2}x4fs"


def _tier(spec: str) -> int | None:
    """0 exact, 1 HNSW, 2 compressed IVF; None for a type this module would not choose."""
    if spec == DEFAULT_SPEC:
        return 0
    if spec == HNSW_SPEC:
        return 1
    return 2 if _PQ.fullmatch(spec) else None


def should_switch(current: str, n: int, dim: int) -> bool:
    """Whether an automatic (not pinned) index of type ``current`` should change at ``n`` clips.

    With hysteresis: a tier is left for a smaller one only below half the size that chose it,
    and the number of IVF lists only changes by a factor of 4, so that an index near a
    boundary is not rebuilt back and forth. A type of an older release is replaced.
    """
    want = choose_spec(n, dim)
    if want == current:
        return False
    have, need = _tier(current), _tier(want)
    if have is None or need is None or need > have:
        return True
    if need < have:
        return n < (EXACT_LIMIT, COMPRESS_LIMIT)[have - 1] // 2
    m_cur, m_want = _PQ.fullmatch(current), _PQ.fullmatch(want)
    if not (m_cur and m_want) or m_cur.group(1, 3) != m_want.group(1, 3):
        return True
    ratio = int(m_want.group(2)) / int(m_cur.group(2))
    return ratio >= 4 or ratio <= 0.25
