"""Near-duplicate pairs and groups on planted embeddings (exact answers known), and the export;
one trimmed copy of real decoded footage for where its segment is placed."""

import os
import sqlite3
from contextlib import closing

import numpy as np
import pytest
from helpers import scene_frames, transcode, write_video
from planting import DIM, Planter, footage, store, windows

from vidsearch.search.duplicates import DuplicatePair, find_duplicates, group_pairs
from vidsearch.storage.catalog import ClipRecord, VideoRecord


def by_names(report):
    return {tuple(sorted((p.a, p.b))): p for p in report.pairs}


def test_planted_pairs_exactly(planted):
    # the matched clips' own times: planted vectors are random, not footage that refinement can place
    report = find_duplicates(planted, threshold=0.9, refine_segments=False)
    pairs = by_names(report)
    assert set(pairs) == {
        ("/orig.mp4", "/trim.mp4"),
        ("/long.mp4", "/orig.mp4"),
        ("/long.mp4", "/trim.mp4"),
        ("/x.mp4", "/y.mp4"),
        ("/s1.mp4", "/s2.mp4"),
    }
    assert report.threshold_source == "given"

    trim = pairs[("/orig.mp4", "/trim.mp4")]
    seg = trim.segments[0]
    assert (seg.q_start, seg.q_end, seg.r_start, seg.r_end, seg.matches) == (4.0, 12.0, 0.0, 8.0, 4)
    assert trim.relation == "b in a" and trim.b_covered == pytest.approx(1.0) and trim.a_covered == pytest.approx(0.4)

    contained = pairs[("/long.mp4", "/orig.mp4")]
    seg = contained.segments[0]
    assert (seg.q_start, seg.q_end, seg.r_start, seg.r_end) == (0.0, 10.0, 10.0, 20.0)  # orig is video a (lower id)
    assert contained.a_covered == pytest.approx(0.5) and contained.b_covered == pytest.approx(10 / 30)

    two = pairs[("/x.mp4", "/y.mp4")]
    assert sorted((s.q_start, s.q_end, s.r_start, s.r_end) for s in two.segments) == [
        (0.0, 6.0, 4.0, 10.0),
        (14.0, 20.0, 16.0, 22.0),
    ]
    assert two.a_covered == pytest.approx(12 / 20)

    short = pairs[("/s1.mp4", "/s2.mp4")]
    assert short.segments[0].length == pytest.approx(3.0) and short.relation == "same"


def test_min_seconds_and_threshold(planted):
    pairs = by_names(find_duplicates(planted, threshold=0.9, min_seconds=7.0))
    assert set(pairs) == {("/orig.mp4", "/trim.mp4"), ("/long.mp4", "/orig.mp4")}
    assert find_duplicates(planted, threshold=0.999).pairs == []


def test_groups_union_find_with_longest_first(planted):
    groups = find_duplicates(planted, threshold=0.9).groups()
    assert [[p for p, _ in g.videos] for g in groups] == [
        ["/long.mp4", "/orig.mp4", "/trim.mp4"],
        ["/s1.mp4", "/s2.mp4"],
        ["/y.mp4", "/x.mp4"],  # y (26 s) is longer
    ]
    assert groups[0].original == "/long.mp4"


def test_group_pairs_chains_transitively():
    def pair(a, b):
        return DuplicatePair(a, b, float(len(a)), float(len(b)), 1.0, 1.0, (), 1.0, 1.0)

    groups = group_pairs([pair("a", "bb"), pair("ccc", "dddd"), pair("bb", "ccc"), pair("x", "yy")])
    assert [[p for p, _ in g.videos] for g in groups] == [["dddd", "ccc", "bb", "a"], ["yy", "x"]]


def test_default_and_calibrated_threshold(planted):
    from vidsearch.search.duplicates import DEFAULT_THRESHOLD

    r = find_duplicates(planted)
    assert (r.threshold, r.threshold_source) == (DEFAULT_THRESHOLD, "default")
    planted.update_manifest(duplicate_threshold=0.999)
    r = find_duplicates(planted)
    assert (r.threshold, r.threshold_source, r.pairs) == (0.999, "calibrated", [])


def test_vsc_export_loads_without_pickle(planted, tmp_path):
    from vidsearch.storage.export import export

    out = tmp_path / "desc.npz"
    n = export(planted, out, "vsc")
    data = np.load(out, allow_pickle=False)
    assert set(data.files) == {"video_ids", "features", "timestamps"}
    assert n == 10 + 4 + 15 + 10 + 13 + 6 + 6 + 2 + 2
    assert data["features"].shape == (n, DIM) and data["features"].dtype == np.float32
    assert data["timestamps"].shape == (n, 2) and data["video_ids"].dtype.kind == "U"
    # rows of a video are contiguous and its timestamps match the catalog
    ids = data["video_ids"]
    order = [ids[0]] + [b for a, b in zip(ids[:-1], ids[1:]) if a != b]
    assert order == ["long", "orig", "s1", "s2", "trim", "u1", "u2", "x", "y"]
    rows = np.nonzero(ids == "s1")[0]
    np.testing.assert_allclose(data["timestamps"][rows], [[0, 2], [1, 3]])
    assert np.all(np.diff(rows) == 1)
    only = tmp_path / "queries.txt"
    only.write_text("trim\n/s2.mp4\n")
    n = export(planted, tmp_path / "q.npz", "vsc", only=only)
    q = np.load(tmp_path / "q.npz", allow_pickle=False)
    assert n == 6 and set(q["video_ids"]) == {"trim", "s2"}
    n = export(planted, tmp_path / "pca.npz", "vsc", dim=8)
    f = np.load(tmp_path / "pca.npz")["features"]
    assert f.shape == (68, 8)
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)
    n = export(planted, tmp_path / "raw.npz", "npz")
    raw = np.load(tmp_path / "raw.npz", allow_pickle=False)
    assert "/orig.mp4" in set(raw["paths"]) and raw["features"].shape == (68, DIM)


def test_parquet_export_round_trips_paths_times_and_vectors(planted, tmp_path):

    import pyarrow.parquet as pq

    from vidsearch.storage.catalog import decode_embeddings
    from vidsearch.storage.export import export

    odd = b"/caf\xe9.mp4"  # a Latin-1 name: not UTF-8
    vec = Planter(5).random(2)
    planted.catalog.store_video(
        VideoRecord(odd, 1, 1, "odd", duration_s=4.0), [ClipRecord(0.0, 2.0, vec[0]), ClipRecord(2.0, 4.0, vec[1])]
    )
    n = export(planted, tmp_path / "d.parquet", "parquet")
    t = pq.read_table(tmp_path / "d.parquet")
    assert n == 70 and t.num_rows == 70 and t.column_names == ["path", "start_s", "end_s", "embedding"]
    rows = t.to_pydict()
    emb = np.array(rows["embedding"], dtype=np.float32)
    assert emb.shape == (70, DIM)
    odd_rows = [i for i, p in enumerate(rows["path"]) if p == "/caf\\xe9.mp4"]
    assert [(rows["start_s"][i], rows["end_s"][i]) for i in odd_rows] == [(0.0, 2.0), (2.0, 4.0)]
    np.testing.assert_allclose(emb[odd_rows], vec, atol=1e-3)  # float16 in the catalog
    # every row matches the catalog's clip at that path and time
    con = sqlite3.connect(planted.root / "catalog.sqlite")
    with closing(con):
        stored = {
            (bytes(path).decode("utf-8", "backslashreplace"), s, e): decode_embeddings([blob], DIM)[0]
            for path, s, e, blob in con.execute(
                "select v.path, c.start_s, c.end_s, c.embedding from clips c join videos v on v.id = c.video_id"
            )
        }
    assert len(stored) == 70
    for i in range(70):
        np.testing.assert_array_equal(emb[i], stored[(rows["path"][i], rows["start_s"][i], rows["end_s"][i])])


@pytest.mark.parametrize("batch_rows", [250_000, 10])
def test_partitioned_candidates_find_the_same_pairs_as_exact(planted, monkeypatch, batch_rows):
    """k-means cells give the pairs that all pairs give, whether every cell's vectors are read
    at once or a few cells at a time (as at 10M clips, where all of them would not fit)."""
    import vidsearch.search.duplicates as dup

    exact = by_names(find_duplicates(planted, threshold=0.9))
    monkeypatch.setattr(dup, "EXACT_CANDIDATES_LIMIT", 10)  # 68 clips: k-means cells instead of all pairs
    monkeypatch.setattr(dup, "CELL_BATCH_ROWS", batch_rows)
    with planted.catalog.read() as s:
        table = planted.catalog.clip_table(s)
        cells = dup._partitions(planted, s, table, DIM)
        batches = list(dup._batches(planted, s, table, DIM))
    assert len(cells) > 1 and sum(len(c) for c in cells) == 2 * len(table.ids)
    assert len(batches) == (1 if batch_rows > 1000 else len(cells))  # 10 rows: every cell is its own batch
    for batch_cells, rows, vecs in batches:
        assert len(vecs) == len(rows) == len(np.unique(np.concatenate(batch_cells)))
    approx = by_names(find_duplicates(planted, threshold=0.9))
    assert set(approx) == set(exact)
    for key, pair in exact.items():
        assert approx[key].segments[0] == pair.segments[0]


def test_no_indexed_video_gives_no_pairs(planted, vs):
    """Issue 12.5: with every video removed, or every one failed, dupes divided by zero."""
    import json

    with planted.catalog.read() as s:
        ids = [v.id for v in planted.catalog.videos(s)]
    planted.catalog.remove_videos(ids)
    planted.catalog.store_failure(VideoRecord(b"/broken.mp4", 1, 1, "broken"), "not a decodable video")
    report = find_duplicates(planted, threshold=0.9)
    assert (report.pairs, report.candidates, report.groups()) == ([], 0, [])
    r = vs("dupes", "--index", planted.root, "--threshold", "0.9")
    assert r.exit_code == 0 and r.stdout == "0 duplicate pair(s) at threshold 0.9 (given)\n"
    r = vs("dupes", "--index", planted.root, "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["pairs"] == []
    r = vs("dupes", "--index", planted.root, "--groups", "--format", "csv")
    assert r.exit_code == 0 and r.stdout.splitlines() == ["group,path,duration,original"]


@pytest.mark.parametrize("cut_first", [True, False])
def test_a_trimmed_copy_s_segment_is_placed_beyond_the_clip_grid(tmp_path, tiny_model, cut_first):
    # a re-encoded, resized copy of [3.7, 9.2] of a 20 s video: the copy's 2-second windows
    # straddle the source's, so the matched clips alone put its source side at [4, 8]. Indexed
    # first, a video is the pair's a (the query's part in refinement): both ways are placed
    import vidsearch

    src = write_video(
        tmp_path / "src.mp4", fps=25, frames=(f for _, f in scene_frames(5, 20, 25, 160, 96, scene_seconds=3.0))
    )
    other = write_video(tmp_path / "other.mp4", seconds=12, seed=9)
    cut = transcode(src, tmp_path / "cut.mp4", start_s=3.7, end_s=9.2, size=(128, 80))
    opts = vidsearch.IndexOptions(model=str(tiny_model))
    for batch in ([cut], [src, other]) if cut_first else ([src, other], [cut]):
        vidsearch.index_paths(tmp_path / "idx", batch, opts)
    truth = np.array([0.0, 5.48, 3.72, 9.2])  # cut side, then source side (the cut's last frame ends at 5.48)
    with vidsearch.open_library(tmp_path / "idx") as lib:
        found = {}
        for refined in (False, True):
            [pair] = find_duplicates(lib, refine_segments=refined).pairs
            assert (os.path.basename(pair.a) == "cut.mp4") == cut_first
            s = pair.segments[0]
            found[refined] = np.array(
                [s.q_start, s.q_end, s.r_start, s.r_end] if cut_first else [s.r_start, s.r_end, s.q_start, s.q_end]
            )
    assert np.abs(found[False] - truth).max() >= 1.0, found[False]
    assert np.abs(found[True] - truth).max() <= 0.3, found[True]
    assert pair.relation == ("a in b" if cut_first else "b in a")


def footage_library(root, videos):
    """A library of synthetic footage (planting.footage): ``videos`` maps a path to (clip times,
    vectors, duration_s[, pixel spreads: NaN never measured; default 30, not blank])."""
    from vidsearch.settings import EncoderSettings, Preprocessing
    from vidsearch.storage.library import Library

    lib = Library.create(root, EncoderSettings("m", "r", DIM, "mean", 16, 224, Preprocessing()))
    for path, (times, vectors, duration, *spread) in videos.items():
        spreads = spread[0] if spread and spread[0] is not None else np.full(len(times), 30.0)
        clips = [
            ClipRecord(float(s), float(e), v, None if np.isnan(d) else float(d))
            for (s, e), v, d in zip(times, vectors, spreads)
        ]
        lib.catalog.store_video(VideoRecord(path.encode(), 1, 1, path, duration_s=duration), clips)
    return lib


def test_a_one_clip_copy_is_placed_to_its_own_length(tmp_path):
    # a 1.5 s copy of a 30 s video's first 1.5 s: one clip, which matched the source's first
    # window; the pair's segment was [0, 2] <-> [0, 1.5], longer than the copy on the source's side

    src = footage(0)
    times = windows(30.0, 2.0)
    lib = footage_library(
        tmp_path / "idx",
        {"/src.mp4": (times, src(times[:, 0]), 30.0), "/copy.mp4": ([(0.0, 1.5)], src([0.0], length=1.5), 1.5)},
    )
    [pair] = find_duplicates(lib, threshold=0.9).pairs
    [seg] = pair.segments
    assert (pair.a, pair.b, seg.q_start, seg.q_end, seg.r_start, seg.r_end) == ("/src.mp4", "/copy.mp4", 0, 1.5, 0, 1.5)
    assert (pair.relation, pair.b_covered, pair.a_covered) == ("b in a", 1.0, pytest.approx(0.05))
    [unplaced] = find_duplicates(lib, threshold=0.9, refine_segments=False).pairs
    assert (unplaced.score, unplaced.similarity, unplaced.confidence) == (pair.score, pair.similarity, pair.confidence)
    lib.close()


def test_a_slow_scene_s_copy_is_one_segment_once_placed(tmp_path):
    # a scene whose 2 s clips are each 0.93 like the next, and a copy: besides the copy's own
    # diagonal, each clip matches its copy's neighbours, a second segment a window off: the same
    # footage at another alignment, listed once whether placed or not. Placed, it moves onto the
    # copy's diagonal and is the same segment again: it was reported twice
    from vidsearch.search.explain import explain_pair
    from vidsearch.search.query import search_video
    from vidsearch.settings import EncoderSettings, Preprocessing
    from vidsearch.storage.library import Library

    lib = Library.create(tmp_path / "idx", EncoderSettings("m", "r", DIM, "mean", 16, 224, Preprocessing()))
    p = Planter(0)
    scene = p.scene(6)
    store(lib, "/scene.mp4", scene)
    store(lib, "/copy.mp4", p.noisy(scene, 0.99))
    [unplaced] = find_duplicates(lib, threshold=0.9, refine_segments=False).pairs
    assert [(s.q_start, s.r_start, s.matches) for s in unplaced.segments] == [(0, 0, 6)]
    [pair] = find_duplicates(lib, threshold=0.9).pairs
    assert [(s.q_start, s.q_end, s.r_start, s.r_end, s.matches) for s in pair.segments] == [(0, 12, 0, 12, 6)]
    assert (pair.score, pair.similarity, pair.confidence) == (unplaced.score, unplaced.similarity, unplaced.confidence)
    e = explain_pair(lib, None, "/scene.mp4", "/copy.mp4", threshold=0.9)
    assert [(x.segment.q_start, x.segment.q_end, x.segment.r_start, x.segment.r_end) for x in e.segments] == [
        (0, 12, 0, 12)
    ]
    # and search by the copy's stored clips (its file is gone) lists it once, refined or not
    for refine in (False, True):
        [match] = search_video(lib, None, "/copy.mp4", refine_segments=refine).matches
        assert [(s.q_start, s.q_end, s.r_start, s.r_end) for s in match.segments] == [(0, 12, 0, 12)], refine
    lib.close()


def seeded_library(root, seed):
    """Three sources of synthetic footage (planting.footage), some shorter than a window, one
    with a blank clip, or clips whose spread was never measured, or no duration in the catalog,
    and one or two re-encoded copies of a random part (or all) of each."""

    def grid(duration):
        return windows(duration, 2.0) if duration > 2.0 else np.array([[0.0, duration]])

    rng = np.random.default_rng(seed)
    videos = {}
    for k in range(3):
        src, length = footage(seed * 10 + k), float(rng.uniform(1.0, 25.0))
        times = grid(length)
        spread = np.full(len(times), 30.0)
        if rng.random() < 0.3:
            spread[rng.integers(len(times))] = 1.0  # blank
        if rng.random() < 0.1:
            spread[:] = np.nan
        duration = length if rng.random() > 0.15 else [None, 0.0][int(rng.integers(2))]
        videos[f"/src{k}.mp4"] = (times, src(times[:, 0], length=min(length, 2.0)), duration, spread)
        for c in range(int(rng.integers(1, 3))):
            part = float(rng.uniform(1.0, length))
            start = float(rng.uniform(0, length - part)) if rng.random() > 0.25 else 0.0
            part = part if start or rng.random() > 0.5 else length  # some whole copies
            times = grid(part)
            vectors = src(start + times[:, 0], length=min(part, 2.0))
            vectors += rng.uniform(0, 0.04) * rng.standard_normal(vectors.shape)
            videos[f"/src{k}-c{c}.mp4"] = (times, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), part, None)
    return footage_library(root, videos)


@pytest.mark.parametrize("seed", range(12))
def test_placing_moves_only_times_over_seeded_libraries(tmp_path, seed):
    import json

    from vidsearch.render import dupes_body, dupes_csv
    from vidsearch.search.vsc import duplicate_matches

    lib = seeded_library(tmp_path / "idx", seed)
    off = find_duplicates(lib, threshold=0.9, refine_segments=False)
    on = find_duplicates(lib, threshold=0.9)
    assert [(p.a, p.b) for p in on.pairs] == [(p.a, p.b) for p in off.pairs] and on.pairs
    for p, q in zip(on.pairs, off.pairs):
        same = (p.score, p.similarity, p.confidence, p.a_duration, p.b_duration, p.common_segments, p.decision)
        assert same == (q.score, q.similarity, q.confidence, q.a_duration, q.b_duration, q.common_segments, q.decision)
        assert 0 <= p.a_covered <= 1 and 0 <= p.b_covered <= 1
        assert [(s.similarity, s.matches, s.confidence) for s in p.segments] == [
            (s.similarity, s.matches, s.confidence) for s in q.segments
        ]
        if not (p.a_duration and p.b_duration):  # no duration to place it within: as matched
            assert p.segments == q.segments
            continue
        for s in p.segments:
            assert 0 <= s.q_start < s.q_end <= p.a_duration + 1e-3 and 0 <= s.r_start < s.r_end <= p.b_duration + 1e-3
            assert s.q_end - s.q_start == pytest.approx(s.r_end - s.r_start, abs=2e-3)
    # the outputs' shapes: the same keys, rows and columns
    body_on, body_off = json.loads(json.dumps(dupes_body(on, False))), json.loads(json.dumps(dupes_body(off, False)))
    assert [sorted(p) for p in body_on["pairs"]] == [sorted(p) for p in body_off["pairs"]]
    assert [[sorted(s) for s in p["segments"]] for p in body_on["pairs"]] == [
        [sorted(s) for s in p["segments"]] for p in body_off["pairs"]
    ]
    rows_on, rows_off = dupes_csv(on, False).splitlines(), dupes_csv(off, False).splitlines()
    assert rows_on[0] == rows_off[0] and len(rows_on) == len(rows_off)
    assert [r.count(",") for r in rows_on] == [r.count(",") for r in rows_off]
    assert len(duplicate_matches(lib, on)) == len(duplicate_matches(lib, off))
    lib.close()


def test_a_video_removed_before_its_segments_are_placed_keeps_them_as_matched(tmp_path, monkeypatch):
    # the pairs come from one snapshot; placing reads the clips again, and an index job may have
    # removed a video in between: its pair is reported from the snapshot, as matched
    import vidsearch.search.duplicates as dup

    src = footage(0)
    times, cut = windows(30.0, 2.0), windows(9.3, 2.0)
    lib = footage_library(
        tmp_path / "idx",
        {
            "/src.mp4": (times, src(times[:, 0]), 30.0),
            "/gone.mp4": (cut, src(5.5 + cut[:, 0]), 9.3),
            "/kept.mp4": (cut, src(15.5 + cut[:, 0]), 9.3),
        },
    )
    unplaced = {p.b: p for p in find_duplicates(lib, threshold=0.9, refine_segments=False).pairs}
    refined = dup._Snapshot.refined

    def removing(self, lib, va, vb, segments, no_evidence):
        with lib.catalog.read() as s:
            gone = lib.catalog.video_by_path(s, b"/gone.mp4")
        if gone is not None:
            lib.catalog.remove_videos([gone.id])
        return refined(self, lib, va, vb, segments, no_evidence)

    monkeypatch.setattr(dup._Snapshot, "refined", removing)
    pairs = {p.b: p for p in find_duplicates(lib, threshold=0.9).pairs}
    assert set(pairs) == {"/gone.mp4", "/kept.mp4"}
    assert pairs["/gone.mp4"].segments == unplaced["/gone.mp4"].segments
    s = pairs["/kept.mp4"].segments[0]
    assert np.abs(np.array([s.q_start, s.q_end, s.r_start, s.r_end]) - (15.5, 24.8, 0, 9.3)).max() <= 0.15
    lib.close()


@pytest.mark.slow
def test_re_encoded_whole_copies_stay_whole(tmp_path, tiny_model):
    # a 9.12 s video of 3 s scenes and a 1.52 s one (one clip), each with a re-encoded, resized
    # copy: each pair is [0, duration] on both sides, once (the 9.12 s pair's clips also match a
    # window off within a scene, a second segment that placing moved onto the first)
    import vidsearch
    from vidsearch.search.explain import explain_pair

    videos = tmp_path / "videos"
    videos.mkdir()
    for name, seconds, seed in (("long", 9.12, 6), ("short", 1.52, 8)):
        frames = (f for _, f in scene_frames(seed, seconds, 25, 160, 96, scene_seconds=3.0))
        src = write_video(videos / f"{name}.mp4", fps=25, frames=frames)
        transcode(src, videos / f"{name}-copy.mp4", size=(128, 80))
    vidsearch.index_paths(tmp_path / "idx", [videos], vidsearch.IndexOptions(model=str(tiny_model)))
    with vidsearch.open_library(tmp_path / "idx") as lib:
        pairs = {tuple(sorted(os.path.basename(v) for v in (p.a, p.b))): p for p in find_duplicates(lib).pairs}
        for name, d in (("long", 9.12), ("short", 1.52)):
            p = pairs[(f"{name}-copy.mp4", f"{name}.mp4")]
            assert [(s.q_start, s.q_end, s.r_start, s.r_end) for s in p.segments] == [(0, d, 0, d)], name
            assert p.relation == "same" and (p.a_covered, p.b_covered) == (1.0, 1.0)
            e = explain_pair(lib, None, videos / f"{name}.mp4", videos / f"{name}-copy.mp4")
            assert [(x.segment.q_start, x.segment.q_end, x.segment.r_start, x.segment.r_end) for x in e.segments] == [
                (0, d, 0, d)
            ], name
