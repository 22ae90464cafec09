"""Planning a run (indexer.plan.classify) on fake files and catalog rows: exact plans, no disk."""

import pytest

from vidsearch.indexer.plan import Copy, Embed, Move, classify, is_under
from vidsearch.media.discover import VideoFile
from vidsearch.storage.catalog import STATUS_FAILED, STATUS_INDEXED, StoredVideo


def row(vid, path, fp, size=100, mtime=1, status=STATUS_INDEXED):
    return StoredVideo(id=vid, path=path.encode(), size=size, mtime_ns=mtime, fingerprint=fp, status=status)


def file(path, size=100, mtime=1):
    return VideoFile(path=path, size=size, mtime_ns=mtime)


def fake_fingerprints(mapping):
    """A fingerprint function reading ``mapping`` (path → content id) instead of the disk."""

    def fp(f):
        if mapping[f.path] is None:
            raise PermissionError(13, "Permission denied")
        return VideoFile(f.path, f.size, f.mtime_ns, mapping[f.path])

    return fp


def plan_of(files, rows, contents, present=(), **kw):
    present = {p.encode() for p in present}
    return classify(files, rows, fingerprint=fake_fingerprints(contents), exists=lambda p: p in present, **kw)


def test_unchanged_files_are_skipped_without_reading_them():
    plan = plan_of([file("/a.mp4")], [row(1, "/a.mp4", "A")], contents={})  # no fingerprint asked for
    assert plan.skipped == 1 and not (plan.embed or plan.moves or plan.copies or plan.touched)


def test_failed_videos_are_skipped_unless_retried():
    rows = [row(1, "/a.mp4", "A", status=STATUS_FAILED)]
    assert plan_of([file("/a.mp4")], rows, {"/a.mp4": "A"}).skipped == 1
    plan = plan_of([file("/a.mp4")], rows, {"/a.mp4": "A"}, retry_failed=True)
    assert plan.embed == [Embed(VideoFile("/a.mp4", 100, 1, "A"), replace_id=1)]


def test_touched_file_with_the_same_content_keeps_its_clips():
    plan = plan_of([file("/a.mp4", mtime=2)], [row(1, "/a.mp4", "A")], {"/a.mp4": "A"})
    assert plan.touched == [Move(1, VideoFile("/a.mp4", 100, 2, "A"), b"/a.mp4")] and not plan.embed


def test_changed_file_is_embedded_again_replacing_its_row():
    plan = plan_of([file("/a.mp4", size=200)], [row(1, "/a.mp4", "A")], {"/a.mp4": "B"})
    assert plan.embed == [Embed(VideoFile("/a.mp4", 200, 1, "B"), replace_id=1)]


def test_moved_file_takes_over_the_gone_row_and_a_present_twin_is_copied():
    rows = [row(1, "/old.mp4", "A"), row(2, "/kept.mp4", "B")]
    files = [file("/new.mp4"), file("/copy.mp4")]
    plan = plan_of(files, rows, {"/new.mp4": "A", "/copy.mp4": "B"}, present=["/kept.mp4"])
    assert plan.moves == [Move(1, VideoFile("/new.mp4", 100, 1, "A"), b"/old.mp4")]
    assert plan.copies == [Copy(2, VideoFile("/copy.mp4", 100, 1, "B"))]
    assert not plan.embed


def test_one_gone_row_is_claimed_by_one_moved_file_only():
    rows = [row(1, "/old.mp4", "A")]
    plan = plan_of([file("/x.mp4"), file("/y.mp4")], rows, {"/x.mp4": "A", "/y.mp4": "A"})
    assert [m.file.path for m in plan.moves] == ["/x.mp4"]
    # the old file is gone, so there is nothing present to copy from: the second is embedded
    assert [e.file.path for e in plan.embed] == ["/y.mp4"] and plan.copies == []


def test_same_new_content_twice_in_one_run_is_embedded_once_and_deferred_once():
    plan = plan_of([file("/x.mp4"), file("/y.mp4")], [], {"/x.mp4": "N", "/y.mp4": "N"})
    assert [e.file.path for e in plan.embed] == ["/x.mp4"]
    assert [f.path for f in plan.deferred] == ["/y.mp4"]


def test_unreadable_file_is_reported_not_raised():
    plan = plan_of([file("/locked.mp4")], [], {"/locked.mp4": None})
    assert [(f.path, reason) for f, reason in plan.unreadable] == [
        ("/locked.mp4", "cannot read file (Permission denied)")
    ]


def test_prune_only_touches_gone_videos_under_the_given_roots():
    rows = [
        row(1, "/lib/a.mp4", "A"),
        row(2, "/lib/sub/b.mp4", "B"),
        row(3, "/other/c.mp4", "C"),
        row(4, "/lib/here.mp4", "D"),
        row(5, "/library2/e.mp4", "E"),
    ]
    plan = plan_of([], rows, {}, present=["/lib/here.mp4"], prune_roots=["/lib"])
    assert plan.prune == [1, 2]  # not /other (not given), not /library2 (a sibling, not under /lib)
    assert plan_of([], rows, {}).prune == []  # no roots: no pruning


def test_a_moved_video_is_not_pruned():
    rows = [row(1, "/lib/old.mp4", "A")]
    plan = plan_of([file("/lib/new.mp4")], rows, {"/lib/new.mp4": "A"}, prune_roots=["/lib"])
    assert [m.video_id for m in plan.moves] == [1] and plan.prune == []


@pytest.mark.parametrize(
    "path, root, expected",
    [
        (b"/a/b.mp4", b"/a", True),
        (b"/a", b"/a", True),
        (b"/ab/c.mp4", b"/a", False),
        (b"/a/b.mp4", b"/a/", True),
    ],
)
def test_is_under(path, root, expected):
    assert is_under(path, root) is expected
