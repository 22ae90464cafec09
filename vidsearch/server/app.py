"""The web app: a JSON API over one index, and the pages in ``static/`` that use it.

One process serves one index. It opens the index as a reader (one catalog snapshot a request; the
FAISS index is reloaded when an index job commits), loads the index's encoder once, on the first
query, and runs queries one at a time. Files are only ever read by video id: no path a client
sends is opened. Errors reach clients as ``{"error": "..."}`` with no traceback and no server path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import ipaddress
import logging
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from vidsearch import render
from vidsearch.errors import (
    CorruptIndexError,
    DecodeError,
    IncompatibleIndexError,
    IndexNotFoundError,
    InvalidArgumentError,
    ModelUnavailableError,
    VideoNotFoundError,
    VidsearchError,
)
from vidsearch.server import media
from vidsearch.storage.catalog import STATUS_INDEXED, StoredVideo
from vidsearch.storage.library import Library
from vidsearch.storage.progress import read_progress

log = logging.getLogger(__name__)

TOKEN_COOKIE = "vidsearch_token"
TOKEN_HEADER = "x-vidsearch-token"
#: HTTP status for each error class a request can meet
_STATUS = {
    InvalidArgumentError: 400,
    DecodeError: 400,
    VideoNotFoundError: 404,
    IndexNotFoundError: 503,
    IncompatibleIndexError: 503,
    CorruptIndexError: 503,
    ModelUnavailableError: 503,
}


class UploadTooLarge(Exception):
    pass


class _BodyLimit:
    """Counts a request's body as it arrives and stops it past ``limit`` bytes: an upload is
    refused while it streams, not after it has been written out."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise UploadTooLarge
            return message

        await self.app(scope, counted, send)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _State:
    root: Path
    model: str | None
    device: str
    dtype: str
    token: str | None
    max_upload_bytes: int
    lock: threading.RLock = field(default_factory=threading.RLock)
    lib: Library | None = None
    manifest_mtime: int = -1
    encoder: Any = None
    codecs: dict[int, str | None] = field(default_factory=dict)

    def library(self) -> Library:
        """The open index, reopened when its manifest changes (calibrate, reindex)."""
        mtime = (self.root / "manifest.json").stat().st_mtime_ns
        if self.lib is None or mtime != self.manifest_mtime:
            if self.lib is not None:
                self.lib.close()
            self.lib = Library.open(self.root)
            self.manifest_mtime = mtime
        return self.lib

    def load_encoder(self, lib: Library):
        if self.encoder is None:
            from vidsearch.model.encoder import load_encoder

            self.encoder = load_encoder(self.model or lib.manifest.encoder.model, self.device, self.dtype)
        lib.check_compatible(self.encoder.settings)
        return self.encoder

    def close(self) -> None:
        if self.lib is not None:
            self.lib.close()
            self.lib = None


def create_app(
    index_dir: str | os.PathLike,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    token: str | None = None,
    max_upload_mb: float = 500,
) -> FastAPI:
    """The ASGI app for the index at ``index_dir`` (opened now: a missing or damaged index fails here)."""
    root = Path(index_dir).resolve()
    state = _State(root, model, device, dtype, token, int(max_upload_mb * 1024 * 1024))
    state.library()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.close()

    app = FastAPI(
        title="vidsearch",
        version=_version(),
        lifespan=lifespan,
        description="Search a video library by example, review matches, clear duplicates.",
    )
    app.state.vidsearch = state
    # multipart boundaries and the form's small fields on top of the file itself
    app.add_middleware(_BodyLimit, limit=state.max_upload_bytes + 64 * 1024)
    registry = CollectorRegistry()
    requests = Counter("vidsearch_requests", "HTTP requests", ["route", "method", "status"], registry=registry)
    latency = Histogram("vidsearch_request_seconds", "HTTP request latency", ["route"], registry=registry)
    queries = Counter("vidsearch_queries", "searches served", registry=registry)
    clips_gauge = Gauge("vidsearch_index_clips", "clips in the index", registry=registry)
    videos_gauge = Gauge("vidsearch_index_videos", "indexed videos", registry=registry)

    # ---- middleware: body limit, token, same-origin, metrics --------------------------------

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        if state.token and not _public(path) and not _authorised(request, state.token):
            if path.startswith("/api/") or path == "/metrics":
                return JSONResponse({"error": "a token is required (header X-Vidsearch-Token)"}, status_code=401)
            return RedirectResponse("/login", status_code=303)
        if request.method not in ("GET", "HEAD", "OPTIONS") and not _same_origin(request):
            return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > state.max_upload_bytes:
            return JSONResponse({"error": f"upload larger than {_mb(state.max_upload_bytes)}"}, status_code=413)
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "other")
        requests.labels(name, request.method, str(response.status_code)).inc()
        latency.labels(name).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(VidsearchError)
    async def vidsearch_error(request: Request, exc: VidsearchError):
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
        message = exc.reason if isinstance(exc, DecodeError) else str(exc)
        return JSONResponse({"error": _scrub(message, state)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": problems or "bad request"}, status_code=422)

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, exc: UploadTooLarge):
        return JSONResponse({"error": f"upload larger than {_mb(state.max_upload_bytes)}"}, status_code=413)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.exception("internal error serving %s", request.url.path)
        return JSONResponse({"error": "internal error (see the server's log)"}, status_code=500)

    # ---- pages --------------------------------------------------------------------------------

    static = files("vidsearch.server") / "static"

    @app.get("/", include_in_schema=False)
    def index_page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text())

    @app.get("/login", include_in_schema=False)
    def login_page() -> HTMLResponse:
        return HTMLResponse((static / "login.html").read_text())

    @app.post("/login", include_in_schema=False)
    async def login(request: Request):
        form = await request.form()
        given = str(form.get("token", ""))
        if not state.token or not hmac.compare_digest(given, state.token):
            return HTMLResponse((static / "login.html").read_text(), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
        return response

    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    # ---- API ----------------------------------------------------------------------------------

    def body(doc: dict[str, Any]) -> dict[str, Any]:
        return {"schema_version": render.JSON_SCHEMA_VERSION, **doc}

    def video_or_404(lib: Library, video_id: int | str):
        """The catalog's video with this id; anything else (a path, `..`, a number out of range) is 404."""
        if isinstance(video_id, str):
            if not video_id.isdigit() or len(video_id) > 18:
                raise HTTPException(404, "no such video")
            video_id = int(video_id)
        with lib.catalog.read() as s:
            video = lib.catalog.video_by_id(s, video_id)
        if video is None:
            raise HTTPException(404, "no such video")
        return video

    def file_of(video) -> str:
        path = video.display_path
        if video.status != STATUS_INDEXED or not os.path.isfile(path):
            raise HTTPException(404, "the video's file is not there")
        return path

    def video_json(video) -> dict[str, Any]:
        return {
            "id": video.id,
            "path": video.display_path,
            "name": os.path.basename(video.display_path),
            "status": video.status,
            "error": video.error,
            "duration_s": video.duration_s,
            "size_bytes": video.size,
            "width": video.width,
            "height": video.height,
            "fps": video.fps,
            "fingerprint": video.fingerprint,
            "thumbnail": f"/api/videos/{video.id}/thumbnail",
        }

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        """What `vidsearch stats --json` says, and the running index job's progress (or null)."""
        from vidsearch.storage.stats import library_stats

        with state.lock:
            st = library_stats(state.library())
        clips_gauge.set(st.clips)
        videos_gauge.set(st.videos_indexed)
        doc = render.stats_body(st)
        doc.pop("index", None)
        progress = read_progress(state.root)
        job = None if progress is None else dataclasses.asdict(progress)
        if job is not None:
            del job["pid"], job["host"]
        doc["job"] = job
        return body(doc)

    @app.post("/api/search")
    async def search(request: Request) -> dict[str, Any]:
        """A query video or image as a multipart upload (field `file`, optional `start`, `end`,
        `k`), or JSON `{video_id, start, end, k}` for a range of an indexed video."""
        from vidsearch.search.query import search_video

        ctype = request.headers.get("content-type", "")
        upload: str | None = None
        try:
            if ctype.startswith("multipart/form-data"):
                upload, name, args = await _receive_upload(request, state)
                query = upload
            elif ctype.startswith("application/json"):
                args = await request.json()
                if not isinstance(args, dict) or "video_id" not in args:
                    raise InvalidArgumentError("JSON body needs video_id (and optional start, end, k)")
                with state.lock:
                    video = video_or_404(state.library(), _int(args["video_id"], "video_id"))
                query, name = video.display_path, video.display_path
            else:
                raise InvalidArgumentError("send a multipart upload (field `file`) or JSON {video_id, start, end}")
            start, end = _float(args.get("start"), "start"), _float(args.get("end"), "end")
            k = _int(args.get("k", 10), "k")
            if not 1 <= k <= 100:
                raise InvalidArgumentError("k must be between 1 and 100")
            if start is not None and end is not None and end <= start:
                raise InvalidArgumentError("end must be after start")
            with state.lock:
                lib = state.library()
                encoder = state.load_encoder(lib) if os.path.exists(query) else None
                try:
                    result = search_video(lib, encoder, query, start=start, end=end, k=k)
                except DecodeError as exc:  # said of the upload's name, not of its temporary file
                    raise DecodeError(name, exc.reason.replace(query, name)) from None
            queries.inc()
        finally:
            if upload is not None:
                os.unlink(upload)
        result.query = name
        doc = render.search_body([result], raw_clips=False, k=k)["queries"][0]
        with state.lock:
            lib = state.library()
            with lib.catalog.read() as s:
                found = lib.catalog.videos(s, ids=[m.video_id for m in result.matches])
        durations = {v.id: v.duration_s for v in found}
        for match in doc["results"]:
            vid = match["video_id"]
            match["duration_s"] = durations.get(vid)
            match["thumbnail"] = f"/api/videos/{vid}/thumbnail"
            for seg in match["segments"] + match["common_segments"]:
                seg["thumbnail"] = f"/api/videos/{vid}/thumbnail?t={seg['library_start']}"
                seg["preview"] = f"/api/videos/{vid}/preview?start={seg['library_start']}&end={seg['library_end']}"
        return body(doc)

    @app.get("/api/videos")
    def videos(offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=1000), q: str = "") -> dict[str, Any]:
        """The indexed and failed videos, by id; `q` keeps those whose path contains it."""
        with state.lock:
            lib = state.library()
            with lib.catalog.read() as s:
                rows = lib.catalog.videos(s)
        if q:
            needle = q.lower()
            rows = [v for v in rows if needle in v.display_path.lower()]
        return body({"total": len(rows), "videos": [video_json(v) for v in rows[offset : offset + limit]]})

    @app.get("/api/videos/{video_id}")
    def video(video_id: str) -> dict[str, Any]:
        """A video's metadata and clips, and where a browser can play it."""
        with state.lock:
            lib = state.library()
            v = video_or_404(lib, video_id)
            with lib.catalog.read() as s:
                clips = lib.catalog.clips_of(s, v.id)
        doc = video_json(v)
        doc["clips"] = [{"start": round(a, 3), "end": round(b, 3)} for _, a, b in clips]
        playable = _playable(state, v)
        doc["stream"] = f"/api/videos/{v.id}/stream" if playable else None
        doc["preview"] = f"/api/videos/{v.id}/preview"
        return body(doc)

    @app.get("/api/videos/{video_id}/thumbnail", response_class=FileResponse)
    def thumbnail(video_id: str, t: float = Query(0.0, ge=0, le=1e7)):
        """A JPEG of the frame at `t` seconds, cached under the index's cache/ folder."""
        with state.lock:
            v = video_or_404(state.library(), video_id)
        path = file_of(v)
        cache = state.root / "cache" / "thumbs" / f"{v.id}-{v.fingerprint[:16]}-{int(round(t * 1000))}.jpg"
        return FileResponse(media.thumbnail(path, t, cache), media_type="image/jpeg")

    @app.get("/api/videos/{video_id}/stream", response_class=FileResponse)
    def stream(video_id: str):
        """The file itself, for what browsers play (MP4/H.264, WebM): HTTP Range for seeking."""
        with state.lock:
            v = video_or_404(state.library(), video_id)
        path = file_of(v)
        kind = _playable(state, v)
        if kind is None:
            raise HTTPException(404, "a browser cannot play this file; use its preview")
        return FileResponse(path, media_type=kind)

    @app.get("/api/videos/{video_id}/preview", response_class=FileResponse)
    def preview(video_id: str, start: float = Query(0.0, ge=0, le=1e7), end: float | None = Query(None, gt=0)):
        """An H.264 MP4 of [start, end] (at most two minutes) that any browser plays, made once."""
        with state.lock:
            v = video_or_404(state.library(), video_id)
        path = file_of(v)
        stop = min(end if end is not None else start + media.PREVIEW_MAX_S, start + media.PREVIEW_MAX_S)
        if stop <= start:
            raise HTTPException(400, "end must be after start")
        name = f"{v.id}-{v.fingerprint[:16]}-{int(start * 1000)}-{int(stop * 1000)}.mp4"
        made = media.preview(path, start, stop, state.root / "cache" / "previews" / name)
        return FileResponse(made, media_type="video/mp4")

    @app.get("/api/dupes")
    def dupes(threshold: float | None = Query(None, gt=0, le=1), groups: bool = False) -> dict[str, Any]:
        """What `vidsearch dupes --format json` says: the pairs, and with `groups` the groups too,
        each video with its id."""
        from vidsearch.search.duplicates import find_duplicates

        with state.lock:
            report = find_duplicates(state.library(), threshold=threshold)
        doc = render.dupes_body(report, groups=False)
        if groups:
            doc["groups"] = render.dupes_body(report, groups=True)["groups"]
        by_path = _indexed_by_path(state)
        for pair in doc.get("pairs", []):
            pair["a_id"], pair["b_id"] = (getattr(by_path.get(pair[k]), "id", None) for k in "ab")
        for group in doc.get("groups", []):
            for v in group["videos"]:
                stored = by_path.get(v["path"])
                v["id"] = None if stored is None else stored.id
                if stored is not None:
                    _playable(state, stored)  # probes the codec once
                    v["codec"] = state.codecs.get(stored.id)
        return body(doc)

    @app.post("/api/decisions")
    async def record_decision(request: Request) -> dict[str, Any]:
        """Record a verdict `{a, b, verdict}` (video ids; `same`, `not_a_match` or `keep_both`),
        the store `vidsearch decide` uses: dismissed pairs leave the duplicates list."""
        from vidsearch.storage.decisions import decide, export_decisions

        args = await request.json()
        if not isinstance(args, dict) or not {"a", "b", "verdict"} <= set(args):
            raise InvalidArgumentError("JSON body needs a, b (video ids) and verdict")
        with state.lock:
            lib = state.library()
            va, vb = (video_or_404(lib, str(args[k])) for k in "ab")
            decision = decide(lib, va.display_path, vb.display_path, str(args["verdict"]))
        return body(export_decisions([decision])["decisions"][0])

    @app.get("/api/decisions")
    def decisions() -> dict[str, Any]:
        """Every verdict recorded on this index, oldest first (`vidsearch decisions --json`)."""
        from vidsearch.storage.decisions import export_decisions, list_decisions

        with state.lock:
            return body(export_decisions(list_decisions(state.library())))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _version() -> str:
    from vidsearch import __version__

    return __version__


def _public(path: str) -> bool:
    return path in ("/login",) or path.startswith("/static/")


def _authorised(request: Request, token: str) -> bool:
    given = request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE) or ""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:]
    return bool(given) and hmac.compare_digest(given, token)


def _same_origin(request: Request) -> bool:
    """A state change must come from this app's own pages: its Origin (or Referer) is our host."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if origin is None:
        # not a browser's cross-site request (browsers send Origin with every cross-site POST)
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def _receive_upload(request: Request, state: _State) -> tuple[str, str, dict[str, Any]]:
    """The uploaded query in a temporary file (the caller deletes it), its name, the other fields."""
    limit = state.max_upload_bytes
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidArgumentError("the upload needs a `file` field")
    name = os.path.basename(upload.filename or "upload")
    fd, tmp = tempfile.mkstemp(prefix="vidsearch-query-", suffix=os.path.splitext(name)[1][:8])
    try:
        with os.fdopen(fd, "wb") as f:
            while chunk := await upload.read(1 << 20):
                f.write(chunk)
                if f.tell() > limit:
                    raise UploadTooLarge
        await upload.close()
    except BaseException:
        os.unlink(tmp)
        raise
    args = {k: v for k, v in form.items() if k != "file"}
    return tmp, name, args


def _float(value, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number of seconds") from None
    if not 0 <= f < 1e7:
        raise InvalidArgumentError(f"{name} must be a number of seconds, at least 0")
    return f


def _int(value, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be an integer") from None


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:g} MB"


def _scrub(message: str, state: _State) -> str:
    """An error message without the server's own paths in it."""
    return message.replace(str(state.root), "the index").replace(tempfile.gettempdir(), "…")


def _playable(state: _State, video) -> str | None:
    if video.id not in state.codecs:
        state.codecs[video.id] = media.video_codec(video.display_path)
    return media.playable_type(video.display_path, state.codecs[video.id])


def _indexed_by_path(state: _State) -> dict[str, StoredVideo]:
    with state.lock:
        lib = state.library()
        with lib.catalog.read() as s:
            return {v.display_path: v for v in lib.catalog.videos(s, STATUS_INDEXED)}


def new_token() -> str:
    return secrets.token_urlsafe(24)
