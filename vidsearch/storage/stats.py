"""Small library-level entry points that sit above one module: opening an index, its stats."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vidsearch.storage.catalog import STATUS_FAILED, STATUS_INDEXED
from vidsearch.storage.library import Library


def open_library(index_dir: str | os.PathLike, writable: bool = False) -> Library:
    """Open an existing index directory (readers never write; a writer takes the lock)."""
    return Library.open(index_dir, writable=writable)


@dataclass
class LibraryStats:
    index: str
    videos_indexed: int
    videos_failed: int
    clips: int
    total_duration_s: float
    model: str
    revision: str
    dim: int
    pooling: str
    clip_seconds: float
    hop_seconds: float
    index_type: str
    index_type_pinned: bool
    size_bytes: int
    generation: int
    duplicate_threshold: float | None
    failed: list[tuple[str, str]] = field(default_factory=list)
    #: clips the index type needs to be trained; search is exact until the catalog has them
    exact_search_until: int | None = None


def library_stats(lib: Library) -> LibraryStats:
    """Counts, settings and failures of an index, read in one snapshot."""
    with lib.catalog.read() as s:
        count = lib.catalog.status_counts(s)
        clips = lib.catalog.clip_count(s) - lib.skip_orphans(s)
        duration = lib.catalog.indexed_duration(s)
        failed = sorted((v.display_path, v.error or "") for v in lib.catalog.videos(s, STATUS_FAILED))
        generation = lib.catalog.generation(s)
    m = lib.manifest
    size = sum(p.stat().st_size for p in lib.root.iterdir() if p.is_file())
    return LibraryStats(
        index=str(lib.root),
        videos_indexed=count.get(STATUS_INDEXED, 0),
        videos_failed=count.get(STATUS_FAILED, 0),
        clips=clips,
        total_duration_s=float(duration),
        model=m.encoder.model,
        revision=m.encoder.revision,
        dim=m.encoder.dim,
        pooling=m.encoder.pooling,
        clip_seconds=m.clips.clip_seconds,
        hop_seconds=m.clips.hop_seconds,
        index_type=m.faiss_spec,
        index_type_pinned=m.faiss_pinned,
        size_bytes=size,
        generation=generation,
        duplicate_threshold=m.duplicate_threshold,
        failed=failed,
        exact_search_until=lib.exact_until(clips),
    )


__all__ = ["LibraryStats", "library_stats", "open_library"]
