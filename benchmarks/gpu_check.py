"""GPU checks and figures, for one short run on a lent GPU machine (see gpu_check.sh).

1. model-only clips/s of a VideoMAE-large-shaped model (random weights) in bf16 at batch 1, 8,
   32 and 64, and fp32 at batch 32, with model-FLOPs utilisation (1.19 TFLOP a clip; dense bf16
   peak given by --peak-tflops, 989 for H100 SXM and H200);
2. correctness: the bf16 embeddings of that model against its fp32 ones on the same clips, and
   the tiny test model on the device against fp32 on the CPU (cosine);
3. decode: clips/s and frames/s on one CPU core, decord and PyAV, 1080p and 360p H.264 with
   B-frames, resized for the encoder as an index job does;
4. end to end: ``index_paths`` clips/s with 1, 4 and all-core decode workers on 1080p and 360p,
   with the share of the time the encoder was busy.

The test videos are written here, in parallel (synthetic scenes, x264 ultrafast with 3 B-frames).
The JSON summary at --out is rewritten after every section, so a run cut short keeps what it did.
Usage: python benchmarks/gpu_check.py --out results.json [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FLOP_PER_CLIP = 2 * 597e9  # VideoMAE-L, 16x224x224: 597 GMACs
SIZES = {"1080p": (1920, 1080), "360p": (640, 360)}
SECTIONS = ["model_only", "correctness", "decode", "end_to_end", "compile", "preprocess", "backends"]


def _write(job: tuple[str, float, tuple[int, int], int]) -> str:
    from helpers import write_video

    path, seconds, size, seed = job
    write_video(path, seconds=seconds, fps=25, size=size, seed=seed)
    return path


def write_sets(root: Path, count: int, seconds: float, sizes: dict, procs: int) -> dict[str, list[Path]]:
    jobs, sets = [], {}
    for name, size in sizes.items():
        folder = root / name
        folder.mkdir(parents=True)
        sets[name] = [folder / f"v{i:02d}.mp4" for i in range(count)]
        jobs += [(str(p), seconds, size, 1000 * len(sets) + i) for i, p in enumerate(sets[name])]
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(_write, jobs))
    return sets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script itself on a CPU")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each test video")
    ap.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=list(SIZES), help="test video sizes")
    ap.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=SECTIONS[:4],
        help="what to measure (default: the first four; 'compile', 'preprocess' and 'backends' are follow-ups)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    import torch
    from helpers import make_checkpoint
    from index_throughput import large_shaped_checkpoint

    from vidsearch.indexer.job import IndexOptions, index_paths
    from vidsearch.media.readers import iter_clips, open_video
    from vidsearch.media.windows import plan_clips
    from vidsearch.model.encoder import load_encoder
    from vidsearch.settings import FrameSize

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cpus = len(os.sched_getaffinity(0))
    out: dict = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpus": cpus,
        "smoke": args.smoke,
        "date": time.strftime("%Y-%m-%d"),
    }

    def save() -> None:
        args.out.write_text(json.dumps(out, indent=2))

    def rate_of(enc, batch, reps: int) -> tuple[float, float]:
        """(clips/s over ``reps`` calls after a first one, seconds the first call took)."""
        t = time.perf_counter()
        enc.embed_pixels(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        first = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(reps):
            enc.embed_pixels(batch)
        if device == "cuda":
            torch.cuda.synchronize()
        return reps * len(batch) / (time.perf_counter() - t), first

    def section(name, fn) -> None:
        t = time.perf_counter()
        try:
            fn()
        except Exception:
            out.setdefault("errors", {})[name] = traceback.format_exc()
            print(f"{name} failed:\n{traceback.format_exc()}", flush=True)
        out.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
        save()

    tmp = Path(tempfile.mkdtemp(prefix="vidsearch-gpu-"))
    count = 2 if args.smoke else max(4, cpus)
    seconds = 4.0 if args.smoke else args.seconds
    sizes = {"360p": (160, 96)} if args.smoke else {k: SIZES[k] for k in args.sizes}
    t = time.perf_counter()
    sets = write_sets(tmp / "videos", count, seconds, sizes, cpus)
    out["videos"] = {"per_size": count, "seconds_each": seconds, "sizes": sizes, "write_s": time.perf_counter() - t}
    print(f"videos written in {out['videos']['write_s']:.0f} s", flush=True)
    first = next(iter(sets.values()))[0]
    with open_video(first, FrameSize(224)) as r:
        clips = [c.frames for c in iter_clips(r, plan_clips(r.frame_times)[:8])]
    state: dict = {}

    def large():
        if "enc" not in state:
            state["dir"] = large_shaped_checkpoint(tmp / "large", 2 if args.smoke else 24)
            state["enc"] = load_encoder(str(state["dir"]), device, "auto")
        return state["enc"]

    def model_only() -> None:
        enc = large()
        model_dir = state["dir"]
        out["dtype"] = str(enc.dtype)
        px = enc.preprocess(clips[0], None)
        rows = []
        for bs in [1, 2] if args.smoke else [1, 8, 32, 64]:
            batch = px.unsqueeze(0).repeat(bs, 1, 1, 1, 1)
            rate, _ = rate_of(enc, batch, 2 if args.smoke else max(4, 320 // bs))
            rows.append({"batch": bs, "clips_per_s": rate, "mfu": rate * FLOP_PER_CLIP / (args.peak_tflops * 1e12)})
            print(f"model-only {enc.dtype} batch {bs}: {rate:.1f} clips/s, MFU {rows[-1]['mfu']:.1%}", flush=True)
        out["model_only"] = rows
        if device == "cuda":
            ref = load_encoder(str(model_dir), device, "float32")
            state["fp32"] = ref
            bs = 2 if args.smoke else 32
            rate, _ = rate_of(ref, px.unsqueeze(0).repeat(bs, 1, 1, 1, 1), 4)
            out["model_only_fp32"] = {"batch": bs, "clips_per_s": rate}
            print(f"model-only float32 batch {bs}: {rate:.1f} clips/s", flush=True)
            out["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30

    def correctness() -> None:
        if "fp32" in state:
            a, b = state["fp32"].embed(clips), state["enc"].embed(clips)
            out["cosine_large_bf16_vs_fp32"] = float((a * b).sum(1).min())
            del state["fp32"]
            torch.cuda.empty_cache()
        tiny = make_checkpoint(tmp / "tiny", image_size=224, hidden_size=64)
        a = load_encoder(str(tiny), "cpu", "float32").embed(clips)
        b = load_encoder(str(tiny), device, "auto").embed(clips)
        out["cosine_tiny_device_auto_vs_cpu_fp32"] = float((a * b).sum(1).min())
        print({k: v for k, v in out.items() if k.startswith("cosine")}, flush=True)

    def decode() -> None:
        rows = []
        for name, paths in sets.items():
            for backend in ("decord", "pyav"):
                t = time.perf_counter()
                frames = n = 0
                with open_video(paths[1], FrameSize(224), backend=backend, num_threads=1) as r:
                    total = len(r.frame_times)
                    for c in iter_clips(r, plan_clips(r.frame_times)):
                        frames += len(c.frames)
                        n += 1
                dt = time.perf_counter() - t
                rows.append(
                    {
                        "size": name,
                        "backend": backend,
                        "clips_per_s": n / dt,
                        "video_frames_per_s": total / dt,
                        "sampled_frames_per_s": frames / dt,
                    }
                )
                print(f"decode {name} {backend}, one core: {n / dt:.1f} clips/s, {total / dt:.0f} frames/s", flush=True)
        out["decode_one_core"] = rows

    def end_to_end() -> None:
        enc = large()
        rows = out["end_to_end"] = []
        for name, paths in sets.items():
            for workers in sorted({1, 4, cpus}):
                use = paths[: max(2, workers)]
                t = time.perf_counter()
                s = index_paths(
                    tmp / f"idx-{name}-{workers}",
                    use,
                    IndexOptions(workers=workers, batch_size=32, device=device),
                    encoder=enc,
                )
                dt = time.perf_counter() - t
                busy = s.embed_seconds / max(dt, 1e-9)
                rows.append({"size": name, "workers": workers, "videos": len(use), "clips": s.clips})
                rows[-1] |= {"seconds": dt, "clips_per_s": s.clips / dt, "encoder_busy": busy}
                print(
                    f"end to end {name}, {workers} workers: {s.clips / dt:.1f} clips/s, encoder busy {busy:.0%}",
                    flush=True,
                )
                save()

    def compiled() -> None:
        """torch.compile of the encoder's model at the best batch size: what fusing buys."""
        enc = large()
        bs = 2 if args.smoke else 64
        batch = enc.preprocess(clips[0], None).unsqueeze(0).repeat(bs, 1, 1, 1, 1)
        eager = enc.model
        enc.model = torch.compile(eager)
        try:
            rate, warm = rate_of(enc, batch, 2 if args.smoke else 8)
        finally:
            enc.model = eager
        mfu = rate * FLOP_PER_CLIP / (args.peak_tflops * 1e12)
        out["compiled"] = {"batch": bs, "clips_per_s": rate, "mfu": mfu, "compile_s": warm}
        print(f"torch.compile batch {bs}: {rate:.1f} clips/s, MFU {mfu:.1%} (first call {warm:.0f} s)", flush=True)

    def preprocess() -> None:
        """The index job's parent turns every clip into the encoder's input on one CPU core."""
        enc = large()
        with open_video(next(iter(sets.values()))[0], FrameSize(224)) as r:
            size = (r.info.width, r.info.height)
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < 3:
            for c in clips:
                enc.preprocess(c, size)
                n += 1
        rate = n / (time.perf_counter() - t)
        out["preprocess_clips_per_s_one_core"] = rate
        print(f"preprocess in the parent: {rate:.0f} clips/s on one core", flush=True)

    def backends() -> None:
        """End to end with all-core workers, decord (auto's choice under 2 minutes) against PyAV."""
        enc = large()
        rows = out["backends"] = []
        for name, paths in sets.items():
            for backend in ("auto", "pyav", "auto", "pyav"):
                t = time.perf_counter()
                s = index_paths(
                    tmp / f"idx-b-{name}-{backend}-{len(rows)}",
                    paths,
                    IndexOptions(workers=cpus, batch_size=32, device=device, backend=backend),
                    encoder=enc,
                )
                dt = time.perf_counter() - t
                rows.append({"size": name, "backend": backend, "clips": s.clips, "seconds": dt})
                rows[-1] |= {"clips_per_s": s.clips / dt, "encoder_busy": s.embed_seconds / dt}
                print(f"end to end {name}, {cpus} workers, backend {backend}: {s.clips / dt:.1f} clips/s", flush=True)
                save()

    steps = {
        "model_only": model_only,
        "correctness": correctness,
        "decode": decode,
        "end_to_end": end_to_end,
        "compile": compiled,
        "preprocess": preprocess,
        "backends": backends,
    }
    for name in args.sections:
        section(name, steps[name])
    print(json.dumps(out, indent=2), flush=True)


if __name__ == "__main__":
    main()
