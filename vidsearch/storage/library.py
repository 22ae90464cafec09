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

from vidsearch.errors import CorruptIndexError, IncompatibleIndexError, IndexNotFoundError, StorageError, last_line
from vidsearch.settings import ClipSettings, EncoderSettings
from vidsearch.storage.atomic import atomic_write_bytes
from vidsearch.storage.catalog import Catalog
from vidsearch.storage.faiss_spec import DEFAULT_SPEC, choose_spec, should_switch
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
        root = Path(root)
        if cls.exists(root):
            raise IncompatibleIndexError(f"{root} already holds an index")
        if root.exists() and any(p.name not in (LOCK,) for p in root.iterdir()):
            raise IncompatibleIndexError(f"{root} exists and is not an empty folder or a vidsearch index")
        root.mkdir(parents=True, exist_ok=True)
        warn_if_network_filesystem(root)
        lock_fd = acquire_lock(root)
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

    @classmethod
    def open(cls, root: str | os.PathLike, writable: bool = False) -> Library:
        root = Path(root)
        path = root / MANIFEST
        if not path.exists():
            if root.is_dir() and (root / CATALOG).exists():
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
            if vi.needs_training or changed > max(CATCH_UP_MIN, CATCH_UP_SHARE * live):
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
        search parameters are tuned for recall against exact search on held-out clips.
        """
        dim = self.manifest.encoder.dim
        spec = self.manifest.faiss_spec
        with self.catalog.read() as session:
            generation = self.catalog.generation(session)
            vi = VectorIndex.empty(dim, spec)
            if vi.needs_training:
                _, sample = self.catalog.sample_embeddings(session, TRAIN_SAMPLE, dim)
                try:
                    vi.train(sample)
                except RuntimeError as exc:  # too few clips yet for this type: exact until there are
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

    def switch_index_type(self, spec: str | None = None) -> bool:
        """Pin ``spec`` (rebuilding), or with None let the size choose when the type is not pinned.

        Returns whether the index was rebuilt.
        """
        self._require_writer()
        if spec is not None:
            VectorIndex.empty(self.manifest.encoder.dim, spec)  # a bad factory string fails here
            self.update_manifest(faiss_spec=spec, faiss_pinned=True, faiss_params={})
        else:
            if self.manifest.faiss_pinned:
                return False
            with self.catalog.read() as session:
                n = self.catalog.clip_count(session)
            if not should_switch(self.manifest.faiss_spec, n):
                return False
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


def header_mismatches(header: VectorHeader, manifest: Manifest) -> list[str]:
    """Why a vectors file cannot serve this index whatever its generation (empty when it can)."""
    problems = []
    if header.index_uid != manifest.index_uid:
        problems.append("belongs to another index")
    if header.dim != manifest.encoder.dim:
        problems.append(f"has dim {header.dim}, the manifest {manifest.encoder.dim}")
    if header.spec != manifest.faiss_spec:
        problems.append(f"is of type {header.spec}, the manifest says {manifest.faiss_spec}")
    return problems
