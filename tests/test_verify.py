"""`doit verify` can fail: break one thing in a generated model and the HF check must fail and
name the layer where the outputs first diverge."""

import importlib.util
import sys
from pathlib import Path

import pytest

from modbuild.verify import verify

ROOT = Path(__file__).resolve().parents[1]
QWEN2 = ROOT / "generated" / "qwen2"


def mutated_qwen2(tmp_path: Path, old: str, new: str, count: int):
    """A copy of generated/qwen2 as its own package, with one deliberate change."""
    package = tmp_path / f"broken_qwen2_{abs(hash(old + new))}"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "configuration_qwen2.py").write_text((QWEN2 / "configuration_qwen2.py").read_text())
    source = (QWEN2 / "modeling_qwen2.py").read_text()
    assert source.count(old) == count, f"mutation target {old!r} not found {count} times"
    (package / "modeling_qwen2.py").write_text(source.replace(old, new))
    sys.path.insert(0, str(tmp_path))
    try:
        spec = importlib.util.spec_from_file_location(f"{package.name}.modeling_qwen2", package / "modeling_qwen2.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(tmp_path))
    return module


MUTATIONS = {
    "qkv-bias-dropped": ("bias=True,", "bias=False,", 3, "qwen2.layers.0.self_attn.q_proj"),
    "wrong-rope-frequencies": (
        'register_buffer("inv_freq", inv_freq,',
        'register_buffer("inv_freq", inv_freq / 2,',
        1,
        "qwen2.rotary_emb",
    ),
    "wrong-rmsnorm-eps": (
        "Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)\n        self.post",
        "Qwen2RMSNorm(config.hidden_size, eps=0.1)\n        self.post",
        1,
        "qwen2.layers.0.input_layernorm",
    ),
}


def test_unbroken_model_passes():
    record = verify("qwen2", "hf")
    assert record.passed, record.failures()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_broken_model_fails_and_names_the_layer(tmp_path, name):
    old, new, count, layer = MUTATIONS[name]
    record = verify("qwen2", "hf", mutated_qwen2(tmp_path, old, new, count))
    assert not record.passed
    assert record.trace and record.trace[0]["layer"] == layer, record.trace
