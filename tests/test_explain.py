"""`explain`: the similarity matrix of a pair and its aligned segments, per clip; the --plot image."""

import io
import json
import sys

import numpy as np
import pytest
from helpers import scene_frames, transcode, write_video

from vidsearch.errors import VideoNotFoundError
from vidsearch.search.duplicates import find_duplicates
from vidsearch.search.explain import explain_pair


def stored(lib, path):
    with lib.catalog.read() as s:
        video = lib.catalog.video_by_path(s, path.encode())
        return lib.catalog.video_clips(s, video.id, lib.manifest.encoder.dim)


def test_a_trimmed_copy_is_one_segment_with_its_clips_on_the_diagonal(planted):
    e = explain_pair(planted, None, "/orig.mp4", "/trim.mp4", threshold=0.9)
    assert e.a_stored and e.similarity.shape == (10, 4) and (e.threshold, e.threshold_source) == (0.9, "given")
    (_, a_vecs), (_, b_vecs) = stored(planted, "/orig.mp4"), stored(planted, "/trim.mp4")
    np.testing.assert_allclose(e.similarity, a_vecs @ b_vecs.T, rtol=1e-6)
    [x] = e.segments
    s = x.segment
    assert (s.q_start, s.q_end, s.r_start, s.r_end, s.matches) == (4.0, 12.0, 0.0, 8.0, 4)
    # orig's clip at 4 s is trim's at 0 s, and so on: each with its own similarity from the matrix
    assert [(c.a_start, c.a_end, c.b_start, c.b_end) for c in x.clips] == [
        (4.0, 6.0, 0.0, 2.0),
        (6.0, 8.0, 2.0, 4.0),
        (8.0, 10.0, 4.0, 6.0),
        (10.0, 12.0, 6.0, 8.0),
    ]
    assert [c.similarity for c in x.clips] == pytest.approx([float(e.similarity[i + 2, i]) for i in range(4)])
    assert s.similarity == pytest.approx(np.mean([c.similarity for c in x.clips]))


def test_the_segments_are_those_dupes_finds(planted):
    e = explain_pair(planted, None, "/x.mp4", "/y.mp4", threshold=0.9)
    pair = next(p for p in find_duplicates(planted, threshold=0.9).pairs if {p.a, p.b} == {"/x.mp4", "/y.mp4"})

    def spans(segments):
        return sorted((s.q_start, s.q_end, s.r_start, s.r_end, s.matches) for s in segments)

    # both placed beyond the clip grid alike (refinement moves the planted pair's by 0.01 s)
    assert spans(x.segment for x in e.segments) == spans(pair.segments)
    assert np.allclose(spans(pair.segments), [(0, 6, 4, 10, 3), (14, 20, 16, 22, 3)], atol=0.011)
    # dupes compares the float16 the catalog keeps; explain its float32 decoding
    assert sorted(x.segment.similarity for x in e.segments) == pytest.approx(
        sorted(s.similarity for s in pair.segments), abs=1e-3
    )
    assert [len(x.clips) for x in sorted(e.segments, key=lambda x: x.segment.q_start)] == [3, 3]
    assert explain_pair(planted, None, "/x.mp4", "/y.mp4", threshold=0.999).segments == ()


def test_unknown_videos_are_clear_errors(planted, tmp_path):
    with pytest.raises(VideoNotFoundError, match="/nope.mp4: no indexed video at that path"):
        explain_pair(planted, None, "/orig.mp4", "/nope.mp4")
    with pytest.raises(VideoNotFoundError, match="/gone.mp4: no such file"):
        explain_pair(planted, None, "/gone.mp4", "/orig.mp4")


def test_cli_text_and_json(planted, vs):
    idx = planted.root
    r = vs("explain", "/orig.mp4", "/trim.mp4", "--index", idx, "--threshold", 0.9)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "a: /orig.mp4 (10 clips, stored)"
    assert lines[2] == "threshold 0.9 (given); 1 aligned segment(s)"
    assert lines[3].startswith("segment 1: a [4.0-12.0] <-> b [0.0-8.0]  similarity 0.9")
    assert lines[4].startswith("    a [4.0-6.0] ~ b [0.0-2.0]  0.9") and len(lines) == 8
    out = json.loads(vs("explain", "/orig.mp4", "/trim.mp4", "--index", idx, "--threshold", 0.9, "--json").output)
    assert out["a_source"] == "stored" and (out["a_clips"], out["b_clips"]) == (10, 4)
    [seg] = out["segments"]
    assert [(c["a_start"], c["b_start"]) for c in seg["clip_matches"]] == [(4, 0), (6, 2), (8, 4), (10, 6)]
    r = vs("explain", "/u1.mp4", "/orig.mp4", "--index", idx, "--threshold", 0.9)
    assert "no aligned segment at or above the threshold; the most similar clips: a [" in r.output


def red_pixels(png: bytes) -> int:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)).sum())


def test_plot_outlines_the_segments(planted, vs, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.png"
    r = vs("explain", "/x.mp4", "/y.mp4", "--index", planted.root, "--threshold", 0.9, "--plot", out)
    assert r.exit_code == 0 and f"wrote the similarity matrix to {out}" in r.stderr
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(out).size == (700, 600)
    assert red_pixels(png) > 200  # two outlined segments
    r = vs("explain", "/x.mp4", "/y.mp4", "--index", planted.root, "--threshold", 0.9999, "--plot", out)
    assert r.exit_code == 0, r.output
    assert red_pixels(out.read_bytes()) == 0  # nothing aligned, nothing outlined


def test_plot_without_matplotlib_names_the_extra(planted, vs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    out = tmp_path / "m.png"
    r = vs("explain", "/x.mp4", "/y.mp4", "--index", planted.root, "--plot", out)
    assert r.exit_code == 2
    assert r.stderr.strip() == (
        "Error: explain --plot needs matplotlib, which is not installed: pip install 'vidsearch[plot]'"
    )
    assert not out.exists()


@pytest.mark.slow
def test_a_query_file_is_embedded_like_a_search_query(tmp_path, library_videos, vs):
    idx = tmp_path / "idx"
    assert vs.index(library_videos, idx).exit_code == 0
    query = transcode(library_videos / "a.mp4", tmp_path / "q.mp4", start_s=2.0, end_s=6.0, size=(120, 72))
    r = vs("explain", query, library_videos / "a.mp4", "--index", idx, "--model", vs.model, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["a_source"] == "embedded" and out["a_clips"] == 3  # 4 s at half-hop windows: 0, 1, 2 s
    best = max(out["segments"], key=lambda s: s["clips"])
    assert (best["a_start"], best["b_start"]) == (0.0, 2.0)


def test_a_one_window_file_against_a_one_clip_video_keeps_its_offset(tmp_path, tiny_model, encoder):
    # a 1.92 s file (one window) whose first 1.52 s are a 1.52 s indexed video (one clip): no curve
    # to refine the offset on, so the clip pair's (0) stands. It was put at -1.5 s: a [1.5-1.92]
    # against b [0-0.42], with no clip inside it
    import vidsearch

    frames = [f for _, f in scene_frames(3, 1.52, 25, 128, 96)]
    b = write_video(tmp_path / "short.mp4", fps=25, size=(128, 96), frames=frames)
    a = write_video(tmp_path / "longer.mp4", fps=25, size=(128, 96), frames=frames + [frames[-1]] * 10)
    vidsearch.index_paths(tmp_path / "idx", [b], vidsearch.IndexOptions(model=str(tiny_model)))
    with vidsearch.open_library(tmp_path / "idx") as lib:
        e = explain_pair(lib, encoder, a, b)
    assert not e.a_stored and e.a_times.tolist() == [[0.0, pytest.approx(1.92)]]
    [x] = e.segments
    s = x.segment
    assert (s.q_start, s.q_end, s.r_start, s.r_end) == (0.0, 1.52, 0.0, 1.52)
    assert len(x.clips) == 1


def test_a_segment_shorter_than_a_clip_still_lists_its_clip(tmp_path):
    # a 1 s copy (one clip) of a 30 s video's [2.1, 3.1], placed within a clip of the source's
    # window (at about 1.6-2.6 s: refine aligns the clips' starts), where no window's middle lies
    from planting import DIM, footage, windows

    from vidsearch.settings import EncoderSettings, Preprocessing
    from vidsearch.storage.catalog import ClipRecord, VideoRecord
    from vidsearch.storage.library import Library

    src = footage(0)
    times = windows(30.0, 2.0)
    lib = Library.create(tmp_path / "idx", EncoderSettings("m", "r", DIM, "mean", 16, 224, Preprocessing()))
    lib.catalog.store_video(
        VideoRecord(b"/src.mp4", 1, 1, "src", duration_s=30.0),
        [ClipRecord(s, e, v) for (s, e), v in zip(times, src(times[:, 0]))],
    )
    lib.catalog.store_video(
        VideoRecord(b"/copy.mp4", 1, 1, "copy", duration_s=1.0), [ClipRecord(0.0, 1.0, src([2.1], length=1.0)[0])]
    )
    e = explain_pair(lib, None, "/copy.mp4", "/src.mp4", threshold=0.9)
    [x] = e.segments
    s = x.segment
    assert (s.q_start, s.q_end) == (0.0, 1.0) and 1.5 < s.r_start < 2.1 and s.r_end == pytest.approx(s.r_start + 1)
    assert [(c.a_start, c.a_end, c.b_start, c.b_end) for c in x.clips] == [(0.0, 1.0, 2.0, 4.0)]
    lib.close()
