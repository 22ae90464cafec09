"""The CLI as tests drive it: in process through click's runner, or as a separate process to kill.

Tests get one :class:`Cli` through the ``vs`` fixture (conftest), bound to the tiny test model.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from vidsearch.cli import cli

#: the environment for a ``vidsearch`` child process: offline, like the tests themselves
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


class Cli:
    def __init__(self, model: Path | str) -> None:
        self.model = model

    def __call__(self, *args, env: dict | None = None, catch: bool = False) -> Result:
        """``vidsearch ARGS`` in process. An exception the CLI lets escape fails the test with its
        traceback, unless ``catch`` (then it is ``Result.exception``)."""
        return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=catch)

    def index(self, folder, idx, *extra, env: dict | None = None) -> Result:
        """``vidsearch index FOLDER --index IDX`` with the tiny model and two workers."""
        return self("index", folder, "--index", idx, "--model", self.model, "--workers", 2, *extra, env=env)

    def argv(self, *args) -> list[str]:
        """The argv of ``vidsearch -q ARGS`` as a separate process."""
        return [sys.executable, "-m", "vidsearch.cli", "-q", *map(str, args)]

    def job(self, folder, idx, *extra) -> list[str]:
        """The argv of ``vidsearch index`` as a separate process (to be killed): two workers, one clip a batch."""
        return self.argv(
            "index", folder, "--index", idx, "--model", self.model, "--workers", 2, "--batch-size", 1, *extra
        )


def catalog_state(idx):
    """({path: (video id, status)}, {video id: [clip ids]}) read straight from the catalog file."""
    con = sqlite3.connect(idx / "catalog.sqlite")
    try:
        videos = {
            os.fsdecode(p): (vid, status) for vid, p, status in con.execute("select id, path, status from videos")
        }
        clips = {
            vid: sorted(c for (c,) in con.execute("select id from clips where video_id=?", (vid,)))
            for vid, _ in videos.values()
        }
        return videos, clips
    finally:
        con.close()


def assert_faiss_matches_catalog(idx):
    from vidsearch.storage.library import Library
    from vidsearch.storage.vectors import VectorIndex

    with Library.open(idx) as lib:
        vi, header = VectorIndex.load(lib.vectors_path)
        assert header.generation == lib.catalog.generation(), "vectors.faiss is stale after the job"
        with lib.catalog.read() as s:
            ids = sorted(int(i) for chunk, _ in lib.catalog.iter_embeddings(s, lib.manifest.encoder.dim) for i in chunk)
        assert sorted(vi.ids().tolist()) == ids
