"""Named fault points, so tests can kill or stall the job where it hurts most. Parsed here only.

``VIDSEARCH_FAULT=point[:n]`` makes the n-th (default first) arrival at ``point`` SIGKILL the
process. Points: ``after_decode`` (a video's last clip received), ``after_embed`` (a batch
embedded), ``in_commit`` (inside a video's transaction, before it commits), ``in_faiss_save``
(the new vectors file written, not yet renamed into place), ``in_atomic_write`` (any other file).

``VIDSEARCH_FAULT_WORKER=kind:NAME`` makes a decode worker misbehave on the file named NAME:
``hang`` (sleeps for an hour), ``crash`` (segfaults), ``crash_sending`` (segfaults while its
first clip is being sent) or ``alloc`` (allocates memory without end). ``slow_start:S`` makes
every decode worker take S seconds more to start, as on a busy machine.

``VIDSEARCH_FAULT_DECORD=NAME:POSITION`` makes decord fail while reading clip POSITION of the
file named NAME, as it does part-way through some valid files.

Unset, each costs one dict lookup. ``environment()`` hands them to processes that do not inherit
this one's environment (a Ray cluster's workers).
"""

from __future__ import annotations

import os
import signal
import threading
import time

_counts: dict[str, int] = {}
WORKER_FAULTS = ("hang", "crash", "crash_sending", "alloc")
_VARIABLES = ("VIDSEARCH_FAULT", "VIDSEARCH_FAULT_WORKER", "VIDSEARCH_FAULT_DECORD")


def environment() -> dict[str, str]:
    """The fault variables set in this process."""
    return {name: os.environ[name] for name in _VARIABLES if os.environ.get(name)}


def fault(point: str) -> None:
    spec = os.environ.get("VIDSEARCH_FAULT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def worker_fault(path: str) -> None:
    """Called by a decode worker before it sends each clip of ``path``."""
    spec = os.environ.get("VIDSEARCH_FAULT_WORKER")
    if not spec:
        return
    kind, _, name = spec.partition(":")
    if kind not in WORKER_FAULTS or os.path.basename(path) != name:
        return
    if kind == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "crash_sending":  # dies half-way through sending the clip
        threading.Timer(0.001, os.kill, (os.getpid(), signal.SIGSEGV)).start()
    elif kind == "alloc":
        hoard = []
        while True:
            hoard.append(bytearray(b"\1" * 2**25))
    else:
        time.sleep(3600)


def worker_start_fault() -> None:
    """Called by a decode worker once it has started, before it says so."""
    kind, _, seconds = os.environ.get("VIDSEARCH_FAULT_WORKER", "").partition(":")
    if kind == "slow_start":
        time.sleep(float(seconds))


def decord_fault(path: str, position: int) -> bool:
    """Whether decord is to fail reading clip ``position`` of ``path``."""
    spec = os.environ.get("VIDSEARCH_FAULT_DECORD")
    if not spec:
        return False
    name, _, at = spec.rpartition(":")
    return os.path.basename(path) == name and position == int(at)
