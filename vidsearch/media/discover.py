"""Find video files under paths, and fingerprint them by content cheaply."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from vidsearch.errors import InvalidArgumentError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    (
        ".mp4 .m4v .mov .mkv .webm .avi .wmv .flv .mpg .mpeg .m2ts .mts .ts .3gp .3g2 .ogv .vob .mxf .asf .divx .gif"
    ).split()
)
#: Blocks read for a fingerprint: enough to tell files apart, cheap on huge files.
_BLOCK = 64 * 1024
_SAMPLES = 16


@dataclass(frozen=True)
class VideoFile:
    """A candidate video on disk. ``path`` is absolute, as the file system's bytes allow."""

    path: str
    size: int
    mtime_ns: int
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"size must be >= 0, got {self.size}")

    @property
    def path_bytes(self) -> bytes:
        return os.fsencode(self.path)


@dataclass
class DiscoveryReport:
    """What a walk found besides videos: problems are reported, never fatal."""

    problems: list[str] = field(default_factory=list)
    skipped_non_video: int = 0


def sampled_hash(path: str | os.PathLike, size: int | None = None) -> str:
    """Hash of the size plus evenly spaced blocks (whole file when small): a content fingerprint."""
    size = os.path.getsize(path) if size is None else size
    h = hashlib.blake2b(digest_size=20)
    h.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= _BLOCK * _SAMPLES:
            h.update(f.read())
        else:
            step = (size - _BLOCK) // (_SAMPLES - 1)
            for i in range(_SAMPLES):
                f.seek(i * step)
                h.update(f.read(_BLOCK))
    return h.hexdigest()


_MAGIC = (
    (4, b"ftyp"),  # MP4 / MOV / 3GP
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (0, b"RIFF"),  # AVI
    (0, b"OggS"),
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG-PS
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
    (0, b"GIF8"),  # animated GIF: libraries of them are kept like videos
)


def looks_like_video(path: str) -> bool:
    """Sniff a file without a video extension by its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    if len(head) >= 1 and head[0] == 0x47 and len(head) >= 1:
        try:
            with open(path, "rb") as f:
                f.seek(188)
                return f.read(1) == b"\x47"  # MPEG-TS sync bytes
        except OSError:
            return False
    return any(head[off : off + len(sig)] == sig for off, sig in _MAGIC)


def _excluded(path: str, patterns: Sequence[str]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _candidate(path: str, st: os.stat_result, explicit: bool) -> bool:
    ext = os.path.splitext(path)[1].lower()
    if ext in VIDEO_EXTENSIONS:
        return True
    if explicit:
        return True  # a file named on the command line is tried whatever its name
    if ext:
        return False
    return st.st_size > 0 and looks_like_video(path)


def check_paths_exist(paths: Sequence[str | os.PathLike]) -> None:
    """Refuse paths that name nothing, before any work: a mistyped folder would otherwise index
    nothing and succeed (InvalidArgumentError, exit 2)."""
    missing = [os.fsdecode(p) for p in paths if not os.path.exists(p)]
    if missing:
        broken = [p for p in missing if os.path.islink(p)]
        raise InvalidArgumentError(
            f"no such file or folder: {', '.join(missing)}"
            + (f" ({', '.join(broken)}: a broken symlink)" if broken else "")
            + "; nothing was indexed"
        )


def discover(
    paths: Sequence[str | os.PathLike],
    exclude: Sequence[str] = (),
    report: DiscoveryReport | None = None,
) -> Iterator[VideoFile]:
    """Yield each video file under ``paths`` once (recursive, symlinks followed, loops skipped).

    Unreadable folders, symlink loops and missing paths are recorded in ``report`` and
    logged, never raised. Fingerprints are left empty (see ``fingerprint``).
    """
    report = report if report is not None else DiscoveryReport()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()

    def problem(msg: str) -> None:
        report.problems.append(msg)
        log.warning("%s", msg)

    def visit_file(path: str, st: os.stat_result, explicit: bool) -> Iterator[VideoFile]:
        # the same file reached through symlinks is visited once; hard links are separate paths
        real = os.path.realpath(path)
        if real in seen_files or _excluded(path, exclude):
            return
        seen_files.add(real)
        if _candidate(path, st, explicit):
            yield VideoFile(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)
        else:
            report.skipped_non_video += 1

    def walk(folder: str) -> Iterator[VideoFile]:
        try:
            st = os.stat(folder)
        except OSError as exc:
            problem(f"{folder}: cannot read folder ({exc.strerror})")
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            problem(f"{folder}: symlink loop or folder already visited; skipped")
            return
        seen_dirs.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            problem(f"{folder}: cannot list folder ({exc.strerror})")
            return
        for entry in entries:
            path = entry.path
            if _excluded(path, exclude):
                continue
            try:
                est = entry.stat(follow_symlinks=True)
            except OSError as exc:
                problem(f"{path}: {'broken or looping symlink' if entry.is_symlink() else exc.strerror}; skipped")
                continue
            if stat.S_ISDIR(est.st_mode):
                yield from walk(path)
            elif stat.S_ISREG(est.st_mode):
                yield from visit_file(path, est, explicit=False)

    for raw in paths:
        path = os.path.abspath(os.fsdecode(raw))
        try:
            st = os.stat(path)
        except OSError as exc:
            problem(f"{path}: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from walk(path)
        elif stat.S_ISREG(st.st_mode):
            yield from visit_file(path, st, explicit=True)
        else:
            problem(f"{path}: not a regular file or folder; skipped")


def fingerprint(video: VideoFile) -> VideoFile:
    """The same file with its content fingerprint filled in (raises OSError if unreadable)."""
    return VideoFile(video.path, video.size, video.mtime_ns, sampled_hash(video.path, video.size))
