"""Named fault points, so tests can kill the job where it hurts most.

``VIDSEARCH_FAULT=point[:n]`` makes the n-th (default first) arrival at ``point`` SIGKILL the
process. Points: ``after_decode`` (a video's last clip received), ``after_embed`` (a batch
embedded), ``in_commit`` (inside a video's transaction, before it commits), ``in_faiss_save``
(the new vectors file written, not yet renamed into place). Unset, it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


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
