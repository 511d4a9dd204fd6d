"""The model zoo, built from the generated modules: training smoke tests, HF parity, sliding windows, KV cache,
tied embeddings, recompute, SDPA and the tensor-parallel mappings. Tiny fp32 configs throughout."""

import importlib
import sys

import numpy as np
import paddle
import pytest

from modbuild.verify.specs import TINY  # rope_theta 50000: a dropped rope_theta shows in the logits

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PREFIXES = {
    "llama": "Llama",
    "qwen2": "Qwen2",
    "mistral": "Mistral",
    "gemma": "Gemma",
    "qwen3": "Qwen3",
    "qwen2_moe": "Qwen2Moe",
    "mixtral": "Mixtral",
    "qwen3_moe": "Qwen3Moe",
}
MODELS = list(PREFIXES)
MOE_MODELS = ["qwen2_moe", "mixtral", "qwen3_moe"]
# Per-model settings, valid for both our config and HF's. qwen2 and gemma are tied, the others untied.
CONFIGS = {
    "llama": {"rope_theta": 500000.0},
    "qwen2": {"tie_word_embeddings": True},
    "mistral": {},
    "gemma": {"head_dim": 32},
    "qwen3": {"head_dim": 32},
    "qwen2_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48,
    },
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen3_moe": {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "norm_topk_prob": True,
        "head_dim": 32,
    },
}
# Windows shorter than the test sequences; qwen2 windows only its upper layer (max_window_layers=1).
WINDOWS = {
    "qwen2": {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
    "mistral": {"sliding_window": 4},
}


@pytest.fixture(scope="module")
def modules():
    before = set(sys.modules)
    yield {m: importlib.import_module(f"generated.{m}.modeling_{m}") for m in MODELS}
    # Leave no `generated` package behind: other tests import their own from a temporary tree.
    for name in [n for n in sys.modules if n.split(".")[0] == "generated" and n not in before]:
        del sys.modules[name]


def config_kwargs(model, **overrides):
    return {**TINY, **CONFIGS[model], **overrides}


def make_model(modules, model, std=None, seed=0, **overrides):
    module, prefix = modules[model], PREFIXES[model]
    paddle.seed(seed)
    net = getattr(module, f"{prefix}ForCausalLM")(
        getattr(module, f"{prefix}Config")(**config_kwargs(model, **overrides))
    )
    if std is not None:
        for param in net.parameters():
            param.set_value(paddle.normal(norm_mean(model) if param.ndim == 1 else 0.0, std, param.shape))
    net.eval()
    return net


def norm_mean(model):
    """Norm weights sit around 1; Gemma's (1 + w) norm stores w, so around 0."""
    return 0.0 if model == "gemma" else 1.0


def padded_batch(seed=0, length=10, pads=4):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, TINY["vocab_size"], size=(2, length))
    mask = np.ones((2, length), dtype="int64")
    mask[0, :pads] = 0
    ids[0, :pads] = 0
    return ids, mask


def loss_and_grads(net, ids, **kwargs):
    net.clear_gradients()
    loss = net(paddle.to_tensor(ids), labels=paddle.to_tensor(ids), return_dict=True, **kwargs).loss
    loss.backward()
    return loss.item(), {n: p.grad.numpy().copy() for n, p in net.named_parameters()}


@pytest.mark.parametrize("model", MODELS)
def test_config_defaults_match_hf(modules, model):
    prefix = PREFIXES[model]
    ours = getattr(modules[model], f"{prefix}Config")()
    hf = getattr(transformers, f"{prefix}Config")()
    if getattr(hf, "head_dim", None) is None:  # HF resolves it at use
        hf.head_dim = hf.hidden_size // hf.num_attention_heads
    paddle_side = {"return_dict"}  # paddlenlp's own default
    shared = [k for k in hf.to_dict() if hasattr(ours, k) and k not in paddle_side]
    assert {k: getattr(ours, k) for k in shared} == {k: getattr(hf, k) for k in shared}


# -- HF parity --------------------------------------------------------------------------------------------------


def hf_pair(modules, model, **overrides):
    """An HF model with std-0.2 weights and ours with the same weights, copied through `_get_name_mappings`."""
    prefix = PREFIXES[model]
    hf_config = getattr(transformers, f"{prefix}Config")(
        **config_kwargs(model, **overrides), attn_implementation="eager"
    )
    torch.manual_seed(0)
    hf_model = getattr(transformers, f"{prefix}ForCausalLM")(hf_config).float().eval()
    with torch.no_grad():
        for param in hf_model.parameters():
            param.normal_(norm_mean(model) if param.ndim == 1 else 0.0, 0.2)

    module = modules[model]
    config = getattr(module, f"{prefix}Config")(**{k: v for k, v in hf_config.to_dict().items() if k != "torch_dtype"})
    net = getattr(module, f"{prefix}ForCausalLM")(config)
    net.eval()
    mappings = net._get_name_mappings(config)
    hf_params = dict(hf_model.named_parameters())
    assert {m.source_name for m in mappings} == set(hf_params)  # every HF parameter is mapped ...
    state = {m.target_name: transposed(hf_params[m.source_name].detach().numpy(), m) for m in mappings}
    assert set(state) == set(net.state_dict())  # ... onto every one of ours
    net.set_state_dict(state)
    return hf_model, net, mappings


def transposed(array, mapping):
    return array.T if mapping.action == "transpose" else array


def grad_or_zeros(param):
    """The gradient as numpy; an expert that no token was routed to has none."""
    return np.zeros(list(param.shape), dtype="float32") if param.grad is None else param.grad.numpy()


def compare_with_hf(modules, model, length=10, pads=4, router_logits=False, **overrides):
    hf_model, net, mappings = hf_pair(modules, model, **overrides)
    ids, mask = padded_batch(length=length, pads=pads)
    labels = np.where(mask == 1, ids, -100)
    extra = {"output_router_logits": True} if router_logits else {}
    hf_out = hf_model(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        position_ids=torch.tensor(np.clip(mask.cumsum(-1) - 1, 0, None)),
        labels=torch.tensor(labels),
        **extra,
    )
    out = net(
        paddle.to_tensor(ids),
        attention_mask=paddle.to_tensor(mask),
        labels=paddle.to_tensor(labels),
        return_dict=True,
        **extra,
    )
    real = mask.astype(bool)
    logits = out.logits.numpy()[real]
    diff = np.abs(logits - hf_out.logits.detach().numpy()[real]).max()
    assert diff <= 1e-4, diff
    assert abs(out.loss.item() - hf_out.loss.item()) <= 1e-5, (out.loss.item(), hf_out.loss.item())
    if router_logits:
        assert abs(out.aux_loss.item() - hf_out.aux_loss.item()) <= 1e-5

    hf_out.loss.backward()
    out.loss.backward()
    hf_params, params = dict(hf_model.named_parameters()), dict(net.named_parameters())
    # HF embeddings take `padding_idx=pad_token_id` (Gemma: 0, the id our pads use): torch then sends no gradient from
    # pad lookups into that row, while paddle does. The row is still used, so it is left out of the comparison.
    pad_row = hf_model.get_input_embeddings().padding_idx
    for mapping in mappings:
        hf_grad = transposed(grad_or_zeros(hf_params[mapping.source_name]), mapping)
        grad = grad_or_zeros(params[mapping.target_name])
        if mapping.source_name.endswith("embed_tokens.weight") and pad_row is not None:
            hf_grad, grad = np.delete(hf_grad, pad_row, axis=0), np.delete(grad, pad_row, axis=0)
        rel = np.abs(grad - hf_grad).max() / max(np.abs(hf_grad).max(), 1e-12)
        assert rel <= 1e-4, (mapping.target_name, rel)
    print(f"{model}: max |logits - HF| = {diff:.2e}")
    return logits


@pytest.mark.parametrize("model", MODELS)
def test_matches_hf(modules, model):
    compare_with_hf(modules, model)


@pytest.fixture
def hf_qwen2_moe_aux_loss_on_cpu(monkeypatch):
    """HF 4.55's Qwen2-MoE aux loss calls int(device.index), which is None on CPU. Qwen3-MoE's function is the same
    formula without that expert-parallel offset (0 on one device)."""
    from transformers.models.qwen2_moe import modeling_qwen2_moe
    from transformers.models.qwen3_moe import modeling_qwen3_moe

    monkeypatch.setattr(modeling_qwen2_moe, "load_balancing_loss_func", modeling_qwen3_moe.load_balancing_loss_func)


@pytest.mark.parametrize("model", MOE_MODELS)
def test_moe_aux_loss_matches_hf(modules, model, hf_qwen2_moe_aux_loss_on_cpu):
    compare_with_hf(modules, model, router_logits=True, router_aux_loss_coef=0.5)


def test_moe_dense_layers_match_hf(modules, hf_qwen2_moe_aux_loss_on_cpu):
    compare_with_hf(modules, "qwen2_moe", router_logits=True, num_hidden_layers=3, mlp_only_layers=[1])


@pytest.mark.parametrize("model", list(WINDOWS))
def test_sliding_window_matches_hf_and_matters(modules, model):
    windowed = compare_with_hf(modules, model, length=12, pads=2, **WINDOWS[model])
    full = compare_with_hf(modules, model, length=12, pads=2)
    assert np.abs(windowed - full).max() > 1e-2


# -- training, tying, caching -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_forward_backward_and_adamw(modules, model):
    net = make_model(modules, model)
    net.train()
    ids = paddle.to_tensor(padded_batch(pads=0)[0])
    out = net(ids, labels=ids, use_cache=True, return_dict=True)
    assert out.logits.shape == [2, 10, TINY["vocab_size"]]
    assert len(out.past_key_values) == TINY["num_hidden_layers"]
    assert out.past_key_values[0][0].shape[:3] == [2, 10, TINY["num_key_value_heads"]]
    out.loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.shape == param.shape, name

    optimizer = paddle.optimizer.AdamW(learning_rate=1e-2, parameters=net.parameters())
    optimizer.clear_grad()
    losses = []
    for _ in range(5):
        loss = net(ids, labels=ids, return_dict=True).loss
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses


@pytest.mark.parametrize("model", ["qwen2", "mistral"])
def test_tied_and_untied_embeddings(modules, model):
    tied = make_model(modules, model, tie_word_embeddings=True)
    untied = make_model(modules, model, tie_word_embeddings=False)
    assert "lm_head.weight" not in tied.state_dict() and "lm_head.weight" in untied.state_dict()
    base = getattr(tied, tied.base_model_prefix)
    ids = paddle.to_tensor(padded_batch()[0])
    expected = paddle.matmul(base(ids, return_dict=True).last_hidden_state, base.embed_tokens.weight, transpose_y=True)
    np.testing.assert_allclose(tied(ids, return_dict=True).logits.numpy(), expected.numpy(), atol=1e-6)
    assert not any("lm_head" in m.source_name for m in tied._get_name_mappings(tied.config))
    assert any("lm_head" in m.source_name for m in untied._get_name_mappings(untied.config))


KV_CASES = [(m, {}) for m in MODELS] + [(m, WINDOWS[m]) for m in WINDOWS]


@pytest.mark.parametrize("model, overrides", KV_CASES, ids=[m + ("-window" if o else "") for m, o in KV_CASES])
def test_kv_cache_decode_matches_full_forward(modules, model, overrides):
    net = make_model(modules, model, std=0.2, **overrides)
    ids, mask = padded_batch(length=10, pads=2)
    full = net(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask), return_dict=True).logits.numpy()
    prefill = 5
    out = net(
        paddle.to_tensor(ids[:, :prefill]),
        attention_mask=paddle.to_tensor(mask[:, :prefill]),
        use_cache=True,
        return_dict=True,
    )
    for t in range(prefill, ids.shape[1]):
        out = net(
            paddle.to_tensor(ids[:, t : t + 1]),
            attention_mask=paddle.to_tensor(mask[:, : t + 1]),
            past_key_values=out.past_key_values,
            use_cache=True,
            return_dict=True,
        )
        np.testing.assert_allclose(out.logits.numpy()[:, 0], full[:, t], atol=1e-5, err_msg=f"step {t}")


# -- recompute, SDPA, tensor-parallel mappings ------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["full", "full_attn", "core_attn"])
def test_recompute_matches_plain(modules, granularity):
    """On a MoE model with the aux loss: router logits recorded inside recomputed layers must keep their grads."""
    net = make_model(modules, "qwen2_moe", std=0.2, output_router_logits=True)
    net.train()
    ids = padded_batch(pads=0)[0]
    base_loss, base_grads = loss_and_grads(net, ids)
    net.config.recompute, net.config.recompute_granularity = True, granularity
    loss, grads = loss_and_grads(net, ids)
    assert abs(loss - base_loss) <= 1e-6
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, base_grads[name], atol=1e-6, err_msg=name)


@pytest.mark.parametrize("model, overrides", [("mistral", WINDOWS["mistral"]), ("qwen3", {})])
def test_flash_attention_matches_eager(modules, model, overrides):
    net = make_model(modules, model, std=0.2, **overrides)
    ids, mask = (paddle.to_tensor(a) for a in padded_batch())
    eager = net(ids, attention_mask=mask, return_dict=True).logits.numpy()
    net.config.use_flash_attention = True
    sdpa = net(ids, attention_mask=mask, return_dict=True).logits.numpy()
    real = mask.numpy().astype(bool)
    np.testing.assert_allclose(sdpa[real], eager[real], atol=1e-5)


TP_SPLITS = {
    "qwen2_moe": {
        "layers.1.mlp.experts.3.gate_proj.weight": ([64, 32], [64, 16]),
        "layers.1.mlp.experts.3.down_proj.weight": ([32, 64], [16, 64]),
        "layers.0.mlp.shared_expert.up_proj.weight": ([64, 48], [64, 24]),
        "layers.0.self_attn.q_proj.bias": ([64], [32]),
    },
    "mixtral": {
        "layers.0.mlp.experts.2.w1.weight": ([64, 128], [64, 64]),
        "layers.0.mlp.experts.2.w2.weight": ([128, 64], [64, 64]),
        "layers.0.mlp.experts.2.w3.weight": ([64, 128], [64, 64]),
    },
    "qwen3_moe": {
        "layers.0.mlp.experts.0.up_proj.weight": ([64, 32], [64, 16]),
        "layers.0.self_attn.q_proj.weight": ([64, 128], [64, 64]),
        "layers.0.self_attn.o_proj.weight": ([128, 64], [64, 64]),
    },
}


@pytest.mark.parametrize("model", MOE_MODELS)
def test_tensor_parallel_mappings_follow_plan(modules, model):
    module, prefix = modules[model], PREFIXES[model]
    config = getattr(module, f"{prefix}Config")(**config_kwargs(model), tensor_parallel_degree=2)
    actions = getattr(module, f"{prefix}ForCausalLM")._get_tensor_parallel_mappings(config)
    for name, (full, split) in TP_SPLITS[model].items():
        assert list(actions[name](np.zeros(full, dtype="float32")).shape) == split, name
    # Routers (and norms) stay replicated so that every rank routes alike.
    assert not any(name.endswith(("mlp.gate.weight", "shared_expert_gate.weight", "norm.weight")) for name in actions)


def test_lookup_by_model_type_and_autoconfig_registration(tmp_path):
    from modbuild.models import UnknownModel, causal_lm_class, config_class, register_configs

    for model in MODELS:
        assert causal_lm_class(model).__name__ == f"{PREFIXES[model]}ForCausalLM"
    with pytest.raises(UnknownModel, match="unknown model_type 'nope'"):
        causal_lm_class("nope")
    registered = register_configs()
    assert {"qwen3", "qwen3_moe"} <= set(registered)  # paddlenlp 3.0.0b4 has no Qwen3 of its own
    from paddlenlp.transformers import AutoConfig

    config_class("qwen3")(**TINY).save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "Qwen3Config"
