"""The writer lock (flock, recording host and pid) and the network-file-system warning."""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import socket
import stat
from pathlib import Path

from vidsearch.errors import CorruptIndexError, IndexLockedError, StorageError

log = logging.getLogger(__name__)

LOCK = "lock"

NETWORK_FILESYSTEMS = frozenset(
    "nfs nfs4 cifs smb smb2 smb3 smbfs fuse.sshfs sshfs 9p afs ceph glusterfs fuse.glusterfs lustre gpfs "
    "fuse.s3fs fuse.gcsfuse fuse.rclone davfs".split()
)


def filesystem_type(path: Path) -> str | None:
    """The type of the file system ``path`` is on, from /proc/mounts (None where unknown)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, kind = mnt, parts[2]
    return kind


def warn_if_network_filesystem(root: Path) -> None:
    kind = filesystem_type(root)
    if kind in NETWORK_FILESYSTEMS:
        log.warning(
            "%s is on a network file system (%s): SQLite's WAL mode and file locks may not work there, "
            "so concurrent use can corrupt the catalog; keep the index on a local disk",
            root,
            kind,
        )


def require_writable(root: Path) -> None:
    """Refuse, before anything is written, to write into a folder this process cannot write to."""
    if not os.access(root, os.W_OK):
        raise StorageError(f"index folder {root} is read-only; only search, stats, dupes, export and verify work on it")


def acquire_lock(root: Path) -> int:
    """Take the writer lock; a lock left by a killed process is free (flock dies with it).

    The holder's pid is written into the lock, so it is opened without following a symlink and
    must be a regular file (checked before opening, so that no device or FIFO is opened, and
    again after): writing it must never truncate some other file.
    """
    path = root / LOCK
    require_writable(root)
    try:
        _refuse_unless_a_file(path, os.lstat(path).st_mode)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open the lock file {path} ({exc.strerror or exc})") from exc
    try:
        _refuse_unless_a_file(path, os.fstat(fd).st_mode)
    except CorruptIndexError:
        os.close(fd)
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise IndexLockedError(f"{root} is being written by {holder}; wait for that job to finish or stop it") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"pid {os.getpid()} on {socket.gethostname()} "
            f"since {dt.datetime.now().isoformat(timespec='seconds')}\n".encode(),
            0,
        )
    except OSError as exc:
        os.close(fd)
        raise StorageError(
            f"cannot write the lock file {path} ({exc.strerror or exc}); nothing else was written"
        ) from exc
    return fd


def _refuse_unless_a_file(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    kinds = {stat.S_ISLNK: "a symlink", stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}
    kind = next((name for test, name in kinds.items() if test(mode)), "a device")
    raise CorruptIndexError(
        f"{path} is {kind}, not a lock file; not writing to it (remove it: a writer makes a new one)"
    )


def release_lock(fd: int | None) -> None:
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_holder(root: Path) -> str | None:
    """The writer that holds the lock now (the pid and host it recorded), or None.

    Probes with a shared flock, and only when the lock file names someone (a running writer, or
    one that was killed): the probe lasts microseconds, but a writer that starts in that instant
    after a killed one is refused as if the index were busy.
    """
    try:
        fd = os.open(root / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
        if not holder:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holder
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
