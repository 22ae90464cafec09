"""Decode cost per CPU core: what a cluster needs in CPUs for each GPU (README, "Scaling out").

Writes 20-second H.264 videos (with B-frames, as cameras and x264 write them) at 720p and 1080p,
25 fps, and decodes each the way a decode worker does (one decoder thread, frames resized for
the encoder at decode, 2-second clips of 16 frames), with decord and with PyAV (which vidsearch
uses for videos over 2 minutes). Rates are per CPU-second of this process, so that a loaded
machine gives the figure of one core; wall-clock rates are printed beside them.

Usage: python benchmarks/decode_rate.py [--seconds 20] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def decode(path: Path, backend: str) -> tuple[int, float, float]:
    """(clips, CPU seconds, wall seconds) to decode ``path`` into clips for a 224-pixel encoder."""
    from vidsearch.media.readers import iter_clips, open_video
    from vidsearch.media.windows import plan_clips
    from vidsearch.settings import FrameSize

    cpu, wall = time.process_time(), time.perf_counter()
    with open_video(path, FrameSize(224), backend, num_threads=1) as r:
        clips = sum(1 for _ in iter_clips(r, plan_clips(r.frame_times)))
    return clips, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=2, help="decodes of each video and backend; the best is kept")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import torch
    from helpers import write_video

    torch.set_num_threads(1)  # as in a decode worker
    tmp = Path(tempfile.mkdtemp(prefix="vidsearch-decode-"))
    fps = 25
    print(f"{'video':<18} {'backend':<7} {'clips/CPU-s':>11} {'frames/CPU-s':>12} {'clips/s wall':>12}")
    for name, size in (("720p", (1280, 720)), ("1080p", (1920, 1080))):
        path = write_video(tmp / f"{name}.mp4", seconds=args.seconds, fps=fps, size=size, seed=1)
        for backend in ("decord", "pyav"):
            runs = [decode(path, backend) for _ in range(args.repeat)]
            clips, cpu, wall = min(runs, key=lambda r: r[1])
            frames = args.seconds * fps  # every frame is decoded, 16 of each 50 kept
            print(
                f"{name + ' H.264':<18} {backend:<7} {clips / cpu:11.2f} {frames / cpu:12.0f} "
                f"{clips / min(r[2] for r in runs):12.2f}"
            )


if __name__ == "__main__":
    main()
