"""The CLI end to end: index a folder, search it with a trimmed re-encoded copy, and the error paths."""

import json
import os
import shutil

import pytest
from helpers import transcode

from vidsearch.cli import cli


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, library_videos, tiny_model, vs):
    root = tmp_path_factory.mktemp("cli")
    videos = root / "videos"
    shutil.copytree(library_videos, videos)
    idx = root / "idx"
    r = vs("index", videos, "--index", idx, "--model", tiny_model, "--workers", 2)
    assert r.exit_code == 0, r.output
    # the query: a.mp4 from 2.6 s to 6.6 s (not a multiple of the hop), resized and re-encoded
    query = transcode(videos / "a.mp4", root / "query.mp4", start_s=2.6, end_s=6.6, size=(120, 72))
    return idx, videos, query


def test_every_command_has_help(vs):
    for name, command in cli.commands.items():
        assert command.help, f"{name} has no help text"
        r = vs(name, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


def test_search_finds_the_trimmed_copy_and_its_time_range(indexed, vs):
    idx, videos, query = indexed
    r = vs("search", query, "--index", idx, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["schema_version"] == 1
    results = out["queries"][0]["results"]
    assert results[0]["path"] == str(videos / "a.mp4")
    assert results[0]["score"] > results[1]["score"]
    seg = results[0]["segments"][0]
    hop = 2.0
    assert abs(seg["library_start"] - 2.6) <= hop and abs(seg["library_end"] - 6.6) <= hop
    assert seg["library_start"] - seg["query_start"] == pytest.approx(2.6, abs=hop)
    # the readable table shows the same
    table = vs("search", query, "--index", idx).output
    assert table.splitlines()[1].split()[-1] == str(videos / "a.mp4")
    assert "query [" in table and "-> library [" in table


def test_time_range_raw_clips_and_self(indexed, vs):
    idx, videos, query = indexed
    out = json.loads(
        vs("search", videos / "b.mp4", "--index", idx, "--json", "--start", 1, "--end", 5, "--clips").output
    )
    q = out["queries"][0]
    assert q["query_start"] >= 1.0 - 1e-6 and q["query_end"] <= 5.0 + 1e-6
    assert all(res["path"] != str(videos / "b.mp4") for res in q["results"])  # itself left out
    assert q["clips"] and all(c["path"] != str(videos / "b.mp4") for c in q["clips"])
    out = json.loads(vs("search", videos / "b.mp4", "--index", idx, "--json", "--include-self").output)
    top = out["queries"][0]["results"][0]
    seg = top["segments"][0]
    assert top["path"] == str(videos / "b.mp4")
    assert seg["library_start"] - seg["query_start"] == pytest.approx(0.0, abs=1.0)
    assert seg["query_end"] - seg["query_start"] >= 5.5  # the whole 6 s video matches itself


def test_query_range_past_the_end_and_non_finite_times_are_usage_errors(indexed, vs):
    idx, videos, query = indexed
    a = videos / "a.mp4"  # 8 s
    r = vs("search", a, "--index", idx, "--start", 100)
    assert (r.exit_code, r.output) == (2, f"Error: {a}: no frames from 100s on; the video lasts 8.0s\n")
    r = vs("search", a, "--index", idx, "--start", 100, "--end", 200)
    assert (r.exit_code, r.output) == (2, f"Error: {a}: no frames between 100s and 200s; the video lasts 8.0s\n")
    for option, value in [("--start", "nan"), ("--start", "inf"), ("--end", "nan"), ("--start", "-1")]:
        r = vs("search", a, "--index", idx, option, value)
        assert r.exit_code == 2 and f"Invalid value for '{option}'" in r.output, (option, value, r.output)
    r = vs("dupes", "--index", idx, "--threshold", "nan")
    assert r.exit_code == 2 and "'nan' is not a finite number" in r.output


def test_neighbors_past_the_index_size_are_capped(indexed, vs):
    idx, _, query = indexed
    # 10**12 neighbours were a MemoryError (3 query clips x 10**12 scores); the index holds 10 clips
    want = vs("search", query, "--index", idx, "--json", "--clips", "--neighbors", 10)
    r = vs("search", query, "--index", idx, "--json", "--clips", "--neighbors", 10**12)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == json.loads(want.output)
    assert len(json.loads(r.output)["queries"][0]["clips"]) == 3 * 10


def test_index_refuses_a_path_that_does_not_exist(indexed, tmp_path, vs):
    idx, videos, _ = indexed
    missing = tmp_path / "no" / "such" / "dir"
    r = vs("-q", "index", missing, "--index", tmp_path / "new", "--model", vs.model)
    assert (r.exit_code, r.output) == (2, f"Error: no such file or folder: {missing}; nothing was indexed\n")
    assert not (tmp_path / "new").exists()
    # one missing among paths that exist: refused before anything is done
    (tmp_path / "v.mp4").write_bytes((videos / "a.mp4").read_bytes())
    os.symlink(tmp_path / "gone.mp4", tmp_path / "dangling.mp4")
    r = vs.index(tmp_path / "v.mp4", tmp_path / "new", missing, tmp_path / "dangling.mp4")
    assert r.exit_code == 2
    assert r.output == (
        f"Error: no such file or folder: {missing}, {tmp_path / 'dangling.mp4'} "
        f"({tmp_path / 'dangling.mp4'}: a broken symlink); nothing was indexed\n"
    )
    assert not (tmp_path / "new").exists()


def test_query_by_indexed_path_whose_file_is_gone(indexed, tmp_path, vs):
    idx, videos, _ = indexed
    gone = videos / "c.mkv"
    backup = tmp_path / "c.mkv"
    shutil.move(gone, backup)
    try:
        out = json.loads(vs("search", gone, "--index", idx, "--json", "--include-self").output)
        assert out["queries"][0]["results"][0]["path"] == str(gone)
    finally:
        shutil.move(backup, gone)


def test_stats(indexed, vs):
    idx, _, _ = indexed
    st = json.loads(vs("stats", "--index", idx, "--json").output)
    assert (st["videos_indexed"], st["videos_failed"], st["clips"], st["dim"], st["pooling"]) == (3, 0, 10, 64, "mean")
    assert st["total_duration_s"] == pytest.approx(19.0, abs=0.2)
    assert st["index_type"] == "IDMap2,Flat" and st["size_bytes"] > 0
    assert "videos indexed: 3" in vs("stats", "--index", idx).output


def test_bad_query_file_is_one_line_and_nonzero(indexed, tmp_path, vs):
    idx, _, _ = indexed
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    r = vs("search", bad, "--index", idx)
    assert r.exit_code == 6
    assert r.output.strip().count("\n") == 0 and "broken.mp4" in r.output and "not a decodable video" in r.output
    r = vs("search", tmp_path / "missing.mp4", "--index", idx)
    assert r.exit_code == 8 and "missing.mp4" in r.output


def test_error_exit_codes(indexed, tmp_path, tiny_model, vs):
    idx, videos, _ = indexed
    r = vs("search", videos / "a.mp4", "--index", tmp_path / "no-index")
    assert r.exit_code == 4 and "no vidsearch index" in r.output
    r = vs("index", videos, "--index", idx, "--model", tiny_model, "--clip-seconds", 3)
    assert r.exit_code == 4 and "clip_seconds: index has 2.0, asked for 3.0" in r.output
    r = vs("index", videos, "--index", tmp_path / "new", "--model", "nobody/not-a-model", env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code == 3 and "nobody/not-a-model" in r.output and "--model" in r.output
    assert r.output.strip().count("\n") == 0
    assert not (tmp_path / "new" / "manifest.json").exists()
    r = vs("remove", tmp_path / "nothing.mp4", "--index", idx)
    assert r.exit_code == 8


def test_calibrate_then_dupes_groups_copies(tmp_path, library_videos, tiny_model, vs):
    videos = tmp_path / "videos"
    shutil.copytree(library_videos, videos)
    transcode(videos / "a.mp4", videos / "a-reencoded.mp4")
    transcode(videos / "b.mp4", videos / "b-small.mp4", size=(96, 96), codec="mpeg4")
    idx = tmp_path / "idx"
    assert vs("index", videos, "--index", idx, "--model", tiny_model, "--workers", 2).exit_code == 0
    # before calibration, dupes says it uses the default threshold
    r = vs("dupes", "--index", idx, "--format", "json")
    assert "default threshold" in r.stderr
    r = vs("calibrate", "--index", idx, "--sample", 10, "--json", "--accept")
    assert r.exit_code == 0, r.output
    cal = json.loads(r.stdout)
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["duplicate_threshold"] == pytest.approx(cal["threshold"], abs=1e-5)
    assert manifest["calibration"]["negatives"] == cal["negatives"] > 0
    assert cal["positives"] > 0 and 0 <= cal["recall"] <= 1 and cal["fpr"] <= cal["target_fpr"]
    out = json.loads(vs("dupes", "--index", idx, "--format", "json", "--groups").output)
    assert out["threshold_source"] == "calibrated" and out["threshold"] == pytest.approx(cal["threshold"], abs=1e-5)
    groups = [sorted(os.path.basename(v["path"]) for v in g["videos"]) for g in out["groups"]]
    assert sorted(groups) == [["a-reencoded.mp4", "a.mp4"], ["b-small.mp4", "b.mp4"]]
    pairs = json.loads(vs("dupes", "--index", idx, "--format", "json").output)["pairs"]
    assert all(p["relation"] == "same" for p in pairs) and len(pairs) == 2
    csv_out = vs("dupes", "--index", idx, "--format", "csv").output.splitlines()
    assert csv_out[0].startswith("a,b,score") and len(csv_out) == 3
    # a VSC export of the same index
    r = vs("export", tmp_path / "d.npz", "--index", idx)
    assert r.exit_code == 0 and "descriptors" in r.output


def test_reindex_pins_and_unpins_the_index_type(tmp_path, library_videos, tiny_model, vs):
    videos = tmp_path / "videos"
    shutil.copytree(library_videos, videos)
    idx = tmp_path / "idx"
    assert vs("index", videos, "--index", idx, "--model", tiny_model, "--workers", 1).exit_code == 0
    before = json.loads(vs("search", videos / "a.mp4", "--index", idx, "--json", "--include-self").output)
    r = vs("reindex", "--index", idx, "--spec", "HNSW16,Flat")
    assert r.exit_code == 0 and "rebuilt HNSW16,Flat (pinned) over 10 clips" in r.output
    st = json.loads(vs("stats", "--index", idx, "--json").output)
    assert (st["index_type"], st["index_type_pinned"]) == ("HNSW16,Flat", True)
    after = json.loads(vs("search", videos / "a.mp4", "--index", idx, "--json", "--include-self").output)
    assert [x["path"] for x in after["queries"][0]["results"]] == [x["path"] for x in before["queries"][0]["results"]]
    # removal from HNSW is by tombstone: the removed video's clips never come back
    assert vs("remove", videos / "b.mp4", "--index", idx).exit_code == 0
    after = json.loads(vs("search", videos / "b.mp4", "--index", idx, "--json", "--include-self").output)
    assert str(videos / "b.mp4") not in [x["path"] for x in after["queries"][0]["results"]]
    r = vs("reindex", "--index", idx, "--auto")
    assert r.exit_code == 0 and "rebuilt IDMap2,Flat (chosen by size) over 7 clips" in r.output
    r = vs("reindex", "--index", idx, "--spec", "Bogus99")
    assert r.exit_code == 2 and "not a FAISS index factory string" in r.output
    assert json.loads(vs("stats", "--index", idx, "--json").output)["index_type"] == "IDMap2,Flat"


def test_environment_variables_give_the_index_and_model(tmp_path, library_videos, tiny_model, vs):
    env = {"VIDSEARCH_INDEX": str(tmp_path / "env-idx"), "VIDSEARCH_MODEL": str(tiny_model)}
    r = vs("index", library_videos / "a.mp4", "--workers", 1, env=env)
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "env-idx" / "manifest.json").read_text())
    assert manifest["model"]["id"] == str(tiny_model)
    r = vs("stats", "--json", env=env)
    assert json.loads(r.output)["videos_indexed"] == 1


def test_valid_files_decord_fails_on_are_searchable(indexed, tmp_path, vs):
    """Narrow H.264 (decord's copy check fails) and a small first stream beside a larger one."""
    from helpers import write_video
    from test_matrix import _two_streams

    idx, _, _ = indexed
    narrow = write_video(tmp_path / "narrow.mp4", seconds=2.0, fps=25, size=(8, 96), seed=4)
    two = tmp_path / "two-streams.mkv"
    _two_streams(two)
    for query in (narrow, two):
        r = vs("search", query, "--index", idx, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["queries"][0]["results"]


def test_errors_map_to_their_class_exit_codes_and_bugs_are_said_as_bugs(indexed, monkeypatch, vs):
    import errno

    import vidsearch.storage.stats as stats

    idx, _, _ = indexed
    # an argument out of range for this index: exit 2 (InvalidArgumentError), one line
    r = vs("export", idx.parent / "out.npz", "--index", idx, "--dim", 32)  # 64-d, but fewer than 32 clips
    assert r.exit_code == 2 and "PCA to 32 dimensions needs at least 32 clips" in r.output
    assert "Traceback" not in r.output

    def explode(lib):
        raise KeyError("surprise")

    monkeypatch.setattr(stats, "library_stats", explode)
    r = vs("stats", "--index", idx)
    assert r.exit_code == 1 and "internal error, a bug in vidsearch (KeyError: 'surprise')" in r.output
    assert "--debug" in r.output
    r = vs("--debug", "stats", "--index", idx, catch=True)
    assert isinstance(r.exception, KeyError)  # --debug lets the traceback through

    def full(lib):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(stats, "library_stats", full)
    r = vs("stats", "--index", idx)
    assert r.exit_code == 9 and "No space left on device" in r.output and "bug" not in r.output


def test_pinned_type_too_big_to_train_is_exact_until_it_can_be_trained(tmp_path, library_videos, vs, caplog):
    """Issue 12.6: IVF pinned on a small index could not be trained; the file stayed exact, and
    every open rebuilt it with a FAISS error, verify called it damage, stats claimed the type."""
    from vidsearch.storage.vectors import VectorIndex

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(library_videos / name, videos / name)
    idx = tmp_path / "idx"
    r = vs.index(videos, idx, "--faiss-spec", "IVF256,Flat")
    assert r.exit_code == 0, r.output
    assert VectorIndex.load(idx / "vectors.faiss")[1].spec == "IDMap2,Flat"
    st = json.loads(vs("stats", "--index", idx, "--json").stdout)
    assert (st["index_type"], st["index_type_pinned"], st["exact_search_until"]) == ("IVF256,Flat", True, 256)
    assert "index type: pinned IVF256,Flat; exact search until 256 clips" in vs("stats", "--index", idx).stdout
    for argv in (["verify"], ["verify", "--repair"], ["verify"]):
        r = vs(*argv, "--index", idx)
        assert r.exit_code == 0 and "note: pinned IVF256,Flat; exact search until 256 clips" in r.stdout, r.output
    saved = (idx / "vectors.faiss").read_bytes()
    r = vs("search", videos / "a.mp4", "--index", idx, "--json", "--include-self")
    assert r.exit_code == 0 and json.loads(r.stdout)["queries"][0]["results"][0]["path"] == str(videos / "a.mp4")
    assert (idx / "vectors.faiss").read_bytes() == saved  # used as it is, not rebuilt
    assert not [rec for rec in caplog.records if rec.levelname in ("WARNING", "ERROR")]
    # a type that can be trained once one more video is in: exact now, trained by the job that adds it
    n = st["clips"]
    r = vs("reindex", "--index", idx, "--spec", f"IVF{n + 1},Flat")
    assert r.exit_code == 0
    assert r.stdout == f"rebuilt over {n} clips: pinned IVF{n + 1},Flat; exact search until {n + 1} clips\n"
    shutil.copy(library_videos / "c.mkv", videos / "c.mkv")
    assert vs.index(videos, idx).exit_code == 0
    header = VectorIndex.load(idx / "vectors.faiss")[1]
    assert header.spec == f"IVF{n + 1},Flat" and header.ntotal > n
    st = json.loads(vs("stats", "--index", idx, "--json").stdout)
    assert (st["index_type"], st["exact_search_until"]) == (f"IVF{n + 1},Flat", None)
    r = vs("verify", "--index", idx)
    assert r.exit_code == 0 and "note:" not in r.stdout
    assert not [rec for rec in caplog.records if rec.levelname in ("WARNING", "ERROR")]
