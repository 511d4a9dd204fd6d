"""`modbuild new <m> --from <parent>` and the model specs (`modular/<m>/model.toml`) it writes.

The end-to-end test scaffolds a model in a copy of this project (llama and qwen2 only, no modbuild/) and runs
`doit convert:<m> verify --model <m>` there: a new model converts and passes all six checks without any
edit to the tool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modbuild.cli import main
from modbuild.verify.specs import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of this project with llama and qwen2, their specs and the doit wiring."""
    for model in ("llama", "qwen2"):
        shutil.copytree(ROOT / "modular" / model, tmp_path / "modular" / model)
        shutil.copytree(ROOT / "generated" / model, tmp_path / "generated" / model)
    shutil.copy(ROOT / "generated" / "__init__.py", tmp_path / "generated" / "__init__.py")
    for name in ("dodo.py", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_new_model_converts_and_verifies_without_touching_modbuild(project: Path, capsys):
    assert main(["new", "my_qwen", "--from", "qwen2", "--root", str(project)]) == 0
    assert "doit convert:my_qwen verify --model my_qwen" in capsys.readouterr().out
    env = {**os.environ, "PYTHONPATH": str(project)}  # its `generated` package, not this checkout's
    result = subprocess.run(
        [sys.executable, "-m", "doit", "convert:my_qwen", "verify", "--model", "my_qwen"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    modeling = (project / "generated" / "my_qwen" / "modeling_my_qwen.py").read_text()
    code = modeling.split('"""', 2)[2]  # after the docstring, which says where the model came from
    assert "class MyQwenForCausalLM(MyQwenPretrainedModel):" in code and "Qwen2" not in code
    records = {r["check"]: r for r in json.loads((project / "reports" / "verify.json").read_text())["records"]}
    assert sorted(records) == ["hf", "modular", "paddlenlp", "tp2", "train", "train-tp2"]
    assert all(r["model"] == "my_qwen" and r["passed"] and r["applicable"] for r in records.values()), records
    assert records["hf"]["metrics"]["logits"] > 0  # compared with HF's Qwen2 for real, not skipped
    assert "INFO" not in result.stderr and "Warning" not in result.stderr, result.stderr[
        -2000:
    ]  # no third-party chatter
    assert "\x1b[" not in result.stdout + result.stderr  # no colour codes off a terminal
    lines = [line for line in result.stdout.splitlines() if " verify my_qwen:" in line]
    assert [line[: line.index("]") + 1] for line in lines] == [f"[{k}/6]" for k in range(1, 7)], lines


def test_new_model_spec_keeps_parent_references_and_a_chosen_prefix(project: Path):
    assert main(["new", "my_qwen", "--from", "qwen2", "--prefix", "MyQWEN", "--root", str(project)]) == 0
    spec = load_spec(project / "modular" / "my_qwen" / "model.toml", "my_qwen")
    parent = load_spec(project / "modular" / "qwen2" / "model.toml", "qwen2")
    assert spec.camel == "MyQWEN" and parent.camel == "Qwen2"
    assert (spec.hf_class, spec.config, spec.paddlenlp_class) == (
        parent.hf_class,
        parent.config,
        parent.paddlenlp_class,
    )
    modular = (project / "modular" / "my_qwen" / "modular_my_qwen.py").read_text()
    assert "class MyQWENForCausalLM(Qwen2ForCausalLM):" in modular and 'model_type = "my_qwen"' in modular


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad", "--from", "qwen2"], "'Bad': a model name is lower case letters, digits and underscores, not 'B'"),
        (["9bad", "--from", "llama"], "'9bad': a model name must start with a letter"),
        (["class", "--from", "llama"], "'class': a Python keyword cannot be a model name"),
        (["qwen2", "--from", "llama"], "modular/qwen2: already exists"),
        (
            ["x", "--from", "nope"],
            (
                "modular/nope/modular_nope.py: missing, so 'nope' cannot be a parent "
                "(the models that can be parents: llama, qwen2)"
            ),
        ),
        (["x", "--from", "qwen2", "--prefix", "lower"], "'lower': a class prefix is a capitalised identifier"),
        (["foo3", "--from", "llama", "--prefix", "Llama"], "'Llama': the class prefix is llama's own"),
        (["qwen_2", "--from", "qwen2"], "'Qwen2': the class prefix is qwen2's own"),  # the default prefix
    ],
)
def test_new_refuses_bad_requests_and_writes_nothing(project: Path, capsys, args, message):
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    assert main(["new", *args, "--root", str(project)]) == 1
    assert message in capsys.readouterr().err
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before


def test_new_refuses_a_parent_that_is_not_a_causal_lm(project: Path, capsys):
    for kind in ("modular", "generated"):
        shutil.copytree(ROOT / kind / "bert", project / kind / "bert")
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    assert main(["new", "my_bert", "--from", "bert", "--root", str(project)]) == 1
    err = capsys.readouterr().err
    assert f"{project / 'generated' / 'bert' / 'modeling_bert.py'}: 'bert' is not a causal LM" in err
    assert "only causal LMs can be scaffolded (the models that can be parents: llama, qwen2)" in err
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[verify]\nhf_class = 'X'\nnorm_mean = 'one'\n", "verify.norm_mean must be a number, not 'one'"),
        ("[verify]\nhf_class = 'X'\ncolour = 1\n", "unknown key 'verify.colour'"),
        ("[verify]\nnorm_mean = 0.0\n", "verify.hf_class is required"),
        ("[verify]\nhf_class = 'X'\n[verify.config\n", "line 3"),
        ("[verify]\nhf_class = true\n", "verify.hf_class must be a string"),
    ],
)
def test_malformed_spec_names_the_file(tmp_path: Path, text: str, message: str):
    path = tmp_path / "model.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as error:
        load_spec(path, "m")
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_missing_spec_fails_the_check_naming_the_file(tmp_path: Path):
    with pytest.raises(SpecError, match=r"model\.toml: no verification spec for model 'm'"):
        load_spec(tmp_path / "m" / "model.toml", "m")
