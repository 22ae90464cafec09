"""The index directory: manifest, opening and refusing, and keeping vectors.faiss up to the catalog."""

import errno
import json
import os
import shutil
import sqlite3

import numpy as np
import pytest
from records import clips, clustered, hard, record, settings

from vidsearch.errors import CorruptIndexError, IncompatibleIndexError, IndexNotFoundError, StorageError
from vidsearch.settings import ClipSettings, Preprocessing
from vidsearch.storage.catalog import ClipRecord
from vidsearch.storage.library import Library
from vidsearch.storage.vectors import VectorIndex


def test_manifest_round_trip_and_refusals(tmp_path):
    root = tmp_path / "idx"
    Library.create(root, settings(), ClipSettings(2.0, 1.0)).close()
    with Library.open(root) as lib:
        assert lib.manifest.encoder == settings()
        assert lib.manifest.clips == ClipSettings(2.0, 1.0)
        lib.check_compatible(settings(), ClipSettings(2.0, 1.0))
        cases = {
            "model": settings(model="org/other", revision="zzz"),
            "pooling": settings(pooling="fc_norm_mean"),
            "dim": settings(dim=16),
            "preprocessing.image_mean": settings(preprocessing=Preprocessing(image_mean=(0.5, 0.5, 0.5))),
        }
        for what, other in cases.items():
            with pytest.raises(IncompatibleIndexError, match=what):
                lib.check_compatible(other)
        with pytest.raises(IncompatibleIndexError, match="hop_seconds: index has 1.0, asked for 2.0"):
            lib.check_compatible(clips=ClipSettings(2.0, 2.0))


def test_newer_format_refused_and_damaged_manifest(tmp_path):
    root = tmp_path / "idx"
    with Library.create(root, settings()) as lib:
        lib.catalog.store_video(record("a.mp4"), clips(np.random.default_rng(0), 2))
    m = json.loads((root / "manifest.json").read_text())
    m["format_version"] = 99
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IncompatibleIndexError, match="newer vidsearch"):
        Library.open(root)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptIndexError, match="not valid JSON"):
        Library.open(root)
    (root / "manifest.json").unlink()
    with pytest.raises(CorruptIndexError, match="manifest.json is missing"):
        Library.open(root)
    with pytest.raises(IndexNotFoundError):
        Library.open(tmp_path / "nothing-here")


def test_damaged_catalog_is_an_error_not_a_new_index(tmp_path):
    root = tmp_path / "idx"
    Library.create(root, settings()).close()
    (root / "catalog.sqlite").write_bytes(b"garbage" * 1000)
    for name in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        if (root / name).exists():
            (root / name).unlink()
    with pytest.raises(CorruptIndexError, match="damaged or not a SQLite database"):
        Library.open(root)
    assert (root / "catalog.sqlite").read_bytes() == b"garbage" * 1000


def test_index_whose_creation_stopped_before_its_manifest_is_finished_not_refused(tmp_path):
    root = tmp_path / "idx"
    Library.create(root, settings()).close()
    # what a first run killed while writing its manifest leaves: catalog, lock, a temporary manifest
    (root / "manifest.json").unlink()
    (root / ".tmp-k1ll3d-manifest.json").write_text('{"format_version": 1, "crea')
    with pytest.raises(IndexNotFoundError, match=f"^no vidsearch index at {root} yet: its creation is unfinished"):
        Library.open(root)
    Library.create(root, settings(dim=16)).close()
    assert sorted(p.name for p in root.iterdir()) == ["catalog.sqlite", "lock", "manifest.json"]
    with Library.open(root) as lib:
        assert lib.manifest.encoder.dim == 16 and lib.catalog.generation() == 0


def test_folder_without_manifest_whose_catalog_holds_rows_is_never_cleared(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "idx"
    with Library.create(root, settings()) as lib:
        lib.catalog.store_video(record("a.mp4"), clips(rng, 2))
    (root / "manifest.json").unlink()
    before = (root / "catalog.sqlite").read_bytes()
    with pytest.raises(CorruptIndexError, match="manifest.json is missing, but .* exists"):
        Library.open(root)
    with pytest.raises(IncompatibleIndexError, match="is not an empty folder or a vidsearch index"):
        Library.create(root, settings())
    assert (root / "catalog.sqlite").read_bytes() == before
    # rows only in the -wal (a writer killed before the checkpoint) count as rows too
    copy = tmp_path / "copy"
    with Library.create(tmp_path / "live", settings()) as live:
        reader = sqlite3.connect(live.root / "catalog.sqlite")  # keeps the WAL from being checkpointed away
        reader.execute("select 1 from videos").fetchall()
        live.catalog.store_video(record("b.mp4"), clips(rng, 2))
        shutil.copytree(live.root, copy, ignore=shutil.ignore_patterns("manifest.json"))
        reader.close()
    assert (copy / "catalog.sqlite-wal").stat().st_size > 0
    with pytest.raises(IncompatibleIndexError, match="is not an empty folder or a vidsearch index"):
        Library.create(copy, settings())
    # and anything else in the folder
    (root / "manifest.json").write_text("{}")
    other = tmp_path / "other"
    Library.create(other, settings()).close()
    (other / "manifest.json").unlink()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(IncompatibleIndexError, match="is not an empty folder"):
        Library.create(other, settings())


def test_failed_creation_clears_what_it_made(tmp_path, monkeypatch):
    import vidsearch.storage.library as library

    root = tmp_path / "idx"

    def full(path, chunks):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(library, "atomic_write_bytes", full)
    with pytest.raises(
        StorageError,
        match=f"^cannot create an index in {root} \\(No space left on device\\); nothing was kept, the same command",
    ):
        Library.create(root, settings())
    assert sorted(p.name for p in root.iterdir()) == ["lock"]
    monkeypatch.undo()
    Library.create(root, settings()).close()
    assert Library.exists(root)


def test_reader_of_a_folder_it_cannot_write_opens_the_catalog_read_only(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    root = tmp_path / "idx"
    with Library.create(root, settings()) as lib:
        lib.catalog.store_video(record("a.mp4"), clips(rng, 3))
        lib.vectors()
    names = sorted(p.name for p in root.iterdir())
    assert "catalog.sqlite-shm" not in names  # the last connection's close removed it
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode & os.W_OK else real(p, mode, **k))
    with Library.open(root) as lib:
        with lib.catalog.read() as s:
            assert lib.catalog.video_count(s) == 1
        assert lib.vectors().ntotal == 3
        assert sorted(p.name for p in root.iterdir()) == names  # immutable: no -shm or -wal made


def test_reader_never_writes_vectors_file(tmp_path, lib):
    rng = np.random.default_rng(4)
    lib.catalog.store_video(record("a.mp4"), clips(rng, 3))
    root = lib.root
    lib.close()
    with Library.open(root) as reader:
        assert reader.vectors().ntotal == 3
    assert not (root / "vectors.faiss").exists()


def test_vectors_rebuilt_when_missing_stale_or_foreign(tmp_path, lib):
    rng = np.random.default_rng(3)
    lib.catalog.store_video(record("a.mp4"), clips(rng, 4))
    vi = lib.vectors()
    assert vi.ntotal == 4 and lib.vectors_path.exists()
    # stale: a commit after the file was written
    lib.catalog.store_video(record("b.mp4"), clips(rng, 3))
    _, header = VectorIndex.load(lib.vectors_path)
    assert header.generation < lib.catalog.generation()
    assert lib.vectors().ntotal == 7
    _, header = VectorIndex.load(lib.vectors_path)
    assert header.generation == lib.catalog.generation() and header.ntotal == 7
    # foreign: another index's file
    other = Library.create(tmp_path / "other", settings())
    other.catalog.store_video(record("x.mp4"), clips(rng, 2))
    other.vectors()
    other.close()
    os.replace(tmp_path / "other" / "vectors.faiss", lib.vectors_path)
    lib._vectors = None
    assert lib.vectors().ntotal == 7
    # truncated
    data = lib.vectors_path.read_bytes()
    lib.vectors_path.write_bytes(data[: len(data) // 2])
    lib._vectors = None
    assert sorted(lib.vectors().ids()) == list(range(1, 8))


def test_stale_vectors_caught_up_by_clip_id_without_retraining(tmp_path, monkeypatch):
    """A vectors file behind the catalog (a writer killed between saves, or one still running) is
    brought up to date by clip id: no retraining, tuned parameters kept, exact id set."""
    rng = np.random.default_rng(11)
    lib = Library.create(tmp_path / "idx", settings(dim=32))
    data = clustered(rng, 2000, 32)
    for v in range(100):
        lib.catalog.store_video(
            record(f"v{v}.mp4"),
            [ClipRecord(2.0 * i, 2.0 * i + 2, x) for i, x in enumerate(data[v * 20 : (v + 1) * 20])],
        )
    lib.switch_index_type("IVF16,SQfp16")
    nprobe = lib.manifest.faiss_params["nprobe"]
    saved_generation = VectorIndex.load(lib.vectors_path)[1].generation
    # later commits that never reached the vectors file
    new = clustered(rng, 60, 32)
    added = [
        lib.catalog.store_video(
            record(f"n{v}.mp4"), [ClipRecord(2.0 * i, 2.0 * i + 2, x) for i, x in enumerate(new[v * 20 : (v + 1) * 20])]
        )[1]
        for v in range(3)
    ]
    with lib.catalog.read() as session:
        gone_video = lib.catalog.video_by_path(session, b"v7.mp4").id
    removed = lib.catalog.remove_videos([gone_video])
    assert len(removed) == 20 and all(len(a) == 20 for a in added)
    lib.close()

    def refuse(*a, **k):
        raise AssertionError("rebuilt or retrained instead of caught up")

    monkeypatch.setattr(VectorIndex, "train", refuse)
    monkeypatch.setattr(Library, "rebuild_vectors", refuse)
    with Library.open(tmp_path / "idx") as reader:
        vi = reader.vectors()
        with reader.catalog.read() as session:
            live = reader.catalog.clip_ids(session)
        assert len(live) == 2000 - 20 + 60
        np.testing.assert_array_equal(vi.ids(), live)
        assert vi.spec == "IVF16,SQfp16" and vi.params["nprobe"] == nprobe
        _, found = vi.search(new, 1)
        np.testing.assert_array_equal(found[:, 0], np.concatenate(added))
        assert not np.isin(removed, vi.search(data[140:160], 5)[1]).any()
    assert (
        VectorIndex.load(tmp_path / "idx" / "vectors.faiss")[1].generation == saved_generation
    )  # a reader never writes
    with Library.open(tmp_path / "idx", writable=True) as writer:
        writer.vectors()
        header = VectorIndex.load(writer.vectors_path)[1]
        assert header.generation == writer.catalog.generation() and header.ntotal == 2040


def test_stale_vectors_rebuilt_when_most_of_the_catalog_changed(tmp_path, monkeypatch):
    import vidsearch.storage.library as library_mod

    monkeypatch.setattr(library_mod, "CATCH_UP_MIN", 5)
    rng = np.random.default_rng(12)
    lib = Library.create(tmp_path / "idx", settings())
    lib.catalog.store_video(record("a.mp4"), clips(rng, 4))
    lib.vectors()
    lib.catalog.store_video(record("b.mp4"), clips(rng, 3))  # 3 of 7 changed: caught up
    lib._vectors = None
    rebuilt = []
    real = Library.rebuild_vectors
    monkeypatch.setattr(Library, "rebuild_vectors", lambda self: rebuilt.append(1) or real(self))
    assert lib.vectors().ntotal == 7 and not rebuilt
    lib.catalog.store_video(record("c.mp4"), clips(rng, 8))  # 8 of 15: rebuilt
    lib._vectors = None
    assert lib.vectors().ntotal == 15 and rebuilt == [1]
    # stale and of another type than the manifest now pins (a job killed, then rerun with
    # --faiss-spec): rebuilt in the new type, not caught up in the old one
    lib.catalog.store_video(record("d.mp4"), clips(rng, 1))
    lib.update_manifest(faiss_spec="HNSW32", faiss_pinned=True)
    lib._vectors = None
    assert lib.vectors().spec == "HNSW32" and rebuilt == [1, 1]
    assert VectorIndex.load(lib.vectors_path)[1].spec == "HNSW32"
    lib.close()


@pytest.mark.parametrize(
    ("compress_limit", "spec", "knob"),
    [(10**9, "HNSW32,SQfp16", "efSearch"), (3000, "RR32,IVF64_HNSW32,PQ16x4fs", "nprobe")],
)
def test_switch_to_tuned_index_past_the_limit_and_recall_against_brute_force(
    tmp_path, monkeypatch, compress_limit, spec, knob
):
    import vidsearch.storage.faiss_spec as spec_mod

    monkeypatch.setattr(spec_mod, "EXACT_LIMIT", 1000)
    monkeypatch.setattr(spec_mod, "COMPRESS_LIMIT", compress_limit)
    rng = np.random.default_rng(8)
    lib = Library.create(tmp_path / "idx", settings(dim=32))
    data = hard(rng, 200, 32)
    for v in range(200):
        lib.catalog.store_video(
            record(f"v{v}.mp4"),
            [ClipRecord(2.0 * i, 2.0 * i + 2, x) for i, x in enumerate(data[v * 20 : (v + 1) * 20])],
        )
    assert lib.switch_index_type() is True
    m = lib.manifest
    assert m.faiss_spec == spec and not m.faiss_pinned
    assert m.faiss_params["recall_at_10"] >= 0.97 and m.faiss_params[knob] >= 1
    vi = lib.vectors()
    assert vi.spec == spec and vi.params == m.faiss_params
    queries = hard(rng, 200, 32)[::20]  # clips of videos the library does not hold
    scores, found = vi.search(queries, 10)
    with lib.catalog.read() as s:
        ids, vecs = zip(*lib.catalog.iter_embeddings(s, 32))
    ids, vecs = np.concatenate(ids), np.concatenate(vecs)
    exact = ids[np.argsort(-(queries @ vecs.T), axis=1)[:, :10]]
    recall = np.mean([len(np.intersect1d(f, e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.95
    # scores are the catalog vectors' own to float16 precision (product codes' are re-ranked), best first
    rows = np.searchsorted(ids, found)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, vecs[rows]), rtol=0, atol=1e-3)
    assert (np.diff(scores, axis=1) <= 0).all()
    # the saved file carries the tuned parameters; a reader gets them back
    lib.close()
    with Library.open(tmp_path / "idx") as reader:
        assert reader.vectors().params == m.faiss_params
    # a pinned type is never switched automatically
    with Library.open(tmp_path / "idx", writable=True) as writer:
        writer.switch_index_type("IDMap2,Flat")
        assert writer.manifest.faiss_pinned and writer.switch_index_type() is False
        assert writer.vectors().spec == "IDMap2,Flat"
        with pytest.raises(ValueError, match="not a FAISS index factory string"):
            writer.switch_index_type("NoSuchIndex42")
        assert writer.manifest.faiss_spec == "IDMap2,Flat"


def test_pinned_type_with_too_few_clips_is_an_exact_stand_in_not_a_mismatch(tmp_path, monkeypatch, caplog):
    """Issue 12.6: an exact file standing in for a pinned type that cannot be trained yet is
    used as it is (no rebuild, no FAISS error); once the catalog can train the type, the next
    open trains it."""
    from vidsearch.storage.verify import verify

    rng = np.random.default_rng(21)
    lib = Library.create(tmp_path / "idx", settings(dim=32))
    data = clustered(rng, 40, 32)
    lib.catalog.store_video(record("a.mp4"), [ClipRecord(2.0 * i, 2.0 * i + 2, x) for i, x in enumerate(data[:3])])
    assert lib.switch_index_type("IVF4,Flat") is True
    assert (lib.vectors().spec, lib.exact_until(3)) == ("IDMap2,Flat", 4)
    assert lib.switch_index_type() is False  # the job's end: still too few clips
    lib.close()
    real = Library.rebuild_vectors

    def refuse(*a, **k):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(Library, "rebuild_vectors", refuse)
    with Library.open(tmp_path / "idx") as reader:
        _, found = reader.vectors().search(data[:3], 1)
        np.testing.assert_array_equal(found[:, 0], [1, 2, 3])
    report = verify(tmp_path / "idx")
    assert report.ok and report.notes == ["pinned IVF4,Flat; exact search until 4 clips"]
    # a commit that makes it trainable, the vectors file not saved since: the next open trains it
    monkeypatch.setattr(Library, "rebuild_vectors", real)
    with Library.open(tmp_path / "idx", writable=True) as writer:
        writer.catalog.store_video(record("b.mp4"), [ClipRecord(0.0, 2.0, data[3])])
    with Library.open(tmp_path / "idx") as reader:
        vi = reader.vectors()
        assert vi.spec == "IVF4,Flat" and not vi.needs_training and vi.ntotal == 4
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
