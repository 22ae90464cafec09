"""The catalog: transactional stores, clip ids, float16 embeddings, read snapshots."""

import os
import sqlite3
from contextlib import closing

import numpy as np
import pytest
from records import DIM, clips, record, settings, unit

from vidsearch.storage.catalog import ClipRecord


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


def test_a_catalog_from_before_the_clip_marks_is_read_as_unmarked_and_migrated_by_a_writer(lib, monkeypatch):
    import sqlite3
    from contextlib import closing

    from vidsearch.storage.catalog import Catalog

    rng = np.random.default_rng(9)
    vecs = unit(rng, 2, DIM)
    lib.catalog.store_video(record("a.mp4"), [ClipRecord(0, 2, vecs[0], 0.0), ClipRecord(2, 4, vecs[1], 55.0)])
    lib.catalog.set_common({2: 7})
    with lib.catalog.read() as s:
        t = lib.catalog.clip_table(s)
        assert t.pixel_std.tolist() == [0.0, 55.0] and t.common_videos.tolist() == [0, 7]
        assert lib.catalog.clip_marks(s, [1, 2]) == {1: (0.0, 0), 2: (55.0, 7)}
    path = lib.root / "catalog.sqlite"
    with closing(sqlite3.connect(path)) as con:  # the catalog as vidsearch made it before the marks
        con.execute("ALTER TABLE clips DROP COLUMN pixel_std")
        con.execute("ALTER TABLE clips DROP COLUMN common_videos")
        con.commit()
    old = Catalog(path, readonly=True)
    with old.read() as s:
        t = old.clip_table(s)
        assert np.isnan(t.pixel_std).all() and t.common_videos.tolist() == [0, 0]
        assert np.isnan(old.clip_marks(s, [1])[1][0]) and np.isnan(old.video_pixel_std(s, 1)).all()
    old.close()
    real = os.access  # a reader of a folder it cannot write to
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode & os.W_OK else real(p, mode, **k))
    old = Catalog(path, readonly=True)
    with old.read() as s:
        assert np.isnan(old.clip_table(s).pixel_std).all() and old.clip_marks(s, [2])[2][1] == 0
    old.close()
    monkeypatch.undo()
    with closing(sqlite3.connect(path)) as con:
        assert "pixel_std" not in {row[1] for row in con.execute("PRAGMA table_info(clips)")}  # readers never write
    writer = Catalog(path)
    writer.store_video(record("b.mp4"), [ClipRecord(0, 2, vecs[0], 3.0)])
    writer.set_common({1: 9})
    with writer.read() as s:
        t = writer.clip_table(s)
        assert np.isnan(t.pixel_std[:2]).all() and t.pixel_std[2] == 3.0 and t.common_videos.tolist() == [9, 0, 0]
    writer.close()


@pytest.mark.parametrize(
    "message, damaged",
    [("disk I/O error", False), ("database disk image is malformed", True), ("database or disk is full", False)],
)
def test_a_write_s_io_error_is_a_storage_error_not_damage(lib, message, damaged):
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from vidsearch.errors import CorruptCatalogError, StorageError

    lib.catalog.store_video(record("/kept.mp4"), clips(np.random.default_rng(0), 2))
    with pytest.raises(StorageError if not damaged else CorruptCatalogError) as info:
        with lib.catalog.write() as session:
            session.connection()  # in the transaction, then SQLite fails a statement
            raise OperationalError("INSERT ...", {}, sqlite3.OperationalError(message))
    assert isinstance(info.value, CorruptCatalogError) == damaged
    text = str(info.value)
    assert str(lib.catalog.path) in text and message in text
    if not damaged:
        assert "everything committed before is kept" in text
    with lib.catalog.read() as session:
        assert [v.path for v in lib.catalog.videos(session)] == [b"/kept.mp4"]


def _page_size(path):
    with closing(sqlite3.connect(path)) as con:
        return con.execute("PRAGMA page_size").fetchone()[0]


def test_a_new_catalog_has_8_kb_pages_and_its_tables_in_its_file(lib):
    """8 KB pages hold three 1024-d clip rows where 4 KB ones held one. The tables are moved out of
    the WAL at creation: a WAL that cannot be emptied (the disk full) grows with every commit."""
    path = lib.root / "catalog.sqlite"
    assert _page_size(path) == 8192
    assert int.from_bytes(path.read_bytes()[16:18], "big") == 8192  # the header's page size
    assert (lib.root / "catalog.sqlite-wal").stat().st_size == 0
    with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as con:  # the file alone, no WAL
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"videos", "clips", "runs", "decisions", "meta"} <= tables


def test_a_catalog_with_4_kb_pages_keeps_them_and_works(tmp_path, monkeypatch):
    """Catalogs made before 8 KB pages keep their 4 KB ones (SQLite cannot change the page size of
    a WAL database): they open, read and write as before."""
    import vidsearch.storage.catalog as catalog
    from vidsearch.storage.library import Library

    rng = np.random.default_rng(4)
    root = tmp_path / "idx"
    monkeypatch.setattr(catalog, "PAGE_SIZE", 4096)  # as vidsearch made catalogs before
    with Library.create(root, settings()) as lib:
        lib.catalog.store_video(record("a.mp4", "fa"), clips(rng, 3))
    monkeypatch.undo()
    path = root / "catalog.sqlite"
    assert _page_size(path) == 4096
    with Library.open(root, writable=True) as lib:
        lib.catalog.store_video(record("b.mp4", "fb"), clips(rng, 400))  # new pages, of the old size
        lib.catalog.remove_videos([1])
        lib.rebuild_vectors()
    with Library.open(root) as lib:
        with lib.catalog.read() as s:
            assert [v.display_path for v in lib.catalog.videos(s)] == ["b.mp4"]
            assert lib.catalog.clip_count(s) == 400
            ids, vecs = next(lib.catalog.iter_embeddings(s, DIM))
        assert ids.tolist() == list(range(4, 404)) and vecs.shape == (400, DIM)
        assert lib.vectors().ntotal == 400
    assert _page_size(path) == 4096
    with closing(sqlite3.connect(path)) as con:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA page_count").fetchone()[0] * 4096 == path.stat().st_size
