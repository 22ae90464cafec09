"""Decisions that stick: verdicts on pairs, keyed by content, hide pairs from dupes."""

import json
import shutil
import sqlite3
from contextlib import closing

import pytest
from helpers import transcode

from vidsearch.errors import InvalidArgumentError, VideoNotFoundError
from vidsearch.search.duplicates import find_duplicates
from vidsearch.storage.catalog import ClipRecord, VideoRecord
from vidsearch.storage.decisions import decide, import_decisions, list_decisions, undo_decision
from vidsearch.storage.library import Library


def names(report):
    return {tuple(sorted((p.a, p.b))): p for p in report.pairs}


def test_a_verdict_hides_the_pair_from_dupes_in_either_order(planted):
    assert ("/orig.mp4", "/trim.mp4") in names(find_duplicates(planted, threshold=0.9))
    d = decide(planted, "/trim.mp4", "/orig.mp4", "not_a_match")
    assert (d.verdict, d.indexed, set(d.paths)) == ("not_a_match", True, {"/orig.mp4", "/trim.mp4"})
    report = find_duplicates(planted, threshold=0.9)
    assert set(names(report)) == {
        ("/long.mp4", "/orig.mp4"),
        ("/long.mp4", "/trim.mp4"),
        ("/x.mp4", "/y.mp4"),
        ("/s1.mp4", "/s2.mp4"),
    }
    assert report.hidden == 1
    shown = find_duplicates(planted, threshold=0.9, include_decided=True)
    assert shown.hidden == 0 and names(shown)[("/orig.mp4", "/trim.mp4")].decision == "not_a_match"
    # the same pair named the other way round replaces the verdict; "same" hides nothing
    decide(planted, "/orig.mp4", "/trim.mp4", "same")
    assert [(x.verdict, x.id) for x in list_decisions(planted)] == [("same", 2)]
    report = find_duplicates(planted, threshold=0.9)
    assert report.hidden == 0 and names(report)[("/orig.mp4", "/trim.mp4")].decision == "same"
    # keep_both hides it, and takes the pair out of the groups too
    decide(planted, "/orig.mp4", "/trim.mp4", "keep_both")
    decide(planted, "/long.mp4", "/trim.mp4", "keep_both")
    report = find_duplicates(planted, threshold=0.9)
    assert report.hidden == 2
    assert [[p for p, _ in g.videos] for g in report.groups()][0] == ["/long.mp4", "/orig.mp4"]


def test_a_verdict_follows_the_content_through_moves_and_reindexing(planted):
    decide(planted, "/orig.mp4", "/trim.mp4", "not_a_match")
    with planted.catalog.read() as s:
        trim = planted.catalog.video_by_path(s, b"/trim.mp4")
    planted.catalog.move_video(trim.id, b"/moved/trim-renamed.mp4", 1, 2)
    # the original re-indexed (a new row, new clips) under a new path: same content, same fingerprint
    with planted.catalog.read() as s:
        orig = planted.catalog.video_by_path(s, b"/orig.mp4")
        times, vectors = planted.catalog.video_clips(s, orig.id, 32)
    planted.catalog.store_video(
        VideoRecord(b"/new/orig.mp4", 1, 3, "/orig.mp4", duration_s=20.0),
        [ClipRecord(a, b, v) for (a, b), v in zip(times, vectors)],
        replace_id=orig.id,
    )
    planted.rebuild_vectors()
    report = find_duplicates(planted, threshold=0.9)
    assert report.hidden == 1
    assert ("/moved/trim-renamed.mp4", "/new/orig.mp4") not in names(report)
    [d] = list_decisions(planted)
    assert set(d.paths) == {"/moved/trim-renamed.mp4", "/new/orig.mp4"} and d.indexed
    # a video taken out of the index keeps its verdict, shown at its last known path
    planted.catalog.remove_videos([_id(planted, b"/new/orig.mp4")])
    [d] = list_decisions(planted)
    assert not d.indexed and "/orig.mp4" in d.paths


def _id(lib, path):
    with lib.catalog.read() as s:
        return lib.catalog.video_by_path(s, path).id


def test_undo_and_bad_input(planted):
    decide(planted, "/x.mp4", "/y.mp4", "keep_both")
    decide(planted, "/u1.mp4", "/u2.mp4", "not_a_match")
    assert find_duplicates(planted, threshold=0.9).hidden == 1  # u1/u2 is no pair at this threshold
    undone = undo_decision(planted, 1)
    assert undone.verdict == "keep_both" and set(undone.paths) == {"/x.mp4", "/y.mp4"}
    assert [d.id for d in list_decisions(planted)] == [2]
    assert find_duplicates(planted, threshold=0.9).hidden == 0
    with pytest.raises(InvalidArgumentError, match="no decision number 1"):
        undo_decision(planted, 1)
    with pytest.raises(VideoNotFoundError, match="/nope.mp4: no indexed video"):
        decide(planted, "/x.mp4", "/nope.mp4", "same")
    with pytest.raises(InvalidArgumentError, match="two different videos"):
        decide(planted, "/x.mp4", "/x.mp4", "same")
    with pytest.raises(InvalidArgumentError, match="one of not_a_match, same, keep_both"):
        decide(planted, "/x.mp4", "/y.mp4", "maybe")


def test_a_catalog_from_before_verdicts_opens_and_gets_the_table_when_first_written(planted):
    root = planted.root
    planted.close()
    with closing(sqlite3.connect(root / "catalog.sqlite")) as con:
        con.execute("DROP TABLE decisions")
        con.commit()
    with Library.open(root) as lib:  # a reader: no writer lock, and no table yet
        assert list_decisions(lib) == []
        assert find_duplicates(lib, threshold=0.9).hidden == 0
        with Library.open(root, writable=True):  # an index job holds the lock: a verdict is still taken
            decide(lib, "/x.mp4", "/y.mp4", "not_a_match")
        assert find_duplicates(lib, threshold=0.9).hidden == 1
    with closing(sqlite3.connect(root / "catalog.sqlite")) as con:
        assert con.execute("select verdict, path_a, path_b from decisions").fetchall() == [
            ("not_a_match", b"/x.mp4", b"/y.mp4")
        ]


def test_import_rejects_what_is_not_a_decisions_file(planted, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"decisions": [{"verdict": "same"}]}')
    with pytest.raises(InvalidArgumentError, match="bad.json: not a `vidsearch decisions --json` file"):
        import_decisions(planted, bad)
    bad.write_text(json.dumps({"decisions": [dict(_entry(), verdict="dunno")]}))
    with pytest.raises(InvalidArgumentError, match="unknown verdict 'dunno'"):
        import_decisions(planted, bad)
    assert list_decisions(planted) == []


def _entry():
    return {"a": "/a", "b": "/b", "fingerprint_a": "1", "fingerprint_b": "2", "decided_at": "2024-01-01T00:00:00"}


@pytest.mark.slow
def test_cli_decide_survives_a_rename_and_a_new_model(tmp_path, library_videos, tiny_model, tiny_finetuned, vs):
    videos = tmp_path / "videos"
    shutil.copytree(library_videos, videos)
    transcode(videos / "a.mp4", videos / "a-copy.mp4", size=(120, 72))
    idx = tmp_path / "idx"
    assert vs.index(videos, idx).exit_code == 0

    def dupes(*extra, index=idx):
        r = vs("dupes", "--index", index, "--threshold", 0.9, "--format", "json", *extra)
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    before = dupes()
    assert [sorted((p["a"], p["b"])) for p in before["pairs"]] == [[str(videos / "a-copy.mp4"), str(videos / "a.mp4")]]
    assert before["hidden_by_decisions"] == 0 and before["pairs"][0]["decision"] is None

    r = vs("decide", videos / "a.mp4", videos / "a-copy.mp4", "not_a_match", "--index", idx)
    assert r.exit_code == 0 and "not_a_match" in r.output
    after = dupes()
    assert after["pairs"] == [] and after["hidden_by_decisions"] == 1
    assert "1 pair(s) you judged" in vs("dupes", "--index", idx, "--threshold", 0.9).output
    assert dupes("--include-decided")["pairs"][0]["decision"] == "not_a_match"

    # the copy renamed: the index job keeps its embeddings, and the verdict follows it
    (videos / "a-copy.mp4").rename(videos / "renamed.mp4")
    assert vs.index(videos, idx, "--prune").exit_code == 0
    assert dupes()["hidden_by_decisions"] == 1
    listed = json.loads(vs("decisions", "--index", idx, "--json").output)
    [entry] = listed["decisions"]
    assert {entry["a"], entry["b"]} == {str(videos / "a.mp4"), str(videos / "renamed.mp4")}
    assert entry["verdict"] == "not_a_match" and entry["indexed"] is True

    # a new index with another model takes the verdicts over
    verdicts = tmp_path / "verdicts.json"
    verdicts.write_text(vs("decisions", "--index", idx, "--json").output)
    idx2 = tmp_path / "idx2"
    assert vs("index", videos, "--index", idx2, "--model", tiny_finetuned, "--workers", 2).exit_code == 0
    assert dupes(index=idx2)["hidden_by_decisions"] == 0
    r = vs("decisions", "--index", idx2, "--import", verdicts)
    assert r.exit_code == 0 and "imported 1 verdict(s)" in r.stderr
    assert dupes(index=idx2)["hidden_by_decisions"] == 1

    # undo brings the pair back
    r = vs("decisions", "--index", idx, "--undo", 1)
    assert r.exit_code == 0 and "removed" in r.output
    assert dupes()["hidden_by_decisions"] == 0 and len(dupes()["pairs"]) == 1
    assert "no decisions yet" in vs("decisions", "--index", idx).output
    assert vs("decisions", "--index", idx, "--undo", 1).exit_code == 2
    assert vs("decide", videos / "a.mp4", tmp_path / "nope.mp4", "same", "--index", idx).exit_code == 8
