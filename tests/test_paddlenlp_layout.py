"""PaddleNLP layout: a modular Qwen2 over the installed paddlenlp's own Llama, converted in a copy of the package.

`tests/paddlenlp_tree/modular_qwen2x.py` goes to `paddlenlp/transformers/qwen2x/` of the copy and
`modbuild convert` writes `configuration.py` and `modeling.py` beside it. The output must import no
other model's modeling/configuration module, and on the same weights its logits must equal those of
PaddleNLP's own `Qwen2ForCausalLM` and differ from PaddleNLP's `LlamaForCausalLM`.
"""

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODULAR = Path(__file__).parent / "paddlenlp_tree" / "modular_qwen2x.py"
PACKAGE = "paddlenlp.transformers.qwen2x"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """(root of the copy, the qwen2x directory), after a successful conversion."""
    installed = Path(importlib.util.find_spec("paddlenlp").submodule_search_locations[0])
    root = tmp_path_factory.mktemp("paddlenlp_copy")
    shutil.copytree(installed, root / "paddlenlp", ignore=shutil.ignore_patterns("__pycache__"))
    model_dir = root / "paddlenlp" / "transformers" / "qwen2x"
    model_dir.mkdir()
    modular = model_dir / "modular_qwen2x.py"
    shutil.copyfile(MODULAR, modular)
    run = subprocess.run(
        [sys.executable, "-m", "modbuild.cli", "convert", str(modular)],
        cwd=Path(__file__).resolve().parents[1],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return root, model_dir


def absolute(node: ast.ImportFrom) -> str:
    """The absolute module of an import in `paddlenlp/transformers/qwen2x/`."""
    if not node.level:
        return node.module or ""
    base = PACKAGE.split(".")[: len(PACKAGE.split(".")) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(tree: ast.Module) -> list[str]:
    """Every module an import statement may bind: `from ..llama import modeling` counts as `...llama.modeling`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = absolute(node)
            found += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return found


# The renaming leaves a prefix glued to a digit alone (`Llama3RotaryEmbedding`, docs/modular.md).
RENAMED_LLAMA = re.compile(r"Llama(?!\d)")


def test_outputs_are_standalone(tree):
    _, model_dir = tree
    modeling, configuration = model_dir / "modeling.py", model_dir / "configuration.py"
    assert modeling.is_file() and configuration.is_file()
    modeling_ast, configuration_ast = (ast.parse(p.read_text()) for p in (modeling, configuration))

    other_model_code = re.compile(r"^paddlenlp\.transformers\.(?!qwen2x\.)\w+\.(modeling|configuration)\w*$")
    for name, parsed in [("modeling.py", modeling_ast), ("configuration.py", configuration_ast)]:
        bad = [m for m in imported_modules(parsed) if other_model_code.match(m)]
        assert not bad, f"{name} imports another model's code: {bad}"
        classes = {n.name for n in ast.walk(parsed) if isinstance(n, ast.ClassDef)}
        assert not [c for c in classes if RENAMED_LLAMA.match(c)], f"{name} defines Llama classes: {classes}"
        names = {n.id for n in ast.walk(parsed) if isinstance(n, ast.Name)}
        assert not [n for n in names if RENAMED_LLAMA.match(n)], f"{name} uses Llama names"
    assert f"{PACKAGE}.configuration.Qwen2xConfig" in imported_modules(modeling_ast)

    classes = {n.name for n in modeling_ast.body if isinstance(n, ast.ClassDef)}
    expected = {"Qwen2xAttention", "Qwen2xDecoderLayer", "Qwen2xModel", "Qwen2xPretrainedModel", "Qwen2xForCausalLM"}
    assert expected <= classes
    assert "Qwen2xConfig" in {n.name for n in configuration_ast.body if isinstance(n, ast.ClassDef)}


# Run with the copy first on PYTHONPATH: builds PaddleNLP's Qwen2, the generated Qwen2x and PaddleNLP's
# Llama on the same randomised weights, prints their max |logit differences| as JSON.
NUMERIC_CHECK = r"""
import json, sys
import numpy as np
import paddle
import paddlenlp
from paddlenlp.transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from paddlenlp.transformers.qwen2x.configuration import Qwen2xConfig
from paddlenlp.transformers.qwen2x.modeling import Qwen2xForCausalLM

assert paddlenlp.__file__.startswith(sys.argv[1]), paddlenlp.__file__
paddle.set_device("cpu")
paddle.set_default_dtype("float32")
FUSED_KERNELS_OFF = dict(use_fused_rms_norm=False, use_fused_rope=False, use_flash_attention=False)  # SIGILL here
TINY = dict(
    vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64, seq_length=64, rms_norm_eps=1e-6, rope_theta=1e6,
    hidden_act="silu", use_sliding_window=False, sliding_window=64, max_window_layers=2, attention_dropout=0.0,
    **FUSED_KERNELS_OFF,
)


def renamed(state, old, new):
    assert all(k.startswith((old, "lm_head.")) for k in state), sorted(state)
    return {new + k[len(old):] if k.startswith(old) else k: v for k, v in state.items()}


def load(model, state):
    keys, expected = set(state), set(model.state_dict())
    assert keys == expected, f"{type(model).__name__}: state dict keys differ: {sorted(keys ^ expected)}"
    model.set_state_dict(state)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k].numpy(), err_msg=k)
    return model


def logits(model, ids, mask):
    model.eval()
    with paddle.no_grad():
        out = model(input_ids=paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask), use_cache=False,
                    return_dict=True)
    return out.logits.numpy()


def max_diff(a, b):
    return float(np.abs(a - b).max())


results = {}
for case in [
    dict(tie_word_embeddings=False, fuse_attention_qkv=False, fuse_attention_ffn=False),
    dict(tie_word_embeddings=True, fuse_attention_qkv=True, fuse_attention_ffn=True),
]:
    fields = {**TINY, **case}
    rng = np.random.default_rng(0)
    ids = rng.integers(0, fields["vocab_size"], size=(2, 12)).astype("int64")
    mask = np.ones_like(ids)
    mask[0, :3] = 0  # left padding

    reference = Qwen2ForCausalLM(Qwen2Config(**fields))
    for name, p in reference.named_parameters():
        p.set_value(((1.0 if "norm" in name else 0.0) + 0.2 * rng.standard_normal(p.shape)).astype("float32"))
    state = reference.state_dict()
    biases = [k for k in state if k.endswith("_proj.bias")]
    assert len(biases) == (2 if case["fuse_attention_qkv"] else 6), biases

    config = Qwen2xConfig(**fields)
    assert {k: getattr(config, k) for k in case} == case, "Qwen2xConfig lost a field"
    generated = load(Qwen2xForCausalLM(config), renamed(state, "qwen2.", "qwen2x."))
    assert generated.base_model_prefix == "qwen2x" and not hasattr(generated, "llama")
    if case["tie_word_embeddings"]:
        assert generated.lm_head.weight is generated.qwen2x.embed_tokens.weight

    llama_config = LlamaConfig(**fields)
    # PaddleNLP's LlamaConfig drops these two (PretrainedConfig resets them): give them back by hand.
    llama_config.fuse_attention_qkv, llama_config.fuse_attention_ffn = case["fuse_attention_qkv"], case["fuse_attention_ffn"]
    llama_state = {k: v for k, v in renamed(state, "qwen2.", "llama.").items() if not k.endswith("_proj.bias")}
    llama = load(LlamaForCausalLM(llama_config), llama_state)

    expected, got, from_llama = (logits(m, ids, mask) for m in (reference, generated, llama))
    # With the q/k/v biases zeroed, Qwen2 is Llama: the Llama comparison differs by the biases alone.
    for name, p in reference.named_parameters():
        if name in biases:
            p.set_value(np.zeros(p.shape, "float32"))
    unbiased = logits(reference, ids, mask)
    results[json.dumps(case)] = {
        "vs_qwen2": max_diff(expected, got),
        "vs_llama": max_diff(expected, from_llama),
        "unbiased_qwen2_vs_llama": max_diff(unbiased, from_llama),
        "scale": float(np.abs(expected).max()),
    }
print("RESULT " + json.dumps(results))
"""


def test_logits_equal_paddlenlp_qwen2(tree):
    root, _ = tree
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, "-c", NUMERIC_CHECK, str(root)],
        cwd=root,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    [line] = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    results = json.loads(line[len("RESULT ") :])
    assert len(results) == 2
    for case, r in results.items():
        assert r["scale"] > 1.0, (case, r)  # the weights are not degenerate
        assert r["vs_qwen2"] <= 1e-5, (case, r)
        assert r["vs_llama"] > 1e-3, (case, r)  # the q/k/v biases matter, so this test can fail
        assert r["unbiased_qwen2_vs_llama"] <= 1e-5, (case, r)
    print(json.dumps(results, indent=1))
