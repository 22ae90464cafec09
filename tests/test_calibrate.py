"""calibrate on a library that holds real copies: they stay out of the negatives, are listed, and dupes finds them.

The library, built and indexed once for the module: twelve unrelated synthetic videos, and four
real copies of four of them: a one-clip excerpt, a two-clip excerpt, a whole re-encoded copy at
another size, and a copy with a box and text drawn over every frame. A copy of its index with
the four copies removed is the control: the same videos, none of them copied.
"""

import json
import os
import shutil

import numpy as np
import pytest
from helpers import transcode, write_video

from vidsearch import render
from vidsearch.search.calibrate import ALTERNATIVE_RECALLS, TailFit, _choose_threshold, calibrate
from vidsearch.search.duplicates import find_duplicates
from vidsearch.storage.library import Library

#: planted copy → the video it was made from
COPIES = {
    "z-excerpt-1clip.mp4": "u01.mp4",
    "z-excerpt-2clips.mp4": "u03.mp4",
    "z-reencoded.mp4": "u05.mp4",
    "z-overlay.mp4": "u07.mp4",
}
PLANTED = {frozenset(pair) for pair in COPIES.items()}


def names(a, b):
    return frozenset((os.path.basename(a), os.path.basename(b)))


def frames_of(path):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def with_overlay(frames):
    """A white box in the top right corner and a running caption at the bottom, as a re-upload might add."""
    from PIL import Image, ImageDraw

    out = []
    for i, f in enumerate(frames):
        img = Image.fromarray(f)
        draw = ImageDraw.Draw(img)
        h, w = f.shape[:2]
        draw.rectangle([w - 14, 4, w - 4, 10], fill=(255, 255, 255))
        draw.text((6, h - 14), f"LIVE {i // 25:02d}s", fill=(255, 255, 0))
        out.append(np.asarray(img))
    return out


@pytest.fixture(scope="module")
def library(tmp_path_factory, vs):
    """(videos folder, index with the copies, control index without them)."""
    root = tmp_path_factory.mktemp("calibrate")
    videos = root / "videos"
    videos.mkdir()
    for i in range(12):
        write_video(videos / f"u{i:02d}.mp4", seconds=6 + 2 * (i % 2), size=(128, 96), seed=300 + i)
    transcode(videos / "u01.mp4", videos / "z-excerpt-1clip.mp4", 4.2, 5.8)
    transcode(videos / "u03.mp4", videos / "z-excerpt-2clips.mp4", 2.0, 6.0)
    transcode(videos / "u05.mp4", videos / "z-reencoded.mp4", size=(112, 84))
    write_video(videos / "z-overlay.mp4", size=(128, 96), frames=with_overlay(frames_of(videos / "u07.mp4")))
    idx = root / "idx"
    r = vs.index(videos, idx)
    assert r.exit_code == 0, r.output
    control = root / "control"
    shutil.copytree(idx, control)
    r = vs("remove", *(videos / c for c in COPIES), "--index", control)
    assert r.exit_code == 0, r.output
    return videos, idx, control


@pytest.fixture(scope="module")
def calibrated(library, encoder):
    """Calibration of the library with copies, accepted (the tiny model's recall is low) and stored."""
    _, idx, _ = library
    with Library.open(idx, writable=True) as lib:
        return calibrate(lib, encoder, accept=True)


@pytest.fixture(scope="module")
def control_run(library, vs):
    """``vidsearch calibrate --json`` on the control, without --accept."""
    _, _, control = library
    return vs("calibrate", "--index", control, "--json")


@pytest.mark.slow
def test_real_copies_are_left_out_of_the_negatives_and_listed(calibrated):
    cal = calibrated
    listed = {names(c.a, c.b): c for c in cal.likely_copies}
    assert set(listed) == PLANTED
    reasons = {next(n for n in pair if n.startswith("z-")): c.reasons for pair, c in listed.items()}
    assert reasons == {
        "z-excerpt-1clip.mp4": ("short",),
        "z-excerpt-2clips.mp4": ("aligned", "short", "covered"),
        "z-reencoded.mp4": ("aligned", "covered"),
        "z-overlay.mp4": ("aligned", "covered"),
    }
    # every sampled clip of a copy and of its source found the other first: 2 + 4 + 8 + 8 pairs
    assert cal.excluded_pairs == sum(c.clips for c in cal.likely_copies) == 22
    assert cal.excluded == {"aligned": 20, "short": 6, "covered": 20}
    # the threshold sits below every copy, above every negative left, and no copy is a negative
    assert cal.negatives.max() < cal.threshold < min(c.similarity for c in cal.likely_copies)
    assert cal.suspect_level == pytest.approx(cal.threshold)
    assert cal.stored and cal.method == "fit"


@pytest.mark.slow
def test_calibrated_dupes_find_every_copy_and_nothing_else(calibrated, library):
    _, idx, _ = library
    with Library.open(idx) as lib:
        report = find_duplicates(lib)
        assert report.threshold_source == "calibrated" and report.threshold == pytest.approx(calibrated.threshold)
        found = {names(p.a, p.b) for p in report.pairs}
        assert found == PLANTED
        assert all(p.similarity > calibrated.threshold for p in report.pairs)
        # no fixed threshold does better: the most planted pairs any finds without a false pair
        best = 0
        for t in np.arange(0.80, 0.9999, 0.0025):
            pairs = {names(p.a, p.b) for p in find_duplicates(lib, threshold=float(t)).pairs}
            if pairs <= PLANTED:
                best = max(best, len(pairs))
        assert len(found) >= best == 4


@pytest.mark.slow
def test_the_control_gives_the_same_threshold_and_low_recall_stores_nothing(calibrated, control_run, library):
    _, _, control = library
    r = control_run
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert abs(out["threshold"] - calibrated.threshold) <= 0.002
    assert out["likely_copies"] == [] and out["excluded"] == {"pairs": 0, "aligned": 0, "short": 0, "covered": 0}
    # the sanity check: recall below one half, said loudly, nothing stored, alternatives offered
    assert out["recall"] < 0.5 and out["stored"] is False
    assert "WARNING: the threshold" in r.stderr and "nothing stored" in r.stderr and "--accept" in r.stderr
    assert out["warning"] in r.stderr
    assert json.loads((control / "manifest.json").read_text())["duplicate_threshold"] is None
    alternatives = out["alternatives"]
    assert [a["threshold"] for a in alternatives] == sorted((a["threshold"] for a in alternatives), reverse=True)
    assert len(alternatives) == len(ALTERNATIVE_RECALLS)
    for a, level in zip(alternatives, ALTERNATIVE_RECALLS):
        assert a["recall"] >= level - 0.02 and 0 <= a["fpr"] <= 1 and 0 <= a["fitted_fpr"] <= 1
    # too few negatives to read 0.1% off them: said, and the fit is used
    assert out["method"] == "fit" and out["threshold"] == out["fit"]["threshold"]
    assert any("too few to read a 0.001 false-positive rate" in n for n in out["notes"])


@pytest.mark.slow
def test_text_and_json_name_the_copies(calibrated):
    text = render.calibration_text(calibrated)
    assert text.startswith(f"threshold {round(calibrated.threshold, 5)} (stored in the manifest)")
    assert "these look like real copies:" in text
    body = json.loads(render.calibration_json(calibrated))
    for c in body["likely_copies"]:
        assert f"{c['similarity']:.4f}  {c['a']}\n          {c['b']}\n" in text
    assert "22 clip pair(s) at similarity" in text and "WARNING: the threshold" in text and "stored anyway" in text
    assert body["excluded"] == {"pairs": 22, "aligned": 20, "short": 6, "covered": 20}
    assert {names(c["a"], c["b"]) for c in body["likely_copies"]} == PLANTED
    assert all(set(c) == {"a", "b", "similarity", "clips", "reasons"} for c in body["likely_copies"])


def test_the_tail_comes_from_the_bulk_not_the_most_similar_pair():
    rng = np.random.default_rng(0)
    negatives = np.tanh(rng.normal(1.5, 0.2, 200))
    fit = TailFit.of(negatives)
    assert fit.center == pytest.approx(float(np.median(np.arctanh(negatives))))
    assert fit.exceedance(fit.quantile(0.999)) == pytest.approx(0.001)
    # copies at the top (1.5% of the negatives) move the fitted threshold by little; they would set a max-based one
    poisoned = np.concatenate([negatives, np.full(3, 0.998)])
    notes: list[str] = []
    clean, method = _choose_threshold(negatives, fit, 0.001, notes)
    moved, _ = _choose_threshold(poisoned, TailFit.of(poisoned), 0.001, [])
    assert method == "fit" and abs(moved - clean) < 0.002 and moved < 0.998
    assert "200 negatives are too few" in notes[0] and "that takes 10000" in notes[0]
    # with enough negatives, the quantile is read off them
    many = np.tanh(rng.normal(1.5, 0.2, 20_000))
    t, method = _choose_threshold(many, TailFit.of(many), 0.001, [])
    assert method == "empirical" and np.sum(many >= t) <= 20
