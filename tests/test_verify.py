"""`vidsearch verify`: each open error keeps its own exit code and label; a writer still running
is not damage."""

import json
import os

import numpy as np
from records import clips, record, settings

from vidsearch.storage.library import Library
from vidsearch.storage.vectors import VectorIndex


def _index(root):
    lib = Library.create(root, settings())
    lib.catalog.store_video(record("/a.mp4"), clips(np.random.default_rng(0), 3))
    lib.vectors()
    lib.close()
    return root


def test_no_index_or_a_newer_one_is_exit_4_not_damage(tmp_path, vs):
    """Issue 12.7: an empty folder, a folder of other files and a newer manifest were all exit 5,
    "a manifest problem that cannot be repaired"."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not an index")
    for folder in ("empty", "other", "missing"):
        for argv in (["verify"], ["verify", "--repair"]):
            r = vs(*argv, "--index", tmp_path / folder)
            assert r.exit_code == 4, (folder, argv, r.output)
            p = tmp_path / folder
            assert r.output == f"Error: no vidsearch index at {p} (run `vidsearch index PATH --index {p}` first)\n"
    root = _index(tmp_path / "idx")
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    for argv in (["verify"], ["verify", "--repair"]):
        r = vs(*argv, "--index", root)
        assert r.exit_code == 4 and "made by a newer vidsearch" in r.output and "cannot be repaired" not in r.output


def test_damaged_catalog_is_labelled_catalog_and_a_damaged_manifest_manifest(tmp_path, vs):
    root = _index(tmp_path / "idx")
    good = (root / "catalog.sqlite").read_bytes()
    (root / "catalog.sqlite").write_bytes(b"garbage" * 1000)
    for argv in (["verify"], ["verify", "--repair"]):
        r = vs(*argv, "--index", root, "--json")
        assert r.exit_code == 5
        [problem] = json.loads(r.stdout)["problems"]
        assert problem["part"] == "catalog" and not problem["repairable"]
        assert "catalog.sqlite is damaged or not a SQLite database" in problem["message"]
    assert (root / "catalog.sqlite").read_bytes() == b"garbage" * 1000
    (root / "catalog.sqlite").write_bytes(good)
    (root / "manifest.json").write_text("{broken")
    r = vs("verify", "--index", root)
    assert r.exit_code == 5 and r.stdout.startswith("manifest: ") and "not valid JSON" in r.stdout


def test_a_running_writer_is_exit_7_for_repair_and_its_stale_vectors_are_not_damage(tmp_path, vs):
    """Issue 12.7: `verify --repair` during a job said "cannot be repaired" (exit 5) instead of
    exit 7, and plain `verify` called the vectors file a running job has not saved yet damage."""
    root = _index(tmp_path / "idx")
    saved = VectorIndex.load(root / "vectors.faiss")[1].generation
    writer = Library.open(root, writable=True)
    try:
        writer.catalog.store_video(record("/b.mp4"), clips(np.random.default_rng(1), 2))  # not saved yet
        r = vs("verify", "--repair", "--index", root)
        assert r.exit_code == 7 and f"is being written by pid {os.getpid()}" in r.output
        r = vs("verify", "--index", root)
        assert r.exit_code == 0, r.output
        assert r.stdout.splitlines() == [
            f"note: {root / 'vectors.faiss'} is behind the catalog (generation {saved}, the catalog {saved + 1}) "
            f"while pid {os.getpid()} on {os.uname().nodename} since "
            + (root / "lock").read_text().split(" since ")[1].strip()
            + " writes; that job brings it up to date",
            "ok: 2 videos, 5 clips; manifest, catalog and vectors.faiss agree",
        ]
    finally:
        writer.close()  # gone without saving its vectors (as if killed): now that is worth a repair
    r = vs("verify", "--index", root)
    assert r.exit_code == 5 and "run `vidsearch verify --repair` to fix these" in r.stdout
    assert vs("verify", "--repair", "--index", root).exit_code == 0
