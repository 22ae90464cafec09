"""Export: VSC ids that name each video once, the id table beside the export, and the targets it
refuses to write over (issue 12, items 3 and 11)."""

import hashlib
import io
import os
import stat

import numpy as np
import pytest
from planting import DIM, Planter, store

from vidsearch.errors import InvalidArgumentError
from vidsearch.storage.export import export, ids_path, vsc_video_ids

CAMERAS = ["/cam1/IMG_0001.mp4", "/cam1/IMG_0002.mp4", "/cam2/IMG_0001.mp4"]


def short_hash(path):
    return hashlib.blake2b(path.encode(), digest_size=20).hexdigest()[:10]


@pytest.fixture
def cameras(tmp_path):
    """An index of three videos from two cameras, two with the same file name: 3, 2 and 4 clips."""
    from vidsearch.settings import EncoderSettings, Preprocessing
    from vidsearch.storage.library import Library

    lib = Library.create(tmp_path / "idx", EncoderSettings("m", "r", DIM, "mean", 16, 224, Preprocessing()))
    p = Planter(3)
    for path, n in zip(CAMERAS, (3, 2, 4)):
        store(lib, path, p.random(n))
    yield lib
    lib.close()


def test_vsc_ids_are_unique_stable_and_mapped_to_paths(cameras, tmp_path):
    one, two = f"IMG_0001-{short_hash(CAMERAS[0])}", f"IMG_0001-{short_hash(CAMERAS[2])}"
    out = tmp_path / "desc.npz"
    assert export(cameras, out, "vsc") == 9
    ids = np.load(out, allow_pickle=False)["video_ids"].tolist()
    # the shared stem gets a hash of the path; the unique one keeps its stem; rows of a video stay together
    assert ids == [one] * 3 + ["IMG_0002"] * 2 + [two] * 4
    assert ids_path(out) == str(tmp_path / "desc.npz.ids.csv")
    assert (tmp_path / "desc.npz.ids.csv").read_text() == (
        f"video_id,path\n{one},/cam1/IMG_0001.mp4\nIMG_0002,/cam1/IMG_0002.mp4\n{two},/cam2/IMG_0001.mp4\n"
    )
    # a selection keeps the ids of the whole index: queries and references exported apart agree
    only = tmp_path / "only.txt"
    only.write_text(f"{two}\n")
    assert export(cameras, tmp_path / "q.npz", "vsc", only=only) == 4
    assert set(np.load(tmp_path / "q.npz")["video_ids"].tolist()) == {two}
    assert (tmp_path / "q.npz.ids.csv").read_text() == f"video_id,path\n{two},/cam2/IMG_0001.mp4\n"


def test_vsc_video_ids_keep_unique_stems_and_escape_non_utf8_names():
    odd = os.fsdecode(b"/a/caf\xe9.mp4")
    assert vsc_video_ids(["/a/x.mp4", "/b/y.mkv", odd]) == {"/a/x.mp4": "x", "/b/y.mkv": "y", odd: "caf\\xe9"}
    ids = vsc_video_ids([f"/d{i}/IMG_0001.mp4" for i in range(2000)])
    assert len(set(ids.values())) == 2000
    assert ids["/d7/IMG_0001.mp4"] == f"IMG_0001-{short_hash('/d7/IMG_0001.mp4')}"


def _targets(tmp_path):
    """OUT paths that are not regular files, each with what export must call it."""
    (tmp_path / "kept.npz").write_bytes(b"keep me")
    os.symlink(tmp_path / "kept.npz", tmp_path / "link.npz")
    os.mkfifo(tmp_path / "fifo.npz")
    targets = [(tmp_path / "link.npz", "a symbolic link"), (tmp_path / "fifo.npz", "a FIFO")]
    try:  # a device node like /dev/null (1, 3), made here: needs root
        os.mknod(tmp_path / "null.npz", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        targets.append((tmp_path / "null.npz", "a character device"))
    except PermissionError:
        pass
    return targets


@pytest.mark.parametrize("fmt", ["vsc", "npz", "parquet"])
def test_export_refuses_a_target_that_is_not_a_regular_file(cameras, tmp_path, vs, fmt):
    for target, kind in _targets(tmp_path):
        mode = os.lstat(target).st_mode
        r = vs("export", target, "--index", cameras.root, "--format", fmt)
        assert r.exit_code == 2, r.output
        assert (
            r.output
            == f"Error: {target} is {kind}; export writes only to a regular file, which it replaces, or to a new path\n"
        )
        assert os.lstat(target).st_mode == mode  # left as it was
    assert (tmp_path / "kept.npz").read_bytes() == b"keep me"
    assert not (tmp_path / "link.npz.ids.csv").exists()
    # the id table of a VSC export is a target too
    os.symlink(tmp_path / "kept.npz", tmp_path / "d.npz.ids.csv")
    r = vs("export", tmp_path / "d.npz", "--index", cameras.root)
    assert r.exit_code == 2 and f"{tmp_path / 'd.npz.ids.csv'} is a symbolic link" in r.output
    assert not (tmp_path / "d.npz").exists()
    r = vs("export", tmp_path / "no-such-folder" / "d.npz", "--index", cameras.root, "--format", fmt)
    assert r.exit_code == 2 and f"there is no folder {tmp_path / 'no-such-folder'}" in r.output


def test_export_replaces_a_regular_file(cameras, tmp_path, vs):
    (tmp_path / "d.npz").write_bytes(b"old")
    r = vs("export", tmp_path / "d.npz", "--index", cameras.root, "--format", "npz")
    assert r.exit_code == 0 and r.output == f"wrote 9 descriptors to {tmp_path / 'd.npz'}\n"
    assert np.load(tmp_path / "d.npz")["features"].shape == (9, DIM)
    assert sorted(os.listdir(tmp_path)) == ["d.npz", "idx"]  # no temporary file left


def test_export_to_stdout_for_npz_and_parquet_not_vsc(cameras, vs):
    import pyarrow.parquet as pq

    r = vs("export", "-", "--index", cameras.root, "--format", "npz")
    assert r.exit_code == 0 and r.stderr == "wrote 9 descriptors to stdout\n"
    data = np.load(io.BytesIO(r.stdout_bytes), allow_pickle=False)
    assert data["paths"].tolist() == [CAMERAS[0]] * 3 + [CAMERAS[1]] * 2 + [CAMERAS[2]] * 4
    r = vs("export", "-", "--index", cameras.root, "--format", "parquet")
    assert r.exit_code == 0 and pq.read_table(io.BytesIO(r.stdout_bytes)).num_rows == 9
    r = vs("export", "-", "--index", cameras.root)
    assert r.exit_code == 2 and r.stdout_bytes == b""
    assert "a VSC export writes its id table beside itself (OUT.ids.csv)" in r.output
    with pytest.raises(InvalidArgumentError, match="needs a file, not a stream"):
        export(cameras, io.BytesIO(), "vsc")


def test_export_refuses_more_dimensions_than_the_index_has(cameras, tmp_path, vs):
    r = vs("export", tmp_path / "d.npz", "--index", cameras.root, "--dim", DIM + 1)
    assert r.exit_code == 2
    assert r.output == f"Error: cannot reduce {DIM}-d vectors to {DIM + 1} dimensions: PCA only reduces\n"
    assert not (tmp_path / "d.npz").exists()
    r = vs("export", tmp_path / "d.npz", "--index", cameras.root, "--dim", DIM)  # the same: nothing to reduce
    assert r.exit_code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "d.npz")["features"].shape, (9, DIM))
