"""modular/<m>/model.toml: the config tables name fields the model's generated config class has."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modbuild.verify.specs import SpecError, modular_root, spec

MODELS = sorted(p.parent.name for p in modular_root().glob("*/model.toml"))


def test_every_model_toml_validates():
    assert len(MODELS) >= 10
    for model in MODELS:
        assert spec(model).model_type == model


@pytest.fixture
def modular(tmp_path) -> Path:
    shutil.copytree(modular_root() / "mistral", tmp_path / "mistral")
    return tmp_path


def test_a_typo_in_verify_config_names_the_file_line_and_key(modular):
    path = modular / "mistral" / "model.toml"
    text = path.read_text()
    assert spec("mistral", modular).config == {"sliding_window": 6}  # the copy itself is valid
    path.write_text(text.replace("sliding_window = 6", "slidng_window = 6"))
    line = next(n for n, t in enumerate(path.read_text().splitlines(), 1) if t.startswith("slidng_window"))
    with pytest.raises(SpecError) as caught:
        spec("mistral", modular)
    assert str(caught.value) == (
        f"{path}:{line}: [verify.config] slidng_window: not a field of MistralConfig; did you mean 'sliding_window'?"
    )


def test_an_unknown_paddlenlp_config_key_is_an_error(modular):
    path = modular / "mistral" / "model.toml"
    path.write_text(path.read_text() + "no_such_switch = true\n")  # the file ends inside [verify.paddlenlp.config]
    with pytest.raises(SpecError, match=r"model\.toml:\d+: \[verify\.paddlenlp\.config\] no_such_switch: not a field"):
        spec("mistral", modular)


def test_a_config_class_alias_is_a_field(tmp_path):
    """GPT-J takes llama's names through its attribute_map (hidden_size -> n_embd)."""
    shutil.copytree(modular_root() / "gptj", tmp_path / "gptj")
    path = tmp_path / "gptj" / "model.toml"
    path.write_text(path.read_text().replace("n_inner = 128", "n_inner = 128\nhidden_size = 64"))
    assert spec("gptj", tmp_path).config["hidden_size"] == 64
