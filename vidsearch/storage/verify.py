"""Check that the manifest, catalog and FAISS index agree; repair what can be rebuilt.

Repairs never touch a video's embeddings unless they are unusable: the FAISS file is rebuilt
from the catalog; orphan clip rows are deleted; a video whose stored clips are damaged, or that
is marked indexed without clips, is dropped from the catalog so the next ``index`` run embeds
it again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidsearch.errors import CorruptCatalogError, CorruptIndexError
from vidsearch.storage.catalog import EMBEDDING_DTYPE
from vidsearch.storage.library import Library, header_mismatches
from vidsearch.storage.lock import lock_holder
from vidsearch.storage.vectors import VectorFileError, VectorIndex

log = logging.getLogger(__name__)

NORM_TOLERANCE = 0.01


@dataclass(frozen=True)
class Problem:
    part: str
    message: str
    repairable: bool


@dataclass
class VerifyReport:
    index: str
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    #: what is as it should be but worth saying (a writer still running; exact until trainable)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No problems, or all of them repairable and repaired."""
        return not self.problems or (bool(self.repaired) and all(p.repairable for p in self.problems))


def _check_catalog(lib: Library, report: VerifyReport) -> tuple[set[int], np.ndarray | None]:
    """Catalog problems; returns the ids of videos with damaged clips and all clip ids."""
    dim = lib.manifest.encoder.dim
    bad_videos: set[int] = set()
    with lib.catalog.read() as s:
        integrity = lib.catalog.integrity_problems(s)
        if integrity:
            report.problems.append(Problem("catalog", f"SQLite integrity check: {'; '.join(integrity[:3])}", False))
            return bad_videos, None
        orphans = lib.catalog.orphan_clip_count(s)
        if orphans:
            report.problems.append(Problem("catalog", f"{orphans} clip rows belong to no video", True))
        for vid, path in lib.catalog.indexed_without_clips(s):
            bad_videos.add(vid)
            report.problems.append(Problem("catalog", f"{os.fsdecode(path)} is marked indexed but has no clips", True))
        ids = []
        for rows in lib.catalog.iter_raw_embeddings(s):
            ids.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
            for cid, vid, blob in rows:
                if len(blob) != dim * np.dtype(EMBEDDING_DTYPE).itemsize:
                    bad_videos.add(vid)
                    report.problems.append(
                        Problem("catalog", f"clip {cid}: embedding of {len(blob)} bytes, expected a {dim}-d one", True)
                    )
                    continue
                norm = float(np.linalg.norm(np.frombuffer(blob, dtype=EMBEDDING_DTYPE).astype(np.float32)))
                if not np.isfinite(norm) or abs(norm - 1) > NORM_TOLERANCE:
                    bad_videos.add(vid)
                    report.problems.append(
                        Problem("catalog", f"clip {cid}: embedding norm {norm:.4f}, expected 1", True)
                    )
        report.counts.update(
            videos=lib.catalog.video_count(s),
            clips=sum(len(i) for i in ids),
            generation=lib.catalog.generation(s),
        )
    return bad_videos, (np.concatenate(ids) if ids else np.zeros(0, np.int64))


def _check_vectors(lib: Library, clip_ids: np.ndarray, report: VerifyReport, writer: str | None) -> bool:
    """FAISS file problems; returns whether it needs a rebuild. ``writer``: the job holding the
    lock, whose vectors file is behind the catalog until it saves it."""
    try:
        vi, header = VectorIndex.load(lib.vectors_path)
    except VectorFileError as exc:
        report.problems.append(Problem("vectors", f"{lib.vectors_path}: {exc}", True))
        return True
    problems = header_mismatches(header, lib.manifest)
    generation = report.counts["generation"]
    if writer is not None and not problems and header.generation < generation:
        report.notes.append(
            f"{lib.vectors_path} is behind the catalog (generation {header.generation}, the catalog {generation}) "
            f"while {writer} writes; that job brings it up to date"
        )
        return False
    if header.generation != generation:
        problems.append(f"was built at catalog generation {header.generation}, the catalog is at {generation}")
    live = vi.ids()
    if len(live) != len(clip_ids) or not np.array_equal(live, clip_ids):
        missing = len(np.setdiff1d(clip_ids, live))
        extra = len(np.setdiff1d(live, clip_ids))
        problems.append(
            f"holds {len(live)} clips, the catalog {len(clip_ids)} ({missing} missing, {extra} not in the catalog)"
        )
    until = lib.exact_until(len(clip_ids))
    if not problems and until is not None:
        m = lib.manifest
        report.notes.append(f"{'pinned ' if m.faiss_pinned else ''}{m.faiss_spec}; exact search until {until} clips")
    for p in problems:
        report.problems.append(Problem("vectors", f"{lib.vectors_path} {p}", True))
    return bool(problems)


def verify(index_dir: str | os.PathLike, repair: bool = False) -> VerifyReport:
    """Check an index directory; with ``repair``, rebuild what can be rebuilt (takes the writer lock).

    A damaged manifest or catalog is a problem in the report. What is not damage raises its own
    error: no index there (IndexNotFoundError), one made by a newer vidsearch
    (IncompatibleIndexError), and, with ``repair``, another job holding the lock (IndexLockedError).
    """
    report = VerifyReport(str(index_dir))
    writer = None if repair else lock_holder(Path(index_dir))
    try:
        lib = Library.open(index_dir, writable=repair)
    except CorruptCatalogError as exc:
        report.problems.append(Problem("catalog", str(exc), False))
        return report
    except CorruptIndexError as exc:
        report.problems.append(Problem("manifest", str(exc), False))
        return report
    with lib:
        try:
            bad_videos, clip_ids = _check_catalog(lib, report)
        except CorruptIndexError as exc:
            report.problems.append(Problem("catalog", str(exc), False))
            return report
        if clip_ids is None:  # the catalog failed its integrity check: nothing else is trustworthy
            return report
        rebuild = _check_vectors(lib, clip_ids, report, writer)
        if not repair or not report.problems:
            return report
        if any(not p.repairable for p in report.problems):
            report.repaired.append(
                "nothing: fix the problems that cannot be repaired first (restore the catalog from a backup)"
            )
            return report
        orphans, dropped = lib.catalog.repair(bad_videos)  # orphans' "videos" are gone already
        if orphans:
            report.repaired.append(f"deleted {orphans} orphan clip rows")
        if dropped:
            report.repaired.append(
                f"dropped {dropped} damaged video(s) from the catalog: the next index run embeds them again"
            )
        if rebuild or dropped or report.repaired:
            lib.rebuild_vectors()
            report.repaired.append(f"rebuilt {lib.vectors_path} from the catalog")
    return report
