"""Seeded mutants of small valid videos, indexed by a real job: for tests/test_fuzz.py and
benchmarks/fuzz.py.

Each container's original is written with PyAV (B-frames where the codec has them); a mutant is
that original with one to three mutations chosen by ``random.Random(f"{container}:{seed}")``:
byte flips in the header, truncation, zeroed spans, duplicated or shuffled chunks, and fields
the demuxer times frames by patched (MP4's box sizes, mvhd/mdhd timescale and duration, stts
deltas, ctts offsets, edit lists; AVI's avih/strh rate, scale, length and frame count and its
index; Matroska's TimecodeScale, Duration, DefaultDuration and block times; MPEG's PES
timestamps). The same (container, seed) gives the same mutant from the same original, so from
the same FFmpeg build. ``check`` says what is wrong with a mutant's outcome, if anything.
"""

from __future__ import annotations

import math
import os
import random
import re
import sqlite3
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import ENV
from helpers import write_video

from vidsearch.media.timing import MAX_FRAME_GAP_S
from vidsearch.media.windows import clip_windows

#: container: (file name, write_video arguments); 2 s at 25 fps, 128x96
ORIGINALS: dict[str, tuple[str, dict]] = {
    "mp4": ("h264-bframes.mp4", dict(codec="libx264")),
    "avi": ("mpeg4-bframes.avi", dict(codec="mpeg4", bframes=2)),
    "mpg": ("mpeg2-bframes.mpg", dict(codec="mpeg2video", bframes=2)),
    "mkv": ("h264-bframes.mkv", dict(codec="libx264")),
    "webm": ("vp8.webm", dict(codec="libvpx")),
    "ts": ("h264-bframes.ts", dict(codec="libx264")),
}
ORIGINAL_SECONDS = 2.0
ORIGINAL_FRAMES = 50


def write_originals(folder: Path) -> dict[str, Path]:
    """The valid file each container's mutants start from."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (container, (name, kw)) in enumerate(ORIGINALS.items()):
        out[container] = write_video(folder / name, seconds=ORIGINAL_SECONDS, fps=25, size=(128, 96), seed=70 + i, **kw)
    return out


@dataclass(frozen=True)
class Mutant:
    container: str
    seed: int
    data: bytes
    #: what was done, e.g. ("mdhd.timescale=1", "truncate to 8737 bytes")
    steps: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.container}-{self.seed:04d}.{self.container}"


# ---- fields: (offset, width in bytes, name), found by walking the container's structure -------

Field = tuple[int, int, str]

_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta", b"mvex", b"moof", b"traf"}


def _mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, offset of the box, its size) for every box, depth first."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        header = 8
        if size == 1 and at + 16 <= end:
            size, header = struct.unpack(">Q", data[at + 8 : at + 16])[0], 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            return
        yield kind, at, size
        if kind in _MP4_CONTAINERS:
            yield from _mp4_boxes(data, at + header, at + size)
        at += size


def _mp4_fields(data: bytes) -> list[Field]:
    fields: list[Field] = []
    for kind, at, size in _mp4_boxes(data):
        fields.append((at, 4, f"{kind.decode('latin-1')}.size"))
        body = at + 8
        version = data[body] if body < len(data) else 0
        if kind in (b"mvhd", b"mdhd"):
            name = kind.decode()
            if version == 1:
                fields += [(body + 20, 4, f"{name}.timescale"), (body + 24, 8, f"{name}.duration")]
            else:
                fields += [(body + 12, 4, f"{name}.timescale"), (body + 16, 4, f"{name}.duration")]
        elif kind == b"tkhd":
            fields.append((body + (28 if version == 1 else 20), 8 if version == 1 else 4, "tkhd.duration"))
        elif kind in (b"stts", b"ctts", b"elst", b"stsz", b"stss", b"stco", b"stsc"):
            name = kind.decode()
            fields.append((body + 4, 4, f"{name}.entries"))
            entry = {b"stts": 8, b"ctts": 8, b"elst": 12 if version == 0 else 20, b"stsz": 4, b"stss": 4}
            entry |= {b"stco": 4, b"stsc": 12}
            first = body + (12 if kind == b"stsz" else 8)
            for k in range(min(64, (at + size - first) // entry[kind])):
                e = first + k * entry[kind]
                if kind in (b"stts", b"ctts"):
                    fields.append((e + 4, 4, f"{name}[{k}].{'delta' if kind == b'stts' else 'offset'}"))
                    fields.append((e, 4, f"{name}[{k}].count"))
                elif kind == b"elst":
                    fields.append((e, 4 if version == 0 else 8, f"elst[{k}].duration"))
                    fields.append((e + (4 if version == 0 else 8), 4 if version == 0 else 8, f"elst[{k}].media_time"))
                else:
                    fields.append((e, 4, f"{name}[{k}]"))
    return fields


def _riff_chunks(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(fourcc, offset of the chunk, its data size) for every chunk, depth first."""
    at = start
    while at + 8 <= end:
        kind, size = struct.unpack("<4sI", data[at : at + 8])
        if at + 8 + size > end:
            return
        yield kind, at, size
        if kind in (b"RIFF", b"LIST"):
            yield from _riff_chunks(data, at + 12, at + 8 + size)
        at += 8 + size + (size & 1)


_AVIH = ("usec_per_frame", "max_bytes_per_sec", None, "flags", "total_frames", "initial_frames", "streams", None)
_STRH = {16: "initial_frames", 20: "scale", 24: "rate", 28: "start", 32: "length", 36: "buffer_size"}


def _avi_fields(data: bytes) -> list[Field]:
    fields: list[Field] = []
    for kind, at, size in _riff_chunks(data, 0, len(data)):
        body = at + 8
        fields.append((at + 4, 4, f"{kind.decode('latin-1')}.size"))
        if kind == b"avih":
            fields += [(body + 4 * i, 4, f"avih.{n}") for i, n in enumerate(_AVIH) if n]
            fields += [(body + 32, 4, "avih.width"), (body + 36, 4, "avih.height")]
        elif kind == b"strh":
            fields += [(body + off, 4, f"strh.{n}") for off, n in _STRH.items()]
        elif kind == b"strf":
            fields += [(body + 4, 4, "strf.width"), (body + 8, 4, "strf.height")]
        elif kind == b"idx1":
            for k in range(min(64, size // 16)):
                fields += [(body + 16 * k + 8, 4, f"idx1[{k}].offset"), (body + 16 * k + 12, 4, f"idx1[{k}].size")]
    return fields


_EBML_MASTERS = {0x18538067, 0x1549A966, 0x1654AE6B, 0xAE, 0xE0, 0x1F43B675, 0xA0, 0x1C53BB6B, 0xBB}
_EBML_NAMES = {
    0x2AD7B1: "TimecodeScale",
    0x4489: "Duration",
    0x23E383: "DefaultDuration",
    0xB0: "PixelWidth",
    0xBA: "PixelHeight",
    0xE7: "ClusterTimecode",
    0xB3: "CueTime",
    0x9B: "BlockDuration",
}


def _vint(data: bytes, at: int, keep_marker: bool) -> tuple[int, int] | None:
    if at >= len(data) or data[at] == 0:
        return None
    length = 9 - data[at].bit_length()
    if at + length > len(data):
        return None
    value = int.from_bytes(data[at : at + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
    return value, length


def _ebml_fields(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[Field]:
    end = len(data) if end is None else end
    fields: list[Field] = []
    at = start
    while at < end and len(fields) < 400:
        ident, size = _vint(data, at, True), _vint(data, at + (_vint(data, at, True) or (0, 0))[1], False)
        if ident is None or size is None:
            break
        body = at + ident[1] + size[1]
        length = size[0]
        if length == (1 << (7 * size[1])) - 1:  # unknown size: runs to the end of its parent
            length = end - body
        if body + length > end:
            break
        fields.append((at + ident[1], size[1], f"{_EBML_NAMES.get(ident[0], hex(ident[0]))}.size"))
        if ident[0] in _EBML_NAMES and 0 < length <= 8:
            fields.append((body, length, _EBML_NAMES[ident[0]]))
        elif ident[0] == 0xA3 and length > 4:  # SimpleBlock: track number, then a 16-bit relative time
            track = _vint(data, body, False)
            if track:
                fields.append((body + track[1], 2, "SimpleBlock.time"))
        if ident[0] in _EBML_MASTERS and depth < 6:
            fields += _ebml_fields(data, body, body + length, depth + 1)
        at = body + length
    return fields


def _pes_fields(data: bytes) -> list[Field]:
    """PTS and DTS of MPEG video PES headers: MPEG-2 layout (MPEG-TS) or MPEG-1 (FFmpeg's .mpg)."""
    fields: list[Field] = []
    at = data.find(b"\x00\x00\x01\xe0")
    while at >= 0 and len(fields) < 200:
        h = at + 6
        if h + 3 <= len(data) and data[h] & 0xC0 == 0x80:  # MPEG-2: flags, then the timestamps
            flags = data[h + 1] >> 6
            stamps = h + 3
        else:  # MPEG-1: stuffing, an optional buffer size, then '0010' PTS or '0011' PTS and DTS
            while h < len(data) and data[h] == 0xFF:
                h += 1
            if h < len(data) and data[h] & 0xC0 == 0x40:
                h += 2
            flags = (data[h] >> 4) & 3 if h < len(data) else 0
            stamps = h
        if stamps + 5 * (1 + (flags == 3)) <= len(data):
            if flags & 2:
                fields.append((stamps, 5, "PES.pts"))
            if flags == 3:
                fields.append((stamps + 5, 5, "PES.dts"))
        at = data.find(b"\x00\x00\x01\xe0", at + 4)
    return fields


FIELDS: dict[str, Callable[[bytes], list[Field]]] = {
    "mp4": _mp4_fields,
    "avi": _avi_fields,
    "mkv": _ebml_fields,
    "webm": _ebml_fields,
    "mpg": _pes_fields,
    "ts": _pes_fields,
}


def _patch_value(rng: random.Random, old: int, width: int) -> int:
    top = (1 << (8 * width)) - 1
    choices = [0, 1, 2, top, top >> 1, (top >> 1) + 1, rng.randrange(top + 1), old + 1, max(0, old - 1)]
    choices += [
        old * rng.choice((2, 10, 1000, 10**6)),
        old // rng.choice((2, 10, 1000)),
        old ^ (1 << rng.randrange(8 * width)),
    ]
    return min(top, rng.choice(choices))


def _patch_pes(rng: random.Random, old: bytes) -> bytes:
    """A new 33-bit timestamp in PES layout (marker bits kept)."""
    value = (old[0] >> 1 & 7) << 30 | old[1] << 22 | (old[2] >> 1) << 15 | old[3] << 7 | old[4] >> 1
    value = rng.choice([0, 2**33 - 1, rng.randrange(2**33), value + rng.randrange(-90000, 90000), value * 1000])
    value %= 2**33
    return bytes(
        [
            (old[0] & 0xF1) | (value >> 29 & 0xE),
            value >> 22 & 0xFF,
            (value >> 14 & 0xFE) | 1,
            value >> 7 & 0xFF,
            (value << 1 & 0xFE) | 1,
        ]
    )


def _patch_field(rng: random.Random, data: bytearray, container: str) -> str:
    fields = FIELDS[container](bytes(data))
    if not fields:
        return _flip(rng, data)
    groups: dict[str, list[Field]] = {}
    for f in fields:  # every kind of field alike, however many of each there are
        groups.setdefault(re.sub(r"\[\d+\]", "", f[2]), []).append(f)
    at, width, name = rng.choice(groups[rng.choice(sorted(groups))])
    old_bytes = bytes(data[at : at + width])
    if name.startswith("PES."):
        data[at : at + width] = _patch_pes(rng, old_bytes)
        return f"{name} patched"
    if name == "Duration" and width in (4, 8):  # an EBML float
        fmt = ">f" if width == 4 else ">d"
        value = rng.choice([0.0, -1.0, 1e20, float("inf"), float("nan"), struct.unpack(fmt, old_bytes)[0] * 1000])
        data[at : at + width] = struct.pack(fmt, value)
        return f"Duration={value:g}"
    order = "little" if container == "avi" else "big"
    old = int.from_bytes(old_bytes, order)
    new = _patch_value(rng, old, width)
    if name.endswith(".size") and container in ("mkv", "webm"):  # a vint: keep its length marker
        new = (new & ((1 << (7 * width)) - 1)) | (1 << (7 * width))
    data[at : at + width] = new.to_bytes(width, order)
    return f"{name}={new}"


# ---- byte mutations -----------------------------------------------------------------------------


def _flip(rng: random.Random, data: bytearray) -> str:
    head = min(len(data), 4096)
    spots = sorted(rng.randrange(head) for _ in range(rng.randint(1, 8)))
    for at in spots:
        data[at] ^= rng.randint(1, 255)
    return f"flip {len(spots)} bytes in the first {head}"


def _truncate(rng: random.Random, data: bytearray) -> str:
    keep = rng.randint(1, len(data) - 1)
    del data[keep:]
    return f"truncate to {keep} bytes"


def _zero(rng: random.Random, data: bytearray) -> str:
    length = min(len(data), rng.choice([16, 64, 256, 1024, 4096]))
    at = rng.randrange(len(data) - length + 1)
    data[at : at + length] = bytes(length)
    return f"zero {length} bytes at {at}"


def _duplicate(rng: random.Random, data: bytearray) -> str:
    length = rng.randint(1, max(1, len(data) // 4))
    src = rng.randrange(len(data) - length + 1)
    dst = rng.randrange(len(data) + 1)
    data[dst:dst] = data[src : src + length]
    return f"copy {length} bytes from {src} to {dst}"


def _shuffle(rng: random.Random, data: bytearray) -> str:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(2, 6))))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    head, rest = chunks[0], chunks[1:]
    rng.shuffle(rest)
    data[:] = head + b"".join(rest)
    return f"shuffle {len(rest)} chunks after byte {cuts[0]}"


_OPS: list[tuple[int, Callable[..., str]]] = [
    (4, _patch_field),  # takes the container too
    (2, _flip),
    (1, _truncate),
    (1, _zero),
    (1, _duplicate),
    (1, _shuffle),
]


def mutate(original: bytes, container: str, seed: int) -> Mutant:
    """The mutant ``seed`` of ``container``'s original: one to three mutations."""
    rng = random.Random(f"{container}:{seed}")
    data = bytearray(original)
    steps = []
    ops = [op for _, op in _OPS]
    weights = [w for w, _ in _OPS]
    for _ in range(rng.choice((1, 1, 2, 3))):
        if len(data) < 2:
            break
        op = rng.choices(ops, weights)[0]
        steps.append(op(rng, data, container) if op is _patch_field else op(rng, data))
    return Mutant(container, seed, bytes(data), tuple(steps))


def write_mutants(folder: Path, originals: dict[str, Path], pairs: list[tuple[str, int]]) -> dict[str, Mutant]:
    """Write the mutants ``pairs`` (container, seed) into ``folder``; returns {file name: mutant}.

    A mutant identical to one already written is left out: it would be indexed as a copy.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sources = {c: p.read_bytes() for c, p in originals.items()}
    seen: set[bytes] = set()
    out = {}
    for container, seed in pairs:
        m = mutate(sources[container], container, seed)
        if m.data in seen:
            continue
        seen.add(m.data)
        (folder / m.name).write_bytes(m.data)
        out[m.name] = m
    return out


# ---- the job and what it made of each mutant ----------------------------------------------------

#: the job's settings: short enough that a hang shows, small enough that a runaway decoder shows
TIMEOUT_S = 30
MAX_DECODE_MB = 1024
CLIP_SECONDS = 1.0
#: a mutant holds at most about twice its original's bytes (three copies of up to a quarter each)
MAX_FRAMES = 2 * ORIGINAL_FRAMES
#: reasons that mean the decoder, not the file, went wrong: a hang, a crash, memory
BAD_REASONS = ("decoding timed out", "decoder crashed", "decoder exited", "decoder used more than", "did not start")


#: the job's environment: offline, and one torch thread, the quickest for the tiny model (two
#: threads beside two decode workers on a busy two-core machine were 15 times slower, measured)
ENV_1THREAD = {**ENV, "OMP_NUM_THREADS": "1"}


def index_argv(folder: Path, idx: Path, model: Path, workers: int = 2) -> list[str]:
    """``vidsearch index`` over a folder of mutants, as a child process (environment: ENV_1THREAD)."""
    return [
        sys.executable,
        "-m",
        "vidsearch.cli",
        "index",
        str(folder),
        "--index",
        str(idx),
        "--model",
        str(model),
        "--workers",
        str(workers),
        "--timeout",
        str(TIMEOUT_S),
        "--max-decode-memory",
        str(MAX_DECODE_MB),
        "--clip-seconds",
        str(CLIP_SECONDS),
    ]


@dataclass
class Outcome:
    """What the job made of one file: its catalog row and what the job said about it."""

    name: str
    status: str
    duration_s: float | None = None
    fps: float | None = None
    clips: list[tuple[float, float]] = field(default_factory=list)
    #: the reason on each ``failed: PATH: reason`` line naming the file
    reasons: list[str] = field(default_factory=list)
    #: a warning said decoding stopped part-way, so there are fewer clips than windows
    stopped: bool = False


def outcomes(idx: Path, stderr: str) -> dict[str, Outcome]:
    """Each catalogued file's outcome, by file name, from the catalog and the job's stderr."""
    with sqlite3.connect(idx / "catalog.sqlite") as db:
        videos = db.execute("SELECT id, path, status, duration_s, fps FROM videos").fetchall()
        clips = db.execute("SELECT video_id, start_s, end_s FROM clips ORDER BY video_id, start_s").fetchall()
    out, by_id = {}, {}
    for vid, path, status, duration, fps in videos:
        name = os.path.basename(os.fsdecode(path))
        by_id[vid] = out[name] = Outcome(name, status, duration, fps)
    for vid, start, end in clips:
        by_id[vid].clips.append((start, end))
    for line in stderr.splitlines():
        path, _, rest = line.removeprefix("failed: ").removeprefix("WARNING: ").partition(": ")
        name = os.path.basename(path)
        if name in out and line.startswith("failed: "):
            out[name].reasons.append(rest)
        elif name in out and rest.startswith("decoding stopped at "):
            out[name].stopped = True
    return out


def check(o: Outcome) -> str | None:
    """What is wrong with a mutant's outcome: None where it was indexed with sane times or
    failed with one line naming it and a reason about the file."""
    if o.status == "failed":
        if len(o.reasons) != 1:
            return f"{len(o.reasons)} 'failed: {o.name}: ...' lines"
        reason = o.reasons[0]
        if any(bad in reason for bad in BAD_REASONS):
            return f"failed by the decoder, not the file: {reason}"
        if re.match(r"[A-Z]\w+(Error|Exception): ", reason):  # an exception no reader expected
            return f"failed with an unexpected exception: {reason}"
        return None
    if o.status != "indexed":
        return f"status {o.status}"
    d = o.duration_s
    if d is None or not math.isfinite(d) or not 0 < d <= MAX_FRAMES * MAX_FRAME_GAP_S:
        return f"duration {d}"
    if o.fps is None or round(o.fps * d) > MAX_FRAMES:
        return f"{o.fps} fps over {d:.3g}s: more frames than the file can hold"
    windows = len(clip_windows(d, CLIP_SECONDS, CLIP_SECONDS))
    if not (o.stopped and 1 <= len(o.clips) < windows) and len(o.clips) != windows:
        return f"{len(o.clips)} clips over {d:.3g}s, where {windows} windows fit"
    if o.clips[0][0] != 0 or any(not 0 <= s < e <= d + 1e-3 for s, e in o.clips):
        return f"clip times {o.clips} outside 0-{d:.3g}s"
    return None
