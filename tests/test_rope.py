"""The shared RoPE layer (modbuild/nn/rope.py) against HF 4.55.4's own functions: every rope type's inv_freq and
attention scaling (``ROPE_INIT_FUNCTIONS``), the dynamic / longrope updates of ``dynamic_rope_update`` over a run of
calls, and partial rotation in halves and interleaved (Phi-3's and GLM's ``apply_rotary_pos_emb``)."""

from types import SimpleNamespace

import numpy as np
import paddle
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS as HF_ROPE
from transformers.models.glm.modeling_glm import apply_rotary_pos_emb as hf_glm_apply
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding as HFRotaryEmbedding
from transformers.models.phi3.modeling_phi3 import apply_rotary_pos_emb as hf_phi3_apply

from modbuild.nn.rope import ROPE_INIT_FUNCTIONS, RotaryEmbedding, apply_rotary, compute_rope_parameters

HEAD_DIM = 24  # with partial_rotary_factor 0.75: 18 features rotated, 9 frequencies
BASE = {
    "hidden_size": 96,
    "num_attention_heads": 4,
    "head_dim": HEAD_DIM,
    "rope_theta": 5000.0,
    "max_position_embeddings": 64,
    "partial_rotary_factor": 0.75,
}
NFREQ = int(HEAD_DIM * 0.75) // 2

CONFIGS = {
    "default": {},
    "default-full-head": {"partial_rotary_factor": 1.0},
    "linear": {"rope_scaling": {"rope_type": "linear", "factor": 3.5}},
    "dynamic": {"rope_scaling": {"rope_type": "dynamic", "factor": 2.5}},
    "yarn": {"rope_scaling": {"rope_type": "yarn", "factor": 6.0, "beta_fast": 24.0, "beta_slow": 2.0}},
    "yarn-original-length": {
        "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
    },
    "yarn-mscale": {"rope_scaling": {"rope_type": "yarn", "factor": 5.0, "mscale": 0.9, "mscale_all_dim": 0.6}},
    "yarn-attention-factor-untruncated": {
        "rope_scaling": {"rope_type": "yarn", "factor": 3.0, "attention_factor": 0.8, "truncate": False}
    },
    "longrope": {
        "original_max_position_embeddings": 16,
        "rope_scaling": {
            "rope_type": "longrope",
            "short_factor": [1.0 + 0.1 * i for i in range(NFREQ)],
            "long_factor": [2.0 + 0.7 * i for i in range(NFREQ)],
        },
    },
    "longrope-factor": {  # no original length on the config: the factor and attention factor come from rope_scaling
        "rope_scaling": {
            "rope_type": "longrope",
            "factor": 3.0,
            "short_factor": [1.5] * NFREQ,
            "long_factor": [4.0 - 0.2 * i for i in range(NFREQ)],
        }
    },
    "llama3": {
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        }
    },
}


def make_config(name: str) -> SimpleNamespace:
    """One config object read by both sides (HF's functions read attributes only)."""
    return SimpleNamespace(**{"rope_scaling": None, **BASE, **CONFIGS[name]})


def kind(config) -> str:
    return (config.rope_scaling or {}).get("rope_type", "default")


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seq_len", [None, 40, 200])
def test_init_functions_match_hf(name, seq_len):
    config = make_config(name)
    theirs, their_scale = HF_ROPE[kind(config)](config, None, seq_len)
    ours, our_scale = ROPE_INIT_FUNCTIONS[kind(config)](config, seq_len)
    assert ours.shape == list(theirs.shape)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=0)
    assert our_scale == pytest.approx(their_scale, rel=1e-6, abs=0)


def test_configs_exercise_their_features():
    """The comparisons above mean something only where the features move the numbers."""
    plain = ROPE_INIT_FUNCTIONS["default"](make_config("default"))[0].numpy()
    assert plain.shape == (NFREQ,)
    for name in ("linear", "yarn", "yarn-original-length", "longrope", "llama3"):
        assert not np.allclose(ROPE_INIT_FUNCTIONS[kind(make_config(name))](make_config(name))[0].numpy(), plain)
    for name in ("yarn", "yarn-mscale", "yarn-attention-factor-untruncated", "longrope", "longrope-factor"):
        assert compute_rope_parameters(make_config(name), updated=True)[1] != 1.0, name
    dynamic = make_config("dynamic")
    assert not np.allclose(compute_rope_parameters(dynamic, 200, updated=True)[0].numpy(), plain)
    longrope = make_config("longrope")
    assert not np.allclose(
        compute_rope_parameters(longrope, 17, updated=True)[0].numpy(),
        compute_rope_parameters(longrope, updated=True)[0],
    )


# Positions per call: below, past, and back below the original length (dynamic grows, then resets).
CALLS = [12, 20, 90, 150, 30, 10, 70]


@pytest.mark.parametrize("name", ["default", "dynamic", "longrope", "longrope-factor", "yarn-mscale"])
def test_rotary_embedding_updates_like_hf(name):
    """cos/sin over a run of calls, as HF's rotary embedding with ``dynamic_rope_update`` gives them: dynamic NTK
    recomputes past the longest length seen and resets below the original; longrope picks long factors past
    ``original_max_position_embeddings``, short ones below."""
    config = make_config(name)
    if "original_max_position_embeddings" not in CONFIGS[name] and name.startswith("longrope"):
        config.max_position_embeddings = 24  # let the calls cross it
    theirs, ours = HFRotaryEmbedding(config), RotaryEmbedding(config)
    x = paddle.zeros([1], dtype="float32")
    for length in CALLS:
        positions = np.stack([np.arange(length), np.maximum(np.arange(length) - 3, 0)]).astype("int64")
        cos, sin = theirs(torch.zeros(1), torch.tensor(positions))
        our_cos, our_sin = ours(x, paddle.to_tensor(positions))
        np.testing.assert_allclose(our_cos.numpy(), cos.numpy(), atol=2e-5, err_msg=f"{name}, {length} positions")
        np.testing.assert_allclose(our_sin.numpy(), sin.numpy(), atol=2e-5, err_msg=f"{name}, {length} positions")
        np.testing.assert_allclose(ours.inv_freq.numpy(), theirs.inv_freq.numpy(), rtol=1e-6)


def test_interleaved_layout_holds_each_frequency_twice():
    config = make_config("yarn")
    halves, interleaved = (
        RotaryEmbedding(config),
        type("Interleaved", (RotaryEmbedding,), {"interleaved": True})(config),
    )
    positions = paddle.arange(7, dtype="int64").unsqueeze(0)
    cos_h, _ = halves(paddle.zeros([1]), positions)
    cos_i, _ = interleaved(paddle.zeros([1]), positions)
    np.testing.assert_array_equal(cos_i.numpy()[..., ::2], cos_h.numpy()[..., :NFREQ])
    np.testing.assert_array_equal(cos_i.numpy()[..., 1::2], cos_h.numpy()[..., :NFREQ])


@pytest.mark.parametrize("interleaved", [False, True], ids=["halves", "interleaved"])
@pytest.mark.parametrize("factor", [0.5, 0.75, 1.0])
def test_partial_rotation_matches_hf(interleaved, factor):
    """Phi-3 rotates the first part of each head in halves, GLM pairwise; the rest passes through unchanged."""
    config = make_config("default")
    config.partial_rotary_factor = factor
    rng = np.random.default_rng(0)
    q, k = (rng.normal(size=(2, 5, 3, HEAD_DIM)).astype("float32") for _ in range(2))
    positions = np.arange(5)[None].repeat(2, 0)
    cos, sin = HFRotaryEmbedding(config)(torch.zeros(1), torch.tensor(positions))  # [f, f] layout, as HF's models
    hf_apply = hf_glm_apply if interleaved else hf_phi3_apply
    want = hf_apply(torch.tensor(q), torch.tensor(k), cos, sin, unsqueeze_dim=2)

    layer = type("R", (RotaryEmbedding,), {"interleaved": interleaved})(config)
    our_cos, our_sin = (t.unsqueeze(2) for t in layer(paddle.zeros([1]), paddle.to_tensor(positions)))
    for ours, theirs, x in zip(
        (apply_rotary(paddle.to_tensor(t), our_cos, our_sin, interleaved) for t in (q, k)), want, (q, k)
    ):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)
        rotated = int(HEAD_DIM * factor)
        np.testing.assert_array_equal(ours.numpy()[..., rotated:], x[..., rotated:])
        assert not np.allclose(ours.numpy()[..., :rotated], x[..., :rotated])


def test_unknown_rope_type_is_refused():
    config = make_config("default")
    config.rope_scaling = {"rope_type": "ntk-by-parts", "factor": 2.0}
    with pytest.raises(ValueError, match="unknown rope_type 'ntk-by-parts'"):
        RotaryEmbedding(config)


@pytest.mark.parametrize("name", ["dynamic", "longrope"])
def test_a_rotary_embedding_that_never_updates_refuses_position_dependent_types(name):
    """Llama's rotary embedding (and its children's) computes the frequencies once: a dynamic or longrope config
    would be right only up to max_position_embeddings, so it is refused, naming the type."""
    from generated.llama.modeling_llama import LlamaConfig, LlamaRotaryEmbedding

    scaling = CONFIGS[name]["rope_scaling"]
    config = LlamaConfig(hidden_size=96, num_attention_heads=4, head_dim=24, rope_scaling=scaling)
    with pytest.raises(ValueError, match=f"rope_type '{name}' recomputes its frequencies"):
        LlamaRotaryEmbedding(config)
