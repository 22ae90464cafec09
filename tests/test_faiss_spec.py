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
