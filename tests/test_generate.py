"""`python -m modbuild.generate` and `modbuild.models.from_pretrained` on a tiny real checkpoint: decoding bounds,
clear errors for directories that are not a converted checkpoint, eval mode, no third-party noise."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import paddle
import pytest
from tiny_checkpoint import noise, run_quiet_check, write_tiny_llama

from modbuild.generate import greedy_tokens, main
from modbuild.models import from_pretrained


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(Paddle, HF) directories of a tiny Llama whose attention dropout is on (0.5) when training."""
    before = set(sys.modules)
    yield write_tiny_llama(tmp_path_factory.mktemp("tiny"), attention_dropout=0.5)
    # Leave no `generated` package behind: other tests import their own from a temporary tree.
    for name in [n for n in sys.modules if n.split(".")[0] == "generated" and n not in before]:
        del sys.modules[name]


def test_zero_new_tokens_generates_nothing_and_says_nothing_else(checkpoints, tmp_path):
    """It used to loop forever (the stop test was `len(tokens) == 0` after the first token). One process, stderr
    piped: no ccache or distutils warning, no INFO line, no bar."""
    paddle_dir, _ = checkpoints
    args = [
        "-m",
        "modbuild.generate",
        "--model",
        str(paddle_dir),
        "--prompt",
        "the capital of",
        "--max-new-tokens",
        "0",
    ]
    result = run_quiet_check(args, tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "\n"
    assert result.stderr.startswith("[0 tokens in "), result.stderr
    assert noise(result.stderr) == [], result.stderr


def test_negative_new_tokens_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path), "--prompt", "hi", "--max-new-tokens", "-1"])
    assert exit_info.value.code == 2
    assert "argument --max-new-tokens: must be 0 or more, not -1" in capsys.readouterr().err


def test_greedy_tokens_match_full_forward_argmax(checkpoints):
    """The cached loop gives what re-running the whole sequence gives, and stops at its bound or at eos. (0: in a
    process of its own above, which the old loop never left.)"""
    model = from_pretrained(checkpoints[0], dtype="float32")
    ids = np.array([[2, 3, 4]])
    tokens = greedy_tokens(model, ids, 5)
    expected, sequence = [], ids
    with paddle.no_grad():
        for _ in range(5):
            expected.append(int(model(paddle.to_tensor(sequence), return_dict=True).logits[0, -1].argmax().item()))
            sequence = np.concatenate([sequence, [[expected[-1]]]], axis=1)
    assert tokens == expected
    assert greedy_tokens(model, ids, 5, eos_token_id=expected[1]) == expected[:2]


def test_from_pretrained_loads_every_weight_and_initialises_a_missing_one(checkpoints, tmp_path):
    """Loading creates the parameters empty and fills them from the checkpoint: each equals what was saved. A weight
    the checkpoint lacks is initialised as in a new model (N(0, initializer_range) for a linear layer, ones for a
    norm), never left empty."""
    from safetensors.numpy import load_file, save_file

    directory = shutil.copytree(checkpoints[0], tmp_path / "ckpt")
    saved = load_file(directory / "model.safetensors")
    dropped = {name: saved.pop(name) for name in ("llama.layers.0.mlp.up_proj.weight", "llama.norm.weight")}
    save_file(saved, directory / "model.safetensors", metadata={"format": "np"})
    model = from_pretrained(directory, dtype="float32")
    state = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    for name, value in saved.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)
    up = state["llama.layers.0.mlp.up_proj.weight"]
    assert up.shape == dropped["llama.layers.0.mlp.up_proj.weight"].shape
    assert abs(up.std() - model.config.initializer_range) < 0.2 * model.config.initializer_range
    np.testing.assert_array_equal(state["llama.norm.weight"], np.ones_like(dropped["llama.norm.weight"]))


def test_from_pretrained_returns_eval_mode(checkpoints):
    """As HF's does: dropout off, so the same input gives the same output (MiniLM's differed by 1.29)."""
    model = from_pretrained(checkpoints[0], dtype="float32")
    assert model.training is False
    ids = paddle.to_tensor([[2, 3, 4, 5, 6, 7]])
    with paddle.no_grad():
        first, second = (model(ids, return_dict=True).logits.numpy() for _ in range(2))
        np.testing.assert_array_equal(first, second)
        model.train()  # the checkpoint's dropout is real: in training mode the two calls differ
        assert np.abs(model(ids, return_dict=True).logits.numpy() - first).max() > 1e-3


def _broken_config(directory):
    (directory / "config.json").write_text('{"model_type": "llama",\n  "hidden_size": }\n')
    return "config.json:2: not valid JSON: Expecting value (column 18)"


def _no_tokenizer(directory):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (directory / name).unlink()
    return ": no tokenizer (tokenizer.json, "


def _unknown_model_type(directory):
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | {"model_type": "gpt9"}))
    return "config.json: unknown model_type 'gpt9'; known: "


def _encoder_model(directory):
    """A BERT checkpoint's config.json: loadable, but not a model that generates."""
    (directory / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    return "config.json: names BertModel, not a causal LM: generate needs a *ForCausalLM model"


def _no_weights(directory):
    (directory / "model.safetensors").unlink()
    return ": no weights (model.safetensors, "


def _list_config(directory):
    (directory / "config.json").write_text("[]")
    return "config.json: not a JSON object"


BROKEN = {
    "broken-config": _broken_config,
    "no-tokenizer": _no_tokenizer,
    "unknown-model-type": _unknown_model_type,
    "encoder-model": _encoder_model,
    "no-weights": _no_weights,
    "config-not-an-object": _list_config,
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_bad_checkpoint_directory_is_a_clear_error(checkpoints, tmp_path, capsys, case):
    directory = shutil.copytree(checkpoints[0], tmp_path / "ckpt")
    expected = BROKEN[case](directory)
    assert main(["--model", str(directory), "--prompt", "the capital of", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {directory}"), err
    assert expected in err and "Traceback" not in err


def test_hf_checkpoint_says_to_convert_it(checkpoints, capsys):
    _, hf_dir = checkpoints
    assert main(["--model", str(hf_dir), "--prompt", "the capital of"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {hf_dir}: looks like an HF checkpoint (model.safetensors holds format 'pt' ")
    assert f"python -m modbuild.weights hf2paddle --src {hf_dir} --dst {hf_dir}-paddle" in err


def test_missing_directory(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "nosuch"), "--prompt", "hi"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nosuch'}: no such directory\n"
