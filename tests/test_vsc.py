"""VSC 2022 matching-track output of search and dupes, with the ids `export --format vsc` writes."""

import csv
import io
import json
import re
import shutil

import numpy as np
import pytest
from helpers import transcode

from vidsearch.storage.export import vsc_video_ids

HEADER = ["query_id", "ref_id", "query_start", "query_end", "ref_start", "ref_end", "score"]


def rows(text):
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == HEADER
    return table[1:]


def spans(table):
    """Rows' ids and times, the times to 0.1 s: refinement moves the planted pairs' by 0.01 s."""
    return {(r[0], r[1], *(round(float(t), 1) for t in r[2:6])) for r in table}


def test_ids_are_stems_made_unique_with_a_hash_of_the_path():
    ids = vsc_video_ids(["/cam1/IMG_0001.mp4", "/cam1/IMG_0002.mp4", "/cam2/IMG_0001.mp4"])
    assert ids["/cam1/IMG_0002.mp4"] == "IMG_0002"
    one, two = ids["/cam1/IMG_0001.mp4"], ids["/cam2/IMG_0001.mp4"]
    assert re.fullmatch(r"IMG_0001-[0-9a-f]+", one) and re.fullmatch(r"IMG_0001-[0-9a-f]+", two) and one != two
    # a path's id does not depend on which other paths share its stem
    assert vsc_video_ids(["/cam1/IMG_0001.mp4", "/cam3/IMG_0001.mkv"])["/cam1/IMG_0001.mp4"] == one


def test_search_a_query_list_writes_one_row_per_segment(planted, tmp_path, vs):
    listing = tmp_path / "queries.txt"
    listing.write_text("# queries\n/trim.mp4\n\n/s1.mp4\n")
    r = vs("search", "--queries", listing, "--index", planted.root, "--format", "vsc", "-k", 1)
    assert r.exit_code == 0, r.output
    table = rows(r.output)
    scores = [float(x[6]) for x in table]
    assert scores == sorted(scores, reverse=True)
    best = {}
    for x in table:
        best.setdefault(x[0], (x[1], *map(float, x[2:6])))
    assert best == {"trim": ("orig", 0.0, 8.0, 4.0, 12.0), "s1": ("s2", 0.0, 3.0, 0.0, 3.0)}
    # every segment of every listed result, as the JSON gives them
    out = json.loads(vs("search", "/trim.mp4", "/s1.mp4", "--index", planted.root, "--json", "-k", 1).output)
    assert spans(table) == {
        (q["query"][1:-4], m["path"][1:-4], s["query_start"], s["query_end"], s["library_start"], s["library_end"])
        for q in out["queries"]
        for m in q["results"]
        for s in m["segments"]
    }
    assert vs("search", "/trim.mp4", "/s1.mp4", "--index", planted.root, "--format", "vsc", "-k", 1).output == r.output


def test_dupes_writes_every_segment_of_every_pair(planted, vs):
    r = vs("dupes", "--index", planted.root, "--threshold", 0.9, "--format", "vsc")
    assert r.exit_code == 0, r.output
    assert spans(rows(r.output)) == {
        ("orig", "trim", 4.0, 12.0, 0.0, 8.0),
        ("orig", "long", 0.0, 10.0, 10.0, 20.0),
        ("trim", "long", 0.0, 6.0, 14.0, 20.0),
        ("x", "y", 0.0, 6.0, 4.0, 10.0),
        ("x", "y", 14.0, 20.0, 16.0, 22.0),
        ("s1", "s2", 0.0, 3.0, 0.0, 3.0),
    }


def test_usage_errors(planted, vs):
    assert vs("search", "--index", planted.root, "--format", "vsc").exit_code == 2
    r = vs("dupes", "--index", planted.root, "--format", "vsc", "--groups")
    assert r.exit_code == 2 and "no --groups form" in r.output


@pytest.mark.slow
def test_query_set_with_one_encoder_and_the_export_ids(tmp_path, library_videos, vs, monkeypatch):
    videos = tmp_path / "videos"
    shutil.copytree(library_videos, videos)
    (videos / "cam2").mkdir()
    transcode(videos / "a.mp4", videos / "cam2" / "a.mp4", size=(120, 72))  # same stem, other folder
    idx = tmp_path / "idx"
    assert vs.index(videos, idx).exit_code == 0
    queries = tmp_path / "queries"
    queries.mkdir()
    transcode(videos / "a.mp4", queries / "qa.mp4", start_s=2.0, end_s=6.0, size=(120, 72))
    transcode(videos / "b.mp4", queries / "qb.mp4", start_s=1.0, end_s=5.0, size=(100, 100))
    (tmp_path / "queries.txt").write_text("queries/qa.mp4\nqueries/qb.mp4\n")

    import vidsearch.model.encoder as encoder_module

    loads = []
    real = encoder_module.load_encoder
    monkeypatch.setattr(encoder_module, "load_encoder", lambda *a, **kw: loads.append(a) or real(*a, **kw))
    r = vs("search", "--queries", tmp_path / "queries.txt", "--index", idx, "--format", "vsc", "-k", 2)
    assert r.exit_code == 0, r.output
    assert len(loads) == 1
    table = rows(r.output)

    assert vs("export", tmp_path / "refs.npz", "--index", idx).exit_code == 0
    exported = np.load(tmp_path / "refs.npz", allow_pickle=False)
    ids = set(exported["video_ids"].tolist())
    assert len(ids) == 4 and "b" in ids and sum(i.startswith("a-") for i in ids) == 2
    assert {x[1] for x in table} <= ids
    # rows most confident first; the tiny untrained model ranks qb's chance match in a above b
    best = {}
    for q, ref, *_, score in table:
        best.setdefault(q, (float(score), ref))
    assert best["qa"][1].startswith("a-")
    assert "b" in {ref for q, ref, *_ in table if q == "qb"}


def box(q0, q1, r0, r1, score=1.0, q="Q1", r="R1"):
    from vidsearch.search.vsc import VscMatch

    return VscMatch(q, r, q0, q1, r0, r1, score)


def test_segment_ap_on_hand_made_cases():
    from vidsearch.search.vsc import segment_ap

    gt = [box(0, 10, 0, 10)]
    assert segment_ap(gt, [box(0, 10, 0, 10)]) == 1.0
    # half of each axis found: recall sqrt(0.5 * 0.5), precision 1
    assert segment_ap(gt, [box(0, 5, 0, 5)]) == 0.5
    # a prediction twice as long as the truth on the query axis: precision sqrt(1/2 * 1)
    assert segment_ap(gt, [box(0, 20, 0, 10)]) == pytest.approx(np.sqrt(0.5))
    # a wrong pair ranked first, then one of two true pairs exactly: P = R = 1/2 at the second step
    two = [box(0, 10, 0, 10), box(0, 10, 0, 10, q="Q2", r="R2")]
    assert segment_ap(two, [box(0, 10, 0, 10, 0.9, r="R9"), box(0, 10, 0, 10, 0.8)]) == 0.25
    # the right pair first: precision 1 up to recall 1/2, then 1/2 for nothing more
    assert segment_ap(two, [box(0, 10, 0, 10, 0.9), box(0, 10, 0, 10, 0.8, r="R9")]) == 0.5
    # equal scores are one step: a false and a true prediction together give P = 1/2 at R = 1
    assert segment_ap(gt, [box(0, 10, 0, 10, 0.5), box(0, 10, 0, 10, 0.5, r="R9")]) == 0.5
    # a prediction overlapping no true box of its pair earns nothing on either axis, even where
    # its intervals overlap the true intervals one axis at a time
    corner = [box(0, 10, 0, 10), box(20, 30, 20, 30)]
    assert segment_ap(corner, [box(0, 10, 15, 25)]) == 0.0
    # a second prediction inside the second box: it is found (5 s on each axis) while the first
    # prediction's length still counts against precision (q: 10 + 5 covered; r: [15, 25])
    got = segment_ap(corner, [box(0, 10, 15, 25, 0.9), box(20, 25, 20, 25, 0.8)])
    hit_q, hit_r, cover_q, cover_r = 5.0, 5.0, 15.0, 10.0
    assert got == pytest.approx(np.sqrt(hit_q / cover_q * hit_r / cover_r) * np.sqrt(hit_q / 20 * hit_r / 20))
    with pytest.raises(ValueError, match="finite score"):
        segment_ap(gt, [box(0, 10, 0, 10, float("nan"))])


def test_micro_ap_and_descriptor_pairs_on_hand_made_cases():
    from vidsearch.search.vsc import descriptor_pairs, micro_ap

    truth = {("q1", "r1"), ("q2", "r2")}
    assert micro_ap(truth, [("q1", "r1", 0.9), ("q3", "r3", 0.8), ("q2", "r2", 0.7)]) == pytest.approx((1 + 2 / 3) / 2)
    assert micro_ap(truth, [("q1", "r1", 0.9)]) == 0.5  # a true pair never predicted is a miss
    assert micro_ap(truth, [("q2", "r2", 0.1), ("q1", "r1", 0.2), ("q1", "r2", 0.15)]) == pytest.approx((1 + 2 / 3) / 2)
    # clips: q1 has two, q2 one; refs r1 (two clips) and r2 (one)
    q_ids, r_ids = np.array(["q1", "q1", "q2"]), np.array(["r1", "r1", "r2"])
    q = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    r = np.array([[0.9, 0.1, 0], [0.2, 0.3, 0], [0.0, 0.5, 0.6]], dtype=np.float32)
    pairs = descriptor_pairs(q_ids, q, r_ids, r)
    # each video pair scored by its best clip pair; q2 x r1 scores 0 (clip pairs of zero similarity still count)
    assert [(a, b, round(s, 6)) for a, b, s in pairs] == [
        ("q1", "r1", 0.9),
        ("q2", "r2", 0.6),
        ("q1", "r2", 0.5),
        ("q2", "r1", 0.0),
    ]
