"""Tests of the root Llama model, loaded by file path from modular/llama/modular_llama.py."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from modbuild.nn.attention import eager_attention_forward
from modbuild.nn.masks import causal_mask

ROOT = Path(__file__).resolve().parents[1]
MODULAR_LLAMA = ROOT / "modular" / "llama" / "modular_llama.py"
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
TINY = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


@pytest.fixture(scope="module")
def llama():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the model imports modbuild.nn
    spec = importlib.util.spec_from_file_location("modular_llama", MODULAR_LLAMA)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_model(llama, std=None, seed=0, **overrides):
    paddle.seed(seed)
    model = llama.LlamaForCausalLM(llama.LlamaConfig(**{**TINY, **overrides}))
    if std is not None:
        for param in model.parameters():
            mean = 1.0 if param.ndim == 1 else 0.0  # norm weights stay around 1
            param.set_value(paddle.normal(mean, std, param.shape))
    model.eval()
    return model


def padded_batch(seed=0, length=8, pads=3):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, TINY["vocab_size"], size=(2, length))
    mask = np.ones((2, length), dtype="int64")
    mask[0, :pads] = 0
    ids[0, :pads] = 0
    return ids, mask


def loss_and_grads(model, ids):
    model.clear_gradients()
    loss = model(paddle.to_tensor(ids), labels=paddle.to_tensor(ids), return_dict=True).loss
    loss.backward()
    return loss.item(), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def test_forward_backward_shapes(llama):
    model = make_model(llama)
    model.train()
    ids = paddle.randint(0, TINY["vocab_size"], [2, 7])
    out = model(ids, labels=ids, use_cache=True, return_dict=True)
    assert out.logits.shape == [2, 7, TINY["vocab_size"]]
    assert out.loss.shape == []
    assert len(out.past_key_values) == TINY["num_hidden_layers"]
    assert out.past_key_values[0][0].shape == [2, 7, 2, 16]  # [batch, seq, kv_heads, head_dim]
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.shape == param.shape, name


def test_loss_decreases_with_adamw(llama):
    model = make_model(llama)
    model.train()
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-2, parameters=model.parameters())
    ids = paddle.to_tensor(padded_batch(length=12, pads=0)[0])
    losses = []
    for _ in range(5):
        loss = model(ids, labels=ids, return_dict=True).loss
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


def test_tied_embeddings(llama):
    tied = make_model(llama, tie_word_embeddings=True)
    untied = make_model(llama, tie_word_embeddings=False)
    assert not any("lm_head" in name for name in tied.state_dict())
    assert "lm_head.weight" in untied.state_dict()
    assert len(untied.parameters()) == len(tied.parameters()) + 1

    ids = paddle.to_tensor(padded_batch()[0])
    hidden = tied.llama(ids, return_dict=True).last_hidden_state
    expected = paddle.matmul(hidden, tied.llama.embed_tokens.weight, transpose_y=True)
    np.testing.assert_allclose(tied(ids, return_dict=True).logits.numpy(), expected.numpy(), atol=1e-6)

    assert not any("lm_head" in m.source_name for m in llama.LlamaForCausalLM._get_name_mappings(tied.config))
    assert any("lm_head" in m.source_name for m in llama.LlamaForCausalLM._get_name_mappings(untied.config))


def test_left_padding_matches_unpadded_rows(llama):
    model = make_model(llama, std=0.2)
    ids, mask = padded_batch()
    padded = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask), return_dict=True).logits.numpy()
    for row in range(2):
        real = mask[row].astype(bool)
        single = model(paddle.to_tensor(ids[row : row + 1, real]), return_dict=True).logits.numpy()
        np.testing.assert_allclose(padded[row, real], single[0], atol=1e-5)


def test_kv_cache_decode_matches_full_forward(llama):
    model = make_model(llama, std=0.2)
    ids, mask = padded_batch(length=9)
    full = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask), return_dict=True).logits.numpy()
    prefill = 6
    out = model(
        paddle.to_tensor(ids[:, :prefill]),
        attention_mask=paddle.to_tensor(mask[:, :prefill]),
        use_cache=True,
        return_dict=True,
    )
    for t in range(prefill, ids.shape[1]):
        out = model(
            paddle.to_tensor(ids[:, t : t + 1]),
            attention_mask=paddle.to_tensor(mask[:, : t + 1]),
            past_key_values=out.past_key_values,
            use_cache=True,
            return_dict=True,
        )
        assert out.past_key_values[0][0].shape[1] == t + 1
        np.testing.assert_allclose(out.logits.numpy()[:, 0], full[:, t], atol=1e-5)


@pytest.mark.parametrize("granularity", ["full", "full_attn", "core_attn"])
def test_recompute_matches_plain(llama, granularity):
    model = make_model(llama, std=0.2)
    model.train()
    ids = padded_batch(pads=0)[0]
    base_loss, base_grads = loss_and_grads(model, ids)
    model.config.recompute = True
    model.config.recompute_granularity = granularity
    loss, grads = loss_and_grads(model, ids)
    assert abs(loss - base_loss) <= 1e-6
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, base_grads[name], atol=1e-6, err_msg=name)


def test_sdpa_matches_eager(llama):
    model = make_model(llama, std=0.2)
    ids, mask = paddle.to_tensor(padded_batch()[0]), paddle.to_tensor(padded_batch()[1])
    eager = model(ids, attention_mask=mask, return_dict=True).logits.numpy()
    model.config.use_flash_attention = True
    sdpa = model(ids, attention_mask=mask, return_dict=True).logits.numpy()
    np.testing.assert_allclose(sdpa, eager, atol=1e-5)


def test_llama3_rope_scaling_changes_logits(llama):
    ids = paddle.to_tensor(padded_batch(pads=0)[0])
    default = make_model(llama, std=0.2)(ids, return_dict=True).logits.numpy()
    scaled = make_model(llama, std=0.2, rope_scaling=LLAMA3_ROPE)(ids, return_dict=True).logits.numpy()
    assert np.abs(scaled - default).max() > 1e-2


def test_sliding_window_hook(llama):
    model = make_model(llama, std=0.2)
    ids = paddle.to_tensor(padded_batch(pads=0)[0])
    full = model(ids, return_dict=True).logits.numpy()
    attentions = [layer.self_attn for layer in model.llama.layers]
    for attention in attentions:
        attention.sliding_window = ids.shape[1]
    np.testing.assert_allclose(model(ids, return_dict=True).logits.numpy(), full, atol=1e-6)

    mask = causal_mask(None, 1, 6, 0)
    query = paddle.randn([1, 6, 4, 16])
    key = paddle.randn([1, 6, 2, 16])
    _, weights = eager_attention_forward(attentions[0], query, key, key, mask, 0.25, sliding_window=2)
    distance = np.arange(6)[:, None] - np.arange(6)[None, :]
    # Paddle's CPU softmax floors exp() near e^-64, so masked weights are tiny rather than exactly 0.
    assert np.all(weights.numpy()[..., (distance >= 2) | (distance < 0)] < 1e-20)
    assert np.all(weights.numpy()[..., (distance < 2) & (distance >= 0)] > 1e-6)


def test_tensor_parallel_mappings_follow_plan(llama):
    config = llama.LlamaConfig(**TINY, tensor_parallel_degree=2)
    actions = llama.LlamaForCausalLM._get_tensor_parallel_mappings(config)
    shapes = {
        "embed_tokens.weight": ([128, 64], [64, 64]),
        "layers.1.self_attn.q_proj.weight": ([64, 64], [64, 32]),
        "layers.1.self_attn.k_proj.weight": ([64, 32], [64, 16]),
        "layers.0.self_attn.o_proj.weight": ([64, 64], [32, 64]),
        "layers.0.mlp.up_proj.weight": ([64, 128], [64, 64]),
        "layers.0.mlp.down_proj.weight": ([128, 64], [64, 64]),
        "lm_head.weight": ([64, 128], [64, 64]),
    }
    for name, (full, split) in shapes.items():
        assert list(actions[name](np.zeros(full, dtype="float32")).shape) == split, name
    assert not any("norm" in name for name in actions)
    tied = llama.LlamaConfig(**TINY, tensor_parallel_degree=2, tie_word_embeddings=True)
    assert "lm_head.weight" not in llama.LlamaForCausalLM._get_tensor_parallel_mappings(tied)


def hf_causal_lm(hf_config):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(hf_config).float().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(1.0 if param.ndim == 1 else 0.0, 0.2)
    return model


@pytest.mark.parametrize(
    "rope_scaling, tied", [(None, False), (LLAMA3_ROPE, True)], ids=["default-untied", "llama3-tied"]
)
def test_matches_hf_transformers(llama, rope_scaling, tied):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.LlamaConfig(
        **TINY,
        rope_theta=500000.0,
        rope_scaling=rope_scaling,
        tie_word_embeddings=tied,
        architectures=["LlamaForCausalLM"],
        attn_implementation="eager",
    )
    hf_model = hf_causal_lm(hf_config)
    config = llama.LlamaConfig(**{k: v for k, v in hf_config.to_dict().items() if k != "torch_dtype"})
    model = llama.LlamaForCausalLM(config)
    model.eval()

    hf_state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    state = {}
    for mapping in llama.LlamaForCausalLM._get_name_mappings(config):
        value = hf_state[mapping.source_name]
        state[mapping.target_name] = value.T if mapping.action == "transpose" else value
    assert set(state) == set(model.state_dict())
    model.set_state_dict(state)

    ids, mask = padded_batch(length=10, pads=4)
    labels = np.where(mask == 1, ids, -100)
    position_ids = np.clip(mask.cumsum(-1) - 1, 0, None)
    hf_out = hf_model(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        position_ids=torch.tensor(position_ids),
        labels=torch.tensor(labels),
    )
    out = model(
        paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask), labels=paddle.to_tensor(labels), return_dict=True
    )
    real = mask.astype(bool)
    diff = np.abs(out.logits.numpy()[real] - hf_out.logits.detach().numpy()[real]).max()
    assert diff <= 1e-4, diff
    assert abs(out.loss.item() - hf_out.loss.item()) <= 1e-5

    hf_out.loss.backward()
    out.loss.backward()
    hf_params, params = dict(hf_model.named_parameters()), dict(model.named_parameters())
    for mapping in llama.LlamaForCausalLM._get_name_mappings(config):
        hf_grad = hf_params[mapping.source_name].grad.numpy()
        hf_grad = hf_grad.T if mapping.action == "transpose" else hf_grad
        rel = np.abs(params[mapping.target_name].grad.numpy() - hf_grad).max() / np.abs(hf_grad).max()
        assert rel <= 1e-4, (mapping.target_name, rel)
