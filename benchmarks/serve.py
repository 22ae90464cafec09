"""The web app's latency against the Python API, side by side in one run, on the tiny test model.

Builds a library of synthetic videos (tests/helpers.py), indexes it, starts ``vidsearch serve``'s
app under uvicorn on a free port, and measures:

- search of a 5 s query: p50/p95 through the HTTP API (multipart upload) and through
  ``search_video`` in this process, and their ratio;
- a cached thumbnail's latency; the first (uncached) and a cached preview's latency;
- searches per second with 4 concurrent clients.

Usage: python benchmarks/serve.py [--videos 20] [--repeat 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()

    import httpx
    import torch  # noqa: F401  (before decord)
    import uvicorn
    from helpers import make_checkpoint, transcode, write_video

    from vidsearch.indexer.job import IndexOptions, index_paths
    from vidsearch.model.encoder import load_encoder
    from vidsearch.search.query import search_video
    from vidsearch.server.app import create_app
    from vidsearch.storage.stats import open_library

    root = Path(tempfile.mkdtemp(prefix="vidsearch-serve-bench-"))
    model = make_checkpoint(root / "model")
    videos = root / "videos"
    videos.mkdir()
    for i in range(args.videos):
        write_video(videos / f"v{i:03d}.mp4", seconds=12, fps=25, size=(320, 192), seed=100 + i)
    write_video(videos / "old.avi", seconds=12, fps=25, size=(320, 192), seed=99, codec="mpeg4")
    idx = root / "idx"
    index_paths(idx, [videos], IndexOptions(model=str(model), workers=2))
    query = transcode(videos / "v000.mp4", root / "query.mp4", start_s=3.0, end_s=8.0, size=(240, 144))

    app = create_app(idx, model=str(model), device="cpu", dtype="float32")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    data = query.read_bytes()
    client = httpx.Client(base_url=base, timeout=120)

    def http_search(c: httpx.Client = client) -> float:
        t = time.perf_counter()
        r = c.post("/api/search", files={"file": ("q.mp4", data, "video/mp4")})
        r.raise_for_status()
        return time.perf_counter() - t

    # the Python API in this process and the HTTP API, interleaved so that both see the same load
    encoder = load_encoder(str(model), "cpu", "float32")
    api_times, http_times = [], []
    with open_library(idx) as lib:
        search_video(lib, encoder, query)  # warm
        http_search()  # warm: the server loads its encoder
        for i in range(args.repeat):  # alternating which goes first
            if i % 2:
                http_times.append(http_search())
            t = time.perf_counter()
            search_video(lib, encoder, query)
            api_times.append(time.perf_counter() - t)
            if not i % 2:
                http_times.append(http_search())
    vid = client.get("/api/videos", params={"q": "v001"}).json()["videos"][0]["id"]
    client.get(f"/api/videos/{vid}/thumbnail", params={"t": 5})
    thumb = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        client.get(f"/api/videos/{vid}/thumbnail", params={"t": 5}).raise_for_status()
        thumb.append(time.perf_counter() - t)
    avi = client.get("/api/videos", params={"q": "old.avi"}).json()["videos"][0]["id"]
    t = time.perf_counter()
    client.get(f"/api/videos/{avi}/preview", params={"start": 2, "end": 8}).raise_for_status()
    first_preview = time.perf_counter() - t
    t = time.perf_counter()
    client.get(f"/api/videos/{avi}/preview", params={"start": 2, "end": 8}).raise_for_status()
    cached_preview = time.perf_counter() - t

    n = args.repeat * 2
    clients = [httpx.Client(base_url=base, timeout=300) for _ in range(4)]
    t = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: http_search(clients[i % 4]), range(n)))
    concurrent = n / (time.perf_counter() - t)
    server.should_exit = True

    flags = [f for f in ("avx2", "avx512f", "avx512_bf16") if f in Path("/proc/cpuinfo").read_text()]
    print(f"library: {args.videos + 1} videos of 12 s; query 5 s; tiny model; CPU flags {' '.join(flags)}")
    print(f"{'measure':<44} {'p50 ms':>9} {'p95 ms':>9}")
    for name, values in [
        ("search, Python API (search_video)", api_times),
        ("search, HTTP API (upload + search + JSON)", http_times),
        ("thumbnail, cached", thumb),
    ]:
        print(f"{name:<44} {1000 * statistics.median(values):>9.1f} {1000 * pct(values, 95):>9.1f}")
    ratio = statistics.median(http_times) / statistics.median(api_times)
    print(f"{'HTTP / Python API, median search time':<44} {ratio:>9.2f}x")
    print(
        f"first preview (6 s of an MPEG-4 AVI, transcoded): {1000 * first_preview:.0f} ms; "
        f"cached: {1000 * cached_preview:.1f} ms"
    )
    print(f"searches per second, 4 concurrent clients: {concurrent:.2f} (queries run one at a time)")


if __name__ == "__main__":
    main()
