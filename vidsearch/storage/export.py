"""Export clip descriptors: the VSC 2022 descriptor format, plain npz, or parquet.

VSC (facebookresearch/vsc2022, ``vsc/storage.py``) loads ``np.load(f, allow_pickle=False)`` with
``video_ids`` (one per row, rows of a video contiguous), ``features`` (float32 N×D) and
``timestamps`` (N×2 start/end seconds). Its ids are names, not paths: ``vsc_video_ids`` makes
them unique, and a VSC export writes the id → path table beside itself (``OUT.ids.csv``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vidsearch.errors import InvalidArgumentError, VideoNotFoundError, VidsearchError
from vidsearch.storage.atomic import atomic_write_bytes
from vidsearch.storage.catalog import STATUS_INDEXED
from vidsearch.storage.library import Library


@dataclass(frozen=True)
class Descriptors:
    paths: np.ndarray  # (N,) str, the video path of each row
    video_ids: np.ndarray  # (N,) fixed-width unicode
    features: np.ndarray  # (N, D) float32
    timestamps: np.ndarray  # (N, 2) float32


def _read_only_list(path: str | os.PathLike) -> set[str]:
    """Names in a file, one a line: absolute paths, paths relative to the list, or file stems."""
    entries = set()
    base = Path(path).parent
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            entries.add(line)
            entries.add(str((base / line).resolve()) if not os.path.isabs(line) else line)
    return entries


def vsc_video_ids(paths: Iterable[str]) -> dict[str, str]:
    """The VSC video id of each path: its file stem where no other path has that stem, else the
    stem, ``-`` and a short hash of the whole path (``IMG_0001-3fa2c1d4e5``).

    Pass every indexed video's path, not a selection, so that a video's id does not depend on
    what else is exported with it: descriptor exports, and any later search or dupes output in
    VSC form, then name each video alike. The hash makes the id stable: the same path always
    gets the same one. Ids are UTF-8 text (a non-UTF-8 name's bytes as ``\\xNN``).
    """
    stems = {p: _text(Path(p).stem) for p in paths}
    shared = {s for s, n in Counter(stems.values()).items() if n > 1}
    hashes = {p: hashlib.blake2b(os.fsencode(p), digest_size=20).hexdigest() for p in stems if stems[p] in shared}
    # 10 hex digits keep ten thousand IMG_0001s apart; longer only if two ids still collide
    for digits in (10, 40):
        ids = {p: f"{s}-{hashes[p][:digits]}" if s in shared else s for p, s in stems.items()}
        if len(set(ids.values())) == len(ids):
            break
    return ids


def collect(lib: Library, only: str | os.PathLike | None = None, id_by: str = "stem") -> Descriptors:
    """Every indexed clip (optionally of the listed videos), in (video, time) order."""
    wanted = _read_only_list(only) if only else None
    with lib.catalog.read() as session:
        videos = sorted(lib.catalog.videos(session, STATUS_INDEXED), key=lambda v: v.path)
        lib.skip_orphans(session)
        vsc_ids = vsc_video_ids(v.display_path for v in videos)
        paths, ids, feats, times = [], [], [], []
        for video in videos:
            path = video.display_path
            if wanted is not None and not ({path, Path(path).stem, Path(path).name, vsc_ids[path]} & wanted):
                continue
            clip_times, vectors = lib.catalog.video_clips(session, video.id, lib.manifest.encoder.dim)
            if not len(clip_times):
                continue
            feats.append(vectors)
            times.append(clip_times.astype(np.float32))
            paths += [path] * len(clip_times)
            ids += [vsc_ids[path] if id_by == "stem" else path] * len(clip_times)
    if wanted is not None and not paths:
        raise VideoNotFoundError(f"none of the videos listed in {only} is indexed")
    dim = lib.manifest.encoder.dim
    return Descriptors(
        paths=np.array(paths, dtype=str),
        video_ids=np.array(ids, dtype=str),
        features=np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
        timestamps=np.concatenate(times) if times else np.zeros((0, 2), np.float32),
    )


def pca_reduce(features: np.ndarray, dim: int) -> np.ndarray:
    """PCA fitted on the exported set itself, then L2-normalised (the VSC descriptor track allowed 512-d)."""
    _check_dim(dim, features.shape[1])
    if dim == features.shape[1]:
        return features
    if len(features) < dim:
        raise InvalidArgumentError(
            f"PCA to {dim} dimensions needs at least {dim} clips; the export has {len(features)}"
        )
    import faiss

    pca = faiss.PCAMatrix(features.shape[1], dim)
    pca.train(np.ascontiguousarray(features, dtype=np.float32))
    out = pca.apply(np.ascontiguousarray(features, dtype=np.float32))
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _check_dim(dim: int, have: int) -> None:
    if dim > have:
        raise InvalidArgumentError(f"cannot reduce {have}-d vectors to {dim} dimensions: PCA only reduces")


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_target(path: str | os.PathLike) -> None:
    """Refuse to write an export over anything but a regular file: the atomic write would replace
    a symlink, FIFO or device node with a regular file (InvalidArgumentError, exit 2)."""
    path = os.fspath(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise InvalidArgumentError(f"cannot write {path}: there is no folder {folder}") from None
        return
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise InvalidArgumentError(
        f"{path} is {kind}; export writes only to a regular file, which it replaces, or to a new path"
    )


def ids_path(out: str | os.PathLike) -> str:
    """Where a VSC export at ``out`` keeps its id → path table: ``out`` + ``.ids.csv``."""
    return os.fspath(out) + ".ids.csv"


def _ids_csv(d: Descriptors) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["video_id", "path"])
    seen: set[str] = set()
    for vid, path in zip(d.video_ids.tolist(), d.paths.tolist()):
        if vid not in seen:
            seen.add(vid)
            w.writerow([vid, _text(path)])
    return buf.getvalue().encode()


def _text(path: str) -> str:
    """A path as UTF-8 text (parquet and CSV strings are): a non-UTF-8 name's bytes as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def export(
    lib: Library,
    out: str | os.PathLike | BinaryIO,
    fmt: str,
    only: str | os.PathLike | None = None,
    dim: int | None = None,
) -> int:
    """Write descriptors to ``out``; returns the number of rows.

    ``out`` is a path, replaced atomically (a VSC export also writes ``ids_path(out)``, its id →
    path table), or a binary stream such as stdout (npz and parquet only: VSC's table would
    have nowhere to go). A path that exists must be a regular file (``check_target``).
    """
    if fmt not in ("vsc", "npz", "parquet"):
        raise InvalidArgumentError(f"export format must be vsc, npz or parquet; got {fmt!r}")
    path = os.fspath(out) if isinstance(out, (str, os.PathLike)) else None
    if path is None and fmt == "vsc":
        raise InvalidArgumentError(
            "a VSC export writes its id table beside itself (OUT.ids.csv), so it needs a file, not a stream; "
            "use --format npz or parquet to write to stdout"
        )
    if dim:
        _check_dim(dim, lib.manifest.encoder.dim)  # before the export is read, which may take a while
    if path is not None:
        check_target(path)
        if fmt == "vsc":
            check_target(ids_path(path))
    d = collect(lib, only)
    feats = pca_reduce(d.features, dim) if dim else d.features
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    if fmt == "vsc":
        data = _npz_bytes(video_ids=d.video_ids, features=feats, timestamps=d.timestamps)
    elif fmt == "npz":
        data = _npz_bytes(paths=d.paths, features=feats, timestamps=d.timestamps)
    else:
        data = _parquet_bytes(d, feats)
    if isinstance(out, (str, os.PathLike)):
        if fmt == "vsc":
            atomic_write_bytes(ids_path(out), [_ids_csv(d)])
        atomic_write_bytes(out, [data])
    else:
        out.write(data)
        out.flush()
    return len(feats)


def _parquet_bytes(d: Descriptors, feats: np.ndarray) -> bytes:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise VidsearchError("parquet export needs pyarrow: pip install 'vidsearch[parquet]'") from None
    table = pa.table(
        {
            "path": [_text(p) for p in d.paths.tolist()],
            "start_s": d.timestamps[:, 0],
            "end_s": d.timestamps[:, 1],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(feats.ravel()), feats.shape[1]),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
