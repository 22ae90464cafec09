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
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from vidsearch.storage.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

MAGIC = b"VSFAISS1"
DEFAULT_SPEC = "IDMap2,Flat"


@dataclass(frozen=True)
class VectorHeader:
    generation: int
    index_uid: str
    dim: int
    spec: str
    ntotal: int
    tombstones: tuple[int, ...] = ()


class VectorFileError(Exception):
    """The FAISS file is missing, damaged, foreign or stale (internal: callers rebuild)."""


def _faiss():
    import faiss

    return faiss


@dataclass
class VectorIndex:
    """A FAISS index with clip ids, plus tombstones for ids it cannot remove."""

    index: object
    dim: int
    spec: str = DEFAULT_SPEC
    tombstones: set[int] = field(default_factory=set)

    @classmethod
    def empty(cls, dim: int, spec: str = DEFAULT_SPEC) -> "VectorIndex":
        faiss = _faiss()
        native_ids = spec.startswith("IVF") or spec.startswith("IDMap")
        factory = spec if native_ids else f"IDMap2,{spec}"
        return cls(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT), dim, spec)

    @classmethod
    def from_chunks(cls, chunks: Iterable[tuple[np.ndarray, np.ndarray]], dim: int, spec: str = DEFAULT_SPEC) -> "VectorIndex":
        vi = cls.empty(dim, spec)
        for ids, vecs in chunks:
            vi.add(ids, vecs)
        return vi

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
            self.index.train(vectors)
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
        """(scores, ids), each (Q, k); missing neighbours have id -1 and score -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        q = len(queries)
        scores = np.full((q, k), -np.inf, dtype=np.float32)
        ids = np.full((q, k), -1, dtype=np.int64)
        if q == 0 or k < 1 or self.ntotal <= 0:  # FAISS can abort when searching an empty index
            return scores, ids
        fetch = min(int(self.index.ntotal), k + len(self.tombstones))
        d, i = self.index.search(queries, fetch)
        if self.tombstones:
            dead = np.isin(i, np.fromiter(self.tombstones, dtype=np.int64))
            i = np.where(dead, -1, i)
            order = np.argsort(i < 0, axis=1, kind="stable")
            i, d = np.take_along_axis(i, order, 1), np.take_along_axis(d, order, 1)
        n = min(k, i.shape[1])
        ids[:, :n], scores[:, :n] = i[:, :n], d[:, :n]
        scores[ids < 0] = -np.inf
        return scores, ids

    def range_search(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lims, scores, ids) as FAISS gives them: neighbours of query j are [lims[j], lims[j+1])."""
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
            generation=generation, index_uid=index_uid, dim=self.dim, spec=self.spec,
            ntotal=int(self.index.ntotal), tombstones=tuple(sorted(self.tombstones)),
        )
        blob = json.dumps(header.__dict__).encode()
        payload = faiss.serialize_index(self.index)
        atomic_write_bytes(path, [MAGIC, struct.pack("<Q", len(blob)), blob, memoryview(payload)])

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple["VectorIndex", VectorHeader]:
        """Read a vectors file; VectorFileError when it is missing or not one of ours."""
        faiss = _faiss()
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as exc:
            raise VectorFileError("missing") from exc
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
            raise VectorFileError("not a vidsearch vectors file")
        (hlen,) = struct.unpack_from("<Q", data, len(MAGIC))
        start = len(MAGIC) + 8
        try:
            header = VectorHeader(**json.loads(data[start : start + hlen]))
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8, offset=start + hlen))
        except (ValueError, TypeError, RuntimeError) as exc:
            raise VectorFileError(f"damaged ({exc})") from exc
        if int(index.ntotal) != header.ntotal or int(index.d) != header.dim:
            raise VectorFileError("header does not match the index it holds")
        return cls(index, header.dim, header.spec, set(header.tombstones)), header
