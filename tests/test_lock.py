"""The writer lock."""

import os

import pytest
from records import settings

from vidsearch.errors import IndexLockedError
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
