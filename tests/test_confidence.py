"""Segment confidence: the calibrated curve, the fallback, and their use in search, dupes and VSC output."""

import csv
import io
import json
import math
import shutil

import numpy as np
import pytest

from vidsearch.search.align import Match, Segment
from vidsearch.search.confidence import ConfidenceModel, Evidence, evidence
from vidsearch.search.duplicates import find_duplicates
from vidsearch.search.query import search_video


def test_the_fit_is_the_share_of_positives_at_each_similarity():
    m = 1.2  # artanh of the midpoint
    # at z = m + 1, three positives to one negative; at m - 1 the reverse: the share is 3/4 and 1/4
    positives = np.tanh([m + 1, m + 1, m + 1, m - 1])
    negatives = np.tanh([m - 1, m - 1, m - 1, m + 1])
    model = ConfidenceModel.fit(positives, negatives)
    assert model.midpoint == pytest.approx(math.tanh(m), abs=1e-6)
    assert model.slope == pytest.approx(math.log(3), rel=1e-2)
    assert model.clip_share(np.tanh([m + 1, m, m - 1])) == pytest.approx([0.75, 0.5, 0.25], abs=2e-3)
    # classes weigh the same whatever their sizes
    assert ConfidenceModel.fit(np.repeat(positives, 5), negatives).midpoint == pytest.approx(math.tanh(m), abs=1e-6)
    with pytest.raises(ValueError, match="no more similar"):
        ConfidenceModel.fit(negatives[:3], positives[:3])


def test_the_fallback_is_fixed_by_the_threshold():
    model = ConfidenceModel.fallback(0.9, "default")
    assert model.source == "fallback (default threshold 0.9)"
    half = math.tanh((math.atanh(0.9) + math.atanh(0.99)) / 2)
    assert model.clip_share([0.9, half]) == pytest.approx([0.5, 0.98])
    # thresholds at the ends of the range still give a rising curve
    for extreme in (1.0, 0.9999, -1.0):
        assert ConfidenceModel.fallback(extreme, "given").slope > 0


def test_a_segment_needs_many_copied_clips_for_a_high_confidence():
    model = ConfidenceModel(slope=5.0, midpoint=0.9, source="test")

    def conf(query, library=None):
        return model.confidence(Evidence(tuple(query), tuple(query if library is None else library)))

    assert conf([0.9]) == pytest.approx(0.25)  # share 1/2, times the chance that it is a copy at all: 1/2
    high = model.clip_share([0.99])[0]
    assert conf([0.99]) == pytest.approx(high * high)
    assert conf([0.99] * 4) == pytest.approx(high * (1 - (1 - high) ** 4))
    # unrelated footage around the copied clips lowers the share of the segment that is copied
    assert conf([0.99] * 4 + [0.5] * 4) < conf([0.99] * 4) / 1.9
    # three query windows on one library clip are one clip of evidence, not three
    assert conf([0.99] * 3, [0.99]) == pytest.approx(high * high)
    assert conf([]) == 0.0


def test_evidence_is_each_clips_best_similarity_at_the_segment_offset():
    segment = Segment(2.0, 8.0, 12.0, 18.0, 0.9, 4)
    matches = [
        Match(2.0, 4.0, 12.0, 14.0, 0.95),
        Match(3.0, 5.0, 12.0, 14.0, 0.97),  # a half-hop query window on the same library clip
        Match(3.0, 5.0, 14.0, 16.0, 0.92),  # ... which also matches the next one less well
        Match(4.0, 6.0, 14.0, 16.0, 0.93),
        Match(6.0, 8.0, 16.0, 18.0, 0.91),
        Match(4.0, 6.0, 20.0, 22.0, 0.99),  # outside the segment
        Match(2.0, 4.0, 16.0, 18.0, 0.99),  # inside, but 4 s off the segment's offset
    ]
    found = evidence(segment, matches, tolerance=2.0)
    assert sorted(found.query) == [0.91, 0.93, 0.95, 0.97]
    assert sorted(found.library) == [0.91, 0.93, 0.97]


def test_search_gives_confidences_and_min_confidence_drops_weak_segments(planted):
    res = search_video(planted, None, "/trim.mp4", k=10)
    top = res.matches[0].segments[0]
    # four clips at similarity ~0.97 against the fallback curve at 0.90
    share = ConfidenceModel.fallback(0.9, "default").clip_share([top.similarity])[0]
    assert top.confidence == pytest.approx(share, abs=0.01) and top.confidence > 0.95
    assert len(res.matches) > 2 and min(s.confidence for m in res.matches for s in m.segments) < 0.01
    strong = search_video(planted, None, "/trim.mp4", k=10, min_confidence=0.5)
    assert [m.path for m in strong.matches] == ["/orig.mp4", "/long.mp4"]
    assert all(s.confidence >= 0.5 for m in strong.matches for s in m.segments)


def test_dupes_pairs_carry_their_confidence(planted):
    pairs = {tuple(sorted((p.a, p.b))): p for p in find_duplicates(planted, threshold=0.9).pairs}
    assert pairs[("/orig.mp4", "/trim.mp4")].confidence > 0.95
    assert all(s.confidence is not None for p in pairs.values() for s in p.segments)


def test_vsc_rows_are_scored_by_confidence(planted, vs):
    out = json.loads(vs("search", "/trim.mp4", "--index", planted.root, "--json").output)
    confidences = sorted(s["confidence"] for m in out["queries"][0]["results"] for s in m["segments"])
    r = vs("search", "/trim.mp4", "--index", planted.root, "--format", "vsc")
    scores = [float(row["score"]) for row in csv.DictReader(io.StringIO(r.output))]
    assert scores == sorted(scores, reverse=True)
    assert sorted(scores) == pytest.approx(confidences, abs=1e-4)
    r = vs("search", "/trim.mp4", "--index", planted.root, "--min-confidence", 0.5)
    assert r.exit_code == 0 and "/u1.mp4" not in r.output and "confidence 0.9" in r.output
    assert vs("search", "/trim.mp4", "--index", planted.root, "--min-confidence", 2).exit_code == 2


@pytest.mark.slow
def test_calibrate_stores_the_curve_and_an_older_calibration_falls_back(tmp_path, library_videos, vs):
    videos = tmp_path / "videos"
    shutil.copytree(library_videos, videos)
    idx = tmp_path / "idx"
    assert vs.index(videos, idx).exit_code == 0
    assert vs("calibrate", "--index", idx, "--sample", 10, "--accept").exit_code == 0
    manifest = json.loads((idx / "manifest.json").read_text())
    curve = manifest["calibration"]["confidence"]
    assert curve["slope"] > 0 and -1 < curve["midpoint"] < 1
    from vidsearch.storage.stats import open_library

    with open_library(idx) as lib:
        assert ConfidenceModel.of(lib) == ConfidenceModel(curve["slope"], curve["midpoint"], "calibrated")
    # a manifest calibrated before confidences existed: the fallback at its calibrated threshold
    del manifest["calibration"]["confidence"]
    (idx / "manifest.json").write_text(json.dumps(manifest))
    with open_library(idx) as lib:
        model = ConfidenceModel.of(lib)
    assert model.midpoint == manifest["duplicate_threshold"] and model.source.startswith("fallback (calibrated")
