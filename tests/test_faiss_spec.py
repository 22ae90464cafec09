"""Choosing the FAISS index type by size."""


def test_index_type_chosen_by_size_with_hysteresis():
    from vidsearch.storage.faiss_spec import DEFAULT_SPEC, choose_spec, should_switch

    assert choose_spec(150_000) == DEFAULT_SPEC
    assert choose_spec(1_000_000) == "IVF1024,SQfp16"
    assert choose_spec(4_000_000) == "IVF2048,SQfp16"
    assert should_switch(DEFAULT_SPEC, 250_000) and not should_switch(DEFAULT_SPEC, 150_000)
    assert not should_switch("IVF512,SQfp16", 150_000)  # hysteresis: not back to exact just below the limit
    assert should_switch("IVF512,SQfp16", 50_000)
    assert not should_switch("IVF512,SQfp16", 1_000_000) and should_switch("IVF256,SQfp16", 4_000_000)


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
