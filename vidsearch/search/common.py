"""Common footage: clips that recur in many unrelated videos, and so are no evidence of a copy.

A series' intro, a channel's sting, an ad bumper: many videos share it, yet none of them is a
copy of another. A clip is *common* when its close matches (the clip pairs above the duplicate
threshold that ``dupes`` finds anyway) fall in more than ``min_videos`` videos that are
unrelated to each other. Two videos are related when they share an aligned segment of other
footage, or when one is a copy of the other; copies of one video are then one family however
many there are, so footage never becomes common by being copied often, only by recurring in
otherwise different videos. ``search.duplicates`` decides which videos are related (it aligns
pairs); this module does the counting, and groups common clips into the segments that
``vidsearch common`` lists.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from vidsearch.storage.catalog import ClipTable


@dataclass(frozen=True)
class Spreads:
    """Which videos each clip's matches fall in: pairs (table row, other video), each once, by row.

    ``count`` is, per table row, the number of distinct videos its footage appears in, its own
    video included (1 for a clip without matches).
    """

    rows: np.ndarray
    videos: np.ndarray
    count: np.ndarray


def spreads(table: ClipTable, candidates: dict[tuple[int, int], np.ndarray]) -> Spreads:
    """The videos each clip's matches fall in, from ``dupes``' clip matches (``clip_pairs``)."""
    n = len(table.ids)
    if not candidates:
        return Spreads(np.zeros(0, np.int64), np.zeros(0, np.int64), np.ones(n, np.int64))
    pairs = np.array(list(candidates), dtype=np.int64)
    m = np.concatenate(list(candidates.values()))
    sizes = [len(x) for x in candidates.values()]
    r = np.concatenate([m[:, 0], m[:, 1]]).astype(np.int64)
    v = np.concatenate([np.repeat(pairs[:, 1], sizes), np.repeat(pairs[:, 0], sizes)])
    span = int(v.max()) + 1
    key = np.unique(r * span + v)  # sorted by row, then video
    r, v = key // span, key % span
    return Spreads(r, v, np.bincount(r, minlength=n) + 1)


def suspects(spread: Spreads, min_videos: int) -> np.ndarray:
    """Rows whose footage appears in more than ``min_videos`` videos: the only ones that can be common."""
    return spread.count > min_videos


def touched(table: ClipTable, spread: Spreads, suspect: np.ndarray) -> set[int]:
    """The videos whose relations decide whether a suspect is common: its own and those it matches."""
    return {int(x) for x in spread.videos[suspect[spread.rows]]} | {int(x) for x in table.video[suspect]}


def mark_common(
    table: ClipTable,
    spread: Spreads,
    suspect: np.ndarray,
    related: set[tuple[int, int]],
    min_videos: int,
) -> np.ndarray:
    """Per table row, the number of videos its footage appears in when it is common, else 0.

    A suspect is common when more than ``min_videos`` of its videos (its own and those it
    matches) are pairwise unrelated. The largest such set is a maximum independent set; a
    greedy one (fewest relations first) is a lower bound and is exact in the usual cases, where
    related videos are few. Videos with no relation at all are counted first, for every row at
    once; the greedy choice runs only for rows that they leave undecided.
    """
    n = len(table.ids)
    if not suspect.any():
        return np.zeros(n, np.int64)
    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, b in related:
        neighbours[a].add(b)
        neighbours[b].add(a)
    own = np.nonzero(suspect)[0]
    keep = suspect[spread.rows]
    rows = np.concatenate([spread.rows[keep], own])
    videos = np.concatenate([spread.videos[keep], table.video[own]])
    has_neighbour = np.zeros(int(max(videos.max(), max(neighbours, default=0))) + 1, dtype=bool)
    has_neighbour[list(neighbours)] = True
    lonely = ~has_neighbour[videos]
    common = suspect & (np.bincount(rows[lonely], minlength=n) > min_videos)
    undecided = np.nonzero(suspect & ~common)[0]
    if len(undecided):
        order = np.argsort(rows, kind="stable")
        rows, videos = rows[order], videos[order]
        lo, hi = np.searchsorted(rows, undecided), np.searchsorted(rows, undecided, side="right")
        for row, a, b in zip(undecided, lo, hi):
            picked: set[int] = set()
            for v in sorted((int(x) for x in videos[a:b]), key=lambda x: (len(neighbours.get(x, ())), x)):
                if not neighbours.get(v, set()) & picked:
                    picked.add(v)
                    if len(picked) > min_videos:
                        common[row] = True
                        break
    return np.where(common, spread.count, 0)


@dataclass(frozen=True)
class Occurrence:
    """Where a piece of common footage lies in one video."""

    path: str
    start: float
    end: float


@dataclass(frozen=True)
class CommonSegment:
    """One piece of common footage (an intro, a sting) and every place it was found."""

    occurrences: tuple[Occurrence, ...]

    @property
    def videos(self) -> int:
        return len({o.path for o in self.occurrences})

    @property
    def seconds(self) -> float:
        """Its typical length: the median of its occurrences' lengths."""
        return statistics.median(o.end - o.start for o in self.occurrences)


def common_segments(
    table: ClipTable,
    candidates: dict[tuple[int, int], np.ndarray],
    appears_in: np.ndarray,
    paths: dict[int, str],
    max_gap: float,
) -> list[CommonSegment]:
    """Group common clips into segments: in each video, runs of common clips (gaps of at most
    ``max_gap`` seconds) are occurrences; occurrences that match each other are one segment.
    Largest first: most videos, then longest."""
    rows = np.nonzero(appears_in > 0)[0]
    rows = rows[np.isin(table.video[rows], list(paths))]
    if not len(rows):
        return []
    rows = rows[np.lexsort((table.start[rows], table.video[rows]))]
    run = np.full(len(table.ids), -1, np.int64)
    spans: list[list[float]] = []
    owner: list[int] = []
    for r in rows:
        v, s, e = int(table.video[r]), float(table.start[r]), float(table.end[r])
        if not spans or owner[-1] != v or s > spans[-1][1] + max_gap:
            spans.append([s, e])
            owner.append(v)
        else:
            spans[-1][1] = max(spans[-1][1], e)
        run[r] = len(spans) - 1
    parent = list(range(len(spans)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for m in candidates.values():
        a, b = run[m[:, 0].astype(np.int64)], run[m[:, 1].astype(np.int64)]
        both = (a >= 0) & (b >= 0)
        for x, y in set(zip(a[both].tolist(), b[both].tolist())):
            rx, ry = find(x), find(y)
            if rx != ry:
                parent[max(rx, ry)] = min(rx, ry)
    groups: dict[int, list[Occurrence]] = defaultdict(list)
    for i, (s, e) in enumerate(spans):
        groups[find(i)].append(Occurrence(paths[owner[i]], s, e))
    found = [CommonSegment(tuple(sorted(g, key=lambda o: (o.path, o.start)))) for g in groups.values()]
    found.sort(key=lambda c: (-c.videos, -c.seconds, c.occurrences[0].path))
    return found
