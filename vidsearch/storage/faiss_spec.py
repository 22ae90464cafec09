"""Which FAISS index type suits a library of a given size."""

from __future__ import annotations

import re

import numpy as np

DEFAULT_SPEC = "IDMap2,Flat"
#: Below this many clips, search is exact; above it, an IVF index tuned for recall.
EXACT_LIMIT = 200_000


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


def choose_spec(n: int) -> str:
    """The index type for ``n`` clips: exact while small, then IVF with float16 codes.

    float16 is the precision the catalog stores, so the codes lose nothing (8-bit codes were
    measured to cap recall@10 at 0.96 on clustered 1024-d vectors, however many lists were
    probed); the number of lists grows with the square root of the size (1M clips → 1024).
    """
    if n < EXACT_LIMIT:
        return DEFAULT_SPEC
    return f"IVF{cells_for(n)},SQfp16"


def should_switch(current: str, n: int) -> bool:
    """Whether an automatic (not pinned) index of type ``current`` should change at ``n`` clips.

    With hysteresis, so that an index near a boundary is not rebuilt back and forth.
    """
    want = choose_spec(n)
    if want == current:
        return False
    if current == DEFAULT_SPEC:
        return True
    if want == DEFAULT_SPEC:
        return n < EXACT_LIMIT // 2
    m_cur, m_want = re.match(r"IVF(\d+)", current), re.match(r"IVF(\d+)", want)
    if not (m_cur and m_want):
        return True
    ratio = int(m_want.group(1)) / int(m_cur.group(1))
    return ratio >= 4 or ratio <= 0.25
