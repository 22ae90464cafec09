"""Temporal alignment on planted clip matches (exact answers known)."""

import pytest

from vidsearch.search.align import Match, Segment, align

HOP = 2.0


def diagonal(q0, r0, n, sim=0.9, step=1.0, clip=2.0):
    """n query clips every ``step`` s from q0, each matched at offset r0 - q0."""
    return [Match(q0 + i * step, q0 + i * step + clip, r0 + i * step, r0 + i * step + clip, sim) for i in range(n)]


def test_consistent_offset_forms_one_segment():
    segs = align(diagonal(0.0, 10.0, 5), offset_tolerance=HOP, max_gap=2.0)
    assert segs[0] == Segment(0.0, 6.0, 10.0, 16.0, pytest.approx(0.9), 5)
    assert segs[0].score == pytest.approx(0.9 * 6.0)
    assert len(segs) == 1


def test_offset_jitter_within_a_hop_stays_one_segment():
    # library windows every 2 s, query every 1 s: the best library clip's offset wobbles by up to a hop
    matches = [Match(q, q + 2, r, r + 2, 0.9) for q, r in [(0, 10), (1, 10), (2, 12), (3, 12), (4, 14)]]
    segs = align(matches, offset_tolerance=HOP, max_gap=2.0)
    assert (segs[0].q_start, segs[0].q_end, segs[0].r_start, segs[0].r_end, segs[0].matches) == (0, 6, 10, 16, 5)


def test_gap_splits_segments():
    matches = diagonal(0.0, 20.0, 3) + diagonal(10.0, 30.0, 3)  # same offset, 6 s gap in query time
    segs = align(matches, offset_tolerance=HOP, max_gap=2.0)
    assert sorted((s.q_start, s.q_end, s.r_start, s.r_end) for s in segs) == [(0, 4, 20, 24), (10, 14, 30, 34)]


def test_two_segments_at_different_offsets():
    matches = diagonal(0.0, 50.0, 4, sim=0.95) + diagonal(20.0, 5.0, 3, sim=0.9)
    segs = align(matches, offset_tolerance=HOP, max_gap=2.0)
    assert [(s.q_start, s.r_start, s.matches) for s in segs] == [(0.0, 50.0, 4), (20.0, 5.0, 3)]


def test_reversed_order_is_not_one_segment():
    # query time goes forward while library time goes backward: no consistent offset
    matches = [Match(i * 2.0, i * 2.0 + 2, 20.0 - i * 2.0, 22.0 - i * 2.0, 0.95) for i in range(5)]
    segs = align(matches, offset_tolerance=HOP, max_gap=2.0)
    assert all(s.matches == 1 for s in segs)
    assert max(s.length for s in segs) == pytest.approx(2.0)


def test_lone_lucky_clip_does_not_outrank_a_long_match():
    long = align(diagonal(0.0, 10.0, 6, sim=0.8), offset_tolerance=HOP, max_gap=2.0)[0]
    lucky = align([Match(3.0, 5.0, 40.0, 42.0, 0.999)], offset_tolerance=HOP, max_gap=2.0)[0]
    assert long.score > lucky.score
    # and inside one video, the long match is the best segment even next to the lucky clip
    both = align(diagonal(0.0, 10.0, 6, sim=0.8) + [Match(3.0, 5.0, 40.0, 42.0, 0.999)], HOP, 2.0)
    assert (both[0].r_start, both[0].matches) == (10.0, 6)


def test_each_query_clip_counted_once_per_segment():
    matches = diagonal(0.0, 10.0, 3, sim=0.9) + [Match(1.0, 3.0, 11.5, 13.5, 0.5)]
    seg = align(matches, offset_tolerance=HOP, max_gap=2.0)[0]
    assert seg.matches == 3 and seg.similarity == pytest.approx(0.9)


def test_empty_and_invalid():
    assert align([], HOP, 2.0) == []
    with pytest.raises(ValueError):
        align([], -1.0, 2.0)
    with pytest.raises(ValueError):
        Match(2.0, 1.0, 0.0, 1.0, 0.5)
