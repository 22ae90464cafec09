"""The writer lock."""

import errno
import os

import pytest
from records import settings

from vidsearch.errors import CorruptIndexError, IndexLockedError, StorageError
from vidsearch.storage.library import Library


def test_second_writer_refused_with_holder_and_lock_freed_on_close(tmp_path):
    root = tmp_path / "idx"
    first = Library.create(root, settings())
    with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
        Library.open(root, writable=True)
    with Library.open(root) as reader:  # readers need no lock
        assert reader.catalog.generation() == 0
    first.close()
    Library.open(root, writable=True).close()


def test_lock_that_is_not_a_regular_file_is_refused_and_never_written_through(tmp_path, vs):
    root = tmp_path / "idx"
    Library.create(root, settings()).close()
    lock = root / "lock"
    victim = tmp_path / "precious.txt"
    victim.write_text("not a lock\n")
    lock.unlink()
    lock.symlink_to(victim)
    with pytest.raises(CorruptIndexError, match=f"^{lock} is a symlink, not a lock file; not writing to it"):
        Library.open(root, writable=True)
    r = vs("reindex", "--index", root)
    assert (r.exit_code, r.output) == (
        5,
        f"Error: {lock} is a symlink, not a lock file; not writing to it (remove it: a writer makes a new one)\n",
    )
    assert victim.read_text() == "not a lock\n"
    lock.unlink()
    lock.symlink_to(tmp_path / "nothing-there")  # a dangling link is not followed to create its target
    with pytest.raises(CorruptIndexError, match="is a symlink"):
        Library.open(root, writable=True)
    assert not (tmp_path / "nothing-there").exists()
    lock.unlink()
    os.mkfifo(lock)  # opened, a FIFO would block or swallow the pid
    with pytest.raises(CorruptIndexError, match=f"^{lock} is a FIFO, not a lock file"):
        Library.open(root, writable=True)
    lock.unlink()
    lock.mkdir()
    with pytest.raises(CorruptIndexError, match=f"^{lock} is a folder, not a lock file"):
        Library.open(root, writable=True)
    lock.rmdir()
    Library.open(root, writable=True).close()  # a writer makes a new lock
    assert lock.is_file() and not lock.is_symlink()


def test_new_index_with_a_symlinked_lock_is_refused(tmp_path):
    root, victim = tmp_path / "idx", tmp_path / "precious.txt"
    root.mkdir()
    victim.write_text("not a lock\n")
    (root / "lock").symlink_to(victim)
    with pytest.raises(CorruptIndexError, match="is a symlink"):
        Library.create(root, settings())
    assert victim.read_text() == "not a lock\n"
    assert sorted(p.name for p in root.iterdir()) == ["lock"]


def test_lock_write_on_a_full_disk_is_a_storage_error(tmp_path, monkeypatch):
    root = tmp_path / "idx"
    Library.create(root, settings()).close()

    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(
        StorageError, match=f"^cannot write the lock file {root / 'lock'} \\(No space left on device\\)"
    ):
        Library.open(root, writable=True)
    monkeypatch.undo()
    Library.open(root, writable=True).close()  # the failed attempt left the lock free


def test_writer_in_a_folder_it_cannot_write_is_told_so_before_writing(tmp_path, monkeypatch):
    root = tmp_path / "idx"
    Library.create(root, settings()).close()
    (root / "lock").unlink()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode & os.W_OK else real(p, mode, **k))
    with pytest.raises(StorageError, match=f"^index folder {root} is read-only"):
        Library.open(root, writable=True)
    assert not (root / "lock").exists()
