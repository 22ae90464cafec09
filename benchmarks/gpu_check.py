"""GPU checks and figures, for one short run on a lent GPU machine (see gpu_check.sh).

1. correctness: the encoder on CUDA in bf16 against CPU fp32 on the same clips (cosine);
2. model-only clips/s for a VideoMAE-large-shaped model (random weights) in bf16 at several
   batch sizes, with model-FLOPs utilisation (1.19 TFLOP per clip; dense bf16 peak given by
   --peak-tflops, 989 for H100 SXM / H200);
3. decode frames/s with one CPU core (decord, 720p H.264 resized for the encoder);
4. end-to-end clips/s of ``index_paths`` with 1, 4 and all-core decode workers.

Writes a JSON summary to --out as well as printing it.
Usage: python benchmarks/gpu_check.py --out results.json [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FLOP_PER_CLIP = 2 * 597e9  # VideoMAE-L, 16x224x224: 597 GMACs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script itself on a CPU")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each test video")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    import torch
    from helpers import make_checkpoint, write_video
    from index_throughput import large_shaped_checkpoint

    from vidsearch.indexer.job import IndexOptions, index_paths
    from vidsearch.media.readers import iter_clips, open_video
    from vidsearch.media.windows import plan_clips
    from vidsearch.model.encoder import load_encoder
    from vidsearch.settings import FrameSize

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "smoke": args.smoke,
    }
    tmp = Path(tempfile.mkdtemp(prefix="vidsearch-gpu-"))
    videos = tmp / "videos"
    videos.mkdir()
    n_videos = 2 if args.smoke else 16
    size = (320, 180) if args.smoke else (1280, 720)
    t = time.perf_counter()
    for i in range(n_videos):
        write_video(videos / f"v{i}.mp4", seconds=args.seconds if not args.smoke else 4, fps=25, size=size, seed=i)
    out["videos"] = {"count": n_videos, "size": size, "seconds_each": args.seconds, "write_s": time.perf_counter() - t}

    # 1. correctness: bf16 on the device against fp32 on the CPU
    tiny = make_checkpoint(tmp / "tiny", image_size=224, hidden_size=64)
    ref = load_encoder(str(tiny), "cpu", "float32")
    dev = load_encoder(str(tiny), device, "auto")
    with open_video(videos / "v0.mp4", FrameSize(224)) as r:
        clips = [c.frames for c in iter_clips(r, plan_clips(r.frame_times)[:4])]
    a, b = ref.embed(clips), dev.embed(clips)
    out["cosine_device_auto_vs_cpu_fp32"] = float((a * b).sum(1).min())
    out["device_dtype"] = str(dev.dtype)

    # 2. model-only throughput of a large-shaped model
    model_dir = large_shaped_checkpoint(tmp / "large", 2 if args.smoke else 24)
    enc = load_encoder(str(model_dir), device, "auto")
    px = enc.preprocess(clips[0], None)
    rows = []
    for bs in [1, 2] if args.smoke else [1, 8, 16, 32, 64]:
        batch = px.unsqueeze(0).repeat(bs, 1, 1, 1, 1)
        enc.embed_pixels(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        reps = 2 if args.smoke else max(3, 256 // bs)
        t = time.perf_counter()
        for _ in range(reps):
            enc.embed_pixels(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        rate = reps * bs / (time.perf_counter() - t)
        rows.append({"batch": bs, "clips_per_s": rate, "mfu": rate * FLOP_PER_CLIP / (args.peak_tflops * 1e12)})
        print(f"model-only batch {bs}: {rate:.1f} clips/s, MFU {rows[-1]['mfu']:.1%}", flush=True)
    out["model_only"] = rows

    # 3. decode frames/s on one core
    t = time.perf_counter()
    frames = 0
    with open_video(videos / "v1.mp4", FrameSize(224), num_threads=1) as r:
        for c in iter_clips(r, plan_clips(r.frame_times)):
            frames += len(c.frames)
    out["decode_frames_per_s_one_core"] = frames / (time.perf_counter() - t)
    print(
        f"decode: {out['decode_frames_per_s_one_core']:.0f} frames/s on one core (16 of every 50 frames sampled)",
        flush=True,
    )

    # 4. end to end with decode workers
    e2e = []
    for workers in sorted({1, 4, os.cpu_count() or 1}):
        t = time.perf_counter()
        s = index_paths(
            tmp / f"idx-{workers}", [videos], IndexOptions(workers=workers, batch_size=32, device=device), encoder=enc
        )
        rate = s.clips / (time.perf_counter() - t)
        e2e.append({"workers": workers, "clips_per_s": rate, "embed_busy": s.embed_seconds / max(s.seconds, 1e-9)})
        print(
            f"end to end, {workers} workers: {rate:.1f} clips/s, encoder busy {e2e[-1]['embed_busy']:.0%}", flush=True
        )
    out["end_to_end"] = e2e
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
