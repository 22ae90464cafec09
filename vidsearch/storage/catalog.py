"""The catalog: SQLite through SQLAlchemy 2.0. The source of truth, embeddings included.

Every write of a video (its row, clips, embeddings and status) is one transaction that also
bumps the catalog generation, so the FAISS file can say which state it was built from. Reads
run inside an explicit BEGIN (the pysqlite recipe), so a reader sees one snapshot even while a
writer commits. Clip ids are AUTOINCREMENT: a vector id always means the same clip.

Schema changes are additive and migrated in place: a writer that opens a catalog made by an
older vidsearch adds the columns it lacks (``ALTER TABLE ... ADD COLUMN``, nullable, so every
existing row stays valid and nothing is re-embedded); a reader of such a catalog reads those
columns as NULL, which is what the migration would put there. Older versions select their
columns by name, so they still read a migrated catalog.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    null,
    select,
    text,
    update,
)
from sqlalchemy.exc import DatabaseError, DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from vidsearch.errors import CorruptCatalogError, StorageError, first_line
from vidsearch.faults import fault

log = logging.getLogger(__name__)

#: Embeddings are stored as float16: 2 bytes a dimension (2 KB for a 1024-d clip).
EMBEDDING_DTYPE = np.float16

STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"
#: The page size of new catalogs. A clip row (a 2 KB float16 1024-d vector and its fields) does
#: not fit twice in SQLite's default 4 KB page, so it took a page alone (4.1 KB a clip); 8 KB
#: pages hold three (2.8 KB a clip). SQLite fixes the size with the first table: catalogs made
#: before keep their 4 KB pages and work as they did.
PAGE_SIZE = 8192
#: Ids per ``IN (...)`` list, under SQLite's variable limit.
_IN_CHUNK = 30_000
#: How long a writer's integrity check (``PRAGMA quick_check``) may run before the writer's first
#: write. It reads the whole file at about 0.8 GB/s from the page cache (200k 1024-d clips,
#: 824 MB: 0.9-1.2 s), so this covers a catalog of about 1M such clips; past that the check
#: stops there and says so at -v (``vidsearch verify`` checks everything, however long it takes).
QUICK_CHECK_SECONDS = 5.0
_CHECK_IT = "`vidsearch verify` checks it; restore it from a backup or re-index into a new folder"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class _Base(DeclarativeBase):
    pass


class _Video(_Base):
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

    clips: Mapped[list[_ClipRow]] = relationship(
        back_populates="video", cascade="all, delete-orphan", passive_deletes=True
    )


class _ClipRow(_Base):
    __tablename__ = "clips"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    #: the frames' pixel spread (media.blank); NULL for clips indexed before it was measured
    pixel_std: Mapped[float | None] = mapped_column(Float)
    #: how many videos the clip's footage appears in, set by the last common-footage pass (search
    #: .duplicates) when it found the clip common; NULL otherwise
    common_videos: Mapped[int | None] = mapped_column(Integer)

    video: Mapped[_Video] = relationship(back_populates="clips")


#: Columns added to ``clips`` after the first catalog format: (name, SQL type), for the migration.
_ADDED_CLIP_COLUMNS = (("pixel_std", "FLOAT"), ("common_videos", "INTEGER"))


class _Run(_Base):
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


class _Decision(_Base):
    """A user's verdict on a pair of videos, keyed by their content fingerprints (smaller first),
    so that it outlives paths, video rows and embeddings."""

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("fingerprint_a", "fingerprint_b"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint_a: Mapped[str] = mapped_column(String(64))
    fingerprint_b: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str] = mapped_column(String(16))
    # where the videos were when the verdict was given: named when they are no longer indexed
    path_a: Mapped[bytes] = mapped_column(LargeBinary)
    path_b: Mapped[bytes] = mapped_column(LargeBinary)
    decided_at: Mapped[dt.datetime] = mapped_column(default=_now)


#: Tables added after the first catalogs were made: created when first written, absent means empty.
_LATER_TABLES = {_Decision.__tablename__}


class _Meta(_Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class ClipRecord:
    """A clip ready to store: times, its unit embedding and its frames' pixel spread."""

    start_s: float
    end_s: float
    embedding: np.ndarray
    pixel_std: float | None = None

    def __post_init__(self) -> None:
        if self.end_s < self.start_s:
            raise ValueError(f"clip ends ({self.end_s}) before it starts ({self.start_s})")
        if self.embedding.ndim != 1:
            raise ValueError(f"embedding must be 1-d, got shape {self.embedding.shape}")


#: the columns of a StoredVideo, in its fields' order
_STORED_COLUMNS = (
    _Video.id,
    _Video.path,
    _Video.size,
    _Video.mtime_ns,
    _Video.fingerprint,
    _Video.status,
    _Video.duration_s,
    _Video.error,
    _Video.fps,
    _Video.width,
    _Video.height,
)


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


@dataclass(frozen=True)
class StoredVideo:
    """A video's catalog row as the reads return it (no clips)."""

    id: int
    path: bytes
    size: int
    mtime_ns: int
    fingerprint: str
    status: str
    duration_s: float | None = None
    error: str | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None

    @property
    def display_path(self) -> str:
        return os.fsdecode(self.path)


@dataclass(frozen=True)
class DecisionRecord:
    """A stored verdict on the pair of videos with fingerprints ``fingerprints`` (smaller first)."""

    id: int
    fingerprints: tuple[str, str]
    verdict: str
    paths: tuple[bytes, bytes]
    decided_at: dt.datetime


@dataclass(frozen=True)
class ClipTable:
    """Clips as arrays sorted by clip id: id → (video, start, end, pixel spread (NaN: not
    measured), videos its footage appears in when common (0: not common))."""

    ids: np.ndarray
    video: np.ndarray
    start: np.ndarray
    end: np.ndarray
    pixel_std: np.ndarray
    common_videos: np.ndarray

    def lookup(self, clip_ids: np.ndarray) -> np.ndarray:
        """Row positions of ``clip_ids`` (-1 for ids not in the table)."""
        clip_ids = np.asarray(clip_ids, dtype=np.int64)
        if not len(self.ids):
            return np.full(len(clip_ids), -1)
        pos = np.clip(np.searchsorted(self.ids, clip_ids), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == clip_ids, pos, -1)


def encode_embedding(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype=EMBEDDING_DTYPE).tobytes()


def decode_embeddings(blobs: Sequence[bytes | None], dim: int) -> np.ndarray:
    """float16 blobs → float32 (N, dim), re-normalised (float16 rounding moves norms by ~1e-3)."""
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    if any(b is None for b in blobs):  # NOT NULL in the schema: only a damaged page reads so
        raise CorruptCatalogError(f"the catalog holds clips without an embedding; {_CHECK_IT}")
    arr = np.frombuffer(b"".join(blobs), dtype=EMBEDDING_DTYPE).astype(np.float32)  # type: ignore[arg-type]
    if arr.size != len(blobs) * dim:
        raise CorruptCatalogError(
            f"catalog embeddings are not {dim}-dimensional ({arr.size} values for {len(blobs)} clips); "
            "`vidsearch verify --repair` drops the videos they belong to"
        )
    arr = arr.reshape(len(blobs), dim)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.maximum(norms, 1e-12)


class Catalog:
    """Sessions over ``catalog.sqlite``. ``read()`` is one snapshot; ``write()`` one transaction."""

    def __init__(self, path: str | os.PathLike, create: bool = False, readonly: bool = False):
        self.path = os.fspath(path)
        if not create and not os.path.exists(self.path):
            raise CorruptCatalogError(f"{self.path} is missing: the index directory is incomplete")
        self.readonly = readonly
        if readonly and not os.access(os.path.dirname(os.path.abspath(self.path)), os.W_OK):
            uri = _read_only_uri(self.path)
            self.engine = create_engine(
                f"sqlite:///{self.path}",
                creator=lambda: sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False),
            )
        else:
            self.engine = create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30})

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # take transaction control from pysqlite so BEGIN is explicit (SQLAlchemy's recipe)
            dbapi_conn.isolation_level = None
            # closed even when a statement fails (a full disk): a cursor left to the traceback
            # keeps its statement, and SQLite then keeps the file open after the connection closes
            with closing(dbapi_conn.cursor()) as cur:
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                if create:  # before the first table (and before WAL mode) or not at all
                    cur.execute(f"PRAGMA page_size={PAGE_SIZE}")
                if not readonly:
                    mode = cur.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        log.warning(
                            "%s: SQLite WAL mode unavailable (journal_mode=%s); is it on a network filesystem?",
                            self.path,
                            mode,
                        )
                    cur.execute("PRAGMA synchronous=NORMAL")

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        try:
            if create:
                _Base.metadata.create_all(self.engine)
                self._checkpoint()
            with self.engine.connect() as conn:  # reading the schema catches a damaged header cheaply
                missing = (
                    {t for t in _Base.metadata.tables}
                    - _LATER_TABLES
                    - set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'").scalars())
                )
            if missing:
                raise CorruptCatalogError(f"{self.path} lacks the tables {sorted(missing)}: not a vidsearch catalog")
            if not create and not readonly:
                self.quick_check()  # a writer writes nothing into a damaged file
            self._has_added_columns = self._migrate()
        except (DatabaseError, sqlite3.DatabaseError) as exc:
            self.engine.dispose()
            if create:
                raise StorageError(f"{self.path}: cannot create the catalog ({first_line(exc)})") from exc
            if _disk_full(self.path):  # SQLite cannot make its -shm file: not damage
                raise StorageError(
                    f"cannot open {self.path} ({first_line(exc)}): its file system is full; free some space"
                ) from exc
            raise CorruptCatalogError(f"{self.path} is damaged or not a SQLite database ({first_line(exc)})") from exc
        except CorruptCatalogError:
            self.engine.dispose()
            raise

    def _checkpoint(self) -> None:
        """Move the WAL's pages into the database file and empty the WAL.

        A new catalog's tables are first written to the WAL. Left there, moving them needs room
        for a second copy in the database file, and until it is found the WAL cannot be emptied
        and every later commit (each rerun's ``runs`` row) is appended to it: on a full disk
        freed a page at a time, reruns of a first run never got further. Done at creation, a
        failure here (the disk full) fails the creation, which clears what it made."""
        raw = self.engine.raw_connection()
        con: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]  # pysqlite's
        try:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
        finally:
            raw.close()

    def quick_check(self, seconds: float = QUICK_CHECK_SECONDS) -> None:
        """SQLite's ``quick_check`` (every page and record, not the indexes' contents), stopped
        after ``seconds``; CorruptCatalogError when it finds damage."""
        raw = self.engine.raw_connection()
        con: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]  # pysqlite's
        # interrupt() from another thread stops it inside the b-tree walk too (a progress
        # handler runs only between statements' steps, and the walk is one step)
        timer = threading.Timer(seconds, con.interrupt)
        timer.daemon = True
        timer.start()
        try:
            found = [str(r[0]) for r in con.execute("PRAGMA quick_check")]
        except sqlite3.OperationalError as exc:
            if "interrupt" not in str(exc):
                raise
            log.info("%s: integrity check stopped after %g s; `vidsearch verify` checks it all", self.path, seconds)
            return
        finally:
            timer.cancel()
            raw.close()
        if found != ["ok"]:
            lines = [line for f in found for line in f.splitlines() if not line.startswith("***")]
            raise self._damaged(f"SQLite quick_check: {lines[0] if lines else found[0]}")

    def _damaged(self, what: str) -> CorruptCatalogError:
        return CorruptCatalogError(f"{self.path} is damaged ({what}); {_CHECK_IT}")

    def _migrate(self) -> bool:
        """Add the clip columns an older catalog lacks (a writer); whether the columns exist now."""
        with self.engine.connect() as conn:
            have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(clips)")}
        lacking = [(name, kind) for name, kind in _ADDED_CLIP_COLUMNS if name not in have]
        if not lacking:
            return True
        if self.readonly:
            return False
        with self.engine.connect() as conn:
            conn.info["write"] = True
            with conn.begin():
                for name, kind in lacking:
                    conn.exec_driver_sql(f"ALTER TABLE clips ADD COLUMN {name} {kind}")
        log.info(
            "%s: added the clip columns %s (catalog made by an older vidsearch)", self.path, [n for n, _ in lacking]
        )
        return True

    def _added(self, name: str) -> Any:
        """A column added by a migration, or NULL where this (read-only) catalog predates it."""
        column = _ClipRow.__table__.c[name]
        return column if self._has_added_columns else null().label(name)

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
            raise self._damaged(first_line(exc)) from exc

    @contextmanager
    def write(self, bump: bool = True) -> Iterator[Session]:
        """One write transaction (BEGIN IMMEDIATE); ``bump`` advances the generation with it."""
        if self.readonly:
            raise RuntimeError("this catalog was opened read-only")
        with self._transaction(bump) as session:
            yield session

    @contextmanager
    def _transaction(self, bump: bool) -> Iterator[Session]:
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
            # a write's I/O error is the disk's or the filesystem's (EIO, a lost network mount), and
            # SQLite rolls the transaction back: nothing committed is damaged by it
            if isinstance(exc, DatabaseError) and _is_damage(exc, io_errors=False):
                raise self._damaged(first_line(exc)) from exc
            raise StorageError(
                f"{self.path}: cannot write ({first_line(exc)}); everything committed before is kept"
            ) from exc

    # ---- reads (each takes the session of one ``read()`` snapshot) --------------------------

    def generation(self, session: Session | None = None) -> int:
        if session is None:
            with self.read() as s:
                return self.generation(s)
        return session.scalar(select(_Meta.value).where(_Meta.key == "generation")) or 0

    def videos(
        self, session: Session, status: str | None = None, ids: Iterable[int] | None = None
    ) -> list[StoredVideo]:
        """Video rows by id: all, those of one ``status``, or those with the given ``ids``."""
        query = select(*_STORED_COLUMNS).order_by(_Video.id)
        if status is not None:
            query = query.where(_Video.status == status)
        if ids is None:
            return [self._video(row) for row in session.execute(query)]
        out: list[StoredVideo] = []
        wanted = sorted({int(i) for i in ids})
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[i : i + _IN_CHUNK]
            out += [self._video(row) for row in session.execute(query.where(_Video.id.in_(chunk)))]
        return sorted(out, key=lambda s: s.id)

    def video_by_path(self, session: Session, path: bytes) -> StoredVideo | None:
        row = session.execute(select(*_STORED_COLUMNS).where(_Video.path == path)).first()
        return self._video(row) if row is not None else None

    def video_by_id(self, session: Session, video_id: int) -> StoredVideo | None:
        row = session.execute(select(*_STORED_COLUMNS).where(_Video.id == video_id)).first()
        return self._video(row) if row is not None else None

    def _video(self, row: Sequence[Any]) -> StoredVideo:
        if any(row[i] is None for i in range(6)):  # NOT NULL in the schema: only a damaged page reads so
            raise self._damaged(f"video row {row[0]} has empty fields")
        return StoredVideo(*row)

    def video_count(self, session: Session) -> int:
        return session.scalar(select(func.count(_Video.id))) or 0

    def status_counts(self, session: Session) -> dict[str, int]:
        return {s: n for s, n in session.execute(select(_Video.status, func.count(_Video.id)).group_by(_Video.status))}

    def indexed_duration(self, session: Session) -> float:
        """Seconds of video indexed, summed."""
        return float(session.scalar(select(func.sum(_Video.duration_s)).where(_Video.status == STATUS_INDEXED)) or 0.0)

    def clip_count(self, session: Session) -> int:
        return session.scalar(select(func.count(_ClipRow.id))) or 0

    def clip_table(self, session: Session) -> ClipTable:
        """Every clip's id, video, times and marks, sorted by id."""
        c = _ClipRow
        rows = session.execute(
            select(
                c.id,
                c.video_id,
                c.start_s,
                c.end_s,
                func.coalesce(self._added("pixel_std"), -1.0),
                func.coalesce(self._added("common_videos"), 0),
            ).order_by(c.id)
        ).all()
        arr = np.array([tuple(r) for r in rows], dtype=np.float64).reshape(-1, 6)
        if np.isnan(arr[:, :4]).any():  # an empty (NULL) field reads as NaN
            raise self._damaged("clip rows with empty fields")
        spread = np.where(arr[:, 4] < 0, np.nan, arr[:, 4])  # a spread is never negative: -1 is NULL
        return ClipTable(
            arr[:, 0].astype(np.int64),
            arr[:, 1].astype(np.int64),
            arr[:, 2],
            arr[:, 3],
            spread,
            arr[:, 5].astype(np.int64),
        )

    def clip_marks(self, session: Session, clip_ids: Sequence[int]) -> dict[int, tuple[float, int]]:
        """clip id → (pixel spread, NaN when not measured; videos its footage appears in when
        common, else 0), for ids that exist."""
        out: dict[int, tuple[float, int]] = {}
        ids = sorted({int(i) for i in clip_ids})
        spread, common = self._added("pixel_std"), self._added("common_videos")
        for i in range(0, len(ids), _IN_CHUNK):
            for cid, s, n in session.execute(
                select(_ClipRow.id, spread, common).where(_ClipRow.id.in_(ids[i : i + _IN_CHUNK]))
            ):
                out[cid] = (np.nan if s is None else float(s), int(n or 0))
        return out

    def clips_of(self, session: Session, video_id: int) -> list[tuple[int, float, float]]:
        """A video's clips as (clip id, start_s, end_s), in time order."""
        c = _ClipRow
        query = select(c.id, c.start_s, c.end_s).where(c.video_id == video_id).order_by(c.start_s, c.id)
        rows = session.execute(query).all()
        if any(s is None or e is None for _, s, e in rows):
            raise self._damaged(f"clips of video {video_id} with empty fields")
        return [(int(i), float(s), float(e)) for i, s, e in rows]

    def _clip_chunks(self, session: Session, *columns: str, chunk: int = 50_000) -> Iterator[Sequence[Any]]:
        """Rows of (clip id, *columns) in chunks by id, with Core (no ORM objects): bounded memory."""
        table = _ClipRow.__table__
        cols = [table.c.id, *(table.c[name] for name in columns)]
        last = -1
        while True:
            rows = session.execute(select(*cols).where(table.c.id > last).order_by(table.c.id).limit(chunk)).all()
            if not rows:
                return
            yield rows
            last = int(rows[-1][0])

    def iter_embeddings(
        self, session: Session, dim: int, chunk: int = 50_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids int64, vectors float32) in chunks, by id."""
        for rows in self._clip_chunks(session, "embedding", chunk=chunk):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, decode_embeddings([r[1] for r in rows], dim)

    def iter_raw_embeddings(self, session: Session, chunk: int = 50_000) -> Iterator[list[tuple[int, int, bytes]]]:
        """(clip id, video id, stored bytes) in chunks by id, undecoded: for checking them."""
        for rows in self._clip_chunks(session, "video_id", "embedding", chunk=chunk):
            yield [(int(i), int(v), bytes(b)) for i, v, b in rows]

    def sample_embeddings(self, session: Session, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` clips drawn at random (seeded), with their vectors."""
        total = self.clip_count(session)
        if total <= n:
            chunks = list(self.iter_embeddings(session, dim))
            if not chunks:
                return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
            return np.concatenate([i for i, _ in chunks]), np.concatenate([v for _, v in chunks])
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(self.clip_ids(session), size=n, replace=False))
        return self.embeddings_by_ids(session, pick.tolist(), dim)

    def clip_ids(self, session: Session, above: int | None = None, up_to: int | None = None) -> np.ndarray:
        """Clip ids, sorted (int64): every one, or those in (``above``, ``up_to``]."""
        table = _ClipRow.__table__
        query = select(table.c.id).order_by(table.c.id)
        if above is not None:
            query = query.where(table.c.id > above)
        if up_to is not None:
            query = query.where(table.c.id <= up_to)
        return np.fromiter(session.scalars(query), dtype=np.int64)

    def clip_count_up_to(self, session: Session, up_to: int) -> int:
        return session.scalar(select(func.count(_ClipRow.id)).where(_ClipRow.id <= up_to)) or 0

    def embeddings_by_ids(self, session: Session, clip_ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the clips with these ids that exist, by id.

        A plain statement (no expression to compile): a search that re-ranks calls this for a
        few hundred ids a query, where SQLAlchemy's compilation cost more than SQLite's lookups.
        """
        wanted = sorted({int(i) for i in clip_ids})
        ids: list[int] = []
        blobs: list[bytes] = []
        conn = session.connection()
        for i in range(0, len(wanted), _IN_CHUNK):
            part = wanted[i : i + _IN_CHUNK]
            rows = conn.exec_driver_sql(
                f"SELECT id, embedding FROM clips WHERE id IN ({','.join('?' * len(part))}) ORDER BY id", tuple(part)
            )
            for cid, blob in rows:
                ids.append(cid)
                blobs.append(blob)
        return np.array(ids, dtype=np.int64), decode_embeddings(blobs, dim)

    def clip_info(self, session: Session, clip_ids: Sequence[int]) -> dict[int, tuple[int, float, float]]:
        """clip id → (video id, start_s, end_s), for ids that exist."""
        out: dict[int, tuple[int, float, float]] = {}
        ids = sorted({int(i) for i in clip_ids})
        table = _ClipRow.__table__
        for i in range(0, len(ids), _IN_CHUNK):
            for cid, vid, s, e in session.execute(
                select(table.c.id, table.c.video_id, table.c.start_s, table.c.end_s).where(
                    table.c.id.in_(ids[i : i + _IN_CHUNK])
                )
            ):
                if vid is None or s is None or e is None:
                    raise self._damaged(f"clip row {cid} has empty fields")
                out[cid] = (vid, s, e)
        return out

    def video_clips(self, session: Session, video_id: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """A video's clip times (N, 2) and vectors (N, dim), in time order."""
        c = _ClipRow
        rows = session.execute(
            select(c.start_s, c.end_s, c.embedding).where(c.video_id == video_id).order_by(c.start_s, c.id)
        ).all()
        times = np.array([(r[0], r[1]) for r in rows], dtype=np.float64).reshape(-1, 2)
        if np.isnan(times).any():
            raise self._damaged(f"clips of video {video_id} with empty fields")
        return times, decode_embeddings([r[2] for r in rows], dim)

    def video_pixel_std(self, session: Session, video_id: int) -> np.ndarray:
        """A video's clips' pixel spreads in the order of ``video_clips`` (NaN: not measured)."""
        c = _ClipRow
        query = select(self._added("pixel_std")).where(c.video_id == video_id).order_by(c.start_s, c.id)
        return np.array([np.nan if s is None else s for s in session.scalars(query)], dtype=np.float64)

    def decisions(self, session: Session) -> list[DecisionRecord]:
        """Every stored verdict, oldest first (none in a catalog that never stored one)."""
        if not _has_table(session, _Decision.__tablename__):
            return []
        d = _Decision
        rows = session.execute(
            select(d.id, d.fingerprint_a, d.fingerprint_b, d.verdict, d.path_a, d.path_b, d.decided_at).order_by(d.id)
        )
        return [DecisionRecord(i, (fa, fb), v, (pa, pb), at) for i, fa, fb, v, pa, pb, at in rows]

    def videos_by_fingerprints(self, session: Session, fingerprints: Iterable[str]) -> list[StoredVideo]:
        """Indexed videos whose content fingerprint is one of ``fingerprints``, by id."""
        v = _Video
        wanted = sorted(set(fingerprints))
        query = select(*_STORED_COLUMNS)
        out: list[StoredVideo] = []
        for i in range(0, len(wanted), _IN_CHUNK):
            chunk = query.where(v.fingerprint.in_(wanted[i : i + _IN_CHUNK]), v.status == STATUS_INDEXED)
            out += [self._video(row) for row in session.execute(chunk)]
        return sorted(out, key=lambda s: s.id)

    # ---- consistency (verify) ------------------------------------------------------------

    def integrity_problems(self, session: Session) -> list[str]:
        """SQLite's integrity check: empty when the file is sound."""
        found = [r[0] for r in session.execute(text("PRAGMA integrity_check"))]
        return [] if found == ["ok"] else found

    def orphan_clip_count(self, session: Session) -> int:
        """Clip rows whose video row is gone (or that name none: only a damaged page reads so)."""
        c = _ClipRow
        orphan = c.video_id.is_(None) | ~c.video_id.in_(select(_Video.id))
        return session.scalar(select(func.count(c.id)).where(orphan)) or 0

    def indexed_without_clips(self, session: Session) -> list[tuple[int, bytes]]:
        """(id, path) of videos marked indexed that have no clips."""
        query = select(_Video.id, _Video.path).where(
            _Video.status == STATUS_INDEXED, ~_Video.id.in_(select(_ClipRow.video_id))
        )
        return [(int(i), p) for i, p in session.execute(query)]

    def repair(self, damaged_videos: Iterable[int]) -> tuple[int, int]:
        """Delete orphan clip rows and the given videos (their clips too), in one transaction.

        Returns (orphan rows deleted, videos dropped).
        """
        with self.write() as session:
            deleted = session.execute(delete(_ClipRow).where(~_ClipRow.video_id.in_(select(_Video.id))))
            orphans = deleted.rowcount  # type: ignore[attr-defined]  # DML gives a CursorResult
            present = set(session.scalars(select(_Video.id))) & {int(v) for v in damaged_videos}
            _delete_videos(session, present)
        return orphans, len(present)

    # ---- writes ------------------------------------------------------------------------

    def store_video(
        self, record: VideoRecord, clips: Sequence[ClipRecord], replace_id: int | None = None
    ) -> tuple[int, list[int], list[int]]:
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
            existing = session.execute(select(_Video.id, _Video.status).where(_Video.path == record.path)).first()
            if existing is not None and existing.status == STATUS_INDEXED:
                return existing.id, True
            return self._store(session, record, [], None, STATUS_FAILED, error)[0], False

    def _store(self, session, record, clips, replace_id, status, error):
        old_ids = [v for v in (replace_id,) if v is not None]
        same_path = session.scalar(select(_Video.id).where(_Video.path == record.path))
        if same_path is not None:
            old_ids.append(same_path)
        removed = _delete_videos(session, old_ids)
        video = _Video(
            path=record.path,
            size=record.size,
            mtime_ns=record.mtime_ns,
            fingerprint=record.fingerprint,
            duration_s=record.duration_s,
            fps=record.fps,
            width=record.width,
            height=record.height,
            status=status,
            error=error,
        )
        session.add(video)
        session.flush()
        rows = [
            _ClipRow(
                video_id=video.id,
                start_s=c.start_s,
                end_s=c.end_s,
                embedding=encode_embedding(c.embedding),
                pixel_std=c.pixel_std,
            )
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
            src = session.get(_Video, source_id)
            if src is None:
                raise ValueError(f"no video with id {source_id} to copy")
            clips = [
                ClipRecord(c.start_s, c.end_s, np.frombuffer(c.embedding, dtype=EMBEDDING_DTYPE), c.pixel_std)
                for c in session.scalars(select(_ClipRow).where(_ClipRow.video_id == source_id).order_by(_ClipRow.id))
            ]
            record = VideoRecord(
                record.path,
                record.size,
                record.mtime_ns,
                record.fingerprint,
                src.duration_s,
                src.fps,
                src.width,
                src.height,
            )
            return self._store(session, record, clips, None, STATUS_INDEXED, None)

    def move_video(self, video_id: int, new_path: bytes, size: int, mtime_ns: int) -> list[int]:
        """A file moved or renamed: keep its clips, update its path. Returns the clip ids of a
        row it replaced at the new path."""
        with self.write() as session:
            taken = session.scalars(select(_Video.id).where(_Video.path == new_path, _Video.id != video_id))
            removed = _delete_videos(session, list(taken))
            session.execute(
                update(_Video).where(_Video.id == video_id).values(path=new_path, size=size, mtime_ns=mtime_ns)
            )
            return removed

    def remove_videos(self, video_ids: Sequence[int]) -> list[int]:
        """Delete videos and their clips; returns the removed clip ids."""
        if not video_ids:
            return []
        with self.write() as session:
            return _delete_videos(session, video_ids)

    def set_common(self, counts: dict[int, int]) -> None:
        """Replace the common-footage marks: clip id → videos its footage appears in; every other
        clip is not common. The vectors do not change, so neither does the generation."""
        with self.write(bump=False) as session:
            session.execute(
                update(_ClipRow).where(_ClipRow.common_videos.is_not(None)).values(common_videos=None),
                execution_options={"synchronize_session": False},
            )
            if counts:  # a plain executemany: a clip removed since the pass read it matches no row
                session.connection().execute(
                    update(_ClipRow).where(_ClipRow.id == bindparam("cid")).values(common_videos=bindparam("n")),
                    [{"cid": int(i), "n": int(n)} for i, n in counts.items()],
                )

    def start_run(self) -> int:
        with self.write(bump=False) as session:
            run = _Run()
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int, status: str, **counts: int) -> None:
        with self.write(bump=False) as session:
            session.execute(update(_Run).where(_Run.id == run_id).values(status=status, finished_at=_now(), **counts))

    # ---- verdicts: the user's notes on pairs, outside what the writer lock guards (clips, the
    # generation, the vectors file), so any process may write them, an index job running or not;
    # SQLite serialises the transactions. ----------------------------------------------------

    def store_decision(
        self,
        fingerprints: tuple[str, str],
        verdict: str,
        paths: tuple[bytes, bytes],
        decided_at: dt.datetime | None = None,
    ) -> DecisionRecord:
        """Store (or replace) the verdict on a pair; ``fingerprints`` and ``paths`` in the same order."""
        (fa, pa), (fb, pb) = sorted(zip(fingerprints, paths))
        with self._transaction(bump=False) as session:
            _Base.metadata.create_all(session.connection(), tables=[_Base.metadata.tables[_Decision.__tablename__]])
            session.execute(delete(_Decision).where(_Decision.fingerprint_a == fa, _Decision.fingerprint_b == fb))
            row = _Decision(fingerprint_a=fa, fingerprint_b=fb, verdict=verdict, path_a=pa, path_b=pb)
            if decided_at is not None:
                row.decided_at = decided_at
            session.add(row)
            session.flush()
            return DecisionRecord(row.id, (fa, fb), verdict, (pa, pb), row.decided_at)

    def remove_decision(self, decision_id: int) -> DecisionRecord | None:
        """Delete a stored verdict; returns it (None when there is none with that id)."""
        with self._transaction(bump=False) as session:
            found = [d for d in self.decisions(session) if d.id == decision_id]
            if found:
                session.execute(delete(_Decision).where(_Decision.id == decision_id))
            return found[0] if found else None


def _delete_videos(session: Session, video_ids: Iterable[int]) -> list[int]:
    """Delete videos and their clips inside ``session``'s transaction; returns the removed clip ids."""
    ids = sorted({int(v) for v in video_ids})
    if not ids:
        return []
    removed = list(session.scalars(select(_ClipRow.id).where(_ClipRow.video_id.in_(ids))))
    session.execute(delete(_ClipRow).where(_ClipRow.video_id.in_(ids)))
    session.execute(delete(_Video).where(_Video.id.in_(ids)))
    session.flush()
    return removed


def holds_nothing(path: str | os.PathLike) -> bool:
    """Whether the SQLite file at ``path`` holds no row in any table: a catalog whose creation
    stopped before anything was stored in it. False when it holds rows or cannot be read.

    With nothing in its -wal the file is read as immutable, so nothing is made beside it."""
    wal = f"{os.fspath(path)}-wal"
    pending = os.path.exists(wal) and os.path.getsize(wal) > 0
    try:
        con = sqlite3.connect(_uri(path) + ("?mode=ro" if pending else "?immutable=1"), uri=True)
    except sqlite3.Error:
        return False
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return not any(
            con.execute('SELECT EXISTS (SELECT 1 FROM "{}")'.format(t.replace('"', '""'))).fetchone()[0] for t in tables
        )
    except sqlite3.Error:
        return False
    finally:
        con.close()


def _uri(path: str | os.PathLike) -> str:
    return "file:" + urllib.parse.quote(os.fsencode(os.path.abspath(path)))


def _read_only_uri(path: str) -> str:
    """How to open a catalog in a folder this process cannot write to.

    A WAL reader needs the -shm file: where one is there (a writer is running, or was killed),
    SQLite opens it read-only and reads the WAL too. Where none is, no writer has the catalog
    open, and the file is opened as immutable (no -shm, no locks): right for a read-only file
    system or copy; commits still in a -wal without its -shm are not seen.
    """
    if os.path.exists(path + "-shm"):
        return _uri(path) + "?mode=ro"
    if os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 0:
        log.warning(
            "%s-wal holds commits not yet in %s, and the folder is read-only: reading the catalog without them",
            path,
            os.path.basename(path),
        )
    return _uri(path) + "?immutable=1"


def _disk_full(path: str) -> bool:
    """Whether the file system ``path`` is on has less room than SQLite needs to open a WAL
    database (a 32 KB -shm file, and the WAL's first pages)."""
    try:
        fs = os.statvfs(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return fs.f_bavail * fs.f_frsize < 1 << 20


def _bump_generation(session: Session) -> None:
    updated = session.execute(update(_Meta).where(_Meta.key == "generation").values(value=_Meta.value + 1))
    if updated.rowcount == 0:  # type: ignore[attr-defined]  # DML gives a CursorResult
        session.add(_Meta(key="generation", value=1))


def _has_table(session: Session, name: str) -> bool:
    query = text("SELECT 1 FROM sqlite_master WHERE type='table' AND name=:name")
    return session.execute(query, {"name": name}).first() is not None


def _is_damage(exc: DatabaseError, io_errors: bool = True) -> bool:
    """Whether SQLite's error says the file is damaged; ``io_errors``: count a disk I/O error
    (reading back what was written can fail so on a damaged file)."""
    text = str(getattr(exc, "orig", exc)).lower()
    return any(w in text for w in ("malformed", "not a database", "corrupt")) or (
        io_errors and "disk i/o error" in text
    )


__all__ = [
    "Catalog",
    "ClipRecord",
    "ClipTable",
    "DecisionRecord",
    "EMBEDDING_DTYPE",
    "StoredVideo",
    "VideoRecord",
    "STATUS_FAILED",
    "STATUS_INDEXED",
    "decode_embeddings",
    "encode_embedding",
    "holds_nothing",
]
