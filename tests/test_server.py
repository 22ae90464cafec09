"""The web app's JSON API on the tiny model: every endpoint, its error paths, Range requests, and
its security rules (token, same origin, ids only, bounded uploads, nothing leaked)."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import socket
import tempfile
import threading
import time

import numpy as np
import pytest
from helpers import SERIES_THRESHOLD, transcode, write_video

pytest.importorskip("fastapi", reason="the `serve` extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from vidsearch.server.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory, vs):
    """An index of three videos (one a re-encoded copy of another, one an MPEG-4 MKV that
    browsers cannot play) and a client for the app over it."""
    root = tmp_path_factory.mktemp("server")
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", seconds=8, fps=25, size=(160, 96), seed=31)
    write_video(videos / "c.mkv", seconds=6, fps=24, size=(176, 144), seed=33, codec="mpeg4")
    transcode(videos / "a.mp4", videos / "a-copy.mp4", size=(128, 80))
    idx = root / "idx"
    r = vs.index(videos, idx)
    assert r.exit_code == 0, r.output
    client = TestClient(create_app(idx, model=str(vs.model)), base_url="http://127.0.0.1:8765")
    ids = {os.path.basename(v["path"]): v["id"] for v in client.get("/api/videos").json()["videos"]}
    return client, idx, videos, ids


def test_status_is_stats_and_the_running_jobs_progress(served):
    from vidsearch.storage.progress import JobProgress, write_progress

    client, idx, _, _ = served
    doc = client.get("/api/status").json()
    assert doc["schema_version"] == 1 and doc["videos_indexed"] == 3 and doc["clips"] > 0
    assert doc["job"] is None and "index" not in doc  # the server's own path is not sent
    live = JobProgress(2, 5, 40, 3.5, 12.0, time.time(), os.getpid(), socket.gethostname())
    write_progress(idx, live)
    try:
        job = client.get("/api/status").json()["job"]
        assert job["videos_done"] == 2 and job["videos_total"] == 5 and job["eta_s"] == 12.0
        assert "pid" not in job
        dead = JobProgress(2, 5, 40, 3.5, 12.0, time.time(), 2**22 + 12345, socket.gethostname())
        write_progress(idx, dead)  # a killed job's file: its process is gone
        assert client.get("/api/status").json()["job"] is None
    finally:
        os.unlink(idx / "progress.json")


def test_index_job_writes_progress_and_removes_it_at_the_end(tmp_path, vs, monkeypatch):
    import vidsearch.storage.progress as progress

    seen = []
    real = progress.write_progress
    monkeypatch.setattr(progress, "write_progress", lambda root, p: (seen.append(p), real(root, p)))
    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(3):
        write_video(folder / f"{i}.mp4", seconds=2, seed=50 + i)
    r = vs.index(folder, tmp_path / "idx")
    assert r.exit_code == 0, r.output
    assert seen and seen[-1].videos_done == 3 and seen[-1].videos_total == 3 and seen[-1].clips == 3
    assert not (tmp_path / "idx" / "progress.json").exists()


def test_search_by_upload_finds_the_source_and_its_copy(served, tmp_path):
    client, _, videos, ids = served
    query = transcode(videos / "a.mp4", tmp_path / "clip.mp4", start_s=2.3, end_s=6.3, size=(120, 72))
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "vidsearch-query-*")))
    with open(query, "rb") as f:
        r = client.post("/api/search", files={"file": ("holiday clip.mp4", f, "video/mp4")}, data={"k": "5"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["schema_version"] == 1 and doc["query"] == "holiday clip.mp4"
    top = [os.path.basename(m["path"]) for m in doc["results"][:2]]
    assert sorted(top) == ["a-copy.mp4", "a.mp4"]
    best = doc["results"][0]
    assert best["video_id"] == ids[top[0]] and best["duration_s"] == pytest.approx(8.0, abs=0.1)
    seg = best["segments"][0]
    assert seg["library_start"] <= 2.3 + 1.0 and seg["library_end"] >= 6.3 - 1.0
    assert seg["thumbnail"] == f"/api/videos/{best['video_id']}/thumbnail?t={seg['library_start']}"
    assert client.get(seg["thumbnail"]).headers["content-type"] == "image/jpeg"
    assert "vidsearch-query-" not in r.text  # the upload's temporary file is not named
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "vidsearch-query-*"))) == before  # upload deleted


def test_search_by_indexed_range(served):
    client, _, _, ids = served
    r = client.post("/api/search", json={"video_id": ids["a.mp4"], "start": 2, "end": 6, "k": 3})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["video_id"] == ids["a-copy.mp4"]  # itself is left out
    assert all(m["video_id"] != ids["a.mp4"] for m in results)


def grab_frame(path, t: float):
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for frame in c.decode(s):
            if frame.time >= t:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError("no frame")


def test_a_still_frame_finds_its_video_and_time(served, tmp_path, vs):
    from PIL import Image

    client, idx, videos, ids = served
    still = tmp_path / "still.png"
    Image.fromarray(grab_frame(videos / "c.mkv", 3.5)).save(still)
    with open(still, "rb") as f:
        doc = client.post("/api/search", files={"file": ("still.png", f, "image/png")}).json()
    assert doc["query_clips"] == 1 and doc["query_end"] == pytest.approx(2.0)  # one static clip
    best = doc["results"][0]
    assert best["video_id"] == ids["c.mkv"]
    seg = best["segments"][0]
    assert seg["library_start"] <= 3.5 <= seg["library_end"]
    r = vs("search", still, "--index", idx, "--json")  # the CLI takes images the same way
    assert r.exit_code == 0, r.output
    assert os.path.basename(json.loads(r.output)["queries"][0]["results"][0]["path"]) == "c.mkv"


def test_bad_uploads_and_arguments_are_400_with_one_line(served):
    client, _, _, ids = served
    r = client.post("/api/search", files={"file": ("notes.mp4", b"not a video at all\n" * 50, "video/mp4")})
    assert r.status_code == 400
    error = r.json()["error"]
    assert "\n" not in error and "not a decodable video" in error and "vidsearch-query-" not in error
    assert client.post("/api/search", json={"video_id": ids["a.mp4"], "start": 5, "end": 2}).status_code == 400
    assert client.post("/api/search", json={"video_id": ids["a.mp4"], "k": 0}).status_code == 400
    assert client.post("/api/search", json={"video_id": 999999}).status_code == 404
    assert client.post("/api/search", content=b"x", headers={"content-type": "text/plain"}).status_code == 400


def test_video_list_filter_pages_and_details(served):
    client, _, _, ids = served
    doc = client.get("/api/videos", params={"q": "A-COPY"}).json()
    assert doc["total"] == 1 and doc["videos"][0]["id"] == ids["a-copy.mp4"]
    page = client.get("/api/videos", params={"offset": 1, "limit": 1}).json()
    assert page["total"] == 3 and len(page["videos"]) == 1
    one = client.get(f"/api/videos/{ids['a.mp4']}").json()
    assert one["width"] == 160 and one["height"] == 96 and len(one["clips"]) == 4
    assert one["clips"][0] == {"start": 0.0, "end": pytest.approx(1.96, abs=0.05)} or one["clips"][0]["start"] == 0
    assert one["stream"] == f"/api/videos/{ids['a.mp4']}/stream"
    assert client.get(f"/api/videos/{ids['c.mkv']}").json()["stream"] is None  # MPEG-4 in MKV: preview only
    assert client.get("/api/videos/424242").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/api/videos/..%2F..%2F..%2Fetc%2Fpasswd/stream",
        "/api/videos/%2Fetc%2Fpasswd/stream",
        "/api/videos/-1/thumbnail",
        "/api/videos/1e3/stream",
        "/api/videos/99999999999999999999999/stream",
        "/static/..%2F..%2Fapp.py",
        "/static/%2E%2E/app.py",
    ],
)
def test_paths_sent_by_clients_are_never_opened(served, url):
    client, _, _, _ = served
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code, r.text[:200])
    assert "root:" not in r.text and "import" not in r.text


def test_thumbnails_are_cached_on_disk(served):
    client, idx, _, ids = served
    url = f"/api/videos/{ids['a.mp4']}/thumbnail?t=4.2"
    r = client.get(url)
    assert r.status_code == 200 and r.content[:3] == b"\xff\xd8\xff"
    from PIL import Image

    assert Image.open(io.BytesIO(r.content)).size[1] == 144
    cached = list((idx / "cache" / "thumbs").glob(f"{ids['a.mp4']}-*-4200.jpg"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert client.get(url).content == r.content and cached[0].stat().st_mtime_ns == stamp


def test_stream_serves_byte_ranges(served):
    client, _, videos, ids = served
    data = (videos / "a.mp4").read_bytes()
    url = f"/api/videos/{ids['a.mp4']}/stream"
    full = client.get(url)
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4" and full.content == data
    n = len(data)
    for lo, hi in [(0, 99), (n // 2, n // 2 + 1000), (n - 50, n - 1)]:
        r = client.get(url, headers={"Range": f"bytes={lo}-{hi}"})
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes {lo}-{hi}/{n}"
        assert r.content == data[lo : hi + 1]
    assert client.get(f"/api/videos/{ids['c.mkv']}/stream").status_code == 404  # a browser cannot play it


def test_preview_is_browser_playable_and_cut_to_the_range(served):
    import av

    client, idx, _, ids = served
    r = client.get(f"/api/videos/{ids['c.mkv']}/preview", params={"start": 1.0, "end": 3.0})
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(r.content)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        frames = [f.time for f in c.decode(s)]
    assert len(frames) == 48  # 2 s at 24 fps
    assert frames[0] == pytest.approx(0.0, abs=0.05)
    assert len(list((idx / "cache" / "previews").glob("*.mp4"))) == 1
    assert client.get(f"/api/videos/{ids['c.mkv']}/preview", params={"start": 3, "end": 2}).status_code == 400


def test_dupes_gives_pairs_and_groups_with_ids(served):
    client, _, _, ids = served
    doc = client.get("/api/dupes", params={"groups": "true", "threshold": 0.95}).json()
    assert doc["schema_version"] == 1
    pairs = {frozenset((p["a_id"], p["b_id"])) for p in doc["pairs"]}
    assert pairs == {frozenset((ids["a.mp4"], ids["a-copy.mp4"]))}
    assert [sorted(v["id"] for v in g["videos"]) for g in doc["groups"]] == [sorted((ids["a.mp4"], ids["a-copy.mp4"]))]
    assert {v["codec"] for v in doc["groups"][0]["videos"]} == {"h264"}
    assert client.get("/api/dupes", params={"threshold": 2}).status_code == 422


def test_common_footage_is_marked_in_search_and_listed_apart_in_dupes(series_library, vs):
    """12 unrelated episodes open with one intro: the dupes pass stores it as common, search marks
    matches on it and keeps them last, and each common segment can be previewed like any other."""
    idx, _, query = series_library
    with TestClient(create_app(idx, model=str(vs.model)), base_url="http://127.0.0.1:8765") as client:
        ids = {os.path.basename(v["path"]): v["id"] for v in client.get("/api/videos").json()["videos"]}
        doc = client.get("/api/dupes", params={"threshold": SERIES_THRESHOLD}).json()
        with open(query, "rb") as f:
            intro = client.post("/api/search", files={"file": ("intro.mp4", f, "video/mp4")}, data={"k": "20"}).json()
        mixed = client.post("/api/search", json={"video_id": ids["ep03.mp4"], "start": 2, "end": 8, "k": 20}).json()
    assert (doc["common_min_videos"], doc["common_clips"]) == (5, 13 * 2)
    [pair] = doc["pairs"]
    assert {pair["a_id"], pair["b_id"]} == {ids["ep03.mp4"], ids["ep03-copy.mp4"]}
    assert [(s["a_start"], s["a_end"], s["b_start"], s["b_end"]) for s in pair["segments"]] == [(4.0, 8.0, 4.0, 8.0)]
    assert [(s["a_start"], s["a_end"], s["b_start"], s["b_end"]) for s in pair["common_segments"]] == [
        (0.0, 4.0, 0.0, 4.0)
    ]
    assert sorted(m["video_id"] for m in intro["results"]) == sorted(ids.values())
    for m in intro["results"]:
        assert m["common"] and m["appears_in"] == 13, m
        first, vid = m["common_segments"][0], m["video_id"]
        assert (first["library_start"], first["library_end"]) == (0.0, 4.0)
        assert first["thumbnail"] == f"/api/videos/{vid}/thumbnail?t=0.0"
        assert first["preview"] == f"/api/videos/{vid}/preview?start=0.0&end=4.0"
    # the query's own footage makes the copy an ordinary match, first; its intro is listed apart
    copy = mixed["results"][0]
    assert copy["video_id"] == ids["ep03-copy.mp4"] and not copy["common"] and copy["appears_in"] == 13
    assert copy["segments"][0]["library_start"] <= 4.0 and copy["segments"][0]["library_end"] == 8.0
    assert (copy["common_segments"][0]["library_start"], copy["common_segments"][0]["library_end"]) == (0.0, 4.0)
    flags = [m["common"] for m in mixed["results"]]
    assert flags == sorted(flags) and flags[-1], "a common match ranked above an ordinary one"


def test_metrics_count_requests_per_route(served):
    client, _, _, _ = served
    client.get("/api/status")
    text = client.get("/metrics").text
    assert 'vidsearch_requests_total{method="GET",route="/api/status",status="200"}' in text
    assert "vidsearch_request_seconds_bucket" in text and "vidsearch_index_clips" in text


def test_openapi_documents_the_api(served):
    client, _, _, _ = served
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/status", "/api/search", "/api/videos", "/api/videos/{video_id}/stream", "/api/dupes"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_a_bug_is_a_500_with_nothing_leaked(served, monkeypatch):
    import vidsearch.storage.stats as stats

    client, idx, _, _ = served

    def explode(lib):  # noqa: ARG001
        raise RuntimeError(f"boom at {idx}")

    monkeypatch.setattr(stats, "library_stats", explode)
    client = TestClient(client.app, base_url="http://127.0.0.1:8765", raise_server_exceptions=False)
    r = client.get("/api/status")
    assert r.status_code == 500 and r.json() == {"error": "internal error (see the server's log)"}


def test_token_guards_everything_but_the_login_page(served):
    _, idx, _, _ = served
    client = TestClient(create_app(idx, token="s3cret"), base_url="http://127.0.0.1:8765")
    assert client.get("/api/status").status_code == 401
    assert client.get("/metrics").status_code == 401
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert client.get("/api/status", headers={"X-Vidsearch-Token": "wrong"}).status_code == 401
    assert client.get("/api/status", headers={"X-Vidsearch-Token": "s3cret"}).status_code == 200
    assert client.get("/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    bad = client.post("/login", data={"token": "nope"}, headers={"Origin": "http://127.0.0.1:8765"})
    assert bad.status_code == 401
    ok = client.post(
        "/login", data={"token": "s3cret"}, headers={"Origin": "http://127.0.0.1:8765"}, follow_redirects=False
    )
    assert ok.status_code == 303 and "vidsearch_token" in ok.headers["set-cookie"]
    assert "HttpOnly" in ok.headers["set-cookie"]
    assert client.get("/api/status").status_code == 200  # the cookie now


def test_state_changes_must_come_from_the_same_origin(served):
    client, _, _, ids = served
    body = {"video_id": ids["a.mp4"], "k": 1}
    evil = client.post("/api/search", json=body, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    site = client.post("/api/search", json=body, headers={"Sec-Fetch-Site": "cross-site"})
    assert site.status_code == 403
    assert client.post("/api/search", json=body, headers={"Origin": "http://127.0.0.1:8765"}).status_code == 200


def test_off_loopback_needs_a_token(served, vs):
    _, idx, _, _ = served
    r = vs("serve", "--index", idx, "--host", "0.0.0.0")
    assert r.exit_code == 2 and "needs an access token" in r.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_upload_limit_is_enforced_while_the_body_streams(served):
    """A real server: an upload past the limit is refused as soon as the limit is passed, while
    the client has more to send; it does not wait for (or store) the whole body."""
    import httpx
    import uvicorn

    _, idx, _, _ = served
    app = create_app(idx, max_upload_mb=0.25)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            head = (
                "POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            )
            sock.sendall(head.encode())
            part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            chunk = b"\0" * 50_000
            for _ in range(8):  # 400 kB of a body that would go on: the rest is never sent
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            reply = ""
            while "}" not in reply and (data := sock.recv(65536)):
                reply += data.decode(errors="replace")
        assert reply.startswith("HTTP/1.1 413"), reply[:200]
        assert "larger than 0.25 MB" in reply
        declared = httpx.post(
            f"http://127.0.0.1:{port}/api/search",
            content=b"\0" * 400_000,
            headers={"content-type": "multipart/form-data; boundary=b"},
            timeout=30,
        )
        assert declared.status_code == 413  # a declared Content-Length over the limit: refused before reading
    finally:
        server.should_exit = True
        thread.join(10)


def test_serve_command_without_the_extra_says_how_to_get_it(served, vs, monkeypatch):
    import builtins

    _, idx, _, _ = served
    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    r = vs("serve", "--index", idx)
    assert r.exit_code == 2 and "pip install 'vidsearch[serve]'" in r.output


def test_a_missing_file_is_404_not_a_server_path(served, tmp_path):
    client, idx, videos, ids = served
    moved = tmp_path / "moved.mp4"
    shutil.move(videos / "a-copy.mp4", moved)
    try:
        r = client.get(f"/api/videos/{ids['a-copy.mp4']}/stream")
        assert r.status_code == 404 and str(videos) not in r.text
    finally:
        shutil.move(moved, videos / "a-copy.mp4")


def test_frames_are_what_the_encoder_saw(served):
    # the still reader repeats one frame over the window: every frame of its clip is identical
    from vidsearch.media.readers import iter_clips, open_video
    from vidsearch.media.windows import plan_clips
    from vidsearch.settings import FrameSize

    _, _, videos, _ = served
    from PIL import Image

    path = os.path.join(tempfile.mkdtemp(), "f.jpg")
    Image.fromarray(grab_frame(videos / "a.mp4", 1.0)).save(path)
    with open_video(path, FrameSize(64), still_seconds=2.0) as reader:
        assert reader.info.backend == "pillow" and reader.info.duration_s == 2.0
        clips = list(iter_clips(reader, plan_clips(reader.frame_times, 16, 2.0, 1.0)))
    assert len(clips) == 1 and clips[0].frames.shape == (16, 64, 106, 3)
    assert np.all(clips[0].frames == clips[0].frames[0])
    with pytest.raises(Exception, match="still image"):
        open_video(path, FrameSize(64))  # indexing refuses stills


def test_decisions_survive_a_move_and_a_reindex_and_dismissed_pairs_leave_dupes(tmp_path, vs):
    from vidsearch.server.app import create_app

    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", seconds=6, fps=25, size=(160, 96), seed=61)
    transcode(videos / "a.mp4", videos / "b.mp4", size=(128, 80))
    idx = tmp_path / "idx"
    assert vs.index(videos, idx).exit_code == 0
    client = TestClient(create_app(idx), base_url="http://127.0.0.1:8765")
    ids = {os.path.basename(v["path"]): v["id"] for v in client.get("/api/videos").json()["videos"]}
    assert len(client.get("/api/dupes", params={"threshold": 0.95}).json()["pairs"]) == 1
    origin = {"Origin": "http://127.0.0.1:8765"}
    bad = client.post("/api/decisions", json={"a": ids["a.mp4"], "b": ids["b.mp4"], "verdict": "meh"}, headers=origin)
    assert bad.status_code == 400 and "verdict" in bad.json()["error"]
    assert client.post("/api/decisions", json={"a": ids["a.mp4"], "b": 999, "verdict": "same"}).status_code == 404
    r = client.post(
        "/api/decisions", json={"a": ids["a.mp4"], "b": ids["b.mp4"], "verdict": "keep_both"}, headers=origin
    )
    assert r.status_code == 200 and r.json()["verdict"] == "keep_both"
    doc = client.get("/api/dupes", params={"threshold": 0.95}).json()
    assert doc["pairs"] == [] and doc["hidden_by_decisions"] == 1

    os.rename(videos / "b.mp4", videos / "moved-b.mp4")  # a move, then a re-index that notices it
    assert vs.index(videos, idx).exit_code == 0
    assert vs("reindex", "--index", idx, "--spec", "IDMap2,Flat").exit_code == 0
    doc = client.get("/api/dupes", params={"threshold": 0.95}).json()
    assert doc["pairs"] == [] and doc["hidden_by_decisions"] == 1
    listed = client.get("/api/decisions").json()["decisions"]
    assert [(os.path.basename(d["a"]), os.path.basename(d["b"]), d["verdict"]) for d in listed] in (
        [("a.mp4", "moved-b.mp4", "keep_both")],
        [("moved-b.mp4", "a.mp4", "keep_both")],
    )
