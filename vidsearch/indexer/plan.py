"""Planning an indexing run: which discovered files to skip, move, copy, embed or prune.

``classify`` is pure: it reads the files it is given (fingerprints, existence) through the
functions it is passed and writes nothing, so the rules can be tested on fakes. The job applies
the plan (``indexer.job``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vidsearch.media.discover import VideoFile, fingerprint
from vidsearch.storage.catalog import STATUS_INDEXED, StoredVideo


@dataclass(frozen=True)
class Move:
    """``file`` holds the content of indexed video ``video_id``: keep its clips, update its path and stat."""

    video_id: int
    file: VideoFile
    #: the path it had
    previous: bytes = b""


@dataclass(frozen=True)
class Copy:
    """``file`` has the content of indexed video ``source_id``, which is still there: copy its clips."""

    source_id: int
    file: VideoFile


@dataclass(frozen=True)
class Embed:
    """``file`` needs decoding and embedding; it replaces the catalog row ``replace_id`` if any."""

    file: VideoFile
    replace_id: int | None = None


@dataclass
class Plan:
    skipped: int = 0
    #: unchanged content whose stat changed (touched): updated in place, counted as skipped
    touched: list[Move] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    embed: list[Embed] = field(default_factory=list)
    #: the same content as a file queued in this run: planned again (as copies) once that one is in
    deferred: list[VideoFile] = field(default_factory=list)
    #: files that could not be read, with the reason
    unreadable: list[tuple[VideoFile, str]] = field(default_factory=list)
    #: indexed videos under the given paths whose files are gone (only with prune)
    prune: list[int] = field(default_factory=list)


def abs_bytes(path: str | os.PathLike | bytes) -> bytes:
    return os.fsencode(os.path.abspath(os.fsdecode(path)))


def is_under(path: bytes, root: bytes) -> bool:
    """``path`` is ``root`` itself or lies in the folder ``root``."""
    return path == root or path.startswith(root.rstrip(b"/") + b"/")


def classify(
    files: Sequence[VideoFile],
    rows: Sequence[StoredVideo],
    retry_failed: bool = False,
    prune_roots: Sequence[str | os.PathLike | bytes] = (),
    fingerprint: Callable[[VideoFile], VideoFile] = fingerprint,
    exists: Callable[[bytes], bool] = os.path.exists,
) -> Plan:
    """Split discovered ``files`` against the catalog's ``rows`` into a plan.

    - same path, size and mtime: skipped (a failed one too, unless ``retry_failed``);
    - same path and content, other stat: touched;
    - the content of an indexed video whose file is gone: moved (its clips are kept);
    - the content of an indexed video still present: copied (its clips are copied);
    - the same content twice in this run: the second is deferred;
    - anything else is embedded, replacing the row at its path.

    With ``prune_roots``, indexed videos under those roots whose files are gone (and that no file
    moved from) are pruned: nothing outside them, so an unmounted drive elsewhere keeps its embeddings.
    """
    plan = Plan()
    by_path = {r.path: r for r in rows}
    by_fp: dict[str, list[StoredVideo]] = {}
    for r in rows:
        if r.status == STATUS_INDEXED:
            by_fp.setdefault(r.fingerprint, []).append(r)
    claimed: set[int] = set()
    queued: set[str] = set()
    for f in files:
        row = by_path.get(f.path_bytes)
        if row is not None and row.size == f.size and row.mtime_ns == f.mtime_ns:
            if row.status == STATUS_INDEXED or not retry_failed:
                plan.skipped += 1
                continue
        try:
            f = fingerprint(f)
        except OSError as exc:
            plan.unreadable.append((f, f"cannot read file ({exc.strerror or exc})"))
            continue
        if row is not None and row.fingerprint == f.fingerprint and row.status == STATUS_INDEXED:
            plan.touched.append(Move(row.id, f, row.path))
            continue
        twins = [r for r in by_fp.get(f.fingerprint, ()) if r.path != f.path_bytes and r.id not in claimed]
        gone = [r for r in twins if not exists(r.path)]
        if gone:
            claimed.add(gone[0].id)
            plan.moves.append(Move(gone[0].id, f, gone[0].path))
        elif twins:
            plan.copies.append(Copy(twins[0].id, f))
        elif f.fingerprint in queued:
            plan.deferred.append(f)
        else:
            queued.add(f.fingerprint)
            plan.embed.append(Embed(f, row.id if row is not None else None))
    if prune_roots:
        roots = [abs_bytes(p) for p in prune_roots]
        plan.prune = [
            r.id
            for r in rows
            if any(is_under(r.path, root) for root in roots) and r.id not in claimed and not exists(r.path)
        ]
    return plan
