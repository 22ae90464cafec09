"""The FAISS index: a cache derived from the catalog, ids = clip ids, inner product on unit vectors.

The file ``vectors.faiss`` is a small JSON header (catalog generation, index uid, dim, spec,
tombstones) followed by the serialised FAISS index, written atomically. A file whose header
does not match the catalog is stale or foreign and is rebuilt from the catalog.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vidsearch.errors import InvalidArgumentError, last_line
from vidsearch.storage.atomic import atomic_write_bytes
from vidsearch.storage.faiss_spec import DEFAULT_SPEC

log = logging.getLogger(__name__)

MAGIC = b"VSFAISS1"
#: Recall@10 against exact search that tuning aims for (the target is 0.95; this leaves a margin).
TARGET_RECALL = 0.97
#: A re-ranked index fetches k_factor × k candidates by its codes, then orders them by their
#: float16 vectors; tuning tries these, smallest first (each read costs catalog I/O). On hard
#: vectors (200k clips, IVF448, nprobe 64, library clips as queries) recall@10 with 4-bit codes
#: of 4 dimensions was 0.87 / 0.91 / 0.95 at 10x / 20x / 40x; of 2 dimensions 0.978 / 0.983 / 0.984.
K_FACTORS = (10, 20, 40)
#: Candidates re-ranked at a time (their vectors: ~200 MB at 1024-d).
RERANK_BLOCK = 50_000
#: HNSW's efSearch is tuned up to this (its search cost grows about linearly with it).
MAX_EF_SEARCH = 1024

#: Full-precision vectors of clip ids: (ids found, sorted; their vectors), from the catalog.
Fetch = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class VectorHeader:
    generation: int
    index_uid: str
    dim: int
    spec: str
    ntotal: int
    tombstones: tuple[int, ...] = ()
    params: dict = field(default_factory=dict)


class VectorFileError(Exception):
    """The FAISS file is missing, damaged, foreign or stale (internal: callers rebuild)."""


def _is_ivf(spec: str) -> bool:
    """An IVF index, perhaps behind a transform (``RR1024,IVF…``): it keeps ids itself."""
    return any(part.startswith("IVF") for part in spec.split(","))


@contextmanager
def _single_thread(on: bool) -> Iterator[None]:
    """FAISS in one thread while ``on``. It shares work out by query, so a single query gains
    nothing from more threads, yet waits for them to wake: on this project's busy 2-core machine
    one IVF-PQ query took 25 ms with two threads and 0.8 ms with one."""
    if not on:
        yield
        return
    faiss = _faiss()
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _faiss():
    import faiss

    return faiss


@dataclass
class VectorIndex:
    """A FAISS index with clip ids, plus tombstones for ids it cannot remove."""

    index: Any  # a faiss.Index (faiss ships no type stubs)
    dim: int
    spec: str = DEFAULT_SPEC
    tombstones: set[int] = field(default_factory=set)
    params: dict = field(default_factory=dict)
    #: Where a re-ranked index reads its candidates' vectors (set by the library that owns it).
    fetch: Fetch | None = None

    @classmethod
    def empty(cls, dim: int, spec: str = DEFAULT_SPEC) -> VectorIndex:
        faiss = _faiss()
        native_ids = spec.startswith("IDMap") or _is_ivf(spec)
        factory = spec if native_ids else f"IDMap2,{spec}"
        try:
            index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise InvalidArgumentError(f"not a FAISS index factory string: {spec!r} ({last_line(exc)})") from exc
        return cls(index, dim, spec)

    @property
    def needs_rerank(self) -> bool:
        """Product codes approximate similarities too coarsely to rank by: candidates are
        re-ranked by their catalog vectors, which also makes the reported scores exact."""
        return "PQ" in self.spec

    @property
    def needs_training(self) -> bool:
        return not self.index.is_trained

    def train(self, vectors: np.ndarray) -> None:
        self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))

    def set_params(self, params: dict) -> None:
        """Search parameters (e.g. ``{"nprobe": 16}``), applied with FAISS's ParameterSpace."""
        faiss = _faiss()
        ps = faiss.ParameterSpace()
        for name, value in params.items():
            if name in ("nprobe", "efSearch"):
                ps.set_index_parameter(self.index, name, value)
        self.params = dict(params)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.tombstones)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must be (N, {self.dim}), got {vectors.shape}")
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if not len(ids):
            return
        if not self.index.is_trained:
            raise ValueError(f"a {self.spec} index must be trained before vectors are added")
        self.index.add_with_ids(vectors, ids)

    def remove(self, ids: Iterable[int]) -> None:
        ids = np.fromiter((int(i) for i in ids), dtype=np.int64)
        if not len(ids):
            return
        faiss = _faiss()
        try:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
        except RuntimeError:
            # HNSW and memory-mapped IVF cannot remove: filter at search time, compact on rebuild
            self.tombstones.update(int(i) for i in ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, min(k, ntotal)); missing neighbours have id -1 and score -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        q = len(queries)
        k = max(0, min(k, self.ntotal))  # a k past the index size would only allocate rows of -1
        scores = np.full((q, k), -np.inf, dtype=np.float32)
        ids = np.full((q, k), -1, dtype=np.int64)
        if q == 0 or k < 1 or self.ntotal <= 0:  # FAISS can abort when searching an empty index
            return scores, ids
        fetch = self.fetch if self.needs_rerank else None
        wanted = k * int(self.params.get("k_factor", K_FACTORS[-1])) if fetch is not None else k
        with _single_thread(q == 1):
            d, i = self.index.search(queries, min(int(self.index.ntotal), wanted + len(self.tombstones)))
        if self.tombstones:
            dead = np.isin(i, np.fromiter(self.tombstones, dtype=np.int64))
            i = np.where(dead, -1, i)
            d = np.where(dead, -np.inf, d)
        if fetch is not None:
            d, i = _rerank(queries, i, fetch)
        order = np.argsort(i < 0, axis=1, kind="stable")
        i, d = np.take_along_axis(i, order, 1), np.take_along_axis(d, order, 1)
        n = min(k, i.shape[1])
        ids[:, :n], scores[:, :n] = i[:, :n], d[:, :n]
        scores[ids < 0] = -np.inf
        return scores, ids

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lims, scores, ids) as FAISS gives them: neighbours of query j are [lims[j], lims[j+1])."""
        if ("HNSW" in self.spec or "NSG" in self.spec) and not _is_ivf(self.spec):
            # FAISS has no range search for graph indexes (an IVF's graph of centroids is fine),
            # and its error there aborts the process
            raise RuntimeError(f"a {self.spec} index has no range search; use search() with k")
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if len(queries) == 0 or self.ntotal <= 0:
            return np.zeros(len(queries) + 1, dtype=np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
        lims, d, i = self.index.range_search(queries, float(threshold))
        lims = lims.astype(np.int64)
        if self.tombstones:
            keep = ~np.isin(i, np.fromiter(self.tombstones, dtype=np.int64))
            owner = np.repeat(np.arange(len(queries)), np.diff(lims))
            lims = np.concatenate([[0], np.cumsum(np.bincount(owner[keep], minlength=len(queries)))])
            d, i = d[keep], i[keep]
        return lims, d, i

    def ids(self) -> np.ndarray:
        """Every live id in the index (for verification)."""
        faiss = _faiss()
        if hasattr(self.index, "id_map"):
            all_ids = faiss.vector_to_array(self.index.id_map)
        else:
            invlists = faiss.extract_index_ivf(self.index).invlists
            parts = [
                faiss.rev_swig_ptr(invlists.get_ids(li), invlists.list_size(li)).copy()
                for li in range(invlists.nlist)
                if invlists.list_size(li)
            ]
            all_ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if self.tombstones:
            all_ids = all_ids[~np.isin(all_ids, np.fromiter(self.tombstones, dtype=np.int64))]
        return np.sort(all_ids.astype(np.int64))

    # ---- persistence ---------------------------------------------------------------------

    def save(self, path: str | os.PathLike, generation: int, index_uid: str) -> None:
        """Write header + index atomically (temp file, fsync, rename)."""
        faiss = _faiss()
        header = VectorHeader(
            generation=generation,
            index_uid=index_uid,
            dim=self.dim,
            spec=self.spec,
            ntotal=int(self.index.ntotal),
            tombstones=tuple(sorted(self.tombstones)),
            params=self.params,
        )
        blob = json.dumps(header.__dict__).encode()
        payload = faiss.serialize_index(self.index)
        atomic_write_bytes(path, [MAGIC, struct.pack("<Q", len(blob)), blob, memoryview(payload)])

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[VectorIndex, VectorHeader]:
        """Read a vectors file; VectorFileError when it is missing or not one of ours."""
        faiss = _faiss()
        try:
            f = open(path, "rb")
        except FileNotFoundError as exc:
            raise VectorFileError("missing") from exc
        with f:
            head = f.read(len(MAGIC) + 8)
            if not head.startswith(MAGIC) or len(head) < len(MAGIC) + 8:
                raise VectorFileError("not a vidsearch vectors file")
            (hlen,) = struct.unpack_from("<Q", head, len(MAGIC))
            if hlen > os.fstat(f.fileno()).st_size:
                raise VectorFileError(f"damaged (a header of {hlen} bytes in a smaller file)")
            try:
                header = VectorHeader(**json.loads(f.read(hlen)))
                # FAISS reads the rest straight from the file: no copy of the whole file in memory
                index = faiss.read_index(faiss.PyCallbackIOReader(f.read))
            except (ValueError, TypeError, RuntimeError) as exc:
                raise VectorFileError(f"damaged ({exc})") from exc
        if int(index.ntotal) != header.ntotal or int(index.d) != header.dim:
            raise VectorFileError("header does not match the index it holds")
        vi = cls(index, header.dim, header.spec, set(header.tombstones))
        vi.set_params(header.params)
        return vi, header


def _rerank(queries: np.ndarray, cand: np.ndarray, fetch: Fetch) -> tuple[np.ndarray, np.ndarray]:
    """Candidates ordered by their exact similarity; those the catalog no longer has dropped.

    Queries go in blocks of about RERANK_BLOCK candidates, so that a long query video's
    candidate vectors are never all in memory at once."""
    scores = np.full(cand.shape, -np.inf, dtype=np.float32)
    step = max(1, RERANK_BLOCK // max(cand.shape[1], 1))
    for q0 in range(0, len(queries), step):
        block = cand[q0 : q0 + step]
        have, vecs = fetch(np.unique(block[block >= 0]))
        row = np.searchsorted(have, block).clip(0, max(len(have) - 1, 0))
        found = (block >= 0) & (have[row] == block) if len(have) else np.zeros(block.shape, bool)
        for qi in range(len(block)):
            scores[q0 + qi, found[qi]] = vecs[row[qi, found[qi]]] @ queries[q0 + qi]
    order = np.argsort(-scores, axis=1, kind="stable")
    scores = np.take_along_axis(scores, order, 1)
    return scores, np.where(np.isfinite(scores), np.take_along_axis(cand, order, 1), -1)


def exact_knn(queries: np.ndarray, chunks: Iterable[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """Exact top-``k`` ids (inner product) of ``queries`` over streamed (ids, vectors) chunks."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    for ids, vecs in chunks:
        s = queries @ np.ascontiguousarray(vecs, dtype=np.float32).T
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(ids, s.shape)], axis=1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (ignoring -1) that ``found`` also holds."""
    hits = total = 0
    for f, t in zip(found, truth):
        t = t[t >= 0]
        hits += len(np.intersect1d(f, t))
        total += len(t)
    return hits / total if total else 1.0


def _knob(vi: VectorIndex) -> tuple[str, list[int]] | None:
    """The search parameter that trades speed for recall in ``vi``, and the values to try."""
    faiss = _faiss()
    try:
        nlist = faiss.extract_index_ivf(vi.index).nlist
    except RuntimeError:
        if "HNSW" not in vi.spec:
            return None
        return "efSearch", [16 * 2**i for i in range(int(np.log2(MAX_EF_SEARCH // 16)) + 1)]
    return "nprobe", sorted({min(nlist, 2**i) for i in range(int(np.ceil(np.log2(nlist))) + 1)})


def tune(
    vi: VectorIndex,
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    k: int = 10,
    target: float = TARGET_RECALL,
) -> dict:
    """The smallest ``nprobe`` (IVF) or ``efSearch`` (HNSW) whose recall@k (each query's own id
    left out) reaches ``target``; {} for an index with nothing to tune.

    ``truth`` is the exact top-(k+1) per query. A re-ranked index is tuned re-ranked (its
    ``fetch`` set), with the smallest ``k_factor`` that reaches the target. Returns the
    parameters with the recall measured.
    """
    knob = _knob(vi)
    if knob is None:
        return {}
    name, values = knob
    factors: tuple[int | None, ...] = K_FACTORS if vi.needs_rerank and vi.fetch is not None else (None,)
    truth = np.array([[i for i in row if i != q][:k] for row, q in zip(truth, query_ids)])
    measured: list[tuple[dict, float]] = []
    for factor in factors:
        extra = {} if factor is None else {"k_factor": factor}
        last = -1.0
        for value in values:
            vi.set_params({name: value, **extra})
            _, found = vi.search(queries, k + 1)
            found = np.array([[i for i in row if i != q][:k] for row, q in zip(found, query_ids)])
            recall = recall_at(found, truth)
            measured.append(({name: value, **extra}, recall))
            if recall >= target or recall <= last + 0.002:  # reached, or more of it stopped helping
                break
            last = recall
        if measured[-1][1] >= target:
            break
    # the target, or where recall stops growing (the codes' precision can cap it below the target)
    best = max(r for _, r in measured)
    chosen, recall = next((p, r) for p, r in measured if r >= min(target, best - 0.005))
    params = {**chosen, "recall_at_10": round(recall, 4), "tuned_on": int(len(queries))}
    vi.set_params(params)
    return params
