"""Choosing the FAISS index type by size."""


def test_index_type_chosen_by_size_with_hysteresis():
    from vidsearch.storage.faiss_spec import DEFAULT_SPEC, HNSW_SPEC, choose_spec, should_switch

    assert choose_spec(90_000, 1024) == DEFAULT_SPEC
    assert choose_spec(1_000_000, 1024) == HNSW_SPEC == "HNSW32,SQfp16"
    assert choose_spec(4_000_000, 1024) == "RR1024,IVF2048_HNSW32,PQ512x4fs"
    assert choose_spec(10_000_000, 768) == "RR768,IVF4096_HNSW32,PQ384x4fs"
    assert choose_spec(10_000_000, 1020) == HNSW_SPEC  # no product codes for a dim not divisible by 8
    assert should_switch(DEFAULT_SPEC, 120_000, 1024) and not should_switch(DEFAULT_SPEC, 90_000, 1024)
    assert not should_switch(HNSW_SPEC, 60_000, 1024)  # hysteresis: not back to exact just below the limit
    assert should_switch(HNSW_SPEC, 40_000, 1024)
    assert should_switch(HNSW_SPEC, 2_500_000, 1024)
    pq = "RR1024,IVF2048_HNSW32,PQ512x4fs"
    assert not should_switch(pq, 1_500_000, 1024) and should_switch(pq, 900_000, 1024)
    assert not should_switch(pq, 10_000_000, 1024) and should_switch(pq, 40_000_000, 1024)
    # an automatic type an older release chose is replaced
    assert should_switch("IVF1024,SQfp16", 1_000_000, 1024)


def test_training_minimum_is_where_faiss_stops_refusing():
    import numpy as np
    import pytest

    from vidsearch.storage.faiss_spec import training_minimum
    from vidsearch.storage.vectors import VectorIndex

    rng = np.random.default_rng(0)
    assert training_minimum("IVF4,PQ4") == training_minimum("OPQ4,IVF4,PQ4") == 256  # 8-bit codes (slow to train here)
    expected = {"IVF4,Flat": 4, "IVF32,SQfp16": 32, "IVF4,PQ4x4": 16, "PCA16,IVF4,Flat": 16}
    for spec, need in expected.items():
        assert training_minimum(spec) == need, spec
        data = rng.standard_normal((need, 32)).astype(np.float32)
        with pytest.raises(RuntimeError):
            VectorIndex.empty(32, spec).train(data[: need - 1])
        VectorIndex.empty(32, spec).train(data)
    for spec in ("IDMap2,Flat", "HNSW32", "HNSW16,Flat"):
        assert training_minimum(spec) == 0 and not VectorIndex.empty(32, spec).needs_training
