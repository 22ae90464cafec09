"""Segment boundaries: how far a search's reported segment is from where a cut really came from.

Writes a library of synthetic scene videos (tests/helpers.py ``write_video``: a new scene every
second, panning within it; 20-30 s, 24-30 fps, several sizes) and, given ``--videos``, the real
videos there, indexes it with a tiny random-init VideoMAE (tests/helpers.py ``make_checkpoint``),
then cuts ``--cuts`` seeded random pieces out of the scene videos (start and length at arbitrary
fractions of a second, 3-12 s long), re-encodes and resizes each (tests/helpers.py ``transcode``)
and searches the library with it. The truth is the cut's first and last frame in the source: the
query side should be [0, the cut's length], the library side [first frame's start, last frame's
end]. Each cut gives two boundary errors a side (start and end) for the top result's best
segment, which must be the source. With ``--videos``, a few cuts of the real videos (at most
their length) are reported apart from the target figures.

Both ways, on the same index and queries: refinement off and on (``search_video(...,
refine_segments=...)``); each search is timed ``--repeat`` times, the two ways interleaved, and
the median of each is summed over the queries, and the refinement step is timed on its own.
Run with an older vidsearch on PYTHONPATH (one
without ``refine_segments``) to measure it as it was: then there is one way, "before".

``--dupes`` also indexes the cuts beside the library and runs ``find_duplicates`` with its
refinement off and on: each cut's pair with its source gives the same four errors (both sides
are stored clips at the index's hop, where search embeds its query every half hop), and the
two passes are timed. ``--dupes-hop`` sets that index's hop (e.g. 1: windows overlap by half).

Usage: python benchmarks/segments.py [--cuts 20] [--seed 0] [--videos ../shared/videos]
                                     [--dtype float32] [--repeat 3] [--workdir DIR] [--dupes] [--dupes-hop S]
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

#: (seconds, fps, size) of the synthetic library videos the cuts come from
SCENE_VIDEOS = [
    (30, 25, (160, 96)),
    (30, 30, (128, 128)),
    (24, 24, (176, 144)),
    (30, 25, (192, 108)),
    (20, 29.97, (160, 120)),
    (30, 25, (144, 96)),
]
#: sizes a cut is resized to
CUT_SIZES = [(120, 72), (96, 64), (176, 100), (112, 112), (200, 120)]
#: real videos used, and why not the fourth: carphone_distorted is a copy of carphone_pristine,
#: so a cut of one would have two right answers
REAL_VIDEOS = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]


@dataclass
class Cut:
    query: Path
    source: Path
    start: float
    end: float
    length: float
    real: bool


def make_library(root: Path, videos: Path | None) -> list[Path]:
    from helpers import write_video

    lib = root / "library"
    lib.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (seconds, fps, size) in enumerate(SCENE_VIDEOS):
        paths.append(lib / f"scene{i}.mp4")
        if not paths[-1].exists():
            write_video(paths[-1], seconds=seconds, fps=fps, size=size, seed=100 + i)
    if videos is not None:
        real = root / "real"
        real.mkdir(exist_ok=True)
        for name in REAL_VIDEOS:
            paths.append(real / name)
            if not paths[-1].exists():
                paths[-1].symlink_to((videos / name).resolve())
    return paths


def frame_times(path: Path) -> np.ndarray:
    from vidsearch.media.readers import open_video

    with open_video(path) as reader:
        return reader.frame_times


def make_cuts(root: Path, library: list[Path], n: int, n_real: int, seed: int) -> list[Cut]:
    from helpers import transcode

    rng = np.random.default_rng(seed)
    times = {p: frame_times(p) for p in library}
    scene = [p for p in library if p.name.startswith("scene")]
    real = [p for p in library if not p.name.startswith("scene")]
    cuts = []
    for i in range(n + (n_real if real else 0)):
        is_real = i >= n
        pool = real if is_real else scene
        source = pool[int(rng.integers(len(pool)))]
        t = times[source]
        duration = float(t[-1, 1])
        length = float(rng.uniform(3.0, min(12.0, duration - 0.2)))
        start = float(rng.uniform(0.0, duration - length))
        size = CUT_SIZES[int(rng.integers(len(CUT_SIZES)))]
        query = transcode(source, root / f"cut{i:02d}.mp4", start_s=start, end_s=start + length, size=size)
        kept = np.nonzero((t[:, 0] >= start - 1e-6) & (t[:, 0] < start + length - 1e-6))[0]
        q_len = float(frame_times(query)[-1, 1])
        cuts.append(Cut(query, source, float(t[kept[0], 0]), float(t[kept[-1], 1]), q_len, is_real))
    return cuts


def errors(result, cut: Cut) -> tuple[bool, list[float], list[float]]:
    """(top-1 right, query-side errors, library-side errors) of the top result's best segment."""
    top = result.matches[0]
    seg = top.segments[0]
    right = os.path.realpath(top.path) == os.path.realpath(cut.source)
    return (
        right,
        [abs(seg.q_start - 0.0), abs(seg.q_end - cut.length)],
        [abs(seg.r_start - cut.start), abs(seg.r_end - cut.end)],
    )


def dupes_errors(report, cut: Cut) -> tuple[bool, list[float], list[float]] | None:
    """(found, cut-side errors, source-side errors) of the cut's pair with its source's best segment."""
    q, src = os.path.realpath(cut.query), os.path.realpath(cut.source)
    for pair in report.pairs:
        a, b = os.path.realpath(pair.a), os.path.realpath(pair.b)
        if {a, b} == {q, src}:
            seg = pair.segments[0]
            (qs, qe), (rs, re_) = ((seg.q_start, seg.q_end), (seg.r_start, seg.r_end))
            if a != q:
                (qs, qe), (rs, re_) = (rs, re_), (qs, qe)
            return True, [abs(qs - 0.0), abs(qe - cut.length)], [abs(rs - cut.start), abs(re_ - cut.end)]
    return False, [], []


def report_common(report) -> str:
    return f"{report.common_clips} clips in more than {report.common_min_videos} unrelated videos"


def measure_dupes(
    root: Path, index_name: str, library: list[Path], cuts: list[Cut], model: Path, dtype: str, hop: float | None
) -> None:
    import vidsearch
    from vidsearch.search.duplicates import find_duplicates

    index = root / f"{index_name}-dupes{'' if hop is None else f'-hop{hop:g}'}"
    opts = vidsearch.IndexOptions(model=str(model), dtype=dtype, hop_seconds=hop)
    vidsearch.index_paths(index, library + [c.query for c in cuts], opts)
    print(f"\ndupes index: the library and the cuts, {'the default hop' if hop is None else f'hop {hop:g} s'}")
    found, seconds = {}, {}
    with vidsearch.open_library(index) as lib:
        find_duplicates(lib)  # warm up, and the common pass stores its marks once
        print(f"clips found common (no evidence, and not grown over): {report_common(find_duplicates(lib))}")
        # the random model finds much of this library common: --keep-common shows refinement without that
        for way, on, keep in 2 * (("off", False, False), ("on", True, False)) + (
            ("off, --keep-common", False, True),
            ("on, --keep-common", True, True),
        ):
            t = time.perf_counter()
            report = find_duplicates(lib, refine_segments=on, keep_common=keep)
            seconds.setdefault(way, []).append(time.perf_counter() - t)
            found[way] = [dupes_errors(report, c) for c in cuts]
    tables(
        cuts,
        found,
        ("dupes, scene-video cuts", "dupes, real-video cuts"),
        "boundary errors of each cut's pair with its source",
        "| refinement | pair found | cut-side |error| (s) | source-side |error| (s) |",
    )
    off, on = min(seconds["off"]), min(seconds["on"])  # the default ways ran twice
    print(f"dupes time (best of 2, interleaved): off {off:.3f} s, on {on:.3f} s (on / off {on / off:.3f})")


def tables(cuts: list[Cut], found: dict[str, list], groups: tuple[str, str], what: str, header: str) -> None:
    """One table a group of cuts (scene videos', real videos'): each way's (right, query-side
    errors, library-side errors) over the cuts it got right."""
    for group, real in zip(groups, (False, True)):
        rows = [i for i, c in enumerate(cuts) if c.real == real]
        if not rows:
            continue
        print(f"\n{group}: {len(rows)}; {what}")
        print(header)
        print("| --- | --- | --- | --- |")
        for way, res in found.items():
            res = [res[i] for i in rows]
            q = [e for ok, qs, _ in res if ok for e in qs]
            r = [e for ok, _, rs in res if ok for e in rs]
            print(f"| {way} | {sum(ok for ok, _, _ in res)}/{len(res)} | {summary(q)} | {summary(r)} |")


def summary(values: list[float]) -> str:
    a = np.asarray(values)
    return f"median {np.median(a):.3f}  max {a.max():.3f}" if len(a) else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cuts", type=int, default=20)
    ap.add_argument("--real-cuts", type=int, default=6, help="cuts of the real videos, with --videos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--videos", type=Path, default=None, help="folder with the real sample videos")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--details", action="store_true", help="one line per cut")
    ap.add_argument("--dupes", action="store_true", help="also measure dupes' segments, the cuts indexed")
    ap.add_argument("--dupes-hop", type=float, default=None, help="the hop of --dupes' index [the default]")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import make_checkpoint

    import vidsearch
    from vidsearch.search.query import search_video

    videos = args.videos
    if videos is not None and not all((videos / n).exists() for n in REAL_VIDEOS):
        print(f"real videos skipped: {videos} does not hold {', '.join(REAL_VIDEOS)}")
        videos = None
    elif videos is None:
        print("real videos skipped: no --videos folder given")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="vidsearch-segments-"))
    root.mkdir(parents=True, exist_ok=True)
    model = root / "model"
    if not model.exists():
        make_checkpoint(model)
    library = make_library(root, videos)
    has_refine = "refine_segments" in inspect.signature(search_video).parameters
    refining = [0.0, 0.0]  # wall, CPU
    if has_refine:  # time the refinement step itself too, inside the "on" searches
        from vidsearch.search import query as query_module

        step = query_module._refined

        def timed(*a, **kw):
            t, c = time.perf_counter(), time.process_time()
            try:
                return step(*a, **kw)
            finally:
                refining[0] += time.perf_counter() - t
                refining[1] += time.process_time() - c

        query_module._refined = timed
    # an older vidsearch stores other clip end times: each version (and library) gets its own index
    index = root / ("index" if has_refine else "index-before")
    index = index.with_name(index.name + ("-real" if videos is not None else ""))
    vidsearch.index_paths(index, library, vidsearch.IndexOptions(model=str(model), dtype=args.dtype))
    cuts = make_cuts(root, library, args.cuts, args.real_cuts, args.seed)
    encoder = vidsearch.load_encoder(str(model), device="cpu", dtype=args.dtype)
    ways = {"off": {"refine_segments": False}, "on": {"refine_segments": True}} if has_refine else {"before": {}}
    print(f"vidsearch from {Path(vidsearch.__file__).parent}; {len(cuts)} cuts; dtype {args.dtype}")
    with vidsearch.open_library(index) as lib:
        search_video(lib, encoder, cuts[0].query, k=5)  # warm up: first-call costs are nobody's
        seconds: dict[str, list[float]] = {w: [] for w in ways}
        cpu: dict[str, list[float]] = {w: [] for w in ways}
        found: dict[str, list] = {w: [] for w in ways}
        for cut in cuts:
            per: dict[str, list[float]] = {w: [] for w in ways}
            per_cpu: dict[str, list[float]] = {w: [] for w in ways}
            last = {}
            for rep in range(args.repeat):
                order = list(ways.items())
                for way, kwargs in order[::-1] if rep % 2 else order:  # neither way always goes first
                    t, c = time.perf_counter(), time.process_time()
                    last[way] = search_video(lib, encoder, cut.query, k=5, **kwargs)
                    per[way].append(time.perf_counter() - t)
                    per_cpu[way].append(time.process_time() - c)
            for way in ways:
                seconds[way].append(statistics.median(per[way]))
                cpu[way].append(statistics.median(per_cpu[way]))
                found[way].append(errors(last[way], cut))
                if args.details:
                    ok, q, r = found[way][-1]
                    print(
                        f"  {cut.query.name} {cut.source.name} [{cut.start:.2f}-{cut.end:.2f}] {way}: "
                        f"top-1 {'right' if ok else 'WRONG'} query {q[0]:.2f} {q[1]:.2f} library {r[0]:.2f} {r[1]:.2f}"
                    )
    tables(
        cuts,
        {way: found[way] for way in ways},
        ("scene-video cuts (the target)", "real-video cuts"),
        "boundary errors over those whose top result is the source",
        "| refinement | top-1 right | query-side |error| (s) | library-side |error| (s) |",
    )
    total = {w: sum(s) for w, s in seconds.items()}
    total_cpu = {w: sum(s) for w, s in cpu.items()}
    print(f"\nsearch time over the {len(cuts)} queries (median of {args.repeat} each, interleaved), wall / CPU:")
    for way, t in total.items():
        each, each_cpu = t / len(cuts) * 1000, total_cpu[way] / len(cuts) * 1000
        print(f"  {way}: {t:.3f} s / {total_cpu[way]:.3f} s ({each:.0f} / {each_cpu:.0f} ms a query)")
    if has_refine:
        print(
            f"  on / off: {total['on'] / total['off']:.3f} wall, {total_cpu['on'] / total_cpu['off']:.3f} CPU; "
            "extra clips embedded per query: 0"
        )
        searches = args.repeat * len(cuts) + 1  # +1: the warm-up search
        wall, used = refining[0] / searches, refining[1] / searches
        share, share_cpu = wall / (total["off"] / len(cuts)), used / (total_cpu["off"] / len(cuts))
        print(
            f"  the refinement step itself: {wall * 1000:.1f} ms wall, {used * 1000:.1f} ms CPU a query "
            f"({share:.1%} / {share_cpu:.1%} of an unrefined search)"
        )
    if args.dupes:
        measure_dupes(root, index.name, library, cuts, model, args.dtype, args.dupes_hop)


if __name__ == "__main__":
    main()
