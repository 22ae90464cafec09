"""Temporal alignment on planted clip matches (exact answers known)."""

import numpy as np
import pytest
from planting import footage, windows

from vidsearch.search.align import Match, Segment, align, extend, place, refine, without_repeats

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


def coarse_and_refined(query_times, query_vectors, library_times, library_vectors, library_end):
    sims = query_vectors @ library_vectors.T
    matches = [
        Match(*query_times[i], *library_times[j], float(sims[i, j]))
        for i in range(len(query_times))
        for j in range(len(library_times))
    ]
    coarse = align(matches, offset_tolerance=HOP, max_gap=2.0)[0]
    return coarse, refine(coarse, query_times, query_vectors, library_times, library_vectors, library_end, 1.5)


@pytest.mark.parametrize(
    "start, length, within",
    # a cut that no library clip fits inside (3.16 s from 24.52: clips start at 24 and 26) is
    # placed only by clips that stick out of it, less precisely
    [(7.37, 6.3, 0.15), (3.0, 5.0, 0.15), (2.0, 5.0, 0.15), (11.71, 8.46, 0.15), (24.52, 3.16, 0.5)],
)
def test_refine_places_a_cut_between_the_library_s_clip_times(start, length, within):
    library = footage(0)
    library_times = windows(30.0, 2.0)
    query_times = windows(length, 1.0)  # search embeds the query every half hop
    rng = np.random.default_rng(1)
    query_vectors = library(start + query_times[:, 0]) + 0.01 * rng.standard_normal((len(query_times), 32))
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)  # a re-encoded copy
    coarse, seg = coarse_and_refined(query_times, query_vectors, library_times, library(library_times[:, 0]), 30.0)
    # matched clips alone put the library side on the library's 2-second grid
    assert (coarse.r_start % 2.0, coarse.r_end % 2.0) == (0.0, 0.0)
    assert (seg.q_start, seg.q_end) == (0.0, pytest.approx(length))
    assert (seg.r_start, seg.r_end) == pytest.approx((start, start + length), abs=within)
    assert (seg.similarity, seg.matches) == (coarse.similarity, coarse.matches)


def test_refine_ends_a_segment_where_the_library_video_ends():
    library, other = footage(0), footage(7)
    library_times = windows(30.0, 2.0)
    # the query: the library's last 4 s, then 3 s of other footage
    query_times = windows(7.0, 1.0)
    starts = query_times[:, 0]
    query_vectors = np.where((starts + 2.0 <= 4.0)[:, None], library(26.0 + starts), other(starts))
    coarse, seg = coarse_and_refined(query_times, query_vectors, library_times, library(library_times[:, 0]), 30.0)
    assert coarse.q_end > 4.5
    assert seg.r_end == 30.0
    assert (seg.q_start, seg.q_end, seg.r_start) == pytest.approx((0.0, 4.0, 26.0), abs=0.15)


def stored_pair(start, length, source_is_a, noise_seed=1):
    """A source (30 s) and a copy of its [start, start + length], both stored on the 2-second grid
    (as dupes compares them), their matches at 0.9 aligned; (a, b, coarse segment, truth)."""
    src = footage(0)
    s_times, c_times = windows(30.0, 2.0), windows(length, 2.0)
    rng = np.random.default_rng(noise_seed)
    c_vectors = src(start + c_times[:, 0]) + 0.01 * rng.standard_normal((len(c_times), 32))
    c_vectors /= np.linalg.norm(c_vectors, axis=1, keepdims=True)
    source = (s_times, src(s_times[:, 0]), np.ones(len(s_times), bool), 30.0)
    copy = (c_times, c_vectors, np.ones(len(c_times), bool), length)
    a, b = (source, copy) if source_is_a else (copy, source)
    truth = (start, start + length, 0.0, length) if source_is_a else (0.0, length, start, start + length)
    sims = a[1] @ b[1].T
    matches = [
        Match(*a[0][i], *b[0][j], float(sims[i, j])) for i, j in zip(*np.nonzero(sims >= 0.9)) if sims[i, j] >= 0.9
    ]
    return a, b, align(matches, offset_tolerance=HOP, max_gap=2.0)[0], truth


def ends(seg):
    return np.array([seg.q_start, seg.q_end, seg.r_start, seg.r_end])


@pytest.mark.parametrize("source_is_a", [True, False])
@pytest.mark.parametrize("start, length", [(7.37, 6.3), (3.0, 5.0), (2.0, 5.0), (11.71, 8.46), (5.5, 9.3)])
def test_place_finds_a_stored_copy_s_ends_on_both_grids(start, length, source_is_a):
    a, b, coarse, truth = stored_pair(start, length, source_is_a)
    seg = place(coarse, a, b, 0.9, search_s=1.5, reach_s=6.0)
    assert np.abs(ends(seg) - truth).max() <= 0.3, (ends(coarse), ends(seg), truth)
    assert (seg.similarity, seg.matches) == (coarse.similarity, coarse.matches)


def test_extend_is_what_reaches_the_ends_that_the_matches_miss():
    # the copy's first and last windows straddle the source's: below 0.9, they matched nothing
    for source_is_a in (True, False):
        a, b, coarse, truth = stored_pair(5.5, 9.3, source_is_a)
        refined = refine(coarse, a[0], a[1], b[0], b[1], b[3], search_s=1.5)
        assert np.abs(ends(refined) - truth).max() > 1.0
        assert np.abs(ends(extend(refined, a, b, 0.9)) - truth).max() <= 0.15


def test_place_stops_where_other_footage_begins():
    src, other = footage(0), footage(7)
    s_times = windows(30.0, 2.0)
    source = (s_times, src(s_times[:, 0]), np.ones(len(s_times), bool), 30.0)
    # b: 4 s of other footage, the source's [9.9, 17.9], 3 s of other footage (by whole windows)
    b_times = windows(15.0, 2.0)
    t = b_times[:, 0]
    inside = (t >= 4.0 - 1e-9) & (t + 2.0 <= 12.0 + 1e-9)
    b_vectors = np.where(inside[:, None], src(t + 5.9), other(t))
    b = (b_times, b_vectors, np.ones(len(b_times), bool), 15.0)
    sims = source[1] @ b_vectors.T
    matches = [Match(*s_times[i], *b_times[j], float(sims[i, j])) for i, j in zip(*np.nonzero(sims >= 0.9))]
    coarse = align(matches, offset_tolerance=HOP, max_gap=2.0)[0]
    seg = place(coarse, source, b, 0.9, search_s=1.5, reach_s=6.0)
    assert np.abs(ends(seg) - (9.9, 17.9, 4.0, 12.0)).max() <= 0.15, (ends(coarse), ends(seg))


def test_extend_does_not_grow_over_clips_that_are_no_evidence():
    # the copy of [5.5, 14.8]: growing reaches 5.5 (test above) unless the source's clip at 6 s is
    # unusable (blank, or common), when neither side grows over it
    a, b, coarse, truth = stored_pair(5.5, 9.3, source_is_a=True)
    refined = refine(coarse, a[0], a[1], b[0], b[1], b[3], search_s=1.5)
    assert extend(refined, a, b, 0.9).q_start == pytest.approx(5.5, abs=0.15)
    held = (a[0], a[1], a[0][:, 0] != 6.0, a[3])
    assert extend(refined, held, b, 0.9).q_start >= 7.5
    # and the same held on the copy's side, on its clip over the source's 6 s
    b_held = (b[0], b[1], b[0][:, 0] != 0.0, b[3])
    assert extend(refined, a, b_held, 0.9).q_start >= 7.5


def test_refine_keeps_the_best_pair_s_offset_where_neither_side_has_a_curve():
    # a 2-second query (one window) against a 1.52-second video (one clip): no curve to score
    # offsets on, so the best pair's offset (0) stands, the segment cut to where the video ends.
    # It took the first offset searched (-1.5 s) and put the query's 1.5-2 s on the video's 0-0.5 s
    v = footage(0)(np.array([0.0]))
    coarse = Segment(0.0, 2.0, 0.0, 1.52, 0.99, 1)
    seg = refine(coarse, np.array([[0.0, 2.0]]), v, np.array([[0.0, 1.52]]), v, 1.52, search_s=1.5)
    assert ends(seg).tolist() == [0.0, 1.52, 0.0, 1.52]


@pytest.mark.parametrize("source_is_a", [True, False])
@pytest.mark.parametrize("start, within", [(0.0, 0.0), (9.9, 0.2)])
def test_place_gives_a_one_clip_copy_its_own_length(start, within, source_is_a):
    # a 1.5 s copy (one clip, shorter than a window) of the source's [start, start + 1.5]: it
    # matched one whole window of the source, and was left so, longer on the source's side than
    # the copy is; placed, both sides are as long as the copy, at the refined offset
    src = footage(0)
    s_times = windows(30.0, 2.0)
    source = (s_times, src(s_times[:, 0]), np.ones(len(s_times), bool), 30.0)
    copy = (np.array([[0.0, 1.5]]), src(np.array([start]), length=1.5), np.ones(1, bool), 1.5)
    a, b = (source, copy) if source_is_a else (copy, source)
    sims = a[1] @ b[1].T
    matches = [Match(*a[0][i], *b[0][j], float(sims[i, j])) for i, j in zip(*np.nonzero(sims >= 0.9))]
    coarse = align(matches, offset_tolerance=HOP, max_gap=2.0)[0]
    seg = place(coarse, a, b, 0.9, search_s=1.5, reach_s=6.0)
    truth = (start, start + 1.5, 0.0, 1.5) if source_is_a else (0.0, 1.5, start, start + 1.5)
    assert seg.q_end - seg.q_start == pytest.approx(1.5) and seg.r_end - seg.r_start == pytest.approx(1.5)
    assert np.abs(ends(seg) - truth).max() <= within + 1e-9, (ends(coarse), ends(seg))
    assert (seg.similarity, seg.matches) == (coarse.similarity, coarse.matches)


def seeded_copy(seed):
    """A random re-encoded copy of a random part of a random source (either of them shorter than a
    window, at the source's very start or end, or all of it), both stored on the 2-second grid:
    (a, b, the aligned segments, truth)."""
    rng = np.random.default_rng(seed)
    src_len = float(rng.choice([30.0, rng.uniform(1.2, 30.0)]))
    length = float(rng.uniform(1.0, src_len))
    start = float(rng.choice([0.0, src_len - length, rng.uniform(0, src_len - length)], p=[0.2, 0.2, 0.6]))
    if rng.random() < 0.1:
        start, length = 0.0, src_len

    def grid(duration):
        return windows(duration, 2.0) if duration > 2.0 else np.array([[0.0, duration]])

    src, s_times, c_times = footage(seed % 50), grid(src_len), grid(length)
    c_vectors = src(start + c_times[:, 0], length=min(length, 2.0))
    c_vectors += rng.uniform(0.0, 0.06) * rng.standard_normal(c_vectors.shape)
    c_vectors /= np.linalg.norm(c_vectors, axis=1, keepdims=True)
    source = (s_times, src(s_times[:, 0], length=min(src_len, 2.0)), np.ones(len(s_times), bool), src_len)
    copy = (c_times, c_vectors, np.ones(len(c_times), bool), length)
    a, b = (source, copy) if rng.random() < 0.5 else (copy, source)
    truth = (start, start + length, 0.0, length) if a is source else (0.0, length, start, start + length)
    sims = a[1] @ b[1].T
    matches = [Match(*a[0][i], *b[0][j], float(sims[i, j])) for i, j in zip(*np.nonzero(sims >= 0.9))]
    return a, b, align(matches, offset_tolerance=HOP, max_gap=2.0), np.array(truth)


def test_placed_segments_keep_their_bounds_over_many_seeded_copies():
    from vidsearch.search.explain import _segment_clips

    placed = 0
    for seed in range(300):
        a, b, segments, truth = seeded_copy(seed)
        for k, coarse in enumerate(segments):
            seg = place(coarse, a, b, 0.9, search_s=1.5, reach_s=6.0)
            e, why = ends(seg), (seed, k, ends(coarse), ends(seg), truth)
            assert 0 <= e[0] < e[1] <= a[3] + 1e-3 and 0 <= e[2] < e[3] <= b[3] + 1e-3, why
            assert e[1] - e[0] == pytest.approx(e[3] - e[2], abs=2e-3), why
            assert e[1] - e[0] <= min(a[3], b[3]) + 1e-3, why
            assert (seg.similarity, seg.matches, seg.confidence) == (coarse.similarity, coarse.matches, None), why
            assert _segment_clips(seg, a[0], b[0], a[1] @ b[1].T, HOP), why
            if k == 0:
                assert np.abs(e - truth).max() <= np.abs(ends(coarse) - truth).max() + HOP, why
            placed += 1
    assert placed > 250  # most seeds give one segment, some more


def test_without_repeats_lists_the_same_footage_once_but_footage_shown_twice_twice():
    def seg(qs, qe, rs, re_, confidence=0.9):  # listed best first, as segments are
        return Segment(qs, qe, rs, re_, 0.95, 3, confidence)

    best = seg(0, 12, 0, 12)
    shadow = seg(0, 10, 2, 12)  # a slow scene's copy a window off: mostly within best on both sides
    half = seg(6, 14, 6, 14)  # a half (4 s of 8) within best on both sides: the same footage still
    again = seg(20, 32, 0, 12)  # a's second showing of b's footage: one side only
    elsewhere = seg(14, 20, 16, 22)  # other footage of both
    more_sure = seg(0, 10, 2, 12, confidence=0.99)  # more confident than best: kept
    assert without_repeats([best, shadow, again, half, elsewhere, more_sure]) == [best, again, elsewhere, more_sure]
    short = seg(10, 16, 10, 16)  # 2 s of 6 within best: under half, kept
    assert without_repeats([best, short]) == [best, short]
