"""Synthetic videos and tiny checkpoints for tests (no downloads, no shared files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

TINY_SIZE = 64
#: the duplicate threshold for the ``series_library`` fixture (conftest.py): the tiny random model puts
#: unrelated synthetic clips up to 0.95 apart; copies and the shared intro are above 0.99
SERIES_THRESHOLD = 0.97


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency colour noise with edges: a random grid upsampled, plus a few hard-edged shapes."""
    import torch
    import torch.nn.functional as F

    grid = torch.from_numpy(rng.random((1, 3, cells, max(2, cells * w // h)), dtype=np.float32))
    img = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    img = np.clip(img, 0, 1) * 255
    for _ in range(6):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = min(h, y0 + rng.integers(h // 8, h // 2)), min(w, x0 + rng.integers(w // 8, w // 2))
        img[y0:y1, x0:x1] = rng.integers(0, 256, 3)
    return img.astype(np.uint8)


def scene_frames(seed: int, seconds: float, fps: float, width: int, height: int, scene_seconds: float = 1.0):
    """Yield (t, frame): a new random scene every ``scene_seconds``, panning within each scene.

    Every second of a video looks different, so clips from different times are distinguishable;
    different seeds give unrelated videos.
    """
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * fps)))
    canvases = {}
    for i in range(n):
        t = i / fps
        scene = int(t // scene_seconds)
        if scene not in canvases:
            canvases = {scene: _smooth_noise(rng, height + 32, width + 32, 6)}
        frac = (t % scene_seconds) / scene_seconds
        dx = int(frac * 32)
        yield t, canvases[scene][16 : 16 + height, dx : dx + width]


def write_video(
    path: str | os.PathLike,
    seconds: float = 4.0,
    fps: float = 25,
    size: tuple[int, int] = (160, 96),
    codec: str = "libx264",
    seed: int = 0,
    frames=None,
    rotation: int | None = None,
    bframes: int | None = None,
    times=None,
    pix_fmt: str | None = None,
    options: dict | None = None,
) -> Path:
    """Encode a synthetic video with PyAV. ``frames`` (iterable of uint8 HxWx3) overrides the scenes.

    H.264 gets 3 B-frames unless ``bframes`` says otherwise, as x264's own presets and real
    cameras' files have them; other codecs get ``bframes`` where given. ``times`` (seconds, one
    per frame) gives each frame its presentation time: a variable rate or a non-zero start.
    """
    from fractions import Fraction

    import av

    path = Path(path)
    width, height = size
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt or {"mjpeg": "yuvj420p", "gif": "rgb8"}.get(codec, "yuv420p")
        if codec == "libx264":
            stream.options = {
                "crf": "18",
                "preset": "ultrafast",
                "g": "25",
                "bf": str(3 if bframes is None else bframes),
            }
        elif bframes is not None:
            stream.codec_context.max_b_frames = bframes
        if options:
            stream.options = {**stream.options, **options}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        source = frames if frames is not None else (f for _, f in scene_frames(seed, seconds, fps, width, height))
        for i, arr in enumerate(source):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_videos(folder: str | os.PathLike, n: int, seed: int, seconds: float = 6.0) -> Path:
    """``n`` unrelated small videos v0.mp4 … in ``folder`` (created)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_video(folder / f"v{i}.mp4", seconds=seconds, fps=25, size=(128, 96), seed=seed + i)
    return folder


def transcode(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    start_s: float = 0.0,
    end_s: float | None = None,
    size: tuple[int, int] | None = None,
    codec: str = "libx264",
    fps: float | None = None,
) -> Path:
    """Re-encode (a time range of) a video, optionally resized: a near-duplicate."""

    import av

    frames = []
    with av.open(str(src)) as c:
        s = c.streams.video[0]
        src_fps = float(s.average_rate)
        for f in c.decode(s):
            t = float(f.pts * s.time_base)
            if t + 1e-6 < start_s or (end_s is not None and t >= end_s - 1e-6):
                continue
            img = f.to_image()
            if size:
                img = img.resize(size)
            frames.append(np.asarray(img.convert("RGB")))
    h, w = frames[0].shape[:2]
    return write_video(dst, fps=fps or src_fps, size=(w, h), codec=codec, frames=frames)


def make_checkpoint(
    folder: str | os.PathLike,
    fine_tuned: bool = False,
    seed: int = 0,
    image_size: int = TINY_SIZE,
    hidden_size: int = 64,
    initializer_range: float = 0.2,
) -> Path:
    """A tiny random-init VideoMAE saved with save_pretrained, with an ImageNet preprocessor config."""
    import torch
    from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification

    folder = Path(folder)
    torch.manual_seed(seed)
    config = VideoMAEConfig(
        image_size=image_size,
        patch_size=16,
        num_channels=3,
        num_frames=16,
        tubelet_size=2,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        use_mean_pooling=fine_tuned,
        initializer_range=initializer_range,
        num_labels=3,
    )
    model = VideoMAEForVideoClassification(config) if fine_tuned else VideoMAEForPreTraining(config)
    if fine_tuned:
        with torch.no_grad():  # a trained fc_norm is not the identity; make pooling detectable
            model.fc_norm.weight.uniform_(0.5, 1.5)
            model.fc_norm.bias.uniform_(-0.5, 0.5)
    model.eval().save_pretrained(folder)
    pp = {
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": image_size},
        "image_processor_type": "VideoMAEImageProcessor",
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(pp, indent=2))
    return folder


class Tmpfs:
    """A tmpfs mounted at ``path`` (needs root, or CAP_SYS_ADMIN): a real small, full or
    read-only file system. Made by the ``tmpfs`` fixture, which unmounts it afterwards."""

    def __init__(self, path: Path, size: str):
        import subprocess

        self.path = path
        path.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        self.mounted = r.returncode == 0
        self.error = r.stderr.decode(errors="replace").strip()

    def remount(self, options: str) -> None:
        """e.g. ``size=4m`` (grows it, keeping its files) or ``ro``."""
        import subprocess

        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True, capture_output=True)

    def fill(self) -> None:
        """Write a file until the file system has no room left."""
        import errno

        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        finally:
            os.close(fd)

    def unmount(self) -> None:
        import subprocess

        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def open_files_under(folder: Path) -> list[str]:
    """The files under ``folder`` this process holds open (a deleted one as ``PATH (deleted)``)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the fd listdir itself used, closed since
            continue
        if target.startswith(f"{folder}/"):
            held.append(target)
    return sorted(held)
