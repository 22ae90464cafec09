"""The catalog: SQLite through SQLAlchemy 2.0. The source of truth, embeddings included.

Every write of a video (its row, clips, embeddings and status) is one transaction that also
bumps the catalog generation, so the FAISS file can say which state it was built from. Reads
run inside an explicit BEGIN (the pysqlite recipe), so a reader sees one snapshot even while a
writer commits. Clip ids are AUTOINCREMENT: a vector id always means the same clip.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.exc import DatabaseError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from vidsearch.errors import CorruptIndexError, StorageError
from vidsearch.faults import fault

log = logging.getLogger(__name__)

#: Embeddings are stored as float16: 2 bytes a dimension (2 KB for a 1024-d clip).
EMBEDDING_DTYPE = np.float16

STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Video(Base):
    __tablename__ = "videos"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Paths are stored as the file system's bytes so that names that are not UTF-8 survive.
    path: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    duration_s: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[dt.datetime] = mapped_column(default=_now)
    updated_at: Mapped[dt.datetime] = mapped_column(default=_now, onupdate=_now)

    clips: Mapped[list["ClipRow"]] = relationship(
        back_populates="video", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def display_path(self) -> str:
        return os.fsdecode(self.path)


class ClipRow(Base):
    __tablename__ = "clips"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)

    video: Mapped[Video] = relationship(back_populates="clips")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=_now)
    finished_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(16), default="running")
    indexed: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    moved: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    clips: Mapped[int] = mapped_column(default=0)


class Meta(Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class ClipRecord:
    """A clip ready to store: times and its unit embedding."""

    start_s: float
    end_s: float
    embedding: np.ndarray

    def __post_init__(self) -> None:
        if self.end_s < self.start_s:
            raise ValueError(f"clip ends ({self.end_s}) before it starts ({self.start_s})")
        if self.embedding.ndim != 1:
            raise ValueError(f"embedding must be 1-d, got shape {self.embedding.shape}")


@dataclass(frozen=True)
class VideoRecord:
    """A video's catalog fields other than its clips."""

    path: bytes
    size: int
    mtime_ns: int
    fingerprint: str
    duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None


def encode_embedding(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype=EMBEDDING_DTYPE).tobytes()


def decode_embeddings(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """float16 blobs → float32 (N, dim), re-normalised (float16 rounding moves norms by ~1e-3)."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    arr = np.frombuffer(b"".join(blobs), dtype=EMBEDDING_DTYPE).astype(np.float32)
    if arr.size != len(blobs) * dim:
        raise CorruptIndexError(f"catalog embeddings are not {dim}-dimensional ({arr.size} values for {len(blobs)} clips)")
    arr = arr.reshape(len(blobs), dim)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.maximum(norms, 1e-12)


class Catalog:
    """Sessions over ``catalog.sqlite``. ``read()`` is one snapshot; ``write()`` one transaction."""

    def __init__(self, path: str | os.PathLike, create: bool = False, readonly: bool = False):
        self.path = os.fspath(path)
        if not create and not os.path.exists(self.path):
            raise CorruptIndexError(f"{self.path} is missing: the index directory is incomplete")
        self.readonly = readonly
        self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30})

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # take transaction control from pysqlite so BEGIN is explicit (SQLAlchemy's recipe)
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            if not readonly:
                mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("%s: SQLite WAL mode unavailable (journal_mode=%s); is it on a network filesystem?", self.path, mode)
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        try:
            if create:
                Base.metadata.create_all(self.engine)
            with self.engine.connect() as conn:  # reading the schema catches a damaged header cheaply
                missing = {t for t in Base.metadata.tables} - set(
                    conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'").scalars()
                )
            if missing:
                raise CorruptIndexError(f"{self.path} lacks the tables {sorted(missing)}: not a vidsearch catalog")
        except (DatabaseError, sqlite3.DatabaseError) as exc:
            self.engine.dispose()
            raise CorruptIndexError(f"{self.path} is damaged or not a SQLite database ({_first_line(exc)})") from exc

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session whose queries all see one snapshot of the catalog."""
        try:
            with Session(self.engine) as session:
                with session.begin():
                    yield session
        except DatabaseError as exc:
            if not _is_damage(exc):
                raise
            raise CorruptIndexError(
                f"{self.path} is damaged ({_first_line(exc)}); `vidsearch verify` checks it; restore it from a "
                "backup or re-index into a new folder"
            ) from exc

    @contextmanager
    def write(self, bump: bool = True) -> Iterator[Session]:
        """One write transaction (BEGIN IMMEDIATE); ``bump`` advances the generation with it."""
        if self.readonly:
            raise RuntimeError("this catalog was opened read-only")
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = True
                try:
                    with Session(bind=conn) as session:
                        with session.begin():
                            yield session
                            if bump:
                                _bump_generation(session)
                finally:
                    conn.info["write"] = False
        except DBAPIError as exc:
            if isinstance(exc, DatabaseError) and _is_damage(exc):
                raise CorruptIndexError(f"{self.path} is damaged ({_first_line(exc)}); `vidsearch verify` checks it") from exc
            raise StorageError(
                f"{self.path}: cannot write ({_first_line(exc)}); everything committed before is kept"
            ) from exc

    # ---- reads -------------------------------------------------------------------------

    def generation(self, session: Session | None = None) -> int:
        if session is None:
            with self.read() as s:
                return self.generation(s)
        return session.scalar(select(Meta.value).where(Meta.key == "generation")) or 0

    def video_by_path(self, session: Session, path: bytes) -> Video | None:
        return session.scalar(select(Video).where(Video.path == path))

    def clip_count(self, session: Session) -> int:
        return session.scalar(select(func.count(ClipRow.id))) or 0

    def iter_embeddings(self, session: Session, dim: int, chunk: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64, vectors float32) in chunks, by id, with Core (no ORM objects)."""
        table = ClipRow.__table__
        last = -1
        while True:
            rows = session.execute(
                select(table.c.id, table.c.embedding).where(table.c.id > last).order_by(table.c.id).limit(chunk)
            ).all()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, decode_embeddings([r[1] for r in rows], dim)
            last = int(ids[-1])

    def sample_embeddings(self, session: Session, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` clips drawn at random (seeded), with their vectors."""
        total = self.clip_count(session)
        if total <= n:
            ids, vecs = zip(*self.iter_embeddings(session, dim)) if total else ((), ())
            if not ids:
                return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
            return np.concatenate(ids), np.concatenate(vecs)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(self.clip_ids(session), size=n, replace=False))
        return self.embeddings_by_ids(session, pick.tolist(), dim)

    def clip_ids(self, session: Session, above: int | None = None, up_to: int | None = None) -> np.ndarray:
        """Clip ids, sorted (int64): every one, or those in (``above``, ``up_to``]."""
        table = ClipRow.__table__
        query = select(table.c.id).order_by(table.c.id)
        if above is not None:
            query = query.where(table.c.id > above)
        if up_to is not None:
            query = query.where(table.c.id <= up_to)
        return np.fromiter(session.scalars(query), dtype=np.int64)

    def clip_count_up_to(self, session: Session, up_to: int) -> int:
        return session.scalar(select(func.count(ClipRow.id)).where(ClipRow.id <= up_to)) or 0

    def clip_ids_of(self, session: Session, video_id: int) -> list[int]:
        return list(session.scalars(select(ClipRow.id).where(ClipRow.video_id == video_id).order_by(ClipRow.id)))

    def embeddings_by_ids(self, session: Session, clip_ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        table = ClipRow.__table__
        rows = session.execute(
            select(table.c.id, table.c.embedding).where(table.c.id.in_([int(i) for i in clip_ids])).order_by(table.c.id)
        ).all()
        return np.array([r[0] for r in rows], dtype=np.int64), decode_embeddings([r[1] for r in rows], dim)

    def clip_info(self, session: Session, clip_ids: Sequence[int]) -> dict[int, tuple[int, float, float]]:
        """clip id → (video id, start_s, end_s), for ids that exist."""
        out: dict[int, tuple[int, float, float]] = {}
        ids = list({int(i) for i in clip_ids})
        table = ClipRow.__table__
        for i in range(0, len(ids), 30_000):
            part = ids[i : i + 30_000]
            for cid, vid, s, e in session.execute(
                select(table.c.id, table.c.video_id, table.c.start_s, table.c.end_s).where(table.c.id.in_(part))
            ):
                out[cid] = (vid, s, e)
        return out

    # ---- writes ------------------------------------------------------------------------

    def store_video(self, record: VideoRecord, clips: Sequence[ClipRecord], replace_id: int | None = None) -> tuple[int, list[int], list[int]]:
        """Store a video with its clips and embeddings in one transaction.

        Replaces any row at the same path (and ``replace_id``), dropping its old clips.
        Returns the video id, the new clip ids and the removed clip ids. Clip ids are never reused.
        """
        with self.write() as session:
            return self._store(session, record, clips, replace_id, STATUS_INDEXED, None)

    def store_failure(self, record: VideoRecord, error: str) -> tuple[int, bool]:
        """Record a failed video; an indexed version at the same path is kept, not replaced.

        Returns the row id and whether an indexed version was kept. Clips are never touched,
        so the generation stays.
        """
        with self.write(bump=False) as session:
            existing = session.scalar(select(Video).where(Video.path == record.path))
            if existing is not None and existing.status == STATUS_INDEXED:
                return existing.id, True
            return self._store(session, record, [], None, STATUS_FAILED, error)[0], False

    def _store(self, session, record, clips, replace_id, status, error):
        old_ids = [v for v in (replace_id,) if v is not None]
        same_path = session.scalar(select(Video.id).where(Video.path == record.path))
        if same_path is not None:
            old_ids.append(same_path)
        removed: list[int] = []
        if old_ids:
            removed = list(session.scalars(select(ClipRow.id).where(ClipRow.video_id.in_(old_ids))))
            session.execute(delete(ClipRow).where(ClipRow.video_id.in_(old_ids)))
            session.execute(delete(Video).where(Video.id.in_(old_ids)))
            session.flush()
        video = Video(
            path=record.path, size=record.size, mtime_ns=record.mtime_ns, fingerprint=record.fingerprint,
            duration_s=record.duration_s, fps=record.fps, width=record.width, height=record.height,
            status=status, error=error,
        )
        session.add(video)
        session.flush()
        rows = [
            ClipRow(video_id=video.id, start_s=c.start_s, end_s=c.end_s, embedding=encode_embedding(c.embedding))
            for c in clips
        ]
        session.add_all(rows)
        session.flush()
        fault("in_commit")
        return video.id, [r.id for r in rows], removed

    def copy_video(self, source_id: int, record: VideoRecord) -> tuple[int, list[int], list[int]]:
        """Index an identical copy of an indexed file by copying its clips (new clip ids).

        Returns the new video id, its clip ids and the clip ids of a row it replaced.
        """
        with self.write() as session:
            src = session.get(Video, source_id)
            clips = [
                ClipRecord(c.start_s, c.end_s, np.frombuffer(c.embedding, dtype=EMBEDDING_DTYPE))
                for c in session.scalars(select(ClipRow).where(ClipRow.video_id == source_id).order_by(ClipRow.id))
            ]
            record = VideoRecord(
                record.path, record.size, record.mtime_ns, record.fingerprint,
                src.duration_s, src.fps, src.width, src.height,
            )
            return self._store(session, record, clips, None, STATUS_INDEXED, None)

    def move_video(self, video_id: int, new_path: bytes, size: int, mtime_ns: int) -> list[int]:
        """A file moved or renamed: keep its clips, update its path. Returns the clip ids of a
        row it replaced at the new path."""
        with self.write() as session:
            taken = list(session.scalars(select(Video.id).where(Video.path == new_path, Video.id != video_id)))
            removed = list(session.scalars(select(ClipRow.id).where(ClipRow.video_id.in_(taken)))) if taken else []
            if taken:
                session.execute(delete(ClipRow).where(ClipRow.video_id.in_(taken)))
                session.execute(delete(Video).where(Video.id.in_(taken)))
            session.execute(update(Video).where(Video.id == video_id).values(path=new_path, size=size, mtime_ns=mtime_ns))
            return removed

    def remove_videos(self, video_ids: Sequence[int]) -> list[int]:
        """Delete videos and their clips; returns the removed clip ids."""
        ids = list(video_ids)
        if not ids:
            return []
        with self.write() as session:
            clip_ids = list(session.scalars(select(ClipRow.id).where(ClipRow.video_id.in_(ids))))
            session.execute(delete(ClipRow).where(ClipRow.video_id.in_(ids)))
            session.execute(delete(Video).where(Video.id.in_(ids)))
        return clip_ids

    def start_run(self) -> int:
        with self.write(bump=False) as session:
            run = Run()
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int, status: str, **counts: int) -> None:
        with self.write(bump=False) as session:
            session.execute(update(Run).where(Run.id == run_id).values(status=status, finished_at=_now(), **counts))


def _bump_generation(session: Session) -> None:
    updated = session.execute(update(Meta).where(Meta.key == "generation").values(value=Meta.value + 1))
    if updated.rowcount == 0:
        session.add(Meta(key="generation", value=1))


def _is_damage(exc: DatabaseError) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return any(w in text for w in ("malformed", "not a database", "corrupt", "disk i/o error"))


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = [
    "Catalog", "ClipRecord", "ClipRow", "EMBEDDING_DTYPE", "Meta", "Run", "Video", "VideoRecord",
    "STATUS_FAILED", "STATUS_INDEXED", "decode_embeddings", "encode_embedding",
]
