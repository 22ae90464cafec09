"""Index directory, catalog and FAISS vectors, on synthetic embeddings."""

import json
import os

import numpy as np
import pytest

from vidsearch.errors import CorruptIndexError, IncompatibleIndexError, IndexLockedError, IndexNotFoundError
from vidsearch.settings import ClipSettings, EncoderSettings, Preprocessing
from vidsearch.storage.catalog import ClipRecord, VideoRecord
from vidsearch.storage.library import Library
from vidsearch.storage.vectors import VectorIndex

DIM = 8


def settings(**kw):
    base = dict(
        model="org/model",
        revision="abc",
        dim=DIM,
        pooling="mean",
        num_frames=16,
        image_size=224,
        preprocessing=Preprocessing(),
    )
    base.update(kw)
    return EncoderSettings(**base)


def unit(rng, n, dim=DIM):
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def record(name, fp="f"):
    return VideoRecord(path=name.encode(), size=1, mtime_ns=1, fingerprint=fp, duration_s=4.0)


def clips(rng, n):
    return [ClipRecord(2.0 * i, 2.0 * i + 2, v) for i, v in enumerate(unit(rng, n))]


@pytest.fixture
def lib(tmp_path):
    lib = Library.create(tmp_path / "idx", settings())
    yield lib
    lib.close()


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
    Library.create(root, settings()).close()
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


def test_store_is_transactional(lib):
    rng = np.random.default_rng(0)
    bad = clips(rng, 3) + [ClipRecord(0, 1, np.zeros(DIM))]
    generation = lib.catalog.generation()

    def boom(*a, **k):
        raise RuntimeError("crash inside the commit")

    original = lib.catalog._store
    lib.catalog._store = lambda *a, **k: (original(*a, **k), boom())
    with pytest.raises(RuntimeError):
        lib.catalog.store_video(record("a.mp4"), bad)
    lib.catalog._store = original
    with lib.catalog.read() as s:
        assert lib.catalog.clip_count(s) == 0
        assert lib.catalog.video_by_path(s, b"a.mp4") is None
    assert lib.catalog.generation() == generation


def test_clip_ids_never_reused(lib):
    rng = np.random.default_rng(1)
    _, first, _ = lib.catalog.store_video(record("a.mp4"), clips(rng, 3))
    lib.catalog.remove_videos([v for v in [1]])
    _, second, _ = lib.catalog.store_video(record("a.mp4"), clips(rng, 3))
    assert first == [1, 2, 3] and second == [4, 5, 6]
    # replacing a video at the same path drops its old clips, ids still move on
    _, third, removed = lib.catalog.store_video(record("a.mp4"), clips(rng, 2))
    assert third == [7, 8] and removed == [4, 5, 6]
    with lib.catalog.read() as s:
        assert lib.catalog.clip_count(s) == 2


def test_embeddings_float16_round_trip(lib):
    rng = np.random.default_rng(2)
    vecs = unit(rng, 5, DIM)
    lib.catalog.store_video(record("a.mp4"), [ClipRecord(0, 2, v) for v in vecs])
    with lib.catalog.read() as s:
        ids, back = next(lib.catalog.iter_embeddings(s, DIM))
    assert np.all(np.sum(back * vecs, axis=1) > 0.9999)  # float16 storage costs < 1e-4 in cosine
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1, atol=1e-6)


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


def test_vectors_file_damaged_anywhere_is_a_vector_file_error(tmp_path):
    import struct

    from vidsearch.storage.vectors import MAGIC, VectorFileError

    rng = np.random.default_rng(5)
    vi = VectorIndex.empty(DIM)
    vi.add(np.arange(1, 51), unit(rng, 50))
    path = tmp_path / "v.faiss"
    vi.save(path, 3, "uid")
    data = path.read_bytes()
    loaded, header = VectorIndex.load(path)
    assert header.generation == 3 and np.array_equal(loaded.ids(), np.arange(1, 51))
    bad = tmp_path / "bad.faiss"
    cases = [data[:n] for n in (0, 5, len(MAGIC) + 3, len(MAGIC) + 12, len(data) // 2, len(data) - 1)]
    cases.append(MAGIC + struct.pack("<Q", 2**64 - 1) + data[len(MAGIC) + 8 :])  # absurd header length
    cases.append(data[: len(MAGIC) + 8] + b"{not json" + data[len(MAGIC) + 17 :])
    for blob in cases:
        bad.write_bytes(blob)
        with pytest.raises(VectorFileError):
            VectorIndex.load(bad)


def test_reader_never_writes_vectors_file(tmp_path, lib):
    rng = np.random.default_rng(4)
    lib.catalog.store_video(record("a.mp4"), clips(rng, 3))
    root = lib.root
    lib.close()
    with Library.open(root) as reader:
        assert reader.vectors().ntotal == 3
    assert not (root / "vectors.faiss").exists()


def test_range_search_with_tombstones_matches_brute_force():
    rng = np.random.default_rng(9)
    data = unit(rng, 300)
    vi = VectorIndex.empty(DIM)
    vi.add(np.arange(300), data)
    vi.tombstones.update({0, 5})  # as if the index could not remove them
    q = data[:10]
    lims, scores, ids = vi.range_search(q, 0.5)
    sims = q @ data.T
    for j in range(10):
        want = {i for i in np.nonzero(sims[j] >= 0.5)[0] if i not in (0, 5)}
        assert set(ids[lims[j] : lims[j + 1]].tolist()) == want


def test_search_matches_brute_force_and_empty_index_is_safe():
    rng = np.random.default_rng(5)
    empty = VectorIndex.empty(DIM)
    scores, ids = empty.search(unit(rng, 2), 5)
    assert (ids == -1).all()
    lims, _, _ = empty.range_search(unit(rng, 2), 0.5)
    assert list(lims) == [0, 0, 0]
    data = unit(rng, 200)
    vi = VectorIndex.empty(DIM)
    vi.add(np.arange(100, 300), data)
    q = unit(rng, 10)
    scores, ids = vi.search(q, 5)
    exact = np.argsort(-(q @ data.T), axis=1)[:, :5] + 100
    np.testing.assert_array_equal(ids, exact)
    vi.remove(range(100, 150))
    _, ids = vi.search(q, 5)
    assert ids.min() >= 150


def test_hnsw_cannot_remove_so_tombstones_filter(tmp_path):
    rng = np.random.default_rng(6)
    data = unit(rng, 50)
    vi = VectorIndex.empty(DIM, "HNSW16,Flat")
    vi.add(np.arange(50), data)
    vi.remove([0, 1, 2])
    assert vi.tombstones == {0, 1, 2} and vi.ntotal == 47
    _, ids = vi.search(data[:3], 3)
    assert not set(ids.ravel()) & {0, 1, 2}
    with pytest.raises(RuntimeError, match="no range search"):  # FAISS would abort the process
        vi.range_search(data[:3], 0.99)
    vi.save(tmp_path / "v.faiss", 1, "uid")
    back, header = VectorIndex.load(tmp_path / "v.faiss")
    assert back.tombstones == {0, 1, 2} and header.spec == "HNSW16,Flat"


def test_second_writer_refused_with_holder_and_lock_freed_on_close(tmp_path):
    root = tmp_path / "idx"
    first = Library.create(root, settings())
    with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
        Library.open(root, writable=True)
    with Library.open(root) as reader:  # readers need no lock
        assert reader.catalog.generation() == 0
    first.close()
    Library.open(root, writable=True).close()


def test_reader_snapshot_does_not_see_a_later_commit(lib):
    rng = np.random.default_rng(7)
    lib.catalog.store_video(record("a.mp4"), clips(rng, 2))
    with lib.catalog.read() as s:
        before = lib.catalog.clip_count(s)
        lib.catalog.store_video(record("b.mp4"), clips(rng, 3))  # another connection commits meanwhile
        assert lib.catalog.clip_count(s) == before == 2
        assert lib.catalog.generation(s) == 1
    with lib.catalog.read() as s:
        assert lib.catalog.clip_count(s) == 5


def test_index_type_chosen_by_size_with_hysteresis():
    from vidsearch.storage.faiss_spec import DEFAULT_SPEC, choose_spec, should_switch

    assert choose_spec(150_000) == DEFAULT_SPEC
    assert choose_spec(1_000_000) == "IVF1024,SQfp16"
    assert choose_spec(4_000_000) == "IVF2048,SQfp16"
    assert should_switch(DEFAULT_SPEC, 250_000) and not should_switch(DEFAULT_SPEC, 150_000)
    assert not should_switch("IVF512,SQfp16", 150_000)  # hysteresis: not back to exact just below the limit
    assert should_switch("IVF512,SQfp16", 50_000)
    assert not should_switch("IVF512,SQfp16", 1_000_000) and should_switch("IVF256,SQfp16", 4_000_000)


def clustered(rng, n, dim=DIM, centres=40):
    c = unit(rng, centres, dim)
    v = c[rng.integers(0, centres, n)] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_switch_to_tuned_ivf_past_the_limit_and_recall_against_brute_force(tmp_path, monkeypatch):
    import vidsearch.storage.faiss_spec as vectors_mod

    monkeypatch.setattr(vectors_mod, "EXACT_LIMIT", 1000)
    rng = np.random.default_rng(8)
    lib = Library.create(tmp_path / "idx", settings(dim=32))
    data = clustered(rng, 4000, 32)
    for v in range(200):
        lib.catalog.store_video(
            record(f"v{v}.mp4"),
            [ClipRecord(2.0 * i, 2.0 * i + 2, x) for i, x in enumerate(data[v * 20 : (v + 1) * 20])],
        )
    assert lib.switch_index_type() is True
    m = lib.manifest
    assert m.faiss_spec == "IVF64,SQfp16" and not m.faiss_pinned
    assert m.faiss_params["recall_at_10"] >= 0.97 and m.faiss_params["nprobe"] >= 1
    vi = lib.vectors()
    assert vi.spec == "IVF64,SQfp16" and vi.params["nprobe"] == m.faiss_params["nprobe"]
    queries = data[rng.choice(len(data), 200, replace=False)] + 0.2 * rng.standard_normal((200, 32)).astype(
        np.float32
    ) / np.sqrt(32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)  # unseen clips from the library's distribution
    _, found = vi.search(queries, 10)
    with lib.catalog.read() as s:
        ids, vecs = zip(*lib.catalog.iter_embeddings(s, 32))
    ids, vecs = np.concatenate(ids), np.concatenate(vecs)
    exact = ids[np.argsort(-(queries @ vecs.T), axis=1)[:, :10]]
    recall = np.mean([len(np.intersect1d(f, e)) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.95
    # the saved file carries the tuned nprobe; a reader gets it back
    lib.close()
    with Library.open(tmp_path / "idx") as reader:
        assert reader.vectors().params["nprobe"] == m.faiss_params["nprobe"]
    # a pinned type is never switched automatically
    with Library.open(tmp_path / "idx", writable=True) as writer:
        writer.switch_index_type("IDMap2,Flat")
        assert writer.manifest.faiss_pinned and writer.switch_index_type() is False
        assert writer.vectors().spec == "IDMap2,Flat"
        with pytest.raises(ValueError, match="not a FAISS index factory string"):
            writer.switch_index_type("NoSuchIndex42")
        assert writer.manifest.faiss_spec == "IDMap2,Flat"


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


def test_tuning_stops_where_recall_stops_growing():
    from vidsearch.storage.vectors import exact_knn, recall_at, tune

    rng = np.random.default_rng(10)
    data = clustered(rng, 3000, 32)
    ids = np.arange(3000, dtype=np.int64)
    vi = VectorIndex.empty(32, "IVF32,SQ4")  # 4-bit codes: recall is capped below the target
    vi.train(data)
    vi.add(ids, data)
    q_ids = rng.choice(3000, 300, replace=False)
    truth = exact_knn(data[q_ids], [(ids, data)], 11)
    params = tune(vi, data[q_ids], q_ids, truth)
    measured = {}
    for p in (1, 2, 4, 8, 16, 32):
        vi.set_params({"nprobe": p})
        _, found = vi.search(data[q_ids], 11)
        found = np.array([[i for i in row if i != q][:10] for row, q in zip(found, q_ids)])
        t = np.array([[i for i in row if i != q][:10] for row, q in zip(truth, q_ids)])
        measured[p] = recall_at(found, t)
    best = max(measured.values())
    assert best < 0.97  # the cap this test is about
    assert params["nprobe"] == min(p for p, r in measured.items() if r >= best - 0.005)
    assert params["recall_at_10"] == pytest.approx(measured[params["nprobe"]], abs=1e-4)
