"""Indexing throughput, side by side in one run, on the same videos and the same model.

1. model-only: the encoder on clips already decoded and preprocessed, at vidsearch's default
   dtype (the ceiling for this machine);
2. vidsearch end to end: ``index_paths`` into a fresh index, with the model already loaded
   (without start-up), and the ``vidsearch index`` command in a new process (with start-up
   and model load);
3. the straightforward way, from the model card: decord ``get_batch`` at full resolution per
   clip, transformers' image processor, one clip per forward pass, fp32.

With ``--ray``: also ``vidsearch index --ray`` (``indexer.ray_job.index_on_ray``) on a local Ray
started by the script, alternating with the built-in job ``--rounds`` times on the same videos
and model; Ray's start-up is timed apart, the encoder actors' model load is inside each run.

Usage: python benchmarks/index_throughput.py [VIDEO_DIR] [--model PATH] [--skip-naive] [--skip-cli] [--ray]
Defaults: ../shared/videos when present; a VideoMAE-large-shaped random-init model.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402


def large_shaped_checkpoint(folder: Path, layers: int) -> Path:
    """A random-init checkpoint shaped like MCG-NJU/videomae-large (weights are random: say so)."""
    import json

    import torch
    from transformers import VideoMAEConfig, VideoMAEModel

    torch.manual_seed(0)
    config = VideoMAEConfig(
        hidden_size=1024,
        num_hidden_layers=layers,
        num_attention_heads=16,
        intermediate_size=4096,
        use_mean_pooling=False,
        initializer_range=0.2,
    )
    VideoMAEModel(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "crop_size": {"height": 224, "width": 224},
                "do_center_crop": True,
                "do_normalize": True,
                "do_rescale": True,
                "do_resize": True,
                "image_mean": [0.485, 0.456, 0.406],
                "image_std": [0.229, 0.224, 0.225],
                "resample": 2,
                "rescale_factor": 1 / 255,
                "size": {"shortest_edge": 224},
            }
        )
    )
    return folder


def videos_in(folder: Path) -> list[Path]:
    from vidsearch.media.discover import discover

    return [Path(v.path) for v in discover([folder])]


def decoded_clips(paths, encoder, clip_seconds=2.0, hop_seconds=2.0):
    from vidsearch.media.readers import iter_clips, open_video
    from vidsearch.media.windows import plan_clips

    out = []
    pp = encoder.settings.preprocessing
    for p in paths:
        with open_video(p, pp.frame_size()) as r:
            plans = plan_clips(r.frame_times, encoder.settings.num_frames, clip_seconds, hop_seconds)
            out += [(c, (r.info.width, r.info.height), p, plans[c.position]) for c in iter_clips(r, plans)]
    return out


def model_only(encoder, clips, batch_size) -> float:
    import torch

    pixels = torch.stack([encoder.preprocess(c.frames, size) for c, size, _, _ in clips])
    encoder.embed_pixels(pixels[:1])  # warm-up
    t = time.perf_counter()
    for i in range(0, len(pixels), batch_size):
        encoder.embed_pixels(pixels[i : i + batch_size])
    return len(clips) / (time.perf_counter() - t)


def naive(model_dir: Path, clips) -> tuple[float, np.ndarray]:
    """The model-card way: full-resolution decord get_batch, the image processor, fp32, one clip a pass."""
    import decord
    import torch
    from transformers import VideoMAEModel
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    processor = VideoMAEImageProcessorPil.from_pretrained(model_dir)
    model = VideoMAEModel.from_pretrained(model_dir).eval()
    vectors = []
    t = time.perf_counter()
    for _, _, path, plan in clips:
        vr = decord.VideoReader(str(path))
        frames = vr.get_batch(list(plan.frame_indices)).asnumpy()
        inputs = processor(list(frames), return_tensors="pt")
        with torch.no_grad():
            v = model(**inputs).last_hidden_state.mean(1)
        vectors.append(torch.nn.functional.normalize(v, dim=-1)[0].numpy())
    return len(clips) / (time.perf_counter() - t), np.stack(vectors)


def built_in_against_ray(videos: Path, tmp: Path, encoder, opts, rounds: int) -> list[tuple[str, float]]:
    """Built-in job and the job on local Ray, alternating; (name, clips/s) rows, medians."""
    import ray

    from vidsearch.indexer.job import index_paths
    from vidsearch.indexer.ray_job import index_on_ray

    t = time.perf_counter()
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    startup = time.perf_counter() - t
    cpus = int(ray.cluster_resources()["CPU"])
    built_in, on_ray = [], []
    try:
        for i in range(rounds):
            t = time.perf_counter()
            s = index_paths(tmp / f"idx-built-in-{i}", [videos], opts, encoder=encoder)
            built_in.append(s.clips / (time.perf_counter() - t))
            t = time.perf_counter()
            s = index_on_ray(tmp / f"idx-ray-{i}", [videos], opts, encoder=encoder)
            assert not s.failed, s.failed
            on_ray.append(s.clips / (time.perf_counter() - t))
            print(f"round {i + 1}: built-in {built_in[-1]:.4f} clips/s, --ray {on_ray[-1]:.4f} clips/s", flush=True)
    finally:
        ray.shutdown()
    b, r = float(np.median(built_in)), float(np.median(on_ray))
    print(f"--ray: local Ray ({cpus} CPUs) started in {startup:.1f}s, not in the rate; --ray / built-in: {r / b:.2f}")
    return [
        (f"built-in job, model loaded (median of {rounds}, alternating with --ray)", b),
        (f"--ray on local Ray, Ray started (median of {rounds}; actor model load included)", r),
    ]


def main() -> None:
    default_dir = Path(__file__).resolve().parents[1].parent / "shared" / "videos"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="?", type=Path, default=default_dir)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: random VideoMAE-large shape)")
    ap.add_argument("--layers", type=int, default=24, help="layers of the random model (24 = large)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="default: vidsearch's (1 on CPU, 32 on GPU)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--skip-bf16", action="store_true", help="skip the bf16-vs-fp32 comparison on CPU")
    ap.add_argument("--ray", action="store_true", help="also the job on local Ray (needs vidsearch[ray])")
    ap.add_argument("--rounds", type=int, default=1, help="with --ray: built-in and --ray runs, alternating")
    args = ap.parse_args()

    import torch

    from vidsearch.indexer.job import IndexOptions, default_batch_size, default_workers, index_paths
    from vidsearch.model.encoder import load_encoder

    tmp = Path(tempfile.mkdtemp(prefix="vidsearch-bench-"))
    model_dir = args.model or large_shaped_checkpoint(tmp / "model", args.layers)
    paths = videos_in(args.videos)
    encoder = load_encoder(str(model_dir), args.device)
    print(f"videos: {len(paths)} in {args.videos}; model: {model_dir}{' (random weights)' if not args.model else ''}")
    print(
        f"device: {encoder.device}, dtype: {str(encoder.dtype).removeprefix('torch.')}, "
        f"torch threads: {torch.get_num_threads()}, "
        f"cpus: {os.cpu_count()}"
    )
    clips = decoded_clips(paths, encoder)
    batch_size = args.batch_size or default_batch_size(encoder.device)
    print(f"clips: {len(clips)}, batch size {batch_size}")

    rows = []
    mo = model_only(encoder, clips, batch_size)
    rows.append(("model-only (decoded + preprocessed clips)", mo))

    workers = args.workers or default_workers()
    opts = IndexOptions(batch_size=batch_size, workers=workers, device=args.device)
    t = time.perf_counter()
    summary = index_paths(tmp / "idx-api", [args.videos], opts, encoder=encoder)
    e2e = summary.clips / (time.perf_counter() - t)
    rows.append((f"vidsearch end to end, model loaded ({workers} workers)", e2e))

    if args.ray:
        rows += built_in_against_ray(args.videos, tmp, encoder, opts, args.rounds)

    if not args.skip_cli:
        cmd = [
            sys.executable,
            "-m",
            "vidsearch.cli",
            "-q",
            "index",
            str(args.videos),
            "--index",
            str(tmp / "idx-cli"),
            "--model",
            str(model_dir),
            "--batch-size",
            str(batch_size),
            "--workers",
            str(workers),
            "--device",
            args.device,
        ]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        rows.append(("vidsearch index command, with start-up + model load", summary.clips / (time.perf_counter() - t)))

    if not args.skip_naive:
        nv, naive_vecs = naive(Path(model_dir), clips)
        rows.append(("straightforward (full-res get_batch, image processor, fp32, 1 clip/pass)", nv))
        ours = encoder.embed([c.frames for c, *_ in clips[:4]], [s for _, s, *_ in clips[:4]])
        cos = np.sum(ours * naive_vecs[:4], axis=1)
        print(
            f"cosine, vidsearch ({str(encoder.dtype).removeprefix('torch.')}) vs straightforward fp32, first 4 clips: "
            f"min {cos.min():.5f} (random weights)"
        )

    print()
    print(f"{'method':<75} {'clips/s':>9} {'x model-only':>13}")
    for name, rate in rows:
        print(f"{name:<75} {rate:9.3f} {rate / mo:13.2f}")
    if not args.skip_naive:
        print(f"\nend to end (model loaded) / straightforward: {e2e / nv:.2f}x")
    if str(encoder.device) == "cpu" and encoder.dtype == torch.float32 and not args.skip_bf16:
        bf = load_encoder(str(model_dir), "cpu", "bfloat16")
        pix = torch.stack([encoder.preprocess(c.frames, s) for c, s, *_ in clips[:4]])
        t = time.perf_counter()
        vb = bf.embed_pixels(pix)
        tb = time.perf_counter() - t
        t = time.perf_counter()
        vf = encoder.embed_pixels(pix)
        tf = time.perf_counter() - t
        print(
            f"bf16 autocast vs fp32 on this CPU: {tf / tb:.2f}x faster, cosine min {np.sum(vb * vf, axis=1).min():.5f} "
            "(random weights; this CPU has no native bf16, so auto stays fp32)"
        )


if __name__ == "__main__":
    main()
