"""Proxy-Tuning's prompts and captions."""
import pytest

from var_core.tuning.proxy import proxy_prompts


def test_prompts_name_the_subject_the_supervisors_way_and_captions_with_the_token():
    prompts, captions = proxy_prompts("sks dog", "dog", "<p>", 3, ["on the beach", "", "at night"])
    assert prompts == ["a photo of sks dog on the beach", "a photo of sks dog at night", "a photo of sks dog on the beach"]
    assert captions == ["a photo of <p> dog on the beach", "a photo of <p> dog at night", "a photo of <p> dog on the beach"]
    with pytest.raises(ValueError, match="subject phrase"):
        proxy_prompts(" ", "dog", "<p>")
    with pytest.raises(ValueError, match="at least one context"):
        proxy_prompts("sks dog", "dog", "<p>", 2, [" "])
