"""Every user-facing failure is a VidsearchError; the CLI maps each class to an exit code."""

from __future__ import annotations

import os


class VidsearchError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ModelUnavailableError(VidsearchError):
    """The encoder checkpoint cannot be loaded (not cached offline, bad path, not VideoMAE)."""

    exit_code = 3


class IncompatibleIndexError(VidsearchError):
    """The index directory was built with other settings, or by a newer vidsearch."""

    exit_code = 4


class IndexNotFoundError(VidsearchError):
    """No index directory where one was expected."""

    exit_code = 4


class CorruptIndexError(VidsearchError):
    """The manifest or catalog is damaged; nothing is written over it."""

    exit_code = 5


class DecodeError(VidsearchError):
    """A video file cannot be decoded. Carries the path and the reason."""

    exit_code = 6

    def __init__(self, path: str | os.PathLike | bytes, reason: str):
        self.path = os.fsdecode(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class IndexLockedError(VidsearchError):
    """Another process holds the index's writer lock."""

    exit_code = 7


class VideoNotFoundError(VidsearchError):
    """A path names no indexed video (search by indexed path, remove)."""

    exit_code = 8


class StorageError(VidsearchError):
    """Writing the index failed (disk full, I/O error); what was committed before is kept."""

    exit_code = 9
