"""Common footage and blank clips: planted embeddings with known answers, then synthetic videos
through the CLI (12 unrelated episodes sharing an intro and a black ending, one real copy)."""

import csv
import io
import json
import logging
import os

import numpy as np
import pytest
from helpers import SERIES_THRESHOLD
from planting import DIM, Planter, store

from vidsearch.search.duplicates import find_common, find_duplicates
from vidsearch.search.query import search_video
from vidsearch.settings import EncoderSettings, Preprocessing
from vidsearch.storage.library import Library

EPISODES = [f"/ep{i}.mp4" for i in range(8)]
FILMS = [f"/film{j}.mp4" for j in range(7)]
INTRO_VIDEOS = {*EPISODES, "/ep0-copy.mp4", "/sting.mp4"}


def names(report):
    return {tuple(sorted((p.a, p.b))) for p in report.pairs}


@pytest.fixture
def series(tmp_path):
    """Planted: 8 unrelated episodes that open with one 4 s intro and end on the same black clip;
    a copy of episode 0; the intro alone (a sting file); 7 copies of one film."""
    lib = Library.create(tmp_path / "idx", EncoderSettings("m", "r", DIM, "mean", 16, 224, Preprocessing()))
    p = Planter(3)
    intro, black = p.random(2), p.random(1)
    episodes = {}
    for name in EPISODES:
        episodes[name] = np.concatenate([p.noisy(intro), p.random(5), black])
        store(lib, name, episodes[name], pixel_std=[40.0] * 7 + [0.0])
    store(lib, "/ep0-copy.mp4", p.noisy(episodes["/ep0.mp4"], 0.99), pixel_std=[40.0] * 7 + [0.0])
    store(lib, "/sting.mp4", p.noisy(intro), pixel_std=[40.0] * 2)
    film = p.random(4)
    for name in FILMS:
        store(lib, name, p.noisy(film), pixel_std=[40.0] * 4)
    yield lib
    lib.close()


def test_footage_in_many_unrelated_videos_is_no_evidence(series):
    report = find_duplicates(series, threshold=0.9)
    films = {(a, b) for a in FILMS for b in FILMS if a < b}
    # episodes share only the intro (common) and the black clip (blank); the sting is only the intro
    assert names(report) == films | {("/ep0-copy.mp4", "/ep0.mp4")}
    assert (report.common_min_videos, report.common_clips) == (5, 2 * len(INTRO_VIDEOS))
    copy = next(p for p in report.pairs if "/ep0-copy.mp4" in (p.a, p.b))
    assert [(s.q_start, s.q_end, s.r_start, s.r_end) for s in copy.segments] == [(4.0, 14.0, 4.0, 14.0)]
    assert [(s.q_start, s.q_end, s.r_start, s.r_end) for s in copy.common_segments] == [(0.0, 4.0, 0.0, 4.0)]
    # coverage is of the footage that is not blank: intro and episode, all of both
    assert copy.relation == "same" and copy.a_covered == copy.b_covered == pytest.approx(1.0)
    # seven copies of one film are one family: its footage is not common, however often copied
    assert all(p.common_segments == () and p.relation == "same" for p in report.pairs if p.a in FILMS)


def test_keep_common_counts_it_again_but_never_a_blank_clip(series):
    report = find_duplicates(series, threshold=0.9, keep_common=True)
    intro_pairs = {(a, b) for a in INTRO_VIDEOS for b in INTRO_VIDEOS if a < b}
    assert names(report) == {(a, b) for a in FILMS for b in FILMS if a < b} | intro_pairs
    assert (report.common_min_videos, report.common_clips) == (None, 0)
    for p in report.pairs:
        assert all(s.q_end <= 14.0 and s.r_end <= 14.0 for s in p.segments), "a black clip counted"


def test_common_means_more_than_n_unrelated_videos(series):
    # the intro's 10 videos hold 8 unrelated ones (the copy goes with episode 0, and the sting
    # with every episode, as a copy of their opening)
    assert find_duplicates(series, threshold=0.9, common_min_videos=7).common_clips == 2 * len(INTRO_VIDEOS)
    report = find_duplicates(series, threshold=0.9, common_min_videos=8)
    assert report.common_clips == 0 and ("/ep1.mp4", "/ep2.mp4") in names(report)


def test_common_lists_the_intro_where_it_appears(series):
    report = find_common(series, threshold=0.9)
    assert report.stored and report.min_videos == 5
    [intro] = report.segments
    assert intro.videos == 10 and intro.seconds == 4.0
    assert sorted((o.path, o.start, o.end) for o in intro.occurrences) == [(v, 0.0, 4.0) for v in sorted(INTRO_VIDEOS)]


def test_search_ranks_ordinary_matches_first_and_marks_common_ones(series):
    find_common(series, threshold=0.9)  # stores which clips are common
    res = search_video(series, None, "/ep0-copy.mp4", k=30, neighbors=15)
    assert res.matches[0].path == "/ep0.mp4" and not res.matches[0].common
    assert res.matches[0].common_segments[0].r_end == 4.0 and res.matches[0].appears_in == 10
    flags = [m.common for m in res.matches]
    assert flags == sorted(flags), "a common match ranked above an ordinary one"
    common = {m.path for m in res.matches if m.common}
    assert common == INTRO_VIDEOS - {"/ep0.mp4", "/ep0-copy.mp4"}
    assert all(m.appears_in == 10 for m in res.matches if m.common)
    kept = search_video(series, None, "/ep0-copy.mp4", k=30, neighbors=15, keep_common=True)
    assert not any(m.common or m.common_segments or m.appears_in for m in kept.matches)
    assert [m.score for m in kept.matches] == sorted((m.score for m in kept.matches), reverse=True)


def test_a_reader_stores_the_marks_only_when_no_job_writes(series, caplog):
    with Library.open(series.root) as reader, caplog.at_level(logging.WARNING):
        assert not find_common(reader, threshold=0.9).stored  # ``series`` holds the writer lock
    assert "did not store them" in caplog.text and "is being written by" in caplog.text
    series.close()
    with Library.open(series.root) as reader:
        assert find_common(reader, threshold=0.9).stored
        with reader.catalog.read() as s:
            assert int((reader.catalog.clip_table(s).common_videos == 10).sum()) == 2 * len(INTRO_VIDEOS)


def test_calibration_takes_no_negatives_from_blank_or_common_clips(series):
    from vidsearch.search.calibrate import _negatives

    with series.catalog.read() as s:
        ep1 = series.catalog.video_by_path(s, b"/ep1.mp4").id
        clips = [cid for cid, _, _ in series.catalog.clips_of(s, ep1)]
    anchors = {ep1: [clips[0], clips[1], clips[4], clips[7]]}  # the intro, its own footage, the black clip
    perfect = np.ones(1)  # positives at 1.0: no pair is a suspect, so each anchor's best video is its negative
    before = _negatives(series, anchors, perfect, 0.001).values
    assert len(before) == 3 and before.max() > 0.9  # the intro's copies in other episodes
    find_common(series, threshold=0.9)
    after = _negatives(series, anchors, perfect, 0.001).values
    assert len(after) == 3 and after.max() < 0.7


# ---- synthetic videos through the CLI -----------------------------------------------------------
# (the `series_library` fixture, in conftest.py, is shared with the web app's tests)


def all_videos(videos):
    return sorted(str(videos / n) for n in os.listdir(videos))


def test_black_clips_are_flagged_blank_at_index_time(series_library):
    idx, _, _ = series_library
    with Library.open(idx) as lib, lib.catalog.read() as s:
        t = lib.catalog.clip_table(s)
    black = t.start >= 8.0  # the windows over the last 3 s
    assert black.sum() == 13 * 2 and (t.pixel_std[black] < 1).all() and (t.pixel_std[~black] > 30).all()


def test_dupes_reports_exactly_the_real_copy(series_library, vs):
    idx, videos, _ = series_library
    r = vs("dupes", "--index", idx, "--threshold", SERIES_THRESHOLD, "--min-seconds", 3, "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [sorted((p["a"], p["b"])) for p in out["pairs"]] == [
        [str(videos / "ep03-copy.mp4"), str(videos / "ep03.mp4")]
    ]
    [pair] = out["pairs"]
    assert (out["common_min_videos"], out["common_clips"]) == (5, 13 * 2)
    assert [(s["a_start"], s["b_start"]) for s in pair["segments"]] == [(4.0, 4.0)]  # its own footage
    assert [(s["a_start"], s["b_start"]) for s in pair["common_segments"]] == [(0.0, 0.0)]  # the intro
    assert pair["relation"] == "same"
    text = vs("dupes", "--index", idx, "--threshold", SERIES_THRESHOLD, "--min-seconds", 3).output
    assert text.startswith("1 duplicate pair(s)") and "common footage" in text


def test_common_reports_the_intro_in_every_video(series_library, vs):
    idx, videos, _ = series_library
    r = vs("common", "--index", idx, "--threshold", SERIES_THRESHOLD, "--format", "json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["stored"] and out["common_min_videos"] == 5
    [intro] = out["segments"]
    assert intro["videos"] == 13 and sorted(o["path"] for o in intro["occurrences"]) == all_videos(videos)
    assert all(o["start"] == 0.0 and abs(o["end"] - 4.0) <= 0.01 for o in intro["occurrences"])
    as_csv = vs("common", "--index", idx, "--threshold", SERIES_THRESHOLD, "--format", "csv").output
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    assert len(rows) == 13 and {row["segment"] for row in rows} == {"1"}
    text = vs("common", "--index", idx, "--threshold", SERIES_THRESHOLD).output
    assert text.splitlines()[1].startswith("1. 4.0s in 13 videos")  # a clip ends where its window ends


def test_search_marks_the_intro_results_common_unless_kept(series_library, vs):
    idx, videos, query = series_library
    assert vs("common", "--index", idx, "--threshold", SERIES_THRESHOLD).exit_code == 0  # stores the marks
    results = json.loads(vs("search", query, "--index", idx, "-k", 20, "--json").output)["queries"][0]["results"]
    assert sorted(x["path"] for x in results) == all_videos(videos)
    assert all(x["common"] and x["appears_in"] == 13 for x in results)
    assert all(x["common_segments"][0]["library_start"] == 0.0 for x in results)
    assert "(common footage: appears in 13 videos)" in vs("search", query, "--index", idx).output
    kept = json.loads(vs("search", query, "--index", idx, "-k", 20, "--json", "--keep-common").output)
    kept_results = kept["queries"][0]["results"]
    assert sorted(x["path"] for x in kept_results) == all_videos(videos)
    assert not any(x["common"] or x["common_segments"] or x["appears_in"] for x in kept_results)
    assert all(x["segments"][0]["library_start"] == 0.0 for x in kept_results)


def test_keep_common_brings_back_every_pair_that_shares_the_intro(series_library, vs):
    idx, videos, _ = series_library
    args = ("dupes", "--index", idx, "--threshold", SERIES_THRESHOLD, "--min-seconds", 3, "--format", "json")
    pairs = json.loads(vs(*args, "--keep-common").output)["pairs"]
    assert len(pairs) == 13 * 12 // 2
    copy = [str(videos / "ep03-copy.mp4"), str(videos / "ep03.mp4")]
    for p in pairs:
        starts = [(s["a_start"], s["b_start"]) for s in p["segments"]]
        assert starts == [(0.0, 0.0)], p  # the intro (with the copy's own footage after it); never the black end
        assert (sorted((p["a"], p["b"])) == copy) == (p["segments"][0]["a_end"] > 7)


def test_ordinary_and_common_segments_carry_their_confidence(series):
    report = find_duplicates(series, threshold=0.9)  # also stores which clips are common
    copy = next(p for p in report.pairs if "/ep0-copy.mp4" in (p.a, p.b))
    assert all(0 < s.confidence <= 1 for s in copy.segments + copy.common_segments)
    assert copy.confidence == max(s.confidence for s in copy.segments)
    res = search_video(series, None, "/ep0-copy.mp4", k=30, neighbors=15)
    found = {(m.path, s) for m in res.matches for s in m.segments + m.common_segments}
    assert all(s.confidence is not None for _, s in found)
    cut = float(np.median([s.confidence for _, s in found]))
    strict = search_video(series, None, "/ep0-copy.mp4", k=30, neighbors=15, min_confidence=cut)
    assert {(m.path, s) for m in strict.matches for s in m.segments + m.common_segments} == {
        (p, s) for p, s in found if s.confidence >= cut
    }
    flags = [m.common for m in strict.matches]
    assert flags == sorted(flags), "a common match ranked above an ordinary one"
