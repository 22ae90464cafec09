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


class CorruptCatalogError(CorruptIndexError):
    """The catalog (``catalog.sqlite``) is damaged: SQLite says so, or its rows contradict each other."""


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


class InvalidArgumentError(VidsearchError, ValueError):
    """An argument the CLI could not check up front is out of range for this index or video."""

    exit_code = 2


class MissingExtraError(VidsearchError):
    """An option needs an optional extra that is not installed (``pip install 'vidsearch[NAME]'``)."""

    exit_code = 2

    def __init__(self, what: str, extra: str, module: str):
        self.extra = extra
        super().__init__(f"{what} needs {module}, which is not installed: pip install 'vidsearch[{extra}]'")


class ClusterError(VidsearchError):
    """The Ray cluster cannot run the job (a node cannot see the library, too few resources, a
    pipeline failure); what was committed before is kept."""

    exit_code = 1


class VideosFailedError(VidsearchError):
    """Some videos could not be indexed; the others were."""

    exit_code = 1


class JobInterrupted(VidsearchError):
    """Ctrl-C: what was committed is kept; the same command finishes the work."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (the CLI installs the handler), so
    that a job stops the same orderly way: what is done is committed and the FAISS file saved."""

    exit_code = 143  # 128 + SIGTERM, as for a process that SIGTERM ended


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's first line of text (a DBAPI error's driver message), for one-line reports."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:limit] if text else type(exc).__name__


def last_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's last line of text: where FAISS's C++ errors say what went wrong."""
    text = str(exc).strip().splitlines()
    return text[-1][:limit] if text else type(exc).__name__
