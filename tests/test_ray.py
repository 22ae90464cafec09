"""``vidsearch index --ray``: the same job with decoding and embedding on a Ray cluster.

One local Ray for the session (2 CPUs, no GPU, the tiny model); the runs go through the CLI.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from harness import ENV, assert_faiss_matches_catalog, catalog_state
from helpers import write_video, write_videos

if os.environ.get("CI"):
    import ray  # CI installs the extra: without it these tests fail there, never skip
else:
    ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'vidsearch[ray]'")


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray for the session; in-process ``--ray`` runs use it, child processes get its address."""
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def four(tmp_path):
    """Four small videos: 6 s each, three 2-second clips each."""
    return write_videos(tmp_path / "videos", 4, seed=150)


def clips_of(idx):
    """{path: (clip times (N, 2), vectors (N, dim))} of every indexed video."""
    from vidsearch.storage.library import Library

    with Library.open(idx) as lib, lib.catalog.read() as s:
        dim = lib.manifest.encoder.dim
        return {
            os.fsdecode(v.path): lib.catalog.video_clips(s, v.id, dim)
            for v in lib.catalog.videos(s)
            if v.status == "indexed"
        }


def child_env(**extra):
    """The environment of a child that joins a Ray started here (ray.init put its auth mode in ours)."""
    return {**ENV, **os.environ, **extra}


def pixel_spreads(idx):
    """{(path, clip start): pixel spread} of every clip."""
    from vidsearch.storage.library import Library

    with Library.open(idx) as lib, lib.catalog.read() as s:
        paths = {v.id: os.fsdecode(v.path) for v in lib.catalog.videos(s)}
        t = lib.catalog.clip_table(s)
        return {(paths[int(v)], float(a)): float(p) for v, a, p in zip(t.video, t.start, t.pixel_std)}


def ray_job(vs, folder, idx, address, *extra):
    """The argv of ``vidsearch index --ray ADDRESS`` as a separate process."""
    return vs.argv("index", folder, "--index", idx, "--model", vs.model, f"--ray={address}", *extra)


def test_ray_options_need_ray_and_a_path_is_not_an_address(tmp_path, four, vs):
    r = vs("index", four, "--index", tmp_path / "idx", "--ray-actors", 2)
    assert r.exit_code == 2 and "--ray-actors needs --ray" in r.output
    r = vs("index", "--ray", four, four, "--index", tmp_path / "idx")  # click takes the first for the address
    assert r.exit_code == 2 and f"'{four}' is a path, not a Ray address" in r.output
    r = vs("index", four, "--index", tmp_path / "idx", "--workers", 2, "--ray")
    assert r.exit_code == 2 and "--ray-decode-cpus" in r.output
    assert not (tmp_path / "idx").exists()


def test_without_the_ray_extra_index_ray_says_how_to_install_it(tmp_path, four, vs, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    r = vs("index", four, "--index", tmp_path / "idx", "--model", vs.model, "--ray")
    assert r.exit_code == 2
    assert r.output == "Error: --ray needs ray[data], which is not installed: pip install 'vidsearch[ray]'\n"
    assert not (tmp_path / "idx").exists()


@pytest.mark.slow
def test_embeddings_and_clip_times_are_the_built_in_jobs(tmp_path, four, local_ray, vs):
    r = vs.index(four, tmp_path / "built-in")
    assert r.exit_code == 0, r.output
    r = vs("index", four, "--index", tmp_path / "ray", "--model", vs.model, "--ray")
    assert r.exit_code == 0, r.output
    assert "indexed 4, skipped 0, moved 0, failed 0, 12 clips" in r.output
    want, got = clips_of(tmp_path / "built-in"), clips_of(tmp_path / "ray")
    assert pixel_spreads(tmp_path / "ray") == pixel_spreads(tmp_path / "built-in")
    assert sorted(got) == sorted(want)
    for path, (times, vectors) in want.items():
        assert np.array_equal(got[path][0], times), path
        assert np.sum(got[path][1] * vectors, axis=1).min() >= 0.9999, path
    assert_faiss_matches_catalog(tmp_path / "ray")


@pytest.mark.slow
def test_incremental_runs_skip_move_and_reindex(tmp_path, four, local_ray, vs):
    idx = tmp_path / "idx"
    assert vs("index", four, "--index", idx, "--model", vs.model, "--ray").exit_code == 0
    videos, clips = catalog_state(idx)
    r = vs("index", four, "--index", idx, "--ray")
    assert "indexed 0, skipped 4" in r.output  # nothing to embed: Ray is not even needed
    write_video(four / "v1.mp4", seconds=4, fps=25, size=(128, 96), seed=99)  # new content
    os.rename(four / "v2.mp4", four / "moved.mp4")
    write_video(four / "new.mp4", seconds=2, fps=25, size=(96, 96), seed=98)
    r = vs("index", four, "--index", idx, "--ray")
    assert r.exit_code == 0, r.output
    assert "indexed 2, skipped 2, moved 1, failed 0, 3 clips" in r.output
    videos2, clips2 = catalog_state(idx)
    assert clips2[videos2[str(four / "moved.mp4")][0]] == clips[videos[str(four / "v2.mp4")][0]]
    assert len(clips2[videos2[str(four / "v1.mp4")][0]]) == 2
    assert len(clips2[videos2[str(four / "new.mp4")][0]]) == 1
    assert_faiss_matches_catalog(idx)


@pytest.mark.slow
def test_broken_files_and_a_segfaulting_decoder_fail_with_reasons_and_the_job_goes_on(tmp_path, four, local_ray, vs):
    (four / "empty.mp4").write_bytes(b"")
    (four / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    idx = tmp_path / "idx"
    r = vs("index", four, "--index", idx, "--model", vs.model, "--ray", env={"VIDSEARCH_FAULT_WORKER": "crash:v0.mp4"})
    assert r.exit_code == 1, r.output
    assert "indexed 3, skipped 0, moved 0, failed 3, 9 clips" in r.output
    assert f"failed: {four / 'v0.mp4'}: decoder crashed (signal 11)" in r.output
    assert f"failed: {four / 'garbage.mp4'}: not a decodable video" in r.output
    assert f"failed: {four / 'empty.mp4'}: " in r.output
    videos, _ = catalog_state(idx)
    assert sorted(p for p, (_, s) in videos.items() if s == "failed") == [
        str(four / n) for n in ("empty.mp4", "garbage.mp4", "v0.mp4")
    ]
    assert_faiss_matches_catalog(idx)


@pytest.mark.slow
def test_a_hung_decoder_is_timed_out_and_the_job_goes_on(tmp_path, four, local_ray, vs):
    idx = tmp_path / "idx"
    env = {"VIDSEARCH_FAULT_WORKER": "hang:v3.mp4"}
    r = vs("index", four, "--index", idx, "--model", vs.model, "--timeout", 3, "--ray", env=env)
    assert r.exit_code == 1, r.output
    assert "indexed 3, skipped 0, moved 0, failed 1, 9 clips" in r.output
    assert f"failed: {four / 'v3.mp4'}: decoding timed out (3s without progress)" in r.output


@pytest.mark.slow
def test_a_driver_killed_mid_run_is_finished_by_the_same_command(tmp_path, four, local_ray, vs):
    idx = tmp_path / "idx"
    argv = ray_job(vs, four, idx, local_ray)
    r = subprocess.run(argv, env=child_env(VIDSEARCH_FAULT="in_commit:2"), capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    videos, _ = catalog_state(idx)
    assert len(videos) == 1  # the first commit; the second was cut off
    r = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    videos, clips = catalog_state(idx)
    assert len(videos) == 4 and all(s == "indexed" for _, s in videos.values())
    assert sorted(len(c) for c in clips.values()) == [3, 3, 3, 3]
    assert_faiss_matches_catalog(idx)
    assert vs("verify", "--index", idx).exit_code == 0


@pytest.mark.slow
def test_an_actor_whose_node_has_another_checkpoint_stops_the_job_in_one_line(tmp_path, four, encoder, local_ray):
    import copy
    import dataclasses

    from vidsearch.errors import ModelUnavailableError
    from vidsearch.indexer.ray_job import index_on_ray

    other = copy.copy(encoder)  # the driver's: the same model folder, said to be another revision
    other.settings = dataclasses.replace(encoder.settings, revision="sha:the-drivers-own")
    with pytest.raises(ModelUnavailableError) as caught:
        index_on_ray(tmp_path / "idx", [four], encoder=other)
    assert str(caught.value) == (
        f"on the Ray cluster: {encoder.settings.model} on this node is not the checkpoint the index was made with "
        f"(revision {encoder.settings.revision}, the driver's sha:the-drivers-own)"
    )


def test_a_file_that_a_node_cannot_see_stops_the_job_before_it_streams(tmp_path, local_ray):
    from vidsearch.errors import ClusterError
    from vidsearch.indexer.ray_job import check_shared_paths
    from vidsearch.media.discover import VideoFile, fingerprint

    path = write_video(tmp_path / "a.mp4", seconds=1)
    video = fingerprint(VideoFile(str(path), path.stat().st_size, path.stat().st_mtime_ns))
    check_shared_paths(video)
    with pytest.raises(ClusterError, match="it is another file there .*mounted at the same path on every node"):
        check_shared_paths(VideoFile(video.path, video.size, video.mtime_ns, "0" * 40))
    with pytest.raises(ClusterError, match=r"cannot read it there \(No such file or directory\)"):
        check_shared_paths(VideoFile(str(tmp_path / "gone.mp4"), 1, 0, "0" * 40))


@pytest.mark.slow
def test_a_two_node_cluster(tmp_path, four, vs):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        idx = tmp_path / "idx"
        argv = ray_job(vs, four, idx, cluster.address)
        argv[argv.index("-q")] = "-v"
        r = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "the same file on the 2 node(s) of the Ray cluster" in r.stderr
        assert "indexed 4, skipped 0, moved 0, failed 0, 12 clips" in r.stdout
        assert_faiss_matches_catalog(idx)
    finally:
        cluster.shutdown()


def test_the_pipeline_takes_its_shape_from_the_cluster_and_refuses_one_it_would_wait_on_forever():
    from vidsearch.errors import ClusterError
    from vidsearch.indexer.job import IndexOptions
    from vidsearch.indexer.ray_job import RayOptions, _shape

    gb = 2.0**30
    gpu_nodes = [{"CPU": 16, "GPU": 4, "memory": 64 * gb}, {"CPU": 16, "GPU": 4, "memory": 64 * gb}]
    shape = _shape(gpu_nodes, RayOptions(), IndexOptions())
    assert (shape.actors, shape.gpus_per_actor, shape.batch_size) == (8, 1.0, 32)  # one per GPU, GPU batches
    assert shape.decode_memory_bytes == (4096 + 512) * 2**20
    assert shape.object_store_bytes == 8 * 32 * 4 * 16 * 224 * 523 * 3  # four batches in flight per actor
    shape = _shape(gpu_nodes, RayOptions(gpus_per_actor=0.5), IndexOptions(batch_size=8))
    assert (shape.actors, shape.gpus_per_actor, shape.batch_size) == (16, 0.5, 8)
    shape = _shape([{"CPU": 2, "memory": 8 * gb}], RayOptions(), IndexOptions())
    assert (shape.actors, shape.gpus_per_actor, shape.batch_size, shape.object_store_bytes) == (1, 0.0, 1, 2**29)
    with pytest.raises(ClusterError, match="2 encoder actor.s. at 1 GPU each need 2 GPUs; the Ray cluster has 0"):
        _shape([{"CPU": 2, "memory": 8 * gb}], RayOptions(actors=2, gpus_per_actor=1), IndexOptions())
    with pytest.raises(ClusterError, match="has 1 CPUs; an encoder actor and a decode task need 2"):
        _shape([{"CPU": 1, "memory": 8 * gb}], RayOptions(), IndexOptions())
    with pytest.raises(ClusterError, match="reserves 4608 MB .* the largest node of the Ray cluster has 4096 MB"):
        _shape([{"CPU": 8, "memory": 4 * gb}, {"CPU": 8, "memory": 4 * gb}], RayOptions(), IndexOptions())
