"""Seeded, bounded fuzz: mutants of valid files of six containers (tests/fuzzing.py) indexed by
one real job. Each is indexed with sane times or failed with one line naming it; none hangs,
crashes its decoder or goes over the memory limit, and none stops the job."""

from __future__ import annotations

import subprocess

import pytest
from fuzzing import ENV_1THREAD, ORIGINALS, check, index_argv, outcomes, write_mutants, write_originals

#: mutants per container in the default run (about 200 in all)
SWEEP = 34

#: (container, seed): mutants that found a bug, with what they must give now
REGRESSIONS = {
    # an unknown codec tag in stsd: the probe died on an AttributeError
    ("mp4", 2): "failed: no decoder for its video stream (the codec is unknown or unsupported)",
    ("mp4", 8): "failed: no decoder for its video stream (the codec is unknown or unsupported)",
    # decord cannot open it (a RuntimeError, not a DECORDError) but PyAV can: it was failed
    ("webm", 22): "indexed: 1.0s",
    # DefaultDuration of 4.3 s: the last frame was held that long (6.25 s, 7 clips)
    ("mkv", 22): "indexed: 2.0s",
    # a damaged sequence header changes the picture size part-way: was failed ("decoder returned
    # frames of shape (1, 352, 138, 3)"); the rest is scaled to the first frames' size
    ("mpg", 69): "indexed: 2.0s",
}


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    return write_originals(tmp_path_factory.mktemp("originals"))


def test_mutants_index_with_sane_times_or_fail_with_one_line(tmp_path, originals, tiny_model):
    pairs = [(c, seed) for seed in range(SWEEP) for c in ORIGINALS]
    pairs += [p for p in REGRESSIONS if p not in pairs]
    mutants = write_mutants(tmp_path / "mutants", originals, pairs)
    # a mutant that hangs its decoder is killed after TIMEOUT_S and failed (check() refuses that);
    # this bounds the job itself
    r = subprocess.run(
        index_argv(tmp_path / "mutants", tmp_path / "idx", tiny_model),
        capture_output=True,
        text=True,
        env=ENV_1THREAD,
        timeout=600,
    )
    assert r.returncode in (0, 1), r.stderr
    # the job's own lines only: no decoder's log lines (FFmpeg's, decord's), no traceback
    assert [line for line in r.stderr.splitlines() if not line.startswith(("failed: ", "WARNING: "))] == []
    got = outcomes(tmp_path / "idx", r.stderr)
    assert sorted(got) == sorted(mutants)  # none was left out: the job went on past every one
    wrong = {name: (check(o), mutants[name].steps) for name, o in got.items() if check(o)}
    assert not wrong, "\n".join(f"{k}: {v}" for k, v in sorted(wrong.items()))
    for (container, seed), want in REGRESSIONS.items():
        o = got[f"{container}-{seed:04d}.{container}"]
        said = f"failed: {o.reasons[0]}" if o.status == "failed" else f"indexed: {o.duration_s:.1f}s"
        assert said == want, (container, seed)
