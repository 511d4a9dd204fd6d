"""HF <-> Paddle checkpoint conversion: parity with transformers, bit-exact round trips, bad inputs, TP split."""

import json
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from modbuild.weights import (
    WeightsError,
    convert_hf_to_paddle,
    convert_paddle_to_hf,
    normalise_hf_config,
    resolve_model,
    split_tensor_parallel,
)
from modbuild.weights.cli import main

TINY = {
    "vocab_size": 128,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rope_theta": 50000.0,  # not the 10000 default, so a dropped rope_theta shows in the logits
    "attn_implementation": "eager",
}
MODELS = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "qwen2": (
        transformers.Qwen2Config,
        transformers.Qwen2ForCausalLM,
        {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
    ),
}
EXTRA_FILES = {"tokenizer.json": '{"fake": true}\n', "special_tokens_map.json": "{}\n"}


def make_hf_model(model_type, dtype=torch.float32, **overrides):
    config_cls, model_cls, extra = MODELS[model_type]
    torch.manual_seed(0)
    config = config_cls(**TINY, **extra, **overrides, architectures=[model_cls.__name__])
    model = model_cls(config).float().eval()
    with torch.no_grad():
        for param in model.parameters():  # std 0.2: small weights hide a wrong rope_theta (DESIGN §3)
            param.normal_(1.0 if param.ndim == 1 else 0.0, 0.2)
    return model.to(dtype)


def save_hf(model, directory, sharded):
    model.save_pretrained(directory, max_shard_size="20KB" if sharded else "5GB")
    for name, text in EXTRA_FILES.items():
        (Path(directory) / name).write_text(text)
    return Path(directory)


def padded_batch(length=10, pads=4):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, TINY["vocab_size"], size=(2, length))
    mask = np.ones((2, length), dtype="int64")
    mask[0, :pads] = 0
    ids[0, :pads] = 0
    return ids, mask


def hf_logits(model, ids, mask):
    position_ids = np.clip(mask.cumsum(-1) - 1, 0, None)
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(position_ids)
        )
    return out.logits.float().numpy()


def assert_logits_match(hf_model, paddle_dir, model_type):
    model = resolve_model(model_type).from_pretrained(paddle_dir)
    model.eval()
    ids, mask = padded_batch()
    with paddle.no_grad():
        logits = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask), return_dict=True).logits.numpy()
    real = mask.astype(bool)
    diff = np.abs(logits[real] - hf_logits(hf_model, ids, mask)[real]).max()
    assert diff <= 1e-4, diff
    return model


def weight_files(directory):
    return sorted(p.name for p in Path(directory).iterdir() if p.name.endswith((".safetensors", ".index.json")))


def assert_byte_identical(original, round_trip):
    assert weight_files(original) == weight_files(round_trip)
    for name in weight_files(original):
        assert (Path(original) / name).read_bytes() == (Path(round_trip) / name).read_bytes(), name


def read_all(directory):
    tensors = {}
    for path in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(path, framework="np") as handle:
            tensors |= {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not iterable
    return tensors


@pytest.fixture(scope="module", params=sorted(MODELS))
def converted(request, tmp_path_factory):
    """One random HF model per model type, saved single-file and sharded, converted both ways."""
    model_type, root = request.param, tmp_path_factory.mktemp(request.param)
    hf_model = make_hf_model(model_type)
    dirs = {"model_type": model_type, "hf_model": hf_model}
    for layout in ("single", "sharded"):
        hf_dir = save_hf(hf_model, root / f"hf_{layout}", sharded=layout == "sharded")
        paddle_dir = convert_hf_to_paddle(hf_dir, root / f"pd_{layout}")
        dirs[layout] = (hf_dir, paddle_dir, convert_paddle_to_hf(paddle_dir, root / f"rt_{layout}"))
    return dirs


@pytest.fixture(scope="module")
def llama_hf(tmp_path_factory):
    """A single-file and a sharded llama HF directory, templates for the bad-input tests."""
    root = tmp_path_factory.mktemp("bad")
    model = make_hf_model("llama")
    return model, save_hf(model, root / "single", False), save_hf(model, root / "sharded", True)


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_converted_matches_hf_logits(converted, layout):
    hf_dir, paddle_dir, _ = converted[layout]
    assert weight_files(hf_dir) == weight_files(paddle_dir)  # sharded the same way as the input
    for name, text in EXTRA_FILES.items():
        assert (paddle_dir / name).read_text() == text
    model = assert_logits_match(converted["hf_model"], paddle_dir, converted["model_type"])
    assert model.config.rope_theta == TINY["rope_theta"]
    with safe_open(next(paddle_dir.glob("*.safetensors")), framework="np") as handle:
        assert handle.metadata() == {"format": "np"}  # what paddlenlp's loader accepts


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_round_trip_is_bit_exact(converted, layout):
    hf_dir, _, round_trip = converted[layout]
    assert_byte_identical(hf_dir, round_trip)
    original = json.loads((hf_dir / "config.json").read_text())
    back = transformers.AutoConfig.from_pretrained(round_trip).to_dict()
    assert all(back[k] == v for k, v in original.items() if k != "transformers_version"), back


def test_round_trip_loads_in_transformers(converted):
    _, _, round_trip = converted["single"]
    model = transformers.AutoModelForCausalLM.from_pretrained(round_trip, attn_implementation="eager").eval()
    ids, mask = padded_batch()
    np.testing.assert_array_equal(hf_logits(model, ids, mask), hf_logits(converted["hf_model"], ids, mask))


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_tied_embeddings(model_type, tmp_path):
    hf_model = make_hf_model(model_type, tie_word_embeddings=True)
    hf_dir = save_hf(hf_model, tmp_path / "hf", sharded=False)
    paddle_dir = convert_hf_to_paddle(hf_dir, tmp_path / "pd")
    assert not any("lm_head" in name for name in read_all(paddle_dir))
    assert_logits_match(hf_model, paddle_dir, model_type)
    assert_byte_identical(hf_dir, convert_paddle_to_hf(paddle_dir, tmp_path / "rt"))


def test_bf16_kept_bit_exact(tmp_path):
    # numpy has no bf16; safetensors' numpy backend yields ml_dtypes.bfloat16, written back unchanged.
    hf_dir = save_hf(make_hf_model("qwen2", dtype=torch.bfloat16), tmp_path / "hf", sharded=False)
    paddle_dir = convert_hf_to_paddle(hf_dir, tmp_path / "pd")
    assert json.loads((paddle_dir / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(paddle_dir / "model.safetensors", framework="np") as handle:
        dtypes = {handle.get_slice(name).get_dtype() for name in handle.keys()}  # noqa: SIM118 - not iterable
    assert dtypes == {"BF16"}
    assert_byte_identical(hf_dir, convert_paddle_to_hf(paddle_dir, tmp_path / "rt"))


def test_inv_freq_is_ignored(llama_hf, tmp_path):
    _, single, _ = llama_hf
    src = rewrite(single, tmp_path / "src", add={"model.rotary_emb.inv_freq": np.ones(8, np.float32)})
    paddle_dir = convert_hf_to_paddle(src, tmp_path / "pd")
    assert not any("inv_freq" in name for name in read_all(paddle_dir))


def rewrite(template, directory, drop=(), add=None, reshape=None):
    """A copy of a single-file HF directory with tensors dropped, added or reshaped."""
    shutil.copytree(template, directory)
    tensors = read_all(directory)
    tensors = {k: v for k, v in tensors.items() if k not in drop} | (add or {})
    for name, shape in (reshape or {}).items():
        tensors[name] = np.zeros(shape, tensors[name].dtype)
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def edit_config(directory, **changes):
    path = Path(directory) / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    return directory


def truncate(directory):
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    return directory


def drop_shard(directory):
    sorted(directory.glob("model-*.safetensors"))[1].unlink()
    return directory


BAD_INPUTS = {
    "missing": (lambda s, d: rewrite(s, d, drop=["model.norm.weight"]), r"missing keys \(1\): model\.norm\.weight"),
    "unexpected": (
        lambda s, d: rewrite(s, d, add={"model.extra.weight": np.zeros(3, np.float32)}),
        r"unexpected keys \(1\): model\.extra\.weight",
    ),
    "shapes": (
        lambda s, d: rewrite(
            s, d, reshape={"model.norm.weight": (65,), "model.layers.1.mlp.up_proj.weight": (64, 128)}
        ),
        r"shape mismatch \(2\): .*model\.layers\.1\.mlp\.up_proj\.weight \[64, 128\].*model\.norm\.weight \[65\]",
    ),
    "truncated": (lambda s, d: truncate(shutil.copytree(s, d)), r"model\.safetensors: truncated or corrupt"),
    "unknown_model_type": (
        lambda s, d: edit_config(shutil.copytree(s, d), model_type="nonexistent"),
        r"unknown model_type 'nonexistent'; known: .*llama.*qwen2",
    ),
    "no_rope_theta": (lambda s, d: edit_config(shutil.copytree(s, d), rope_theta=None), r"no rope_theta"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS) + ["missing_shard"])
def test_bad_input_is_a_clear_error_and_writes_nothing(llama_hf, tmp_path, case):
    _, single, sharded = llama_hf
    if case == "missing_shard":
        src, pattern = drop_shard(shutil.copytree(sharded, tmp_path / "src")), r"names missing shard file\(s\): model-"
    else:
        make, pattern = BAD_INPUTS[case]
        src = make(single, tmp_path / "src")
    out = tmp_path / "out"
    with pytest.raises(WeightsError, match=pattern):
        convert_hf_to_paddle(src, out / "pd")
    assert not out.exists()  # validation runs before the destination (or its parent) is touched


def test_failed_write_leaves_existing_destination(llama_hf, tmp_path, monkeypatch):
    _, single, _ = llama_hf
    dst = convert_hf_to_paddle(single, tmp_path / "pd")
    before = {p.name: p.read_bytes() for p in dst.iterdir()}

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("modbuild.weights.convert.write_index", explode)
    with pytest.raises(RuntimeError):
        convert_hf_to_paddle(llama_hf[2], dst)  # sharded input fails at its index, after writing shards
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["pd"]  # no temporary directory left behind


def test_transformers5_config_keeps_rope_theta(llama_hf, tmp_path):
    hf_model, single, _ = llama_hf
    src = edit_config(
        shutil.copytree(single, tmp_path / "hf"),
        rope_theta=None,
        rope_scaling=None,
        torch_dtype=None,
        dtype="float32",
        rope_parameters={"rope_theta": TINY["rope_theta"], "rope_type": "default"},
    )
    paddle_dir = convert_hf_to_paddle(src, tmp_path / "pd")
    model = assert_logits_match(hf_model, paddle_dir, "llama")
    assert model.config.rope_theta == TINY["rope_theta"] and model.config.rope_scaling is None


def test_normalise_transformers5_rope_scaling():
    llama3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    config = normalise_hf_config({"dtype": "bfloat16", "rope_parameters": {"rope_theta": 5e5, **llama3}})
    assert config == {"torch_dtype": "bfloat16", "rope_theta": 5e5, "rope_scaling": llama3}
    with pytest.raises(WeightsError, match="conflicts"):
        normalise_hf_config({"rope_theta": 1e4, "rope_parameters": {"rope_theta": 5e5, "rope_type": "default"}})


def split_axis(name):
    """Paddle Linear weights are [in, out]: column-parallel splits the last axis, row-parallel (and vocab) axis 0."""
    if "norm" in name:
        return None  # replicated
    if name.endswith(("o_proj.weight", "down_proj.weight", "embed_tokens.weight")):
        return 0
    return -1  # q/k/v/gate/up weights and biases, lm_head


@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_tensor_parallel_split_shapes(converted, tmp_path, layout):
    _, paddle_dir, _ = converted[layout]
    out = split_tensor_parallel(paddle_dir, tmp_path / "tp", tp=2)
    full, ranks = read_all(paddle_dir), [{}, {}]
    for r, rank in enumerate(ranks):
        for path in sorted(out.glob(f"*.tp{r:02d}.safetensors")):
            with safe_open(path, framework="np") as handle:
                rank |= {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - not iterable
    if layout == "sharded":
        index = json.loads((out / "model.safetensors.index.tp01.json").read_text())
        assert set(index["weight_map"]) == set(full) and all(".tp01." in f for f in index["weight_map"].values())
    q_proj = f"{converted['model_type']}.layers.0.self_attn.q_proj.weight"
    assert [list(rank[q_proj].shape) for rank in ranks] == [[64, 32], [64, 32]]
    assert list(ranks[1]["lm_head.weight"].shape) == [64, 64]
    for name, tensor in full.items():
        assert set(ranks[0]) == set(ranks[1]) == set(full)
        axis = split_axis(name)
        if axis is None:
            assert all(np.array_equal(rank[name], tensor) for rank in ranks), name
            continue
        halves = [rank[name] for rank in ranks]
        assert halves[0].shape[axis] * 2 == tensor.shape[axis], name
        np.testing.assert_array_equal(np.concatenate(halves, axis=axis), tensor)


def test_cli(llama_hf, tmp_path, capsys):
    _, single, _ = llama_hf
    assert main(["hf2paddle", "--src", str(single), "--dst", str(tmp_path / "pd"), "--no-progress"]) == 0
    assert main(["paddle2hf", "--src", str(tmp_path / "pd"), "--dst", str(tmp_path / "rt"), "--model", "llama"]) == 0
    assert_byte_identical(single, tmp_path / "rt")
    assert main(["split", "--src", str(tmp_path / "pd"), "--dst", str(tmp_path / "tp"), "--tp", "2"]) == 0
    assert (tmp_path / "tp" / "model.tp01.safetensors").is_file()
    assert main(["hf2paddle", "--src", str(single), "--dst", str(tmp_path / "x"), "--model", "gpt9"]) == 2
    assert "unknown model_type 'gpt9'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
