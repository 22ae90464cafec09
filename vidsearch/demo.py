"""`vidsearch demo`: a small library made from the bundled sample clip, indexed, searched and de-duplicated.

The clip ships in the package (``vidsearch/data``), so the demo needs nothing beside the
install. It writes its library with PyAV, indexes it with the normal job, runs a search and a
duplicate scan, and leaves the index behind so the user can go on from there. The library is
small (about 20 clips to embed) because on a CPU the default model takes seconds a clip.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

import numpy as np

from vidsearch.errors import Terminated, VidsearchError
from vidsearch.indexer.job import IndexOptions, IndexSummary, index_paths
from vidsearch.media.windows import clip_windows
from vidsearch.model.encoder import load_encoder
from vidsearch.search.duplicates import DuplicateReport, find_duplicates
from vidsearch.search.query import SearchResult, search_video
from vidsearch.settings import DEFAULT_MODEL, ClipSettings
from vidsearch.storage.stats import open_library

SAMPLE = "bigbuckbunny.mp4"
#: The sample clip's frame rate; every derived video keeps it, so frame i is at i / FPS seconds.
FPS = 25
#: Seconds a clip of the default model (VideoMAE-large, fp32, batch 1) takes on the project's
#: 2-core CPU (benchmarks/RESULTS.md); only used to tell the user what to expect.
CPU_SECONDS_PER_CLIP = 12.0
#: The part of the sample's frame the recut copy keeps (left, top, right, bottom): its border
#: trimmed, 94% of each side, as a re-upload often is.
RECUT_BOX = (40, 22, 1240, 697)
RECUT_SIZE = (352, 198)
SMALL_SIZE = (384, 216)
QUERY_SIZE = (320, 180)
TITLE_SECONDS = 2.0
#: The part of the sample placed inside synthetic footage, and where it goes there: one second
#: later than in the sample, so the search has to line up times that differ.
EXCERPT = (1.0, 4.0)
EXCERPT_AT = 2.0
HOST_SECONDS = 6.0
#: The query: a part of the sample, re-encoded smaller.
QUERY = (1.0, 5.0)
UNRELATED_SECONDS = 4.0


def sample_clip():
    """The bundled clip (an ``importlib.resources`` Traversable); its licence is beside it."""
    return files("vidsearch") / "data" / SAMPLE


@dataclass(frozen=True)
class DemoLibrary:
    """The demo's files: ``copies`` hold the whole sample clip, ``host`` a 3 s part of it inside
    unrelated footage, ``unrelated`` none of it; the query is outside the library folder."""

    folder: Path
    original: Path
    recut: Path
    titled: Path
    host: Path
    unrelated: tuple[Path, ...]
    query: Path
    #: clips the index job and the search embed, with the default clip settings
    library_clips: int
    query_clips: int

    @property
    def copies(self) -> tuple[Path, ...]:
        return (self.original, self.recut, self.titled)

    @property
    def videos(self) -> tuple[Path, ...]:
        return (*self.copies, self.host, *self.unrelated)


@dataclass
class DemoResult:
    directory: Path
    index_dir: Path
    library: DemoLibrary
    summary: IndexSummary
    search: SearchResult
    dupes: DuplicateReport


def write_library(directory: str | Path) -> DemoLibrary:
    """Write the demo library into ``directory``/library and the query beside it (seeded: the
    same files every time)."""
    root = Path(directory)
    folder = root / "library"
    folder.mkdir(parents=True, exist_ok=True)
    original = folder / SAMPLE
    with sample_clip().open("rb") as src, open(original, "wb") as dst:
        shutil.copyfileobj(src, dst)
    recut, small, query = _decode_sample(original)
    sample_s = len(small) / FPS
    host = list(_synthetic(11, HOST_SECONDS - (EXCERPT[1] - EXCERPT[0]), SMALL_SIZE))
    at = round(EXCERPT_AT * FPS)
    host[at:at] = small[round(EXCERPT[0] * FPS) : round(EXCERPT[1] * FPS)]
    cs = ClipSettings()
    library_s = [sample_s, sample_s, TITLE_SECONDS + sample_s, HOST_SECONDS, UNRELATED_SECONDS, UNRELATED_SECONDS]
    return DemoLibrary(
        folder=folder,
        original=original,
        recut=_write(folder / "bigbuckbunny-recut.mp4", recut, RECUT_SIZE),
        titled=_write(
            folder / "bigbuckbunny-titled.mp4",
            [_title_card(SMALL_SIZE)] * round(TITLE_SECONDS * FPS) + small,
            SMALL_SIZE,
        ),
        host=_write(folder / "synthetic-with-excerpt.mp4", host, SMALL_SIZE),
        unrelated=(
            _write(folder / "synthetic-1.mp4", _synthetic(21, UNRELATED_SECONDS, SMALL_SIZE), SMALL_SIZE),
            _write(folder / "synthetic-2.mkv", _synthetic(22, UNRELATED_SECONDS, (320, 240)), (320, 240), "mpeg4"),
        ),
        query=_write(root / "query-excerpt.mp4", query[round(QUERY[0] * FPS) : round(QUERY[1] * FPS)], QUERY_SIZE),
        library_clips=sum(len(clip_windows(s, cs.clip_seconds, cs.hop_seconds)) for s in library_s),
        query_clips=len(clip_windows(QUERY[1] - QUERY[0], cs.clip_seconds, cs.hop_seconds / 2)),
    )


def run_demo(
    directory: str | Path | None = None,
    options: IndexOptions | None = None,
    say: Callable[[str], None] = lambda message: None,
) -> DemoResult:
    """Write the demo library in ``directory`` (default: a new temporary folder), index it into
    ``directory``/index, search it with the query, and find its duplicates."""
    opts = options or IndexOptions()
    root = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="vidsearch-demo-"))
    say(f"demo folder: {root}")
    library = write_library(root)
    n = library.library_clips + library.query_clips
    say(
        f"wrote {len(library.videos)} videos to {library.folder} and a query, {library.query.name}: "
        f"{n} clips to embed. With the default model ({DEFAULT_MODEL}) on a CPU that takes about "
        f"{n * CPU_SECONDS_PER_CLIP / 60:.0f} min (~{CPU_SECONDS_PER_CLIP:.0f} s a clip), on a GPU seconds; "
        "before its first use the model is downloaded (about 1.2 GB)"
    )
    encoder = load_encoder(opts.model or DEFAULT_MODEL, opts.device, opts.dtype)
    index_dir = root / "index"
    summary = index_paths(index_dir, [library.folder], opts, encoder)
    if summary.interrupted:
        raise Terminated if summary.terminated else KeyboardInterrupt
    if summary.failed:
        raise VidsearchError(
            "the demo library did not index: " + "; ".join(f"{path}: {reason}" for path, reason in summary.failed)
        )
    say(
        f"indexed {summary.indexed} videos ({summary.clips} clips) into {index_dir} in {summary.seconds:.1f}s"
        + (f"; {summary.skipped} were indexed already" if summary.skipped else "")
    )
    with open_library(index_dir) as lib:
        search = search_video(lib, encoder, library.query)
        dupes = find_duplicates(lib)
    return DemoResult(root, index_dir, library, summary, search, dupes)


def _decode_sample(path: Path) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """The sample's frames as the recut copy, the small copies and the query need them, made in
    one pass so that no full-size frame is kept."""
    import av

    recut, small, query = [], [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            img = frame.to_image()
            recut.append(np.asarray(img.crop(RECUT_BOX).resize(RECUT_SIZE)))
            small.append(np.asarray(img.resize(SMALL_SIZE)))
            query.append(np.asarray(img.resize(QUERY_SIZE)))
    return recut, small, query


def _write(
    path: Path, frames: Iterable[np.ndarray], size: tuple[int, int], codec: Literal["libx264", "mpeg4"] = "libx264"
) -> Path:
    """Encode RGB frames of ``size`` (width, height) at FPS."""
    import av

    # bitexact: no random ids or dates in the header, so a second demo in the same folder writes
    # the same bytes and the index job skips them
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "23", "preset": "veryfast"}
        for arr in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")))
        container.mux(stream.encode())
    return path


def _title_card(size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    w, h = size
    img = Image.new("RGB", size, (16, 18, 28))
    draw = ImageDraw.Draw(img)
    draw.text(
        (w / 2, h * 0.42), "Big Buck Bunny", fill=(240, 220, 160), anchor="mm", font=ImageFont.load_default(size=h // 8)
    )
    draw.text(
        (w / 2, h * 0.62),
        "(c) Blender Foundation, CC BY 3.0",
        fill=(180, 180, 190),
        anchor="mm",
        font=ImageFont.load_default(size=h // 16),
    )
    return np.asarray(img)


def _synthetic(seed: int, seconds: float, size: tuple[int, int]) -> Iterator[np.ndarray]:
    """Unrelated footage: a new random scene every second, the camera panning across it."""
    rng = np.random.default_rng(seed)
    w, h = size
    pan = w // 4
    scene = _scene(rng, w + pan, h)
    for i in range(round(seconds * FPS)):
        if i and i % FPS == 0:
            scene = _scene(rng, w + pan, h)
        dx = pan * (i % FPS) // FPS
        yield scene[:, dx : dx + w]


def _scene(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth colour gradients from a coarse random grid, with a few hard-edged shapes on top."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        box = (x0, y0, x0 + int(rng.integers(w // 8, w // 2)), y0 + int(rng.integers(h // 8, h // 2)))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return np.asarray(img)
