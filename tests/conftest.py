import os

# huggingface_hub reads this at import time: set it before anything imports it
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from harness import Cli  # noqa: E402
from helpers import make_checkpoint, scene_frames, transcode, write_video  # noqa: E402
from planting import planted_library  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A pretrained-style (use_mean_pooling: false) tiny VideoMAE folder."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-pretrained"))


@pytest.fixture(scope="session")
def tiny_finetuned(tmp_path_factory):
    """A fine-tuned-style (use_mean_pooling: true, with fc_norm) tiny VideoMAE folder."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-finetuned"), fine_tuned=True, seed=1)


@pytest.fixture(scope="session")
def vs(tiny_model):
    """The ``vidsearch`` CLI, in process or as a child process, bound to the tiny model (tests/harness.py)."""
    return Cli(tiny_model)


@pytest.fixture(scope="session")
def encoder(tiny_model):
    from vidsearch.model.encoder import load_encoder

    return load_encoder(str(tiny_model), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def library_videos(tmp_path_factory):
    """A small library: three unrelated videos of different sizes, rates and codecs."""
    d = tmp_path_factory.mktemp("library")
    write_video(d / "a.mp4", seconds=8, fps=25, size=(160, 96), seed=1)
    write_video(d / "b.mp4", seconds=6, fps=30, size=(128, 128), seed=2)
    write_video(d / "c.mkv", seconds=5, fps=24, size=(176, 144), seed=3, codec="mpeg4")
    return d


@pytest.fixture(scope="session")
def series_library(tmp_path_factory, vs):
    """An index of 12 unrelated episodes: the same 4 s intro, 4 s of their own, 3 s of black; a
    re-encoded, resized copy of episode 3; and the intro on its own, outside the library, as a
    query: (index, videos folder, query). Common-footage marks are whatever the last pass stored
    (at ``helpers.SERIES_THRESHOLD`` when every user passes it)."""
    width, height, fps = 128, 96, 25
    root = tmp_path_factory.mktemp("series")
    videos = root / "videos"
    videos.mkdir()
    intro = [f for _, f in scene_frames(100, 4, fps, width, height)]
    black = [np.zeros((height, width, 3), np.uint8)] * (3 * fps)
    for i in range(12):
        own = [f for _, f in scene_frames(i + 1, 4, fps, width, height)]
        write_video(videos / f"ep{i:02d}.mp4", fps=fps, size=(width, height), frames=intro + own + black)
    transcode(videos / "ep03.mp4", videos / "ep03-copy.mp4", size=(112, 84))
    query = write_video(root / "intro.mp4", fps=fps, size=(width, height), frames=intro)
    idx = root / "idx"
    r = vs.index(videos, idx)
    assert r.exit_code == 0, r.output
    return idx, videos, query


@pytest.fixture
def lib(tmp_path):
    """A new, empty index of 8-d synthetic embeddings (tests/records.py)."""
    from records import settings

    from vidsearch.storage.library import Library

    lib = Library.create(tmp_path / "idx", settings())
    yield lib
    lib.close()


@pytest.fixture
def planted(tmp_path):
    """An index of planted embeddings whose duplicates and matches are known (tests/planting.py)."""
    lib = planted_library(tmp_path / "idx")
    yield lib
    lib.close()


@pytest.fixture
def tmpfs(tmp_path):
    """``tmpfs(size)`` mounts a small tmpfs under tmp_path (tests/helpers.Tmpfs); the test is
    skipped where mounting is not permitted (not root)."""
    from helpers import Tmpfs

    mounts = []

    def mount(size: str, name: str = "fs") -> Tmpfs:
        fs = Tmpfs(tmp_path / name, size)
        if not fs.mounted:
            pytest.skip(f"cannot mount a tmpfs here ({fs.error})")
        mounts.append(fs)
        return fs

    yield mount
    for fs in reversed(mounts):
        fs.unmount()
