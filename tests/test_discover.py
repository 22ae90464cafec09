"""Discovery: extensions and sniffing, symlink loops, unreadable folders, odd names; fingerprints."""

import os
import time

from helpers import write_video

from vidsearch.media.discover import DiscoveryReport, discover, sampled_hash


def names(files):
    return sorted(os.path.basename(f.path) for f in files)


def test_extensions_sniffing_and_exclude(tmp_path):
    write_video(tmp_path / "a.mp4", seconds=1)
    os.rename(write_video(tmp_path / "x.mp4", seconds=1), tmp_path / "no_extension")  # found by its first bytes
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "plain").write_text("not a video either")
    (tmp_path / "sub").mkdir()
    write_video(tmp_path / "sub" / "b.MKV", seconds=1)
    write_video(tmp_path / "sub" / "skip-me.mp4", seconds=1)
    report = DiscoveryReport()
    found = list(discover([tmp_path], exclude=["skip-*"], report=report))
    assert names(found) == ["a.mp4", "b.MKV", "no_extension"]
    assert report.skipped_non_video == 2 and report.problems == []
    assert all(os.path.isabs(f.path) for f in found)


def test_explicit_file_is_tried_whatever_its_name(tmp_path):
    (tmp_path / "clip.dat").write_bytes(b"x")
    assert names(discover([tmp_path / "clip.dat"])) == ["clip.dat"]


def test_symlink_loop_and_missing_path_reported_not_fatal(tmp_path):
    write_video(tmp_path / "a.mp4", seconds=1)
    os.symlink(tmp_path, tmp_path / "loop")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.mp4")
    report = DiscoveryReport()
    found = list(discover([tmp_path, tmp_path / "missing"], report=report))
    assert names(found) == ["a.mp4"]
    text = "\n".join(report.problems)
    assert "loop: symlink loop or folder already visited" in text
    assert "dangling.mp4: broken or looping symlink" in text
    assert "missing: No such file or directory" in text


def test_unreadable_folder_reported(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    write_video(tmp_path / "ok.mp4", seconds=1)
    real_scandir = os.scandir

    def scandir(path):
        if os.path.basename(path) == "locked":  # tests run as root: simulate the permission error
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = DiscoveryReport()
    assert names(discover([tmp_path], report=report)) == ["ok.mp4"]
    assert any("locked: cannot list folder (Permission denied)" in p for p in report.problems)


def test_non_utf8_names(tmp_path):
    raw = os.fsencode(tmp_path) + b"/bad\xffname.mp4"
    os.rename(write_video(tmp_path / "x.mp4", seconds=1), raw)
    (found,) = discover([tmp_path])
    assert found.path_bytes == raw


def test_thousands_of_non_videos_are_skipped_fast(tmp_path):
    for i in range(3000):
        (tmp_path / f"f{i}.txt").write_bytes(b"x")
    t = time.perf_counter()
    report = DiscoveryReport()
    assert list(discover([tmp_path], report=report)) == []
    assert report.skipped_non_video == 3000
    assert time.perf_counter() - t < 5  # a loose bound: no file is opened, let alone probed


def test_fingerprint_is_by_content(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3_000_000))
    fp = sampled_hash(big)
    os.utime(big, ns=(1, 1))
    assert sampled_hash(big) == fp  # mtime is not content
    data = bytearray(big.read_bytes())
    data[0] ^= 1
    big.write_bytes(bytes(data))
    assert sampled_hash(big) != fp
    (tmp_path / "copy.bin").write_bytes(bytes(data))
    assert sampled_hash(tmp_path / "copy.bin") == sampled_hash(big)
