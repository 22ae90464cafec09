"""Peak memory of an index run: a long 1080p video against a short one (decoding must stream).

Writes a 10-second and a 10-minute 1920x1080 H.264 video (textured, moving), indexes each with
a tiny VideoMAE in a fresh ``vidsearch index`` process, and samples the RSS of the whole process
tree (the job and its decode workers) every 0.1 s. Prints both peaks and their difference.

With ``--ray``, each run is ``vidsearch index --ray`` (a local Ray started by the job), and the
peaks are also given per role: the job (driver), the encoder actor, the decode task (its Ray
worker and its decode subprocess), and the rest of Ray (GCS, raylet, agents, idle workers).

Usage: python benchmarks/memory.py [--minutes 10] [--fps 25] [--workdir DIR] [--ray]
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


def _processes(titles: bool = False) -> tuple[dict[int, int], dict[int, int], dict[int, str]]:
    """Every process's parent and RSS in bytes (and command line, with ``titles``), from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    cmdlines: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if titles:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdlines[int(entry)] = f.read().replace(b"\0", b" ").decode(errors="replace")
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return parents, rss, cmdlines


def _tree(root: int, parents: dict[int, int]) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for p, parent in parents.items():
        children.setdefault(parent, []).append(p)
    found, stack = [], [root]
    while stack:
        p = stack.pop()
        found.append(p)
        stack += children.get(p, [])
    return found


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and all its descendants, from /proc."""
    parents, rss, _ = _processes()
    return sum(rss.get(p, 0) for p in _tree(pid, parents)) / 2**20


def _role(pid: int, root: int, parents: dict[int, int], titles: dict[int, str]) -> str:
    """What a process of the job's tree is, from its (Ray-set) title or its parent's."""
    if pid == root:
        return "job"
    title = titles.get(pid, "")
    if "ClipEncoder" in title:
        return "encoder actor"
    if "decode" in title or "decode" in titles.get(parents.get(pid, 0), ""):
        return "decode task"
    return "rest of Ray"


def roles_rss_mb(root: int) -> dict[str, float]:
    """RSS of ``root``'s process tree by role (see _role), from /proc."""
    parents, rss, titles = _processes(titles=True)
    out: dict[str, float] = {}
    for p in _tree(root, parents):
        role = _role(p, root, parents, titles)
        out[role] = out.get(role, 0.0) + rss.get(p, 0) / 2**20
    return out


def write_1080p(path: Path, seconds: float, fps: int) -> None:
    import av

    rng = np.random.default_rng(0)
    tiles = [
        np.repeat(np.repeat(rng.integers(0, 256, (34, 60, 3), dtype=np.uint8), 32, 0), 32, 1)[:1080, : 1920 + 64]
        for _ in range(8)
    ]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "28", "g": str(fps * 2)}
        for i in range(int(seconds * fps)):
            tile = tiles[(i // (fps * 3)) % len(tiles)]  # a new scene every 3 s, panning within it
            x = (i % (fps * 3)) * 64 // (fps * 3)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tile[:, x : x + 1920]), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def peak_index_rss(video: Path, model: Path, index: Path, on_ray: bool = False) -> tuple[float, float, dict]:
    cmd = [
        sys.executable,
        "-m",
        "vidsearch.cli",
        "-q",
        "index",
        str(video),
        "--index",
        str(index),
        "--model",
        str(model),
        *(["--ray"] if on_ray else ["--workers", "1"]),
    ]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peak = 0.0
    roles: dict[str, float] = {}
    while proc.poll() is None:
        if on_ray:
            now = roles_rss_mb(proc.pid)
            peak = max(peak, sum(now.values()))
            for role, mb in now.items():
                roles[role] = max(roles.get(role, 0.0), mb)
        else:
            peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(0.1)
    if proc.returncode:
        raise SystemExit(f"index failed ({proc.returncode}) on {video}")
    return peak, time.perf_counter() - t, roles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--videos", type=Path, default=None, help="reuse short.mp4 and long.mp4 written by an earlier run")
    ap.add_argument("--ray", action="store_true", help="index with --ray (needs vidsearch[ray]); peaks per role")
    args = ap.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import make_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="vidsearch-mem-", dir=args.workdir))
    model = make_checkpoint(tmp / "model", image_size=224)
    if args.videos:
        short, long = args.videos / "short.mp4", args.videos / "long.mp4"
    else:
        short, long = tmp / "short.mp4", tmp / "long.mp4"
        t = time.perf_counter()
        write_1080p(short, 10, args.fps)
        write_1080p(long, args.minutes * 60, args.fps)
        print(
            f"wrote 10 s and {args.minutes:g} min of 1920x1080 at {args.fps} fps in {time.perf_counter() - t:.0f}s "
            f"({long.stat().st_size / 1e6:.0f} MB)"
        )
    p_short, t_short, r_short = peak_index_rss(short, model, tmp / "idx-short", args.ray)
    p_long, t_long, r_long = peak_index_rss(long, model, tmp / "idx-long", args.ray)
    what = "local Ray" if args.ray else "decode worker"
    print(
        f"peak RSS, job + {what}: 10 s video {p_short:.0f} MB ({t_short:.0f}s); "
        f"{args.minutes:g} min video {p_long:.0f} MB ({t_long:.0f}s); difference {p_long - p_short:+.0f} MB"
    )
    for role in sorted(r_long):
        short_mb, long_mb = r_short.get(role, 0.0), r_long[role]
        print(f"  {role}: {short_mb:.0f} MB / {long_mb:.0f} MB, difference {long_mb - short_mb:+.0f} MB")


if __name__ == "__main__":
    main()
