"""The index directory: manifest, catalog and vectors, and the rules for opening them.

```
my-index/
  manifest.json     format version, model + revision, dim, pooling, preprocessing, clip settings, FAISS spec
  catalog.sqlite    the source of truth (WAL mode)
  vectors.faiss     derived from the catalog; caught up by clip id when stale, rebuilt when missing or foreign
  lock              held (flock) by the one writer; records its host and pid
```
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from vidsearch.errors import (
    CorruptIndexError,
    IncompatibleIndexError,
    IndexNotFoundError,
    StorageError,
    first_line,
    last_line,
)
from vidsearch.settings import ClipSettings, EncoderSettings
from vidsearch.storage.atomic import atomic_write_bytes
from vidsearch.storage.catalog import Catalog, holds_nothing
from vidsearch.storage.faiss_spec import DEFAULT_SPEC, choose_spec, should_switch, training_minimum
from vidsearch.storage.lock import LOCK, acquire_lock, release_lock, warn_if_network_filesystem
from vidsearch.storage.manifest import Manifest, describe_differences
from vidsearch.storage.vectors import VectorFileError, VectorHeader, VectorIndex, exact_knn, tune

log = logging.getLogger(__name__)

#: Vectors an IVF index is trained on, and held-out queries its nprobe is tuned with.
TRAIN_SAMPLE = 100_000
TUNE_QUERIES = 500
#: A stale vectors file is brought up to date by clip id, unless more than this share of the
#: catalog (and more than CATCH_UP_MIN clips) changed: then it is rebuilt, so that an IVF index is
#: retrained and retuned on what the library now holds.
CATCH_UP_SHARE = 0.5
CATCH_UP_MIN = 1000
CATCH_UP_CHUNK = 20_000
MANIFEST = "manifest.json"
CATALOG = "catalog.sqlite"
VECTORS = "vectors.faiss"


class Library:
    """An open index directory. Writers hold the lock; readers never write."""

    def __init__(self, root: Path, manifest: Manifest, catalog: Catalog, writable: bool, lock_fd: int | None):
        self.root = root
        self.manifest = manifest
        self.catalog = catalog
        self.writable = writable
        self._lock_fd = lock_fd
        self._vectors: VectorIndex | None = None
        self._vectors_generation = -1
        self._orphans_said = False

    # ---- opening ---------------------------------------------------------------------------

    @staticmethod
    def exists(root: str | os.PathLike) -> bool:
        return (Path(root) / MANIFEST).exists()

    @classmethod
    def create(
        cls,
        root: str | os.PathLike,
        encoder: EncoderSettings,
        clips: ClipSettings | None = None,
        faiss_spec: str | None = None,
    ) -> Library:
        """Make a new index in ``root`` (a new or empty folder, or one a first run left unfinished).

        The manifest is written last: until it is there the folder is not an index, and what a
        creation that stopped part-way (killed, disk full) left is cleared by the next one. A
        failed creation clears what it made itself.
        """
        root = Path(root)
        if cls.exists(root):
            raise IncompatibleIndexError(f"{root} already holds an index")
        if creation_leftovers(root) is None:
            raise IncompatibleIndexError(f"{root} exists and is not an empty folder or a vidsearch index")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the index folder {root} ({exc.strerror or exc})") from exc
        warn_if_network_filesystem(root)
        lock_fd = acquire_lock(root)
        catalog = None
        try:
            leftovers = creation_leftovers(root)  # again, holding the lock
            if leftovers is None:
                raise IncompatibleIndexError(f"{root} changed while this job waited for its lock; run it again")
            if leftovers:
                log.warning("%s: finishing the index a first run left unfinished", root)
                _remove(leftovers)
            manifest = Manifest(
                encoder=encoder,
                clips=clips or ClipSettings(),
                faiss_spec=faiss_spec or DEFAULT_SPEC,
                faiss_pinned=faiss_spec is not None,
            )
            catalog = Catalog(root / CATALOG, create=True)
            lib = cls(root, manifest, catalog, True, lock_fd)
            lib.write_manifest()  # written last: a folder without a manifest is not yet an index
            return lib
        except BaseException as exc:
            if catalog is not None:
                catalog.close()
            if not cls.exists(root):
                _remove(creation_leftovers(root) or [], quiet=True)
            release_lock(lock_fd)
            if isinstance(exc, (OSError, StorageError)):
                cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
                reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else first_line(cause)
                raise StorageError(
                    f"cannot create an index in {root} ({reason}); nothing was kept, the same command starts over"
                ) from exc
            raise

    @classmethod
    def open(cls, root: str | os.PathLike, writable: bool = False) -> Library:
        root = Path(root)
        path = root / MANIFEST
        if not path.exists():
            if root.is_dir() and (root / CATALOG).exists():
                if creation_leftovers(root) is not None:
                    raise IndexNotFoundError(
                        f"no vidsearch index at {root} yet: its creation is unfinished (stopped part-way, or "
                        f"still running); `vidsearch index PATH --index {root}` finishes it"
                    )
                raise CorruptIndexError(
                    f"{path} is missing, but {root / CATALOG} exists; not starting a new index over it"
                )
            raise IndexNotFoundError(f"no vidsearch index at {root} (run `vidsearch index PATH --index {root}` first)")
        try:
            manifest = Manifest.from_json(json.loads(path.read_text()), str(path))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptIndexError(f"{path} is not valid JSON ({exc})") from exc
        warn_if_network_filesystem(root)
        lock_fd = acquire_lock(root) if writable else None
        try:
            catalog = Catalog(root / CATALOG, readonly=not writable)
        except BaseException:
            release_lock(lock_fd)
            raise
        return cls(root, manifest, catalog, writable, lock_fd)

    def check_compatible(self, encoder: EncoderSettings | None = None, clips: ClipSettings | None = None) -> None:
        diffs = describe_differences(self.manifest.encoder, self.manifest.clips, encoder, clips)
        if diffs:
            raise IncompatibleIndexError(
                f"{self.root} was built with other settings ({'; '.join(diffs)}); "
                "use the index's own settings or a new --index folder"
            )

    def close(self) -> None:
        self.catalog.close()
        release_lock(self._lock_fd)
        self._lock_fd = None

    @contextmanager
    def writing_catalog(self) -> Iterator[Catalog]:
        """The catalog for one short write of derived data (common-footage marks): a writer's own;
        for a reader, the catalog opened for writing while this holds the writer lock, so that a
        reader writes only when no job does. IndexLockedError when another process holds it."""
        if self.writable:
            yield self.catalog
            return
        lock_fd = acquire_lock(self.root)
        try:
            catalog = Catalog(self.root / CATALOG)
            try:
                yield catalog
            finally:
                catalog.close()
        finally:
            release_lock(lock_fd)

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- manifest --------------------------------------------------------------------------

    def write_manifest(self) -> None:
        self._require_writer()
        try:
            atomic_write_bytes(self.root / MANIFEST, [json.dumps(self.manifest.to_json(), indent=2).encode() + b"\n"])
        except OSError as exc:
            raise StorageError(
                f"cannot write {self.root / MANIFEST} ({exc.strerror or exc}); the old one is kept"
            ) from exc

    def update_manifest(self, **changes) -> None:
        self.manifest = replace(self.manifest, **changes)
        self.write_manifest()

    def skip_orphans(self, session) -> int:
        """How many clip rows belong to no video (in ``session``'s snapshot). Readers skip them
        and say so once; ``verify --repair`` deletes them."""
        n = self.catalog.orphan_clip_count(session)
        if n and not self._orphans_said:
            self._orphans_said = True
            log.warning(
                "%s: %d clip rows belong to no video; skipped (`vidsearch verify --repair` deletes them)",
                self.catalog.path,
                n,
            )
        return n

    # ---- vectors ---------------------------------------------------------------------------

    @property
    def vectors_path(self) -> Path:
        return self.root / VECTORS

    def vectors(self) -> VectorIndex:
        """The FAISS index matching the catalog now.

        Loaded from ``vectors.faiss`` when it matches the catalog generation; caught up by clip
        id when it is only behind; otherwise built from the catalog. Written back only by a writer.
        """
        generation = self.catalog.generation()
        if self._vectors is not None and self._vectors_generation == generation:
            return self._vectors
        try:
            vi, header = VectorIndex.load(self.vectors_path)
            problems = header_mismatches(header, self.manifest)
        except VectorFileError as exc:
            problems = [str(exc)]
        if not problems and header.generation == generation:
            self._vectors, self._vectors_generation = vi, generation
            return vi
        if not problems:  # only stale: a file of another type is rebuilt instead
            caught_up = self._catch_up(vi)
            if caught_up is not None:
                return caught_up
            problems = [f"is stale (catalog generation {header.generation}, now {generation})"]
        log.info("%s %s; building from the catalog", self.vectors_path, problems[0])
        return self.rebuild_vectors()

    def _catch_up(self, vi: VectorIndex) -> VectorIndex | None:
        """Bring a stale index up to the catalog by its clip ids (never reused, each with a fixed
        vector): remove the ids the catalog no longer has and add the ones it gained, keeping the
        trained lists and tuned parameters. None when so much changed that a rebuild is better."""
        dim = self.manifest.encoder.dim
        with self.catalog.read() as session:
            generation = self.catalog.generation(session)
            have = vi.ids()
            # The file matched the catalog when it was written, and ids only grow: every id above
            # its largest is new, and the catalog's ids up to it are a subset of the file's, so
            # equal counts mean nothing was removed (no need to read every id).
            top = int(have[-1]) if len(have) else 0
            new = self.catalog.clip_ids(session, above=top)
            gone = np.zeros(0, np.int64)
            if self.catalog.clip_count_up_to(session, top) != len(have):
                gone = np.setdiff1d(have, self.catalog.clip_ids(session, up_to=top), assume_unique=True)
            live = len(have) - len(gone) + len(new)
            changed = len(gone) + len(new) + len(vi.tombstones)  # tombstones are compacted only by a rebuild
            trainable = vi.spec != self.manifest.faiss_spec and self.exact_until(live) is None  # an exact stand-in
            if vi.needs_training or trainable or changed > max(CATCH_UP_MIN, CATCH_UP_SHARE * live):
                return None
            vi.remove(gone)
            for i in range(0, len(new), CATCH_UP_CHUNK):
                ids, vecs = self.catalog.embeddings_by_ids(session, new[i : i + CATCH_UP_CHUNK].tolist(), dim)
                vi.add(ids, vecs)
        log.info(
            "%s was %d clips behind and %d ahead of the catalog; caught up", self.vectors_path, len(new), len(gone)
        )
        self._vectors, self._vectors_generation = vi, generation
        if self.writable:
            self.save_vectors()
        return vi

    def rebuild_vectors(self) -> VectorIndex:
        """Build the FAISS index from the catalog in one snapshot (and save it, as a writer).

        An index type that needs training is trained on a random sample of the catalog, and its
        search parameters are tuned for recall against exact search on held-out clips. While the
        catalog has too few clips to train it, the index is exact (``IDMap2,Flat``) in its stead.
        """
        dim = self.manifest.encoder.dim
        spec = self.manifest.faiss_spec
        with self.catalog.read() as session:
            generation = self.catalog.generation(session)
            vi = VectorIndex.empty(dim, spec)
            until = self.exact_until(self.catalog.clip_count(session)) if vi.needs_training else None
            if until is not None:
                log.info("%s: %s needs %d clips to be trained; exact search until then", self.root, spec, until)
                vi = VectorIndex.empty(dim, DEFAULT_SPEC)
            elif vi.needs_training:
                _, sample = self.catalog.sample_embeddings(session, max(TRAIN_SAMPLE, training_minimum(spec)), dim)
                try:
                    vi.train(sample)
                except RuntimeError as exc:  # a type whose needs training_minimum does not know
                    log.warning(
                        "%s: cannot train %s on %d clips (%s); searching exactly for now",
                        self.root,
                        spec,
                        len(sample),
                        last_line(exc),
                    )
                    vi = VectorIndex.empty(dim, DEFAULT_SPEC)
            for ids, vecs in self.catalog.iter_embeddings(session, dim):
                vi.add(ids, vecs)
            params = {}
            if vi.spec != DEFAULT_SPEC and vi.ntotal > TUNE_QUERIES:
                qids, queries = self.catalog.sample_embeddings(session, TUNE_QUERIES, dim, seed=1)
                truth = exact_knn(queries, self.catalog.iter_embeddings(session, dim), 11)
                params = tune(vi, queries, qids, truth)
                log.info("%s: tuned %s for %d clips: %s", self.root, spec, vi.ntotal, params)
        if params:
            vi.set_params(params)
        self._vectors, self._vectors_generation = vi, generation
        if self.writable:
            if params != self.manifest.faiss_params:
                self.update_manifest(faiss_params=params)
            self.save_vectors()
        return vi

    def exact_until(self, clips: int) -> int | None:
        """How many clips the manifest's index type needs to be trained, while ``clips`` is fewer
        (search is exact until then); None when it can be built now."""
        need = training_minimum(self.manifest.faiss_spec)
        return need if clips < need else None

    def switch_index_type(self, spec: str | None = None) -> bool:
        """Pin ``spec`` (rebuilding), or with None let the size choose when the type is not pinned.
        Either way, an exact stand-in for a type that had too few clips to be trained is replaced
        by the real thing once there are enough.

        Returns whether the index was rebuilt.
        """
        self._require_writer()
        if spec is not None:
            VectorIndex.empty(self.manifest.encoder.dim, spec)  # a bad factory string fails here
            self.update_manifest(faiss_spec=spec, faiss_pinned=True, faiss_params={})
        else:
            with self.catalog.read() as session:
                n = self.catalog.clip_count(session)
            if self.manifest.faiss_pinned or not should_switch(self.manifest.faiss_spec, n):
                stand_in = self._vectors is not None and self._vectors.spec != self.manifest.faiss_spec
                if not stand_in or self.exact_until(n) is not None:
                    return False
            else:
                log.info(
                    "%s: %d clips; switching the index type from %s to %s",
                    self.root,
                    n,
                    self.manifest.faiss_spec,
                    choose_spec(n),
                )
                self.update_manifest(faiss_spec=choose_spec(n), faiss_params={})
        self.rebuild_vectors()
        return True

    def save_vectors(self) -> None:
        """Write the in-memory index (kept in step with this writer's commits) to disk."""
        self._require_writer()
        if self._vectors is None:
            return
        try:
            self._vectors.save(self.vectors_path, self._vectors_generation, self.manifest.index_uid)
        except OSError as exc:
            raise StorageError(
                f"cannot save {self.vectors_path} ({exc.strerror or exc}); the catalog is intact and "
                "the file is rebuilt from it on the next run"
            ) from exc

    def vectors_current(self) -> VectorIndex:
        """A writer's in-memory index as it stands (kept in step with its own commits)."""
        return self._vectors if self._vectors is not None else self.vectors()

    def sync_vectors(self, removed=(), added_ids=None, added_vectors=None) -> None:
        """After one of this writer's catalog writes: make the same change to the in-memory index
        and stamp it with the catalog's generation, so the file saved later is not stale."""
        vi = self.vectors_current()
        vi.remove(removed)
        if added_ids is not None and len(added_ids):
            vi.add(np.asarray(added_ids, dtype=np.int64), added_vectors)
        self.vectors_added(vi, self.catalog.generation())

    def vectors_added(self, vi: VectorIndex, generation: int) -> None:
        """Record that ``vi`` now reflects catalog ``generation`` (a writer after its commit)."""
        self._vectors, self._vectors_generation = vi, generation

    def _require_writer(self) -> None:
        if not self.writable:
            raise RuntimeError("this index was opened read-only")


def creation_leftovers(root: Path) -> list[Path] | None:
    """What a creation that stopped before its manifest left in ``root`` (empty for a new or empty
    folder), to be cleared before creating the index again; None when ``root`` holds anything else.

    Creating an index makes only the lock, the catalog (with its -wal and -shm) and a temporary
    manifest; a catalog with rows means the folder was an index once, and is not cleared.
    """
    if not root.exists():
        return []
    if not root.is_dir():
        return None
    made = {LOCK, CATALOG, CATALOG + "-wal", CATALOG + "-shm", CATALOG + "-journal"}
    if any(p.name not in made and not _is_temporary_manifest(p.name) for p in root.iterdir()):
        return None
    if (root / CATALOG).exists() and not holds_nothing(root / CATALOG):
        return None
    return [p for p in root.iterdir() if p.name != LOCK]  # listed again: reading a -wal can make a -shm


def _is_temporary_manifest(name: str) -> bool:
    return name.startswith(".tmp-") and name.endswith("-" + MANIFEST)  # atomic_write_bytes' naming


def _remove(paths: list[Path], quiet: bool = False) -> None:
    for p in paths:
        try:
            p.unlink(missing_ok=True)
        except OSError:
            if not quiet:
                raise


def header_mismatches(header: VectorHeader, manifest: Manifest) -> list[str]:
    """Why a vectors file cannot serve this index whatever its generation (empty when it can)."""
    problems = []
    if header.index_uid != manifest.index_uid:
        problems.append("belongs to another index")
    if header.dim != manifest.encoder.dim:
        problems.append(f"has dim {header.dim}, the manifest {manifest.encoder.dim}")
    stand_in = header.spec == DEFAULT_SPEC and header.ntotal < training_minimum(manifest.faiss_spec)
    if header.spec != manifest.faiss_spec and not stand_in:  # an exact index until the type can be trained
        problems.append(f"is of type {header.spec}, the manifest says {manifest.faiss_spec}")
    return problems
