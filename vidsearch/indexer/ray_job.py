"""The indexing job on a Ray cluster (``vidsearch index --ray``): Ray Data decodes and embeds,
this process plans and commits.

The driver is ``job.index_paths``: discovery, planning (skip, move, copy, prune, retry), the
writer lock and one transaction per video stay in this process, the only writer; Ray's workers
never touch the index directory. The pipeline, streaming with backpressure:

- ``ray.data.from_items``, one item per planned video (its token and path);
- decode tasks on CPUs (``decode_videos``): each runs the decode worker of ``indexer.workers``
  in a subprocess, with its timeout and memory limit, and yields one row per clip (frames
  resized at decode, uint8), an info row, and a final done or error row per video. A decoder
  that hangs or crashes becomes an error row, not a failed Ray task;
- ``map_batches(ClipEncoder)`` on an actor pool, ``num_gpus`` per actor where there are GPUs:
  each clip row gets its vector and lets its frames go;
- ``iter_batches`` here, into ``job.consume``, which keys clips by (token, position), so a row
  that a retried task repeats is harmless.

Every node must see the library and the model at the same paths, and have vidsearch installed.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from vidsearch import faults
from vidsearch.errors import ClusterError, MissingExtraError, ModelUnavailableError, first_line, last_line
from vidsearch.indexer.job import (
    Embedded,
    IndexOptions,
    IndexSummary,
    consume,
    decode_settings,
    default_batch_size,
    index_paths,
)
from vidsearch.indexer.workers import (
    ClipMsg,
    DecodeSettings,
    DecodeTask,
    Done,
    Failed,
    Info,
    Message,
    Switched,
    WorkerPool,
)
from vidsearch.media.discover import VideoFile, sampled_hash
from vidsearch.media.readers import Clip

if TYPE_CHECKING:
    from vidsearch.indexer.job import _Job
    from vidsearch.model.encoder import Encoder
    from vidsearch.settings import EncoderSettings
    from vidsearch.storage.library import Library

log = logging.getLogger(__name__)

_NO_FRAMES = np.zeros((0, 1, 1, 3), dtype=np.uint8)
#: Memory a decode task's own Ray worker holds besides its decode subprocess (Ray, Arrow, one
#: output block of clips).
_TASK_OVERHEAD_MB = 512
#: Rows a decode task buffers into one block: small, so that a block is a few clips, never a video.
_BLOCK_BYTES = 16 * 2**20
#: A clip as decode leaves it, at most: 16 frames at short edge 224 and a 21:9 frame.
_CLIP_BYTES = 16 * 224 * 523 * 3
#: Batches each encoder actor may hold queued besides the one it embeds.
_IN_FLIGHT_PER_ACTOR = 2


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray pipeline runs. ``None`` means: what the cluster suggests."""

    #: ``ray.init``'s address: None takes RAY_ADDRESS, else starts a local Ray
    address: str | None = None
    #: encoder actors: default one per GPU, or 1 on a cluster without GPUs
    actors: int | None = None
    #: GPUs each encoder actor holds: default 1 where the cluster has GPUs, else 0
    gpus_per_actor: float | None = None
    #: CPUs each decode task holds (one single-threaded decoder process each)
    decode_cpus: float = 1.0

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"actors must be >= 1, got {self.actors}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ValueError(f"gpus_per_actor must be >= 0, got {self.gpus_per_actor}")
        if self.decode_cpus <= 0:
            raise ValueError(f"decode_cpus must be positive, got {self.decode_cpus}")


def index_on_ray(
    index_dir: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    options: IndexOptions | None = None,
    ray_options: RayOptions | None = None,
    encoder: Encoder | None = None,
) -> IndexSummary:
    """``job.index_paths``, with decoding and embedding on a Ray cluster.

    Ray is connected to when there is something to embed (a connection this process already
    has is used and left open; one made here is closed at the end). The encoder this process
    loads (on its CPU) only names the model and its settings; the actors load their own.
    """
    opts = options or IndexOptions()
    _ray()  # without the extra, say so before anything is done
    cluster = _Cluster(ray_options or RayOptions())

    def run(lib: Library, enc: Encoder, work: list[_Job], o: IndexOptions, summary: IndexSummary) -> None:
        cluster.run(lib, enc.settings, work, replace(o, device=opts.device, dtype=opts.dtype), summary)

    try:
        return index_paths(index_dir, paths, replace(opts, device="cpu"), encoder, runner=run)
    finally:
        cluster.close()


def _ray():
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingExtraError("--ray", "ray", "ray[data]") from exc
    return ray


def _ray_log_level() -> int:
    """Ray says less than vidsearch: its warnings are about Ray itself (-v shows them)."""
    level = logging.getLogger("vidsearch").getEffectiveLevel()
    return logging.INFO if level <= logging.DEBUG else logging.WARNING if level <= logging.INFO else logging.ERROR


class _Cluster:
    def __init__(self, options: RayOptions):
        self.options = options
        self.started = False

    def connect(self):
        ray = _ray()
        # Ray Data logs each dataset's start and end on a console handler of its own (INFO, not
        # propagated): it says as much as Ray is told to say
        for handler in logging.getLogger("ray.data").handlers:
            if handler.get_name() == "console":
                handler.setLevel(_ray_log_level())
        if ray.is_initialized():
            return ray
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if main else None
        try:
            ray.init(
                address=self.options.address,
                include_dashboard=False,
                logging_level=_ray_log_level(),
                log_to_driver=logging.getLogger("vidsearch").isEnabledFor(logging.DEBUG),
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.options.address or os.environ.get("RAY_ADDRESS") or "a new local Ray"
            raise ClusterError(f"cannot start or reach Ray at {where}: {first_line(exc)}") from exc
        finally:
            if main:  # ray.init puts in its own SIGTERM handler (exit at once): the job's commits what is done
                signal.signal(signal.SIGTERM, previous)
        self.started = True
        return ray

    def close(self) -> None:
        if self.started:
            _ray().shutdown()
            self.started = False

    def run(
        self, lib: Library, model: EncoderSettings, work: list[_Job], opts: IndexOptions, summary: IndexSummary
    ) -> None:
        ray = self.connect()
        shape = _shape([n["Resources"] for n in _nodes(ray)], self.options, opts)
        check_shared_paths(work[0].file)
        ctx = ray.data.DataContext.get_current()  # a dataset takes a copy when it is made
        saved = (ctx.target_max_block_size, ctx.enable_progress_bars, ctx.execution_options.resource_limits)
        ctx.target_max_block_size, ctx.enable_progress_bars = _BLOCK_BYTES, False
        ctx.execution_options.resource_limits = saved[2].copy(object_store_memory=shape.object_store_bytes)
        try:
            ds = _pipeline(work, decode_settings(lib, opts), model, opts, shape)
        finally:
            ctx.target_max_block_size, ctx.enable_progress_bars, ctx.execution_options.resource_limits = saved
        try:
            consume(lib, work, _messages(ds), opts, summary)
        except ray.exceptions.RayError as exc:
            raise _pipeline_error(exc) from exc


@dataclass(frozen=True)
class _Shape:
    actors: int
    gpus_per_actor: float
    batch_size: int
    decode_cpus: float
    decode_memory_bytes: int
    object_store_bytes: int


def _nodes(ray) -> list[dict]:
    """The cluster's live nodes that can run tasks."""
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]


def _shape(nodes: list[dict[str, float]], options: RayOptions, opts: IndexOptions) -> _Shape:
    """Actors, GPUs and memory for a cluster of ``nodes`` (their resources); one that cannot run
    each stage is refused here (Ray would wait for the resources without end)."""
    gpus = sum(n.get("GPU", 0.0) for n in nodes)
    per_actor = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    actors = options.actors or (max(1, int(gpus // per_actor)) if per_actor else 1)
    if per_actor * actors > gpus:
        raise ClusterError(
            f"{actors} encoder actor(s) at {per_actor:g} GPU each need {per_actor * actors:g} GPUs; "
            f"the Ray cluster has {gpus:g}"
        )
    cpus = sum(n.get("CPU", 0.0) for n in nodes)
    if cpus < 1 + options.decode_cpus:  # an actor's CPU and one decode task's
        raise ClusterError(
            f"the Ray cluster has {cpus:g} CPUs; an encoder actor and a decode task need {1 + options.decode_cpus:g}"
        )
    decode_memory = (opts.max_decode_mb + _TASK_OVERHEAD_MB) * 2**20
    most = max(n.get("memory", 0.0) for n in nodes)
    if most < decode_memory:
        raise ClusterError(
            f"a decode task reserves {decode_memory >> 20} MB (--max-decode-memory {opts.max_decode_mb} plus "
            f"{_TASK_OVERHEAD_MB}); the largest node of the Ray cluster has {int(most) >> 20} MB"
        )
    batch_size = opts.batch_size or default_batch_size("cuda" if per_actor else "cpu")
    in_flight = actors * batch_size * (_IN_FLIGHT_PER_ACTOR + 2)  # queued, embedding, and being decoded
    object_store = max(512 * 2**20, in_flight * _CLIP_BYTES)
    return _Shape(actors, per_actor, batch_size, options.decode_cpus, decode_memory, object_store)


def _pipeline(work: list[_Job], settings: DecodeSettings, model: EncoderSettings, opts: IndexOptions, shape: _Shape):
    import ray.data

    items = [{"token": token, "path": job.file.path_bytes} for token, job in enumerate(work)]
    env = faults.environment()

    def decode(batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return decode_videos(batch, settings, opts.timeout_s)

    return (
        ray.data.from_items(items, override_num_blocks=len(items))
        .map_batches(
            decode,
            batch_size=1,
            num_cpus=shape.decode_cpus,
            memory=shape.decode_memory_bytes,
            runtime_env={"env_vars": env} if env else None,
        )
        .map_batches(
            ClipEncoder,
            fn_constructor_args=(model, opts.device, opts.dtype),
            batch_size=shape.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=shape.actors, max_tasks_in_flight_per_actor=_IN_FLIGHT_PER_ACTOR),
            num_cpus=1,
            num_gpus=shape.gpus_per_actor or None,
        )
    )


def _messages(ds) -> Iterator[Info | Embedded | Switched | Done | Failed]:
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
        for kind, message, vector in zip(batch["kind"], batch["message"], batch["vector"]):
            msg = pickle.loads(message)
            # a copy: a row of the batch would keep the whole batch alive
            yield Embedded(msg.token, msg.clip, msg.pixel_std, vector.copy()) if kind == "clip" else msg


def _pipeline_error(exc: BaseException) -> ClusterError | ModelUnavailableError:
    """One line for a failed pipeline. An actor that failed to start carries its exception only as
    the text of a traceback, whose last line names it."""
    said = re.fullmatch(r"vidsearch\.errors\.(\w+): (.+)", last_line(exc, limit=2000))
    if said and said.group(1) == ModelUnavailableError.__name__:
        return ModelUnavailableError(f"on the Ray cluster: {said.group(2)}")
    if said:
        return ClusterError(f"on the Ray cluster: {said.group(2)}")
    return ClusterError(f"the Ray pipeline failed: {first_line(exc)}")


# ---- on the cluster ---------------------------------------------------------------------------


def _probe(path: bytes) -> str:
    """The fingerprint of ``path`` where this runs, or why it cannot be read."""
    try:
        return sampled_hash(os.fsdecode(path))
    except OSError as exc:
        return f"cannot read it there ({exc.strerror or exc})"


def check_shared_paths(file: VideoFile) -> None:
    """On every live node of the cluster, ``file`` must be the same file as here."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_probe)
    nodes = _nodes(ray)
    found = ray.get(
        [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                file.path_bytes
            )
            for n in nodes
        ]
    )
    for node, fp in zip(nodes, found):
        if fp != file.fingerprint:
            what = fp if fp.startswith("cannot") else "it is another file there"
            raise ClusterError(
                f"{file.path}: {what} (node {node.get('NodeManagerAddress')}); the library must be mounted "
                "at the same path on every node of the Ray cluster"
            )
    log.info("%s: the same file on the %d node(s) of the Ray cluster", file.path, len(nodes))


#: One decode worker per Ray worker process, kept between tasks (starting one imports torch).
_pools: dict[tuple[DecodeSettings, float], WorkerPool] = {}


def decode_videos(batch: dict[str, Any], settings: DecodeSettings, timeout_s: float) -> Iterator[dict[str, Any]]:
    """Ray Data decode stage: the videos of ``batch`` (token, path), row by row."""
    key = (settings, timeout_s)
    if key not in _pools:
        _pools[key] = WorkerPool(1, settings, timeout_s)
    pool = _pools[key]
    for token, path in zip(batch["token"], batch["path"]):
        yield from _decode(pool, int(token), os.fsdecode(bytes(path)))


def _decode(pool: WorkerPool, token: int, path: str) -> Iterator[dict[str, Any]]:
    pool.reap()  # a worker that died between videos is replaced
    pool.assign(pool.idle()[0], DecodeTask(token, path))
    size = (0, 0)
    while True:
        msg = pool.get(timeout=0.5)
        if msg is not None:
            if isinstance(msg, Info):
                size = (msg.info.width, msg.info.height)
            with pool.paused():  # while Ray holds this generator back, the decoder is not hanging
                yield _row(msg, size)
            if isinstance(msg, (Done, Failed)):
                return
        for task, reason in pool.reap():
            yield _row(Failed(task.token, reason), size)
            return


def _row(msg: Message, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """A one-row batch: the message (frames apart, pickled) and, for a clip, its frames."""
    frames, position, kind = _NO_FRAMES, -1, type(msg).__name__.lower()
    if isinstance(msg, ClipMsg):
        frames, position, kind = msg.clip.frames, msg.clip.position, "clip"
        msg = replace(msg, clip=Clip(msg.clip.position, msg.clip.start_s, msg.clip.end_s, _NO_FRAMES))
    return {
        "token": np.array([msg.token]),
        "position": np.array([position]),
        "kind": np.array([kind]),
        "width": np.array([size[0]]),
        "height": np.array([size[1]]),
        "frames": frames[None],
        "message": np.array([pickle.dumps(msg)], dtype=object),
    }


def _node_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ClipEncoder:
    """Ray Data encoder actor: embeds the clip rows of a batch, passes the other rows through."""

    def __init__(self, model: EncoderSettings, device: str, dtype: str):
        import torch

        from vidsearch.model.encoder import load_encoder, resolve_device

        if resolve_device(device) == "cpu":  # Ray gives an actor one thread per CPU it holds; torch wants them all
            torch.set_num_threads(_node_cpus())
        revision = model.revision if len(model.revision) == 40 else None  # a hub commit: the driver's
        self.encoder = load_encoder(model.model, device, dtype, revision=revision)
        if self.encoder.settings != model:
            raise ModelUnavailableError(
                f"{model.model} on this node is not the checkpoint the index was made with "
                f"(revision {self.encoder.settings.revision}, the driver's {model.revision})"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = batch.pop("frames")
        width, height = batch.pop("width"), batch.pop("height")
        rows = np.flatnonzero(batch["kind"] == "clip")
        vectors = np.zeros((len(batch["kind"]), self.encoder.dim), dtype=np.float32)
        if len(rows):
            sizes = [(int(width[i]), int(height[i])) for i in rows]
            vectors[rows] = self.encoder.embed([frames[i] for i in rows], sizes)
        batch["vector"] = vectors
        return batch
