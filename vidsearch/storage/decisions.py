"""Decisions that stick: the user's verdict on a pair of videos.

A verdict is keyed by the two videos' content fingerprints, in either order, so it survives
moves, renames, ``reindex``, and re-indexing the same files into a new index after a model
change (carry the verdicts over with ``export_decisions`` / ``import_decisions``). ``dupes``
hides the pairs judged ``not_a_match`` or ``keep_both``. The CLI and any other front end (a web
app) record and read verdicts through these functions.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from vidsearch.errors import InvalidArgumentError, VideoNotFoundError
from vidsearch.storage.catalog import STATUS_INDEXED, DecisionRecord, StoredVideo
from vidsearch.storage.library import Library

NOT_A_MATCH = "not_a_match"
SAME = "same"
KEEP_BOTH = "keep_both"
VERDICTS = (NOT_A_MATCH, SAME, KEEP_BOTH)
#: Verdicts after which ``dupes`` no longer reports the pair (unless asked to).
HIDDEN_VERDICTS = frozenset({NOT_A_MATCH, KEEP_BOTH})
#: ``export_decisions`` documents carry this; ``import_decisions`` reads it and older ones.
EXPORT_VERSION = 1


def pair_key(fingerprint_a: str, fingerprint_b: str) -> tuple[str, str]:
    """The order-independent key of a pair of videos."""
    return (fingerprint_a, fingerprint_b) if fingerprint_a <= fingerprint_b else (fingerprint_b, fingerprint_a)


@dataclass(frozen=True)
class Decision:
    """A verdict as shown: ``paths`` are where the videos are indexed now, else where they were
    when the verdict was given (then ``indexed`` is False)."""

    id: int
    verdict: str
    fingerprints: tuple[str, str]
    paths: tuple[str, str]
    indexed: bool
    decided_at: dt.datetime


def _video(lib: Library, session, ref: str | os.PathLike) -> StoredVideo:
    path = os.path.abspath(os.fsdecode(ref))
    video = lib.catalog.video_by_path(session, os.fsencode(path))
    if video is None or video.status != STATUS_INDEXED:
        raise VideoNotFoundError(f"{path}: no indexed video at that path (a verdict names two indexed videos)")
    return video


def _shown(lib: Library, session, records: list[DecisionRecord]) -> list[Decision]:
    where: dict[str, str] = {}
    for v in lib.catalog.videos_by_fingerprints(session, {f for r in records for f in r.fingerprints}):
        where.setdefault(v.fingerprint, v.display_path)  # the first indexed copy of identical files
    out = []
    for r in records:
        now = tuple(where.get(f) for f in r.fingerprints)
        paths = tuple(p if p is not None else os.fsdecode(old) for p, old in zip(now, r.paths))
        out.append(Decision(r.id, r.verdict, r.fingerprints, (paths[0], paths[1]), None not in now, r.decided_at))
    return out


def decide(lib: Library, a: str | os.PathLike, b: str | os.PathLike, verdict: str) -> Decision:
    """Record ``verdict`` on the indexed videos at paths ``a`` and ``b`` (replacing an earlier one).

    Works on an index opened read-only: verdicts are outside what the writer lock guards.
    """
    if verdict not in VERDICTS:
        raise InvalidArgumentError(f"a verdict is one of {', '.join(VERDICTS)}; got {verdict!r}")
    with lib.catalog.read() as session:
        va, vb = _video(lib, session, a), _video(lib, session, b)
    if va.id == vb.id:
        raise InvalidArgumentError(f"{va.display_path}: a verdict needs two different videos")
    record = lib.catalog.store_decision((va.fingerprint, vb.fingerprint), verdict, (va.path, vb.path))
    with lib.catalog.read() as session:
        return _shown(lib, session, [record])[0]


def list_decisions(lib: Library) -> list[Decision]:
    """Every verdict, oldest first."""
    with lib.catalog.read() as session:
        return _shown(lib, session, lib.catalog.decisions(session))


def undo_decision(lib: Library, decision_id: int) -> Decision:
    """Remove the verdict with this id (as ``list_decisions`` numbers them); returns it."""
    with lib.catalog.read() as session:
        shown = {d.id: d for d in _shown(lib, session, lib.catalog.decisions(session))}
    if decision_id not in shown or lib.catalog.remove_decision(decision_id) is None:
        raise InvalidArgumentError(f"{lib.root}: no decision number {decision_id} (`vidsearch decisions` lists them)")
    return shown[decision_id]


def decided_pairs(lib: Library, session) -> dict[tuple[str, str], str]:
    """Verdicts by ``pair_key``, read in the caller's snapshot ``session``."""
    return {pair_key(*r.fingerprints): r.verdict for r in lib.catalog.decisions(session)}


def export_decisions(decisions: list[Decision]) -> dict:
    """A JSON-ready document of verdicts that ``import_decisions`` reads into any index."""
    return {
        "decisions_version": EXPORT_VERSION,
        "decisions": [
            {
                "id": d.id,
                "verdict": d.verdict,
                "a": d.paths[0],
                "b": d.paths[1],
                "fingerprint_a": d.fingerprints[0],
                "fingerprint_b": d.fingerprints[1],
                "indexed": d.indexed,
                "decided_at": d.decided_at.replace(tzinfo=dt.timezone.utc).isoformat(timespec="seconds"),
            }
            for d in decisions
        ],
    }


def import_decisions(lib: Library, source: str | os.PathLike) -> int:
    """Store the verdicts of a ``decisions --json`` file (from this index or another); returns how many.

    A verdict read replaces this index's verdict on the same pair.
    """
    try:
        doc = json.loads(Path(source).read_text())
        entries = doc["decisions"]
        parsed = [
            (
                (str(e["fingerprint_a"]), str(e["fingerprint_b"])),
                str(e["verdict"]),
                (os.fsencode(str(e["a"])), os.fsencode(str(e["b"]))),
                dt.datetime.fromisoformat(e["decided_at"]).astimezone(dt.timezone.utc).replace(tzinfo=None),
            )
            for e in entries
        ]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidArgumentError(
            f"{source}: not a `vidsearch decisions --json` file ({type(exc).__name__}: {exc})"
        ) from exc
    for fingerprints, verdict, _, _ in parsed:
        if verdict not in VERDICTS:
            raise InvalidArgumentError(f"{source}: unknown verdict {verdict!r} for the pair {fingerprints}")
    for fingerprints, verdict, paths, at in parsed:
        lib.catalog.store_decision(fingerprints, verdict, paths, decided_at=at)
    return len(parsed)
