"""Shared test fixtures: the golden reference case and tiny random models made on the fly (nothing downloaded)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fixture_paths import TINY


@pytest.fixture(scope="session")
def case() -> dict[str, torch.Tensor]:
    return load_file(str(TINY / "case.safetensors"))


@pytest.fixture(scope="session")
def case_text(case) -> list[torch.Tensor]:
    return list(case["text_feats"].split(case["text_lens"].tolist()))


@pytest.fixture(scope="session")
def case_bits(case) -> list[torch.Tensor]:
    return [case[f"bits_s{k}"] for k in range(7)]


@pytest.fixture(scope="session")
def tiny_model():
    from var_core import load_transformer
    return load_transformer(TINY / "transformer.pth")


@pytest.fixture(scope="session")
def tiny_vae():
    from var_core import load_vae
    return load_vae(TINY / "vae.pth")


@pytest.fixture(scope="session")
def toy_paths(tmp_path_factory) -> dict[str, Path]:
    """A tiny random transformer, BitVAE and T5 (with tokenizer) written to disk, as a user would have them."""
    from toyworld.builders import make_random_models
    return make_random_models(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def toy(toy_paths):
    """(model, vae, text_encoder) loaded from toy_paths."""
    from var_core import load_text_encoder, load_transformer, load_vae
    return (load_transformer(toy_paths["transformer"]), load_vae(toy_paths["vae"]),
            load_text_encoder(toy_paths["text_encoder"]))
